"""The cache tier: what a hit costs next to a healthy primary, and what the write costs a
healthy call.

The fault server runs in its own process (``python -m router.testing``: every model
answers ``faults.ok()``), a redis-server on a free loopback port. Every contender makes
the same sequential calls, cycling through 64 prompts (so writes store new keys and
replace old ones, as traffic does), max_tokens=16:

- ``primary``: a Router whose chain is [primary]: a healthy answer, no cache tier;
  ``primary_aa`` the same again, an A/A control: how far two identical contenders stray;
- ``write_memory`` / ``write_sqlite``: chain [primary, recent] with that backend: the same
  healthy answer, plus its write (inline for memory, on the background thread for sqlite);
- ``primary_rs`` / ``write_redis``: both with Redis state (a redis cache needs it), so the
  redis write is compared with the same Router without a cache tier;
- ``hit_memory`` / ``hit_sqlite`` / ``hit_redis``: chain [primary, recent] with the primary
  forced open (skipped in microseconds): every call is served from the cache.

R rounds; in each, every contender runs a block of B calls, in an order rotated every
round (bench.common.rotations). Ratios are taken between blocks of one round and the
median over rounds is reported with its interquartile range: block time for the write
overhead (target: write_X / primary <= 1.03; beside it the median call, what a caller
waits, and the CPU time of the whole process per call, the background writer's included),
median call in the block for the hit latency (p50 of a hit over p50 of a healthy answer).
Also: the cost of each step alone
(key + encoding on the caller's thread; one store write), to show why sqlite and Redis
write in the background.
"""

from __future__ import annotations

import gc
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from .common import CliServer, Report, median, paired_ratio, rotations, timed_block

TARGET_WRITE_OVERHEAD = 1.03
PROMPTS = [[{"role": "user", "content": f"question number {i}: what does a circuit breaker do?"}] for i in range(64)]


def _config(url: str, cache: dict[str, Any] | None, state: dict[str, Any] | None = None) -> dict[str, Any]:
    targets: dict[str, Any] = {"primary": {"model": "openai/m", "api_base": url, "api_key": "sk-bench-0123456789"}}
    if cache is not None:
        targets["recent"] = {"provider": "cache", **cache}
    return {"defaults": {"timeout": 30, "breaker": {"reset_timeout": 3600}}, "targets": targets,
            "chains": {"default": list(targets)}, **({"state": state} if state else {})}


def _contenders(url: str, redis_url: str | None, folder: Path) -> dict[str, tuple[Any, str]]:
    """name -> (Router, who must serve)."""
    from router import Router

    sqlite = {"backend": "sqlite", "path": str(folder / "bench.sqlite")}
    routers: dict[str, tuple[Any, str]] = {
        "primary": (Router.from_dict(_config(url, None)), "primary"),
        "primary_aa": (Router.from_dict(_config(url, None)), "primary"),
        "write_memory": (Router.from_dict(_config(url, {"backend": "memory"})), "primary"),
        "write_sqlite": (Router.from_dict(_config(url, sqlite)), "primary"),
        "hit_memory": (Router.from_dict(_config(url, {"backend": "memory"})), "recent"),
        "hit_sqlite": (Router.from_dict(_config(url, {**sqlite, "path": str(folder / "hits.sqlite")})), "recent"),
    }
    if redis_url is not None:
        def state() -> dict[str, Any]:
            return {"backend": "redis", "url": redis_url, "namespace": f"bench-{uuid.uuid4().hex[:8]}"}

        routers["primary_rs"] = (Router.from_dict(_config(url, None, state())), "primary")
        routers["write_redis"] = (Router.from_dict(_config(url, {"backend": "redis"}, state())), "primary")
        routers["hit_redis"] = (Router.from_dict(_config(url, {"backend": "redis"}, state())), "recent")
    return routers


def _isolated_costs(calls: int = 500) -> dict[str, float]:
    """Microseconds per step, alone: the caller's share (key + encoding), and one put per store."""
    from router.cache.policy import cache_key, encode
    from router.request import build_request
    from router.response import text_response

    request = build_request(PROMPTS[0], {"max_tokens": 16})
    response = text_response("Hello from the fault server.", id="x", model="m")
    started = time.perf_counter()
    for _ in range(calls):
        cache_key(request)
        encode(response)
    return {"key_and_encode_us": (time.perf_counter() - started) / calls * 1e6}


