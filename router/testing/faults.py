"""Fault descriptions for :class:`router.testing.FaultServer`.

Each constructor returns a small frozen dataclass that only *describes* a behaviour;
the server interprets it (which fault a composite answers with: resolve.py), in the
shape of the API the request was sent to (openai_wire.py, anthropic_wire.py).  Faults
are plain data: ``dataclasses.asdict(fault)`` is JSON-serialisable and :func:`from_dict`
rebuilds it, so a script can be handed to a server running in another process (see
``python -m router.testing --default``).
Every dataclass carries a ``kind`` field naming its constructor.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Optional, Union

from .error_words import (AUTHORIZATION, CONTENT_POLICY_MESSAGE, CONTEXT_TOO_LONG_MESSAGE,
                          PREFILL_REFUSED_MESSAGE, REQUEST_TOO_LARGE_MESSAGE, default_status)

DEFAULT_TEXT = "Hello from the fault server."


def _kind(name: str) -> Any:
    return field(default=name, init=False)


@dataclass(frozen=True)
class ToolCall:
    """A tool call in an answer: OpenAI's ``tool_calls`` entry, Anthropic's ``tool_use``
    block. ``arguments`` is the JSON text of the arguments (streamed word by word)."""

    name: str
    arguments: str = "{}"
    id: Optional[str] = None


@dataclass(frozen=True)
class Ok:
    """A normal completion (streamed when the request asks for ``stream``)."""

    text: str = DEFAULT_TEXT
    delay: float = 0.0
    headers: Optional[dict] = None
    finish_reason: str = "stop"
    tool_calls: tuple = ()
    thinking: str = ""
    kind: str = _kind("ok")


@dataclass(frozen=True)
class Status:
    """An HTTP error with an OpenAI-style ``{"error": {...}}`` body."""

    code: int
    retry_after: Union[float, str, None] = None
    retry_after_ms: Optional[float] = None
    headers: Optional[dict] = None
    message: Optional[str] = None
    error_type: Optional[str] = None
    error_code: Optional[str] = None
    kind: str = _kind("status")


@dataclass(frozen=True)
class Reply:
    """Answer HTTP ``code`` with exactly this JSON ``body`` (replies no provider should send)."""

    body: Any = None
    code: int = 200
    kind: str = _kind("reply")


@dataclass(frozen=True)
class Hang:
    """Read the request, send nothing, close after ``seconds`` (None: at server stop).

    The wait also ends early when the client hangs up, so timed-out clients do not
    leave handler threads behind."""

    seconds: Optional[float] = None
    kind: str = _kind("hang")


@dataclass(frozen=True)
class Reset:
    """Read the request, then abort the connection with a TCP RST."""

    kind: str = _kind("reset")


@dataclass(frozen=True)
class Malformed:
    """A 200 ``application/json`` response whose body is not valid JSON."""

    kind: str = _kind("malformed")


@dataclass(frozen=True)
class Stream:
    """A Server-Sent-Events answer, optionally cut, stalled or corrupted mid-way."""

    text: str = DEFAULT_TEXT
    first_token_delay: Optional[float] = 0.0
    token_delay: float = 0.0
    cut_after: Optional[int] = None
    stall_after: Optional[int] = None
    malformed_after: Optional[int] = None
    done: bool = True
    end_after: Optional[int] = None
    stall_seconds: Optional[float] = None
    invalid_event_at: Optional[int] = None
    tool_calls: tuple = ()
    error_after: Optional[int] = None
    finish_reason: str = "stop"
    thinking: str = ""
    kind: str = _kind("stream")


@dataclass(frozen=True)
class RefusePrefill:
    """A 400 when the conversation ends with an assistant turn (a prefill), else ``otherwise``."""

    otherwise: "Fault" = Ok()
    kind: str = _kind("refuse_prefill")


@dataclass(frozen=True)
class Flaky:
    """``fault`` with probability ``p``, else ``otherwise``; seeded per script step."""

    p: float
    fault: "Fault"
    otherwise: "Fault" = Ok()
    seed: Optional[int] = None
    kind: str = _kind("flaky")


@dataclass(frozen=True)
class RecoverAfter:
    """``fault`` until ``seconds`` after the step's first request, then ``then``."""

    seconds: float
    fault: "Fault"
    then: "Fault" = Ok()
    kind: str = _kind("recover_after")


@dataclass(frozen=True)
class Limited:
    """A provider-side rate limit: ``requests`` per sliding ``window`` seconds, each
    accepted request answered by ``then``, any beyond by a 429 (not counted against the
    window). With ``headers``, answers carry OpenAI's ``x-ratelimit-*-requests`` headers
    and 429s a ``retry-after-ms`` saying when a slot frees; without, a bare 429."""

    requests: int
    window: float = 1.0
    then: "Fault" = Ok()
    headers: bool = True
    kind: str = _kind("limited")


Fault = Union[Ok, Status, Reply, Hang, Reset, Malformed, Stream, Flaky, RecoverAfter, Limited, RefusePrefill]
"""Any fault description accepted by the server."""

def _check_delay(name: str, value: Optional[float]) -> None:
    if value is not None and value < 0:
        raise ValueError(f"{name} must be >= 0, got {value!r}")


