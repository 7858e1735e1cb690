"""`router advise`: what the event log shows about each target, and the settings it argues for.

The router's JSON event log (`events: {log: json}`, events.py) holds every attempt with
its outcome, latency, timeout and call id, every retry and every circuit change. From it,
per target: `Evidence` (latency percentiles, runs of consecutive failures while the
circuit stayed closed, outages, how often each retry succeeded, Retry-After values), then
one recommendation per tunable key, each with its reason, or "unchanged" with what more
evidence would be needed. How each is computed, and its limits: README, "router advise".
"""

from __future__ import annotations

import json
import math
import statistics
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any, TextIO

from .outcomes import HANDLING, Outcome
from .schema import RouterConfig, TargetConfig

# The keys advise may recommend, spelled as in the config.
KEYS = ("timeout", "first_token_timeout", "retry.attempts", "retry.min_wait", "retry.max_wait",
        "breaker.fail_max", "breaker.reset_timeout")

MIN_LATENCIES = 100  # successful attempts before a timeout is recommended (p99.9 of fewer is ~ the max)
LATENCY_MARGIN = 1.5  # timeout = p99.9 x this
MIN_RETRIES = 20  # retries at attempt k before judging whether attempt k is worth making
RETRY_WORTH = 0.2  # attempt k is kept when at least this share of them succeeded
MIN_FAILURE_RUNS = 3  # runs of failures (noise) before fail_max is recommended
NOISE_HEADROOM = 2  # fail_max = longest noise run + this
MIN_RETRY_AFTERS = 3  # Retry-After values before waits are recommended


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
    skipped: int  # lines that were not a router event


def read_events(streams: Iterable[tuple[str, TextIO]]) -> EventLog:
    """Every event of every (name, stream), in time order. A line may carry a logging
    prefix before its JSON object; lines without one are counted, not fatal."""
    events: list[dict[str, Any]] = []
    skipped = 0
    for _, stream in streams:
        for line in stream:
            start = line.find("{")
            if start < 0:
                skipped += bool(line.strip())
                continue
            try:
                data = json.loads(line[start:])
            except ValueError:
                skipped += 1
                continue
            if isinstance(data, dict) and isinstance(data.get("event"), str) and isinstance(
                    data.get("time"), (int, float)):
                events.append(data)
            else:
                skipped += 1
    events.sort(key=lambda e: e["time"])
    return EventLog(events, skipped)


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


def gather(events: list[dict[str, Any]]) -> dict[str, Evidence]:
    """Evidence per target from time-ordered events."""
    found: dict[str, Evidence] = {}
    tracks: dict[str, _Track] = {}
    sequences: dict[tuple[str, str], list[str]] = defaultdict(list)  # (call, target) -> outcomes
    fallback: dict[str, tuple[str, int]] = {}  # target -> (its latest call key, attempts in it)
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
            else:
                evidence.latencies.append(float(event["latency_s"]))
        if isinstance(event.get("retry_after_s"), (int, float)):
            evidence.retry_afters.append(float(event["retry_after_s"]))
        track.attempt(event)
        call = event.get("call_id")
        if isinstance(call, str):
            sequences[(call, target)].append(outcome)
        else:  # an older log: an attempt after a backoff is a retry of the one before
            key, k = fallback.get(target, ("", 0))
            if not (event.get("wait_s") and key):
                key = f"#{len(sequences)}"
            fallback[target] = (key, k + 1)
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


def round_up(x: float) -> float:
    """Up to two significant digits: 9.13 -> 9.2, 13.4 -> 14, 0.327 -> 0.33."""
    if x <= 0:
        return 0.0
    exponent = math.floor(math.log10(x)) - 1
    step = 10.0 ** exponent
    return round(math.ceil(x / step - 1e-9) * step, max(0, -exponent))


def number(x: float) -> int | float:
    return int(x) if float(x).is_integer() else x


def _r(x: float | None) -> float | None:
    return None if x is None else round(x, 4)


def _s(x: float) -> str:
    return f"{x:.3g}"


# -- recommendations ---------------------------------------------------------------------

@dataclass
class Advice:
    target: str
    evidence: Evidence
    recommend: dict[str, int | float] = field(default_factory=dict)
    reasons: dict[str, str] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"evidence": self.evidence.to_dict(), "recommend": dict(self.recommend), "reasons": dict(self.reasons)}


