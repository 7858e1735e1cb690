"""Events, logs and metrics: what an operator sees, in order, with no secrets in it."""

from __future__ import annotations

import json
import logging

import pytest

from router import AllTargetsFailed, Event, LoggingListener
from router.testing import faults

from ..conftest import TEST_KEY, remote

HI = [{"role": "user", "content": "hi"}]


def names(events: list[Event]) -> list[tuple]:
    out = []
    for e in events:
        if e.name == "circuit":
            out.append((e.name, e.target, e.old_state, e.new_state))
        elif e.name == "call":
            out.append((e.name, e.outcome, e.served_by))
        else:
            out.append((e.name, e.target, e.outcome))
    return out


def test_listener_sees_a_retry_then_failover_call_in_order(server, make_router):
    server.script("p", faults.status(503))
    events: list[Event] = []
    router = make_router({"primary": "p", "secondary": remote(server, "s", degraded=True)},
                         defaults={"breaker": {"fail_max": 3, "reset_timeout": 60}}, listeners=[events.append])
    router.complete(HI)
    assert names(events) == [
        ("attempt", "primary", "transient"),
        ("retry", "primary", "transient"),
        ("attempt", "primary", "transient"),
        ("retry", "primary", "transient"),
        ("circuit", "primary", "closed", "open"),
        ("attempt", "primary", "transient"),
        ("failover", "primary", "transient"),
        ("attempt", "secondary", "ok"),
        ("degraded", "secondary", None),
        ("call", "ok", "secondary"),
    ]
    retry = events[1]
    assert retry.wait_s > 0 and retry.chain == "default"
    assert events[0].status == 503 and events[0].error == "ServiceUnavailableError" and events[0].latency_s > 0
    assert events[-1].latency_s >= sum(e.latency_s for e in events if e.name == "attempt")


def test_a_failing_listener_never_breaks_a_call(server, make_router, caplog):
    seen: list[Event] = []

    def broken(event: Event) -> None:
        raise RuntimeError("listener bug")

    router = make_router({"primary": "p"}, listeners=[broken, seen.append])
    with caplog.at_level(logging.WARNING, logger="router"):
        for _ in range(3):
            assert router.complete(HI).route.served_by == "primary"
    assert len([r for r in caplog.records if "listener" in r.getMessage()]) == 1
    assert [e.name for e in seen].count("call") == 3


def test_listeners_belong_to_one_router(server, make_router):
    mine: list[Event] = []
    make_router({"primary": "p"}, listeners=[mine.append])
    other = make_router({"primary": "p"})
    other.complete(HI)
    assert mine == []


def test_logging_listener_text_and_json_lines(server, make_router, caplog):
    server.script("p", faults.status(503))
    router = make_router({"primary": remote(server, "p", retry={"attempts": 1}), "secondary": "s"},
                         listeners=[LoggingListener(), LoggingListener(json=True, logger="router.events.json")])
    with caplog.at_level(logging.INFO, logger="router.events"):
        router.complete(HI)
    text = [r.getMessage() for r in caplog.records if r.name == "router.events"]
    assert text[0].startswith("event=attempt target=primary chain=default outcome=transient status=503 "
                              "error=ServiceUnavailableError latency_s=")
    assert text[-1].startswith("event=call chain=default outcome=ok latency_s=") and "served_by=secondary" in text[-1]
    lines = [json.loads(r.getMessage()) for r in caplog.records if r.name == "router.events.json"]
    assert [line["event"] for line in lines] == ["attempt", "failover", "attempt", "call"]
    assert lines[0]["status"] == 503 and isinstance(lines[0]["time"], float)


def test_config_switches_on_json_event_logs(server, caplog):
    from router import Router

    router = Router.from_dict({"targets": {"p": remote(server, "p")}, "chains": {"default": ["p"]},
                               "events": {"log": "json"}})
    with caplog.at_level(logging.INFO, logger="router.events"):
        router.complete(HI)
    assert [json.loads(r.getMessage())["event"] for r in caplog.records if r.name == "router.events"] == [
        "attempt", "call"]


def test_secrets_never_reach_logs_or_errors_when_a_401_echoes_the_key(server, make_router, caplog):
    server.script("p", faults.status(401, message=f"Incorrect API key provided: {TEST_KEY}. Bearer {TEST_KEY}"))
    server.script("s", faults.status(403, message=f"forbidden for https://x.test/v1?api_key={TEST_KEY}"))
    router = make_router({"primary": "p", "secondary": "s"},
                         listeners=[LoggingListener(), LoggingListener(json=True)])
    with caplog.at_level(logging.DEBUG):
        with pytest.raises(AllTargetsFailed) as info:
            router.complete(HI)
    logged = "\n".join(r.getMessage() for r in caplog.records)
    assert "Incorrect API key provided" in logged  # the provider's words are kept ...
    assert TEST_KEY not in logged  # ... its echo of the key is not
    assert TEST_KEY not in str(info.value) and TEST_KEY not in repr(info.value.attempts)
    assert TEST_KEY not in json.dumps(router.status())


def test_prometheus_metrics_after_a_scripted_scenario(server, make_router):
    prom = pytest.importorskip("prometheus_client")
    from router.observe.metrics import PrometheusListener

    registry = prom.CollectorRegistry()
    server.script("p", faults.status(503))
    router = make_router({"primary": "p", "secondary": remote(server, "s", degraded=True)},
                         defaults={"breaker": {"fail_max": 3, "reset_timeout": 60}},
                         listeners=[PrometheusListener(registry)])
    router.complete(HI)
    router.complete(HI)  # the primary's circuit is open now: skipped

    def value(name: str, **labels: str) -> float:
        return registry.get_sample_value(name, labels) or 0.0

    assert value("router_requests_total", target="primary", outcome="transient") == 3
    assert value("router_requests_total", target="primary", outcome="circuit_open") == 1
    assert value("router_requests_total", target="secondary", outcome="ok") == 2
    assert value("router_retries_total", target="primary") == 2
    assert value("router_failovers_total", target="primary", outcome="transient") == 1
    assert value("router_failovers_total", target="primary", outcome="circuit_open") == 1
    assert value("router_degraded_answers_total", target="secondary") == 2
    assert value("router_circuit_state", target="primary") == 2
    assert value("router_calls_total", chain="default", outcome="ok") == 2
    assert value("router_attempt_duration_seconds_count", target="primary") == 3
    assert value("router_call_duration_seconds_count", chain="default") == 2
