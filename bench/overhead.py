"""Overhead on the happy path: what routing a call costs when nothing fails.

One healthy model ("m", `faults.ok()`) on the fault server, which runs in a separate
process (``python -m router.testing --port 0``). The contenders make the same
sequential call (messages=[{"role": "user", "content": "hi"}], max_tokens=16):

- ``raw_httpx``: one ``httpx2.Client.post`` of the JSON body, the answer ``.json()``: the
  floor under any client (httpx2: the openai SDK's HTTP library, httpx's successor);
- ``openai_sdk``: ``openai.OpenAI(max_retries=0).chat.completions.create(...)``, what the
  openai transport calls;
- ``bare``: ``litellm.completion(model="openai/m", api_base=..., api_key=..., max_retries=0, timeout=30)``,
  one HTTP request through litellm and nothing else;
- ``litellm_router``: ``litellm.Router(model_list=[one deployment], num_retries=0).completion(model="m")``;
- ``ours_openai``: ``router.Router.from_dict(one target "primary", chain default: [primary]).complete(...)``,
  the target on its default transport for an ``openai/...`` model (the openai SDK directly);
- ``ours_litellm``: the same with ``transport: litellm`` (the router before issue 19);
- ``bare_aa``: ``bare`` again, an A/A control: bare_aa/bare shows how far the ratio of
  two identical contenders strays on this machine, i.e. the resolution of the others.

Targets: ours_openai/openai_sdk <= 1.5 and ours_litellm/bare <= 1.03 (block time).

Why this design: a call is ~4-5 ms of loopback HTTP + litellm's own request building
and response parsing, and the router should add well under 100 us to that, so the
signal is ~1 % on a shared 2-core machine whose speed drifts by more than that within
seconds. Each contender is warmed up first (50 calls: connection pools, litellm's lazy
imports and caches), then the heap is frozen (gc.freeze) so that collections stay
short. Then R = 50 rounds; in each round every contender runs a block of N/R = 20
calls (~0.1 s), in an order rotated every round; each block is timed with
perf_counter. A ratio is taken between blocks of the same round (a fraction of a
second apart, so they saw the same machine) and the median over rounds is reported,
with its interquartile range. Short blocks and many rounds matter here: with 10
rounds of 100 calls the A/A ratio strayed by 15 %.

Also reported, as a cross-check that ignores stalls inside a block: the same median
of per-round ratios of each block's *median call*. Target: ours/bare (block time)
<= 1.03. The router's extra time per call is the median over rounds of
(ours block - bare block) / 20; next to it, the cost of the router's own code alone
(litellm.completion replaced by a recorded answer), to tell how much of that extra
time is the router's Python and how much comes from running it between real calls.
"""

from __future__ import annotations

import gc
import time
from collections.abc import Callable
from typing import Any

from .common import (
    API_KEY,
    HI,
    CliServer,
    Report,
    litellm,
    median,
    paired_ratio,
    quantile,
    rotations,
)

TARGET_OURS_OVER_BARE = 1.03  # the litellm transport over bare litellm
TARGET_OURS_OVER_SDK = 1.5  # the openai transport over the bare openai SDK


