"""The cache tier end to end: real HTTP against the fault server, real sqlite files shared
by Routers and processes, a real redis-server."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import pytest

from router import Router
from router.errors import AllTargetsFailed, ConfigError, InvalidRequest
from router.testing import faults

from ..conftest import FAST_RETRY, TEST_KEY, remote

pytest_plugins = ["tests.redis_server"]

REPO = Path(__file__).resolve().parents[2]
HI = [{"role": "user", "content": "What is a circuit breaker?"}]
OTHER = [{"role": "user", "content": "And a bulkhead?"}]
ANSWER = "A switch that stops calls to a failing service."
STATIC = "Service temporarily unavailable."


def config(server, cache: dict[str, Any] | None = None, *, chain: list[str] | None = None,
           static: bool = True, **extra: Any) -> dict[str, Any]:
    """primary (p) and secondary (s) on the fault server, then the cache tier "recent"."""
    return {
        "defaults": {"timeout": 5, "deadline": 30, "retry": FAST_RETRY},
        "targets": {"primary": remote(server, "p"), "secondary": remote(server, "s"),
                    "recent": {"provider": "cache", **(cache or {})}},
        "chains": {"default": {"targets": chain or ["primary", "secondary", "recent"],
                               **({"static_reply": STATIC} if static else {})}},
        **extra,
    }


def all_down(server) -> None:
    server.script("p", faults.status(503))
    server.script("s", faults.reset())


def outcomes(resp) -> list[tuple[str, str]]:
    return [(a.target, a.outcome) for a in resp.route.attempts]


# -- the tier ---------------------------------------------------------------------------

def test_the_same_request_is_served_from_the_cache_with_its_age_once_every_provider_is_down(server):
    server.script("p", faults.ok(ANSWER))
    router = Router.from_dict(config(server))
    first = router.complete(HI, max_tokens=32, temperature=0)
    assert first.route.served_by == "primary" and first.route.cache_age_s is None

    all_down(server)
    time.sleep(0.3)
    again = router.complete(HI, max_tokens=32, temperature=0)
    assert again.text == ANSWER and again.model == first.model
    assert again.route.served_by == "recent" and again.route.degraded is True
    assert 0.3 <= again.route.cache_age_s < 10
    assert outcomes(again)[-1] == ("recent", "ok") and outcomes(again)[0] == ("primary", "transient")
    assert again.usage.total_tokens == 0  # serving it cost no tokens
    assert any("served from the cache" in note for note in again.route.notes)
    assert server.count("p") == 4 and server.count("s") == 3  # 1 answer + 3 tries each while down

    new = router.complete(OTHER, max_tokens=32, temperature=0)  # never answered: the next tier
    assert new.route.served_by == "static" and new.text == STATIC
    assert outcomes(new)[-1] == ("recent", "cache_miss")
    assert "no answer stored" in new.route.attempts[-1].detail


def test_a_miss_falls_through_to_the_local_model(server, model_path_fixture):
    data = config(server, static=False, chain=["primary", "recent", "local"])
    data["targets"]["local"] = {"provider": "llama_cpp", "model_path": model_path_fixture, "n_ctx": 512,
                                "max_tokens": 8, "n_threads": 1, "timeout": 60, "degraded": True}
    router = Router.from_dict(data)
    router.complete(HI, max_tokens=8)
    all_down(server)
    assert router.complete(HI, max_tokens=8).route.served_by == "recent"
    new = router.complete(OTHER, max_tokens=8)
    assert new.route.served_by == "local" and outcomes(new)[-2:] == [("recent", "cache_miss"), ("local", "ok")]
    assert router.cache_stats()["recent"]["entries"] == 1  # the local model's answer is degraded: not kept


@pytest.fixture(scope="module")
def model_path_fixture() -> str:
    from router.models import pull_default_model

    return str(pull_default_model(REPO / "models", quiet=True))


def test_a_miss_is_not_retried_counts_nothing_and_never_opens_the_cache_circuit(server):
    all_down(server)
    data = config(server, {"breaker": {"fail_max": 1}}, chain=["recent", "primary"])
    data["targets"]["primary"]["retry"] = {"attempts": 1}
    router = Router.from_dict(data)
    for _ in range(5):
        resp = router.complete(HI)
        assert outcomes(resp) == [("recent", "cache_miss"), ("primary", "transient")]
    assert router.status()["recent"]["state"] == "closed" and router.status()["recent"]["failures"] == 0


def test_when_every_target_fails_the_providers_error_is_the_cause_not_the_miss(server):
    all_down(server)
    router = Router.from_dict(config(server, static=False))
    with pytest.raises(AllTargetsFailed) as failed:
        router.complete(HI)
    assert set(failed.value.errors) == {"primary", "secondary"}
    assert "recent: cache_miss" in str(failed.value)
    assert failed.value.__cause__ is failed.value.errors["secondary"]


def test_a_primary_that_hangs_past_the_deadline_still_leaves_the_cache_tier_its_turn(server):
    router = Router.from_dict(config(server, static=False))
    router.complete(HI)
    server.script("p", faults.hang(10))
    server.script("s", faults.hang(10))
    started = time.monotonic()
    resp = router.complete(HI, deadline=1)  # the two hanging providers use all of it
    assert resp.route.served_by == "recent"
    assert outcomes(resp) == [("primary", "deadline"), ("secondary", "deadline"), ("recent", "ok")]
    assert time.monotonic() - started < 5


def test_an_answer_older_than_the_ttl_is_not_served(server):
    router = Router.from_dict(config(server, {"ttl": 2}))
    router.complete(HI)
    all_down(server)
    assert router.complete(HI).route.served_by == "recent"
    time.sleep(2.2)
    resp = router.complete(HI)
    assert resp.route.served_by == "static" and outcomes(resp)[-1] == ("recent", "cache_miss")


def test_cache_scope_keeps_tenants_apart_and_never_reaches_a_provider(server):
    router = Router.from_dict(config(server))
    router.complete(HI, cache_scope="tenant-a")
    body = server.requests("p")[0].body
    assert "cache_scope" not in body and "cache" not in body
    all_down(server)
    assert router.complete(HI, cache_scope="tenant-a").route.served_by == "recent"
    assert router.complete(HI, cache_scope="tenant-b").route.served_by == "static"
    assert router.complete(HI).route.served_by == "static"


def test_cache_false_neither_reads_nor_writes(server):
    router = Router.from_dict(config(server))
    router.complete(HI, cache=False)
    assert router.cache_stats()["recent"]["entries"] == 0
    assert "cache" not in server.requests("p")[0].body
    router.complete(HI)
    all_down(server)
    resp = router.complete(HI, cache=False)
    assert resp.route.served_by == "static" and "cache=False" in resp.route.attempts[-1].detail
    assert router.complete(HI).route.served_by == "recent"


def test_the_key_ignores_user_metadata_and_the_chain_but_not_what_shapes_an_answer(server):
    data = config(server)
    data["chains"]["reversed"] = {"targets": ["secondary", "primary", "recent"], "static_reply": STATIC}
    router = Router.from_dict(data)
    router.complete(HI, temperature=1, max_tokens=32, user="alice", metadata={"trace": "1"})
    all_down(server)
    assert router.complete(HI, chain="reversed", temperature=1.0, max_tokens=32, user="bob").route.served_by == "recent"
    for shaping in ({"temperature": 0.5, "max_tokens": 32}, {"temperature": 1, "max_tokens": 33},
                    {"temperature": 1, "max_tokens": 32, "response_format": {"type": "json_object"}},
                    {"temperature": 1, "max_tokens": 32, "tools": [{"type": "function",
                                                                     "function": {"name": "f", "parameters": {}}}]}):
        assert router.complete(HI, **shaping).route.served_by == "static", shaping


def test_cache_arguments_are_checked_before_any_request(server):
    router = Router.from_dict(config(server))
    with pytest.raises(InvalidRequest, match="cache must be true or false"):
        router.complete(HI, cache="no")
    with pytest.raises(InvalidRequest, match="cache_scope must be a string"):
        router.complete(HI, cache_scope=7)
    assert server.count() == 0


# -- what is never kept -------------------------------------------------------------------

def test_degraded_static_and_content_policy_answers_are_never_cached(server):
    data = config(server)
    data["targets"]["secondary"]["degraded"] = True
    data["chains"]["policy"] = {"targets": ["primary", "tertiary", "recent"], "on_content_policy": "fail_over"}
    data["targets"]["tertiary"] = remote(server, "t")
    router = Router.from_dict(data)
    server.script("p", faults.status(503))
    assert router.complete(HI).route.served_by == "secondary"  # degraded: not kept
    server.script("s", faults.status(503))
    assert router.complete(OTHER).route.served_by == "static"  # static: not kept
    server.script("p", faults.content_policy())
    router.force_close("primary")  # its 503s opened it
    resp = router.complete(HI, chain="policy")
    assert outcomes(resp)[:2] == [("primary", "content_policy"), ("tertiary", "ok")]  # after a refusal: not kept
    router.flush_cache()
    assert router.cache_stats()["recent"]["entries"] == 0


def test_an_answer_cut_by_length_is_kept_only_when_a_token_limit_was_asked_for(server):
    server.script("p", faults.ok("cut sho", finish_reason="length"))
    router = Router.from_dict(config(server))
    router.complete(HI)  # no limit asked: the cut is the provider's, not the caller's
    assert router.cache_stats()["recent"]["entries"] == 0
    router.complete(HI, max_tokens=2)  # asked for at most 2 tokens: this is that answer
    assert router.cache_stats()["recent"]["entries"] == 1
    all_down(server)
    resp = router.complete(HI, max_tokens=2)
    assert resp.route.served_by == "recent" and resp.choices[0].finish_reason == "length"


@pytest.mark.parametrize("backend", ["memory", "sqlite"])
def test_max_entries_and_max_answer_bytes_bound_the_cache(server, tmp_path, backend):
    store = {"backend": backend, **({"path": str(tmp_path / "c.sqlite")} if backend == "sqlite" else {})}
    router = Router.from_dict(config(server, {"max_entries": 2, "max_answer_bytes": 600, **store}))
    prompts = [[{"role": "user", "content": f"question {i}"}] for i in range(3)]
    router.complete(prompts[0])
    router.complete(prompts[1])
    router.flush_cache()  # sqlite writes in the background
    all_down(server)
    assert router.complete(prompts[0]).route.served_by == "recent"  # now the most recently used
    router.flush_cache()
    server.reset()
    router.complete(prompts[2])  # a third: the least recently used (question 1) goes
    server.script("p", faults.ok("x" * 1000))
    router.complete(OTHER)  # larger than max_answer_bytes: not kept
    router.flush_cache()
    all_down(server)
    served = [router.complete(p).route.served_by for p in prompts]
    assert served == ["recent", "static", "recent"]
    assert router.complete(OTHER).route.served_by == "static"
    stats = router.cache_stats()["recent"]
    assert stats["entries"] == 2 and stats["this_process"]["too_large"] == 1


def test_offline_mode_keeps_the_cache_tier(server, tmp_path, monkeypatch):
    path = tmp_path / "answers.sqlite"
    online = Router.from_dict(config(server, {"backend": "sqlite", "path": str(path)}))
    online.complete(HI)
    assert online.flush_cache()
    monkeypatch.setenv("ROUTER_OFFLINE", "1")
    server.reset()
    resp = Router.from_dict(config(server, {"backend": "sqlite", "path": str(path)})).complete(HI)
    assert outcomes(resp) == [("primary", "offline"), ("secondary", "offline"), ("recent", "ok")]
    assert resp.text and server.count() == 0


# -- streams and asyncio ---------------------------------------------------------------------

@pytest.mark.parametrize("api", ["sync", "async"])
def test_a_finished_stream_is_cached_and_replayed_as_chunks(server, api):
    text = "Circuit breakers stop calls to a failing service until it has had time to recover itself."
    server.script("p", faults.ok(text))
    router = Router.from_dict(config(server))

    def read(**kwargs: Any) -> tuple[list[Any], Any]:
        if api == "sync":
            stream = router.complete(HI, stream=True, **kwargs)
            return list(stream), stream

        async def collect() -> tuple[list[Any], Any]:
            stream = await router.acomplete(HI, stream=True, **kwargs)
            return [chunk async for chunk in stream], stream

        return asyncio.run(collect())

    chunks, stream = read()
    assert "".join(c.text for c in chunks) == text and stream.route.served_by == "primary"
    router.flush_cache()
    all_down(server)
    chunks, stream = read()
    assert stream.route.served_by == "recent" and stream.route.cache_age_s is not None
    assert "".join(c.text for c in chunks) == text
    assert len([c for c in chunks if c.text]) > 1  # replayed as chunks, not one block
    assert chunks[0].choices[0].delta.role == "assistant" and chunks[-1].finish_reason == "stop"
    assert router.complete(HI).text == text  # the same entry serves a plain call


def test_a_broken_stream_is_not_cached(server):
    server.script("p", faults.stream("one two three four", cut_after=2))
    data = config(server)
    data["chains"]["default"]["mid_stream"] = "error"
    router = Router.from_dict(data)
    with pytest.raises(Exception):
        list(router.complete(HI, stream=True))
    assert router.cache_stats()["recent"]["entries"] == 0


def test_acomplete_is_served_from_the_cache(server):
    router = Router.from_dict(config(server))

    async def calls() -> tuple[Any, Any]:
        first = await router.acomplete(HI)
        all_down(server)
        return first, await router.acomplete(HI)

    first, again = asyncio.run(calls())
    assert again.text == first.text and again.route.served_by == "recent" and again.route.cache_age_s >= 0


# -- sqlite: restarts and processes ---------------------------------------------------------

def test_the_sqlite_cache_survives_a_new_router(server, tmp_path):
    data = config(server, {"backend": "sqlite", "path": str(tmp_path / "c.sqlite"), "ttl": 3600})
    first = Router.from_dict(data)
    first.complete(HI)
    assert first.flush_cache()
    all_down(server)
    resp = Router.from_dict(data).complete(HI)
    assert resp.route.served_by == "recent" and resp.text == faults.DEFAULT_TEXT and resp.route.cache_age_s < 30


def test_a_relative_sqlite_path_is_relative_to_the_config_file(server, tmp_path):
    path = tmp_path / "app" / "router.yaml"
    path.parent.mkdir()
    path.write_text(json.dumps(config(server, {"backend": "sqlite", "path": "state/answers.sqlite"})))
    router = Router.from_yaml(path)
    router.complete(HI)
    router.flush_cache()
    assert (tmp_path / "app" / "state" / "answers.sqlite").is_file()
    assert router.cache_stats()["recent"]["path"] == str(tmp_path / "app" / "state" / "answers.sqlite")


_WRITER = textwrap.dedent("""
    import json, sys
    from router import Router
    data, tag, n = json.loads(sys.argv[1]), sys.argv[2], int(sys.argv[3])
    router = Router.from_dict(data)
    for i in range(n):
        resp = router.complete([{"role": "user", "content": f"{tag} question {i}"}])
        assert resp.route.served_by == "primary", resp.route
    print("ok")
