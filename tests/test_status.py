"""`Router.status()` says why a target is held back: calls in flight and queued, the rate
limiter's room, wait, learned limits and pause; the same as Prometheus gauges."""

from __future__ import annotations

import threading
import time

import pytest

from router.errors import AllTargetsFailed
from router.testing import faults

from .conftest import remote

HI = [{"role": "user", "content": "hi"}]


def wait_until(condition, timeout: float = 5.0) -> None:
    end = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < end, "timed out waiting"
        time.sleep(0.01)


def test_status_shows_the_calls_in_flight_and_queued_at_the_bulkhead(server, make_router):
    server.script("p", faults.ok(delay=1.0))
    router = make_router({"primary": remote(server, "p", max_concurrency=1, queue_timeout=5)})
    calls = [threading.Thread(target=router.complete, args=(HI,)) for _ in range(2)]
    for call in calls:
        call.start()
    wait_until(lambda: router.status()["primary"]["queued"] == 1)
    status = router.status()["primary"]
    assert (status["in_flight"], status["queued"]) == (1, 1)
    for call in calls:
        call.join(10)
    status = router.status()["primary"]
    assert (status["in_flight"], status["queued"]) == (0, 0)


def test_status_shows_the_rate_limiters_wait_learned_limits_and_pause(server, make_router):
    server.script("p", faults.ok(headers={"x-ratelimit-limit-requests": "20", "x-ratelimit-remaining-requests": "7",
                                          "x-ratelimit-reset-requests": "2s"}),
                  faults.status(429, retry_after=5))
    router = make_router({"primary": "p", "secondary": "s"},
                         defaults={"retry": {"attempts": 1}, "rate_limit": {"max_wait": 0}})
    router.complete(HI)
    limiter = router.status()["primary"]["rate_limit"]
    assert limiter["learned"]["requests"]["limit"] == 20 and 5 <= limiter["learned"]["requests"]["remaining"] <= 7
    assert limiter["wait_s"] == 0
    router.complete(HI)  # the 429
    limiter = router.status()["primary"]["rate_limit"]
    assert 4 < limiter["paused_s"] <= 5 and 4 < limiter["wait_s"] <= 5


def test_status_shows_the_wait_for_room_under_a_configured_rate(server, make_router):
    router = make_router({"primary": "p"}, defaults={"rate_limit": {"rpm": 6, "max_wait": 0}})  # one per 10 s
    router.complete(HI)
    limiter = router.status()["primary"]["rate_limit"]
    assert limiter["room"]["requests"] < 1 and 9 < limiter["wait_s"] <= 10


def test_prometheus_gauges_show_what_status_shows(server, make_router):
    prom = pytest.importorskip("prometheus_client")
    from router.observe.metrics import PrometheusListener

    registry = prom.CollectorRegistry()
    server.script("p", faults.ok(headers={"x-ratelimit-limit-requests": "20", "x-ratelimit-remaining-requests": "7",
                                          "x-ratelimit-reset-requests": "2s"}),
                  faults.status(429, retry_after=5), faults.ok(delay=1.0))
    server.script("s", faults.status(402))
    router = make_router({"primary": remote(server, "p", max_concurrency=1, queue_timeout=5), "secondary": "s"},
                         defaults={"retry": {"attempts": 1}, "rate_limit": {"rpm": 600, "max_wait": 2}},
                         listeners=[PrometheusListener(registry)])
    router.complete(HI)
    with pytest.raises(AllTargetsFailed):
        router.complete(HI)  # the 429: primary paused; the secondary cannot pay

    def gauge(name: str, **labels: str) -> float | None:
        return registry.get_sample_value(f"router_{name}", {"target": "primary", **labels})

    assert gauge("learned_remaining", limit="requests") <= 7
    assert 0 < gauge("learned_reset_seconds", limit="requests") <= 2
    assert 4 < gauge("paused_seconds") <= 5 and 4 < gauge("rate_limit_next_room_seconds") <= 5
    assert 0 <= gauge("rate_limit_room", limit="requests") <= 1
    assert registry.get_sample_value("router_misconfigured", {"target": "secondary"}) == 1
    assert gauge("misconfigured") == 0
    router.force_close("primary")
    calls = [threading.Thread(target=router.complete, args=(HI,), kwargs={"chain": "default"}) for _ in range(2)]
    for call in calls:
        call.start()
    wait_until(lambda: gauge("queued") == 1)
    assert gauge("in_flight") == 1
    for call in calls:
        call.join(10)
    assert gauge("in_flight") == 0 and gauge("queued") == 0
