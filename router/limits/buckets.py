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

`MemoryBuckets` keep the buckets in this process. Their fleet-wide twins live with the
rest of the shared state: `RedisBuckets` (state/redis_store.py: Redis's own clock, one
script per take, a heartbeat per process so each knows how many share the target within
`PEER_WINDOW_S`) and `FallbackBuckets` (state/redis_outage.py: each process's share of
the limit while Redis is away).
"""

from __future__ import annotations

import math
import threading
from dataclasses import dataclass
from typing import Any

from .. import clock
from ..config.schema import RateLimitPolicy

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
