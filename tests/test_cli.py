"""The operator's CLI against a config whose circuit state lives in a real Redis."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

from router import Router, models
from router.cli import main
from router.commands.operate import status_rows
from router.testing import faults

from .conftest import TEST_KEY, remote

pytest_plugins = ["tests.redis_server"]

REPO = Path(__file__).resolve().parents[1]
HI = [{"role": "user", "content": "hi"}]


def cli(*args: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.endswith("_API_KEY")}
    return subprocess.run([sys.executable, "-m", "router.cli", *args], capture_output=True, text=True,
                          env=env, cwd=REPO, timeout=60)


def shared_config(tmp_path: Path, server, redis_url: str, namespace: str) -> Path:
    path = tmp_path / "shared.yaml"
    path.write_text(textwrap.dedent(f"""
        defaults:
          retry: {{attempts: 1}}
          breaker: {{fail_max: 2, reset_timeout: 60}}
        targets:
          primary: {{model: openai/p, api_base: "{server.url}", api_key: {TEST_KEY}}}
          secondary: {{model: openai/s, api_base: "{server.url}", api_key: {TEST_KEY}}}
        chains:
          default: [primary, secondary]
        state: {{backend: redis, url: "{redis_url}", namespace: {namespace}}}
    """))
    return path


def test_open_status_close_through_redis(tmp_path, server, redis_url, namespace):
    config = shared_config(tmp_path, server, redis_url, namespace)
    running = Router.from_yaml(config)  # an application's router, in another process than the CLI

    out = cli("open", "primary", "--config", str(config), "--json")
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["state"] == "open"

    resp = running.complete(HI)  # the running router skips it without a request
    assert resp.route.served_by == "secondary" and server.count("p") == 0

    out = cli("status", "--config", str(config), "--json")
    report = json.loads(out.stdout)
    assert out.returncode == 0 and report["shared"] is True
    assert report["targets"]["primary"]["state"] == "open" and report["targets"]["primary"]["retry_in_s"] > 50
    assert report["targets"]["secondary"]["state"] == "closed"

    out = cli("status", "--config", str(config))
    assert out.stdout.splitlines()[0].split() == ["target", "state", "failures", "half-open", "in", "in", "flight",
                                                  "queued", "wait", "paused", "retry", "budget", "rate", "limit",
                                                  "note"]
    assert any(line.split()[:2] == ["primary", "open"] for line in out.stdout.splitlines())

    assert cli("close", "primary", "--config", str(config)).stdout.strip() == "primary: closed"
    assert running.complete(HI).route.served_by == "primary"


def test_a_trip_in_one_process_shows_in_status_from_another(tmp_path, server, redis_url, namespace):
    config = shared_config(tmp_path, server, redis_url, namespace)
    server.script("p", faults.status(503))
    running = Router.from_yaml(config)
    running.complete(HI)
    running.complete(HI)
    report = json.loads(cli("status", "--config", str(config), "--json").stdout)
    assert report["targets"]["primary"]["state"] == "open"


def test_cli_exit_codes_for_controls(tmp_path, server, redis_url, namespace):
    config = shared_config(tmp_path, server, redis_url, namespace)
    out = cli("open", "nosuch", "--config", str(config))
    assert out.returncode == 2 and "unknown target 'nosuch'" in out.stderr

    memory = tmp_path / "memory.yaml"
    memory.write_text(f"targets: {{a: {{model: openai/p, api_base: '{server.url}'}}}}\nchains: {{default: [a]}}\n")
    out = cli("open", "a", "--config", str(memory))
    assert out.returncode == 2 and "use redis" in out.stderr

    bad = tmp_path / "bad.yaml"
    bad.write_text("targets: {a: {model: openai/p}}\nchains: {default: [a]}\n"
                   "state: {backend: redis, url: 'redis://127.0.0.1:1/0'}\n")
    out = cli("status", "--config", str(bad))
    assert out.returncode == 2 and "state.url" in out.stderr and str(bad) in out.stderr

    out = cli("check-config", str(config), "--json")
    assert out.returncode == 0
    assert [m["target"] for m in json.loads(out.stdout)["chains"]["default"]] == ["primary", "secondary"]


def test_status_shows_the_fleets_rate_limit_room_from_redis(tmp_path, server, redis_url, namespace):
    config = shared_config(tmp_path, server, redis_url, namespace)
    config.write_text(config.read_text().replace("breaker: {fail_max: 2, reset_timeout: 60}",
                                                 "breaker: {fail_max: 2, reset_timeout: 60}\n"
                                                 "  rate_limit: {rpm: 6, burst: 2, max_wait: 0}"))
    running = Router.from_yaml(config)
    assert running.complete(HI).route.served_by == "primary"  # takes one of the 2 in the bucket

    report = json.loads(cli("status", "--config", str(config), "--json").stdout)
    limit = report["targets"]["primary"]["rate_limit"]
    assert limit["rpm"] == 6 and limit["shared"] is True and 0.9 <= limit["room"]["requests"] < 1.2
    assert report["targets"]["secondary"]["rate_limit"]["room"]["requests"] == 2

    table = cli("status", "--config", str(config)).stdout
    primary = next(line for line in table.splitlines() if line.startswith("primary"))
    assert "rpm 6: room 1" in primary

    assert running.complete(HI).route.served_by == "primary"  # the bucket's second: the next fits in ~10 s
    table = cli("status", "--config", str(config)).stdout
    assert 8 <= float(column(table, "primary", "wait").removesuffix(" s")) <= 10
    assert column(table, "secondary", "wait") == ""  # room for a request now
    assert (column(table, "primary", "in flight"), column(table, "primary", "queued")) == ("0", "0")


def test_python_dash_m_router_runs_the_cli():
    env = {k: v for k, v in os.environ.items() if not k.endswith("_API_KEY")}
    out = subprocess.run([sys.executable, "-m", "router", "--help"], capture_output=True, text=True, env=env,
                         cwd=REPO, timeout=60)
    assert out.returncode == 0, out.stderr
    assert "usage: router" in out.stdout and "status" in out.stdout


def test_status_json_shows_what_holds_each_target_back(tmp_path, server):
    config = tmp_path / "config.yaml"
    config.write_text(textwrap.dedent(f"""
        targets:
          primary: {{model: openai/p, api_base: "{server.url}", api_key: {TEST_KEY}, max_concurrency: 4,
                     rate_limit: {{rpm: 60}}}}
        chains:
          default: [primary]
    """))
    out = subprocess.run([sys.executable, "-m", "router", "status", "--config", str(config), "--json"],
                         capture_output=True, text=True, cwd=REPO, timeout=60)
    assert out.returncode == 0, out.stderr
    primary = json.loads(out.stdout)["targets"]["primary"]
    assert (primary["in_flight"], primary["queued"]) == (0, 0)
    assert primary["rate_limit"]["wait_s"] == 0 and primary["rate_limit"]["room"]["requests"] == 1


# -- the status table: a column for each thing that holds a target back ------------------

def column(table: str, target: str, name: str) -> str:
    """The cell of `target`'s row under the header `name`, cut at the headers' offsets (a cell
    may be empty, so splitting on spaces would shift the columns)."""
    lines = table.splitlines()
    starts, at = [], 0
    for header in status_rows({})[0]:
        at = lines[0].index(header, at)
        starts.append(at)
    i = status_rows({})[0].index(name)
    row = next(line for line in lines[1:] if line.split()[0] == target)
    return row[starts[i]:starts[i + 1] if i + 1 < len(starts) else None].strip()


def test_status_table_shows_the_local_pools_calls_running_and_queued(tmp_path, capsys):
    """The model pool is shared in a process by every target with the same settings, so the
    CLI's own Router (main(), in this process) sees an application's calls running on it."""
    model = str(models.pull_default_model(quiet=True))
    local = {"provider": "llama_cpp", "model_path": model, "n_ctx": 1000, "n_threads": 1, "timeout": 60,
             "max_tokens": 400}  # an n_ctx of its own: a pool no other test uses
    config = tmp_path / "local.yaml"
    config.write_text(json.dumps({"defaults": {"deadline": 120}, "targets": {"local": local},
                                  "chains": {"default": ["local"]}}))
    running = Router.from_yaml(config)
    # greedy with the end-of-turn tokens banned: the model writes until max_tokens, so the unread
    # stream holds the pool's one model whatever the model would say
    stream = running.complete(HI, stream=True, temperature=0, logit_bias={0: -100, 1: -100, 2: -100},
                              max_tokens=400)
    next(stream)
    waiting = threading.Thread(target=running.complete, args=(HI,), kwargs={"max_tokens": 2})
    waiting.start()
    end = time.monotonic() + 60
    while running.status()["local"]["queued"] < 1:
        assert time.monotonic() < end, "the second call never queued"
        time.sleep(0.01)
    assert main(["status", "--config", str(config)]) == 0
    table = capsys.readouterr().out
    assert (column(table, "local", "in flight"), column(table, "local", "queued")) == ("1/1", "1")
    stream.close()
    waiting.join(60)
    assert not waiting.is_alive()
    assert main(["status", "--config", str(config)]) == 0
    table = capsys.readouterr().out
    assert (column(table, "local", "in flight"), column(table, "local", "queued")) == ("0/1", "0")


def test_status_table_shows_a_pause_after_a_429_and_its_wait(server):
    """A pause lives in the Router that got the 429, so its own status() is rendered here."""
    server.script("p", faults.status(429, retry_after=5))
    router = Router.from_dict({"defaults": {"retry": {"attempts": 1}, "rate_limit": {"max_wait": 0}},
                               "targets": {"primary": remote(server, "p"), "secondary": remote(server, "s")},
                               "chains": {"default": ["primary", "secondary"]}})
    assert router.complete(HI).route.served_by == "secondary"
    rows = status_rows(router.status())
    header, primary, secondary = rows[0], rows[1], rows[2]
    cell = dict(zip(header, primary))
    assert 4 < float(cell["paused"].removesuffix(" s")) <= 5 and 4 < float(cell["wait"].removesuffix(" s")) <= 5
    assert dict(zip(header, secondary))["paused"] == ""
