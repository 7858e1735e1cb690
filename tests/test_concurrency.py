"""Many callers at once, threads and asyncio: parallel through a closed circuit, one probe
when half-open, cancellation counted against nothing."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest

from router import AllTargetsFailed
from router.testing import faults

from .conftest import remote

HI = [{"role": "user", "content": "hi"}]


def test_16_threads_through_one_closed_circuit_run_in_parallel(server, make_router):
    server.script("slow", faults.ok("done", delay=0.2))
    router = make_router({"primary": "slow"})
    router.complete(HI)  # warm the client pool
    barrier = threading.Barrier(16)
    served: list[str] = []

    def call():
        barrier.wait()
        served.append(router.complete(HI).route.served_by)

    threads = [threading.Thread(target=call) for _ in range(16)]
    started = time.monotonic()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.monotonic() - started
    assert served == ["primary"] * 16
    assert elapsed < 1.2  # serialised it would be 16 x 0.2 = 3.2 s (0.25 s idle; slack for a loaded machine)


def test_64_tasks_through_one_closed_circuit_run_in_parallel(server, make_router):
    server.script("slow", faults.ok("done", delay=0.2))
    router = make_router({"primary": "slow"})

    async def main() -> float:
        await router.acomplete(HI)  # warm the client pool
        best = float("inf")
        for _ in range(2):  # the better of two: the machine is shared
            started = time.monotonic()
            answers = await asyncio.gather(*(router.acomplete(HI) for _ in range(64)))
            assert [a.route.served_by for a in answers] == ["primary"] * 64
            best = min(best, time.monotonic() - started)
        return best

    # serialised it would be 64 x 0.2 = 12.8 s; in parallel ~0.45 s idle (litellm's own ~4 ms of CPU per
    # request included), ~1 s measured at load average 8 on 2 cores: the bound is for a loaded machine
    assert asyncio.run(main()) < 3.0


def test_acomplete_fails_over_with_the_same_route_as_complete(server, make_router):
    server.script("p", faults.status(503))
    server.script("s", faults.ok("async answer"))
    slept: list[float] = []

    async def record(seconds: float) -> None:
        slept.append(seconds)

    router = make_router({"primary": "p", "secondary": "s"}, async_sleep=record)
    resp = asyncio.run(router.acomplete(HI, max_tokens=5))
    assert resp.choices[0].message.content == "async answer"
    assert [(a.target, a.outcome) for a in resp.route.attempts] == [("primary", "transient")] * 3 + [
        ("secondary", "ok")]
    assert server.count("p") == 3 and len(slept) == 2


def test_acomplete_raises_all_targets_failed(server, make_router):
    server.script("p", faults.status(401))
    with pytest.raises(AllTargetsFailed, match="misconfigured"):
        asyncio.run(make_router({"primary": "p"}).acomplete(HI))


def test_half_open_lets_one_probe_through_when_50_callers_arrive(server, make_router):
    server.script("p", faults.ok("probe answer", delay=0.3))
    router = make_router({"primary": remote(server, "p", retry={"attempts": 1}), "secondary": "s"},
                         defaults={"breaker": {"fail_max": 1, "reset_timeout": 0.2}})
    router.force_open("primary")
    time.sleep(0.25)

    async def main():
        return await asyncio.gather(*(router.acomplete(HI) for _ in range(50)))

    answers = asyncio.run(main())
    by = [a.route.served_by for a in answers]
    assert by.count("primary") == 1 and by.count("secondary") == 49
    assert server.count("p") == 1
    assert router.status()["primary"]["state"] == "closed"


def test_cancelling_the_caller_cancels_the_attempt_and_counts_nothing(server, make_router):
    server.script("p", faults.hang(10))
    router = make_router({"primary": "p"}, defaults={"breaker": {"fail_max": 1, "reset_timeout": 60}})

    async def main():
        task = asyncio.create_task(router.acomplete(HI))
        await asyncio.sleep(0.3)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(main())
    assert server.count("p") == 1
    status = router.status()["primary"]
    assert status["state"] == "closed" and status["failures"] == 0


def _threads(n: int, fn) -> list:
    results: list = []
    barrier = threading.Barrier(n)

    def run():
        barrier.wait()
        results.append(fn())

    threads = [threading.Thread(target=run) for _ in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return results


def test_bulkhead_caps_calls_in_flight_and_fails_over_the_rest(server, make_router):
    server.script("slow", faults.ok("slow", delay=0.4))
    router = make_router({"primary": remote(server, "slow", max_concurrency=2), "secondary": "s"})
    answers = _threads(6, lambda: router.complete(HI))
    by = sorted(a.route.served_by for a in answers)
    assert by == ["primary"] * 2 + ["secondary"] * 4
    assert server.count("slow") == 2
    refused = [a.route.attempts[0] for a in answers if a.route.served_by == "secondary"]
    assert {a.outcome for a in refused} == {"no_capacity"}
    assert "max_concurrency=2" in refused[0].detail
    assert router.status()["primary"] == {"state": "closed", "failures": 0, "retry_budget": 10, "in_flight": 0,
                                          "queued": 0}


def test_bulkhead_queue_timeout_lets_callers_wait_for_a_slot(server, make_router):
    server.script("slow", faults.ok("slow", delay=0.2))
    router = make_router({"primary": remote(server, "slow", max_concurrency=2, queue_timeout=2), "secondary": "s"})
    started = time.monotonic()
    answers = _threads(6, lambda: router.complete(HI))
    assert [a.route.served_by for a in answers] == ["primary"] * 6
    assert 0.55 <= time.monotonic() - started < 1.5  # three waves of two


def test_bulkhead_in_asyncio(server, make_router):
    server.script("slow", faults.ok("slow", delay=0.3))
    router = make_router({"primary": remote(server, "slow", max_concurrency=3, queue_timeout=0.05), "secondary": "s"})

    async def main():
        return await asyncio.gather(*(router.acomplete(HI) for _ in range(10)))

    by = [a.route.served_by for a in asyncio.run(main())]
    assert by.count("primary") == 3 and by.count("secondary") == 7