def current_value(config: TargetConfig | None, key: str) -> int | float | None:
    if config is None:
        return None
    if key == "first_token_timeout":
        return config.first_token_timeout
    section, _, name = key.partition(".")
    owner = getattr(config, section) if name else config
    return getattr(owner, name or section)


def advise(evidence: Mapping[str, Evidence], config: RouterConfig | None = None) -> dict[str, Advice]:
    """One `Advice` per target seen in the log (and configured, when a config is given)."""
    result = {}
    for name, found in sorted(evidence.items()):
        target = config.targets.get(name) if config is not None else None
        if config is not None and target is None:
            continue
        advice = Advice(name, found)
        for key, rule in _RULES.items():
            current = current_value(target, key)
            if current is None and key == "timeout" and found.timeouts_seen:
                current = max(found.timeouts_seen)
            value, reason = rule(found, current)
            if value is None:
                advice.reasons[key] = f"unchanged: {reason}"
            else:
                value = number(value)
                advice.recommend[key] = value
                was = "" if current is None else f" {_s(current)}"
                advice.reasons[key] = f"{key}{was} -> {_s(value)}: {reason}"
        _keep_waits_ordered(advice, target)
        result[name] = advice
    return result


Rule = Any  # (Evidence, current) -> (value or None, reason)


def _timeout(found: Evidence, current: float | None) -> tuple[float | None, str]:
    return _latency_rule(found.latencies, "successful attempts", found.attempts["silent"], current)


def _first_token_timeout(found: Evidence, current: float | None) -> tuple[float | None, str]:
    if not found.first_tokens:
        return None, "no successful stream attempt in the log"
    return _latency_rule(found.first_tokens, "streams' first tokens", 0, current)


def _latency_rule(values: list[float], what: str, silent: int, current: float | None) -> tuple[float | None, str]:
    if len(values) < MIN_LATENCIES:
        return None, f"needs >= {MIN_LATENCIES} {what}, have {len(values)}"
    tail = percentile(values, 99.9)
    value = round_up(tail * LATENCY_MARGIN)
    reason = f"p99.9 of {len(values):,} {what} is {_s(tail)} s; {LATENCY_MARGIN:g}x margin"
    if silent:
        reason += f"; {silent} attempt(s) timed out"
    return value, reason


def _attempts(found: Evidence, current: int | None) -> tuple[int | None, str]:
    made = found.by_attempt
    retries = made[2][0] if 2 in made else 0
    if retries < MIN_RETRIES:
        return None, f"needs >= {MIN_RETRIES} retries, have {retries}"
    limit = current or max(made)
    kept, shown = 1, []
    for k in range(2, limit + 1):
        tried, ok = made[k] if k in made else (0, 0)
        if tried < MIN_RETRIES:
            if kept == k - 1:
                kept = limit  # every retry judged so far helped; the rest is too thin to drop
            break
        shown.append(f"attempt {k} succeeded {ok}/{tried}")
        if ok >= RETRY_WORTH * tried:
            kept = k
    return kept, (", ".join(shown) + f"; an attempt is kept when >= {RETRY_WORTH:.0%} of its tries succeed")


def _waits(found: Evidence, q: float, what: str) -> tuple[float | None, str]:
    values = found.retry_afters
    if len(values) < MIN_RETRY_AFTERS:
        return None, f"needs >= {MIN_RETRY_AFTERS} Retry-After values, have {len(values)}"
    value = round_up(percentile(values, q))
    return value, f"{what} of {len(values)} Retry-After values the provider sent is {_s(percentile(values, q))} s"


def _min_wait(found: Evidence, current: float | None) -> tuple[float | None, str]:
    return _waits(found, 10, "p10")


def _max_wait(found: Evidence, current: float | None) -> tuple[float | None, str]:
    return _waits(found, 90, "p90")


def _fail_max(found: Evidence, current: int | None) -> tuple[int | None, str]:
    noise = found.noise_runs + [o.trip_run for o in found.false_trips]
    real = found.real_outages
    if len(noise) < MIN_FAILURE_RUNS and not (real and len(found.latencies) >= MIN_LATENCIES):
        return None, (f"needs >= {MIN_FAILURE_RUNS} runs of failures that ended in a success, or an outage "
                      f"and >= {MIN_LATENCIES} successes; have {len(noise)} and {len(real)}")
    longest = max(noise, default=0)
    value = max(2, longest + NOISE_HEADROOM)
    if not noise:
        return value, (f"no failure ended in a success in {len(found.latencies):,} successful attempts: each run "
                       f"of failures was one of {len(real)} outage(s) where probes failed; trip early")
    text = f"longest run of failures that ended in a success is {longest} ({len(found.noise_runs)} run(s) " \
           f"with the circuit closed"
    if found.false_trips:
        text += f"; {len(found.false_trips)} of {len(found.outages)} opening(s) ended at the first probe"
    text += ")"
    if real:
        text += f"; {len(real)} outage(s) where probes failed"
    return value, text + f"; {NOISE_HEADROOM} above the longest noise"


