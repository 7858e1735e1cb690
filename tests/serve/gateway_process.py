"""`router serve` as a real subprocess on a free loopback port, for the gateway tests."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import yaml

from router.testing.redis_server import free_port

UPSTREAM_KEY = "sk-upstream-secret-abcdef123456"
START_TIMEOUT_S = 90.0  # litellm's imports take 2-11 s on a busy 2-core machine, per worker


def upstream_target(server: Any, model: str, **more: object) -> dict[str, object]:
    """A target config for `model` on the fault server `server`, over the openai transport."""
    return {"model": f"openai/{model}", "api_base": server.url, "api_key": UPSTREAM_KEY, **more}


class Gateway:
    """A running `router serve`: `url` (for `base_url`), `stop()` (SIGTERM, then wait)."""

    def __init__(self, config: dict[str, Any], folder: Path, *, workers: int = 1, host: str = "127.0.0.1",
                 extra: tuple[str, ...] = (), env: dict[str, str] | None = None) -> None:
        self.config_file = folder / f"gateway-{os.getpid()}-{time.monotonic_ns()}.yaml"
        self.config_file.write_text(yaml.safe_dump(config), encoding="utf-8")
        self.port = free_port()
        self.host = host
        self.url = f"http://127.0.0.1:{self.port}/v1"
        self.base = f"http://127.0.0.1:{self.port}"
        self.stderr_file = folder / f"gateway-{self.port}.stderr"
        self.command = [sys.executable, "-m", "router", "serve", "--config", str(self.config_file),
                        "--host", host, "--port", str(self.port), "--workers", str(workers), *extra]
        self.env = {**os.environ, "LITELLM_LOCAL_MODEL_COST_MAP": "True", **(env or {})}
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, wait: bool = True) -> Gateway:
        with open(self.stderr_file, "wb") as err:
            self.proc = subprocess.Popen(self.command, env=self.env, stdout=subprocess.DEVNULL, stderr=err)
        if wait:
            self.wait_ready()
        return self

    def __enter__(self) -> Gateway:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def wait_ready(self) -> None:
        deadline = time.monotonic() + START_TIMEOUT_S
        assert self.proc is not None
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"router serve exited with {self.proc.returncode}: {self.stderr()}")
            try:
                if httpx.get(f"{self.base}/healthz", timeout=1.0).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        raise AssertionError(f"router serve did not answer /healthz in {START_TIMEOUT_S} s: {self.stderr()}")

    def stderr(self) -> str:
        return self.stderr_file.read_text(encoding="utf-8", errors="replace") if self.stderr_file.exists() else ""

    def terminate(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)

    def stop(self, timeout: float = 40.0) -> int | None:
        if self.proc is None or self.proc.poll() is not None:
            return self.proc.returncode if self.proc else None
        self.terminate()
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            return None
