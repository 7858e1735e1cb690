"""What a call returns: an OpenAI-shaped response plus the route that produced it.

Remote and local targets both answer with `Response`, so application code never
branches on which tier served it. `raw` keeps the provider's own object for anything
this shape leaves out.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from typing import Any


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


@dataclass
class Message:
    role: str
    content: str | None
    tool_calls: list[dict[str, Any]] | None = None


@dataclass
class Choice:
    index: int
    message: Message
    finish_reason: str | None


@dataclass
class Usage:
    prompt_tokens: int = 0
    completion_tokens: int = 0
    total_tokens: int = 0


@dataclass
class Response:
    """An OpenAI-compatible chat completion, as answered by one target."""

    id: str
    model: str
    choices: list[Choice]
    usage: Usage
    created: int = field(default_factory=lambda: int(time.time()))
    object: str = "chat.completion"
    route: Route | None = None
    raw: Any = field(default=None, repr=False, compare=False)
    headers: Any = field(default=None, repr=False, compare=False)  # the provider's HTTP response headers

    @property
    def text(self) -> str:
        """The first choice's content, or "" when it has none."""
        return (self.choices[0].message.content or "") if self.choices else ""

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready data, route included, provider object left out."""
        data = asdict(self)
        data.pop("raw")
        data.pop("headers")
        return data

    @classmethod
    def from_openai(cls, data: Any) -> Response:
        """Build from an OpenAI-shaped dict or object (litellm's ModelResponse, llama.cpp's dict)."""
        get = _getter(data)
        choices = []
        for index, choice in enumerate(get("choices") or ()):
            cget = _getter(choice)
            message = _getter(cget("message") or {})
            choices.append(
                Choice(
                    index=cget("index") if cget("index") is not None else index,
                    message=Message(role=message("role") or "assistant", content=message("content"),
                                    tool_calls=_tool_calls(message)),
                    finish_reason=cget("finish_reason"),
                )
            )
        return cls(
            id=get("id") or "",
            model=get("model") or "",
            choices=choices,
            usage=_usage(get("usage")) or Usage(),
            created=get("created") or int(time.time()),
            raw=data,
        )


def answer_of(chunks: list[Chunk]) -> Response:
    """The whole answer a finished stream delivered, as one `Response`: contents joined,
    tool-call fragments merged by their index (ids and names kept, arguments joined)."""
    first = next((c for c in chunks if c.id), chunks[0] if chunks else None)
    texts: dict[int, list[str]] = {}
    calls: dict[int, dict[int, dict[str, Any]]] = {}
    roles: dict[int, str] = {}
    finishes: dict[int, str | None] = {}
    for chunk in chunks:
        for choice in chunk.choices:
            i = choice.index
            texts.setdefault(i, [])
            if choice.delta.role:
                roles.setdefault(i, choice.delta.role)
            if choice.delta.content:
                texts[i].append(choice.delta.content)
            for part in choice.delta.tool_calls or ():
                call = calls.setdefault(i, {}).setdefault(part.get("index", 0), {"function": {"arguments": ""}})
                for key in ("id", "type"):
                    call[key] = call.get(key) or part.get(key)
                function = part.get("function") or {}
                call["function"]["name"] = call["function"].get("name") or function.get("name")
                call["function"]["arguments"] += function.get("arguments") or ""
            if choice.finish_reason:
                finishes[i] = choice.finish_reason
    choices = [Choice(i, Message(roles.get(i, "assistant"), "".join(texts[i]) or None,
                                 [calls[i][j] for j in sorted(calls[i])] if i in calls else None),
                      finishes.get(i)) for i in sorted(texts)]
    return Response(id=first.id if first else "", model=next((c.model for c in chunks if c.model), ""),
                    choices=choices, usage=Usage(), created=first.created if first else int(time.time()))


def _usage(data: Any) -> Usage | None:
    if not data:
        return None
    get = _getter(data)
    return Usage(get("prompt_tokens") or 0, get("completion_tokens") or 0, get("total_tokens") or 0)


def _tool_calls(get: Any) -> list[dict[str, Any]] | None:
    """A message's or a delta's tool calls as plain dicts (None when it has none)."""
    calls = get("tool_calls")
    return [_plain(c) for c in calls] if calls else None


def _getter(obj: Any):
    if isinstance(obj, dict):
        return obj.get
    return lambda name: getattr(obj, name, None)


def _plain(obj: Any) -> Any:
    if isinstance(obj, dict):
        return obj
    dump = getattr(obj, "model_dump", None)
    return dump() if dump else dict(vars(obj))


@dataclass
class Delta:
    role: str | None = None
    content: str | None = None
    tool_calls: list[dict[str, Any]] | None = None


@dataclass
class ChunkChoice:
    index: int
    delta: Delta
    finish_reason: str | None = None


@dataclass
class Chunk:
    """One OpenAI-style streamed chunk (`chat.completion.chunk`), whichever tier sent it."""

    id: str
    model: str
    choices: list[ChunkChoice]
    created: int = field(default_factory=lambda: int(time.time()))
    usage: Usage | None = None
    object: str = "chat.completion.chunk"
    restart: bool = False  # the stream starts its answer over from here (mid_stream: restart)

    @property
    def text(self) -> str:
        return "".join(c.delta.content or "" for c in self.choices)

    @property
    def finish_reason(self) -> str | None:
        return next((c.finish_reason for c in self.choices if c.finish_reason), None)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_openai(cls, data: Any) -> Chunk:
        get = _getter(data)
        choices = []
        for index, choice in enumerate(get("choices") or ()):
            cget = _getter(choice)
            delta = _getter(cget("delta") or {})
            choices.append(ChunkChoice(
                index=cget("index") if cget("index") is not None else index,
                delta=Delta(role=delta("role"), content=delta("content"), tool_calls=_tool_calls(delta)),
                finish_reason=cget("finish_reason"),
            ))
        return cls(
            id=get("id") or "",
            model=get("model") or "",
            choices=choices,
            created=get("created") or int(time.time()),
            usage=_usage(get("usage")),
        )
