"""The config's schema: typed, frozen dataclasses, one per section.

Their fields, types and `metadata` (minimum values, allowed choices) are what the loader
(loader.py) checks, so the documentation of a key and its validation live in one place.
The key names are part of the public contract (DESIGN.md).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from ..observe.redact import Secret


# Every configured duration is at most one day: a larger one is a typo (or 1e12), and
# past ~1e9 s the clocks, sockets and thread waits that use it overflow.
MAX_DURATION_S = 86400.0

# What a chain does with a stream that breaks after content (streaming/recovery.py).
CONTINUE, RESTART, ERROR, AUTO = "continue", "restart", "error", "auto"
MID_STREAM_CHOICES = (CONTINUE, RESTART, AUTO, ERROR)


def _at_least(n: float) -> dict[str, Any]:
    return {"min": n}


_DURATION: dict[str, Any] = {"min": 0.0, "max": MAX_DURATION_S}

# How a remote target is called (targets/remote.py): the openai SDK directly, or litellm.
OPENAI, LITELLM = "openai", "litellm"
TRANSPORTS = (OPENAI, LITELLM)


def speaks_openai(model: str | None) -> bool:
    """Whether litellm would send `model` to the OpenAI SDK unchanged (provider "openai",
    with or without api_base): then the SDK can be called directly, with no translation.
    Judged from the string alone, so that deciding never imports litellm."""
    return bool(model) and model.startswith("openai/") and len(model) > len("openai/")


@dataclass(frozen=True)
class RetryBudgetPolicy:
    """gRPC-style retry throttling per target (guards/retry_budget.py): each counted failure takes a
    token, each success returns `token_ratio`; retries only while more than half are left."""

    enabled: bool = True
    max_tokens: int = field(default=10, metadata=_at_least(1))
    token_ratio: float = field(default=0.1, metadata=_at_least(0.001))


@dataclass(frozen=True)
class RetryPolicy:
    """How one target is retried: full-jitter backoff, Retry-After bounded."""

    attempts: int = field(default=3, metadata=_at_least(1))  # tries of one target, first included
    min_wait: float = field(default=0.5, metadata=_DURATION)  # first backoff window; it doubles up to max_wait
    max_wait: float = field(default=8.0, metadata=_DURATION)
    max_retry_after: float = field(default=20.0, metadata=_DURATION)  # a longer Retry-After fails over instead
    retry_on_timeout: bool = False
    budget: RetryBudgetPolicy = RetryBudgetPolicy()


@dataclass(frozen=True)
class BreakerPolicy:
    """When one target's circuit opens, and how it closes again."""

    fail_max: int = field(default=5, metadata=_at_least(1))
    reset_timeout: float = field(default=60.0, metadata=_DURATION)
    success_threshold: int = field(default=1, metadata=_at_least(1))
    half_open_max_calls: int = field(default=1, metadata=_at_least(1))


@dataclass(frozen=True)
class RateLimitPolicy:
    """Client-side pacing of one target (limits/limiter.py): `rpm` requests and `tpm` tokens per
    minute, spread evenly (a bucket of `burst` requests refilling at rpm/60 per second);
    a call waits at most `max_wait` seconds for room, then fails over (`throttled`).
    With neither rpm nor tpm, only what the provider reports (its rate-limit headers,
    its 429s) limits the target."""

    rpm: float | None = field(default=None, metadata=_at_least(1))
    tpm: float | None = field(default=None, metadata=_at_least(1))
    burst: int = field(default=1, metadata=_at_least(1))
    max_wait: float = field(default=1.0, metadata=_DURATION)

    @property
    def configured(self) -> bool:
        return self.rpm is not None or self.tpm is not None


@dataclass(frozen=True)
class LocalOptions:
    """The local tier (`provider: llama_cpp`): a GGUF model in process on the CPU."""

    model_path: str
    n_ctx: int = field(default=2048, metadata=_at_least(16))
    n_threads: int | None = field(default=None, metadata=_at_least(1))
    chat_format: str | None = None  # None: the template stored in the GGUF
    max_tokens: int | None = field(default=None, metadata=_at_least(1))  # cap; default min(512, n_ctx // 2)
    preload: bool = False
    pool_size: int = field(default=1, metadata=_at_least(1))
    max_queue: int = field(default=16, metadata=_at_least(0))
    context_policy: str = field(default="truncate", metadata={"choices": ("truncate", "reject")})
    # a request offering tools: "skip" this target (outcome unsupported) or "drop" the tools and answer
    on_tools: str = field(default="skip", metadata={"choices": ("skip", "drop")})


