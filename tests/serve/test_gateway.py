"""`router serve` end to end: a real gateway process, the real openai client and raw HTTP,
the fault server upstream. One gateway for the module; each test scripts its own models."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import openai
import pytest

from router.testing import FaultServer, faults

from .gateway_process import UPSTREAM_KEY, Gateway
from .gateway_process import upstream_target as target

KEY = "gateway-key-full-0123456789"
NARROW_KEY = "gateway-key-narrow-0123456789"
PACED_KEY = "gateway-key-paced-0123456789"
MAX_BODY = 20000
AUTH = {"authorization": f"Bearer {KEY}"}
HELLO = [{"role": "user", "content": "hi"}]


@pytest.fixture(scope="module")
def upstream() -> Iterator[FaultServer]:
    with FaultServer() as server:
        yield server


@pytest.fixture(scope="module")
def gateway(upstream: FaultServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    s = upstream
    config = {
        "defaults": {"timeout": 3, "deadline": 20, "stream_idle_timeout": 1,
                     "retry": {"attempts": 2, "min_wait": 0.01, "max_wait": 0.02},
                     "breaker": {"fail_max": 1000, "reset_timeout": 600}},
        "targets": {
            "primary": target(s, "primary"), "secondary": target(s, "secondary"),
            "solo": target(s, "solo", retry={"attempts": 1}), "slow": target(s, "slow", timeout=0.5),
            "cp1": target(s, "cp1", prefill=True), "cp2": target(s, "cp2", prefill=True),
            "rs": target(s, "rs"), "er": target(s, "er"),
            "patient": target(s, "patient", timeout=20, stream_idle_timeout=20),  # only the client leaving ends it
            "fragile": target(s, "fragile", retry={"attempts": 1}, breaker={"fail_max": 1, "reset_timeout": 600}),
        },
        "chains": {
            "default": ["primary", "secondary"], "solo": ["solo"], "slow": ["slow"],
            "continue": {"targets": ["cp1", "cp2"], "mid_stream": "continue"},
            "restart": {"targets": ["rs"], "mid_stream": "restart"},
            "error": {"targets": ["er"], "mid_stream": "error"},
            "fragile": ["fragile"], "patient": ["patient", "secondary"],
        },
        "server": {"max_body_bytes": MAX_BODY, "keys": [
            {"name": "full", "key": KEY},
            {"name": "narrow", "key_sha256": __import__("hashlib").sha256(NARROW_KEY.encode()).hexdigest(),
             "chains": ["default"]},
            {"name": "paced", "key": PACED_KEY, "rate_limit": {"rpm": 1, "burst": 1, "max_wait": 0}},
        ]},
    }
    with Gateway(config, tmp_path_factory.mktemp("gateway")) as running:
        yield running


@pytest.fixture
def server(upstream: FaultServer) -> FaultServer:
    upstream.reset()
    return upstream


@pytest.fixture
def client(gateway: Gateway) -> openai.OpenAI:
    return openai.OpenAI(base_url=gateway.url, api_key=KEY, max_retries=0, timeout=30)


def post(gateway: Gateway, body: object, headers: dict[str, str] | None = None,
         timeout: object = 30) -> httpx.Response:
    content = body if isinstance(body, (bytes, str)) else json.dumps(body)
    return httpx.post(f"{gateway.url}/chat/completions", content=content,
                      headers={"content-type": "application/json", **AUTH, **(headers or {})}, timeout=timeout)


# -- answers through the openai client ---------------------------------------------------


def test_the_sync_openai_client_gets_the_answer_and_the_route(gateway: Gateway, server: FaultServer,
                                                              client: openai.OpenAI) -> None:
    server.script("primary", faults.ok("hello there"))
    raw = client.chat.completions.with_raw_response.create(model="default", messages=HELLO, max_tokens=8)
    resp = raw.parse()
    assert resp.choices[0].message.content == "hello there"
    assert raw.headers["x-router-served-by"] == "primary"
    assert raw.headers["x-router-degraded"] == "false"
    assert resp.model_extra["router"]["served_by"] == "primary"
    assert server.requests("primary")[0].body["max_tokens"] == 8


def test_the_async_openai_client_gets_the_answer(gateway: Gateway, server: FaultServer) -> None:
    server.script("primary", faults.ok("async hello"))

    async def ask() -> list[str]:
        client = openai.AsyncOpenAI(base_url=gateway.url, api_key=KEY, max_retries=0, timeout=30)
        answers = await asyncio.gather(*(client.chat.completions.create(model="default", messages=HELLO)
                                         for _ in range(4)))
        await client.close()
        return [a.choices[0].message.content for a in answers]

    assert asyncio.run(ask()) == ["async hello"] * 4
    assert server.count("primary") == 4


def test_a_failing_primary_fails_over_and_the_headers_name_the_secondary(gateway: Gateway, server: FaultServer,
                                                                         client: openai.OpenAI) -> None:
    server.script("primary", faults.status(503))
    server.script("secondary", faults.ok("from the secondary"))
    raw = client.chat.completions.with_raw_response.create(model="default", messages=HELLO)
    assert raw.parse().choices[0].message.content == "from the secondary"
    assert raw.headers["x-router-served-by"] == "secondary"
    assert [a["outcome"] for a in raw.parse().model_extra["router"]["attempts"]] == ["transient", "transient", "ok"]
    assert server.count("primary") == 2 and server.count("secondary") == 1


def test_a_streamed_answer_reaches_the_openai_client_chunk_by_chunk(gateway: Gateway, server: FaultServer,
                                                                    client: openai.OpenAI) -> None:
    server.script("primary", faults.stream("one two three four"))
    chunks = list(client.chat.completions.create(model="default", messages=HELLO, stream=True))
    assert "".join(c.choices[0].delta.content or "" for c in chunks) == "one two three four"
    assert chunks[-1].choices[0].finish_reason == "stop"
    assert chunks[-1].model_extra["router"]["served_by"] == "primary"
    assert len([c for c in chunks if c.choices[0].delta.content]) == 4


def test_tools_go_upstream_and_tool_calls_come_back_to_the_openai_client(gateway: Gateway, server: FaultServer,
                                                                         client: openai.OpenAI) -> None:
    call = {"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": '{"city":"Oslo"}'}}
    server.script("primary", faults.reply({
        "id": "chatcmpl-tools", "object": "chat.completion", "created": 1, "model": "primary",
        "choices": [{"index": 0, "finish_reason": "tool_calls",
                     "message": {"role": "assistant", "content": None, "tool_calls": [call]}}],
        "usage": {"prompt_tokens": 5, "completion_tokens": 7, "total_tokens": 12}}))
    tools = [{"type": "function", "function": {"name": "get_weather", "parameters": {
        "type": "object", "properties": {"city": {"type": "string"}}}}}]
    resp = client.chat.completions.create(model="default", messages=HELLO, tools=tools)
    called = resp.choices[0].message.tool_calls[0]
    assert (called.id, called.function.name, called.function.arguments) == ("call_1", "get_weather", '{"city":"Oslo"}')
    assert resp.choices[0].finish_reason == "tool_calls"
    assert server.requests("primary")[0].body["tools"] == tools


# -- SSE framing, raw -------------------------------------------------------------------


def test_sse_is_data_lines_each_a_chunk_ending_with_done(gateway: Gateway, server: FaultServer) -> None:
    server.script("primary", faults.stream("alpha beta"))
    reply = post(gateway, {"model": "default", "messages": HELLO, "stream": True})
    assert reply.status_code == 200
    assert reply.headers["content-type"].startswith("text/event-stream")
    assert reply.headers["x-router-served-by"] == "primary"
    events = reply.text.split("\n\n")
    assert events[-2:] == ["data: [DONE]", ""]
    assert all(e.startswith("data: ") and "\n" not in e for e in events[:-1])
    chunks = [json.loads(e[len("data: "):]) for e in events[:-2]]
    assert {c["object"] for c in chunks} == {"chat.completion.chunk"}
    assert "".join(c["choices"][0]["delta"]["content"] or "" for c in chunks) == "alpha beta"
    assert not any("restart" in c or "route" in c for c in chunks)


def test_a_stream_cut_mid_way_is_continued_through_the_gateway(gateway: Gateway, server: FaultServer,
                                                               client: openai.OpenAI) -> None:
    text = "the quick brown fox jumps over the lazy dog"
    server.script("cp1", faults.stream(text, cut_after=3), faults.status(503))  # it cannot take it up
    server.script("cp2", faults.stream(text))
    chunks = list(client.chat.completions.create(model="continue", messages=HELLO, stream=True))
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == text
    route = chunks[-1].model_extra["router"]
    assert route["served_by"] == "cp2"
    assert any("continued the stream after cp1 broke" in note for note in route["notes"])
    assert server.requests("cp2")[0].body["messages"][-1]["role"] == "assistant"


def test_a_restart_reaches_an_sse_client_as_a_marker_chunk_before_the_new_answer(
        gateway: Gateway, server: FaultServer) -> None:
    server.script("rs", faults.stream("first try words", cut_after=2), faults.stream("second answer"))
    reply = post(gateway, {"model": "restart", "messages": HELLO, "stream": True})
    chunks = [json.loads(e[len("data: "):]) for e in reply.text.split("\n\n") if e.startswith("data: {")]
    markers = [i for i, c in enumerate(chunks) if c.get("router", {}).get("restart")]
    assert len(markers) == 1
    after = "".join(c["choices"][0]["delta"]["content"] or "" for c in chunks[markers[0] + 1:])
    assert after == "second answer"
    assert chunks[markers[0]]["choices"][0]["delta"].get("content") in ("", None)
    assert reply.text.endswith("data: [DONE]\n\n")


def test_a_stream_no_target_recovers_ends_with_an_error_event_and_no_done(
        gateway: Gateway, server: FaultServer, client: openai.OpenAI) -> None:
    server.script("er", faults.stream("partial answer that breaks", cut_after=2))
    reply = post(gateway, {"model": "error", "messages": HELLO, "stream": True})
    last = reply.text.strip().split("\n\n")[-1]
    assert "[DONE]" not in reply.text
    assert json.loads(last[len("data: "):])["error"]["code"] == "stream_interrupted"
    server.script("er", faults.stream("partial answer that breaks", cut_after=2))
    with pytest.raises(openai.APIError, match="broke after"):
        list(client.chat.completions.create(model="error", messages=HELLO, stream=True))


# -- errors: OpenAI's shape, the right status, no upstream request when the caller is at fault


def _error(reply: httpx.Response) -> dict[str, object]:
    body = reply.json()
    assert set(body) == {"error"} and {"message", "type", "code"} <= set(body["error"])
    return body["error"]


def test_bad_json_is_400_before_any_upstream_request(gateway: Gateway, server: FaultServer) -> None:
    for body in (b"{not json", b"[1, 2]", b"\xff\xfe"):
        reply = post(gateway, body)
        assert reply.status_code == 400
        assert _error(reply)["type"] == "invalid_request_error"
    reply = post(gateway, {"model": "default", "messages": [{"role": "wizard", "content": "hi"}]})
    assert reply.status_code == 400 and "role" in _error(reply)["message"]
    reply = post(gateway, {"model": "default", "messages": HELLO, "timeout": 600})
    assert reply.status_code == 400
    assert server.count() == 0


def test_an_unknown_model_is_404_model_not_found(gateway: Gateway, server: FaultServer,
                                                client: openai.OpenAI) -> None:
    with pytest.raises(openai.NotFoundError) as caught:
        client.chat.completions.create(model="gpt-9", messages=HELLO)
    assert caught.value.code == "model_not_found"
    assert server.count() == 0


def test_a_missing_or_wrong_key_is_401_and_nothing_goes_upstream(gateway: Gateway, server: FaultServer) -> None:
    for headers in ({"authorization": ""}, {"authorization": "Bearer wrong-key-0123456789"},
                    {"authorization": f"Basic {KEY}"}, {"authorization": f"Bearer {KEY}x"}):
        reply = post(gateway, {"model": "default", "messages": HELLO}, headers)
        assert reply.status_code == 401
        assert _error(reply)["code"] == "invalid_api_key"
        assert KEY not in reply.text
    with pytest.raises(openai.AuthenticationError):
        openai.OpenAI(base_url=gateway.url, api_key="nope-nope-nope-nope", max_retries=0).models.list()
    assert server.count() == 0
    assert KEY not in gateway.stderr() and "wrong-key" not in gateway.stderr()


def test_a_key_calling_a_chain_outside_its_allow_list_is_403(gateway: Gateway, server: FaultServer) -> None:
    narrow = {"authorization": f"Bearer {NARROW_KEY}"}
    assert post(gateway, {"model": "default", "messages": HELLO}, narrow).status_code == 200
    reply = post(gateway, {"model": "solo", "messages": HELLO}, narrow)
    assert reply.status_code == 403 and _error(reply)["type"] == "permission_error"
    assert server.count("solo") == 0
    listed = httpx.get(f"{gateway.url}/models", headers=narrow).json()
    assert [m["id"] for m in listed["data"]] == ["default"]


def test_a_body_over_max_body_bytes_is_413(gateway: Gateway, server: FaultServer) -> None:
    big = {"model": "default", "messages": [{"role": "user", "content": "x" * (MAX_BODY + 1)}]}
    reply = post(gateway, big)
    assert reply.status_code == 413 and _error(reply)["code"] == "request_too_large"

    def chunked() -> Iterator[bytes]:  # no Content-Length: counted as it arrives
        yield json.dumps(big).encode()

    reply = httpx.post(f"{gateway.url}/chat/completions", content=chunked(), headers=AUTH, timeout=30)
    assert reply.status_code == 413
    assert server.count() == 0


def test_a_key_over_its_rate_limit_gets_429_with_retry_after(gateway: Gateway, server: FaultServer) -> None:
    paced = {"authorization": f"Bearer {PACED_KEY}"}
    assert post(gateway, {"model": "default", "messages": HELLO}, paced).status_code == 200
    reply = post(gateway, {"model": "default", "messages": HELLO}, paced)
    assert reply.status_code == 429 and _error(reply)["code"] == "rate_limit_exceeded"
    assert int(reply.headers["retry-after"]) >= 1
    assert server.count() == 1


def test_every_target_failing_is_502_with_the_reasons_and_no_secret(gateway: Gateway, server: FaultServer) -> None:
    server.script("solo", faults.quoting_key(500))
    reply = post(gateway, {"model": "solo", "messages": HELLO})
    assert reply.status_code == 502
    error = _error(reply)
    assert error["code"] == "upstream_error" and "solo" in error["message"]
    assert UPSTREAM_KEY not in reply.text and UPSTREAM_KEY[6:] not in reply.text
    assert reply.headers["x-should-retry"] == "false"


def test_a_stream_that_fails_before_its_first_chunk_is_an_http_502_not_an_event_stream(
        gateway: Gateway, server: FaultServer, client: openai.OpenAI) -> None:
    server.script("solo", faults.quoting_key(500))
    reply = post(gateway, {"model": "solo", "messages": HELLO, "stream": True})
    assert reply.status_code == 502 and reply.headers["content-type"].startswith("application/json")
    assert _error(reply)["code"] == "upstream_error" and UPSTREAM_KEY[6:] not in reply.text
    server.script("solo", faults.status(500))
    with pytest.raises(openai.InternalServerError) as caught:
        list(client.chat.completions.create(model="solo", messages=HELLO, stream=True))
    assert caught.value.status_code == 502
    assert server.count("solo") == 2  # one attempt per call: the gateway adds no retry


def test_a_silent_upstream_is_504(gateway: Gateway, server: FaultServer) -> None:
    server.script("slow", faults.hang(5))
    reply = post(gateway, {"model": "slow", "messages": HELLO})
    assert reply.status_code == 504 and _error(reply)["code"] == "upstream_timeout"


def test_an_open_circuit_is_503_without_a_request_and_readyz_says_which_chain(gateway: Gateway,
                                                                              server: FaultServer) -> None:
    assert httpx.get(f"{gateway.base}/readyz").status_code == 200
    server.script("fragile", faults.status(500))
    assert post(gateway, {"model": "fragile", "messages": HELLO}).status_code == 502
    reply = post(gateway, {"model": "fragile", "messages": HELLO})
    assert reply.status_code == 503 and _error(reply)["code"] == "no_target_available"
    assert server.count("fragile") == 1
    ready = httpx.get(f"{gateway.base}/readyz")
    assert ready.status_code == 503 and ready.json()["chains_without_target"] == ["fragile"]


def test_a_content_policy_refusal_keeps_the_providers_status(gateway: Gateway, server: FaultServer,
                                                             client: openai.OpenAI) -> None:
    server.script("solo", faults.content_policy())
    with pytest.raises(openai.BadRequestError) as caught:
        client.chat.completions.create(model="solo", messages=HELLO)
    assert caught.value.status_code == 400 and caught.value.code == "content_policy_violation"


def test_models_healthz_and_metrics(gateway: Gateway, server: FaultServer, client: openai.OpenAI) -> None:
    assert {m.id for m in client.models.list()} == {"default", "solo", "slow", "continue", "restart", "error",
                                                     "fragile", "patient"}
    assert httpx.get(f"{gateway.base}/healthz").json()["status"] == "ok"
    assert httpx.get(f"{gateway.base}/metrics").status_code == 401
    client.chat.completions.create(model="default", messages=HELLO)
    metrics = httpx.get(f"{gateway.base}/metrics", headers=AUTH)
    assert metrics.status_code == 200
    assert 'router_requests_total{outcome="ok",target="primary"}' in metrics.text
    assert 'router_gateway_requests_total{path="/v1/chat/completions",status="200"}' in metrics.text
    assert httpx.get(f"{gateway.base}/v1/nothing", headers=AUTH).status_code == 404


# -- the client hangs up -------------------------------------------------------------------


def _hung_up(server: FaultServer, model: str, within: float = 5.0) -> bool:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if server.hangups(model):
            return True
        time.sleep(0.05)
    return False


def test_a_client_that_hangs_up_closes_the_upstream_request(gateway: Gateway, server: FaultServer) -> None:
    server.script("patient", faults.hang(30))  # the target's timeout is 20 s
    with pytest.raises(httpx.ReadTimeout):
        post(gateway, {"model": "patient", "messages": HELLO}, timeout=httpx.Timeout(30, read=1.0))
    left = time.monotonic()
    assert _hung_up(server, "patient", within=3.0), "the gateway kept the upstream request open after its client left"
    assert server.hangups("patient")[0] - left < 3.0
    assert server.count("secondary") == 0  # cancelled, not failed over


def test_a_stream_client_that_hangs_up_closes_the_stalled_upstream_stream(gateway: Gateway,
                                                                          server: FaultServer) -> None:
    server.script("patient", faults.stream("one two three four five", stall_after=2, stall_seconds=30))
    with httpx.stream("POST", f"{gateway.url}/chat/completions", headers=AUTH, timeout=30,
                      json={"model": "patient", "messages": HELLO, "stream": True}) as reply:
        lines = reply.iter_lines()
        got = [next(lines) for _ in range(5)]  # role chunk, blank, 'one ', blank, 'two '
    left = time.monotonic()
    assert "two" in got[-1]
    assert _hung_up(server, "patient", within=3.0), "the gateway kept reading a stalled stream after its client left"
    assert server.hangups("patient")[0] - left < 3.0  # the stall would have lasted 20 s
    assert server.count("secondary") == 0
