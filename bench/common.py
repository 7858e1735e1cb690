"""Shared helpers: the environment, the fault server process, statistics, reporting."""

from __future__ import annotations

import json
import os
import platform
import select
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Iterable, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
RESULTS = Path(__file__).resolve().parent / "results"

API_KEY = "sk-test-0123456789abcdef"
HI = [{"role": "user", "content": "hi"}]

def setup_environment() -> dict[str, str]:
    """Environment for litellm, set before it is first imported; returns what is in effect."""
    os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")  # no price-list download
    return {"LITELLM_LOCAL_MODEL_COST_MAP": os.environ["LITELLM_LOCAL_MODEL_COST_MAP"]}


def litellm() -> Any:
    """litellm, imported the way the router imports it (offline price list, quiet errors),
    so that every contender runs against the same module settings."""
    setup_environment()
    from router.targets.remote import litellm_module

    return litellm_module()


# -- the fault server ---------------------------------------------------------------------


class FaultServerHandle:
    """A running fault server: `url`, and (unless started from the plain CLI) `script` and
    `count`. `how` says where it runs, for the report."""

    how: str
    url: str

    def script(self, model: str, *steps: Any) -> None:
        raise NotImplementedError(f"cannot script models on {self.how}")

    def count(self, model: str | None = None) -> int:
        raise NotImplementedError(f"cannot count requests on {self.how}")

    def close(self) -> None:
        raise NotImplementedError

    def __enter__(self) -> FaultServerHandle:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def _child_env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    return env


def _read_line(proc: subprocess.Popen, timeout: float, what: str) -> str:
    assert proc.stdout is not None
    ready, _, _ = select.select([proc.stdout], [], [], timeout)
    line = proc.stdout.readline() if ready else ""
    if not line:
        proc.kill()
        err = proc.stderr.read() if proc.stderr is not None else ""
        raise RuntimeError(f"{what} did not answer within {timeout} s (exit {proc.poll()}): {err}")
    return line.strip()


class ChildServer(FaultServerHandle):
    """A server in a child process that prints its base URL as its first line and exits
    on SIGTERM (no scripting, no counts). `pid` is the child's, for its CPU time."""

    def __init__(self, cmd: list[str], how: str) -> None:
        self.how = f"separate process: {how}"
        self._proc = subprocess.Popen(cmd, cwd=ROOT, env=_child_env(), stdout=subprocess.PIPE,
                                      stderr=subprocess.PIPE, text=True)
        self.url = _read_line(self._proc, 30, how)

    @property
    def pid(self) -> int:
        return self._proc.pid

    def close(self) -> None:
        if self._proc.poll() is None:
            self._proc.terminate()  # SIGTERM: the server stops and exits 0
            try:
                self._proc.wait(5)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()


class CliServer(ChildServer):
    """``python -m router.testing --port 0`` in a child process (the CLI takes `--default`
    and `--script` at start only)."""

    def __init__(self, default: Any = None, scripts: dict[str, Sequence[Any]] | None = None) -> None:
        cmd = [sys.executable, "-m", "router.testing", "--port", "0"]
        if default is not None:
            cmd += ["--default", json.dumps(asdict(default))]
        for model, steps in (scripts or {}).items():
            cmd += ["--script", f"{model}={json.dumps([asdict(s) for s in steps])}"]
        super().__init__(cmd, "python -m router.testing --port 0")


