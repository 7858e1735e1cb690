"""Remote providers, all through litellm.

litellm is imported off `import router`: it takes seconds to import (2-11 s on this
busy 2-core machine) and, unless told otherwise, downloads a price list while doing so.
Its first call then imports ~100 more modules (the provider's handler, the HTTP client,
the stream wrapper: another 1-2.5 s, measured). A Router with remote targets does both in
a background thread when it is built (`warm_litellm`: the import, then one sync and one
async stream answered by litellm's own `mock_response`, no network), and every attempt
waits for that (`ready`) before its clock starts: our own imports never count against a
provider's `timeout` or `first_token_timeout` (first call after warming: 0.09 s).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import threading
from collections.abc import AsyncIterator, Iterator
from typing import Any

from .prefill import continuation_params, prefill_messages
from ..config.schema import TargetConfig
from ..request import Request, estimated_tokens
from ..outcomes import Outcome, TargetFailure
from ..response import Response
from . import Note, Target
from .sdk_clients import SdkClients

_litellm: Any = None
_import_lock = threading.Lock()
_warm_lock = threading.Lock()
_warm = threading.Event()


def litellm_module() -> Any:
    """Import litellm once, offline (its bundled price list instead of a download).

    Its "Give Feedback / Get Help" banner is turned off: it prints to stdout on every
    provider error, and a router sees provider errors as routine.
    """
    global _litellm
    if _litellm is None:
        with _import_lock:  # a second caller waits for the first import instead of racing it
            if _litellm is None:
                os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
                import litellm

                litellm.suppress_debug_info = True
                _litellm = litellm
    return _litellm


def warm_litellm() -> None:
    """Import litellm and load what its first stream loads, once (later callers wait)."""
    if _warm.is_set():
        return
    with _warm_lock:
        if _warm.is_set():
            return
        litellm = litellm_module()
        if not (litellm.callbacks or litellm.success_callback or litellm.failure_callback):  # no fake call logged
            try:
                _mock_streams(litellm)
            except Exception:  # an optimisation only: the first real call loads what is missing
                pass
        _warm.set()


def _mock_streams(litellm: Any) -> None:
    args = {"model": "openai/router-warm-up", "messages": [{"role": "user", "content": "hi"}],
            "mock_response": "ok", "api_key": "unused", "stream": True}
    for _ in litellm.completion(**args):
        pass

    async def drain() -> None:
        async for _ in await litellm.acompletion(**args):
            pass

    asyncio.run(drain())


def warm_litellm_in_background() -> None:
    """Start `warm_litellm` in a daemon thread unless it is done or under way."""
    if not _warm.is_set() and not _warm_lock.locked():
        threading.Thread(target=_warm_politely, daemon=True, name="router-warm-litellm").start()


def _warm_politely() -> None:
    """`warm_litellm` at the lowest CPU priority (Linux: per thread), so the seconds of
    imports yield the CPU to a call the local tier answers meanwhile (measured in local.py's
    docstring: a first local answer in 1.0 s against 1.8 s at normal priority)."""
    with contextlib.suppress(AttributeError, OSError):  # not Linux, or not allowed
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), 19)
    warm_litellm()


def model_supports_prefill(model: str) -> bool:
    """litellm's model info `supports_assistant_prefill` for `model`; False for a model it
    does not know (an OpenAI-compatible server's model, say)."""
    litellm_module()
    from litellm.utils import supports_assistant_prefill

    try:
        return bool(supports_assistant_prefill(model=model))
    except Exception:  # unknown model or provider: litellm raises rather than answers
        return False


class RemoteTarget(Target):
    """One provider + model reached with `litellm.completion`."""

    streams_async = True  # litellm's acompletion(stream=True)

    def __init__(self, config: TargetConfig) -> None:
        self.config = config
        self._prefill: bool | None = config.prefill
        fixed: dict[str, Any] = {"model": config.model, "max_retries": 0}  # one attempt = one request
        if config.api_base:
            fixed["api_base"] = config.api_base
        if config.api_key is not None:
            fixed["api_key"] = config.api_key.reveal()
        self._fixed = fixed
        self._clients = SdkClients(config)  # exact timeouts without a client per timeout

    @property
    def continues_streams(self) -> bool:
        """Whether it takes an assistant prefill (`prefill:`, else litellm's model info):
        then it can continue a stream another target broke."""
        if self._prefill is None:
            self._prefill = model_supports_prefill(self.config.model or "")
        return self._prefill

    def refused_prefill(self) -> None:
        """It answered a prefill with a 400: do not ask it to continue a stream again."""
        self._prefill = False

    def ready(self) -> None:
        """Block until litellm is imported and warm: call before an attempt's clock starts."""
        warm_litellm()

    async def aready(self) -> None:
        if not _warm.is_set():
            await asyncio.to_thread(warm_litellm)

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
        result's `abort()` closes the connection from another thread (streaming/sources.py).
        `partial`: continue that answer, sent as an assistant prefill."""
        litellm = litellm_module()
        return AbortableChunks(litellm.completion(stream=True, **self._arguments(request, timeout, self._clients.sync(),
                                                                                 partial)))

    async def astream(self, request: Request, *, timeout: float, note: Note, partial: str = "") -> AsyncIterator[Any]:
        litellm = litellm_module()
        return await litellm.acompletion(stream=True, **self._arguments(request, timeout,
                                                                        self._clients.for_running_loop(), partial))

    def _arguments(self, request: Request, timeout: float, client: Any, partial: str = "") -> dict[str, Any]:
        own = {"client": client} if client is not None else {}
        params = {**self.config.params, **request.params}
        messages = request.messages
        if partial:
            messages = prefill_messages(messages, partial)
            params = continuation_params(params, estimated_tokens(len(partial)))
        return {"messages": messages, "timeout": timeout, **params, **self._fixed, **own}

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
