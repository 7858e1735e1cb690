"""Where circuit state, half-open probe slots, retry budgets and rate-limit buckets live: this process
(`MemoryState`) or Redis, shared by every process and machine using the same namespace
(`RedisState`). `build_state(config.state)` picks one.

Redis is a help, never a dependency of a call, nor of a start: a Redis outage during a
deploy must not become an application outage. A URL that cannot be parsed is a
`ConfigError`; one that does not answer at start is a warning, and the process starts on
state kept in this process (a `ConfigError` only with `state.required: true`). After
that, any Redis error, or a reply slower than the socket timeout (20 ms unless the URL
says `?socket_timeout=...`), switches the whole `RedisState` to state kept in this
process; it goes back to Redis when Redis answers again (redis_outage.py).
"""

from __future__ import annotations

import re
from typing import Any

from collections.abc import Callable

from ..config.schema import RateLimitPolicy, RetryBudgetPolicy, StateConfig, TargetConfig
from ..errors import ConfigError
from ..guards.bulkhead import Bulkhead
from ..guards.circuit import Circuit, CircuitStorage, MemoryCircuitStorage, ProbeSlots
from ..guards.guard import Guard
from ..guards.retry_budget import RetryBudget, UnlimitedBudget
from ..limits.buckets import Buckets, MemoryBuckets, Rates
from ..limits.limiter import RateLimiter
from .redis_outage import FallbackBuckets, FallbackCircuitStorage, FallbackProbeSlots, FallbackRetryBudget, RedisLink
from .redis_store import RedisBuckets, RedisCircuitStorage, RedisProbeSlots, RedisRetryBudget, RedisScripts, target_prefix

SOCKET_TIMEOUT_S = 0.02  # a Redis slower than this is treated as down
CONNECT_CHECK_S = 2.0  # the check at start may take longer: a cold connection, a busy machine


class State:
    """The interface the Router builds its circuits and budgets from."""

    def circuit_storage(self, target: str) -> CircuitStorage:
        raise NotImplementedError

    def probes(self, target: str, lease_s: float = 60.0) -> ProbeSlots:
        raise NotImplementedError

    def budget(self, target: str, policy: RetryBudgetPolicy) -> RetryBudget | UnlimitedBudget:
        raise NotImplementedError

    def buckets(self, target: str, policy: RateLimitPolicy) -> Buckets:
        """The rate-limit buckets of a target (limits/buckets.py); none without rpm or tpm."""
        return MemoryBuckets(Rates.of(policy)) if policy.configured else Buckets()

    def ping(self) -> bool:
        return True

    def describe(self) -> dict[str, Any]:
        raise NotImplementedError

    def close(self) -> None:
        pass


class MemoryState(State):
    """Everything in this process: each instance learns on its own."""

    def circuit_storage(self, target: str) -> CircuitStorage:
        return MemoryCircuitStorage()

    def probes(self, target: str, lease_s: float = 60.0) -> ProbeSlots:
        return ProbeSlots()

    def budget(self, target: str, policy: RetryBudgetPolicy) -> RetryBudget | UnlimitedBudget:
        return RetryBudget(policy) if policy.enabled else UnlimitedBudget()

    def describe(self) -> dict[str, Any]:
        return {"backend": "memory"}


def build_state(config: StateConfig, *, source: str = "<dict>") -> State:
    """The state backend of a config; `source` (the config file) names it in a ConfigError."""
    if config.backend == "redis":
        return RedisState(config.url or "", config.namespace, source=source, required=config.required)
    return MemoryState()


def build_guard(config: TargetConfig, state: State,
                on_change: Callable[[str, str, str], Any] | None = None) -> Guard:
    """The guard of one target, its circuit and budget kept where `state` keeps them;
    `on_change(target, old, new)` hears of every circuit change."""
    name = config.name
    circuit = Circuit(name, config.breaker, storage=state.circuit_storage(name), probes=state.probes(name),
                      on_change=on_change)
    return Guard(config, circuit, state.budget(name, config.retry.budget),
                 Bulkhead(config.max_concurrency, config.queue_timeout),
                 RateLimiter(name, config.rate_limit, state.buckets(name, config.rate_limit)))