""")


def test_two_processes_write_one_sqlite_file_at_once_and_a_third_reads_every_answer(server, tmp_path):
    data = config(server, {"backend": "sqlite", "path": str(tmp_path / "shared.sqlite")})
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    n = 40
    children = [subprocess.Popen([sys.executable, "-c", _WRITER, json.dumps(data), tag, str(n)], env=env,
                                 stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for tag in ("a", "b")]
    for child in children:
        out, err = child.communicate(timeout=120)
        assert child.returncode == 0 and out.strip() == "ok", err  # each flushed its writes at exit
    all_down(server)
    router = Router.from_dict(data)
    served = {router.complete([{"role": "user", "content": f"{tag} question {i}"}]).route.served_by
              for tag in ("a", "b") for i in range(n)}
    assert served == {"recent"}
    assert router.cache_stats()["recent"]["entries"] == 2 * n


def test_an_unopenable_sqlite_path_is_a_config_error_naming_the_key(server, tmp_path):
    (tmp_path / "file").write_text("")
    with pytest.raises(ConfigError, match=r"targets\.recent\.path: cannot open the sqlite cache"):
        Router.from_dict(config(server, {"backend": "sqlite", "path": str(tmp_path / "file" / "c.sqlite")}))


# -- Redis ---------------------------------------------------------------------------------

def redis_config(server, redis_url: str, namespace: str, **cache: Any) -> dict[str, Any]:
    return config(server, {"backend": "redis", **cache},
                  state={"backend": "redis", "url": redis_url, "namespace": namespace})


def test_two_routers_share_one_redis_cache(server, redis_url, namespace):
    data = redis_config(server, redis_url, namespace, max_entries=3)
    writer, reader = Router.from_dict(data), Router.from_dict(data)
    for i in range(5):
        writer.complete([{"role": "user", "content": f"question {i}"}])
    assert writer.flush_cache()
    all_down(server)
    served = [reader.complete([{"role": "user", "content": f"question {i}"}]).route.served_by for i in range(5)]
    assert served == ["static", "static", "recent", "recent", "recent"]  # max_entries: the 3 most recent
    assert reader.cache_stats()["recent"]["entries"] == 3
    assert reader.clear_cache() == {"recent": 3}
    assert reader.complete([{"role": "user", "content": "question 4"}]).route.served_by == "static"


def test_answers_written_close_together_reach_redis_in_batches_not_one_command_each(server, redis_url, namespace):
    import redis

    client = redis.Redis.from_url(redis_url)
    router = Router.from_dict(redis_config(server, redis_url, namespace))

    def evalsha_calls() -> int:
        return int(client.info("commandstats").get("cmdstat_evalsha", {}).get("calls", 0))

    def twenty_calls(**kwargs: Any) -> int:
        """EVALSHA commands Redis ran for 20 calls (the circuit state's scripts included)."""
        before = evalsha_calls()
        for i in range(20):  # ~4 ms apart: several land within one 20 ms linger of the writer
            router.complete([{"role": "user", "content": f"batched {i}"}], **kwargs)
        assert router.flush_cache()
        return evalsha_calls() - before

    state_only = twenty_calls(cache=False)  # neither read nor written: the circuit state's share
    writes = twenty_calls() - state_only
    assert 1 <= writes < 20
    stats = router.cache_stats()["recent"]
    assert stats["entries"] == 20 and stats["this_process"]["writes"] == 20 and stats["this_process"]["write_errors"] == 0


def test_redis_expires_answers_after_the_ttl(server, redis_url, namespace):
    router = Router.from_dict(redis_config(server, redis_url, namespace, ttl=2))
    router.complete(HI)
    router.flush_cache()
    all_down(server)
    assert router.complete(HI).route.served_by == "recent"
    time.sleep(2.2)
    assert router.complete(HI).route.served_by == "static"


def test_a_redis_that_went_away_costs_misses_and_one_warning_never_a_failed_call(server, start_redis,
                                                                                  namespace, caplog):
    redis = start_redis()
    router = Router.from_dict(redis_config(server, redis.url, namespace))
    redis.stop()
    with caplog.at_level(logging.WARNING, logger="router"):
        for prompt in (HI, OTHER, HI):
            assert router.complete(prompt).route.served_by == "primary"
        router.flush_cache()
        all_down(server)
        resp = router.complete(HI)
    assert resp.route.served_by == "static" and "could not be read" in resp.route.attempts[-1].detail
    cache_warnings = [r.getMessage() for r in caplog.records if "cache 'recent'" in r.getMessage()]
    assert len(cache_warnings) == 2, cache_warnings  # one for writes, one for reads
    assert "write failed" in cache_warnings[0] and "read failed" in cache_warnings[1]


# -- config and CLI ---------------------------------------------------------------------------

@pytest.mark.parametrize("cache, state, path, message", [
    ({"backend": "redis"}, None, "targets.recent.backend", "uses state.url"),
    ({"path": "x.sqlite"}, None, "targets.recent.path", "only the sqlite backend takes a path"),
    ({"backend": "disk"}, None, "targets.recent.backend", "expected one of memory, sqlite, redis"),
    ({"ttl": 0}, None, "targets.recent.ttl", "expected a number >= 0.001"),
    ({"max_entries": 0}, None, "targets.recent.max_entries", "expected a number >= 1"),
    ({"model": "openai/x"}, None, "targets.recent.model", "unknown key"),
])
def test_cache_config_errors_name_the_key(server, cache, state, path, message):
    with pytest.raises(ConfigError, match=message) as error:
        Router.from_dict(config(server, cache))
    assert error.value.key_path == path


def test_advise_leaves_a_cache_tier_alone(server, tmp_path, capsys):
    from router.cli import main

    path, log = tmp_path / "router.yaml", tmp_path / "events.jsonl"
    data = config(server)
    data["events"] = {"log": "json"}
    path.write_text(json.dumps(data))
    handler, logger = logging.FileHandler(log, encoding="utf-8"), logging.getLogger("router.events")
    logger.addHandler(handler)
    level = logger.level
    logger.setLevel(logging.INFO)
    try:
        router = Router.from_yaml(path)
        router.complete(HI)
        all_down(server)
        for _ in range(3):
            router.complete(HI)
            router.complete(OTHER)
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)
        handler.close()
    assert {"recent"} <= {json.loads(line).get("target") for line in log.read_text().splitlines()}
    assert main(["advise", str(log), "--config", str(path), "--json"]) == 0
    advised = json.loads(capsys.readouterr().out)["targets"]
    assert "primary" in advised and "recent" not in advised  # a cache tier has nothing to tune

    data["targets"]["recent"] = {"provider": "cache", "backend": "sqlite", "path": str(tmp_path / "real.sqlite")}
    path.write_text(json.dumps(data))
    assert main(["advise", str(log), "--config", str(path), "--json", "--replay"]) == 0
    assert "replay" in json.loads(capsys.readouterr().out)
    assert not (tmp_path / "real.sqlite").exists()  # a replay never touches the real cache


