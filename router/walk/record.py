"""The walk's record of one call: the `Route` the caller gets back and the events its
listeners get, kept apart from the decisions (decisions.py) that feed them. No I/O.

Each attempt lands in both (`record`): on the route as an `Attempt`, in the `attempt` event
with what was measured (timeout, first token, longest gap, retry-after, tokens: what
router advise reads). Detail events (`answer`, `attempt_start`, `stream_break`, ...) are built
only when a listener takes the call's `start` event; a call that every listener declines
builds nothing more (its events become QUIET).
"""

from __future__ import annotations

import asyncio
import os
import time
from typing import TYPE_CHECKING, Any

from ..cache.tier import CacheHit
from ..config.schema import TargetConfig
from ..observe.events import QUIET, Events
from ..request import Request
from ..response import Attempt, Route
from ..targets import Note
from .facts import answer_facts, max_tokens
from .parts import Admission, StreamEnd

if TYPE_CHECKING:
    from ..response import Response


class CallRecord:
    """One call's route and events: what the walk (`Walk`, its subclass) decided, as the
    caller and the listeners see it."""

    def __init__(self, chain: str, request: Request, events: Events) -> None:
        self.route = Route(chain=chain)
        self._events = events  # QUIET for a call that every listener declined
        self._waited = 0.0  # backoff slept before the next attempt
        self._started = time.perf_counter()
        self._first_token_s: float | None = None  # of the stream being opened
        # groups a call's events; 16 hex digits as uuid4().hex[:16] gave, in a quarter of the time
        self.call_id = os.urandom(8).hex() if self._events.active else None
        self.finished = False
        self.details = False  # whether anyone takes this call's detail events (observe/events.py)
        if self.call_id is not None and self._events.wants("start"):
            params = request.params
            self.details = self._events.emit("start", chain=chain, call_id=self.call_id,
                                             max_tokens=max_tokens(params), temperature=params.get("temperature"),
                                             content=request.messages if self._events.wants("content") else None)
            if not self.details and self._events.all_take("start"):
                self._events = QUIET  # every listener declined this call: nothing more is built

    @property
    def events(self) -> Events:
        """Where this call's events go."""
        return self._events

    def note(self, config: TargetConfig) -> Note:
        def add(text: Any) -> None:
            if isinstance(text, CacheHit):
                self.route.cache_age_s = text.age_s
            self.route.notes.append(f"{config.name}: {text}")

        return add

    def record(self, attempt: Attempt, **measured: float | None) -> None:
        """Add to the route and tell listeners; `measured`: timeout_s, first_token_s,
        retry_after_s, longest_gap_s, completion_tokens, for the event only (router advise reads them)."""
        self.route.attempts.append(attempt)
        if self._events.active:
            self._events.emit("attempt", target=attempt.target, chain=self.route.chain, outcome=attempt.outcome,
                              status=attempt.status, error=attempt.error, latency_s=attempt.latency_s,
                              wait_s=attempt.waited_s or None, detail=attempt.detail, call_id=self.call_id,
                              **measured)

    def _tell_answer(self, name: str, response: Response | None, ended: StreamEnd | None) -> None:
        """The `answer` event: the GenAI conventions' facts of a successful attempt."""
        self._events.emit("answer", target=name, chain=self.route.chain, call_id=self.call_id,
                          **answer_facts(response, ended, content=self._events.wants("content")))

    def stream_event(self, name: str, target: str, offset: int, mode: str, outcome: str | None = None) -> None:
        """`stream_break` or `stream_resume`: where (`offset` characters in) and how (`mode`)."""
        if self.details:
            self._events.emit(name, target=target, chain=self.route.chain, offset=offset, detail=mode,
                              outcome=outcome, call_id=self.call_id)

    def first_token(self, admission: Admission) -> None:
        """A stream's first content arrived: its delay goes on the attempt's event."""
        self._first_token_s = time.perf_counter() - admission.started

    def _take_first_token(self) -> float | None:
        taken, self._first_token_s = self._first_token_s, None
        return taken

    def _take_wait(self) -> float:
        waited, self._waited = self._waited, 0.0
        return waited

    def finish(self, outcome: str, error: str | None = None) -> None:
        """The call is over: "ok", "static", "failed" (`error`: what the caller gets) or "cancelled"."""
        self.finished = True
        self.route.latency_s = time.perf_counter() - self._started
        if self._events.active:
            if self.route.degraded and outcome in ("ok", "static"):  # an answer, not an abandoned stream
                self._events.emit("degraded", target=self.route.served_by, chain=self.route.chain,
                                  call_id=self.call_id)
            self._events.emit("call", chain=self.route.chain, outcome=outcome, latency_s=self.route.latency_s,
                              served_by=self.route.served_by if outcome != "failed" else None,
                              error=error, call_id=self.call_id)

    def abandoned(self, exc: BaseException) -> None:
        """`exc` ends the call before the walk finished it (the caller cancelled, or a bug):
        the call is over all the same, for its listeners."""
        if not self.finished:
            cancelled = isinstance(exc, (KeyboardInterrupt, asyncio.CancelledError, GeneratorExit))
            self.finish("cancelled" if cancelled else "failed", None if cancelled else type(exc).__name__)
