"""How long to wait before retrying one target, and when to stop: tenacity's strategies.

Whether an outcome may be retried at all is the outcome table's call (outcomes.handle);
this module only answers "how long to wait, and is there still a point" for a failure
the table allows to retry:

- wait: full jitter (tenacity's `wait_random_exponential`, capped at `max_wait`), except
  after a 429 that says how long to wait: then that, plus a little jitter;
- stop: after `attempts`, as soon as the next wait would not leave time for an attempt
  before the call's deadline, or when the target refuses retries (its circuit has
  opened, its retry budget is spent). The wait is computed before asking stop, as
  tenacity's own loop does, so there is never a sleep after the last attempt, nor one
  that overruns the deadline.

The strategies run over a `tenacity.RetryCallState` that the walk (walk/decisions.py) drives
itself instead of tenacity's `Retrying` loop: the walk's decisions stay free of I/O and
sleep, and a first attempt that succeeds never builds any of this.
"""

from __future__ import annotations

import random
from collections.abc import Callable

import tenacity

from ..deadline import Deadline
from ..outcomes import Failure
from ..config.schema import RetryPolicy

# An attempt that would have less than this left before the deadline is not started.
MIN_ATTEMPT_S = 0.05


class RetryState(tenacity.RetryCallState):
    """tenacity's per-loop state, with the failure the strategies judge."""

    def __init__(self) -> None:
        super().__init__(None, None, (), {})
        self.failure: Failure | None = None


class wait_retry_after(tenacity.wait.wait_base):
    """The provider's Retry-After (plus up to `jitter` of it, so a fleet does not return
    in lockstep) when it sent one; otherwise the `fallback` strategy."""

    def __init__(self, fallback: tenacity.wait.wait_base, jitter: float = 0.1) -> None:
        self.fallback = fallback
        self.jitter = jitter

    def __call__(self, retry_state: tenacity.RetryCallState) -> float:
        failure = retry_state.failure if isinstance(retry_state, RetryState) else None
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


class Retries:
    """The retry decisions for one target within one call."""

    def __init__(self, policy: RetryPolicy, deadline: Deadline, refused: Callable[[], bool]) -> None:
        self.state = RetryState()
        self.wait = wait_retry_after(tenacity.wait_random_exponential(multiplier=policy.min_wait,
                                                                      max=policy.max_wait))
        # evaluated in order, lazily: `refused` (a circuit read, maybe an event) only when needed
        self.stop = tenacity.stop_after_attempt(policy.attempts) | stop_before_deadline(deadline) | stop_when(refused)

    def next_wait(self, failure: Failure, attempts: int) -> float | None:
        """Seconds to wait before the next attempt after `attempts` have been made and the
        last ended in `failure` (which the table allows to retry); None: stop."""
        state = self.state
        state.attempt_number, state.failure = attempts, failure
        state.upcoming_sleep = self.wait(state)
        return None if self.stop(state) else state.upcoming_sleep
