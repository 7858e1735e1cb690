"""Each row of the outcome table, end to end: litellm over real sockets to the fault server.

What is asserted is what the server saw (request counts) and what the route recorded.
"""

from __future__ import annotations

import time

import pytest

from router import AllTargetsFailed
from router.errors import ContentRejected
from router.testing import faults

from .conftest import TEST_KEY, closed_port, remote

HI = [{"role": "user", "content": "hi"}]


def outcomes(resp_or_error) -> list[tuple[str, str]]:
    return [(a.target, a.outcome) for a in resp_or_error.route.attempts]


@pytest.mark.parametrize(
    "fault",
    [faults.status(503), faults.status(500), faults.status(502), faults.status(408), faults.reset(),
     faults.malformed()],
    ids=["503", "500", "502", "408", "reset", "malformed"],
)
def test_transient_is_retried_then_fails_over(server, make_router, fault):
    server.script("p", fault)
    router = make_router({"primary": "p", "secondary": "s"})
    resp = router.complete(HI)
    assert resp.route.served_by == "secondary"
    assert server.count("p") == 3  # retry.attempts, exactly: one HTTP request per attempt
    assert outcomes(resp) == [("primary", "transient")] * 3 + [("secondary", "ok")]
    assert all(a.waited_s > 0 for a in resp.route.attempts[1:3])  # backoff before each retry


def test_transient_recovers_on_the_same_target(server, make_router):
    server.script("p", faults.status(503), faults.ok("second time lucky"))
    resp = make_router({"primary": "p", "secondary": "s"}).complete(HI)
    assert resp.route.served_by == "primary"
    assert resp.choices[0].message.content == "second time lucky"
    assert server.count("p") == 2 and server.count("s") == 0


def test_silent_fails_over_at_once(server, make_router):
    server.script("p", faults.hang(5))
    router = make_router({"primary": remote(server, "p", timeout=0.3), "secondary": "s"})
    started = time.monotonic()
    resp = router.complete(HI)
    elapsed = time.monotonic() - started
    assert resp.route.served_by == "secondary"
    assert server.count("p") == 1
    assert outcomes(resp)[0] == ("primary", "silent")
    assert 0.25 < elapsed < 2.0


def test_silent_is_retried_with_retry_on_timeout(server, make_router):
    server.script("p", faults.hang(5))
    retry = {"attempts": 2, "min_wait": 0.01, "max_wait": 0.02, "retry_on_timeout": True}
    router = make_router({"primary": remote(server, "p", timeout=0.2, retry=retry), "secondary": "s"})
    resp = router.complete(HI)
    assert server.count("p") == 2
    assert outcomes(resp) == [("primary", "silent")] * 2 + [("secondary", "ok")]


def test_rate_limited_with_short_retry_after_waits_then_retries(server, make_router):
    server.script("p", faults.status(429, retry_after=0.4), faults.ok())
    resp = make_router({"primary": "p", "secondary": "s"}).complete(HI)
    assert resp.route.served_by == "primary"
    assert server.count("p") == 2
    first, second = server.requests("p")
    assert 0.38 <= second.t - first.t < 1.0
    assert resp.route.attempts[1].waited_s >= 0.4


def test_rate_limited_with_retry_after_ms(server, make_router):
    server.script("p", faults.status(429, retry_after_ms=150), faults.ok())
    resp = make_router({"primary": "p", "secondary": "s"}).complete(HI)
    assert resp.route.served_by == "primary" and server.count("p") == 2
    assert 0.15 <= resp.route.attempts[1].waited_s < 0.2


@pytest.mark.parametrize("retry_after", [30, None], ids=["too-long", "absent"])
def test_rate_limited_otherwise_fails_over_at_once(server, make_router, retry_after):
    server.script("p", faults.status(429, retry_after=retry_after))
    started = time.monotonic()
    resp = make_router({"primary": "p", "secondary": "s"}).complete(HI)
    assert time.monotonic() - started < 1.0
    assert server.count("p") == 1
    assert outcomes(resp) == [("primary", "rate_limited"), ("secondary", "ok")]
    assert resp.route.attempts[0].status == 429


def test_retry_after_beyond_the_deadline_fails_over_without_sleeping(server, make_router):
    server.script("p", faults.status(429, retry_after=1.5))
    router = make_router({"primary": "p", "secondary": "s"}, defaults={"deadline": 1.0})
    started = time.monotonic()
    resp = router.complete(HI)
    assert time.monotonic() - started < 0.5
    assert server.count("p") == 1 and resp.route.served_by == "secondary"


def test_unreachable_fails_over_at_once_without_backoff(server, make_router):
    dead = {"model": "openai/p", "api_base": f"http://127.0.0.1:{closed_port()}/v1", "api_key": TEST_KEY}
    router = make_router({"primary": dead, "secondary": "s"},
                         defaults={"retry": {"attempts": 3, "min_wait": 2, "max_wait": 4}})
    started = time.monotonic()
    resp = router.complete(HI)
    assert time.monotonic() - started < 1.5
    assert outcomes(resp) == [("primary", "unreachable"), ("secondary", "ok")]
    assert "Connection refused" in resp.route.attempts[0].detail


