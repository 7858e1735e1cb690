"""The answer types: the openai SDK's own `ChatCompletion` and `ChatCompletionChunk`, with
the router's additions. Imported on first use through router/response.py, never by
`import router`: `import openai.types.chat` costs ~0.45 s here (3 s on a loaded machine),
three times the whole of `import router` (0.15 s).

The additions (`route`, `headers`, `raw` on a `Response`; `restart` on a `Chunk`; `text` on
both) are properties over the instance's `__dict__`, outside the model's fields:
`model_dump()` and `model_dump_json()` give exactly the SDK's shape (what an OpenAI client
parses, what a gateway sends on), equality and `repr` ignore them, and the SDK's
extra-fields rule (`extra="allow"`) cannot turn them into stray keys. (pydantic's
`PrivateAttr` would do the same at ~10 µs per object to initialise, measured here: on
every chunk of every stream, a third of the conversion.) `to_dict()` is the JSON-ready
form with `route` (and `restart`) added.

Conversion keeps everything the provider sent: a provider object (litellm's
`ModelResponse`) is dumped and validated into these types, fields the SDK does not declare
(`reasoning_content`, `thinking_blocks`, `provider_specific_fields`, ...) stay as the
SDK's extra fields, readable as attributes. Validation costs ~7 µs an answer and ~3 µs a
chunk; a reply the SDK's types would reject (an unknown `finish_reason`) is built without
validation instead, as the SDK itself builds its responses, rather than failing a call
that succeeded.
"""

from __future__ import annotations

import time
from dataclasses import asdict
from typing import Any

from openai.types.chat import ChatCompletion, ChatCompletionChunk
from pydantic import ValidationError

_ZERO_USAGE = {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0}
# litellm's own bookkeeping, on every object it builds: dropped when empty (no provider sent it)
_LITELLM_EMPTY = ("provider_specific_fields", "citations")


def _kept(name: str, default: Any, doc: str) -> Any:
    """A read-write property kept in the instance's `__dict__` under `name`, beside the
    model's fields but not one of them (pydantic serialises, compares and shows fields only)."""
    return property(lambda self: self.__dict__.get(name, default),
                    lambda self, value: self.__dict__.__setitem__(name, value), doc=doc)


class Response(ChatCompletion):
    """An OpenAI chat completion (`openai.types.chat.ChatCompletion`), as answered by one
    target, whichever tier: `route` says how the call was served, `headers` are the
    provider's HTTP response headers (remote targets), `raw` the provider's own object."""

    route = _kept("route", None, "The `Route`: every attempt, who served, degraded or not.")
    headers = _kept("headers", None, "The provider's HTTP response headers (remote targets), or None.")
    raw = _kept("raw", None, "The provider's own answer object (litellm's, llama.cpp's dict, a stored entry).")

    @property
    def text(self) -> str:
        """The first choice's content, or "" when it has none."""
        return (self.choices[0].message.content or "") if self.choices else ""

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: the OpenAI fields the answer has, plus `route`."""
        data = self.model_dump(mode="json", exclude_unset=True, warnings=False)
        data["route"] = asdict(self.route) if self.route is not None else None
        return data

    @classmethod
    def from_openai(cls, data: Any) -> Response:
        """From an OpenAI-shaped dict or object (litellm's `ModelResponse`, llama.cpp's dict,
        a stored answer); `raw` keeps `data` itself."""
        if isinstance(data, cls):
            return data
        response = _validated(cls, _normalized(data, "chat.completion", "message", _ZERO_USAGE))
        response.raw = data
        return response


class Chunk(ChatCompletionChunk):
    """One streamed chunk (`openai.types.chat.ChatCompletionChunk`), whichever tier sent it.
    `restart` is True on the marker that starts an answer over (mid_stream: restart)."""

    restart = _kept("restart", False, "True on the marker chunk that starts the answer over.")

    @property
    def text(self) -> str:
        return "".join(c.delta.content or "" for c in self.choices)

    @property
    def finish_reason(self) -> str | None:
        return next((c.finish_reason for c in self.choices if c.finish_reason), None)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: the OpenAI fields the chunk has, plus `restart`."""
        data = self.model_dump(mode="json", exclude_unset=True, warnings=False)
        data["restart"] = self.restart
        return data

    @classmethod
    def from_openai(cls, data: Any) -> Chunk:
        """From an OpenAI-shaped chunk dict or object (litellm's, llama.cpp's)."""
        if isinstance(data, cls):
            return data
        return _validated(cls, _normalized(data, "chat.completion.chunk", "delta", None))


def _validated(cls: Any, data: dict[str, Any]) -> Any:
    try:
        return cls.model_validate(data)
    except ValidationError:  # what the SDK's types reject is built as is, as the SDK does
        return cls.construct(**data)


def _plain(data: Any) -> tuple[dict[str, Any], bool]:
    """`data` as a dict, and whether it is a fresh one (then it may be changed in place)."""
    if isinstance(data, dict):
        return data, False
    dump = getattr(data, "model_dump", None)
    if dump is not None:
        return dump(), True
    return {k: v for k, v in vars(data).items() if not k.startswith("_")}, True


