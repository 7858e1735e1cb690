"""Anthropic streams and tool use end to end (litellm, real sockets, the fault server's
`/v1/messages` SSE): failover before the first token, continuation after a break (an
Anthropic model takes the text so far as an assistant prefill), tool calls in and out,
and the shipped config.yaml's chain with both remote tiers on the fault server and the
real local model.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from router import Router, StreamInterrupted
from router.testing import faults

from ..conftest import TEST_KEY
from .test_anthropic import anthropic, outcomes

REPO = Path(__file__).resolve().parents[2]
HI = [{"role": "user", "content": "Count to twelve in words."}]
TEXT = "one two three four five six seven eight nine ten eleven twelve."
TOOLS = [{"type": "function", "function": {
    "name": "get_weather", "description": "The weather in a city.",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}]
PARIS = faults.tool_call("get_weather", {"city": "Paris"}, id="toolu_paris")
STREAMS = {"first_token_timeout": 2, "stream_idle_timeout": 0.5}


def as_dict(obj: Any) -> dict:
    """An answer or chunk as a plain dict: `to_dict()` now, `model_dump()` once answers are
    the openai SDK's types."""
    return obj.to_dict() if hasattr(obj, "to_dict") else obj.model_dump()


def read(router: Any, api: str, messages: list = HI, **kwargs: Any) -> tuple[list, Any]:
    """(chunks, stream) of one streamed call through the sync or async API."""
    if api == "sync":
        stream = router.complete(messages, stream=True, **kwargs)
        return list(stream), stream

    async def run() -> tuple[list, Any]:
        stream = await router.acomplete(messages, stream=True, **kwargs)
        return [chunk async for chunk in stream], stream

    return asyncio.run(run())


def text_of(chunks: list) -> str:
    return "".join(chunk.text for chunk in chunks)


def last_message(server: Any, model: str) -> dict:
    return server.requests(model)[-1].body["messages"][-1]


@pytest.fixture(params=["sync", "async"])
def api(request):
    return request.param


def test_a_stream_arrives_word_by_word_from_the_messages_api(server, make_router, api):
    server.script("p", faults.stream(TEXT))
    chunks, stream = read(make_router({"primary": anthropic(server, "p")}), api)
    assert text_of(chunks) == TEXT and len([c for c in chunks if c.text]) == len(TEXT.split())
    assert server.requests("p")[0].body["stream"] is True and server.requests("p")[0].path == "/v1/messages"
    assert stream.route.served_by == "primary"


@pytest.mark.parametrize("fault", [faults.status(529), faults.stream(first_token_delay=None)],
                         ids=["overloaded", "no-first-token"])
def test_failover_before_the_first_token_is_invisible_to_the_caller(server, make_router, api, fault):
    server.script("p", fault)
    server.script("s", faults.stream(TEXT))
    router = make_router({"primary": anthropic(server, "p", first_token_timeout=0.5), "secondary": anthropic(server, "s")},
                         defaults={"retry": {"attempts": 1}})
    chunks, stream = read(router, api)
    assert text_of(chunks) == TEXT
    assert [o for _, o in outcomes(stream)] == ["transient" if fault.kind == "status" else "silent", "ok"]
    assert server.count("p") == 1 and server.count("s") == 1


@pytest.mark.parametrize("fault", [faults.stream(TEXT, cut_after=4), faults.stream(TEXT, error_after=4),
                                   faults.stream(TEXT, stall_after=4, stall_seconds=5)],
                         ids=["cut", "event-error", "stall"])
def test_a_broken_stream_is_continued_by_an_anthropic_model_from_its_prefill(server, make_router, api, fault):
    # "s" is a model litellm's price list does not know: an Anthropic model takes a prefill
    server.script("p", fault)
    server.script("s", faults.stream(TEXT))
    router = make_router({"primary": anthropic(server, "p", **STREAMS), "secondary": anthropic(server, "s")},
                         defaults={"retry": {"attempts": 1}})
    chunks, stream = read(router, api)
    assert text_of(chunks) == TEXT  # one coherent answer: no repeat, no gap, no doubled space
    prefill = last_message(server, "s")
    assert prefill["role"] == "assistant"
    assert "".join(block["text"] for block in prefill["content"]) == "one two three four"  # litellm strips the space
    assert server.count("p") == 1 and server.count("s") == 1
    assert stream.route.served_by == "secondary"


