"""Answers are the openai SDK's own types on every tier (issue 18, point 1): code written
for the SDK reads `router.complete()`'s answer unchanged, and nothing the provider sent is
lost on the way (real litellm, the fault server, the real GGUF)."""

from __future__ import annotations

import asyncio
import json
import time

import pytest
from openai.types.chat import ChatCompletion, ChatCompletionChunk

from router import Router
from router.cache.policy import cache_key, decode, encode
from router.cache.stores import MemoryStore
from router.cache.tier import AnswerCache
from router.config import config_from_dict
from router.outcomes import Outcome, TargetFailure
from router.request import build_request
from router.response import Chunk, Response, answer_of
from router.testing import faults

from .conftest import remote

HI = [{"role": "user", "content": "What is the weather in Paris?"}]
CALL = {"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'}}
FULL = {  # every field issue 18 names, as OpenAI sends them
    "id": "chatcmpl-full", "object": "chat.completion", "created": 1700000000, "model": "m1",
    "system_fingerprint": "fp_123", "service_tier": "default",
    "choices": [{"index": 0, "finish_reason": "tool_calls",
                 "logprobs": {"content": [{"token": "Hi", "logprob": -0.1, "bytes": [72, 105], "top_logprobs": []}],
                              "refusal": None},
                 "message": {"role": "assistant", "content": "Hi", "refusal": "not that part",
                             "reasoning_content": "the user wants the weather",
                             "annotations": [{"type": "url_citation", "url_citation": {
                                 "start_index": 0, "end_index": 2, "title": "t", "url": "https://example.com"}}],
                             "tool_calls": [CALL]}}],
    "usage": {"prompt_tokens": 5, "completion_tokens": 7, "total_tokens": 12,
              "prompt_tokens_details": {"cached_tokens": 3}, "completion_tokens_details": {"reasoning_tokens": 4}},
}
TOOL_CALLS = [{"name": "get_weather", "arguments": '{"city": "Paris"}'}]


def assert_sdk_answer(resp: Response) -> None:
    """What code written for the SDK does with an answer works, and round-trips."""
    assert isinstance(resp, ChatCompletion)
    again = ChatCompletion.model_validate_json(resp.model_dump_json())
    assert again.model_dump() == ChatCompletion.model_validate(resp.model_dump()).model_dump()
    assert Response.model_validate_json(resp.model_dump_json()).model_dump() == resp.model_dump()
    dumped = json.loads(resp.model_dump_json())
    assert "route" not in dumped and "raw" not in dumped and "headers" not in dumped  # the SDK's shape, exactly
    data = resp.to_dict()
    assert json.loads(json.dumps(data))["route"]["served_by"] == resp.route.served_by


def assert_full(resp: Response) -> None:
    choice = resp.choices[0]
    call = choice.message.tool_calls[0]
    assert (call.id, call.type, call.function.name, call.function.arguments) == (
        "call_1", "function", "get_weather", '{"city": "Paris"}')
    assert choice.message.refusal == "not that part"
    assert choice.message.reasoning_content == "the user wants the weather"
    assert choice.message.annotations[0].url_citation.url == "https://example.com"
    assert choice.logprobs.content[0].token == "Hi" and choice.logprobs.content[0].logprob == -0.1
    assert (resp.system_fingerprint, resp.service_tier) == ("fp_123", "default")
    assert resp.usage.prompt_tokens_details.cached_tokens == 3
    assert resp.usage.completion_tokens_details.reasoning_tokens == 4


@pytest.mark.parametrize("api", ["sync", "async"])
def test_a_remote_answer_is_a_chat_completion_with_everything_the_provider_sent(server, make_router, api):
    server.script("p", faults.reply(FULL))
    router = make_router({"primary": "p"})
    resp = router.complete(HI) if api == "sync" else asyncio.run(router.acomplete(HI))
    assert_full(resp)
    assert_sdk_answer(resp)
    assert resp.route.served_by == "primary" and resp.text == "Hi"
    assert resp.headers and resp.raw is not None
    assert_full(Response.model_validate_json(resp.model_dump_json()))


@pytest.mark.parametrize("api", ["sync", "async"])
def test_a_remote_streams_chunks_are_chat_completion_chunks_with_tool_call_attributes(server, make_router, api):
    server.script("p", faults.stream("Checking.", tool_calls=TOOL_CALLS))
    router = make_router({"primary": "p"}, chains={"default": {"targets": ["primary"], "mid_stream": "restart"}})

    async def read_async() -> list:
        return [c async for c in await router.acomplete(HI, stream=True)]

    chunks = list(router.complete(HI, stream=True)) if api == "sync" else asyncio.run(read_async())
    assert all(isinstance(c, ChatCompletionChunk) and isinstance(c, Chunk) for c in chunks)
    arguments = "".join(c.choices[0].delta.tool_calls[0].function.arguments or ""
                        for c in chunks if c.choices and c.choices[0].delta.tool_calls)
    assert arguments == '{"city": "Paris"}'  # restart mode: the deltas as the provider streamed them
    assert [ChatCompletionChunk.model_validate_json(c.model_dump_json()).model_dump() for c in chunks] == [
        c.model_dump() for c in chunks]
    answer = answer_of(chunks)
    assert isinstance(answer, ChatCompletion) and answer.choices[0].message.tool_calls[0].function.name == "get_weather"
    assert answer.choices[0].finish_reason == "tool_calls" and answer.text == "Checking."


def test_answer_of_joins_reasoning_refusal_logprobs_and_keeps_usage_and_fingerprint():
    def chunk(delta: dict, finish: str | None = None, **top) -> Chunk:
        choice = {"index": 0, "delta": delta, "finish_reason": finish,
                  "logprobs": {"content": [{"token": delta.get("content") or "", "logprob": -1.0, "bytes": None,
                                            "top_logprobs": []}]} if "content" in delta else None}
        return Chunk.from_openai({"id": "c1", "model": "m", "created": 1, "choices": [choice], **top})

    chunks = [chunk({"role": "assistant"}, system_fingerprint="fp_9"), chunk({"reasoning_content": "think "}),
              chunk({"reasoning_content": "hard"}), chunk({"refusal": "no"}), chunk({"content": "Hel"}),
              chunk({"content": "lo"}), chunk({}, "stop", service_tier="default"),
              Chunk.from_openai({"id": "c1", "model": "m", "created": 1, "choices": [], "usage": {
                  "prompt_tokens": 2, "completion_tokens": 3, "total_tokens": 5,
                  "prompt_tokens_details": {"cached_tokens": 1}}})]
    answer = answer_of(chunks)
    message = answer.choices[0].message
    assert (message.content, message.reasoning_content, message.refusal) == ("Hello", "think hard", "no")
    assert [t.token for t in answer.choices[0].logprobs.content] == ["Hel", "lo"]
    assert (answer.system_fingerprint, answer.service_tier) == ("fp_9", "default")
    assert answer.usage.total_tokens == 5 and answer.usage.prompt_tokens_details.cached_tokens == 1


def test_anthropic_thinking_as_litellm_maps_it_is_kept():
    """litellm maps an Anthropic thinking block to `reasoning_content` and `thinking_blocks`
    on its own message type; both survive into the SDK's type."""
    from litellm import ModelResponse

    blocks = [{"type": "thinking", "thinking": "the user wants Paris", "signature": "sig=="}]
    raw = ModelResponse(id="msg_1", model="claude-x", created=1, choices=[{
        "index": 0, "finish_reason": "stop",
        "message": {"role": "assistant", "content": "Sunny.", "reasoning_content": "the user wants Paris",
                    "thinking_blocks": blocks}}])
    resp = Response.from_openai(raw)
    assert resp.choices[0].message.reasoning_content == "the user wants Paris"
    assert resp.choices[0].message.thinking_blocks == blocks
    assert json.loads(resp.model_dump_json())["choices"][0]["message"]["thinking_blocks"] == blocks
    assert resp.raw is raw


def test_the_local_tier_answers_and_streams_in_the_sdks_types():
    from router import models

    path = models.pull_default_model(quiet=True)
    router = Router.from_dict({"targets": {"local": {"provider": "llama_cpp", "model_path": str(path), "n_ctx": 512,
                                                     "n_threads": 1}}, "chains": {"default": ["local"]}})
    resp = router.complete(HI, max_tokens=8, temperature=0)
    assert isinstance(resp, ChatCompletion) and isinstance(resp.choices[0].message.content, str)
    assert resp.usage.completion_tokens > 0 and resp.route.served_by == "local"
    assert_sdk_answer(resp)
    chunks = list(router.complete(HI, stream=True, max_tokens=8, temperature=0))
    assert all(isinstance(c, ChatCompletionChunk) for c in chunks) and chunks[-1].finish_reason in ("stop", "length")
    assert_sdk_answer_types_of(answer_of(chunks))


def assert_sdk_answer_types_of(resp: Response) -> None:
    assert isinstance(resp, ChatCompletion)
    assert Response.model_validate_json(resp.model_dump_json()).model_dump() == resp.model_dump()


def test_a_static_reply_plain_and_streamed_is_in_the_sdks_types(server, make_router):
    server.script("p", faults.status(503))
    router = make_router({"primary": remote(server, "p", retry={"attempts": 1})},
                         chains={"default": {"targets": ["primary"], "static_reply": "Down for now."}})
    resp = router.complete(HI)
    assert isinstance(resp, ChatCompletion) and resp.choices[0].message.content == "Down for now."
    assert_sdk_answer(resp)
    chunks = list(router.complete(HI, stream=True))
    assert all(isinstance(c, ChatCompletionChunk) for c in chunks) and "".join(c.text for c in chunks) == "Down for now."


def test_the_cache_tier_answers_and_replays_in_the_sdks_types_with_every_field(server):
    server.script("p", faults.reply(FULL))
    config = {"defaults": {"retry": {"attempts": 1}},
              "targets": {"primary": remote(server, "p"), "recent": {"provider": "cache"}},
              "chains": {"default": ["primary", "recent"]}}
    router = Router.from_dict(config)
    router.complete(HI)
    server.script("p", faults.status(503))
    cached = router.complete(HI)
    assert cached.route.served_by == "recent"
    assert_full_but_usage(cached)
    assert_sdk_answer(cached)
    chunks = list(router.complete(HI, stream=True))
    assert all(isinstance(c, ChatCompletionChunk) for c in chunks)
    replayed = answer_of(chunks)
    assert replayed.choices[0].message.tool_calls[0].function.arguments == '{"city": "Paris"}'
    assert replayed.choices[0].message.reasoning_content == "the user wants the weather"
    assert replayed.choices[0].message.refusal == "not that part"
    assert replayed.choices[0].logprobs.content[0].token == "Hi" and replayed.system_fingerprint == "fp_123"


def assert_full_but_usage(resp: Response) -> None:
    """A cached answer cost no tokens: its usage is zero, everything else as sent."""
    choice = resp.choices[0]
    assert choice.message.tool_calls[0].function.name == "get_weather" and choice.message.refusal == "not that part"
    assert choice.message.reasoning_content == "the user wants the weather"
    assert choice.message.annotations[0].url_citation.title == "t" and choice.logprobs.content[0].token == "Hi"
    assert (resp.system_fingerprint, resp.service_tier) == ("fp_123", "default")
    assert (resp.usage.prompt_tokens, resp.usage.total_tokens) == (0, 0)


def test_an_entry_stored_before_answers_were_the_sdks_types_still_decodes():
    old = json.dumps({"id": "r1", "model": "m", "created": 1700000000, "choices": [
        {"index": 0, "finish_reason": "tool_calls",
         "message": {"role": "assistant", "content": None, "tool_calls": [CALL]}}]})
    resp = decode(old)
    assert isinstance(resp, ChatCompletion)
    assert resp.choices[0].message.tool_calls[0].function.arguments == '{"city": "Paris"}'
    assert decode(encode(resp)).model_dump() == resp.model_dump()


def test_an_entry_that_is_no_answer_counts_as_a_miss():
    config = config_from_dict({"targets": {"recent": {"provider": "cache"}}, "chains": {"default": ["recent"]}})
    store = MemoryStore(ttl=60, max_entries=10)
    cache = AnswerCache(config.targets["recent"], store)
    request = build_request(HI, {})
    store.put(cache_key(request), '{"not": "an answer"}', time.time())
    with pytest.raises(TargetFailure) as info:
        cache.lookup(request)
    assert info.value.outcome is Outcome.CACHE_MISS and "could not be read back" in str(info.value)
    assert cache.stats()["this_process"]["misses"] == 1
