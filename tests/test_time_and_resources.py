"""The deadline is exact and every resource comes back: attempt timeouts are never cut
shorter than the deadline leaves, HTTP clients do not multiply with distinct timeouts,
local calls wait inside the clock and stop when cancelled, abandoned streams give back
their threads and sockets at once. Real HTTP (the fault server), the real local model."""

from __future__ import annotations

import asyncio
import gc
import os
import random
import threading
import time
from pathlib import Path

import pytest

from router import AllTargetsFailed, Router, StreamInterrupted
from router.models import pull_default_model
from router.testing import faults

from .conftest import FAST_RETRY, TEST_KEY, remote

HI = [{"role": "user", "content": "hi"}]
LONG = [{"role": "user", "content": "Write a long story about a lighthouse keeper."}]
# the end-of-turn and end-of-text tokens of SmolLM2 banned: the model talks until stopped
ENDLESS = {"temperature": 0, "seed": 1, "max_tokens": 500, "logit_bias": {"2": -100, "0": -100}}
MARGIN = 1.0  # seconds past a deadline allowed for a busy 2-core machine


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def settle(check, within: float = 5.0) -> bool:
    """Poll `check()` until true or `within` seconds pass (threads and sockets end asynchronously)."""
    give_up = time.monotonic() + within
    while not check():
        if time.monotonic() > give_up:
            return False
        time.sleep(0.02)
    return True


@pytest.fixture(scope="module", autouse=True)
def _warm_litellm_calls(_module_server) -> None:
    """One sync and one async call first: litellm's first call imports for a second or two
    outside any timeout, which is not what these tests time."""
    _module_server.script("warm", faults.ok("warm"))
    router = Router.from_dict({"targets": {"w": remote(_module_server, "warm")}, "chains": {"default": ["w"]}})
    router.complete(HI)
    asyncio.run(router.acomplete(HI))


@pytest.fixture(scope="module")
def model_path() -> Path:
    """The default model, loaded and past its first completion: a freshly loaded model's
    first prompt takes seconds on a busy machine (its weights paged in), and llama.cpp
    cannot stop in the middle of a prompt, only between tokens."""
    path = pull_default_model(quiet=True)
    local_router(path).complete(HI, temperature=0, max_tokens=4)
    return path


def local_router(model_path: Path, *, deadline: float = 30, **local) -> Router:
    spec = {"provider": "llama_cpp", "model_path": str(model_path), "n_ctx": 1024, "n_threads": 1,
            "max_tokens": 500, "preload": True, **local}
    return Router.from_dict({"defaults": {"timeout": 30, "deadline": deadline, "retry": {"attempts": 1}},
                             "targets": {"local": spec}, "chains": {"default": ["local"]}})


# -- 1, 2: exact attempt timeouts, a fixed number of HTTP clients ---------------------------


@pytest.mark.parametrize("deadline, answer_after", [(1.9, 1.3), (2.9, 2.3)])
@pytest.mark.parametrize("api", ["sync", "async"])
def test_an_answer_that_fits_the_deadline_is_waited_for(server, make_router, api, deadline, answer_after):
    server.script("slow", faults.ok("made it", delay=answer_after))
    router = make_router({"primary": "slow"})
    started = time.monotonic()
    if api == "sync":
        resp = router.complete(HI, deadline=deadline)
    else:
        resp = asyncio.run(router.acomplete(HI, deadline=deadline))
    took = time.monotonic() - started
    assert resp.text == "made it" and resp.route.served_by == "primary"
    assert answer_after <= took < deadline + MARGIN
    assert server.count("slow") == 1


@pytest.mark.parametrize("api", ["sync", "async"])
def test_a_silent_provider_is_given_up_on_at_the_deadline_not_before(server, make_router, api):
    server.script("mute", faults.hang())
    router = make_router({"primary": "mute"})
    started = time.monotonic()
    with pytest.raises(AllTargetsFailed) as info:
        if api == "sync":
            router.complete(HI, deadline=1.7)
        else:
            asyncio.run(router.acomplete(HI, deadline=1.7))
    took = time.monotonic() - started
    assert 1.7 - 0.02 <= took < 1.7 + MARGIN
    (attempt,) = info.value.route.attempts
    assert attempt.outcome == "deadline" and attempt.latency_s >= 1.7 - 0.05
    assert router.status()["primary"]["failures"] == 0  # the deadline is no verdict on the provider
    assert server.count("mute") == 1