class ControlledServer(FaultServerHandle):
    """The same FaultServer in a child process (bench/faultproc.py), scripted and counted
    over a JSON-lines pipe."""

    def __init__(self) -> None:
        self.how = ("separate process: python -m bench.faultproc (router.testing.FaultServer "
                    "plus a stdin/stdout channel for script/count)")
        self._proc = subprocess.Popen([sys.executable, "-m", "bench.faultproc"], cwd=ROOT,
                                      env=_child_env(), stdin=subprocess.PIPE,
                                      stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        self._lock = threading.Lock()
        self.url = _read_line(self._proc, 30, "python -m bench.faultproc")

    def _ask(self, command: dict[str, Any]) -> dict[str, Any]:
        assert self._proc.stdin is not None
        with self._lock:
            self._proc.stdin.write(json.dumps(command) + "\n")
            self._proc.stdin.flush()
            answer = json.loads(_read_line(self._proc, 10, "bench.faultproc"))
        if "error" in answer:
            raise RuntimeError(f"fault server: {answer['error']}")
        return answer

    def script(self, model: str, *steps: Any) -> None:
        self._ask({"op": "script", "model": model, "steps": [asdict(s) for s in steps]})

    def count(self, model: str | None = None) -> int:
        return int(self._ask({"op": "count", "model": model})["count"])

    def statuses(self, model: str | None = None) -> dict[int, int]:
        return {int(k): v for k, v in self._ask({"op": "statuses", "model": model})["statuses"].items()}

    def close(self) -> None:
        if self._proc.poll() is None:
            assert self._proc.stdin is not None
            self._proc.stdin.close()  # EOF: the child stops its server and exits
            try:
                self._proc.wait(5)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()


class ThreadServer(FaultServerHandle):
    """The FaultServer in this process, in a thread (competes for the client's GIL)."""

    def __init__(self) -> None:
        from router.testing import FaultServer

        self.how = "in-process thread: router.testing.FaultServer (shares the client's GIL)"
        self._server = FaultServer().start()
        self.url = self._server.url

    def script(self, model: str, *steps: Any) -> None:
        self._server.script(model, *steps)

    def count(self, model: str | None = None) -> int:
        return self._server.count(model)

    def close(self) -> None:
        self._server.stop()


# -- statistics ---------------------------------------------------------------------------


def median(values: Iterable[float]) -> float:
    return statistics.median(list(values))


def quantile(values: Iterable[float], q: float) -> float:
    """Nearest-rank quantile (q in [0, 1])."""
    data = sorted(values)
    if not data:
        return float("nan")
    return data[min(len(data) - 1, max(0, round(q * (len(data) - 1))))]


def paired_ratio(numerator: Sequence[float], denominator: Sequence[float]) -> dict[str, float]:
    """The per-round ratios' median and interquartile range (paired, same round)."""
    per_round = [n / d for n, d in zip(numerator, denominator, strict=True)]
    return {"median": median(per_round), "q25": quantile(per_round, 0.25), "q75": quantile(per_round, 0.75)}


def timed_block(call: Any, n: int) -> tuple[float, list[float]]:
    """`call()` n times: the whole block's seconds, and each call's."""
    perf = time.perf_counter
    latencies = []
    started = perf()
    for _ in range(n):
        t = perf()
        call()
        latencies.append(perf() - t)
    return perf() - started, latencies


def rotations(items: Sequence[Any], rounds: int) -> list[list[Any]]:
    """One order per round: rotated by one each round, reversed every other cycle, so each
    contender runs before and after each other one about equally often."""
    orders = []
    for r in range(rounds):
        k = r % len(items)
        order = list(items[k:]) + list(items[:k])
        if (r // len(items)) % 2:
            order.reverse()
        orders.append(order)
    return orders


# -- reporting ----------------------------------------------------------------------------


class Report:
    """Human lines as they come; machine-readable RATIO lines and the JSON file at the end."""

    def __init__(self, scenario: str) -> None:
        self.scenario = scenario
        self.data: dict[str, Any] = {"scenario": scenario, "machine": machine()}
        self.ratios: list[dict[str, Any]] = []
        self.started = time.perf_counter()

    def line(self, text: str = "") -> None:
        print(text, flush=True)

    def ratio(self, name: str, value: float | int, target: str, ok: bool | None) -> None:
        """One machine-readable result; `ok=None` for a number reported without a target."""
        self.ratios.append({"name": name, "value": value, "target": target,
                            "ok": None if ok is None else bool(ok)})

    def finish(self) -> dict[str, Any]:
        self.data["ratios"] = self.ratios
        self.data["elapsed_s"] = round(time.perf_counter() - self.started, 2)
        for r in self.ratios:
            value = r["value"]
            text = f"{value:.4f}" if isinstance(value, float) else str(value)
            ok = "yes" if r["ok"] in (True, None) else "no"
            print(f"RATIO {r['name']}={text} target={r['target']} ok={ok}", flush=True)
        RESULTS.mkdir(parents=True, exist_ok=True)
        path = RESULTS / f"{self.scenario}.json"
        path.write_text(json.dumps(self.data, indent=2, default=str) + "\n")
        print(f"wrote {path.relative_to(ROOT)} ({self.data['elapsed_s']} s)", flush=True)
        return self.data


def machine() -> dict[str, Any]:
    try:
        load = os.getloadavg()
    except OSError:
        load = None
    return {"python": platform.python_version(), "cpus": os.cpu_count(), "loadavg": load,
            "platform": platform.platform()}
