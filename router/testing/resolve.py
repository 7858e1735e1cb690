"""Which concrete fault a composite (flaky / recover_after / refuse_prefill / limited)
answers with right now, for one request. Faults (faults.py) only describe; this is where
time, chance and the request body decide, with per-step state the server keeps.
"""

from __future__ import annotations

import random
from collections import deque
from dataclasses import replace
from typing import Any, Mapping, Optional

from .faults import (PREFILL_REFUSED_MESSAGE, Fault, Flaky, Limited, Ok, RecoverAfter, RefusePrefill,
                     status)
from .wire import prefill_of


def resolve(fault: Fault, state: dict, now: float, body: Optional[Mapping[str, Any]] = None) -> Fault:
    """Pick the concrete fault a composite (flaky / recover_after / refuse_prefill) answers
    with right now, for the request ``body``.

    ``state`` belongs to one script step and keeps each composite's random generator or
    start time, keyed by ``id(composite)``; the caller serialises access.
    """
    while True:
        if isinstance(fault, RefusePrefill):
            if prefill_of(body) is None:
                fault = fault.otherwise
                continue
            return status(400, message=PREFILL_REFUSED_MESSAGE)
        if isinstance(fault, Flaky):
            rng = state.get(id(fault))
            if rng is None:
                rng = state[id(fault)] = random.Random(fault.seed)
            fault = fault.fault if rng.random() < fault.p else fault.otherwise
        elif isinstance(fault, RecoverAfter):
            first = state.setdefault(id(fault), now)
            fault = fault.fault if now - first < fault.seconds else fault.then
        elif isinstance(fault, Limited):
            return _limit(fault, state.setdefault(id(fault), deque()), now)
        else:
            return fault


def _limit(fault: Limited, accepted: deque, now: float) -> Fault:
    """One request against a sliding-window limit: ``then`` or a 429, with headers."""
    while accepted and accepted[0] <= now - fault.window:
        accepted.popleft()
    allowed = len(accepted) < fault.requests
    if allowed:
        accepted.append(now)
    if not fault.headers:
        return resolve(fault.then, {}, now) if allowed else status(429)
    whole_in = accepted[-1] + fault.window - now if accepted else 0.0  # until the window is empty again
    headers = {"x-ratelimit-limit-requests": str(fault.requests),
               "x-ratelimit-remaining-requests": str(fault.requests - len(accepted)),
               "x-ratelimit-reset-requests": f"{max(0.0, whole_in):.3f}s"}
    if not allowed:
        frees_in = accepted[0] + fault.window - now  # the oldest leaves the window
        return status(429, retry_after_ms=round(max(0.0, frees_in) * 1000, 1), headers=headers)
    then = resolve(fault.then, {}, now)
    if isinstance(then, Ok):
        return replace(then, headers={**(then.headers or {}), **headers})
    return then

