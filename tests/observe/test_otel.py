"""OpenTelemetry (issue 23): spans and GenAI metrics from real calls through the fault server,
read back from opentelemetry-sdk's in-memory exporter and metric reader."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import threading
from typing import Any

import pytest

from router import AllTargetsFailed, Event
from router.testing import faults

from ..conftest import TEST_KEY, remote

pytest.importorskip("opentelemetry.sdk")
from opentelemetry import trace  # noqa: E402
from opentelemetry.sdk.metrics import MeterProvider  # noqa: E402
from opentelemetry.sdk.metrics.export import InMemoryMetricReader  # noqa: E402
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider  # noqa: E402
from opentelemetry.sdk.trace.export import SimpleSpanProcessor  # noqa: E402
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter  # noqa: E402
from opentelemetry.trace import SpanKind, StatusCode  # noqa: E402

from router.otel import OpenTelemetryListener  # noqa: E402

HI = [{"role": "user", "content": "Count to twelve in words."}]
TEXT = "one two three four five six seven eight nine ten eleven twelve."
ONE_TRY = {"attempts": 1}


class Telemetry:
    """An SDK tracer and meter provider of the test's own, and a listener writing to them."""

    def __init__(self, **listener: Any) -> None:
        self.exporter = InMemorySpanExporter()
        self.tracer_provider = TracerProvider()
        self.tracer_provider.add_span_processor(SimpleSpanProcessor(self.exporter))
        self.reader = InMemoryMetricReader()
        self.meter_provider = MeterProvider(metric_readers=[self.reader])
        self.tracer = self.tracer_provider.get_tracer("app")
        self.listener = OpenTelemetryListener(tracer_provider=self.tracer_provider,
                                              meter_provider=self.meter_provider, **listener)

    @property
    def spans(self) -> list[ReadableSpan]:
        return list(self.exporter.get_finished_spans())

    def calls(self) -> list[ReadableSpan]:
        return [s for s in self.spans if s.name.startswith("router ")]

    def children(self, parent: ReadableSpan) -> list[ReadableSpan]:
        return sorted((s for s in self.spans if s.parent is not None and s.parent.span_id == parent.context.span_id),
                      key=lambda s: s.start_time)

    def points(self, metric: str) -> list[Any]:
        data = self.reader.get_metrics_data()
        return [point for rm in data.resource_metrics for sm in rm.scope_metrics for m in sm.metrics
                if m.name == metric for point in m.data.data_points]


@pytest.fixture
def otel() -> Telemetry:
    return Telemetry()


def events(span: ReadableSpan, name: str | None = None) -> list[tuple[str, dict[str, Any]]]:
    return [(e.name, dict(e.attributes)) for e in span.events if name is None or e.name == name]


def test_a_call_is_a_span_under_the_callers_span_with_a_child_per_attempt_in_the_genai_conventions(
        server, make_router, otel):
    server.script("p", faults.status(503))
    router = make_router({"primary": "p", "secondary": remote(server, "s", degraded=True)},
                         listeners=[otel.listener])
    with otel.tracer.start_as_current_span("app") as app:
        response = router.complete(HI, max_tokens=20, temperature=0.5)
    (call,) = otel.calls()
    assert call.parent.span_id == app.get_span_context().span_id
    assert call.name == "router default" and call.status.status_code is StatusCode.UNSET
    assert dict(call.attributes) == {"router.chain": "default", "router.call_id": call.attributes["router.call_id"],
                                     "router.outcome": "ok", "router.attempts": 4, "router.served_by": "secondary",
                                     "router.degraded": True}
    attempts = otel.children(call)
    assert [(s.name, s.attributes["router.target"], s.attributes["router.outcome"]) for s in attempts] == [
        ("chat p", "primary", "transient")] * 3 + [("chat s", "secondary", "ok")]
    assert server.count("p") == 3 and server.count("s") == 1
    failed, answered = attempts[0], attempts[-1]
    assert failed.kind is SpanKind.CLIENT and failed.status.status_code is StatusCode.ERROR
    assert failed.attributes["error.type"] == "ServiceUnavailableError"
    assert failed.attributes["http.response.status_code"] == 503
    assert "server is overloaded" in failed.status.description
    assert dict(answered.attributes) == {
        "gen_ai.operation.name": "chat", "gen_ai.provider.name": "openai", "gen_ai.request.model": "s",
        "gen_ai.request.max_tokens": 20, "gen_ai.request.temperature": 0.5, "gen_ai.response.model": "s",
        "gen_ai.usage.input_tokens": response.usage.prompt_tokens,
        "gen_ai.usage.output_tokens": response.usage.completion_tokens,
        "gen_ai.response.finish_reasons": ("stop",), "router.target": "secondary", "router.outcome": "ok"}
    assert answered.status.status_code is StatusCode.UNSET and response.usage.completion_tokens > 0
    # the backoff sleeps and the failover are events of the call, inside its time
    backoffs = events(call, "router.backoff")
    assert len(backoffs) == 2 and all(a["router.wait_s"] > 0 and a["router.target"] == "primary" for _, a in backoffs)
    assert events(call, "router.failover") == [("router.failover", {"router.target": "primary",
                                                                     "router.outcome": "transient"})]
    for span in attempts:
        assert call.start_time <= span.start_time < span.end_time <= call.end_time
    assert attempts[0].end_time <= call.events[0].timestamp <= attempts[1].start_time


