"""A remote target's calls through the `openai` SDK directly (`transport: openai`).

For a model litellm would hand to the OpenAI SDK anyway (`openai/...`, with or without
`api_base`) litellm adds nothing but its per-call Python: ~3-4 ms a call on loopback
against the SDK's ~1 ms, and 2-11 s of import. Here the target's own SDK clients
(sdk_clients.py: `max_retries=0`, the attempt's exact timeout per request) are called
as they are, and litellm is never imported.

What litellm did on the way that a caller can see is kept:
- errors: the SDK's exceptions are raised again under the class name litellm gives the
  same failure (`ServiceUnavailableError` for a 503, `Timeout`, `ContextWindowExceededError`,
  ...), with the SDK's exception as `__cause__`, so `router.outcomes.classify` reads the
  same chain (status, body, headers) and routes, events and `ProviderError`s read alike
  on both transports;
- every parameter goes in the JSON body, named by the SDK or not, as litellm sends them
  (`extra_headers`, `extra_query`, `extra_body` as the SDK reads them);
- the answer's HTTP headers (rate-limit learning) come with it, as litellm's
  `_hidden_params` carried them.
A sync plain call goes through the client's documented `post()` with the JSON as it is
(see `_request`); an async one sends the same request over aiohttp (async_post.py: 133
against 750 us of CPU a call, the SDK's exceptions kept); a stream goes through
`create(stream=True)`, for the SDK's `Stream`, and asks for
`stream_options.include_usage`. An undecodable SSE event ends the SDK's stream (its
iterator is a generator that `json()`s each event and dies on the first error; it has no
public hook to skip one), so it is a break, as on litellm.
"""

from __future__ import annotations

import contextlib
import inspect
import json
import socket
import threading
from collections.abc import AsyncIterator, Iterator
from typing import TYPE_CHECKING, Any

from ..config.schema import TargetConfig
from ..outcomes import Outcome, TargetFailure
from ..response import response_of
from .async_post import post_json
from .sdk_clients import SHARED_HTTP, SdkClients

if TYPE_CHECKING:
    from ..response import Response

_openai: Any = None
_import_lock = threading.Lock()
_warm = threading.Event()
_create_params: frozenset[str] = frozenset()
_http_response: Any = None  # httpx2.Response: what `post()` returns as it is
_REQUEST_OPTIONS = {"extra_headers": "headers", "extra_query": "params"}  # create()'s, as post()'s options
_NO_KEY = ("The api_key client option must be set either by passing api_key to the client or by setting the "
           "OPENAI_API_KEY environment variable")


def openai_module() -> Any:
    """Import the SDK once (~0.5 s here), and learn which keywords its `create()` takes."""
    global _openai, _create_params, _http_response
    if _openai is None:
        with _import_lock:
            if _openai is None:
                import httpx2
                import openai
                from openai.resources.chat.completions import Completions

                _create_params = frozenset(inspect.signature(Completions.create).parameters) - {"self"}
                _http_response = httpx2.Response
                _openai = openai
    return _openai


def warm_openai() -> None:
    """Import the SDK and build the shared sync HTTP client (its TLS context: tens of ms);
    later callers wait for the first. The SDK's first call loads ~20 more modules (~30 ms),
    not worth a mock call."""
    if not _warm.is_set():
        openai_module()
        SHARED_HTTP.sync()
        _warm.set()


def is_warm() -> bool:
    return _warm.is_set()


