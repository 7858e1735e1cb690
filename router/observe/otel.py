"""OpenTelemetry traces and metrics as an event listener, in the GenAI semantic conventions
(the optional `otel` extra: opentelemetry-api; the SDK and exporters are the application's).

    from router.otel import OpenTelemetryListener
    router = Router.from_yaml("config.yaml", listeners=[OpenTelemetryListener()])

A call is a span (`router {chain}`: `router.chain`, `router.served_by`, `router.degraded`,
`router.attempts`, `router.outcome`), a child of the span current where the call was made
(captured when it starts, so a stream read in another task or thread still nests there).
Each attempt that sent a request is a CLIENT child span `chat {model}` with `gen_ai.*`
attributes, `router.target` and `router.outcome`; a failed one has `error.type` and status
ERROR. What sent nothing (circuit open, throttled, no bulkhead slot, a cache miss, ...)
and the waits between attempts are events on the call's span: `router.skip`,
`router.backoff`, `router.rate_wait`, `router.failover`, `router.retry_budget_exhausted`,
`router.stream.break` and `router.stream.resume` (with `router.offset`, in characters).
A stream's spans end when the stream does. Spans are built from the router's events, with
the events' own times: an attempt's span is not current while it runs.

Metrics: `gen_ai.client.operation.duration` (s) and `gen_ai.client.token.usage` ({token})
histograms, per attempt, with `router.target` and `router.outcome`.

Message contents are recorded (`gen_ai.input.messages`, `gen_ai.output.messages`) only when
the application opts in: `capture_content=True`, or the conventions' environment variable
OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT=true. Keys never reach a span: events
carry none, and provider messages are redacted before they become a `detail`.
"""

from __future__ import annotations

import json
import os
import threading
from dataclasses import dataclass
from typing import Any

from .events import Event

# litellm's provider prefix -> the conventions' gen_ai.provider.name, where they differ
_PROVIDER_NAMES = {"gemini": "gcp.gemini", "vertex_ai": "gcp.vertex_ai", "bedrock": "aws.bedrock",
                   "azure": "azure.ai.openai", "azure_ai": "azure.ai.inference", "mistral": "mistral_ai",
                   "xai": "x_ai", "watsonx": "ibm.watsonx.ai"}
_DURATION_BUCKETS = (0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.28, 2.56, 5.12, 10.24, 20.48, 40.96, 81.92)
_TOKEN_BUCKETS = (1, 4, 16, 64, 256, 1024, 4096, 16384, 65536, 262144, 1048576, 4194304, 16777216, 67108864)
_CONTENT_ENV = "OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT"
_CONTENT_ON = {"true", "1", "span_only", "span_and_event"}
_NOT_FAILED = {"ok", "cancelled"}
_MAX_CALLS = 10000  # calls in flight kept; beyond, the oldest is forgotten (a stream never read nor closed)
_EVENTS = frozenset({"start", "attempt_start", "answer", "attempt", "retry", "rate_wait", "budget_exhausted",
                     "failover", "degraded", "stream_break", "stream_resume", "call"})


@dataclass
class _Call:
    """What the listener keeps of a call in flight (keyed by its call_id)."""

    span: Any  # None when not recording: then only metrics are kept
    context: Any  # the caller's context with the call's span in it: the attempts' parent
    messages: Any = None
    pending: Event | None = None  # the attempt_start of the attempt in flight
    answer: Event | None = None  # its answer, until its attempt event ends it
    attempts: int = 0
    degraded: bool = False


