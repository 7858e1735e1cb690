"""The gateway (scenario ``serve``): what `router serve` adds to a call, next to LiteLLM's proxy.

One healthy upstream: ``python -m bench.upstream`` in a process of its own, one canned
ChatCompletion for every request (an asyncio protocol parsing with httptools on uvloop:
10-20 µs of CPU a request; the fault server, a ThreadingHTTPServer, takes ~100 µs and its
tail grows with connections; bench/upstream.py has the numbers). One client for every
contender, in this process: one ``aiohttp.ClientSession`` (64 connections) on a uvloop
loop, posting the same chat completion JSON, at concurrency 1 and 16 (a pool of worker
tasks, each taking the next request when its last one answered). Why: against that
upstream, ``httpx.AsyncClient`` (the client before) costs ~0.5 ms of CPU a request at c=1
and ~1 ms at c=16, where its own p99 is 92-98 ms: most of the tail earlier runs took for
the upstream's. aiohttp: 60-80 µs a request on uvloop (85-170 µs on asyncio's loop), p99 at
c=16 1.5-3.7 ms. uvloop is also the gateway's loop, so ``router_in_process`` runs on it.
Contenders (each a process of its own but ``router_in_process``):

- ``direct``: the upstream itself (the floor);
- ``ours``: ``router serve`` (1 worker: Starlette on uvicorn, uvloop + httptools), a
  chain of one target pointing at the upstream;
- ``router_in_process``: ``Router.acomplete`` in the benchmark's own process, the same
  target: the router and the openai SDK without the gateway's HTTP hop, so ``ours`` minus this is
  what the gateway layer itself adds;
- ``ours_granian``: the same app served by granian (``--stack``: the stack comparison;
  granian is installed into ``bench/.deps-granian`` with ``pip install --target``, it is
  not a dependency of the package); with it, the two stacks alone: GET /v1/models (auth,
  JSON, no upstream) at 16 concurrent;
- ``litellm_proxy``: LiteLLM's proxy (``litellm`` at our pinned version, in its own
  virtualenv ``bench/.venv-litellm-proxy``, made on first use: litellm[proxy] pins a
  `litellm-proxy` package the index here lacks, so its server's own dependencies are
  installed by name), the same upstream as its one model, retries off.

ROUNDS rounds, the contenders' order rotated each round; per round and contender, the
p50 and p99 of the per-request latency; added latency = contender minus ``direct`` in the
same round; reported: the median over rounds. Targets for ``ours`` at 16 concurrent:
added p50 <= 1 ms, p99 <= 3 ms, and less than a third of LiteLLM's proxy's added p99.
Requests per second per worker: at 16 concurrent, block size / wall time.

The load-independent number, ``cpu_us_per_request``: the CPU time (utime + stime,
/proc/<pid>/stat, with its live descendants: granian's workers) a contender's process
spent in a block over the block's requests, median over rounds; for every contender with
a process of its own (``direct``: the upstream's). A clock tick (10 ms) over a block is
67 µs a request at c=1 (150 requests), 21 µs at c=16 (480): the upstream's rounds to 0-20.
Measured (2 shared cores): with the openai SDK carrying the upstream call, ``ours`` spent
990-1031 µs a request at c=16 (three runs), LiteLLM's proxy 9073-9250. The SDK's HTTP
stack was half of that (cProfile); async plain calls now go over aiohttp
(router/targets/async_post.py) and ``ours`` spends 375 µs a request at c=16 (633 at c=1),
LiteLLM's proxy ~10 000: ~27x ours. At c=16 one worker is CPU-bound, and with 16 callers
each request waits for the others, so its latency is ~16 / (req/s) (Little's law): 2552
req/s, p50 6.1 ms against the upstream's 1.3 ms. The c=16 targets (added p50 <= 1 ms)
would need ~7000 req/s from one worker, ~140 µs a request: less than the aiohttp client
call and the HTTP server's parsing and writing alone, so not reachable in one CPython
process; the CPU a request is the number to move. At c=1: added p50 +0.77 ms, p99 +1.1
ms. Direct: p50 0.1 ms at c=1; 1.3 ms, p99 1.8 ms at c=16 (17 and 188 ms with the fault
server and httpx before). ``router_in_process`` at c=16 is bound the same way, by this
process's one core (the router and the client). With ``--stack`` (one run, load 0.7):
granian 490 µs a request at c=16 (2181 req/s), uvicorn 354 (2630); the stacks alone
(GET /v1/models) 83 and 52 µs a request.

The router's target is ``openai/m``, so it reaches the upstream on the openai transport
(litellm is never imported in the gateway). Profiled (cProfile, 3000 requests at 16
concurrent, after aiohttp), the Python time a request splits about evenly between the
router (walk, guards, answer types, events and metrics: ~0.3), the aiohttp call (~0.25)
and uvicorn, Starlette and the gateway's own code (~0.25); the rest is asyncio.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp
import uvloop

from router.testing.redis_server import free_port

from .common import API_KEY, HI, ROOT, ChildServer, Report, median, quantile, rotations

GATEWAY_KEY = "bench-gateway-key-0123456789abcdef"
LITELLM_MASTER_KEY = "sk-bench-master-key-0123456789abcdefghij"
CONCURRENCIES = (1, 16)
ROUNDS, BLOCK = 6, {1: 150, 16: 480}
QUICK_ROUNDS, QUICK_BLOCK = 2, {1: 40, 16: 96}
TARGET_P50_MS, TARGET_P99_MS, TARGET_SHARE_OF_LITELLM = 1.0, 3.0, 1 / 3
PROXY_VENV = Path(__file__).resolve().parent / ".venv-litellm-proxy"
GRANIAN_DEPS = Path(__file__).resolve().parent / ".deps-granian"
PROXY_PACKAGES = ("fastapi", "uvicorn[standard]", "orjson", "apscheduler", "pyjwt", "backoff", "python-multipart",
                  "cryptography", "email-validator", "redis", "semver", "expression", "fastapi-sso", "mcp",
                  "soundfile")
CLIENT_CONNECTIONS = 64
CLOCK_TICK = os.sysconf("SC_CLK_TCK")
Samples = dict[str, list[float]]  # p50, p99 (ms), rps, fail, cpu (µs a request): one per block
Results = dict[int | str, dict[str, Samples]]  # concurrency (or "stack") -> contender -> samples


def _pinned(name: str) -> str:
    for line in (ROOT / "constraints.txt").read_text().splitlines():
        if line.lower().startswith(f"{name}=="):
            return line.strip()
    return name


def cpu_seconds(pid: int) -> float:
    """utime + stime of `pid` and its live descendants (granian's workers are children
    of its main process): /proc/<pid>/stat fields 14 and 15, in clock ticks."""
    children: dict[int, list[int]] = {}
    ticks: dict[int, int] = {}
    for entry in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{entry}/stat", "rb") as stat:
                fields = stat.read().rsplit(b")", 1)[1].split()  # after "pid (comm)": fields 3, 4, ...
        except OSError:  # exited meanwhile
            continue
        children.setdefault(int(fields[1]), []).append(int(entry))
        ticks[int(entry)] = int(fields[11]) + int(fields[12])
    total, frontier = 0, [pid]
    while frontier:
        process = frontier.pop()
        total += ticks.get(process, 0)
        frontier += children.get(process, [])
    return total / CLOCK_TICK


class Contender:
    """A server process answering POST {base}/chat/completions for `model` (or, with
    `call`, a coroutine function run in this process instead of an HTTP request).
    `cpu_pid`: the process whose CPU time a request costs (None: not measured)."""

    def __init__(self, name: str, base: str, model: str, key: str | None,
                 proc: subprocess.Popen[bytes] | None = None, call: Any = None, cpu_pid: int | None = None) -> None:
        self.name, self.base, self.model, self.key, self.proc, self.call = name, base, model, key, proc, call
        self.cpu_pid = cpu_pid if cpu_pid is not None else (proc.pid if proc is not None else None)

    def wait_ready(self, path: str, timeout: float) -> None:
        import httpx

        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc is not None and self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited with {self.proc.returncode}")
            try:
                if httpx.get(self.base.removesuffix("/v1") + path, timeout=2).status_code < 500:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.25)
        raise RuntimeError(f"{self.name} did not answer {path} within {timeout} s")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def _gateway_config(folder: Path, upstream: str) -> Path:
    path = folder / "gateway.yaml"
    path.write_text(f"""defaults: {{timeout: 30, retry: {{attempts: 1}}}}
