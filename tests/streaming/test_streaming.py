"""Streams over real HTTP: failover before the first content, then a clear end either way."""

from __future__ import annotations

import asyncio
import time

import pytest

from router import AllTargetsFailed, StreamInterrupted
from router.testing import faults

from ..conftest import remote

HI = [{"role": "user", "content": "hi"}]
TEXT = "one two three four five six seven eight"


def collect(stream) -> str:
    return "".join(chunk.text for chunk in stream)


async def acollect(stream) -> str:
    return "".join([chunk.text async for chunk in stream])


def error_chain(make_router, server, primary_fault, **primary):
    server.script("p", primary_fault)
    return make_router({"primary": remote(server, "p", retry={"attempts": 1}, **primary), "secondary": "s"},
                       chains={"default": {"targets": ["primary", "secondary"], "mid_stream": "error"}})


def test_a_healthy_stream(server, make_router):
    server.script("p", faults.ok(TEXT))
    router = make_router({"primary": "p"})
    stream = router.complete(HI, stream=True)
    chunks = list(stream)
    assert "".join(c.text for c in chunks) == TEXT
    assert chunks[0].choices[0].delta.role == "assistant" and chunks[-1].finish_reason == "stop"
    assert len({c.id for c in chunks}) == 1
    assert stream.route.served_by == "primary" and [a.outcome for a in stream.route.attempts] == ["ok"]
    assert server.requests("p")[0].body["stream"] is True


def test_failover_before_the_first_content_is_invisible(server, make_router):
    server.script("p", faults.status(503))
    server.script("s", faults.ok(TEXT))
    stream = make_router({"primary": "p", "secondary": "s"}).complete(HI, stream=True)
    assert collect(stream) == TEXT
    assert [a.outcome for a in stream.route.attempts] == ["transient"] * 3 + ["ok"]
    assert stream.route.served_by == "secondary"


def test_errors_before_content_are_raised_by_the_call(server, make_router):
    server.script("p", faults.status(401))
    with pytest.raises(AllTargetsFailed, match="misconfigured"):
        make_router({"primary": "p"}).complete(HI, stream=True)


@pytest.mark.parametrize("api", ["sync", "async"])
def test_slow_first_token_fails_over(server, make_router, api):
    server.script("p", faults.stream(TEXT, first_token_delay=2))
    server.script("s", faults.ok(TEXT))
    router = make_router({"primary": remote(server, "p", first_token_timeout=0.3, retry={"attempts": 1}),
                          "secondary": "s"})
    started = time.monotonic()
    if api == "sync":
        stream = router.complete(HI, stream=True)
        text = collect(stream)
    else:
        async def run():
            stream = await router.acomplete(HI, stream=True)
            return stream, await acollect(stream)
        stream, text = asyncio.run(run())
    assert text == TEXT and time.monotonic() - started < 1.5
    first = stream.route.attempts[0]
    assert (first.outcome, first.target) == ("silent", "primary") and "first_token_timeout" in first.detail
    assert router.status()["primary"]["failures"] == 1


@pytest.mark.parametrize("api", ["sync", "async"])
@pytest.mark.parametrize(
    "fault",
    [faults.stream(TEXT, cut_after=3), faults.stream(TEXT, stall_after=3), faults.stream(TEXT, malformed_after=3)],
    ids=["cut", "stall", "malformed"],
)
def test_a_break_after_content_raises_stream_interrupted_with_the_partial_text(server, make_router, fault, api):
    router = error_chain(make_router, server, fault, stream_idle_timeout=0.4)
    received: list[str] = []

    def run_sync():
        stream = router.complete(HI, stream=True)
        for chunk in stream:
            received.append(chunk.text)

    async def run_async():
        stream = await router.acomplete(HI, stream=True)
        async for chunk in stream:
            received.append(chunk.text)

    started = time.monotonic()
    with pytest.raises(StreamInterrupted) as info:
        run_sync() if api == "sync" else asyncio.run(run_async())
    assert time.monotonic() - started < 2.5
    assert info.value.partial_text == "".join(received) == "one two three "
    assert server.count("s") == 0  # mid_stream: error never starts another target
    stalled = fault.stall_after is not None  # a stall is silence; a cut or a bad event, a transient failure
    assert [a.outcome for a in info.value.route.attempts] == ["silent" if stalled else "transient"]
    assert router.status()["primary"]["failures"] == 1  # a broken stream counts against the circuit


def test_a_stream_without_done_finishes_promptly(server, make_router):
    server.script("p", faults.stream(TEXT, done=False))
    router = make_router({"primary": "p"})
    started = time.monotonic()
    stream = router.complete(HI, stream=True)
    assert collect(stream) == TEXT
    assert time.monotonic() - started < 1.0
    assert stream.route.attempts[-1].outcome == "ok"


def test_closing_a_stream_early_counts_nothing_and_frees_the_slot(server, make_router):
    server.script("p", faults.stream(TEXT, token_delay=0.05))
    router = make_router({"primary": remote(server, "p", max_concurrency=1)})
    stream = router.complete(HI, stream=True)
    next(stream), next(stream)
    stream.close()
    assert stream.route.attempts[-1].outcome == "cancelled"
    assert router.status()["primary"] == {"state": "closed", "failures": 0, "retry_budget": 10, "in_flight": 0,
                                          "queued": 0}
    assert collect(router.complete(HI, stream=True)) == TEXT  # the bulkhead slot came back


def test_static_reply_as_a_stream(server, make_router):
    server.script("p", faults.status(503))
    router = make_router({"primary": "p"}, chains={"default": {"targets": ["primary"], "static_reply": "Later."}})
    stream = router.complete(HI, stream=True)
    assert collect(stream) == "Later." and stream.route.served_by == "static"
