"""Client-side rate limits (limiter.py), against the fault server's provider-side limit
(`faults.limited`: N requests per sliding window, 429 beyond) over real HTTP; the fleet
case with two OS processes and a real redis-server."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest

from router import Router
from router.errors import AllTargetsFailed
from router.testing import faults

from ..conftest import TEST_KEY, remote

pytest_plugins = ["tests.redis_server"]

HI = [{"role": "user", "content": "hi"}]
ROOT = Path(__file__).resolve().parents[2]
ONE_TRY = {"attempts": 1}


def said(tag: str) -> list[dict[str, str]]:
    return [{"role": "user", "content": tag}]


def arrivals(server, model: str) -> list[float]:
    return [r.t for r in server.requests(model)]


def most_in_window(times: list[float], window: float) -> int:
    return max((sum(1 for u in times if t <= u < t + window) for t in times), default=0)


# -- the fault server's provider-side limit ---------------------------------------------------


def test_the_fault_server_answers_429_beyond_n_requests_per_sliding_window_with_headers(server, make_router):
    server.script("p", faults.limited(2, 0.5))
    router = make_router({"primary": "p"}, defaults={"retry": ONE_TRY})
    first = router.complete(HI)
    assert first.headers["x-ratelimit-remaining-requests"] == "1"
    assert first.headers["x-ratelimit-limit-requests"] == "2"
    router.complete(HI)
    unaware = make_router({"primary": "p"}, defaults={"retry": ONE_TRY})  # has not read the headers
    with pytest.raises(AllTargetsFailed) as caught:
        unaware.complete(HI)
    assert caught.value.route.attempts[-1].status == 429
    assert server.statuses("p") == {200: 2, 429: 1}
    time.sleep(0.6)  # the window slides past both
    assert router.complete(HI).route.served_by == "primary"
    assert server.statuses("p") == {200: 3, 429: 1}


def test_the_fault_server_limit_without_headers_sends_a_bare_429(server, make_router):
    server.script("p", faults.limited(1, 5, headers=False))
    router = make_router({"primary": "p", "secondary": "s"}, defaults={"retry": ONE_TRY})
    assert "x-ratelimit-remaining-requests" not in router.complete(HI).headers
    route = router.complete(HI).route
    assert [(a.target, a.outcome, a.status) for a in route.attempts] == [
        ("primary", "rate_limited", 429), ("secondary", "ok", None)]
    assert server.statuses("p") == {200: 1, 429: 1}


# -- pacing, max_wait, throttled --------------------------------------------------------------


def test_calls_are_paced_evenly_and_the_provider_sends_no_429(server, make_router):
    server.script("p", faults.limited(10, 1.0))
    router = make_router({"primary": "p", "secondary": "s"},
                         defaults={"rate_limit": {"rpm": 480, "max_wait": 10}})  # 8/s against 10/s
    started = time.monotonic()
    with ThreadPoolExecutor(8) as pool:
        served = list(pool.map(lambda _: router.complete(HI).route.served_by, range(24)))
    wall = time.monotonic() - started
    assert served == ["primary"] * 24
    assert server.statuses("p") == {200: 24}
    assert server.count("s") == 0
    times = arrivals(server, "p")
    assert most_in_window(times, 1.0) <= 10  # never 24 at once: at most 8/s plus the burst of 1
    assert 2.2 < wall < 20  # 23 intervals of 1/8 s


def test_no_room_within_max_wait_fails_over_as_throttled_sending_nothing(server, make_router):
    router = make_router({"primary": "p", "secondary": "s"},
                         defaults={"rate_limit": {"rpm": 6, "max_wait": 0.5}})  # one per 10 s
    assert router.complete(HI).route.served_by == "primary"
    started = time.monotonic()
    route = router.complete(HI).route
    assert time.monotonic() - started < 0.5  # room is 10 s away: no point waiting 0.5 s for it
    assert [(a.target, a.outcome) for a in route.attempts] == [("primary", "throttled"), ("secondary", "ok")]
    assert "no room for" in route.attempts[0].detail and "max_wait" in route.attempts[0].detail
    assert server.count("p") == 1
    assert router.status()["primary"]["failures"] == 0  # nothing counted against its circuit


def test_max_wait_zero_fails_over_at_once(server, make_router):
    router = make_router({"primary": remote(server, "p", rate_limit={"rpm": 600, "max_wait": 0}), "secondary": "s"})
    assert router.complete(HI).route.served_by == "primary"
    route = router.complete(HI).route  # 0.1 s away, but max_wait is 0
    assert route.attempts[0].outcome == "throttled" and route.served_by == "secondary"
    assert server.count("p") == 1


def test_a_call_waits_for_room_within_max_wait_and_the_same_target_answers(server, make_router):
    router = make_router({"primary": "p", "secondary": "s"}, defaults={"rate_limit": {"rpm": 120, "max_wait": 3}})
    router.complete(HI)
    started = time.monotonic()
    route = router.complete(HI).route
    waited = time.monotonic() - started
    assert route.served_by == "primary" and [a.outcome for a in route.attempts] == ["ok"]
    assert 0.3 < route.attempts[0].waited_s <= 3 and 0.3 < waited < 3  # 0.5 s between two at 120 rpm
    assert server.count("s") == 0


def test_the_calls_deadline_bounds_the_wait(server, make_router):
    router = make_router({"primary": "p", "secondary": "s"}, defaults={"rate_limit": {"rpm": 60, "max_wait": 30}})
    router.complete(HI)
    started = time.monotonic()
    route = router.complete(HI, deadline=0.5).route
    assert time.monotonic() - started < 0.5
    assert route.attempts[0].outcome == "throttled" and "deadline" in route.attempts[0].detail
    assert server.count("p") == 1


def test_waiters_are_served_first_come_first_served(server, make_router):
    router = make_router({"primary": "p"}, defaults={"rate_limit": {"rpm": 300, "max_wait": 10}})  # 0.2 s apart
    router.complete(said("first"))
    threads = []
    for i in range(6):
        thread = threading.Thread(target=router.complete, args=(said(f"w{i}"),))
        thread.start()
        threads.append(thread)
        time.sleep(0.03)  # each queues after the one before
    for thread in threads:
        thread.join(20)
    order = [r.body["messages"][0]["content"] for r in server.requests("p")]
    assert order == ["first"] + [f"w{i}" for i in range(6)]


def test_a_waiter_cancelled_in_the_queue_frees_its_place(server, make_router):
    router = make_router({"primary": "p"}, defaults={"rate_limit": {"rpm": 60, "max_wait": 10}})  # 1 s apart

    async def main() -> tuple[float, Any]:
        await router.acomplete(said("first"))
        cancelled = asyncio.create_task(router.acomplete(said("cancelled")))
        await asyncio.sleep(0.1)
        started = time.monotonic()
        behind = asyncio.create_task(router.acomplete(said("behind")))
        await asyncio.sleep(0.2)
        assert router.status()["primary"]["rate_limit"]["waiters"] == 2
        cancelled.cancel()
        with pytest.raises(asyncio.CancelledError):
            await cancelled
        response = await behind
        return time.monotonic() - started, response

    took, response = asyncio.run(main())
    assert response.route.served_by == "primary"
    assert took < 1.6  # the cancelled caller's turn (~1 s after the first), not the one after it (~2 s)
    assert [r.body["messages"][0]["content"] for r in server.requests("p")] == ["first", "behind"]
    assert router.status()["primary"]["rate_limit"]["waiters"] == 0


def test_sync_and_async_callers_share_the_limit_and_behave_the_same(server, make_router):
    router = make_router({"primary": remote(server, "p", rate_limit={"rpm": 6, "max_wait": 0.2}), "secondary": "s"})
    sync_route = router.complete(HI).route
    async_route = asyncio.run(router.acomplete(HI)).route
    again = router.complete(HI).route
    assert sync_route.served_by == "primary"
    assert [(a.target, a.outcome) for a in async_route.attempts] == [("primary", "throttled"), ("secondary", "ok")]
    assert [(a.target, a.outcome) for a in again.attempts] == [("primary", "throttled"), ("secondary", "ok")]
    assert server.count("p") == 1


def test_a_stream_takes_room_like_a_plain_call(server, make_router):
    router = make_router({"primary": "p", "secondary": "s"}, defaults={"rate_limit": {"rpm": 6, "max_wait": 0}})
    assert "".join(c.text for c in router.complete(HI, stream=True))
    stream = router.complete(HI, stream=True)
    list(stream)
    assert stream.route.served_by == "secondary" and stream.route.attempts[0].outcome == "throttled"
    assert server.count("p") == 1


# -- learned from the provider ----------------------------------------------------------------


def test_limits_learned_from_headers_hold_calls_back_with_no_rate_limit_configured(server, make_router):
    server.script("p", faults.limited(3, 2.0))
    router = make_router({"primary": "p", "secondary": "s"}, defaults={"rate_limit": {"max_wait": 0}})
    served = [router.complete(HI).route.served_by for _ in range(5)]
    assert served == ["primary"] * 3 + ["secondary"] * 2
    assert server.statuses("p") == {200: 3}  # never a 429: the headers said none remained
    learned = router.status()["primary"]["rate_limit"]["learned"]["requests"]
    assert learned["limit"] == 3 and learned["remaining"] < 1


def test_anthropics_rate_limit_headers_are_learned_too(server, make_router):
    reset = (datetime.now(timezone.utc) + timedelta(seconds=3)).isoformat().replace("+00:00", "Z")
    server.script("p", faults.ok(headers={"anthropic-ratelimit-requests-limit": "50",
                                          "anthropic-ratelimit-requests-remaining": "0",
                                          "anthropic-ratelimit-requests-reset": reset}))
    router = make_router({"primary": "p", "secondary": "s"}, defaults={"rate_limit": {"max_wait": 0}})
    assert router.complete(HI).route.served_by == "primary"
    route = router.complete(HI).route
    assert [(a.target, a.outcome) for a in route.attempts] == [("primary", "throttled"), ("secondary", "ok")]
    learned = router.status()["primary"]["rate_limit"]["learned"]["requests"]
    assert learned["limit"] == 50 and learned["remaining"] < 1 and 1 < learned["reset_in_s"] <= 3
    assert server.count("p") == 1


def test_a_429_pauses_the_target_until_its_retry_after(server, make_router):
    server.script("p", faults.status(429, retry_after=1), faults.ok())
    router = make_router({"primary": "p", "secondary": "s"},
                         defaults={"retry": ONE_TRY, "rate_limit": {"max_wait": 0}})
    assert router.complete(HI).route.served_by == "secondary"
    paused = router.complete(HI).route
    assert [(a.target, a.outcome) for a in paused.attempts] == [("primary", "throttled"), ("secondary", "ok")]
    assert "429" in paused.attempts[0].detail
    assert 0 < router.status()["primary"]["rate_limit"]["paused_s"] <= 1
    assert server.count("p") == 1
    time.sleep(1.05)
    assert router.complete(HI).route.served_by == "primary"


def test_a_bare_429_is_learned_too_without_headers(server, make_router):
    server.script("p", faults.limited(2, 5, headers=False))
    router = make_router({"primary": "p", "secondary": "s"},
                         defaults={"retry": ONE_TRY, "rate_limit": {"max_wait": 0}})
    served = [router.complete(HI).route.served_by for _ in range(5)]
    assert served == ["primary", "primary", "secondary", "secondary", "secondary"]
    assert server.statuses("p") == {200: 2, 429: 1}  # one 429, then paused: no more requests


@pytest.mark.parametrize("reset", [
    {"x-ratelimit-limit-requests": "50", "x-ratelimit-remaining-requests": "0", "x-ratelimit-reset-requests": "99999999h"},
    {"x-ratelimit-limit-requests": "50", "x-ratelimit-remaining-requests": "0", "x-ratelimit-reset-requests": "1e308"},
    {"anthropic-ratelimit-requests-limit": "50", "anthropic-ratelimit-requests-remaining": "0",
     "anthropic-ratelimit-requests-reset": "9999-12-31T23:59:59Z"},
], ids=["99999999h", "1e308", "year-9999"])
def test_a_learned_reset_holds_a_target_back_an_hour_at_most_and_force_close_forgets_it(server, make_router, reset):
    server.script("p", faults.ok(headers=reset), faults.ok())
    router = make_router({"primary": "p", "secondary": "s"}, defaults={"rate_limit": {"max_wait": 0}})
    assert router.complete(HI).route.served_by == "primary"
    assert router.complete(HI).route.attempts[0].outcome == "throttled"
    learned = router.status()["primary"]["rate_limit"]["learned"]["requests"]
    assert 3500 < learned["reset_in_s"] <= 3600  # MAX_PROVIDER_WAIT_S, as for a Retry-After
    router.force_close("primary")
    assert "rate_limit" not in router.status()["primary"]  # nothing learned any more
    assert router.complete(HI).route.served_by == "primary"
    assert server.count("p") == 2


def test_force_close_forgets_the_pause_a_429_set(server, make_router):
    server.script("p", faults.status(429, retry_after=1e308), faults.ok())
    router = make_router({"primary": "p", "secondary": "s"},
                         defaults={"retry": ONE_TRY, "rate_limit": {"max_wait": 0}})
    assert router.complete(HI).route.served_by == "secondary"
    assert 3500 < router.status()["primary"]["rate_limit"]["paused_s"] <= 3600
    router.force_close("primary")
    assert router.complete(HI).route.served_by == "primary"
    assert server.statuses("p") == {429: 1, 200: 1}


def test_learned_limits_count_the_requests_in_flight_and_keep_429s_rare(server, make_router):
    """A provider allowing 20 requests/s in a sliding window, saying so in OpenAI's headers;
    no rate_limit configured; 100 calls from 8 threads. Measured before: 7-11 answers were
    429 (requests still on their way when a header arrived were not subtracted, and the
    limit was assumed to refill linearly after a 429 said otherwise); now 1-3."""
    server.script("p", faults.limited(20, 1.0))
    router = make_router({"primary": "p", "secondary": "s"}, defaults={"retry": ONE_TRY})
    with ThreadPoolExecutor(8) as pool:
        served = list(pool.map(lambda _: router.complete(HI).route.served_by, range(100)))
    statuses = server.statuses("p")
    assert statuses.get(429, 0) <= 5, statuses
    assert statuses[200] >= 50 and served.count("primary") == statuses[200]  # paced, not given up


def test_the_token_estimate_is_corrected_from_usage(server, make_router):
    router = make_router({"primary": "p"}, defaults={"rate_limit": {"tpm": 6000, "max_wait": 0}})  # 100 tokens/s
    response = router.complete(HI, max_tokens=400)  # estimated 401 tokens: 3 s of debt
    used = response.usage.total_tokens
    assert 0 < used < 20
    room = router.status()["primary"]["rate_limit"]["room"]["tokens"]
    assert room > 50  # the estimate was given back down to what was used


@pytest.mark.parametrize("options", [{}, {"stream_options": {"include_usage": False}}],
                         ids=["usage-asked-for-by-the-router", "no-usage-estimated-from-the-text"])
def test_a_streamed_answer_settles_its_token_estimate_and_leaves_no_debt(server, make_router, options):
    """max_tokens=50000 against tpm 6000 (100 tokens/s): left at the estimate, the bucket
    was ~500 s in debt after one streamed call (~3000 s at a real provider's tpm)."""
    server.script("p", faults.stream(text="a short streamed answer"), faults.ok())
    router = make_router({"primary": "p", "secondary": "s"}, defaults={"rate_limit": {"tpm": 6000, "max_wait": 0}})
    stream = router.complete(HI, stream=True, max_tokens=50000, **options)
    chunks = list(stream)
    assert stream.text == "a short streamed answer" and all(chunk.choices for chunk in chunks)  # no usage chunk
    sent = server.requests("p")[0].body.get("stream_options")
    assert sent == (options.get("stream_options") or {"include_usage": True})
    assert router.status()["primary"]["rate_limit"]["room"]["tokens"] > 50
    assert router.complete(HI, max_tokens=20).route.served_by == "primary"  # not throttled


def test_a_caller_who_asks_for_the_streams_usage_still_gets_its_chunk(server, make_router):
    router = make_router({"primary": "p"})
    chunks = list(router.complete(HI, stream=True, stream_options={"include_usage": True}))
    assert not chunks[-1].choices and chunks[-1].usage.total_tokens > 0


def test_a_stream_closed_early_settles_its_estimate_from_the_text_sent(server, make_router):
    server.script("p", faults.stream(text="one two three four five six", token_delay=0.05))
    router = make_router({"primary": "p", "secondary": "s"}, defaults={"rate_limit": {"tpm": 6000, "max_wait": 0}})
    stream = router.complete(HI, stream=True, max_tokens=50000)
    next(iter(stream))
    stream.close()
    assert router.status()["primary"]["rate_limit"]["room"]["tokens"] > 50


def test_status_and_events_show_the_limiter(server, make_router):
    events = []
    router = make_router({"primary": "p", "secondary": "s"},
                         defaults={"rate_limit": {"rpm": 120, "burst": 1, "max_wait": 2}}, listeners=[events.append])
    router.complete(HI)
    router.complete(HI)  # waits ~0.5 s
    router.complete(HI, deadline=0.2)  # throttled
    status = router.status()["primary"]["rate_limit"]
    assert status["rpm"] == 120 and status["waiters"] == 0 and 0 <= status["room"]["requests"] <= 1
    waits = [e for e in events if e.name == "rate_wait"]
    throttled = [e for e in events if e.name == "throttled"]
    assert len(waits) == 1 and waits[0].target == "primary" and 0.3 < waits[0].wait_s <= 2
    assert len(throttled) == 1 and throttled[0].target == "primary"
    assert [e.outcome for e in events if e.name == "attempt"].count("throttled") == 1


def test_prometheus_counts_throttled_calls_and_queue_waits(server, make_router):
    prom = pytest.importorskip("prometheus_client")
    from router.observe.metrics import PrometheusListener

    registry = prom.CollectorRegistry()
    router = make_router({"primary": "p", "secondary": "s"}, defaults={"rate_limit": {"rpm": 120, "max_wait": 2}},
                         listeners=[PrometheusListener(registry)])
    router.complete(HI)
    router.complete(HI)
    router.complete(HI, deadline=0.2)
    assert registry.get_sample_value("router_throttled_total", {"target": "primary"}) == 1
    assert registry.get_sample_value("router_rate_limit_wait_seconds_count", {"target": "primary"}) == 1
    assert registry.get_sample_value("router_requests_total", {"target": "primary", "outcome": "throttled"}) == 1


def test_a_rate_limit_with_a_bad_value_is_a_config_error_naming_the_key():
    from router.errors import ConfigError

    config = {"targets": {"p": {"model": "openai/x", "rate_limit": {"rpm": 0}}}, "chains": {"default": ["p"]}}
    with pytest.raises(ConfigError, match=r"targets\.p\.rate_limit\.rpm"):
        Router.from_dict(config)
    config = {"defaults": {"rate_limit": {"rps": 3}}, "targets": {"p": {"model": "openai/x"}},
              "chains": {"default": ["p"]}}
    with pytest.raises(ConfigError, match=r"defaults\.rate_limit\.rps: unknown key"):
        Router.from_dict(config)


# -- the fleet: Redis ------------------------------------------------------------------------------

WORKER = r"""
import json, sys, time
from concurrent.futures import ThreadPoolExecutor
from router import Router
from router.targets.remote import litellm_module
config = json.loads(sys.argv[1])
router = Router.from_dict(config)
try:  # litellm's first call in a process is slow: not while the fleet is being paced
    litellm_module().completion(model="openai/warm", api_base=config["targets"]["primary"]["api_base"],
                                api_key="sk-test", max_retries=0, messages=[{"role": "user", "content": "hi"}])
except Exception:
    pass
print("ready", flush=True)
at, calls = sys.stdin.readline().split()
time.sleep(max(0.0, float(at) - time.monotonic()))
def one(_):
    route = router.complete([{"role": "user", "content": "hi"}]).route
    return route.served_by, [a.outcome for a in route.attempts]
with ThreadPoolExecutor(4) as pool:
    results = list(pool.map(one, range(int(calls))))
print(json.dumps({"results": results, "status": router.status()["primary"]}), flush=True)
"""


def fleet_config(server, redis_url: str, namespace: str, **rate_limit: Any) -> dict[str, Any]:
    return {
        "defaults": {"timeout": 10, "deadline": 30, "retry": ONE_TRY, "rate_limit": rate_limit},
        "targets": {"primary": remote(server, "p"), "secondary": remote(server, "s")},
        "chains": {"default": ["primary", "secondary"]},
        "state": {"backend": "redis", "url": redis_url, "namespace": namespace},
    }


@pytest.mark.slow
def test_two_processes_share_one_limit_through_redis(server, redis_url, namespace):
    server.script("p", faults.limited(10, 1.0))
    config = fleet_config(server, redis_url, namespace, rpm=480, max_wait=10)  # 8/s for the fleet, against 10/s
    workers = [subprocess.Popen([sys.executable, "-c", WORKER, json.dumps(config)], cwd=ROOT, text=True,
                                stdin=subprocess.PIPE, stdout=subprocess.PIPE) for _ in range(2)]
    try:
        for worker in workers:
            assert worker.stdout.readline().strip() == "ready"
        at = time.monotonic() + 0.3
        for worker in workers:
            worker.stdin.write(f"{at} 12\n")
            worker.stdin.flush()
        reports = [json.loads(worker.stdout.readline()) for worker in workers]
    finally:
        for worker in workers:
            worker.stdin.close()
            worker.wait(30)
    served = [served_by for report in reports for served_by, _ in report["results"]]
    assert served == ["primary"] * 24
    assert server.statuses("p") == {200: 24}  # alone each would send 8/s: 16/s together, and 429s
    assert most_in_window(arrivals(server, "p"), 1.0) <= 10
    assert all(report["status"]["rate_limit"]["shared"] and report["status"]["rate_limit"]["peers"] == 2
               for report in reports)


def test_with_redis_away_each_process_paces_at_its_share_and_rejoins(server, start_redis, namespace):
    redis = start_redis()
    config = fleet_config(server, redis.url, namespace, rpm=240, max_wait=0.3)  # 4/s for the fleet
    a, b = Router.from_dict(config), Router.from_dict(config)
    for router in (a, b, a):  # both take: Redis counts two peers, and says so to a
        assert router.complete(HI).route.served_by == "primary"
    redis.stop()
    served = []
    started = time.monotonic()
    while time.monotonic() - started < 2.0:
        served.append(a.complete(HI).route.served_by)
        time.sleep(0.05)
    status = a.status()["primary"]["rate_limit"]
    assert status["shared"] is False and status["peers"] == 2
    assert 3 <= served.count("primary") <= 6  # its share: 2/s, not the fleet's 4/s (8-9 in 2 s)
    start_redis(redis.port)
    time.sleep(1.1)  # the next use pings Redis again
    assert a.complete(HI).route.served_by == "primary"
    assert a.status()["primary"]["rate_limit"]["shared"] is True


def test_on_a_simulated_clock_a_wait_for_room_moves_the_clock_instead_of_sleeping(server, make_router):
    """`router advise --replay` runs the real walk on a simulated clock: a rate-limit wait (or
    a 429's pause) must pass in simulated time, not hold the replay for real seconds."""
    from router.clock import SimulatedClock, simulated

    router = make_router({"primary": "m1"}, defaults={"rate_limit": {"rpm": 60, "burst": 1, "max_wait": 5}})
    simulated_clock = SimulatedClock(1000.0)
    started = time.monotonic()
    with simulated(simulated_clock):
        served = [router.complete(HI).route.served_by for _ in range(3)]
    assert served == ["primary"] * 3 and server.count("m1") == 3
    assert 1.9 <= simulated_clock.now - 1000.0 <= 2.5  # two waits of ~1 s at 1 request per second
    assert time.monotonic() - started < 1.5  # not two real seconds
