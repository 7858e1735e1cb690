"""What a call returns: the openai SDK's own answer types plus the route that produced it.

Every tier (remote, local, cache, a static reply, a continued or replayed stream) answers
with `Response`, a subclass of `openai.types.chat.ChatCompletion`, and streams
`Chunk`s, a subclass of `ChatCompletionChunk` (answer_types.py), so application code
written for the SDK reads them as it is and never branches on which tier served it.

Those classes load on first use (module `__getattr__`): the SDK's types cost ~0.45 s to
import, three times `import router`. The functions below build answers without loading
them before a call needs one.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .answer_types import Chunk, Response


@dataclass
class Attempt:
    """One try of one target, or one target skipped without a try."""

    target: str
    outcome: str  # an `Outcome` value: "ok", "transient", "circuit_open", ...
    error: str | None = None  # class name of the exception, if any
    status: int | None = None  # HTTP status, if the provider sent one
    latency_s: float = 0.0  # time spent in the attempt itself
    waited_s: float = 0.0  # backoff slept before this attempt
    detail: str | None = None  # the provider's message or the skip reason, secrets redacted


@dataclass
class Route:
    """How a call was served: every attempt in order, and who answered."""

    chain: str
    attempts: list[Attempt] = field(default_factory=list)
    served_by: str | None = None
    degraded: bool = False
    notes: list[str] = field(default_factory=list)  # e.g. "local: dropped 2 oldest messages"
    latency_s: float = 0.0  # whole call
    cache_age_s: float | None = None  # how old the answer is, when a cache tier served it


def __getattr__(name: str) -> Any:
    """`Response` and `Chunk`, loaded (with the openai SDK's types) on first use."""
    if name in ("Response", "Chunk"):
        from . import answer_types

        value = getattr(answer_types, name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def response_of(data: Any) -> Response:
    """`Response.from_openai(data)`: an OpenAI-shaped dict or provider object as a `Response`."""
    from .answer_types import Response

    return Response.from_openai(data)


def chunk_of(data: Any) -> Chunk:
    """`Chunk.from_openai(data)`: one OpenAI-shaped streamed chunk as a `Chunk`."""
    from .answer_types import Chunk

    return Chunk.from_openai(data)


def text_response(text: str, *, id: str, model: str) -> Response:
    """An answer of `text` that no provider wrote (a static reply, a test double): finished, zero usage."""
    return response_of({"id": id, "model": model, "object": "chat.completion",
                        "choices": [{"index": 0, "message": {"role": "assistant", "content": text},
                                     "finish_reason": "stop"}]})


def text_chunk(text: str, *, id: str, model: str, finish_reason: str | None = None, restart: bool = False) -> Chunk:
    """A chunk of `text` that no provider sent: a static reply streamed, the restart marker."""
    chunk = chunk_of({"id": id, "model": model, "object": "chat.completion.chunk",
                      "choices": [{"index": 0, "delta": {"role": "assistant", "content": text},
                                   "finish_reason": finish_reason}]})
    chunk.restart = restart
    return chunk


def answer_of(chunks: list[Chunk]) -> Response:
    """The whole answer a finished stream delivered, as one `Response` (answer_types.answer_of)."""
    from . import answer_types

    return answer_types.answer_of(chunks)
