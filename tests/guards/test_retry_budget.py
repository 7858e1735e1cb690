"""The retry budget: a token bucket per target that stops retries, never first attempts
or failover, during an outage; in one process or shared by a fleet through Redis."""

from __future__ import annotations

import logging
from typing import Any

import pytest

from router import Router
from router.guards.retry_budget import RetryBudget, UnlimitedBudget
from router.config.schema import RetryBudgetPolicy
from router.state import MemoryState, RedisState
from router.testing import faults

from ..conftest import FAST_RETRY, TEST_KEY

pytest_plugins = ["tests.redis_server"]

HI = [{"role": "user", "content": "hi"}]


def test_failures_drain_successes_refill_retries_only_above_half():
    budget = RetryBudget(RetryBudgetPolicy(max_tokens=10, token_ratio=0.5))
    for _ in range(4):
        budget.failed()
    assert budget.tokens == 6 and budget.allow_retry()
    budget.failed()
    assert budget.tokens == 5 and not budget.allow_retry()  # half is not enough
    for _ in range(20):
        budget.failed()
    assert budget.tokens == 0
    budget.succeeded()
    budget.succeeded()
    assert budget.tokens == 1 and not budget.allow_retry()
    for _ in range(100):
        budget.succeeded()
    assert budget.tokens == 10 and budget.allow_retry()  # never above max_tokens


def test_a_disabled_budget_allows_every_retry():
    state = MemoryState()
    budget = state.budget("t", RetryBudgetPolicy(enabled=False))
    assert isinstance(budget, UnlimitedBudget)
    for _ in range(100):
        budget.failed()
    assert budget.allow_retry()


def test_the_redis_bucket_is_one_for_every_instance(redis_url, namespace):
    policy = RetryBudgetPolicy(max_tokens=10, token_ratio=0.1)
    a, b = (RedisState(redis_url, namespace).budget("t", policy) for _ in range(2))
    for _ in range(5):
        a.failed()
    assert not b.allow_retry() and b.tokens == 5
    for _ in range(10):  # ten refills of 0.1: written once, as one whole token
        b.succeeded()
    assert a.allow_retry() and a.tokens == pytest.approx(6)
    assert RedisState(redis_url, "another-namespace").budget("t", policy).allow_retry()


def test_the_budget_goes_on_in_this_process_while_redis_is_away(start_redis, namespace, caplog):
    server = start_redis()
    budget = RedisState(server.url, namespace).budget("t", RetryBudgetPolicy(max_tokens=10))
    for _ in range(4):
        budget.failed()
    server.stop()
    with caplog.at_level(logging.WARNING, logger="router"):
        assert budget.allow_retry()  # 6 left, as Redis said last
        budget.failed()
        assert not budget.allow_retry()
    assert "redis" in caplog.text


# -- through a Router: exhaustion stops retries, not failover ---------------------------


def config(server, **state: Any) -> dict[str, Any]:
    return {
        "defaults": {"timeout": 5, "deadline": 30, "retry": {**FAST_RETRY, "attempts": 3},
                     "breaker": {"fail_max": 100, "reset_timeout": 60}},  # the circuit never opens here
        "targets": {name: {"model": f"openai/{model}", "api_base": server.url, "api_key": TEST_KEY}
                    for name, model in (("primary", "p"), ("secondary", "s"))},
        "chains": {"default": ["primary", "secondary"]},
        **({"state": state} if state else {}),
    }


def budgeted_router(data: dict[str, Any]) -> Router:
    return Router.from_dict(data, sleep=lambda s: None)


def primary_requests_per_call(server, router: Router, calls: int) -> list[int]:
    counts = []
    for _ in range(calls):
        before = server.count("p")
        assert router.complete(HI).route.served_by == "secondary"
        counts.append(server.count("p") - before)
    return counts


@pytest.mark.parametrize("backend", ["memory", "redis"])
def test_budget_exhaustion_stops_retries_but_not_failover(server, backend, redis_url, namespace):
    server.script("p", faults.status(503))
    state = {"backend": "redis", "url": redis_url, "namespace": namespace} if backend == "redis" else {}
    router = budgeted_router(config(server, **state))
    # 10 tokens: 3 failures leave 7; the next call's first failure leaves 6 (> 5: one retry),
    # its retry leaves 5, and from then on no retry is allowed
    assert primary_requests_per_call(server, router, 6) == [3, 2, 1, 1, 1, 1]
    assert server.count("s") == 6


def test_a_budget_drained_by_one_router_stops_the_retries_of_another(server, redis_url, namespace):
    server.script("p", faults.status(503))
    state = {"backend": "redis", "url": redis_url, "namespace": namespace}
    first, second = budgeted_router(config(server, **state)), budgeted_router(config(server, **state))
    assert primary_requests_per_call(server, first, 3) == [3, 2, 1]
    assert primary_requests_per_call(server, second, 2) == [1, 1]
    alone = budgeted_router(config(server))  # memory state: a bucket of its own, still full
    assert primary_requests_per_call(server, alone, 1) == [3]


def test_a_disabled_budget_retries_every_time(server):
    server.script("p", faults.status(503))
    data = config(server)
    data["defaults"]["retry"]["budget"] = {"enabled": False}
    router = budgeted_router(data)
    assert primary_requests_per_call(server, router, 5) == [3] * 5


def test_successes_refill_the_budget(server):
    server.script("p", faults.status(503))
    data = config(server)
    data["defaults"]["retry"]["budget"] = {"max_tokens": 4, "token_ratio": 1}
    router = budgeted_router(data)
    assert primary_requests_per_call(server, router, 2) == [2, 1]  # 4 -> 3 -> 2 (no retry at half) -> 1
    server.script("p", faults.ok())
    for _ in range(3):
        assert router.complete(HI).route.served_by == "primary"  # 1 -> 4
    server.script("p", faults.status(503))
    assert primary_requests_per_call(server, router, 1) == [2]
