"""Async plain calls on the openai transport go over aiohttp (router/targets/async_post.py):
the request the SDK's client would send, the attempt's timeout over the whole reply, and
one session per event loop that goes with its loop. Real sockets throughout."""

from __future__ import annotations

import asyncio
import datetime
import gc
import json
import logging
import socket
import threading
import time
import warnings
from collections.abc import Iterator
from typing import Any

import openai
import pytest

from router import AllTargetsFailed, Router
from router.targets.async_post import SESSIONS
from router.testing import faults

from ..conftest import TEST_KEY
from ..test_time_and_resources import open_fds, settle

HI = [{"role": "user", "content": "hi"}]


def one_target(url: str, **target: Any) -> Router:
    return Router.from_dict({"defaults": {"retry": {"attempts": 1}},
                             "targets": {"p": {"model": "openai/p", "api_base": url, "api_key": TEST_KEY, **target}},
                             "chains": {"default": ["p"]}})


# aiohttp's warnings for a session, connector or connection let go of unclosed (the SDK's
# and litellm's own async clients leave sockets to the garbage collector: not counted)
AIOHTTP_LEFT_OPEN = ("Unclosed client session", "Unclosed connector", "Unclosed connection")


def test_the_request_carries_the_sdk_clients_headers_the_key_and_the_callers_extras(server, monkeypatch):
    monkeypatch.setenv("OPENAI_ORGANIZATION", "org-test")
    server.script("p", faults.ok("a"))
    router = one_target(server.url, params={"temperature": 0.5})
    answer = asyncio.run(router.acomplete(HI, max_tokens=7, extra_headers={"x-trace": "t1"}, extra_body={"seed": 3}))
    assert answer.text == "a"
    sent = server.requests("p")[0]
    assert sent.path == "/v1/chat/completions"
    assert sent.headers["authorization"] == f"Bearer {TEST_KEY}"
    assert sent.headers["user-agent"] == f"AsyncOpenAI/Python {openai.__version__}"
    assert (sent.headers["openai-organization"], sent.headers["x-trace"]) == ("org-test", "t1")
    assert sent.headers["content-type"] == "application/json"
    assert sent.body == {"model": "p", "messages": HI, "temperature": 0.5, "max_tokens": 7, "seed": 3}


def test_the_sdks_own_types_and_datetimes_go_as_the_sdk_writes_them(server):
    """A parameter holding one of the SDK's types (here a message of an earlier answer) or
    a datetime is written as the SDK's own `post()` writes it: the sync path (the SDK) and
    the async path (aiohttp) send the same body."""
    server.script("p", *[faults.ok("a")] * 3)
    router = one_target(server.url)
    message = router.complete(HI).choices[0].message
    extra = {"previous": message, "at": datetime.datetime(2026, 12, 5, 21, 0, tzinfo=datetime.timezone.utc)}
    router.complete(HI, **extra)
    asyncio.run(router.acomplete(HI, **extra))
    by_sdk, by_aiohttp = (request.body for request in server.requests("p")[1:])
    assert by_aiohttp == by_sdk
    assert by_aiohttp["previous"] == {"role": "assistant", "content": "a"}
    assert by_aiohttp["at"] == "2026-12-05T21:00:00+00:00"


def test_a_value_json_cannot_hold_fails_unsent_before_any_request(server):
    router = one_target(server.url)
    with pytest.raises(AllTargetsFailed) as info:
        asyncio.run(router.acomplete(HI, foo={1, 2}))
    attempt = info.value.route.attempts[0]
    assert attempt.outcome == "unsent" and "set is not JSON serializable" in attempt.detail
    assert server.count("p") == 0 and router.status()["p"]["state"] == "closed"


@pytest.fixture
def recording_proxy() -> Iterator[tuple[str, list[bytes]]]:
    """An HTTP proxy that answers every request itself (a canned chat completion) and
    records each request's head: a proxied request names the whole URL in its first line."""
    listener = socket.create_server(("127.0.0.1", 0))
    lines: list[bytes] = []
    body = json.dumps({"id": "c", "object": "chat.completion", "created": 0, "model": "p",
                       "choices": [{"index": 0, "finish_reason": "stop",
                                    "message": {"role": "assistant", "content": "via proxy"}}]}).encode()

    def serve() -> None:
        while True:
            try:
                conn, _ = listener.accept()
            except OSError:
                return
            with conn:
                lines.append(conn.recv(65536).split(b"\r\n\r\n", 1)[0])
                conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nConnection: close\r\n"
                             b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body)

    threading.Thread(target=serve, daemon=True).start()
    yield f"http://127.0.0.1:{listener.getsockname()[1]}", lines
    listener.close()


