"""Streams: failover until the first content reaches the caller; after that, a break is
recovered as the chain's `mid_stream` says (recovery.py: continue, restart or error).

Opening a stream walks the chain like a plain call, except that an attempt succeeds only
once its first content chunk has arrived (chunks before it are held back, so a failover
stays invisible). Errors before that are raised by `complete(stream=True)` itself. The
circuit hears about the attempt when the stream ends: success when it finished with a
finish_reason, a failure when it broke, nothing when the caller closed it.

Timing is exact for both APIs (`first_token_timeout`, `stream_idle_timeout`): see
stream_sources.py.

As in walk.py, the decisions are a core without I/O and the sync and async sides are thin
shells that mirror each other: `_StreamCore` delivers chunks, judges ends and breaks, and
asks the walk for the targets that may continue; `Stream.__next__` and
`AsyncStream.__anext__` only read and close sources. Opening a stream is the walk's one
chain loop (`chain_sync` / `chain_async`) with "first content" as the attempt, and
`_Prelude` (the chunks held back until then) its core.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from . import recovery
from .deadline import Deadline
from .errors import StreamInterrupted
from .outcomes import Outcome, TargetFailure, classify
from .recovery import Recovery
from .response import Chunk, ChunkChoice, Delta, Route, answer_of
from .schema import TargetConfig
from .stream_sources import END, AsyncSource, Stalled, ThreadedSource
from .walk import Admission, Member, Walk, Won, chain_async, chain_sync

@dataclass
class _Opened:
    """A target's stream that has produced its first content."""

    member: Member
    admission: Admission
    source: Any
    prelude: deque[Chunk]

    @property
    def config(self) -> TargetConfig:
        return self.member.config


class _StreamCore:
    """What sync and async streams share: delivering chunks, judging ends and breaks."""

    def __init__(self, walk: Walk, opened: _Opened | None, static: Chunk | None = None) -> None:
        self.walk = walk
        self.opened: _Opened | None = None
        self.prelude: deque[Chunk] = deque([static] if static else [])
        self.parts: list[str] = []
        self.id = static.id if static else ""
        self.finish_reason: str | None = None
        self.continued = False
        self.kept: list[Chunk] | None = [] if walk.keeps_answers else None  # for cache tiers
        self.closed = False  # by the caller: nothing more is delivered, held chunks included
        self.restarts = 0
        self.broken_at = 0  # index in route.attempts of the last break
        if opened is not None:
            self.switch(opened)

    @property
    def route(self) -> Route:
        return self.walk.route

    @property
    def text(self) -> str:
        return "".join(self.parts)

    @property
    def idle_timeout(self) -> float:
        assert self.opened is not None
        return self.opened.config.stream_idle_timeout or self.opened.config.timeout

    def switch(self, opened: _Opened, plan: Recovery | None = None) -> None:
        route = self.walk.route
        if self.opened is not None and plan is not None:
            self.continued = True
            route.notes.append(recovery.recovered_note(plan, opened.config.name, self.opened.config.name,
                                                       len(self.text)))
            if plan.restarts:
                self.restarts += 1
                self.parts = []
                model = opened.prelude[0].model if opened.prelude else ""
                self.prelude.append(recovery.restart_marker(self.id, model))
        self.opened = opened
        self.id = self.id or (opened.prelude[0].id if opened.prelude else "")
        route.served_by = opened.config.name
        route.degraded = route.degraded or opened.config.degraded
        self.prelude.extend(opened.prelude)
        self.finish_reason = None

    def next_held(self) -> Chunk | None:
        while self.prelude:
            chunk = self.deliver(self.prelude.popleft())
            if chunk is not None:
                return chunk
        return None

    def deliver(self, chunk: Chunk) -> Chunk | None:
        if self.continued and not chunk.restart and not _carries_answer(chunk):
            return None  # the continuation's own role chunk: the caller has had one
        chunk.id = self.id or chunk.id
        if self.kept is not None:
            self.kept.append(chunk)
        self.parts.append(chunk.text)
        self.finish_reason = chunk.finish_reason or self.finish_reason
        return chunk

    def received(self, raw: Any) -> Chunk | None:
        """One read from the source: the chunk to hand the caller, or None (the stream
        ended, or the chunk is not for the caller)."""
        if raw is END:
            self.ended()
            return None
        return self.deliver(Chunk.from_openai(raw))

    def ended(self) -> None:
        """The source ran out: a success if it said it finished, else a truncation."""
        if self.finish_reason is None:
            raise recovery.truncated()
        assert self.opened is not None
        self.walk.succeeded(self.opened.member, self.opened.admission)
        self.walk.finish("ok")
        if self.kept is not None and not self.continued:  # a stitched answer is no one's answer
            self.walk.answered(self.opened.config, answer_of(self.kept))
        self.opened = None

    def broke(self, exc: BaseException) -> Recovery | None:
        """Record the break against the target; how the chain recovers from it (None: it
        does not, `mid_stream: error`)."""
        assert self.opened is not None
        broken = self.opened.config
        if isinstance(exc, Stalled):
            exc = recovery.stalled(self.idle_timeout)
        note = recovery.break_note(exc)
        if note is not None:
            self.walk.note(broken)(note)
        self.walk.stream_broke(self.opened.member, self.opened.admission, exc)
        self.broken_at = len(self.walk.route.attempts) - 1
        return recovery.plan(self.walk.chain.mid_stream, self.walk.chain.targets, broken.name, self.text,
                             self.walk.can_continue)

    def replace(self, exc: BaseException, broken: TargetConfig, plan: Recovery | None,
                replacement: _Opened | None) -> None:
        """Go on with the `replacement` of a broken stream, or raise `StreamInterrupted`."""
        if replacement is None:
            raise self.interrupted(exc, broken) from self.walk.redacted(exc, broken.name)
        self.switch(replacement, plan)

    def interrupted(self, exc: BaseException, broken: TargetConfig) -> StreamInterrupted:
        """No target took the stream up: the real error is the break (the message, the
        cause); what each target tried after it said is appended, as facts."""
        self.walk.finish("failed")
        text = self.text
        tried = [f"{a.target}: {a.outcome}" + (f" ({a.detail})" if a.detail else "")
                 for a in self.walk.route.attempts[self.broken_at + 1:]]
        then = f"; then {'; '.join(tried)}" if tried else ""
        return StreamInterrupted(f"the stream from {broken.name} broke after {len(text)} characters and no "
                                 f"target could continue it: {self.walk.detail(classify(exc).message)}{then}",
                                 partial_text=text, route=self.walk.route)

    def abandon(self) -> None:
        """The caller stopped reading: neither success nor failure."""
        self.closed = True
        self.prelude.clear()
        if self.opened is not None:
            self.walk.released(self.opened.member, self.opened.admission, f"closed by the caller after "
                                                                         f"{len(self.text)} characters")
            self.opened = None
            self.walk.finish("cancelled")


