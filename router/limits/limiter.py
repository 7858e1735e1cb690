"""Load leveling for one target: pace requests to its quota, queue callers fairly for
room that comes soon, fail over when it does not, and learn the limits the provider reports.

Before each attempt a caller asks its target's `RateLimiter` for a `Permit`: one request
and an estimate of its tokens (prompt + max_tokens), taken from the configured buckets
(buckets.py: this process, or Redis for the fleet) and from what the provider last
said remains. When there is no room now, the caller queues, first come first served, for
at most `max_wait` (and never past its call's deadline); when the room is further away
than that, it fails over at once (`throttled`: nothing sent, nothing counted). A waiter
that gives up (deadline, cancellation) leaves the queue and takes nothing with it. After
the answer, the permit is settled: the token estimate is corrected from `usage`, the
provider's rate-limit headers become the learned limits, and a 429 pauses the target
until its Retry-After (or reset).

Learned limits (learned.py) work with no `rate_limit` configured.

Why not the `limits` library: its strategies answer "is there room now?" (hit/test) and
nothing more. Waiting for room then means polling, which serves whoever polls at the
right moment, not whoever came first; it cannot give back what a cancelled waiter or an
unsent attempt took, nor correct a token estimate afterwards; and its Redis moving window
keeps one list entry per unit, 200 000 entries a minute for `tpm: 200000`. A GCRA bucket
is one number per limit, says how long until room, and takes one small Lua script.
"""

from __future__ import annotations

import asyncio
import math
import threading
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from .. import clock
from .learned import LearnedLimits
from .buckets import Buckets, Cost
from .provider_headers import provider_limits
from ..request import Request, estimated_tokens
from ..config.schema import RateLimitPolicy

PAUSE_WITHOUT_RETRY_AFTER_S = 1.0  # a 429 that says nothing about when: pause this long


@dataclass
class Permit:
    """Room taken for one attempt, to be settled when it ends (or given back if unsent)."""

    cost: Cost
    seq: int  # grant order in this process
    sent: tuple[float, float]  # requests and tokens granted by this process, this one included
    waited_s: float
    settled: bool = False


@dataclass(frozen=True)
class Refusal:
    """No room within the caller's wait: the target is skipped as `throttled`."""

    wait_s: float  # how long until there would be room (inf: not known)
    waited_s: float  # how long the caller queued before giving up
    reason: str


# -- the queue -------------------------------------------------------------------------------


class _Waiter:
    def __init__(self, cost: Cost, started: float, budget: float) -> None:
        self.cost = cost
        self.started = started
        self.budget = max(0.0, budget)
        self.queued = False
        self.slept = False  # waited at least once: a queue wait worth reporting

    def wake(self) -> None:
        raise NotImplementedError


class _ThreadWaiter(_Waiter):
    def __init__(self, cost: Cost, started: float, budget: float) -> None:
        super().__init__(cost, started, budget)
        self._event = threading.Event()

    def wake(self) -> None:
        self._event.set()

    def sleep(self, seconds: float) -> None:
        clock.wait(self._event, None if math.isinf(seconds) else max(0.0, seconds))
        self._event.clear()


class _TaskWaiter(_Waiter):
    def __init__(self, cost: Cost, started: float, budget: float) -> None:
        super().__init__(cost, started, budget)
        self._loop = asyncio.get_running_loop()
        self._event = asyncio.Event()

    def wake(self) -> None:
        try:
            self._loop.call_soon_threadsafe(self._event.set)
        except RuntimeError:  # its loop is closed: nobody is waiting any more
            pass

    async def sleep(self, seconds: float) -> None:
        await clock.async_wait(self._event, None if math.isinf(seconds) else max(0.0, seconds))
        self._event.clear()


