"""The chain walk's decisions, without a network: the outcome table row by row, retry and
wait decisions under a deadline, skip rules, and the sync/async shells driving fake
targets. The HTTP tests (test_router.py, test_outcomes.py, ...) cover the same rules end
to end; these pin each rule down where it is decided."""

from __future__ import annotations

import asyncio
import threading
import time
from typing import Any

import pytest

from router.guards.bulkhead import Bulkhead
from router.config import config_from_dict
from router.deadline import Deadline
from router.errors import ContentRejected
from router.observe.events import Events
from router.state import build_guard
from router.outcomes import HANDLING, Failure, Outcome, TargetFailure, classify, handle
from router.observe.redact import Redactor
from router.request import build_request
from router.response import Response, text_response
from router.state import MemoryState
from router.targets import Target, build_target
from router.walk import Crew, Walk, chain_async, chain_sync, walk_async, walk_sync

HI = [{"role": "user", "content": "hi"}]
NOWHERE = "http://127.0.0.1:9/v1"  # never contacted: no test here makes a request


def remote(**extra: Any) -> dict[str, Any]:
    return {"model": "openai/m", "api_base": NOWHERE, "api_key": "sk-test", **extra}


def make_walk(targets: dict[str, Any], *, deadline: float = 30.0, offline: bool = False,
              chain: dict[str, Any] | None = None, defaults: dict[str, Any] | None = None,
              events: list | None = None, slept: list | None = None, swap: dict[str, Any] | None = None) -> Walk:
    config = config_from_dict({"defaults": defaults or {}, "targets": targets,
                               "chains": {"default": {"targets": list(targets), **(chain or {})}}})
    state = MemoryState()
    guards = {name: build_guard(t, state) for name, t in config.targets.items()}
    built = {name: build_target(t) for name, t in config.targets.items() if not t.disabled}
    built.update(swap or {})

    async def async_sleep(seconds: float) -> None:
        (slept if slept is not None else []).append(seconds)

    crew = Crew(built, guards, Events([events.append] if events is not None else []), Redactor(["sk-test"]),
                (slept.append if slept is not None else lambda s: None), async_sleep, offline)
    return Walk(config.chains["default"], build_request(HI, {}), Deadline(deadline), crew)


def first_try(walk: Walk, name: str | None = None):
    """Admit the first attempt at a target, as a shell would once it holds a slot."""
    member = next(m for m in walk.members() if name is None or m.config.name == name)
    tries = walk.tries(member)
    tries.admit(member.guard.bulkhead.acquire(walk.deadline))
    return member, tries


class StatusError(Exception):
    """Shaped like a provider SDK's HTTP error, as `classify` reads them (by attribute)."""

    def __init__(self, status: int, message: str = "", headers: dict[str, str] | None = None) -> None:
        super().__init__(message or f"status {status}")
        self.status_code = status
        self.headers = headers or {}


# -- the outcome table, row by row --------------------------------------------------------

POLICY = config_from_dict({"targets": {"p": remote()}, "chains": {"default": ["p"]}}).targets["p"].retry

TABLE = {  # outcome: (retry, counts, fail_over), as the README's table says
    Outcome.TRANSIENT: (True, True, True),
    Outcome.SILENT: (False, True, True),
    Outcome.RATE_LIMITED: (False, True, True),  # no Retry-After: no retry
    Outcome.UNREACHABLE: (False, True, True),
    Outcome.REJECTED: (False, False, True),
    Outcome.CONTEXT_TOO_LONG: (False, False, True),
    Outcome.CONTENT_POLICY: (False, False, False),
    Outcome.MISCONFIGURED: (False, False, True),
    Outcome.NO_CAPACITY: (False, False, True),
    Outcome.THROTTLED: (False, False, True),
    Outcome.CANCELLED: (False, False, False),
    Outcome.DEADLINE: (False, False, True),
    Outcome.UNSENT: (False, False, True),  # failed inside our process before a request left it
    Outcome.UNSUPPORTED: (False, False, True),  # the target cannot serve this request (tools, locally)
    Outcome.CACHE_MISS: (False, False, True),
}


