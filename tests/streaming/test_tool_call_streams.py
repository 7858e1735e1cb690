"""Tool calls in streams that break (issue 18, points 2 and 3), over real HTTP through the
fault server: a break in the text, inside a tool call, between two calls, inside the
second call, under `continue`, `restart` and `auto`; and the bounds on recoveries.

The caller of a `continue` or `auto` chain never sees half a tool call nor one twice:
each call arrives whole, in one chunk, in order; the text flows live.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from router import StreamInterrupted
from router.response import answer_of
from router.testing import faults

from ..conftest import remote
from .test_recovery import HI, TEXT, outcomes, receive

SAID = "Let me check the weather."  # 5 word pieces
CALLS = [{"name": "get_weather", "arguments": '{"city": "Paris"}'},  # a head and 3 argument pieces
         {"name": "get_time", "arguments": '{"tz": "Europe/Paris"}'}]  # a head and 4 argument pieces
EXPECTED = [(c["name"], c["arguments"]) for c in CALLS]

# cut_after counts the deltas sent: 5 words, then call 0 (4 deltas), then call 1 (5 deltas)
POSITIONS = {
    "in_the_text": (2, "Let me "),
    "inside_a_tool_call": (7, SAID),
    "between_two_tool_calls": (9, SAID),
    "inside_the_second_call": (11, SAID),
}


def tool_stream(text: str = SAID, **kwargs: Any) -> faults.Stream:
    return faults.stream(text, tool_calls=CALLS, **kwargs)


def chain(make_router, server, mode: str, cut_after: int, *, text: str = SAID, fallback_prefill: bool = True,
          fallback: faults.Fault | None = None, attempts: int = 1):
    server.script("p", tool_stream(text, cut_after=cut_after))
    server.script("s", fallback or tool_stream(text))
    retry = {"attempts": attempts, "min_wait": 0.01, "max_wait": 0.02}
    return make_router({"primary": remote(server, "p", prefill=False, retry=retry),
                        "secondary": remote(server, "s", prefill=fallback_prefill)},
                       chains={"default": {"targets": ["primary", "secondary"], "mid_stream": mode}})


def call_deltas(chunks: list[Any]) -> list[Any]:
    return [call for c in chunks for choice in c.choices for call in choice.delta.tool_calls or ()]


def assert_whole_calls_in_order(chunks: list[Any]) -> None:
    """Each call in one delta, complete (its arguments parse), numbered 0, 1 in order."""
    deltas = call_deltas(chunks)
    assert [(d.index, d.function.name, d.function.arguments) for d in deltas] == [
        (i, name, args) for i, (name, args) in enumerate(EXPECTED)]
    assert all(d.id and d.type == "function" for d in deltas)
    assert [json.loads(d.function.arguments) for d in deltas] == [{"city": "Paris"}, {"tz": "Europe/Paris"}]


def answer_calls(chunks: list[Any]) -> list[tuple[str, str]]:
    message = answer_of(chunks).choices[0].message
    return [(c.function.name, c.function.arguments) for c in message.tool_calls or ()]


@pytest.mark.parametrize("api", ["sync", "async"])
def test_an_unbroken_tool_call_stream_gives_a_continue_caller_each_call_whole_in_order(server, make_router, api):
    router = chain(make_router, server, "continue", cut_after=None)
    got = receive(router, api)
    assert got.error is None and got.joined == SAID
    assert_whole_calls_in_order(got.chunks)
    assert got.chunks[-1].finish_reason == "tool_calls"
    assert (server.count("p"), server.count("s")) == (1, 0)


@pytest.mark.parametrize("mode", ["continue", "auto"])
@pytest.mark.parametrize("position", list(POSITIONS))
@pytest.mark.parametrize("api", ["sync", "async"])
def test_a_break_anywhere_in_a_tool_call_stream_is_never_garbled_under_continue_and_auto(
        server, make_router, api, position, mode):
    cut_after, sent = POSITIONS[position]
    router = chain(make_router, server, mode, cut_after)
    got = receive(router, api)
    assert got.error is None
    assert got.joined == got.stream.text == SAID  # the text once, live, nothing repeated
    assert_whole_calls_in_order(got.chunks)  # never half a call, never a call twice
    assert answer_calls(got.chunks) == EXPECTED
    assert got.chunks[-1].finish_reason == "tool_calls" and not any(c.restart for c in got.chunks)
    assert (server.count("p"), server.count("s")) == (1, 1)
    assert server.requests("s")[0].body["messages"] == [*HI, {"role": "assistant", "content": sent}]
    assert outcomes(got.stream.route) == [("primary", "transient"), ("secondary", "ok")]


@pytest.mark.parametrize("position", list(POSITIONS))
def test_a_break_in_a_tool_call_stream_under_restart_keeps_the_marker_semantics(server, make_router, position):
    cut_after, _ = POSITIONS[position]
    router = chain(make_router, server, "restart", cut_after, fallback_prefill=False)
    got = receive(router, "sync", handle_marker=True)
    assert got.error is None and got.shown == got.stream.text == SAID
    (marker,) = [i for i, c in enumerate(got.chunks) if c.restart]
    assert answer_calls(got.chunks[marker:]) == EXPECTED  # the restarted answer, whole
    assert (server.count("p"), server.count("s")) == (1, 1)
    assert server.requests("s")[0].body["messages"] == HI  # from scratch
    assert got.stream.restarts == 1


@pytest.mark.parametrize("api", ["sync", "async"])
def test_a_break_inside_a_call_with_no_text_sent_asks_again_with_the_plain_request(server, make_router, api):
    router = chain(make_router, server, "continue", cut_after=2, text="", fallback_prefill=False)
    got = receive(router, api)
    assert got.error is None and got.joined == ""
    assert_whole_calls_in_order(got.chunks)
    assert (server.count("p"), server.count("s")) == (1, 1)
    assert server.requests("s")[0].body["messages"] == HI  # nothing to prefill: any target may answer
    assert not any(c.restart for c in got.chunks)


def test_auto_restarts_with_the_marker_where_the_only_fallback_refuses_a_prefill(server, make_router):
    refusing = faults.refuse_prefill(faults.stream(TEXT))
    server.script("p", faults.stream(TEXT, cut_after=3))
    server.script("s", refusing)
    targets = {"primary": remote(server, "p", prefill=False, retry={"attempts": 1}),
               "secondary": remote(server, "s", prefill=False)}
    continuing = make_router(targets, chains={"default": {"targets": ["primary", "secondary"]}})
    lost = receive(continuing, "sync")
    assert isinstance(lost.error, StreamInterrupted) and server.count("s") == 0

    server.script("p", faults.stream(TEXT, cut_after=3))
    server.script("s", refusing)
    auto = make_router(targets, chains={"default": {"targets": ["primary", "secondary"], "mid_stream": "auto"}})
    got = receive(auto, "sync", handle_marker=True)
    assert got.error is None and got.shown == got.stream.text == TEXT
    assert [c.restart for c in got.chunks].count(True) == 1 and got.stream.restarts == 1
    assert server.count("s") == 1 and server.requests("s")[0].body["messages"] == HI
    assert "secondary: restarted the stream after primary broke at 14 characters" in got.stream.route.notes


def test_auto_continues_on_a_target_that_takes_the_prefill(server, make_router):
    router = chain(make_router, server, "auto", cut_after=2, fallback=faults.stream(SAID, tool_calls=CALLS))
    got = receive(router, "sync")
    assert got.error is None and not any(c.restart for c in got.chunks)
    assert "secondary: continued the stream after primary broke at 7 characters" in got.stream.route.notes


# -- bounds on recoveries -------------------------------------------------------------------

def cutting(make_router, server, mode: str, names: list[str], **chain_keys: Any):
    for name in names:
        server.script(name, faults.stream(TEXT, cut_after=3))
    retry = {"attempts": 3, "min_wait": 0.01, "max_wait": 0.02}
    targets = {name: remote(server, name, prefill=True, retry=retry) for name in names}
    return make_router(targets, chains={"default": {"targets": names, "mid_stream": mode, **chain_keys}})


@pytest.mark.parametrize("mode", ["continue", "restart", "auto"])
@pytest.mark.parametrize("api", ["sync", "async"])
def test_a_target_that_cuts_every_stream_gets_at_most_retry_attempts_requests_per_call(
        server, make_router, api, mode):
    router = cutting(make_router, server, mode, ["p"])
    got = receive(router, api)
    assert isinstance(got.error, StreamInterrupted)
    assert server.count("p") == 3  # attempts: 3 over all its breaks, not per break
    assert got.error.partial_text == got.stream.text != ""
    assert outcomes(got.error.route) == [("p", "transient")] * 3


@pytest.mark.parametrize("mode", ["continue", "restart"])
def test_max_recoveries_bounds_the_recoveries_of_one_stream_over_all_targets(server, make_router, mode):
    router = cutting(make_router, server, mode, ["p", "q"])
    got = receive(router, "sync")
    assert isinstance(got.error, StreamInterrupted)
    assert server.count("p") + server.count("q") == 4  # the stream and its 3 recoveries (was 10)
    assert (server.count("p"), server.count("q")) == (3, 1)
    assert "it had been recovered max_recoveries (3) times already" in str(got.error)
    assert got.error.partial_text


def test_max_recoveries_zero_ends_the_stream_at_its_first_break(server, make_router):
    router = cutting(make_router, server, "continue", ["p"], max_recoveries=0)
    got = receive(router, "sync")
    assert isinstance(got.error, StreamInterrupted) and got.error.partial_text == "one two three "
    assert server.count("p") == 1
    assert str(got.error).startswith("the stream from p broke after 14 characters and it had been recovered "
                                     "max_recoveries (0) times already")


def test_auto_restarts_on_a_target_once_it_refused_the_prefill_it_declared(server, make_router):
    server.script("p", faults.stream(TEXT, cut_after=3))
    server.script("s", faults.refuse_prefill(faults.stream(TEXT)))
    router = make_router({"primary": remote(server, "p", prefill=False, retry={"attempts": 1}),
                          "secondary": remote(server, "s", prefill=True)},
                         chains={"default": {"targets": ["primary", "secondary"], "mid_stream": "auto"}})
    first = receive(router, "sync")
    assert isinstance(first.error, StreamInterrupted)
    assert outcomes(first.error.route) == [("primary", "transient"), ("secondary", "rejected")]
    again = receive(router, "sync", handle_marker=True)
    assert again.error is None and again.shown == TEXT and again.stream.restarts == 1
    assert server.count("s") == 2 and server.requests("s")[1].body["messages"] == HI