def test_defaults_rate_limit_paces_providers_not_the_cache_tier(server):
    data = config(server)
    data["defaults"]["rate_limit"] = {"rpm": 1, "burst": 1, "max_wait": 0}
    router = Router.from_dict(data)
    assert router.complete(HI).route.served_by == "primary"  # the primary's one request this minute
    all_down(server)
    served = [router.complete(HI).route.served_by for _ in range(5)]
    assert served == ["recent"] * 5  # the cache tier is never throttled


def test_cache_arguments_are_per_call_not_target_params(server):
    data = config(server)
    data["targets"]["primary"]["params"] = {"cache_scope": "tenant"}
    with pytest.raises(ConfigError, match="set by the router, not a parameter") as error:
        Router.from_dict(data)
    assert error.value.key_path == "targets.primary.params.cache_scope"


def cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "router.cli", *args], capture_output=True, text=True,
                          cwd=REPO, timeout=60)


def test_cli_cache_stats_and_clear(server, tmp_path):
    path = tmp_path / "router.yaml"
    path.write_text(json.dumps(config(server, {"backend": "sqlite", "path": "answers.sqlite"})))
    router = Router.from_yaml(path)
    router.complete(HI)
    router.complete(OTHER)
    router.flush_cache()
    all_down(server)
    router.complete(HI)  # one hit

    out = cli("cache", "stats", "--config", str(path), "--json")
    assert out.returncode == 0, out.stderr
    stats = json.loads(out.stdout)["targets"]["recent"]
    assert stats["backend"] == "sqlite" and stats["entries"] == 2 and stats["bytes"] > 0
    router.flush_cache()
    assert json.loads(cli("cache", "stats", "--config", str(path), "--json").stdout)["targets"]["recent"]["hits"] == 1

    table = cli("cache", "stats", "--config", str(path))
    assert table.returncode == 0 and "recent" in table.stdout and "sqlite" in table.stdout

    out = cli("cache", "clear", "--config", str(path))
    assert out.returncode == 0 and out.stdout.strip() == "recent: removed 2 answers"
    assert router.complete(HI).route.served_by == "static"

    wrong = cli("cache", "stats", "--target", "primary", "--config", str(path))
    assert wrong.returncode == 2 and "'primary' is not a cache target" in wrong.stderr


