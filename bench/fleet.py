"""Fleet: many router processes against one dead primary, with circuit state kept in
each process (`state: {backend: memory}`) or shared through Redis (`backend: redis`).
And what sharing costs when nothing fails.

Part 1, the fleet storm. The primary answers 503 to everything, the secondary is healthy.
4 OS processes (``python -m bench.fleet --worker``) x 4 threads each send 400 requests in
all (100 per process). Each process builds its own `Router.from_dict`: chain [primary,
secondary], retry {attempts: 3, min_wait: 0.05, max_wait: 0.5}, breaker {fail_max: 5,
reset_timeout: 60}, and the state backend under test (Redis: a fresh namespace per run).
The workers are started once (litellm's import costs ~4 CPU-seconds each), warm up
litellm's success and error paths from every thread (other model names), then for each
run build a fresh router, open their Redis connections (one per thread: a running fleet's
pools are warm), and wait; the parent then tells them all to start at the same instant
(a CLOCK_MONOTONIC time, which every process on the machine shares). Each run uses its
own model names on the fault server (a separate process, bench/faultproc.py), whose
per-model count is what the primary received. Each worker reports, as one JSON line on
stdout, what it answered, when it finished, and every admission of the primary's
circuit (when, with how many failures counted, how many attempts in flight in that
process, first try or retry) and every failure it recorded (and the circuit's state
after it), from which the parent explains which requests got through and why.

Targets: every request answered; requests received by the primary, for the whole fleet:
Redis <= fail_max + 3 = 8, memory <= 4 x (fail_max + 3) = 32. The first run of each
backend is judged; 2 more runs of each (alternating; none with --quick) show the spread.

Part 2, the happy path. One process (this one), healthy primary, the same config, memory
state vs Redis state: 50 warm-up calls each, then N = 500 sequential `Router.complete`
calls each, in 20 rounds x 25 calls, the order alternating every round (more and shorter
rounds than 10 x 50: a stall of the shared machine spoils one short block, not a long
one). The added cost per call is the median over rounds of (redis block - memory block)
/ 25 (target < 1000 us), the ratio the median of redis block / memory block. Cross-checks:
the difference of the median calls, a PING round trip, and the state work alone (admit,
succeeded, budget; no HTTP). Then Redis commands per call over a block of 200 calls: as
the router sends them (counted on its client: the round trips, named by script and
step), and as Redis counts them (`INFO commandstats`, which also counts the commands a
Lua script runs). Target: the circuit state is read at most once per call.

redis-server (the Debian package) is started here on a free loopback port, without
persistence, and killed at the end.
"""

from __future__ import annotations

import gc
import json
import logging
import os
import select
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from router.testing.redis_server import RedisServer

from .common import API_KEY, HI, ROOT, ControlledServer, Report, _child_env, median, quantile, timed_block

PROCESSES, THREADS, REQUESTS = 4, 4, 400
ATTEMPTS, MIN_WAIT, MAX_WAIT = 3, 0.05, 0.5
FAIL_MAX, RESET_TIMEOUT = 5, 60
TARGET_REDIS = FAIL_MAX + 3
TARGET_MEMORY = PROCESSES * (FAIL_MAX + 3)
TARGET_ADDED_US = 1000
MARK = "FLEET "  # prefix of the workers' protocol lines (litellm may print to stdout)


def router_config(url: str, primary: str, secondary: str, state: dict[str, Any]) -> dict[str, Any]:
    return {
        "defaults": {"timeout": 30, "deadline": 90,
                     "retry": {"attempts": ATTEMPTS, "min_wait": MIN_WAIT, "max_wait": MAX_WAIT},
                     "breaker": {"fail_max": FAIL_MAX, "reset_timeout": RESET_TIMEOUT}},
        "targets": {"primary": {"model": f"openai/{primary}", "api_base": url, "api_key": API_KEY},
                    "secondary": {"model": f"openai/{secondary}", "api_base": url, "api_key": API_KEY}},
        "chains": {"default": ["primary", "secondary"]},
        "state": state,
    }


# -- the worker process -----------------------------------------------------------------


