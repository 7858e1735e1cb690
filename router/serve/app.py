"""The gateway's ASGI app (Starlette): OpenAI's chat completions over `Router.acomplete`.

Routes: `POST /v1/chat/completions` (JSON or SSE), `GET /v1/models` (the chains this key
may call), `GET /healthz` (the process answers), `GET /readyz` (every chain has a target
that is neither open, disabled nor held until a quota recheck: 200, else 503 naming
the chains that have none), `GET /metrics` (Prometheus text). `/v1/*` and `/metrics`
need the bearer key when keys are configured; `/healthz` and `/readyz` never do.

Everything about the call itself (validation, the chain walk, retries, failover, streams
and their recovery) is the Router's: a request's `model` names the chain, the other
OpenAI parameters pass through, and what the router raises becomes an OpenAI-shaped error
(errors.py) before any upstream request when the request is at fault.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import time
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from ..config import load_config
from ..config.schema import RouterConfig
from ..core import Router
from ..errors import RouterError
from ..limits.limiter import estimate_cost
from ..request import build_request
from .auth import KeyRing
from .errors import GatewayError, bad_request, from_router_error, model_not_found, too_large
from .responses import ClientGone, EventStream, unless_client_leaves
from .shapes import answer_body, json_bytes, route_headers

log = logging.getLogger("router.serve")
CONFIG_ENV = "ROUTER_SERVE_CONFIG"  # how `--workers` hands each worker process the config file
_JSON = "application/json"
_NOT_CALL_PARAMS = ("chain", "deadline")  # acomplete's own arguments: never from a request body
CLIENT_CLOSED_REQUEST = 499  # counted, never sent: the client is gone
_PATHS = frozenset({"/v1/chat/completions", "/chat/completions", "/v1/models", "/healthz", "/readyz", "/metrics"})


class Gateway:
    """The handlers, over one Router and the configured keys."""

    def __init__(self, router: Router, config: RouterConfig, registry: Any,
                 tracing: TraceContext | None = None) -> None:
        self.router = router
        self.tracing = tracing
        self.config = config
        self.keys = KeyRing(config.server.keys, config.state, source=config.source)
        self.max_body = config.server.max_body_bytes
        self.registry = registry
        import prometheus_client as prom

        self.answered = prom.Counter("router_gateway_requests_total", "Gateway requests, by path and status",
                                     ["path", "status"], registry=registry)
        self.counters: dict[tuple[str, int], Any] = {}  # labels() looked up once per (path, status)

    # -- routes ----------------------------------------------------------------------------

    async def chat_completions(self, request: Request) -> Any:
        started = time.perf_counter()
        try:
            key = self.keys.authenticate(request.headers.get("authorization"))
            body = await self.read_json(request)
            chain, messages, stream, params = self.parse(body)
            self.keys.check_chain(key, chain)
            tokens = estimate_cost(build_request(messages, params)).tokens if key.rate_limit.tpm else 0.0
            permit = await self.keys.admit(key, tokens)
            call = self.router.acomplete(messages, chain, None, stream=stream, **params)
            attached = self.tracing.attach(request.headers) if self.tracing is not None else None
            try:
                answer = await unless_client_leaves(call, request.receive)
            except BaseException:
                self.keys.settle(key, permit, None)
                raise
            finally:
                if self.tracing is not None:
                    self.tracing.detach(attached)
        except GatewayError as exc:
            return self.error(request, exc)
        except ClientGone:
            self.count(request, CLIENT_CLOSED_REQUEST)
            return Response(status_code=CLIENT_CLOSED_REQUEST)
        except RouterError as exc:
            return self.error(request, from_router_error(exc))
        if stream:
            self.count(request, 200)
            return EventStream(answer, on_end=lambda s: self.keys.settle(key, permit, None))
        usage = answer.usage.total_tokens if answer.usage else None
        self.keys.settle(key, permit, usage)
        self.count(request, 200)
        log.debug("router serve: %s answered in %.4f s", chain, time.perf_counter() - started)
        return Response(answer_body(answer), media_type=_JSON, headers=route_headers(answer.route))

    async def models(self, request: Request) -> Response:
        try:
            key = self.keys.authenticate(request.headers.get("authorization"))
        except GatewayError as exc:
            return self.error(request, exc)
        chains = [c for c in self.config.chains if key.chains is None or c in key.chains]
        data = [{"id": c, "object": "model", "created": 0, "owned_by": "router"} for c in chains]
        return Response(json_bytes({"object": "list", "data": data}), media_type=_JSON)

    async def healthz(self, request: Request) -> Response:
        return Response(json_bytes({"status": "ok", "pid": os.getpid()}), media_type=_JSON)

    async def readyz(self, request: Request) -> Response:
        """Ready when every chain has a target neither open nor disabled (a cache tier counts),
        nor held back without requests until a recheck (an account out of quota): a chain
        whose every target is skipped answers 503 at once, so it is not ready."""
        status = self.router.status()
        usable = {name for name, info in status.items()
                  if info["state"] != "open" and not info.get("disabled") and "recheck_in_s" not in info}
        chains = {name: [t for t in chain.targets if t in usable] for name, chain in self.config.chains.items()}
        stuck = sorted(name for name, ready in chains.items() if not ready)
        body = {"status": "not ready" if stuck else "ready", "chains": chains}
        if stuck:
            body["chains_without_target"] = stuck
        return Response(json_bytes(body), status_code=503 if stuck else 200, media_type=_JSON)

    async def metrics(self, request: Request) -> Response:
        try:
            self.keys.authenticate(request.headers.get("authorization"))
        except GatewayError as exc:
            return self.error(request, exc)
        import prometheus_client as prom

        return Response(prom.generate_latest(self.registry), media_type=prom.CONTENT_TYPE_LATEST)

    async def not_found(self, request: Request, exc: Exception) -> Response:
        return self.error(request, GatewayError(404, f"Unknown path {request.method} {request.url.path}.",
                                                "invalid_request_error", "not_found"))

    # -- parts -----------------------------------------------------------------------------

    async def read_json(self, request: Request) -> dict[str, Any]:
        """The body as a JSON object; 413 past `max_body_bytes` (by Content-Length before
        reading anything, else as the body arrives), 400 when it is not a JSON object."""
        declared = request.headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_body:
            raise too_large(self.max_body)
        parts: list[bytes] = []
        size = 0
        async for part in request.stream():
            size += len(part)
            if size > self.max_body:
                raise too_large(self.max_body)
            parts.append(part)
        try:
            body = json.loads(b"".join(parts))
        except (ValueError, UnicodeDecodeError) as exc:
            raise bad_request(f"The body is not valid JSON: {exc}") from None
        if not isinstance(body, dict):
            raise bad_request("The body must be a JSON object (a chat completion request).")
        return body

    def parse(self, body: dict[str, Any]) -> tuple[str, Any, bool, dict[str, Any]]:
        """(chain, messages, stream, the other parameters) of a request body."""
        model = body.pop("model", None)
        if model is None:
            raise bad_request("You must provide a model parameter: the name of a chain.", "model")
        if not isinstance(model, str) or model not in self.config.chains:
            raise model_not_found(model, list(self.config.chains))
        if "messages" not in body:
            raise bad_request("Missing required parameter: 'messages'.", "messages")
        messages = body.pop("messages")
        stream = body.pop("stream", False)
        if stream is None:
            stream = False
        if not isinstance(stream, bool):
            raise bad_request(f"stream must be true or false, got {stream!r}", "stream")
        for name in _NOT_CALL_PARAMS:
            if name in body:
                raise bad_request(f"Unrecognized request argument supplied: {name}", name)
        return model, messages, stream, body

    def error(self, request: Request, exc: GatewayError) -> Response:
        self.count(request, exc.status)
        return Response(exc.body(), status_code=exc.status, media_type=_JSON, headers=exc.headers)

    def count(self, request: Request, status: int) -> None:
        path = request.scope["path"]  # not `request.url`, which parses a URL object per request
        path = path if path in _PATHS else "other"  # no label per unknown path
        counter = self.counters.get((path, status))
        if counter is None:
            counter = self.counters[path, status] = self.answered.labels(path, str(status))
        counter.inc()


class TraceContext:
    """The caller's trace, from its W3C `traceparent` (and `tracestate`) headers: made the
    current context while its call runs, so the call's span (router.otel) is a child of the
    client's span, as with any instrumented HTTP server. Only with `server.otel: true`."""

    def __init__(self) -> None:
        from opentelemetry import context, propagate

        self._context, self._propagate = context, propagate

    def attach(self, headers: Any) -> Any:
        return self._context.attach(self._propagate.extract(headers))

    def detach(self, token: Any) -> None:
        self._context.detach(token)


