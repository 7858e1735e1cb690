"""Cold start: how long a fresh process takes to import the router, and to its first
answer when the machine is offline.

Every measurement is a fresh ``sys.executable -c <script>`` child (cwd: the checkout,
PYTHONPATH: the checkout, no ``*_API_KEY`` variable in its environment), run REPEATS
times; medians are reported. The kinds are interleaved (their order rotated every
repeat), after one untimed warm-up child of each kind (the first one to touch
llama.cpp's shared library or litellm's thousands of files pays for the page cache).

- ``import router``: perf_counter around the import, inside the child;
- ``import litellm``: the same for litellm alone (LITELLM_LOCAL_MODEL_COST_MAP=True, as
  the router imports it: no price-list download), for comparison;
- ``python -c pass``: the interpreter alone, measured from the parent: the floor under
  every child's wall time;
- ``offline (dict)``: ``Router.from_dict({"offline": True, one llama_cpp target, chain
  [local]})`` then ``complete(max_tokens=16)``;
- ``offline (config.yaml)``: ``ROUTER_OFFLINE=1``, ``Router.from_yaml("config.yaml")``
  (the repo's: openai, anthropic, local; their keys unset) then ``complete(max_tokens=16)``.

- ``remote (openai)``: ``Router.from_dict(one target openai/m at the fault server)`` then
  ``complete(max_tokens=16)``: an OpenAI-compatible chain on its default transport, the
  openai SDK directly (issue 19);
- ``remote (litellm)``: the same with ``transport: litellm``: the router before issue 19.

For the offline and remote kinds, three times: *child* = from ``time.perf_counter()`` on the
script's first line to the answer; *spawn->answer* = from just before the parent starts
the child to the answer, both read on the same clock (perf_counter is CLOCK_MONOTONIC,
shared by all processes on Linux), so it includes the interpreter's start; *process* =
the child's whole wall time seen by the parent (start, answer, and exit, which frees the
model). The child also reports whether litellm was imported (it must not be: nothing
remote is called) and the route.

Targets: import router (child) < 0.3 s; each offline kind: spawn->answer and process
< 3 s, answered by the local tier in every child, litellm imported in none. A child that
fails (the config's 30 s attempt timeout can expire when other processes take the CPU
llama.cpp wants) is reported with its error and left out of the medians.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from typing import Any

from .common import ROOT, CliServer, Report, _child_env, median, paired_ratio, quantile

REPEATS = 7
TARGET_IMPORT_S = 0.3
TARGET_FIRST_ANSWER_S = 3.0

_IMPORT = """\
import time
t = time.perf_counter()
import {module}
elapsed = time.perf_counter() - t
import json, sys
print(json.dumps({{"import_s": elapsed, "litellm": "litellm" in sys.modules, "llama_cpp": "llama_cpp" in sys.modules}}))
"""

_OFFLINE = """\
import time
T0 = time.perf_counter()
import json, sys
import router
T_IMPORT = time.perf_counter()
{build}
T_BUILD = time.perf_counter()
resp = r.complete([{{"role": "user", "content": "Say hello."}}], max_tokens=16)
T_ANSWER = time.perf_counter()
print(json.dumps({{
    "t0": T0, "answer_at": T_ANSWER, "child_s": T_ANSWER - T0, "import_s": T_IMPORT - T0,
    "build_s": T_BUILD - T_IMPORT, "call_s": T_ANSWER - T_BUILD,
    "litellm": "litellm" in sys.modules, "llama_cpp": "llama_cpp" in sys.modules,
    "served_by": resp.route.served_by, "degraded": resp.route.degraded,
    "attempts": [[a.target, a.outcome] for a in resp.route.attempts],
    "completion_tokens": resp.usage.completion_tokens, "text": resp.text,
}}))
"""

_BUILD_DICT = """\
r = router.Router.from_dict({{
    "offline": True,
    "targets": {{"local": {{"provider": "llama_cpp", "model_path": {path!r}, "n_ctx": 2048, "degraded": True}}}},
    "chains": {{"default": ["local"]}},
}})"""

_BUILD_YAML = 'r = router.Router.from_yaml("config.yaml")'

_BUILD_REMOTE = """\
r = router.Router.from_dict({{
    "targets": {{"primary": {{"model": "openai/m", "api_base": {url!r}, "api_key": "sk-bench", "transport": {transport!r}}}}},
    "chains": {{"default": ["primary"]}},
}})"""


def kinds(model_path: str, url: str) -> dict[str, tuple[str, dict[str, str]]]:
    """name -> (script, extra environment)."""
    return {
        **{f"remote_{transport}": (_OFFLINE.format(build=_BUILD_REMOTE.format(url=url, transport=transport)), {})
           for transport in ("openai", "litellm")},
        "import_router": (_IMPORT.format(module="router"), {}),
        "import_litellm": (_IMPORT.format(module="litellm"), {"LITELLM_LOCAL_MODEL_COST_MAP": "True"}),
        "python_pass": ("pass", {}),
        "offline_dict": (_OFFLINE.format(build=_BUILD_DICT.format(path=model_path)), {}),
        "offline_yaml": (_OFFLINE.format(build=_BUILD_YAML), {"ROUTER_OFFLINE": "1"}),
    }


def environment(extra: dict[str, str]) -> dict[str, str]:
    env = {k: v for k, v in _child_env().items()
           if not k.endswith("_API_KEY") and k not in ("ROUTER_OFFLINE", "ROUTER_CONFIG")}
    env.update(extra)
    return env


def child(script: str, extra: dict[str, str]) -> dict[str, Any]:
    """Run one fresh interpreter; its JSON line, plus the parent's clock readings. A child
    that fails (e.g. the local model timing out on a contended machine) comes back with
    "error": the last line of its stderr."""
    env = environment(extra)
    started = time.perf_counter()
    proc = subprocess.run([sys.executable, "-c", script], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=300)
    wall = time.perf_counter() - started
    lines = [line for line in proc.stdout.splitlines() if line.startswith("{")]
    if proc.returncode != 0:
        last = (proc.stderr.strip().splitlines() or ["(no stderr)"])[-1]
        return {"error": f"exit {proc.returncode}: {last}", "process_s": wall}
    out: dict[str, Any] = json.loads(lines[-1]) if lines else {}
    out["process_s"] = wall
    if "answer_at" in out:
        out["spawn_to_answer_s"] = out["answer_at"] - started
        out["interpreter_start_s"] = out["t0"] - started
    out["stderr"] = proc.stderr.strip()
    return out


def run(report: Report, *, quick: bool = False) -> dict[str, Any]:
    from router.models import pull_default_model

    repeats = 3 if quick else REPEATS
    path = str(pull_default_model(ROOT / "models", quiet=True))
    with CliServer() as server:
        return measured(report, repeats, kinds(path, server.url))


def measured(report: Report, repeats: int, scripts: dict[str, tuple[str, dict[str, str]]]) -> dict[str, Any]:
    names = list(scripts)
    hidden = sorted(k for k in os.environ if k.endswith("_API_KEY"))
    report.line(f"{repeats} fresh `{os.path.basename(sys.executable)} -c ...` children per kind, interleaved, after "
                f"one warm-up each; cwd {ROOT.name}/, no *_API_KEY in their environment"
                + (f" (removed: {', '.join(hidden)})" if hidden else ""))
    warm = {}
    for name in names:
        warm[name] = child(*scripts[name])
    report.line("warm-up children (not counted): " + ", ".join(
        f"{n} {w['process_s']:.2f} s" + (" (failed)" if "error" in w else "") for n, w in warm.items()))
    results: dict[str, list[dict[str, Any]]] = {name: [] for name in names}
    for i in range(repeats):
        k = i % len(names)
        for name in names[k:] + names[:k]:
            results[name].append(child(*scripts[name]))

    ok = {name: [r for r in runs if "error" not in r] for name, runs in results.items()}
    failed = {name: [r["error"] for r in runs if "error" in r] for name, runs in results.items()}

    def med(name: str, key: str) -> float:
        """Median over the children that answered (nan when none did)."""
        return median(r[key] for r in ok[name]) if ok[name] else float("nan")

    def spread(name: str, key: str) -> str:
        values = [r[key] for r in ok[name]]
        return f"{min(values):.3f}..{max(values):.3f}" if values else "-"

    report.line()
    report.line(f"{'':<24}{'median':>9}{'min..max':>16}   (s, over {repeats} children)")
    for name, errors in failed.items():
        if errors:
            report.line(f"{name}: {len(errors)} of {repeats} children failed, counted out of the medians: "
                        f"{errors[0]}")
    for name, key, label in (("import_router", "import_s", "import router (child)"),
                             ("import_litellm", "import_s", "import litellm (child)"),
                             ("import_router", "process_s", "import router (process)"),
                             ("import_litellm", "process_s", "import litellm (process)"),
                             ("python_pass", "process_s", "python -c pass (process)")):
        report.line(f"{label:<24}{med(name, key):>9.3f}{spread(name, key):>16}")
    labels = {"offline_dict": "offline first answer, from_dict, offline: true",
              "offline_yaml": "offline first answer, config.yaml, ROUTER_OFFLINE=1",
              "remote_openai": "first answer from the fault server, transport openai (the default)",
              "remote_litellm": "first answer from the fault server, transport litellm (as before issue 19)"}
    for name, label in labels.items():
        report.line()
        report.line(f"{label} (max_tokens 16):")
        for key, what in (("interpreter_start_s", "interpreter start (spawn -> first line)"),
                          ("import_s", "  import router"), ("build_s", "  build the Router"),
                          ("call_s", "  first call (loads the model or library)"),
                          ("child_s", "child: first line -> answer"),
                          ("spawn_to_answer_s", "spawn -> answer (parent's clock)"),
                          ("process_s", "process wall, exit included (parent)")):
            report.line(f"  {what:<40}{med(name, key):>8.3f} s  ({spread(name, key)})")
        runs = ok[name]
        imported = sum(r["litellm"] for r in runs)
        report.line(f"  answered in {len(runs)}/{repeats} children; litellm imported in {imported}/{len(runs)}, "
                    f"llama_cpp in {sum(r['llama_cpp'] for r in runs)}/{len(runs)}")
        if runs and name.startswith("remote"):
            report.line(f"  served_by {runs[0]['served_by']}, route {runs[0]['attempts']}")
        elif runs:
            first = runs[0]
            report.line(f"  served_by {first['served_by']} (degraded={first['degraded']}), route "
                        f"{first['attempts']}, {first['completion_tokens']} tokens: {first['text']!r}")
    by_router = sum(r["litellm"] or r["llama_cpp"] for r in ok["import_router"])
    report.line()
    report.line(f"`import router` pulled in litellm or llama_cpp in {by_router}/{repeats} children")

    summary = {name: {key: {"median": med(name, key), "p90": quantile([r[key] for r in ok[name]], 0.9)}
                      for key in (ok[name][0] if ok[name] else {}) if isinstance(ok[name][0][key], float)
                      and key not in ("t0", "answer_at")}
               for name in names}
    report.data.update({"repeats": repeats, "summary_s": summary, "failed": failed,
                        "runs": {n: [{k: v for k, v in r.items() if k != "stderr"} for r in rs]
                                 for n, rs in results.items()},
                        "warm_up": {n: w["process_s"] for n, w in warm.items()},
                        "stderr_offline_yaml": next((r["stderr"] for r in ok["offline_yaml"]), None)})

    import_router = med("import_router", "import_s")
    report.ratio("coldstart_import_router_s", import_router, f"<{TARGET_IMPORT_S}", import_router < TARGET_IMPORT_S)
    report.ratio("coldstart_import_litellm_s", med("import_litellm", "import_s"), "none", None)
    report.ratio("coldstart_import_litellm_over_router", med("import_litellm", "import_s") / import_router,
                 "none", None)
    report.ratio("coldstart_import_router_pulls_heavy", by_router, "0", by_router == 0)
    for name in ("offline_dict", "offline_yaml"):
        runs = ok[name]
        for key in ("spawn_to_answer_s", "process_s"):
            value = med(name, key)
            report.ratio(f"coldstart_{name}_{key}", value, f"<{TARGET_FIRST_ANSWER_S}", value < TARGET_FIRST_ANSWER_S)
        report.ratio(f"coldstart_{name}_child_s", med(name, "child_s"), "none", None)
        imported = sum(r["litellm"] for r in runs)
        report.ratio(f"coldstart_{name}_litellm_imported", imported, "0", imported == 0)
        local = sum(r["served_by"] == "local" and r["degraded"] for r in runs)
        report.ratio(f"coldstart_{name}_served_by_local", local, str(repeats), local == repeats)
    for name in ("remote_openai", "remote_litellm"):
        report.ratio(f"coldstart_{name}_spawn_to_answer_s", med(name, "spawn_to_answer_s"), "none", None)
        report.ratio(f"coldstart_{name}_child_s", med(name, "child_s"), "none", None)
    imported = sum(r["litellm"] for r in ok["remote_openai"])
    report.ratio("coldstart_remote_openai_litellm_imported", imported, "0", imported == 0)
    paired = [(a["spawn_to_answer_s"], b["spawn_to_answer_s"])
              for a, b in zip(results["remote_litellm"], results["remote_openai"], strict=True)
              if "error" not in a and "error" not in b]  # children of the same repeat
    report.ratio("coldstart_remote_litellm_over_remote_openai_spawn_to_answer",
                 paired_ratio(*zip(*paired))["median"] if paired else float("nan"), "none", None)
    return report.finish()