def test_skips_are_events_of_the_call_and_send_nothing(server, make_router, otel):
    router = make_router({"recent": {"provider": "cache"},
                          "primary": remote(server, "p", rate_limit={"rpm": 600, "max_wait": 0}),
                          "secondary": "s", "tertiary": "t"}, listeners=[otel.listener])
    router.force_open("secondary")
    router.complete(HI, cache=False)  # primary answers, taking its rate limit's room
    router.complete(HI)  # cache miss, primary throttled, secondary's circuit open, tertiary answers
    first, second = otel.calls()
    assert [s.attributes["router.target"] for s in otel.children(first)] == ["primary"]
    assert [s.attributes["router.target"] for s in otel.children(second)] == ["tertiary"]
    skips = [(a["router.target"], a["router.outcome"]) for _, a in events(second, "router.skip")]
    assert skips == [("recent", "cache_miss"), ("primary", "throttled"), ("secondary", "circuit_open")]
    assert second.attributes["router.attempts"] == 1
    assert (server.count("p"), server.count("s"), server.count("t")) == (1, 0, 1)


def test_a_failed_call_has_status_error_and_the_error_the_caller_got(server, make_router, otel):
    server.script("p", faults.status(500))
    server.script("s", faults.status(400))
    router = make_router({"primary": remote(server, "p", retry=ONE_TRY), "secondary": "s"},
                         listeners=[otel.listener])
    with pytest.raises(AllTargetsFailed):
        router.complete(HI)
    (call,) = otel.calls()
    assert call.status.status_code is StatusCode.ERROR and call.attributes["error.type"] == "AllTargetsFailed"
    assert call.attributes["router.outcome"] == "failed" and "router.served_by" not in call.attributes
    assert [(s.attributes["router.outcome"], s.attributes["error.type"]) for s in otel.children(call)] == [
        ("transient", "InternalServerError"), ("rejected", "BadRequestError")]


def receive(stream: Any) -> str:
    return "".join(chunk.text for chunk in stream)


def read_stream(router: Any, api: str, otel: Telemetry) -> tuple[str, list[ReadableSpan]]:
    """Open a stream under a span `app`, read one chunk, note which call spans had ended
    by then, and read the rest: the text and those spans."""
    if api == "sync":
        with otel.tracer.start_as_current_span("app"):
            stream = router.complete(HI, stream=True)
        first = next(stream)
        ended_early = otel.calls()
        return first.text + receive(stream), ended_early

    async def main() -> tuple[str, list[ReadableSpan]]:
        with otel.tracer.start_as_current_span("app"):
            stream = await router.acomplete(HI, stream=True)
        first = await stream.__anext__()
        ended_early = otel.calls()
        return first.text + "".join([chunk.text async for chunk in stream]), ended_early

    return asyncio.run(main())


