"""Nothing a caller, a config or a provider sends can hurt the router or the next caller
(issue 11): each test sends the bad thing over real HTTP (or to the real local model) and
checks what reached the server, the circuits afterwards, and the exact error."""

from __future__ import annotations

import asyncio
import logging
import time
import traceback
from pathlib import Path

import pytest

from router import AllTargetsFailed, ConfigError, ContentRejected, InvalidRequest, Router
from router.cli import main as cli_main
from router.config import config_from_dict, load_config
from router.errors import ProviderError
from router.models import DEFAULT_MODEL_FILE, default_models_dir
from router.testing import faults

from .conftest import TEST_KEY, remote

HI = [{"role": "user", "content": "hi"}]
ONE_TRY = {"attempts": 1, "min_wait": 0.01, "max_wait": 0.01}
MODEL = default_models_dir() / DEFAULT_MODEL_FILE


def states(router: Router) -> dict[str, tuple[str, int]]:
    return {name: (info["state"], info["failures"]) for name, info in router.status().items()}


def local_target(**overrides) -> dict:
    return {"provider": "llama_cpp", "model_path": str(MODEL), "n_ctx": 512, "n_threads": 1, **overrides}


# -- 1. malformed content is the caller's error, and never opens a circuit ---------------

@pytest.mark.parametrize("content, message", [
    ([None], "messages[0].content[0] must be a content part such as {'type': 'text', 'text': '...'}, got None"),
    (["text"], "messages[0].content[0] must be a content part such as {'type': 'text', 'text': '...'}, got 'text'"),
    ([{"text": "x"}], "messages[0].content[0] has no 'type' (a string such as 'text' or 'image_url')"),
    ([{"type": "text", "text": 5}],
     "messages[0].content[0] is a 'text' part without a valid 'text': write {'type': 'text', 'text': '...'}"),
    ([{"type": "image_url", "image_url": {"uri": "x"}}],
     "messages[0].content[0].image_url.url must be a string (an https: or data: URL)"),
    ("a\ud800b", "messages[0].content is not valid Unicode text: a lone surrogate '\\ud800' at index 1"),
    ([], "messages[0].content is an empty list; give a string or at least one part"),
])
def test_malformed_content_is_refused_before_any_request_and_leaves_circuits_closed(server, make_router,
                                                                                    content, message):
    router = make_router({"primary": "p", "secondary": "s"}, defaults={"breaker": {"fail_max": 1}})
    for _ in range(3):
        with pytest.raises(InvalidRequest) as info:
            router.complete([{"role": "user", "content": content}])
        assert str(info.value) == message
    assert server.count("p") == server.count("s") == 0
    assert states(router) == {"primary": ("closed", 0), "secondary": ("closed", 0)}
    assert router.complete(HI).route.served_by == "primary"  # the next caller is served as before


def test_a_failure_inside_litellm_before_sending_is_unsent_and_counts_against_nothing(server, make_router):
    # a part type we pass on (providers add their own) but litellm's client side refuses
    # (the openai transport sends it as it is: it translates nothing)
    router = make_router({"primary": remote(server, "p", transport="litellm"),
                          "secondary": remote(server, "s", transport="litellm")}, defaults={"breaker": {"fail_max": 1}})
    odd = [{"role": "user", "content": [{"type": "video", "video": {"id": "v1"}}]}]
    for _ in range(3):
        with pytest.raises(AllTargetsFailed) as info:
            router.complete(odd)
    assert [(a.target, a.outcome) for a in info.value.attempts] == [("primary", "unsent"), ("secondary", "unsent")]
    assert str(info.value).startswith("all targets of chain 'default' failed; primary: unsent (Exception): "
                                      "the request could not be sent: Invalid user message at index 0.")
    for call in (lambda: asyncio.run(router.acomplete(odd)), lambda: router.complete(odd, stream=True)):
        with pytest.raises(AllTargetsFailed) as info:
            call()
        assert [a.outcome for a in info.value.attempts] == ["unsent", "unsent"]
    assert server.count("p") == server.count("s") == 0
    assert states(router) == {"primary": ("closed", 0), "secondary": ("closed", 0)}
    assert router.complete(HI).route.served_by == "primary"


# -- 2. a 200 without choices is a malformed reply ------------------------------------

def test_a_reply_with_empty_choices_is_transient_and_fails_over(server, make_router):
    server.script("p", faults.no_choices())
    router = make_router({"primary": "p", "secondary": "s"})
    resp = router.complete(HI)
    assert resp.route.served_by == "secondary" and resp.text == faults.DEFAULT_TEXT
    assert [(a.outcome, a.detail) for a in resp.route.attempts[:3]] == [
        ("transient", "malformed reply: a 200 with no choices")] * 3
    assert server.count("p") == 3 and server.count("s") == 1
    assert states(router) == {"primary": ("closed", 3), "secondary": ("closed", 0)}