@pytest.mark.parametrize("outcome", list(TABLE), ids=lambda o: o.value)
def test_each_row_of_the_outcome_table_says_retry_count_and_fail_over(outcome):
    handling = handle(Failure(outcome, RuntimeError()), POLICY)
    assert (handling.retry, handling.counts, handling.fail_over) == TABLE[outcome]
    assert handling.open_for is None
    assert set(HANDLING) == set(TABLE)


def test_a_timeout_is_retried_only_with_retry_on_timeout():
    silent = Failure(Outcome.SILENT, TimeoutError())
    assert not handle(silent, POLICY).retry
    config = config_from_dict({"defaults": {"retry": {"retry_on_timeout": True}}, "targets": {"p": remote()},
                               "chains": {"default": ["p"]}})
    assert handle(silent, config.targets["p"].retry).retry


def test_a_429_is_retried_when_its_retry_after_is_short_and_opens_the_circuit_when_long():
    short = classify(StatusError(429, headers={"retry-after": "3"}))
    long = classify(StatusError(429, headers={"retry-after": "120"}))
    assert short.outcome is Outcome.RATE_LIMITED and short.retry_after == 3
    assert handle(short, POLICY).retry and handle(short, POLICY).open_for is None
    assert not handle(long, POLICY).retry and handle(long, POLICY).open_for == 120


def test_content_policy_fails_over_only_when_the_chain_says_so():
    config = config_from_dict({"targets": {"p": remote()}, "chains": {
        "strict": ["p"], "lenient": {"targets": ["p"], "on_content_policy": "fail_over"}}})
    refused = Failure(Outcome.CONTENT_POLICY, RuntimeError())
    assert not handle(refused, POLICY, config.chains["strict"]).fail_over
    assert handle(refused, POLICY, config.chains["lenient"]).fail_over


def test_a_timeout_the_deadline_cut_short_is_the_deadlines_not_the_targets():
    assert classify(TimeoutError(), timeout_cut=True).outcome is Outcome.DEADLINE
    assert classify(TimeoutError()).outcome is Outcome.SILENT


# -- one attempt's failure, through the core ----------------------------------------------

def test_a_transient_failure_counts_and_is_retried_after_a_full_jitter_wait():
    events: list = []
    walk = make_walk({"p": remote(retry={"min_wait": 1, "max_wait": 8})}, events=events)
    member, tries = first_try(walk)
    wait = tries.failed(StatusError(503))
    assert wait is not None and 0 <= wait <= 1  # the first backoff window is [0, min_wait]
    assert member.guard.status()["failures"] == 1
    assert [a.outcome for a in walk.route.attempts] == ["transient"]
    assert [e.name for e in events] == ["attempt", "retry"]


def test_a_rejected_request_counts_nothing_and_fails_over_at_once():
    events: list = []
    walk = make_walk({"p": remote(), "s": remote()}, events=events)
    member, tries = first_try(walk)
    assert tries.failed(StatusError(400, "bad parameter")) is None
    assert member.guard.status()["failures"] == 0
    assert type(walk.errors["p"]).__name__ == "StatusError"
    assert [(e.name, e.outcome) for e in events] == [("attempt", "rejected"), ("failover", "rejected")]


def test_a_long_retry_after_opens_the_circuit_for_that_long():
    walk = make_walk({"p": remote()})
    member, tries = first_try(walk)
    assert tries.failed(StatusError(429, headers={"retry-after": "120"})) is None
    status = member.guard.status()
    assert status["state"] == "open" and 110 < status["retry_in_s"] <= 120


def test_content_policy_raises_content_rejected_without_failing_over():
    walk = make_walk({"p": remote(), "s": remote()})
    _, tries = first_try(walk)
    with pytest.raises(ContentRejected):
        tries.failed(StatusError(400, "flagged by our safety system"))
    assert [a.target for a in walk.route.attempts] == ["p"]


def test_cancellation_is_reraised_untouched_and_counts_nothing():
    walk = make_walk({"p": remote(max_concurrency=1)})
    member, tries = first_try(walk)
    interrupt = KeyboardInterrupt()
    with pytest.raises(KeyboardInterrupt) as caught:
        tries.failed(interrupt)
    assert caught.value is interrupt
    assert member.guard.status()["failures"] == 0 and member.guard.bulkhead.in_flight == 0


def test_a_401_flags_the_target_misconfigured():
    walk = make_walk({"p": remote(), "s": remote()})
    member, tries = first_try(walk)
    assert tries.failed(StatusError(401, "Incorrect API key provided: sk-test")) is None
    assert member.guard.misconfigured == "Incorrect API key provided: ***"


