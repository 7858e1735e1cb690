"""`router serve` as a process: loopback only without keys, SIGTERM drain, workers sharing
Redis, and `import router` never loading the server stack."""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest

from router.testing import FaultServer, faults

from .gateway_process import Gateway

pytest_plugins = ["tests.redis_server"]

HELLO = [{"role": "user", "content": "hi"}]
UPSTREAM_KEY = "sk-upstream-secret-abcdef123456"


def _config(server: FaultServer, **more: object) -> dict[str, object]:
    return {"defaults": {"timeout": 10, "retry": {"attempts": 1}},
            "targets": {"primary": {"model": "openai/primary", "api_base": server.url, "api_key": UPSTREAM_KEY},
                        "secondary": {"model": "openai/secondary", "api_base": server.url,
                                      "api_key": UPSTREAM_KEY}},
            "chains": {"default": ["primary", "secondary"]}, **more}


def test_import_router_loads_neither_the_gateway_nor_its_server_stack() -> None:
    code = ("import sys, router; bad = [m for m in ('router.serve', 'starlette', 'uvicorn', 'uvloop', 'httptools') "
            "if m in sys.modules]; print(bad)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_without_keys_a_non_loopback_host_is_refused_with_exit_2(tmp_path: Path) -> None:
    with FaultServer() as server:
        gateway = Gateway(_config(server), tmp_path, host="0.0.0.0")
        gateway.start(wait=False)
        assert gateway.proc is not None
        assert gateway.proc.wait(60) == 2
    assert "refusing --host 0.0.0.0" in gateway.stderr() and "server.keys" in gateway.stderr()


def test_sigterm_lets_the_call_in_flight_finish_refuses_new_ones_and_exits_0(tmp_path: Path) -> None:
    with FaultServer() as server:
        server.script("primary", faults.ok("finished in time", delay=2.0))
        gateway = Gateway(_config(server), tmp_path, extra=("--grace", "20")).start()
        result: dict[str, object] = {}

        def call() -> None:
            reply = httpx.post(f"{gateway.url}/chat/completions", timeout=30,
                               json={"model": "default", "messages": HELLO})
            result["status"], result["text"] = reply.status_code, reply.text

        caller = threading.Thread(target=call)
        caller.start()
        deadline = time.monotonic() + 10
        while server.count("primary") == 0 and time.monotonic() < deadline:
            time.sleep(0.02)
        gateway.terminate()
        time.sleep(0.5)
        with pytest.raises(httpx.ConnectError):  # no longer accepting
            httpx.get(f"{gateway.base}/healthz", timeout=2)
        caller.join(30)
        assert result["status"] == 200 and "finished in time" in str(result["text"])
        assert gateway.proc is not None and gateway.proc.wait(30) == 0


def test_sigterm_cancels_a_call_still_running_after_the_grace_period(tmp_path: Path) -> None:
    with FaultServer() as server:
        server.script("primary", faults.hang(60))
        gateway = Gateway(_config(server), tmp_path, extra=("--grace", "1")).start()
        caller = threading.Thread(target=lambda: httpx.post(f"{gateway.url}/chat/completions", timeout=30,
                                                            json={"model": "default", "messages": HELLO}))
        caller.start()
        deadline = time.monotonic() + 10
        while server.count("primary") == 0 and time.monotonic() < deadline:
            time.sleep(0.02)
        started = time.monotonic()
        gateway.terminate()
        assert gateway.proc is not None and gateway.proc.wait(30) == 0
        assert time.monotonic() - started < 10
        deadline = time.monotonic() + 5
        while not server.hangups("primary") and time.monotonic() < deadline:
            time.sleep(0.05)
        assert server.hangups("primary"), "the cancelled call left its upstream request open"
        assert server.count("secondary") == 0
        caller.join(30)


def test_two_workers_share_circuits_through_redis(tmp_path: Path, redis_url: str, namespace: str) -> None:
    with FaultServer() as server:
        server.script("primary", faults.status(503))
        server.script("secondary", faults.ok("from the secondary"))
        config = _config(server, state={"backend": "redis", "url": redis_url, "namespace": namespace})
        config["defaults"]["breaker"] = {"fail_max": 3, "reset_timeout": 600}  # type: ignore[index]
        gateway = Gateway(config, tmp_path, workers=2).start()
        try:
            pids: set[int] = set()
            calls = 0
            deadline = time.monotonic() + 60  # the second worker may still be starting on a loaded machine
            while (len(pids) < 2 or calls < 16) and time.monotonic() < deadline:
                with httpx.Client(timeout=30) as fresh:  # a fresh connection each: the workers take turns accepting
                    reply = fresh.post(f"{gateway.url}/chat/completions", json={"model": "default", "messages": HELLO})
                    assert reply.status_code == 200 and reply.headers["x-router-served-by"] == "secondary"
                    pids.add(fresh.get(f"{gateway.base}/healthz").json()["pid"])
                    calls += 1
            assert len(pids) == 2, f"one worker took every connection ({pids})"
            assert server.count("primary") == 3  # fail_max for the whole fleet, not per worker
            assert "state.backend: memory" not in gateway.stderr()
        finally:
            assert gateway.stop() == 0


def test_workers_with_memory_state_are_warned_about(tmp_path: Path) -> None:
    with FaultServer() as server:
        gateway = Gateway(_config(server), tmp_path, workers=2).start()
        try:
            assert "each worker keeps its own circuits" in gateway.stderr()
        finally:
            gateway.stop()


def test_readyz_names_the_chains_whose_targets_are_all_disabled_or_held_for_quota(tmp_path: Path,
                                                                                 monkeypatch: pytest.MonkeyPatch
                                                                                 ) -> None:
    monkeypatch.delenv("ROUTER_SERVE_TEST_UNSET_KEY", raising=False)
    with FaultServer() as server:
        config = _config(server)
        config["targets"] |= {  # type: ignore[operator]
            "unpaid": {"model": "openai/unpaid", "api_base": server.url, "api_key": UPSTREAM_KEY},
            "keyless": {"model": "openai/keyless", "api_base": server.url,
                        "api_key": "${ROUTER_SERVE_TEST_UNSET_KEY}"}}
        config["chains"] |= {"unpaid": ["unpaid"], "keyless": ["keyless"]}  # type: ignore[operator]
        gateway = Gateway(config, tmp_path).start()
        try:
            ready = httpx.get(f"{gateway.base}/readyz")  # no key needed
            assert ready.status_code == 503 and ready.json()["chains_without_target"] == ["keyless"]
            server.script("unpaid", faults.status(402))
            chat = f"{gateway.url}/chat/completions"
            assert httpx.post(chat, json={"model": "unpaid", "messages": HELLO}, timeout=30).status_code == 502
            held = httpx.post(chat, json={"model": "unpaid", "messages": HELLO}, timeout=30)
            assert "skipped until" in held.text and server.count("unpaid") == 1  # held until its recheck
            ready = httpx.get(f"{gateway.base}/readyz")
            assert ready.status_code == 503 and ready.json()["chains_without_target"] == ["keyless", "unpaid"]
            assert ready.json()["chains"]["default"] == ["primary", "secondary"]
        finally:
            assert gateway.stop() == 0
