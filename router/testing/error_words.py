"""What the fault server's errors say by default: OpenAI's words for each status, and the
messages of the named faults (context too long, content policy, a refused prefill).
anthropic_wire.py has Anthropic's words for the same faults.
"""

from __future__ import annotations

from typing import Optional

CONTEXT_TOO_LONG_MESSAGE = (
    "This model's maximum context length is 8192 tokens. However, your messages "
    "resulted in 9000 tokens. Please reduce the length of the messages."
)
CONTENT_POLICY_MESSAGE = "Your request was rejected as a result of our safety system."
PREFILL_REFUSED_MESSAGE = (
    "This model does not support assistant message prefill. "
    "The conversation must end with a user message."
)
# OpenAI's 413 for a request above the tokens-per-minute limit: a size error that says
# "rate_limit_exceeded" (litellm turns it into a RateLimitError with status 429).
REQUEST_TOO_LARGE_MESSAGE = (
    "Request too large for gpt-4o in organization org-fault on tokens per min (TPM): Limit 30000, "
    "Requested 45000. The input or output tokens must be reduced in order to run successfully. "
    "Visit https://platform.openai.com/account/rate-limits to learn more."
)
# In a `status` message, replaced by the request's Authorization header (a provider quoting the key back).
AUTHORIZATION = "{authorization}"

_SERVER_ERROR = "The server had an error while processing your request. Sorry about that!"

# code -> (message, error type, error code): what OpenAI answers, roughly.
_STATUS_DEFAULTS: dict[int, tuple[str, str, Optional[str]]] = {
    400: ("Invalid request.", "invalid_request_error", None),
    401: ("Incorrect API key provided.", "invalid_request_error", "invalid_api_key"),
    403: ("You are not allowed to access this resource.", "permission_error", None),
    404: (
        "The model does not exist or you do not have access to it.",
        "invalid_request_error",
        "model_not_found",
    ),
    408: ("Request timed out.", "timeout_error", None),
    413: ("Request too large.", "invalid_request_error", None),
    422: ("Unprocessable request.", "invalid_request_error", None),
    429: ("Rate limit reached. Please try again later.", "rate_limit_error", "rate_limit_exceeded"),
    503: ("The server is overloaded or not ready yet.", "server_error", None),
    529: ("Overloaded", "overloaded_error", None),  # Anthropic's "overloaded"
}


def default_status(code: int) -> tuple[str, str, Optional[str]]:
    """(message, error type, error code) that ``status(code)`` uses when not told."""
    if code >= 500:
        return _STATUS_DEFAULTS.get(code, (_SERVER_ERROR, "server_error", None))
    return _STATUS_DEFAULTS.get(code, (f"Request failed with status {code}.", "invalid_request_error", None))
