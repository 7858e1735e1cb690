"""Classify whatever a target raised into one row of the outcome table.

This is the one place that decides what a 429, a reset or a 401 means and what is done
about it: `HANDLING` is the outcome table, and `handle()` beside it reads a row together
with the target's retry policy and the chain's settings (retry a timeout only with
`retry_on_timeout`; a 429 only when its Retry-After is at most `max_retry_after`, and a
longer one keeps the circuit open that long; content policy fails over only when the
chain says so). The walk (walk.py) and the guard (guard.py) act on the `Handling` it
returns and decide nothing themselves.

Classification reads the exception chain (`__cause__`/`__context__`) and status codes by
class *name*, so it works for litellm, the OpenAI SDK and httpx without importing any of
them (importing litellm costs seconds; `import router` must stay fast).
"""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from enum import Enum
from typing import Any

from .ratelimit import retry_after_seconds
from .schema import ChainConfig, RetryPolicy


class Outcome(str, Enum):
    OK = "ok"
    # what an attempt can end in
    TRANSIENT = "transient"  # 5xx, 408, reset, malformed body
    SILENT = "silent"  # no answer within the attempt's timeout
    RATE_LIMITED = "rate_limited"  # 429
    UNREACHABLE = "unreachable"  # DNS failure, connection refused
    REJECTED = "rejected"  # 400, unsupported parameter
    CONTEXT_TOO_LONG = "context_too_long"
    CONTENT_POLICY = "content_policy"
    MISCONFIGURED = "misconfigured"  # 401, 403, 404: wrong key, model or URL
    NO_CAPACITY = "no_capacity"  # a local queue or bulkhead is full
    CANCELLED = "cancelled"  # the caller gave up
    # why a target was passed over without a request
    CIRCUIT_OPEN = "circuit_open"
    DISABLED = "disabled"
    DEADLINE = "deadline"
    TOO_SMALL = "too_small"  # a smaller context window than one that already overflowed
    OFFLINE = "offline"


@dataclass(frozen=True)
class Handling:
    retry: bool  # may the same target be tried again (attempts, deadline, circuit, budget permitting)
    counts: bool  # counts as a failure against the target's circuit (and its retry budget)
    fail_over: bool  # may the next target of the chain be tried
    open_for: float | None = None  # keep the target's circuit open this many seconds


HANDLING: Mapping[Outcome, Handling] = {
    Outcome.TRANSIENT: Handling(retry=True, counts=True, fail_over=True),
    # A silent provider rarely answers a second time sooner: next target at once,
    # unless the target sets retry_on_timeout.
    Outcome.SILENT: Handling(retry=False, counts=True, fail_over=True),
    # Retried only when Retry-After is short enough (handle()) and fits the deadline (retry.py).
    Outcome.RATE_LIMITED: Handling(retry=True, counts=True, fail_over=True),
    Outcome.UNREACHABLE: Handling(retry=False, counts=True, fail_over=True),
    Outcome.REJECTED: Handling(retry=False, counts=False, fail_over=True),
    Outcome.CONTEXT_TOO_LONG: Handling(retry=False, counts=False, fail_over=True),
    # Another provider answering what one refused is rarely wanted: configurable per chain.
    Outcome.CONTENT_POLICY: Handling(retry=False, counts=False, fail_over=False),
    Outcome.MISCONFIGURED: Handling(retry=False, counts=False, fail_over=True),
    Outcome.NO_CAPACITY: Handling(retry=False, counts=False, fail_over=True),
    Outcome.CANCELLED: Handling(retry=False, counts=False, fail_over=False),
    # The attempt's timeout was cut short by the call's deadline: no verdict on the target.
    Outcome.DEADLINE: Handling(retry=False, counts=False, fail_over=True),
}


@dataclass(frozen=True)
class Failure:
    """One failed attempt, classified."""

    outcome: Outcome
    error: BaseException
    status: int | None = None
    retry_after: float | None = None  # seconds the provider asked us to wait
    message: str = ""

    @property
    def handling(self) -> Handling:
        """The table's row, before the per-target conditions of `handle()`."""
        return HANDLING[self.outcome]


def handle(failure: Failure, retry: RetryPolicy, chain: ChainConfig | None = None) -> Handling:
    """What to do about `failure` on a target with `retry` policy in `chain`: the table's
    row with its conditions applied. The only place those conditions live."""
    row = HANDLING[failure.outcome]
    outcome = failure.outcome
    if outcome is Outcome.SILENT:
        return Handling(retry.retry_on_timeout, row.counts, row.fail_over)
    if outcome is Outcome.RATE_LIMITED:
        after = failure.retry_after
        if after is not None and after > retry.max_retry_after:
            # out of rotation, for every caller sharing the circuit, until the provider said
            return Handling(False, row.counts, row.fail_over, open_for=after)
        return Handling(after is not None, row.counts, row.fail_over)
    if outcome is Outcome.CONTENT_POLICY and chain is not None and chain.on_content_policy == "fail_over":
        return Handling(row.retry, row.counts, True)
    return row


class TargetFailure(Exception):
    """Raised by our own targets (the local tier) for failures that are not exceptions of
    a provider SDK: it says its outcome outright."""

    def __init__(self, outcome: Outcome, message: str) -> None:
        self.outcome = outcome
        super().__init__(message)


_CANCELLATION = (KeyboardInterrupt, SystemExit, GeneratorExit, asyncio.CancelledError)
_TIMEOUT_NAMES = {"APITimeoutError", "TimeoutException", "TimeoutError", "timeout", "ReadTimeout",
                  "ConnectTimeout", "WriteTimeout", "PoolTimeout", "Timeout"}