def build_app(config: RouterConfig) -> Starlette:
    """The app for `config`: one Router, the keys, a Prometheus registry of its own (or
    the default one, which `events.metrics: true` already fills)."""
    import prometheus_client as prom

    from ..observe.metrics import PrometheusListener

    if config.events.metrics:
        registry, listeners = prom.REGISTRY, []
    else:
        registry = prom.CollectorRegistry()
        listeners = [PrometheusListener(registry)]
    tracing = None
    if config.server.otel:
        from ..otel import OpenTelemetryListener

        listeners.append(OpenTelemetryListener())
        tracing = TraceContext()
    router = Router(config, listeners=listeners)
    gateway = Gateway(router, config, registry, tracing)
    routes = [Route("/v1/chat/completions", gateway.chat_completions, methods=["POST"]),
              Route("/chat/completions", gateway.chat_completions, methods=["POST"]),
              Route("/v1/models", gateway.models, methods=["GET"]),
              Route("/healthz", gateway.healthz, methods=["GET"]),
              Route("/readyz", gateway.readyz, methods=["GET"]),
              Route("/metrics", gateway.metrics, methods=["GET"])]
    app = Starlette(routes=routes, lifespan=_lifespan(gateway, router),
                    exception_handlers={404: gateway.not_found, 405: gateway.not_found})
    app.state.gateway = gateway
    return app


def _lifespan(gateway: Gateway, router: Router) -> Any:
    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> Any:
        if not gateway.config.offline and any(t.is_remote and not t.disabled for t in gateway.config.targets.values()):
            from ..targets.remote import warm_litellm

            await asyncio.to_thread(warm_litellm)  # seconds of imports, before the port opens, not in a call
        yield
        gateway.keys.close()
        router.flush_cache(timeout=2.0)

    return lifespan


def app_from_environment() -> Starlette:
    """The app factory each `--workers` process runs: the config file named by $ROUTER_SERVE_CONFIG."""
    return build_app(load_config(os.environ[CONFIG_ENV]))