@pytest.mark.parametrize("api", ["sync", "async"])
@pytest.mark.parametrize("mode", ["continue", "restart"])
def test_a_stream_span_ends_with_the_stream_and_its_break_and_recovery_are_events_at_the_offset(
        server, make_router, otel, mode, api):
    server.script("p", faults.stream(TEXT, cut_after=3))
    server.script("s", faults.stream(TEXT))
    router = make_router({"primary": "p", "secondary": remote(server, "s", prefill=True)},
                         chains={"default": {"targets": ["primary", "secondary"], "mid_stream": mode}},
                         defaults={"retry": ONE_TRY}, listeners=[otel.listener])
    text, ended_early = read_stream(router, api, otel)
    assert ended_early == []  # the call went on after complete() returned
    assert text.endswith(TEXT)
    (call,) = otel.calls()
    assert call.parent is not None and call.attributes["router.served_by"] == "secondary"
    broken, recovered = otel.children(call)
    assert broken.attributes["router.outcome"] == "transient" and broken.status.status_code is StatusCode.ERROR
    assert recovered.attributes["router.outcome"] == "ok"
    assert recovered.attributes["gen_ai.response.finish_reasons"] == ("stop",)
    offset = len("one two three ")
    assert events(call, "router.stream.break") == [("router.stream.break", {
        "router.target": "primary", "router.outcome": "transient", "router.offset": offset,
        "router.recovery": mode})]
    assert events(call, "router.stream.resume") == [("router.stream.resume", {
        "router.target": "secondary", "router.offset": offset, "router.recovery": mode})]
    assert broken.end_time <= call.events[0].timestamp <= recovered.start_time


def test_a_stream_closed_by_the_caller_ends_its_spans_as_cancelled(server, make_router, otel):
    server.script("p", faults.stream(TEXT, token_delay=0.05))
    router = make_router({"primary": "p"}, listeners=[otel.listener])
    stream = router.complete(HI, stream=True)
    next(stream)
    stream.close()
    (call,) = otel.calls()
    (attempt,) = otel.children(call)
    assert call.attributes["router.outcome"] == attempt.attributes["router.outcome"] == "cancelled"
    assert call.status.status_code is attempt.status.status_code is StatusCode.UNSET


def test_async_calls_nest_under_their_own_tasks_spans(server, make_router, otel):
    server.script("p", faults.ok(delay=0.2))
    router = make_router({"primary": "p"}, listeners=[otel.listener])

    async def one(name: str, stream: bool) -> int:
        with otel.tracer.start_as_current_span(name) as span:
            if stream:
                receive_task = await router.acomplete(HI, stream=True)
                async for _ in receive_task:
                    await asyncio.sleep(0)
            else:
                await router.acomplete(HI)
            return span.get_span_context().span_id

    async def main() -> list[int]:
        return await asyncio.gather(*(one(f"task{i}", stream=i % 2 == 1) for i in range(4)))

    parents = asyncio.run(main())
    calls = otel.calls()
    assert len(calls) == 4 and sorted(c.parent.span_id for c in calls) == sorted(parents)
    assert all(len(otel.children(c)) == 1 for c in calls)


def test_an_async_stream_read_in_another_task_stays_under_the_span_that_made_the_call(
        server, make_router, otel):
    server.script("p", faults.stream(TEXT))
    router = make_router({"primary": "p"}, listeners=[otel.listener])

    async def main() -> int:
        with otel.tracer.start_as_current_span("caller") as span:
            stream = await router.acomplete(HI, stream=True)
        async def read() -> None:
            with otel.tracer.start_as_current_span("reader"):
                async for _ in stream:
                    pass
        await asyncio.create_task(read())
        return span.get_span_context().span_id

    caller = asyncio.run(main())
    (call,) = otel.calls()
    assert call.parent.span_id == caller


def test_calls_from_threads_nest_under_each_threads_span(server, make_router, otel):
    server.script("p", faults.ok(delay=0.1))
    router = make_router({"primary": "p"}, listeners=[otel.listener])
    parents: list[int] = []

    def run(i: int) -> None:
        with otel.tracer.start_as_current_span(f"thread{i}") as span:
            parents.append(span.get_span_context().span_id)
            router.complete(HI)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    calls = otel.calls()
    assert sorted(c.parent.span_id for c in calls) == sorted(parents) and len(calls) == 4


