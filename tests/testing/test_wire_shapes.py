"""The fault server's two API shapes, byte by byte over http.client: Anthropic's Messages
API at /v1/messages (anthropic_wire.py) and tool calls on both shapes.

What litellm makes of these bytes is tested in tests/targets/test_anthropic*.py.
"""

from __future__ import annotations

import dataclasses
import http.client
import json
from datetime import datetime

import pytest

from router.testing import FaultServer, faults

MESSAGES = [{"role": "user", "content": "say hi please"}]
PARIS = faults.tool_call("get_weather", {"city": "Paris"}, id="toolu_1")


@pytest.fixture
def server():
    with FaultServer() as srv:
        yield srv


def post(server, path="/v1/messages", **fields):
    """POST a request; returns (status, headers, body bytes)."""
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=3)
    payload = {"model": "m1", "messages": MESSAGES, "max_tokens": 64, **fields}
    conn.request("POST", path, json.dumps({k: v for k, v in payload.items() if v is not None}),
                 {"Content-Type": "application/json", "x-api-key": "sk-ant-secret"})
    resp = conn.getresponse()
    return resp.status, resp.headers, resp.read()


def events(body: bytes) -> list[tuple[str, dict]]:
    """(event name, data) of each SSE event of an Anthropic stream."""
    out = []
    for block in body.decode().strip().split("\n\n"):
        lines = dict(line.split(": ", 1) for line in block.split("\n"))
        out.append((lines.get("event", ""), json.loads(lines["data"])))
    return out


def test_an_anthropic_answer_is_a_message_with_text_and_tool_use_blocks(server):
    server.script("m1", faults.ok("Let me look.", tool_calls=[PARIS]))
    status, _, body = post(server)
    data = json.loads(body)
    assert status == 200 and data["type"] == "message" and data["role"] == "assistant"
    assert data["content"] == [{"type": "text", "text": "Let me look."},
                               {"type": "tool_use", "id": "toolu_1", "name": "get_weather", "input": {"city": "Paris"}}]
    assert data["stop_reason"] == "tool_use" and data["usage"] == {"input_tokens": 3, "output_tokens": 5}
    assert server.anthropic_url == f"http://127.0.0.1:{server.port}"


def test_an_anthropic_stream_opens_and_closes_each_block(server):
    server.script("m1", faults.stream("Hi there.", tool_calls=[PARIS]))
    status, headers, body = post(server, stream=True)
    assert status == 200 and headers["Content-Type"] == "text/event-stream"
    names = [name for name, _ in events(body)]
    assert names == ["message_start", "ping",
                     "content_block_start", "content_block_delta", "content_block_delta", "content_block_stop",
                     "content_block_start", "content_block_delta", "content_block_delta", "content_block_stop",
                     "message_delta", "message_stop"]
    data = [d for _, d in events(body)]
    assert [d["index"] for d in data if "index" in d] == [0, 0, 0, 0, 1, 1, 1, 1]
    assert data[6]["content_block"] == {"type": "tool_use", "id": "toolu_1", "name": "get_weather", "input": {}}
    assert "".join(d["delta"]["partial_json"] for d in data[7:9]) == '{"city": "Paris"}'
    assert data[10]["delta"]["stop_reason"] == "tool_use"


@pytest.mark.parametrize(("fault", "ends"), [
    (faults.stream("a b c", error_after=1), "error"),
    (faults.stream("a b c", end_after=1), "content_block_delta"),
    (faults.stream("a b c", done=False), "message_delta"),
])
def test_an_anthropic_stream_breaks_where_the_fault_says(server, fault, ends):
    server.script("m1", fault)
    _, _, body = post(server, stream=True)
    got = events(body)
    assert got[-1][0] == ends
    if ends == "error":
        assert got[-1][1] == {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}


def test_a_cut_anthropic_stream_is_reset_inside_a_tool_call(server):
    server.script("m1", faults.stream("", tool_calls=[PARIS], cut_after=2))  # the call's start, one piece
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=3)
    conn.request("POST", "/v1/messages", json.dumps({"model": "m1", "messages": MESSAGES, "max_tokens": 9,
                                                     "stream": True}))
    resp = conn.getresponse()
    data = b""
    with pytest.raises((ConnectionResetError, http.client.IncompleteRead)):
        while chunk := resp.read1(65536):
            data += chunk
    assert b'"partial_json":"{\\"city\\": "' in data and b"content_block_stop" not in data


@pytest.mark.parametrize(("fault", "code", "error_type", "message"), [
    (faults.status(401), 401, "authentication_error", "invalid x-api-key"),
    (faults.status(529), 529, "overloaded_error", "Overloaded"),
    (faults.status(500), 500, "api_error", "Internal server error"),
    (faults.context_too_long(), 400, "invalid_request_error", "prompt is too long: 9000 tokens > 8192 maximum"),
    (faults.refuse_prefill(), 400, "invalid_request_error", faults.PREFILL_REFUSED_MESSAGE),
    (faults.quoting_key(), 401, "authentication_error", "Invalid Authorization header: sk-ant-secret"),
])
def test_anthropic_errors_have_anthropics_types_and_words(server, fault, code, error_type, message):
    server.script("m1", fault)
    status, _, body = post(server, messages=[*MESSAGES, {"role": "assistant", "content": "Sure"}])
    data = json.loads(body)
    assert status == code and data["type"] == "error"
    assert data["error"] == {"type": error_type, "message": message}