def test_a_prefill_refusal_is_recorded_remembered_and_the_next_target_continues(server, make_router):
    server.script("p", faults.stream(TEXT, cut_after=4))
    server.script("s", faults.refuse_prefill(faults.stream(TEXT)))  # "does not support assistant message prefill"
    server.script("t", faults.stream(TEXT))
    router = make_router({"primary": anthropic(server, "p", **STREAMS), "secondary": anthropic(server, "s"),
                          "third": anthropic(server, "t")}, defaults={"retry": {"attempts": 1}})
    chunks, stream = read(router, "sync")
    assert text_of(chunks) == TEXT
    refused = [a for a in stream.route.attempts if a.target == "secondary"]
    assert [a.outcome for a in refused] == ["rejected"] and "assistant message prefill" in refused[0].detail
    server.script("p", faults.stream(TEXT, cut_after=4))
    read(router, "sync")  # the second break: the secondary is not asked to continue again
    assert server.count("s") == 1 and server.count("t") == 2


def test_a_model_declared_without_prefill_is_not_asked_to_continue(server, make_router):
    server.script("p", faults.stream(TEXT, cut_after=4))
    router = make_router({"primary": anthropic(server, "p", **STREAMS), "secondary": anthropic(server, "s", prefill=False)},
                         defaults={"retry": {"attempts": 1}})
    with pytest.raises(StreamInterrupted) as info:
        read(router, "sync")
    assert info.value.partial_text == "one two three four "
    assert server.count("s") == 0


def test_tools_go_in_as_anthropic_tools_and_come_back_as_tool_calls(server, make_router):
    server.script("p", faults.ok("Let me look.", tool_calls=[PARIS]))
    resp = make_router({"primary": anthropic(server, "p")}).complete(
        [{"role": "user", "content": "Weather in Paris?"}], tools=TOOLS, tool_choice="auto")
    sent = server.requests("p")[0].body
    assert [(t["name"], t["input_schema"]["required"]) for t in sent["tools"]] == [("get_weather", ["city"])]
    assert sent["tool_choice"] == {"type": "auto"}
    choice = as_dict(resp)["choices"][0]
    assert choice["finish_reason"] == "tool_calls" and choice["message"]["content"] == "Let me look."
    [call] = choice["message"]["tool_calls"]
    assert (call["id"], call["type"], call["function"]["name"]) == ("toolu_paris", "function", "get_weather")
    assert json.loads(call["function"]["arguments"]) == {"city": "Paris"}


def test_streamed_tool_calls_arrive_whole_in_their_deltas(server, make_router, api):
    london = faults.tool_call("get_weather", {"city": "London"}, id="toolu_london")
    server.script("p", faults.stream("Checking.", tool_calls=[PARIS, london]))
    chunks, stream = read(make_router({"primary": anthropic(server, "p")}), api, tools=TOOLS)
    calls: dict[int, dict] = {}
    for chunk in chunks:
        for choice in as_dict(chunk)["choices"]:
            for delta in (choice.get("delta") or {}).get("tool_calls") or ():
                call = calls.setdefault(delta["index"], {"id": None, "name": "", "arguments": ""})
                call["id"] = delta.get("id") or call["id"]
                call["name"] += (delta.get("function") or {}).get("name") or ""
                call["arguments"] += (delta.get("function") or {}).get("arguments") or ""
    assert [(c["id"], c["name"], json.loads(c["arguments"])) for _, c in sorted(calls.items())] == [
        ("toolu_paris", "get_weather", {"city": "Paris"}), ("toolu_london", "get_weather", {"city": "London"})]
    assert text_of(chunks) == "Checking."
    finishes = [c["finish_reason"] for chunk in chunks for c in as_dict(chunk)["choices"] if c.get("finish_reason")]
    assert finishes == ["tool_calls"]
    assert server.requests("p")[0].body["tools"][0]["name"] == "get_weather"


