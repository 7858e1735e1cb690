"""`Guard`: everything that stands between the walk and one target.

Each configured target has one, built by the Router: its circuit (breaker.py), its retry
budget (budget.py), its bulkhead (bulkhead.py) and its misconfigured flag; a client-side
rate limiter belongs here too. The walk (walk.py) talks to guards only, through the
attempt protocol below, and never to the Router.

The attempt protocol: take a bulkhead slot (`bulkhead.acquire` / `acquire_async`: the
only step that may wait), `admit` (the circuit's permission), then exactly one of
`succeeded`, `failed` (with the outcome table's `Handling`) or `released` (neither, e.g.
the caller closed its stream). Each of those gives the slot back.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from .breaker import Circuit, CircuitOpen, Ticket
from .budget import Budget
from .bulkhead import Bulkhead
from .outcomes import Failure, Handling
from .schema import TargetConfig
from .state import State

log = logging.getLogger("router")


class Guard:
    """The circuit, retry budget, bulkhead and misconfigured flag of one target."""

    def __init__(self, config: TargetConfig, circuit: Circuit, budget: Budget, bulkhead: Bulkhead) -> None:
        self.config = config
        self.name = config.name
        self.circuit = circuit
        self.budget = budget
        self.bulkhead = bulkhead
        self.misconfigured: str | None = None  # why the target looks misconfigured (401/403/404)

    # -- the attempt protocol --------------------------------------------------------------

    def admit(self) -> Ticket:
        """The circuit's permission, once a bulkhead slot is held; `CircuitOpen` (with the
        slot given back) when it refuses."""
        try:
            return self.circuit.admit()
        except CircuitOpen:
            self.bulkhead.release()
            raise

    def succeeded(self, ticket: Ticket) -> None:
        self.bulkhead.release()
        self.circuit.succeeded(ticket)
        self.budget.succeeded()

    def failed(self, ticket: Ticket, handling: Handling) -> None:
        """Act on the table's verdict: count it (circuit and budget) or not; keep the
        circuit open for a while when the provider asked (a long Retry-After)."""
        self.bulkhead.release()
        if handling.counts:
            self.circuit.failed(ticket)
            self.budget.failed()
        else:
            self.circuit.released(ticket)
        if handling.open_for is not None:
            self.circuit.open_for(handling.open_for)  # out of rotation, for every caller, until then

    def released(self, ticket: Ticket) -> None:
        """Neither success nor failure."""
        self.bulkhead.release()
        self.circuit.released(ticket)

    def retry_refusal(self) -> str | None:
        """Why no retry should go now ("circuit_open", "budget_exhausted"), or None.
        Asked before each retry, never before a first attempt."""
        if self.circuit.is_open():
            return "circuit_open"
        return None if self.budget.allow_retry() else "budget_exhausted"

    # -- flags, status, controls -----------------------------------------------------------

    def flag_misconfigured(self, failure: Failure, detail: str) -> None:
        """Loudly, once per distinct detail: a wrong key, model or URL is an operator's job."""
        if self.misconfigured != detail:
            advice = ("check its api_key, model and api_base" if self.config.is_remote else
                      "check its model_path (`router models pull` fetches the default model)")
            log.error("router: target %r looks misconfigured (%s%s): %s; %s", self.name,
                      type(failure.error).__name__, f" {failure.status}" if failure.status else "", detail, advice)
        self.misconfigured = detail

    def status(self) -> dict[str, Any]:
        info = self.circuit.status()
        info["retry_budget"] = round(self.budget.tokens, 2)
        return info

    def force_open(self) -> None:
        self.circuit.force_open()

    def force_close(self) -> None:
        self.circuit.force_close()
        self.misconfigured = None


def build_guard(config: TargetConfig, state: State,
                on_change: Callable[[str, str, str], Any] | None = None) -> Guard:
    """The guard of one target, its circuit and budget kept where `state` keeps them;
    `on_change(target, old, new)` hears of every circuit change."""
    name = config.name
    circuit = Circuit(name, config.breaker, storage=state.circuit_storage(name), probes=state.probes(name),
                      on_change=on_change)
    return Guard(config, circuit, state.budget(name, config.retry.budget),
                 Bulkhead(config.max_concurrency, config.queue_timeout))
