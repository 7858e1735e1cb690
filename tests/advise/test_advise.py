"""`router advise`: event logs recorded by the router itself against the fault server, with
known behaviour, turned into recommendations of the right direction and size; `--write`
keeps comments and passes check-config; `--replay` runs the real walk on a simulated clock.

Times are scaled down 10x from the issue's (a 0.2 s tail under a 3 s timeout stands for a
2 s tail under 30 s; an outage of 2 s for one of 20 s): the router's decisions are the same.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from router import Router
from router.cli import main
from router.config import load_config
from router.errors import AllTargetsFailed
from router.testing import FaultServer, faults

from ..conftest import TEST_KEY

REPO = Path(__file__).resolve().parents[2]
HI = [{"role": "user", "content": "hi"}]


def write_config(path: Path, server: FaultServer, primary: str, *, timeout: float = 3, fail_max: int = 5,
                 reset_timeout: float = 0.25, attempts: int = 3) -> Path:
    path.write_text(textwrap.dedent(f"""\
        # recorded scenario: {primary}
        # (through litellm, as these logs were first recorded: on the openai transport a
        # loopback call takes ~1 ms, the recommended timeout (p99.9 x 1.5) ~0.02 s, and one
        # scheduling hiccup in a thousand then fails a replayed call of the backup)
        defaults:
          timeout: {timeout}        # seconds per attempt
          deadline: 30
          retry: {{attempts: {attempts}, min_wait: 0.01, max_wait: 0.05, max_retry_after: 2}}
          breaker:
            fail_max: {fail_max}      # failures in a row that open the circuit
            reset_timeout: {reset_timeout}
        targets:
          primary:
            model: openai/{primary}
            api_base: "{server.url}"
            api_key: {TEST_KEY}   # a test key
            transport: litellm
          backup: {{model: openai/backup, api_base: "{server.url}", api_key: {TEST_KEY}, transport: litellm}}
        chains:
          default: [primary, backup]
        events: {{log: json}}
        """))
    return path


@contextlib.contextmanager
def json_log(log: Path) -> Iterator[None]:
    """What `events: {log: json}` writes, into `log`, one event per line."""
    handler = logging.FileHandler(log, encoding="utf-8")
    handler.setFormatter(logging.Formatter("%(message)s"))
    logger = logging.getLogger("router.events")
    logger.addHandler(handler)
    old_level = logger.level
    logger.setLevel(logging.INFO)
    try:
        yield
    finally:
        logger.removeHandler(handler)
        logger.setLevel(old_level)
        handler.close()


def record(config: Path, log: Path, until: Callable[[], bool], *, limit: int = 2000) -> None:
    """Calls through a Router built from `config` until `until()`; its JSON event log goes to `log`."""
    with json_log(log):
        router = Router.from_yaml(config)
        for _ in range(limit):
            if until():
                break
            try:
                router.complete(HI, max_tokens=8)
            except AllTargetsFailed:
                pass


@pytest.fixture(scope="module")
def recorded(tmp_path_factory) -> Iterator[dict[str, tuple[Path, Path]]]:
    """Three logs, recorded once: (config, events) per scenario."""
    folder = tmp_path_factory.mktemp("advise")
    logs: dict[str, tuple[Path, Path]] = {}
    with FaultServer() as server:
        warm = Router.from_yaml(write_config(folder / "warm.yaml", server, "warm"))
        warm.complete(HI, max_tokens=8)  # litellm's first call in a process builds its clients: ~1 s
        # A latency tail: 1 answer in 40 takes 0.2 s, the rest come at once; timeout 3 s. 240
        # answers: enough to read a p95 (10 beyond it), not a p99.
        server.script("tail", *[faults.ok(delay=0.2) if i % 40 == 39 else faults.ok() for i in range(240)])
        config = write_config(folder / "tail.yaml", server, "tail")
        record(config, folder / "tail.jsonl", lambda: server.count("tail") >= 240)
        logs["tail"] = (config, folder / "tail.jsonl")

        # Failures in bursts of 3 within healthy traffic; fail_max 3 trips on every burst. Each
        # opening lasts 0.5 s: many calls fail over in it even when a call takes 0.1 s (one
        # takes ~0.01 s with 7 test runs on 2 cores), so an opening costs more than a burst.
        burst = [faults.ok()] * 5 + [faults.status(503)] * 3
        server.script("bursty", *(burst * 6), faults.ok())
        config = write_config(folder / "bursty.yaml", server, "bursty", fail_max=3, reset_timeout=0.5)
        record(config, folder / "bursty.jsonl", lambda: server.count("bursty") >= 6 * 8 + 5)
        logs["bursty"] = (config, folder / "bursty.jsonl")

        # Healthy for 100 calls, then down for 2 s, then back.
        server.script("down", *[faults.ok()] * 100, faults.recover_after(2.0, faults.status(503)))
        config = write_config(folder / "down.yaml", server, "down", fail_max=5, reset_timeout=0.25)
        started: list[float] = []

        def recovered() -> bool:
            if server.count("down") > 100 and not started:
                started.append(time.monotonic())
            return bool(started) and time.monotonic() - started[0] > 2.6

        record(config, folder / "down.jsonl", recovered)
        logs["down"] = (config, folder / "down.jsonl")
    yield logs


def advise_json(capsys, *args: str) -> dict:
    assert main(["advise", *args, "--json"]) == 0
    return json.loads(capsys.readouterr().out)


def test_timeout_drops_to_the_latency_tail_with_a_margin(recorded, capsys):
    config, log = recorded["tail"]
    primary = advise_json(capsys, str(log), "--config", str(config))["targets"]["primary"]
    evidence = primary["evidence"]
    assert evidence["latency_s"]["n"] >= 200 and evidence["attempts"]["ok"] >= 200
    assert 0.2 <= evidence["latency_s"]["max"] < 1.0  # the 0.2 s tail (more only if the machine stalled)
    # 3 s -> down by far, but never below the slowest seen x 1.5 nor one lost SYN (1 s) + the median
    assert max(1.0, evidence["latency_s"]["max"] * 1.5) <= primary["recommend"]["timeout"] <= 1.6
    reason = primary["reasons"]["timeout"]
    assert reason.startswith("timeout 3 -> ") and "one lost packet costs 1 s" in reason
    assert "p95 of" in reason and "the slowest is" in reason  # 240 answers: p95 is the highest readable
    # no stream, no failure, no Retry-After: those stay, and say what they need
    for key in ("first_token_timeout", "retry.attempts", "retry.min_wait", "breaker.reset_timeout"):
        assert key not in primary["recommend"] and primary["reasons"][key].startswith("unchanged: ")
    assert "needs >= 20 retries, have 0" in primary["reasons"]["retry.attempts"]


def test_bursts_of_three_failures_raise_fail_max_above_the_burst(recorded, capsys):
    config, log = recorded["bursty"]
    primary = advise_json(capsys, str(log), "--config", str(config))["targets"]["primary"]
    outages = primary["evidence"]["outages"]
    assert len(outages) >= 5  # fail_max 3: every burst of 3 opened the circuit ...
    assert all(o["trip_run"] == 3 and o["failed_probes"] == 0 for o in outages if not o["ongoing"])  # ... needlessly
    assert primary["recommend"]["breaker.fail_max"] == 5
    assert primary["reasons"]["breaker.fail_max"].startswith("breaker.fail_max 3 -> 5: ")
    assert "breaker.reset_timeout" not in primary["recommend"]  # no real outage: nothing to size it on
    retries = primary["evidence"]["retries"]["by_attempt"]
    assert retries["2"]["succeeded"] == 0 and retries["3"]["succeeded"] == 0  # retrying within a burst never helped


def test_an_outage_lowers_fail_max_and_sizes_reset_timeout_to_it(recorded, capsys):
    config, log = recorded["down"]
    primary = advise_json(capsys, str(log), "--config", str(config))["targets"]["primary"]
    real = [o for o in primary["evidence"]["outages"] if o["failed_probes"] > 0]
    assert len(real) == 1 and 1.6 < real[0]["down_s"] < 3.5  # the 2 s outage, seen as such
    assert real[0]["trip_run"] == 5
    assert primary["recommend"]["breaker.fail_max"] == 2  # no failure ever came alone: trip sooner
    # about half of the 2 s outage: fewer probes than every 0.25 s, recovery seen within ~1 s
    assert 0.8 <= primary["recommend"]["breaker.reset_timeout"] <= 1.8
    assert primary["reasons"]["breaker.reset_timeout"].startswith("breaker.reset_timeout 0.25 -> ")


def test_replay_sends_fewer_requests_to_the_failing_target_with_the_recommendation(recorded, capsys):
    config, log = recorded["down"]
    recorded_failures = sum(1 for line in log.read_text().splitlines()
                            if '"event":"attempt","target":"primary"' in line and '"outcome":"transient"' in line)
    result = advise_json(capsys, str(log), "--config", str(config), "--replay")
    current, recommended = result["replay"]["current"], result["replay"]["recommended"]
    # the current config replayed does what was recorded, give or take a probe
    assert abs(current["requests_to_failing"]["primary"] - recorded_failures) <= 3
    assert recommended["requests_to_failing"]["primary"] <= current["requests_to_failing"]["primary"] - 5
    assert current["calls"] == recommended["calls"] > 100
    assert recommended["served_by"]["primary"] + recommended["served_by"]["backup"] == recommended["calls"]
    assert recommended["latency_p99_s"] is not None
    span = json.loads(log.read_text().splitlines()[-1])["time"] - json.loads(log.read_text().splitlines()[0])["time"]
    assert span > 2  # the traffic took seconds (the outage alone 2 s) ...
    assert current["cpu_s"] < 1 and recommended["cpu_s"] < 1  # ... its replay a fraction of a CPU second


def test_replay_of_noise_bursts_keeps_calls_on_the_primary(recorded, capsys):
    config, log = recorded["bursty"]
    replay = advise_json(capsys, str(log), "--config", str(config), "--replay")["replay"]
    # fail_max 3 -> 5: a burst costs a failed-over call per failure at most, not a whole reset_timeout of them
    assert replay["recommended"]["served_by"].get("backup", 0) < replay["current"]["served_by"].get("backup", 0)
    assert replay["recommended"]["served_by"].get("primary", 0) > replay["current"]["served_by"].get("primary", 0)
    # the circuit never opens: every failed-over call follows a failed request (the quiet after
    # a burst is answered as the probe that ended it found the target, not as the burst)
    assert replay["recommended"]["served_by"].get("backup", 0) <= replay["recommended"]["requests_to_failing"]["primary"]
    assert replay["current"]["served_by"].get("backup", 0) > replay["current"]["requests_to_failing"]["primary"]  # it does


def test_write_keeps_comments_and_passes_check_config(recorded, tmp_path, capsys):
    config, log = recorded["down"]
    out = tmp_path / "tuned.yaml"
    result = advise_json(capsys, str(log), "--config", str(config), "--write", str(out))
    text = out.read_text()
    assert "# failures in a row that open the circuit" in text and "# a test key" in text
    assert main(["check-config", str(out)]) == 0
    tuned = load_config(out).targets["primary"]
    recommend = result["targets"]["primary"]["recommend"]
    assert tuned.breaker.fail_max == recommend["breaker.fail_max"] == 2
    assert tuned.breaker.reset_timeout == recommend["breaker.reset_timeout"]
    assert load_config(out).targets["backup"].breaker.fail_max == load_config(config).targets["backup"].breaker.fail_max \
        or "breaker.fail_max" in result["targets"]["backup"]["recommend"]


def test_text_report_through_the_installed_entry_point_reads_stdin(recorded):
    config, log = recorded["tail"]
    env = {k: v for k, v in os.environ.items() if not k.endswith("_API_KEY")}
    done = subprocess.run([sys.executable, "-m", "router.cli", "advise", "-", "--config", str(config)],
                          input=log.read_text(), capture_output=True, text=True, env=env, cwd=REPO, timeout=60)
    assert done.returncode == 0, done.stderr
    assert "primary:" in done.stdout and "- timeout 3 -> " in done.stdout
    assert "- retry.attempts unchanged: needs >= 20 retries, have 0" in done.stdout


def test_a_file_without_events_is_a_usage_error_that_says_how_to_get_them(tmp_path, capsys):
    empty = tmp_path / "app.log"
    empty.write_text("INFO starting\nnot json either\n")
    assert main(["advise", str(empty)]) == 2
    err = capsys.readouterr().err
    assert "nothing usable" in err and "events: {log: json}" in err and len(err.strip().splitlines()) == 1
    assert "no JSON object 2" in err


def test_write_without_a_config_is_refused_and_writes_nothing(recorded, tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("ROUTER_CONFIG", raising=False)
    _, log = recorded["tail"]
    assert main(["advise", str(log), "--write", str(tmp_path / "x.yaml")]) == 2
    assert "--config" in capsys.readouterr().err and not (tmp_path / "x.yaml").exists()


def test_streams_record_time_to_first_token_and_advise_reports_it(server, tmp_path, capsys):
    server.script("s", faults.stream("one two three four", first_token_delay=0.05, token_delay=0.02))
    config = write_config(tmp_path / "stream.yaml", server, "s")
    log = tmp_path / "stream.jsonl"
    with json_log(log):
        router = Router.from_yaml(config)
        for _ in range(3):
            assert "".join(chunk.text for chunk in router.complete(HI, stream=True)) == "one two three four"
    attempts = [json.loads(line) for line in log.read_text().splitlines() if '"event":"attempt"' in line]
    assert len(attempts) == 3
    for attempt in attempts:
        assert 0.05 <= attempt["first_token_s"] < attempt["latency_s"]  # first content, then the rest
        assert attempt["timeout_s"] == 3 and attempt["call_id"]
    primary = advise_json(capsys, str(log), "--config", str(config))["targets"]["primary"]
    assert primary["evidence"]["first_token_s"]["n"] == 3 and primary["evidence"]["latency_s"]["n"] == 0
    assert primary["evidence"]["first_token_s"]["p50"] >= 0.05
    assert primary["reasons"]["first_token_timeout"] == (
        "unchanged: needs >= 200 streams' first tokens (a p95 needs 10 beyond it), have 3")
    assert primary["evidence"]["longest_gap_s"]["n"] == 3 and primary["evidence"]["longest_gap_s"]["max"] >= 0.02
    assert primary["reasons"]["timeout"].startswith("unchanged: the log has streams only")


def test_retry_after_values_size_the_backoff_waits(server, tmp_path, capsys):
    server.script("r", *[step for wait in (0.1, 0.2, 0.4) for step in (faults.status(429, retry_after=wait),
                                                                        faults.ok())])
    config = write_config(tmp_path / "limited.yaml", server, "r")
    log = tmp_path / "limited.jsonl"
    record(config, log, lambda: server.count("r") >= 6)
    seen = [json.loads(line).get("retry_after_s") for line in log.read_text().splitlines()
            if '"event":"attempt"' in line and '"outcome":"rate_limited"' in line]
    assert seen == [0.1, 0.2, 0.4]
    primary = advise_json(capsys, str(log), "--config", str(config))["targets"]["primary"]
    assert primary["evidence"]["retries"]["after_outcome"]["rate_limited"] == {"retried": 3, "succeeded": 3}
    assert 0.1 <= primary["recommend"]["retry.min_wait"] <= 0.2  # p10 of what the provider asked
    assert 0.3 <= primary["recommend"]["retry.max_wait"] <= 0.4  # p90
    assert primary["reasons"]["retry.max_wait"].startswith("retry.max_wait 0.05 -> ")


def test_every_event_of_a_call_shares_its_call_id(recorded):
    _, log = recorded["bursty"]
    events = [json.loads(line) for line in log.read_text().splitlines()]
    calls: dict[str, list[str]] = {}
    for event in events:
        if event["event"] != "circuit":
            calls.setdefault(event["call_id"], []).append(event["event"])
    assert len(calls) == sum(1 for e in events if e["event"] == "call") > 40
    assert all(names.count("call") == 1 and names[-1] == "call" for names in calls.values())


def test_several_logs_are_read_as_one_in_time_order(recorded, tmp_path, capsys):
    config, log = recorded["down"]
    lines = log.read_text().splitlines(keepends=True)
    first, second = tmp_path / "a.jsonl", tmp_path / "b.jsonl"
    first.write_text("".join(lines[: len(lines) // 2]))
    second.write_text("".join(lines[len(lines) // 2:]))
    whole = advise_json(capsys, str(log), "--config", str(config))
    split = advise_json(capsys, str(second), str(first), "--config", str(config))
    assert split == whole


def test_a_log_with_logging_prefixes_and_without_call_ids_gives_the_same_evidence(recorded, tmp_path, capsys):
    config, log = recorded["down"]
    older = tmp_path / "older.log"
    with older.open("w") as out:
        for line in log.read_text().splitlines():
            event = json.loads(line)
            event.pop("call_id", None)  # as written before events carried one
            out.write(f"2026-11-27 12:00:00 INFO router.events {json.dumps(event)}\n")
        out.write('{"event": "attempt", "time": "yesterday"}\nTraceback: unrelated\n')
    whole = advise_json(capsys, str(log), "--config", str(config))
    prefixed = advise_json(capsys, str(older), "--config", str(config))
    assert prefixed.pop("skipped_lines") == 2
    assert prefixed.pop("skipped") == {"no JSON object": 1, "time missing or not epoch seconds (1970-2100)": 1}
    assert prefixed == whole


# -- real logs: compressed, binary, hostile values ---------------------------------------------

T0 = 1796400000.0  # epoch seconds (2026-12)


def synthetic_log(path: Path, attempts: list[tuple[float, int | None]], **extra: object) -> Path:
    """An event log as the router writes it: one ok attempt per (latency, completion tokens),
    one call a second."""
    with path.open("w") as out:
        for i, (latency, tokens) in enumerate(attempts):
            event = {"event": "attempt", "target": "primary", "chain": "default", "outcome": "ok",
                     "latency_s": latency, "call_id": f"c{i}", "timeout_s": 30, "time": T0 + i, **extra}
            if tokens is not None:
                event["completion_tokens"] = tokens
            out.write(json.dumps(event) + "\n")
            out.write(json.dumps({"event": "call", "chain": "default", "served_by": "primary", "outcome": "ok",
                                  "latency_s": latency, "call_id": f"c{i}", "time": T0 + i}) + "\n")
    return path


def strict_json(text: str) -> dict:
    """JSON as the standard has it: NaN and Infinity are not JSON."""
    def refuse(constant: str) -> None:
        raise AssertionError(f"bare {constant} in --json output")
    return json.loads(text, parse_constant=refuse)


HOSTILE = [
    '{"event":"attempt","target":"primary","outcome":"ok","latency_s":NaN,"time":%f}' % (T0 + 1),
    '{"event":"attempt","target":"primary","outcome":"ok","latency_s":Infinity,"time":%f}' % (T0 + 2),
    '{"event":"attempt","target":"primary","outcome":"ok","latency_s":-1,"completion_tokens":"many","time":%f}'
    % (T0 + 3),
    '{"event":"attempt","target":"primary","outcome":"rate_limited","status":429,"retry_after_s":1e308,'
    '"timeout_s":3,"time":%f}' % (T0 + 4),
    '{"event":"attempt","target":"primary","outcome":"ok","latency_s":0.1,"time":1e308}',
    '{"event":"attempt","target":"primary","outcome":"ok","latency_s":0.1,"time":-5}',
    '{"event":"attempt","target":"primary","outcome":"ok","latency_s":0.1,"time":NaN}',
    '{"event":"attempt","target":"primary","outcome":"ok","latency_s":0.1,"time":true}',
    '{"event": [1, 2]}',
]


def test_gzip_logs_binary_files_and_hostile_values_are_read_or_skipped_by_reason_with_valid_json(
        recorded, tmp_path, capsys):
    import gzip

    config, log = recorded["tail"]
    compressed = tmp_path / "events.jsonl.gz"
    compressed.write_bytes(gzip.compress(log.read_bytes()))
    renamed = tmp_path / "rotated.1"  # compressed, whatever its name says
    renamed.write_bytes(gzip.compress("\n".join(HOSTILE).encode() + b"\n"))
    binary = tmp_path / "core.bin"
    binary.write_bytes(bytes(range(256)) * 40)
    plain = advise_json(capsys, str(log), "--config", str(config))

    assert main(["advise", str(compressed), str(renamed), str(binary), "--config", str(config), "--json"]) == 0
    result = strict_json(capsys.readouterr().out)
    assert result["targets"]["primary"]["evidence"]["latency_s"] == plain["targets"]["primary"]["evidence"]["latency_s"]
    assert result["targets"]["primary"]["recommend"]["timeout"] == plain["targets"]["primary"]["recommend"]["timeout"]
    skipped = result["skipped"]
    assert skipped["time missing or not epoch seconds (1970-2100)"] == 4
    assert skipped["not a router event"] == 1
    assert skipped["not UTF-8 text"] >= 1
    assert skipped["value dropped: latency_s not a number of seconds in [0, 86400]"] == 3
    assert skipped["value dropped: retry_after_s not a number of seconds in [0, 86400]"] == 1
    assert skipped["value dropped: completion_tokens not a count"] == 1
    # the hostile events still count as attempts; only their unusable numbers are gone
    assert result["targets"]["primary"]["evidence"]["attempts"]["rate_limited"] == 1

    assert main(["advise", str(renamed), "--json"]) == 0  # NaN, Infinity, 1e308 in: valid JSON out
    strict_json(capsys.readouterr().out)
    assert main(["advise", str(compressed), str(renamed), str(binary), "--config", str(config)]) == 0
    assert "(skipped, by reason: " in capsys.readouterr().out


def test_input_with_nothing_usable_is_one_line_and_exit_2(tmp_path, capsys):
    import gzip

    binary = tmp_path / "model.gguf"
    binary.write_bytes(b"GGUF\x03\x00\x00\x00" + bytes(range(256)) * 100)
    truncated = tmp_path / "cut.jsonl.gz"
    truncated.write_bytes(gzip.compress(b'{"event":"attempt","time":NaN}\n' * 50)[:40])
    for files in ([binary], [truncated], [binary, truncated]):
        assert main(["advise", *map(str, files), "--json"]) == 2
        captured = capsys.readouterr()
        assert captured.out == "" and len(captured.err.strip().splitlines()) == 1, captured.err
        assert captured.err.startswith("router: nothing usable in ")
    assert "not UTF-8 text" in captured.err and "unreadable" in captured.err


def test_177_answers_at_0_2_s_no_longer_get_a_0_42_s_timeout(tmp_path, capsys):
    """The issue's case: p99.9 of 177 is the max; x 1.5 it cut answers on the first lost packet."""
    latencies = [0.2 + 0.08 * ((i * 37) % 100) / 100 for i in range(177)]  # 0.2-0.28 s
    primary = advise_json(capsys, str(synthetic_log(tmp_path / "e.jsonl", [(x, 20) for x in latencies])))
    primary = primary["targets"]["primary"]
    assert "timeout" not in primary["recommend"]
    assert primary["reasons"]["timeout"] == ("unchanged: needs >= 200 successful attempts (a p95 needs 10 beyond "
                                             "it), have 177")
    more = [0.2 + 0.08 * ((i * 37) % 100) / 100 for i in range(400)]
    primary = advise_json(capsys, str(synthetic_log(tmp_path / "f.jsonl", [(x, 20) for x in more])))
    primary = primary["targets"]["primary"]
    # p95 readable now: the floor wins, one lost SYN (1 s) + the median, rounded up
    assert primary["recommend"]["timeout"] == 1.3 and "one lost packet costs 1 s" in primary["reasons"]["timeout"]