targets:
  primary: {{model: openai/m, api_base: "{upstream}", api_key: {API_KEY}}}
chains:
  default: [primary]
server:
  keys:
    - {{name: bench, key: {GATEWAY_KEY}}}
""")
    return path


def start_ours(folder: Path, upstream: str) -> Contender:
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "router", "serve", "--config", str(_gateway_config(folder, upstream)),
                             "--port", str(port)], cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    contender = Contender("ours", f"http://127.0.0.1:{port}/v1", "default", GATEWAY_KEY, proc)
    contender.wait_ready("/healthz", 120)
    return contender


def start_ours_granian(folder: Path, upstream: str) -> Contender | None:
    if not (GRANIAN_DEPS / "granian").exists():
        done = subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--target", str(GRANIAN_DEPS),
                               "--no-deps", "granian==2.8.9"], capture_output=True, text=True)
        if done.returncode != 0:
            print(f"granian could not be installed: {done.stderr[-300:]}")
            return None
    port = free_port()
    env = {**os.environ, "ROUTER_SERVE_CONFIG": str(_gateway_config(folder, upstream)),
           "PYTHONPATH": os.pathsep.join([str(GRANIAN_DEPS), str(ROOT)])}
    proc = subprocess.Popen([sys.executable, "-m", "granian", "--interface", "asgi", "--host", "127.0.0.1",
                             "--port", str(port), "--loop", "uvloop", "--workers", "1", "--log-level", "warning",
                             "--factory", "router.serve.app:app_from_environment"],
                            cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    contender = Contender("ours_granian", f"http://127.0.0.1:{port}/v1", "default", GATEWAY_KEY, proc)
    contender.wait_ready("/healthz", 120)
    return contender


def litellm_proxy_venv(report: Report) -> Path | None:
    """The proxy's virtualenv, made on first use (minutes); None when it cannot be made."""
    litellm_bin = PROXY_VENV / "bin" / "litellm"
    if litellm_bin.exists():
        return litellm_bin
    report.line(f"making {PROXY_VENV.relative_to(ROOT)} (litellm's proxy and its server dependencies) ...")
    try:
        subprocess.run([sys.executable, "-m", "venv", str(PROXY_VENV)], check=True)
        subprocess.run([str(PROXY_VENV / "bin" / "python"), "-m", "pip", "install", "--quiet", _pinned("litellm"),
                        *PROXY_PACKAGES], check=True, stdout=subprocess.DEVNULL)
    except (subprocess.CalledProcessError, OSError) as exc:
        report.line(f"LiteLLM's proxy venv could not be made ({exc}); its column is left out")
        shutil.rmtree(PROXY_VENV, ignore_errors=True)
        return None
    return litellm_bin