def test_a_tool_result_goes_back_as_a_tool_result_block(server, make_router):
    server.script("p", faults.ok("It is sunny in Paris."))
    messages = [{"role": "user", "content": "Weather in Paris?"},
                {"role": "assistant", "content": None, "tool_calls": [{
                    "id": "toolu_paris", "type": "function",
                    "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'}}]},
                {"role": "tool", "tool_call_id": "toolu_paris", "content": "sunny, 21 C"}]
    resp = make_router({"primary": anthropic(server, "p")}).complete(messages, tools=TOOLS)
    assert resp.text == "It is sunny in Paris."
    turns = server.requests("p")[0].body["messages"]
    assert [t["role"] for t in turns] == ["user", "assistant", "user"]
    [use] = [b for b in turns[1]["content"] if b["type"] == "tool_use"]
    assert (use["id"], use["name"], use["input"]) == ("toolu_paris", "get_weather", {"city": "Paris"})
    [result] = turns[2]["content"]
    assert result["type"] == "tool_result" and result["tool_use_id"] == "toolu_paris"
    assert "sunny, 21 C" in json.dumps(result["content"])


# -- the shipped config.yaml: OpenAI -> Anthropic -> local ---------------------------------

@pytest.fixture
def shipped(server, tmp_path, monkeypatch):
    """config.yaml as shipped, both remote tiers pointed at the fault server (api_base added
    in a copy), the real GGUF beside it; quick backoff so a test of retries stays short."""
    config = yaml.safe_load((REPO / "config.yaml").read_text())
    config["targets"]["openai"]["api_base"] = server.url
    config["targets"]["anthropic"]["api_base"] = server.anthropic_url
    config["defaults"]["retry"].update(min_wait=0.01, max_wait=0.05)
    (tmp_path / "models").mkdir()
    model = REPO / config["targets"]["local"]["model_path"]
    (tmp_path / "models" / model.name).symlink_to(model.resolve())
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    monkeypatch.setenv("OPENAI_API_KEY", TEST_KEY)
    monkeypatch.setenv("ANTHROPIC_API_KEY", TEST_KEY + "-ant")
    return Router.from_yaml(path)


def test_the_shipped_chain_fails_over_from_openai_to_anthropic(server, shipped):
    server.script("gpt-4o-mini", faults.status(503))
    server.script("claude-3-5-haiku-latest", faults.ok("from claude"))
    resp = shipped.complete([{"role": "user", "content": "hi"}], max_tokens=20)
    assert resp.text == "from claude" and resp.route.served_by == "anthropic" and not resp.route.degraded
    assert outcomes(resp) == [("openai", "transient")] * 3 + [("anthropic", "ok")]
    sent = server.requests("claude-3-5-haiku-latest")[0]
    assert sent.path == "/v1/messages" and sent.headers["x-api-key"] == TEST_KEY + "-ant"


def test_the_shipped_chain_ends_on_the_local_model_when_both_remote_tiers_fail(server, shipped):
    server.script("gpt-4o-mini", faults.status(401))
    server.script("claude-3-5-haiku-latest", faults.status(529))
    resp = shipped.complete([{"role": "user", "content": "Say hi."}], max_tokens=8)
    assert resp.route.served_by == "local" and resp.route.degraded
    assert outcomes(resp) == [("openai", "misconfigured")] + [("anthropic", "transient")] * 3 + [("local", "ok")]
    assert resp.usage.completion_tokens >= 1
    assert server.count("gpt-4o-mini") == 1 and server.count("claude-3-5-haiku-latest") == 3


def test_the_shipped_chain_continues_a_broken_openai_stream_on_anthropic(server, shipped):
    server.script("gpt-4o-mini", faults.stream(TEXT, cut_after=4))
    server.script("claude-3-5-haiku-latest", faults.stream(TEXT))
    chunks, stream = read(shipped, "sync")
    assert text_of(chunks) == TEXT
    assert stream.route.served_by == "anthropic"
    assert last_message(server, "claude-3-5-haiku-latest")["role"] == "assistant"
    assert server.count("gpt-4o-mini") == 1


def test_the_shipped_chain_sends_tools_to_anthropic_and_never_to_the_local_model(server, shipped):
    server.script("gpt-4o-mini", faults.status(503))
    server.script("claude-3-5-haiku-latest", faults.status(529))
    with pytest.raises(Exception) as info:
        shipped.complete([{"role": "user", "content": "Weather in Paris?"}], tools=TOOLS)
    assert [a.outcome for a in info.value.route.attempts][-1] == "unsupported"  # the local tier writes prose
    server.script("claude-3-5-haiku-latest", faults.ok("", tool_calls=[PARIS]))
    resp = shipped.complete([{"role": "user", "content": "Weather in Paris?"}], tools=TOOLS)
    [call] = as_dict(resp)["choices"][0]["message"]["tool_calls"]
    assert resp.route.served_by == "anthropic" and call["function"]["name"] == "get_weather"