def test_rare_long_answers_are_never_cut_by_a_timeout_read_from_the_short_ones(tmp_path, capsys):
    # 2 answers in 2,002 take 3 s (600 tokens), the rest 0.15 s (20 tokens): p99.9 is a short one
    attempts = [(0.15, 20)] * 1000 + [(3.0, 600)] + [(0.15, 20)] * 1000 + [(3.0, 600)]
    primary = advise_json(capsys, str(synthetic_log(tmp_path / "e.jsonl", attempts)))["targets"]["primary"]
    assert primary["evidence"]["latency_s"]["p99.9"] == 0.15
    assert primary["recommend"]["timeout"] >= 3.0 * 1.5


def test_latency_is_related_to_completion_tokens_when_answers_vary_in_length(tmp_path, capsys):
    # 10 % long answers (3 s, 600 tokens) among short ones (0.15 s, 20 tokens)
    attempts = [(3.0, 600) if i % 10 == 9 else (0.15, 20) for i in range(300)]
    primary = advise_json(capsys, str(synthetic_log(tmp_path / "e.jsonl", attempts)))["targets"]["primary"]
    assert primary["evidence"]["completion_tokens"]["max"] == 600
    assert primary["recommend"]["timeout"] >= 3.0 * 1.5
    reason = primary["reasons"]["timeout"]
    assert "ms per completion token" in reason and "the longest answer seen, 600 tokens, needs 3 s" in reason
    same_length = [(0.15 + 0.01 * (i % 7), 20) for i in range(300)]
    primary = advise_json(capsys, str(synthetic_log(tmp_path / "f.jsonl", same_length)))["targets"]["primary"]
    assert "completion token" not in primary["reasons"]["timeout"]  # answers of one length: nothing to relate


def test_streams_get_first_token_and_idle_timeouts_not_a_whole_answer_timeout(tmp_path, capsys):
    attempts = [(2.0 + 0.01 * (i % 50), None) for i in range(300)]  # long streams: 2-2.5 s each
    log = synthetic_log(tmp_path / "e.jsonl", attempts, first_token_s=0.3, longest_gap_s=0.05)
    primary = advise_json(capsys, str(log))["targets"]["primary"]
    assert "timeout" not in primary["recommend"] and "streams only" in primary["reasons"]["timeout"]
    assert primary["recommend"]["first_token_timeout"] == 1.3  # one lost SYN + the median first token
    assert primary["recommend"]["stream_idle_timeout"] == 1.1
    assert primary["reasons"]["stream_idle_timeout"].startswith("stream_idle_timeout -> 1.1: ")