def start_litellm_proxy(report: Report, folder: Path, upstream: str) -> Contender | None:
    litellm_bin = litellm_proxy_venv(report)
    if litellm_bin is None:
        return None
    config = folder / "litellm-proxy.yaml"
    config.write_text(f"""model_list:
  - model_name: m
    litellm_params: {{model: openai/m, api_base: "{upstream}", api_key: {API_KEY}, max_retries: 0}}
litellm_settings: {{num_retries: 0, request_timeout: 30, drop_params: true}}
general_settings: {{master_key: {LITELLM_MASTER_KEY}}}
""")
    port = free_port()
    env = {**os.environ, "LITELLM_MASTER_KEY": LITELLM_MASTER_KEY, "LITELLM_LOCAL_MODEL_COST_MAP": "True",
           "LITELLM_LOG": "ERROR", "PYTHONPATH": ""}
    proc = subprocess.Popen([str(litellm_bin), "--config", str(config), "--port", str(port), "--host", "127.0.0.1",
                             "--num_workers", "1"], cwd=folder, env=env,
                            stdout=subprocess.DEVNULL, stderr=open(folder / "litellm-proxy.log", "wb"))
    contender = Contender("litellm_proxy", f"http://127.0.0.1:{port}/v1", "m", LITELLM_MASTER_KEY, proc)
    try:
        contender.wait_ready("/health/liveliness", 240)
    except RuntimeError as exc:
        report.line(f"LiteLLM's proxy did not start: {exc}; see {folder / 'litellm-proxy.log'}")
        contender.stop()
        return None
    return contender


def in_process_router(upstream: str) -> Contender:
    """`Router.acomplete` in this process, same upstream: what the router itself (and
    litellm under it) costs, without the gateway's HTTP hop."""
    from router import Router

    router = Router.from_dict({"defaults": {"timeout": 30, "retry": {"attempts": 1}},
                               "targets": {"primary": {"model": "openai/m", "api_base": upstream, "api_key": API_KEY}},
                               "chains": {"default": ["primary"]}})

    async def call() -> int:
        await router.acomplete(HI, max_tokens=16)
        return 200

    return Contender("router_in_process", upstream, "m", None, call=call)