def test_a_full_bulkhead_is_no_capacity_and_fails_over():
    walk = make_walk({"p": remote(max_concurrency=1), "s": remote()})
    member = next(walk.members())
    assert member.guard.bulkhead.acquire(walk.deadline)  # someone else holds the only slot
    tries = walk.tries(member)
    wait = None
    try:
        tries.admit(member.guard.bulkhead.acquire(walk.deadline))
    except Exception as exc:
        wait = tries.failed(exc)
    assert wait is None
    assert [(a.outcome, a.detail) for a in walk.route.attempts] == [
        ("no_capacity", "1 calls in flight (max_concurrency=1, queue_timeout=0 s)")]


# -- retry and wait decisions under a deadline --------------------------------------------

def test_no_retry_whose_wait_would_not_leave_time_before_the_deadline():
    walk = make_walk({"p": remote()}, deadline=2.0)
    _, tries = first_try(walk)
    assert tries.failed(StatusError(429, headers={"retry-after": "3"})) is None  # 3 s > 2 s left


def test_a_short_retry_after_is_waited_for_with_a_little_jitter():
    walk = make_walk({"p": remote()})
    _, tries = first_try(walk)
    wait = tries.failed(StatusError(429, headers={"retry-after": "3"}))
    assert wait is not None and 3 <= wait <= 3.3


def test_retries_stop_after_the_configured_attempts():
    walk = make_walk({"p": remote(retry={"attempts": 2, "min_wait": 0.01})})
    member, tries = first_try(walk)
    assert tries.failed(StatusError(503)) is not None
    tries.admit(member.guard.bulkhead.acquire(walk.deadline))
    assert tries.failed(StatusError(503)) is None
    assert [a.outcome for a in walk.route.attempts] == ["transient", "transient"]


def test_no_retry_once_the_circuit_has_opened():
    walk = make_walk({"p": remote(retry={"attempts": 5})}, defaults={"breaker": {"fail_max": 1}})
    _, tries = first_try(walk)
    assert tries.failed(StatusError(503)) is None  # that failure tripped it: no wait for a refusal


def test_no_retry_once_the_retry_budget_is_spent():
    events: list = []
    walk = make_walk({"p": remote(retry={"budget": {"max_tokens": 2}})}, events=events)
    _, tries = first_try(walk)
    assert tries.failed(StatusError(503)) is None  # 1 of 2 tokens left: not more than half
    assert "budget_exhausted" in [e.name for e in events]


def test_the_attempt_timeout_is_cut_to_exactly_what_the_deadline_leaves():
    walk = make_walk({"p": remote(timeout=30)}, deadline=5.5)
    config = walk.crew.guards["p"].config
    assert 5.4 < walk.attempt_timeout(config) <= 5.5  # never rounded down: that gave up early
    walk.deadline = Deadline(0.55)
    assert 0.45 < walk.attempt_timeout(config) <= 0.55
    walk.deadline = Deadline(100)
    assert walk.attempt_timeout(config) == 30
    walk.deadline = Deadline(-1)
    assert walk.attempt_timeout(config) == 0.0


# -- skip rules ---------------------------------------------------------------------------

def test_disabled_offline_deadline_and_open_circuit_are_skipped_without_a_request(monkeypatch):
    monkeypatch.delenv("NO_SUCH_KEY", raising=False)
    walk = make_walk({"p": remote(api_key="${NO_SUCH_KEY}"), "s": remote()}, offline=True)
    assert list(walk.members()) == []
    assert [(a.target, a.outcome) for a in walk.route.attempts] == [("p", "disabled"), ("s", "offline")]

    walk = make_walk({"p": remote()}, deadline=0.0)
    assert list(walk.members()) == [] and walk.route.attempts[0].outcome == "deadline"

    walk = make_walk({"p": remote()})
    walk.crew.guards["p"].force_open()
    member = next(walk.members())
    tries = walk.tries(member)
    with pytest.raises(Exception) as refused:
        tries.admit(member.guard.bulkhead.acquire(walk.deadline))
    assert tries.failed(refused.value) is None
    assert walk.route.attempts[0].outcome == "circuit_open" and member.guard.bulkhead.in_flight == 0


