"""Limits learned from the provider, for one target (used by limiter.py).

What a provider says remains (`x-ratelimit-remaining-*`, `anthropic-ratelimit-*-remaining`)
is a budget until its reset, minus what this process has sent that the provider may not
have counted yet: its requests still in flight, or those sent after the request that
carried it, whichever is more (an older answer arriving late is ignored: limiter.py passes
only the newest). Measured against a provider allowing 20 requests/s, 100 calls from 8
threads: 7-11 answers were 429 when only the later requests were subtracted (the earlier
ones still on their way had not reached the provider either). With the
limit known, the budget refills linearly to the limit over the reset time, which is what
a provider's token bucket does; without it, the budget lapses at the reset. A 429 pauses
the target until its Retry-After. None of this needs a configured `rate_limit`.
A reset or a pause holds for at most `MAX_PROVIDER_WAIT_S` (provider_headers.py), and
`forget` (the Router's `force_close`) drops all of it.
"""

from __future__ import annotations

import math

from .buckets import Cost
from .provider_headers import Allowance, ProviderLimits, bounded_wait

UNDATED_S = 1.0  # how long a remaining count holds when the provider gives no reset time


class LearnedLimit:
    """One limit (requests or tokens) as the provider last reported it."""

    def __init__(self) -> None:
        self.level: float | None = None  # None: the provider said nothing (or it lapsed)
        self.stamp = 0.0
        self.refill: float | None = None  # units per second, when the limit is known
        self.cap: float | None = None
        self.until = 0.0  # the reported reset

    def level_at(self, now: float) -> float:
        if self.level is None:
            return math.inf
        if self.refill is not None and self.cap is not None:
            return min(self.cap, self.level + self.refill * (now - self.stamp))
        return self.level if now < self.until else math.inf

    def wait(self, cost: float, now: float) -> float:
        if cost <= 0:
            return 0.0
        level = self.level_at(now)
        need = min(cost, self.cap) if self.cap else cost
        if level >= need:
            return 0.0
        if self.refill:
            return (need - level) / self.refill
        return max(0.0, self.until - now)

    def take(self, cost: float, now: float) -> None:
        level = self.level_at(now)
        if math.isfinite(level):
            self.level, self.stamp = level - cost, now
        else:
            self.level = None

    def learn(self, allowance: Allowance, sent_since: float, now: float, refills: bool = True) -> None:
        self.level, self.stamp = allowance.remaining - sent_since, now
        self.cap = allowance.limit
        reset = allowance.reset_s
        self.until = now + (reset if reset is not None else UNDATED_S)
        if not refills:
            self.refill = None
        elif allowance.limit is not None and reset:
            self.refill = max(0.0, allowance.limit - allowance.remaining) / reset or None
        elif allowance.limit is None:
            self.refill = None

    def describe(self, now: float) -> dict[str, float] | None:
        level = self.level_at(now)
        if not math.isfinite(level):
            return None
        info = {"remaining": round(level, 1), "reset_in_s": round(max(0.0, self.until - now), 3)}
        if self.cap is not None:
            info["limit"] = self.cap
        return info


class LearnedLimits:
    """What the provider said about one target: remaining requests and tokens, and a pause."""

    def __init__(self) -> None:
        self.requests = LearnedLimit()
        self.tokens = LearnedLimit()
        self.paused_until = 0.0
        # A linear refill is what a token bucket does (OpenAI's); a provider counting in
        # windows frees room later, and says so with a 429 the refill did not foresee.
        # After one, a budget holds until its reset instead (measured against a 20/s
        # sliding window: 4-6 429s in 100 calls from 8 threads with the refill, 1-2 without).
        self.refills = True

    def wait(self, cost: Cost, now: float) -> float:
        return max(self.paused_until - now, self.requests.wait(cost.requests, now),
                   self.tokens.wait(cost.tokens, now), 0.0)

    def take(self, cost: Cost, now: float) -> None:
        self.requests.take(cost.requests, now)
        self.tokens.take(cost.tokens, now)

    def learn(self, limits: ProviderLimits, sent_since: Cost, now: float) -> None:
        if limits.requests is not None:
            self.requests.learn(limits.requests, sent_since.requests, now, self.refills)
        if limits.tokens is not None:
            self.tokens.learn(limits.tokens, sent_since.tokens, now, self.refills)

    def pause(self, seconds: float, now: float) -> None:
        """A 429: no request until `seconds` from `now`, and no more trust in a linear refill."""
        self.paused_until = max(self.paused_until, now + bounded_wait(seconds))
        self.refills = False
        self.requests.refill = self.tokens.refill = None