# -- 3. router-owned keys in a config's params --------------------------------------------

@pytest.mark.parametrize("key, value", [("timeout", 8), ("num_retries", 3), ("stream", True), ("api_key", "x"),
                                        ("model", "gpt-4o")])
def test_router_owned_keys_in_params_are_a_config_error(server, key, value):
    raw = {"targets": {"p": remote(server, "p", params={key: value})}, "chains": {"default": ["p"]}}
    with pytest.raises(ConfigError) as info:
        Router.from_dict(raw)
    assert info.value.key_path == f"targets.p.params.{key}"
    assert info.value.reason.startswith("set by the router, not a parameter: use the target's own keys")
    with pytest.raises(ConfigError) as info:
        Router.from_dict({**raw, "targets": {"p": remote(server, "p")}, "defaults": {"params": {key: value}}})
    assert info.value.key_path == f"defaults.params.{key}"
    assert server.count("p") == 0


# -- 4. huge numbers --------------------------------------------------------------------

def test_a_retry_after_of_1e12_is_clamped_and_fails_over(server, make_router):
    server.script("p", faults.status(429, retry_after=1e12))
    router = make_router({"primary": "p", "secondary": "s"})
    resp = router.complete(HI)
    assert resp.route.served_by == "secondary"
    assert [(a.target, a.outcome, a.status) for a in resp.route.attempts] == [
        ("primary", "rate_limited", 429), ("secondary", "ok", None)]
    assert server.count("p") == 1 and server.count("s") == 1
    status = router.status()["primary"]
    assert status["state"] == "open" and 3500 < status["retry_in_s"] <= 3600  # clamped to one hour
    assert router.complete(HI).route.attempts[0].outcome == "circuit_open"
    assert server.count("p") == 1


@pytest.mark.parametrize("where, key_path", [
    ({"defaults": {"breaker": {"reset_timeout": 1e12}}}, "defaults.breaker.reset_timeout"),
    ({"defaults": {"timeout": 1e10}}, "defaults.timeout"),
    ({"defaults": {"deadline": 1e10}}, "defaults.deadline"),
    ({"defaults": {"stream_idle_timeout": 1e10}}, "defaults.stream_idle_timeout"),
    ({"defaults": {"retry": {"max_retry_after": 1e300}}}, "defaults.retry.max_retry_after"),
])
def test_every_configured_duration_has_a_maximum_of_one_day(server, where, key_path):
    raw = {"targets": {"p": remote(server, "p")}, "chains": {"default": ["p"]}, **where}
    with pytest.raises(ConfigError) as info:
        Router.from_dict(raw)
    assert info.value.key_path == key_path
    assert info.value.reason.startswith("expected at most 86400 seconds (one day), got 1")
    assert Router.from_dict({**raw, "defaults": {"timeout": 86400}}).config.targets["p"].timeout == 86400


# -- 5. OpenAI's 413 is a size error, not a rate limit -----------------------------------

@pytest.mark.usefixtures("transport")  # on both transports (conftest.py)
def test_a_413_request_too_large_is_context_too_long_and_skips_targets_no_larger(server, make_router):
    server.script("p", faults.request_too_large())
    router = make_router({"primary": remote(server, "p", context_window=8000),
                          "same": remote(server, "same", context_window=8000),
                          "large": remote(server, "large", context_window=128000)})
    resp = router.complete(HI)
    assert resp.route.served_by == "large"
    assert [(a.target, a.outcome, a.status) for a in resp.route.attempts] == [
        ("primary", "context_too_long", 413), ("same", "too_small", None), ("large", "ok", None)]
    assert resp.route.attempts[0].detail == faults.REQUEST_TOO_LARGE_MESSAGE
    assert (server.count("p"), server.count("same"), server.count("large")) == (1, 0, 1)
    assert states(router) == {"primary": ("closed", 0), "same": ("closed", 0), "large": ("closed", 0)}


# -- 6. argument types -------------------------------------------------------------------