class _StreamShell:
    """What both shells show of their core."""

    def __init__(self, core: _StreamCore) -> None:
        self._core = core

    @property
    def route(self) -> Route:
        return self._core.route

    @property
    def text(self) -> str:
        """The answer so far (after a restart: the restarted answer only)."""
        return self._core.text

    @property
    def restarts(self) -> int:
        """How many times the answer started over (`mid_stream: restart`); each restart is
        announced by a chunk with `restart=True` before any of its text."""
        return self._core.restarts


class Stream(_StreamShell):
    """`complete(stream=True)`: iterate for `Chunk`s; `route` and `text` as it goes."""

    def __iter__(self) -> Stream:
        return self

    def __next__(self) -> Chunk:
        core = self._core
        while not core.closed:
            chunk = core.next_held()
            if chunk is not None:
                return chunk
            opened = core.opened
            if opened is None:
                raise StopIteration
            try:
                chunk = core.received(opened.source.next(core.idle_timeout))
            except (KeyboardInterrupt, SystemExit):
                self.close()
                raise
            except Exception as exc:
                broke = exc
            else:
                if chunk is not None:
                    return chunk
                continue
            # recovered outside the except block: what a recovery attempt raises must not
            # get the break as its implicit __context__ (classify reads that chain)
            opened.source.close()
            plan = core.broke(broke)
            core.replace(broke, opened.config, plan, plan and open_sync(core.walk, core.walk.members(plan.targets),
                                                                        plan.partial))
        raise StopIteration

    def close(self) -> None:
        opened = self._core.opened
        if opened is not None:
            opened.source.close()
        self._core.abandon()

    def __enter__(self) -> Stream:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def __del__(self) -> None:
        with contextlib.suppress(Exception):
            self.close()


