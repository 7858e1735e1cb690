"""`router` on the command line: ask a chain, inspect and steer circuits, validate a config,
tune it from the event log, fetch a model.

Exit codes: 0 answered / valid / done, 1 no target answered, 2 bad usage or config.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import math
import os
import sys
import tempfile
from typing import Any

from .config import load_config
from .errors import AllTargetsFailed, ConfigError, InvalidRequest, RouterError

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(message)s", stream=sys.stderr)
    try:
        return args.run(args)
    except ConfigError as exc:
        print(f"router: config error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except InvalidRequest as exc:
        print(f"router: invalid request: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except AllTargetsFailed as exc:
        print(f"router: {exc}", file=sys.stderr)
        return EXIT_FAILED
    except RouterError as exc:
        print(f"router: {exc}", file=sys.stderr)
        return EXIT_FAILED


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="router", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)

    complete = commands.add_parser("complete", help="answer a prompt through a chain")
    complete.add_argument("prompt")
    complete.add_argument("--chain", default="default")
    complete.add_argument("--system", help="a system message to put first")
    complete.add_argument("--max-tokens", type=int, default=256)
    _config_option(complete)
    complete.add_argument("--json", action="store_true", help="print the whole response, route included")
    complete.set_defaults(run=_complete)

    status = commands.add_parser("status", help="circuit state of every target")
    _config_option(status)
    status.add_argument("--json", action="store_true")
    status.set_defaults(run=_status)

    for verb, what in (("open", "take a target out of rotation (shared through Redis state)"),
                       ("close", "put a target back into rotation (shared through Redis state)")):
        control = commands.add_parser(verb, help=what)
        control.add_argument("target")
        _config_option(control)
        control.add_argument("--json", action="store_true")
        control.set_defaults(run=_control, verb=verb)

    cache = commands.add_parser("cache", help="the cache tiers: what they hold (stats), or forget it (clear)")
    cache.add_argument("action", choices=["stats", "clear"])
    cache.add_argument("--target", help="only this cache target (default: every one)")
    _config_option(cache)
    cache.add_argument("--json", action="store_true")
    cache.set_defaults(run=_cache)

    check = commands.add_parser("check-config", help="validate a config and print each chain")
    check.add_argument("file", nargs="?", default=None)
    check.add_argument("--json", action="store_true")
    check.set_defaults(run=_check_config)

    advise = commands.add_parser("advise", help="recommend timeouts, retries and breaker settings from an "
                                                "event log (events: {log: json})")
    advise.add_argument("events", nargs="+", metavar="EVENTS", help="JSON event log file(s); - for stdin")
    advise.add_argument("--config", default=os.environ.get("ROUTER_CONFIG"),
                        help="the config in use (default: $ROUTER_CONFIG); needed by --write and --replay")
    advise.add_argument("--json", action="store_true")
    advise.add_argument("--write", metavar="FILE", help="write the config with the recommendations applied")
    advise.add_argument("--replay", action="store_true",
                        help="replay the log against the current and the recommended config (simulated clock)")
    advise.set_defaults(run=_advise)

    serve = commands.add_parser("serve", help="an OpenAI-compatible gateway: POST /v1/chat/completions, "
                                              "`model` names a chain (pip install 'failover-router[serve]')")
    _config_option(serve)
    serve.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1; another "
                                                           "needs server.keys)")
    serve.add_argument("--port", type=int, default=8080)
    serve.add_argument("--workers", type=int, default=1, help="processes sharing the port (share state with Redis)")
    serve.add_argument("--grace", type=float, default=30.0,
                       help="SIGTERM: seconds in-flight calls may go on before they are cancelled (default 30)")
    serve.set_defaults(run=_serve)

    models = commands.add_parser("models", help="fetch the default local model")
    models.add_argument("action", choices=["pull"])
    models.add_argument("--dest", default=None, help="folder for the GGUF (default: ./models)")
    models.set_defaults(run=_models)
    return parser


def _config_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", default=os.environ.get("ROUTER_CONFIG", "config.yaml"),
                        help="YAML config (default: $ROUTER_CONFIG or ./config.yaml)")


def _complete(args: argparse.Namespace) -> int:
    from .core import Router

    router = Router.from_yaml(args.config)
    messages = [{"role": "system", "content": args.system}] if args.system else []
    messages.append({"role": "user", "content": args.prompt})
    resp = router.complete(messages, chain=args.chain, max_tokens=args.max_tokens)
    if args.json:
        print(json.dumps(resp.to_dict(), indent=2))
    else:
        print(resp.text)
    route = resp.route
    tried = ", ".join(f"{a.target}={a.outcome}" for a in route.attempts) if route else ""
    tags = ["degraded"] if route.degraded else []
    if route.cache_age_s is not None:
        tags.append(f"stored {route.cache_age_s:.0f} s ago")
    shown = f" ({', '.join(tags)})" if tags else ""
    print(f"[served by {route.served_by}{shown} "
          f"in {route.latency_s:.2f} s; {tried}]", file=sys.stderr)
    return EXIT_OK


def _status(args: argparse.Namespace) -> int:
    router = _shared_state_router(args.config)
    report = router.status()
    shared = router.config.state.backend != "memory"
    if args.json:
        print(json.dumps({"shared": shared, "targets": report}, indent=2))
        return EXIT_OK
    rows = [("target", "state", "failures", "half-open in", "retry budget", "rate limit", "note")]
    for name, info in report.items():
        budget = info.get("retry_budget")
        rows.append((name, info["state"], str(info["failures"]),
                     f"{info['retry_in_s']:.0f} s" if "retry_in_s" in info else "",
                     f"{budget:.1f}" if isinstance(budget, (int, float)) else "",
                     _rate_limit_text(info.get("rate_limit")),
                     info.get("disabled") or info.get("misconfigured") or ""))
    _print_table(rows)
    if not shared:
        print("(state.backend is memory: this is a fresh process's view; running routers keep their own)",
              file=sys.stderr)
    return EXIT_OK


def _rate_limit_text(info: dict | None) -> str:
    """'rpm 500: room 3/req, 2 waiting; provider: 12/20 req left (0.4 s)' from status()'s rate_limit."""
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
    if "paused_s" in info:
        parts.append(f"paused {info['paused_s']:g} s after a 429")
    if info.get("shared") is False:
        parts.append(f"redis away: 1/{info.get('peers', 1)} share")
    return "; ".join(parts)