def test_an_anthropic_429_says_retry_after_and_the_ratelimit_headers(server):
    server.script("m1", faults.limited(1, 4.0))
    assert post(server)[0] == 200
    status, headers, body = post(server)
    assert status == 429 and json.loads(body)["error"]["type"] == "rate_limit_error"
    assert 1 <= int(headers["retry-after"]) <= 4  # whole seconds, rounded up
    assert headers["anthropic-ratelimit-requests-limit"] == "1"
    assert headers["anthropic-ratelimit-requests-remaining"] == "0"
    reset = datetime.fromisoformat(headers["anthropic-ratelimit-requests-reset"].replace("Z", "+00:00"))
    assert reset.tzinfo is not None
    assert not any(name.lower().startswith("x-ratelimit") for name in headers)
    assert server.statuses("m1") == {200: 1, 429: 1}


@pytest.mark.parametrize(("fields", "message"), [
    ({"max_tokens": None}, "max_tokens: Field required"),
    ({"messages": [*MESSAGES, {"role": "assistant", "content": [{"type": "text", "text": "Sure "}]}]},
     "messages: final assistant content cannot end with trailing whitespace"),
])
def test_what_anthropic_refuses_before_any_model_runs(server, fields, message):
    server.script("m1", faults.ok())
    status, _, body = post(server, **fields)
    assert status == 400 and json.loads(body)["error"]["message"] == message
    assert server.statuses("m1") == {400: 1}


def test_an_anthropic_prefill_is_continued(server):
    server.script("m1", faults.ok("Sure, here it is."))
    _, _, body = post(server, messages=[*MESSAGES, {"role": "assistant", "content": [{"type": "text", "text": "Sure,"}]}])
    assert json.loads(body)["content"][0]["text"] == " here it is."


def test_the_openai_shape_carries_tool_calls_too(server):
    server.script("m1", faults.ok("", tool_calls=[PARIS]))
    _, _, body = post(server, path="/v1/chat/completions")
    choice = json.loads(body)["choices"][0]
    assert choice["finish_reason"] == "tool_calls" and choice["message"]["content"] is None
    assert choice["message"]["tool_calls"] == [{"id": "toolu_1", "type": "function", "function": {
        "name": "get_weather", "arguments": '{"city": "Paris"}'}}]
    server.script("m1", faults.stream("", tool_calls=[PARIS]))
    _, _, body = post(server, path="/v1/chat/completions", stream=True)
    chunks = [json.loads(line[6:]) for line in body.decode().split("\n") if line.startswith("data: {")]
    deltas = [c["choices"][0]["delta"].get("tool_calls") for c in chunks[1:-1]]
    assert deltas[0] == [{"index": 0, "id": "toolu_1", "type": "function",
                          "function": {"name": "get_weather", "arguments": ""}}]
    assert "".join(d[0]["function"]["arguments"] for d in deltas[1:]) == '{"city": "Paris"}'
    assert chunks[-1]["choices"][0]["finish_reason"] == "tool_calls"


def test_a_mid_stream_error_on_the_openai_shape_is_an_error_event(server):
    server.script("m1", faults.stream("a b c", error_after=1))
    _, _, body = post(server, path="/v1/chat/completions", stream=True)
    last = json.loads(body.decode().strip().split("\n\n")[-1][6:])
    assert last["error"]["type"] == "server_error" and b"[DONE]" not in body


def test_tool_calls_survive_the_dict_round_trip(server):
    fault = faults.stream("x", tool_calls=[PARIS], cut_after=2)
    again = faults.from_dict(json.loads(json.dumps(dataclasses.asdict(fault))))
    assert again == fault and again.tool_calls == (PARIS,)


def test_litellms_url_for_an_openai_base_is_a_404(server):
    status, _, _ = post(server, path="/v1/v1/messages")
    assert status == 404 and server.count() == 0


def test_thinking_is_a_signed_block_on_anthropic_and_reasoning_content_on_openai(server):
    server.script("m1", faults.stream("Paris.", thinking="France's capital."))
    _, _, body = post(server, stream=True)
    data = [d for _, d in events(body)]
    assert data[2]["content_block"] == {"type": "thinking", "thinking": ""}
    assert [d["delta"]["type"] for d in data if d["type"] == "content_block_delta"] == [
        "thinking_delta", "thinking_delta", "signature_delta", "text_delta"]
    assert [d["index"] for d in data if d["type"] == "content_block_stop"] == [0, 1]
    server.script("m1", faults.ok("Paris.", thinking="France's capital."))
    assert json.loads(post(server)[2])["content"][0] == {
        "type": "thinking", "thinking": "France's capital.", "signature": "c2lnbmVkIGJ5IHRoZSBmYXVsdCBzZXJ2ZXI="}
    message = json.loads(post(server, path="/v1/chat/completions")[2])["choices"][0]["message"]
    assert message == {"role": "assistant", "content": "Paris.", "reasoning_content": "France's capital."}


@pytest.mark.parametrize("shape", ["openai", "anthropic"])
def test_litellm_reads_thinking_as_reasoning_content_on_both_shapes(server, shape):
    from router.targets.remote import litellm_module

    server.script("m1", faults.ok("Paris.", thinking="France's capital."))
    base = server.url if shape == "openai" else server.anthropic_url
    args = {"model": f"{shape}/m1", "api_base": base, "api_key": "k", "max_retries": 0,
            "messages": MESSAGES, "max_tokens": 9}
    message = litellm_module().completion(**args).choices[0].message
    assert (message.content, message.reasoning_content) == ("Paris.", "France's capital.")
    chunks = list(litellm_module().completion(stream=True, **args))
    assert "".join(getattr(c.choices[0].delta, "reasoning_content", None) or "" for c in chunks) == "France's capital."
