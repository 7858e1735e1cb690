"""A chat request, checked before anything touches the network.

A request that cannot be sent is the caller's mistake, not a provider's failure: every
shape OpenAI documents for messages and for the common parameters is checked here, so
that nothing malformed reaches litellm (where it would fail before any HTTP request and,
unchecked, look like a provider error). Parameter shapes: what OpenAI's chat completions
API documents; unknown keys pass through untouched (providers add their own).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from .errors import InvalidRequest

ROLES = frozenset({"system", "developer", "user", "assistant", "tool", "function"})
CHARS_PER_TOKEN = 4  # English prose: an estimate for where no tokenizer is at hand
# Keys the router owns: a caller passing them would bypass the target's configuration
# (litellm's own retries and fallbacks included: retrying happens in one place, ours).
RESERVED_PARAMS = frozenset({"model", "messages", "api_key", "api_base", "base_url", "max_retries",
                             "num_retries", "timeout", "request_timeout", "fallbacks",
                             "context_window_fallbacks"})
# Per-call arguments for the router itself: never passed on to a target.
ROUTER_CALL_PARAMS = frozenset({"stream", "cache", "cache_scope"})
# What a config's `params` may not set either: those, and the router's own per-call arguments.
ROUTER_OWNED_PARAMS = RESERVED_PARAMS | ROUTER_CALL_PARAMS
MAX_DEADLINE_S = 86400.0  # one day: a longer per-call deadline is a mistake, not a wish
_MAX_DEPTH = 32  # nesting of a message or parameter value


@dataclass(frozen=True)
class Request:
    """What the caller asked for: messages plus keyword arguments passed to the target."""

    messages: list[dict[str, Any]]
    params: Mapping[str, Any] = field(default_factory=dict)
    stream: bool = False
    cache: bool = True  # read and write cache tiers (`cache=False` per call: neither)
    cache_scope: str | None = None  # part of the cache key, never sent to a provider

    @property
    def wants_tools(self) -> bool:
        """True when the caller offers tools (or legacy functions) to the model."""
        return any(self.params.get(key) for key in ("tools", "functions"))


def build_request(messages: Any, params: Mapping[str, Any]) -> Request:
    """Validate the caller's arguments; raise `InvalidRequest` naming the first problem."""
    if not isinstance(messages, list) or not messages:
        raise InvalidRequest("messages must be a non-empty list of {'role': ..., 'content': ...} dicts")
    for i, message in enumerate(messages):
        _check_message(message, f"messages[{i}]")
    reserved = sorted(RESERVED_PARAMS & params.keys())
    if reserved:
        raise InvalidRequest(f"{', '.join(reserved)} cannot be passed per call: set them on the "
                             f"target in the config (timeouts: 'deadline=' bounds a call)")
    check_params(params)
    stream = params.get("stream", False)
    if not isinstance(stream, bool):
        raise InvalidRequest(f"stream must be true or false, got {stream!r}")
    cache, scope = params.get("cache", True), params.get("cache_scope")
    if not isinstance(cache, bool):
        raise InvalidRequest(f"cache must be true or false, got {cache!r}")
    if scope is not None and not isinstance(scope, str):
        raise InvalidRequest(f"cache_scope must be a string, got {type(scope).__name__}")
    rest = {k: v for k, v in params.items() if k not in ROUTER_CALL_PARAMS}
    return Request(messages=[dict(m) for m in messages], params=rest, stream=stream, cache=cache, cache_scope=scope)


def check_params(params: Mapping[str, Any]) -> None:
    """The documented OpenAI parameters have their documented types and ranges."""
    for key, value in params.items():
        check = _PARAM_CHECKS.get(key)
        if check is not None and value is not None:
            check(value, key)
        _check_text(value, key, 0)


def check_deadline(seconds: Any) -> float:
    """A per-call deadline: a finite number of seconds in (0, one day]."""
    if isinstance(seconds, bool) or not isinstance(seconds, (int, float)):
        raise InvalidRequest(f"deadline must be a number of seconds > 0, got {seconds!r}")
    if not 0 < seconds <= MAX_DEADLINE_S:  # also refuses NaN, inf and 10**400
        raise InvalidRequest(f"deadline must be a number of seconds > 0 and at most {MAX_DEADLINE_S:g} "
                             f"(one day), got {_short(seconds)}")
    return float(seconds)


# -- messages ---------------------------------------------------------------------------