def test_a_cancelled_call_ends_its_span_as_cancelled_and_counts_in_the_metrics(server, make_router, otel):
    server.script("p", faults.hang(10))
    seen: list[Event] = []
    router = make_router({"primary": "p"}, listeners=[otel.listener, seen.append])

    async def main() -> None:
        task = asyncio.create_task(router.acomplete(HI))
        await asyncio.sleep(0.3)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(main())
    (call,) = otel.calls()
    (attempt,) = otel.children(call)
    assert call.attributes["router.outcome"] == attempt.attributes["router.outcome"] == "cancelled"
    assert call.status.status_code is StatusCode.UNSET and "error.type" not in attempt.attributes
    assert 0.2 < (attempt.end_time - attempt.start_time) / 1e9 < 5
    (point,) = otel.points("gen_ai.client.operation.duration")
    assert point.attributes["router.outcome"] == "cancelled" and point.count == 1
    # the call event every listener gets says so too (before, a cancelled call had none)
    assert [(e.name, e.outcome) for e in seen] == [("attempt", "cancelled"), ("call", "cancelled")]


def test_metrics_are_the_genai_histograms_by_target_and_outcome(server, make_router, otel):
    server.script("p", faults.status(503), faults.ok())
    router = make_router({"primary": "p"}, listeners=[otel.listener])
    answers = [router.complete(HI) for _ in range(3)]  # 503 then ok; ok; ok
    durations = {(p.attributes["router.target"], p.attributes["router.outcome"]): p
                 for p in otel.points("gen_ai.client.operation.duration")}
    assert {key: p.count for key, p in durations.items()} == {("primary", "transient"): 1, ("primary", "ok"): 3}
    failed = durations[("primary", "transient")].attributes
    assert failed["error.type"] == "ServiceUnavailableError" and failed["gen_ai.provider.name"] == "openai"
    tokens = {p.attributes["gen_ai.token.type"]: p for p in otel.points("gen_ai.client.token.usage")}
    assert tokens["input"].sum == sum(a.usage.prompt_tokens for a in answers) and tokens["input"].count == 3
    assert tokens["output"].sum == sum(a.usage.completion_tokens for a in answers)
    assert tokens["output"].attributes["router.outcome"] == "ok"


def everything(otel: Telemetry) -> str:
    spans = "\n".join(s.to_json() for s in otel.spans)
    return spans + otel.reader.get_metrics_data().to_json()


def test_no_key_reaches_any_span_event_status_or_metric(server, make_router):
    otel = Telemetry(capture_content=True)  # even with contents on
    server.script("p", faults.quoting_key(401))
    server.script("s", faults.status(500, message=f"upstream rejected Authorization: Bearer {TEST_KEY}"))
    server.script("t", faults.ok())
    router = make_router({"primary": "p", "secondary": remote(server, "s", retry=ONE_TRY), "tertiary": "t"},
                         listeners=[otel.listener])
    router.complete(HI, api_version=None, user="someone")
    dumped = everything(otel)
    assert "Invalid Authorization header" in dumped and "upstream rejected" in dumped  # the words are kept
    assert TEST_KEY not in dumped and f"Bearer {TEST_KEY[:8]}" not in dumped
    assert "sk-test" not in dumped


def test_message_contents_are_recorded_only_when_the_application_opts_in(server, make_router, monkeypatch):
    monkeypatch.delenv("OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT", raising=False)
    default, opted, by_env = Telemetry(), Telemetry(capture_content=True), None
    monkeypatch.setenv("OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT", "true")
    by_env = Telemetry()
    router = make_router({"primary": "p"}, listeners=[default.listener, opted.listener, by_env.listener])
    answer = router.complete(HI).text
    assert HI[0]["content"] not in everything(default) and answer not in everything(default)
    for otel in (opted, by_env):
        (attempt,) = [s for s in otel.spans if s.name.startswith("chat ")]
        assert json.loads(attempt.attributes["gen_ai.input.messages"]) == [
            {"role": "user", "parts": [{"type": "text", "content": HI[0]["content"]}]}]
        (output,) = json.loads(attempt.attributes["gen_ai.output.messages"])
        assert output["parts"][0]["content"] == answer and output["finish_reason"] == "stop"