def test_targets_not_larger_than_one_that_overflowed_are_skipped():
    walk = make_walk({"big": remote(context_window=8000), "same": remote(context_window=8000),
                      "bigger": remote(context_window=32000)})
    members = walk.members()
    member = next(members)
    tries = walk.tries(member)
    tries.admit(member.guard.bulkhead.acquire(walk.deadline))
    assert tries.failed(StatusError(400, "This model's maximum context length is 8000 tokens")) is None
    assert next(members).config.name == "bigger"
    assert [a.outcome for a in walk.route.attempts] == ["context_too_long", "too_small"]


# -- the shells drive the core: same decisions, sync and async -----------------------------

class Scripted(Target):
    """A target that plays a script of failures before answering; no network."""

    def __init__(self, config: Any, *script: BaseException) -> None:
        self.config = config
        self.script = list(script)
        self.calls = 0

    def complete(self, request: Any, *, timeout: float, note: Any) -> Response:
        self.calls += 1
        if self.script:
            raise self.script.pop(0)
        return text_response("fine", id="x", model="m")

    async def acomplete(self, request: Any, *, timeout: float, note: Any) -> Response:
        return self.complete(request, timeout=timeout, note=note)


@pytest.mark.parametrize("mode", ["sync", "async"])
def test_both_shells_retry_fail_over_and_answer_alike(mode):
    slept: list[float] = []
    config = config_from_dict({"targets": {"p": remote(retry={"attempts": 2, "min_wait": 0.01}), "s": remote()},
                               "chains": {"default": ["p", "s"]}})
    swap = {"p": Scripted(config.targets["p"], StatusError(503), StatusError(503)),
            "s": Scripted(config.targets["s"])}
    walk = make_walk({"p": remote(retry={"attempts": 2, "min_wait": 0.01}), "s": remote()}, slept=slept, swap=swap)
    response = walk_sync(walk) if mode == "sync" else asyncio.run(walk_async(walk))
    assert response.text == "fine" and response.route.served_by == "s"
    assert [(a.target, a.outcome) for a in response.route.attempts] == [
        ("p", "transient"), ("p", "transient"), ("s", "ok")]
    assert len(slept) == 1 and swap["p"].calls == 2  # one wait, none after the last attempt


@pytest.mark.parametrize("mode", ["sync", "async"])
def test_both_shells_return_nothing_when_every_target_gives_up(mode):
    config = config_from_dict({"targets": {"p": remote()}, "chains": {"default": ["p"]}})
    walk = make_walk({"p": remote()}, swap={"p": Scripted(config.targets["p"], TargetFailure(Outcome.REJECTED, "no"))})

    def attempt(walk, member, admission):
        return member.target.complete(walk.request, timeout=admission.timeout, note=walk.note(member.config))

    async def aattempt(walk, member, admission):
        return attempt(walk, member, admission)

    won = chain_sync(walk, walk.members(), attempt) if mode == "sync" else asyncio.run(
        chain_async(walk, walk.members(), aattempt))
    assert won is None and walk.crew.guards["p"].bulkhead.in_flight == 0


# -- the bulkhead: one line for threads and tasks, no polling -----------------------------

def test_an_async_waiter_gets_the_slot_a_thread_releases():
    bulkhead = Bulkhead(1, queue_timeout=5.0)
    assert bulkhead.acquire(Deadline(1))

    async def wait_for_slot() -> tuple[bool, float]:
        started = time.monotonic()
        threading.Timer(0.2, bulkhead.release).start()
        return await bulkhead.acquire_async(Deadline(10)), time.monotonic() - started

    got, waited = asyncio.run(wait_for_slot())
    assert got and 0.15 < waited < 3.0 and bulkhead.in_flight == 1


def test_a_bulkhead_waiter_gives_up_at_queue_timeout_and_leaves_the_line():
    bulkhead = Bulkhead(1, queue_timeout=0.2)
    assert bulkhead.acquire(Deadline(1))
    started = time.monotonic()
    assert not asyncio.run(bulkhead.acquire_async(Deadline(10)))
    assert not bulkhead.acquire(Deadline(10))
    assert 0.3 < time.monotonic() - started < 3.0
    bulkhead.release()
    assert bulkhead.in_flight == 0 and bulkhead.acquire(Deadline(0))