@pytest.mark.parametrize("kwargs, message", [
    ({"temperature": "hot"}, "temperature must be a number between 0 and 2, got 'hot'"),
    ({"temperature": 3}, "temperature must be a number between 0 and 2, got 3"),
    ({"top_p": "x"}, "top_p must be a number between 0 and 1, got 'x'"),
    ({"tools": "x"}, "tools must be a list of tools such as {'type': 'function', 'function': {'name': ..., "
                     "'parameters': {...}}}, got 'x'"),
    ({"tool_choice": "sometimes"}, "tool_choice must be 'none', 'auto', 'required' or {'type': 'function', "
                                   "'function': {'name': '...'}}, got 'sometimes'"),
    ({"response_format": "json"}, "response_format must be {'type': 'text' | 'json_object' | 'json_schema', ...}, "
                                  "got 'json'"),
    ({"stop": ["a", 1]}, "stop must be a string or a list of strings, got ['a', 1]"),
    ({"seed": 1.5}, "seed must be a whole number, got 1.5"),
    ({"n": True}, "n must be a whole number between 1 and 128, got True"),
    ({"presence_penalty": float("nan")}, "presence_penalty must be a number between -2 and 2, got nan"),
    ({"logit_bias": {"x": 1}}, "logit_bias keys must be token ids, got 'x'"),
    ({"user": 42}, "user must be a string, got 42"),
    ({"metadata": {"a": 1}}, "metadata must map strings to strings, got {'a': 1}"),
    ({"chain": []}, "chain must be the name of a configured chain (a string), got []; configured chains: default"),
    ({"deadline": 10**400}, "deadline must be a number of seconds > 0 and at most 86400 (one day), got "
                            f"{'1' + '0' * 56}..."),
    ({"deadline": float("inf")}, "deadline must be a number of seconds > 0 and at most 86400 (one day), got inf"),
])
def test_argument_types_are_checked_before_any_request(server, make_router, kwargs, message):
    router = make_router({"primary": "p"})
    with pytest.raises(InvalidRequest) as info:
        router.complete(HI, **kwargs)
    assert str(info.value) == message
    with pytest.raises(InvalidRequest):
        asyncio.run(router.acomplete(HI, **kwargs))
    assert server.count("p") == 0
    assert states(router) == {"primary": ("closed", 0)}


def test_chain_and_deadline_may_be_passed_positionally_as_the_readme_writes(server, make_router):
    router = make_router({"primary": "p", "backup": "b"}, chains={"default": ["primary"], "other": ["backup"]})
    assert router.complete(HI, "other").route.served_by == "backup"
    assert router.complete(HI, "other", 5.0, max_tokens=4).route.served_by == "backup"
    assert asyncio.run(router.acomplete(HI, "other")).route.served_by == "backup"
    assert server.count("p") == 0 and server.count("b") == 3


# -- 7. the local tier is not tripped by its own queue ----------------------------------

def test_a_burst_queued_on_one_local_model_never_opens_its_circuit(make_router):
    # tokens 0-2 (end of text, start/end of turn) banned: every answer is exactly 24 tokens
    params = {"max_tokens": 24, "temperature": 0, "logit_bias": {0: -100, 1: -100, 2: -100}}
    warm = make_router({"local": local_target(pool_size=1, timeout=120)})  # loads the shared pool
    warm.complete(HI, **params)
    started = time.perf_counter()
    assert warm.complete(HI, **params).usage.completion_tokens == 24
    one = time.perf_counter() - started  # ~0.3 s idle, ~1 s on a busy machine
    # a timeout of 5 answers: one caller alone always fits, 16 queued callers never all do
    router = make_router({"local": local_target(pool_size=1, max_queue=32, timeout=round(5 * one, 2))},
                         defaults={"breaker": {"fail_max": 1, "reset_timeout": 60}})

    async def burst():
        return await asyncio.gather(*(router.acomplete(HI, **params) for _ in range(16)), return_exceptions=True)

    results = asyncio.run(burst())
    outcomes = [a.outcome for r in results for a in (r.route.attempts if hasattr(r, "route") else r.attempts)]
    assert set(outcomes) <= {"ok", "no_capacity"} and "ok" in outcomes and "no_capacity" in outcomes
    assert all(isinstance(r, AllTargetsFailed) or r.route.served_by == "local" for r in results)
    assert states(router) == {"local": ("closed", 0)}
    assert router.complete(HI, **params).route.served_by == "local"  # the idle model answers at once


# -- 8. tools on the local tier --------------------------------------------------------

TOOLS = [{"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object"}}}]


def test_a_request_with_tools_skips_the_local_tier_as_unsupported(server, make_router):
    server.script("p", faults.status(503))
    router = make_router({"primary": remote(server, "p", retry=ONE_TRY), "local": local_target(timeout=120)})
    with pytest.raises(AllTargetsFailed) as info:
        router.complete(HI, tools=TOOLS, max_tokens=4)
    assert [(a.target, a.outcome) for a in info.value.attempts] == [("primary", "transient"), ("local", "unsupported")]
    assert info.value.attempts[1].detail == ("the local model cannot call tools: skipped "
                                             "(on_tools: drop answers without them)")
    assert server.count("p") == 1
    assert states(router) == {"primary": ("closed", 1), "local": ("closed", 0)}
    assert router.complete(HI, max_tokens=4).route.served_by == "local"  # without tools it answers


