"""Anthropic's Messages API wire format (``POST /v1/messages``) for the fault server.

The same `faults` script plays on both shapes; this module says what each fault looks
like from Anthropic (as documented at docs.anthropic.com, "Messages", "Streaming
Messages" and "Errors"):

- an answer: ``{"type": "message", "content": [text block, tool_use blocks], "stop_reason":
  "end_turn" | "max_tokens" | "tool_use", "usage": {"input_tokens", "output_tokens"}}``;
- a stream: ``message_start``, ``ping``, per block ``content_block_start`` /
  ``content_block_delta`` (``text_delta``, or ``input_json_delta`` for a tool's arguments) /
  ``content_block_stop``, then ``message_delta`` (stop_reason, usage) and ``message_stop``;
  a mid-stream failure is ``event: error`` with an ``overloaded_error``;
- an error: ``{"type": "error", "error": {"type", "message"}}`` with Anthropic's types
  (``authentication_error`` for a 401, ``overloaded_error`` for a 529, ...); OpenAI's
  context-length and content-policy faults take Anthropic's words ("prompt is too long",
  "Output blocked by content filtering policy"); a 429 carries ``retry-after`` (whole
  seconds) and ``anthropic-ratelimit-*`` headers (reset: an RFC 3339 time) where the
  OpenAI side would send ``x-ratelimit-*`` and ``retry-after-ms``;
- what Anthropic refuses before any model runs: a request without ``max_tokens``, and an
  assistant prefill ending in whitespace (both 400 ``invalid_request_error``).
"""

from __future__ import annotations

import itertools
import json
import math
from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta, timezone
from typing import Any, Optional

from .error_words import AUTHORIZATION, default_status
from .faults import Status, ToolCall, status
from .wire import answer_finish, argument_pieces, prefill_of, prompt_words, split_words, status_headers, to_json

PROMPT_TOO_LONG_MESSAGE = "prompt is too long: 9000 tokens > 8192 maximum"
CONTENT_FILTERED_MESSAGE = "Output blocked by content filtering policy"
SIGNATURE = "c2lnbmVkIGJ5IHRoZSBmYXVsdCBzZXJ2ZXI="  # a thinking block's signature (opaque to clients)
TRAILING_WHITESPACE_MESSAGE = "messages: final assistant content cannot end with trailing whitespace"

_TYPES = {400: "invalid_request_error", 401: "authentication_error", 403: "permission_error",
          404: "not_found_error", 408: "timeout_error", 413: "request_too_large", 429: "rate_limit_error",
          500: "api_error", 504: "timeout_error", 529: "overloaded_error"}
_MESSAGES = {400: "Invalid request.", 401: "invalid x-api-key",
             403: "Your API key does not have permission to use the specified resource.",
             404: "The requested resource could not be found.",
             413: "Request exceeds the maximum allowed number of bytes.",
             429: "This request would exceed the rate limit for your organization of 50 requests per minute.",
             500: "Internal server error", 529: "Overloaded"}
_BY_OPENAI_CODE = {"context_length_exceeded": PROMPT_TOO_LONG_MESSAGE,
                   "content_policy_violation": CONTENT_FILTERED_MESSAGE}
_STOP_REASONS = {"stop": "end_turn", "length": "max_tokens", "tool_calls": "tool_use", "content_filter": "refusal"}

_ids = itertools.count(1)


def _message_id() -> str:
    return f"msg_fault{next(_ids):08d}"


def _tool_id(call: ToolCall) -> str:
    return call.id or f"toolu_fault{next(_ids):08d}"


def error_body(message: Optional[str], error_type: str) -> dict:
    return {"type": "error", "error": {"type": error_type, "message": message},
            "request_id": f"req_fault{next(_ids):08d}"}


def rate_limit_headers(headers: Mapping[str, Any]) -> list:
    """OpenAI's rate-limit headers (as `faults.limited` writes them) in Anthropic's words:
    ``anthropic-ratelimit-<kind>-{limit,remaining,reset}`` (reset as an RFC 3339 time)
    and ``retry-after`` in whole seconds; anything else as it is."""
    out = []
    now = datetime.now(timezone.utc)
    for name, value in headers.items():
        lower = name.lower()
        if lower == "retry-after-ms":
            if "retry-after" not in {name.lower() for name in headers}:
                out.append(("retry-after", str(max(1, math.ceil(float(value) / 1000)))))
        elif lower.startswith("x-ratelimit-"):
            what, kind = lower[len("x-ratelimit-"):].rsplit("-", 1)  # "reset", "requests"
            if what == "reset":
                seconds = float(str(value).rstrip("s") or 0)
                value = (now + timedelta(seconds=seconds)).isoformat(timespec="milliseconds").replace("+00:00", "Z")
            out.append((f"anthropic-ratelimit-{kind}-{what}", str(value)))
        else:
            out.append((name, str(value)))
    return out


def usage(body: dict, text: str, tool_calls: Sequence[ToolCall] = ()) -> dict:
    output = len(text.split()) + sum(len(call.arguments.split()) for call in tool_calls)
    return {"input_tokens": prompt_words(body), "output_tokens": output}


def _tool_input(call: ToolCall) -> Any:
    try:
        return json.loads(call.arguments)
    except ValueError:
        return {}  # a non-stream tool_use block always carries an object


def _event(name: str, data: dict) -> bytes:
    return b"event: " + name.encode() + b"\ndata: " + to_json(data) + b"\n\n"


