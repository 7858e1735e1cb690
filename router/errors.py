"""The exceptions a caller of the router can see.

Every error the router raises on its own account derives from `RouterError`.
Provider errors are never swallowed, but never passed on raw either: a provider's
exception holds its HTTP request (Authorization header included) and often quotes the key
in its text, and an application that logs `exc.errors` or the `__cause__` chain would write
the key to its logs. What is passed on (`__cause__`, `AllTargetsFailed.errors`) is a
`ProviderError`: the original class name, HTTP status, provider error code, outcome and a
redacted message, and nothing else.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .response import Attempt, Route


class RouterError(Exception):
    """Base class of every error raised by the router itself."""


class ConfigError(RouterError, ValueError):
    """The configuration is unusable: names the file, the key path and what was expected."""

    def __init__(self, message: str, *, file: str = "<dict>", key_path: str = "") -> None:
        self.file = file
        self.key_path = key_path
        self.reason = message
        where = f"{file}: {key_path}" if key_path else file
        super().__init__(f"{where}: {message}")


class InvalidRequest(RouterError, ValueError):
    """The request itself is malformed; raised before any network call."""


class ProviderError(RouterError):
    """A target's failure, redacted: what a debugger needs without the secret.

    `type` is the original exception's class name, and so is this object's own class name
    (a subclass made per name), so `type(exc.__cause__).__name__` reads as before.
    """

    def __init__(self, message: str, *, type: str, status: int | None = None, code: str | None = None,
                 outcome: str = "", target: str = "") -> None:
        self.type = type
        self.status = status
        self.code = code
        self.outcome = outcome
        self.target = target
        self.message = message
        super().__init__(message)

    def __repr__(self) -> str:
        facts = "".join(f", {k}={v!r}" for k, v in (("status", self.status), ("code", self.code),
                                                     ("outcome", self.outcome), ("target", self.target)) if v)
        return f"{self.type}({self.message!r}{facts})"


_PROVIDER_ERROR_CLASSES: dict[str, type[ProviderError]] = {}


def provider_error(type_name: str, message: str, **facts: Any) -> ProviderError:
    """A `ProviderError` whose class is named like the original exception's."""
    cls = _PROVIDER_ERROR_CLASSES.get(type_name)
    if cls is None:
        name = type_name if type_name.isidentifier() else "ProviderError"
        cls = type(name, (ProviderError,), {"__module__": __name__, "__qualname__": name})
        _PROVIDER_ERROR_CLASSES[type_name] = cls
    return cls(message, type=type_name, **facts)


class AllTargetsFailed(RouterError):
    """No target of the chain produced an answer.

    `route.attempts` holds every attempt; `errors` maps each target that was tried to
    its last failure, as a redacted `ProviderError` (also chained as `__cause__`).
    """

    def __init__(self, chain: str, route: Route, errors: dict[str, ProviderError]) -> None:
        self.chain = chain
        self.route = route
        self.errors = errors
        super().__init__(_describe_failures(chain, route.attempts))

    @property
    def attempts(self) -> list[Attempt]:
        return self.route.attempts


class ContentRejected(RouterError):
    """A provider refused the request on content-policy grounds.

    By default this is not failed over (another provider answering what one refused is
    rarely what the application wants); `reason` is the provider's own message.
    """

    def __init__(self, target: str, reason: str, route: Route) -> None:
        self.target = target
        self.reason = reason
        self.route = route
        super().__init__(f"{target} refused the request on content policy: {reason}")


class StreamInterrupted(RouterError):
    """A stream broke after content reached the caller; `partial_text` is what was sent."""

    def __init__(self, message: str, *, partial_text: str, route: Route | None = None) -> None:
        self.partial_text = partial_text
        self.route = route
        super().__init__(message)


def _describe_failures(chain: str, attempts: list[Attempt]) -> str:
    """One clause per target: its last outcome, how many attempts, and the provider's words."""
    last: dict[str, Attempt] = {}
    counts: dict[str, int] = {}
    for attempt in attempts:
        last[attempt.target] = attempt
        if attempt.error is not None or attempt.status is not None:
            counts[attempt.target] = counts.get(attempt.target, 0) + 1
    if not last:
        return f"chain {chain!r} has no usable target"
    clauses = []
    for target, attempt in last.items():
        facts = " ".join(str(x) for x in (attempt.error, attempt.status) if x)
        if counts.get(target, 0) > 1:
            facts += f", {counts[target]} attempts"
        clause = f"{target}: {attempt.outcome}" + (f" ({facts})" if facts else "")
        if attempt.detail:
            clause += f": {attempt.detail}"
        clauses.append(clause)
    return f"all targets of chain {chain!r} failed; " + "; ".join(clauses)
