"""Tests for router.testing: the fault server, driven over real loopback sockets.

Most cases use http.client so that exactly what went over the wire is visible; a few
drive the real litellm client, whose exception mapping the router's classifier relies on.
"""

from __future__ import annotations

import dataclasses
import http.client
import json
import os
import random
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from router.testing import FaultServer, ReceivedRequest, faults

MESSAGES = [{"role": "system", "content": "be brief"}, {"role": "user", "content": "say hi please"}]


@pytest.fixture
def server():
    with FaultServer() as srv:
        yield srv


def connect(server: FaultServer, timeout: float = 2.0) -> http.client.HTTPConnection:
    return http.client.HTTPConnection("127.0.0.1", server.port, timeout=timeout)


def post(server, model="m1", *, conn=None, timeout=2.0, path="/v1/chat/completions", raw=None, **fields):
    """POST a chat request; returns (status, headers, body bytes, connection)."""
    conn = conn or connect(server, timeout)
    payload = raw if raw is not None else json.dumps({"model": model, "messages": MESSAGES, **fields})
    conn.request("POST", path, payload, {"Content-Type": "application/json"})
    resp = conn.getresponse()
    return resp.status, resp.headers, resp.read(), conn


def open_stream(server, model="m1", timeout=2.0, **fields):
    conn = connect(server, timeout)
    conn.request("POST", "/v1/chat/completions",
                 json.dumps({"model": model, "messages": MESSAGES, "stream": True, **fields}),
                 {"Content-Type": "application/json"})
    return conn.getresponse()


def read_all(resp):
    """Read a response body incrementally; returns (bytes received, exception or None)."""
    data = b""
    try:
        while True:
            piece = resp.read1(65536)
            if not piece:
                return data, None
            data += piece
    except Exception as exc:  # noqa: BLE001 - the error is what the test inspects
        return data, exc


def sse_events(data: bytes) -> list:
    """The ``data:`` payloads of an SSE body, JSON-decoded where possible."""
    events = []
    for line in data.decode().split("\n"):
        if line.startswith("data: "):
            payload = line[len("data: "):]
            try:
                events.append(json.loads(payload))
            except ValueError:
                events.append(payload)
    return events


def contents(events) -> list:
    return [e["choices"][0]["delta"]["content"] for e in events
            if isinstance(e, dict) and e.get("choices") and "content" in e["choices"][0]["delta"]]


# -- plain completions and bookkeeping ------------------------------------------------

def test_ok_answers_an_openai_shaped_completion(server):
    server.script("m1", faults.ok("hi there you"))
    status, headers, body, _ = post(server, "m1")
    assert status == 200 and headers["Content-Type"] == "application/json"
    data = json.loads(body)
    assert data["id"].startswith("chatcmpl-") and data["object"] == "chat.completion"
    assert data["model"] == "m1"
    assert data["choices"][0]["message"] == {"role": "assistant", "content": "hi there you"}
    assert data["choices"][0]["finish_reason"] == "stop"
    assert data["usage"] == {"prompt_tokens": 5, "completion_tokens": 3, "total_tokens": 8}
    assert server.url == f"http://127.0.0.1:{server.port}/v1"


def test_both_chat_paths_and_keep_alive(server):
    conn = connect(server)
    for path in ("/v1/chat/completions", "/chat/completions", "/v1/chat/completions"):
        status, headers, _, _ = post(server, conn=conn, path=path)
        assert status == 200 and "Content-Length" in headers
    assert [r.path for r in server.requests()] == [
        "/v1/chat/completions", "/chat/completions", "/v1/chat/completions"]


def test_info_endpoints_and_unknown_paths_are_not_counted(server):
    conn = connect(server)
    for path in ("/v1/models", "/health"):
        conn.request("GET", path)
        resp = conn.getresponse()
        assert resp.status == 200 and isinstance(json.loads(resp.read()), dict)
    conn.request("GET", "/nope")
    resp = conn.getresponse()
    assert resp.status == 404 and "error" in json.loads(resp.read())
    status, _, body, _ = post(server, conn=conn, path="/v1/embeddings")
    assert status == 404 and "error" in json.loads(body)
    assert server.count() == 0


def test_unparsable_body_is_400_and_still_recorded(server):
    status, _, body, _ = post(server, raw="this is not json")
    assert status == 400 and json.loads(body)["error"]["type"] == "invalid_request_error"
    (request,) = server.requests()
    assert request.body is None and request.model is None


