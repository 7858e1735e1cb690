"""Reading how long a rate-limited provider asked us to wait, in every form providers use."""

from __future__ import annotations

import time
from email.utils import formatdate

import pytest

from router.limits.provider_headers import retry_after_seconds
from router.testing import faults

HI = [{"role": "user", "content": "hi"}]


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        ({"Retry-After": "7"}, 7.0),
        ({"retry-after": "0.5"}, 0.5),
        ({"retry-after-ms": "250"}, 0.25),
        ({"retry-after-ms": "250", "Retry-After": "9"}, 0.25),  # the finer one wins
        ({"x-ratelimit-remaining-requests": "0", "x-ratelimit-reset-requests": "1m30.5s"}, 90.5),
        ({"x-ratelimit-remaining-tokens": "0", "x-ratelimit-reset-tokens": "20ms"}, 0.02),
        ({"x-ratelimit-remaining-requests": "3", "x-ratelimit-reset-requests": "6m0s"}, None),  # not exhausted
        ({"Retry-After": "soon"}, None),
        ({"Retry-After": "-3"}, 0.0),
        ({"Retry-After": "1e308"}, 3600.0),  # MAX_PROVIDER_WAIT_S
        ({"x-ratelimit-remaining-requests": "0", "x-ratelimit-reset-requests": "99999999h"}, 3600.0),
        ({}, None),
    ],
)
def test_header_forms(headers, expected):
    assert retry_after_seconds(headers) == expected


def test_http_date_form():
    now = time.time()
    assert retry_after_seconds({"Retry-After": formatdate(now + 30, usegmt=True)}, now=now) == pytest.approx(30, abs=1)
    assert retry_after_seconds({"Retry-After": formatdate(now - 30, usegmt=True)}, now=now) == 0.0


def test_retry_after_as_an_http_date_over_http(server, make_router):
    server.script("p", faults.status(429, retry_after=formatdate(time.time() + 2, usegmt=True)), faults.ok())
    resp = make_router({"primary": "p", "secondary": "s"}).complete(HI)
    assert resp.route.served_by == "primary" and server.count("p") == 2
    assert 0.5 < resp.route.attempts[1].waited_s <= 2.3  # an HTTP date has whole seconds


def test_a_long_retry_after_takes_the_target_out_of_rotation(server, make_router):
    server.script("p", faults.status(429, retry_after=30))
    router = make_router({"primary": "p", "secondary": "s"})
    router.complete(HI)
    status = router.status()["primary"]
    assert status["state"] == "open" and 28 < status["retry_in_s"] <= 30
    for _ in range(3):
        assert router.complete(HI).route.attempts[0].outcome == "circuit_open"
    assert server.count("p") == 1
