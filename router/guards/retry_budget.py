"""A retry budget per target, in the style of gRPC's retry throttling.

During an outage every caller's retries multiply the load on a provider that is already
failing, and a fleet multiplies it again. A token bucket per target stops that: each
failure counted against the target takes one token, each success puts back
`token_ratio`, and a retry is allowed only while more than half of `max_tokens` are
left. First attempts never ask the budget, so failover and recovery go on; only the
retries stop, and come back as successes refill the bucket.

`RetryBudget` keeps the bucket in this process; `RedisRetryBudget` (state/redis_store.py)
keeps one bucket per target for every process using the same Redis and namespace.
"""

from __future__ import annotations

import threading
import time
from typing import Any, Protocol

from ..config.schema import RetryBudgetPolicy


class Budget(Protocol):
    """What the guard (guard.py) asks of a retry budget, wherever its bucket lives."""

    @property
    def tokens(self) -> float: ...

    def failed(self) -> None: ...

    def succeeded(self) -> None: ...

    def allow_retry(self) -> bool: ...


class RetryBudget:
    """The bucket of one target, in this process."""

    def __init__(self, policy: RetryBudgetPolicy) -> None:
        self.policy = policy
        self._tokens = float(policy.max_tokens)
        self._lock = threading.Lock()

    @property
    def tokens(self) -> float:
        return self._tokens

    def failed(self) -> None:
        """An attempt failed in a way that counts against the target."""
        with self._lock:
            self._tokens = max(0.0, self._tokens - 1)

    def succeeded(self) -> None:
        with self._lock:
            self._tokens = min(float(self.policy.max_tokens), self._tokens + self.policy.token_ratio)

    def allow_retry(self) -> bool:
        """Ask before each retry (never before a first attempt)."""
        return self._tokens > self.policy.max_tokens / 2

    def seed(self, tokens: float) -> None:
        """Start from what the shared bucket held (state/, when Redis stops answering)."""
        with self._lock:
            self._tokens = min(float(self.policy.max_tokens), max(0.0, tokens))


class UnlimitedBudget:
    """`budget: {enabled: false}`: every retry the retry policy allows."""

    tokens = float("inf")

    def failed(self) -> None:
        pass

    def succeeded(self) -> None:
        pass

    def allow_retry(self) -> bool:
        return True

    def seed(self, tokens: float) -> None:
        pass