@pytest.mark.usefixtures("transport")  # on both transports (conftest.py)
def test_three_hundred_calls_with_tiny_deadlines_keep_clients_and_descriptors_fixed(server, make_router):
    from router.targets.remote import litellm_module

    server.script("fast", faults.ok("ok"))
    router = make_router({"primary": "fast"}, defaults={"retry": {"attempts": 1}})
    router.complete(HI)  # the target's client and its connection exist from here on
    cache = litellm_module().in_memory_llm_clients_cache.cache_dict
    clients, fds = len(cache), open_fds()
    rng = random.Random(12)
    outcomes = []
    for _ in range(300):
        try:
            outcomes.append(router.complete(HI, deadline=rng.uniform(0.05, 0.1)).route.attempts[-1].outcome)
        except AllTargetsFailed as exc:  # a loaded machine may miss 50 ms: that is not the point
            outcomes.append(exc.route.attempts[-1].outcome)
    assert outcomes.count("ok") > 150 and set(outcomes) <= {"ok", "deadline"}
    assert len(cache) == clients  # no HTTP client per distinct timeout (main made 195)
    assert open_fds() <= fds + 2  # main ended with ~400 descriptors open
    assert server.count("fast") == 301


@pytest.mark.usefixtures("transport")  # on both transports (conftest.py)
def test_async_calls_with_tiny_deadlines_reuse_one_client_per_loop(server, make_router):
    from router.targets.remote import litellm_module

    server.script("fast", faults.ok("ok"))
    router = make_router({"primary": "fast"}, defaults={"retry": {"attempts": 1}})
    rng = random.Random(7)

    async def main() -> tuple[int, int, list[str]]:
        await router.acomplete(HI)
        cache = litellm_module().in_memory_llm_clients_cache.cache_dict
        clients, fds = len(cache), open_fds()
        outcomes = []
        for _ in range(150):
            try:
                resp = await router.acomplete(HI, deadline=rng.uniform(0.05, 0.1))
                outcomes.append(resp.route.attempts[-1].outcome)
            except AllTargetsFailed as exc:  # a loaded machine may miss 50 ms
                outcomes.append(exc.route.attempts[-1].outcome)
        return len(cache) - clients, open_fds() - fds, outcomes

    new_clients, new_fds, outcomes = asyncio.run(main())
    assert outcomes.count("ok") > 75 and set(outcomes) <= {"ok", "deadline"}
    assert new_clients == 0 and new_fds <= 2
    assert server.count("fast") == 151


# -- 3, 4: the local tier from asyncio ------------------------------------------------------


async def cancelled_in(task: asyncio.Task) -> float:
    """Cancel `task`: seconds until its `CancelledError` reached the canceller."""
    started = time.monotonic()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    return time.monotonic() - started


def test_sixteen_async_local_calls_all_end_within_their_deadline(model_path):
    router = local_router(model_path, pool_size=1, max_queue=16)

    async def main() -> tuple[float, list]:
        started = time.monotonic()
        results = await asyncio.gather(*(router.acomplete(LONG, deadline=3.0, **ENDLESS) for _ in range(16)),
                                       return_exceptions=True)
        return time.monotonic() - started, results

    took, results = asyncio.run(main())
    assert took < 3.0 + MARGIN  # main: up to 5.7 s, queued in asyncio's 6 default threads
    routes = [r.route for r in results]
    assert all(route.latency_s < 3.0 + MARGIN for route in routes)
    outcomes = [route.attempts[0].outcome for route in routes]
    # one generates until the deadline stops it (a waiter handed the model at that instant
    # may too); the others wait in the queue until the same deadline
    assert set(outcomes) == {"deadline", "no_capacity"} and outcomes.count("no_capacity") >= 13, outcomes
    assert router.status()["local"]["failures"] == 0
    assert router._guards["local"].bulkhead.in_flight == 0


