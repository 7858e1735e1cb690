"""Circuit state, half-open probe slots, retry budgets and rate-limit buckets in Redis,
shared by every process that uses the same Redis and namespace. Each implements the
protocol its memory twin in guards/ or limits/ implements, and raises Redis's errors:
redis_outage.py catches them and goes on in this process.

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
  redis_outage.py can tell a failing Redis and switch to local state.

Every key of one target carries the target in a hash tag (`{primary}`), so a target's
scripts also run on Redis Cluster.
"""

from __future__ import annotations

import os
import threading
import time
import uuid
from datetime import datetime, timezone
from typing import Any

import pybreaker

from ..config.schema import BreakerPolicy, RetryBudgetPolicy
from ..guards.circuit import STATE_NAMES, CircuitStorage, Ticket, View
from ..limits.buckets import PEER_WINDOW_S, Buckets, Cost, Rates

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


# KEYS: the bucket; ARGV: tokens to add (negative: take), max_tokens, idle_ms.
# A missing bucket is full; one untouched for idle_ms is forgotten (full again).
_ADD = """
local max = tonumber(ARGV[2])
local tokens = tonumber(redis.call('GET', KEYS[1]) or ARGV[2])
tokens = math.min(max, math.max(0, tokens + tonumber(ARGV[1])))
redis.call('SET', KEYS[1], string.format('%.6f', tokens), 'PX', ARGV[3])
return string.format('%.6f', tokens)
"""


class RedisRetryBudget:
    """The bucket of one target in Redis, shared by every process of the namespace.

    A failure takes its token at once (one atomic script), so every process sees the
    bucket drain as the outage happens. Successes are the happy path: their refills are
    added up here and written at most once per whole token or per `flush_s`, so a healthy
    call costs no Redis round trip for the budget most of the time.
    Errors are raised: backends.py falls back to a `RetryBudget` in this process.
    """

    def __init__(self, client: Any, key: str, policy: RetryBudgetPolicy, *, idle_s: float = 600.0,
                 flush_s: float = 1.0) -> None:
        self.policy = policy
        self._client = client
        self._key = key
        self._add = client.register_script(_ADD)
        self._idle_ms = int(idle_s * 1000)
        self._flush_s = flush_s
        self._lock = threading.Lock()
        self._pending = 0.0  # refills not written yet
        self._flushed = time.monotonic()
        self.tokens = float(policy.max_tokens)  # as last seen in Redis

    def failed(self) -> None:
        with self._lock:
            delta, self._pending = self._pending - 1, 0.0
        self._write(delta)

    def succeeded(self) -> None:
        with self._lock:
            self._pending += self.policy.token_ratio
            if self._pending < 1.0 - 1e-9 and time.monotonic() - self._flushed < self._flush_s:
                return
            delta, self._pending = self._pending, 0.0
        self._write(delta)

    def allow_retry(self) -> bool:
        raw = self._client.get(self._key)
        self.tokens = float(raw) if raw is not None else float(self.policy.max_tokens)
        return self.tokens + self._pending > self.policy.max_tokens / 2

    def _write(self, delta: float) -> None:
        self._flushed = time.monotonic()
        self.tokens = float(self._add(keys=[self._key], args=[delta, self.policy.max_tokens, self._idle_ms]))


# KEYS: tat of requests, tat of tokens, peers (sorted set)
# ARGV: op ("take" | "adjust" | "room"), member, then per limit: rate, capacity, cost (rate 0: no limit)
# take: {wait (string), peers, room of requests, room of tokens}; the same arithmetic as gcra_wait.
_BUCKETS = """
if redis.replicate_commands then redis.replicate_commands() end
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local op = ARGV[1]
local limits = {}
for i = 0, 1 do
  local rate, capacity, cost = tonumber(ARGV[3 + i * 3]), tonumber(ARGV[4 + i * 3]), tonumber(ARGV[5 + i * 3])
  if rate > 0 then
    local tat = tonumber(redis.call('GET', KEYS[1 + i]) or '0')
    limits[#limits + 1] = {key = KEYS[1 + i], rate = rate, capacity = capacity, cost = cost, tat = tat}
  end
end
local function room(l) return math.max(0, l.capacity - math.max(0, l.tat - now) * l.rate) end
local function store(l)
  local ttl = math.max(1000, math.ceil((l.tat - now + l.capacity / l.rate) * 1000) + 1000)
  redis.call('SET', l.key, string.format('%.6f', l.tat), 'PX', ttl)
end
local wait = 0
if op == 'take' then
  for _, l in ipairs(limits) do
    local need = math.min(l.cost, l.capacity)
    wait = math.max(wait, math.max(l.tat, now) + (need - l.capacity) / l.rate - now)
  end
  if wait <= 0 then
    for _, l in ipairs(limits) do
      l.tat = math.max(l.tat, now) + l.cost / l.rate
      store(l)
    end
  end
  redis.call('ZADD', KEYS[3], now, ARGV[2])
  redis.call('ZREMRANGEBYSCORE', KEYS[3], '-inf', now - tonumber(ARGV[9]))
  redis.call('PEXPIRE', KEYS[3], math.ceil(tonumber(ARGV[9]) * 2000))
elseif op == 'give_back' or op == 'adjust' then
  for _, l in ipairs(limits) do
    if l.cost ~= 0 then
      if op == 'adjust' then l.tat = math.max(l.tat, now - l.capacity / l.rate) end
      l.tat = l.tat + (op == 'adjust' and 1 or -1) * l.cost / l.rate
      store(l)
    end
  end
end
local rooms = {}
for i, l in ipairs(limits) do rooms[i] = string.format('%.3f', room(l)) end
return {string.format('%.6f', math.max(0, wait)), redis.call('ZCARD', KEYS[3]), rooms[1] or '', rooms[2] or ''}
"""


class RedisBuckets(Buckets):
    """The buckets of one target in Redis, for every process of the namespace. Errors are
    raised: `FallbackBuckets` catches them."""

    fleet = True

    def __init__(self, client: Any, prefix: str, rates: Rates) -> None:
        self.rates = rates
        self._script = client.register_script(_BUCKETS)
        self._keys = [f"{prefix}:limit:requests", f"{prefix}:limit:tokens", f"{prefix}:limit:peers"]
        self._member = f"{os.getpid()}-{uuid.uuid4().hex[:8]}"
        self.last_peers = 1
        self.last_room: dict[str, float] = {}

    def take(self, cost: Cost) -> float:
        return self._run("take", cost)

    def give_back(self, cost: Cost) -> None:
        self._run("give_back", cost)

    def adjust_tokens(self, tokens: float) -> None:
        if self.rates.tokens is not None and tokens:
            self._run("adjust", Cost(0.0, tokens))

    def room(self) -> dict[str, float]:
        self._run("room", Cost(0.0, 0.0))
        return dict(self.last_room)

    @property
    def shared(self) -> bool:
        return True

    @property
    def peers(self) -> int:
        return self.last_peers

    def _run(self, op: str, cost: Cost) -> float:
        args: list[Any] = [op, self._member]
        for bucket, amount in ((self.rates.requests, cost.requests), (self.rates.tokens, cost.tokens)):
            args += [bucket[0], bucket[1], amount] if bucket else [0, 0, 0]
        args.append(PEER_WINDOW_S)
        wait, peers, *rooms = self._script(keys=self._keys, args=args)
        self.last_peers = max(1, int(peers))
        names = [n for n, b in (("requests", self.rates.requests), ("tokens", self.rates.tokens)) if b]
        self.last_room = {name: float(_text(room)) for name, room in zip(names, rooms) if _text(room)}
        return float(_text(wait))


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