class AsyncStream(_StreamShell):
    """`await acomplete(stream=True)`: `async for` the `Chunk`s; `route` and `text` as it goes."""

    def __aiter__(self) -> AsyncStream:
        return self

    async def __anext__(self) -> Chunk:
        core = self._core
        while not core.closed:
            chunk = core.next_held()
            if chunk is not None:
                return chunk
            opened = core.opened
            if opened is None:
                raise StopAsyncIteration
            try:
                chunk = core.received(await opened.source.anext(core.idle_timeout))
            except (asyncio.CancelledError, KeyboardInterrupt, SystemExit):
                await self.aclose()
                raise
            except Exception as exc:
                broke = exc
            else:
                if chunk is not None:
                    return chunk
                continue
            await opened.source.aclose()  # recovered outside the except block: see Stream
            plan = core.broke(broke)
            core.replace(broke, opened.config, plan, plan and await open_async(
                core.walk, core.walk.members(plan.targets), plan.partial))
        raise StopAsyncIteration

    async def aclose(self) -> None:
        opened = self._core.opened
        if opened is not None:
            await opened.source.aclose()
        self._core.abandon()

    async def __aenter__(self) -> AsyncStream:
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self.aclose()


# -- opening: the walk's chain loop, with "first content" as an attempt's success ---------

def stream_sync(walk: Walk) -> Stream:
    opened = open_sync(walk, walk.members())
    return Stream(_StreamCore(walk, opened) if opened else _static_core(walk))


async def stream_async(walk: Walk) -> AsyncStream:
    opened = await open_async(walk, walk.members())
    return AsyncStream(_StreamCore(walk, opened) if opened else _static_core(walk))


def open_sync(walk: Walk, members: Iterable[Member], partial: str = "") -> _Opened | None:
    def attempt(walk: Walk, member: Member, admission: Admission) -> tuple[Any, deque[Chunk]]:
        source = ThreadedSource(lambda: _chunks(walk, member, admission, partial))
        try:
            prelude = _first_content_sync(_Prelude(walk, member, admission), source.next)
        except BaseException as exc:
            source.close()
            raise _explained(member, exc, partial)  # itself, or what it was: a prefill refused
        walk.first_token(admission)
        return source, prelude

    return _opened(chain_sync(walk, members, attempt))


async def open_async(walk: Walk, members: Iterable[Member], partial: str = "") -> _Opened | None:
    async def attempt(walk: Walk, member: Member, admission: Admission) -> tuple[Any, deque[Chunk]]:
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
        chunk = Chunk.from_openai(raw)
        self.chunks.append(chunk)
        return _carries_answer(chunk)

    def stalled(self) -> TargetFailure:
        """No content in time: the deadline's doing (outcome `deadline`, counting nothing, as
        for a plain call) when it cut the wait below the target's own limits."""
        if self.cut_by_deadline:
            return TargetFailure(Outcome.DEADLINE, "the call's deadline passed before the first token")
        return recovery.first_token_missed(self.config.first_token_timeout or self.config.timeout)


def _opened(won: Won[tuple[Any, deque[Chunk]]] | None) -> _Opened | None:
    return None if won is None else _Opened(won.member, won.admission, *won.value)


def _explained(member: Member, exc: BaseException, partial: str) -> BaseException:
    """A continuation's refusal of the prefill is recorded as such, and remembered."""
    explained = recovery.explain(exc, partial)
    if isinstance(explained, recovery.PrefillRefused):
        member.target.refused_prefill()
    return explained


def _chunks(walk: Walk, member: Member, admission: Admission, partial: str) -> Iterator[Any]:
    note = walk.note(member.config)
    if partial:
        return member.target.stream(walk.request, timeout=admission.timeout, note=note, partial=partial)
    return member.target.stream(walk.request, timeout=admission.timeout, note=note)


def _async_source(walk: Walk, member: Member, admission: Admission, partial: str) -> Any:
    """The target's own async stream when it has one; else the sync stream read in a thread.
    `partial` goes only to a continuation (as in `_chunks`)."""
    if member.target.streams_async:
        note = walk.note(member.config)
        extra = {"partial": partial} if partial else {}
        return AsyncSource(lambda: member.target.astream(walk.request, timeout=admission.timeout, note=note, **extra))
    return ThreadedSource(lambda: _chunks(walk, member, admission, partial), loop=asyncio.get_running_loop())


def _carries_answer(chunk: Chunk) -> bool:
    """Content, tool calls or a finish: more than the role-only opening chunk."""
    return bool(chunk.text or chunk.finish_reason or any(c.delta.tool_calls for c in chunk.choices))


def _static_core(walk: Walk) -> _StreamCore:
    response = walk.give_up()  # raises AllTargetsFailed unless the chain has a static reply
    text = response.choices[0].message.content
    chunk = Chunk(id="static", model="static",
                  choices=[ChunkChoice(0, Delta(role="assistant", content=text), finish_reason="stop")])
    return _StreamCore(walk, None, static=chunk)
