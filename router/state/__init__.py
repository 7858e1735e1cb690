"""Where a target's counts live: circuits, half-open probe slots, retry budgets and
rate-limit buckets, in this process (memory) or in Redis for the whole fleet.

- backends.py: `State` (memory or Redis, chosen by the config's `state:`) and
  `build_guard`, which gives each target a `Guard` whose parts are kept there;
- redis_store.py: the Redis versions of the circuit storage, probe slots, retry budget
  and rate-limit buckets, one Lua script per change;
- redis_outage.py: what happens when Redis stops answering: every part goes on from this
  process, and is shared again when Redis answers.

Uses guards/ and limits/ (the memory versions and the protocols it implements), config/.
"""

from .backends import MemoryState, RedisState, State, build_guard, build_state

__all__ = ["State", "MemoryState", "RedisState", "build_state", "build_guard"]
