"""Classify whatever a target raised into one row of the outcome table.

This is the one place that decides what a 429, a reset or a 401 means and what is done
about it: `HANDLING` is the outcome table, and `handle()` beside it reads a row together
with the target's retry policy and the chain's settings (retry a timeout only with
`retry_on_timeout`; a 429 only when its Retry-After is at most `max_retry_after`, and a
longer one keeps the circuit open that long; content policy fails over only when the
chain says so). The walk (walk/decisions.py) and the guard (guards/guard.py) act on the `Handling` it
returns and decide nothing themselves.

Classification reads the exception chain (`__cause__`/`__context__`) and status codes by
class *name*, so it works for litellm, the OpenAI SDK and httpx without importing any of
them (importing litellm costs seconds; `import router` must stay fast).
"""

from __future__ import annotations

import ast
import asyncio
import json
import re
import traceback
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from enum import Enum
from typing import Any

from .limits.provider_headers import retry_after_seconds
from .config.schema import ChainConfig, RetryPolicy


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
    MISCONFIGURED = "misconfigured"  # 401, 403, 404: wrong key, model or URL; 402, insufficient_quota: unpaid
    NO_CAPACITY = "no_capacity"  # a local queue or bulkhead is full
    THROTTLED = "throttled"  # its rate limit has no room within max_wait: nothing sent
    UNSENT = "unsent"  # failed in our process (the provider SDK's client side) before any request left
    UNSUPPORTED = "unsupported"  # the target cannot serve this kind of request (tools on the local tier)
    CANCELLED = "cancelled"  # the caller gave up
    CACHE_MISS = "cache_miss"  # a cache tier had no fresh answer for this request
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
    hold_for: float | None = None  # skip the target without requests this long (or until force_close)


