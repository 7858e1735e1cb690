"""The things a chain is made of: each `Target` answers one `Request`, or raises.

A target makes exactly one request per call (no retries of its own: retrying is the
router's job) and must return within `timeout` seconds or raise. What it raises is
classified by `router.outcomes.classify`; targets that are not provider SDKs raise
`TargetFailure` with the outcome spelled out.

`Target` declares everything the walk uses, capabilities included, so nothing is probed
with getattr. Targets subclass it and inherit the defaults: an `acomplete` that runs
`complete` in a worker thread (the event loop never blocks), no native async stream
(`streams_async`), no continuation of a broken stream (`continues_streams`), nothing to
preload and nothing to wait for before an attempt (`ready`).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Iterator
from typing import TYPE_CHECKING, Any, Protocol

from ..request import Request
from ..config.schema import TargetConfig

if TYPE_CHECKING:
    from ..cache.tier import AnswerCaches
    from ..response import Response

Note = Callable[[str], None]


class Target(Protocol):
    config: TargetConfig
    # capabilities
    streams_async: bool = False  # `astream` is native; else the walk reads `stream` in a thread
    continues_streams: bool = False  # `stream(partial=...)` picks up a broken stream's text

    def complete(self, request: Request, *, timeout: float, note: Note) -> Response:
        """Answer `request` with one call; `note` records facts worth showing in the route."""
        ...

    async def acomplete(self, request: Request, *, timeout: float, note: Note) -> Response:
        """`complete` for asyncio; by default in a worker thread."""
        return await asyncio.to_thread(self.complete, request, timeout=timeout, note=note)

    def stream(self, request: Request, *, timeout: float, note: Note, partial: str = "") -> Iterator[Any]:
        """OpenAI-style chunks as they come; `partial` (only when `continues_streams`): the
        assistant text already delivered, to be continued."""
        ...

    async def astream(self, request: Request, *, timeout: float, note: Note, partial: str = "") -> AsyncIterator[Any]:
        """An async iterator of chunks (only when `streams_async`)."""
        raise NotImplementedError(f"{type(self).__name__} has no native async stream")

    def preload(self) -> None:
        """Get ready before the first call (load a model); by default nothing to do."""

    def ready(self) -> None:
        """Block until the target can send (its client library loaded): the walk calls it
        before an attempt's clock starts; by default ready at once."""

    async def aready(self) -> None:
        """`ready` for asyncio, without blocking the event loop."""

    def load(self) -> dict[str, int] | None:
        """Calls running and waiting in the target's own queue (the local tier's model pool:
        `{"running", "waiting", "pool_size"}`), for `Router.status()`; None: it has none."""
        return None

    def refused_prefill(self) -> None:
        """It answered a continuation's assistant prefill with a 400: stop offering to
        continue streams; by default nothing to forget."""


def build_target(config: TargetConfig, caches: AnswerCaches | None = None) -> Target:
    """The target object for one configured target (imports nothing heavy); a cache tier
    reads its store from `caches`."""
    if config.provider == "cache":
        from .cache import CacheTarget

        assert caches is not None, "a cache target needs the Router's caches"
        return CacheTarget(config, caches.caches[config.name])
    if config.provider == "llama_cpp":
        from .local import LocalTarget

        return LocalTarget(config)
    from .remote import RemoteTarget

    return RemoteTarget(config)
