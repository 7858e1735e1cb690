"""`Guard`: everything that stands between the walk and one target.

Each configured target has one, built by the Router: its circuit (circuit.py), its retry
budget (retry_budget.py), its bulkhead (bulkhead.py), its rate limiter (limits/limiter.py) and its
misconfigured flag. The walk (walk/) talks to guards only, through the attempt
protocol below, and never to the Router.

The attempt protocol: take rate-limit `room` (`room` / `room_async`: may queue up to
max_wait), then a bulkhead slot (`bulkhead.acquire` / `acquire_async`: may wait too),
`admit` (the circuit's permission), then exactly one of `succeeded`, `failed` (with the
outcome table's `Handling`) or `released` (neither, e.g. the caller closed its stream).
Each of those gives the slot back and settles the rate-limit permit; an attempt that
never went out gives its permit back (`give_back`).
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from .. import clock
from ..config.schema import TargetConfig
from ..limits.buckets import Buckets, Cost
from ..limits.limiter import Permit, RateLimiter, Refusal
from ..outcomes import QUOTA, Failure, Handling, Outcome
from .bulkhead import Bulkhead
from .circuit import Circuit, CircuitOpen, Ticket
from .retry_budget import Budget

if TYPE_CHECKING:
    from ..response import Response

log = logging.getLogger("router")


class Guard:
    """The circuit, retry budget, bulkhead, rate limiter and misconfigured flag of one target."""

    def __init__(self, config: TargetConfig, circuit: Circuit, budget: Budget, bulkhead: Bulkhead,
                 limiter: RateLimiter | None = None) -> None:
        self.config = config
        self.name = config.name
        self.circuit = circuit
        self.budget = budget
        self.bulkhead = bulkhead
        self.limiter = limiter if limiter is not None else RateLimiter(config.name, config.rate_limit, Buckets())
        self.misconfigured: str | None = None  # why the target looks misconfigured (401/403/404, quota)
        self.held_until: float | None = None  # skipped without requests until then (an unpaid account)

    # -- the attempt protocol --------------------------------------------------------------

    def room(self, cost: Cost, wait: float) -> Permit | Refusal | None:
        """Rate-limit room for one attempt, queueing (this thread) up to `wait` seconds;
        None when there is none now and the circuit is open (`admit` then says so: a
        truer reason than no room, and no reason to queue)."""
        result = self.limiter.try_acquire(cost)
        if isinstance(result, Permit):
            return result
        if self.circuit.is_open():
            return None
        return self.limiter.acquire(cost, wait) if wait > 0 else result

    async def room_async(self, cost: Cost, wait: float) -> Permit | Refusal | None:
        """`room` for asyncio: the event loop runs on while the task queues."""
        result = self.limiter.try_acquire(cost)
        if isinstance(result, Permit):
            return result
        if self.circuit.is_open():
            return None
        return await self.limiter.acquire_async(cost, wait) if wait > 0 else result

    def admit(self, permit: Permit | None) -> Ticket:
        """The circuit's permission, once a bulkhead slot is held; `CircuitOpen` (with the
        slot and the rate-limit permit given back) when it refuses."""
        try:
            return self.circuit.admit()
        except CircuitOpen:
            self.bulkhead.release()
            self.give_back(permit)
            raise

    def give_back(self, permit: Permit | None) -> None:
        """The attempt the permit was for never went out."""
        if permit is not None:
            self.limiter.cancel(permit)

    def succeeded(self, ticket: Ticket, permit: Permit | None, response: Response | None,
                  tokens: int | None = None) -> None:
        """`tokens`: what a stream used (its usage, or estimated from its text); a plain
        answer's come from its `usage`."""
        self.bulkhead.release()
        self.circuit.succeeded(ticket)
        self.budget.succeeded()
        if permit is not None:
            used = response.usage.total_tokens if response is not None and response.usage is not None else 0
            self.limiter.answered(permit, tokens if tokens is not None else used or None,
                                  response.headers if response is not None else None)

    def failed(self, ticket: Ticket, handling: Handling, failure: Failure, permit: Permit | None) -> None:
        """Act on the table's verdict: count it (circuit and budget) or not; keep the
        circuit open for a while when the provider asked (a long Retry-After); a 429
        pauses the rate limiter until its Retry-After."""
        self.bulkhead.release()
        if permit is not None:
            self.limiter.failed(permit, rate_limited=failure.outcome is Outcome.RATE_LIMITED,
                                retry_after=failure.retry_after)
        if handling.counts:
            self.circuit.failed(ticket)
            self.budget.failed()
        else:
            self.circuit.released(ticket)
        if handling.open_for is not None:
            self.circuit.open_for(handling.open_for)  # out of rotation, for every caller, until then
        if handling.hold_for is not None:
            self.held_until = clock.monotonic() + handling.hold_for

    def held(self) -> str | None:
        """Why the target is skipped without a request (an account that cannot pay), or None."""
        if self.held_until is None or clock.monotonic() >= self.held_until:
            return None
        return (f"{self.misconfigured or QUOTA}; skipped until force_close or a recheck in "
                f"{self.held_until - clock.monotonic():.0f} s")

    def released(self, ticket: Ticket, permit: Permit | None, tokens: int | None = None) -> None:
        """Neither success nor failure (the request went out: its permit stays taken, its
        token estimate corrected to `tokens` when known)."""
        self.bulkhead.release()
        self.circuit.released(ticket)
        if permit is not None:
            self.limiter.answered(permit, tokens, None)

    def retry_refusal(self) -> str | None:
        """Why no retry should go now ("circuit_open", "budget_exhausted"), or None.
        Asked before each retry, never before a first attempt."""
        if self.circuit.is_open():
            return "circuit_open"
        return None if self.budget.allow_retry() else "budget_exhausted"

    # -- flags, status, controls -----------------------------------------------------------

    def flag_misconfigured(self, failure: Failure, detail: str) -> None:
        """Loudly, once per distinct detail: a wrong key, model or URL, an account that
        cannot pay, is an operator's job."""
        if failure.reason:
            detail = f"{failure.reason}: {detail}"
        if self.misconfigured != detail:
            if failure.reason:
                advice = "the account needs a person; no requests go to it until force_close or the recheck"
            elif self.config.is_remote:
                advice = "check its api_key, model and api_base"
            else:
                advice = "check its model_path (`router models pull` fetches the default model)"
            log.error("router: target %r looks misconfigured (%s%s): %s; %s", self.name,
                      type(failure.error).__name__, f" {failure.status}" if failure.status else "", detail, advice)
        self.misconfigured = detail

    def status(self) -> dict[str, Any]:
        info = self.circuit.status()
        info["retry_budget"] = round(self.budget.tokens, 2)
        info["in_flight"] = self.bulkhead.in_flight  # calls to it now, in this process
        info["queued"] = self.bulkhead.queued  # waiting for a bulkhead slot (max_concurrency)
        if self.held() is not None:
            info["recheck_in_s"] = round(self.held_until - clock.monotonic(), 1)  # type: ignore[operator]
        limiter = self.limiter.status()
        if self.config.rate_limit.configured or limiter["waiters"] or len(limiter) > 2:  # configured, or learned
            info["rate_limit"] = limiter
        return info

    def force_open(self) -> None:
        self.circuit.force_open()

    def force_close(self) -> None:
        """Back into rotation now: the circuit closed, the flags and what the provider said
        of its limits (learned limits, a pause after a 429) forgotten."""
        self.circuit.force_close()
        self.limiter.forget()
        self.misconfigured = None
        self.held_until = None
