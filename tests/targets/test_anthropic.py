"""Anthropic targets end to end: `anthropic/...` models through the real litellm, over real
sockets, to the fault server's `/v1/messages` (router/testing/anthropic_wire.py).

Each row of the outcome table a provider can cause, as Anthropic sends it; what is
asserted is what the server received (counts, paths, bodies) and what the route recorded.
`unsupported` (tools on the local tier) is in test_anthropic_streams.py, with the shipped
chain; `cache_miss` is a cache tier's own row (tests/cache/), whatever the provider.
"""

from __future__ import annotations

import asyncio
import threading
import time
from typing import Any

import pytest

from router import AllTargetsFailed
from router.errors import ContentRejected
from router.testing import faults

from ..conftest import TEST_KEY, closed_port

HI = [{"role": "user", "content": "hi"}]


def anthropic(server: Any, model: str, **overrides: Any) -> dict[str, Any]:
    """An `anthropic/<model>` target on the fault server (litellm appends /v1/messages)."""
    return {"model": f"anthropic/{model}", "api_base": server.anthropic_url, "api_key": TEST_KEY, **overrides}


def outcomes(resp_or_error: Any) -> list[tuple[str, str]]:
    return [(a.target, a.outcome) for a in resp_or_error.route.attempts]


@pytest.fixture
def pair(server, make_router):
    """make(**defaults): a router over two Anthropic targets, primary `p` and secondary `s`."""
    def make(**defaults: Any) -> Any:
        return make_router({"primary": anthropic(server, "p"), "secondary": anthropic(server, "s")},
                           defaults=defaults or None)
    return make


def test_an_anthropic_target_answers_through_the_messages_api(server, pair):
    server.script("p", faults.ok("Bonjour."))
    resp = pair().complete([{"role": "system", "content": "be brief"}, *HI], max_tokens=50)
    assert resp.choices[0].message.content == "Bonjour."
    assert resp.route.served_by == "primary" and resp.choices[0].finish_reason == "stop"
    sent = server.requests("p")[0]
    assert sent.path == "/v1/messages"
    assert sent.headers["x-api-key"] == TEST_KEY and "anthropic-version" in sent.headers
    assert sent.body["system"] == [{"type": "text", "text": "be brief"}]  # litellm moved it out of messages
    assert sent.body["max_tokens"] == 50
    assert resp.usage.prompt_tokens == 3 and resp.usage.completion_tokens == 1


@pytest.mark.parametrize(("model", "sent"), [("claude-3-5-haiku-latest", 4096), ("claude-haiku-4-5", 64000)])
def test_an_unset_max_tokens_is_one_every_claude_accepts_when_litellm_does_not_know_the_model(
        server, make_router, model, sent):
    # litellm would send 128000 for a model missing from its price list: over 3.5 Haiku's 8192, a 400
    router = make_router({"primary": anthropic(server, model)})
    router.complete(HI)
    router.complete(HI, max_tokens=10)
    assert [r.body["max_tokens"] for r in server.requests(model)] == [sent, 10]


@pytest.mark.parametrize("fault", [faults.status(529), faults.status(500), faults.reset(), faults.malformed()],
                         ids=["529-overloaded", "500-api_error", "reset", "malformed"])
def test_transient_is_retried_then_fails_over(server, pair, fault):
    server.script("p", fault)
    resp = pair().complete(HI)
    assert server.count("p") == 3  # retry.attempts, one HTTP request each
    assert outcomes(resp) == [("primary", "transient")] * 3 + [("secondary", "ok")]


def test_overloaded_says_overloaded_not_its_json_body(server, pair):
    server.script("p", faults.status(529))
    resp = pair(retry={"attempts": 1}).complete(HI)
    attempt = resp.route.attempts[0]
    assert (attempt.outcome, attempt.status, attempt.detail) == ("transient", 529, "Overloaded")


def test_silent_fails_over_at_once(server, make_router):
    server.script("p", faults.hang(5))
    router = make_router({"primary": anthropic(server, "p", timeout=0.3), "secondary": anthropic(server, "s")})
    started = time.monotonic()
    resp = router.complete(HI)
    assert outcomes(resp) == [("primary", "silent"), ("secondary", "ok")]
    assert server.count("p") == 1 and time.monotonic() - started < 2.0


def test_rate_limited_with_a_short_retry_after_waits_and_retries_the_same_target(server, pair):
    server.script("p", faults.status(429, retry_after=1), faults.ok("after the wait"))
    started = time.monotonic()
    resp = pair().complete(HI)
    assert time.monotonic() - started >= 0.9
    assert outcomes(resp) == [("primary", "rate_limited"), ("primary", "ok")]
    assert resp.route.attempts[0].status == 429 and server.count("s") == 0
    assert server.requests("p")[0].path == "/v1/messages"


def test_rate_limited_with_a_long_retry_after_fails_over_at_once_and_keeps_the_circuit_open(server, pair):
    server.script("p", faults.status(429, retry_after=30))
    router = pair()
    started = time.monotonic()
    resp = router.complete(HI)
    assert time.monotonic() - started < 1.5
    assert outcomes(resp) == [("primary", "rate_limited"), ("secondary", "ok")]
    assert router.status()["primary"]["state"] == "open"