class OpenTelemetryListener:
    """Turns router events into OpenTelemetry spans and GenAI metrics.

    `tracer_provider` / `meter_provider`: default, the global ones (with no SDK configured,
    the API's no-ops: measured within noise of no listener, see bench/). `capture_content`:
    record message contents (None: as OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT says).
    """

    def __init__(self, *, tracer_provider: Any = None, meter_provider: Any = None,
                 capture_content: bool | None = None) -> None:
        try:
            from opentelemetry import context, metrics, trace
        except ImportError as exc:
            raise ImportError("OpenTelemetryListener needs opentelemetry-api: "
                              "pip install 'failover-router[otel]'") from exc
        self._context, self._trace, self._metrics = context, trace, metrics
        self.tracer = trace.get_tracer("failover-router", tracer_provider=tracer_provider)
        self._meters_given = meter_provider is not None
        self._tracers_given = tracer_provider is not None
        meter = metrics.get_meter("failover-router", meter_provider=meter_provider)
        self.duration = meter.create_histogram(
            "gen_ai.client.operation.duration", unit="s", description="GenAI operation duration",
            explicit_bucket_boundaries_advisory=_DURATION_BUCKETS)
        self.tokens = meter.create_histogram(
            "gen_ai.client.token.usage", unit="{token}", description="Number of input and output tokens used",
            explicit_bucket_boundaries_advisory=_TOKEN_BUCKETS)
        if capture_content is None:
            capture_content = os.environ.get(_CONTENT_ENV, "").strip().lower() in _CONTENT_ON
        self.capture_content = capture_content
        self.router_events = _EVENTS | {"content"} if capture_content else _EVENTS
        self._calls: dict[str, _Call] = {}
        self._lock = threading.Lock()

    def __call__(self, event: Event) -> bool | None:
        handle = getattr(self, f"_on_{event.name}", None)
        if handle is None or event.call_id is None:
            return None
        if event.name == "start":
            return handle(event)  # False declines the call's other detail events
        call = self._calls.get(event.call_id)
        if call is not None:
            handle(event, call)
        return None

    # -- the call ---------------------------------------------------------------------------

    def _on_start(self, event: Event) -> bool:
        tracing = self._tracers_given or not _api_own(self._trace.get_tracer_provider())
        if not tracing and not self._measuring():
            return False  # the API alone, no SDK: nothing of this call goes anywhere
        parent = self._context.get_current()
        span = self.tracer.start_span(f"router {event.chain}", context=parent, start_time=_ns(event.time),
                                      attributes={"router.chain": event.chain or "", "router.call_id": event.call_id})
        if tracing and span.is_recording():
            call = _Call(span, self._trace.set_span_in_context(span, parent), messages=event.content)
        elif self._measuring():
            call = _Call(None, None)
        else:
            return False  # not sampled, and no metrics: nothing of this call goes anywhere
        with self._lock:
            if len(self._calls) >= _MAX_CALLS:
                self._calls.pop(next(iter(self._calls)))
            self._calls[event.call_id] = call  # type: ignore[index]  # call_id checked by the caller
        return True

    def _measuring(self) -> bool:
        """Whether metrics go anywhere: not while the global meter provider is still the API's
        own (a no-op, or the proxy that stands in until the application sets one)."""
        return self._meters_given or not _api_own(self._metrics.get_meter_provider())

    def _on_call(self, event: Event, call: _Call) -> None:
        with self._lock:
            self._calls.pop(event.call_id, None)  # type: ignore[arg-type]
        span = call.span
        if span is None:
            return
        span.set_attributes({"router.outcome": event.outcome or "", "router.attempts": call.attempts,
                             "router.degraded": call.degraded})
        if event.served_by:
            span.set_attribute("router.served_by", event.served_by)
        if event.outcome == "failed":
            span.set_attribute("error.type", event.error or "failed")
            span.set_status(self._trace.Status(self._trace.StatusCode.ERROR, event.error or "failed"))
        span.end(end_time=_ns(event.time))

    def _on_degraded(self, event: Event, call: _Call) -> None:
        call.degraded = True

    # -- attempts ---------------------------------------------------------------------------

    def _on_attempt_start(self, event: Event, call: _Call) -> None:
        call.pending, call.answer = event, None

    def _on_answer(self, event: Event, call: _Call) -> None:
        call.answer = event

    def _on_attempt(self, event: Event, call: _Call) -> None:
        started, call.pending = call.pending, None
        if started is None or started.target != event.target or event.outcome == "cache_miss":
            self._add_event(call, "router.skip", event, detail=True)  # nothing was sent
            return
        call.attempts += 1
        answer, call.answer = call.answer, None
        attributes = _attempt_attributes(started, event, answer)
        self._measure(attributes, event, answer)
        if call.span is None:
            return
        if self.capture_content:
            _add_content(attributes, call.messages, answer)
        span = self.tracer.start_span(f"chat {started.model}", context=call.context,
                                      kind=self._trace.SpanKind.CLIENT, start_time=_ns(started.time),
                                      attributes=attributes)
        if event.outcome not in _NOT_FAILED:
            span.set_status(self._trace.Status(self._trace.StatusCode.ERROR, event.detail))
        span.end(end_time=_ns(event.time))

    def _measure(self, attributes: dict[str, Any], event: Event, answer: Event | None) -> None:
        keys = ("gen_ai.operation.name", "gen_ai.provider.name", "gen_ai.request.model", "gen_ai.response.model",
                "error.type", "router.target", "router.outcome")
        measured = {key: attributes[key] for key in keys if key in attributes}
        self.duration.record(event.latency_s or 0.0, measured)
        if answer is not None:
            for kind, count in (("input", answer.input_tokens), ("output", answer.output_tokens)):
                if count is not None:
                    self.tokens.record(count, {**measured, "gen_ai.token.type": kind})

    # -- what happens between attempts: events on the call's span ------------------------------

    def _on_retry(self, event: Event, call: _Call) -> None:
        self._add_event(call, "router.backoff", event)

    def _on_rate_wait(self, event: Event, call: _Call) -> None:
        self._add_event(call, "router.rate_wait", event)

    def _on_budget_exhausted(self, event: Event, call: _Call) -> None:
        self._add_event(call, "router.retry_budget_exhausted", event)

    def _on_failover(self, event: Event, call: _Call) -> None:
        self._add_event(call, "router.failover", event)

    def _on_stream_break(self, event: Event, call: _Call) -> None:
        self._add_event(call, "router.stream.break", event, recovery=True)

    def _on_stream_resume(self, event: Event, call: _Call) -> None:
        self._add_event(call, "router.stream.resume", event, recovery=True)

    def _add_event(self, call: _Call, name: str, event: Event, *, detail: bool = False,
                   recovery: bool = False) -> None:
        if call.span is None:
            return
        attributes: dict[str, Any] = {"router.target": event.target or ""}
        for key, value in (("router.outcome", event.outcome), ("router.wait_s", event.wait_s),
                           ("router.offset", event.offset)):
            if value is not None:
                attributes[key] = value
        if event.detail is not None and (detail or recovery):
            attributes["router.recovery" if recovery else "router.detail"] = event.detail
        call.span.add_event(name, attributes, timestamp=_ns(event.time))


