"""`Router.status()` says why a target is held back: calls in flight and queued, the rate
limiter's room, wait, learned limits and pause; the same as Prometheus gauges."""

from __future__ import annotations

import threading
import time

import pytest

from router import models
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


# -- the local tier: its model pool is its queue -------------------------------------------

# Greedy, with SmolLM2's end-of-turn tokens banned: the model writes until max_tokens, so a
# stream holds its model for as long as the test reads nothing, whatever the model would say.
NEVER_ENDING = {"temperature": 0, "seed": 7, "logit_bias": {0: -100, 1: -100, 2: -100}, "max_tokens": 400}


def local_router(make_router, **listeners):
    model = str(models.pull_default_model(quiet=True))
    local = {"provider": "llama_cpp", "model_path": model, "n_ctx": 1008, "n_threads": 1, "timeout": 60,
             "max_tokens": 400}  # an n_ctx of its own: a pool no other test uses
    return make_router({"local": local}, defaults={"deadline": 120}, **listeners)


def held_local_call(router, queued: int) -> tuple:
    """A stream that holds the pool's one model (after its first chunk the generation runs only
    as far as it is read) and `queued` calls waiting for that model."""
    stream = router.complete(HI, stream=True, **NEVER_ENDING)
    next(stream)
    waiting = [threading.Thread(target=router.complete, args=(HI,), kwargs={"max_tokens": 2})
               for _ in range(queued)]
    for call in waiting:
        call.start()
    return stream, waiting


def test_status_shows_the_local_calls_running_on_a_model_and_queued_for_one(make_router):
    router = local_router(make_router)
    status = router.status()["local"]
    assert (status["in_flight"], status["queued"], status["pool_size"]) == (0, 0, 1)
    stream, waiting = held_local_call(router, queued=2)
    wait_until(lambda: router.status()["local"]["queued"] == 2, timeout=60)
    status = router.status()["local"]
    assert (status["in_flight"], status["queued"], status["pool_size"]) == (1, 2, 1)
    stream.close()
    for call in waiting:
        call.join(60)
    assert not any(call.is_alive() for call in waiting)
    status = router.status()["local"]
    assert (status["in_flight"], status["queued"]) == (0, 0)


def test_prometheus_gauges_show_the_local_pool(make_router):
    prom = pytest.importorskip("prometheus_client")
    from router.observe.metrics import PrometheusListener

    registry = prom.CollectorRegistry()
    router = local_router(make_router, listeners=[PrometheusListener(registry)])

    def gauge(name: str) -> float | None:
        return registry.get_sample_value(f"router_{name}", {"target": "local"})

    assert gauge("pool_size") == 1
    stream, waiting = held_local_call(router, queued=1)
    wait_until(lambda: gauge("queued") == 1, timeout=60)
    assert gauge("in_flight") == 1
    stream.close()
    for call in waiting:
        call.join(60)
    assert gauge("in_flight") == 0 and gauge("queued") == 0
