"""One circuit per target, on pybreaker's state machine and storage.

pybreaker's `CircuitBreaker.call()` holds a lock for the whole wrapped call, so calls
through one breaker would run one at a time, and it cannot tell "neither success nor
failure" (its `exclude` counts as a success). So the router never calls through it:
`Circuit.admit()` decides under a short lock whether a call may go, the call runs with
no lock held, and its result is then reported to pybreaker's current state object
(`_handle_success` / `_handle_error`, the same hooks `call()` uses). pybreaker keeps
the states, the counters, the listeners and the storage (memory or Redis).

Two things are added on top:
- half-open admits at most `half_open_max_calls` probes at once; others are refused;
- a result is only counted in the state it was admitted in: a slow call admitted while
  closed cannot close a circuit that opened meanwhile, nor re-open it later.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any

import pybreaker

from .config import BreakerPolicy

CLOSED, OPEN, HALF_OPEN = "closed", "open", "half_open"
_STATE_NAMES = {pybreaker.STATE_CLOSED: CLOSED, pybreaker.STATE_OPEN: OPEN,
                pybreaker.STATE_HALF_OPEN: HALF_OPEN}


class CircuitOpen(Exception):
    """The circuit refused a call; nothing was sent."""

    def __init__(self, target: str, reason: str, retry_in: float | None = None) -> None:
        self.target = target
        self.retry_in = retry_in
        super().__init__(reason)


@dataclass(frozen=True)
class Ticket:
    """Permission for one attempt: which state admitted it."""

    generation: int
    probe: bool


class _AttemptFailed(Exception):
    """Stands in for the real error when reporting to pybreaker, so that pybreaker's
    re-raise on trip can be told apart from anything else."""


class Circuit:
    """The circuit of one target."""

    def __init__(self, target: str, policy: BreakerPolicy,
                 storage: pybreaker.CircuitBreakerStorage | None = None,
                 on_change: Callable[[str, str, str], Any] | None = None) -> None:
        self.target = target
        self.policy = policy
        self._on_change = on_change
        self._storage = storage or pybreaker.CircuitMemoryStorage(pybreaker.STATE_CLOSED)
        self._lock = threading.Lock()
        self._probes = 0
        self._generation = 0
        self._breaker = pybreaker.CircuitBreaker(
            fail_max=policy.fail_max,
            reset_timeout=policy.reset_timeout,
            success_threshold=policy.success_threshold,
            state_storage=self._storage,
            name=target,
            throw_new_error_on_trip=False,
            listeners=[_GenerationCounter(self)],
        )

    # -- the attempt protocol ------------------------------------------------------------

    def admit(self) -> Ticket:
        """Allow one attempt now, or raise `CircuitOpen` without touching the network."""
        with self._lock:
            state = self._breaker.state.name
            if state == pybreaker.STATE_OPEN:
                remaining = self._open_remaining()
                if remaining > 0:
                    raise CircuitOpen(self.target, f"circuit open; next probe in {remaining:.1f} s", remaining)
                self._breaker.half_open()
                state = pybreaker.STATE_HALF_OPEN
            if state == pybreaker.STATE_HALF_OPEN:
                if self._probes >= self.policy.half_open_max_calls:
                    raise CircuitOpen(self.target, f"circuit half-open; {self._probes} probe(s) in flight")
                self._probes += 1
                return Ticket(self._generation, probe=True)
            return Ticket(self._generation, probe=False)

    def succeeded(self, ticket: Ticket) -> None:
        with self._lock:
            if self._settle(ticket):
                self._breaker.state._handle_success()

    def failed(self, ticket: Ticket) -> None:
        with self._lock:
            if self._settle(ticket):
                with contextlib.suppress(_AttemptFailed, pybreaker.CircuitBreakerError):
                    self._breaker.state._handle_error(_AttemptFailed(), reraise=False)

    def released(self, ticket: Ticket) -> None:
        """The attempt ended in an outcome that is neither success nor failure."""
        with self._lock:
            self._settle(ticket)

    # -- controls and status -------------------------------------------------------------

    def force_open(self) -> None:
        with self._lock:
            self._breaker.open()

    def force_close(self) -> None:
        with self._lock:
            self._breaker.close()

    def is_open(self) -> bool:
        """True while the circuit refuses every call (cheap: read before each retry)."""
        return self._storage.state == pybreaker.STATE_OPEN and self._open_remaining() > 0

    @property
    def state(self) -> str:
        with self._lock:
            return self._state_name()

    def status(self) -> dict[str, Any]:
        with self._lock:
            state = self._state_name()
            info: dict[str, Any] = {"state": state, "failures": self._breaker.fail_counter}
            if state == OPEN:
                info["retry_in_s"] = round(max(0.0, self._open_remaining()), 3)
            if state == HALF_OPEN:
                info["probes_in_flight"] = self._probes
            return info

    # -- internals -----------------------------------------------------------------------

    def _state_name(self) -> str:
        name = _STATE_NAMES[self._breaker.state.name]
        if name == OPEN and self._open_remaining() <= 0:
            return HALF_OPEN  # the next admit() will probe
        return name

    def _open_remaining(self) -> float:
        opened_at = self._storage.opened_at
        if opened_at is None:
            return 0.0
        reopen = opened_at + timedelta(seconds=self.policy.reset_timeout)
        return (reopen - datetime.now(timezone.utc)).total_seconds()

    def _settle(self, ticket: Ticket) -> bool:
        """Release the ticket; True when its result still speaks for the current state."""
        current = ticket.generation == self._generation
        if ticket.probe and current:
            self._probes -= 1
        return current

    def _state_changed(self, old: str, new: str) -> None:
        # called by pybreaker with our lock held (every transition happens inside it)
        self._generation += 1
        self._probes = 0
        if self._on_change is not None and old != new:
            self._on_change(self.target, old, new)


class _GenerationCounter(pybreaker.CircuitBreakerListener):
    def __init__(self, circuit: Circuit) -> None:
        self._circuit = circuit

    def state_change(self, cb: Any, old_state: Any, new_state: Any) -> None:
        old = _STATE_NAMES.get(getattr(old_state, "name", ""), str(old_state))
        self._circuit._state_changed(old, _STATE_NAMES[new_state.name])
