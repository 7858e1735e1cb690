"""What both API shapes of the fault server share: reading a request's text and prefill,
splitting an answer into the pieces a stream sends, and the interface each wire module
(openai_wire.py, anthropic_wire.py) offers the request handler.

A wire module turns a fault's plain description (text, tool calls, a finish reason, an
error status) into one provider's bytes; the handler decides *when* to send them (delays,
cuts, stalls), the same way for both shapes, so one `faults` script means the same
thing on `/v1/chat/completions` and on `/v1/messages`.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from typing import Any, Optional, Protocol

from .faults import Status, ToolCall

INVALID_EVENT = b"data: {not json\n\n"


class Wire(Protocol):
    """One API shape: the bodies of answers and errors, and a stream's events."""

    def completion(self, body: dict, text: str, tool_calls: Sequence[ToolCall], finish_reason: str,
                   thinking: str) -> dict: ...

    def error(self, fault: Status, credential: str) -> tuple[int, dict, list]: ...

    def headers(self, headers: Mapping[str, Any]) -> list: ...

    def refusal(self, body: dict) -> Optional[Status]: ...

    def stream(self, body: dict) -> "StreamEvents": ...


class StreamEvents(Protocol):
    """The SSE events of one streamed answer, each already framed (``data: ...\\n\\n``).

    ``units`` are what fault positions count (``cut_after=N``: after N units): a text
    piece, a tool call's start, a piece of its arguments, a piece of thinking; each unit
    is a list of events.
    """

    def opening(self) -> list[bytes]: ...

    def units(self, text: str, tool_calls: Sequence[ToolCall], thinking: str) -> list[list[bytes]]: ...

    def closing(self, text: str, finish_reason: str, done: bool) -> list[bytes]: ...

    def error(self) -> list[bytes]: ...


def to_json(data: Any) -> bytes:
    return json.dumps(data, separators=(",", ":")).encode()


def header_number(value: Any) -> str:
    """Render 2.0 as "2" (clients parse integers most reliably); strings go verbatim."""
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def status_headers(fault: Status) -> dict[str, str]:
    """A status fault's headers as OpenAI sends them: ``Retry-After``, ``retry-after-ms``,
    then the fault's own."""
    headers = {}
    if fault.retry_after is not None:
        headers["Retry-After"] = header_number(fault.retry_after)
    if fault.retry_after_ms is not None:
        headers["retry-after-ms"] = header_number(fault.retry_after_ms)
    return {**headers, **(fault.headers or {})}


def split_words(text: str) -> list[str]:
    """Split into word pieces ("Hello ", "world.") that join back to exactly ``text``."""
    pieces = re.findall(r"\S+\s*", text)
    leading = text[: len(text) - len(text.lstrip())]
    if pieces and leading:
        pieces[0] = leading + pieces[0]
    return pieces or ([text] if text else [])


def text_of(content: Any) -> Optional[str]:
    """A message's text: a string, or the ``text`` of its text parts/blocks joined."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        texts = [p["text"] for p in content
                 if isinstance(p, Mapping) and p.get("type") == "text" and isinstance(p.get("text"), str)]
        return "".join(texts) if texts or not content else None
    return None


def prefill_of(body: Optional[Mapping[str, Any]]) -> Optional[str]:
    """The text of an assistant turn that ends the request's messages (a prefill), else
    None. Content may be a string or (Anthropic's shape) a list of text blocks."""
    messages = (body or {}).get("messages")
    if not isinstance(messages, list) or not messages or not isinstance(messages[-1], Mapping):
        return None
    last = messages[-1]
    if last.get("role") != "assistant":
        return None
    return text_of(last.get("content"))


def continuation(body: dict, text: str) -> str:
    """What a model continuing its prefill says: the rest of ``text`` when the request ends
    with an assistant turn that ``text`` starts with, else all of ``text``."""
    prefill = prefill_of(body)
    return text[len(prefill):] if prefill and text.startswith(prefill) else text


def prompt_words(body: dict) -> int:
    """Words in the request's messages (and Anthropic's top-level ``system``): the usage
    the fault server reports as prompt tokens."""
    words = 0
    system = text_of(body.get("system"))
    if system:
        words += len(system.split())
    for message in body.get("messages") or ():
        content = text_of(message.get("content")) if isinstance(message, Mapping) else None
        if content:
            words += len(content.split())
    return words


def argument_pieces(call: ToolCall) -> list[str]:
    """A tool call's arguments in the pieces a stream sends: word by word, as models do."""
    return split_words(call.arguments)


def answer_finish(finish_reason: str, tool_calls: Sequence[ToolCall]) -> str:
    """An answer with tool calls ends with ``tool_calls`` unless the fault says otherwise."""
    return "tool_calls" if tool_calls and finish_reason == "stop" else finish_reason