def tool_call(name: str, arguments: Union[Mapping[str, Any], str] = "{}", *, id: Optional[str] = None) -> ToolCall:
    """A call of tool ``name`` with ``arguments`` (a dict, or JSON text sent verbatim)."""
    text = arguments if isinstance(arguments, str) else json.dumps(dict(arguments))
    return ToolCall(name=name, arguments=text, id=id)


def _tool_calls(calls: Any) -> tuple:
    return tuple(call if isinstance(call, ToolCall) else ToolCall(**call) for call in calls or ())


def ok(text: str = DEFAULT_TEXT, *, delay: float = 0.0, headers: Optional[Mapping[str, str]] = None,
       finish_reason: str = "stop", tool_calls: Any = (), thinking: str = "") -> Ok:
    """Answer ``text`` normally, after ``delay`` seconds without a byte (slow first byte),
    with extra response ``headers`` and ``finish_reason`` (``"length"``: an answer cut by
    the token limit). ``tool_calls`` (:func:`tool_call`) follow the text; the finish is
    then ``tool_calls`` (Anthropic: ``tool_use``) unless ``finish_reason`` says otherwise.
    ``thinking``: reasoning before the answer (Anthropic: a ``thinking`` block with a
    signature; OpenAI shape: ``reasoning_content``, as DeepSeek and litellm name it)."""
    _check_delay("delay", delay)
    return Ok(text=text, delay=delay, headers=dict(headers) if headers else None, finish_reason=finish_reason,
              tool_calls=_tool_calls(tool_calls), thinking=thinking)


def status(
    code: int,
    *,
    retry_after: Union[float, str, None] = None,
    retry_after_ms: Optional[float] = None,
    headers: Optional[Mapping[str, str]] = None,
    message: Optional[str] = None,
    error_type: Optional[str] = None,
    error_code: Optional[str] = None,
) -> Status:
    """Answer HTTP ``code`` with an OpenAI-style error body.

    ``retry_after`` is sent as ``Retry-After`` (a number of seconds, or a string such as an
    HTTP date, verbatim); ``retry_after_ms`` as ``retry-after-ms``.  Message, type and code
    default to what OpenAI sends for that status.
    """
    if not 100 <= int(code) <= 599:
        raise ValueError(f"HTTP status must be in 100..599, got {code!r}")
    default = default_status(int(code))
    return Status(
        code=int(code),
        retry_after=retry_after,
        retry_after_ms=retry_after_ms,
        headers=dict(headers) if headers else None,
        message=default[0] if message is None else message,
        error_type=default[1] if error_type is None else error_type,
        error_code=default[2] if error_code is None else error_code,
    )


def context_too_long() -> Status:
    """OpenAI's 400 ``context_length_exceeded`` error."""
    return status(400, message=CONTEXT_TOO_LONG_MESSAGE, error_code="context_length_exceeded")


def content_policy() -> Status:
    """OpenAI's 400 ``content_policy_violation`` error."""
    return status(400, message=CONTENT_POLICY_MESSAGE, error_code="content_policy_violation")


def request_too_large() -> Status:
    """OpenAI's 413 "Request too large" (type ``tokens``, code ``rate_limit_exceeded``)."""
    return status(413, message=REQUEST_TOO_LARGE_MESSAGE, error_type="tokens", error_code="rate_limit_exceeded")


def quoting_key(code: int = 401) -> Status:
    """An error whose text quotes the request's Authorization header back, key and all."""
    return status(code, message=f"Invalid Authorization header: {AUTHORIZATION}", error_code="invalid_api_key")


def reply(body: Any, *, code: int = 200) -> Reply:
    """Answer ``code`` with ``body`` as JSON, verbatim."""
    return Reply(body=body, code=int(code))


def no_choices() -> Reply:
    """A 200 completion whose ``choices`` is empty: well-formed JSON, no answer."""
    return reply({"id": "chatcmpl-empty", "object": "chat.completion", "created": 0, "model": "fault",
                  "choices": [], "usage": {"prompt_tokens": 1, "completion_tokens": 0, "total_tokens": 1}})


def hang(seconds: Optional[float] = None) -> Hang:
    """Read the request and send nothing; close after ``seconds`` (None: until server stop
    or until the client hangs up)."""
    _check_delay("seconds", seconds)
    return Hang(seconds=seconds)


def reset() -> Reset:
    """Read the request and close the connection with a TCP RST, sending nothing."""
    return Reset()


def malformed() -> Malformed:
    """Answer 200 ``application/json`` with a truncated, unparsable body."""
    return Malformed()


