"""The walk's core: every decision of one call down one chain (what they leave on the route
and in events is record.py's, `CallRecord`, which `Walk` extends). No I/O and no sleep, so
tests drive it without a network (tests/walk/test_decisions.py).

`Walk` is the call: which targets are worth an attempt (the others recorded as skipped),
what each attempt may take (timeout, rate-limit cost and wait), how an attempt ended
(classified by outcomes.py, settled with the target's `Guard`), and how the call ends
(`answer`, the static reply or `AllTargetsFailed`). `Tries` is one target within the call:
admission, and after a failure the outcome table's word: retry (after a wait from
guards/retry.py) or give up.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING

from ..guards.circuit import CircuitOpen
from ..deadline import Deadline
from ..errors import AllTargetsFailed, ContentRejected, ProviderError, provider_error
from ..limits.limiter import Permit, Refusal, estimate_cost
from ..outcomes import Failure, Outcome, TargetFailure, classify, handle
from ..limits.buckets import Cost
from ..request import Request
from ..response import Attempt, text_response
from ..guards.retry import MIN_ATTEMPT_S, Retries
from ..config.schema import ChainConfig, TargetConfig
from .facts import asked_of
from .parts import Admission, Crew, Member, NoCapacity, StreamEnd, Throttled, Verdict, Won
from .record import CallRecord

if TYPE_CHECKING:
    from openai.types import CompletionUsage as Usage

    from ..response import Response

_DETAIL_LIMIT = 500


class Walk(CallRecord):
    """One call down one chain: its route, its deadline, and every decision. No I/O."""

    def __init__(self, chain: ChainConfig, request: Request, deadline: Deadline, crew: Crew) -> None:
        super().__init__(chain.name, request, crew.events)
        self.chain = chain
        self.request = request
        self.deadline = deadline
        self.crew = crew
        self.errors: dict[str, ProviderError] = {}
        self.broken: tuple[str, Verdict] | None = None  # the target whose stream broke, and how
        self.admitted: dict[str, int] = {}  # attempts admitted per target over the whole call
        self._overflowed: int | None = None  # smallest context window found too small
        self._cost: Cost | None = None

    # -- which targets ---------------------------------------------------------------------

    def members(self, names: Sequence[str] | None = None) -> Iterator[Member]:
        """The chain's targets (or those `names`) worth an attempt now; the others are
        recorded as skipped."""
        targets, guards = self.crew.targets, self.crew.guards
        for name in self.chain.targets if names is None else names:
            target = targets.get(name)
            guard = guards[name]
            skip = self.skip(guard.config)
            held = guard.held() if skip is None else None
            if held is not None:
                skip = Outcome.MISCONFIGURED, held
            if skip is None:
                yield Member(guard.config, target, guard)  # type: ignore[arg-type]  # not disabled
            else:
                self.record(Attempt(name, skip[0].value, detail=skip[1]))

    def skip(self, config: TargetConfig) -> tuple[Outcome, str] | None:
        """Why `config` is passed over without a request, or None."""
        if config.disabled:
            return Outcome.DISABLED, config.disabled
        if self.crew.offline and config.is_remote:
            return Outcome.OFFLINE, "offline mode: remote targets are skipped"
        window, overflowed = config.context_window, self._overflowed
        if overflowed is not None and window and window <= overflowed:
            return Outcome.TOO_SMALL, f"context window {window} is not larger than {overflowed}, already too small"
        if self.deadline.remaining() <= 0 and config.cache is None:  # a cache tier answers in no time
            return Outcome.DEADLINE, "the call's deadline had passed"
        return None

    def tries(self, member: Member) -> Tries:
        return Tries(self, member)

    def can_continue(self, name: str) -> bool:
        """Whether target `name` can take a broken stream's text as a prefill and go on."""
        target = self.crew.targets.get(name)
        return target is not None and target.continues_streams

    def stream_broke(self, member: Member, admission: Admission, exc: BaseException) -> Verdict:
        """A stream broke after content: record it against its target, which is retried
        first under its retry policy (`Tries.resumed`); reaching new content gets the
        caller's deadline again, counted from the break."""
        verdict = self.failed(member, admission, exc)
        self.broken = (member.config.name, verdict)
        self.deadline = self.deadline.renewed()
        return verdict

    # -- one attempt -----------------------------------------------------------------------

    def attempt_timeout(self, config: TargetConfig) -> float:
        """The next attempt's timeout: the target's, cut to exactly what the deadline leaves
        (remote targets reuse one HTTP client whatever the timeout: targets/sdk_clients.py)."""
        return self.deadline.cap(config.timeout)

    def cost(self) -> Cost:
        """What one attempt of this call takes from a rate limit: a request, its tokens (estimated)."""
        if self._cost is None:
            self._cost = estimate_cost(self.request)
        return self._cost

    def rate_wait(self, config: TargetConfig) -> float:
        """How long an attempt may queue for rate-limit room: max_wait, within the deadline."""
        return min(config.rate_limit.max_wait, self.deadline.remaining() - MIN_ATTEMPT_S)

    def roomed(self, member: Member, result: Permit | Refusal | None) -> Permit | None:
        """Note a rate-limit queue wait; record a refusal as `throttled` and raise it."""
        name = member.config.name
        if isinstance(result, Refusal):
            self._waited += result.waited_s
            if self._events.active:
                self._events.emit("throttled", target=name, chain=self.chain.name, wait_s=result.waited_s,
                                  detail=result.reason, call_id=self.call_id)
            self.record(Attempt(name, Outcome.THROTTLED.value, detail=result.reason, waited_s=self._take_wait()))
            raise Throttled(classify(TargetFailure(Outcome.THROTTLED, f"rate limit: {result.reason}")))
        if result is not None and result.waited_s:
            self._waited += result.waited_s
            if self._events.active:
                self._events.emit("rate_wait", target=name, chain=self.chain.name, wait_s=result.waited_s,
                                  call_id=self.call_id)
        return result

    def succeeded(self, member: Member, admission: Admission, response: Response | None = None,
                  tokens: int | None = None, ended: StreamEnd | None = None,
                  longest_gap_s: float | None = None) -> None:
        """An attempt answered: `response` for a plain call, `ended` (and the `tokens` it
        spent, for the rate limiter) for a stream; `longest_gap_s`: a stream's longest wait
        for a chunk (for router advise)."""
        member.guard.succeeded(admission.ticket, admission.permit, response, tokens)
        if self.details and self._events.wants("answer"):
            self._tell_answer(member.config.name, response, ended)
        usage = getattr(response, "usage", None)
        self.record(Attempt(member.config.name, Outcome.OK.value,
                            latency_s=time.perf_counter() - admission.started, waited_s=self._take_wait()),
                    timeout_s=admission.timeout, first_token_s=self._take_first_token(),
                    longest_gap_s=longest_gap_s, completion_tokens=getattr(usage, "completion_tokens", None) or None)

    def failed(self, member: Member, admission: Admission, exc: BaseException) -> Verdict:
        """Classify, settle the guard, record. Cancellation is re-raised here, untouched:
        it is the caller's, not the target's."""
        config = member.config
        failure = classify(exc, timeout_cut=admission.timeout < config.timeout)
        handling = handle(failure, config.retry, self.chain)
        member.guard.failed(admission.ticket, handling, failure, admission.permit)
        self.record(Attempt(config.name, failure.outcome.value, type(exc).__name__, failure.status,
                            time.perf_counter() - admission.started, self._take_wait(), self.detail(failure.message)),
                    timeout_s=admission.timeout, first_token_s=self._take_first_token(),
                    retry_after_s=failure.retry_after)
        if failure.outcome is Outcome.CANCELLED:
            raise exc
        return Verdict(failure, handling)

    def no_capacity(self, member: Member) -> NoCapacity:
        """Record that no bulkhead slot came in time; the caller raises what this returns."""
        message = member.guard.bulkhead.describe()
        self.record(Attempt(member.config.name, Outcome.NO_CAPACITY.value, detail=message,
                            waited_s=self._take_wait()))
        return NoCapacity(classify(TargetFailure(Outcome.NO_CAPACITY, message)))

    def released(self, member: Member, admission: Admission, detail: str, tokens: int | None = None) -> None:
        """The caller abandoned the attempt (closed its stream): neither success nor failure."""
        member.guard.released(admission.ticket, admission.permit, tokens)
        self.record(Attempt(member.config.name, Outcome.CANCELLED.value,
                            latency_s=time.perf_counter() - admission.started, detail=detail),
                    timeout_s=admission.timeout, first_token_s=self._take_first_token())

    def streamed_tokens(self, usage: Usage | None, chars: int) -> int:
        """The tokens a stream's attempt used, for its rate limit: the stream's own usage
        when it reported one, else estimated from the `chars` it sent (never from
        max_tokens: a stream with max_tokens=50000 and no usage left a `tpm` bucket ~3000 s
        in debt)."""
        if usage is not None and usage.total_tokens:
            return int(usage.total_tokens)
        return int(estimate_cost(self.request, chars).tokens)

    # -- after a target ------------------------------------------------------------------

    def retrying(self, member: Member, wait: float, failure: Failure) -> None:
        self._waited = wait
        if self._events.active:
            self._events.emit("retry", target=member.config.name, chain=self.chain.name, wait_s=wait,
                              outcome=failure.outcome.value, call_id=self.call_id)

    def circuit_open(self, member: Member, exc: CircuitOpen) -> None:
        name = member.config.name
        self.record(Attempt(name, Outcome.CIRCUIT_OPEN.value, detail=str(exc), waited_s=self._take_wait()))
        self._events.emit("failover", target=name, chain=self.chain.name, outcome=Outcome.CIRCUIT_OPEN.value,
                          call_id=self.call_id)

    def gave_up(self, member: Member, verdict: Verdict) -> None:
        """Note why a target gave up; raise when the outcome must not fail over."""
        config, failure = member.config, verdict.failure
        if failure.outcome is not Outcome.CACHE_MISS:  # a miss must not hide the providers' own errors
            self.errors[config.name] = self.redacted(failure, config.name)
        if failure.outcome is Outcome.CONTEXT_TOO_LONG and config.context_window:
            self._overflowed = min(self._overflowed or config.context_window, config.context_window)
        if failure.outcome is Outcome.MISCONFIGURED:
            member.guard.flag_misconfigured(failure, self.detail(failure.message))
        if not verdict.handling.fail_over:  # content policy (cancellation never gets here)
            self.finish("failed", ContentRejected.__name__)
            raise ContentRejected(config.name, self.detail(failure.message), self.route) from self.errors[config.name]
        self._events.emit("failover", target=config.name, chain=self.chain.name, outcome=failure.outcome.value,
                          call_id=self.call_id)

    def answer(self, won: Won[Response]) -> Response:
        """A plain call's answer: the attempt succeeded, and the call is over."""
        self.succeeded(won.member, won.admission, won.value)
        config, response = won.member.config, won.value
        self.route.served_by = config.name
        self.route.degraded = config.degraded
        self.finish("ok")
        response.route = self.route
        self.answered(config, response)
        return response

    @property
    def keeps_answers(self) -> bool:
        answers = self.crew.answers
        return answers is not None and answers.keeps(self.chain.name, self.request)

    def answered(self, config: TargetConfig, response: Response) -> None:
        """The call is answered: cache tiers of the chain may keep the answer."""
        if self.crew.answers is not None:
            self.crew.answers.answered(self.chain.name, self.request, config, response, self.route)

    def give_up(self) -> Response:
        """The static reply when the chain has one, else `AllTargetsFailed`."""
        if self.chain.static_reply is not None:
            self.route.served_by = "static"
            self.route.degraded = True
            self.finish("static")
            response = text_response(self.chain.static_reply, id="static", model="static")
            response.route = self.route
            return response
        self.finish("failed", AllTargetsFailed.__name__)
        last = next(reversed(self.errors.values()), None)
        raise AllTargetsFailed(self.chain.name, self.route, self.errors) from last

    def redacted(self, failure: Failure, target: str) -> ProviderError:
        """What may leave the router of a failure: never the provider's exception itself."""
        return provider_error(type(failure.error).__name__, self.detail(failure.message), status=failure.status,
                              code=failure.code, outcome=failure.outcome.value, target=target)

    def detail(self, message: str) -> str:
        text = self.crew.redact(message)
        return text if len(text) <= _DETAIL_LIMIT else text[: _DETAIL_LIMIT - 1] + "…"

