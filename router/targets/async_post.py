"""The HTTP of an async plain call on `transport: openai`: aiohttp, not the SDK's stack.

Measured here (uvloop, one call at a time to a local server, CPU of the calling process
a call): `AsyncOpenAI.post()` 750 us (httpx2, httpcore2, h11 and anyio 460 us of it,
the SDK's request and response handling the rest), the SDK on its own aiohttp transport
(`openai[aiohttp]`) 580 us, aiohttp alone 133 us. In `router serve` the SDK's call was
two thirds of the gateway's CPU a request (750 of 1140 us), and every plain async call
pays it, so the bytes go through aiohttp, which litellm already installs (the gateway:
375 us a request since, `python -m bench serve`). The SDK still
decides everything a caller can see (openai_transport.py):
- the request: the URL is the SDK client's `base_url` plus `chat/completions`, the
  headers are the client's `default_headers` (user agent, organization, project) and its
  key as `Authorization: Bearer`, plus the call's `extra_headers` and `extra_query`,
  through the proxy the environment names (HTTP(S)_PROXY, NO_PROXY) as on the SDK;
- the failures: a status of 400 or more raises the SDK's own exception class, built from
  the status, body and headers as the SDK builds it; a timeout `APITimeoutError`, a
  connection that fails `APIConnectionError`, each `from` aiohttp's error;
- the timeout bounds the whole attempt, as DESIGN says ("seconds per attempt"), not each
  read (the SDK's httpx timeout is per phase, so a trickling reply could outlast it).
Streams stay on the SDK (its SSE decoding and typed chunks), and sync calls too.

A session belongs to its event loop: one per loop, closed when that loop shuts its
async generators down (`asyncio.run` and uvicorn both do), else detached when a later
call finds its loop closed, so no loop is kept alive by its session for longer.
"""

from __future__ import annotations

import asyncio
import json
import threading
import urllib.parse
import urllib.request
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from ..outcomes import Outcome, TargetFailure
from .sdk_clients import SHARED_HTTP

KEEPALIVE_S = 5.0  # as the SDK's pool: an idle connection is closed after this long
MAX_CONNECTIONS = 1000  # as the SDK's DEFAULT_CONNECTION_LIMITS


@dataclass(frozen=True)
class Answered:
    """A reply with a status below 400: its headers and body, unread as JSON."""

    headers: Mapping[str, str]
    content: bytes


class LoopSession:
    """One loop's `aiohttp.ClientSession`, and the proxies the environment named when it
    was opened. Read once, as httpx reads them when a client is made: aiohttp's own
    `trust_env` reads the environment and ~/.netrc again on every request, 440 us a
    call measured here, three times the rest of it."""

    def __init__(self, session: Any) -> None:
        self.session = session
        self._proxies = urllib.request.getproxies()
        self._by_url: dict[str, str | None] = {}

    def proxy_for(self, url: str) -> str | None:
        if url not in self._by_url:
            parts = urllib.parse.urlsplit(url)
            proxy = self._proxies.get(parts.scheme) or self._proxies.get("all")
            bypassed = proxy is not None and urllib.request.proxy_bypass(parts.hostname or "")
            self._by_url[url] = None if bypassed else proxy
        return self._by_url[url]