def test_a_replayed_answer_with_tool_calls_reads_back_as_the_same_answer():
    """What the cache tier streams (replay) is what a finished stream is kept as (answer_of)."""
    from router.response import Chunk, Response, answer_of
    from router.targets.cache import replay

    calls = [{"id": "call_1", "type": "function", "function": {"name": "lookup", "arguments": '{"q": "x"}'}},
             {"id": "call_2", "type": "function", "function": {"name": "other", "arguments": "{}"}}]
    original = Response.from_openai({"id": "r1", "model": "m", "created": 1700000000, "choices": [
        {"index": 0, "finish_reason": "tool_calls", "message": {
            "role": "assistant", "content": "Let me look that up, it takes a moment or two to find.",
            "tool_calls": calls}}]})
    chunks = [Chunk.from_openai(raw) for raw in replay(original)]
    assert len([c for c in chunks if c.text]) == 2  # eight words per chunk
    again = answer_of(chunks)
    assert again.choices == original.choices and (again.id, again.model, again.created) == ("r1", "m", 1700000000)


def test_cli_complete_answers_from_the_sqlite_cache_written_by_an_earlier_process(server, tmp_path):
    path = tmp_path / "router.yaml"
    path.write_text(json.dumps(config(server, {"backend": "sqlite"})))
    first = cli("complete", "What is a circuit breaker?", "--config", str(path))
    assert first.returncode == 0 and "served by primary" in first.stderr, first.stderr
    all_down(server)
    again = cli("complete", "What is a circuit breaker?", "--config", str(path))
    assert again.returncode == 0 and again.stdout == first.stdout
    assert "served by recent (degraded, stored " in again.stderr
    assert (tmp_path / ".router-cache.sqlite").is_file()  # the default path, beside the config


