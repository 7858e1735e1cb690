"""Reading a stream: `Stream` and `AsyncStream`, thin mirrored shells that only read and
close sources, around `_StreamCore`, which delivers chunks and judges ends and breaks.
The circuit hears about the attempt when the stream ends: success when it finished with
a finish_reason, a failure when it broke, nothing when the caller closed it. A break is
recovered as the chain's `mid_stream` says (recovery.py: continue, restart or error), by
reopening (opening.py) on the targets recovery chose.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import deque
from typing import Any

from . import recovery
from ..errors import StreamInterrupted
from ..outcomes import Failure
from .recovery import Recovery
from ..response import Chunk, ChunkChoice, Delta, Route, answer_of
from ..config.schema import TargetConfig
from .sources import END, Stalled
from ..walk import Walk
from .opening import Opened, carries_answer, open_async, open_sync


class _StreamCore:
    """What sync and async streams share: delivering chunks, judging ends and breaks."""

    def __init__(self, walk: Walk, opened: Opened | None, static: Chunk | None = None) -> None:
        self.walk = walk
        self.opened: Opened | None = None
        self.prelude: deque[Chunk] = deque([static] if static else [])
        self.parts: list[str] = []
        self.id = static.id if static else ""
        self.finish_reason: str | None = None
        self.continued = False
        self.kept: list[Chunk] | None = [] if walk.keeps_answers else None  # for cache tiers
        self.closed = False  # by the caller: nothing more is delivered, held chunks included
        self.restarts = 0
        self.broken_at = 0  # index in route.attempts of the last break
        self.break_failure: Failure | None = None  # the last break, as recorded against its target
        self.read_started = 0.0
        self.longest_gap_s = 0.0  # of the stream being read: the longest wait for a read (router advise)
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

    def reading(self) -> float:
        """A read of the source starts now: how long it may wait (its wait is measured)."""
        self.read_started = time.perf_counter()
        return self.idle_timeout

    def switch(self, opened: Opened, plan: Recovery | None = None) -> None:
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
        self.longest_gap_s = 0.0
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
        if self.continued and not chunk.restart and not carries_answer(chunk):
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
        self.longest_gap_s = max(self.longest_gap_s, time.perf_counter() - self.read_started)
        if raw is END:
            self.ended()
            return None
        return self.deliver(Chunk.from_openai(raw))

    def ended(self) -> None:
        """The source ran out: a success if it said it finished, else a truncation."""
        if self.finish_reason is None:
            raise recovery.truncated()
        assert self.opened is not None
        self.walk.succeeded(self.opened.member, self.opened.admission, longest_gap_s=self.longest_gap_s)
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
        self.break_failure = self.walk.stream_broke(self.opened.member, self.opened.admission, exc).failure
        self.broken_at = len(self.walk.route.attempts) - 1
        return recovery.plan(self.walk.chain.mid_stream, self.walk.chain.targets, broken.name, self.text,
                             self.walk.can_continue)

    def replace(self, plan: Recovery | None, replacement: Opened | None) -> None:
        """Go on with the `replacement` of the broken stream, or raise `StreamInterrupted`."""
        assert self.opened is not None and self.break_failure is not None  # the broken one, until replaced
        broken, failure = self.opened.config, self.break_failure
        if replacement is None:
            raise self.interrupted(failure, broken) from self.walk.redacted(failure, broken.name)
        self.switch(replacement, plan)

    def interrupted(self, failure: Failure, broken: TargetConfig) -> StreamInterrupted:
        """No target took the stream up: the real error is the break as recorded (a stall is
        `silent`, not the reader's bare `Stalled`), the message and the cause; what each
        target tried after it said is appended, as facts."""
        self.walk.finish("failed")
        text = self.text
        tried = [f"{a.target}: {a.outcome}" + (f" ({a.detail})" if a.detail else "")
                 for a in self.walk.route.attempts[self.broken_at + 1:]]
        then = f"; then {'; '.join(tried)}" if tried else ""
        return StreamInterrupted(f"the stream from {broken.name} broke after {len(text)} characters and no "
                                 f"target could continue it: {self.walk.detail(failure.message)}{then}",
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
                chunk = core.received(opened.source.next(core.reading()))
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
            core.replace(plan, plan and open_sync(core.walk, core.walk.members(plan.targets), plan.partial))
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
                chunk = core.received(await opened.source.anext(core.reading()))
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
            core.replace(plan, plan and await open_async(core.walk, core.walk.members(plan.targets),
                                                                plan.partial))
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


# -- the entry points: open (opening.py), then read ------------------------------------

def stream_sync(walk: Walk) -> Stream:
    opened = open_sync(walk, walk.members())
    return Stream(_StreamCore(walk, opened) if opened else _static_core(walk))


async def stream_async(walk: Walk) -> AsyncStream:
    opened = await open_async(walk, walk.members())
    return AsyncStream(_StreamCore(walk, opened) if opened else _static_core(walk))


def _static_core(walk: Walk) -> _StreamCore:
    response = walk.give_up()  # raises AllTargetsFailed unless the chain has a static reply
    text = response.choices[0].message.content
    chunk = Chunk(id="static", model="static",
                  choices=[ChunkChoice(0, Delta(role="assistant", content=text), finish_reason="stop")])
    return _StreamCore(walk, None, static=chunk)
