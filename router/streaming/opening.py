"""Opening a stream: the walk's chain loop (walk/shells.py) with "first content" as an
attempt's success. The chunks before it are held back (`_Prelude`, within
`first_token_timeout`), so a failover stays invisible; errors before it are raised by
`complete(stream=True)` itself. Also how a broken stream is reopened elsewhere: the same
loop over the targets recovery.py chose, with the text so far as a continuation's prefill.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from . import recovery
from ..deadline import Deadline
from ..outcomes import Outcome, TargetFailure
from ..response import chunk_of
from ..config.schema import TargetConfig
from .sources import END, AsyncSource, Stalled, ThreadedSource
from ..walk import Admission, Member, Walk, Won, chain_async, chain_sync

if TYPE_CHECKING:
    from ..response import Chunk


@dataclass
class Opened:
    """A target's stream that has produced its first content."""

    member: Member
    admission: Admission
    source: Any
    prelude: deque[Chunk]

    @property
    def config(self) -> TargetConfig:
        return self.member.config


def open_sync(walk: Walk, members: Iterable[Member], plan: recovery.Recovery | None = None) -> Opened | None:
    """Open a stream on the first of `members` that reaches content; `plan`: the recovery
    of a broken one (what each target is sent as a prefill)."""
    def attempt(walk: Walk, member: Member, admission: Admission) -> tuple[Any, deque[Chunk]]:
        partial = plan.partial_for(member.config.name) if plan else ""
        source = ThreadedSource(lambda: _chunks(walk, member, admission, partial))
        try:
            prelude = _first_content_sync(_Prelude(walk, member, admission), source.next)
        except BaseException as exc:
            source.close()
            raise _explained(member, exc, partial)  # itself, or what it was: a prefill refused
        walk.first_token(admission)
        return source, prelude

    return _opened(chain_sync(walk, members, attempt))


async def open_async(walk: Walk, members: Iterable[Member], plan: recovery.Recovery | None = None) -> Opened | None:
    async def attempt(walk: Walk, member: Member, admission: Admission) -> tuple[Any, deque[Chunk]]:
        partial = plan.partial_for(member.config.name) if plan else ""
        source = _async_source(walk, member, admission, partial)
        try:
            prelude = await _first_content_async(_Prelude(walk, member, admission), source.anext)
        except BaseException as exc:
            await source.aclose()
            raise _explained(member, exc, partial)  # itself, or what it was: a prefill refused
        walk.first_token(admission)
        return source, prelude

    return _opened(await chain_async(walk, members, attempt))


def _first_content_sync(prelude: _Prelude, read: Callable[[float], Any]) -> deque[Chunk]:
    try:
        while not prelude.hold(read(prelude.timeout())):
            pass
    except Stalled:
        raise prelude.stalled() from None
    return prelude.chunks


async def _first_content_async(prelude: _Prelude, read: Callable[[float], Any]) -> deque[Chunk]:
    try:
        while not prelude.hold(await read(prelude.timeout())):
            pass
    except Stalled:
        raise prelude.stalled() from None
    return prelude.chunks


class _Prelude:
    """The chunks of a stream being opened, held back until the first content (so that a
    failover stays invisible), within `first_token_timeout`."""

    def __init__(self, walk: Walk, member: Member, admission: Admission) -> None:
        self.walk = walk
        self.config = member.config
        self.chunks: deque[Chunk] = deque()
        self.limit = Deadline(min(self.config.first_token_timeout or admission.timeout, admission.timeout))
        # the deadline cut the wait below the target's own limits: no verdict on the provider
        own = min(self.config.timeout, self.config.first_token_timeout or self.config.timeout)
        self.cut_by_deadline = admission.timeout < own

    def timeout(self) -> float:
        return self.limit.remaining()

    def hold(self, raw: Any) -> bool:
        """Hold `raw`; True once the held chunks carry content (or a finish)."""
        if raw is END:
            raise TargetFailure(Outcome.TRANSIENT, "the stream ended before any content")
        chunk = chunk_of(raw)
        self.chunks.append(chunk)
        return carries_answer(chunk)

    def stalled(self) -> TargetFailure:
        """No content in time: the deadline's doing (outcome `deadline`, counting nothing, as
        for a plain call) when it cut the wait below the target's own limits."""
        if self.cut_by_deadline:
            return TargetFailure(Outcome.DEADLINE, "the call's deadline passed before the first token")
        return recovery.first_token_missed(self.config.first_token_timeout or self.config.timeout)


def _opened(won: Won[tuple[Any, deque[Chunk]]] | None) -> Opened | None:
    return None if won is None else Opened(won.member, won.admission, *won.value)


def _explained(member: Member, exc: BaseException, partial: str) -> BaseException:
    """A continuation's refusal of the prefill is recorded as such, and remembered."""
    explained = recovery.explain(exc, partial)
    if isinstance(explained, recovery.PrefillRefused):
        member.target.refused_prefill()
    return explained


def _stream_args(walk: Walk, member: Member, admission: Admission, partial: str) -> dict[str, Any]:
    """What a target's `stream`/`astream` gets besides the request: `partial` only for a
    continuation (targets that cannot continue take no such argument)."""
    args: dict[str, Any] = {"timeout": admission.timeout, "note": walk.note(member.config)}
    if partial:
        args["partial"] = partial
    return args


def _chunks(walk: Walk, member: Member, admission: Admission, partial: str) -> Iterator[Any]:
    return member.target.stream(walk.request, **_stream_args(walk, member, admission, partial))


def _async_source(walk: Walk, member: Member, admission: Admission, partial: str) -> Any:
    """The target's own async stream when it has one; else the sync stream read in a thread."""
    if member.target.streams_async:
        args = _stream_args(walk, member, admission, partial)
        return AsyncSource(lambda: member.target.astream(walk.request, **args))
    return ThreadedSource(lambda: _chunks(walk, member, admission, partial), loop=asyncio.get_running_loop())


def carries_answer(chunk: Chunk) -> bool:
    """Content, tool calls or a finish: more than the role-only opening chunk."""
    return bool(chunk.text or chunk.finish_reason or any(c.delta.tool_calls for c in chunk.choices))