class _Captured(logging.Handler):
    """The router's log lines in a worker (circuit changes, Redis fallback warnings)."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.records: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(f"{record.levelname} {record.getMessage()}")


def _send(payload: dict[str, Any]) -> None:
    sys.stdout.write(MARK + json.dumps(payload) + "\n")
    sys.stdout.flush()


class _Worker:
    def __init__(self) -> None:
        from .common import litellm

        self.lt = litellm()
        for name in ("LiteLLM Router", "LiteLLM", "litellm"):
            logging.getLogger(name).setLevel(logging.CRITICAL)
        self.log = _Captured()
        router_log = logging.getLogger("router")
        router_log.addHandler(self.log)
        router_log.setLevel(logging.INFO)
        router_log.propagate = False
        self.pool = ThreadPoolExecutor(THREADS)
        self.local = threading.local()
        self.router: Any = None

    def warm(self, url: str) -> dict[str, Any]:
        """litellm's success and error paths once per thread, before any measured run."""
        def one(i: int) -> None:
            try:
                self.lt.completion(model=f"openai/{('warm-ok', 'warm-503')[i % 2]}", api_base=url,
                                   api_key=API_KEY, max_retries=0, timeout=30, messages=HI, max_tokens=16)
            except Exception:
                pass

        list(self.pool.map(one, range(4 * THREADS)))
        return {"ok": True}

    def prepare(self, config: dict[str, Any], requests: int) -> dict[str, Any]:
        from router import Router
        from router.guards.circuit import CircuitOpen

        router = Router.from_dict(config)
        self.router, self.requests = router, requests
        self.log.records.clear()
        self.admits: list[dict[str, Any]] = []
        self.fails: list[dict[str, Any]] = []
        self.refused: Counter[str] = Counter()
        lock = threading.Lock()
        local = self.local
        circuit = router._guards["primary"].circuit
        storage = circuit._storage
        real_admit, real_record_failure = circuit.admit, storage.record_failure

        def admit() -> Any:  # instrumentation: who was let through, and what it saw
            local.tries += 1
            asked = time.monotonic()
            try:
                ticket = real_admit()
            except CircuitOpen as exc:
                with lock:
                    self.refused["closed_but_failing" if "closed but failing" in str(exc) else "open"] += 1
                raise
            t = time.monotonic()  # admitted: the request goes out now
            with lock:
                self.admits.append({"t": t, "asked_ms": (t - asked) * 1e3, "req": local.req,
                                    "try": local.tries, "probe": ticket.probe,
                                    "failures_seen": ticket.failures,
                                    "in_flight_here": circuit._closed_in_flight - (0 if ticket.probe else 1)})
            return ticket

        def record_failure(ticket: Any, policy: Any) -> Any:
            view = real_record_failure(ticket, policy)
            with lock:
                self.fails.append({"t": time.monotonic(), "req": local.req, "try": local.tries,
                                   "state": getattr(view, "state", None), "failures": getattr(view, "failures", None)})
            return view

        circuit.admit = admit
        storage.record_failure = record_failure
        client = getattr(router._state, "_client", None)
        if client is not None:  # one Redis connection per thread, opened now, not in the storm
            pool = client.connection_pool
            conns = [pool.get_connection() for _ in range(THREADS)]
            for conn in conns:
                pool.release(conn)
        list(self.pool.map(lambda _: None, range(THREADS)))  # every thread started
        return {"ready": True, "state": router._state.describe()}

    def go(self, at: float) -> dict[str, Any]:
        router, local = self.router, self.local
        answered: Counter[str] = Counter()
        errors: Counter[str] = Counter()
        latencies: list[float] = []
        lock = threading.Lock()

        def one(i: int) -> None:
            local.req, local.tries = f"{os.getpid()}:{i}", 0
            started = time.monotonic()
            try:
                resp = router.complete(HI, max_tokens=16)
            except Exception as exc:
                with lock:
                    errors[type(exc).__name__] += 1
                return
            with lock:
                answered[str(resp.route.served_by)] += 1
                latencies.append(time.monotonic() - started)

        time.sleep(max(0.0, at - time.monotonic()))
        started = time.monotonic()
        list(self.pool.map(one, range(self.requests)))
        end = time.monotonic()
        return {"pid": os.getpid(), "answered": sum(answered.values()), "served_by": dict(answered),
                "errors": dict(errors), "start": started, "end": end, "late_start_ms": (started - at) * 1e3,
                "latency_p50_s": median(latencies) if latencies else None,
                "latency_max_s": max(latencies) if latencies else None,
                "admits": self.admits, "fails": self.fails, "refused": dict(self.refused),
                "log": self.log.records[:20], "state": router._state.describe()}