def test_listeners_that_name_no_detail_events_get_the_events_they_always_had(server, make_router, otel):
    plain: list[Event] = []

    class StartsOnly:
        router_events = frozenset({"start"})

        def __init__(self) -> None:
            self.seen: list[Event] = []

        def __call__(self, event: Event) -> None:
            self.seen.append(event)

    starts = StartsOnly()
    router = make_router({"primary": "p"}, listeners=[plain.append, starts, otel.listener])
    router.complete(HI, max_tokens=7)
    assert [e.name for e in plain] == ["attempt", "call"]
    (start,) = starts.seen
    assert start.name == "start" and start.max_tokens == 7 and start.content is None  # no contents unasked
    assert start.call_id == plain[-1].call_id


class Recorder:
    """A listener taking `start`, `attempt` and `call`; `decline`: returns False for `start`."""

    router_events = frozenset({"start", "attempt_start", "attempt", "call"})

    def __init__(self, decline: bool) -> None:
        self.decline = decline
        self.seen: list[str] = []

    def __call__(self, event: Event) -> bool:
        self.seen.append(event.name)
        return not (self.decline and event.name == "start")


def test_with_the_api_alone_the_listener_declines_every_call_and_a_call_everyone_declines_builds_no_event(
        server, make_router):
    listener = OpenTelemetryListener()  # the global providers: the API's no-ops in this process
    assert not isinstance(trace.get_tracer_provider(), TracerProvider)
    declining = Recorder(decline=True)
    router = make_router({"primary": "p"}, listeners=[listener, declining])
    assert router.complete(HI).route.served_by == "primary"
    assert declining.seen == ["start"]  # then nothing: every listener declined the call
    taking = Recorder(decline=False)
    router.add_listener(taking)
    router.complete(HI)
    assert taking.seen == ["start", "attempt_start", "attempt", "call"]


def test_import_router_does_not_import_opentelemetry():
    # redis-py >= 8, which pybreaker imports, loads the opentelemetry SDK itself when it is
    # installed (its own metrics): kept out here, so that what is left is the router's doing
    code = ("import sys; sys.modules['redis'] = None; import router; "
            "assert not [m for m in sys.modules if m.startswith('opentelemetry')], 'import router'; "
            "import router.otel; assert not [m for m in sys.modules if m.startswith('opentelemetry')], 'router.otel'; "
            "router.otel.OpenTelemetryListener(); assert 'opentelemetry.trace' in sys.modules")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


def test_without_opentelemetry_the_listener_says_what_to_install_and_the_router_works(server):
    code = ("import sys; sys.modules['opentelemetry'] = None; import router, router.otel\n"
            "try:\n    router.otel.OpenTelemetryListener()\nexcept ImportError as e:\n    print(e)\n"
            f"r = router.Router.from_dict({{'targets': {{'p': {remote(server, 'p')!r}}}, 'chains': {{'default': ['p']}}}})\n"
            "print(r.complete([{'role': 'user', 'content': 'hi'}]).route.served_by)")
    out = subprocess.run([sys.executable, "-c", code], check=True, timeout=120, capture_output=True, text=True)
    assert out.stdout.splitlines() == [
        "OpenTelemetryListener needs opentelemetry-api: pip install 'failover-router[otel]'", "p"]


def test_the_local_tier_is_an_attempt_span_named_by_its_model_file(server, make_router, otel):
    from router.models import pull_default_model

    from ..test_degraded import REPO, local_target

    model = str(pull_default_model(REPO / "models", quiet=True))
    server.script("p", faults.status(503))
    router = make_router({"primary": remote(server, "p", retry=ONE_TRY), "local": local_target(model)},
                         listeners=[otel.listener])

    async def main() -> Any:
        with otel.tracer.start_as_current_span("app"):
            return await router.acomplete(HI, max_tokens=8)

    response = asyncio.run(main())
    (call,) = otel.calls()
    assert call.attributes["router.served_by"] == "local" and call.attributes["router.degraded"] is True
    remote_try, local = otel.children(call)
    assert remote_try.attributes["router.outcome"] == "transient"
    assert local.name == "chat SmolLM2-135M-Instruct.Q4_1"
    assert local.attributes["gen_ai.provider.name"] == "llama_cpp"
    assert local.attributes["gen_ai.request.max_tokens"] == 8
    assert local.attributes["gen_ai.usage.output_tokens"] == response.usage.completion_tokens > 0