class RedisState(State):
    """Circuits, probe slots and budgets in Redis under `namespace`, for the whole fleet."""

    def __init__(self, url: str, namespace: str = "router", *, source: str = "<dict>",
                 socket_timeout: float = SOCKET_TIMEOUT_S, required: bool = False) -> None:
        try:
            import redis
            from redis.backoff import NoBackoff
            from redis.retry import Retry
        except ImportError:
            raise ConfigError("the redis backend needs the redis package: pip install 'failover-router[redis]'",
                              file=source, key_path="state.backend") from None
        self.namespace = namespace
        self.shown_url = redact_url(url)
        errors = (redis.RedisError, OSError)
        # one immediate retry on a broken connection (a pooled one the server closed when it
        # restarted), none on a timeout: a slow Redis is a Redis to do without
        options = {"retry": Retry(NoBackoff(), 1, supported_errors=(redis.ConnectionError,)),
                   "health_check_interval": 0}
        try:  # query options in the URL (?socket_timeout=0.05) win over these
            checker = redis.Redis.from_url(url, socket_timeout=CONNECT_CHECK_S,
                                           socket_connect_timeout=CONNECT_CHECK_S, **options)
            self._client = redis.Redis.from_url(url, socket_timeout=socket_timeout,
                                                socket_connect_timeout=socket_timeout, **options)
        except (*errors, ValueError) as exc:  # a URL redis-py cannot parse
            raise ConfigError(f"cannot use redis at {self.shown_url}: {type(exc).__name__}: {exc}",
                              file=source, key_path="state.url") from None
        self._link = RedisLink(self._client, self.shown_url, errors)
        self._scripts = RedisScripts(self._client)
        try:
            checker.ping()
        except errors as exc:
            if required:
                raise ConfigError(f"cannot use redis at {self.shown_url}: {type(exc).__name__}: {exc} "
                                  f"(state.required is true)", file=source, key_path="state.url") from None
            self._link.absent_at_start(exc)
        finally:
            checker.close()

    def circuit_storage(self, target: str) -> CircuitStorage:
        shared = RedisCircuitStorage(self._client, self.namespace, target, self._scripts)
        return FallbackCircuitStorage(shared, self._link)

    def probes(self, target: str, lease_s: float = 60.0) -> ProbeSlots:
        shared = RedisProbeSlots(self._client, self.namespace, target, self._scripts, lease_s)
        return FallbackProbeSlots(shared, self._link)

    def budget(self, target: str, policy: RetryBudgetPolicy) -> Any:
        if not policy.enabled:
            return UnlimitedBudget()
        shared = RedisRetryBudget(self._client, f"{target_prefix(self.namespace, target)}:budget", policy)
        return FallbackRetryBudget(shared, self._link)

    def buckets(self, target: str, policy: RateLimitPolicy) -> Buckets:
        if not policy.configured:
            return Buckets()
        shared = RedisBuckets(self._client, target_prefix(self.namespace, target), Rates.of(policy))
        return FallbackBuckets(shared, self._link, policy)

    def ping(self) -> bool:
        try:
            return bool(self._client.ping())
        except self._link.errors:
            return False

    @property
    def shared(self) -> bool:
        """False while Redis is away and state is kept in this process."""
        return self._link.up

    def describe(self) -> dict[str, Any]:
        return {"backend": "redis", "url": self.shown_url, "namespace": self.namespace,
                "shared": self._link.up}

    def close(self) -> None:
        self._client.close()


def redact_url(url: str) -> str:
    """The URL without its password, for logs and errors."""
    return re.sub(r"(?<=://)([^:@/]*):[^@/]*@", r"\1:***@", url)
