"""A retry budget per target, in the style of gRPC's retry throttling.

During an outage every caller's retries multiply the load on a provider that is already
failing, and a fleet multiplies it again. A token bucket per target stops that: each
failure counted against the target takes one token, each success puts back
`token_ratio`, and a retry is allowed only while more than half of `max_tokens` are
left. First attempts never ask the budget, so failover and recovery go on; only the
retries stop, and come back as successes refill the bucket.

`RetryBudget` keeps the bucket in this process; `RedisRetryBudget` keeps one bucket per
target for every process using the same Redis and namespace (state.py picks one).
"""

from __future__ import annotations

import threading
import time
from typing import Any, Protocol

from .schema import RetryBudgetPolicy


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
        """Start from what the shared bucket held (state.py, when Redis stops answering)."""
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
    Errors are raised: state.py falls back to a `RetryBudget` in this process.
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