class OpenAITransport:
    """One target's calls: `complete`/`acomplete` answer, `stream`/`astream` open a stream."""

    def __init__(self, config: TargetConfig) -> None:
        self.model = (config.model or "").removeprefix("openai/")
        self._clients = SdkClients(config, via_litellm=False)
        self._wire: tuple[str, dict[str, str]] | None = None

    def complete(self, messages: list[dict[str, Any]], params: dict[str, Any], timeout: float) -> Response:
        client = self._sync()
        try:
            raw = client.post("/chat/completions", **self._request(messages, params, timeout))
            return _answer(raw.json(), raw.headers)
        except (_openai.APIError, json.JSONDecodeError) as exc:
            raise as_litellm_names(exc) from exc

    async def acomplete(self, messages: list[dict[str, Any]], params: dict[str, Any], timeout: float) -> Response:
        """Over aiohttp, with what the SDK's client would send (async_post.py: a fifth
        of the CPU a call)."""
        url, headers = self._wire or self._learn_wire()
        request = self._request(messages, params, timeout)
        options = request["options"]
        try:
            raw = await post_json(url, request["body"], headers, timeout, extra_headers=options.get("headers"),
                                  query=options.get("params"))
            return _answer(json.loads(raw.content), raw.headers)
        except (_openai.APIError, json.JSONDecodeError) as exc:
            raise as_litellm_names(exc) from exc

    def _learn_wire(self) -> tuple[str, dict[str, str]]:
        """The URL and headers the SDK's async client sends a plain call with: its
        `base_url`, its `default_headers` (user agent, organization, project), its key."""
        client = self._async()
        headers = {name: value for name, value in client.default_headers.items() if isinstance(value, str)}
        headers["Authorization"] = f"Bearer {client.api_key}"
        self._wire = (f"{client.base_url}chat/completions", headers)
        return self._wire

    def stream(self, messages: list[dict[str, Any]], params: dict[str, Any], timeout: float) -> SdkChunks:
        client = self._sync()
        try:
            return SdkChunks(client.chat.completions.create(**self._arguments(messages, params, timeout, stream=True)))
        except _openai.APIError as exc:
            raise as_litellm_names(exc) from exc

    async def astream(self, messages: list[dict[str, Any]], params: dict[str, Any],
                      timeout: float) -> AsyncSdkChunks:
        client = self._async()
        try:
            return AsyncSdkChunks(await client.chat.completions.create(
                **self._arguments(messages, params, timeout, stream=True)))
        except _openai.APIError as exc:
            raise as_litellm_names(exc) from exc

    def _sync(self) -> Any:
        return _keyed(self._clients.sync())

    def _async(self) -> Any:
        return _keyed(self._clients.for_running_loop())

    def _request(self, messages: list[dict[str, Any]], params: dict[str, Any], timeout: float) -> dict[str, Any]:
        """A plain call as the client's documented `post()`: the JSON body as it is (every
        parameter, named by `create()` or not), the answer as the HTTP response. `create()`
        walks the request through its type definitions first (`_transform`: 18 % of a
        call's CPU at 64 concurrent calls, measured) and builds typed objects from the
        answer, for nothing: the body is already OpenAI's JSON, and `Response` is built
        from the JSON."""
        body: dict[str, Any] = {"model": self.model, "messages": messages}
        options: dict[str, Any] = {"timeout": timeout}
        extra: dict[str, Any] = {}
        for key, value in params.items():
            if key in _REQUEST_OPTIONS:
                options[_REQUEST_OPTIONS[key]] = value
            elif key == "extra_body":
                extra = value or {}
            else:
                body[key] = value
        return {"body": {**body, **extra}, "options": options, "cast_to": _http_response}

    def _arguments(self, messages: list[dict[str, Any]], params: dict[str, Any], timeout: float,
                   stream: bool = False) -> dict[str, Any]:
        """`create()`'s keywords: the ones it names as they are, the rest in `extra_body`."""
        arguments: dict[str, Any] = {"model": self.model, "messages": messages, "timeout": timeout}
        extra: dict[str, Any] = {}
        for key, value in params.items():
            if key in _create_params:
                arguments[key] = value
            else:
                extra[key] = value
        if extra:
            arguments["extra_body"] = {**(arguments.get("extra_body") or {}), **extra}
        if stream:
            arguments["stream"] = True
            arguments["stream_options"] = {"include_usage": True, **(arguments.get("stream_options") or {})}
        return arguments


class SdkChunks:
    """The SDK's sync `Stream`, its errors under litellm's names, plus `abort()`: shut its
    socket down from any thread (a thread blocked reading is woken only by a shutdown;
    streaming/sources.py calls it on a stall or a close)."""

    def __init__(self, stream: Any) -> None:
        self._stream = stream

    def __iter__(self) -> Iterator[Any]:
        finished = False
        try:
            for chunk in self._stream:
                finished = finished or _finishes(chunk)
                yield chunk
        except Exception as exc:  # a reset, an undecodable event, an error event
            raise as_litellm_names(exc, MID_STREAM) from exc
        if not finished:
            raise _unfinished()

    def close(self) -> None:
        self._stream.close()

    def abort(self) -> None:
        network = self._stream.response.extensions.get("network_stream")
        sock = network.get_extra_info("socket") if network is not None else None
        if sock is not None:
            with contextlib.suppress(OSError):  # already closed: nothing left to wake
                sock.shutdown(socket.SHUT_RDWR)