def test_script_plays_steps_in_order_then_repeats_the_last(server):
    server.script("m1", faults.status(503), faults.status(503), faults.ok("hi"))
    codes = [post(server, "m1")[0] for _ in range(5)]
    assert codes == [503, 503, 200, 200, 200]
    assert post(server, "other")[0] == 200  # unscripted: default ok()
    assert server.count("m1") == 5 and server.count("other") == 1 and server.count() == 6


def test_rescript_restarts_steps_but_keeps_the_log(server):
    server.script("m1", faults.status(500), faults.ok())
    assert [post(server)[0] for _ in range(2)] == [500, 200]
    server.script("m1", faults.status(429), faults.ok())
    assert [post(server)[0] for _ in range(2)] == [429, 200]
    assert [r.index for r in server.requests("m1")] == [0, 1, 2, 3]


def test_requests_record_index_time_body_and_headers(server):
    before = time.monotonic()
    post(server, "a", temperature=0.5)
    post(server, "b")
    post(server, "a")
    after = time.monotonic()
    reqs = server.requests("a")
    assert [r.index for r in reqs] == [0, 1] and all(isinstance(r, ReceivedRequest) for r in reqs)
    assert before <= reqs[0].t <= reqs[1].t <= after
    assert reqs[0].body["temperature"] == 0.5 and reqs[0].model == "a"
    assert reqs[0].headers["content-type"] == "application/json"
    assert [r.model for r in server.requests()] == ["a", "b", "a"]
    assert server.requests("never") == [] and server.count("never") == 0
    with pytest.raises(dataclasses.FrozenInstanceError):
        reqs[0].index = 7


def test_default_and_reset(server):
    server.default(faults.status(502))
    server.script("m1", faults.ok())
    assert post(server, "x")[0] == 502 and post(server, "m1")[0] == 200
    server.reset()
    assert server.count() == 0 and server.requests() == []
    assert post(server, "x")[0] == 200  # reset also restores the default ok()


# -- HTTP errors ---------------------------------------------------------------------------

def test_status_sends_retry_headers_and_openai_error_body(server):
    server.script("m1", faults.status(429, retry_after=7, retry_after_ms=1500, headers={"x-extra": "1"}))
    status, headers, body, _ = post(server)
    assert status == 429
    assert headers["Retry-After"] == "7" and headers["retry-after-ms"] == "1500"
    assert headers["x-extra"] == "1"
    error = json.loads(body)["error"]
    assert error["message"].startswith("Rate limit reached") and error["type"] == "rate_limit_error"
    assert "param" in error and error["param"] is None
    date = "Wed, 21 Oct 2015 07:28:00 GMT"
    server.script("m1", faults.status(503, retry_after=date))
    status, headers, body, _ = post(server)
    assert status == 503 and headers["Retry-After"] == date and "retry-after-ms" not in headers


@pytest.mark.parametrize("fault, code, etype, ecode", [
    (faults.status(401), 401, "invalid_request_error", "invalid_api_key"),
    (faults.status(500), 500, "server_error", None),
    (faults.status(418, message="teapot", error_type="x", error_code="y"), 418, "x", "y"),
    (faults.context_too_long(), 400, "invalid_request_error", "context_length_exceeded"),
    (faults.content_policy(), 400, "invalid_request_error", "content_policy_violation"),
])
def test_status_error_fields(server, fault, code, etype, ecode):
    server.script("m1", fault)
    status, _, body, _ = post(server)
    error = json.loads(body)["error"]
    assert (status, error["type"], error["code"]) == (code, etype, ecode)
    assert error["message"] == fault.message


# -- connection-level faults ---------------------------------------------------------------

def test_hang_times_out_the_client_and_is_counted(server):
    server.script("m1", faults.hang())
    with pytest.raises(TimeoutError):
        post(server, timeout=0.3)
    assert server.count("m1") == 1


def test_hang_with_seconds_closes_without_a_response(server):
    server.script("m1", faults.hang(0.2))
    start = time.monotonic()
    with pytest.raises(http.client.RemoteDisconnected):
        post(server)
    assert 0.15 <= time.monotonic() - start < 1.5