def _control(args: argparse.Namespace) -> int:
    router = _shared_state_router(args.config)
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


def _shared_state_router(path: str) -> Any:
    """A Router for reading or steering shared circuits: a Redis that does not answer is an
    error here (exit 2), not a fallback to this short-lived process's own state."""
    from dataclasses import replace

    from .core import Router

    config = load_config(path)
    if config.state.backend == "redis":
        config = replace(config, state=replace(config.state, required=True))
    return Router(config)


def _cache(args: argparse.Namespace) -> int:
    from .cache.tier import open_caches

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
                         _age(info["oldest_s"]), _age(info["newest_s"]), f"{info['ttl']:g} s", info.get("path", "")))
        _print_table(rows)
    return EXIT_OK


def _cache_backend(target: Any) -> str | None:
    return f"cache: {target.cache.backend}" if target.cache is not None else None


def _age(seconds: float | None) -> str:
    return "" if seconds is None else f"{seconds:.0f} s"


def _check_config(args: argparse.Namespace) -> int:
    file = args.file or os.environ.get("ROUTER_CONFIG", "config.yaml")
    config = load_config(file)
    _check_model_files(config, file)
    chains: dict[str, Any] = {}
    for name, chain in config.chains.items():
        chains[name] = [
            {"target": t, "model": config.targets[t].model or _cache_backend(config.targets[t]), "degraded": config.targets[t].degraded,
             "disabled": config.targets[t].disabled
             or ("offline mode" if config.offline and config.targets[t].is_remote else None)}
            for t in chain.targets
        ]
    if args.json:
        print(json.dumps({"file": file, "chains": chains}, indent=2))
        return EXIT_OK
    print(f"{file}: valid")
    for name, members in chains.items():
        parts = []
        for m in members:
            text = f"{m['target']} ({m['model']}{', degraded' if m['degraded'] else ''})"
            parts.append(text + (f" [disabled: {m['disabled']}]" if m["disabled"] else ""))
        print(f"  {name}: " + " -> ".join(parts))
    return EXIT_OK


def _check_model_files(config: Any, file: str) -> None:
    """A config whose local model file is missing or broken is not valid: the last resort
    would fail the first time it is needed."""
    from .models import ModelFileError, verify_model_file

    for name, target in config.targets.items():
        if target.local is not None and not target.disabled:
            try:
                verify_model_file(target.local.model_path)
            except ModelFileError as exc:
                raise ConfigError(str(exc), file=file, key_path=f"targets.{name}.model_path") from None