@pytest.mark.parametrize(
    ("fault", "outcome"),
    [(faults.status(400), "rejected"), (faults.status(422), "rejected"), (faults.status(401), "misconfigured"),
     (faults.status(403), "misconfigured"), (faults.status(404), "misconfigured")],
    ids=["400", "422", "401", "403", "404"],
)
def test_neutral_outcomes_are_tried_once_and_never_move_the_circuit(server, make_router, fault, outcome):
    router = make_router({"primary": "p", "secondary": "s"},
                         defaults={"retry": {"attempts": 1}, "breaker": {"fail_max": 3, "reset_timeout": 60}})
    server.script("p", faults.status(503), faults.status(503), fault)
    router.complete(HI)
    router.complete(HI)
    assert router.status()["primary"]["failures"] == 2
    for _ in range(3):  # three of them would trip it if they counted
        resp = router.complete(HI)
        assert outcomes(resp) == [("primary", outcome), ("secondary", "ok")]
    assert server.count("p") == 5
    status = router.status()["primary"]
    assert status["state"] == "closed" and status["failures"] == 2  # neither a failure nor a success


def test_misconfigured_target_is_flagged_loudly(server, make_router, caplog):
    server.script("p", faults.status(401))
    router = make_router({"primary": "p", "secondary": "s"})
    with caplog.at_level("ERROR", logger="router"):
        router.complete(HI)
    assert "misconfigured" in caplog.text and "'primary'" in caplog.text
    assert router.status()["primary"]["misconfigured"] == "Incorrect API key provided."


QUOTA_MESSAGE = "You exceeded your current quota, please check your plan and billing details."


@pytest.mark.parametrize("fault", [
    faults.status(402, message=QUOTA_MESSAGE),
    faults.status(429, message=QUOTA_MESSAGE, error_type="insufficient_quota", error_code="insufficient_quota"),
    faults.status(400, message=f"{QUOTA_MESSAGE} Your credit balance is too low to access the API."),
], ids=["402", "429-insufficient_quota", "400-credit-balance-too-low"])
def test_an_account_that_cannot_pay_is_misconfigured_and_skipped_without_requests(server, make_router, caplog, fault):
    server.script("p", fault)
    router = make_router({"primary": "p", "secondary": "s"}, defaults={"retry": {"attempts": 3}})
    with caplog.at_level("ERROR", logger="router"):
        first = router.complete(HI)
    assert [(a.target, a.outcome, a.status) for a in first.route.attempts] == [
        ("primary", "misconfigured", fault.code), ("secondary", "ok", None)]
    assert QUOTA_MESSAGE in first.route.attempts[0].detail  # the provider's own words
    assert "quota or billing" in caplog.text and "'primary'" in caplog.text
    status = router.status()["primary"]
    assert status["misconfigured"] == f"quota or billing: {fault.message}"
    assert status["state"] == "closed" and status["failures"] == 0 and 3500 < status["recheck_in_s"] <= 3600
    for _ in range(3):
        route = router.complete(HI).route
        assert route.attempts[0].outcome == "misconfigured" and route.served_by == "secondary"
        assert "quota or billing" in route.attempts[0].detail and "force_close" in route.attempts[0].detail
    assert server.count("p") == 1  # one request found out; none since
    router.force_close("primary")
    assert "misconfigured" not in router.status()["primary"]
    router.complete(HI)
    assert server.count("p") == 2


def test_an_unpaid_account_is_rechecked_after_quota_recheck_s(server, make_router):
    from router.clock import SimulatedClock, simulated
    from router.outcomes import QUOTA_RECHECK_S

    server.script("p", faults.status(402), faults.ok())
    router = make_router({"primary": "p", "secondary": "s"})
    with simulated(SimulatedClock(1000.0)) as clock:
        assert router.complete(HI).route.served_by == "secondary"
        clock.advance(QUOTA_RECHECK_S - 1)
        assert router.complete(HI).route.served_by == "secondary"
        assert server.count("p") == 1
        clock.advance(1)
        assert router.complete(HI).route.served_by == "primary"
    assert server.count("p") == 2


def test_rejected_everywhere_surfaces_the_providers_error(server, make_router):
    server.script("p", faults.status(400, message="Unsupported parameter: 'foo'"))
    server.script("s", faults.status(400, message="Unknown field foo"))
    with pytest.raises(AllTargetsFailed) as info:
        make_router({"primary": "p", "secondary": "s"}).complete(HI, foo=1)
    text = str(info.value)
    assert "primary: rejected (BadRequestError 400): Unsupported parameter: 'foo'" in text
    assert "secondary: rejected (BadRequestError 400): Unknown field foo" in text
    assert type(info.value.__cause__).__name__ == "BadRequestError"
    assert type(info.value.errors["primary"]).__name__ == "BadRequestError"


def test_context_too_long_skips_targets_known_to_be_too_small(server, make_router):
    server.script("p", faults.context_too_long())
    router = make_router({
        "primary": remote(server, "p", context_window=8192),
        "small": remote(server, "small", context_window=4096),
        "large": remote(server, "large", context_window=128000),
    })
    resp = router.complete(HI)
    assert outcomes(resp) == [("primary", "context_too_long"), ("small", "too_small"), ("large", "ok")]
    assert server.count("p") == 1 and server.count("small") == 0


def test_content_policy_propagates_by_default(server, make_router):
    server.script("p", faults.content_policy())
    with pytest.raises(ContentRejected, match="safety system") as info:
        make_router({"primary": "p", "secondary": "s"}).complete(HI)
    assert server.count("s") == 0
    assert info.value.target == "primary"


def test_content_policy_fails_over_when_configured(server, make_router):
    server.script("p", faults.content_policy())
    router = make_router({"primary": "p", "secondary": "s"},
                         chains={"default": {"targets": ["primary", "secondary"], "on_content_policy": "fail_over"}})
    resp = router.complete(HI)
    assert outcomes(resp) == [("primary", "content_policy"), ("secondary", "ok")]
