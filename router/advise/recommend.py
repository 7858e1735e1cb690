"""`router advise`: what the event log shows about each target, and the settings it argues for.

The router's JSON event log (`events: {log: json}`, observe/events.py) holds every attempt with
its outcome, latency, timeout and call id, every retry and every circuit change. From it,
per target: `Evidence` (latency percentiles, runs of consecutive failures while the
circuit stayed closed, outages, how often each retry succeeded, Retry-After values), then
one recommendation per tunable key, each with its reason, or "unchanged" with what more
evidence would be needed. How each is computed, and its limits: README, "router advise".
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from .evidence import Evidence, percentile, short
from ..config.schema import RouterConfig, TargetConfig

# The keys advise may recommend, spelled as in the config.
KEYS = ("timeout", "first_token_timeout", "stream_idle_timeout", "retry.attempts", "retry.min_wait",
        "retry.max_wait", "breaker.fail_max", "breaker.reset_timeout")

MIN_LATENCIES = 100  # successful attempts before fail_max may be set on an outage alone
# Timeouts (README, "router advise"): the largest of these bounds, each a reason not to go lower.
TAIL_COUNT = 10  # a percentile is read only from a sample with this many values beyond it
TAILS = ((99.9, 1.5), (99.0, 2.0), (95.0, 3.0))  # (percentile, margin): the lower the percentile, the wider
LATENCY_MARGIN = 1.5  # never below the slowest successful attempt seen x this
LOST_PACKET_S = 1.0  # Linux resends a lost SYN after 1 s (TCP_TIMEOUT_INIT): floor = this + the median
MIN_SIZED = 20  # attempts with their completion tokens before latency is related to them
TOKENS_VARY = 2.0  # ... and only when the longest answer has this many times the median's tokens
MIN_RETRIES = 20  # retries at attempt k before judging whether attempt k is worth making
RETRY_WORTH = 0.2  # attempt k is kept when at least this share of them succeeded
MIN_FAILURE_RUNS = 3  # runs of failures (noise) before fail_max is recommended
NOISE_HEADROOM = 2  # fail_max = longest noise run + this
MIN_RETRY_AFTERS = 3  # Retry-After values before waits are recommended


def round_up(x: float) -> float:
    """Up to two significant digits: 9.13 -> 9.2, 13.4 -> 14, 0.327 -> 0.33."""
    if x <= 0:
        return 0.0
    exponent = math.floor(math.log10(x)) - 1
    step = 10.0 ** exponent
    return round(math.ceil(x / step - 1e-9) * step, max(0, -exponent))


def number(x: float) -> int | float:
    return int(x) if float(x).is_integer() else x


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
        if config is not None and (target is None or target.cache is not None):
            continue  # not configured, or a cache tier: no network, no retries, nothing to tune
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
                was = "" if current is None else f" {short(current)}"
                advice.reasons[key] = f"{key}{was} -> {short(value)}: {reason}"
        _keep_waits_ordered(advice, target)
        result[name] = advice
    return result


Rule = Callable[[Evidence, Any], "tuple[Any, str]"]  # (evidence, current value) -> (value or None, reason)


def _timeout(found: Evidence, current: float | None) -> tuple[float | None, str]:
    if not found.latencies and found.first_tokens:
        return None, ("the log has streams only: first_token_timeout and stream_idle_timeout bound them "
                      "(a whole-answer timeout would cut long answers)")
    return _latency_rule(found.latencies, "successful attempts", found.attempts["silent"], found.sized)


def _first_token_timeout(found: Evidence, current: float | None) -> tuple[float | None, str]:
    if not found.first_tokens:
        return None, "no successful stream attempt in the log"
    return _latency_rule(found.first_tokens, "streams' first tokens", 0)


def _stream_idle_timeout(found: Evidence, current: float | None) -> tuple[float | None, str]:
    if not found.gaps:
        return None, "no successful stream with its longest gap between chunks in the log"
    return _latency_rule(found.gaps, "streams' longest gaps between chunks", 0)


def tail_needs(q: float) -> int:
    """Samples needed to read the q-th percentile: `TAIL_COUNT` values beyond it (p99.9: 10,000)."""
    return math.ceil(TAIL_COUNT / (1 - q / 100) - 1e-9)


def _latency_rule(values: list[float], what: str, silent: int,
                  sized: list[tuple[float, int]] | None = None) -> tuple[float | None, str]:
    """The largest of: the highest percentile the sample supports x its margin, the slowest
    seen x `LATENCY_MARGIN`, one lost packet plus the median, and (answers of varying length)
    the latency the longest answer seen needs by the per-token fit x the margin. A timeout
    below any of them cuts answers that the log shows arrive."""
    n = len(values)
    supported = [(q, margin) for q, margin in TAILS if n >= tail_needs(q)]
    if not supported:
        q = TAILS[-1][0]
        return None, f"needs >= {tail_needs(q):,} {what} (a p{q:g} needs {TAIL_COUNT} beyond it), have {n:,}"
    q, margin = supported[0]
    tail, slowest, middle = percentile(values, q), max(values), statistics.median(values)
    bounds = {
        f"p{q:g} of {n:,} {what} is {short(tail)} s, x {margin:g}": tail * margin,
        f"the slowest is {short(slowest)} s, x {LATENCY_MARGIN:g}": slowest * LATENCY_MARGIN,
        f"one lost packet costs {LOST_PACKET_S:g} s (a lost SYN is resent after {LOST_PACKET_S:g} s), "
        f"+ the median {short(middle)} s": LOST_PACKET_S + middle,
    }
    by_tokens = _by_tokens(sized or [])
    if by_tokens is not None:
        text, needed = by_tokens
        bounds[f"{text}, x {margin:g}"] = needed * margin
    reason, value = max(bounds.items(), key=lambda item: item[1])
    others = [text for text in bounds if text != reason]
    reason = f"{reason} (the largest of: {'; '.join(others)})"
    if silent:
        reason += f"; {silent} attempt(s) timed out"
    return round_up(value), reason


def _by_tokens(sized: list[tuple[float, int]]) -> tuple[str, float] | None:
    """Latency as a line over completion tokens, when answers vary in length: what the
    longest answer seen needs (a long answer's time grows with its tokens)."""
    if len(sized) < MIN_SIZED:
        return None
    tokens = [t for _, t in sized]
    longest = max(tokens)
    if longest < TOKENS_VARY * max(1.0, statistics.median(tokens)):
        return None
    slope, intercept = statistics.linear_regression(tokens, [latency for latency, _ in sized])
    slope, intercept = max(0.0, slope), max(0.0, intercept)
    needed = intercept + slope * longest
    return (f"latency grows with the answer ({short(slope * 1000)} ms per completion token + {short(intercept)} s): "
            f"the longest answer seen, {longest:,} tokens, needs {short(needed)} s"), needed


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
    return value, f"{what} of {len(values)} Retry-After values the provider sent is {short(percentile(values, q))} s"


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
    return value, (f"median outage {short(middle)} s ({len(real)} outage(s), {probes} failed probe(s)); half of it: "
                   f"about two probes per outage")


_RULES: dict[str, Rule] = {
    "timeout": _timeout,
    "first_token_timeout": _first_token_timeout,
    "stream_idle_timeout": _stream_idle_timeout,
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
        advice.reasons["retry.max_wait"] = f"retry.max_wait {short(high)} -> {short(low)}: not below retry.min_wait"


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
    for found in advice.values():
        lines.extend(found.evidence.lines())
        for key in KEYS:
            reason = found.reasons[key]
            lines.append(f"  - {reason}" if key in found.recommend else f"  - {key} {reason}")
    return "\n".join(lines)
