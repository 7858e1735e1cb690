"""Circuit state and half-open probe slots in Redis, shared by every process that uses
the same Redis and namespace.

`RedisCircuitStorage` extends pybreaker's `CircuitRedisStorage`: same keys (under
`{namespace}:{target}:pybreaker:`), same state names and counters, so pybreaker's own
getters and setters keep working on it. What it changes, and why:
- every transition is one Lua script (`_STEP`): pybreaker writes a transition as several
  commands (INCR, GET, SET opened_at, SET state), which interleave between processes, so
  two of them could both trip a circuit or both miss the trip;
- time is Redis's own clock (`TIME` inside the script), so machines whose clocks disagree
  still agree on when a circuit half-opens;
- `opened_at` keeps sub-second precision (pybreaker stores whole seconds, which makes a
  reset_timeout below a few seconds meaningless) and may be set backwards (`open_for`
  shorter than reset_timeout);
- a shared `epoch` counts state changes, so a result admitted before a change made by
  another process is ignored, exactly as within one process;
- the steps raise Redis errors (pybreaker's getters log and swallow them), so that
  fallback.py can tell a failing Redis and switch to local state.

Every key of one target carries the target in a hash tag (`{primary}`), so a target's
scripts also run on Redis Cluster.
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

import pybreaker

from .breaker import STATE_NAMES, CircuitStorage, Ticket, View
from .schema import BreakerPolicy

# KEYS: state, fail_counter, success_counter, opened_at, epoch
# ARGV: op, epoch of the caller's ticket ('' for any), fail_max, success_threshold, reset_timeout, seconds
# The rules are pybreaker's (CircuitClosedState.on_failure, CircuitHalfOpenState.on_success, ...).
_STEP = """
if redis.replicate_commands then redis.replicate_commands() end
local op, expected = ARGV[1], ARGV[2]
local fail_max, threshold = tonumber(ARGV[3]), tonumber(ARGV[4])
local reset_timeout, seconds = tonumber(ARGV[5]), tonumber(ARGV[6])
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local state = redis.call('GET', KEYS[1]) or 'closed'
local opened = tonumber(redis.call('GET', KEYS[4]) or '0')
local epoch = redis.call('GET', KEYS[5]) or '0'

local function enter(new_state, opened_at)
  redis.call('SET', KEYS[1], new_state)
  redis.call('SET', KEYS[3], 0)
  if new_state == 'closed' then redis.call('SET', KEYS[2], 0) end
  if opened_at then
    opened = opened_at
    redis.call('SET', KEYS[4], string.format('%.6f', opened_at))
  end
  epoch = tostring(redis.call('INCR', KEYS[5]))
  state = new_state
end

local current = expected == '' or expected == epoch
if op == 'fail' and current then
  local failures = redis.call('INCR', KEYS[2])
  if state == 'half-open' or (state == 'closed' and failures >= fail_max) then enter('open', now) end
elseif op == 'succeed' and current then
  redis.call('SET', KEYS[2], 0)
  if state == 'half-open' and redis.call('INCR', KEYS[3]) >= threshold then enter('closed') end
elseif op == 'half_open' and current then
  if state == 'open' and now >= opened + reset_timeout then enter('half-open') end
elseif op == 'open' then
  if not (state == 'open' and opened + reset_timeout - now >= seconds) then
    enter('open', now + seconds - reset_timeout)
  end
elseif op == 'close' then
  enter('closed')