def test_on_tools_drop_answers_without_tools_and_says_so(server, make_router):
    server.script("p", faults.status(503))
    router = make_router({"primary": remote(server, "p", retry=ONE_TRY),
                          "local": local_target(on_tools="drop", timeout=120)})
    resp = router.complete(HI, tools=TOOLS, tool_choice="auto", max_tokens=4)
    assert resp.route.served_by == "local"
    assert "local: tools dropped: the local model answers in prose, without tool_calls" in resp.route.notes
    assert server.count("p") == 1 and states(router)["local"] == ("closed", 0)


# -- 9. secrets never travel through the exception chain -------------------------------

@pytest.mark.usefixtures("transport")  # on both transports (conftest.py)
def test_a_key_quoted_back_by_the_provider_never_reaches_the_exception_chain(server, make_router, caplog):
    server.script("p", faults.quoting_key(401))
    server.script("s", faults.status(500, message=f"upstream rejected Authorization: Bearer {TEST_KEY}"))
    router = make_router({"primary": "p", "secondary": remote(server, "s", retry=ONE_TRY)})
    with pytest.raises(AllTargetsFailed) as info:
        router.complete(HI)
    exc = info.value
    assert server.count("p") == 1 and server.count("s") == 1
    assert states(router) == {"primary": ("closed", 0), "secondary": ("closed", 1)}
    primary = exc.errors["primary"]
    assert isinstance(primary, ProviderError) and type(primary).__name__ == "AuthenticationError"
    assert (primary.type, primary.status, primary.code, primary.outcome) == (
        "AuthenticationError", 401, "invalid_api_key", "misconfigured")
    assert primary.message == "Invalid Authorization header: Bearer ***"
    assert exc.__cause__ is exc.errors["secondary"] and exc.errors["secondary"].status == 500
    with caplog.at_level(logging.ERROR):
        logging.getLogger("app").exception("call failed", exc_info=exc)
    everything = [repr(exc.errors), str(exc), "".join(traceback.format_exception(exc)), caplog.text]
    link = exc
    while link is not None:
        everything += [repr(link), str(link), repr(vars(link))]
        link = link.__cause__ or link.__context__
    assert not [text for text in everything if TEST_KEY in text]
    assert TEST_KEY.split("-")[-1] not in "".join(everything)


def every_link(exc: BaseException) -> list[BaseException]:
    """`exc` and everything reachable from it through __cause__ and __context__ alike."""
    seen, todo = [], [exc]
    while todo:
        link = todo.pop()
        if link is None or any(link is s for s in seen):
            continue
        seen.append(link)
        todo += [link.__cause__, link.__context__]
    return seen


@pytest.mark.usefixtures("transport")  # on both transports (conftest.py)
def test_no_exception_we_raise_reaches_the_raw_provider_error_through_its_context(server, make_router):
    server.script("p", faults.status(400, message=f"{faults.CONTENT_POLICY_MESSAGE} (Authorization: Bearer {TEST_KEY})",
                                     error_code="content_policy_violation"))
    router = make_router({"primary": "p"})
    with pytest.raises(ContentRejected) as info:
        router.complete(HI)
    links = every_link(info.value)
    assert server.count("p") == 1
    assert [type(link).__name__ for link in links if not isinstance(link, (ContentRejected, ProviderError))] == []
    assert not [link for link in links if TEST_KEY in repr(link) + str(link) + repr(vars(link))]


# -- 10. config oddities ------------------------------------------------------------------

def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "config.yaml"
    path.write_text(text)
    return path


BASE = "targets:\n  p: {model: openai/p, api_key: sk-x}\n"


@pytest.mark.parametrize("text, message", [
    (BASE + "chains:\n  default: &c [p, *c]\n",
     "not valid YAML at line 4, column 19: alias *c is inside the node &c it refers to (a structure that "
     "contains itself)"),
    (BASE + "  p: {model: openai/q}\nchains:\n  default: [p]\n",
     "not valid YAML at line 3, column 3: the key 'p' appears twice in one mapping (first at line 2); "
     "the second would silently replace the first"),
    (BASE + "chains:\n  yes: [p]\n",
     "not valid YAML at line 4, column 3: the key 'yes' is read by YAML as a boolean (true); quote it (\"yes\") "
     "to use it as a name"),
])
def test_yaml_oddities_are_config_errors_with_the_line(tmp_path, capsys, text, message):
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert str(info.value) == f"{path}: {message}"
    assert cli_main(["check-config", str(path)]) == 2
    assert capsys.readouterr().err == f"router: config error: {path}: {message}\n"


