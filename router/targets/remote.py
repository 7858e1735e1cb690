"""Remote providers, all through litellm.

litellm is imported on the first remote call, not with `router`: it takes seconds to
import and, unless told otherwise, downloads a price list while doing so.
"""

from __future__ import annotations

import contextlib
import os
import socket
from collections.abc import AsyncIterator, Iterator
from typing import Any

from ..schema import TargetConfig
from ..request import Request
from ..outcomes import Outcome, TargetFailure
from ..response import Response
from . import Note, Target
from .sdk_clients import SdkClients

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
        self._clients = SdkClients(config)  # exact timeouts without a client per timeout

    def complete(self, request: Request, *, timeout: float, note: Note) -> Response:
        litellm = litellm_module()
        raw = litellm.completion(**self._arguments(request, timeout, self._clients.sync()))
        return _answer(raw)

    async def acomplete(self, request: Request, *, timeout: float, note: Note) -> Response:
        litellm = litellm_module()
        raw = await litellm.acompletion(**self._arguments(request, timeout, self._clients.for_running_loop()))
        return _answer(raw)

    def stream(self, request: Request, *, timeout: float, note: Note, partial: str = "") -> Iterator[Any]:
        """litellm's chunks; `timeout` bounds each read, the router times the gaps. The
        result's `abort()` closes the connection from another thread (stream_sources.py)."""
        litellm = litellm_module()
        return AbortableChunks(litellm.completion(stream=True,
                                                  **self._arguments(request, timeout, self._clients.sync())))

    async def astream(self, request: Request, *, timeout: float, note: Note) -> AsyncIterator[Any]:
        litellm = litellm_module()
        return await litellm.acompletion(stream=True, **self._arguments(request, timeout,
                                                                        self._clients.for_running_loop()))

    def _arguments(self, request: Request, timeout: float, client: Any) -> dict[str, Any]:
        own = {"client": client} if client is not None else {}
        return {"messages": request.messages, "timeout": timeout, **self.config.params, **request.params,
                **self._fixed, **own}

    def __repr__(self) -> str:
        return f"RemoteTarget({self.config.name!r}, model={self.config.model!r})"


class AbortableChunks:
    """litellm's sync chunk iterator, plus `abort()`: shut its socket down from any thread.

    A thread blocked reading a stream is not woken by closing the socket (Linux), only by
    shutting it down; without this a stalled or abandoned stream kept its reader thread
    and connection until the read timeout (30 s by default). The socket is found through
    public attributes: litellm's `completion_stream` (the OpenAI SDK's `Stream`), its
    httpx `response`, httpcore's `network_stream` extension. A provider that litellm
    streams another way has no such path: `abort()` does nothing, the read timeout ends it.
    """

    def __init__(self, chunks: Any) -> None:
        self._chunks = chunks

    def __iter__(self) -> Iterator[Any]:
        return iter(self._chunks)

    def close(self) -> None:
        close = getattr(self._chunks, "close", None)
        if close is not None:
            close()

    def abort(self) -> None:
        response = getattr(getattr(self._chunks, "completion_stream", None), "response", None)
        network = getattr(response, "extensions", {}).get("network_stream")
        sock = network.get_extra_info("socket") if network is not None else None
        if sock is not None:
            with contextlib.suppress(OSError):  # already closed: nothing left to wake
                sock.shutdown(socket.SHUT_RDWR)


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
