"""Load leveling: a provider that allows 20 requests per sliding second, and a fallback.

The fault server (a separate process, bench/faultproc.py) answers the primary with
`faults.limited(20, 1.0)`: at most 20 accepted requests in any 1 s sliding window, a 429
beyond (with OpenAI's `x-ratelimit-*-requests` headers and a `retry-after-ms` saying when
a slot frees). The secondary always answers. 300 requests from 8 threads; per contender:

- ``ours_limited``: `Router` with `rate_limit: {rpm: 1200, max_wait: 2}` on the primary
  (20/s, the provider's own limit, paced evenly);
- ``litellm_router``: `litellm.Router` with `rpm: 1200` on the primary deployment
  (`routing_strategy="usage-based-routing-v2"`, which enforces it per calendar minute),
  `fallbacks` to the secondary, `num_retries=2`;
- ``ours_unlimited``: `Router` with no rate limit (it still reads the provider's headers
  and pauses after a 429).

Both routers: retry {attempts: 3, min_wait: 0.05, max_wait: 0.5}, breaker fail_max 5,
reset_timeout 60. Reported: 429s the provider sent (target for ours_limited: <= 1% of the
requests), the share of calls the primary served, wall time. Every contender gets its
own model names (a fresh window), after litellm's paths are warmed in every thread.

Then the fleet: 2 processes (``python -m bench.fleet --worker``) x 4 threads, 150
requests each, `state: {backend: redis}` (a fresh namespace on a redis-server started
here), ours_limited's config: the limit must hold across both (target: <= 1% 429s).
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from .common import API_KEY, HI, ControlledServer, Report, litellm
from .outage import warm_up

THREADS, REQUESTS, LIMIT, WINDOW = 8, 300, 20, 1.0
RPM, MAX_WAIT = 1200, 2
FLEET_PROCESSES, FLEET_REQUESTS = 2, 300
TARGET_429_SHARE = 0.01


def ours_config(url: str, primary: str, secondary: str, rate_limit: dict[str, Any] | None,
                state: dict[str, Any] | None = None) -> dict[str, Any]:
    primary_target: dict[str, Any] = {"model": f"openai/{primary}", "api_base": url, "api_key": API_KEY}
    if rate_limit is not None:
        primary_target["rate_limit"] = rate_limit
    config: dict[str, Any] = {
        "defaults": {"timeout": 30, "deadline": 90, "retry": {"attempts": 3, "min_wait": 0.05, "max_wait": 0.5},
                     "breaker": {"fail_max": 5, "reset_timeout": 60}},
        "targets": {"primary": primary_target,
                    "secondary": {"model": f"openai/{secondary}", "api_base": url, "api_key": API_KEY}},
        "chains": {"default": ["primary", "secondary"]},
    }
    if state is not None:
        config["state"] = state
    return config


def make_ours(url: str, primary: str, secondary: str, rate_limit: dict[str, Any] | None) -> Any:
    from router import Router

    router = Router.from_dict(ours_config(url, primary, secondary, rate_limit))

    def call() -> str:
        return str(router.complete(HI, max_tokens=16).route.served_by)

    return call


def make_litellm_router(url: str, primary: str, secondary: str) -> Any:
    lt = litellm()

    def deployment(group: str, model: str, **extra: Any) -> dict[str, Any]:
        return {"model_name": group, "litellm_params": {"model": f"openai/{model}", "api_base": url,
                                                        "api_key": API_KEY, "max_retries": 0, **extra}}

    lr = lt.Router(model_list=[deployment("primary", primary, rpm=RPM), deployment("secondary", secondary)],
                   fallbacks=[{"primary": ["secondary"]}], num_retries=2, timeout=30,
                   routing_strategy="usage-based-routing-v2")

    def call() -> str:
        response = lr.completion(model="primary", messages=HI, max_tokens=16)
        return "primary" if response.model and primary in response.model else "secondary"

    return call


def storm(call: Any, requests: int) -> dict[str, Any]:
    served: Counter[str] = Counter()
    errors: Counter[str] = Counter()
    lock = threading.Lock()

    def one(_: int) -> None:
        try:
            who = call()
        except Exception as exc:
            with lock:
                errors[type(exc).__name__] += 1
            return
        with lock:
            served[who] += 1

    started = time.perf_counter()
    with ThreadPoolExecutor(THREADS) as pool:
        list(pool.map(one, range(requests)))
    return {"served_by": dict(served), "errors": dict(errors), "wall_s": time.perf_counter() - started}


def fleet_run(report: Report, server: Any, requests: int, run_id: str) -> dict[str, Any]:
    from router.testing import faults
    from router.testing.redis_server import RedisServer

    from .fleet import Fleet

    p, s = f"p-rl-fleet-{run_id}", f"s-rl-fleet-{run_id}"
    server.script(p, faults.limited(LIMIT, WINDOW))
    server.script(s, faults.ok())
    with RedisServer() as redis_server, Fleet(FLEET_PROCESSES) as fleet:
        fleet.ask([{"op": "warm", "url": server.url}] * FLEET_PROCESSES)
        state = {"backend": "redis", "url": redis_server.url, "namespace": f"rl-{run_id}"}
        config = ours_config(server.url, p, s, {"rpm": RPM, "max_wait": MAX_WAIT}, state)
        fleet.ask([{"op": "prepare", "config": config, "requests": requests // FLEET_PROCESSES}] * FLEET_PROCESSES)
        at = time.monotonic() + 0.3
        results = fleet.ask([{"op": "go", "at": at}] * FLEET_PROCESSES)
    served: Counter[str] = Counter()
    for r in results:
        served.update(r["served_by"])
    statuses = server.statuses(p)
    out = {"processes": FLEET_PROCESSES, "requests": requests, "served_by": dict(served),
           "errors": [r["errors"] for r in results], "primary_statuses": statuses,
           "wall_s": max(r["end"] for r in results) - at, "redis_shared_at_end": [r["state"].get("shared")
                                                                                   for r in results]}
    report.line(f"fleet: {FLEET_PROCESSES} processes x 4 threads, {requests} requests, Redis state: primary "
                f"statuses {statuses}, served {dict(served)}, wall {out['wall_s']:.2f} s")
    return out


def run(report: Report, *, quick: bool = False) -> dict[str, Any]:
    from router.testing import faults

    for name in ("LiteLLM Router", "LiteLLM", "litellm"):
        logging.getLogger(name).setLevel(logging.CRITICAL)
    requests = 100 if quick else REQUESTS
    run_id = uuid.uuid4().hex[:6]
    contenders = {
        "ours_limited": lambda url, p, s: make_ours(url, p, s, {"rpm": RPM, "max_wait": MAX_WAIT}),
        "litellm_router": make_litellm_router,
        "ours_unlimited": lambda url, p, s: make_ours(url, p, s, None),
    }
    results: dict[str, Any] = {}
    with ControlledServer() as server:
        report.line(f"fault server: {server.how} at {server.url}")
        report.line(f"provider: at most {LIMIT} requests per sliding {WINDOW:g} s window (429 beyond, with "
                    f"x-ratelimit headers); {requests} requests from {THREADS} threads; fallback always answers")
        warm_up(server)
        report.line(f"{'contender':<16}{'429s':>6}{'200s':>6}{'primary':>9}{'secondary':>11}{'wall':>9}  errors")
        for name, make in contenders.items():
            p, s = f"p-rl-{name}-{run_id}", f"s-rl-{name}-{run_id}"
            server.script(p, faults.limited(LIMIT, WINDOW))
            server.script(s, faults.ok())
            r = storm(make(server.url, p, s), requests)
            statuses = server.statuses(p)
            r.update(primary_statuses=statuses, rate_limited=statuses.get(429, 0),
                     primary_share=r["served_by"].get("primary", 0) / requests)
            results[name] = r
            report.line(f"{name:<16}{r['rate_limited']:>6}{statuses.get(200, 0):>6}"
                        f"{r['served_by'].get('primary', 0):>9}{r['served_by'].get('secondary', 0):>11}"
                        f"{r['wall_s']:>8.2f}s  {r['errors'] or '-'}")
        fleet = fleet_run(report, server, 100 if quick else FLEET_REQUESTS, run_id)
    report.data.update({"threads": THREADS, "requests": requests, "provider_limit": [LIMIT, WINDOW],
                        "rate_limit": {"rpm": RPM, "max_wait": MAX_WAIT}, "contenders": results, "fleet": fleet})
    for name, r in results.items():
        target = f"<={TARGET_429_SHARE * requests:g}" if name == "ours_limited" else "none"
        ok = r["rate_limited"] <= TARGET_429_SHARE * requests if name == "ours_limited" else None
        report.ratio(f"ratelimit_{name}_429s", r["rate_limited"], target, ok)
        report.ratio(f"ratelimit_{name}_primary_share", round(r["primary_share"], 3), "none", None)
        report.ratio(f"ratelimit_{name}_wall_s", round(r["wall_s"], 2), "none", None)
    fleet_429 = fleet["primary_statuses"].get(429, 0)
    report.ratio("ratelimit_fleet_redis_429s", fleet_429, f"<={TARGET_429_SHARE * fleet['requests']:g}",
                 fleet_429 <= TARGET_429_SHARE * fleet["requests"])
    report.ratio("ratelimit_fleet_redis_primary_share",
                 round(fleet["served_by"].get("primary", 0) / fleet["requests"], 3), "none", None)
    return report.finish()
