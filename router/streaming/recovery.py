"""What happens to a stream that breaks after content has reached the caller.

Before the first content, a stream fails over like a plain call (the caller sees
nothing). After it, the caller already holds part of an answer, and the chain's
`mid_stream` says what to do with it:

- `continue` (default): ask a target that accepts the text already sent as an assistant
  prefill to write what comes next; the caller's stream simply goes on, one coherent
  answer. The local tier can; a remote target can when it declares `prefill: true` (or,
  undeclared, when litellm's model info says `supports_assistant_prefill`). The broken
  target comes first, under its retry policy, then the chain's later targets. A target
  that refuses the prefill (a 400: the last message is an assistant turn) is recorded as
  what it was and passed over: it is never the caller's final error. When no target can
  continue, the caller gets `StreamInterrupted` with `.partial_text`.
- `restart`: ask again from scratch, first the broken target under its retry policy (a
  cut stream is a transient failure of that target), then down the chain. Before any
  restarted text the caller receives a marker chunk (`chunk.restart is True`, no text),
  `stream.restarts` counts restarts and `stream.text` holds only the restarted answer,
  so a UI can clear what it showed.
- `auto`: continue on a target that can take the prefill, restart (with the marker) on
  one that cannot; the broken target first, then the chain's later targets.
- `error`: `StreamInterrupted` with `.partial_text` at once.

Under `continue` and `auto`, tool calls reach the caller whole (tool_calls.py). Two bounds
hold whatever the mode: a broken target is retried at most `retry.attempts` times per call
over all its breaks (walk/decisions.py counts them), and one stream is recovered at most
`max_recoveries` times (chain key, default 3); past it, `StreamInterrupted`.

This module holds the decisions (which targets, which messages, what a break or a
refusal is); the stream shells in streaming/ (opening.py, reading.py) do the I/O.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ..config.schema import AUTO, CONTINUE, ERROR, RESTART
from ..outcomes import Outcome, TargetFailure, classify
from ..response import text_chunk


if TYPE_CHECKING:
    from ..response import Chunk


@dataclass(frozen=True)
class Recovery:
    """How one break is recovered: the `partial` answer a continuation prefills, the
    targets to ask, in order (the broken one first), and which of them continue it (the
    others restart it, announced by the marker)."""

    partial: str
    targets: tuple[str, ...]
    continuing: frozenset[str]

    def partial_for(self, target: str) -> str:
        """What `target` is sent as the assistant prefill ("" for a restart, or nothing sent yet)."""
        return self.partial if target in self.continuing else ""

    def restarts_on(self, target: str) -> bool:
        return target not in self.continuing


def plan(mid_stream: str, chain: Sequence[str], broken: str, partial: str,
         can_continue: Callable[[str], bool]) -> Recovery | None:
    """The recovery for a stream of `chain` that `broken` broke after sending `partial`;
    None when the chain says `error`. Targets before the broken one already failed this
    call; the broken one itself comes first (its retry policy decides whether it may).
    With no text sent yet (the caller holds only whole tool calls, or nothing), continuing
    is the plain request, which every target can take."""
    if mid_stream == ERROR:
        return None
    names = tuple(chain[list(chain).index(broken):])
    if mid_stream == RESTART:
        return Recovery("", names, frozenset())
    able = frozenset(name for name in names if not partial or can_continue(name))
    if mid_stream == AUTO:
        return Recovery(partial, names, able)
    assert mid_stream == CONTINUE
    return Recovery(partial, tuple(name for name in names if name in able), able)


def stalled(idle_timeout: float) -> TargetFailure:
    """A stream silent for `stream_idle_timeout` with its socket open: the provider went
    silent, and a silent provider rarely answers sooner a second time (no retry unless
    `retry_on_timeout`)."""
    return TargetFailure(Outcome.SILENT, f"the stream stalled: no chunk for {idle_timeout:g} s (stream_idle_timeout)",
                         own_clock=True)


def truncated() -> TargetFailure:
    """A body that ended without a finish_reason: cut, a transient failure of the target."""
    return TargetFailure(Outcome.TRANSIENT, "the stream ended without a finish_reason (truncated)")


def break_note(exc: BaseException) -> str | None:
    """A route note for a break worth naming: an SSE event that was not valid JSON.

    litellm's stream reader (the OpenAI SDK's) raises on such an event and its iterator is
    finished after that, so the event cannot be skipped: it is handled as a break."""
    link: BaseException | None = exc
    seen: set[int] = set()
    while link is not None and id(link) not in seen:
        if isinstance(link, json.JSONDecodeError):
            return f"an SSE event was not valid JSON ({link.msg}): handled as a break"
        seen.add(id(link))
        link = link.__cause__ or link.__context__
    return None


def first_token_missed(seconds: float) -> TargetFailure:
    """No content within `first_token_timeout`: silence, handled as the outcome table says
    (fail over at once unless `retry_on_timeout`)."""
    return TargetFailure(Outcome.SILENT, f"no content within {seconds:g} s of the request (first_token_timeout)",
                         own_clock=True)


class PrefillRefused(TargetFailure):
    """A target answered a continuation (a request ending with the assistant's partial
    turn) with a 400: it refuses assistant prefills, as far as this call can tell."""


def explain(exc: BaseException, partial: str) -> BaseException:
    """What a continuation attempt's error was: a rejection of a prefilled request is a
    `PrefillRefused` (outcome `rejected`, counted against nothing, recorded in the route,
    never the caller's final error: the break that made us ask is the real one); anything
    else is itself."""
    if not partial:
        return exc
    failure = classify(exc)
    if failure.outcome is not Outcome.REJECTED:
        return exc
    refused = PrefillRefused(Outcome.REJECTED, f"refused the assistant prefill: {failure.message}",
                             status=failure.status)
    refused.__cause__ = exc
    return refused


def restart_marker(stream_id: str, model: str) -> Chunk:
    """The chunk that announces a restart: no text, `restart=True`. Everything the caller
    received before it belongs to an answer that was abandoned."""
    return text_chunk("", id=stream_id, model=model, restart=True)


def recovered_note(recovery: Recovery, target: str, broken: str, sent: int) -> str:
    """The route note for a stream picked up by `target`."""
    if recovery.restarts_on(target):
        return f"{target}: restarted the stream after {broken} broke at {sent} characters"
    return f"{target}: continued the stream after {broken} broke at {sent} characters"
