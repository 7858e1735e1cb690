"""Remote providers, all through litellm.

litellm is imported on the first remote call, not with `router`: it takes seconds to
import and, unless told otherwise, downloads a price list while doing so.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Iterator
from typing import Any

from ..schema import TargetConfig
from ..request import Request
from ..outcomes import Outcome, TargetFailure
from ..response import Response
from . import Note, Target

_litellm: Any = None


def litellm_module() -> Any:
    """Import litellm once, offline (its bundled price list instead of a download).

    Its "Give Feedback / Get Help" banner is turned off: it prints to stdout on every
    provider error, and a router sees provider errors as routine.
    """
    global _litellm
    if _litellm is None:
        os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
        import litellm

        litellm.suppress_debug_info = True
        _litellm = litellm
    return _litellm


class RemoteTarget(Target):
    """One provider + model reached with `litellm.completion`."""

    streams_async = True  # litellm's acompletion(stream=True)
    continues_streams = False  # providers do not reliably resume from a partial assistant turn

    def __init__(self, config: TargetConfig) -> None:
        self.config = config
        fixed: dict[str, Any] = {"model": config.model, "max_retries": 0}  # one attempt = one request
        if config.api_base:
            fixed["api_base"] = config.api_base
        if config.api_key is not None:
            fixed["api_key"] = config.api_key.reveal()
        self._fixed = fixed

    def complete(self, request: Request, *, timeout: float, note: Note) -> Response:
        raw = litellm_module().completion(**self._arguments(request, timeout))
        return _answer(raw)

    async def acomplete(self, request: Request, *, timeout: float, note: Note) -> Response:
        raw = await litellm_module().acompletion(**self._arguments(request, timeout))
        return _answer(raw)

    def stream(self, request: Request, *, timeout: float, note: Note, partial: str = "") -> Iterator[Any]:
        """litellm's chunk iterator; `timeout` bounds each read, the router times the gaps."""
        return litellm_module().completion(stream=True, **self._arguments(request, timeout))

    async def astream(self, request: Request, *, timeout: float, note: Note) -> AsyncIterator[Any]:
        return await litellm_module().acompletion(stream=True, **self._arguments(request, timeout))

    def _arguments(self, request: Request, timeout: float) -> dict[str, Any]:
        return {"messages": request.messages, "timeout": timeout, **self.config.params, **request.params,
                **self._fixed}

    def __repr__(self) -> str:
        return f"RemoteTarget({self.config.name!r}, model={self.config.model!r})"


def _answer(raw: Any) -> Response:
    """The provider's reply, or TRANSIENT when it is a 200 without an answer: litellm
    passes `"choices": []` through as an empty success, which would end the chain walk.
    With the provider's HTTP headers, which litellm keeps in `_hidden_params
    ["additional_headers"]` (OpenAI-compatible ones as sent, every raw one also as
    `llm_provider-<name>`): the rate limiter reads what remains of the quota."""
    response = Response.from_openai(raw)
    if not response.choices:
        raise TargetFailure(Outcome.TRANSIENT, "malformed reply: a 200 with no choices")
    hidden = getattr(raw, "_hidden_params", None)
    if isinstance(hidden, dict):
        response.headers = hidden.get("additional_headers") or None
    return response