class LoopSessions:
    """One `LoopSession` per event loop, with the SDK clients' TLS context."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._by_loop: dict[asyncio.AbstractEventLoop, tuple[LoopSession, Any]] = {}  # loop -> (session, closer)

    async def for_running_loop(self) -> LoopSession:
        loop = asyncio.get_running_loop()
        entry = self._by_loop.get(loop)
        if entry is not None:
            return entry[0]
        session = LoopSession(self._open())
        closer = self._close_at_shutdown(loop, session.session)
        await closer.__anext__()  # registered with the loop: `shutdown_asyncgens` closes it
        with self._lock:
            self._by_loop[loop] = (session, closer)
        return session

    def loops(self) -> list[asyncio.AbstractEventLoop]:
        """The loops that have a session now."""
        with self._lock:
            return list(self._by_loop)

    def _open(self) -> Any:
        import aiohttp

        with self._lock:
            for loop in [loop for loop in self._by_loop if loop.is_closed()]:
                self._by_loop.pop(loop)[0].session.detach()  # its sockets went with the loop
        connector = aiohttp.TCPConnector(limit=MAX_CONNECTIONS, keepalive_timeout=KEEPALIVE_S,
                                         ssl=SHARED_HTTP.tls_context())
        return aiohttp.ClientSession(connector=connector)

    async def _close_at_shutdown(self, loop: asyncio.AbstractEventLoop, session: Any) -> AsyncIterator[None]:
        try:
            yield
        finally:
            with self._lock:
                self._by_loop.pop(loop, None)
            await session.close()


SESSIONS = LoopSessions()


async def post_json(url: str, body: Any, headers: Mapping[str, str], timeout: float, *,
                    extra_headers: Mapping[str, Any] | None = None, query: Mapping[str, Any] | None = None) -> Answered:
    """POST `body` as JSON; the reply below 400, else the SDK's exception for it.
    `extra_headers` and `query` as the SDK's options take them (a header set to None or
    the SDK's `Omit` is left out; a query's booleans, None and lists as httpx writes them)."""
    import aiohttp
    import openai

    try:
        data = _encoded(body)
        params = _query_pairs(query) if query else None
    except (TypeError, ValueError) as exc:  # nothing was sent: the caller's value, as on the SDK
        raise TargetFailure(Outcome.UNSENT, f"the request could not be sent: {exc}") from exc
    if extra_headers:
        headers = _with_headers(headers, extra_headers)
    session = await SESSIONS.for_running_loop()
    try:
        async with session.session.post(url, data=data, headers=headers, params=params, proxy=session.proxy_for(url),
                                        timeout=aiohttp.ClientTimeout(total=timeout)) as reply:
            content = await reply.read()
            status, reply_headers = reply.status, reply.headers
    except asyncio.TimeoutError as exc:  # also aiohttp's own timeouts, which derive from it
        raise openai.APITimeoutError(request=_sdk_request(url, headers)) from (exc if str(exc)
                                                                               else TimeoutError("timed out"))
    except (aiohttp.ClientError, OSError) as exc:
        raise openai.APIConnectionError(request=_sdk_request(url, headers)) from exc
    if status >= 400:
        raise status_error(status, reply_headers, content, _sdk_request(url, headers))
    return Answered(reply_headers, content)


def status_error(status: int, headers: Mapping[str, str], content: bytes, request: Any) -> Exception:
    """The SDK's exception for an error status, as its client makes it: the class by
    status, the message "Error code: N - <error.message>", `body` the `error` object."""
    import httpx2
    import openai

    response = httpx2.Response(status, headers=list(headers.items()), content=content, request=request)
    text = content.decode("utf-8", "replace").strip()
    try:
        body: Any = json.loads(text)
    except ValueError:
        body = text
    error = body.get("error", body) if isinstance(body, dict) else body
    message = f"Error code: {status}"
    if isinstance(error, dict) and isinstance(error.get("message"), str) and error["message"]:
        message += f" - {error['message']}"
    name = _STATUS_ERRORS.get(status) or ("InternalServerError" if status >= 500 else "APIStatusError")
    return getattr(openai, name)(message, response=response, body=error)


_STATUS_ERRORS: dict[int, str] = {400: "BadRequestError", 401: "AuthenticationError", 403: "PermissionDeniedError",
                                  404: "NotFoundError", 409: "ConflictError", 422: "UnprocessableEntityError",
                                  429: "RateLimitError"}


def _encoded(body: Any) -> bytes:
    """The body as the SDK would send it: compact UTF-8, no NaN, its own answer types
    (a message from an earlier answer) and datetimes as it writes them."""
    return _ENCODER.encode(body).encode("utf-8")


def _sdk_value(value: Any) -> Any:
    import pydantic

    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, pydantic.BaseModel):
        return value.model_dump(exclude_unset=True, mode="json", by_alias=True)
    raise TypeError(f"Object of type {type(value).__name__} is not JSON serializable")


def _with_headers(headers: Mapping[str, str], extra: Mapping[str, Any]) -> dict[str, str]:
    replaced = {name.lower() for name in extra}
    merged = {name: value for name, value in headers.items() if name.lower() not in replaced}
    for name, value in extra.items():
        if isinstance(value, (str, int, float)) and not isinstance(value, bool):
            merged[name] = str(value)
        elif isinstance(value, bytes):
            merged[name] = value.decode("latin-1")
    return merged


def _query_pairs(query: Mapping[str, Any]) -> list[tuple[str, str]]:
    pairs = []
    for name, value in query.items():
        for item in value if isinstance(value, (list, tuple)) else (value,):
            pairs.append((name, _query_value(item)))
    return pairs


def _query_value(value: Any) -> str:
    if value is True or value is False:
        return "true" if value else "false"
    if value is None:
        return ""
    if isinstance(value, (str, int, float)):
        return str(value)
    raise TypeError(f"a query value must be a string, number, boolean or None, got {type(value).__name__}")


_ENCODER = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), allow_nan=False, default=_sdk_value)


def _sdk_request(url: str, headers: Mapping[str, str]) -> Any:
    import httpx2

    return httpx2.Request("POST", url, headers=dict(headers))
