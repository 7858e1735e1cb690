"""Remote providers: the target that picks its transport, and the litellm transport.

A target's `transport` (config/schema.py) is `openai` for a model litellm would hand to
the OpenAI SDK unchanged: then openai_transport.py calls the SDK directly and litellm is
never imported; every other provider goes through litellm, here.

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
from typing import TYPE_CHECKING, Any

from .prefill import continuation_params, prefill_messages
from ..config.schema import OPENAI, TargetConfig
from ..request import Request, estimated_tokens
from ..outcomes import Outcome, TargetFailure
from ..response import response_of
from . import Note, Target
from .openai_transport import OpenAITransport, is_warm as openai_is_warm, warm_openai
from .sdk_clients import SdkClients

if TYPE_CHECKING:
    from ..response import Response

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


def warm_in_background(transports: set[str | None]) -> None:
    """Load the libraries of these transports in daemon threads: litellm only when a
    target uses it; the openai SDK (~0.5 s) for the others."""
    if OPENAI in transports and not openai_is_warm():
        threading.Thread(target=warm_openai, daemon=True, name="router-warm-openai").start()
    if transports - {OPENAI}:
        warm_litellm_in_background()


def model_streams_usage(model: str) -> bool:
    """Whether litellm passes `stream_options` on to `model`'s provider (OpenAI and the
    OpenAI-compatible ones do; Anthropic, Gemini, Ollama are not asked)."""
    litellm = litellm_module()
    try:
        name, provider, _, _ = litellm.get_llm_provider(model)
        supported = litellm.get_supported_openai_params(model=name, custom_llm_provider=provider)
    except Exception:  # unknown model or provider: do not ask for what may be refused
        return False
    return bool(supported) and "stream_options" in supported


def model_supports_prefill(model: str) -> bool:
    """Whether `model` takes an assistant prefill, when its target does not say (`prefill:`).

    litellm's model info `supports_assistant_prefill`, where its price list knows the model
    and says. For a model it does not know (or knows without saying): yes when litellm
    sends it to Anthropic, whose Messages API continues a final assistant turn natively
    (the shipped config's `anthropic/claude-3-5-haiku-latest` is such a model: litellm
    1.110's list has no entry for it); no for anything else (an OpenAI-compatible
    server's model, say). Guessing yes costs little when wrong: the model answers the
    continuation with a 400, recorded as `rejected` and remembered (`refused_prefill`), and
    the stream goes on to the next target; guessing no would lose every continuation on
    Anthropic's older models.
    """
    litellm = litellm_module()
    try:
        known = litellm.get_model_info(model=model).get("supports_assistant_prefill")
    except Exception:  # not in litellm's price list: it raises rather than answers
        known = None
    if known is not None:
        return bool(known)
    try:
        provider = litellm.get_llm_provider(model=model)[1]
    except Exception:  # an unknown provider: litellm's own call raises it, classified
        return False
    return provider == "anthropic"


# What an Anthropic model litellm does not know is asked for when the call sets no
# max_tokens (Anthropic requires one): litellm would send 128000, its
# DEFAULT_ANTHROPIC_CHAT_MAX_TOKENS, beyond the output limit of every Claude before 4.6
# (8192 for 3.5 Haiku, 4096 for 3 Haiku), which the API refuses with a 400.
UNKNOWN_ANTHROPIC_MAX_TOKENS = 4096


class RemoteTarget(Target):
    """One provider + model, reached with `litellm.completion` or, for `transport: openai`,
    with the openai SDK directly (openai_transport.py)."""

    streams_async = True  # litellm's acompletion(stream=True), the SDK's AsyncStream

    def __init__(self, config: TargetConfig) -> None:
        self.config = config
        self._prefill: bool | None = config.prefill
        self._provider_name: str | None = None
        self._output_limit: int | None = None  # litellm's max_output_tokens (0: it does not know)
        self._direct: OpenAITransport | None = None
        if config.transport == OPENAI:
            self._direct = OpenAITransport(config)
            if self._prefill is None:  # litellm's model info is not asked: it would import litellm
                self._prefill = False
        fixed: dict[str, Any] = {"model": config.model, "max_retries": 0}  # one attempt = one request
        if config.api_base:
            fixed["api_base"] = config.api_base
        if config.api_key is not None:
            fixed["api_key"] = config.api_key.reveal()
        self._fixed = fixed
        self._clients = SdkClients(config)  # exact timeouts without a client per timeout
        self._streams_usage: bool | None = None

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

    def _asks_usage(self) -> bool:
        if self._streams_usage is None:
            self._streams_usage = model_streams_usage(self.config.model or "")
        return self._streams_usage

    def ready(self) -> None:
        """Block until its library is imported and warm: call before an attempt's clock starts."""
        if self._direct is not None:
            warm_openai()
        else:
            warm_litellm()

    async def aready(self) -> None:
        if self._direct is not None:
            if not openai_is_warm():
                await asyncio.to_thread(warm_openai)
        elif not _warm.is_set():
            await asyncio.to_thread(warm_litellm)

    def complete(self, request: Request, *, timeout: float, note: Note) -> Response:
        if self._direct is not None:
            return self._direct.complete(*self._messages_and_params(request), timeout)
        litellm = litellm_module()
        raw = litellm.completion(**self._arguments(request, timeout, self._clients.sync()))
        return _answer(raw)

    async def acomplete(self, request: Request, *, timeout: float, note: Note) -> Response:
        if self._direct is not None:
            return await self._direct.acomplete(*self._messages_and_params(request), timeout)
        litellm = litellm_module()
        raw = await litellm.acompletion(**self._arguments(request, timeout, self._clients.for_running_loop()))
        return _answer(raw)

    def stream(self, request: Request, *, timeout: float, note: Note, partial: str = "") -> Iterator[Any]:
        """litellm's chunks; `timeout` bounds each read, the router times the gaps. The
        result's `abort()` closes the connection from another thread (streaming/sources.py).
        `partial`: continue that answer, sent as an assistant prefill."""
        if self._direct is not None:
            return self._direct.stream(*self._messages_and_params(request, partial), timeout)
        litellm = litellm_module()
        return AbortableChunks(litellm.completion(stream=True, **self._arguments(request, timeout, self._clients.sync(),
                                                                                 partial)), self._stripped(partial))

    async def astream(self, request: Request, *, timeout: float, note: Note, partial: str = "") -> AsyncIterator[Any]:
        if self._direct is not None:
            return await self._direct.astream(*self._messages_and_params(request, partial), timeout)
        litellm = litellm_module()
        chunks = await litellm.acompletion(stream=True, **self._arguments(request, timeout,
                                                                          self._clients.for_running_loop(), partial))
        stripped = self._stripped(partial)
        return TrimmedAsyncChunks(chunks, stripped) if stripped else chunks

    def _stripped(self, partial: str) -> int:
        """How many trailing whitespace characters of a continuation's prefill never reach
        the model: litellm strips them for Anthropic, whose API refuses a final assistant
        turn ending in whitespace ("one two " goes as "one two"). The model then writes the
        space itself (" three"), which the caller already has: that many leading
        whitespace characters of the continuation are dropped (else: "two  three")."""
        if not partial or self._provider() != "anthropic":
            return 0
        return len(partial) - len(partial.rstrip())

    def _unknown_anthropic(self) -> bool:
        """An Anthropic model with no output limit in litellm's price list."""
        if self._provider() != "anthropic":
            return False
        if self._output_limit is None:
            try:
                self._output_limit = litellm_module().get_model_info(model=self.config.model).get("max_output_tokens") or 0
            except Exception:  # not in the list: litellm raises rather than answers
                self._output_limit = 0
        return not self._output_limit

    def _provider(self) -> str | None:
        if self._provider_name is None:
            try:
                self._provider_name = litellm_module().get_llm_provider(model=self.config.model)[1]
            except Exception:  # an unknown provider: litellm's own call raises it, classified
                self._provider_name = ""
        return self._provider_name

    def _messages_and_params(self, request: Request, partial: str = "") -> tuple[list[dict[str, Any]], dict[str, Any]]:
        """What is sent besides the target's own settings; `partial`: as a continuation of it."""
        params = {**self.config.params, **request.params}
        messages = request.messages
        if partial:
            messages = prefill_messages(messages, partial)
            params = continuation_params(params, estimated_tokens(len(partial)))
        return messages, params

    def _arguments(self, request: Request, timeout: float, client: Any, partial: str = "") -> dict[str, Any]:
        own = {"client": client} if client is not None else {}
        messages, params = self._messages_and_params(request, partial)
        if not any(key in params for key in ("max_tokens", "max_completion_tokens")) and self._unknown_anthropic():
            params["max_tokens"] = UNKNOWN_ANTHROPIC_MAX_TOKENS
        if request.stream and "stream_options" not in params and self._asks_usage():
            # the stream's final usage settles its rate limit's token estimate (streaming/reading.py
            # keeps that chunk from a caller who did not ask for it); the openai transport asks itself
            params["stream_options"] = {"include_usage": True}
        return {"messages": messages, "timeout": timeout, **params, **self._fixed, **own}

    def __repr__(self) -> str:
        return f"RemoteTarget({self.config.name!r}, model={self.config.model!r}, transport={self.config.transport!r})"


class AbortableChunks:
    """litellm's sync chunk iterator, plus `abort()`: shut its socket down from any thread.

    A thread blocked reading a stream is not woken by closing the socket (Linux), only by
    shutting it down; without this a stalled or abandoned stream kept its reader thread
    and connection until the read timeout (30 s by default). The socket is found through
    public attributes: litellm's `completion_stream` (the OpenAI SDK's `Stream`), its
    httpx `response`, httpcore's `network_stream` extension. A provider that litellm
    streams another way has no such path: `abort()` does nothing, the read timeout ends it.
    """

    def __init__(self, chunks: Any, trim: int = 0) -> None:
        self._chunks = chunks
        self._trim = trim  # leading whitespace characters of the text to drop (RemoteTarget._stripped)

    def __iter__(self) -> Iterator[Any]:
        for chunk in self._chunks:
            if self._trim:
                self._trim = trim_leading_whitespace(chunk, self._trim)
            yield chunk

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


class TrimmedAsyncChunks:
    """litellm's async chunk iterator with up to `trim` leading whitespace characters of
    its text dropped (RemoteTarget._stripped); closes what it wraps."""

    def __init__(self, chunks: Any, trim: int) -> None:
        self._chunks = chunks
        self._trim = trim

    def __aiter__(self) -> "TrimmedAsyncChunks":
        return self

    async def __anext__(self) -> Any:
        chunk = await self._chunks.__anext__()
        if self._trim:
            self._trim = trim_leading_whitespace(chunk, self._trim)
        return chunk

    async def aclose(self) -> None:
        close = getattr(self._chunks, "aclose", None)
        if close is not None:
            await close()


def trim_leading_whitespace(chunk: Any, budget: int) -> int:
    """Drop up to `budget` whitespace characters from the start of `chunk`'s text; returns
    what is left of the budget: 0 once the chunk had text beyond them."""
    for choice in getattr(chunk, "choices", None) or ():
        delta = getattr(choice, "delta", None)
        content = getattr(delta, "content", None)
        if not isinstance(content, str) or not content:
            continue
        cut = min(budget, len(content) - len(content.lstrip()))
        delta.content = content[cut:]
        return budget - cut if cut == len(content) else 0
    return budget


def _answer(raw: Any) -> Response:
    """The provider's reply, or TRANSIENT when it is a 200 without an answer: litellm
    passes `"choices": []` through as an empty success, which would end the chain walk.
    With the provider's HTTP headers, which litellm keeps in `_hidden_params
    ["additional_headers"]` (OpenAI-compatible ones as sent, every raw one also as
    `llm_provider-<name>`): the rate limiter reads what remains of the quota."""
    response = response_of(raw)
    if not response.choices:
        raise TargetFailure(Outcome.TRANSIENT, "malformed reply: a 200 with no choices")
    hidden = getattr(raw, "_hidden_params", None)
    if isinstance(hidden, dict):
        response.headers = hidden.get("additional_headers") or None
    return response
