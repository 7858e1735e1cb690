"""A fault-injecting HTTP server on loopback, for tests, speaking OpenAI's and Anthropic's APIs.

It speaks just enough of OpenAI's ``/v1/chat/completions`` and Anthropic's
``/v1/messages`` for litellm (or either SDK) to drive it over real sockets, and answers
each request with the next scripted :mod:`~router.testing.faults` step for the requested
model, in the shape of the API it was sent to::

    with FaultServer() as server:
        server.script("m1", faults.status(503), faults.ok("hi"))
        litellm.completion(model="openai/m1", api_base=server.url, api_key="x", ...)
        litellm.completion(model="anthropic/m1", api_base=server.anthropic_url, api_key="x", ...)
        assert server.count("m1") == 2
"""

from __future__ import annotations

import socket
import sys
import threading
from dataclasses import dataclass
from http.server import ThreadingHTTPServer
from socketserver import TCPServer
from typing import Any, Callable, Optional

from . import faults
from .resolve import resolve
from .handler import _FaultHandler


@dataclass(frozen=True)
class ReceivedRequest:
    """One request as it arrived, recorded before its fault was applied."""

    index: int
    """0-based position among the requests for this model."""
    model: Optional[str]
    """The body's ``"model"`` (None when the body is not a JSON object or lacks one)."""
    t: float
    """``time.monotonic()`` at arrival."""
    body: Optional[dict]
    """The parsed JSON body, or None when it was not a JSON object."""
    headers: dict
    """Request headers, names lower-cased."""
    path: str


class _Step:
    """A script step: a fault plus the state its composite parts keep (rng, clock)."""

    __slots__ = ("fault", "state")

    def __init__(self, fault: faults.Fault) -> None:
        self.fault = fault
        self.state: dict = {}


class _Script:
    __slots__ = ("steps", "next")

    def __init__(self, steps: list) -> None:
        self.steps = steps
        self.next = 0


class _HTTPServer(ThreadingHTTPServer):
    """Thread-per-connection server that can close its live connections on stop."""

    daemon_threads = True
    block_on_close = False
    allow_reuse_address = True
    request_queue_size = 512  # bursts of concurrent connects must not overflow the backlog

    def __init__(self, address: tuple, admit: Callable[..., Optional[faults.Fault]],
                 scripted_models: Callable[[], list], client_left: Callable[[Optional[str], float], None]) -> None:
        self.admit = admit  # the FaultServer's: record a request, return the fault to play
        self.scripted_models = scripted_models
        self.client_left = client_left  # a client hung up while its handler waited in a fault
        self.stopping = threading.Event()
        self._connections: set = set()
        self._connections_lock = threading.Lock()
        if ":" in address[0]:
            self.address_family = socket.AF_INET6
        super().__init__(address, _FaultHandler)

    def server_bind(self) -> None:
        # HTTPServer.server_bind does a reverse DNS lookup (getfqdn); we do not need it.
        TCPServer.server_bind(self)
        self.server_name, self.server_port = self.server_address[:2]

    def process_request(self, request: socket.socket, client_address: Any) -> None:
        with self._connections_lock:
            self._connections.add(request)
        super().process_request(request, client_address)

    def shutdown_request(self, request: socket.socket) -> None:
        with self._connections_lock:
            self._connections.discard(request)
        super().shutdown_request(request)

    def close_connections(self) -> None:
        """Shut down every open connection so idle keep-alive clients notice the stop."""
        with self._connections_lock:
            connections = list(self._connections)
        for connection in connections:
            try:
                connection.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def handle_error(self, request: Any, client_address: Any) -> None:
        # Clients hanging up mid-fault is the point of this server: stay quiet about it.
        if self.stopping.is_set() or isinstance(sys.exc_info()[1], OSError):
            return
        super().handle_error(request, client_address)


