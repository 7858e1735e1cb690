"""The chain walk over real HTTP: circuits, deadline, failover, route metadata, bad requests."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import time

import pytest

import router
from router import AllTargetsFailed, InvalidRequest, Router
from router.testing import faults
from router.targets import Target

from .conftest import TEST_KEY, remote

HI = [{"role": "user", "content": "hi"}]
ONE_TRY = {"attempts": 1, "min_wait": 0.01, "max_wait": 0.01}


def test_answer_carries_model_usage_and_route_of_the_answering_call(server, make_router):
    server.script("p", faults.status(503))
    server.script("s", faults.ok("four words right here"))
    resp = make_router({"primary": "p", "secondary": "s"}).complete(
        [{"role": "user", "content": "one two three"}], max_tokens=16)
    assert resp.choices[0].message.content == "four words right here"
    assert resp.model == "s"
    assert (resp.usage.prompt_tokens, resp.usage.completion_tokens, resp.usage.total_tokens) == (3, 4, 7)
    assert resp.route.served_by == "secondary" and resp.route.degraded is False
    assert [a.outcome for a in resp.route.attempts] == ["transient"] * 3 + ["ok"]
    assert resp.route.attempts[0].error == "ServiceUnavailableError" and resp.route.attempts[0].status == 503
    assert all(a.latency_s > 0 for a in resp.route.attempts)
    assert server.requests("s")[0].body["max_tokens"] == 16  # extra kwargs pass through


def test_degraded_target_marks_the_answer(server, make_router):
    server.script("p", faults.status(500))
    router = make_router({"primary": remote(server, "p", retry=ONE_TRY),
                          "backup": remote(server, "b", degraded=True)})
    assert router.complete(HI).route.degraded is True


def test_breaker_full_cycle_over_http(server, make_router):
    router = make_router({"primary": remote(server, "p", retry=ONE_TRY), "secondary": "s"},
                         defaults={"breaker": {"fail_max": 3, "reset_timeout": 0.5}})
    server.script("p", faults.status(503))
    for _ in range(3):
        router.complete(HI)
    assert router.status()["primary"]["state"] == "open"
    assert server.count("p") == 3

    for _ in range(5):  # open: skipped with zero requests
        resp = router.complete(HI)
        assert resp.route.attempts[0].outcome == "circuit_open"
    assert server.count("p") == 3

    time.sleep(0.55)
    assert router.status()["primary"]["state"] == "half_open"
    resp = router.complete(HI)  # failed probe: open again
    assert server.count("p") == 4 and router.status()["primary"]["state"] == "open"

    time.sleep(0.55)
    server.script("p", faults.ok("back"))
    resp = router.complete(HI)  # successful probe closes it
    assert resp.route.served_by == "primary"
    status = router.status()["primary"]
    assert (status["state"], status["failures"]) == ("closed", 0)
    assert status["retry_budget"] == 6.1  # 10 tokens, 4 failures drained 4, the success put back 0.1


def test_open_circuit_is_skipped_fast_with_zero_requests(server, make_router):
    router = make_router({"primary": "p", "secondary": "s"})
    router.force_open("primary")
    started = time.perf_counter()
    for _ in range(100):
        router.complete(HI)
    assert server.count("p") == 0 and server.count("s") == 100
    assert time.perf_counter() - started < 100 * 0.05


def test_circuit_opening_mid_retry_stops_the_retries(server, make_router):
    server.script("p", faults.status(503))
    router = make_router({"primary": remote(server, "p", retry={"attempts": 5}), "secondary": "s"},
                         defaults={"breaker": {"fail_max": 2, "reset_timeout": 60}})
    slept: list[float] = []
    router._sleep = slept.append
    resp = router.complete(HI)
    assert server.count("p") == 2 and len(slept) == 1  # no wait for a retry the circuit would refuse
    assert [a.outcome for a in resp.route.attempts] == ["transient", "transient", "ok"]
    assert router.status()["primary"]["state"] == "open"


def test_no_sleep_after_the_last_attempt(server, make_router):
    slept: list[float] = []
    server.script("p", faults.status(503))
    router = make_router({"primary": remote(server, "p", retry={"attempts": 4}), "secondary": "s"},
                         sleep=slept.append)
    router.complete(HI)
    assert server.count("p") == 4 and len(slept) == 3


def test_deadline_bounds_the_whole_call(server, make_router):
    server.script("p", faults.hang(10))
    server.script("s", faults.hang(10))
    router = make_router({"primary": remote(server, "p", timeout=0.6), "secondary": remote(server, "s", timeout=5)})
    started = time.monotonic()
    with pytest.raises(AllTargetsFailed) as info:
        router.complete(HI, deadline=1.5)
    elapsed = time.monotonic() - started
    assert 1.5 * 0.9 <= elapsed <= 1.5 * 1.1
    assert [a.outcome for a in info.value.attempts] == ["silent", "deadline"]
    # the secondary's attempt was cut by the deadline: no verdict against it
    assert router.status()["secondary"]["failures"] == 0 and router.status()["primary"]["failures"] == 1


def test_deadline_bounds_backoff_waits(server, make_router):
    server.script("p", faults.status(503))
    server.script("s", faults.hang(10))
    slept: list[float] = []

    def sleep(seconds: float) -> None:
        slept.append(seconds)
        time.sleep(seconds)

    router = make_router({"primary": remote(server, "p", retry={"attempts": 50, "min_wait": 0.3, "max_wait": 0.3}),
                          "secondary": remote(server, "s")}, sleep=sleep)
    started = time.monotonic()
    with pytest.raises(AllTargetsFailed) as info:
        router.complete(HI, deadline=1.0)
    assert 0.9 <= time.monotonic() - started <= 1.1
    assert sum(slept) < 1.0 and server.count("p") == len(slept) + 1 < 50
    assert info.value.attempts[-1].target == "secondary"


def test_all_targets_failed_names_each_target_and_why(server, make_router):
    server.script("p", faults.status(503, message="upstream overloaded"))
    server.script("s", faults.status(401))
    router = make_router({"primary": "p", "secondary": "s", "tertiary": remote(server, "t", api_key="${NOT_SET_X}")})
    with pytest.raises(AllTargetsFailed) as info:
        router.complete(HI)
    text = str(info.value)
    assert "primary: transient (ServiceUnavailableError 503, 3 attempts): upstream overloaded" in text
    assert "secondary: misconfigured (AuthenticationError 401): Incorrect API key provided." in text
    assert "tertiary: disabled: environment variable NOT_SET_X is not set" in text
    assert len(info.value.attempts) == 5
    assert type(info.value.__cause__).__name__ == "AuthenticationError"


def test_static_reply_when_everything_fails(server, make_router):
    server.script("p", faults.status(503))
    router = make_router({"primary": "p"}, chains={
        "default": {"targets": ["primary"], "static_reply": "Service temporarily unavailable."}})
    resp = router.complete(HI)
    assert resp.choices[0].message.content == "Service temporarily unavailable."
    assert resp.route.served_by == "static" and resp.route.degraded
    assert [a.outcome for a in resp.route.attempts] == ["transient"] * 3


@pytest.mark.parametrize(
    ("messages", "kwargs", "fragment"),
    [
        ([], {}, "non-empty list"),
        ("hi", {}, "non-empty list"),
        ([{"content": "hi"}], {}, "role"),
        ([{"role": "user"}], {}, "content is missing"),
        ([{"role": "user", "content": 3}], {}, "string or a list"),
        (HI, {"max_tokens": 0}, "max_tokens"),
        (HI, {"max_tokens": "ten"}, "max_tokens"),
        (HI, {"api_key": "sk-x"}, "cannot be passed per call"),
        (HI, {"chain": "nope"}, "unknown chain 'nope'"),
        (HI, {"deadline": -1}, "deadline"),
        (HI, {"stream": "yes"}, "stream must be true or false"),
    ],
)
def test_bad_requests_are_refused_before_any_network_call(server, make_router, messages, kwargs, fragment):
    router = make_router({"primary": "p"})
    with pytest.raises(InvalidRequest, match=fragment):
        router.complete(messages, **kwargs)
    assert server.count() == 0
    assert router.complete(HI).route.served_by == "primary"  # nothing was corrupted


def test_secrets_stay_out_of_routes_errors_and_reprs(server, make_router):
    server.script("p", faults.status(401, message=f"Incorrect API key provided: {TEST_KEY}"))
    server.script("s", faults.status(500, message=f"proxy failed for https://x.test/v1?key={TEST_KEY}"))
    router = make_router({"primary": "p", "secondary": "s"})
    with pytest.raises(AllTargetsFailed) as info:
        router.complete(HI)
    seen = [str(info.value), repr(info.value.attempts), repr(router), repr(router.config), str(router.status())]
    assert not [s for s in seen if TEST_KEY in s]
    assert "Incorrect API key provided: ***" in str(info.value)


def test_module_level_complete_uses_router_config(server, tmp_path, monkeypatch):
    config = tmp_path / "custom.yaml"
    config.write_text(textwrap.dedent(f"""
        targets:
          only: {{model: openai/m, api_base: "{server.url}", api_key: sk-test-abcdef}}
        chains:
          default: [only]
    """))
    monkeypatch.setenv("ROUTER_CONFIG", str(config))
    monkeypatch.setattr("router.core._default", None)
    assert router.complete(HI).route.served_by == "only"
    assert set(router.status()) == {"only"}


def test_import_is_fast_offline_and_does_not_load_litellm():
    code = ("import sys, time; t = time.perf_counter(); import router; d = time.perf_counter() - t; "
            "import json; heavy = [m for m in ('litellm', 'openai', 'httpx', 'llama_cpp') if m in sys.modules]; "
            "from openai.types.chat import ChatCompletion; "  # the answer types load on first use
            "print(json.dumps([d, heavy, issubclass(router.Response, ChatCompletion)]))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         env={"PATH": "", "PYTHONPATH": ":".join(sys.path)})
    seconds, heavy, sdk_type = json.loads(out.stdout)
    assert heavy == [] and sdk_type
    assert seconds < 1.0  # 0.1-0.2 s measured here; generous for a loaded machine


def test_router_reused_across_threads_after_failures(server, make_router):
    """A failure inside one call never corrupts the router for the next."""
    import threading

    server.script("p", faults.flaky(0.5, faults.status(503), seed=7))
    router: Router = make_router({"primary": "p", "secondary": "s"},
                                 defaults={"breaker": {"fail_max": 1000, "reset_timeout": 60}})
    answers: list[str] = []

    def work():
        for _ in range(10):
            answers.append(router.complete(HI).route.served_by)

    threads = [threading.Thread(target=work) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(answers) == 40 and set(answers) <= {"primary", "secondary"}
    assert server.count("p") + server.count("s") >= 40


def test_keyboard_interrupt_propagates_and_counts_against_nothing(server, make_router):
    router = make_router({"primary": remote(server, "p", max_concurrency=1), "secondary": "s"})

    class Interrupted(Target):  # our own target interface; litellm is not involved
        config = router.config.targets["primary"]

        def complete(self, request, *, timeout, note):
            raise KeyboardInterrupt

    real = router._targets["primary"]
    router._targets["primary"] = Interrupted()
    with pytest.raises(KeyboardInterrupt):
        router.complete(HI)
    assert server.count("s") == 0  # not failed over: the caller is gone
    router._targets["primary"] = real
    assert router.complete(HI).route.served_by == "primary"  # its bulkhead slot came back
    assert router.status()["primary"] == {"state": "closed", "failures": 0, "retry_budget": 10, "in_flight": 0,
                                          "queued": 0}