def _router_cpu_us(routers: dict[str, tuple[Any, str]], names: list[str], calls: int = 600) -> dict[str, float]:
    """CPU microseconds per call of the router's own work, every thread counted (the
    background writer's included, its queue flushed before the clock stops), with
    litellm.completion answering a recorded response at once: the network and litellm
    out of the picture, so what the write adds is not lost in the machine's noise. Fewer
    calls than the writer's queue holds, so none is dropped. Best of 3. For the stores that
    write on a thread this is an upper bound: in this tight loop the writer and the caller
    contend for the GIL, where a real call leaves the writer its network wait."""
    from .common import litellm

    lt = litellm()
    real = lt.completion
    recorded = real(model="openai/m", api_base=routers["primary"][0].config.targets["primary"].api_base,
                    api_key="sk-bench-0123456789", max_retries=0, messages=PROMPTS[0], max_tokens=16)
    lt.completion = lambda **kwargs: recorded
    out: dict[str, float] = {}
    try:
        for name in names:
            router, _ = routers[name]
            best = float("inf")
            for _ in range(3):
                started = time.process_time()
                for i in range(calls):
                    router.complete(PROMPTS[i % len(PROMPTS)], max_tokens=16)
                router.flush_cache()
                best = min(best, (time.process_time() - started) / calls)
            out[name] = best * 1e6
    finally:
        lt.completion = real
    return out


def _store_put_us(store: Any, calls: int = 300) -> float:
    payload = '{"id":"x","model":"m","created":0,"choices":[]}'
    started = time.perf_counter()
    for i in range(calls):
        store.put(f"k{i}", payload, time.time())
    return (time.perf_counter() - started) / calls * 1e6


