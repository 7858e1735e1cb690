"""Tool calls in a stream that may be continued: each call reaches the caller whole.

A tool call's arguments cannot be continued through a text prefill: a target asked to go
on from `{"city": "Pa` starts the call again, and gluing its deltas onto the first gave
`{"city": "Pa{"city": "Paris"}` (issue 18; LiteLLM's continuation has the sibling bug,
BerriAI/litellm#31067). So under `mid_stream: continue` and `auto` each call's deltas are
held until the call is complete (the next call's index starts, text follows it, or a
finish_reason arrives) and then released as one chunk holding the whole call; text flows
live. A break drops what is held; the stream is asked again (the text already sent as the
prefill, if any; otherwise the plain request), and calls the caller already has, which the
new stream writes again, are not released twice (same name and arguments). Released calls
are numbered 0, 1, ... in the order the caller receives them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ..response import chunk_of

if TYPE_CHECKING:
    from ..response import Chunk


class ToolCallHold:
    """The calls being assembled, per choice, and the calls the caller already holds."""

    def __init__(self) -> None:
        self.held: dict[int, dict[int, dict[str, Any]]] = {}  # choice -> the source's index -> call so far
        self.released: dict[int, list[tuple[Any, str]]] = {}  # choice -> (name, arguments) the caller has
        self.again: dict[int, list[tuple[Any, str]]] = {}  # released before a break: not to be sent twice

    def feed(self, chunk: Chunk) -> list[Chunk]:
        """What of `chunk` the caller gets now: calls it completed, whole, then the rest of it."""
        out: list[Chunk] = []
        had_calls = False
        for choice in chunk.choices:
            parts = choice.delta.tool_calls
            if parts:
                had_calls = True
                held = self.held.setdefault(choice.index, {})
                for part in parts:
                    if held and part.index not in held:  # the next call starts: the earlier ones are whole
                        out += self._release(chunk, choice.index)
                        held = self.held.setdefault(choice.index, {})
                    _merge(held.setdefault(part.index, {"id": None, "type": None, "name": None, "arguments": []}),
                           part)
                choice.delta.tool_calls = None
            if self.held.get(choice.index) and (choice.finish_reason or choice.delta.content):
                out += self._release(chunk, choice.index)
        if not had_calls or _carries_more(chunk):
            out.append(chunk)
        return out

    def drop(self) -> None:
        """The stream broke: what is held is lost; what was released must not come again."""
        self.held.clear()
        self.again = {index: list(calls) for index, calls in self.released.items()}

    def reset(self) -> None:
        """The answer starts over (a restart): the caller was told to forget everything."""
        self.held.clear()
        self.released.clear()
        self.again.clear()

    def _release(self, chunk: Chunk, choice_index: int) -> list[Chunk]:
        released = self.released.setdefault(choice_index, [])
        again = self.again.get(choice_index, [])
        calls = []
        for _, call in sorted(self.held.pop(choice_index, {}).items()):
            key = (call["name"], "".join(call["arguments"]))
            if key in again:  # the caller has it from before the break
                again.remove(key)
                continue
            calls.append({"index": len(released), "id": call["id"], "type": call["type"] or "function",
                          "function": {"name": call["name"], "arguments": key[1]}})
            released.append(key)
        return [chunk_of({"id": chunk.id, "model": chunk.model, "created": chunk.created,
                          "object": "chat.completion.chunk",
                          "choices": [{"index": choice_index, "delta": {"tool_calls": [call]}, "finish_reason": None}]})
                for call in calls]


def _merge(call: dict[str, Any], part: Any) -> None:
    call["id"] = call["id"] or part.id
    call["type"] = call["type"] or part.type
    if part.function is not None:
        call["name"] = call["name"] or part.function.name
        call["arguments"].append(part.function.arguments or "")


def _carries_more(chunk: Chunk) -> bool:
    """Whether a chunk whose tool-call deltas were taken out still says something."""
    return chunk.usage is not None or any(
        c.finish_reason or c.delta.content or c.delta.role or c.delta.refusal or getattr(c.delta, "reasoning_content", None)
        for c in chunk.choices)
