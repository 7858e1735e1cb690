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
from typing import TYPE_CHECKING, Any

from . import recovery
from ..errors import StreamInterrupted
from ..outcomes import Failure
from .recovery import Recovery
from ..response import Route, answer_of, chunk_of, text_chunk
from ..config.schema import AUTO, CONTINUE, TargetConfig
from .sources import END, Stalled
from ..walk import StreamEnd, Walk
from .opening import Opened, carries_answer, open_async, open_sync
from .tool_calls import ToolCallHold

if TYPE_CHECKING:
    from openai.types import CompletionUsage as Usage

    from ..response import Chunk


class _StreamCore:
    """What sync and async streams share: delivering chunks, judging ends and breaks."""

    def __init__(self, walk: Walk, opened: Opened | None, static: Chunk | None = None) -> None:
        self.walk = walk
        self.opened: Opened | None = None
        self.prelude: deque[Chunk] = deque([static] if static else [])
        self.parts: list[str] = []
        self.id = static.id if static else ""
        self.finish_reason: str | None = None
        self.last: Chunk | None = None  # model and usage of the stream, for the `answer` event
        self.continued = False
        self.kept: list[Chunk] | None = [] if walk.keeps_answers else None  # for cache tiers
        self.closed = False  # by the caller: nothing more is delivered, held chunks included
        self.restarts = 0
        self.recoveries = 0  # continuations plus restarts, bounded by the chain's max_recoveries
        self.exhausted = False  # the last break came with no recovery left
        self.out: deque[Chunk] = deque()  # delivered, not yet handed to the caller
        # tool calls reach the caller whole where a break may be continued (tool_calls.py)
        self.calls = ToolCallHold() if walk.chain.mid_stream in (CONTINUE, AUTO) else None
        self.broken_at = 0  # index in route.attempts of the last break
        self.break_failure: Failure | None = None  # the last break, as recorded against its target
        self.read_started = 0.0
        self.longest_gap_s = 0.0  # of the stream being read: the longest wait for a read (router advise)
        self.usage: Usage | None = None  # the attempt's usage, when the stream reported it
        self.sent_chars = 0  # characters the attempt streamed: its tokens when it reports no usage
        self.shows_usage = _asks_usage(walk)  # the caller asked for the usage chunk itself
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
            self.recoveries += 1
            sent = len(self.text)
            route.notes.append(recovery.recovered_note(plan, opened.config.name, self.opened.config.name, sent))
            restarts = plan.restarts_on(opened.config.name)
            self.walk.stream_event("stream_resume", opened.config.name, sent, "restart" if restarts else "continue")
            if restarts:
                self.restarts += 1
                self.parts = []
                if self.calls is not None:
                    self.calls.reset()
                model = opened.prelude[0].model if opened.prelude else ""
                self.prelude.append(recovery.restart_marker(self.id, model))
        self.opened = opened
        self.longest_gap_s = 0.0
        self.usage, self.sent_chars = None, 0
        self.id = self.id or (opened.prelude[0].id if opened.prelude else "")
        route.served_by = opened.config.name
        route.degraded = route.degraded or opened.config.degraded
        self.prelude.extend(opened.prelude)
        self.finish_reason = None

    def next_held(self) -> Chunk | None:
        while not self.out and self.prelude:
            self.deliver(self.prelude.popleft())
        return self.out.popleft() if self.out else None

    def deliver(self, chunk: Chunk) -> None:
        """Hand `chunk` on (to `out`), tool calls once whole (under continue and auto)."""
        for whole in self.calls.feed(chunk) if self.calls is not None and not chunk.restart else (chunk,):
            if self.continued and not whole.restart and not carries_answer(whole):
                continue  # the continuation's own role chunk: the caller has had one
            whole.id = self.id or whole.id
            if self.kept is not None:
                self.kept.append(whole)
            self.parts.append(whole.text)
            self.sent_chars += len(whole.text)
            self.finish_reason = whole.finish_reason or self.finish_reason
            self.out.append(whole)

    def received(self, raw: Any) -> Chunk | None:
        """One read from the source: the chunk to hand the caller, or None (the stream
        ended, or nothing of it is for the caller yet)."""
        self.longest_gap_s = max(self.longest_gap_s, time.perf_counter() - self.read_started)
        if raw is END:
            self.ended()
            return None
        chunk = chunk_of(raw)
        if chunk.usage is not None:
            self.usage = chunk.usage
            if not chunk.choices and not self.shows_usage:  # asked for by the router, not the caller
                if self.kept is not None:
                    self.kept.append(chunk)
                return None
        self.deliver(chunk)
        return self.out.popleft() if self.out else None

    @property
    def tokens(self) -> int:
        """What the attempt being read used so far, for its rate limit."""
        return self.walk.streamed_tokens(self.usage, self.sent_chars)

    def ended(self) -> None:
        """The source ran out: a success if it said it finished, else a truncation."""
        if self.finish_reason is None:
            raise recovery.truncated()
        assert self.opened is not None
        self.walk.succeeded(self.opened.member, self.opened.admission, tokens=self.tokens,
                            ended=StreamEnd(self.last, self.finish_reason, self.parts),
                            longest_gap_s=self.longest_gap_s)
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
        if self.calls is not None:
            self.calls.drop()  # a call not yet whole is lost with the break; the caller never saw it
        text = self.text
        self.exhausted = self.recoveries >= self.walk.chain.max_recoveries
        plan = None if self.exhausted else recovery.plan(self.walk.chain.mid_stream, self.walk.chain.targets,
                                                         broken.name, text, self.walk.can_continue)
        self.walk.stream_event("stream_break", broken.name, len(text),
                               self.walk.chain.mid_stream if plan else "error", self.break_failure.outcome.value)
        return plan

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
        self.walk.finish("failed", StreamInterrupted.__name__)
        text = self.text
        tried = [f"{a.target}: {a.outcome}" + (f" ({a.detail})" if a.detail else "")
                 for a in self.walk.route.attempts[self.broken_at + 1:]]
        then = f"; then {'; '.join(tried)}" if tried else ""
        why = (f"it had been recovered max_recoveries ({self.recoveries}) times already" if self.exhausted
               else "no target could continue it")
        return StreamInterrupted(f"the stream from {broken.name} broke after {len(text)} characters and {why}: "
                                 f"{self.walk.detail(failure.message)}{then}",
                                 partial_text=text, route=self.walk.route)

    def abandon(self) -> None:
        """The caller stopped reading: neither success nor failure."""
        self.closed = True
        self.prelude.clear()
        self.out.clear()
        if self.opened is not None:
            self.walk.released(self.opened.member, self.opened.admission,
                               f"closed by the caller after {len(self.text)} characters", self.tokens)
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
            core.replace(plan, plan and open_sync(core.walk, core.walk.members(plan.targets), plan))
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
            core.replace(plan, plan and await open_async(core.walk, core.walk.members(plan.targets), plan))
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
    try:
        opened = open_sync(walk, walk.members())
        return Stream(_StreamCore(walk, opened) if opened else _static_core(walk))
    except BaseException as exc:
        walk.abandoned(exc)  # cancelled before the first content: the call is over all the same
        raise


async def stream_async(walk: Walk) -> AsyncStream:
    try:
        opened = await open_async(walk, walk.members())
        return AsyncStream(_StreamCore(walk, opened) if opened else _static_core(walk))
    except BaseException as exc:
        walk.abandoned(exc)  # cancelled before the first content: the call is over all the same
        raise


def _asks_usage(walk: Walk) -> bool:
    """Whether the caller itself asked for the stream's usage chunk (`stream_options`)."""
    options = walk.request.params.get("stream_options")
    return isinstance(options, dict) and bool(options.get("include_usage"))


def _static_core(walk: Walk) -> _StreamCore:
    response = walk.give_up()  # raises AllTargetsFailed unless the chain has a static reply
    text = response.choices[0].message.content
    chunk = text_chunk(text or "", id="static", model="static", finish_reason="stop")
    return _StreamCore(walk, None, static=chunk)