def test_a_proxy_named_in_the_environment_carries_the_call_as_on_the_sdk(server, recording_proxy, monkeypatch):
    proxy, lines = recording_proxy
    for name in ("NO_PROXY", "no_proxy"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HTTP_PROXY", proxy)
    server.script("p", faults.ok("direct"))
    answer = asyncio.run(one_target(server.url).acomplete(HI))
    assert answer.text == "via proxy" and server.count("p") == 0
    assert [head.split(b"\r\n")[0] for head in lines] == [f"POST {server.url}/chat/completions HTTP/1.1".encode()]


def test_query_and_header_options_go_as_the_sdks_options_take_them(server, recording_proxy, monkeypatch):
    """extra_query: booleans as true/false, lists as repeated keys; extra_headers: a header
    set to None is left out (here the organization the environment gave)."""
    proxy, lines = recording_proxy
    monkeypatch.setenv("HTTP_PROXY", proxy)  # the proxy records what was sent
    for name in ("NO_PROXY", "no_proxy"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("OPENAI_ORGANIZATION", "org-test")
    router = one_target(server.url)
    asyncio.run(router.acomplete(HI, extra_query={"api-version": "2", "flag": True, "tag": ["a", "b"]},
                                 extra_headers={"OpenAI-Organization": None, "x-n": 3}))
    head = lines[0].decode().lower().split("\r\n")
    assert head[0] == f"post {server.url}/chat/completions?api-version=2&flag=true&tag=a&tag=b http/1.1".lower()
    assert "x-n: 3" in head and not [line for line in head if line.startswith("openai-organization")]


@pytest.fixture
def trickling_server() -> Iterator[str]:
    """Answers every request with a 200 whose body comes one byte each 0.1 s (1000 bytes):
    each read is quick, the whole reply takes 100 s."""
    listener = socket.create_server(("127.0.0.1", 0))
    stop = threading.Event()

    def serve() -> None:
        listener.settimeout(0.2)
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except OSError:
                continue
            with conn:
                conn.recv(65536)
                conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n")
                for _ in range(1000):
                    if stop.wait(0.1):
                        break
                    try:
                        conn.sendall(b" ")
                    except OSError:
                        break

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{listener.getsockname()[1]}/v1"
    stop.set()
    thread.join(5)
    listener.close()


def test_the_attempts_timeout_bounds_the_whole_reply_not_each_read(trickling_server):
    router = one_target(trickling_server, timeout=0.5)
    started = time.monotonic()
    with pytest.raises(AllTargetsFailed) as info:
        asyncio.run(router.acomplete(HI))
    elapsed = time.monotonic() - started
    assert info.value.route.attempts[0].outcome == "silent"
    assert info.value.route.attempts[0].error == "Timeout"
    assert elapsed < 5.0, f"the attempt went on for {elapsed:.1f} s with a 0.5 s timeout"


def test_each_event_loop_gets_a_session_that_closes_with_it(server, caplog):
    server.script("p", *[faults.ok("a")] * 40)
    router = one_target(server.url)
    asyncio.run(router.acomplete(HI))
    gc.collect()
    fds = open_fds()
    with warnings.catch_warnings(record=True) as caught, caplog.at_level(logging.ERROR):
        warnings.simplefilter("always")
        for _ in range(20):
            assert asyncio.run(router.acomplete(HI)).text == "a"
        gc.collect()
    # the fault server's threads close their ends a moment after the client
    assert settle(lambda: open_fds() <= fds + 1, within=3.0), "a session per loop left its connection open"
    assert not [str(w.message) for w in caught if str(w.message).startswith(AIOHTTP_LEFT_OPEN)]
    assert "Unclosed client session" not in caplog.text
    assert not [loop for loop in SESSIONS.loops() if loop.is_closed()]


def test_a_loop_closed_without_shutting_down_is_let_go_quietly(server, caplog):
    """A caller that runs its own loop and only closes it: its session is detached at the
    next call in another loop, without an 'Unclosed client session' error."""
    server.script("p", faults.ok("a"), faults.ok("b"))
    router = one_target(server.url)
    loop = asyncio.new_event_loop()
    assert loop.run_until_complete(router.acomplete(HI)).text == "a"
    loop.close()
    with caplog.at_level(logging.ERROR):
        assert asyncio.run(router.acomplete(HI)).text == "b"
        del loop
        gc.collect()
    assert "Unclosed client session" not in caplog.text
    assert not [loop for loop in SESSIONS.loops() if loop.is_closed()]
