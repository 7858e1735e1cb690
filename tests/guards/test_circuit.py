"""The circuit of one target, on pybreaker's real state machine (no network needed)."""

from __future__ import annotations

import threading
import time

import pytest

from router.guards.circuit import CLOSED, HALF_OPEN, OPEN, Circuit, CircuitOpen
from router.config.schema import BreakerPolicy


def circuit(**policy) -> Circuit:
    return Circuit("t", BreakerPolicy(**{"fail_max": 3, "reset_timeout": 0.2, **policy}))


def fail(c: Circuit, n: int = 1) -> None:
    for _ in range(n):
        c.failed(c.admit())


def test_full_cycle_closed_open_half_open_closed():
    c = circuit()
    fail(c, 2)
    assert c.state == CLOSED and c.status()["failures"] == 2
    fail(c)
    assert c.state == OPEN
    with pytest.raises(CircuitOpen) as info:
        c.admit()
    assert 0 < info.value.retry_in <= 0.2
    time.sleep(0.25)
    assert c.state == HALF_OPEN
    probe = c.admit()
    assert probe.probe
    c.succeeded(probe)
    assert c.state == CLOSED and c.status()["failures"] == 0


def test_failed_probe_reopens():
    c = circuit()
    fail(c, 3)
    time.sleep(0.25)
    probe = c.admit()
    c.failed(probe)
    assert c.state == OPEN
    with pytest.raises(CircuitOpen):
        c.admit()


def test_success_threshold_needs_that_many_probe_successes():
    c = circuit(success_threshold=2, half_open_max_calls=1)
    fail(c, 3)
    time.sleep(0.25)
    c.succeeded(c.admit())
    assert c.state == HALF_OPEN
    c.succeeded(c.admit())
    assert c.state == CLOSED


def test_neutral_outcome_neither_trips_nor_resets():
    c = circuit()
    fail(c, 2)
    for _ in range(10):
        c.released(c.admit())
    assert c.state == CLOSED and c.status()["failures"] == 2
    fail(c)
    assert c.state == OPEN


def test_neutral_probe_frees_its_slot_without_closing():
    c = circuit()
    fail(c, 3)
    time.sleep(0.25)
    c.released(c.admit())
    assert c.state == HALF_OPEN
    c.succeeded(c.admit())
    assert c.state == CLOSED


def test_half_open_admits_only_max_calls_probes():
    c = circuit(half_open_max_calls=2)
    fail(c, 3)
    time.sleep(0.25)
    first, second = c.admit(), c.admit()
    with pytest.raises(CircuitOpen, match="half-open"):
        c.admit()
    c.released(first)
    third = c.admit()
    c.succeeded(second)
    c.succeeded(third)
    assert c.state == CLOSED


def test_half_open_lets_exactly_one_of_many_concurrent_callers_probe():
    c = circuit(half_open_max_calls=1)
    fail(c, 3)
    time.sleep(0.25)
    admitted, refused = [], []
    barrier = threading.Barrier(50)

    def caller():
        barrier.wait()
        try:
            admitted.append(c.admit())
        except CircuitOpen:
            refused.append(1)

    threads = [threading.Thread(target=caller) for _ in range(50)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(admitted) == 1 and len(refused) == 49


def test_stale_results_do_not_speak_for_a_newer_state():
    c = circuit()
    other = Circuit("t", c.policy, storage=c._storage)  # another caller of the same circuit state
    slow = other.admit()  # admitted while closed, finishes late
    fail(c, 3)
    assert c.state == OPEN
    other.succeeded(slow)  # must not close the open circuit
    assert c.state == OPEN
    time.sleep(0.25)
    probe = c.admit()
    other.failed(slow)  # must not re-open a half-open circuit
    assert c.state == HALF_OPEN
    c.succeeded(probe)
    assert c.state == CLOSED


def test_force_open_and_close():
    c = circuit(reset_timeout=60)
    c.force_open()
    with pytest.raises(CircuitOpen):
        c.admit()
    assert c.status()["retry_in_s"] > 59
    c.force_close()
    assert c.state == CLOSED
    c.succeeded(c.admit())


def test_a_failing_closed_circuit_admits_no_more_than_could_trip_it():
    c = circuit(fail_max=3)
    a, b = c.admit(), c.admit()  # no failures yet: not limited
    c.failed(a)  # 1 failure, b in flight
    d = c.admit()  # 1 + 1 < 3
    with pytest.raises(CircuitOpen, match="could trip it"):
        c.admit()  # 1 failure + 2 in flight would make 3
    assert c.state == CLOSED
    c.succeeded(d)  # admitted after a failure: its success resets the count
    assert c.status()["failures"] == 0
    e, f = c.admit(), c.admit()  # healthy again: b, e and f in flight at once
    for ticket in (b, e, f):
        c.succeeded(ticket)
