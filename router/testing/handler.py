"""The request handler of the fault server: reads a chat request, plays its fault.

One small `_play_*` method per fault kind; the OpenAI-shaped bodies are built by the
functions at the bottom.
"""

from __future__ import annotations
import itertools
import json
import re
import select
import socket
import struct
import time
from email.utils import formatdate
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler
from typing import Any, Optional
from . import faults
from .resolve import prefill_of


_CHAT_PATHS = frozenset({"/v1/chat/completions", "/chat/completions"})
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
            self._send_json(404, _error_body(f"Unknown path {path}", "invalid_request_error", "not_found"))

    def do_POST(self) -> None:
        t = time.monotonic()
        try:
            raw = self._read_body()
        except ValueError:  # a broken chunked body: answer 400, then drop the connection
            raw, self.close_connection = b"", True
        path = self.path.split("?", 1)[0]
        if path not in _CHAT_PATHS:
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
                                   body, headers, path, t)
        if fault is None:
            msg = "We could not parse the JSON body of your request."
            return self._send_json(400, _error_body(msg, "invalid_request_error", None))
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
            return self._play_stream(faults.stream(fault.text), body)
        self._send_json(200, _completion(body, _continuation(body, fault.text), fault.finish_reason),
                        list((fault.headers or {}).items()))

    def _play_status(self, fault: faults.Status, body: dict) -> None:
        headers = []
        if fault.retry_after is not None:
            headers.append(("Retry-After", _header_number(fault.retry_after)))
        if fault.retry_after_ms is not None:
            headers.append(("retry-after-ms", _header_number(fault.retry_after_ms)))
        headers.extend((fault.headers or {}).items())
        message = fault.message
        if message and faults.AUTHORIZATION in message:
            message = message.replace(faults.AUTHORIZATION, self.headers.get("Authorization", ""))
        error = _error_body(message, fault.error_type, fault.error_code)
        self._send_json(fault.code, error, headers)

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
        head = {"id": _completion_id(), "object": "chat.completion.chunk",
                "created": int(time.time()), "model": body.get("model")}
        text = _continuation(body, fault.text)
        pieces = [{"content": word} for word in _split_words(text)] + _tool_call_deltas(fault.tool_calls or ())
        self.wfile.write(self._head(200, "text/event-stream", [
            ("Transfer-Encoding", "chunked"), ("Cache-Control", "no-cache")]))
        self._sleep(fault.first_token_delay)
        events = itertools.count(1)  # SSE events sent, the invalid one included

        def event(delta: dict, finish_reason: Optional[str]) -> None:
            if next(events) == fault.invalid_event_at:
                self._chunk(b"data: {not json\n\n")
                next(events)
            self._event(head, delta, finish_reason)

        event({"role": "assistant"}, None)
        for sent, piece in enumerate(pieces + [None]):
            if sent == fault.cut_after:
                return self._abort()
            if sent == fault.end_after:
                return self._chunk(b"")  # a clean end of the body, without a finish
            if sent == fault.stall_after:
                self._sleep(fault.stall_seconds)
            if sent == fault.malformed_after:
                self._chunk(b"data: {not json\n\n")
                return self._chunk(b"")
            if piece is None:
                break
            if sent:
                self._sleep(fault.token_delay)
            event(piece, None)
        event({}, "tool_calls" if fault.tool_calls else "stop")
        options = body.get("stream_options")
        if isinstance(options, dict) and options.get("include_usage"):
            self._chunk(b"data: " + _json(dict(head, choices=[], usage=_usage(body, text))) + b"\n\n")
        if fault.done:
            self._chunk(b"data: [DONE]\n\n")
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
        self._send(code, _json(data), "application/json", headers)

    def _chunk(self, data: bytes) -> None:
        self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))

    def _event(self, head: dict, delta: dict, finish_reason: Optional[str]) -> None:
        choice = {"index": 0, "delta": delta, "finish_reason": finish_reason}
        self._chunk(b"data: " + _json(dict(head, choices=[choice])) + b"\n\n")


def _json(data: Any) -> bytes:
    return json.dumps(data, separators=(",", ":")).encode()


def _reason(code: int) -> str:
    try:
        return HTTPStatus(code).phrase
    except ValueError:
        return "Error"


def _header_number(value: Any) -> str:
    """Render 2.0 as "2" (clients parse integers most reliably); strings go verbatim."""
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def _error_body(message: Optional[str], error_type: Optional[str], code: Optional[str]) -> dict:
    return {"error": {"message": message, "type": error_type, "param": None, "code": code}}


def _completion_id() -> str:
    return f"chatcmpl-{next(_ids):08d}"


_ids = itertools.count(1)


def _split_words(text: str) -> list:
    """Split into word pieces ("Hello ", "world.") that join back to exactly ``text``."""
    pieces = re.findall(r"\S+\s*", text)
    leading = text[: len(text) - len(text.lstrip())]
    if pieces and leading:
        pieces[0] = leading + pieces[0]
    return pieces or ([text] if text else [])


def _tool_call_deltas(calls: Any) -> list:
    """The deltas that stream ``calls`` ((name, arguments) pairs): a head with the index, id,
    type and name, then the arguments 6 characters at a time."""
    deltas = []
    for index, (name, arguments) in enumerate(calls):
        deltas.append({"tool_calls": [{"index": index, "id": f"call_{index}", "type": "function",
                                       "function": {"name": name, "arguments": ""}}]})
        deltas += [{"tool_calls": [{"index": index, "function": {"arguments": arguments[i:i + 6]}}]}
                   for i in range(0, len(arguments), 6)]
    return deltas


def _continuation(body: dict, text: str) -> str:
    """What a model continuing its prefill says: the rest of ``text`` when the request ends
    with an assistant turn that ``text`` starts with, else all of ``text``."""
    prefill = prefill_of(body)
    return text[len(prefill):] if prefill and text.startswith(prefill) else text


def _prompt_words(body: dict) -> int:
    words = 0
    for message in body.get("messages") or ():
        content = message.get("content") if isinstance(message, dict) else None
        if isinstance(content, list):  # content parts: [{"type": "text", "text": ...}]
            content = " ".join(p["text"] for p in content if isinstance(p, dict) and isinstance(p.get("text"), str))
        if isinstance(content, str):
            words += len(content.split())
    return words


def _usage(body: dict, text: str) -> dict:
    prompt, completion = _prompt_words(body), len(text.split())
    return {"prompt_tokens": prompt, "completion_tokens": completion,
            "total_tokens": prompt + completion}


def _completion(body: dict, text: str, finish_reason: str = "stop") -> dict:
    message = {"role": "assistant", "content": text}
    return {"id": _completion_id(), "object": "chat.completion", "created": int(time.time()),
            "model": body.get("model"),
            "choices": [{"index": 0, "message": message, "finish_reason": finish_reason}],
            "usage": _usage(body, text)}