@dataclass(frozen=True)
class CacheOptions:
    """A cache tier (`provider: cache`): the last good answer to the same request (router/cache/)."""

    backend: str = field(default="memory", metadata={"choices": ("memory", "sqlite", "redis")})
    path: str | None = None  # sqlite only; relative to the config file (default .router-cache.sqlite)
    ttl: float = field(default=86400.0, metadata={"min": 0.001, "max": 365 * 86400.0})  # seconds it may be served
    max_entries: int = field(default=10000, metadata=_at_least(1))  # least recently used go first
    max_answer_bytes: int = field(default=262144, metadata=_at_least(1))  # larger answers are not kept


@dataclass(frozen=True)
class TargetConfig:
    """One provider + model: what is called, and how it is protected."""

    name: str
    provider: str  # "litellm" (any remote provider), "llama_cpp" or "cache"
    model: str | None
    timeout: float
    retry: RetryPolicy
    breaker: BreakerPolicy
    api_key: Secret | None = None
    api_base: str | None = None
    degraded: bool = False
    context_window: int | None = None
    params: Mapping[str, Any] = field(default_factory=dict)  # passed to every call
    max_concurrency: int | None = None  # bulkhead: calls in flight to this target
    queue_timeout: float = 0.0  # how long a caller beyond max_concurrency waits for a slot
    first_token_timeout: float | None = None  # streams: the first content must come sooner
    stream_idle_timeout: float | None = None  # streams: no gap between chunks may be longer
    rate_limit: RateLimitPolicy = RateLimitPolicy()  # client-side pacing and learned provider limits
    prefill: bool | None = None  # accepts an assistant prefill (continues a broken stream); None: litellm's model info
    transport: str | None = None  # remote targets: "openai" (the SDK directly) or "litellm"; None for the others
    local: LocalOptions | None = None
    cache: CacheOptions | None = None
    disabled: str | None = None  # why this target is out of every chain

    @property
    def is_remote(self) -> bool:
        return self.provider not in ("llama_cpp", "cache")


@dataclass(frozen=True)
class ChainConfig:
    name: str
    targets: tuple[str, ...]
    static_reply: str | None = None  # answered as served_by "static" when every target fails
    on_content_policy: str = "propagate"  # or "fail_over"
    mid_stream: str = "continue"  # a stream broken after content: continue, restart, auto or error (streaming/recovery.py)
    max_recoveries: int = 3  # continuations plus restarts of one stream; past it, StreamInterrupted


@dataclass(frozen=True)
class StateConfig:
    backend: str = field(default="memory", metadata={"choices": ("memory", "redis")})
    url: str | None = None
    namespace: str = "router"
    required: bool = False  # True: a Redis that does not answer at start is a ConfigError


@dataclass(frozen=True)
class EventsConfig:
    """Listeners the config switches on (code can add its own with `listeners=`)."""

    log: str = field(default="off", metadata={"choices": ("off", "text", "json")})  # a line per event
    metrics: bool = False  # Prometheus metrics on the default registry (the `metrics` extra)


@dataclass(frozen=True)
class ServerKey:
    """One client key of `router serve` (serve/auth.py). Only the key's sha256 is kept: a
    `key:` in the config is hashed as it is loaded, `key_sha256:` is taken as written."""

    name: str
    key_sha256: str  # 64 lower-case hex digits
    chains: tuple[str, ...] | None = None  # the chains this key may call; None: every chain
    rate_limit: RateLimitPolicy = RateLimitPolicy()  # the same limiter as a target's, per key


DEFAULT_MAX_BODY_BYTES = 10 * 1024 * 1024


@dataclass(frozen=True)
class ServerConfig:
    """The `server:` section, read by `router serve` only (config/server_section.py). No keys:
    the gateway asks for none and binds to loopback only."""

    keys: tuple[ServerKey, ...] = ()
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES
    otel: bool = False  # OpenTelemetry spans and GenAI metrics for every call (router.otel)


@dataclass(frozen=True)
class RouterConfig:
    targets: Mapping[str, TargetConfig]
    chains: Mapping[str, ChainConfig]
    deadline: float = 90.0
    state: StateConfig = StateConfig()
    offline: bool = False
    events: EventsConfig = EventsConfig()
    source: str = "<dict>"
    server: ServerConfig = ServerConfig()
