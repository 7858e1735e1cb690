"""Read how long a rate-limited provider asked us to wait.

Providers say it in different headers: `retry-after-ms` (OpenAI, Azure), `Retry-After` in
seconds or as an HTTP date (RFC 9110), and OpenAI's `x-ratelimit-reset-*` durations such as
"6m0s" or "20ms", which only mean "wait" when the matching `x-ratelimit-remaining-*` is 0.
"""

from __future__ import annotations

import re
import time
from collections.abc import Mapping
from email.utils import parsedate_to_datetime
from typing import Any

_DURATION = re.compile(r"(\d+(?:\.\d+)?)(ms|h|m|s)")
_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}


def retry_after_seconds(headers: Mapping[str, Any], now: float | None = None) -> float | None:
    """Seconds to wait according to the response headers, or None when they do not say."""
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
    try:
        value = float(text)
    except ValueError:
        return None
    return value if value == value and value != float("inf") else None


def _duration(text: str) -> float | None:
    """'1m30.5s' -> 90.5; a bare number is seconds."""
    if not text:
        return None
    plain = _number(text)
    if plain is not None:
        return max(0.0, plain)
    parts = _DURATION.findall(text)
    if not parts or "".join(n + u for n, u in parts) != text:
        return None
    return sum(float(n) * _UNIT_SECONDS[u] for n, u in parts)