def test_stop_returns_quickly_while_handlers_hang():
    server = FaultServer().start()
    server.script("hang", faults.hang())
    server.script("stall", faults.stream("a b c", stall_after=1))
    errors = []

    def call(model):
        try:
            if model == "stall":
                read_all(open_stream(server, model, timeout=10))
            else:
                post(server, model, timeout=10)
        except Exception as exc:  # noqa: BLE001
            errors.append(exc)

    idle = connect(server)
    post(server, "idle", conn=idle)
    threads = [threading.Thread(target=call, args=(m,)) for m in ("hang", "stall")]
    for t in threads:
        t.start()
    deadline = time.monotonic() + 2
    while server.count() < 3 and time.monotonic() < deadline:
        time.sleep(0.01)
    start = time.monotonic()
    server.stop()
    assert time.monotonic() - start < 1.5
    for t in threads:
        t.join(2)
        assert not t.is_alive()  # the hung requests ended because the server closed them
    with pytest.raises((ConnectionError, http.client.HTTPException, OSError)):
        post(server, "idle", conn=idle)  # idle keep-alive connections are closed too


def test_reset_aborts_the_connection(server):
    server.script("m1", faults.reset())
    with pytest.raises(ConnectionResetError):  # http.client.RemoteDisconnected is a subclass
        post(server)
    assert server.count("m1") == 1


def test_malformed_is_200_with_unparsable_json(server):
    server.script("m1", faults.malformed())
    status, headers, body, _ = post(server)
    assert status == 200 and headers["Content-Type"] == "application/json"
    assert int(headers["Content-Length"]) == len(body)
    with pytest.raises(ValueError):
        json.loads(body)


def test_connection_refused_after_stop_and_restart_on_same_port():
    server = FaultServer().start()
    port = server.port
    server.stop()
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", port), timeout=1)
    with server:
        assert server.port == port and post(server)[0] == 200


# -- composite faults ----------------------------------------------------------------------

def test_flaky_is_deterministic_with_a_seed(server):
    def run():
        server.script("m1", faults.flaky(0.5, faults.status(503), seed=42))
        return [post(server)[0] for _ in range(12)]

    rng = random.Random(42)
    expected = [503 if rng.random() < 0.5 else 200 for _ in range(12)]
    assert run() == expected == run()
    assert {503, 200} == set(expected)
    server.script("m1", faults.flaky(1.0, faults.status(500), otherwise=faults.status(400)))
    assert post(server)[0] == 500
    server.script("m1", faults.flaky(0.0, faults.status(500), otherwise=faults.status(400)))
    assert post(server)[0] == 400


def test_recover_after_switches_once_the_time_has_passed(server):
    server.script("m1", faults.recover_after(0.3, faults.status(503), then=faults.ok("back")))
    assert post(server)[0] == 503
    assert post(server)[0] == 503
    time.sleep(0.35)
    status, _, body, _ = post(server)
    assert status == 200 and json.loads(body)["choices"][0]["message"]["content"] == "back"


# -- streaming ------------------------------------------------------------------------------

TEXT = "  Hello   streaming world, friend. "


def test_ok_streams_when_asked(server):
    server.script("m1", faults.ok(TEXT))
    resp = open_stream(server, stream_options={"include_usage": True})
    assert resp.status == 200 and resp.headers["Content-Type"] == "text/event-stream"
    data, error = read_all(resp)
    assert error is None
    events = sse_events(data)
    assert events[0]["choices"][0]["delta"] == {"role": "assistant"}
    assert events[0]["object"] == "chat.completion.chunk" and events[0]["model"] == "m1"
    assert "".join(contents(events)) == TEXT and len(contents(events)) == 4
    finish = [e for e in events if isinstance(e, dict) and e["choices"]][-1]
    assert finish["choices"][0]["finish_reason"] == "stop"
    assert events[-2]["choices"] == [] and events[-2]["usage"]["completion_tokens"] == 4
    assert events[-1] == "[DONE]"


def test_stream_without_usage_request_has_no_usage_chunk(server):
    server.script("m1", faults.stream("a b"))
    data, error = read_all(open_stream(server))
    events = sse_events(data)
    assert error is None and events[-1] == "[DONE]"
    assert not any(isinstance(e, dict) and "usage" in e for e in events)


def test_stream_cut_after_sends_n_chunks_then_aborts(server):
    server.script("m1", faults.stream("one two three four", cut_after=2))
    data, error = read_all(open_stream(server))
    assert contents(sse_events(data)) == ["one ", "two "]
    assert isinstance(error, (ConnectionError, http.client.IncompleteRead))


def test_stream_stall_after_goes_silent(server):
    server.script("m1", faults.stream("one two three", stall_after=1))
    data, error = read_all(open_stream(server, timeout=0.3))
    assert contents(sse_events(data)) == ["one "]
    assert isinstance(error, TimeoutError)


