"""What a `RedisState` does when Redis stops answering: keep serving from this process.

`RedisLink` knows whether Redis answers, for every circuit, probe slot and budget of one
`RedisState`: the first error or timeout switches all of them to state kept in this
process and logs one warning; from then on, at most once a second, one caller pings
Redis, and when it answers everything is shared again. Redis's state wins then; what
was counted locally meanwhile stays local.

Each `Fallback*` object pairs the Redis implementation with a local one. On a switch,
the local circuit starts from what Redis last said (an open circuit stays open) and the
local budget from Redis's last count. Epochs are tagged with the side that issued them,
so a ticket admitted by Redis is never settled against local state, nor the reverse.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Hashable
from dataclasses import replace
from typing import Any, TypeVar

from ..config.schema import BreakerPolicy, RateLimitPolicy
from ..guards.circuit import CLOSED, OPEN, CircuitStorage, MemoryCircuitStorage, ProbeSlots, Ticket, View
from ..guards.retry_budget import RetryBudget
from ..limits.buckets import Buckets, Cost, MemoryBuckets, Rates
from .redis_store import RedisBuckets, RedisRetryBudget

log = logging.getLogger("router")

T = TypeVar("T")
RESYNC_EVERY_S = 1.0


class RedisLink:
    """Whether Redis is answering, for every circuit, slot and budget of one `RedisState`."""

    def __init__(self, client: Any, shown_url: str, errors: tuple[type[BaseException], ...]) -> None:
        self.up = True
        self.outage = 0  # how many times Redis went away; each fallback object re-seeds once per outage
        self._client = client
        self._shown = shown_url
        self.errors = errors
        self._lock = threading.Lock()
        self._pinging = threading.Lock()
        self._next_ping = 0.0

    def run(self, shared: Callable[[], T], local: Callable[[], T]) -> T:
        """`shared()` while Redis answers, else (and when it fails now) `local()`."""
        if not self.up and not self._resync():
            return local()
        try:
            return shared()
        except self.errors as exc:
            self._lost(exc)
            return local()

    def _lost(self, exc: BaseException) -> None:
        if not self._go_local():
            return
        log.warning("router: redis at %s is not answering (%s: %s); circuit state and retry budgets are kept "
                    "in this process until it answers again", self._shown, type(exc).__name__, exc)

    def absent_at_start(self, exc: BaseException) -> None:
        """Redis did not answer when the process started: begin on local state (fresh, there
        is nothing Redis said yet) and join Redis when it answers, as after an outage."""
        self._go_local()
        log.warning("router: redis at %s is not answering at start (%s: %s); starting with circuit state and "
                    "retry budgets kept in this process, shared once it answers", self._shown,
                    type(exc).__name__, exc)

    def _go_local(self) -> bool:
        """Switch to local state; False when it already was."""
        with self._lock:
            if not self.up:
                return False
            self.up = False
            self.outage += 1
            self._next_ping = time.monotonic() + RESYNC_EVERY_S
        return True

    def _resync(self) -> bool:
        if time.monotonic() < self._next_ping or not self._pinging.acquire(blocking=False):
            return False
        try:
            if self.up:
                return True
            self._next_ping = time.monotonic() + RESYNC_EVERY_S
            try:
                self._client.ping()
            except self.errors:
                return False
            self.up = True
            log.info("router: redis at %s answers again; circuit state and retry budgets are shared again",
                     self._shown)
            return True
        finally:
            self._pinging.release()


SHARED, LOCAL = "redis", "memory"  # which side issued an epoch: tickets never cross sides


class FallbackCircuitStorage(CircuitStorage):
    """A circuit in Redis, or in this process while Redis is away."""

    def __init__(self, shared: CircuitStorage, link: RedisLink) -> None:
        super().__init__("redis-with-fallback")
        self._shared = shared
        self._local = MemoryCircuitStorage()
        self._link = link
        self._last: View | None = None  # what Redis said last
        self._seeded = 0
        self._lock = threading.Lock()

    def view(self, policy: BreakerPolicy) -> View:
        return self._run(lambda: self._shared.view(policy), lambda: self._local.view(policy), policy)

    def record_failure(self, ticket: Ticket, policy: BreakerPolicy) -> View | None:
        return self._settle(ticket, policy, "record_failure")

    def record_success(self, ticket: Ticket, policy: BreakerPolicy) -> View | None:
        return self._settle(ticket, policy, "record_success")

    def try_half_open(self, epoch: Hashable, policy: BreakerPolicy) -> View:
        side, inner = epoch  # type: ignore[misc]
        if side == SHARED:
            return self._run(lambda: self._shared.try_half_open(inner, policy), lambda: self._local.view(policy),
                             policy)
        return self._run_local(lambda: self._local.try_half_open(inner, policy), policy)

    def open_for(self, seconds: float, policy: BreakerPolicy) -> View:
        return self._run(lambda: self._shared.open_for(seconds, policy),
                         lambda: self._local.open_for(seconds, policy), policy)

    def reset(self, policy: BreakerPolicy) -> View:
        return self._run(lambda: self._shared.reset(policy), lambda: self._local.reset(policy), policy)

    def _settle(self, ticket: Ticket, policy: BreakerPolicy, step: str) -> View | None:
        side, inner = ticket.epoch  # type: ignore[misc]
        inner_ticket = replace(ticket, epoch=inner)
        if side == LOCAL:
            return self._tag(LOCAL, getattr(self._local, step)(inner_ticket, policy))
        if not self._link.up:
            return None  # admitted by Redis, which is gone: the result cannot be counted there
        return self._link.run(lambda: self._remember(getattr(self._shared, step)(inner_ticket, policy)),
                              lambda: None)

    def _run(self, shared: Callable[[], View], local: Callable[[], View], policy: BreakerPolicy) -> View:
        return self._link.run(lambda: self._remember(shared()), lambda: self._run_local(local, policy))

    def _run_local(self, local: Callable[[], View], policy: BreakerPolicy) -> View:
        with self._lock:
            if self._seeded != self._link.outage:
                self._seeded = self._link.outage
                last = self._last
                if last is not None and last.state != CLOSED:  # open, or half-open: probe again soon
                    self._local.open_for(max(0.0, last.remaining if last.state == OPEN else 0.0), policy)
                else:
                    self._local.reset(policy)
        return self._tag(LOCAL, local())  # type: ignore[return-value]

    def _remember(self, view: View | None) -> View | None:
        if view is None:
            return None
        self._last = view
        return self._tag(SHARED, view)

    @staticmethod
    def _tag(side: str, view: View | None) -> View | None:
        return None if view is None else replace(view, epoch=(side, view.epoch))

    # pybreaker's storage interface, for anyone who reads it directly
    @property
    def state(self) -> str:
        return self._link.run(lambda: self._shared.state, lambda: self._local.state)

    @property
    def counter(self) -> int:
        return self._link.run(lambda: self._shared.counter, lambda: self._local.counter)

    @property
    def opened_at(self) -> Any:
        return self._link.run(lambda: self._shared.opened_at, lambda: self._local.opened_at)


class FallbackProbeSlots(ProbeSlots):
    """Probe slots in Redis for epochs Redis issued, in this process for local ones."""

    def __init__(self, shared: Any, link: RedisLink) -> None:
        super().__init__()
        self._shared = shared
        self._link = link

    def acquire(self, epoch: Hashable, limit: int) -> bool:
        side, inner = epoch  # type: ignore[misc]
        if side == LOCAL:
            return super().acquire(inner, limit)
        return self._link.run(lambda: self._shared.acquire(inner, limit), lambda: False)

    def release(self, epoch: Hashable) -> None:
        side, inner = epoch  # type: ignore[misc]
        if side == LOCAL:
            super().release(inner)
        elif self._link.up:
            self._link.run(lambda: self._shared.release(inner), lambda: None)  # else the lease expires

    def in_flight(self, epoch: Hashable) -> int:
        side, inner = epoch  # type: ignore[misc]
        if side == LOCAL:
            return super().in_flight(inner)
        return self._link.run(lambda: self._shared.in_flight(inner), lambda: 0)


class FallbackRetryBudget:
    """A budget in Redis, or in this process (starting from Redis's last count) while it is away."""

    def __init__(self, shared: RedisRetryBudget, link: RedisLink) -> None:
        self.policy = shared.policy
        self._shared = shared
        self._local = RetryBudget(shared.policy)
        self._link = link
        self._seeded = 0

    @property
    def tokens(self) -> float:
        return self._shared.tokens if self._link.up else self._local.tokens

    def failed(self) -> None:
        self._link.run(self._shared.failed, lambda: self._locally().failed())

    def succeeded(self) -> None:
        self._link.run(self._shared.succeeded, lambda: self._locally().succeeded())

    def allow_retry(self) -> bool:
        return self._link.run(self._shared.allow_retry, lambda: self._locally().allow_retry())

    def _locally(self) -> RetryBudget:
        if self._seeded != self._link.outage:
            self._seeded = self._link.outage
            self._local.seed(self._shared.tokens)
        return self._local


class FallbackBuckets(Buckets):
    """Buckets in Redis while it answers; this process's share of them while it is away.

    The share is 1 / the number of processes Redis last reported as using this target
    (each take is a heartbeat; PEER_WINDOW_S). A fleet of N that loses Redis together
    then paces at N x 1/N of the limit: the limit, without talking to each other.
    """

    fleet = True

    def __init__(self, shared: RedisBuckets, link: Any, policy: RateLimitPolicy) -> None:
        self.rates = shared.rates
        self._shared = shared
        self._link = link
        self._policy = policy
        self._local: MemoryBuckets | None = None
        self._seeded = -1

    def take(self, cost: Cost) -> float:
        return self._link.run(lambda: self._shared.take(cost), lambda: self._alone().take(cost))

    def give_back(self, cost: Cost) -> None:
        self._link.run(lambda: self._shared.give_back(cost), lambda: self._alone().give_back(cost))

    def adjust_tokens(self, tokens: float) -> None:
        self._link.run(lambda: self._shared.adjust_tokens(tokens), lambda: self._alone().adjust_tokens(tokens))

    def room(self) -> dict[str, float]:
        return self._link.run(self._shared.room, lambda: self._alone().room())

    @property
    def shared(self) -> bool:
        return bool(self._link.up)

    @property
    def peers(self) -> int:
        return self._shared.last_peers

    @property
    def share(self) -> float:
        return 1.0 / self._shared.last_peers

    def _alone(self) -> MemoryBuckets:
        if self._local is None or self._seeded != self._link.outage:
            self._seeded = self._link.outage
            self._local = MemoryBuckets(Rates.of(self._policy, self.share))
        return self._local