def stream(
    text: str = DEFAULT_TEXT,
    *,
    first_token_delay: Optional[float] = 0.0,
    token_delay: float = 0.0,
    cut_after: Optional[int] = None,
    stall_after: Optional[int] = None,
    malformed_after: Optional[int] = None,
    done: bool = True,
    end_after: Optional[int] = None,
    stall_seconds: Optional[float] = None,
    invalid_event_at: Optional[int] = None,
    tool_calls: Any = (),
    error_after: Optional[int] = None,
    finish_reason: str = "stop",
    thinking: str = "",
) -> Stream:
    """Stream ``text`` word by word as SSE (even if the request did not ask to stream).

    Headers go out at once; the role chunk after ``first_token_delay`` (None: never, the
    socket stays open: a first token that never comes), content chunks ``token_delay``
    apart.  After N content chunks: ``cut_after`` aborts the connection (TCP RST),
    ``end_after`` ends the body cleanly with no finish_reason and no ``[DONE]``,
    ``stall_after`` goes silent with the socket open for ``stall_seconds`` (None: until
    the server stops or the client leaves) and then carries on, ``malformed_after`` sends
    ``data: {not json`` and ends the body.  ``invalid_event_at=N`` sends ``data: {not json``
    as the Nth SSE event (the role chunk is the 1st) and then the rest of the stream, intact.
    ``done=False`` omits ``data: [DONE]`` (Anthropic: ``message_stop``).  ``error_after``
    sends the provider's error event (Anthropic: ``event: error``, ``overloaded_error``;
    OpenAI: a ``data:`` event with an ``error`` object) and ends the body.

    ``tool_calls`` are streamed after the text: each call's start (its id and name), then
    its arguments word by word; positions count these too ("content events": a text piece,
    a call's start, a piece of its arguments), so ``cut_after`` can break inside a call.
    ``thinking`` is streamed word by word before the text, and counted the same way.

    A request whose last message is an assistant turn (a prefill) that ``text`` starts
    with is answered with the rest of ``text`` only: the model continues its prefill.
    """
    _check_delay("first_token_delay", first_token_delay)
    _check_delay("token_delay", token_delay)
    _check_delay("stall_seconds", stall_seconds)
    for name, value in (("cut_after", cut_after), ("stall_after", stall_after), ("error_after", error_after),
                        ("malformed_after", malformed_after), ("end_after", end_after)):
        if value is not None and value < 0:
            raise ValueError(f"{name} must be >= 0, got {value!r}")
    if invalid_event_at is not None and invalid_event_at < 1:
        raise ValueError(f"invalid_event_at counts events from 1, got {invalid_event_at!r}")
    return Stream(text, first_token_delay, token_delay, cut_after, stall_after, malformed_after, done, end_after,
                  stall_seconds, invalid_event_at, _tool_calls(tool_calls), error_after, finish_reason,
                  thinking)


def refuse_prefill(otherwise: Fault = Ok()) -> RefusePrefill:
    """Refuse an assistant prefill with a 400 (as some providers do), answer ``otherwise`` else.

    A request whose last message has role ``assistant`` gets 400 ``invalid_request_error``
    with :data:`PREFILL_REFUSED_MESSAGE`; any other request is played as ``otherwise``.
    """
    return RefusePrefill(otherwise=otherwise)


def flaky(p: float, fault: Fault, *, otherwise: Fault = Ok(), seed: Optional[int] = None) -> Flaky:
    """Answer ``fault`` with probability ``p``, else ``otherwise`` (``random.Random(seed)``)."""
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"p must be in [0, 1], got {p!r}")
    return Flaky(p=p, fault=fault, otherwise=otherwise, seed=seed)


def recover_after(seconds: float, fault: Fault, *, then: Fault = Ok()) -> RecoverAfter:
    """Answer ``fault`` until ``seconds`` after the first request reaching this step, then ``then``."""
    _check_delay("seconds", seconds)
    return RecoverAfter(seconds=seconds, fault=fault, then=then)


def limited(requests: int, window: float = 1.0, *, then: Fault = Ok(), headers: bool = True) -> Limited:
    """At most ``requests`` per sliding ``window`` seconds answered by ``then``; 429 beyond."""
    if int(requests) < 1 or not window > 0:
        raise ValueError(f"limited needs requests >= 1 and window > 0, got {requests!r}, {window!r}")
    return Limited(requests=int(requests), window=float(window), then=then, headers=headers)


_CONSTRUCTORS: dict[str, Callable[..., Fault]] = {
    "ok": ok, "status": status, "reply": reply, "hang": hang, "reset": reset, "malformed": malformed,
    "stream": stream, "flaky": flaky, "recover_after": recover_after, "limited": limited,
    "refuse_prefill": refuse_prefill,
}


def from_dict(data: Mapping[str, Any]) -> Fault:
    """Rebuild a fault from ``dataclasses.asdict(fault)`` (or a hand-written subset of it).

    Missing fields take the constructor's defaults, e.g. ``{"kind": "status", "code": 503}``.
    """
    fields = dict(data)
    kind = fields.pop("kind", None)
    make = _CONSTRUCTORS.get(kind)  # type: ignore[arg-type]
    if make is None:
        raise ValueError(f"unknown fault kind {kind!r}; expected one of {sorted(_CONSTRUCTORS)}")
    for key in ("fault", "otherwise", "then"):  # composites (flaky, recover_after, limited) nest faults
        if isinstance(fields.get(key), Mapping):
            fields[key] = from_dict(fields[key])
    try:
        return make(**fields)
    except TypeError as exc:
        raise ValueError(f"bad fields for fault {kind!r}: {exc}") from None