class Tries:
    """The attempts at one target within one call: admission, and after a failure, retry
    (and how long to wait first) or give up. The retry strategies (guards/retry.py) are built
    on the first failure the table allows to retry, never on the happy path."""

    __slots__ = ("walk", "member", "attempts", "admission", "retries", "permit")

    def __init__(self, walk: Walk, member: Member) -> None:
        self.walk = walk
        self.member = member
        self.attempts = 0
        self.admission: Admission | None = None  # the attempt in flight, not yet settled
        self.retries: Retries | None = None
        self.permit: Permit | None = None  # rate-limit room taken, the attempt not yet admitted

    def rate_wait(self) -> float:
        return self.walk.rate_wait(self.member.config)

    def room(self, result: Permit | Refusal | None) -> None:
        """The rate limiter's answer for the next attempt (`Guard.room`). Raises `Throttled`
        (recorded, nothing sent) when it had no room in time."""
        self.permit = self.walk.roomed(self.member, result)

    def admit(self, slot: bool) -> Admission:
        """Admit one attempt once the caller has its rate-limit room and has tried for a
        bulkhead `slot`; its timeout is fixed here, once. Raises `NoCapacity` or
        `CircuitOpen` (nothing sent, the room given back)."""
        walk, config, guard = self.walk, self.member.config, self.member.guard
        self.attempts += 1
        walk.admitted[config.name] = walk.admitted.get(config.name, 0) + 1
        permit, self.permit = self.permit, None
        if not slot:
            guard.give_back(permit)
            raise walk.no_capacity(self.member)
        ticket = guard.admit(permit)
        self.admission = Admission(ticket, walk.attempt_timeout(config), time.perf_counter(), permit)
        if walk.details and walk.events.wants("attempt_start"):
            walk.events.emit("attempt_start", target=config.name, chain=walk.chain.name, call_id=walk.call_id,
                                  timeout_s=self.admission.timeout, **asked_of(config, walk.request.params))
        return self.admission

    def resumed(self) -> float | None:
        """Seconds to wait before the first attempt: 0, except for the target whose stream
        just broke (`Walk.broken`), whose retry policy goes on from that failure, counting
        every attempt it had in this call (a target that cuts every stream gets
        `retry.attempts` requests per call, not that many per break): its wait, or None
        when it is given up (recorded)."""
        broken = self.walk.broken
        if broken is None or broken[0] != self.member.config.name:
            return 0.0
        self.attempts = self.walk.admitted.get(broken[0], 1)
        return self.next(broken[1])

    def failed(self, exc: BaseException) -> float | None:
        """The attempt raised `exc`: seconds to wait before the next one, or None when the
        target is given up (recorded; raised instead when the call must not fail over)."""
        walk, member = self.walk, self.member
        admission, self.admission = self.admission, None
        if isinstance(exc, CircuitOpen):
            walk.circuit_open(member, exc)
            return None
        if isinstance(exc, NoCapacity):
            verdict = Verdict(exc.failure, handle(exc.failure, member.config.retry, walk.chain))
        elif admission is None:
            self.member.guard.give_back(self.permit)  # the room it had taken goes back
            self.permit = None
            raise exc  # not the target's doing (cancelled while queueing for a slot)
        else:
            verdict = walk.failed(member, admission, exc)
        return self.next(verdict)

    def next(self, verdict: Verdict) -> float | None:
        """After `verdict`: the wait before a retry, or None (the target given up)."""
        walk, member = self.walk, self.member
        wait = self.wait(verdict)
        if wait is None:
            walk.gave_up(member, verdict)
        else:
            walk.retrying(member, wait, verdict.failure)
        return wait

    def wait(self, verdict: Verdict) -> float | None:
        """Seconds before the retry the table allows, or None: no retry (attempts, deadline,
        circuit or retry budget say stop)."""
        if not verdict.handling.retry:
            return None
        if self.retries is None:
            self.retries = Retries(self.member.config.retry, self.walk.deadline, self.refused)
        return self.retries.next_wait(verdict.failure, self.attempts)

    def refused(self) -> bool:
        reason = self.member.guard.retry_refusal()
        if reason == "budget_exhausted" and self.walk.events.active:
            self.walk.events.emit("budget_exhausted", target=self.member.config.name, chain=self.walk.chain.name,
                                       call_id=self.walk.call_id)
        return reason is not None

