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
KEYS = ("timeout", "first_token_timeout", "retry.attempts", "retry.min_wait", "retry.max_wait",
        "breaker.fail_max", "breaker.reset_timeout")

MIN_LATENCIES = 100  # successful attempts before a timeout is recommended (p99.9 of fewer is ~ the max)
LATENCY_MARGIN = 1.5  # timeout = p99.9 x this
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
    reason = f"p99.9 of {len(values):,} {what} is {short(tail)} s; {LATENCY_MARGIN:g}x margin"
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
