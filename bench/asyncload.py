"""asyncio under load (scenario ``async``): requests per second at concurrency 64.

One healthy model ("m", ``faults.ok()``, no delay) on the fault server, in a separate
process (``python -m router.testing --port 0``). A contender serves a block of requests
with a fixed pool of CONCURRENCY = 64 worker tasks, each taking the next request as soon
as its last one answered, so that 64 are in flight until the block drains; requests per
second = block size / wall time of the block.

- ``bare``: ``await litellm.acompletion(model="openai/m", api_base=..., api_key=...,
  max_retries=0, timeout=30, messages=..., max_tokens=16)``: the floor;
- ``ours``: ``await router.Router.from_dict(one target "primary", chain
  [primary]).acomplete(...)``;
- ``bare_aa``: ``bare`` again, an A/A control: bare_aa/bare shows how far the ratio of
  two identical contenders strays on this machine.

Everything runs in one event loop (litellm caches its async HTTP clients, which belong
to the loop that made them). Each contender first serves WARMUP requests (connection
pool, lazy imports), then the heap is frozen (gc.freeze). Then ROUNDS rounds of BLOCK
requests per contender (ROUNDS x BLOCK = 2000 each), in an order rotated every round;
the median over rounds of the per-round ratio ours/bare of requests per second is
reported. Target: >= 0.95. Also reported: the router's own code per request
(litellm.acompletion replaced by a recorded answer, as in the overhead scenario), and
the garbage collector's passes and time during each contender's blocks (litellm's
objects make a generation-1 pass cost milliseconds here; more allocations per request
means more of them).

Both contenders' requests go through litellm's async path (the OpenAI SDK on httpx's
AsyncClient, over litellm's aiohttp transport), which keeps the one event-loop thread
busy ~3.5 ms per request here: ~270-300 req/s is the ceiling both hit, with the server
process on the other core. Under cProfile, the HTTP client (httpx send + transport) is
~15 % of that time; most of the rest is litellm's own bookkeeping around the request
(building it, cost calculation, success logging). The ratio tells what the router adds
on top, not how fast asyncio HTTP can be.
"""

from __future__ import annotations

import asyncio
import gc
import time
from collections.abc import Awaitable, Callable
from typing import Any

from .common import API_KEY, HI, CliServer, Report, litellm, median, paired_ratio, rotations

CONCURRENCY = 64
ROUNDS, BLOCK, WARMUP = 8, 250, 256
TARGET_OURS_OVER_BARE = 0.95

ACall = Callable[[], Awaitable[Any]]


def contenders(url: str) -> dict[str, ACall]:
    from router import Router

    lt = litellm()
    params = {"model": "openai/m", "api_base": url, "api_key": API_KEY, "max_retries": 0, "timeout": 30}

    async def bare() -> Any:
        return await lt.acompletion(**params, messages=HI, max_tokens=16)

    ours_router = Router.from_dict({
        "defaults": {"timeout": 30},
        "targets": {"primary": {"model": "openai/m", "api_base": url, "api_key": API_KEY}},
        "chains": {"default": ["primary"]},
    })

    async def ours() -> Any:
        resp = await ours_router.acomplete(HI, max_tokens=16)
        if resp.route.served_by != "primary" or len(resp.route.attempts) != 1:
            raise RuntimeError(f"ours: unexpected route {resp.route!r}")
        return resp

    return {"bare": bare, "ours": ours, "bare_aa": bare}


async def serve(call: ACall, requests: int) -> tuple[float, int]:
    """`requests` calls from CONCURRENCY worker tasks: (wall seconds, errors)."""
    left = requests
    errors = 0

    async def worker() -> None:
        nonlocal left, errors
        while left > 0:
            left -= 1
            try:
                await call()
            except Exception:
                errors += 1

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(CONCURRENCY)))
    return time.perf_counter() - started, errors