def contenders(url: str) -> dict[str, tuple[Callable[[], Any], Callable[[Any], bool]]]:
    """name -> (one call, check of its answer)."""
    import httpx2
    import openai

    from router import Router
    from router.testing.faults import DEFAULT_TEXT

    lt = litellm()
    params = {"model": "openai/m", "api_base": url, "api_key": API_KEY, "max_retries": 0}

    http = httpx2.Client(base_url=url, headers={"Authorization": f"Bearer {API_KEY}"}, timeout=30)

    def raw_httpx() -> Any:
        answer = http.post("/chat/completions", json={"model": "m", "messages": HI, "max_tokens": 16})
        answer.raise_for_status()
        return answer.json()

    sdk = openai.OpenAI(api_key=API_KEY, base_url=url, max_retries=0)

    def openai_sdk() -> Any:
        return sdk.chat.completions.create(model="m", messages=HI, max_tokens=16, timeout=30)

    def bare() -> Any:
        return lt.completion(**params, timeout=30, messages=HI, max_tokens=16)

    lr = lt.Router(model_list=[{"model_name": "m", "litellm_params": dict(params)}], num_retries=0)

    def litellm_router() -> Any:
        return lr.completion(model="m", messages=HI, max_tokens=16)

    def ours_on(transport: str) -> Callable[[], Any]:
        ours_router = Router.from_dict({
            "defaults": {"timeout": 30},
            "targets": {"primary": {"model": "openai/m", "api_base": url, "api_key": API_KEY, "transport": transport}},
            "chains": {"default": ["primary"]},
        })
        return lambda: ours_router.complete(HI, max_tokens=16)

    def answered(resp: Any) -> bool:
        if isinstance(resp, dict):
            return resp["choices"][0]["message"]["content"] == DEFAULT_TEXT
        return resp.choices[0].message.content == DEFAULT_TEXT

    def ours_answered(resp: Any) -> bool:
        return answered(resp) and resp.route.served_by == "primary" and len(resp.route.attempts) == 1

    return {"raw_httpx": (raw_httpx, answered), "openai_sdk": (openai_sdk, answered), "bare": (bare, answered),
            "litellm_router": (litellm_router, answered), "ours_openai": (ours_on("openai"), ours_answered),
            "ours_litellm": (ours_on("litellm"), ours_answered), "bare_aa": (bare, answered)}


def isolated_cost(ours: Callable[[], Any], bare: Callable[[], Any], calls: int = 3000) -> float:
    """Microseconds per call of the router's own code: `ours` with litellm.completion
    answering a recorded response at once (best of 3 batches)."""
    lt = litellm()
    recorded = bare()
    real = lt.completion
    lt.completion = lambda **kwargs: recorded
    try:
        best = float("inf")
        for _ in range(3):
            started = time.perf_counter()
            for _ in range(calls):
                ours()
            best = min(best, (time.perf_counter() - started) / calls)
    finally:
        lt.completion = real
    return best * 1e6


