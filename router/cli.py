"""`router` on the command line: ask a chain, inspect and steer circuits, validate a config,
tune it from the event log, fetch a model.

Exit codes: 0 answered / valid / done, 1 no target answered, 2 bad usage or config.
This module parses and runs the one-call commands; the operator's (status, open/close, cache)
and `advise` live in router/commands/.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from typing import Any

from .commands import EXIT_FAILED, EXIT_OK, EXIT_USAGE, operate
from .commands import advise as advise_command
from .config import load_config
from .errors import AllTargetsFailed, ConfigError, InvalidRequest, RouterError


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
    status.set_defaults(run=operate.status)

    for verb, what in (("open", "take a target out of rotation (shared through Redis state)"),
                       ("close", "put a target back into rotation (shared through Redis state)")):
        control = commands.add_parser(verb, help=what)
        control.add_argument("target")
        _config_option(control)
        control.add_argument("--json", action="store_true")
        control.set_defaults(run=operate.control, verb=verb)

    cache = commands.add_parser("cache", help="the cache tiers: what they hold (stats), or forget it (clear)")
    cache.add_argument("action", choices=["stats", "clear"])
    cache.add_argument("--target", help="only this cache target (default: every one)")
    _config_option(cache)
    cache.add_argument("--json", action="store_true")
    cache.set_defaults(run=operate.cache)

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
    advise.set_defaults(run=advise_command.run)

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


def _cache_backend(target: Any) -> str | None:
    return f"cache: {target.cache.backend}" if target.cache is not None else None


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


if __name__ == "__main__":
    sys.exit(main())
