"""What if: play a recorded event log back through real Routers on a simulated clock.

Each configured target becomes a `ReplayTarget` that answers from its recorded attempts
(outcome, latency, status, Retry-After) instead of the network, and a real `Router` built
from the config walks the chain: its circuits, retries, backoff, deadlines and failover
decide what is tried, exactly as in production. Time is a `SimulatedClock` (clock.py):
a backoff advances it instead of sleeping, an attempt advances it by its recorded
latency (or by the attempt's timeout, when that is shorter), so an hour of traffic
replays in a second or so of CPU.

Which recorded attempt answers a replayed one: each target keeps its recorded attempts
as a tape, in time order. A replayed attempt at time t takes the next unused one that
started within `horizon` of t, first dropping those that started more than `horizon`
before t (the provider's past, which this replay did not ask about). When none is that
close (the recorded router sent nothing then: its circuit was open, or the log has
ended), the nearer in time of the recorded attempts just before and after t answers,
used or not (a replay that reaches the target more often than the recording did uses up
attempts ahead of t), and stays on the tape. `horizon` is the longest backoff plus the
slowest attempt seen for that target: the spread of one call's retries.

One exception: the quiet before a probe that closed an opening at once (evidence.py's
false trip: the failures that opened it had stopped) is answered as that probe found
the target, and the probe is not used up before its recorded time. That is the reading
`advise` recommends fail_max on (such a run is noise). The nearer-one rule there had the
target failing for half a reset_timeout after every burst, so whether fail_max 3 -> 5
tripped anyway (one call later) hung on how many calls the recording machine fitted
into that half: on 8 recordings of the test's bursty log, the replay of fail_max 5 sent
20-27 failing requests where the log holds 18, and failed over 15-162 calls against
63-160 for the current config; now 15-19 failing requests (a replay that runs ahead of
the tape may ask again inside a burst) and 4-14 failed-over calls against 55-143.

Limits: calls are replayed one after another at their recorded start times (or as soon
as the previous replayed call ends), so concurrency is not reproduced; streams replay
as plain calls; a target the log never saw answers at once; a failure that a different
config would have avoided on the provider's side (say, load it would not have caused)
cannot be known.
"""

from __future__ import annotations

import bisect
import contextlib
import logging
import random
import time
from collections import Counter, defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

from .evidence import attempt_start, counts, gather, percentile, reached
from ..clock import SimulatedClock, simulated
from ..errors import RouterError
from ..outcomes import Outcome, TargetFailure
from ..request import Request
from ..response import text_response
from ..config.schema import EventsConfig, RouterConfig, StateConfig, TargetConfig
from ..targets import Target

if TYPE_CHECKING:
    from ..response import Response

_MESSAGES = [{"role": "user", "content": "replayed call"}]
_NOT_REPLAYED = {Outcome.CANCELLED.value, Outcome.NO_CAPACITY.value, Outcome.DEADLINE.value}


@dataclass(frozen=True)
class Recorded:
    start: float
    outcome: str
    latency_s: float
    status: int | None = None
    retry_after_s: float | None = None
    ends_noise: bool = False  # the probe that closed an opening at once: the failures before it had stopped


class Tape:
    """One target's recorded attempts, played in order (see the module's docstring)."""

    def __init__(self, entries: list[Recorded], horizon: float) -> None:
        self.entries = sorted(entries, key=lambda r: r.start)
        self.starts = [r.start for r in self.entries]
        self.horizon = horizon
        self.next = 0

    def play(self, t: float) -> Recorded | None:
        entries = self.entries
        if not entries:
            return None
        while self.next < len(entries) and entries[self.next].start < t - self.horizon:
            self.next += 1  # the provider's past, which this replay did not ask about
        if self.next < len(entries) and entries[self.next].start <= t + self.horizon:
            if entries[self.next].ends_noise and t < entries[self.next].start:
                return entries[self.next]  # the quiet after noise, as its probe found it (kept for its time)
            self.next += 1
            return entries[self.next - 1]
        # A moment when the recorded router sent nothing (its circuit was open, say): the
        # provider was most likely as at the nearer of the requests before and after it,
        # in time (a replay that ran ahead of the tape has used up requests after t).
        at = bisect.bisect_right(self.starts, t)
        before = entries[at - 1] if at else None
        after = entries[at] if at < len(entries) else None
        if before is None or (after is not None and (after.ends_noise or after.start - t < t - before.start)):
            return after
        return before