def worker_main() -> int:
    worker = _Worker()
    _send({"started": True})
    for line in sys.stdin:
        if not line.strip():
            continue
        command = json.loads(line)
        op = command["op"]
        try:
            if op == "warm":
                answer = worker.warm(command["url"])
            elif op == "prepare":
                answer = worker.prepare(command["config"], command["requests"])
            elif op == "go":
                answer = worker.go(command["at"])
            else:
                answer = {"error": f"unknown op {op!r}"}
        except Exception as exc:
            answer = {"error": f"{type(exc).__name__}: {exc}"}
        _send(answer)
    return 0


# -- the parent side of the storm -------------------------------------------------------------


class Fleet:
    """PROCESSES worker processes, asked the same thing at once."""

    def __init__(self, n: int) -> None:
        self.procs = []
        self.errs = []
        for _ in range(n):
            err = tempfile.TemporaryFile(mode="w+")
            self.errs.append(err)
            self.procs.append(subprocess.Popen([sys.executable, "-m", "bench.fleet", "--worker"], cwd=ROOT,
                                               env=_child_env(), stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                               stderr=err, text=True))
        for i in range(n):
            self._read(i, 120)

    def _read(self, i: int, timeout: float) -> dict[str, Any]:
        proc = self.procs[i]
        assert proc.stdout is not None
        deadline = time.monotonic() + timeout
        while True:
            ready, _, _ = select.select([proc.stdout], [], [], max(0.0, deadline - time.monotonic()))
            line = proc.stdout.readline() if ready else ""
            if not line:
                self.errs[i].seek(0)
                raise RuntimeError(f"fleet worker {i} did not answer within {timeout} s (exit {proc.poll()}): "
                                   f"{self.errs[i].read()[-3000:]}")
            if line.startswith(MARK):
                answer = json.loads(line[len(MARK):])
                if "error" in answer:
                    raise RuntimeError(f"fleet worker {i}: {answer['error']}")
                return answer

    def ask(self, commands: list[dict[str, Any]], timeout: float = 120) -> list[dict[str, Any]]:
        for proc, command in zip(self.procs, commands, strict=True):
            assert proc.stdin is not None
            proc.stdin.write(json.dumps(command) + "\n")
            proc.stdin.flush()
        return [self._read(i, timeout) for i in range(len(self.procs))]

    def close(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                assert proc.stdin is not None
                proc.stdin.close()
        for proc in self.procs:
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        for err in self.errs:
            err.close()

    def __enter__(self) -> Fleet:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def storm(fleet: Fleet, server: Any, backend: str, state: dict[str, Any], tag: str) -> dict[str, Any]:
    from router.testing import faults

    p, s = f"p-fleet-{tag}", f"s-fleet-{tag}"
    server.script(p, faults.status(503))
    server.script(s, faults.ok())
    config = router_config(server.url, p, s, state)
    per = REQUESTS // PROCESSES
    prepared = fleet.ask([{"op": "prepare", "config": config, "requests": per}] * PROCESSES)
    at = time.monotonic() + 0.2
    results = fleet.ask([{"op": "go", "at": at}] * PROCESSES)
    end = max(r["end"] for r in results)
    admits = sorted(({**a, "proc": i} for i, r in enumerate(results) for a in r["admits"]), key=lambda a: a["t"])
    fails = sorted(({**f, "proc": i} for i, r in enumerate(results) for f in r["fails"]), key=lambda f: f["t"])
    refused: Counter[str] = Counter()
    for r in results:
        refused.update(r["refused"])
    return {
        "backend": backend, "models": [p, s], "state": prepared[0]["state"],
        "answered": sum(r["answered"] for r in results),
        "errors": dict(sum((Counter(r["errors"]) for r in results), Counter())),
        "primary_requests": server.count(p), "secondary_requests": server.count(s),
        "primary_admitted": len(admits), "refused": dict(refused),
        "wall_s": end - at, "worker_wall_s": [round(r["end"] - r["start"], 3) for r in results],
        "late_start_ms": [round(r["late_start_ms"], 2) for r in results],
        "latency_p50_s": median(r["latency_p50_s"] for r in results if r["latency_p50_s"] is not None),
        "latency_max_s": max(r["latency_max_s"] or 0 for r in results),
        "shared_at_end": [r["state"].get("shared") for r in results],
        "worker_log": [r["log"] for r in results],
        "admits": [{**a, "t_ms": round((a["t"] - at) * 1e3, 2)} for a in admits],
        "fails": [{**f, "t_ms": round((f["t"] - at) * 1e3, 2)} for f in fails],
    }


def explain(r: dict[str, Any]) -> list[str]:
    """Which primary requests got through, and why (from the workers' admissions)."""
    admits, fails = r["admits"], r["fails"]
    lines = []
    settle = {}
    for f in fails:
        settle.setdefault((f["proc"], f["req"], f["try"]), f["t_ms"])

    def in_flight(a: dict[str, Any]) -> int:  # fleet-wide, when `a` was admitted (itself included)
        return sum(1 for b in admits if b["t_ms"] <= a["t_ms"]
                   and settle.get((b["proc"], b["req"], b["try"]), float("inf")) > a["t_ms"])

    first_open: dict[int, float] = {}
    for f in fails:
        if f["state"] == "open":
            first_open.setdefault(f["proc"], f["t_ms"])
    unlimited = [a for a in admits if a["failures_seen"] == 0 and not a["probe"]]
    limited = [a for a in admits if a["failures_seen"] > 0 and not a["probe"]]
    probes = [a for a in admits if a["probe"]]
    retries = [a for a in admits if a["try"] > 1]
    peak = max((in_flight(a) for a in admits), default=0)
    lines.append(f"  {len(admits)} primary attempts admitted (the fault server counted {r['primary_requests']}): "
                 f"{len(admits) - len(retries)} first tries, {len(retries)} retries; at most {peak} in flight "
                 f"at once, fleet-wide")
    if unlimited:
        lines.append(f"  {len(unlimited)} admitted with no failure counted yet (a circuit with no failures admits "
                     f"every caller), from +{unlimited[0]['t_ms']:.1f} to +{unlimited[-1]['t_ms']:.1f} ms; first "
                     f"failure recorded at +{fails[0]['t_ms']:.1f} ms" if fails else "")
    if limited:
        lines.append(f"  {len(limited)} admitted with failures counted, because failures + attempts in flight in "
                     f"its own process < fail_max {FAIL_MAX} (other processes' attempts are not counted):")
        for a in limited[:12]:
            lines.append(f"    +{a['t_ms']:.1f} ms p{a['proc']} {'retry' if a['try'] > 1 else 'first try'}: "
                         f"{a['failures_seen']} failure(s) counted, {a['in_flight_here']} in flight in p{a['proc']}, "
                         f"{in_flight(a) - 1} in flight fleet-wide")
    if probes:
        lines.append(f"  {len(probes)} half-open probes")
    if first_open:
        t_open = min(first_open.values())
        after = [a for a in admits if a["t_ms"] > first_open.get(a["proc"], float("inf"))]
        lines.append(f"  circuit first seen open at +{t_open:.1f} ms; by each process: "
                     + ", ".join(f"p{p} +{t:.1f}" for p, t in sorted(first_open.items()))
                     + f" ms; admitted after its process saw it open: {len(after)}")
    seqs = ([("fleet", fails)] if r["backend"] == "redis" else
            [(f"p{p}", [f for f in fails if f["proc"] == p]) for p in sorted({f["proc"] for f in fails})])
    lines.append("  failure count after each recorded failure (* = open after it): " + "; ".join(
        f"{who} " + " ".join(f"{f['failures']}{'*' if f['state'] == 'open' else ''}" for f in seq[:20])
        + (" ..." if len(seq) > 20 else "") for who, seq in seqs))
    return lines


def _row(name: str, r: dict[str, Any]) -> str:
    return (f"{name:<18}{r['answered']:>5}/{REQUESTS:<5}{r['primary_requests']:>8}{r['secondary_requests']:>11}"
            f"{r['wall_s']:>8.2f}s{r['latency_p50_s']:>8.3f}s{r['latency_max_s']:>8.2f}s  "
            f"refused {r['refused'] or '-'}  errors {r['errors'] or '-'}")


# -- part 2: the happy path ---------------------------------------------------------------


class _Counting:
    """Counts what a redis-py client sends, one entry per round trip, named by script and step."""

    def __init__(self, client: Any, names: dict[str, str]) -> None:
        self.counts: Counter[str] = Counter()
        self._names = names
        self._real = client.execute_command
        client.execute_command = self

    def __call__(self, *args: Any, **options: Any) -> Any:
        name = str(args[0]).upper()
        if name == "EVALSHA":
            script = self._names.get(str(args[1]), "?")
            numkeys = int(args[2])
            name = f"EVALSHA {script}" + (f":{args[3 + numkeys]}" if script == "step" else "")
        self.counts[name] += 1
        return self._real(*args, **options)


def state_work_us(router: Any, calls: int = 1000) -> float:
    """Microseconds per call of what a happy call asks of the primary's circuit and budget
    (admit, succeeded, budget.succeeded), without the HTTP call: best of 3 batches."""
    circuit, budget = router._guards["primary"].circuit, router._guards["primary"].budget
    best = float("inf")
    for _ in range(3):
        started = time.perf_counter()
        for _ in range(calls):
            ticket = circuit.admit()
            circuit.succeeded(ticket)
            budget.succeeded()
        best = min(best, (time.perf_counter() - started) / calls)
    return best * 1e6


def happy_path(report: Report, server: Any, redis_url: str, *, quick: bool) -> dict[str, Any]:
    import redis

    from router import Router
    from router.testing import faults

    rounds, per_block, warmup, counted = (10, 20, 20, 100) if quick else (20, 25, 50, 200)
    server.script("happy-p", faults.ok())
    server.script("happy-s", faults.ok())
    routers = {
        "memory": Router.from_dict(router_config(server.url, "happy-p", "happy-s", {"backend": "memory"})),
        "redis": Router.from_dict(router_config(server.url, "happy-p", "happy-s",
                                                {"backend": "redis", "url": redis_url,
                                                 "namespace": f"fleet-happy-{uuid.uuid4().hex[:8]}"})),
    }

    def call(router: Any) -> Any:
        resp = router.complete(HI, max_tokens=16)
        if resp.route.served_by != "primary" or len(resp.route.attempts) != 1:
            raise RuntimeError(f"happy path: unexpected route {resp.route!r}")
        return resp

    for router in routers.values():
        for _ in range(warmup):
            call(router)
    probe = redis.Redis.from_url(redis_url)  # the bench's own connection, for PING and INFO
    pings = []
    for _ in range(300):
        t = time.perf_counter()
        probe.ping()
        pings.append(time.perf_counter() - t)

    gc.collect()
    gc.freeze()
    blocks: dict[str, list[float]] = {"memory": [], "redis": []}
    calls: dict[str, list[float]] = {"memory": [], "redis": []}
    try:
        for r in range(rounds):
            for name in ("memory", "redis") if r % 2 == 0 else ("redis", "memory"):
                block, latencies = timed_block(lambda: call(routers[name]), per_block)
                blocks[name].append(block)
                calls[name] += latencies
    finally:
        gc.unfreeze()
    diffs_us = [(b - a) / per_block * 1e6 for a, b in zip(blocks["memory"], blocks["redis"], strict=True)]
    state_us = {name: state_work_us(router) for name, router in routers.items()}
    ratios = [b / a for a, b in zip(blocks["memory"], blocks["redis"], strict=True)]

    # commands per call: client side (round trips) and server side (INFO commandstats)
    state = routers["redis"]._state
    names = {state._scripts.step.sha: "step", state._scripts.acquire.sha: "acquire",
             state._scripts.release.sha: "release"}
    for budget in (guard.budget for guard in routers["redis"]._guards.values()):
        add = getattr(getattr(budget, "_shared", None), "_add", None)
        if add is not None:
            names[add.sha] = "budget_add"
    counter = _Counting(state._client, names)
    before = probe.info("commandstats")
    total_before = probe.info("stats")["total_commands_processed"]
    for _ in range(counted):
        call(routers["redis"])
    total_after = probe.info("stats")["total_commands_processed"]
    after = probe.info("commandstats")
    server_side = {k.removeprefix("cmdstat_"): v["calls"] - before.get(k, {}).get("calls", 0)
                   for k, v in after.items()}
    server_side = {k: v for k, v in sorted(server_side.items()) if v and k != "info"}
    total_server = total_after - total_before - 1  # minus the first INFO stats (in-script commands count too)
    client_side = dict(sorted(counter.counts.items()))
    reads = sum(v for k, v in client_side.items() if k == "EVALSHA step:view" or k in ("GET", "MGET"))
    shared = state.describe()
    for router in routers.values():
        router._state.close()
    probe.close()

    out = {
        "rounds": rounds, "calls_per_block": per_block, "warmup": warmup,
        "memory_block_s": blocks["memory"], "redis_block_s": blocks["redis"],
        "added_us_per_call_by_round": diffs_us,
        "added_us_median": median(diffs_us), "added_us_q25": quantile(diffs_us, 0.25),
        "added_us_q75": quantile(diffs_us, 0.75),
        "redis_over_memory": median(ratios),
        "call_median_us": {k: median(v) * 1e6 for k, v in calls.items()},
        "call_p95_us": {k: quantile(v, 0.95) * 1e6 for k, v in calls.items()},
        "call_median_diff_us": (median(calls["redis"]) - median(calls["memory"])) * 1e6,
        "state_work_us": state_us,
        "redis_ping_median_us": median(pings) * 1e6,
        "counted_calls": counted, "client_round_trips": client_side,
        "server_commandstats": server_side, "server_total_commands_processed": total_server,
        "state_reads_per_call": reads / counted,
        "round_trips_per_call": sum(client_side.values()) / counted,
        "server_commands_per_call": sum(server_side.values()) / counted,
        "redis_state": shared,
    }
    report.line()
    report.line(f"-- happy path: 1 process, healthy primary, {rounds} rounds x {per_block} sequential calls per "
                f"backend (after {warmup} warm-up calls), order alternating --")
    report.line(f"median call: memory {out['call_median_us']['memory']:.0f} us, redis "
                f"{out['call_median_us']['redis']:.0f} us (p95 {out['call_p95_us']['memory']:.0f} / "
                f"{out['call_p95_us']['redis']:.0f} us); redis PING round trip median "
                f"{out['redis_ping_median_us']:.0f} us")
    report.line(f"redis - memory per call (median over rounds): {out['added_us_median']:.0f} us "
                f"(IQR {out['added_us_q25']:.0f}..{out['added_us_q75']:.0f}); redis/memory "
                f"{out['redis_over_memory']:.3f}; by round: {' '.join(f'{d:.0f}' for d in diffs_us)}")
    report.line(f"cross-checks: difference of median calls {out['call_median_diff_us']:.0f} us; the state work "
                f"alone (admit + succeeded + budget, no HTTP, best of 3 x 1000): memory "
                f"{state_us['memory']:.1f} us, redis {state_us['redis']:.1f} us per call")
    report.line(f"redis commands over {counted} calls: sent by the router (round trips) {client_side} = "
                f"{out['round_trips_per_call']:.2f}/call; counted by redis (INFO commandstats, in-script "
                f"commands included) {server_side} = {out['server_commands_per_call']:.2f}/call "
                f"(total_commands_processed {total_server})")
    report.line(f"circuit-state reads per call: {out['state_reads_per_call']:.2f} (EVALSHA of the step script, "
                f"op view: GET state, opened_at, epoch and fail_counter + TIME inside one script); redis state "
                f"at the end: {shared}")
    return out


# -- the scenario -------------------------------------------------------------------------


def run(report: Report, *, quick: bool = False) -> dict[str, Any]:
    from router.testing import faults

    for name in ("LiteLLM Router", "LiteLLM", "litellm"):
        logging.getLogger(name).setLevel(logging.CRITICAL)
    repeats = 0 if quick else 2
    run_id = uuid.uuid4().hex[:8]
    runs: dict[str, list[dict[str, Any]]] = {"memory": [], "redis": []}
    started = time.perf_counter()
    with RedisServer() as redis_server, ControlledServer() as server:
        report.line(f"fault server: {server.how} at {server.url}")
        report.line(f"redis: redis-server on {redis_server.url} (no persistence), started here")
        report.line(f"fleet: {PROCESSES} processes x {THREADS} threads, {REQUESTS} requests; retry {ATTEMPTS} "
                    f"attempts, waits {MIN_WAIT}..{MAX_WAIT} s; breaker fail_max={FAIL_MAX}, "
                    f"reset_timeout={RESET_TIMEOUT} s")
        server.script("warm-ok", faults.ok())
        server.script("warm-503", faults.status(503))
        with Fleet(PROCESSES) as fleet:
            fleet.ask([{"op": "warm", "url": server.url}] * PROCESSES)
            report.line(f"workers started and warmed up in {time.perf_counter() - started:.1f} s")
            for i in range(1 + repeats):
                for backend in ("memory", "redis") if i % 2 == 0 else ("redis", "memory"):
                    state = ({"backend": "memory"} if backend == "memory" else
                             {"backend": "redis", "url": redis_server.url, "namespace": f"fleet-{run_id}-{i}"})
                    runs[backend].append(storm(fleet, server, backend, state, f"{run_id}-{backend}-{i}"))
        report.line()
        report.line(f"-- fleet storm: primary 503 throughout, {PROCESSES} processes x {THREADS} threads --")
        report.line(f"{'backend':<18}{'answered':>10}{'primary':>8}{'secondary':>11}{'wall':>9}{'p50':>9}{'max':>9}")
        for backend in ("memory", "redis"):
            report.line(_row(backend, runs[backend][0]))
        for backend in ("memory", "redis"):
            r = runs[backend][0]
            report.line(f"{backend}: why the primary's requests got through (first run):")
            for line in explain(r):
                report.line(line)
            if any(r["worker_log"]) and backend == "redis":
                fallbacks = [ln for log in r["worker_log"] for ln in log if "redis" in ln]
                if fallbacks:
                    report.line(f"  WARNING: redis fallback in a worker: {fallbacks[:4]}")
            report.line(f"  start skew across processes {max(r['late_start_ms']) - min(r['late_start_ms']):.2f} ms"
                        + (f"; redis shared at the end: {r['shared_at_end']}" if backend == "redis" else ""))
        if repeats:
            for backend in ("memory", "redis"):
                more = runs[backend][1:]
                report.line(f"{backend}, {len(more)} more runs: answered {[r['answered'] for r in more]}, primary "
                            f"requests {[r['primary_requests'] for r in more]}, wall "
                            f"{[round(r['wall_s'], 2) for r in more]} s"
                            + (f", redis shared at the end {[all(r['shared_at_end']) for r in more]}"
                               if backend == "redis" else ""))
        happy = happy_path(report, server, redis_server.url, quick=quick)
    report.data.update({"processes": PROCESSES, "threads": THREADS, "requests": REQUESTS, "storm": runs,
                        "happy_path": happy})

    for backend, target in (("memory", TARGET_MEMORY), ("redis", TARGET_REDIS)):
        r = runs[backend][0]
        report.ratio(f"fleet_{backend}_answered", r["answered"], str(REQUESTS), r["answered"] == REQUESTS)
        report.ratio(f"fleet_{backend}_primary_requests", r["primary_requests"], f"<={target}",
                     r["primary_requests"] <= target)
        report.ratio(f"fleet_{backend}_wall_s", round(r["wall_s"], 3), "none", None)
        if len(runs[backend]) > 1:
            report.ratio(f"fleet_{backend}_primary_requests_max_of_{len(runs[backend]) - 1}_more_runs",
                         max(x["primary_requests"] for x in runs[backend][1:]), "none", None)
    report.ratio("happy_redis_minus_memory_us", round(happy["added_us_median"], 1), f"<{TARGET_ADDED_US}",
                 happy["added_us_median"] < TARGET_ADDED_US)
    report.ratio("happy_redis_over_memory", happy["redis_over_memory"], "none", None)
    report.ratio("happy_redis_state_reads_per_call", round(happy["state_reads_per_call"], 3), "<=1",
                 happy["state_reads_per_call"] <= 1)
    report.ratio("happy_redis_round_trips_per_call", round(happy["round_trips_per_call"], 3), "none", None)
    report.ratio("happy_redis_server_commands_per_call", round(happy["server_commands_per_call"], 3), "none", None)
    return report.finish()


if __name__ == "__main__" and sys.argv[1:] == ["--worker"]:
    sys.exit(worker_main())