def test_anthropic_rate_limit_headers_are_learned_and_paced(server, pair):
    # one request per 5 s: the answer says 0 remaining (anthropic-ratelimit-requests-*), so
    # the next call does not provoke a 429: nothing is sent, the target is throttled
    server.script("p", faults.limited(1, 5.0))
    router = pair()
    assert router.complete(HI).route.served_by == "primary"
    resp = router.complete(HI)
    assert outcomes(resp) == [("primary", "throttled"), ("secondary", "ok")]
    assert server.count("p") == 1 and server.statuses("p") == {200: 1}
    learned = router.status()["primary"]["rate_limit"]["learned"]["requests"]
    assert learned["limit"] == 1 and learned["remaining"] == 0


def test_unreachable_fails_over_at_once(server, make_router):
    dead = {"model": "anthropic/p", "api_base": f"http://127.0.0.1:{closed_port()}", "api_key": TEST_KEY}
    router = make_router({"primary": dead, "secondary": anthropic(server, "s")},
                         defaults={"retry": {"attempts": 3, "min_wait": 2, "max_wait": 4}})
    started = time.monotonic()
    resp = router.complete(HI)
    assert time.monotonic() - started < 1.5
    assert outcomes(resp) == [("primary", "unreachable"), ("secondary", "ok")]


@pytest.mark.parametrize(("fault", "outcome", "detail"), [
    (faults.status(400), "rejected", "Invalid request."),
    (faults.status(401), "misconfigured", "invalid x-api-key"),
    (faults.status(403), "misconfigured", "Your API key does not have permission to use the specified resource."),
    (faults.status(404), "misconfigured", "The requested resource could not be found."),
    (faults.context_too_long(), "context_too_long", "prompt is too long: 9000 tokens > 8192 maximum"),
], ids=["400", "401", "403", "404", "prompt-too-long"])
def test_neutral_outcomes_are_tried_once_never_count_and_fail_over(server, pair, fault, outcome, detail):
    server.script("p", fault)
    router = pair()
    resp = router.complete(HI)
    assert outcomes(resp) == [("primary", outcome), ("secondary", "ok")]
    assert resp.route.attempts[0].detail == detail
    assert server.count("p") == 1 and router.status()["primary"]["failures"] == 0


def test_a_refused_prefill_in_a_plain_call_is_rejected(server, pair):
    server.script("p", faults.refuse_prefill())
    resp = pair().complete([*HI, {"role": "assistant", "content": "Sure:"}])
    assert outcomes(resp) == [("primary", "rejected"), ("secondary", "ok")]
    assert resp.route.attempts[0].detail == faults.PREFILL_REFUSED_MESSAGE


def test_content_filtering_propagates_by_default(server, pair):
    server.script("p", faults.content_policy())
    with pytest.raises(ContentRejected, match="Output blocked by content filtering policy"):
        pair().complete(HI)
    assert server.count("p") == 1 and server.count("s") == 0


def test_deadline_cuts_an_attempt_without_a_verdict(server, pair):
    server.script("p", faults.hang(5))
    server.script("s", faults.hang(5))
    with pytest.raises(AllTargetsFailed) as info:
        pair(timeout=0.5).complete(HI, deadline=0.8)
    assert [a.outcome for a in info.value.attempts] == ["silent", "deadline"]


def test_a_cancelled_call_propagates_and_counts_nothing(server, pair):
    server.script("p", faults.hang(5))
    router = pair()

    async def cancel_soon() -> None:
        task = asyncio.ensure_future(router.acomplete(HI))
        await asyncio.sleep(0.3)
        task.cancel()
        await task

    with pytest.raises(asyncio.CancelledError):
        asyncio.run(cancel_soon())
    assert server.count("p") == 1 and server.count("s") == 0
    assert router.status()["primary"]["failures"] == 0


@pytest.mark.parametrize("shape", ["openai", "anthropic"])
@pytest.mark.parametrize("stream", [False, True], ids=["plain", "streamed"])
def test_an_errors_detail_is_the_providers_message_not_its_json_body(server, make_router, shape, stream):
    server.script("p", faults.quoting_key(401))  # "Invalid Authorization header: <the key sent>"
    target = anthropic(server, "p") if shape == "anthropic" else {
        "model": "openai/p", "api_base": server.url, "api_key": TEST_KEY}
    router = make_router({"primary": target})
    with pytest.raises(AllTargetsFailed) as info:
        answer = router.complete(HI, stream=stream)
        list(answer)
    detail = info.value.attempts[0].detail
    assert detail.startswith("Invalid Authorization header: ")
    assert TEST_KEY not in detail and "{" not in detail and "b'" not in detail
    assert str(info.value.errors["primary"]) == detail
    assert TEST_KEY not in str(info.value)


def test_a_request_litellm_cannot_translate_for_anthropic_is_unsent(server, pair):
    odd = [{"role": "user", "content": [{"type": "no-such-part", "x": 1}]}]  # valid in shape, untranslatable
    router = pair()
    with pytest.raises(AllTargetsFailed) as info:
        router.complete(odd)
    assert [a.outcome for a in info.value.attempts] == ["unsent", "unsent"]
    assert server.count() == 0 and router.status()["primary"]["failures"] == 0


def test_a_full_bulkhead_fails_over_as_no_capacity(server, make_router):
    server.script("p", faults.ok("slow", delay=1.0))
    router = make_router({"primary": anthropic(server, "p", max_concurrency=1), "secondary": anthropic(server, "s")})
    first = threading.Thread(target=router.complete, args=(HI,))
    first.start()
    time.sleep(0.3)
    resp = router.complete(HI)
    first.join()
    assert outcomes(resp) == [("primary", "no_capacity"), ("secondary", "ok")]
    assert server.count("p") == 1