def _check_message(message: Any, path: str) -> None:
    if not isinstance(message, Mapping):
        raise InvalidRequest(f"{path} must be a dict, got {type(message).__name__}")
    role = message.get("role")
    if role not in ROLES:
        raise InvalidRequest(f"{path}.role must be one of {', '.join(sorted(ROLES))}, got {role!r}")
    content = message.get("content")
    if content is None:
        if not (role == "assistant" and (message.get("tool_calls") or message.get("function_call"))):
            raise InvalidRequest(f"{path}.content is missing")
    elif isinstance(content, list):
        if not content:
            raise InvalidRequest(f"{path}.content is an empty list; give a string or at least one part")
        for j, part in enumerate(content):
            _check_part(part, f"{path}.content[{j}]")
    elif not isinstance(content, str):
        raise InvalidRequest(f"{path}.content must be a string or a list of parts, got {type(content).__name__}")
    name = message.get("name")
    if name is not None and not isinstance(name, str):
        raise InvalidRequest(f"{path}.name must be a string, got {type(name).__name__}")
    if role == "tool" and not isinstance(message.get("tool_call_id"), str):
        raise InvalidRequest(f"{path}.tool_call_id must be the id (a string) of the tool call it answers")
    tool_calls = message.get("tool_calls")
    if tool_calls is not None:
        if not isinstance(tool_calls, list):
            raise InvalidRequest(f"{path}.tool_calls must be a list, got {type(tool_calls).__name__}")
        for j, call in enumerate(tool_calls):
            where = f"{path}.tool_calls[{j}]"
            function = call.get("function") if isinstance(call, Mapping) else None
            if not isinstance(function, Mapping) or not isinstance(function.get("name"), str):
                raise InvalidRequest(f"{where} must be {{'id': ..., 'type': 'function', "
                                     f"'function': {{'name': str, 'arguments': str}}}}")
            if not isinstance(function.get("arguments", ""), str):
                raise InvalidRequest(f"{where}.function.arguments must be a JSON string")
    _check_text(message, path, 0)


# type -> (the key that holds the part's payload, the payload's type, how to write it)
_PARTS: dict[str, tuple[str, type | tuple[type, ...], str]] = {
    "text": ("text", str, "{'type': 'text', 'text': '...'}"),
    "refusal": ("refusal", str, "{'type': 'refusal', 'refusal': '...'}"),
    "image_url": ("image_url", (Mapping, str), "{'type': 'image_url', 'image_url': {'url': '...'}}"),
    "input_audio": ("input_audio", Mapping, "{'type': 'input_audio', 'input_audio': {'data': ..., 'format': ...}}"),
    "file": ("file", Mapping, "{'type': 'file', 'file': {'file_id' or 'file_data': ...}}"),
}


def _check_part(part: Any, path: str) -> None:
    if not isinstance(part, Mapping):
        raise InvalidRequest(f"{path} must be a content part such as {{'type': 'text', 'text': '...'}}, "
                             f"got {_short(part)}")
    kind = part.get("type")
    if not isinstance(kind, str):
        raise InvalidRequest(f"{path} has no 'type' (a string such as 'text' or 'image_url')")
    if kind in _PARTS:
        key, expected, shape = _PARTS[kind]
        if not isinstance(part.get(key), expected):
            raise InvalidRequest(f"{path} is a {kind!r} part without a valid {key!r}: write {shape}")
        image = part.get("image_url")
        if kind == "image_url" and isinstance(image, Mapping) and not isinstance(image.get("url"), str):
            raise InvalidRequest(f"{path}.image_url.url must be a string (an https: or data: URL)")


def _check_text(value: Any, path: str, depth: int) -> None:
    """Every string must be encodable as UTF-8 (no lone surrogates); no cycles or absurd nesting."""
    if isinstance(value, str):
        if value.isascii():  # the common case, and no copy of a large base64 image
            return
        try:
            value.encode("utf-8")
        except UnicodeEncodeError as exc:
            raise InvalidRequest(f"{path} is not valid Unicode text: a lone surrogate "
                                 f"{value[exc.start]!r} at index {exc.start}") from None
        return
    if depth > _MAX_DEPTH:
        raise InvalidRequest(f"{path} is nested more than {_MAX_DEPTH} levels deep (or refers to itself)")
    if isinstance(value, Mapping):
        for key, item in value.items():
            _check_text(key, path, depth + 1)
            _check_text(item, f"{path}.{key}", depth + 1)
    elif isinstance(value, (list, tuple)):
        for i, item in enumerate(value):
            _check_text(item, f"{path}[{i}]", depth + 1)


# -- parameters -------------------------------------------------------------------------

def _number(low: float | None = None, high: float | None = None, *, integer: bool = False):
    what = "a whole number" if integer else "a number"
    if low is not None:
        what += f" >= {low:g}" if high is None else f" between {low:g} and {high:g}"

    def check(value: Any, key: str) -> None:
        kind = int if integer else (int, float)
        if (isinstance(value, bool) or not isinstance(value, kind)
                or isinstance(value, float) and not math.isfinite(value)
                or low is not None and value < low or high is not None and value > high):
            raise InvalidRequest(f"{key} must be {what}, got {_short(value)}")
    return check


def _kind(expected: type | tuple[type, ...], words: str):
    def check(value: Any, key: str) -> None:
        if isinstance(value, bool) and expected is not bool or not isinstance(value, expected):
            raise InvalidRequest(f"{key} must be {words}, got {_short(value)}")
    return check


def _stop(value: Any, key: str) -> None:
    if isinstance(value, str):
        return
    if not isinstance(value, list) or not all(isinstance(s, str) for s in value):
        raise InvalidRequest(f"{key} must be a string or a list of strings, got {_short(value)}")


