"""Parallel calls through one closed circuit: do they run at once, or one at a time?

One healthy but slow model (``faults.ok(delay=0.2)``: every answer after 200 ms) on the
fault server, in a separate process (``python -m router.testing --port 0 --default
...``). THREADS = 16 threads call at once (a ThreadPoolExecutor of 16 started and warmed
up beforehand, the 16 calls submitted together); the wall time from the first submit to
the last answer is divided by the wall time of one call alone, made from the main
thread in the same round. 1.0 is perfect parallelism; 16 is one at a time.

- ``ours``: ``router.Router.from_dict(one target "primary", chain [primary]).complete(...)``:
  its circuit admits each call under a short lock and lets it run with no lock held;
- ``pybreaker``: ``pybreaker.CircuitBreaker(fail_max=5, reset_timeout=60).call(
  litellm.completion, ...)``, the textbook use of pybreaker, whose `call()` holds the
  breaker's lock for the whole wrapped call (expected: ~16);
- ``bare``: ``litellm.completion`` with no circuit: the floor, what 16 threads of
  litellm calls on this machine reach at best.

Every litellm call: ``max_retries=0, timeout=30``, the same messages and max_tokens=16.
Each contender is warmed up (two bursts of 16, so that the HTTP connection pool holds 16
connections, and one single call). Then ROUNDS rounds, the contenders in an order
rotated every round, each doing one single call then one burst; the ratio is taken per
round and the median over rounds reported. Target: ours <= 1.5.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from .common import API_KEY, HI, CliServer, Report, litellm, median, quantile, rotations

THREADS = 16
DELAY = 0.2
ROUNDS = 6
TARGET_OURS = 1.5
FAIL_MAX, RESET_TIMEOUT = 5, 60


def contenders(url: str) -> dict[str, Callable[[], Any]]:
    import pybreaker

    from router import Router

    lt = litellm()
    params = {"model": "openai/m", "api_base": url, "api_key": API_KEY, "max_retries": 0, "timeout": 30}

    ours_router = Router.from_dict({
        "defaults": {"timeout": 30, "breaker": {"fail_max": FAIL_MAX, "reset_timeout": RESET_TIMEOUT}},
        "targets": {"primary": {"model": "openai/m", "api_base": url, "api_key": API_KEY}},
        "chains": {"default": ["primary"]},
    })

    def ours() -> Any:
        resp = ours_router.complete(HI, max_tokens=16)
        if resp.route.served_by != "primary" or len(resp.route.attempts) != 1:
            raise RuntimeError(f"ours: unexpected route {resp.route!r}")
        return resp

    breaker = pybreaker.CircuitBreaker(fail_max=FAIL_MAX, reset_timeout=RESET_TIMEOUT)

    def with_pybreaker() -> Any:
        return breaker.call(lt.completion, **params, messages=HI, max_tokens=16)

    def bare() -> Any:
        return lt.completion(**params, messages=HI, max_tokens=16)

    return {"ours": ours, "pybreaker": with_pybreaker, "bare": bare}


def burst(pool: ThreadPoolExecutor, call: Callable[[], Any]) -> float:
    """THREADS calls at once; seconds until the last one answered."""
    started = time.perf_counter()
    futures = [pool.submit(call) for _ in range(THREADS)]
    for f in futures:
        f.result()
    return time.perf_counter() - started


def single(call: Callable[[], Any]) -> float:
    started = time.perf_counter()
    call()
    return time.perf_counter() - started


def run(report: Report, *, quick: bool = False) -> dict[str, Any]:
    from router.testing import faults

    rounds = 3 if quick else ROUNDS
    with CliServer(default=faults.ok(delay=DELAY)) as server, ThreadPoolExecutor(THREADS) as pool:
        report.line(f"fault server: {server.how} at {server.url}; every answer after {DELAY * 1e3:.0f} ms")
        report.line(f"{rounds} rounds; per round and contender: one call alone, then {THREADS} at once "
                    f"from {THREADS} threads; order rotated per round")
        calls = contenders(server.url)
        names = list(calls)
        for name in names:
            burst(pool, calls[name])
            burst(pool, calls[name])
            single(calls[name])
        singles: dict[str, list[float]] = {name: [] for name in names}
        bursts: dict[str, list[float]] = {name: [] for name in names}
        for order in rotations(names, rounds):
            for name in order:
                singles[name].append(single(calls[name]))
                bursts[name].append(burst(pool, calls[name]))

    ratios = {name: [b / s for b, s in zip(bursts[name], singles[name], strict=True)] for name in names}
    report.line()
    report.line(f"{'contender':<12}{'one call':>10}{f'{THREADS} at once':>13}{'ratio (IQR)':>22}")
    for name in names:
        r = ratios[name]
        report.line(f"{name:<12}{median(singles[name]):>8.3f} s{median(bursts[name]):>11.3f} s"
                    f"{median(r):>10.2f} ({quantile(r, 0.25):.2f}..{quantile(r, 0.75):.2f})")
    ours_vs_bare = median(o / b for o, b in zip(bursts["ours"], bursts["bare"], strict=True))
    report.line(f"ours / bare, {THREADS} at once (median of per-round ratios): {ours_vs_bare:.3f}")

    report.data.update({"server": server.how, "threads": THREADS, "delay_s": DELAY, "rounds": rounds,
                        "single_s": singles, "burst_s": bursts, "burst_over_single": ratios,
                        "ours_burst_over_bare_burst": ours_vs_bare})
    ours = median(ratios["ours"])
    report.ratio("parallel_ours_burst_over_single", ours, f"<={TARGET_OURS}", ours <= TARGET_OURS)
    report.ratio("parallel_pybreaker_burst_over_single", median(ratios["pybreaker"]), "none", None)
    report.ratio("parallel_bare_burst_over_single", median(ratios["bare"]), "none", None)
    report.ratio("parallel_ours_burst_over_bare_burst", ours_vs_bare, "none", None)
    return report.finish()