def run(report: Report, *, quick: bool = False) -> dict[str, Any]:
    from router.cache.stores import MemoryStore, SqliteStore
    from router.testing.redis_server import RedisServer

    rounds, per_block, warmup = (12, 10, len(PROMPTS)) if quick else (60, 10, 2 * len(PROMPTS))
    redis: RedisServer | None
    try:
        redis = RedisServer().start()
    except RuntimeError as exc:
        report.line(f"no redis-server ({exc}): the redis contenders are left out")
        redis = None
    with tempfile.TemporaryDirectory(prefix="router-bench-cache-") as tmp, CliServer() as server:
        report.line(f"fault server: {server.how} at {server.url}; redis: {redis.url if redis else 'none'}")
        report.line(f"calls: {rounds} rounds x {per_block} calls per contender after {warmup} warm-up calls "
                    f"(the hit contenders' warm-up fills their cache); order rotated per round")
        routers = _contenders(server.url, redis.url if redis else None, Path(tmp))
        names = list(routers)
        for name, (router, _) in routers.items():
            for i in range(warmup):
                router.complete(PROMPTS[i % len(PROMPTS)], max_tokens=16)
            router.flush_cache()
            if name.startswith("hit_"):
                router.force_open("primary")

        counter = [0]

        def call(name: str) -> None:
            router, serves = routers[name]
            resp = router.complete(PROMPTS[counter[0] % len(PROMPTS)], max_tokens=16)
            counter[0] += 1
            if resp.route.served_by != serves:
                raise RuntimeError(f"{name}: served by {resp.route.served_by}, expected {serves}: {resp.route}")

        gc.collect()
        gc.freeze()
        blocks: dict[str, list[float]] = {name: [] for name in names}
        block_p50: dict[str, list[float]] = {name: [] for name in names}
        block_cpu: dict[str, list[float]] = {name: [] for name in names}  # this process, every thread
        for order in rotations(names, rounds):
            for name in order:
                cpu = time.process_time()
                block, latencies = timed_block(lambda: call(name), per_block)
                block_cpu[name].append(time.process_time() - cpu)
                blocks[name].append(block)
                block_p50[name].append(median(latencies))
        for router, _ in routers.values():
            router.flush_cache()
        gc.unfreeze()
        cpu_alone = _router_cpu_us(routers, [n for n in names if n.startswith(("primary", "write_"))])

        isolated = _isolated_costs()
        memory = MemoryStore(3600, 10000)
        isolated["memory_put_us"] = _store_put_us(memory)
        sqlite = SqliteStore(str(Path(tmp) / "isolated.sqlite"), 3600, 10000)
        isolated["sqlite_put_us"] = _store_put_us(sqlite)
        sqlite.close()
        if redis is not None:
            from router.cache.redis_answers import RedisStore, redis_client

            isolated["redis_put_us"] = _store_put_us(RedisStore(redis_client(redis.url), "iso", "recent", 3600, 10000))
    if redis is not None:
        redis.stop()

    report.line()
    report.line(f"{'contender':<14}{'median call':>13}{'median block':>14}")
    for name in names:
        report.line(f"{name:<14}{median(block_p50[name]) * 1e3:>10.3f} ms{median(blocks[name]) * 1e3:>11.1f} ms")

    pairs = [("write_memory", "primary"), ("write_sqlite", "primary"), ("primary_aa", "primary")]
    if redis is not None:
        pairs += [("write_redis", "primary_rs"), ("primary_rs", "primary")]
    writes = {f"{a}/{b}": paired_ratio(blocks[a], blocks[b]) for a, b in pairs}
    write_p50 = {f"{a}/{b}": paired_ratio(block_p50[a], block_p50[b]) for a, b in pairs}
    cpu_us = {f"{a}-{b}": median((x - y) / per_block * 1e6 for x, y in zip(block_cpu[a], block_cpu[b], strict=True))
              for a, b in pairs}
    hits = {f"{h}/primary": paired_ratio(block_p50[h], block_p50["primary"]) for h in names if h.startswith("hit_")}
    extra = {f"{a}-{b}": median((x - y) / per_block * 1e6 for x, y in zip(blocks[a], blocks[b], strict=True))
             for a, b in pairs}
    report.line()
    report.line(f"write overhead, median over {rounds} rounds of per-round ratios (IQR): block time; median call "
                f"(what the caller waits); and per call: extra wall time, extra CPU (all threads, the writer's too)")
    for key, r in writes.items():
        a, b = key.split("/")
        p50 = write_p50[key]
        note = "  <- A/A control: the noise floor" if a == "primary_aa" else ""
        report.line(f"  {key:<24}{r['median']:>8.4f} ({r['q25']:.3f}..{r['q75']:.3f}){p50['median']:>9.4f} "
                    f"({p50['q25']:.3f}..{p50['q75']:.3f}){extra[f'{a}-{b}']:+9.1f} us{cpu_us[f'{a}-{b}']:+9.1f} us"
                    f"{note}")
    report.line("cache hit p50 / healthy primary p50 (median of per-round ratios of the median call, IQR):")
    for key, r in hits.items():
        report.line(f"  {key:<24}{r['median']:>8.4f} ({r['q25']:.3f}..{r['q75']:.3f})")
    report.line("each step alone (us per call): " + ", ".join(f"{k} {v:.1f}" for k, v in isolated.items()))
    healthy_us = median(block_p50["primary"]) * 1e6
    alone = {}
    for a, b in pairs:
        alone[f"{a}/{b}"] = 1 + (cpu_alone[a] - cpu_alone[b]) / healthy_us
    report.line("router CPU per call with litellm answering a recorded response (us, all threads): "
                + ", ".join(f"{k} {v:.1f}" for k, v in cpu_alone.items()))
    report.line(f"so the write adds, in CPU, on a healthy call of {healthy_us / 1e3:.2f} ms: "
                + ", ".join(f"{k} {v:.4f}" for k, v in alone.items() if k.startswith("write_")))

    report.data.update({"rounds": rounds, "calls_per_block": per_block, "warmup": warmup,
                        "block_s": blocks, "block_p50_s": block_p50, "write_ratios": writes, "hit_ratios": hits,
                        "block_cpu_s": block_cpu, "router_cpu_us_alone": cpu_alone, "write_overhead_alone": alone, "write_p50_ratios": write_p50, "extra_cpu_us_per_call": cpu_us,
                        "extra_us_per_call": extra, "isolated_us": isolated})
    for key, r in writes.items():
        if key.startswith("write_"):
            name = f"cache_{key.split('/')[0]}_overhead"
            report.ratio(name, r["median"], f"<={TARGET_WRITE_OVERHEAD}", r["median"] <= TARGET_WRITE_OVERHEAD)
            report.ratio(f"{name}_median_call", write_p50[key]["median"], "none", None)
            report.ratio(f"{name}_cpu_alone", alone[key], "none", None)
    for key, r in hits.items():
        report.ratio(f"cache_{key.split('/')[0]}_p50_over_primary", r["median"], "none", None)
    return report.finish()