def test_cancelling_an_async_local_call_stops_the_generation_and_frees_the_model(model_path):
    from router.targets.model_pool import pool_for

    router = local_router(model_path, pool_size=1, max_queue=0)
    pool = pool_for(router.config.targets["local"].local, lambda _: None)

    async def main() -> tuple[float, float, object]:
        task = asyncio.create_task(router.acomplete(LONG, **ENDLESS))
        await asyncio.sleep(0.4)
        assert pool.size - len(pool._free) == 1  # generating
        stopped = await cancelled_in(task)
        free_after = len(pool._free)
        started = time.monotonic()
        resp = await router.acomplete(HI, temperature=0, max_tokens=4)  # max_queue=0: refused if still busy
        return stopped, free_after, (resp, time.monotonic() - started)

    stopped, free_after, (resp, took) = asyncio.run(main())
    assert stopped < 0.5  # the next token, not the end of a 500-token answer
    assert free_after == 1 and resp.route.served_by == "local" and resp.text.strip()
    assert took < 5.0
    status = router.status()["local"]
    assert status["failures"] == 0 and status["state"] == "closed"
    assert router._guards["local"].bulkhead.in_flight == 0


def test_a_cancelled_caller_waiting_for_a_local_model_leaves_the_queue_at_once(model_path):
    from router.targets.model_pool import pool_for

    router = local_router(model_path, pool_size=1, max_queue=4)
    pool = pool_for(router.config.targets["local"].local, lambda _: None)

    async def main() -> float:
        busy = asyncio.create_task(router.acomplete(LONG, deadline=4.0, **ENDLESS))
        await asyncio.sleep(0.3)
        waiting = asyncio.create_task(router.acomplete(LONG, **ENDLESS))
        await asyncio.sleep(0.3)
        assert len(pool._waiters) == 1
        left = await cancelled_in(waiting)
        assert not pool._waiters
        await cancelled_in(busy)
        return left

    assert asyncio.run(main()) < 0.5
    assert len(pool._free) == 1 and router.status()["local"]["failures"] == 0


def test_an_async_local_stream_opening_behind_a_busy_model_is_cancelled_at_once(model_path):
    from router.targets.model_pool import pool_for

    router = local_router(model_path, pool_size=1, max_queue=4)
    pool = pool_for(router.config.targets["local"].local, lambda _: None)

    async def main() -> tuple[float, float]:
        busy = await router.acomplete(LONG, stream=True, **ENDLESS)  # holds the model while read
        await busy.__anext__()
        opening = asyncio.create_task(router.acomplete(LONG, stream=True, **ENDLESS))
        await asyncio.sleep(0.3)
        assert len(pool._waiters) == 1
        left = await cancelled_in(opening)
        assert settle(lambda: not pool._waiters, within=0.5)
        closed = time.monotonic()
        await busy.aclose()
        assert settle(lambda: len(pool._free) == 1, within=1.0)
        return left, time.monotonic() - closed

    left, freed = asyncio.run(main())
    assert left < 0.5 and freed < 0.5  # not the 30 s of the attempt's timeout
    assert settle(lambda: stream_threads() == 0, within=1.0)
    assert router.status()["local"]["failures"] == 0 and router._guards["local"].bulkhead.in_flight == 0


# -- 5: streams give back their thread and socket -------------------------------------------


def our_threads() -> int:
    """`threading.active_count()` but for litellm's logging pool (a few threads it keeps
    for all calls, started on demand): ours, and the fault server's, one per connection."""
    return threading.active_count() - sum(1 for t in threading.enumerate() if t.name.startswith("litellm-"))


def stream_threads() -> int:
    return sum(1 for t in threading.enumerate() if t.name == "router-stream")


