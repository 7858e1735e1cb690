"""Streamed tool calls through `router serve`, read by the real openai client (sync and
async) the way applications read them: `chunk.choices[0].delta.tool_calls[...]`,
reassembled by index. Upstream, the fault server streams the calls (each call's start,
then its arguments word by word) and, for recovery, breaks the stream inside a call.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from typing import Any

import openai
import pytest

from router.testing import FaultServer, faults

from .gateway_process import Gateway, upstream_target

KEY = "gateway-key-tools-0123456789"
HELLO = [{"role": "user", "content": "what is the weather and the time in Paris?"}]
SAID = "Let me check the weather."  # 5 word pieces
CALLS = [faults.tool_call("get_weather", '{"city": "Paris"}'),  # a start and 2 argument pieces
         faults.tool_call("get_time", '{"tz": "Europe/Paris"}')]  # a start and 2 argument pieces
EXPECTED = [("get_weather", {"city": "Paris"}), ("get_time", {"tz": "Europe/Paris"})]
TOOLS = [{"type": "function", "function": {"name": name, "parameters": {"type": "object"}}}
         for name in ("get_weather", "get_time")]
INSIDE_THE_FIRST_CALL, INSIDE_THE_SECOND_CALL = 7, 10  # content events sent before the cut: a start and a piece


@pytest.fixture(scope="module")
def gateway(_module_server: FaultServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    s = _module_server  # the one `server` (tests/conftest.py) resets for each test
    once = {"attempts": 1}
    config = {
        "defaults": {"timeout": 5, "deadline": 20, "stream_idle_timeout": 2,
                     "retry": {"attempts": 2, "min_wait": 0.01, "max_wait": 0.02},
                     "breaker": {"fail_max": 1000, "reset_timeout": 600}},
        "targets": {"live": upstream_target(s, "live"),
                    "first": upstream_target(s, "first", prefill=False, retry=once),
                    "second": upstream_target(s, "second", prefill=True)},
        "chains": {"live": {"targets": ["live"], "mid_stream": "error"},  # deltas pass as they come
                   "continue": {"targets": ["first", "second"], "mid_stream": "continue"},
                   "auto": {"targets": ["first", "second"], "mid_stream": "auto"}},
        "server": {"keys": [{"name": "tools", "key": KEY}]},
    }
    with Gateway(config, tmp_path_factory.mktemp("gateway-tools")) as running:
        yield running


def stream_sync(gateway: Gateway, chain: str) -> list[Any]:
    client = openai.OpenAI(base_url=gateway.url, api_key=KEY, max_retries=0, timeout=30)
    with client:
        return list(client.chat.completions.create(model=chain, messages=HELLO, tools=TOOLS, stream=True))


def stream_async(gateway: Gateway, chain: str) -> list[Any]:
    async def read() -> list[Any]:
        async with openai.AsyncOpenAI(base_url=gateway.url, api_key=KEY, max_retries=0, timeout=30) as client:
            return [c async for c in await client.chat.completions.create(model=chain, messages=HELLO,
                                                                          tools=TOOLS, stream=True)]
    return asyncio.run(read())


READ = {"sync": stream_sync, "async": stream_async}


def call_deltas(chunks: list[Any]) -> list[Any]:
    return [d for c in chunks if c.choices for d in c.choices[0].delta.tool_calls or ()]


def reassembled(chunks: list[Any]) -> list[dict[str, str]]:
    """What a client builds from the deltas: per index, the id and name once, the
    arguments concatenated (the openai docs' recipe)."""
    calls: dict[int, dict[str, str]] = {}
    for delta in call_deltas(chunks):
        call = calls.setdefault(delta.index, {"id": "", "name": "", "arguments": ""})
        call["id"] = call["id"] or delta.id or ""
        if delta.function is not None:
            call["name"] = call["name"] or delta.function.name or ""
            call["arguments"] += delta.function.arguments or ""
    return [calls[i] for i in sorted(calls)]


def text_of(chunks: list[Any]) -> str:
    return "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)


@pytest.mark.parametrize("api", ["sync", "async"])
def test_streamed_tool_calls_reach_the_openai_client_in_pieces_it_reassembles(
        gateway: Gateway, server: FaultServer, api: str) -> None:
    server.script("live", faults.stream(SAID, tool_calls=CALLS))
    chunks = READ[api](gateway, "live")
    calls = reassembled(chunks)
    assert [(c["name"], json.loads(c["arguments"])) for c in calls] == EXPECTED
    assert all(c["id"] for c in calls) and len({c["id"] for c in calls}) == 2
    assert len(call_deltas(chunks)) == 6  # each call's start, then its arguments piece by piece, as sent
    assert text_of(chunks) == SAID
    assert chunks[-1].choices[0].finish_reason == "tool_calls"
    assert chunks[-1].model_extra["router"]["served_by"] == "live"
    assert server.count("live") == 1
    assert server.requests("live")[0].body["tools"] == TOOLS


@pytest.mark.parametrize("cut_after", [INSIDE_THE_FIRST_CALL, INSIDE_THE_SECOND_CALL])
@pytest.mark.parametrize("mode", ["continue", "auto"])
@pytest.mark.parametrize("api", ["sync", "async"])
def test_a_stream_broken_inside_a_tool_call_reaches_the_client_with_each_call_whole(
        gateway: Gateway, server: FaultServer, api: str, mode: str, cut_after: int) -> None:
    server.script("first", faults.stream(SAID, tool_calls=CALLS, cut_after=cut_after))
    server.script("second", faults.stream(SAID, tool_calls=CALLS))
    chunks = READ[api](gateway, mode)
    deltas = call_deltas(chunks)
    # each call in one delta, its arguments whole JSON: never half a call, never one twice
    assert [(d.index, d.function.name, json.loads(d.function.arguments)) for d in deltas] == [
        (i, name, args) for i, (name, args) in enumerate(EXPECTED)]
    assert [(c["name"], json.loads(c["arguments"])) for c in reassembled(chunks)] == EXPECTED
    assert text_of(chunks) == SAID  # the text once, nothing repeated
    assert chunks[-1].choices[0].finish_reason == "tool_calls"
    route = chunks[-1].model_extra["router"]
    assert route["served_by"] == "second"
    assert [a["outcome"] for a in route["attempts"]] == ["transient", "ok"]
    assert not any((c.model_extra or {}).get("router", {}).get("restart") for c in chunks)
    assert (server.count("first"), server.count("second")) == (1, 1)
    assert server.requests("second")[0].body["messages"] == [*HELLO, {"role": "assistant", "content": SAID}]


def test_a_tool_call_answer_goes_back_upstream_as_the_next_turn(gateway: Gateway, server: FaultServer) -> None:
    """The round trip an agent makes: the streamed calls, then their results sent back."""
    server.script("live", faults.stream(SAID, tool_calls=CALLS), faults.ok("It is sunny, 14:00."))
    calls = reassembled(stream_sync(gateway, "live"))
    turn = [*HELLO, {"role": "assistant", "content": SAID, "tool_calls": [
        {"id": c["id"], "type": "function", "function": {"name": c["name"], "arguments": c["arguments"]}}
        for c in calls]}, *({"role": "tool", "tool_call_id": c["id"], "content": "ok"} for c in calls)]
    client = openai.OpenAI(base_url=gateway.url, api_key=KEY, max_retries=0, timeout=30)
    with client:
        answer = client.chat.completions.create(model="live", messages=turn, tools=TOOLS)
    assert answer.choices[0].message.content == "It is sunny, 14:00."
    sent = server.requests("live")[1].body["messages"]
    assert [m["role"] for m in sent] == ["user", "assistant", "tool", "tool"]
    assert [json.loads(c["function"]["arguments"]) for c in sent[1]["tool_calls"]] == [a for _, a in EXPECTED]
    assert [m["tool_call_id"] for m in sent[2:]] == [c["id"] for c in calls]