class AsyncSdkChunks:
    """The SDK's `AsyncStream`, its errors under litellm's names; `aclose()` closes the
    response and its connection."""

    def __init__(self, stream: Any) -> None:
        self._stream = stream
        self._finished = False

    def __aiter__(self) -> AsyncIterator[Any]:
        return self

    async def __anext__(self) -> Any:
        try:
            chunk = await self._stream.__anext__()
        except StopAsyncIteration:
            if not self._finished:
                raise _unfinished() from None
            raise
        except Exception as exc:  # a reset, an undecodable event, an error event
            raise as_litellm_names(exc, MID_STREAM) from exc
        self._finished = self._finished or _finishes(chunk)
        return chunk

    async def aclose(self) -> None:
        await self._stream.close()


def _finishes(chunk: Any) -> bool:
    return any(choice.finish_reason for choice in chunk.choices)


def _unfinished() -> ProviderException:
    """The body ended before a finish_reason: a truncation, reported as litellm reports it."""
    return as_litellm_names(None, MID_STREAM, "Stream ended before a finish_reason was received")


def _answer(raw: Any, headers: Any) -> Response:
    """The reply, or TRANSIENT when it is a 200 without an answer (as on litellm)."""
    response = response_of(raw)
    if not response.choices:
        raise TargetFailure(Outcome.TRANSIENT, "malformed reply: a 200 with no choices")
    response.headers = headers
    return response


# -- the SDK's exceptions under litellm's class names -------------------------------------

class ProviderException(Exception):
    """Base of the exceptions raised in place of the SDK's: a name as litellm's, the SDK's
    exception as `__cause__` (status, body, headers), and nothing else of its own."""


_NAMED: dict[str, type[ProviderException]] = {}
MID_STREAM = "MidStreamFallbackError"  # litellm's for whatever breaks a stream once it is open
# litellm's names for provider "openai" (litellm_core_utils/exception_mapping_utils.py),
# compared fault by fault in tests/targets/test_openai_transport.py
_BY_STATUS = {400: "BadRequestError", 401: "AuthenticationError", 404: "NotFoundError", 408: "Timeout",
              413: "RateLimitError", 422: "BadRequestError", 429: "RateLimitError", 500: "InternalServerError",
              502: "BadGatewayError", 503: "ServiceUnavailableError", 504: "Timeout"}
_CONTEXT = ("context_length_exceeded", "maximum context length", "context window", "too many tokens",
            "prompt is too long")
_POLICY = ("request was rejected as a result of the safety system", "violating our usage policy")


def litellm_name(exc: BaseException) -> str:
    """The class name litellm gives this failure of the SDK's, outside a stream."""
    if isinstance(exc, _openai.APITimeoutError):
        return "Timeout"
    if not isinstance(exc, _openai.APIStatusError):
        return "InternalServerError"  # litellm's for a reset, a refused connection, an undecodable body
    text = f"{exc} {exc.body}".lower()
    if "request too large" in text or "rate limit" in text:
        return "RateLimitError"
    if any(marker in text for marker in _CONTEXT):
        return "ContextWindowExceededError"
    if any(marker in text for marker in _POLICY):
        return "ContentPolicyViolationError"
    return _BY_STATUS.get(exc.status_code, "APIError")


def as_litellm_names(exc: BaseException | None, name: str | None = None, message: str = "") -> ProviderException:
    """`exc` under litellm's name for it (or `name`): raise it `from exc`."""
    name = name or litellm_name(exc)
    cls = _NAMED.get(name)
    if cls is None:
        cls = _NAMED[name] = type(name, (ProviderException,), {"__module__": __name__, "__qualname__": name})
    return cls(message or getattr(exc, "message", None) or str(exc))


class AuthenticationError(TargetFailure):
    """No API key: the SDK refuses to build its client (litellm's name for it)."""


def _keyed(client: Any) -> Any:
    """The SDK client, or MISCONFIGURED before any request when no API key resolved."""
    openai_module()
    if client is None:
        raise AuthenticationError(Outcome.MISCONFIGURED, _NO_KEY)
    return client
