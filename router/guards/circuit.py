"""One circuit per target, on pybreaker's state machine and storage.

pybreaker's `CircuitBreaker.call()` holds a lock for the whole wrapped call, so calls
through one breaker would run one at a time, and it cannot tell "neither success nor
failure" (its `exclude` counts as a success). So the router never calls through it:
`Circuit.admit()` decides whether a call may go, the call runs with no lock held, and
its result is then reported to the circuit's storage.

Each change of a circuit is one step of its `CircuitStorage` (a pybreaker storage that
can also take a whole transition at once): "count a failure, and open if that makes
fail_max", "count a probe's success, and close if that makes success_threshold", ...
Why steps and not pybreaker's own sequence of storage writes: with state shared between
processes (Redis, state/) that sequence (increment; read the counter; set opened_at;
set the state) interleaves with other processes' sequences, so two processes could both
trip, or neither. `MemoryCircuitStorage` takes each step by running pybreaker's own state
objects under a lock; the Redis storage takes the same steps as Lua scripts, atomically,
and the tests run the same cycle against both.

Three things are added on top of pybreaker:
- half-open admits at most `half_open_max_calls` probes at once (`ProbeSlots`, shared by
  every process when the state is); others are refused;
- a closed circuit that has counted failures admits no more attempts than could trip it:
  failures + attempts in flight (in this process) stay below `fail_max`. Otherwise every
  caller already past the check when an outage starts keeps sending: 8 threads sent a
  dead provider 9-12 requests with fail_max 5; with this, 8. A healthy target (no
  failures counted) is never limited; one failure limits it until a success resets it;
- every state change starts a new `epoch`, and a result is only counted in the epoch it
  was admitted in: a slow call admitted while closed cannot close a circuit that opened
  meanwhile, nor re-open it later.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Hashable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import pybreaker

from .. import clock
from ..config.schema import BreakerPolicy

CLOSED, OPEN, HALF_OPEN = "closed", "open", "half_open"
STATE_NAMES = {pybreaker.STATE_CLOSED: CLOSED, pybreaker.STATE_OPEN: OPEN,
               pybreaker.STATE_HALF_OPEN: HALF_OPEN}


class CircuitOpen(Exception):
    """The circuit refused a call; nothing was sent."""

    def __init__(self, target: str, reason: str, retry_in: float | None = None) -> None:
        self.target = target
        self.retry_in = retry_in
        super().__init__(reason)


@dataclass(frozen=True)
class View:
    """A circuit as its storage holds it now (one read)."""

    state: str  # CLOSED, OPEN or HALF_OPEN, as stored (an open circuit whose time is up is still OPEN)
    failures: int
    remaining: float  # OPEN: seconds until a probe may go; 0 otherwise
    epoch: Hashable  # changes with every state change


@dataclass(frozen=True)
class Ticket:
    """Permission for one attempt: the epoch that admitted it, and what it saw."""

    epoch: Hashable
    probe: bool
    failures: int = 0  # failures counted when it was admitted (0: its success changes nothing)


class CircuitStorage(pybreaker.CircuitBreakerStorage):
    """A pybreaker storage that can also take each transition of a `Circuit` as one step.

    A step given a ticket (or an epoch) does nothing when the circuit has changed since
    it was issued: that result is stale. Each step returns the circuit as it is
    afterwards, or None when it knows nothing changed.
    """

    def view(self, policy: BreakerPolicy) -> View:
        raise NotImplementedError

    def record_failure(self, ticket: Ticket, policy: BreakerPolicy) -> View | None:
        raise NotImplementedError

    def record_success(self, ticket: Ticket, policy: BreakerPolicy) -> View | None:
        raise NotImplementedError

    def try_half_open(self, epoch: Hashable, policy: BreakerPolicy) -> View:
        """Open -> half-open, once the reset timeout has passed and nobody did it first."""
        raise NotImplementedError

    def open_for(self, seconds: float, policy: BreakerPolicy) -> View:
        """Open so that the first probe may go in `seconds` (never shortens a longer opening)."""
        raise NotImplementedError

    def reset(self, policy: BreakerPolicy) -> View:
        """Closed, counters cleared."""
        raise NotImplementedError


class _AttemptFailed(Exception):
    """Stands in for the real error when reporting to pybreaker, so that pybreaker's
    re-raise on trip can be told apart from anything else."""


class MemoryCircuitStorage(pybreaker.CircuitMemoryStorage, CircuitStorage):
    """The circuit in this process: each step is pybreaker's own state objects at work
    (`_handle_error`, `_handle_success`, `open`, `half_open`, `close`) under one lock."""

    def __init__(self) -> None:
        super().__init__(pybreaker.STATE_CLOSED)
        self._lock = threading.RLock()
        self._epoch = 0
        self._breaker = pybreaker.CircuitBreaker(state_storage=self, throw_new_error_on_trip=False,
                                                 listeners=[_EpochCounter(self._new_epoch)])

    def view(self, policy: BreakerPolicy) -> View:
        with self._lock:
            return self._view(policy)

    def record_failure(self, ticket: Ticket, policy: BreakerPolicy) -> View:
        with self._lock:
            if ticket.epoch == self._epoch:
                self._apply(policy)
                with contextlib.suppress(_AttemptFailed, pybreaker.CircuitBreakerError):
                    self._breaker.state._handle_error(_AttemptFailed(), reraise=False)
            return self._view(policy)

    def record_success(self, ticket: Ticket, policy: BreakerPolicy) -> View:
        with self._lock:
            if ticket.epoch == self._epoch:
                self._apply(policy)
                self._breaker.state._handle_success()
            return self._view(policy)

    def try_half_open(self, epoch: Hashable, policy: BreakerPolicy) -> View:
        with self._lock:
            view = self._view(policy)
            if view.epoch == epoch and view.state == OPEN and view.remaining <= 0:
                self._breaker.half_open()
                view = self._view(policy)
            return view

    def open_for(self, seconds: float, policy: BreakerPolicy) -> View:
        with self._lock:
            view = self._view(policy)
            if view.state == OPEN and view.remaining >= seconds:
                return view
            self._breaker.open()
            self.opened_at = clock.utcnow() + timedelta(seconds=seconds - policy.reset_timeout)
            return self._view(policy)

    def reset(self, policy: BreakerPolicy) -> View:
        with self._lock:
            self._breaker.close()
            return self._view(policy)

    def _new_epoch(self, state: str) -> None:
        """Called by pybreaker inside one of our locked steps, on every state change."""
        self._epoch += 1
        if state == pybreaker.STATE_OPEN:
            self.opened_at = clock.utcnow()  # pybreaker stamped datetime.now: use our (replaceable) clock

    def _apply(self, policy: BreakerPolicy) -> None:
        self._breaker.fail_max = policy.fail_max
        self._breaker.success_threshold = policy.success_threshold

    def _view(self, policy: BreakerPolicy) -> View:
        state = STATE_NAMES[self._breaker.state.name]
        remaining = 0.0
        if state == OPEN and self.opened_at is not None:
            reopen = self.opened_at + timedelta(seconds=policy.reset_timeout)
            remaining = (reopen - clock.utcnow()).total_seconds()
        return View(state, self.counter, remaining, self._epoch)


class _EpochCounter(pybreaker.CircuitBreakerListener):
    def __init__(self, new_epoch: Callable[[str], None]) -> None:
        self._new_epoch = new_epoch

    def state_change(self, cb: Any, old_state: Any, new_state: Any) -> None:
        self._new_epoch(new_state.name)


class ProbeSlots:
    """Half-open probes in flight, per epoch (a new epoch starts with none), in this process."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._epoch: Hashable = None
        self._taken = 0

    def acquire(self, epoch: Hashable, limit: int) -> bool:
        with self._lock:
            if epoch != self._epoch:
                self._epoch, self._taken = epoch, 0
            if self._taken >= limit:
                return False
            self._taken += 1
            return True

    def release(self, epoch: Hashable) -> None:
        with self._lock:
            if epoch == self._epoch and self._taken > 0:
                self._taken -= 1

    def in_flight(self, epoch: Hashable) -> int:
        with self._lock:
            return self._taken if epoch == self._epoch else 0


