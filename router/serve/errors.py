"""The router's exceptions as OpenAI-shaped HTTP errors, with the status a client acts on.

| what | status | type / code |
|---|---|---|
| body not JSON, not an object, bad messages or parameters (`InvalidRequest`) | 400 | invalid_request_error |
| no or wrong bearer key | 401 | invalid_request_error / invalid_api_key |
| the key may not call this chain | 403 | permission_error / chain_not_allowed |
| unknown path | 404 | invalid_request_error / not_found |
| `model` names no chain | 404 | invalid_request_error / model_not_found |
| body over `server.max_body_bytes` | 413 | invalid_request_error / request_too_large |
| the key's `rate_limit` has no room within its `max_wait` | 429 | rate_limit_error / rate_limit_exceeded |
| `ContentRejected` | the provider's status (400 when it sent none) | invalid_request_error / content_policy_violation |
| `AllTargetsFailed`, every target skipped without a request (circuits open, disabled, throttled, full) | 503 | server_error / no_target_available |
| `AllTargetsFailed`, every request timed out (silent, deadline) | 504 | timeout_error / upstream_timeout |
| `AllTargetsFailed`, every request refused as the caller's fault (rejected, context_too_long) | 400 | invalid_request_error / upstream_rejected |
| `AllTargetsFailed`, anything else | 502 | server_error / upstream_error |

The message of an `AllTargetsFailed` is the router's own (each target and why), already
redacted by the router's `Redactor`. 5xx answers carry `x-should-retry: false`: the router
has retried and failed over already, and the openai SDK would otherwise retry twice more,
multiplying retries across layers.
"""

from __future__ import annotations

from typing import Any

from ..errors import AllTargetsFailed, ContentRejected, InvalidRequest
from .shapes import error_body

_SKIPPED = frozenset({"circuit_open", "disabled", "offline", "too_small", "throttled", "no_capacity",
                      "unsupported", "cache_miss", "unsent"})
_TIMED_OUT = frozenset({"silent", "deadline"})
_CALLERS_FAULT = frozenset({"rejected", "context_too_long"})


class GatewayError(Exception):
    """An answer in OpenAI's error shape: `status`, and the body's message, type and code."""

    def __init__(self, status: int, message: str, type: str, code: str | None = None, *,
                 param: str | None = None, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.type = type
        self.code = code
        self.param = param
        self.headers = dict(headers or {})
        if status >= 500:
            self.headers.setdefault("x-should-retry", "false")

    def body(self) -> bytes:
        return error_body(self.message, self.type, self.code, self.param)


def bad_request(message: str, param: str | None = None) -> GatewayError:
    return GatewayError(400, message, "invalid_request_error", None, param=param)


def unauthorized() -> GatewayError:
    return GatewayError(401, "Missing or incorrect API key: send 'Authorization: Bearer <key>' with a key "
                             "from the gateway's server.keys.", "invalid_request_error", "invalid_api_key",
                        headers={"www-authenticate": "Bearer"})


def forbidden(key_name: str, chain: str) -> GatewayError:
    return GatewayError(403, f"The key {key_name!r} may not call the chain {chain!r}.", "permission_error",
                        "chain_not_allowed")


def model_not_found(model: Any, chains: list[str]) -> GatewayError:
    return GatewayError(404, f"The model {model!r} does not exist: model names a chain of this gateway "
                             f"({', '.join(chains)}).", "invalid_request_error", "model_not_found", param="model")


def too_large(limit: int) -> GatewayError:
    return GatewayError(413, f"The request body is larger than this gateway accepts ({limit} bytes, "
                             f"server.max_body_bytes).", "invalid_request_error", "request_too_large")


def rate_limited(key_name: str, wait_s: float) -> GatewayError:
    seconds = max(1, int(wait_s + 0.999)) if wait_s != float("inf") else 60
    return GatewayError(429, f"The key {key_name!r} is over its rate limit (server.keys rate_limit).",
                        "rate_limit_error", "rate_limit_exceeded", headers={"retry-after": str(seconds)})


def from_router_error(exc: BaseException) -> GatewayError:
    """The HTTP error for an exception `Router.acomplete` raised before any answer."""
    if isinstance(exc, InvalidRequest):
        return bad_request(str(exc))
    if isinstance(exc, ContentRejected):
        status = next((a.status for a in reversed(exc.route.attempts)
                       if a.outcome == "content_policy" and a.status), None) or 400
        return GatewayError(status, str(exc), "invalid_request_error", "content_policy_violation")
    if isinstance(exc, AllTargetsFailed):
        return _all_failed(exc)
    return GatewayError(500, f"internal error: {type(exc).__name__}", "server_error", "internal_error")


def _all_failed(exc: AllTargetsFailed) -> GatewayError:
    last: dict[str, str] = {}
    for attempt in exc.attempts:
        last[attempt.target] = attempt.outcome
    outcomes = set(last.values())
    if not outcomes or outcomes <= _SKIPPED:
        return GatewayError(503, str(exc), "server_error", "no_target_available")
    if outcomes <= _TIMED_OUT | _SKIPPED:
        return GatewayError(504, str(exc), "timeout_error", "upstream_timeout")
    if outcomes <= _CALLERS_FAULT | _SKIPPED:
        return GatewayError(400, str(exc), "invalid_request_error", "upstream_rejected")
    return GatewayError(502, str(exc), "server_error", "upstream_error")