async def block(client: aiohttp.ClientSession, contender: Contender, concurrency: int, n: int,
                path: str = "/chat/completions") -> tuple[float, list[float], int]:
    """`n` requests from `concurrency` workers: (wall seconds, latencies, failures)."""
    url = f"{contender.base}{path}"
    body = json.dumps({"model": contender.model, "messages": HI, "max_tokens": 16}).encode()
    headers = {"content-type": "application/json"}
    if contender.key:
        headers["authorization"] = f"Bearer {contender.key}"
    latencies: list[float] = []
    failures = 0
    left = n
    perf = time.perf_counter

    async def request() -> int:
        if contender.call is not None:
            return await contender.call()
        method, data = ("POST", body) if path == "/chat/completions" else ("GET", None)
        async with client.request(method, url, data=data, headers=headers) as response:
            await response.read()
            return int(response.status)

    async def worker() -> None:
        nonlocal left, failures
        while left > 0:
            left -= 1
            t = perf()
            status = await request()
            latencies.append(perf() - t)
            if status != 200:
                failures += 1

    started = perf()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return perf() - started, latencies, failures


async def blocks(client: aiohttp.ClientSession, contenders: list[Contender], rounds: int, concurrency: int, n: int,
                 path: str = "/chat/completions") -> dict[str, Samples]:
    """`rounds` blocks of `n` requests per contender, the order rotated each round."""
    per: dict[str, Samples] = {c.name: {"p50": [], "p99": [], "rps": [], "fail": [], "cpu": []} for c in contenders}
    for order in rotations(contenders, rounds):
        for c in order:
            cpu_before = cpu_seconds(c.cpu_pid) if c.cpu_pid is not None else 0.0
            wall, latencies, failures = await block(client, c, concurrency, n, path)
            values = per[c.name]
            if c.cpu_pid is not None:
                values["cpu"].append((cpu_seconds(c.cpu_pid) - cpu_before) / len(latencies) * 1e6)
            values["p50"].append(quantile(latencies, 0.5) * 1000)
            values["p99"].append(quantile(latencies, 0.99) * 1000)
            values["rps"].append(len(latencies) / wall)
            values["fail"].append(failures)
    return per


async def measure(contenders: list[Contender], rounds: int, sizes: dict[int, int]) -> Results:
    results: Results = {}
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=CLIENT_CONNECTIONS),
                                     timeout=aiohttp.ClientTimeout(total=60)) as client:
        for c in contenders:  # warm: connections, lazy imports, first-call paths
            await block(client, c, 16, 64)
        for concurrency in CONCURRENCIES:
            results[concurrency] = await blocks(client, contenders, rounds, concurrency, sizes[concurrency])
        servers = [c for c in contenders if c.name in ("ours", "ours_granian")]
        if len(servers) == 2:  # the stacks alone: GET /v1/models (auth, JSON), no upstream call
            results["stack"] = await blocks(client, servers, rounds, 16, sizes[16], "/models")
    return results


def _cpu(values: Samples) -> float | None:
    return median(values["cpu"]) if values["cpu"] else None


def _cpu_text(cpu: float | None) -> str:
    return f"cpu {cpu:6.0f} µs/req" if cpu is not None else "cpu      - µs/req"


def start_contenders(report: Report, folder: Path, upstream: ChildServer, stack: bool) -> list[Contender]:
    """direct, ours, router_in_process, (ours_granian,) litellm_proxy: those that start
    (the ones started are stopped again when one fails with an exception)."""
    contenders = [Contender("direct", upstream.url, "m", None, cpu_pid=upstream.pid)]
    try:
        contenders.append(start_ours(folder, upstream.url))
        contenders.append(in_process_router(upstream.url))
        granian = start_ours_granian(folder, upstream.url) if stack else None
        proxy = start_litellm_proxy(report, folder, upstream.url)
        contenders += [c for c in (granian, proxy) if c is not None]
    except BaseException:
        stop_all(contenders)
        raise
    return contenders


def stop_all(contenders: list[Contender]) -> None:
    for c in contenders:
        c.stop()