class FaultServer:
    """An OpenAI-compatible server on ``host`` that answers per-model scripted faults.

    Serves from a daemon thread between :meth:`start` and :meth:`stop` (or ``with``).
    ``port=0`` picks a free port; a restart after :meth:`stop` reuses the same port,
    keeping scripts and the request log.
    """

    def __init__(self, host: str = "127.0.0.1", port: int = 0) -> None:
        self.host = host
        self._port = port
        self._lock = threading.Lock()
        self._httpd: Optional[_HTTPServer] = None
        self._thread: Optional[threading.Thread] = None
        self._clear()

    def _clear(self) -> None:
        self._scripts: dict = {}
        self._default = _Step(faults.ok())
        self._log: list = []
        self._by_model: dict = {}
        self._left: dict = {}
        self._statuses: dict = {}

    # -- lifecycle ---------------------------------------------------------
    def start(self) -> "FaultServer":
        """Bind and start serving in a daemon thread; returns ``self``."""
        if self._httpd is not None:
            raise RuntimeError("FaultServer is already running")
        httpd = _HTTPServer((self.host, self._port), self._admit, self._scripted_models, self._client_left)
        self._port = httpd.server_address[1]
        self._httpd = httpd
        self._thread = threading.Thread(
            target=httpd.serve_forever, kwargs={"poll_interval": 0.05},
            name=f"FaultServer:{self._port}", daemon=True,
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving, wake hung handlers and close every connection (returns quickly)."""
        httpd, self._httpd = self._httpd, None
        if httpd is None:
            return
        httpd.stopping.set()
        httpd.shutdown()
        httpd.server_close()
        httpd.close_connections()
        if self._thread is not None:
            self._thread.join(timeout=1.0)
            self._thread = None

    def __enter__(self) -> "FaultServer":
        return self if self._httpd is not None else self.start()

    def __exit__(self, *exc_info: Any) -> None:
        self.stop()

    @property
    def port(self) -> int:
        """The bound TCP port (known once started)."""
        if not self._port:
            raise RuntimeError("FaultServer has no port until start()")
        return self._port

    @property
    def url(self) -> str:
        """Base URL for OpenAI clients, e.g. ``http://127.0.0.1:PORT/v1`` (litellm ``api_base``)."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}/v1"

    @property
    def anthropic_url(self) -> str:
        """Base URL for Anthropic clients, e.g. ``http://127.0.0.1:PORT`` (litellm ``api_base``
        of an ``anthropic/...`` model: litellm appends ``/v1/messages``, so ``url``, which
        ends in ``/v1``, would reach ``/v1/v1/messages``, a 404)."""
        return self.url[: -len("/v1")]

    # -- scripting -----------------------------------------------------------
    def script(self, model: str, *steps: faults.Fault) -> None:
        """Answer the Nth request for ``model`` with the Nth step; the last step repeats.

        Re-scripting a model replaces its script and restarts at step 0.
        """
        if not steps:
            raise ValueError("script() needs at least one fault")
        with self._lock:
            self._scripts[model] = _Script([_Step(step) for step in steps])

    def default(self, fault: faults.Fault) -> None:
        """Set the answer for models without a script (initially ``faults.ok()``)."""
        with self._lock:
            self._default = _Step(fault)

    def requests(self, model: Optional[str] = None) -> list[ReceivedRequest]:
        """Requests received for ``model`` (all models, in arrival order, if None)."""
        with self._lock:
            return list(self._log if model is None else self._by_model.get(model, ()))

    def count(self, model: Optional[str] = None) -> int:
        """Number of requests received for ``model`` (all models if None)."""
        with self._lock:
            return len(self._log if model is None else self._by_model.get(model, ()))

    def statuses(self, model: Optional[str] = None) -> dict:
        """HTTP statuses answered for ``model`` (all models if None), e.g. ``{200: 20, 429: 3}``
        (replies that are not a status, such as hangs and resets, are not counted)."""
        with self._lock:
            sources = [self._statuses.get(model, {})] if model is not None else list(self._statuses.values())
            total: dict = {}
            for sent in sources:
                for code, n in sent.items():
                    total[code] = total.get(code, 0) + n
            return total

    def hangups(self, model: Optional[str] = None) -> list[float]:
        """``time.monotonic()`` of each time a client of ``model`` (any model if None) closed
        its connection while the server was holding it inside a fault (a hang, a stall, a
        first token that never comes): how a test sees that the client hung up."""
        with self._lock:
            if model is None:
                return sorted(t for times in self._left.values() for t in times)
            return list(self._left.get(model, ()))

    def _client_left(self, model: Optional[str], t: float) -> None:
        with self._lock:
            self._left.setdefault(model, []).append(t)

    def reset(self) -> None:
        """Forget scripts, the default and the request log, as if freshly started."""
        with self._lock:
            self._clear()

    def _scripted_models(self) -> list:
        """Names of the models that currently have a script (for ``GET /v1/models``)."""
        with self._lock:
            return list(self._scripts)

    def _admit(self, model: Optional[str], body: Optional[dict], headers: dict, path: str, t: float,
               refusal: Callable[[dict], Optional[faults.Status]] = lambda body: None) -> Optional[faults.Fault]:
        """Record a request and return the concrete fault to answer it with.

        Called by the request handler; returns None (no step consumed) when the body
        was not a JSON object. `refusal`: the API's own 400 for a request it would not
        run (Anthropic's: no max_tokens, a prefill ending in whitespace), which takes the
        place of an answer.
        """
        with self._lock:
            per_model = self._by_model.setdefault(model, [])
            request = ReceivedRequest(len(per_model), model, t, body, headers, path)
            per_model.append(request)
            self._log.append(request)
            if body is None:
                return None
            script = self._scripts.get(model)
            if script is None:
                step = self._default
            else:
                step = script.steps[min(script.next, len(script.steps) - 1)]
                script.next += 1
            fault = resolve(step.fault, step.state, t, body)
            if fault.kind in ("ok", "stream"):
                fault = refusal(body) or fault
            code = fault.code if isinstance(fault, faults.Status) else 200 if fault.kind in ("ok", "stream") else None
            if code is not None:
                sent = self._statuses.setdefault(model, {})
                sent[code] = sent.get(code, 0) + 1
            return fault

    def __repr__(self) -> str:
        state = "running" if self._httpd is not None else "stopped"
        return f"<FaultServer {self.host}:{self._port or '?'} {state}>"