def test_a_forked_worker_reads_and_writes_the_sqlite_cache_of_its_parent(server, tmp_path):
    """A pre-forking server builds its Router, then forks workers: each needs connections,
    locks and a writer thread of its own."""
    router = Router.from_dict(config(server, {"backend": "sqlite", "path": str(tmp_path / "c.sqlite")}))
    router.complete(HI)  # the parent's writer thread and connections exist and are in use
    router.flush_cache()

    def providers(up: bool) -> None:  # circuits in this process's memory: no request either way
        for name in ("primary", "secondary"):
            (router.force_close if up else router.force_open)(name)

    pid = os.fork()
    if pid == 0:  # the worker
        code = 1
        try:
            providers(up=False)
            from_cache = router.complete(HI).route.served_by
            providers(up=True)
            answered = router.complete(OTHER).route.served_by
            code = 0 if (from_cache, answered, router.flush_cache()) == ("recent", "primary", True) else 2
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    providers(up=False)
    assert router.complete(OTHER).route.served_by == "recent"  # the worker's answer, written by its own thread


# -- unreadable answers, and answers still queued for the store --------------------------------

def store_config(server, backend: str, tmp_path, request, chain: list[str] | None = None) -> dict[str, Any]:
    if backend == "redis":
        url, namespace = request.getfixturevalue("redis_url"), request.getfixturevalue("namespace")
        return config(server, {"backend": "redis"}, chain=chain,
                      state={"backend": "redis", "url": url, "namespace": namespace})
    return config(server, {"backend": "sqlite", "path": str(tmp_path / "c.sqlite")}, chain=chain)