@dataclass
class Tally:
    """What one replay sent, and to whom."""

    requests: Counter = field(default_factory=Counter)  # target -> requests sent
    failed_requests: Counter = field(default_factory=Counter)  # target -> requests that failed (counted outcomes)
    unrecorded: Counter = field(default_factory=Counter)  # target -> requests the log had no answer for


class ReplayTarget(Target):
    """A `Target` that answers from a tape, on a simulated clock."""

    def __init__(self, config: TargetConfig, tape: Tape, clock: SimulatedClock, tally: Tally) -> None:
        self.config = config
        self.tape = tape
        self.clock = clock
        self.tally = tally

    def complete(self, request: Request, *, timeout: float, note: Any) -> Response:
        name = self.config.name
        self.tally.requests[name] += 1
        entry = self.tape.play(self.clock.now)
        if entry is None:
            self.tally.unrecorded[name] += 1
            return _answer(name)
        if entry.outcome == Outcome.SILENT.value or entry.latency_s > timeout:
            self.clock.advance(timeout)
            self.tally.failed_requests[name] += 1
            raise TargetFailure(Outcome.SILENT, f"replayed: no answer within {timeout:g} s")
        self.clock.advance(entry.latency_s)
        if entry.outcome == Outcome.OK.value:
            return _answer(name)
        if counts(entry.outcome):
            self.tally.failed_requests[name] += 1
        raise TargetFailure(Outcome(entry.outcome), f"replayed {entry.outcome}", status=entry.status,
                            retry_after=entry.retry_after_s)

    def preload(self) -> None:
        """Nothing to load: the local tier's answers come from the tape too."""


def _answer(name: str) -> Response:
    return text_response("replayed", id="replay", model=name)


@dataclass(frozen=True)
class RecordedCall:
    start: float
    chain: str


def recorded_calls(events: list[dict[str, Any]]) -> list[RecordedCall]:
    calls = [RecordedCall(float(e["time"]) - float(e.get("latency_s") or 0.0), str(e.get("chain") or "default"))
             for e in events if e["event"] == "call"]
    return sorted(calls, key=lambda c: c.start)


def tapes(events: list[dict[str, Any]]) -> dict[str, tuple[list[Recorded], float]]:
    """Per target: its recorded attempts and the tape's horizon."""
    entries: dict[str, list[Recorded]] = defaultdict(list)
    waits: dict[str, float] = defaultdict(float)
    slowest: dict[str, float] = defaultdict(float)
    for e in events:
        target = e.get("target")
        if not isinstance(target, str):
            continue
        if e["event"] == "retry" and isinstance(e.get("wait_s"), (int, float)):
            waits[target] = max(waits[target], float(e["wait_s"]))
        if e["event"] != "attempt" or not reached(e) or e.get("outcome") in _NOT_REPLAYED:
            continue
        latency = float(e.get("latency_s") or 0.0)
        slowest[target] = max(slowest[target], latency)
        entries[target].append(Recorded(attempt_start(e), e["outcome"], latency, e.get("status"),
                                        e.get("retry_after_s")))
    for name, evidence in gather(events).items():
        found = sorted(entries.get(name, []), key=lambda r: r.start)
        starts = [r.start for r in found]
        for trip in evidence.false_trips:  # its probe: the first request sent after it opened
            probe = bisect.bisect_left(starts, trip.opened_at)
            if probe < len(found) and found[probe].outcome == Outcome.OK.value:
                found[probe] = replace(found[probe], ends_noise=True)
        if found:
            entries[name] = found
    return {name: (found, waits[name] + slowest[name]) for name, found in entries.items()}