def _attempt_attributes(started: Event, ended: Event, answer: Event | None) -> dict[str, Any]:
    provider = started.provider or ""
    attributes: dict[str, Any] = {
        "gen_ai.operation.name": "chat",
        "gen_ai.provider.name": _PROVIDER_NAMES.get(provider, provider),
        "gen_ai.request.model": started.model or "",
        "router.target": ended.target or "",
        "router.outcome": ended.outcome or "",
    }
    if started.max_tokens is not None:
        attributes["gen_ai.request.max_tokens"] = started.max_tokens
    if started.temperature is not None:
        attributes["gen_ai.request.temperature"] = started.temperature
    if ended.status is not None:
        attributes["http.response.status_code"] = ended.status
    if ended.outcome not in _NOT_FAILED:
        attributes["error.type"] = ended.error or ended.outcome or "failed"
    if answer is not None:
        for key, value in (("gen_ai.response.model", answer.response_model),
                           ("gen_ai.usage.input_tokens", answer.input_tokens),
                           ("gen_ai.usage.output_tokens", answer.output_tokens),
                           ("gen_ai.response.finish_reasons", answer.finish_reasons)):
            if value is not None:
                attributes[key] = value
    return attributes


def _add_content(attributes: dict[str, Any], messages: Any, answer: Event | None) -> None:
    """The conventions' opt-in content attributes, as JSON."""
    if messages:
        attributes["gen_ai.input.messages"] = json.dumps(
            [{"role": m.get("role"), "parts": [{"type": "text", "content": m.get("content")}]} for m in messages],
            default=str)
    if answer is not None and answer.content is not None:
        reasons = answer.finish_reasons or ("stop",)
        attributes["gen_ai.output.messages"] = json.dumps(
            [{"role": "assistant", "parts": [{"type": "text", "content": answer.content}],
              "finish_reason": reasons[0]}])


def _api_own(provider: Any) -> bool:
    """A provider of the API itself (a no-op, or the proxy standing in until the application
    sets one), not of an SDK."""
    return type(provider).__module__.startswith(("opentelemetry.trace", "opentelemetry.metrics"))


def _ns(seconds: float) -> int:
    return int(seconds * 1e9)
