"""`server.otel: true`: the gateway traces every call with router.otel, under the trace
its client sent (`traceparent`). The gateway runs as a real subprocess whose only addition
is the application's part of OpenTelemetry (an SDK tracer provider exporting each span as a
JSON line to a file), as `opentelemetry-instrument` would set one up from the environment.
"""

from __future__ import annotations

import json
import sys
import textwrap
from pathlib import Path
from typing import Any

import httpx
import pytest

from router.testing import FaultServer, faults

from .gateway_process import Gateway, upstream_target

HELLO = [{"role": "user", "content": "hello"}]
TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
CLIENT_SPAN = "00f067aa0ba902b7"

TRACED_SERVE = textwrap.dedent("""
    import sys
    from opentelemetry import trace
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import ConsoleSpanExporter, SimpleSpanProcessor

    out = open(sys.argv[1], "w", buffering=1)
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(ConsoleSpanExporter(
        out=out, formatter=lambda span: span.to_json(indent=None) + "\\n")))
    trace.set_tracer_provider(provider)
    from router.cli import main
    sys.exit(main(sys.argv[2:]))
""")


def traced_gateway(config: dict[str, Any], folder: Path) -> tuple[Gateway, Path]:
    spans = folder / "spans.jsonl"
    script = folder / "traced_serve.py"
    script.write_text(TRACED_SERVE, encoding="utf-8")
    gateway = Gateway(config, folder)
    gateway.command = [sys.executable, str(script), str(spans), *gateway.command[3:]]  # after `-m router`
    return gateway, spans


def read_spans(path: Path, count: int) -> list[dict[str, Any]]:
    import time

    deadline = time.monotonic() + 10
    while True:
        lines = path.read_text(encoding="utf-8").splitlines() if path.exists() else []
        if len(lines) >= count or time.monotonic() > deadline:
            return [json.loads(line) for line in lines]
        time.sleep(0.05)


def test_with_server_otel_each_call_is_a_span_under_the_clients_trace(tmp_path: Path) -> None:
    with FaultServer() as server:
        server.script("primary", faults.status(503))
        server.script("secondary", faults.ok("from the secondary"))
        config = {"defaults": {"retry": {"attempts": 1}},
                  "targets": {"primary": upstream_target(server, "primary"),
                              "secondary": upstream_target(server, "secondary")},
                  "chains": {"default": ["primary", "secondary"]},
                  "server": {"otel": True}}
        gateway, spans_file = traced_gateway(config, tmp_path)
        with gateway:
            reply = httpx.post(f"{gateway.url}/chat/completions", timeout=30,
                               json={"model": "default", "messages": HELLO, "max_tokens": 7},
                               headers={"traceparent": f"00-{TRACE_ID}-{CLIENT_SPAN}-01"})
            assert reply.status_code == 200 and reply.headers["x-router-served-by"] == "secondary"
            spans = read_spans(spans_file, 3)
    by_name = {span["name"]: span for span in spans}
    call = by_name["router default"]
    assert call["context"]["trace_id"] == f"0x{TRACE_ID}" and call["parent_id"] == f"0x{CLIENT_SPAN}"
    assert call["attributes"]["router.served_by"] == "secondary" and call["attributes"]["router.attempts"] == 2
    attempts = [span for span in spans if span["name"].startswith("chat ")]
    assert sorted(span["attributes"]["router.target"] for span in attempts) == ["primary", "secondary"]
    assert all(span["parent_id"] == call["context"]["span_id"] for span in attempts)
    failed = next(span for span in attempts if span["attributes"]["router.target"] == "primary")
    assert failed["attributes"]["router.outcome"] == "transient" and failed["status"]["status_code"] == "ERROR"
    assert next(span for span in attempts if span is not failed)["attributes"]["gen_ai.request.max_tokens"] == 7
    assert "sk-upstream" not in spans_file.read_text(encoding="utf-8")


def test_server_otel_is_refused_at_start_when_it_is_not_true_or_false(tmp_path: Path) -> None:
    gateway = Gateway({"targets": {"t": {"model": "openai/t", "api_base": "http://127.0.0.1:9/v1", "api_key": "k"}},
                       "chains": {"default": ["t"]}, "server": {"otel": "yes"}}, tmp_path)
    with pytest.raises(AssertionError, match=r"server\.otel.*expected true or false"):
        gateway.start()
    assert gateway.proc is not None and gateway.proc.wait(10) == 2
