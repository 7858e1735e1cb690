"""OpenAI's Chat Completions wire format (``/v1/chat/completions``) for the fault server:
completion bodies, ``{"error": {...}}`` bodies, and ``chat.completion.chunk`` events.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Mapping, Sequence
from typing import Any, Optional

from .error_words import AUTHORIZATION
from .faults import Status, ToolCall
from .wire import answer_finish, argument_pieces, prompt_words, split_words, status_headers, to_json

_ids = itertools.count(1)


def completion_id() -> str:
    return f"chatcmpl-{next(_ids):08d}"


def error_body(message: Optional[str], error_type: Optional[str], code: Optional[str]) -> dict:
    return {"error": {"message": message, "type": error_type, "param": None, "code": code}}


def usage(body: dict, text: str) -> dict:
    prompt, completion = prompt_words(body), len(text.split())
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}


def _call_id(call: ToolCall) -> str:
    """The call's scripted id, or one made up as OpenAI would (every call has one)."""
    return call.id or f"call_fault{next(_ids):08d}"


def _tool_call(call: ToolCall) -> dict:
    return {"id": _call_id(call), "type": "function", "function": {"name": call.name, "arguments": call.arguments}}


class OpenAIWire:
    """The request handler's view of OpenAI's shape (see wire.Wire)."""

    def completion(self, body: dict, text: str, tool_calls: Sequence[ToolCall] = (),
                   finish_reason: str = "stop", thinking: str = "") -> dict:
        message: dict[str, Any] = {"role": "assistant", "content": text if text or not tool_calls else None}
        if thinking:
            message["reasoning_content"] = thinking
        if tool_calls:
            message["tool_calls"] = [_tool_call(call) for call in tool_calls]
        choice = {"index": 0, "message": message, "finish_reason": answer_finish(finish_reason, tool_calls)}
        return {"id": completion_id(), "object": "chat.completion", "created": int(time.time()),
                "model": body.get("model"), "choices": [choice], "usage": usage(body, text)}

    def error(self, fault: Status, credential: str) -> tuple[int, dict, list]:
        message = fault.message
        if message and AUTHORIZATION in message:
            message = message.replace(AUTHORIZATION, credential)
        return fault.code, error_body(message, fault.error_type, fault.error_code), self.headers(status_headers(fault))

    def headers(self, headers: Mapping[str, Any]) -> list:
        return list(headers.items())

    def refusal(self, body: dict) -> Optional[Status]:
        return None  # OpenAI-compatible servers take whatever the faults say

    def stream(self, body: dict) -> "OpenAIStream":
        return OpenAIStream(body)


class OpenAIStream:
    """``data: {chat.completion.chunk}`` events, then ``data: [DONE]``."""

    def __init__(self, body: dict) -> None:
        self._body = body
        self._head = {"id": completion_id(), "object": "chat.completion.chunk",
                      "created": int(time.time()), "model": body.get("model")}
        self._tool_calls: Sequence[ToolCall] = ()

    def _event(self, delta: dict, finish_reason: Optional[str] = None) -> bytes:
        choice = {"index": 0, "delta": delta, "finish_reason": finish_reason}
        return b"data: " + to_json(dict(self._head, choices=[choice])) + b"\n\n"

    def opening(self) -> list[bytes]:
        return [self._event({"role": "assistant"})]

    def units(self, text: str, tool_calls: Sequence[ToolCall], thinking: str = "") -> list[list[bytes]]:
        self._tool_calls = tool_calls
        units = [[self._event({"reasoning_content": piece})] for piece in split_words(thinking)]
        units += [[self._event({"content": piece})] for piece in split_words(text)]
        for index, call in enumerate(tool_calls):
            start = {"index": index, "id": _call_id(call), "type": "function",
                     "function": {"name": call.name, "arguments": ""}}
            units.append([self._event({"tool_calls": [start]})])
            units += [[self._event({"tool_calls": [{"index": index, "function": {"arguments": piece}}]})]
                      for piece in argument_pieces(call)]
        return units

    def closing(self, text: str, finish_reason: str, done: bool) -> list[bytes]:
        events = [self._event({}, answer_finish(finish_reason, self._tool_calls))]
        options = self._body.get("stream_options")
        if isinstance(options, dict) and options.get("include_usage"):
            events.append(b"data: " + to_json(dict(self._head, choices=[], usage=usage(self._body, text))) + b"\n\n")
        if done:
            events.append(b"data: [DONE]\n\n")
        return events

    def error(self) -> list[bytes]:
        """An error in the middle of a stream, as OpenAI sends one: a ``data:`` event with
        an ``error`` object."""
        body = error_body("The server had an error while processing your request. Sorry about that!",
                          "server_error", None)
        return [b"data: " + to_json(body) + b"\n\n"]