def _normalized(data: Any, kind: str, part: str, usage: dict[str, int] | None) -> dict[str, Any]:
    """`data` as a dict with what the SDK's types require and OpenAI-compatible servers
    sometimes leave out: id, created, model, object, each choice's index, each tool call's
    type (and a delta's tool call index); usage zero when an answer has none. litellm's
    empty bookkeeping fields go. A caller's dict is copied, never changed; a fresh dump
    (litellm's objects) is fixed in place (this runs for every chunk of every stream)."""
    out, fresh = _plain(data)
    out = _tidy(out, fresh)
    if out.get("id") is None:
        out["id"] = ""
    if out.get("created") is None:
        out["created"] = int(time.time())
    if out.get("model") is None:
        out["model"] = ""
    if not out.get("object"):
        out["object"] = kind
    if usage is not None and not out.get("usage"):
        out["usage"] = dict(usage)
    choices = []
    for index, given in enumerate(out.get("choices") or ()):
        choice = _tidy(*_plain(given)) if not fresh else _tidy(given, True)
        if choice.get("index") is None:
            choice["index"] = index
        inner = choice.get(part)
        if inner is not None:
            inner = choice[part] = _tidy(inner, fresh) if isinstance(inner, dict) else _tidy(*_plain(inner))
        if inner and inner.get("tool_calls"):
            inner["tool_calls"] = [_tool_call(c, i, part) for i, c in enumerate(inner["tool_calls"])]
        choices.append(choice)
    out["choices"] = choices
    return out


def _tidy(data: dict[str, Any], fresh: bool) -> dict[str, Any]:
    """`data` (copied unless `fresh`) without litellm's empty bookkeeping fields."""
    out = data if fresh else dict(data)
    for key in _LITELLM_EMPTY:
        if key in out and not out[key]:
            del out[key]
    return out


def _tool_call(call: Any, index: int, part: str) -> dict[str, Any]:
    call = dict(_plain(call)[0])
    if part == "message" and not call.get("type"):
        call["type"] = "function"
    if part == "delta" and call.get("index") is None:
        call["index"] = index
    return call


def answer_of(chunks: list[Chunk]) -> Response:
    """The whole answer a finished stream delivered, as one `Response`: per choice the
    contents, refusals and reasoning joined, tool-call fragments merged by their index (ids,
    types and names kept, arguments joined), logprobs concatenated; the stream's
    system_fingerprint, service_tier and usage (zero when it sent none) kept."""
    first = next((c for c in chunks if c.id), chunks[0] if chunks else None)
    choices: dict[int, dict[str, Any]] = {}
    top: dict[str, Any] = {}
    for chunk in chunks:
        for key in ("system_fingerprint", "service_tier", "usage"):
            value = getattr(chunk, key, None)
            if value is not None:
                top[key] = value.model_dump() if key == "usage" else value
        for choice in chunk.choices:
            _merge(choices.setdefault(choice.index, _empty_choice(choice.index)), choice)
    data = {"id": first.id if first else "", "object": "chat.completion",
            "created": first.created if first else int(time.time()),
            "model": next((c.model for c in chunks if c.model), ""), **top,
            "choices": [_finished(choices[i]) for i in sorted(choices)]}
    return Response.from_openai(data)


def _empty_choice(index: int) -> dict[str, Any]:
    return {"index": index, "role": None, "finish_reason": None, "texts": {}, "calls": {}, "logprobs": None}


_JOINED = ("content", "refusal", "reasoning_content")  # delta fields whose fragments are joined


def _merge(merged: dict[str, Any], choice: Any) -> None:
    delta = choice.delta
    merged["role"] = merged["role"] or delta.role
    for name in _JOINED:
        piece = getattr(delta, name, None)
        if piece:
            merged["texts"].setdefault(name, []).append(piece)
    for part in delta.tool_calls or ():
        call = merged["calls"].setdefault(part.index, {"id": None, "type": None, "name": None, "arguments": []})
        call["id"] = call["id"] or part.id
        call["type"] = call["type"] or part.type
        if part.function is not None:
            call["name"] = call["name"] or part.function.name
            call["arguments"].append(part.function.arguments or "")
    if choice.logprobs is not None:
        logprobs = merged["logprobs"] = merged["logprobs"] or {"content": None, "refusal": None}
        for name in ("content", "refusal"):
            items = getattr(choice.logprobs, name, None)
            if items:
                logprobs[name] = (logprobs[name] or []) + [item.model_dump() for item in items]
    merged["finish_reason"] = choice.finish_reason or merged["finish_reason"]


def _finished(merged: dict[str, Any]) -> dict[str, Any]:
    message: dict[str, Any] = {"role": merged["role"] or "assistant", "content": None}
    for name, pieces in merged["texts"].items():
        message[name] = "".join(pieces)
    if merged["calls"]:
        message["tool_calls"] = [
            {"id": call["id"], "type": call["type"] or "function",
             "function": {"name": call["name"], "arguments": "".join(call["arguments"])}}
            for _, call in sorted(merged["calls"].items())]
    choice = {"index": merged["index"], "message": message, "finish_reason": merged["finish_reason"]}
    if merged["logprobs"] is not None:
        choice["logprobs"] = merged["logprobs"]
    return choice
