"""What the router's JSON event log shows about each target: the evidence `router advise`
reasons from.

Events (observe/events.py) are read back in time order; per target, `gather` follows its circuit
through the log and sorts its failures into noise (runs of consecutive failures that
ended in a success while the circuit stayed closed) and outages (the circuit open ->
closed), counts how often attempt k of a call succeeded, and keeps the latencies of
successful attempts, the times to first token of streams and the Retry-After values.
"""

from __future__ import annotations

import contextlib
import gzip
import io
import json
import math
import zlib
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, BinaryIO

from ..outcomes import HANDLING, Outcome


def counts(outcome: str) -> bool:
    """True when `outcome` counts against a circuit (a failure of the target itself)."""
    try:
        return HANDLING[Outcome(outcome)].counts
    except (ValueError, KeyError):
        return False


_OUTCOMES = {o.value for o in Outcome}
_SENT = {o.value for o in Outcome if o in HANDLING} - {Outcome.NO_CAPACITY.value, Outcome.DEADLINE.value} | {"ok"}


def reached(event: Mapping[str, Any]) -> bool:
    """True when an attempt event stands for a request sent (not a skip). Attempts carry
    their `timeout_s`; a log written before it existed is judged by the outcome."""
    return "timeout_s" in event or event.get("outcome") in _SENT


# -- reading the log ---------------------------------------------------------------------

@dataclass
class EventLog:
    events: list[dict[str, Any]]
    skipped: Counter = field(default_factory=Counter)  # reason -> lines skipped (or values dropped)

    @property
    def skipped_lines(self) -> int:
        return sum(n for reason, n in self.skipped.items() if not reason.startswith(DROPPED))

    def skipped_text(self) -> str:
        return ", ".join(f"{reason} {n}" for reason, n in self.skipped.most_common())


DROPPED = "value dropped: "
MAX_SECONDS = 86400.0  # a duration longer than a day in an attempt's event is not a measurement
EARLIEST, LATEST = 0.0, 4102444800.0  # epoch seconds: 1970 to 2100
_SECONDS = ("latency_s", "wait_s", "first_token_s", "retry_after_s", "timeout_s", "longest_gap_s")
GZIP_MAGIC = b"\x1f\x8b"


def read_logs(names: Iterable[str], stdin: BinaryIO | None = None) -> EventLog:
    """Every usable event of the named logs ("-": `stdin`), in time order. A gzip-compressed
    log (by its first bytes, whatever its name) is read as the log it holds. What cannot be
    used is skipped and counted per reason, never fatal: lines that are not UTF-8 text (a
    binary file), not JSON, not a router event, events without a plausible `time`; a number
    that is not a finite duration in [0, 1 day] (NaN, Infinity, a hostile `retry_after_s`)
    is dropped from its event. A file that cannot be opened raises OSError."""
    log = EventLog([])
    for name in names:
        with contextlib.ExitStack() as files:
            raw = stdin if name == "-" else files.enter_context(open(name, "rb"))
            assert raw is not None
            buffered = raw if hasattr(raw, "peek") else io.BufferedReader(raw)  # type: ignore[arg-type]
            if buffered.peek(2)[:2] == GZIP_MAGIC:
                buffered = files.enter_context(gzip.GzipFile(fileobj=buffered))  # type: ignore[assignment]
            try:
                for line in buffered:
                    _read_line(line, log)
            except (OSError, EOFError, zlib.error) as exc:  # a corrupt or truncated gzip: what came before counts
                log.skipped[f"the rest of {name} unreadable ({type(exc).__name__})"] += 1
    log.events.sort(key=lambda e: e["time"])
    return log


def _read_line(line: bytes, log: EventLog) -> None:
    """One line, with or without a logging prefix before its JSON object."""
    try:
        text = line.decode("utf-8")
    except UnicodeDecodeError:
        log.skipped["not UTF-8 text"] += 1
        return
    start = text.find("{")
    if start < 0:
        if text.strip():
            log.skipped["no JSON object"] += 1
        return
    try:
        data = json.loads(text[start:])
    except ValueError:
        log.skipped["not JSON"] += 1
        return
    if not (isinstance(data, dict) and isinstance(data.get("event"), str)):
        log.skipped["not a router event"] += 1
        return
    when = data.get("time")
    if not (_is_number(when) and EARLIEST <= when <= LATEST):
        log.skipped["time missing or not epoch seconds (1970-2100)"] += 1
        return
    for key in _SECONDS:
        value = data.get(key)
        if value is not None and not (_is_number(value) and 0 <= value <= MAX_SECONDS):
            log.skipped[f"{DROPPED}{key} not a number of seconds in [0, {MAX_SECONDS:g}]"] += 1
            del data[key]
    tokens = data.get("completion_tokens")
    if tokens is not None and not (isinstance(tokens, int) and not isinstance(tokens, bool) and 0 <= tokens <= 10**7):
        log.skipped[f"{DROPPED}completion_tokens not a count"] += 1
        del data["completion_tokens"]
    log.events.append(data)