@pytest.mark.usefixtures("transport")  # on both transports (conftest.py)
def test_stalled_sync_streams_end_their_threads_and_close_their_sockets_at_once(server, make_router):
    server.script("stall", faults.stream("one two three four five six", stall_after=2))
    router = make_router({"primary": remote(server, "stall", stream_idle_timeout=0.3, timeout=30)},
                         chains={"default": {"targets": ["primary"], "mid_stream": "error"}})
    threads, fds = our_threads(), open_fds()
    errors: list[BaseException] = []

    def reader() -> None:
        try:
            for _ in router.complete(HI, stream=True):
                pass
        except StreamInterrupted as exc:
            errors.append(exc)

    started = time.monotonic()
    readers = [threading.Thread(target=reader) for _ in range(8)]
    for t in readers:
        t.start()
    for t in readers:
        t.join(10)
    assert len(errors) == 8 and all(e.partial_text == "one two " for e in errors)
    assert time.monotonic() - started < 0.3 + 2 * MARGIN
    # main: 8 reader threads and 16 descriptors stayed for the attempt's whole timeout (30 s)
    assert settle(lambda: stream_threads() == 0, within=2.0)
    assert settle(lambda: our_threads() <= threads and open_fds() <= fds, within=2.0), \
        (" ".join(t.name for t in threading.enumerate()), threads, open_fds(), fds)
    assert server.count("stall") == 8


@pytest.mark.usefixtures("transport")  # on both transports (conftest.py)
@pytest.mark.parametrize("how", ["close", "abandon"])
def test_a_sync_stream_closed_or_dropped_mid_answer_closes_its_connection_now(server, make_router, how):
    server.script("slow", faults.stream("one two three four five six seven", token_delay=4.0))
    router = make_router({"primary": "slow"}, defaults={"timeout": 10})
    threads, fds = our_threads(), open_fds()
    stream = router.complete(HI, stream=True)
    assert next(iter(stream)).choices[0].delta.role == "assistant"
    assert stream_threads() == 1
    if how == "close":
        closed = time.monotonic()
        stream.close()
    else:
        del stream
        gc.collect()  # (a full collection of this big process is not the stream's time)
        closed = time.monotonic()
    assert settle(lambda: stream_threads() == 0, within=2.0)
    assert time.monotonic() - closed < 2.0  # not the 4 s until the next chunk, nor the 10 s timeout
    assert settle(lambda: our_threads() <= threads and open_fds() <= fds, within=2.0)
    assert router.status()["primary"]["failures"] == 0


# -- 6: a stream's attempt cut by the deadline is no verdict on the provider ----------------


@pytest.mark.parametrize("api", ["sync", "async"])
def test_a_stream_attempt_cut_by_the_deadline_counts_nothing_against_the_provider(server, make_router, api):
    server.script("late", faults.stream("too late", first_token_delay=3.0))
    router = make_router({"primary": "late"}, defaults={"retry": {**FAST_RETRY, "attempts": 1}})
    started = time.monotonic()
    with pytest.raises(AllTargetsFailed) as info:
        if api == "sync":
            router.complete(HI, stream=True, deadline=0.8)
        else:
            asyncio.run(router.acomplete(HI, stream=True, deadline=0.8))
    assert time.monotonic() - started < 0.8 + MARGIN
    assert [a.outcome for a in info.value.route.attempts] == ["deadline"]
    assert router.status()["primary"]["failures"] == 0
    # a plain call in the same situation: the same outcome
    server.script("late", faults.ok("too late", delay=3.0))
    with pytest.raises(AllTargetsFailed) as plain:
        router.complete(HI, deadline=0.8)
    assert [a.outcome for a in plain.value.route.attempts] == ["deadline"]
    assert router.status()["primary"]["failures"] == 0


def test_a_stream_attempt_past_its_own_first_token_timeout_still_counts(server, make_router):
    server.script("late", faults.stream("too late", first_token_delay=3.0))
    router = make_router({"primary": remote(server, "late", first_token_timeout=0.3)},
                         defaults={"retry": {**FAST_RETRY, "attempts": 1}})
    with pytest.raises(AllTargetsFailed) as info:
        router.complete(HI, stream=True, deadline=5)
    assert [a.outcome for a in info.value.route.attempts] == ["silent"]  # its own first_token_timeout
    assert router.status()["primary"]["failures"] == 1
    assert TEST_KEY not in str(info.value)
