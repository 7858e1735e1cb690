"""A cache tier in Redis (`backend: redis`, at `state.url`): one cache for the whole fleet.

Per cache tier, under `{namespace}:cache:{target}` (hash-tagged: one Cluster slot), each
answer is a hash (`p` the answer, `t` when stored, `h` hits) that Redis expires after the
ttl, and one sorted set ranks the keys by last use. A write is one Lua script: store,
expire, rank, and drop the least recently used beyond `max_entries`, so two processes
writing at once never leave more; the background writer hands it a batch of answers at
a time (one command, one round trip). A read is one HMGET: one round trip (~0.1-0.3 ms here).

Redis is a help, never a dependency of a call: an error or a reply slower than
`SOCKET_TIMEOUT_S` is a miss (logged by the tier), and writes run in the background.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from .stores import AnswerStore, Entry, Stored, UnreadableEntry, summarize

SOCKET_TIMEOUT_S = 0.25  # a read only happens when the primaries failed: a little patience is fine

# KEYS: lru, then one entry key per answer; ARGV: ttl_ms, max_entries, ttl_s, entry prefix,
# then (payload, now, member) per answer
_PUT = """
local newest = 0
for i = 2, #KEYS do
  local at = 4 + 3 * (i - 2)
  local now = tonumber(ARGV[at + 2])
  redis.call('HSET', KEYS[i], 'p', ARGV[at + 1], 't', ARGV[at + 2], 'h', 0)
  redis.call('PEXPIRE', KEYS[i], ARGV[1])
  redis.call('ZADD', KEYS[1], now, ARGV[at + 3])
  if now > newest then newest = now end
end
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', '(' .. (newest - tonumber(ARGV[3])))
local excess = redis.call('ZCARD', KEYS[1]) - tonumber(ARGV[2])
if excess > 0 then
  local victims = redis.call('ZRANGE', KEYS[1], 0, excess - 1)
  for _, member in ipairs(victims) do redis.call('DEL', ARGV[4] .. member) end
  redis.call('ZREM', KEYS[1], unpack(victims))
end
redis.call('PEXPIRE', KEYS[1], ARGV[1])
return excess
"""
# KEYS: entry, lru; ARGV: now, member
_TOUCH = """
if redis.call('EXISTS', KEYS[1]) == 1 then
  redis.call('HINCRBY', KEYS[1], 'h', 1)
  redis.call('ZADD', KEYS[2], ARGV[1], ARGV[2])
end
"""

# KEYS: entry, lru; ARGV: payload, member. Only if the entry still holds that payload.
_DELETE = """
if redis.call('HGET', KEYS[1], 'p') == ARGV[1] then
  redis.call('DEL', KEYS[1])
  redis.call('ZREM', KEYS[2], ARGV[2])
end
"""


def redis_client(url: str) -> Any:
    """A client for cache reads and writes (its own: short timeouts, no retry on a timeout)."""
    import redis
    from redis.backoff import NoBackoff
    from redis.retry import Retry

    return redis.Redis.from_url(url, socket_timeout=SOCKET_TIMEOUT_S, socket_connect_timeout=SOCKET_TIMEOUT_S,
                                retry=Retry(NoBackoff(), 1, supported_errors=(redis.ConnectionError,)),
                                health_check_interval=0)


class RedisStore(AnswerStore):
    backend = "redis"

    def __init__(self, client: Any, namespace: str, target: str, ttl: float, max_entries: int) -> None:
        self.ttl = ttl
        self.max_entries = max_entries
        self.prefix = f"{namespace}:cache:{{{target}}}"
        self._entry = f"{self.prefix}:a:"
        self._lru = f"{self.prefix}:lru"
        self._client = client
        self._put = client.register_script(_PUT)
        self._touch = client.register_script(_TOUCH)
        self._delete = client.register_script(_DELETE)

    def get(self, key: str, now: float) -> Stored | None:
        payload, stored_at = self._client.hmget(self._entry + key, "p", "t")
        if payload is None or stored_at is None:
            return None  # never written, or expired by Redis
        try:
            return Stored(payload.decode(), float(stored_at))
        except ValueError as exc:  # not UTF-8, or a time that is not a number
            raise UnreadableEntry(payload, f"{type(exc).__name__}: {exc}") from None

    def put(self, key: str, payload: str, now: float) -> None:
        self.put_many([Entry(key, payload, now)])

    def put_many(self, entries: Sequence[Entry]) -> None:
        """The whole batch in one script call: one command to encode, one round trip."""
        args: list[Any] = [max(1, int(self.ttl * 1000)), self.max_entries, self.ttl, self._entry]
        for entry in entries:
            args += [entry.payload, f"{entry.now:.6f}", entry.key]
        self._put(keys=[self._lru, *(self._entry + entry.key for entry in entries)], args=args)

    def touch(self, key: str, now: float) -> None:
        self._touch(keys=[self._entry + key, self._lru], args=[f"{now:.6f}", key])

    def delete(self, key: str, payload: Any) -> None:
        self._delete(keys=[self._entry + key, self._lru], args=[payload, key])

    def stats(self, now: float) -> dict[str, Any]:
        members = [m.decode() for m in self._client.zrange(self._lru, 0, -1)]
        pipe = self._client.pipeline(transaction=False)
        for member in members:
            pipe.hmget(self._entry + member, "t", "h")
            pipe.hstrlen(self._entry + member, "p")
        replies = pipe.execute() if members else []
        stored, size, hits = [], 0, 0
        for (stored_at, count), length in zip(replies[::2], replies[1::2]):
            if stored_at is not None:
                stored.append(float(stored_at))
                hits += int(count or 0)
                size += int(length)
        return summarize(len(stored), size, hits, stored, now)

    def clear(self) -> int:
        removed = 0
        pattern = _glob_escape(self.prefix) + ":*"
        for batch in _batches(self._client.scan_iter(match=pattern, count=500), 500):
            removed += sum(1 for k in batch if k.decode() != self._lru)
            self._client.delete(*batch)
        return removed

    def close(self) -> None:
        self._client.close()


def _glob_escape(text: str) -> str:
    return "".join("\\" + c if c in "*?[]\\" else c for c in text)


def _batches(items: Any, size: int) -> Any:
    batch: list[Any] = []
    for item in items:
        batch.append(item)
        if len(batch) >= size:
            yield batch
            batch = []
    if batch:
        yield batch
