"""Streams that recover (issue 10), over real HTTP through the fault server.

Each break after content (a body cut without a finish, a reset, a stall with the socket
open, an invalid SSE event) is recovered by a continuation on a target that takes the
text already sent as an assistant prefill, or by an announced restart, or ends in
`StreamInterrupted`: never a repeated, lost or silently truncated answer.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import pytest

from router import StreamInterrupted
from router.testing import faults

from ..conftest import TEST_KEY, remote

HI = [{"role": "user", "content": "Count to twelve in words."}]
pytestmark = pytest.mark.usefixtures("transport")  # every test on both transports (conftest.py)
TEXT = "one two three four five six seven eight nine ten eleven twelve."
IDLE = 0.5  # stream_idle_timeout of the primary
FIRST = 1.0  # first_token_timeout of the primary
REPO = Path(__file__).resolve().parents[2]


class Received:
    """What a caller saw: every chunk, the text it would show, the stream, the time taken."""

    def __init__(self) -> None:
        self.chunks: list[Any] = []
        self.shown = ""  # a UI's text: cleared on the restart marker when the caller handles it
        self.stream: Any = None
        self.error: BaseException | None = None
        self.elapsed = 0.0

    def take(self, chunk: Any, handle_marker: bool) -> None:
        self.chunks.append(chunk)
        if handle_marker and chunk.restart:
            self.shown = ""
        self.shown += chunk.text

    @property
    def joined(self) -> str:
        return "".join(c.text for c in self.chunks)


def receive(router: Any, api: str, *, handle_marker: bool = False, **kwargs: Any) -> Received:
    """Call `router` with stream=True through `api` and read to the end (or the error)."""
    got = Received()

    def run_sync() -> None:
        got.stream = router.complete(HI, stream=True, **kwargs)
        for chunk in got.stream:
            got.take(chunk, handle_marker)

    async def run_async() -> None:
        got.stream = await router.acomplete(HI, stream=True, **kwargs)
        async for chunk in got.stream:
            got.take(chunk, handle_marker)

    started = time.monotonic()
    try:
        run_sync() if api == "sync" else asyncio.run(run_async())
    except StreamInterrupted as exc:
        got.error = exc
    got.elapsed = time.monotonic() - started
    return got


def hangups(server: Any, model: str, within: float = 3.0) -> list[float]:
    """When the client of `model` hung up on a held connection, seconds after its request
    (the server notices within its 50 ms poll: wait for it a little)."""
    end = time.monotonic() + within
    while not server.hangups(model) and time.monotonic() < end:
        time.sleep(0.02)
    start = server.requests(model)[0].t
    return [t - start for t in server.hangups(model)]


def outcomes(route: Any) -> list[tuple[str, str]]:
    return [(a.target, a.outcome) for a in route.attempts]


def primary(server: Any, fault: faults.Fault, **overrides: Any) -> dict[str, Any]:
    server.script("p", fault)
    return remote(server, "p", prefill=False, stream_idle_timeout=IDLE, first_token_timeout=FIRST, **overrides)


def fallback(server: Any, model: str = "s", fault: faults.Fault | None = None, **overrides: Any) -> dict[str, Any]:
    server.script(model, fault or faults.stream(TEXT))
    return remote(server, model, **{"prefill": True, **overrides})


APIS = pytest.mark.parametrize("api", ["sync", "async"])

# Each break happens after the first 3 words ("one two three "), except the invalid event,
# which is the 10th SSE event: after the role chunk and 8 words.
BREAKS = {
    "cut_without_finish": (faults.stream(TEXT, end_after=3), "one two three ", "transient"),
    "reset": (faults.stream(TEXT, cut_after=3), "one two three ", "transient"),
    "stall_30s": (faults.stream(TEXT, stall_after=3, stall_seconds=30), "one two three ", "silent"),
    "invalid_event": (faults.stream(TEXT, invalid_event_at=10), "one two three four five six seven eight ",
                      "transient"),
}


# -- the first token --------------------------------------------------------------------

@APIS
def test_a_first_token_that_never_comes_is_silent_and_fails_over_at_once_with_one_request(server, make_router,
                                                                                          api):
    router = make_router({"primary": primary(server, faults.stream(TEXT, first_token_delay=None)),
                          "secondary": fallback(server)})
    got = receive(router, api)
    assert got.error is None and got.shown == TEXT
    assert server.count("p") == 1 and server.count("s") == 1  # retry.attempts is 3: silence is not retried
    assert outcomes(got.stream.route) == [("primary", "silent"), ("secondary", "ok")]
    assert "first_token_timeout" in got.stream.route.attempts[0].detail
    assert FIRST * 0.9 < got.elapsed < FIRST + 3.0
    assert len(hangups(server, "p")) == 1  # the silent connection was closed, not left open
    assert router.status()["primary"]["failures"] == 1


@APIS
def test_retry_on_timeout_retries_a_silent_first_token(server, make_router, api):
    server.script("p", faults.stream(TEXT, first_token_delay=None), faults.stream(TEXT))
    router = make_router({"primary": remote(server, "p", first_token_timeout=FIRST,
                                            retry={"attempts": 2, "min_wait": 0.01, "max_wait": 0.02,
                                                   "retry_on_timeout": True})})
    got = receive(router, api)
    assert got.shown == TEXT and server.count("p") == 2
    assert outcomes(got.stream.route) == [("primary", "silent"), ("primary", "ok")]


# -- continuation on a target that accepts a prefill -------------------------------------

@APIS
@pytest.mark.parametrize("kind", list(BREAKS))
def test_a_break_after_content_continues_on_a_prefill_target_as_one_answer(server, make_router, api, kind):
    fault, sent, outcome = BREAKS[kind]
    router = make_router({"primary": primary(server, fault), "secondary": fallback(server)})
    got = receive(router, api)
    assert got.error is None
    assert got.shown == got.joined == got.stream.text == TEXT  # the fallback's full answer: nothing repeated or lost
    assert server.count("p") == 1 and server.count("s") == 1
    continuation = server.requests("s")[0].body["messages"]
    assert continuation == [*HI, {"role": "assistant", "content": sent}]  # the original messages + the text sent
    assert outcomes(got.stream.route) == [("primary", outcome), ("secondary", "ok")]
    assert got.stream.route.served_by == "secondary"
    assert f"secondary: continued the stream after primary broke at {len(sent)} characters" in got.stream.route.notes
    assert got.chunks[-1].finish_reason == "stop"
    assert sum(1 for c in got.chunks if c.choices and c.choices[0].delta.role) == 1
    assert len({c.id for c in got.chunks}) == 1
    assert not any(c.restart for c in got.chunks)
    bound = IDLE + 3.0 if kind == "stall_30s" else 3.0
    assert got.elapsed < bound
    if kind == "invalid_event":
        assert any(n.startswith("primary: an SSE event was not valid JSON") for n in got.stream.route.notes)
    if kind == "stall_30s":  # detected within the idle window, and the stalled connection closed
        (hung_up,) = hangups(server, "p")
        assert hung_up < IDLE + 2.0


@APIS
def test_a_continuation_is_given_what_is_left_of_the_callers_max_tokens(server, make_router, api):
    router = make_router({"primary": primary(server, faults.stream(TEXT, cut_after=3)), "secondary": fallback(server)})
    got = receive(router, api, max_tokens=40)
    assert got.error is None and got.shown == TEXT
    assert server.requests("p")[0].body["max_tokens"] == 40
    # "one two three " (14 characters) already sent: about 4 tokens of the 40 are spent
    assert server.requests("s")[0].body["max_tokens"] == 36


@APIS
def test_a_stall_no_target_can_continue_is_reported_as_the_silence_it_was_recorded_as(server, make_router, api):
    router = make_router({"primary": primary(server, faults.stream(TEXT, stall_after=3, stall_seconds=30))})
    got = receive(router, api)
    assert isinstance(got.error, StreamInterrupted) and got.error.partial_text == "one two three "
    assert outcomes(got.error.route) == [("primary", "silent")]
    stalled = f"the stream stalled: no chunk for {IDLE:g} s (stream_idle_timeout)"
    assert got.error.route.attempts[0].detail == stalled
    assert str(got.error).endswith(f"could continue it: {stalled}")  # not the reader's bare "Stalled"
    assert got.error.__cause__.outcome == "silent"


@APIS
def test_a_prefill_refusal_is_recorded_and_passed_over_for_the_next_target(server, make_router, api):
    router = make_router({"primary": primary(server, faults.stream(TEXT, cut_after=3)),
                          "secondary": fallback(server, "s", faults.refuse_prefill(faults.stream(TEXT))),
                          "tertiary": fallback(server, "t")})
    got = receive(router, api)
    assert got.error is None and got.shown == TEXT
    assert (server.count("p"), server.count("s"), server.count("t")) == (1, 1, 1)
    assert outcomes(got.stream.route) == [("primary", "transient"), ("secondary", "rejected"), ("tertiary", "ok")]
    refusal = got.stream.route.attempts[1]
    assert refusal.status == 400 and "refused the assistant prefill" in refusal.detail
    assert faults.PREFILL_REFUSED_MESSAGE in refusal.detail
    assert router.status()["secondary"]["failures"] == 0  # a refusal is no failure of the provider


@APIS
def test_a_prefill_refusal_never_hides_the_real_error(server, make_router, api):
    router = make_router({"primary": primary(server, faults.stream(TEXT, cut_after=3)),
                          "secondary": fallback(server, "s", faults.refuse_prefill(faults.stream(TEXT)))})
    got = receive(router, api)
    error = got.error
    assert isinstance(error, StreamInterrupted)
    assert error.partial_text == got.shown == "one two three "
    assert str(error).startswith("the stream from primary broke after 14 characters")
    # the real error is the primary's reset: in the message and as the cause, never the 400
    assert f"could continue it: {error.route.attempts[0].detail}; then secondary: rejected" in str(error)
    assert "Connection error" in error.route.attempts[0].detail
    assert type(error.__cause__).__name__ == "MidStreamFallbackError"
    assert "refused the assistant prefill" in str(error)  # and the refusal, as what it was
    assert outcomes(error.route) == [("primary", "transient"), ("secondary", "rejected")]
    # the target learned it: the next break does not ask it again
    server.script("p", faults.stream(TEXT, cut_after=3))
    again = receive(router, api)
    assert isinstance(again.error, StreamInterrupted) and server.count("s") == 1


@APIS
def test_without_a_target_that_can_continue_the_caller_gets_stream_interrupted_never_a_concatenation(
        server, make_router, api):
    router = make_router({"primary": primary(server, faults.stream(TEXT, cut_after=3)),
                          "secondary": fallback(server, prefill=False)})
    got = receive(router, api)  # a caller that knows nothing of restart markers
    assert isinstance(got.error, StreamInterrupted)
    assert got.error.partial_text == got.joined == "one two three "
    assert server.count("s") == 0
    assert outcomes(got.error.route) == [("primary", "transient")]


@APIS
def test_a_prefill_default_comes_from_litellm_model_info(server, make_router, api):
    # deepseek-chat is listed with supports_assistant_prefill; gpt-4o-mini is not
    router = make_router({"primary": primary(server, faults.stream(TEXT, cut_after=3)),
                          "secondary": remote(server, "gpt-4o-mini"),
                          "tertiary": {**remote(server, "deepseek-chat"), "model": "deepseek/deepseek-chat"}})
    server.script("gpt-4o-mini", faults.stream(TEXT))
    server.script("deepseek-chat", faults.stream(TEXT))
    got = receive(router, api)
    assert got.error is None and got.shown == TEXT
    assert server.count("gpt-4o-mini") == 0 and server.count("deepseek-chat") == 1
    assert got.stream.route.served_by == "tertiary"


# -- restart ------------------------------------------------------------------------------

def restart_chain(make_router, server, *steps: faults.Fault, attempts: int = 2, **targets: Any):
    server.script("p", *steps)
    chain = {"targets": ["primary", *targets], "mid_stream": "restart"}
    return make_router({"primary": remote(server, "p", stream_idle_timeout=IDLE,
                                          retry={"attempts": attempts, "min_wait": 0.01, "max_wait": 0.02}),
                        **targets}, chains={"default": chain})


@APIS
def test_a_restart_is_announced_and_a_caller_that_handles_the_marker_shows_one_answer(server, make_router, api):
    router = restart_chain(make_router, server, faults.stream(TEXT, cut_after=4), faults.stream(TEXT))
    got = receive(router, api, handle_marker=True)
    assert got.error is None and got.shown == TEXT == got.stream.text
    assert got.stream.restarts == 1
    markers = [i for i, c in enumerate(got.chunks) if c.restart]
    assert len(markers) == 1 and got.chunks[markers[0]].text == ""
    assert "".join(c.text for c in got.chunks[:markers[0]]) == "one two three four "
    assert "".join(c.text for c in got.chunks[markers[0]:]) == TEXT
    assert server.count("p") == 2  # first the broken target, under its retry policy
    assert outcomes(got.stream.route) == [("primary", "transient"), ("primary", "ok")]
    assert "primary: restarted the stream after primary broke at 19 characters" in got.stream.route.notes
    assert got.chunks[-1].finish_reason == "stop"


@APIS
def test_a_restart_moves_down_the_chain_when_the_broken_target_has_no_retries_left(server, make_router, api):
    router = restart_chain(make_router, server, faults.stream(TEXT, cut_after=4), attempts=1,
                           secondary=fallback(server, prefill=False))
    got = receive(router, api)  # a caller that ignores the marker: stream.text still holds one answer
    assert got.error is None and got.stream.text == TEXT and got.stream.restarts == 1
    assert got.joined == "one two three four " + TEXT and [c.restart for c in got.chunks].count(True) == 1
    assert (server.count("p"), server.count("s")) == (1, 1)
    assert server.requests("s")[0].body["messages"] == HI  # a restart asks from scratch: no prefill
    assert outcomes(got.stream.route) == [("primary", "transient"), ("secondary", "ok")]


# -- deadline and the first call's clock ---------------------------------------------------

@APIS
def test_the_callers_deadline_bounds_reaching_the_continuation(server, make_router, api):
    router = make_router({"primary": primary(server, faults.stream(TEXT, cut_after=3, token_delay=0.4)),
                          "secondary": fallback(server, "s", faults.stream(TEXT, first_token_delay=None))},
                         defaults={"timeout": 20, "deadline": 60})
    got = receive(router, api, deadline=1.5)
    assert isinstance(got.error, StreamInterrupted) and got.error.partial_text == "one two three "
    # primary took ~0.8 s to break; the continuation was cut at the caller's 1.5 s, not at 20 s or 60 s
    assert got.elapsed < 0.8 + 1.5 + 2.5
    assert outcomes(got.error.route) == [("primary", "transient"), ("secondary", "deadline")]


FIRST_CALL = textwrap.dedent("""
    import asyncio, sys, time
    import router
    assert "litellm" not in sys.modules, "import router imported litellm"
    r = router.Router.from_dict({{
        "targets": {{"p": {{"model": "openai/p", "api_base": "{url}", "api_key": "{key}", "transport": "{transport}",
                            "timeout": 1, "first_token_timeout": 0.5, "retry": {{"attempts": 1}}}}}},
        "chains": {{"default": ["p"]}}}})
    hi = [{{"role": "user", "content": "hi"}}]
    if "{api}" == "sync":
        stream = r.complete(hi, stream=True)
        text = "".join(c.text for c in stream)
    else:
        async def run():
            stream = await r.acomplete(hi, stream=True)
            return stream, "".join([c.text async for c in stream])
        stream, text = asyncio.run(run())
    print(text, [a.outcome for a in stream.route.attempts])
""")


@APIS
def test_the_first_call_of_a_fresh_process_does_not_pay_its_transports_import_on_its_clock(server, api, transport):
    server.script("p", faults.stream(TEXT))
    env = {**os.environ, "PYTHONPATH": str(REPO), "LITELLM_LOCAL_MODEL_COST_MAP": "True"}
    script = FIRST_CALL.format(url=server.url, key=TEST_KEY, api=api, transport=transport)
    out = subprocess.run([sys.executable, "-c", script],
                         capture_output=True, text=True, cwd=REPO, env=env, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip().endswith(f"{TEXT} ['ok']")
    assert server.count("p") == 1