def test_stream_malformed_after_sends_a_broken_event(server):
    server.script("m1", faults.stream("one two three", malformed_after=2))
    data, error = read_all(open_stream(server))
    events = sse_events(data)
    assert error is None and contents(events) == ["one ", "two "]
    assert events[-1] == "{not json"


def test_stream_end_after_ends_the_body_cleanly_without_a_finish(server):
    server.script("m1", faults.stream("one two three", end_after=2))
    data, error = read_all(open_stream(server))
    events = sse_events(data)
    assert error is None and contents(events) == ["one ", "two "]
    assert all(e["choices"][0]["finish_reason"] is None for e in events) and "[DONE]" not in events


def test_stream_stall_seconds_goes_silent_for_a_while_then_carries_on(server):
    server.script("m1", faults.stream("one two three", stall_after=1, stall_seconds=0.4))
    start = time.monotonic()
    data, error = read_all(open_stream(server))
    assert error is None and contents(sse_events(data)) == ["one ", "two ", "three"]
    assert 0.4 <= time.monotonic() - start < 2


def test_stream_invalid_event_at_is_the_nth_event_and_the_rest_is_intact(server):
    server.script("m1", faults.stream("one two three four", invalid_event_at=3))
    data, error = read_all(open_stream(server))
    events = sse_events(data)
    assert error is None and events[2] == "{not json"  # role, "one ", then the invalid event
    assert contents(events) == ["one ", "two ", "three ", "four"] and events[-1] == "[DONE]"


def test_stream_first_token_delay_none_never_sends_a_chunk_and_notes_the_hangup(server):
    server.script("m1", faults.stream("one two", first_token_delay=None))
    resp = open_stream(server, timeout=0.3)
    assert resp.status == 200
    data, error = read_all(resp)
    assert data == b"" and isinstance(error, TimeoutError)
    resp.close()
    deadline = time.monotonic() + 2
    while not server.hangups("m1") and time.monotonic() < deadline:
        time.sleep(0.02)
    assert len(server.hangups("m1")) == 1 and server.hangups() == server.hangups("m1")


def test_refuse_prefill_is_400_only_when_the_last_message_is_an_assistant_turn(server):
    server.script("m1", faults.refuse_prefill(faults.ok("fine")))
    status, _, body, _ = post(server, messages=[*MESSAGES, {"role": "assistant", "content": "Hi"}])
    assert status == 400 and json.loads(body)["error"]["message"] == faults.PREFILL_REFUSED_MESSAGE
    status, _, body, _ = post(server)
    assert status == 200 and json.loads(body)["choices"][0]["message"]["content"] == "fine"


def test_a_stream_continues_the_prefill_it_was_given(server):
    server.script("m1", faults.stream("one two three four"))
    prefill = [*MESSAGES, {"role": "assistant", "content": "one tw"}]
    data, error = read_all(open_stream(server, messages=prefill))
    assert error is None and "".join(contents(sse_events(data))) == "o three four"


def test_stream_done_false_finishes_without_done_marker(server):
    server.script("m1", faults.stream("one two", done=False))
    conn_resp = open_stream(server)
    data, error = read_all(conn_resp)
    events = sse_events(data)
    assert error is None and "[DONE]" not in events
    assert events[-1]["choices"][0]["finish_reason"] == "stop"
    assert post(server, "m2")[0] == 200  # the server is still healthy


def test_stream_delays(server):
    server.script("m1", faults.stream("a b c", first_token_delay=0.2, token_delay=0.05))
    start = time.monotonic()
    resp = open_stream(server)
    assert time.monotonic() - start < 0.15  # headers arrive before the first token
    data, _ = read_all(resp)
    assert 0.3 <= time.monotonic() - start < 1.5 and contents(sse_events(data)) == ["a ", "b ", "c"]


def test_ok_delay_holds_back_the_first_byte(server):
    server.script("m1", faults.ok(delay=0.2))
    start = time.monotonic()
    assert post(server)[0] == 200 and time.monotonic() - start >= 0.2


# -- concurrency, serialisation, CLI -------------------------------------------------------

def test_concurrent_keep_alive_clients(server):
    server.script("m1", faults.flaky(0.5, faults.status(503), seed=1))

    def worker():
        conn = connect(server)
        for _ in range(20):
            post(server, conn=conn)

    threads = [threading.Thread(target=worker) for _ in range(32)]
    start = time.monotonic()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert server.count("m1") == 640 and time.monotonic() - start < 10
    assert sorted(r.index for r in server.requests("m1")) == list(range(640))