class Circuit:
    """The circuit of one target, on a storage (this process's memory by default, or one
    shared through Redis) and probe slots (likewise)."""

    def __init__(self, target: str, policy: BreakerPolicy, storage: CircuitStorage | None = None,
                 probes: ProbeSlots | None = None, on_change: Callable[[str, str, str], Any] | None = None) -> None:
        self.target = target
        self.policy = policy
        self._storage = storage if storage is not None else MemoryCircuitStorage()
        self._probes = probes if probes is not None else ProbeSlots()
        self._on_change = on_change
        self._seen = CLOSED  # the state this process last saw, to tell listeners of changes
        self._lock = threading.Lock()  # admit and settle are whole steps within this process
        self._closed_epoch: Hashable = None
        self._closed_in_flight = 0  # attempts admitted while closed in that epoch, not yet settled

    # -- the attempt protocol ------------------------------------------------------------

    def admit(self) -> Ticket:
        """Allow one attempt now, or raise `CircuitOpen` without touching the network."""
        with self._lock:
            view = self._observe(self._storage.view(self.policy))
            for _ in range(2):  # twice: the first answer may come from the other side of a Redis fallback
                if view.state != OPEN or view.remaining > 0:
                    break
                view = self._observe(self._storage.try_half_open(view.epoch, self.policy))
            if view.state == OPEN:  # also: re-opened by another process meanwhile
                raise CircuitOpen(self.target, f"circuit open; next probe in {max(view.remaining, 0.0):.1f} s",
                                  max(view.remaining, 0.0))
            if view.state == HALF_OPEN:
                if not self._probes.acquire(view.epoch, self.policy.half_open_max_calls):
                    raise CircuitOpen(self.target, f"circuit half-open; {self.policy.half_open_max_calls} "
                                                   f"probe(s) in flight")
                return Ticket(view.epoch, probe=True, failures=view.failures)
            if view.epoch != self._closed_epoch:
                self._closed_epoch, self._closed_in_flight = view.epoch, 0
            if view.failures and view.failures + self._closed_in_flight >= self.policy.fail_max:
                raise CircuitOpen(self.target, f"circuit closed but failing: {view.failures} failure(s) and "
                                               f"{self._closed_in_flight} attempt(s) in flight could trip it")
            self._closed_in_flight += 1
            return Ticket(view.epoch, probe=False, failures=view.failures)

    def succeeded(self, ticket: Ticket) -> None:
        with self._lock:
            self._observe(self._storage.record_success(ticket, self.policy))
            self._release(ticket)

    def failed(self, ticket: Ticket) -> None:
        with self._lock:
            self._observe(self._storage.record_failure(ticket, self.policy))
            self._release(ticket)

    def released(self, ticket: Ticket) -> None:
        """The attempt ended in an outcome that is neither success nor failure."""
        with self._lock:
            self._release(ticket)

    # -- controls and status -------------------------------------------------------------

    def open_for(self, seconds: float) -> None:
        """Keep the target out of rotation for `seconds` (a 429 whose Retry-After is longer
        than max_retry_after): open, with the first probe due in `seconds` rather than
        after reset_timeout. Through the storage, so every process sharing it skips it too."""
        with self._lock:
            self._observe(self._storage.open_for(max(0.0, seconds), self.policy))

    def force_open(self) -> None:
        """Open until the reset timeout passes, for every process sharing the storage."""
        self.open_for(self.policy.reset_timeout)

    def force_close(self) -> None:
        with self._lock:
            self._observe(self._storage.reset(self.policy))

    def is_open(self) -> bool:
        """True while the circuit refuses every call (one storage read: before each retry)."""
        view = self._storage.view(self.policy)
        return view.state == OPEN and view.remaining > 0

    @property
    def state(self) -> str:
        return self._shown(self._storage.view(self.policy))

    def status(self) -> dict[str, Any]:
        view = self._storage.view(self.policy)
        state = self._shown(view)
        info: dict[str, Any] = {"state": state, "failures": view.failures}
        if state == OPEN:
            info["retry_in_s"] = round(max(0.0, view.remaining), 3)
        if state == HALF_OPEN:
            info["probes_in_flight"] = self._probes.in_flight(view.epoch)
        return info

    # -- internals -----------------------------------------------------------------------

    @staticmethod
    def _shown(view: View) -> str:
        if view.state == OPEN and view.remaining <= 0:
            return HALF_OPEN  # the next admit() will probe
        return view.state

    def _release(self, ticket: Ticket) -> None:
        if ticket.probe:
            self._probes.release(ticket.epoch)
        elif ticket.epoch == self._closed_epoch and self._closed_in_flight > 0:
            self._closed_in_flight -= 1

    def _observe(self, view: View | None) -> View:
        """Tell `on_change` when the state differs from what this process saw last, whether
        this process changed it or another one did."""
        if view is not None and view.state != self._seen:
            old, self._seen = self._seen, view.state
            if self._on_change is not None:
                self._on_change(self.target, old, view.state)
        return view  # type: ignore[return-value]
