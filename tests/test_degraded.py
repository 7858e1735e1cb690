"""The degraded tier end to end: real SmolLM2 through llama.cpp at the end of a chain."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from router import Router
from router.testing import faults

from .conftest import TEST_KEY, closed_port

HI = [{"role": "user", "content": "Say hello."}]
REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def model_path() -> str:
    from router.models import pull_default_model

    return str(pull_default_model(REPO / "models", quiet=True))


def local_target(model_path: str, **overrides) -> dict:
    # one thread: llama.cpp's threads spin-wait on each other, so on a busy 2-core machine
    # two of them can be ten times slower than one; the timeout is generous for the same reason
    return {"provider": "llama_cpp", "model_path": model_path, "n_ctx": 1024, "max_tokens": 24,
            "n_threads": 1, "timeout": 60, "degraded": True, **overrides}


def test_remote_outage_ends_on_the_local_model(server, make_router, model_path):
    server.script("p", faults.status(503))
    server.script("s", faults.reset())
    router = make_router({"primary": "p", "secondary": "s", "local": local_target(model_path)})
    resp = router.complete(HI, max_tokens=16, temperature=0)
    assert resp.route.served_by == "local" and resp.route.degraded is True
    assert resp.choices[0].message.content.strip()
    assert resp.usage.completion_tokens > 0 and resp.model == "SmolLM2-135M-Instruct.Q4_1"
    assert [a.outcome for a in resp.route.attempts] == ["transient"] * 6 + ["ok"]
    assert server.count("p") == 3 and server.count("s") == 3


def test_offline_with_no_keys_answers_locally_without_waiting(model_path, monkeypatch):
    """No keys for the remote targets, and their hosts unreachable: no backoff sleeps."""
    monkeypatch.delenv("ROUTER_TEST_ABSENT_KEY", raising=False)
    dead = f"http://127.0.0.1:{closed_port()}/v1"
    router = Router.from_dict({
        "defaults": {"retry": {"attempts": 3, "min_wait": 2, "max_wait": 8}},
        "targets": {
            "nokey": {"model": "openai/gpt-4o-mini", "api_key": "${ROUTER_TEST_ABSENT_KEY}"},
            "down": {"model": "openai/gpt-4o-mini", "api_key": TEST_KEY, "api_base": dead},
            "local": local_target(model_path),
        },
        "chains": {"default": ["nokey", "down", "local"]},
    })
    started = time.monotonic()
    resp = router.complete(HI, max_tokens=8)
    assert time.monotonic() - started < 10  # no 2-8 s backoff sleeps against an unreachable host
    assert [a.outcome for a in resp.route.attempts] == ["disabled", "unreachable", "ok"]
    assert resp.route.degraded


def test_offline_mode_skips_remote_targets(server, model_path, monkeypatch):
    monkeypatch.setenv("ROUTER_OFFLINE", "1")
    router = Router.from_dict({
        "targets": {"p": {"model": "openai/p", "api_base": server.url, "api_key": TEST_KEY},
                    "local": local_target(model_path)},
        "chains": {"default": ["p", "local"]},
    })
    resp = router.complete(HI, max_tokens=8)
    assert [a.outcome for a in resp.route.attempts] == ["offline", "ok"]
    assert server.count("p") == 0
    assert router.status()["p"]["disabled"] == "offline mode"


def test_load_time_is_reported_in_the_route(model_path):
    # a config of its own (n_ctx) so this router loads its own model copy
    router = Router.from_dict({"targets": {"local": local_target(model_path, n_ctx=768)},
                               "chains": {"default": ["local"]}})
    first = router.complete(HI, max_tokens=4)
    second = router.complete(HI, max_tokens=4)
    assert any("loaded" in n for n in first.route.notes)
    assert not any("loaded" in n for n in second.route.notes)


def test_missing_model_fails_over_with_a_fix_in_the_error(server, make_router, tmp_path):
    server.script("p", faults.status(503))
    router = make_router({"primary": remote_one_try(server), "local": local_target(str(tmp_path / "none.gguf"))})
    with pytest.raises(Exception) as info:
        router.complete(HI)
    assert "make model" in str(info.value)
    assert "local: misconfigured" in str(info.value)


def remote_one_try(server) -> dict:
    return {"model": "openai/p", "api_base": server.url, "api_key": TEST_KEY,
            "retry": {"attempts": 1}}


def run_cli(*args: str, config: Path, env_extra: dict | None = None) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.endswith("_API_KEY")}
    env.update(env_extra or {})
    return subprocess.run([sys.executable, "-m", "router.cli", *args, "--config", str(config)],
                          capture_output=True, text=True, env=env, timeout=120, cwd=REPO)


def test_cli_complete_prints_answer_and_route(tmp_path, model_path):
    config = tmp_path / "config.yaml"
    config.write_text(textwrap.dedent(f"""
        targets:
          openai: {{model: openai/gpt-4o-mini, api_key: "${{OPENAI_API_KEY}}"}}
          local: {{provider: llama_cpp, model_path: "{model_path}", n_ctx: 1024, n_threads: 1, degraded: true}}
        chains:
          default: [openai, local]
    """))
    out = run_cli("complete", "Say hello.", "--max-tokens", "8", config=config)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip()
    assert "served by local (degraded)" in out.stderr and "OPENAI_API_KEY" in out.stderr

    out = run_cli("complete", "Say hello.", "--max-tokens", "8", "--json", config=config)
    data = json.loads(out.stdout)
    assert data["route"]["served_by"] == "local" and data["route"]["degraded"] is True
    assert [a["outcome"] for a in data["route"]["attempts"]] == ["disabled", "ok"]


def test_cli_exit_codes(tmp_path, server):
    bad = tmp_path / "bad.yaml"
    bad.write_text("targets: {a: {model: openai/m, timeout: -1}}\nchains: {default: [a]}\n")
    out = run_cli("complete", "hi", config=bad)
    assert out.returncode == 2 and "targets.a.timeout" in out.stderr

    server.script("down", faults.status(503))
    failing = tmp_path / "failing.yaml"
    failing.write_text(textwrap.dedent(f"""
        targets:
          a: {{model: openai/down, api_base: "{server.url}", api_key: {TEST_KEY}, retry: {{attempts: 1}}}}
        chains:
          default: [a]
    """))
    out = run_cli("complete", "hi", config=failing)
    assert out.returncode == 1 and "a: transient" in out.stderr
    assert TEST_KEY not in out.stderr + out.stdout

    out = subprocess.run([sys.executable, "-m", "router.cli", "check-config", str(failing)],
                         capture_output=True, text=True, cwd=REPO)
    assert out.returncode == 0 and "default: a (openai/down)" in out.stdout


@pytest.mark.parametrize("api", ["sync", "async"])
def test_a_cut_stream_continues_on_the_local_model(server, make_router, model_path, api):
    import asyncio

    server.script("p", faults.stream("The capital of France is Paris, a city on the Seine.", cut_after=4))
    router = make_router({"primary": remote_one_try(server), "local": local_target(model_path)})
    if api == "sync":
        stream = router.complete(HI, stream=True, max_tokens=12, temperature=0)
        chunks = list(stream)
    else:
        async def run():
            stream = await router.acomplete(HI, stream=True, max_tokens=12, temperature=0)
            return stream, [c async for c in stream]
        stream, chunks = asyncio.run(run())
    text = "".join(c.text for c in chunks)
    assert text.startswith("The capital of France ") and len(text) > len("The capital of France ")
    assert sum(1 for c in chunks if c.choices and c.choices[0].delta.role) == 1  # one coherent answer
    assert len({c.id for c in chunks}) == 1 and chunks[-1].finish_reason in ("stop", "length")
    route = stream.route
    assert [(a.target, a.outcome) for a in route.attempts] == [("primary", "transient"), ("local", "ok")]
    assert route.served_by == "local" and route.degraded
    assert any("continued the stream after primary" in n for n in route.notes)