def test_numbers_in_scientific_notation_are_numbers(tmp_path):
    config = load_config(write(tmp_path, BASE + "defaults: {timeout: 5e1, retry: {min_wait: 1E-1}}\n"
                                                "chains: {default: [p]}\n"))
    assert (config.targets["p"].timeout, config.targets["p"].retry.min_wait) == (50.0, 0.1)
    with pytest.raises(ConfigError) as info:
        load_config(write(tmp_path, BASE + "defaults: {timeout: 1e300}\nchains: {default: [p]}\n"))
    assert info.value.reason == "expected at most 86400 seconds (one day), got 1e+300"


def test_a_variable_set_to_an_empty_string_is_called_empty_not_unset(tmp_path, monkeypatch):
    monkeypatch.setenv("ROUTER_TEST_EMPTY_KEY", "")
    config = load_config(write(tmp_path, "targets:\n  p: {model: openai/p, api_key: '${ROUTER_TEST_EMPTY_KEY}'}\n"
                                         "  q: {model: openai/q, api_key: sk-x}\nchains: {default: [p, q]}\n"))
    assert config.targets["p"].disabled == "environment variable ROUTER_TEST_EMPTY_KEY is set but empty"


def test_a_dict_that_contains_itself_is_a_config_error():
    raw = {"targets": {"p": {"model": "openai/p"}}, "chains": {"default": ["p"]}}
    raw["targets"]["p"]["params"] = {"metadata": raw}
    with pytest.raises(ConfigError) as info:
        config_from_dict(raw)
    assert str(info.value) == "<dict>: the config contains itself (a mapping or list nested inside itself)"


def test_check_config_fails_when_the_local_model_file_is_missing(tmp_path, capsys, caplog, server):
    path = write(tmp_path, f"targets:\n  p: {{model: openai/p, api_base: '{server.url}', api_key: sk-x, "
                           f"retry: {{attempts: 1}}}}\n"
                           "  local: {provider: llama_cpp, model_path: missing.gguf}\nchains: {default: [p, local]}\n")
    assert cli_main(["check-config", str(path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"router: config error: {path}: targets.local.model_path: model file ")
    assert "missing.gguf not found; run `make model`" in err
    server.script("p", faults.status(503))
    router = Router.from_yaml(path)
    with caplog.at_level(logging.ERROR, logger="router"), pytest.raises(AllTargetsFailed) as info:
        router.complete(HI)
    assert [a.outcome for a in info.value.attempts] == ["transient", "misconfigured"]
    assert "check its model_path" in caplog.text and "api_key" not in caplog.text
    assert server.count("p") == 1
    assert states(router) == {"p": ("closed", 1), "local": ("closed", 0)}


# -- 11. use after close --------------------------------------------------------------------

def test_a_closed_stream_yields_nothing_more(server, make_router):
    server.script("p", faults.stream("one two three four five"))
    router = make_router({"primary": "p"})
    stream = router.complete(HI, stream=True)
    first = next(stream)
    stream.close()
    assert list(stream) == [] and first.text in ("", "one ")
    with pytest.raises(StopIteration):
        next(stream)
    assert stream.route.attempts[-1].outcome == "cancelled"
    assert server.count("p") == 1 and states(router) == {"primary": ("closed", 0)}


def test_a_closed_async_stream_yields_nothing_more(server, make_router):
    server.script("p", faults.stream("one two three four five"))
    router = make_router({"primary": "p"})

    async def main():
        stream = await router.acomplete(HI, stream=True)
        await stream.__anext__()
        await stream.aclose()
        return [chunk async for chunk in stream], stream

    rest, stream = asyncio.run(main())
    assert rest == [] and stream.route.attempts[-1].outcome == "cancelled"
    assert server.count("p") == 1 and states(router) == {"primary": ("closed", 0)}


def test_parameters_in_a_config_are_checked_like_a_calls(server):
    raw = {"targets": {"p": remote(server, "p", params={"temperature": "hot"})}, "chains": {"default": ["p"]}}
    with pytest.raises(ConfigError) as info:
        Router.from_dict(raw)
    assert (info.value.key_path, info.value.reason) == ("targets.p.params.temperature",
                                                        "temperature must be a number between 0 and 2, got 'hot'")
    assert server.count("p") == 0
