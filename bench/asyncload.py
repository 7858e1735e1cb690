"""asyncio under load (scenario ``async``): requests per second at concurrency 64.

One healthy model ("m", ``faults.ok()``, no delay) on the fault server, in a separate
process (``python -m router.testing --port 0``). A contender serves a block of requests
with a fixed pool of CONCURRENCY = 64 worker tasks, each taking the next request as soon
as its last one answered, so that 64 are in flight until the block drains; requests per
second = block size / wall time of the block.

- ``raw_httpx``: ``await httpx2.AsyncClient.post(...)`` and ``.json()``: the floor
  (httpx2, the openai SDK's HTTP library: legacy httpx 0.29's AsyncClient managed 45 req/s
  here at concurrency 64, a fifth of the SDK's, so it was no floor);
- ``openai_sdk``: ``await openai.AsyncOpenAI(max_retries=0).chat.completions.create(...)``;
- ``bare``: ``await litellm.acompletion(model="openai/m", api_base=..., api_key=...,
  max_retries=0, timeout=30, messages=..., max_tokens=16)``;
- ``litellm_router``: ``await litellm.Router(one deployment, num_retries=0).acompletion(...)``;
- ``ours_openai``: ``await router.Router.from_dict(one target "primary", chain
  [primary]).acomplete(...)``, on the openai transport (the default for ``openai/...``);
- ``ours_litellm``: the same with ``transport: litellm``: the router before issue 19;
- ``bare_aa``: ``bare`` again, an A/A control: bare_aa/bare shows how far the ratio of
  two identical contenders strays on this machine.

Each round also times SEQUENTIAL requests of each contender one after another (one
task): the per-call latency of asyncio calls, for ours_openai/openai_sdk.

Everything runs in one event loop (litellm caches its async HTTP clients, which belong
to the loop that made them). Each contender first serves WARMUP requests (connection
pool, lazy imports), then the heap is frozen (gc.freeze). Then ROUNDS rounds of BLOCK
requests per contender (ROUNDS x BLOCK = 2000 each), in an order rotated every round;
the median over rounds of the per-round ratio ours/bare of requests per second is
reported. Targets: ours_litellm/bare >= 0.95; ours_openai/ours_litellm >= 2.5 (issue
19: the openai transport against the router as it was); per call, one at a time,
ours_openai/openai_sdk <= 1.5. Also reported: the router's own code per request
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
SEQUENTIAL = 40  # requests one after another per contender and round
TARGET_OURS_OVER_BARE = 0.95  # the litellm transport's requests/s over bare litellm's
TARGET_OPENAI_OVER_LITELLM = 2.5  # the openai transport's requests/s over the litellm transport's
TARGET_SEQUENTIAL_OVER_SDK = 1.5  # one call at a time: ours_openai's time per call over the SDK's

ACall = Callable[[], Awaitable[Any]]


def contenders(url: str) -> dict[str, ACall]:
    import httpx2
    import openai

    from router import Router

    lt = litellm()
    params = {"model": "openai/m", "api_base": url, "api_key": API_KEY, "max_retries": 0, "timeout": 30}
    limits = httpx2.Limits(max_connections=1000, max_keepalive_connections=100)  # the openai SDK's
    http = httpx2.AsyncClient(base_url=url, headers={"Authorization": f"Bearer {API_KEY}"}, timeout=30, limits=limits)

    async def raw_httpx() -> Any:
        answer = await http.post("/chat/completions", json={"model": "m", "messages": HI, "max_tokens": 16})
        answer.raise_for_status()
        return answer.json()

    sdk = openai.AsyncOpenAI(api_key=API_KEY, base_url=url, max_retries=0)

    async def openai_sdk() -> Any:
        return await sdk.chat.completions.create(model="m", messages=HI, max_tokens=16, timeout=30)

    async def bare() -> Any:
        return await lt.acompletion(**params, messages=HI, max_tokens=16)

    lr = lt.Router(model_list=[{"model_name": "m", "litellm_params": dict(params)}], num_retries=0)

    async def litellm_router() -> Any:
        return await lr.acompletion(model="m", messages=HI, max_tokens=16)

    def ours_on(transport: str) -> ACall:
        ours_router = Router.from_dict({
            "defaults": {"timeout": 30},
            "targets": {"primary": {"model": "openai/m", "api_base": url, "api_key": API_KEY, "transport": transport}},
            "chains": {"default": ["primary"]},
        })

        async def ours() -> Any:
            resp = await ours_router.acomplete(HI, max_tokens=16)
            if resp.route.served_by != "primary" or len(resp.route.attempts) != 1:
                raise RuntimeError(f"ours: unexpected route {resp.route!r}")
            return resp

        return ours

    return {"raw_httpx": raw_httpx, "openai_sdk": openai_sdk, "bare": bare, "litellm_router": litellm_router,
            "ours_openai": ours_on("openai"), "ours_litellm": ours_on("litellm"), "bare_aa": bare}


async def serve(call: ACall, requests: int, concurrency: int = CONCURRENCY) -> tuple[float, int]:
    """`requests` calls from `concurrency` worker tasks: (wall seconds, errors)."""
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
    await asyncio.gather(*(worker() for _ in range(concurrency)))
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
        per_call: dict[str, list[float]] = {name: [] for name in names}  # seconds, one request at a time
        failed: dict[str, int] = {name: 0 for name in names}
        for order in rotations(names, rounds):
            for name in order:
                clock.running = name
                wall, errors = await serve(calls[name], block)
                sequential, errors_one_by_one = await serve(calls[name], SEQUENTIAL, concurrency=1)
                clock.running = None
                rates[name].append(block / wall)
                per_call[name].append(sequential / SEQUENTIAL)
                failed[name] += errors + errors_one_by_one
    finally:
        gc.callbacks.remove(clock)
        gc.unfreeze()
    isolated_us = await isolated_cost(calls["ours_litellm"], calls["bare"])
    return {"rates": rates, "per_call": per_call, "errors": failed, "isolated_us": isolated_us,
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
    per_call = result["per_call"]
    report.line(f"{'contender':<16}{'median req/s':>14}{'min..max':>16}{'one at a time':>15}{'errors':>8}")
    for name in names:
        report.line(f"{name:<16}{median(rates[name]):>14.1f}{min(rates[name]):>9.1f}..{max(rates[name]):.1f}"
                    f"{median(per_call[name]) * 1e3:>12.3f} ms{errors[name]:>8}")

    pairs = (("ours_openai", "ours_litellm"), ("ours_litellm", "bare"), ("ours_openai", "openai_sdk"),
             ("openai_sdk", "raw_httpx"), ("openai_sdk", "bare"), ("litellm_router", "bare"), ("bare_aa", "bare"))
    ratios = {f"{a}/{b}": paired_ratio(rates[a], rates[b]) for a, b in pairs}
    sequential = paired_ratio(per_call["ours_openai"], per_call["openai_sdk"])
    report.line()
    report.line(f"requests/s, median over {rounds} rounds of the per-round ratio (interquartile range):")
    for key, r in ratios.items():
        note = "  <- A/A control: the noise floor" if key == "bare_aa/bare" else ""
        report.line(f"  {key:<16}{r['median']:>8.4f} ({r['q25']:.3f}..{r['q75']:.3f}){note}")
    report.line(f"one request at a time, time per call: ours_openai/openai_sdk {sequential['median']:.4f} "
                f"({sequential['q25']:.3f}..{sequential['q75']:.3f})")
    per_request_us = median((1 / o - 1 / b) * 1e6
                            for o, b in zip(rates["ours_litellm"], rates["bare"], strict=True))
    report.line(f"extra time per request at this concurrency (median over rounds of 1/ours_litellm - 1/bare): "
                f"{per_request_us:+.1f} us")
    report.line(f"ours' own code alone (ours_litellm, litellm.acompletion replaced by a recorded answer): "
                f"{result['isolated_us']:.1f} us per request")
    total = rounds * block
    report.line("garbage collection during the timed blocks, per request: " + "; ".join(
        f"{name} {result['gc_s'].get(name, 0.0) / total * 1e6:.1f} us "
        f"(passes by generation {dict(sorted(result['gc_passes'].get(name, {}).items()))})" for name in names))

    report.data.update({"server": server.how, "concurrency": CONCURRENCY, "rounds": rounds, "block": block,
                        "warmup": warmup, "requests_per_s": rates, "errors": errors,
                        "sequential_s_per_call": per_call, "sequential_ours_openai_over_openai_sdk": sequential,
                        "requests_per_s_ratios": ratios, "extra_us_per_request": per_request_us,
                        "ours_isolated_us_per_request": result["isolated_us"],
                        "gc_s": result["gc_s"], "gc_passes": result["gc_passes"]})
    value = ratios["ours_litellm/bare"]["median"]
    report.ratio("async_ours_litellm_over_bare_requests_per_s", value, f">={TARGET_OURS_OVER_BARE}",
                 value >= TARGET_OURS_OVER_BARE)
    value = ratios["ours_openai/ours_litellm"]["median"]
    report.ratio("async_ours_openai_over_ours_litellm_requests_per_s", value, f">={TARGET_OPENAI_OVER_LITELLM}",
                 value >= TARGET_OPENAI_OVER_LITELLM)
    value = sequential["median"]
    report.ratio("async_one_at_a_time_ours_openai_over_openai_sdk_s_per_call", value,
                 f"<={TARGET_SEQUENTIAL_OVER_SDK}", value <= TARGET_SEQUENTIAL_OVER_SDK)
    for key in ("ours_openai/openai_sdk", "openai_sdk/raw_httpx", "openai_sdk/bare", "litellm_router/bare",
                "bare_aa/bare"):
        report.ratio(f"async_{key.replace('/', '_over_')}_requests_per_s", ratios[key]["median"], "none", None)
    for name in names:
        report.ratio(f"async_{name}_requests_per_s", round(median(rates[name]), 1), "none", None)
    report.ratio("async_errors", sum(errors.values()), "0", sum(errors.values()) == 0)
    return report.finish()
