"""The openai transport (issue 19): which targets use it, that it fails exactly as litellm
does, that nothing secret leaks through the SDK's exceptions, and that a Router of
OpenAI-compatible targets never imports litellm. Over real sockets to the fault server.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import os
import subprocess
import sys
import textwrap
import traceback
from pathlib import Path
from typing import Any

import pytest

from router import AllTargetsFailed, ContentRejected, Router, StreamInterrupted
from router.errors import ConfigError
from router.testing import faults

from ..conftest import TEST_KEY, closed_port
from ..test_hardening import every_link

HI = [{"role": "user", "content": "hi"}]
REPO = Path(__file__).resolve().parents[2]


def target(server: Any, transport: str, **overrides: Any) -> dict[str, Any]:
    return {"model": "openai/p", "api_base": server.url, "api_key": TEST_KEY, "transport": transport, **overrides}


# -- which transport ------------------------------------------------------------------------

@pytest.mark.parametrize(("spec", "expected"), [
    ({"model": "openai/gpt-4o-mini"}, "openai"),
    ({"model": "openai/llama3", "api_base": "http://127.0.0.1:8000/v1"}, "openai"),
    ({"model": "openai/llama3", "transport": "litellm"}, "litellm"),
    ({"model": "anthropic/claude-3-5-haiku-latest"}, "litellm"),
    ({"model": "deepseek/deepseek-chat"}, "litellm"),
    ({"model": "gpt-4o-mini"}, "litellm"),  # litellm's own guess of the provider: litellm decides
])
def test_openai_shaped_models_default_to_the_openai_transport_and_the_rest_to_litellm(spec, expected):
    router = Router.from_dict({"targets": {"p": {"api_key": "k", **spec}}, "chains": {"default": ["p"]}})
    assert router.config.targets["p"].transport == expected


def test_transport_openai_on_a_provider_that_needs_translation_is_a_config_error_naming_file_and_key(tmp_path):
    path = tmp_path / "router.yaml"
    path.write_text("targets:\n  claude:\n    model: anthropic/claude-3-5-haiku-latest\n    transport: openai\n"
                    "chains:\n  default: [claude]\n")
    with pytest.raises(ConfigError) as info:
        Router.from_yaml(path)
    assert (info.value.file, info.value.key_path) == (str(path), "targets.claude.transport")
    assert "transport openai needs an OpenAI-compatible model string" in str(info.value)
    for bad, says in (({"model": "openai/p", "transport": "grpc"}, "expected openai or litellm, got 'grpc'"),
                      ({"provider": "llama_cpp", "model_path": "m.gguf", "transport": "openai"},
                       "only remote targets have a transport")):
        with pytest.raises(ConfigError, match=says) as info:
            Router.from_dict({"targets": {"t": bad}, "chains": {"default": ["t"]}})
        assert info.value.key_path == "targets.t.transport"


# -- the same failure, the same error, on both transports ---------------------------------

FAULTS = {
    "400": faults.status(400), "401": faults.status(401), "403": faults.status(403), "404": faults.status(404),
    "408": faults.status(408), "413": faults.request_too_large(), "422": faults.status(422),
    "429": faults.status(429, retry_after=30), "500": faults.status(500), "502": faults.status(502),
    "503": faults.status(503), "504": faults.status(504), "context": faults.context_too_long(),
    "policy": faults.status(400, message="Invalid prompt: your prompt was flagged as violating our usage policy."),
    "reset": faults.reset(), "malformed": faults.malformed(), "no_choices": faults.no_choices(),
    "hang": faults.hang(3), "unreachable": None,
}


def failure_seen(server: Any, transport: str, fault: faults.Fault | None, *, stream: bool,
                 asynchronous: bool = False, detail: bool = False) -> tuple[Any, ...]:
    """What a caller sees of one failed attempt: the error class, status, outcome, Retry-After
    (and with `detail`, the provider's message as the route tells it)."""
    api_base = server.url if fault is not None else f"http://127.0.0.1:{closed_port()}/v1"
    server.reset()
    if fault is not None:
        server.script("p", fault)
    router = Router.from_dict({"defaults": {"timeout": 0.5, "retry": {"attempts": 1}},
                               "targets": {"p": target(server, transport, api_base=api_base)},
                               "chains": {"default": ["p"]}})
    try:
        if asynchronous:
            asyncio.run(router.acomplete(HI))
        else:
            stream_or_answer = router.complete(HI, stream=stream)
            if stream:
                list(stream_or_answer)
    except (AllTargetsFailed, ContentRejected) as exc:
        cause, attempt = exc.__cause__, exc.route.attempts[-1]
        return (type(cause).__name__, cause.status, cause.outcome, attempt.error, attempt.status, attempt.outcome,
                router.status()["p"]["state"], server.count("p")) + ((attempt.detail,) if detail else ())
    raise AssertionError("the fault did not fail the call")


# a stream's body is SSE: "malformed" and "no_choices" are plain answers' faults (breaks: below)
@pytest.mark.parametrize(("name", "stream"), [(name, False) for name in FAULTS] +
                         [(name, True) for name in FAULTS if name not in ("malformed", "no_choices")])
def test_each_failure_reads_the_same_on_both_transports(server, name, stream):
    fault = FAULTS[name]
    assert failure_seen(server, "openai", fault, stream=stream) == failure_seen(server, "litellm", fault,
                                                                                 stream=stream)


@pytest.mark.parametrize("name", [name for name in FAULTS if name != "hang"] + [pytest.param("hang", marks=pytest.mark.slow)])
def test_an_async_plain_call_fails_as_a_sync_one_and_as_on_litellm(server, name):
    """Async plain calls go over aiohttp (async_post.py), sync ones through the SDK: the
    same fault gives the same error, status, outcome and message on all three paths."""
    fault = FAULTS[name]
    on_aiohttp = failure_seen(server, "openai", fault, stream=False, asynchronous=True, detail=True)
    on_sdk = failure_seen(server, "openai", fault, stream=False, detail=True)
    if name == "unreachable":  # the OS error's own words differ: "Connect call failed" / "Connection refused"
        on_aiohttp, on_sdk = (seen[:-1] + (seen[-1].split(" (")[0],) for seen in (on_aiohttp, on_sdk))
    assert on_aiohttp == on_sdk
    assert on_aiohttp[:-1] == failure_seen(server, "litellm", fault, stream=False)


@pytest.mark.parametrize("fault", [faults.stream("a b c d e", cut_after=2), faults.stream("a b c d e", end_after=2),
                                   faults.stream("a b c d e", invalid_event_at=4)],
                         ids=["reset", "no_finish", "invalid_event"])
def test_a_break_after_content_reads_the_same_on_both_transports(server, fault):
    seen = []
    for transport in ("openai", "litellm"):
        server.reset()
        server.script("p", fault)
        router = Router.from_dict({"targets": {"p": target(server, transport)},
                                   "chains": {"default": {"targets": ["p"], "mid_stream": "error"}}})
        with pytest.raises(StreamInterrupted) as info:
            list(router.complete(HI, stream=True))
        cause = info.value.__cause__
        seen.append((type(cause).__name__, cause.outcome, info.value.partial_text,
                     [(a.outcome, a.error) for a in info.value.route.attempts]))
    assert seen[0] == seen[1]


# -- what the openai transport sends ----------------------------------------------------------

def test_a_stream_asks_for_usage_and_only_a_caller_who_asked_sees_it(server):
    server.script("p", faults.ok("one two three"), faults.ok("one two three"))
    router = Router.from_dict({"targets": {"p": target(server, "openai", params={"temperature": 0.5})},
                               "chains": {"default": ["p"]}})
    chunks = list(router.complete(HI, stream=True, max_tokens=20, foo={"bar": 1}))
    body = server.requests("p")[0].body
    assert body["stream_options"] == {"include_usage": True} and body["model"] == "p"
    assert (body["temperature"], body["max_tokens"], body["foo"]) == (0.5, 20, {"bar": 1})  # unnamed: extra_body
    assert all(chunk.usage is None and chunk.choices for chunk in chunks)  # the usage-only chunk is kept back
    asked = list(router.complete(HI, stream=True, stream_options={"include_usage": True}))
    assert asked[-1].usage is not None and asked[-1].usage.total_tokens > 0


def test_without_an_api_key_the_target_is_misconfigured_and_nothing_is_sent(server, monkeypatch):
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    router = Router.from_dict({"targets": {"p": {"model": "openai/p", "api_base": server.url}},
                               "chains": {"default": ["p"]}})
    with pytest.raises(AllTargetsFailed) as info:
        router.complete(HI)
    assert type(info.value.__cause__).__name__ == "AuthenticationError"
    assert info.value.route.attempts[0].outcome == "misconfigured" and server.count("p") == 0


# -- secrets -------------------------------------------------------------------------------

def test_no_secret_leaks_through_the_sdks_exceptions_into_errors_events_or_logs(server, caplog):
    """The SDK's exceptions hold the request (its Authorization header) and the response
    body (here quoting the key back): none of it reaches what a caller can see or log."""
    server.script("p", faults.quoting_key(401))
    server.script("s", faults.status(500, message=f"upstream rejected Authorization: Bearer {TEST_KEY}"))
    server.script("t", faults.stream("one two three", cut_after=1))
    events: list[Any] = []
    router = Router.from_dict({
        "defaults": {"retry": {"attempts": 1}},
        "targets": {name: target(server, "openai", model=f"openai/{name}") for name in ("p", "s", "t")},
        "chains": {"default": ["p", "s"], "streamed": {"targets": ["t"], "mid_stream": "error"}},
        "events": {"log": "json"}}, listeners=[events.append])
    seen: list[BaseException] = []
    with caplog.at_level(logging.DEBUG):
        for call in (lambda: router.complete(HI), lambda: asyncio.run(router.acomplete(HI)),
                     lambda: list(router.complete(HI, "streamed", stream=True))):
            with pytest.raises((AllTargetsFailed, StreamInterrupted)) as info:
                call()
            seen.append(info.value)
            logging.getLogger("app").exception("call failed", exc_info=info.value)
    assert server.count("p") == 2 and server.count("t") == 1
    texts = [caplog.text, repr(events), json.dumps([dataclasses.asdict(e) for e in events], default=repr)]
    for exc in seen:
        texts += ["".join(traceback.format_exception(exc)), repr(exc.route)]
        for link in every_link(exc) + list(getattr(exc, "errors", {}).values()):
            texts += [repr(link), str(link), repr(vars(link))]
    assert not [text for text in texts if TEST_KEY in text or TEST_KEY.split("-")[-1] in text]


# -- never litellm --------------------------------------------------------------------------

NEVER_LITELLM = textwrap.dedent("""
    import asyncio, sys
    import router
    r = router.Router.from_dict({{
        "defaults": {{"retry": {{"attempts": 1}}}},
        "targets": {{"a": {{"model": "openai/a", "api_base": "{url}", "api_key": "{key}"}},
                     "b": {{"model": "openai/b", "api_base": "{url}", "api_key": "{key}", "prefill": True}}}},
        "chains": {{"default": ["a", "b"]}}}})
    hi = [{{"role": "user", "content": "hi"}}]
    async def both():
        answer = await r.acomplete(hi)
        return answer.text, "".join([c.text async for c in await r.acomplete(hi, stream=True)])
    texts = [r.complete(hi).text, "".join(c.text for c in r.complete(hi, stream=True)), *asyncio.run(both())]
    print(texts, [a.outcome for a in r.complete(hi).route.attempts], sorted(m for m in sys.modules if "litellm" in m))
""")


def test_a_router_of_openai_compatible_targets_never_imports_litellm(server):
    server.script("a", faults.status(503), faults.ok("from a"))
    server.script("b", faults.ok("from b"))
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    out = subprocess.run([sys.executable, "-c", NEVER_LITELLM.format(url=server.url, key=TEST_KEY)],
                         capture_output=True, text=True, cwd=REPO, env=env, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    # a failover (a's 503), then a's answers; litellm in no module's name
    assert out.stdout.strip() == "['from b', 'from a', 'from a', 'from a'] ['ok'] []"
