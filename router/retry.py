"""How one target is retried, as tenacity strategies.

- wait: full jitter (tenacity's `wait_random_exponential`, capped at `max_wait`), except
  after a 429 that says how long to wait: then that, plus a little jitter;
- retry: only outcomes the table allows, a timeout only with `retry_on_timeout`, a 429
  only when its Retry-After is at most `max_retry_after`;
- stop: after `attempts`, as soon as the next wait would not leave time for an
  attempt before the call's deadline, or once the target's circuit has opened. tenacity computes the wait before asking stop,
  so there is never a sleep after the last attempt, nor one that overruns the deadline.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import Any

import tenacity

from . import clock
from .schema import RetryPolicy
from .outcomes import Failure, Outcome

# An attempt that would have less than this left before the deadline is not started.
MIN_ATTEMPT_S = 0.05


class Deadline:
    """One time budget for a whole call: every wait and every attempt's timeout fit in it."""

    __slots__ = ("end",)

    def __init__(self, seconds: float) -> None:
        self.end = clock.monotonic() + seconds

    def remaining(self) -> float:
        return self.end - clock.monotonic()


class AttemptFailed(Exception):
    """Carries a classified failure out of one attempt, through tenacity, to the chain walk."""

    def __init__(self, failure: Failure) -> None:
        self.failure = failure
        super().__init__(failure.message)


def worth_retrying(failure: Failure, policy: RetryPolicy) -> bool:
    if failure.outcome is Outcome.SILENT:
        return policy.retry_on_timeout
    if failure.outcome is Outcome.RATE_LIMITED:
        return failure.retry_after is not None and failure.retry_after <= policy.max_retry_after
    return failure.handling.retry


def _failure(retry_state: tenacity.RetryCallState) -> Failure | None:
    outcome = retry_state.outcome
    exc = outcome.exception() if outcome is not None and outcome.failed else None
    return exc.failure if isinstance(exc, AttemptFailed) else None


class retry_if_worth_it(tenacity.retry_base):
    def __init__(self, policy: RetryPolicy) -> None:
        self.policy = policy

    def __call__(self, retry_state: tenacity.RetryCallState) -> bool:
        failure = _failure(retry_state)
        return failure is not None and worth_retrying(failure, self.policy)


class wait_retry_after(tenacity.wait.wait_base):
    """The provider's Retry-After (plus up to `jitter` of it, so a fleet does not return
    in lockstep) when it sent one; otherwise the `fallback` strategy."""

    def __init__(self, fallback: tenacity.wait.wait_base, jitter: float = 0.1) -> None:
        self.fallback = fallback
        self.jitter = jitter

    def __call__(self, retry_state: tenacity.RetryCallState) -> float:
        failure = _failure(retry_state)
        if failure is not None and failure.retry_after is not None:
            return failure.retry_after * (1 + random.uniform(0, self.jitter))
        return self.fallback(retry_state)


class stop_before_deadline(tenacity.stop.stop_base):
    def __init__(self, deadline: Deadline) -> None:
        self.deadline = deadline

    def __call__(self, retry_state: tenacity.RetryCallState) -> bool:
        return retry_state.upcoming_sleep + MIN_ATTEMPT_S > self.deadline.remaining()


class stop_when(tenacity.stop.stop_base):
    """Stop as soon as `condition()` holds (the target's circuit has opened: do not wait
    for a retry that the circuit would refuse anyway)."""

    def __init__(self, condition: Callable[[], bool]) -> None:
        self.condition = condition

    def __call__(self, retry_state: tenacity.RetryCallState) -> bool:
        return self.condition()


def retrying(policy: RetryPolicy, deadline: Deadline, *, refused: Callable[[], bool], sleep: Callable[[float], Any],
             before_sleep: Callable[[tenacity.RetryCallState], Any],
             cls: type[tenacity.BaseRetrying] = tenacity.Retrying) -> Any:
    """A tenacity loop (`Retrying`, or `AsyncRetrying` with an async `sleep`) for one target
    within one call."""
    return cls(
        retry=retry_if_worth_it(policy),
        wait=wait_retry_after(tenacity.wait_random_exponential(multiplier=policy.min_wait, max=policy.max_wait)),
        stop=tenacity.stop_after_attempt(policy.attempts) | stop_before_deadline(deadline) | stop_when(refused),
        sleep=sleep,
        before_sleep=before_sleep,
        reraise=True,
    )
