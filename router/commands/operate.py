"""The operator's commands: `router status` (why each target is held back), `router open` /
`close` (steer shared circuits), `router cache stats|clear`, and the tables they print.

A fresh process reads what is shared (Redis state: circuits, fleet rate-limit buckets);
calls in flight and queued, learned limits and pauses live in each running process, so
here they show that process's view: a Router's own `status()` (or its Prometheus gauges)
shows them live.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from ..config import load_config
from . import EXIT_OK, EXIT_USAGE


def status(args: argparse.Namespace) -> int:
    router = shared_state_router(args.config)
    report = router.status()
    shared = router.config.state.backend != "memory"
    if args.json:
        print(json.dumps({"shared": shared, "targets": report}, indent=2))
        return EXIT_OK
    rows = status_rows(report)
    print_table(rows)
    if not shared:
        print("(state.backend is memory: this is a fresh process's view; running routers keep their own)",
              file=sys.stderr)
    return EXIT_OK


def status_rows(report: dict[str, dict[str, Any]]) -> list[tuple[str, ...]]:
    """`status()` as a table, a column for each thing that holds a target back: calls in
    flight (a local tier's: running / pool_size) and queued, the rate limiter's wait until
    one more request fits, a pause after a 429; the rest of the rate limit in words."""
    rows = [("target", "state", "failures", "half-open in", "in flight", "queued", "wait", "paused",
             "retry budget", "rate limit", "note")]
    for name, info in report.items():
        budget = info.get("retry_budget")
        limiter = info.get("rate_limit") or {}
        in_flight = str(info.get("in_flight", 0)) + (f"/{info['pool_size']}" if "pool_size" in info else "")
        rows.append((name, info["state"], str(info["failures"]),
                     f"{info['retry_in_s']:.0f} s" if "retry_in_s" in info else "",
                     in_flight, str(info.get("queued", 0)),
                     f"{limiter['wait_s']:.1f} s" if limiter.get("wait_s") else "",
                     f"{limiter['paused_s']:.1f} s" if limiter.get("paused_s") else "",
                     f"{budget:.1f}" if isinstance(budget, (int, float)) else "",
                     rate_limit_text(limiter),
                     info.get("disabled") or info.get("misconfigured") or ""))
    return rows


def rate_limit_text(info: dict | None) -> str:
    """'rpm 500: room 3 req; 2 waiting; provider: 12/20 req left (reset 0.4 s)' from status()'s
    rate_limit (its wait and a pause have columns of their own)."""
    if not info:
        return ""
    parts = []
    configured = [f"{key} {info[key]:g}" for key in ("rpm", "tpm") if key in info]
    room = ", ".join(f"{value:g} {'req' if name == 'requests' else 'tok'}" for name, value in
                     info.get("room", {}).items())
    if configured:
        parts.append(" ".join(configured) + (f": room {room}" if room else ""))
    if info.get("waiters"):
        parts.append(f"{info['waiters']} waiting")
    for name, learned in info.get("learned", {}).items():
        limit = f"/{learned['limit']:g}" if "limit" in learned else ""
        parts.append(f"provider: {learned['remaining']:g}{limit} {'req' if name == 'requests' else 'tok'} left "
                     f"(reset {learned['reset_in_s']:g} s)")
    if info.get("shared") is False:
        parts.append(f"redis away: 1/{info.get('peers', 1)} share")
    return "; ".join(parts)


def control(args: argparse.Namespace) -> int:
    router = shared_state_router(args.config)
    if args.target not in router.config.targets:
        print(f"router: unknown target {args.target!r}; configured: {', '.join(router.config.targets)}",
              file=sys.stderr)
        return EXIT_USAGE
    if router.config.state.backend == "memory":
        print("router: open/close change shared state; with state.backend: memory each process keeps its "
              "own circuits, so there is nothing to change from here (use redis)", file=sys.stderr)
        return EXIT_USAGE
    (router.force_open if args.verb == "open" else router.force_close)(args.target)
    info = router.status()[args.target]
    print(json.dumps({"target": args.target, **info}) if args.json else f"{args.target}: {info['state']}")
    return EXIT_OK


def shared_state_router(path: str) -> Any:
    """A Router for reading or steering shared circuits: a Redis that does not answer is an
    error here (exit 2), not a fallback to this short-lived process's own state."""
    from dataclasses import replace

    from ..core import Router

    config = load_config(path)
    if config.state.backend == "redis":
        config = replace(config, state=replace(config.state, required=True))
    return Router(config)


def cache(args: argparse.Namespace) -> int:
    from ..cache.tier import open_caches

    caches = open_caches(load_config(args.config)).caches
    if args.target is not None and args.target not in caches:
        print(f"router: {args.target!r} is not a cache target; cache targets: {', '.join(caches) or 'none'}",
              file=sys.stderr)
        return EXIT_USAGE
    chosen = {name: cache for name, cache in caches.items() if args.target in (None, name)}
    if any(cache.store.backend == "memory" for cache in chosen.values()):
        print("(a memory cache lives in each running process: a fresh process sees it empty; use sqlite or redis "
              "to share one)", file=sys.stderr)
    try:
        if args.action == "clear":
            report: dict[str, Any] = {name: {"removed": cache.clear()} for name, cache in chosen.items()}
        else:
            report = {name: {k: v for k, v in cache.stats().items() if k != "this_process"}
                      for name, cache in chosen.items()}
    finally:
        for cache in caches.values():
            cache.close()
    if args.json:
        print(json.dumps({"targets": report}, indent=2))
    elif args.action == "clear":
        for name, info in report.items():
            print(f"{name}: removed {info['removed']} answers")
    else:
        rows = [("target", "backend", "entries", "bytes", "hits", "oldest", "newest", "ttl", "where")]
        for name, info in report.items():
            rows.append((name, info["backend"], str(info["entries"]), str(info["bytes"]), str(info["hits"]),
                         age(info["oldest_s"]), age(info["newest_s"]), f"{info['ttl']:g} s", info.get("path", "")))
        print_table(rows)
    return EXIT_OK


def age(seconds: float | None) -> str:
    return "" if seconds is None else f"{seconds:.0f} s"


def print_table(rows: list[tuple[str, ...]]) -> None:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip())
