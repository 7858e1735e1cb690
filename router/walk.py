"""The chain walk: skip, attempt, retry, fail over, and record the route.

For each target of the chain, in order: pass it over when it is disabled, offline, known
too small, out of time or its circuit is open; otherwise attempt it under its retry
policy (retry.py), each attempt admitted by its bulkhead and its circuit (breaker.py)
and classified (outcomes.py). The first answer wins; when none comes, the chain's static
reply or `AllTargetsFailed`.

`Walk` holds one call's state and every decision; `walk_sync` and `walk_async` are the
two loops around it, identical but for `await`.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any, TypeVar

import tenacity

from .breaker import CircuitOpen, Ticket
from .schema import ChainConfig, TargetConfig
from .errors import AllTargetsFailed, ContentRejected
from .outcomes import Outcome, TargetFailure, classify
from .request import Request
from .response import Attempt, Choice, Message, Response, Route, Usage
from .retry import AttemptFailed, Deadline, retrying

if TYPE_CHECKING:
    from .core import Router

_DETAIL_LIMIT = 500
T = TypeVar("T")


@dataclass(frozen=True)
class Admission:
    """One attempt let through: its circuit ticket, timeout and start time."""

    ticket: Ticket
    timeout: float
    started: float


class Walk:
    """One call down one chain: its route, its deadline, and what each target said."""

    def __init__(self, router: Router, chain: ChainConfig, request: Request, deadline: Deadline) -> None:
        self.router = router
        self.chain = chain
        self.request = request
        self.deadline = deadline
        self.route = Route(chain=chain.name)
        self.errors: dict[str, BaseException] = {}
        self._overflowed: int | None = None  # smallest context window found too small
        self._waited = 0.0  # backoff slept before the next attempt
        self._started = time.perf_counter()
        self._events = router._events

    # -- which targets ---------------------------------------------------------------------

    def targets(self, after: str | None = None, can_continue: bool = False) -> Iterator[TargetConfig]:
        """The chain's targets (those `after` one, those that can continue a broken stream)
        that are worth an attempt now; the others are recorded as skipped."""
        names = self.chain.targets
        if after is not None:
            names = names[names.index(after) + 1:]
        for name in names:
            config = self.router.config.targets[name]
            if can_continue and not getattr(self.router._targets.get(name), "continues_streams", False):
                continue
            skip = self._skip(config)
            if skip is None:
                yield config
            else:
                self._record(Attempt(name, skip[0].value, detail=skip[1]))

    def _skip(self, config: TargetConfig) -> tuple[Outcome, str] | None:
        if config.disabled:
            return Outcome.DISABLED, config.disabled
        if self.router.config.offline and config.is_remote:
            return Outcome.OFFLINE, "offline mode: remote targets are skipped"
        window, overflowed = config.context_window, self._overflowed
        if overflowed is not None and window and window <= overflowed:
            return Outcome.TOO_SMALL, f"context window {window} is not larger than {overflowed}, already too small"
        if self.deadline.remaining() <= 0:
            return Outcome.DEADLINE, "the call's deadline had passed"
        return None

    # -- one attempt -----------------------------------------------------------------------

    def retrying(self, config: TargetConfig, cls: type[tenacity.BaseRetrying], sleep: Any) -> Any:
        def before_sleep(retry_state: tenacity.RetryCallState) -> None:
            self._waited = retry_state.upcoming_sleep
            if self._events.active:
                self._events.emit("retry", target=config.name, chain=self.chain.name, wait_s=self._waited,
                                  outcome=self.route.attempts[-1].outcome)

        circuit, budget = self.router._circuits[config.name], self.router._budgets[config.name]

        def refused() -> bool:
            if circuit.is_open():
                return True
            if budget.allow_retry():
                return False
            if self._events.active:
                self._events.emit("budget_exhausted", target=config.name, chain=self.chain.name)
            return True

        return retrying(config.retry, self.deadline, cls=cls, refused=refused, sleep=sleep, before_sleep=before_sleep)

    def attempt_timeout(self, config: TargetConfig) -> float:
        """The next attempt's timeout: the target's, cut to exactly what the deadline leaves
        (remote targets reuse one HTTP client whatever the timeout: targets/sdk_clients.py)."""
        return min(config.timeout, max(self.deadline.remaining(), 0.0))

    def begin(self, config: TargetConfig, slot: bool) -> Admission:
        """Admit one attempt once the caller has tried for a bulkhead `slot`."""
        if not slot:
            bulkhead = self.router._bulkheads[config.name]
            message = (f"{bulkhead.in_flight} calls in flight (max_concurrency={bulkhead.limit}, "
                       f"queue_timeout={bulkhead.queue_timeout:g} s)")
            self._record(Attempt(config.name, Outcome.NO_CAPACITY.value, detail=message,
                                 waited_s=self._take_wait()))
            raise AttemptFailed(classify(TargetFailure(Outcome.NO_CAPACITY, message)))
        try:
            ticket = self.router._circuits[config.name].admit()
        except CircuitOpen:
            self.router._bulkheads[config.name].release()
            raise
        return Admission(ticket, self.attempt_timeout(config), time.perf_counter())

    def _settle(self, config: TargetConfig) -> None:
        self.router._bulkheads[config.name].release()

    def note(self, config: TargetConfig):
        return lambda text: self.route.notes.append(f"{config.name}: {text}")

    def succeeded(self, config: TargetConfig, admission: Admission) -> None:
        self._settle(config)
        self.router._circuits[config.name].succeeded(admission.ticket)
        self.router._budgets[config.name].succeeded()
        self._record(Attempt(config.name, Outcome.OK.value,
                             latency_s=time.perf_counter() - admission.started, waited_s=self._take_wait()))

    def failed(self, config: TargetConfig, admission: Admission, exc: BaseException) -> AttemptFailed:
        """Classify, settle the circuit, record; the caller raises what this returns.

        Cancellation is re-raised here, untouched: it is the caller's, not the target's.
        """
        self._settle(config)
        latency = time.perf_counter() - admission.started
        failure = classify(exc)
        if failure.outcome is Outcome.SILENT and admission.timeout < config.timeout:
            failure = replace(failure, outcome=Outcome.DEADLINE)  # our deadline, not its silence
        circuit = self.router._circuits[config.name]
        if failure.handling.counts:
            circuit.failed(admission.ticket)
            self.router._budgets[config.name].failed()
        else:
            circuit.released(admission.ticket)
        if failure.retry_after is not None and failure.retry_after > config.retry.max_retry_after:
            circuit.open_for(failure.retry_after)  # out of rotation, for every caller, until then
        self._record(Attempt(config.name, failure.outcome.value, type(exc).__name__, failure.status,
                             latency, self._take_wait(), self.detail(failure.message)))
        if failure.outcome is Outcome.CANCELLED:
            raise exc
        return AttemptFailed(failure)

    def released(self, config: TargetConfig, admission: Admission, detail: str) -> None:
        """The caller abandoned the attempt (closed its stream): neither success nor failure."""
        self._settle(config)
        self.router._circuits[config.name].released(admission.ticket)
        self._record(Attempt(config.name, Outcome.CANCELLED.value,
                             latency_s=time.perf_counter() - admission.started, detail=detail))

    def _take_wait(self) -> float:
        waited, self._waited = self._waited, 0.0
        return waited

    # -- after a target ------------------------------------------------------------------

    def target_failed(self, config: TargetConfig, exc: CircuitOpen | AttemptFailed) -> None:
        """Note why a target gave up; raise when the outcome must not fail over."""
        if isinstance(exc, CircuitOpen):
            self._record(Attempt(config.name, Outcome.CIRCUIT_OPEN.value, detail=str(exc),
                                 waited_s=self._take_wait()))
            self._events.emit("failover", target=config.name, chain=self.chain.name,
                              outcome=Outcome.CIRCUIT_OPEN.value)
            return
        failure = exc.failure
        self.errors[config.name] = failure.error
        if failure.outcome is Outcome.CONTEXT_TOO_LONG and config.context_window:
            self._overflowed = min(self._overflowed or config.context_window, config.context_window)
        if failure.outcome is Outcome.MISCONFIGURED:
            self.router._flag_misconfigured(config, failure, self.detail(failure.message))
        if failure.outcome is Outcome.CONTENT_POLICY and self.chain.on_content_policy == "propagate":
            self.finish("failed")
            raise ContentRejected(config.name, self.detail(failure.message), self.route) from failure.error
        self._events.emit("failover", target=config.name, chain=self.chain.name, outcome=failure.outcome.value)

    def answer(self, config: TargetConfig, response: Response) -> Response:
        self.route.served_by = config.name
        self.route.degraded = config.degraded
        self.finish("ok")
        response.route = self.route
        return response

    def give_up(self) -> Response:
        """The static reply when the chain has one, else `AllTargetsFailed`."""
        if self.chain.static_reply is not None:
            self.route.served_by = "static"
            self.route.degraded = True
            self.finish("static")
            return Response(id="static", model="static", usage=Usage(), route=self.route,
                            choices=[Choice(0, Message("assistant", self.chain.static_reply), "stop")])
        self.finish("failed")
        last = next(reversed(self.errors.values()), None)
        raise AllTargetsFailed(self.chain.name, self.route, self.errors) from last

    def detail(self, message: str) -> str:
        text = self.router._redact(message)
        return text if len(text) <= _DETAIL_LIMIT else text[: _DETAIL_LIMIT - 1] + "…"

    def finish(self, outcome: str) -> None:
        """The call is over: "ok", "static" or "failed"."""
        self.route.latency_s = time.perf_counter() - self._started
        if self._events.active:
            if self.route.degraded and outcome != "failed":
                self._events.emit("degraded", target=self.route.served_by, chain=self.chain.name)
            self._events.emit("call", chain=self.chain.name, outcome=outcome, latency_s=self.route.latency_s,
                              served_by=self.route.served_by if outcome != "failed" else None)

    def _record(self, attempt: Attempt) -> None:
        self.route.attempts.append(attempt)
        if self._events.active:
            self._events.emit("attempt", target=attempt.target, chain=self.chain.name, outcome=attempt.outcome,
                              status=attempt.status, error=attempt.error, latency_s=attempt.latency_s,
                              wait_s=attempt.waited_s or None, detail=attempt.detail)


def walk_sync(walk: Walk) -> Response:
    for config in walk.targets():
        target = walk.router._targets[config.name]
        bulkhead = walk.router._bulkheads[config.name]
        note = walk.note(config)

        def attempt() -> Response:
            admission = walk.begin(config, bulkhead.acquire(walk.attempt_timeout(config)))
            try:
                response = target.complete(walk.request, timeout=admission.timeout, note=note)
            except BaseException as exc:
                raise walk.failed(config, admission, exc) from exc
            walk.succeeded(config, admission)
            return response

        try:
            response = with_retries(walk, config, attempt)
        except (CircuitOpen, AttemptFailed) as exc:
            walk.target_failed(config, exc)
            continue
        return walk.answer(config, response)
    return walk.give_up()


async def walk_async(walk: Walk) -> Response:
    for config in walk.targets():
        target = walk.router._targets[config.name]
        bulkhead = walk.router._bulkheads[config.name]
        note = walk.note(config)

        async def attempt() -> Response:
            admission = walk.begin(config, await bulkhead.acquire_async(walk.attempt_timeout(config)))
            try:
                response = await _acomplete(target, walk.request, admission.timeout, note)
            except BaseException as exc:
                raise walk.failed(config, admission, exc) from exc
            walk.succeeded(config, admission)
            return response

        try:
            response = await with_retries_async(walk, config, attempt)
        except (CircuitOpen, AttemptFailed) as exc:
            walk.target_failed(config, exc)
            continue
        return walk.answer(config, response)
    return walk.give_up()


def with_retries(walk: Walk, config: TargetConfig, attempt: Callable[[], T]) -> T:
    """`attempt()`, then tenacity's loop only if it failed: the first try, which usually
    succeeds, pays nothing for the retry machinery. The loop starts by replaying that
    first failure, so its waits and stops are exactly those of a loop from the start."""
    try:
        return attempt()
    except AttemptFailed as first:
        return walk.retrying(config, tenacity.Retrying, walk.router._sleep)(_replaying(first, attempt))


async def with_retries_async(walk: Walk, config: TargetConfig, attempt: Callable[[], Awaitable[T]]) -> T:
    try:
        return await attempt()
    except AttemptFailed as first:
        replay = _replaying(first, attempt)

        async def again() -> T:
            return await replay()

        return await walk.retrying(config, tenacity.AsyncRetrying, walk.router._async_sleep)(again)


def _replaying(first: AttemptFailed, attempt: Callable[[], Any]) -> Callable[[], Any]:
    pending: list[AttemptFailed] = [first]

    def replay() -> Any:
        if pending:
            raise pending.pop()
        return attempt()

    return replay


async def _acomplete(target: Any, request: Request, timeout: float, note: Any) -> Response:
    """A target's own async call when it has one; else its sync call in a worker thread,
    so the event loop never blocks (the local tier)."""
    acomplete = getattr(target, "acomplete", None)
    if acomplete is not None:
        return await acomplete(request, timeout=timeout, note=note)
    return await asyncio.to_thread(target.complete, request, timeout=timeout, note=note)