class AnthropicWire:
    """The request handler's view of Anthropic's shape (see wire.Wire)."""

    def completion(self, body: dict, text: str, tool_calls: Sequence[ToolCall] = (),
                   finish_reason: str = "stop", thinking: str = "") -> dict:
        content: list[dict] = [{"type": "thinking", "thinking": thinking, "signature": SIGNATURE}] if thinking else []
        content += [{"type": "text", "text": text}] if text or not tool_calls else []
        content += [{"type": "tool_use", "id": _tool_id(call), "name": call.name, "input": _tool_input(call)}
                    for call in tool_calls]
        finish = answer_finish(finish_reason, tool_calls)
        return {"id": _message_id(), "type": "message", "role": "assistant", "model": body.get("model"),
                "content": content, "stop_reason": _STOP_REASONS.get(finish, finish), "stop_sequence": None,
                "usage": usage(body, f"{thinking} {text}", tool_calls)}

    def error(self, fault: Status, credential: str) -> tuple[int, dict, list]:
        code = fault.code
        error_type = _TYPES.get(code, "api_error" if code >= 500 else "invalid_request_error")
        message = fault.message
        if fault.error_code in _BY_OPENAI_CODE:
            message = _BY_OPENAI_CODE[fault.error_code]
        elif message == default_status(code)[0]:  # not chosen by the script: Anthropic's own words
            message = _MESSAGES.get(code, message)
        if message and AUTHORIZATION in message:
            message = message.replace(AUTHORIZATION, credential)
        return code, error_body(message, error_type), self.headers(status_headers(fault))

    def headers(self, headers: Mapping[str, Any]) -> list:
        return rate_limit_headers(headers)

    def refusal(self, body: dict) -> Optional[Status]:
        """What Anthropic answers 400 before any model runs, else None."""
        if not isinstance(body.get("max_tokens"), int):
            return status(400, message="max_tokens: Field required")
        prefill = prefill_of(body)
        if prefill and prefill != prefill.rstrip():
            return status(400, message=TRAILING_WHITESPACE_MESSAGE)
        return None

    def stream(self, body: dict) -> "AnthropicStream":
        return AnthropicStream(body)


class AnthropicStream:
    """``message_start`` ... ``message_stop``; content blocks opened and closed as they go."""

    def __init__(self, body: dict) -> None:
        self._body = body
        self._blocks = 0  # content blocks opened so far
        self._tool_calls: Sequence[ToolCall] = ()
        self._thinking = ""

    def opening(self) -> list[bytes]:
        message = {"id": _message_id(), "type": "message", "role": "assistant", "content": [],
                   "model": self._body.get("model"), "stop_reason": None, "stop_sequence": None,
                   "usage": {"input_tokens": prompt_words(self._body), "output_tokens": 1}}
        return [_event("message_start", {"type": "message_start", "message": message}),
                _event("ping", {"type": "ping"})]

    def _start(self, block: dict) -> list[bytes]:
        """Close the open block (if any) and open ``block``."""
        events = [_event("content_block_stop", {"type": "content_block_stop", "index": self._blocks - 1})
                  ] if self._blocks else []
        self._blocks += 1
        return events + [_event("content_block_start", {"type": "content_block_start", "index": self._blocks - 1,
                                                        "content_block": block})]

    def _delta(self, delta: dict) -> bytes:
        return _event("content_block_delta", {"type": "content_block_delta", "index": self._blocks - 1,
                                              "delta": delta})

    def units(self, text: str, tool_calls: Sequence[ToolCall], thinking: str = "") -> list[list[bytes]]:
        """Each unit with the block events it needs: units are sent in order, so the first
        piece of a block opens it (closing the one before), and thinking ends with its
        signature."""
        self._tool_calls = tool_calls
        self._thinking = thinking
        units = []
        for n, piece in enumerate(split_words(thinking)):
            opening = self._start({"type": "thinking", "thinking": ""}) if n == 0 else []
            units.append(opening + [self._delta({"type": "thinking_delta", "thinking": piece})])
        if units:
            units[-1].append(self._delta({"type": "signature_delta", "signature": SIGNATURE}))
        for n, piece in enumerate(split_words(text)):
            opening = self._start({"type": "text", "text": ""}) if n == 0 else []
            units.append(opening + [self._delta({"type": "text_delta", "text": piece})])
        for call in tool_calls:
            units.append(self._start({"type": "tool_use", "id": _tool_id(call), "name": call.name, "input": {}}))
            units += [[self._delta({"type": "input_json_delta", "partial_json": piece})]
                      for piece in argument_pieces(call)]
        return units

    def closing(self, text: str, finish_reason: str, done: bool) -> list[bytes]:
        events = [_event("content_block_stop", {"type": "content_block_stop", "index": self._blocks - 1})
                  ] if self._blocks else []
        finish = answer_finish(finish_reason, self._tool_calls)
        events.append(_event("message_delta", {
            "type": "message_delta",
            "delta": {"stop_reason": _STOP_REASONS.get(finish, finish), "stop_sequence": None},
            "usage": {"output_tokens": usage(self._body, f"{self._thinking} {text}", self._tool_calls)["output_tokens"]}}))
        if done:
            events.append(_event("message_stop", {"type": "message_stop"}))
        return events

    def error(self) -> list[bytes]:
        return [_event("error", {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}})]