@dataclass
class ReplayResult:
    calls: int
    served_by: Counter  # target name, "static" or "failed" -> calls
    requests: dict[str, int]
    failed_requests: dict[str, int]
    unrecorded: dict[str, int]
    latency_p50_s: float | None
    latency_p99_s: float | None
    cpu_s: float

    def to_dict(self) -> dict[str, Any]:
        return {"calls": self.calls, "served_by": dict(self.served_by), "requests": self.requests,
                "requests_to_failing": self.failed_requests, "unrecorded_requests": self.unrecorded,
                "latency_p50_s": self.latency_p50_s, "latency_p99_s": self.latency_p99_s, "cpu_s": round(self.cpu_s, 3)}


def replay(events: list[dict[str, Any]], config: RouterConfig, *, seed: int = 0) -> ReplayResult:
    """Replay the log's calls through a Router built from `config` (state in memory,
    event logging off, every target a `ReplayTarget`)."""
    from ..core import Router

    cpu = time.process_time()
    calls = recorded_calls(events)
    recorded = tapes(events)
    clock = SimulatedClock(calls[0].start if calls else 0.0)
    tally = Tally()

    def build(target: TargetConfig) -> ReplayTarget:
        found, horizon = recorded.get(target.name, ([], 0.0))
        return ReplayTarget(target, Tape(found, horizon), clock, tally)

    # cache tiers in memory too: a replay must not write its answers into the real cache
    simulated_config = replace(config, state=StateConfig(), events=EventsConfig(), offline=False,
                               targets={n: replace(t, disabled=None, cache=t.cache and replace(
                                   t.cache, backend="memory", path=None)) for n, t in config.targets.items()})
    served: Counter = Counter()
    latencies: list[float] = []
    with simulated(clock), _seeded(seed), _quiet():
        router = Router(simulated_config, sleep=clock.sleep, async_sleep=clock.async_sleep, target_factory=build)
        for call in calls:
            if call.chain not in simulated_config.chains:
                continue
            clock.now = max(clock.now, call.start)
            began = clock.now
            try:
                served[router.complete(_MESSAGES, chain=call.chain).route.served_by] += 1
            except RouterError:
                served["failed"] += 1
            latencies.append(clock.now - began)
    return ReplayResult(
        calls=len(latencies), served_by=served, requests=dict(tally.requests),
        failed_requests=dict(tally.failed_requests), unrecorded=dict(tally.unrecorded),
        latency_p50_s=round(percentile(latencies, 50), 4) if latencies else None,
        latency_p99_s=round(percentile(latencies, 99), 4) if latencies else None,
        cpu_s=time.process_time() - cpu)


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """The replayed router's own log lines (a circuit opening, ...) are not news."""
    logger = logging.getLogger("router")
    disabled, logger.disabled = logger.disabled, True
    try:
        yield
    finally:
        logger.disabled = disabled


@contextlib.contextmanager
def _seeded(seed: int) -> Iterator[None]:
    """Backoff jitter (tenacity draws from `random`) the same on every replay; the
    process's own random state is given back afterwards."""
    state = random.getstate()
    random.seed(seed)
    try:
        yield
    finally:
        random.setstate(state)


def report_text(current: ReplayResult, recommended: ReplayResult) -> str:
    rows = [("", "current", "recommended"), ("calls", str(current.calls), str(recommended.calls))]
    for name in sorted(set(current.served_by) | set(recommended.served_by), key=str):
        rows.append((f"answered by {name}", str(current.served_by[name]), str(recommended.served_by[name])))
    for name in sorted(set(current.requests) | set(recommended.requests)):
        rows.append((f"requests to {name}", str(current.requests.get(name, 0)), str(recommended.requests.get(name, 0))))
        rows.append((f"  of which failed", str(current.failed_requests.get(name, 0)),
                     str(recommended.failed_requests.get(name, 0))))
    for label, a, b in (("call latency p50 (s)", current.latency_p50_s, recommended.latency_p50_s),
                        ("call latency p99 (s)", current.latency_p99_s, recommended.latency_p99_s),
                        ("CPU (s)", round(current.cpu_s, 2), round(recommended.cpu_s, 2))):
        rows.append((label, f"{a:.3g}" if a is not None else "-", f"{b:.3g}" if b is not None else "-"))
    widths = [max(len(r[i]) for r in rows) for i in range(3)]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows)