# bad JSON, JSON that is no answer, bytes that are not UTF-8
UNREADABLE = ['{"id": "r1", "choi', "[]", '{"choices": "x"}', "null", b"\xff\xfe{"]


def corrupt_every_stored_answer(data: dict[str, Any], backend: str) -> int:
    if backend == "redis":
        import redis

        client = redis.Redis.from_url(data["state"]["url"])
        keys = sorted(client.scan_iter(match=f"{data['state']['namespace']}:cache:*:a:*"))
        for key, payload in zip(keys, UNREADABLE):
            client.hset(key, "p", payload)
        return len(keys)
    import sqlite3

    with sqlite3.connect(data["targets"]["recent"]["path"]) as db:
        keys = [k for (k,) in db.execute("SELECT key FROM answers ORDER BY key")]
        for key, payload in zip(keys, UNREADABLE):
            db.execute("UPDATE answers SET payload = ? WHERE key = ?", (payload, key))
    return len(keys)


@pytest.mark.parametrize("backend", ["sqlite", "redis"])
def test_unreadable_stored_answers_are_misses_that_are_deleted_and_never_open_the_cache_circuit(
        server, tmp_path, request, backend, caplog):
    data = store_config(server, backend, tmp_path, request)
    router = Router.from_dict(data)
    questions = [[{"role": "user", "content": f"question {i}"}] for i in range(5)]
    for question in questions:
        router.complete(question)
    assert router.flush_cache()
    assert corrupt_every_stored_answer(data, backend) == 5
    server.script("p", faults.ok(ANSWER))
    router.complete(HI)  # one intact answer, to another question
    assert router.flush_cache()

    all_down(server)
    with caplog.at_level(logging.WARNING, logger="router"):
        for question in questions:
            resp = router.complete(question)
            assert resp.route.served_by == "static" and outcomes(resp)[-1] == ("recent", "cache_miss")
            assert "could not be read" in resp.route.attempts[-1].detail
        intact = router.complete(HI)
    assert intact.route.served_by == "recent" and intact.text == ANSWER  # not circuit_open
    assert router.status()["recent"]["state"] == "closed" and router.status()["recent"]["failures"] == 0
    stats = router.cache_stats()["recent"]
    assert stats["entries"] == 1 and stats["this_process"]["unreadable"] == 5  # the five deleted
    warnings = [r.getMessage() for r in caplog.records if "could not be read" in r.getMessage()]
    assert len(warnings) == 1, warnings


@pytest.mark.parametrize("backend", ["sqlite", "redis"])
def test_a_router_reads_the_answer_it_has_queued_but_not_yet_written(server, tmp_path, request, backend,
                                                                     monkeypatch):
    from router.cache import writer

    monkeypatch.setattr(writer, "LINGER_S", 1.5)  # the first answer waits in the writer's batch for 1.5 s
    router = Router.from_dict(store_config(server, backend, tmp_path, request, chain=["primary", "recent"]))
    server.script("p", faults.ok(ANSWER))
    assert router.complete(HI).route.served_by == "primary"
    server.script("p", faults.status(401))  # at once: no retries, no backoff
    started = time.monotonic()
    again = router.complete(HI)
    assert time.monotonic() - started < 1.5  # still within the linger: not yet in the store
    assert again.route.served_by == "recent" and again.text == ANSWER
    assert outcomes(again) == [("primary", "misconfigured"), ("recent", "ok")]
    assert router.flush_cache() and router.cache_stats()["recent"]["entries"] == 1