def _reset_timeout(found: Evidence, current: float | None) -> tuple[float | None, str]:
    real = found.real_outages
    if not real:
        return None, "needs >= 1 outage (an opening whose first probe failed), have 0"
    downs = [o.down_s for o in real if o.down_s is not None]
    middle = statistics.median(downs)
    value = round_up(max(middle / 2, 0.01))
    probes = sum(o.failed_probes for o in real)
    return value, (f"median outage {_s(middle)} s ({len(real)} outage(s), {probes} failed probe(s)); half of it: "
                   f"about two probes per outage")


_RULES: dict[str, Rule] = {
    "timeout": _timeout,
    "first_token_timeout": _first_token_timeout,
    "retry.attempts": _attempts,
    "retry.min_wait": _min_wait,
    "retry.max_wait": _max_wait,
    "breaker.fail_max": _fail_max,
    "breaker.reset_timeout": _reset_timeout,
}


def _keep_waits_ordered(advice: Advice, target: TargetConfig | None) -> None:
    """min_wait may not exceed max_wait (the loader refuses it): raise max_wait to match."""
    low = advice.recommend.get("retry.min_wait", current_value(target, "retry.min_wait"))
    high = advice.recommend.get("retry.max_wait", current_value(target, "retry.max_wait"))
    if low is not None and high is not None and low > high:
        advice.recommend["retry.max_wait"] = low
        advice.reasons["retry.max_wait"] = f"retry.max_wait {_s(high)} -> {_s(low)}: not below retry.min_wait"


def applied(config: RouterConfig, advice: Mapping[str, Advice]) -> RouterConfig:
    """`config` with every recommendation applied (what `--write` writes, for the replay)."""
    targets = dict(config.targets)
    for name, found in advice.items():
        target = targets[name]
        for key, value in found.recommend.items():
            section, _, leaf = key.partition(".")
            if leaf:
                target = replace(target, **{section: replace(getattr(target, section), **{leaf: value})})
            else:
                target = replace(target, **{section: value})
        targets[name] = target
    return replace(config, targets=targets)


# -- the report --------------------------------------------------------------------------

def report_text(advice: Mapping[str, Advice]) -> str:
    lines = []
    for name, found in advice.items():
        e = found.evidence
        lines.append(f"{name}: {e.calls} call(s), attempts " + ", ".join(f"{k} {v}" for k, v in e.attempts.most_common()))
        for label, values in (("latency of successful attempts", e.latencies), ("time to first token", e.first_tokens)):
            s = summary(values)
            if s["n"]:
                lines.append(f"  {label} (n={s['n']}): p50 {_s(s['p50'])} s, p90 {_s(s['p90'])} s, "
                             f"p99 {_s(s['p99'])} s, p99.9 {_s(s['p99.9'])} s, max {_s(s['max'])} s")
        if e.noise_runs:
            lines.append("  runs of failures with the circuit closed: " + ", ".join(
                f"{n}x{length}" for length, n in sorted(Counter(e.noise_runs).items())))
        for o in e.outages:
            lines.append("  outage: " + ("still open at the end of the log" if o.closed_at is None else
                                         f"open {_s(o.length_s or 0)} s, down ~{_s(o.down_s or 0)} s")
                         + f", tripped by {o.trip_run} failure(s), {o.failed_probes} failed probe(s)")
        for k, (made, ok) in sorted(e.by_attempt.items()):
            if k > 1:
                lines.append(f"  attempt {k}: {ok}/{made} succeeded")
        for outcome, (tried, ok) in sorted(e.after.items()):
            lines.append(f"  a retry after {outcome}: {ok}/{tried} succeeded")
        if e.retry_afters:
            lines.append("  Retry-After seen: " + ", ".join(_s(v) for v in sorted(e.retry_afters)[:10])
                         + (" ..." if len(e.retry_afters) > 10 else ""))
        for key in KEYS:
            reason = found.reasons[key]
            lines.append(f"  - {reason}" if key in found.recommend else f"  - {key} {reason}")
    return "\n".join(lines)
