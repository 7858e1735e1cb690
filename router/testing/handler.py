"""The request handler of the fault server: reads a chat request, plays its fault.

One small `_play_*` method per fault kind. The handler decides when bytes go out
(delays, cuts, stalls); what they say comes from the wire module of the API the request
was sent to: openai_wire.py for ``/v1/chat/completions``, anthropic_wire.py for
``/v1/messages``.
"""

from __future__ import annotations
import itertools
import json
import select
import socket
import struct
import time
from email.utils import formatdate
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler
from typing import Any, Optional
from . import faults
from .anthropic_wire import AnthropicWire
from .openai_wire import OpenAIWire, error_body
from .wire import INVALID_EVENT, Wire, continuation, to_json

_OPENAI, _ANTHROPIC = OpenAIWire(), AnthropicWire()
_WIRES: dict[str, Wire] = {"/v1/chat/completions": _OPENAI, "/chat/completions": _OPENAI,
                           "/v1/messages": _ANTHROPIC, "/messages": _ANTHROPIC}
_MALFORMED_BODY = b'{"id": "chatcmpl-x", "choices": ['


class _Stopped(Exception):
    """The server stopped, or the client left, while a handler waited inside a fault."""


class _ClientLeft(_Stopped):
    """The client closed its connection while a handler waited inside a fault."""


_POLL = 0.05  # seconds between checks for a departed client while a fault waits