_UNREACHABLE_NAMES = {"ConnectError", "ConnectionRefusedError", "gaierror", "herror",
                      "NetworkUnreachable"}
_RESET_NAMES = {"ConnectionResetError", "RemoteProtocolError", "ReadError", "WriteError",
                "BrokenPipeError", "ConnectionAbortedError", "IncompleteRead"}
_CONNECTION_WRAPPERS = {"APIConnectionError", "APITimeoutError", "Timeout"}
_HTTP_STATUS_NAMES = {"HTTPStatusError", "APIStatusError"}
_LITELLM_PREFIX = re.compile(r"^(?:litellm\.\w+: )+(?:\w+Error: )*(?:\w+Exception - )?")
_CONTEXT_MARKERS = ("context_length_exceeded", "maximum context length", "context window",
                    "too many tokens", "prompt is too long")
_POLICY_MARKERS = ("content_policy", "content policy", "safety system", "content_filter")


def classify(exc: BaseException, *, timeout_cut: bool = False) -> Failure:
    """Map any exception raised by a target call to a `Failure`.

    `timeout_cut`: the call's deadline had cut the attempt's timeout short, so a timeout
    is the deadline's doing (DEADLINE), no verdict on the target's silence.
    """
    failure = _classify(exc)
    if timeout_cut and failure.outcome is Outcome.SILENT:
        return Failure(Outcome.DEADLINE, exc, failure.status, failure.retry_after, failure.message)
    return failure


def _classify(exc: BaseException) -> Failure:
    if isinstance(exc, _CANCELLATION):
        return Failure(Outcome.CANCELLED, exc, message=_plain_message(exc))
    if isinstance(exc, TargetFailure):
        return Failure(exc.outcome, exc, message=str(exc))

    chain = list(_chain(exc))
    names = {cls.__name__ for link in chain for cls in type(link).__mro__}
    message = _provider_message(chain)
    # Network-level causes first: litellm gives connection errors a made-up status 500.
    if names & _UNREACHABLE_NAMES:
        return Failure(Outcome.UNREACHABLE, exc, message=message)
    if names & _TIMEOUT_NAMES and not names & _HTTP_STATUS_NAMES:  # a server-sent 408 is no silence
        return Failure(Outcome.SILENT, exc, message=message)
    if names & _RESET_NAMES:
        return Failure(Outcome.TRANSIENT, exc, message=message)
    if any(isinstance(link, json.JSONDecodeError) for link in chain):
        return Failure(Outcome.TRANSIENT, exc, message=message)

    status = _status_of(chain)
    if status is None:
        return Failure(Outcome.TRANSIENT, exc, message=message)
    return Failure(_outcome_of_status(status, names, message), exc, status=status,
                   retry_after=retry_after_seconds(_headers_of(chain)) if status == 429 else None,
                   message=message)


def _outcome_of_status(status: int, names: set[str], message: str) -> Outcome:
    lowered = message.lower()
    if status == 429:
        return Outcome.RATE_LIMITED
    if status in (401, 403, 404):
        return Outcome.MISCONFIGURED
    if "ContextWindowExceededError" in names or status == 413 or any(m in lowered for m in _CONTEXT_MARKERS):
        return Outcome.CONTEXT_TOO_LONG
    if "ContentPolicyViolationError" in names or any(m in lowered for m in _POLICY_MARKERS):
        return Outcome.CONTENT_POLICY
    if status in (408, 409, 425) or status >= 500:
        return Outcome.TRANSIENT
    if 400 <= status < 500:
        return Outcome.REJECTED
    return Outcome.TRANSIENT


def _chain(exc: BaseException) -> Iterator[BaseException]:
    seen: set[int] = set()
    link: BaseException | None = exc
    while link is not None and id(link) not in seen:
        seen.add(id(link))
        yield link
        link = link.__cause__ or link.__context__


def _status_of(chain: list[BaseException]) -> int | None:
    for link in chain:
        names = {cls.__name__ for cls in type(link).__mro__}
        if names & _CONNECTION_WRAPPERS:
            continue
        for status in (getattr(link, "status_code", None),
                       getattr(getattr(link, "response", None), "status_code", None)):
            if isinstance(status, int):
                return status
    return None


def _headers_of(chain: list[BaseException]) -> Mapping[str, Any]:
    for link in chain:
        for headers in (getattr(link, "litellm_response_headers", None),
                        getattr(getattr(link, "response", None), "headers", None),
                        getattr(link, "headers", None)):
            if headers:
                return headers
    return {}


def _provider_message(chain: list[BaseException]) -> str:
    """The provider's own words: the error body's message when one arrived, else the
    exception text without litellm's "litellm.XError: XError: OpenAIException - " prefix."""
    for link in chain:
        body = getattr(link, "body", None)
        if isinstance(body, Mapping):
            inner = body.get("error", body)
            message = inner.get("message") if isinstance(inner, Mapping) else None
            if isinstance(message, str) and message:
                return message.strip()
    message = _LITELLM_PREFIX.sub("", _plain_message(chain[0]))
    root = chain[-1]
    if isinstance(root, OSError) and root is not chain[0]:
        message += f" ({type(root).__name__}: {root})"  # "Connection error." alone says too little
    return message


def _plain_message(exc: BaseException) -> str:
    message = getattr(exc, "message", None)
    if not isinstance(message, str) or not message:
        message = str(exc) or type(exc).__name__
    return message.strip()