class RateLimiter:
    """The limiter of one target: its buckets, its learned limits, and its FIFO queue.

    `acquire` (threads) and `acquire_async` (asyncio) share one queue and one decision
    step (`_step`); they differ only in how they sleep. The head of the queue waits for
    room; the others wait to become the head; a caller whose turn would come later than
    its budget gives up at once.
    """

    def __init__(self, target: str, policy: RateLimitPolicy, buckets: Buckets,
                 now: Callable[[], float] = clock.monotonic) -> None:
        self.target = target
        self.policy = policy
        self.buckets = buckets
        self.learned = LearnedLimits()
        self._clock = now
        self._lock = threading.Lock()
        self._queue: deque[_Waiter] = deque()
        self._head_ready = 0.0  # when the head expects room
        self._seq = 0
        self._learned_seq = 0
        self._sent = [0.0, 0.0]  # requests, tokens granted by this process
        self._in_flight = [0.0, 0.0]  # requests, tokens granted and not yet settled

    # -- taking room ------------------------------------------------------------------

    def try_acquire(self, cost: Cost) -> Permit | Refusal:
        """Room for `cost` now, or a refusal at once (never waits, never queues). The happy
        path (nobody queued, room now) builds no waiter: ~5 us a permit, settled, here."""
        with self._lock:
            if not self._queue:
                now = self._clock()
                if self.learned.wait(cost, now) <= 0 and self.buckets.take(cost) <= 0:
                    return self._permit(cost, now, 0.0)
        return self.acquire(cost, 0.0)  # no room: the queue's own step says why

    def acquire(self, cost: Cost, budget: float) -> Permit | Refusal:
        """Room for `cost`, waiting (in a thread) at most `budget` seconds."""
        waiter = _ThreadWaiter(cost, self._clock(), budget)
        try:
            while True:
                with self._lock:
                    step = self._step(waiter, self._clock())
                if not isinstance(step, float):
                    return step
                waiter.slept = True
                waiter.sleep(step)
        finally:
            self._leave(waiter)

    async def acquire_async(self, cost: Cost, budget: float) -> Permit | Refusal:
        """`acquire` for asyncio: the event loop runs on while the task queues."""
        waiter = _TaskWaiter(cost, self._clock(), budget)
        try:
            while True:
                with self._lock:
                    step = self._step(waiter, self._clock())
                if not isinstance(step, float):
                    return step
                waiter.slept = True
                await waiter.sleep(step)
        finally:
            self._leave(waiter)

    def _step(self, waiter: _Waiter, now: float) -> Permit | Refusal | float:
        """One look at the queue: a permit, a refusal, or how long to sleep (lock held)."""
        give_up = waiter.started + waiter.budget
        if not waiter.queued:
            if self._queue:
                wait = self._back_of_queue_wait(now)
                if now + wait > give_up:
                    return self._refuse(waiter, now, wait)
            self._queue.append(waiter)
            waiter.queued = True
        if self._queue[0] is not waiter:
            if now >= give_up:
                return self._refuse(waiter, now, self._back_of_queue_wait(now))
            return give_up - now  # until it is our turn (woken) or we give up
        wait = self.learned.wait(waiter.cost, now)
        if wait <= 0:
            wait = self.buckets.take(waiter.cost)
        if wait <= 0:
            return self._grant(waiter, now)
        self._head_ready = now + wait
        if now + wait > give_up:
            return self._refuse(waiter, now, wait)
        return float(wait)

    def _back_of_queue_wait(self, now: float) -> float:
        """How long a newcomer would queue: until the head's room, then one slot per waiter."""
        ahead = len(self._queue)
        wait = max(0.0, self._head_ready - now)
        rates = self.buckets.rates
        if rates.requests is not None:
            return wait + ahead / rates.requests[0]
        return wait if ahead else 0.0

    def _grant(self, waiter: _Waiter, now: float) -> Permit:
        self._dequeue(waiter)
        return self._permit(waiter.cost, now, now - waiter.started if waiter.slept else 0.0)

    def _permit(self, cost: Cost, now: float, waited: float) -> Permit:
        """Room taken from the buckets becomes a permit (lock held)."""
        self._seq += 1
        self._sent[0] += cost.requests
        self._sent[1] += cost.tokens
        self._in_flight[0] += cost.requests
        self._in_flight[1] += cost.tokens
        self.learned.take(cost, now)
        return Permit(cost, self._seq, (self._sent[0], self._sent[1]), waited)

    def _refuse(self, waiter: _Waiter, now: float, wait: float) -> Refusal:
        self._dequeue(waiter)
        paused = self.learned.paused_until - now
        if paused > 0 and paused >= wait - 1e-6:
            reason = f"paused for {paused:.2f} s more after the provider's 429"
        elif math.isinf(wait):
            reason = "no room"
        else:
            reason = f"no room for {wait:.2f} s"
        bound = "max_wait" if waiter.budget >= self.policy.max_wait else "what the call's deadline leaves"
        return Refusal(wait, now - waiter.started, f"{reason}; a call may wait {waiter.budget:.2f} s ({bound})")

    def _dequeue(self, waiter: _Waiter) -> None:
        if not waiter.queued:
            return
        waiter.queued = False
        was_head = bool(self._queue) and self._queue[0] is waiter
        self._queue.remove(waiter)
        if was_head:
            self._head_ready = 0.0
            self._wake_head()

    def _leave(self, waiter: _Waiter) -> None:
        """A waiter leaving for any reason (cancelled, interrupted): no trace in the queue."""
        if waiter.queued:
            with self._lock:
                self._dequeue(waiter)

    def _wake_head(self) -> None:
        if self._queue:
            self._queue[0].wake()

    # -- settling ----------------------------------------------------------------------

    def answered(self, permit: Permit, tokens_used: int | None, headers: Mapping[str, Any] | None) -> None:
        """The attempt got an answer: correct the token estimate, learn the provider's limits."""
        if not self._settle(permit):
            return
        if tokens_used is not None and permit.cost.tokens != tokens_used:
            self.buckets.adjust_tokens(tokens_used - permit.cost.tokens)
        self.learn(permit, headers)

    def failed(self, permit: Permit, *, rate_limited: bool, retry_after: float | None,
               headers: Mapping[str, Any] | None = None) -> None:
        """The attempt failed after its request went out: the request counts, its token
        estimate does not (no answer, no tokens); a 429 pauses the target."""
        if not self._settle(permit):
            return
        if permit.cost.tokens:
            self.buckets.adjust_tokens(-permit.cost.tokens)
        self.learn(permit, headers)
        if rate_limited:
            with self._lock:
                self.learned.pause(retry_after if retry_after is not None else PAUSE_WITHOUT_RETRY_AFTER_S,
                                   self._clock())
                self._head_ready = self.learned.paused_until

    def cancel(self, permit: Permit) -> None:
        """The attempt never went out: give back everything the permit took."""
        if not self._settle(permit):
            return
        self.buckets.give_back(permit.cost)
        with self._lock:
            self._sent[0] -= permit.cost.requests
            self._sent[1] -= permit.cost.tokens
            for limit, amount in ((self.learned.requests, permit.cost.requests),
                                  (self.learned.tokens, permit.cost.tokens)):
                if limit.level is not None:
                    limit.level += amount
            self._wake_head()

    def _settle(self, permit: Permit) -> bool:
        """Mark `permit` settled (no longer in flight); False if it already was."""
        with self._lock:
            if permit.settled:
                return False
            permit.settled = True
            self._in_flight[0] -= permit.cost.requests
            self._in_flight[1] -= permit.cost.tokens
            return True

    def learn(self, permit: Permit, headers: Mapping[str, Any] | None) -> None:
        """Take in the rate-limit headers of the answer to `permit` (settled), unless newer
        ones came first. What the provider may not have counted yet comes off what it says
        remains: the other requests in flight (sent before this one, they may still be on
        their way) or those sent after it, whichever is more."""
        limits = provider_limits(headers)
        if not limits:
            return
        with self._lock:
            if permit.seq <= self._learned_seq:
                return  # an older answer arriving late says less than the one already read
            self._learned_seq = permit.seq
            uncounted = Cost(max(self._in_flight[0], self._sent[0] - permit.sent[0]),
                             max(self._in_flight[1], self._sent[1] - permit.sent[1]))
            self.learned.learn(limits, uncounted, self._clock())
            self._wake_head()

    def forget(self) -> None:
        """Drop what the provider said (limits, a pause): the operator's `force_close`."""
        with self._lock:
            self.learned = LearnedLimits()
            self._head_ready = 0.0
            self._wake_head()

    # -- reporting ---------------------------------------------------------------------

    def status(self) -> dict[str, Any]:
        """Room now, callers queued, how long until the next request fits (`wait_s`), the
        configured and learned limits, a pause."""
        now = self._clock()
        info: dict[str, Any] = {"waiters": len(self._queue)}
        if self.policy.rpm is not None:
            info["rpm"] = self.policy.rpm
        if self.policy.tpm is not None:
            info["tpm"] = self.policy.tpm
        room = self.buckets.room()
        if room:
            info["room"] = room
        wait = max(self.learned.wait(Cost(1.0, 0.0), now), self._head_ready - now if self._queue else 0.0)
        rates = self.buckets.rates.requests
        if rates is not None and room.get("requests", 1.0) < 1.0:
            wait = max(wait, (1.0 - room["requests"]) / rates[0])
        info["wait_s"] = round(wait, 3)
        learned = {name: d for name, d in (("requests", self.learned.requests.describe(now)),
                                           ("tokens", self.learned.tokens.describe(now))) if d}
        if learned:
            info["learned"] = learned
        paused = self.learned.paused_until - now
        if paused > 0:
            info["paused_s"] = round(paused, 3)
        if self.buckets.fleet:
            info["shared"] = self.buckets.shared
            info["peers"] = self.buckets.peers
        return info


def estimate_cost(request: Request, completion_chars: int | None = None) -> Cost:
    """One request, and its tokens: the prompt's characters / 4, plus max_tokens (before
    the answer), or plus the answer's characters / 4 (`completion_chars`: a stream that
    reported no usage)."""
    chars = 0
    for message in request.messages:
        content = message.get("content") if isinstance(message, Mapping) else None
        if isinstance(content, str):
            chars += len(content)
        elif isinstance(content, list):
            chars += sum(len(str(part.get("text", ""))) for part in content if isinstance(part, Mapping))
    if completion_chars is not None:
        return Cost(1.0, float(estimated_tokens(chars) + estimated_tokens(completion_chars)))
    completion = request.params.get("max_tokens") or request.params.get("max_completion_tokens") or 0
    if not isinstance(completion, (int, float)) or isinstance(completion, bool):
        completion = 0
    return Cost(1.0, float(estimated_tokens(chars) + completion))
