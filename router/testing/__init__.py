"""Testing helpers: a fault-injecting server for failover tests that speaks OpenAI's
Chat Completions and Anthropic's Messages API.

    from router.testing import FaultServer, faults

    with FaultServer() as server:
        server.script("m1", faults.status(503), faults.ok("hi"))
        ...  # point litellm at model "openai/m1", api_base=server.url,
             # or at "anthropic/m1", api_base=server.anthropic_url

Run one from a shell with ``python -m router.testing --help``.
"""

from . import faults
from .faults import (
    Fault,
    content_policy,
    context_too_long,
    flaky,
    hang,
    limited,
    malformed,
    ok,
    recover_after,
    refuse_prefill,
    reset,
    status,
    stream,
    tool_call,
)
from .server import FaultServer, ReceivedRequest

__all__ = [
    "FaultServer", "ReceivedRequest", "Fault", "faults",
    "ok", "status", "context_too_long", "content_policy", "hang", "reset",
    "malformed", "flaky", "recover_after", "stream", "limited", "refuse_prefill", "tool_call",
]
