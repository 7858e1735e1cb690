"""Which answers a cache tier keeps, under which key, and as what text.

The key is the sha256 of canonical JSON (sorted keys, no spaces, a whole-number float
written as an int so `temperature=1` and `1.0` agree) of what shapes an answer: the
messages, every per-call parameter except those that do not (`user`, `metadata`, ...),
and the call's `cache_scope`. Neither the chain nor which target answered is part of it:
a cache tier stands in for the same question, whoever answered it first. Unknown
parameters are part of the key: an unneeded miss is better than a wrong answer.

Kept: complete answers of non-degraded targets (see `why_not_kept`). An answer cut by
`length` counts as complete only when a token limit was asked for (`max_tokens` or
`max_completion_tokens`, per call or in the answering target's `params`): the same
request then gets the same cut answer; without a limit, a cut answer is a provider's
limit, not what the caller asked for.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from ..outcomes import Outcome
from ..request import Request
from ..response import response_of

if TYPE_CHECKING:
    from ..response import Response, Route

# Per-call parameters that do not change what a model answers.
NOT_SHAPING = frozenset({"user", "metadata", "stream_options", "extra_headers", "store", "service_tier",
                         "safety_identifier", "prompt_cache_key"})
COMPLETE = frozenset({"stop", "tool_calls", "function_call"})
_LIMITS = ("max_tokens", "max_completion_tokens")


def cache_key(request: Request) -> str:
    """The key of `request` in every cache tier (hex sha256)."""
    params = {k: _canonical(v) for k, v in request.params.items() if k not in NOT_SHAPING}
    text = json.dumps({"messages": request.messages, "params": params, "scope": request.cache_scope},
                      sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=_jsonable)
    return hashlib.sha256(text.encode()).hexdigest()


def why_not_kept(request: Request, response: Response, route: Route, target_params: Mapping[str, Any]) -> str | None:
    """None when `response` may be kept; else the reason it is not."""
    if any(a.outcome == Outcome.CONTENT_POLICY.value for a in route.attempts):
        return "a target refused the request on content policy"
    if not response.choices:
        return "no choices"
    limited = any(request.params.get(k) is not None or target_params.get(k) is not None for k in _LIMITS)
    for choice in response.choices:
        reason = choice.finish_reason
        if reason == "length" and not limited:
            return "cut by length although no token limit was asked for"
        if reason not in COMPLETE and reason != "length":
            return f"finish_reason {reason!r}"
        if not choice.message.content and not choice.message.tool_calls:
            return "an empty answer"
    return None


def encode(response: Response) -> str:
    """The answer as JSON text: every OpenAI field the provider sent (tool calls, refusal,
    reasoning, logprobs, system_fingerprint, ...) except usage; no route."""
    return response.model_dump_json(exclude={"usage"}, exclude_unset=True, warnings=False)


class Unreadable(ValueError):
    """A stored answer that is not one (bad JSON, not an answer's shape)."""


def decode(payload: str | bytes) -> Response:
    """A stored answer as a `Response` (`Response.from_openai`). Its usage is zero: serving it
    cost no tokens. Entries written before answers were the SDK's types are a subset of this
    shape and decode the same; text that is not an answer raises `Unreadable`."""
    try:
        data = json.loads(payload)
    except (ValueError, TypeError) as exc:  # JSONDecodeError, UnicodeDecodeError, not text
        raise Unreadable(f"not JSON ({type(exc).__name__}: {exc})") from None
    choices = data.get("choices") if isinstance(data, dict) else None
    if not choices or not isinstance(choices, list) or not all(
            isinstance(c, dict) and isinstance(c.get("message"), dict) for c in choices):
        raise Unreadable("JSON without an answer's choices")
    data.pop("usage", None)
    try:
        return response_of(data)
    except Exception as exc:  # whatever the answer type refuses
        raise Unreadable(f"not an answer ({type(exc).__name__}: {exc})") from None


def _canonical(value: Any) -> Any:
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, Mapping):
        return {str(k): _canonical(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_canonical(v) for v in value]
    return value


def _jsonable(value: Any) -> Any:
    """A JSON-able stand-in for what json cannot write (a pydantic response_format, ...)."""
    if isinstance(value, type) and callable(getattr(value, "model_json_schema", None)):
        return value.model_json_schema()
    dump = getattr(value, "model_dump", None)
    if callable(dump):
        return dump()
    return repr(value)