end
local remaining = 0
if state == 'open' then remaining = opened + reset_timeout - now end
return {state, tonumber(redis.call('GET', KEYS[2]) or '0'), string.format('%.6f', remaining), epoch}
"""

# KEYS: epoch, slots of that epoch; ARGV: epoch, limit, lease_ms
_ACQUIRE = """
if (redis.call('GET', KEYS[1]) or '0') ~= ARGV[1] then return 0 end
if tonumber(redis.call('GET', KEYS[2]) or '0') >= tonumber(ARGV[2]) then return 0 end
redis.call('INCR', KEYS[2])
redis.call('PEXPIRE', KEYS[2], ARGV[3])
return 1
"""

# KEYS: slots of one epoch
_RELEASE = """
local n = tonumber(redis.call('GET', KEYS[1]) or '0')
if n <= 1 then redis.call('DEL', KEYS[1]) else redis.call('DECR', KEYS[1]) end
return n
"""


def target_prefix(namespace: str, target: str) -> str:
    """Where every key of one target lives (hash-tagged: one Cluster slot per target)."""
    return f"{namespace}:{{{target}}}"


class RedisScripts:
    """The Lua scripts, registered once per client (redis-py reloads them after a restart)."""

    def __init__(self, client: Any) -> None:
        self.step = client.register_script(_STEP)
        self.acquire = client.register_script(_ACQUIRE)
        self.release = client.register_script(_RELEASE)


class RedisCircuitStorage(pybreaker.CircuitRedisStorage, CircuitStorage):
    """One target's circuit in Redis; each step one atomic script (see the module doc)."""

    def __init__(self, client: Any, namespace: str, target: str, scripts: RedisScripts) -> None:
        super().__init__(pybreaker.STATE_CLOSED, client, namespace=target_prefix(namespace, target))
        self._keys = [self._namespace(k) for k in ("state", "fail_counter", "success_counter", "opened_at", "epoch")]
        self._scripts = scripts

    def _initialize_redis_state(self, state: str) -> None:
        """Nothing to write up front: the scripts read missing keys as closed, no failures."""

    # -- the steps -----------------------------------------------------------------------

    def view(self, policy: BreakerPolicy) -> View:
        return self._step("view", policy)

    def record_failure(self, ticket: Ticket, policy: BreakerPolicy) -> View:
        return self._step("fail", policy, ticket.epoch)

    def record_success(self, ticket: Ticket, policy: BreakerPolicy) -> View | None:
        if not ticket.probe and ticket.failures == 0:
            return None  # closed with no failures when admitted: nothing to reset, no round trip
        return self._step("succeed", policy, ticket.epoch)

    def try_half_open(self, epoch: Any, policy: BreakerPolicy) -> View:
        return self._step("half_open", policy, epoch)

    def open_for(self, seconds: float, policy: BreakerPolicy) -> View:
        return self._step("open", policy, seconds=seconds)

    def reset(self, policy: BreakerPolicy) -> View:
        return self._step("close", policy)

    def _step(self, op: str, policy: BreakerPolicy, epoch: Any = "", seconds: float = 0.0) -> View:
        state, failures, remaining, new_epoch = self._scripts.step(
            keys=self._keys,
            args=[op, epoch, policy.fail_max, policy.success_threshold, policy.reset_timeout, seconds])
        return View(STATE_NAMES[_text(state)], int(failures), float(remaining), int(new_epoch))

    # -- pybreaker's opened_at, with sub-second precision --------------------------------

    @property
    def opened_at(self) -> Any:
        raw = self._redis.get(self._namespace("opened_at"))
        if not raw:
            return None
        return datetime.fromtimestamp(float(raw), timezone.utc)

    @opened_at.setter
    def opened_at(self, now: Any) -> None:
        self._redis.set(self._namespace("opened_at"), f"{now.timestamp():.6f}")


class RedisProbeSlots:
    """Half-open probes in flight for one target, counted in Redis for the whole fleet.

    The count of each epoch is its own key, so a state change starts from zero; the key
    expires `lease_s` after the last probe took a slot, so a process that crashed while
    probing holds its slot no longer than that.
    """

    def __init__(self, client: Any, namespace: str, target: str, scripts: RedisScripts,
                 lease_s: float = 60.0) -> None:
        prefix = target_prefix(namespace, target)
        self._client = client
        self._epoch_key = f"{prefix}:pybreaker:epoch"
        self._prefix = f"{prefix}:probes:"
        self._scripts = scripts
        self._lease_ms = max(1, int(lease_s * 1000))

    def acquire(self, epoch: Any, limit: int) -> bool:
        """A slot for one probe in `epoch`, unless `limit` are taken or the epoch is over."""
        return bool(self._scripts.acquire(keys=[self._epoch_key, f"{self._prefix}{epoch}"],
                                          args=[epoch, limit, self._lease_ms]))

    def release(self, epoch: Any) -> None:
        self._scripts.release(keys=[f"{self._prefix}{epoch}"])

    def in_flight(self, epoch: Any) -> int:
        return int(self._client.get(f"{self._prefix}{epoch}") or 0)


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