HANDLING: Mapping[Outcome, Handling] = {
    Outcome.TRANSIENT: Handling(retry=True, counts=True, fail_over=True),
    # A silent provider rarely answers a second time sooner: next target at once,
    # unless the target sets retry_on_timeout.
    Outcome.SILENT: Handling(retry=False, counts=True, fail_over=True),
    # Retried only when Retry-After is short enough (handle()) and fits the deadline (guards/retry.py).
    Outcome.RATE_LIMITED: Handling(retry=True, counts=True, fail_over=True),
    Outcome.UNREACHABLE: Handling(retry=False, counts=True, fail_over=True),
    Outcome.REJECTED: Handling(retry=False, counts=False, fail_over=True),
    Outcome.CONTEXT_TOO_LONG: Handling(retry=False, counts=False, fail_over=True),
    # Another provider answering what one refused is rarely wanted: configurable per chain.
    Outcome.CONTENT_POLICY: Handling(retry=False, counts=False, fail_over=False),
    # Flagged loudly (guards/guard.py); an account that cannot pay is skipped, see handle().
    Outcome.MISCONFIGURED: Handling(retry=False, counts=False, fail_over=True),
    Outcome.NO_CAPACITY: Handling(retry=False, counts=False, fail_over=True),
    # Our own rate limit (limits/limiter.py) found no room soon enough: nothing was sent.
    Outcome.THROTTLED: Handling(retry=False, counts=False, fail_over=True),
    # No request reached the provider: the provider is not to blame and a retry would fail
    # the same way; another target (another SDK transform) may still manage.
    Outcome.UNSENT: Handling(retry=False, counts=False, fail_over=True),
    Outcome.UNSUPPORTED: Handling(retry=False, counts=False, fail_over=True),
    Outcome.CANCELLED: Handling(retry=False, counts=False, fail_over=False),
    # Asking the cache again finds the same nothing; a miss says nothing about the cache's health.
    Outcome.CACHE_MISS: Handling(retry=False, counts=False, fail_over=True),
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
    code: str | None = None  # the provider's own error code ("invalid_api_key", ...), when it sent one
    reason: str | None = None  # why, when the outcome alone does not say (QUOTA)

    @property
    def handling(self) -> Handling:
        """The table's row, before the per-target conditions of `handle()`."""
        return HANDLING[self.outcome]


# An account that cannot pay (402; OpenAI's 429 `insufficient_quota`) needs a person, not
# backoff: it is `misconfigured` for this reason, and skipped without requests until
# `force_close` or, to notice a topped-up account unattended, once every QUOTA_RECHECK_S.
QUOTA = "quota or billing"
QUOTA_RECHECK_S = 3600.0
_QUOTA_CODES = {"insufficient_quota", "billing_hard_limit_reached", "billing_not_active"}
_QUOTA_MARKERS = ("exceeded your current quota", "credit balance is too low")  # OpenAI's, Anthropic's (a 400)


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
    if outcome is Outcome.MISCONFIGURED and failure.reason == QUOTA:
        # a request per call to an account that cannot pay only adds to the bill of errors
        return Handling(row.retry, row.counts, row.fail_over, hold_for=QUOTA_RECHECK_S)
    if outcome is Outcome.CONTENT_POLICY and chain is not None and chain.on_content_policy == "fail_over":
        return Handling(row.retry, row.counts, True)
    return row


class TargetFailure(Exception):
    """Raised by our own targets (the local tier) for failures that are not exceptions of
    a provider SDK: it says its outcome outright."""

    def __init__(self, outcome: Outcome, message: str, *, status: int | None = None,
                 retry_after: float | None = None, own_clock: bool = False) -> None:
        self.outcome = outcome
        self.status = status
        self.retry_after = retry_after
        # SILENT measured against the target's own limit (first_token_timeout,
        # stream_idle_timeout), not the attempt's timeout: the call's deadline cutting
        # that timeout does not make it the deadline's doing
        self.own_clock = own_clock
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
_LITELLM_PREFIX = re.compile(r"^(?:litellm\.\w+: )+(?:\w+Error: )*(?:\w+(?:Exception|Error) - )?")
_BYTES_LITERAL = re.compile(r"""^b(['"]).*\1$""", re.S)
_CONTEXT_MARKERS = ("context_length_exceeded", "maximum context length", "context window",
                    "too many tokens", "prompt is too long")
_POLICY_MARKERS = ("content_policy", "content policy", "safety system", "content_filter")
_SDK_PATH = re.compile(r"[/\\](?:litellm|openai)[/\\]")


def classify(exc: BaseException, *, timeout_cut: bool = False) -> Failure:
    """Map any exception raised by a target call to a `Failure`.

    `timeout_cut`: the call's deadline had cut the attempt's timeout short, so a timeout
    is the deadline's doing (DEADLINE), no verdict on the target's silence.
    """
    failure = _classify(exc)
    if timeout_cut and failure.outcome is Outcome.SILENT and not (isinstance(exc, TargetFailure) and exc.own_clock):
        return Failure(Outcome.DEADLINE, exc, failure.status, failure.retry_after, failure.message)
    return failure


def _classify(exc: BaseException) -> Failure:
    if isinstance(exc, _CANCELLATION):
        return Failure(Outcome.CANCELLED, exc, message=_plain_message(exc))
    if isinstance(exc, TargetFailure):
        return Failure(exc.outcome, exc, status=exc.status, retry_after=exc.retry_after, message=str(exc))

    chain = list(_chain(exc))
    names = {cls.__name__ for link in chain for cls in type(link).__mro__}
    message = _provider_message(chain)
    if _unsent(chain, names):
        return Failure(Outcome.UNSENT, exc, message=f"the request could not be sent: {message}")
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
    # believed up to MAX_PROVIDER_WAIT_S (an hour: limits/provider_headers.py)
    retry_after = retry_after_seconds(_headers_of(chain)) if status == 429 else None
    code = _provider_code(chain)
    if status == 402 or (400 <= status < 500 and (_QUOTA_CODES & _error_words(chain)
                                                  or any(m in message.lower() for m in _QUOTA_MARKERS))):
        return Failure(Outcome.MISCONFIGURED, exc, status=status, message=message, code=code, reason=QUOTA)
    return Failure(_outcome_of_status(status, names, message), exc, status=status, retry_after=retry_after,
                   message=message, code=code)


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


# Builtin errors that are no client-side bug: a socket's, a body's, and the end of a
# stream's iterator (litellm raises its "ended before a finish_reason" from a StopIteration).
_NOT_CLIENT_BUGS = (OSError, json.JSONDecodeError, StopIteration, StopAsyncIteration)


def _unsent(chain: list[BaseException], names: set[str]) -> bool:
    """True when the failure happened inside the provider SDK before any request left.

    Judged by where the innermost error was raised, since litellm wraps its own client-side
    bugs (a content part it cannot transform, a string JSON cannot encode) in the same
    exception classes, with a made-up status 500, as a provider's 500: a plain Python error
    (TypeError, AttributeError, KeyError, UnicodeError, a bare Exception from litellm's own
    message checks) raised in litellm's or the OpenAI SDK's code, not while reading a
    response (no frame named *response*), with no network error and no undecodable body
    anywhere in the chain. A malformed reply fails in litellm's response conversion and
    stays `transient`; the local tier raises its own outcomes.
    """
    if names & (_UNREACHABLE_NAMES | _TIMEOUT_NAMES | _RESET_NAMES):
        return False
    root = chain[-1]
    if type(root).__module__ != "builtins" or isinstance(root, _NOT_CLIENT_BUGS):
        return False
    codes = [frame.f_code for frame, _ in traceback.walk_tb(root.__traceback__)]  # no source lines read
    in_sdk = any(_SDK_PATH.search(code.co_filename) for code in codes)
    return in_sdk and not any("response" in code.co_name.lower() for code in codes)


def _status_of(chain: list[BaseException]) -> int | None:
    """The HTTP status the provider sent: the innermost link's (litellm rewrites some, such
    as OpenAI's 413 "Request too large", which reaches us as a RateLimitError with 429,
    but keeps the original exception, and its response, in the chain)."""
    for link in reversed(chain):
        names = {cls.__name__ for cls in type(link).__mro__}
        if names & _CONNECTION_WRAPPERS:
            continue
        for status in (getattr(link, "status_code", None),
                       getattr(getattr(link, "response", None), "status_code", None)):
            if isinstance(status, int):
                return status
    return None


def _provider_code(chain: list[BaseException]) -> str | None:
    """The provider's error code; not litellm's own (a status as a string, "429")."""
    for link in chain:
        for code in _error_fields(link, "code"):
            if not code.isdigit():
                return code
    return None


def _error_words(chain: list[BaseException]) -> set[str]:
    """Every error code and type anywhere in the chain (litellm's wrapper says
    "throttling_error" where the provider's body said "insufficient_quota")."""
    return {word for link in chain for field in ("code", "type") for word in _error_fields(link, field)}


def _error_fields(link: BaseException, field: str) -> list[str]:
    body = getattr(link, "body", None)
    inner = body.get("error", body) if isinstance(body, Mapping) else None
    found = [getattr(link, field, None), inner.get(field) if isinstance(inner, Mapping) else None]
    return [value for value in found if isinstance(value, str) and value]


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
    message = _message_of_body(message) or message
    root = chain[-1]
    if isinstance(root, OSError) and root is not chain[0]:
        message += f" ({type(root).__name__}: {root})"  # "Connection error." alone says too little
    return message


def _message_of_body(text: str) -> str | None:
    """`error.message` of an error body quoted whole in an exception's text, as litellm
    quotes Anthropic's (`{"type": "error", "error": {"type": ..., "message": ...}}`; from a
    stream, as the repr of the bytes: `b'{...}'`), else None."""
    if _BYTES_LITERAL.match(text):
        try:
            text = ast.literal_eval(text).decode("utf-8", "replace")
        except (ValueError, SyntaxError, AttributeError):
            return None
    if not text.startswith("{"):
        return None
    try:
        body = json.loads(text)
    except ValueError:
        return None
    inner = body.get("error", body) if isinstance(body, Mapping) else None
    message = inner.get("message") if isinstance(inner, Mapping) else None
    return message.strip() if isinstance(message, str) and message.strip() else None


def _plain_message(exc: BaseException) -> str:
    message = getattr(exc, "message", None)
    if not isinstance(message, str) or not message:
        message = str(exc) or type(exc).__name__
    return message.strip()
