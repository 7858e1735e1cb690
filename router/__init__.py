"""A resilient LLM failover router.

    import router
    r = router.Router.from_yaml("config.yaml")
    resp = r.complete(messages=[{"role": "user", "content": "hi"}], max_tokens=64)
    resp.choices[0].message.content, resp.route.served_by, resp.route.degraded

Importing this package is fast and offline: litellm and llama.cpp load on first use.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from . import errors
from .core import Router, default_router
from .errors import AllTargetsFailed, ConfigError, ContentRejected, InvalidRequest, StreamInterrupted
from .observe.events import Event, LoggingListener
from .response import Attempt, Route
from .streaming import AsyncStream, Stream

if TYPE_CHECKING:
    from .response import Response

__all__ = [
    "Router", "Response", "Route", "Attempt", "Chunk", "Stream", "AsyncStream", "complete", "acomplete", "status",
    "Event", "LoggingListener", "errors",
    "ConfigError", "AllTargetsFailed", "ContentRejected", "InvalidRequest", "StreamInterrupted",
]


def __getattr__(name: str) -> Any:
    """`Response` and `Chunk` (the openai SDK's types, ~0.45 s to import) load on first use."""
    if name in ("Response", "Chunk"):
        from . import response

        return getattr(response, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def complete(messages: list[dict[str, Any]], *args: Any, **kwargs: Any) -> Response | Stream:
    """`Router.complete` on the default router (built from $ROUTER_CONFIG or ./config.yaml)."""
    return default_router().complete(messages, *args, **kwargs)


async def acomplete(messages: list[dict[str, Any]], *args: Any, **kwargs: Any) -> Response | AsyncStream:
    """`Router.acomplete` on the default router."""
    return await default_router().acomplete(messages, *args, **kwargs)


def status() -> dict[str, dict[str, Any]]:
    """`Router.status` of the default router."""
    return default_router().status()