def summarize(report: Report, results: Results) -> dict[str, Any]:
    """Medians over rounds (added: paired with ``direct`` per round), one line each."""
    summary: dict[str, Any] = {}
    for name, values in results.pop("stack", {}).items():
        cpu = _cpu(values)
        summary[f"{name}_models@16"] = {"p50_ms": median(values["p50"]), "p99_ms": median(values["p99"]),
                                        "rps": median(values["rps"]), "cpu_us_per_request": cpu}
        report.line(f"stack, GET /v1/models, c=16: {name:<13} p50 {median(values['p50']):7.2f} ms  p99 "
                    f"{median(values['p99']):7.2f} ms  {median(values['rps']):7.0f} req/s  {_cpu_text(cpu)}")
    for concurrency, per in results.items():
        direct = per["direct"]
        for name, values in per.items():
            added50 = median(a - d for a, d in zip(values["p50"], direct["p50"]))
            added99 = median(a - d for a, d in zip(values["p99"], direct["p99"]))
            rps, cpu = median(values["rps"]), _cpu(values)
            summary[f"{name}@{concurrency}"] = {"p50_ms": median(values["p50"]), "p99_ms": median(values["p99"]),
                                                "added_p50_ms": added50, "added_p99_ms": added99,
                                                "rps": rps, "cpu_us_per_request": cpu, "failures": sum(values["fail"])}
            report.line(f"c={concurrency:<2} {name:<17} p50 {median(values['p50']):6.2f} ms  p99 "
                        f"{median(values['p99']):6.2f} ms  added p50 {added50:+6.2f} ms  p99 {added99:+6.2f} ms  "
                        f"{rps:6.0f} req/s  {_cpu_text(cpu)}  failures {sum(values['fail'])}")
    return summary


def ratios(report: Report, summary: dict[str, Any]) -> None:
    ours = summary["ours@16"]
    report.ratio("serve_added_p50_ms_c16", ours["added_p50_ms"], f"<= {TARGET_P50_MS}",
                 ours["added_p50_ms"] <= TARGET_P50_MS)
    report.ratio("serve_added_p99_ms_c16", ours["added_p99_ms"], f"<= {TARGET_P99_MS}",
                 ours["added_p99_ms"] <= TARGET_P99_MS)
    report.ratio("serve_added_p50_ms_c1", summary["ours@1"]["added_p50_ms"], "reported", None)
    report.ratio("serve_gateway_hop_p50_ms_c16", ours["p50_ms"] - summary["router_in_process@16"]["p50_ms"],
                 "reported", None)
    report.ratio("serve_rps_per_worker_c16", ours["rps"], "reported", None)
    report.ratio("serve_gateway_cpu_us_per_request_c16", ours["cpu_us_per_request"], "reported", None)
    if "ours_granian@16" in summary:
        granian = summary["ours_granian@16"]
        report.ratio("serve_granian_added_p50_ms_c16", granian["added_p50_ms"], "reported", None)
        report.ratio("serve_granian_rps_c16", granian["rps"], "reported", None)
        report.ratio("serve_granian_cpu_us_per_request_c16", granian["cpu_us_per_request"], "reported", None)
    if "litellm_proxy@16" in summary:
        theirs = summary["litellm_proxy@16"]
        share = ours["added_p99_ms"] / theirs["added_p99_ms"] if theirs["added_p99_ms"] > 0 else float("inf")
        report.ratio("serve_added_p99_share_of_litellm_proxy_c16", share, f"< {TARGET_SHARE_OF_LITELLM:.3f}",
                     share < TARGET_SHARE_OF_LITELLM)
        report.ratio("serve_litellm_proxy_rps_c16", theirs["rps"], "reported", None)
        report.ratio("serve_litellm_proxy_cpu_us_per_request_c16", theirs["cpu_us_per_request"], "reported", None)


def run(report: Report, quick: bool = False, stack: bool = False) -> dict[str, Any]:
    rounds, sizes = (QUICK_ROUNDS, QUICK_BLOCK) if quick else (ROUNDS, BLOCK)
    folder = Path(tempfile.mkdtemp(prefix="bench-serve-"))
    with ChildServer([sys.executable, "-m", "bench.upstream", "--port", "0"], "python -m bench.upstream") as upstream:
        contenders = start_contenders(report, folder, upstream, stack)
        try:
            report.line(f"contenders: {', '.join(c.name for c in contenders)}; {rounds} rounds; "
                        f"blocks {sizes}; load average {os.getloadavg()[0]:.2f}")
            with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
                results = runner.run(measure(contenders, rounds, sizes))
        finally:
            stop_all(contenders)
    report.data["results"] = summarize(report, results)
    report.data["load_after"] = os.getloadavg()
    ratios(report, report.data["results"])
    return report.finish()