def _logit_bias(value: Any, key: str) -> None:
    if not isinstance(value, Mapping):
        raise InvalidRequest(f"{key} must map token ids to numbers between -100 and 100, got {_short(value)}")
    for token, bias in value.items():
        if not (isinstance(token, int) and not isinstance(token, bool) or isinstance(token, str) and token.isdigit()):
            raise InvalidRequest(f"{key} keys must be token ids, got {token!r}")
        _number(-100, 100)(bias, f"{key}[{token!r}]")


def _metadata(value: Any, key: str) -> None:
    if not isinstance(value, Mapping) or not all(isinstance(k, str) and isinstance(v, str) for k, v in value.items()):
        raise InvalidRequest(f"{key} must map strings to strings, got {_short(value)}")


def _named_function(value: Any, key: str) -> None:
    function = value.get("function") if isinstance(value, Mapping) else None
    if not isinstance(function, Mapping) or not isinstance(function.get("name"), str):
        raise InvalidRequest(f"{key} must be {{'type': 'function', 'function': {{'name': '...', ...}}}}")


def _tools(value: Any, key: str) -> None:
    if not isinstance(value, list):
        raise InvalidRequest(f"{key} must be a list of tools such as {{'type': 'function', 'function': "
                             f"{{'name': ..., 'parameters': {{...}}}}}}, got {_short(value)}")
    for i, tool in enumerate(value):
        if not isinstance(tool, Mapping) or not isinstance(tool.get("type"), str):
            raise InvalidRequest(f"{key}[{i}] must be a dict with a 'type' (such as 'function')")
        if tool["type"] == "function":
            _named_function(tool, f"{key}[{i}]")
            parameters = tool["function"].get("parameters")
            if parameters is not None and not isinstance(parameters, Mapping):
                raise InvalidRequest(f"{key}[{i}].function.parameters must be a JSON schema (a dict)")


def _tool_choice(value: Any, key: str) -> None:
    if value in ("none", "auto", "required"):
        return
    if isinstance(value, Mapping) and value.get("type") == "function":
        return _named_function(value, key)
    if isinstance(value, Mapping) and isinstance(value.get("type"), str):
        return  # provider-specific choices (e.g. {"type": "allowed_tools", ...})
    raise InvalidRequest(f"{key} must be 'none', 'auto', 'required' or "
                         f"{{'type': 'function', 'function': {{'name': '...'}}}}, got {_short(value)}")


def _function_call(value: Any, key: str) -> None:
    if value in ("none", "auto") or isinstance(value, Mapping) and isinstance(value.get("name"), str):
        return
    raise InvalidRequest(f"{key} must be 'none', 'auto' or {{'name': '...'}}, got {_short(value)}")


def _functions(value: Any, key: str) -> None:
    if not isinstance(value, list) or not all(isinstance(f, Mapping) and isinstance(f.get("name"), str)
                                              for f in value):
        raise InvalidRequest(f"{key} must be a list of {{'name': ..., 'parameters': {{...}}}}, got {_short(value)}")


def _response_format(value: Any, key: str) -> None:
    if isinstance(value, type):
        return  # a pydantic model class: litellm turns it into a json_schema
    kind = value.get("type") if isinstance(value, Mapping) else None
    if kind not in ("text", "json_object", "json_schema"):
        raise InvalidRequest(f"{key} must be {{'type': 'text' | 'json_object' | 'json_schema', ...}}, "
                             f"got {_short(value)}")
    if kind == "json_schema" and not isinstance(value.get("json_schema"), Mapping):
        raise InvalidRequest(f"{key} of type 'json_schema' needs 'json_schema': {{'name': ..., 'schema': {{...}}}}")


_PARAM_CHECKS = {
    "temperature": _number(0, 2),
    "top_p": _number(0, 1),
    "presence_penalty": _number(-2, 2),
    "frequency_penalty": _number(-2, 2),
    "max_tokens": _number(1, None, integer=True),
    "max_completion_tokens": _number(1, None, integer=True),
    "n": _number(1, 128, integer=True),
    "seed": _number(integer=True),
    "top_logprobs": _number(0, 20, integer=True),
    "logprobs": _kind(bool, "true or false"),
    "parallel_tool_calls": _kind(bool, "true or false"),
    "store": _kind(bool, "true or false"),
    "user": _kind(str, "a string"),
    "reasoning_effort": _kind(str, "a string"),
    "service_tier": _kind(str, "a string"),
    "stream_options": _kind(Mapping, "a dict such as {'include_usage': True}"),
    "stop": _stop,
    "logit_bias": _logit_bias,
    "metadata": _metadata,
    "tools": _tools,
    "tool_choice": _tool_choice,
    "functions": _functions,
    "function_call": _function_call,
    "response_format": _response_format,
}


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def estimated_tokens(chars: int) -> int:
    """Tokens in `chars` characters of text, estimated (rate limits, continuations)."""
    return math.ceil(chars / CHARS_PER_TOKEN)
