"""``python -m bench [SCENARIO ...|all] [--quick] [--server process|thread] [--litellm-real-backoff] [--strict] [--stack]``

SCENARIO: overhead, outage, local, coldstart, parallel, async, fleet, ratelimit, cache, streams, otel, serve (several may be given; default: all)."""

from __future__ import annotations

import argparse
import importlib
import sys
import time

from .common import Report, machine, setup_environment

SCENARIOS = ("overhead", "outage", "local", "coldstart", "parallel", "async", "fleet", "ratelimit", "cache", "streams",
             "otel", "serve")
_MODULES = {"async": "asyncload", "streams": "streamrecovery"}  # scenario -> module of bench/, where the names differ


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("scenario", nargs="*", default=["all"], metavar="SCENARIO",
                        help=f"one or more of: {', '.join(SCENARIOS)}, all (default: all)")
    parser.add_argument("--quick", action="store_true", help="fewer calls and requests (a smoke run)")
    parser.add_argument("--server", choices=("process", "thread"), default="process",
                        help="outage: fault server in a child process (default) or in a thread here")
    parser.add_argument("--litellm-real-backoff", action="store_true",
                        help="outage: let litellm.Router sleep its full backoff (adds minutes)")
    parser.add_argument("--strict", action="store_true", help="exit 1 when a target is missed")
    parser.add_argument("--stack", action="store_true", help="serve: also the gateway app on granian")
    args = parser.parse_args(argv)
    unknown = [s for s in args.scenario if s not in (*SCENARIOS, "all")]
    if unknown:
        parser.error(f"unknown scenario {', '.join(map(repr, unknown))}; choose from {', '.join(SCENARIOS)}, all")
    chosen = SCENARIOS if "all" in args.scenario else tuple(dict.fromkeys(args.scenario))

    env = setup_environment()  # before litellm is imported
    started = time.perf_counter()
    from .common import litellm

    litellm()
    print(f"litellm imported in {time.perf_counter() - started:.1f} s; env: "
          + ", ".join(f"{k}={v}" for k, v in env.items()), flush=True)
    m = machine()
    print(f"machine: {m['cpus']} cpus, load average {' '.join(f'{x:.2f}' for x in m['loadavg'] or ())}, Python {m['python']}; "
          + ", ".join(f"{k} {v}" for k, v in _versions().items()), flush=True)

    missed = []
    for name in chosen:
        print(f"\n=== {name}{' (quick)' if args.quick else ''} ===", flush=True)
        report = Report(name)
        report.data["env"] = env
        report.data["quick"] = args.quick
        report.data["versions"] = _versions()
        if name == "outage":
            from . import outage

            outage.run(report, quick=args.quick, server_mode=args.server,
                       litellm_real_backoff=args.litellm_real_backoff)
        elif name == "serve":
            from . import serve

            serve.run(report, quick=args.quick, stack=args.stack)
        else:
            module = importlib.import_module(f".{_MODULES.get(name, name)}", __package__)
            module.run(report, quick=args.quick)
        missed += [r["name"] for r in report.ratios if r["ok"] is False]
    print(f"\ntotal {time.perf_counter() - started:.1f} s; "
          + (f"targets missed: {', '.join(missed)}" if missed else "all targets met"), flush=True)
    return 1 if missed and args.strict else 0


def _versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    for pkg in ("litellm", "pybreaker", "tenacity", "llama-cpp-python", "httpx"):
        try:
            out[pkg] = version(pkg)
        except PackageNotFoundError:
            out[pkg] = "?"
    return out


if __name__ == "__main__":
    sys.exit(main())