def _is_number(value: Any) -> bool:
    """A finite int or float (not a bool; NaN and Infinity are what Python's json reads them as)."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def attempt_start(event: Mapping[str, Any]) -> float:
    return float(event["time"]) - float(event.get("latency_s") or 0.0)


# -- evidence ----------------------------------------------------------------------------

@dataclass
class Outage:
    """The circuit open -> closed once (or still open at the end of the log)."""

    opened_at: float
    first_failure: float
    trip_run: int = 0  # consecutive failures that opened it
    failed_probes: int = 0
    last_failure: float = 0.0
    closed_at: float | None = None

    @property
    def length_s(self) -> float | None:
        return None if self.closed_at is None else self.closed_at - self.opened_at

    @property
    def down_s(self) -> float | None:
        """The target's own downtime: first failure to midway between the last failed
        request and the probe that found it back."""
        if self.closed_at is None:
            return None
        return (self.last_failure + self.closed_at) / 2 - self.first_failure


@dataclass
class Evidence:
    target: str
    calls: int = 0
    attempts: Counter = field(default_factory=Counter)
    latencies: list[float] = field(default_factory=list)  # successful non-stream attempts
    first_tokens: list[float] = field(default_factory=list)  # successful stream attempts
    gaps: list[float] = field(default_factory=list)  # successful streams: the longest wait between two chunks
    sized: list[tuple[float, int]] = field(default_factory=list)  # (latency, completion tokens) where known
    timeouts_seen: list[float] = field(default_factory=list)
    noise_runs: list[int] = field(default_factory=list)  # failures in a row that ended in a success, circuit closed
    outages: list[Outage] = field(default_factory=list)
    by_attempt: dict[int, list[int]] = field(default_factory=lambda: defaultdict(lambda: [0, 0]))  # k -> made, ok
    after: dict[str, list[int]] = field(default_factory=lambda: defaultdict(lambda: [0, 0]))  # outcome -> retried, ok
    retry_afters: list[float] = field(default_factory=list)

    @property
    def false_trips(self) -> list[Outage]:
        """Openings that ended at their first probe: the failures had already stopped."""
        return [o for o in self.outages if o.closed_at is not None and o.failed_probes == 0]

    @property
    def real_outages(self) -> list[Outage]:
        return [o for o in self.outages if o.closed_at is not None and o.failed_probes > 0]

    def to_dict(self) -> dict[str, Any]:
        return {
            "calls": self.calls,
            "attempts": dict(self.attempts),
            "latency_s": summary(self.latencies),
            "first_token_s": summary(self.first_tokens),
            **({"longest_gap_s": summary(self.gaps)} if self.gaps else {}),
            **({"completion_tokens": summary([float(t) for _, t in self.sized])} if self.sized else {}),
            "failure_runs_while_closed": {"count": len(self.noise_runs), "longest": max(self.noise_runs, default=0),
                                          "lengths": dict(sorted(Counter(self.noise_runs).items()))},
            "outages": [{"length_s": _r(o.length_s), "down_s": _r(o.down_s), "trip_run": o.trip_run,
                         "failed_probes": o.failed_probes, "ongoing": o.closed_at is None} for o in self.outages],
            "retries": {
                "by_attempt": {str(k): {"made": v[0], "succeeded": v[1]} for k, v in sorted(self.by_attempt.items())},
                "after_outcome": {k: {"retried": v[0], "succeeded": v[1]} for k, v in sorted(self.after.items())},
            },
            "retry_after_s": summary(self.retry_afters),
        }

    def lines(self) -> list[str]:
        """The evidence as text, a few lines per target."""
        lines = [f"{self.target}: {self.calls} call(s), attempts "
                 + ", ".join(f"{k} {v}" for k, v in self.attempts.most_common())]
        for label, values in (("latency of successful attempts", self.latencies),
                              ("time to first token", self.first_tokens),
                              ("longest gap between a stream's chunks", self.gaps)):
            s = summary(values)
            if s["n"]:
                lines.append(f"  {label} (n={s['n']}): p50 {short(s['p50'])} s, p90 {short(s['p90'])} s, "
                             f"p99 {short(s['p99'])} s, p99.9 {short(s['p99.9'])} s, max {short(s['max'])} s")
        if self.noise_runs:
            lines.append("  runs of failures with the circuit closed: " + ", ".join(
                f"{n}x{length}" for length, n in sorted(Counter(self.noise_runs).items())))
        for o in self.outages:
            lines.append("  outage: " + ("still open at the end of the log" if o.closed_at is None else
                                         f"open {short(o.length_s or 0)} s, down ~{short(o.down_s or 0)} s")
                         + f", tripped by {o.trip_run} failure(s), {o.failed_probes} failed probe(s)")
        for k, (made, ok) in sorted(self.by_attempt.items()):
            if k > 1:
                lines.append(f"  attempt {k}: {ok}/{made} succeeded")
        for outcome, (tried, ok) in sorted(self.after.items()):
            lines.append(f"  a retry after {outcome}: {ok}/{tried} succeeded")
        if self.retry_afters:
            lines.append("  Retry-After seen: " + ", ".join(short(v) for v in sorted(self.retry_afters)[:10])
                         + (" ..." if len(self.retry_afters) > 10 else ""))
        return lines


def gather(events: list[dict[str, Any]]) -> dict[str, Evidence]:
    """Evidence per target from time-ordered events."""
    found: dict[str, Evidence] = {}
    tracks: dict[str, _Track] = {}
    sequences: dict[tuple[str, str], list[str]] = defaultdict(list)  # (call, target) -> outcomes
    latest: dict[str, str] = {}  # target -> the key of its latest call, for a log without call ids
    for event in events:
        target = event.get("target")
        if not isinstance(target, str):
            continue
        evidence = found.setdefault(target, Evidence(target))
        track = tracks.setdefault(target, _Track(evidence))
        if event["event"] == "circuit":
            track.circuit(event)
            continue
        if event["event"] != "attempt" or event.get("outcome") not in _OUTCOMES:
            continue
        outcome = event["outcome"]
        if not reached(event) or outcome == Outcome.CANCELLED.value:
            continue
        evidence.attempts[outcome] += 1
        if isinstance(event.get("timeout_s"), (int, float)):
            evidence.timeouts_seen.append(float(event["timeout_s"]))
        if outcome == "ok" and isinstance(event.get("latency_s"), (int, float)):
            first = event.get("first_token_s")
            if isinstance(first, (int, float)):
                evidence.first_tokens.append(float(first))
                if isinstance(event.get("longest_gap_s"), (int, float)):
                    evidence.gaps.append(float(event["longest_gap_s"]))
            else:
                evidence.latencies.append(float(event["latency_s"]))
                if isinstance(event.get("completion_tokens"), int):
                    evidence.sized.append((float(event["latency_s"]), event["completion_tokens"]))
        if isinstance(event.get("retry_after_s"), (int, float)):
            evidence.retry_afters.append(float(event["retry_after_s"]))
        track.attempt(event)
        call = event.get("call_id")
        if isinstance(call, str):
            sequences[(call, target)].append(outcome)
        else:  # an older log: an attempt after a backoff is a retry of the one before
            key = latest.get(target)
            if not (event.get("wait_s") and key):
                key = latest[target] = f"#{len(sequences)}"
            sequences[(key, target)].append(outcome)
    for (_, target), outcomes in sequences.items():
        evidence = found[target]
        evidence.calls += 1
        for k, outcome in enumerate(outcomes, start=1):
            made = evidence.by_attempt[k]
            made[0] += 1
            made[1] += outcome == "ok"
            if k > 1:
                after = evidence.after[outcomes[k - 2]]
                after[0] += 1
                after[1] += outcome == "ok"
    return found


class _Track:
    """Follows one target's circuit through the log, sorting its failures into noise
    runs (closed circuit, ended by a success) and outages (open -> closed)."""

    def __init__(self, evidence: Evidence) -> None:
        self.evidence = evidence
        self.run: list[float] = []  # start times of the failures in a row so far
        self.outage: Outage | None = None
        self.probing_since: float | None = None

    def circuit(self, event: Mapping[str, Any]) -> None:
        new, t = event.get("new_state"), float(event["time"])
        if new == "open" and self.outage is None:
            first = self.run[0] if self.run else t
            self.outage = Outage(t, first, trip_run=len(self.run), last_failure=self.run[-1] if self.run else t)
            self.evidence.outages.append(self.outage)
            self.run = []
        elif new == "open":
            self.probing_since = None
        elif new == "half_open":
            self.probing_since = t
        elif new == "closed" and self.outage is not None:
            self.outage.closed_at = t
            self.outage, self.probing_since = None, None

    def attempt(self, event: Mapping[str, Any]) -> None:
        outcome, start = event["outcome"], attempt_start(event)
        if outcome == "ok":
            if self.outage is None and self.run:
                self.evidence.noise_runs.append(len(self.run))
            self.run = []
        elif counts(outcome):
            outage = self.outage
            if outage is None:
                self.run.append(start)
            elif self.probing_since is None and start < outage.opened_at:
                outage.trip_run += 1  # its event follows the circuit's: it is the one that tripped it
                outage.last_failure = max(outage.last_failure, start)
            else:
                outage.failed_probes += 1
                outage.last_failure = max(outage.last_failure, start)


# -- numbers -----------------------------------------------------------------------------

def percentile(values: list[float], q: float) -> float:
    """The q-th percentile (0-100), linear between closest ranks."""
    ordered = sorted(values)
    if not ordered:
        raise ValueError("no values")
    rank = (len(ordered) - 1) * q / 100
    low = math.floor(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def summary(values: list[float]) -> dict[str, Any]:
    if not values:
        return {"n": 0}
    return {"n": len(values), "p50": _r(percentile(values, 50)), "p90": _r(percentile(values, 90)),
            "p99": _r(percentile(values, 99)), "p99.9": _r(percentile(values, 99.9)), "max": _r(max(values))}

def _r(x: float | None) -> float | None:
    return None if x is None else round(x, 4)


def short(x: float) -> str:
    """A measured number for people: 3 significant digits, whole numbers from 100 on."""
    return f"{x:,.0f}" if abs(x) >= 100 else f"{x:.3g}"