class _FaultHandler(BaseHTTPRequestHandler):
    """Serves one connection: records each chat request, then plays its fault."""

    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True
    server: Any  # server._HTTPServer: `admit`, `scripted_models` and `client_left` are the FaultServer's
    wire: Wire  # the API shape of the request being answered

    def log_message(self, format: str, *args: Any) -> None:
        pass  # one line per request would drown test output

    def do_GET(self) -> None:
        path = self.path.split("?", 1)[0]
        if path in ("/v1/models", "/models"):
            models = [{"id": m, "object": "model", "owned_by": "fault-server"}
                      for m in self.server.scripted_models()]
            self._send_json(200, {"object": "list", "data": models})
        elif path == "/health":
            self._send_json(200, {"status": "ok"})
        else:
            self._send_json(404, error_body(f"Unknown path {path}", "invalid_request_error", "not_found"))

    def do_POST(self) -> None:
        t = time.monotonic()
        try:
            raw = self._read_body()
        except ValueError:  # a broken chunked body: answer 400, then drop the connection
            raw, self.close_connection = b"", True
        path = self.path.split("?", 1)[0]
        wire = _WIRES.get(path)
        if wire is None:
            return self.do_GET()  # 404 (or info) without recording
        try:
            body = json.loads(raw)
        except ValueError:
            body = None
        if not isinstance(body, dict):
            body = None
        model = body.get("model") if body is not None else None
        headers = {k.lower(): v for k, v in self.headers.items()}
        fault = self.server.admit(model if isinstance(model, str) else None,
                                   body, headers, path, t, wire.refusal)
        if fault is None:
            msg = "We could not parse the JSON body of your request."
            return self._send_json(400, error_body(msg, "invalid_request_error", None))
        self.wire = wire
        try:
            getattr(self, "_play_" + fault.kind)(fault, body)
        except _ClientLeft:
            self.close_connection = True
            self.server.client_left(model if isinstance(model, str) else None, time.monotonic())
        except _Stopped:
            self.close_connection = True
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True  # the client gave up first

    # -- one method per fault kind -------------------------------------------
    def _play_ok(self, fault: faults.Ok, body: dict) -> None:
        self._sleep(fault.delay)
        if body.get("stream"):
            return self._play_stream(faults.stream(fault.text, tool_calls=fault.tool_calls, thinking=fault.thinking,
                                                   finish_reason=fault.finish_reason), body)
        answer = self.wire.completion(body, continuation(body, fault.text), fault.tool_calls, fault.finish_reason,
                                      fault.thinking)
        self._send_json(200, answer, self.wire.headers(fault.headers or {}))

    def _play_status(self, fault: faults.Status, body: dict) -> None:
        credential = self.headers.get("Authorization") or self.headers.get("x-api-key") or ""
        code, error, headers = self.wire.error(fault, credential)
        self._send_json(code, error, headers)

    def _play_reply(self, fault: faults.Reply, body: dict) -> None:
        self._send_json(fault.code, fault.body)

    def _play_hang(self, fault: faults.Hang, body: dict) -> None:
        self._sleep(fault.seconds)
        self.close_connection = True  # then hang up without a response

    def _play_reset(self, fault: faults.Reset, body: dict) -> None:
        self._abort()

    def _play_malformed(self, fault: faults.Malformed, body: dict) -> None:
        self._send(200, _MALFORMED_BODY, "application/json")

    def _play_stream(self, fault: faults.Stream, body: dict) -> None:
        text = continuation(body, fault.text)
        events = self.wire.stream(body)
        units = events.units(text, fault.tool_calls, fault.thinking)
        self.wfile.write(self._head(200, "text/event-stream", [
            ("Transfer-Encoding", "chunked"), ("Cache-Control", "no-cache")]))
        self._sleep(fault.first_token_delay)
        numbers = itertools.count(1)  # SSE events sent, the invalid one included

        def send(batch: list) -> None:
            for event in batch:
                if next(numbers) == fault.invalid_event_at:
                    self._chunk(INVALID_EVENT)
                    next(numbers)
                self._chunk(event)

        send(events.opening())
        for sent, unit in enumerate(units + [None]):
            if sent == fault.cut_after:
                return self._abort()
            if sent == fault.end_after:
                return self._chunk(b"")  # a clean end of the body, without a finish
            if sent == fault.stall_after:
                self._sleep(fault.stall_seconds)
            if sent == fault.malformed_after:
                self._chunk(INVALID_EVENT)
                return self._chunk(b"")
            if sent == fault.error_after:
                send(events.error())
                return self._chunk(b"")
            if unit is None:
                break
            if sent:
                self._sleep(fault.token_delay)
            send(unit)
        send(events.closing(text, fault.finish_reason, fault.done))
        self._chunk(b"")

    # -- plumbing ------------------------------------------------------------
    def _sleep(self, seconds: Optional[float]) -> None:
        """Wait ``seconds`` (None: forever); raise _Stopped if the server stops or the
        client hangs up first, so hung handlers do not pile up behind timed-out clients."""
        if seconds is not None and seconds <= 0:
            return
        deadline = None if seconds is None else time.monotonic() + seconds
        while True:
            wait = _POLL if deadline is None else min(_POLL, deadline - time.monotonic())
            if wait <= 0:
                return
            if self.server.stopping.wait(wait):
                raise _Stopped
            if self._client_gone():
                raise _ClientLeft

    def _client_gone(self) -> bool:
        try:
            if not select.select([self.connection], [], [], 0)[0]:
                return False
            return self.connection.recv(1, socket.MSG_PEEK) == b""
        except OSError:
            return True

    def _abort(self) -> None:
        """Close the connection with a TCP RST (SO_LINGER on, zero timeout)."""
        self.close_connection = True
        self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.rfile.close()  # the only makefile() reference; then close() really closes
        self.connection.close()

    def _read_body(self) -> bytes:
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            parts = []
            while True:
                size = int(self.rfile.readline().split(b";", 1)[0], 16)
                parts.append(self.rfile.read(size + 2)[:size])
                if size == 0:
                    return b"".join(parts)
        return self.rfile.read(int(self.headers.get("Content-Length") or 0))

    def _head(self, code: int, content_type: str, headers: list) -> bytes:
        lines = [f"HTTP/1.1 {code} {_reason(code)}", "Server: router-fault-server",
                 f"Date: {formatdate(usegmt=True)}", f"Content-Type: {content_type}"]
        lines += [f"{name}: {value}" for name, value in headers]
        if self.close_connection:
            lines.append("Connection: close")
        return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")

    def _send(self, code: int, body: bytes, content_type: str, headers: list = ()) -> None:
        # Head and body in one write: two small writes could meet a delayed ACK.
        head = self._head(code, content_type, [("Content-Length", str(len(body))), *headers])
        self.wfile.write(head + body)

    def _send_json(self, code: int, data: Any, headers: list = ()) -> None:
        self._send(code, to_json(data), "application/json", headers)

    def _chunk(self, data: bytes) -> None:
        self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))


def _reason(code: int) -> str:
    try:
        return HTTPStatus(code).phrase
    except ValueError:
        return "Error"
