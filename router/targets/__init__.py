"""The things a chain is made of: each `Target` answers one `Request`, or raises.

A target makes exactly one request per `complete` call (no retries of its own: retrying
is the router's job) and must return within `timeout` seconds or raise. What it raises
is classified by `router.outcomes.classify`; targets that are not provider SDKs raise
`TargetFailure` with the outcome spelled out.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Protocol

from ..schema import TargetConfig
from ..request import Request
from ..response import Response

if TYPE_CHECKING:
    from ..cache.tier import AnswerCaches

Note = Callable[[str], None]


class Target(Protocol):
    config: TargetConfig

    def complete(self, request: Request, *, timeout: float, note: Note) -> Response:
        """Answer `request` with one call; `note` records facts worth showing in the route."""
        ...


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
