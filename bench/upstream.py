"""A fast canned OpenAI-compatible upstream: ``python -m bench.upstream [--port N] [--impl raw|aiohttp]``.

The upstream of ``python -m bench serve``, in a process of its own: every ``POST
/v1/chat/completions`` (or ``/chat/completions``) gets the same valid non-streamed
ChatCompletion (id, object, created, the request's model echoed, one choice with the
assistant's "hi", finish_reason "stop", usage), ``GET /health`` answers 200; HTTP/1.1,
kept alive unless the client says otherwise. Prints its base URL (``.../v1``) on one
line, as ``python -m router.testing`` does, then serves until SIGTERM or Ctrl-C.

Why not the fault server: it is a stdlib ThreadingHTTPServer (a thread per connection
under one GIL), ~10x the CPU a request of this one, with a longer tail at 16 connections.
Why a raw asyncio protocol (httptools parses, on uvloop; ``--impl raw``, the default)
rather than aiohttp.web on uvloop (``--impl aiohttp``, kept for this comparison): measured
here (2 shared cores; 20000 requests from one aiohttp client on uvloop in another
process; two runs), the upstream's CPU time a request (/proc utime + stime), and its
requests per second and p99 at 16 concurrent (the client is the bottleneck there):

    upstream                        CPU c=1     CPU c=16    c=16 req/s     c=16 p99
    raw protocol (httptools)        17 / 20 µs  10 / 10 µs  13279 / 13883  3.7 / 1.5 ms
    aiohttp.web                     84 / 81 µs  56 / 54 µs   7701 / 7926   3.1 / 3.0 ms
    fault server (router.testing)  109 / 114   97 / 113 µs  5745 / 6575   4.4 / 6.9 ms

A fifth of aiohttp.web's CPU: it takes the least from the gateway and the client it shares
the 2 cores with. Each answer's bytes are made once per model, then reused.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import socket
import sys
import time
from collections.abc import Sequence
from typing import cast

import httptools
import uvloop

COMPLETION_PATHS = frozenset({b"/v1/chat/completions", b"/chat/completions"})
HEALTH_PATH = b"/health"
CREATED = int(time.time())
_JSON = b"content-type: application/json\r\n"


def completion(model: object) -> bytes:
    """The one answer: a valid non-streamed ChatCompletion, the request's model echoed."""
    return json.dumps({
        "id": "chatcmpl-bench", "object": "chat.completion", "created": CREATED, "model": model,
        "choices": [{"index": 0, "message": {"role": "assistant", "content": "hi"}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2},
    }, separators=(",", ":")).encode()


def response(status: bytes, body: bytes) -> bytes:
    """A whole HTTP/1.1 response (status line, headers, body)."""
    return b"HTTP/1.1 %s\r\n%scontent-length: %d\r\n\r\n%s" % (status, _JSON, len(body), body)


def error(message: str) -> bytes:
    return json.dumps({"error": {"message": message, "type": "invalid_request_error"}}).encode()


HEALTH_BODY, BAD_JSON_BODY = b'{"status":"ok"}', error("bad JSON")
HEALTH = response(b"200 OK", HEALTH_BODY)
NOT_FOUND = response(b"404 Not Found", error("not found"))
BAD_JSON = response(b"400 Bad Request", BAD_JSON_BODY)
BAD_REQUEST = response(b"400 Bad Request", error("bad HTTP"))
_answers: dict[str, bytes] = {}  # model -> the whole response, made once


def answer(method: bytes, path: bytes, body: bytes) -> bytes:
    """The response to one request (kept alive unless the client said otherwise)."""
    if path in COMPLETION_PATHS and method == b"POST":
        try:
            model = json.loads(body).get("model")
        except (ValueError, AttributeError):
            return BAD_JSON
        key = model if isinstance(model, str) else json.dumps(model)
        if key not in _answers:
            _answers[key] = response(b"200 OK", completion(model))
        return _answers[key]
    if path == HEALTH_PATH and method == b"GET":
        return HEALTH
    return NOT_FOUND


class UpstreamProtocol(asyncio.Protocol):
    """One connection: httptools parses, each complete request is answered in order."""

    def __init__(self) -> None:
        self._parser = httptools.HttpRequestParser(self)
        self._transport: asyncio.Transport | None = None
        self._url = b""
        self._body: list[bytes] = []

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)  # uvloop's is no subclass of it

    def data_received(self, data: bytes) -> None:
        assert self._transport is not None
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserError:
            self._transport.write(BAD_REQUEST)
            self._transport.close()

    # httptools callbacks
    def on_message_begin(self) -> None:
        self._url, self._body = b"", []

    def on_url(self, url: bytes) -> None:
        self._url += url

    def on_body(self, body: bytes) -> None:
        self._body.append(body)

    def on_message_complete(self) -> None:
        assert self._transport is not None
        path = self._url.partition(b"?")[0]
        self._transport.write(answer(self._parser.get_method(), path, b"".join(self._body)))
        if not self._parser.should_keep_alive():
            self._transport.close()  # the answer has its length: closing ends nothing early


async def serve_raw(sock: socket.socket, stop: asyncio.Event) -> None:
    """UpstreamProtocol on `sock` until `stop` is set."""
    server = await asyncio.get_running_loop().create_server(UpstreamProtocol, sock=sock, backlog=1024)
    async with server:
        await stop.wait()


async def serve_aiohttp(sock: socket.socket, stop: asyncio.Event) -> None:
    """The same answers from aiohttp.web on `sock` until `stop` is set (for comparison)."""
    from aiohttp import web

    async def chat(request: web.Request) -> web.Response:
        try:
            model = (await request.json()).get("model")
        except (ValueError, AttributeError):
            return web.Response(status=400, body=BAD_JSON_BODY, content_type="application/json")
        return web.Response(body=completion(model), content_type="application/json")

    async def health(request: web.Request) -> web.Response:
        return web.Response(body=HEALTH_BODY, content_type="application/json")

    app = web.Application()
    app.router.add_post("/v1/chat/completions", chat)
    app.router.add_post("/chat/completions", chat)
    app.router.add_get("/health", health)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.SockSite(runner, sock, backlog=1024).start()
    try:
        await stop.wait()
    finally:
        await runner.cleanup()


def bound(host: str, port: int) -> socket.socket:
    """A listening socket (port 0: a free one), bound before the URL is printed."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(1024)
    sock.setblocking(False)
    return sock


async def main_async(host: str, port: int, impl: str) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    sock = bound(host, port)
    print(f"http://{host}:{sock.getsockname()[1]}/v1", flush=True)
    await (serve_raw if impl == "raw" else serve_aiohttp)(sock, stop)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.upstream",
                                     description="A canned OpenAI-compatible upstream; prints its base URL.")
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=0, help="port to bind (default 0: a free one)")
    parser.add_argument("--impl", choices=("raw", "aiohttp"), default="raw",
                        help="raw: an asyncio protocol with httptools (default); aiohttp: aiohttp.web")
    args = parser.parse_args(argv)
    uvloop.run(main_async(args.host, args.port, args.impl))
    return 0


if __name__ == "__main__":
    sys.exit(main())
