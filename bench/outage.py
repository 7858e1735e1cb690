"""Outage: the primary is down, the secondary healthy. Who keeps answering, and how
hard does each contender hammer the dead primary while doing so?

Part 1, the primary answers 503 to everything: 200 requests from 8 threads
(ThreadPoolExecutor). Part 2, the primary hangs (`faults.hang()`, sends nothing)
with a 1 s attempt timeout for everyone: 80 requests from 8 threads. Each contender
uses its own model names on the fault server ("p-ours"/"s-ours", ...), so the server's
per-model request count tells what each contender's primary and secondary received.
The server runs in a separate process (bench/faultproc.py: router.testing.FaultServer
plus a pipe to script models and read the counts back, which the plain
``python -m router.testing`` CLI cannot do), unless ``--server thread``.

ours is then run `repeats` more times (5; fresh router and model names each time) to show
how much its numbers vary from run to run; the targets use its first run.

The same retry budget for everyone: 3 attempts per target (2 retries), short waits.

- ``ours``: chain [primary, secondary]; defaults retry {attempts: 3, min_wait: 0.05,
  max_wait: 0.5} (full jitter: the n-th wait is uniform in [0, min(0.5, 0.05 * 2**n)]),
  breaker {fail_max: 5, reset_timeout: 60}, deadline 90 s (the default). A timeout is
  not retried (`retry_on_timeout` defaults to false: the table fails over at once).
- ``litellm_router``: `litellm.Router` with deployments "primary" and "secondary" as
  model groups, `fallbacks=[{"primary": ["secondary"]}]`, `num_retries=2`, `retry_after`
  at its default 0 (the only backoff knob among its arguments, and it is a *minimum*
  wait, an int); `allowed_fails` / `cooldown_time` left at their defaults (printed).
  In litellm 1.110 the retry loop runs in a Rust core (litellm/router_rust,
  litellm/rust_bridge) which asks for sleeps of 0.5 s * 2**n plus up to 0.75 s of
  jitter (the INITIAL_RETRY_DELAY / MAX_RETRY_DELAY / JITTER environment variables do
  not reach it), and also sleeps after the last retry, before falling back: ~4 s per
  request. The core sleeps through its host object, so the router is built with
  `litellm.Router.from_config(build_router_config(router_arguments(...)), host)`
  (what `litellm.Router(...)` does, with another host) whose sleeps last 0.1x what the
  core asks for: 0.05 s * 2**n + up to 0.075 s, the closest litellm allows to the
  others' waits, and what keeps the run within minutes. ``--litellm-real-backoff``
  runs it unscaled. It never puts a model group's only deployment in cooldown
  (router_utils/cooldown_handlers.py), so every request tries the dead primary 3 times.
- ``recipe``: the common hand-rolled stack: a `pybreaker.CircuitBreaker(fail_max=5,
  reset_timeout=60)` whose `call()` wraps a tenacity-retried (`stop_after_attempt(3)`,
  `wait_random_exponential(multiplier=0.05, max=0.5)`) `litellm.completion` to the
  primary; on any exception (`CircuitBreakerError` included) the secondary is called
  directly. pybreaker's `call()` holds the breaker's lock for the whole wrapped call,
  retries and waits included, so the threads go through it one at a time.

Every bare litellm call has `max_retries=0` (one call = one HTTP request).

Targets (ours): every request answered, and the dead primary receives at most
fail_max + 3 = 8 requests: the circuit opens after 5 failures, and only attempts
already admitted before that (at most one per thread beyond the 5) may follow. The
same targets are applied to the hanging primary. The other contenders' numbers are
reported without targets.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from .common import (
    API_KEY,
    HI,
    ControlledServer,
    FaultServerHandle,
    Report,
    ThreadServer,
    litellm,
    median,
    quantile,
)

THREADS = 8
ATTEMPTS = 3
MIN_WAIT, MAX_WAIT = 0.05, 0.5
FAIL_MAX, RESET_TIMEOUT = 5, 60
PRIMARY_TARGET = FAIL_MAX + 3
LITELLM_BACKOFF_SCALE = 0.1  # its 0.5 s first backoff becomes 0.05 s, like min_wait

Call = Callable[[], Any]


def make_ours(url: str, primary: str, secondary: str, timeout: float) -> tuple[Call, dict[str, Any]]:
    from router import Router

    config = {
        "defaults": {"timeout": timeout, "deadline": 90,
                     "retry": {"attempts": ATTEMPTS, "min_wait": MIN_WAIT, "max_wait": MAX_WAIT},
                     "breaker": {"fail_max": FAIL_MAX, "reset_timeout": RESET_TIMEOUT}},
        "targets": {"primary": {"model": f"openai/{primary}", "api_base": url, "api_key": API_KEY},
                    "secondary": {"model": f"openai/{secondary}", "api_base": url, "api_key": API_KEY}},
        "chains": {"default": ["primary", "secondary"]},
    }
    r = Router.from_dict(config)

    def call() -> Any:
        return r.complete(HI, max_tokens=16)

    return call, {"defaults": config["defaults"]}


def _sleep_host(scale: float) -> Any:
    """A litellm router host (litellm.router_python_host.PythonHost, the object through which
    litellm.Router's core sleeps, calls litellm and reads settings) whose backoff sleeps last
    `scale` times what the core asks for, and which records what it asked for."""
    from litellm.router_python_host import PythonHost

    class ScaledSleepHost(PythonHost):
        def __init__(self) -> None:
            self.asked: list[float] = []
            self.scale = scale

        def sleep(self, seconds: float) -> Any:
            self.asked.append(seconds)
            return super().sleep(seconds * self.scale)

        def sleep_sync(self, seconds: float) -> None:
            self.asked.append(seconds)
            super().sleep_sync(seconds * self.scale)

    return ScaledSleepHost()


def make_litellm_router(url: str, primary: str, secondary: str, timeout: float, *,
                        backoff_scale: float = 1.0) -> tuple[Call, dict[str, Any]]:
    lt = litellm()
    from litellm.router import router_arguments
    from litellm.router_config import build_router_config

    def deployment(group: str, model: str) -> dict[str, Any]:
        return {"model_name": group, "litellm_params": {
            "model": f"openai/{model}", "api_base": url, "api_key": API_KEY,
            "max_retries": 0, "timeout": timeout}}

    arguments = router_arguments(
        model_list=[deployment("primary", primary), deployment("secondary", secondary)],
        fallbacks=[{"primary": ["secondary"]}], num_retries=ATTEMPTS - 1, timeout=timeout)
    host = _sleep_host(backoff_scale)
    # Router.from_config(config, host) is litellm.Router(**arguments) with another host.
    lr = lt.Router.from_config(build_router_config(arguments), host)
    s = lr.settings()
    settings: dict[str, Any] = {
        "num_retries": lr.num_retries, "retry_after": lr.retry_after,
        "allowed_fails": s.allowed_fails, "cooldown_time": s.cooldown_time,
        "timeout": timeout, "fallbacks": s.fallbacks, "backoff_scale": backoff_scale}

    def call() -> Any:
        return lr.completion(model="primary", messages=HI, max_tokens=16)

    def sleeps() -> dict[str, Any]:
        asked = list(host.asked)
        return {"count": len(asked), "asked_median_s": median(asked) if asked else None,
                "asked_total_s": sum(asked), "slept_total_s": sum(asked) * backoff_scale}

    settings["sleeps"] = sleeps  # called after the storm
    return call, settings


def make_recipe(url: str, primary: str, secondary: str, timeout: float) -> tuple[Call, dict[str, Any]]:
    import pybreaker
    import tenacity

    lt = litellm()
    breaker = pybreaker.CircuitBreaker(fail_max=FAIL_MAX, reset_timeout=RESET_TIMEOUT)

    @tenacity.retry(stop=tenacity.stop_after_attempt(ATTEMPTS),
                    wait=tenacity.wait_random_exponential(multiplier=MIN_WAIT, max=MAX_WAIT), reraise=True)
    def call_primary() -> Any:
        return lt.completion(model=f"openai/{primary}", api_base=url, api_key=API_KEY, max_retries=0,
                             timeout=timeout, messages=HI, max_tokens=16)

    def call() -> Any:
        try:
            return breaker.call(call_primary)
        except Exception:  # CircuitBreakerError included
            return lt.completion(model=f"openai/{secondary}", api_base=url, api_key=API_KEY, max_retries=0,
                                 timeout=timeout, messages=HI, max_tokens=16)

    return call, {"breaker": {"fail_max": FAIL_MAX, "reset_timeout": RESET_TIMEOUT},
                  "retry": {"stop_after_attempt": ATTEMPTS,
                            "wait_random_exponential": {"multiplier": MIN_WAIT, "max": MAX_WAIT}}}


CONTENDERS: dict[str, Callable[[str, str, str, float], tuple[Call, dict[str, Any]]]] = {
    "ours": make_ours, "litellm_router": make_litellm_router, "recipe": make_recipe,
}
PREFIX = {"ours": "ours", "litellm_router": "litellm", "recipe": "recipe"}


def warm_up(server: FaultServerHandle) -> None:
    """Run litellm's success, error and timeout paths once from every thread before any
    contender: the first error in a process pays for lazy imports (exception mapping,
    logging), which would otherwise be charged to whichever contender runs first, and
    slow its first wave of failures down by hundreds of milliseconds."""
    from router.testing import faults

    lt = litellm()
    server.script("warm-ok", faults.ok())
    server.script("warm-503", faults.status(503))
    server.script("warm-hang", faults.hang())

    def one(i: int) -> None:
        model, timeout = [("warm-ok", 30), ("warm-503", 30), ("warm-hang", 0.2)][i % 3]
        try:
            lt.completion(model=f"openai/{model}", api_base=server.url, api_key=API_KEY, max_retries=0,
                          timeout=timeout, messages=HI, max_tokens=16)
        except Exception:
            pass

    with ThreadPoolExecutor(THREADS) as pool:
        list(pool.map(one, range(6 * THREADS)))


# route outcomes of a target passed over without a request
_NOT_SENT = frozenset({"circuit_open", "disabled", "offline", "too_small", "deadline"})


def storm(call: Call, requests: int) -> dict[str, Any]:
    """`requests` calls from THREADS threads; what came back, and when."""
    latencies: list[float] = []
    answers: Counter[str] = Counter()
    errors: Counter[str] = Counter()
    primary_attempts: Counter[int] = Counter()
    lock = threading.Lock()

    def one(_: int) -> None:
        started = time.perf_counter()
        try:
            resp = call()
        except Exception as exc:
            with lock:
                errors[type(exc).__name__] += 1
            return
        route = getattr(resp, "route", None)
        with lock:
            latencies.append(time.perf_counter() - started)
            answers[str(resp.model)] += 1
            if route is not None:  # ours: how many primary attempts went out for this request
                sent = sum(1 for a in route.attempts if a.target == "primary" and a.outcome not in _NOT_SENT)
                primary_attempts[sent] += 1

    started = time.perf_counter()
    with ThreadPoolExecutor(THREADS) as pool:
        list(pool.map(one, range(requests)))
    wall = time.perf_counter() - started
    return {"answered": sum(answers.values()), "answered_by": dict(answers), "errors": dict(errors),
            "wall_s": wall,
            "latency_p50_s": median(latencies) if latencies else None,
            "latency_max_s": max(latencies) if latencies else None,
            "latency_p95_s": quantile(latencies, 0.95) if latencies else None,
            "requests_by_primary_attempts": dict(sorted(primary_attempts.items()))}


def _s(v: float | None) -> str:
    return "-" if v is None else f"{v:.2f}s"


def part(report: Report, server: FaultServerHandle, *, label: str, fault: Any, timeout: float,
         requests: int, litellm_backoff_scale: float, repeats: int) -> dict[str, Any]:
    from router.testing import faults

    report.line()
    report.line(f"-- {label}: {requests} requests, {THREADS} threads, attempt timeout {timeout:g} s --")
    report.line(f"{'contender':<16}{'answered':>9}{'primary':>9}{'secondary':>11}{'wall':>9}"
                f"{'p50':>8}{'p95':>8}{'max':>8}  errors")
    results = {}
    for name, make in CONTENDERS.items():
        tag = f"{label}-{PREFIX[name]}"
        p, s = f"p-{tag}", f"s-{tag}"
        server.script(p, fault)
        server.script(s, faults.ok())
        extra = {"backoff_scale": litellm_backoff_scale} if name == "litellm_router" else {}
        call, settings = make(server.url, p, s, timeout, **extra)
        r = storm(call, requests)
        if callable(settings.get("sleeps")):
            settings["sleeps"] = settings["sleeps"]()
        r.update(primary_requests=server.count(p), secondary_requests=server.count(s),
                 settings=settings, models=[p, s])
        results[name] = r
        report.line(f"{name:<16}{r['answered']:>5}/{requests:<3}{r['primary_requests']:>9}"
                    f"{r['secondary_requests']:>11}{r['wall_s']:>8.2f}s{_s(r['latency_p50_s']):>8}"
                    f"{_s(r['latency_p95_s']):>8}{_s(r['latency_max_s']):>8}  {r['errors'] or '-'}")
    ours = results["ours"]
    report.line(f"ours: requests by number of primary attempts sent: {ours['requests_by_primary_attempts']}")
    again = []
    for i in range(repeats):  # ours alone again, fresh router and models: how much does it vary?
        p, s = f"p-{label}-ours-again{i}", f"s-{label}-ours-again{i}"
        server.script(p, fault)
        server.script(s, faults.ok())
        call, _ = make_ours(server.url, p, s, timeout)
        r = storm(call, requests)
        again.append({"answered": r["answered"], "primary_requests": server.count(p),
                      "wall_s": r["wall_s"]})
    ours["repeats"] = again
    if again:
        report.line(f"ours, {repeats} more runs: answered {[r['answered'] for r in again]}, primary requests "
                    f"{[r['primary_requests'] for r in again]}, wall {[round(r['wall_s'], 2) for r in again]} s")
    lr = dict(results["litellm_router"]["settings"])
    sleeps = lr.pop("sleeps")
    report.line("litellm.Router settings: " + ", ".join(f"{k}={v}" for k, v in lr.items()))
    if sleeps["count"]:
        report.line(f"litellm.Router backoff: {sleeps['count']} sleeps ({sleeps['count'] / requests:.1f} per "
                    f"request), median {sleeps['asked_median_s']:.2f} s as computed by litellm, "
                    f"x{lr['backoff_scale']:g} as slept: {sleeps['slept_total_s']:.1f} s in all")
    return results


def run(report: Report, *, quick: bool = False, server_mode: str = "process",
        litellm_real_backoff: bool = False) -> dict[str, Any]:
    from router.testing import faults

    # litellm.Router logs every failed attempt and fallback at WARNING/ERROR: hundreds of lines here.
    for name in ("LiteLLM Router", "LiteLLM", "litellm"):
        logging.getLogger(name).setLevel(logging.CRITICAL)
    requests_503, requests_hang = (100, 40) if quick else (200, 80)
    repeats = 2 if quick else 5
    server: FaultServerHandle = ThreadServer() if server_mode == "thread" else ControlledServer()
    with server:
        report.line(f"fault server: {server.how} at {server.url}")
        report.line(f"retry budget: {ATTEMPTS} attempts per target; waits ~{MIN_WAIT}..{MAX_WAIT} s; "
                    f"breakers fail_max={FAIL_MAX}, reset_timeout={RESET_TIMEOUT} s")
        warm_up(server)
        scale = 1.0 if litellm_real_backoff else LITELLM_BACKOFF_SCALE
        report.line(f"litellm.Router backoff sleeps scaled by {scale:g}"
                    + ("" if litellm_real_backoff else " (--litellm-real-backoff: unscaled, ~3 min longer)"))
        down = part(report, server, label="503", fault=faults.status(503), timeout=30,
                    requests=requests_503, litellm_backoff_scale=scale, repeats=repeats)
        hang = part(report, server, label="hang", fault=faults.hang(), timeout=1, requests=requests_hang,
                    litellm_backoff_scale=scale, repeats=repeats)
    report.data.update({"server": server.how, "threads": THREADS, "status_503": down, "hang": hang})

    for label, results, n in (("503", down, requests_503), ("hang", hang, requests_hang)):
        key = "outage" if label == "503" else "outage_hang"
        ours = results["ours"]
        report.ratio(f"{key}_ours_answered", ours["answered"], str(n), ours["answered"] == n)
        report.ratio(f"{key}_ours_primary_requests", ours["primary_requests"], f"<={PRIMARY_TARGET}",
                     ours["primary_requests"] <= PRIMARY_TARGET)
        if ours["repeats"]:
            report.ratio(f"{key}_ours_primary_requests_max_of_{len(ours['repeats'])}_more_runs",
                         max(r["primary_requests"] for r in ours["repeats"]), "none", None)
        for other in ("litellm_router", "recipe"):
            r = results[other]
            report.ratio(f"{key}_{other}_answered", r["answered"], "none", None)
            report.ratio(f"{key}_{other}_primary_requests", r["primary_requests"], "none", None)
            report.ratio(f"{key}_wall_{other}_over_ours", r["wall_s"] / ours["wall_s"], "none", None)
    return report.finish()