def run(report: Report, *, quick: bool = False) -> dict[str, Any]:
    n, rounds, warmup = (300, 15, 20) if quick else (1000, 50, 50)
    per_block = n // rounds
    with CliServer() as server:
        report.line(f"fault server: {server.how} at {server.url}")
        report.line(f"calls: {rounds} rounds x {per_block} calls per contender "
                    f"(= {rounds * per_block} each) after {warmup} warm-up calls; order rotated per round")
        calls = contenders(server.url)
        names = list(calls)
        for name in names:
            fn, check = calls[name]
            for _ in range(warmup):
                resp = fn()
            if not check(resp):
                raise RuntimeError(f"{name}: unexpected answer during warm-up: {resp!r}")

        # Everything allocated so far (litellm's modules, caches, clients) goes to the GC's
        # permanent generation, so that collections during the timed blocks stay short.
        gc.collect()
        gc.freeze()
        blocks: dict[str, list[float]] = {name: [] for name in names}  # seconds per block
        block_medians: dict[str, list[float]] = {name: [] for name in names}  # median call per block
        latencies: dict[str, list[float]] = {name: [] for name in names}  # every call
        perf = time.perf_counter
        for order in rotations(names, rounds):
            for name in order:
                fn, check = calls[name]
                lat = []
                started = perf()
                for _ in range(per_block):
                    t = perf()
                    resp = fn()
                    lat.append(perf() - t)
                blocks[name].append(perf() - started)
                block_medians[name].append(median(lat))
                latencies[name] += lat
                if not check(resp):
                    raise RuntimeError(f"{name}: unexpected answer: {resp!r}")
        isolated_us = isolated_cost(calls["ours_litellm"][0], calls["bare"][0])
        gc.unfreeze()

    report.line()
    report.line(f"{'contender':<16}{'median/call':>13}{'p90/call':>11}{'median block':>14}")
    for name in names:
        report.line(f"{name:<16}{median(latencies[name]) * 1e3:>10.3f} ms"
                    f"{quantile(latencies[name], 0.9) * 1e3:>8.3f} ms{median(blocks[name]) * 1e3:>11.1f} ms")

    pairs = [("ours_openai", "openai_sdk"), ("ours_litellm", "bare"), ("openai_sdk", "raw_httpx"),
             ("bare", "openai_sdk"), ("litellm_router", "bare"), ("ours_litellm", "ours_openai"),
             ("ours_litellm", "litellm_router"), ("bare_aa", "bare")]
    ratios = {f"{a}/{b}": paired_ratio(blocks[a], blocks[b]) for a, b in pairs}
    median_ratios = {f"{a}/{b}": paired_ratio(block_medians[a], block_medians[b]) for a, b in pairs}
    report.line()
    report.line(f"median over {rounds} rounds of the per-round ratio (interquartile range):")
    report.line(f"  {'':<22}{'block time':>26}{'median call in block':>30}")
    for key in ratios:
        r, m = ratios[key], median_ratios[key]
        note = "  <- A/A control: the noise floor" if key == "bare_aa/bare" else ""
        report.line(f"  {key:<22}{r['median']:>8.4f} ({r['q25']:.3f}..{r['q75']:.3f})"
                    f"{m['median']:>12.4f} ({m['q25']:.3f}..{m['q75']:.3f}){note}")

    def extra_us(a: str, b: str) -> float:
        return median((x - y) / per_block * 1e6 for x, y in zip(blocks[a], blocks[b], strict=True))

    overhead_us, sdk_us, lr_us = extra_us("ours_litellm", "bare"), extra_us("ours_openai", "openai_sdk"), \
        extra_us("litellm_router", "bare")
    report.line(f"extra time per call (median over rounds of the block difference / {per_block}): "
                f"ours_openai - openai_sdk = {sdk_us:+.1f} us; ours_litellm - bare = {overhead_us:+.1f} us; "
                f"litellm_router - bare = {lr_us:+.1f} us")

    report.line(f"ours' own code alone (ours_litellm, litellm.completion replaced by a recorded answer): "
                f"{isolated_us:.1f} us per call")

    report.data.update({
        "ours_isolated_us_per_call": isolated_us,
        "server": server.how, "rounds": rounds, "calls_per_block": per_block, "warmup": warmup,
        "median_call_ms": {k: median(v) * 1e3 for k, v in latencies.items()},
        "p90_call_ms": {k: quantile(v, 0.9) * 1e3 for k, v in latencies.items()},
        "block_s": blocks,
        "block_time_ratios": ratios,
        "block_median_call_ratios": median_ratios,
        "extra_us_per_call": {"ours_litellm-bare": overhead_us, "ours_openai-openai_sdk": sdk_us,
                              "litellm_router-bare": lr_us},
    })
    ours_sdk = ratios["ours_openai/openai_sdk"]["median"]
    report.ratio("overhead_ours_openai_over_openai_sdk", ours_sdk, f"<={TARGET_OURS_OVER_SDK}",
                 ours_sdk <= TARGET_OURS_OVER_SDK)
    ours_bare = ratios["ours_litellm/bare"]["median"]
    report.ratio("overhead_ours_litellm_over_bare", ours_bare, f"<={TARGET_OURS_OVER_BARE}",
                 ours_bare <= TARGET_OURS_OVER_BARE)
    for key in ("openai_sdk/raw_httpx", "bare/openai_sdk", "litellm_router/bare", "ours_litellm/ours_openai",
                "ours_litellm/litellm_router", "bare_aa/bare"):
        report.ratio(f"overhead_{key.replace('/', '_over_')}", ratios[key]["median"], "none", None)
    report.ratio("overhead_ours_openai_median_call_over_openai_sdk", median_ratios["ours_openai/openai_sdk"]["median"],
                 "none", None)
    report.ratio("overhead_ours_openai_us_per_call", round(sdk_us, 1), "none", None)
    report.ratio("overhead_ours_litellm_us_per_call", round(overhead_us, 1), "none", None)
    return report.finish()
