"""The `Router`: built from a config, it owns one target object (targets/) and one `Guard`
(guards/guard.py: circuit, retry budget, bulkhead, rate limiter, misconfigured flag) per configured target,
and hands each call to the chain walk (walk/) or the stream opener (streaming/) with
a `Crew` of those: the walk never sees the Router."""

from __future__ import annotations

import asyncio
import logging
import os
import threading
import time
from collections.abc import Awaitable, Callable, Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, overload

from .cache.tier import open_caches
from .config import config_from_dict, load_config
from .deadline import Deadline
from .errors import InvalidRequest
from .observe.events import Events, Listener, LoggingListener
from .observe.metrics import PrometheusListener
from .guards.guard import Guard
from .state import build_guard
from .observe.redact import Redactor
from .request import build_request, check_deadline
from .config.schema import ChainConfig, RouterConfig, TargetConfig
from .state import build_state
from .streaming import AsyncStream, Stream, stream_async, stream_sync
from .targets import Target, build_target
from .walk import Crew, Walk, walk_async, walk_sync

if TYPE_CHECKING:
    from .response import Response

log = logging.getLogger("router")


class Router:
    """Routes chat completions down configured chains of targets.

    `listeners` receive every `Event` (observe/events.py); `sleep` / `async_sleep` replace the
    backoff waits (tests pass a recorder, or a no-op to turn waits off); `target_factory`
    builds the object that answers for each configured target (default: `build_target`;
    `router advise --replay` passes one that plays a recorded log back).
    """

    def __init__(self, config: RouterConfig, *, listeners: Iterable[Listener] = (),
                 sleep: Callable[[float], Any] = time.sleep,
                 async_sleep: Callable[[float], Awaitable[Any]] = asyncio.sleep,
                 target_factory: Callable[[TargetConfig], Target] | None = None) -> None:
        self.config = config
        self._sleep = sleep
        self._async_sleep = async_sleep
        every = [*_configured_listeners(config), *listeners]
        self._events = Events(every)
        for listener in every:
            self._watched_by(listener)
        self._state = build_state(config.state, source=config.source)
        self._guards = {name: build_guard(target, self._state, self._circuit_changed)
                        for name, target in config.targets.items()}
        self._answers = open_caches(config)
        build = target_factory or (lambda target: build_target(target, self._answers))
        self._targets: dict[str, Target] = {name: build(target) for name, target in config.targets.items()
                                            if not target.disabled}
        self._redact = Redactor(t.api_key.reveal() for t in config.targets.values() if t.api_key)
        for name, target in self._targets.items():
            if target.config.local is not None and target.config.local.preload:
                target.preload()
        transports = {t.config.transport for t in self._targets.values() if t.config.is_remote}
        if not config.offline and transports:
            from .targets.remote import warm_in_background

            warm_in_background(transports)  # seconds of imports, off the first call's clock

    @classmethod
    def from_yaml(cls, path: str | os.PathLike[str], **kwargs: Any) -> Router:
        return cls(load_config(path), **kwargs)

    @classmethod
    def from_dict(cls, data: dict[str, Any], **kwargs: Any) -> Router:
        return cls(config_from_dict(data), **kwargs)

    # -- calls ---------------------------------------------------------------------------

    @overload
    def complete(self, messages: list[dict[str, Any]], chain: str = ..., deadline: float | None = ..., *,
                 stream: Literal[False] = ..., **params: Any) -> Response: ...

    @overload
    def complete(self, messages: list[dict[str, Any]], chain: str = ..., deadline: float | None = ..., *,
                 stream: Literal[True], **params: Any) -> Stream: ...

    def complete(self, messages: list[dict[str, Any]], chain: str = "default", deadline: float | None = None, *,
                 stream: bool = False, **params: Any) -> Response | Stream:
        """Answer a chat request from the first target of `chain` that can.

        `deadline` (seconds) bounds the whole call, retries and failover included (for a
        stream: until its first content); extra keyword arguments (max_tokens, temperature,
        ...) pass through to the target. With `stream=True`, returns a `Stream` of chunks
        once a target has started answering.
        """
        walk = self._walk(messages, chain, deadline, stream, params)
        return stream_sync(walk) if walk.request.stream else walk_sync(walk)

    @overload
    async def acomplete(self, messages: list[dict[str, Any]], chain: str = ..., deadline: float | None = ..., *,
                        stream: Literal[False] = ..., **params: Any) -> Response: ...

    @overload
    async def acomplete(self, messages: list[dict[str, Any]], chain: str = ..., deadline: float | None = ..., *,
                        stream: Literal[True], **params: Any) -> AsyncStream: ...

    async def acomplete(self, messages: list[dict[str, Any]], chain: str = "default",
                        deadline: float | None = None, *, stream: bool = False,
                        **params: Any) -> Response | AsyncStream:
        """`complete` for asyncio: litellm's async API for remote targets, the local tier in
        a worker thread. Cancelling the caller cancels the attempt and counts against nothing.
        With `stream=True`, returns an `AsyncStream` (`async for chunk in await ...`)."""
        walk = self._walk(messages, chain, deadline, stream, params)
        return await (stream_async(walk) if walk.request.stream else walk_async(walk))

    def _walk(self, messages: Any, chain: str, deadline: float | None, stream: Any,
              params: dict[str, Any]) -> Walk:
        request = build_request(messages, {**params, "stream": stream})
        crew = Crew(self._targets, self._guards, self._events, self._redact, self._sleep, self._async_sleep,
                    self.config.offline, self._answers)
        return Walk(self._chain(chain), request, self._deadline(deadline), crew)

    # -- operators -------------------------------------------------------------------------

    def status(self) -> dict[str, dict[str, Any]]:
        """Per target: its circuit, why it is out of rotation, and why it is held back:
        calls in flight and queued (at its bulkhead; a local target: running on a model of
        its pool, and queued at the bulkhead or for a model, with `pool_size`), the rate
        limiter's room, wait, learned limits and pause (`rate_limit`)."""
        report = {}
        for name, guard in self._guards.items():
            info = guard.status()
            target = guard.config
            if target.disabled:
                info["disabled"] = target.disabled
            elif self.config.offline and target.is_remote:
                info["disabled"] = "offline mode"
            if guard.misconfigured is not None:
                info["misconfigured"] = guard.misconfigured
            load = self._targets[name].load() if name in self._targets else None
            if load is not None:  # its own queue (the local tier's model pool) says what runs and waits
                info["in_flight"] = load["running"]
                info["queued"] += load["waiting"]
                info["pool_size"] = load["pool_size"]
            report[name] = info
        return report

    def force_open(self, target: str) -> None:
        """Take a target out of rotation until its reset timeout passes (or force_close)."""
        self._guard(target).force_open()

    def force_close(self, target: str) -> None:
        """Put a target back into rotation now, forgetting its failures."""
        self._guard(target).force_close()

    reset = force_close

    def cache_stats(self) -> dict[str, dict[str, Any]]:
        """Each cache tier: backend, entries, bytes, hits, ages of its oldest and newest
        answers, and what this process counted (hits, misses, writes, errors)."""
        return {name: cache.stats() for name, cache in self._answers.caches.items()}

    def clear_cache(self, target: str | None = None) -> dict[str, int]:
        """Forget every answer of one cache tier (or of all): how many each had."""
        names = [target] if target is not None else list(self._answers.caches)
        unknown = [n for n in names if n not in self._answers.caches]
        if unknown:
            raise KeyError(f"{unknown[0]!r} is not a cache target; cache targets: {', '.join(self._answers.caches)}")
        return {name: self._answers.caches[name].clear() for name in names}

    def flush_cache(self, timeout: float = 5.0) -> bool:
        """Wait until answers already handed to the cache tiers are written (sqlite and Redis
        write in the background; this also runs at exit). False if `timeout` passed first."""
        return self._answers.flush(timeout)

    def add_listener(self, listener: Listener) -> None:
        """Also tell `listener` every event from now on."""
        self._events.add(listener)
        self._watched_by(listener)

    def _watched_by(self, listener: Listener) -> None:
        """A Prometheus listener also exports `status()` as gauges, read at each scrape."""
        if isinstance(listener, PrometheusListener):
            listener.watch(self.status)

    def remove_listener(self, listener: Listener) -> None:
        self._events.remove(listener)

    def _circuit_changed(self, target: str, old: str, new: str) -> None:
        level = logging.WARNING if new == "open" else logging.INFO
        log.log(level, "router: circuit of %r is now %s (was %s)", target, new, old)
        self._events.emit("circuit", target=target, old_state=old, new_state=new)

    # -- helpers -------------------------------------------------------------------------

    def _chain(self, name: str) -> ChainConfig:
        if not isinstance(name, str):
            raise InvalidRequest(f"chain must be the name of a configured chain (a string), got {name!r}; "
                                 f"configured chains: {', '.join(self.config.chains)}")
        try:
            return self.config.chains[name]
        except KeyError:
            raise InvalidRequest(f"unknown chain {name!r}; configured chains: "
                                 f"{', '.join(self.config.chains)}") from None

    def _guard(self, target: str) -> Guard:
        try:
            return self._guards[target]
        except KeyError:
            raise KeyError(f"unknown target {target!r}; configured targets: "
                           f"{', '.join(self._guards)}") from None

    def _deadline(self, seconds: float | None) -> Deadline:
        if seconds is None:
            return Deadline(self.config.deadline)
        return Deadline(check_deadline(seconds))

    def __repr__(self) -> str:
        return f"Router(source={self.config.source!r}, chains={list(self.config.chains)})"


def _configured_listeners(config: RouterConfig) -> list[Listener]:
    listeners: list[Listener] = []
    if config.events.log != "off":
        listeners.append(LoggingListener(json=config.events.log == "json"))
    if config.events.metrics:
        listeners.append(PrometheusListener())
    return listeners


# -- the module-level default router ---------------------------------------------------

_default: Router | None = None
_default_lock = threading.Lock()


def default_router() -> Router:
    """The Router built from $ROUTER_CONFIG or ./config.yaml on first use."""
    global _default
    with _default_lock:
        if _default is None:
            _default = Router.from_yaml(Path(os.environ.get("ROUTER_CONFIG", "config.yaml")))
        return _default
