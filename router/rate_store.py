"""Where a target's rate-limit buckets live: this process, or Redis for the whole fleet.

Each limit (requests, tokens) is a GCRA bucket (the generic cell rate algorithm: a token
bucket kept as one number, the "theoretical arrival time" `tat`): at `rate` units per
second with room for `capacity` units at once, a cost `c` fits now when
`max(tat, now) + c / rate - capacity / rate <= now`, and taking it moves `tat` on by
`c / rate`. One number per bucket means one atomic Lua script per take in Redis, the
same arithmetic in both places, and "how long until it fits" for free, which is what a
caller deciding between waiting and failing over needs. A cost larger than the whole
bucket (a 5000-token request against a 3000-token bucket) fits when the bucket is full,
and leaves it in debt.

`MemoryBuckets` keep the buckets in this process. `RedisBuckets` keep them in Redis
(Redis's own clock, one script per take), shared by every process of the namespace;
each take also says, by a heartbeat in a sorted set, how many processes used the target
in the last `PEER_WINDOW_S`. `FallbackBuckets` use Redis while it answers; while it is
away, each process paces on its own at its share: the configured rates divided by the
number of processes Redis last reported, and they are shared again when Redis answers.
"""

from __future__ import annotations

import math
import os
import threading
import uuid
from dataclasses import dataclass
from typing import Any

from . import clock
from .schema import RateLimitPolicy

PEER_WINDOW_S = 30.0  # a process that took nothing for this long no longer counts as a peer


@dataclass(frozen=True)
class Cost:
    """What one attempt takes: one request and an estimate of its tokens."""

    requests: float = 1.0
    tokens: float = 0.0


@dataclass(frozen=True)
class Rates:
    """The configured buckets as (rate per second, capacity) per limit; None: no limit."""

    requests: tuple[float, float] | None
    tokens: tuple[float, float] | None

    @classmethod
    def of(cls, policy: RateLimitPolicy, share: float = 1.0) -> Rates:
        """`policy`'s buckets, at `share` of their rates (a process's part of a fleet's limit)."""
        requests = tokens = None
        if policy.rpm is not None:
            rate = policy.rpm / 60.0 * share
            requests = (rate, max(1.0, policy.burst * share))
        if policy.tpm is not None:
            rate = policy.tpm / 60.0 * share
            tokens = (rate, max(1.0, rate))  # one second of tokens
        return cls(requests, tokens)


def gcra_wait(tat: float, now: float, rate: float, capacity: float, cost: float) -> float:
    """Seconds until `cost` fits in a bucket whose theoretical arrival time is `tat`."""
    need = min(cost, capacity)
    return max(0.0, max(tat, now) + (need - capacity) / rate - now)


def gcra_room(tat: float, now: float, rate: float, capacity: float) -> float:
    """Units that fit now."""
    return max(0.0, capacity - max(0.0, tat - now) * rate)


class Buckets:
    """The interface the limiter uses; also the buckets of a target without configured rates."""

    rates = Rates(None, None)
    fleet = False  # kept for a fleet (Redis), even while Redis is away

    def take(self, cost: Cost) -> float:
        """Take `cost` when it fits now (returns 0.0); else take nothing and return the
        seconds until it would fit."""
        return 0.0

    def give_back(self, cost: Cost) -> None:
        """Return what a permit took that was never sent."""

    def adjust_tokens(self, tokens: float) -> None:
        """Correct a token estimate by `tokens` (negative: fewer were used)."""

    def room(self) -> dict[str, float]:
        """Units that fit now, by limit."""
        return {}

    @property
    def shared(self) -> bool:
        return False

    @property
    def peers(self) -> int:
        return 1


class MemoryBuckets(Buckets):
    """The buckets of one target in this process."""

    def __init__(self, rates: Rates, now: Any = clock.monotonic) -> None:
        self.rates = rates
        self._clock = now
        self._tat = {"requests": -math.inf, "tokens": -math.inf}
        self._lock = threading.Lock()

    def take(self, cost: Cost) -> float:
        with self._lock:
            now = self._clock()
            wait = max((gcra_wait(self._tat[name], now, *bucket, amount) for name, bucket, amount in self._each(cost)),
                       default=0.0)
            if wait <= 0:
                for name, (rate, _), amount in self._each(cost):
                    self._tat[name] = max(self._tat[name], now) + amount / rate
            return wait

    def give_back(self, cost: Cost) -> None:
        with self._lock:
            for name, (rate, _), amount in self._each(cost):
                self._tat[name] -= amount / rate

    def adjust_tokens(self, tokens: float) -> None:
        if self.rates.tokens is None or not tokens:
            return
        with self._lock:
            now = self._clock()
            self._tat["tokens"] = max(self._tat["tokens"], now - self.rates.tokens[1] / self.rates.tokens[0]) \
                + tokens / self.rates.tokens[0]

    def room(self) -> dict[str, float]:
        now = self._clock()
        return {name: round(gcra_room(self._tat[name], now, *bucket), 3)
                for name, bucket in (("requests", self.rates.requests), ("tokens", self.rates.tokens)) if bucket}

    def _each(self, cost: Cost) -> list[tuple[str, tuple[float, float], float]]:
        return [(name, bucket, amount) for name, bucket, amount in
                (("requests", self.rates.requests, cost.requests), ("tokens", self.rates.tokens, cost.tokens))
                if bucket is not None]


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


class FallbackBuckets(Buckets):
    """Buckets in Redis while it answers; this process's share of them while it is away.

    The share is 1 / the number of processes Redis last reported as using this target
    (each take is a heartbeat; PEER_WINDOW_S). A fleet of N that loses Redis together
    then paces at N x 1/N of the limit: the limit, without talking to each other.
    """

    fleet = True

    def __init__(self, shared: RedisBuckets, link: Any, policy: RateLimitPolicy) -> None:
        self.rates = shared.rates
        self._shared = shared
        self._link = link
        self._policy = policy
        self._local: MemoryBuckets | None = None
        self._seeded = -1

    def take(self, cost: Cost) -> float:
        return self._link.run(lambda: self._shared.take(cost), lambda: self._alone().take(cost))

    def give_back(self, cost: Cost) -> None:
        self._link.run(lambda: self._shared.give_back(cost), lambda: self._alone().give_back(cost))

    def adjust_tokens(self, tokens: float) -> None:
        self._link.run(lambda: self._shared.adjust_tokens(tokens), lambda: self._alone().adjust_tokens(tokens))

    def room(self) -> dict[str, float]:
        return self._link.run(self._shared.room, lambda: self._alone().room())

    @property
    def shared(self) -> bool:
        return bool(self._link.up)

    @property
    def peers(self) -> int:
        return self._shared.last_peers

    @property
    def share(self) -> float:
        return 1.0 / self._shared.last_peers

    def _alone(self) -> MemoryBuckets:
        if self._local is None or self._seeded != self._link.outage:
            self._seeded = self._link.outage
            self._local = MemoryBuckets(Rates.of(self._policy, self.share))
        return self._local


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