ALL_FAULTS = [
    faults.ok(), faults.ok("x", delay=0.5), faults.status(429, retry_after=2.5, headers={"a": "b"}),
    faults.status(503, retry_after="Wed, 21 Oct 2015 07:28:00 GMT", retry_after_ms=10),
    faults.context_too_long(), faults.content_policy(), faults.hang(), faults.hang(3),
    faults.reset(), faults.malformed(), faults.stream("a b", cut_after=1, done=False),
    faults.flaky(0.3, faults.reset(), otherwise=faults.hang(1), seed=3),
    faults.recover_after(2, faults.flaky(0.5, faults.status(500)), then=faults.stream()),
    faults.refuse_prefill(faults.stream("a b", end_after=1, stall_after=0, stall_seconds=1, invalid_event_at=2)),
    faults.stream(first_token_delay=None),
]


@pytest.mark.parametrize("fault", ALL_FAULTS, ids=lambda f: f.kind)
def test_faults_round_trip_through_json(fault):
    data = json.loads(json.dumps(dataclasses.asdict(fault)))
    assert data["kind"] == fault.kind
    assert faults.from_dict(data) == fault


def test_from_dict_fills_defaults_and_rejects_nonsense():
    assert faults.from_dict({"kind": "status", "code": 503}) == faults.status(503)
    for bad in ({"kind": "nope"}, {"code": 503}, {"kind": "status", "colour": 1}):
        with pytest.raises(ValueError):
            faults.from_dict(bad)
    with pytest.raises(ValueError):
        faults.flaky(1.5, faults.ok())


def test_cli_serves_the_default_fault_until_interrupted():
    root = Path(__file__).resolve().parents[2]
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(root), os.environ.get("PYTHONPATH", "")]))
    proc = subprocess.Popen(
        [sys.executable, "-m", "router.testing", "--default", '{"kind": "status", "code": 503}',
         "--script", 'm1=[{"kind": "ok", "text": "yo"}]'],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, text=True)
    try:
        url = proc.stdout.readline().strip()
        assert url.startswith("http://127.0.0.1:") and url.endswith("/v1")
        port = int(url.rsplit(":", 1)[1].split("/")[0])
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
        for model, expected in (("x", 503), ("m1", 200)):
            conn.request("POST", "/v1/chat/completions", json.dumps({"model": model}))
            resp = conn.getresponse()
            assert (resp.status, bool(resp.read())) == (expected, True)
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=3) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


# -- the real litellm client ---------------------------------------------------------------
# These pin how litellm (as installed) reports each fault, which the router's error
# classifier depends on: the class, its status_code and the exception chain beneath it.

@pytest.fixture(scope="module")
def litellm():
    os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
    import litellm

    litellm.suppress_debug_info = True
    return litellm


def complete(litellm, server_url, model="m1", timeout=2.0, **kwargs):
    return litellm.completion(model=f"openai/{model}", api_base=server_url, api_key="sk-test",
                              max_retries=0, timeout=timeout, messages=MESSAGES, **kwargs)


def exception_chain(exc) -> list:
    names, seen = [], set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        names.append(type(exc).__name__)
        exc = exc.__cause__ or exc.__context__
    return names


def test_litellm_reads_ok_completions(server, litellm):
    server.script("m1", faults.ok("hi there"))
    resp = complete(litellm, server.url)
    assert resp.choices[0].message.content == "hi there"
    assert (resp.usage.prompt_tokens, resp.usage.completion_tokens) == (5, 2)
    assert server.requests("m1")[0].body["model"] == "m1"
    assert server.requests("m1")[0].headers["authorization"] == "Bearer sk-test"


def test_litellm_follows_a_script(server, litellm):
    server.script("m1", faults.status(503), faults.ok("second"))
    with pytest.raises(litellm.ServiceUnavailableError):
        complete(litellm, server.url)
    assert complete(litellm, server.url).choices[0].message.content == "second"
    assert server.count("m1") == 2  # max_retries=0: litellm did not retry behind our back


def test_litellm_rate_limit_exposes_retry_headers(server, litellm):
    server.script("m1", faults.status(429, retry_after=7, retry_after_ms=1500))
    with pytest.raises(litellm.RateLimitError) as info:
        complete(litellm, server.url)
    exc = info.value
    assert exc.status_code == 429
    assert exc.response.headers["retry-after"] == "7"
    assert exc.response.headers["retry-after-ms"] == "1500"
    assert exc.litellm_response_headers["retry-after"] == "7"