def _advise(args: argparse.Namespace) -> int:
    from .advise import recommend, replay
    from .advise.evidence import gather, read_logs

    if (args.write or args.replay) and not args.config:
        print("router: --write and --replay need the config in use: --config FILE (or $ROUTER_CONFIG)",
              file=sys.stderr)
        return EXIT_USAGE
    try:
        log = read_logs(args.events, sys.stdin.buffer if "-" in args.events else None)
    except OSError as exc:
        print(f"router: cannot read {exc.filename}: {exc.strerror}", file=sys.stderr)
        return EXIT_USAGE
    evidence = gather(log.events)
    if not evidence:
        skipped = f" (skipped: {log.skipped_text()})" if log.skipped else ""
        print(f"router: nothing usable in {', '.join(args.events)}: no router event naming a target{skipped}; "
              f"write them with `events: {{log: json}}` in the config", file=sys.stderr)
        return EXIT_USAGE
    config = load_config(args.config) if args.config else None
    found = recommend.advise(evidence, config)
    result: dict[str, Any] = {"targets": {name: a.to_dict() for name, a in found.items()}}
    if log.skipped_lines:
        result["skipped_lines"] = log.skipped_lines
    if log.skipped:
        result["skipped"] = dict(log.skipped.most_common())
    unknown = sorted(set(evidence) - set(found))
    if unknown:
        result["not_in_config"] = unknown
    if args.write:
        assert config is not None
        _write_config(args.config, args.write, found)
        result["written"] = args.write
    if args.replay:
        assert config is not None
        result["replay"] = {"current": replay.replay(log.events, config),
                            "recommended": replay.replay(log.events, recommend.applied(config, found))}
    if args.json:
        if "replay" in result:
            result["replay"] = {k: v.to_dict() for k, v in result["replay"].items()}
        print(json.dumps(_finite(result), indent=2, allow_nan=False))  # always valid JSON: no bare NaN
        return EXIT_OK
    print(recommend.report_text(found))
    if log.skipped:
        print(f"(skipped, by reason: {log.skipped_text()})")
    if unknown:
        print(f"(targets in the log but not in {args.config}, left out: {', '.join(unknown)})")
    if args.write:
        print(f"wrote {args.write} (valid)")
    if args.replay:
        print("\nreplay on a simulated clock:")
        print(replay.report_text(result["replay"]["current"], result["replay"]["recommended"]))
    return EXIT_OK


def _finite(data: Any) -> Any:
    """`data` with every NaN or infinite float replaced by None (JSON has neither)."""
    if isinstance(data, float) and not math.isfinite(data):
        return None
    if isinstance(data, dict):
        return {k: _finite(v) for k, v in data.items()}
    if isinstance(data, (list, tuple)):
        return [_finite(v) for v in data]
    return data


def _write_config(source: str, dest: str, found: dict[str, Any]) -> None:
    """The config's text with the recommendations set in each target's own mapping,
    checked by the loader `check-config` uses before it replaces `dest`."""
    from .advise.yaml_edit import EditError, set_values

    with open(source, encoding="utf-8") as file:
        text = file.read()
    for name, advice in found.items():
        if advice.recommend:
            try:
                text = set_values(text, ("targets", name), advice.recommend)
            except EditError as exc:
                raise ConfigError(f"cannot write the recommendations: {exc}", file=source,
                                  key_path=f"targets.{name}") from None
    folder = os.path.dirname(os.path.abspath(dest))
    handle, temporary = tempfile.mkstemp(prefix=".advise-", suffix=".yaml", dir=folder)
    try:
        with os.fdopen(handle, "w", encoding="utf-8") as file:
            file.write(text)
        try:
            load_config(temporary)
        except ConfigError as exc:
            raise ConfigError(f"the config with the recommendations would not load: {exc.reason}", file=dest,
                              key_path=exc.key_path) from None
        os.replace(temporary, dest)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temporary)
        raise


def _serve(args: argparse.Namespace) -> int:
    try:
        from .serve.process import serve
    except ImportError as exc:
        print(f"router: `router serve` needs the serve extra: pip install 'failover-router[serve]' ({exc})",
              file=sys.stderr)
        return EXIT_USAGE
    return serve(args.config, host=args.host, port=args.port, workers=args.workers, grace=args.grace)


def _models(args: argparse.Namespace) -> int:
    from .models import pull_default_model

    path = pull_default_model(args.dest) if args.dest else pull_default_model()
    print(path)
    return EXIT_OK


def _print_table(rows: list[tuple[str, ...]]) -> None:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip())


if __name__ == "__main__":
    sys.exit(main())