class GcClock:
    """Garbage-collector passes and their time, charged to whichever contender is running."""

    def __init__(self) -> None:
        self.running: str | None = None
        self.passes: dict[str, dict[int, int]] = {}
        self.seconds: dict[str, float] = {}
        self._started = 0.0

    def __call__(self, phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            self._started = time.perf_counter()
        elif self.running is not None:
            name, generation = self.running, info["generation"]
            self.seconds[name] = self.seconds.get(name, 0.0) + time.perf_counter() - self._started
            counts = self.passes.setdefault(name, {})
            counts[generation] = counts.get(generation, 0) + 1


async def isolated_cost(ours: ACall, bare: ACall, calls: int = 3000) -> float:
    """Microseconds per call of the router's own code: `ours` with litellm.acompletion
    answering a recorded response at once (best of 3 batches)."""
    lt = litellm()
    recorded = await bare()
    real = lt.acompletion

    async def answer(**kwargs: Any) -> Any:
        return recorded

    lt.acompletion = answer
    try:
        best = float("inf")
        for _ in range(3):
            started = time.perf_counter()
            for _ in range(calls):
                await ours()
            best = min(best, (time.perf_counter() - started) / calls)
    finally:
        lt.acompletion = real
    return best * 1e6


async def measure(url: str, rounds: int, block: int, warmup: int) -> dict[str, Any]:
    calls = contenders(url)
    names = list(calls)
    for name in names:
        _, errors = await serve(calls[name], warmup)
        if errors:
            raise RuntimeError(f"{name}: {errors} of {warmup} warm-up requests failed")
    gc.collect()
    gc.freeze()
    clock = GcClock()
    gc.callbacks.append(clock)
    try:
        rates: dict[str, list[float]] = {name: [] for name in names}
        failed: dict[str, int] = {name: 0 for name in names}
        for order in rotations(names, rounds):
            for name in order:
                clock.running = name
                wall, errors = await serve(calls[name], block)
                clock.running = None
                rates[name].append(block / wall)
                failed[name] += errors
    finally:
        gc.callbacks.remove(clock)
        gc.unfreeze()
    isolated_us = await isolated_cost(calls["ours"], calls["bare"])
    return {"rates": rates, "errors": failed, "isolated_us": isolated_us,
            "gc_passes": clock.passes, "gc_s": clock.seconds}


def run(report: Report, *, quick: bool = False) -> dict[str, Any]:
    rounds, block, warmup = (4, BLOCK, 128) if quick else (ROUNDS, BLOCK, WARMUP)
    with CliServer() as server:
        report.line(f"fault server: {server.how} at {server.url}")
        report.line(f"{rounds} rounds x {block} requests per contender (= {rounds * block} each) at concurrency "
                    f"{CONCURRENCY} (a pool of {CONCURRENCY} worker tasks), after {warmup} warm-up requests; "
                    f"order rotated per round")
        result = asyncio.run(measure(server.url, rounds, block, warmup))
    rates, errors = result["rates"], result["errors"]
    names = list(rates)

    report.line()
    report.line(f"{'contender':<12}{'median req/s':>14}{'min..max':>16}{'errors':>8}")
    for name in names:
        report.line(f"{name:<12}{median(rates[name]):>14.1f}{min(rates[name]):>9.1f}..{max(rates[name]):.1f}"
                    f"{errors[name]:>8}")

    ratios = {f"{a}/{b}": paired_ratio(rates[a], rates[b]) for a, b in (("ours", "bare"), ("bare_aa", "bare"))}
    report.line()
    report.line(f"requests/s, median over {rounds} rounds of the per-round ratio (interquartile range):")
    for key, r in ratios.items():
        note = "  <- A/A control: the noise floor" if key == "bare_aa/bare" else ""
        report.line(f"  {key:<16}{r['median']:>8.4f} ({r['q25']:.3f}..{r['q75']:.3f}){note}")
    per_request_us = median((1 / o - 1 / b) * 1e6 for o, b in zip(rates["ours"], rates["bare"], strict=True))
    report.line(f"extra time per request at this concurrency (median over rounds of 1/ours - 1/bare): "
                f"{per_request_us:+.1f} us")
    report.line(f"ours' own code alone (litellm.acompletion replaced by a recorded answer): "
                f"{result['isolated_us']:.1f} us per request")
    total = rounds * block
    report.line("garbage collection during the timed blocks, per request: " + "; ".join(
        f"{name} {result['gc_s'].get(name, 0.0) / total * 1e6:.1f} us "
        f"(passes by generation {dict(sorted(result['gc_passes'].get(name, {}).items()))})" for name in names))

    report.data.update({"server": server.how, "concurrency": CONCURRENCY, "rounds": rounds, "block": block,
                        "warmup": warmup, "requests_per_s": rates, "errors": errors,
                        "requests_per_s_ratios": ratios, "extra_us_per_request": per_request_us,
                        "ours_isolated_us_per_request": result["isolated_us"],
                        "gc_s": result["gc_s"], "gc_passes": result["gc_passes"]})
    value = ratios["ours/bare"]["median"]
    report.ratio("async_ours_over_bare_requests_per_s", value, f">={TARGET_OURS_OVER_BARE}",
                 value >= TARGET_OURS_OVER_BARE)
    report.ratio("async_bare_aa_over_bare_requests_per_s", ratios["bare_aa/bare"]["median"], "none", None)
    report.ratio("async_ours_requests_per_s", round(median(rates["ours"]), 1), "none", None)
    report.ratio("async_bare_requests_per_s", round(median(rates["bare"]), 1), "none", None)
    report.ratio("async_errors", sum(errors.values()), "0", sum(errors.values()) == 0)
    return report.finish()
