"""A chat request, checked before anything touches the network."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from .errors import InvalidRequest

ROLES = frozenset({"system", "developer", "user", "assistant", "tool", "function"})
# Keys the router owns: a caller passing them would bypass the target's configuration.
_RESERVED = frozenset({"model", "messages", "api_key", "api_base", "base_url", "max_retries",
                       "num_retries", "timeout"})
# Per-call arguments for the router itself: never passed on to a target.
_ROUTER_KEYS = frozenset({"stream", "cache", "cache_scope"})


@dataclass(frozen=True)
class Request:
    """What the caller asked for: messages plus keyword arguments passed to the target."""

    messages: list[dict[str, Any]]
    params: Mapping[str, Any] = field(default_factory=dict)
    stream: bool = False
    cache: bool = True  # read and write cache tiers (`cache=False` per call: neither)
    cache_scope: str | None = None  # part of the cache key, never sent to a provider


def build_request(messages: Any, params: Mapping[str, Any]) -> Request:
    """Validate the caller's arguments; raise `InvalidRequest` naming the first problem."""
    if not isinstance(messages, list) or not messages:
        raise InvalidRequest("messages must be a non-empty list of {'role': ..., 'content': ...} dicts")
    for i, message in enumerate(messages):
        if not isinstance(message, Mapping):
            raise InvalidRequest(f"messages[{i}] must be a dict, got {type(message).__name__}")
        role = message.get("role")
        if role not in ROLES:
            raise InvalidRequest(f"messages[{i}].role must be one of {', '.join(sorted(ROLES))}, got {role!r}")
        content = message.get("content")
        if content is None:
            if not (role == "assistant" and (message.get("tool_calls") or message.get("function_call"))):
                raise InvalidRequest(f"messages[{i}].content is missing")
        elif not isinstance(content, (str, list)):
            raise InvalidRequest(f"messages[{i}].content must be a string or a list of parts, "
                                 f"got {type(content).__name__}")
    reserved = sorted(_RESERVED & params.keys())
    if reserved:
        raise InvalidRequest(f"{', '.join(reserved)} cannot be passed per call: set them on the "
                             f"target in the config (timeouts: 'deadline=' bounds a call)")
    for key in ("max_tokens", "max_completion_tokens", "n"):
        value = params.get(key)
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
            raise InvalidRequest(f"{key} must be a whole number >= 1, got {value!r}")
    stream = params.get("stream", False)
    if not isinstance(stream, bool):
        raise InvalidRequest(f"stream must be true or false, got {stream!r}")
    cache, scope = params.get("cache", True), params.get("cache_scope")
    if not isinstance(cache, bool):
        raise InvalidRequest(f"cache must be true or false, got {cache!r}")
    if scope is not None and not isinstance(scope, str):
        raise InvalidRequest(f"cache_scope must be a string, got {type(scope).__name__}")
    rest = {k: v for k, v in params.items() if k not in _ROUTER_KEYS}
    return Request(messages=[dict(m) for m in messages], params=rest, stream=stream, cache=cache, cache_scope=scope)