LITELLM_ERRORS = [
    # (id, fault or None for a closed port, litellm class, status_code, a class in the chain)
    ("503", faults.status(503), "ServiceUnavailableError", 503, "InternalServerError"),
    ("429", faults.status(429, retry_after=1), "RateLimitError", 429, "RateLimitError"),
    ("400", faults.status(400), "BadRequestError", 400, "BadRequestError"),
    ("context", faults.context_too_long(), "ContextWindowExceededError", 400, "BadRequestError"),
    # NB: OpenAI's wording ("our safety system") is NOT recognised by litellm's string match
    ("policy", faults.content_policy(), "BadRequestError", 400, "BadRequestError"),
    ("401", faults.status(401), "AuthenticationError", 401, "AuthenticationError"),
    ("403", faults.status(403), "APIError", 403, "PermissionDeniedError"),
    ("404", faults.status(404), "NotFoundError", 404, "NotFoundError"),
    ("408", faults.status(408), "Timeout", 408, "APIStatusError"),
    ("500", faults.status(500), "InternalServerError", 500, "InternalServerError"),
    ("502", faults.status(502), "BadGatewayError", 502, "InternalServerError"),
    ("504", faults.status(504), "Timeout", 504, "InternalServerError"),
    ("hang", faults.hang(), "Timeout", 408, "ReadTimeout"),
    ("reset", faults.reset(), "InternalServerError", 500, "ConnectionResetError"),
    ("malformed", faults.malformed(), "InternalServerError", 500, "JSONDecodeError"),
    ("refused", None, "InternalServerError", 500, "ConnectionRefusedError"),
]


@pytest.mark.parametrize("fault, cls, code, cause", [c[1:] for c in LITELLM_ERRORS],
                         ids=[c[0] for c in LITELLM_ERRORS])
def test_litellm_exception_mapping(server, litellm, fault, cls, code, cause):
    url = server.url
    if fault is None:
        server.stop()  # nothing listens on the port any more
    else:
        server.script("m1", fault)
    with pytest.raises(Exception) as info:
        complete(litellm, url, timeout=0.5)
    exc = info.value
    assert type(exc).__name__ == cls and isinstance(exc, getattr(litellm, cls))
    assert exc.status_code == code
    assert cause in exception_chain(exc)


def test_litellm_streams_and_sees_stream_faults(server, litellm):
    server.script("m1", faults.ok("one two three"))
    chunks = list(complete(litellm, server.url, stream=True))
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == "one two three"

    from litellm.exceptions import MidStreamFallbackError  # not exported at top level

    server.script("m1", faults.stream("one two three", cut_after=1))
    got = []
    with pytest.raises(MidStreamFallbackError) as info:
        for chunk in complete(litellm, server.url, stream=True):
            got.append(chunk.choices[0].delta.content)
    assert "one " in got and "ConnectionResetError" in exception_chain(info.value)
    assert info.value.status_code == 500

    server.script("m1", faults.stream("one two", malformed_after=1))
    with pytest.raises(MidStreamFallbackError) as info:
        list(complete(litellm, server.url, stream=True))
    assert "JSONDecodeError" in exception_chain(info.value)

    server.script("m1", faults.stream("one two", stall_after=1))
    with pytest.raises(litellm.Timeout):
        list(complete(litellm, server.url, timeout=0.3, stream=True))


def test_hang_ends_when_the_client_gives_up(server):
    server.script("m1", faults.hang())
    baseline = threading.active_count()
    with pytest.raises(TimeoutError):
        post(server, timeout=0.2)
    deadline = time.monotonic() + 2
    while threading.active_count() > baseline and time.monotonic() < deadline:
        time.sleep(0.02)
    assert threading.active_count() <= baseline  # the hung handler thread has finished


def test_ipv6_loopback_if_available():
    if not socket.has_ipv6:
        pytest.skip("no IPv6")
    try:
        server = FaultServer(host="::1").start()
    except OSError:
        pytest.skip("::1 cannot be bound here")
    with server:
        assert server.url == f"http://[::1]:{server.port}/v1"
        conn = http.client.HTTPConnection("::1", server.port, timeout=2)
        conn.request("GET", "/health")
        assert conn.getresponse().status == 200
