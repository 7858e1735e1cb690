"""Read what a provider says about its rate limits.

How long a rate-limited provider asked us to wait: providers say it in different headers:
`retry-after-ms` (OpenAI, Azure), `Retry-After` in seconds or as an HTTP date (RFC 9110),
and OpenAI's `x-ratelimit-reset-*` durations such as "6m0s" or "20ms", which only mean
"wait" when the matching `x-ratelimit-remaining-*` is 0.

What remains of its limits, on every answer (`provider_limits`): OpenAI's
`x-ratelimit-{limit,remaining,reset}-{requests,tokens}` and Anthropic's
`anthropic-ratelimit-{requests,tokens}-{limit,remaining,reset}` (reset: an RFC 3339 time).
litellm passes a provider's raw headers on with an `llm_provider-` prefix; both forms are read.

Every wait or reset read here is believed up to `MAX_PROVIDER_WAIT_S` (an hour): a
`Retry-After: 1e12`, a `x-ratelimit-reset-requests: 99999999h` or an anthropic reset in the
year 9999 would otherwise hold a target back for millennia (and overflow the clocks and
waits they feed); an hour re-checks the provider soon enough, and `force_close` forgets
what was learned at once.
"""

from __future__ import annotations

import re
import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from email.utils import parsedate_to_datetime
from typing import Any

_DURATION = re.compile(r"(\d+(?:\.\d+)?)(ms|h|m|s)")
_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}
# The longest a provider's word holds a target back: a Retry-After, a learned reset, a pause.
MAX_PROVIDER_WAIT_S = 3600.0


def bounded_wait(seconds: float) -> float:
    """`seconds` within 0 .. MAX_PROVIDER_WAIT_S."""
    return min(max(0.0, seconds), MAX_PROVIDER_WAIT_S)


def retry_after_seconds(headers: Mapping[str, Any], now: float | None = None) -> float | None:
    """Seconds to wait according to the response headers (at most MAX_PROVIDER_WAIT_S), or
    None when they do not say."""
    seconds = _retry_after(headers, now)
    return None if seconds is None else bounded_wait(seconds)


def _retry_after(headers: Mapping[str, Any], now: float | None) -> float | None:
    lower = {str(k).lower(): str(v).strip() for k, v in headers.items()} if headers else {}
    if "retry-after-ms" in lower:
        value = _number(lower["retry-after-ms"])
        if value is not None:
            return max(0.0, value / 1000.0)
    if "retry-after" in lower:
        value = _number(lower["retry-after"])
        if value is not None:
            return max(0.0, value)
        try:
            moment = parsedate_to_datetime(lower["retry-after"]).timestamp()
        except (TypeError, ValueError, IndexError):
            moment = None
        if moment is not None:
            return max(0.0, moment - (time.time() if now is None else now))
    resets = [
        _duration(lower.get(f"x-ratelimit-reset-{kind}", ""))
        for kind in ("requests", "tokens")
        if lower.get(f"x-ratelimit-remaining-{kind}") == "0"
    ]
    resets = [r for r in resets if r is not None]
    return max(resets) if resets else None


def _number(text: str) -> float | None:
    if not text:
        return None
    try:
        value = float(text)
    except ValueError:
        return None
    return value if value == value and value != float("inf") else None


def _duration(text: str) -> float | None:
    """'1m30.5s' -> 90.5; a bare number is seconds; at most MAX_PROVIDER_WAIT_S."""
    if not text:
        return None
    plain = _number(text)
    if plain is not None:
        return bounded_wait(plain)
    parts = _DURATION.findall(text)
    if not parts or "".join(n + u for n, u in parts) != text:
        return None
    return bounded_wait(sum(float(n) * _UNIT_SECONDS[u] for n, u in parts))


_PROVIDER_PREFIX = "llm_provider-"


@dataclass(frozen=True)
class Allowance:
    """What a provider says is left of one limit (requests or tokens)."""

    remaining: float
    reset_s: float | None = None  # until the limit is whole again
    limit: float | None = None


@dataclass(frozen=True)
class ProviderLimits:
    requests: Allowance | None = None
    tokens: Allowance | None = None

    def __bool__(self) -> bool:
        return self.requests is not None or self.tokens is not None


def provider_limits(headers: Mapping[str, Any] | None, now: float | None = None) -> ProviderLimits:
    """The provider's remaining requests and tokens, when its headers say (else empty)."""
    if not headers:
        return ProviderLimits()
    lower: dict[str, str] = {}
    for key, value in headers.items():
        name = str(key).lower()
        if name.startswith(_PROVIDER_PREFIX):
            name = name[len(_PROVIDER_PREFIX):]
        if "ratelimit" in name:
            lower.setdefault(name, str(value).strip())
    if not lower:
        return ProviderLimits()
    return ProviderLimits(*(_allowance(lower, kind, now) for kind in ("requests", "tokens")))


def _allowance(lower: Mapping[str, str], kind: str, now: float | None) -> Allowance | None:
    remaining = _number(lower.get(f"x-ratelimit-remaining-{kind}", ""))
    if remaining is not None:
        reset = _duration(lower.get(f"x-ratelimit-reset-{kind}", ""))
        if reset is None:  # litellm copies Anthropic's limit and remaining into x-ratelimit-*, not its reset
            reset = _moment(lower.get(f"anthropic-ratelimit-{kind}-reset", ""), now)
        return Allowance(max(0.0, remaining), reset, _number(lower.get(f"x-ratelimit-limit-{kind}", "")))
    remaining = _number(lower.get(f"anthropic-ratelimit-{kind}-remaining", ""))
    if remaining is not None:
        return Allowance(max(0.0, remaining), _moment(lower.get(f"anthropic-ratelimit-{kind}-reset", ""), now),
                         _number(lower.get(f"anthropic-ratelimit-{kind}-limit", "")))
    return None


def _moment(text: str, now: float | None) -> float | None:
    """Seconds until an RFC 3339 time such as 2024-01-01T00:00:30Z (at most MAX_PROVIDER_WAIT_S)."""
    if not text:
        return None
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()
    except (ValueError, OverflowError):
        return _duration(text)
    return bounded_wait(moment - (time.time() if now is None else now))
