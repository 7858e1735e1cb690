"""Running the gateway: uvicorn (uvloop + httptools), one process or `--workers N`.

Why this stack (`python -m bench serve --stack`, README "Gateway"): Starlette on uvicorn
with uvloop and httptools tells the app that a client hung up (ASGI `http.disconnect`)
while the app still waits upstream, which is what cancels the upstream call; its graceful
shutdown waits for in-flight requests up to a timeout and then cancels them, which is the
SIGTERM drain; its supervisor runs `--workers` on one socket. granian does the hang-up
too, and costs more here (`python -m bench serve --stack`, 16 concurrent): 490 against
354 us of CPU a chat completion, 83 against 52 us a GET /v1/models. The app is plain
ASGI, so a move is this module alone.

- No keys in `server.keys`: the gateway would let anyone in, so it binds only to a
  loopback address and refuses any other `--host` (exit 2).
- SIGTERM (or Ctrl-C): stop accepting, let in-flight calls finish for up to `grace`
  seconds (default `DRAIN_GRACE_S`), cancel what is left (closing their upstream
  requests), exit 0.
- `--workers N`: N processes share the port. With `state.backend: memory` each keeps
  its own circuits, budgets, limits and cache (warned at start); with Redis they share them.
"""

from __future__ import annotations

import ipaddress
import logging
import importlib.util
import os
import signal
import sys
from typing import Any

from ..config import load_config
from .app import CONFIG_ENV, build_app

log = logging.getLogger("router.serve")
DRAIN_GRACE_S = 30  # SIGTERM: how long in-flight calls may go on before they are cancelled
EXIT_OK, EXIT_USAGE = 0, 2


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def serve(config_path: str, *, host: str = "127.0.0.1", port: int = 8080, workers: int = 1,
          grace: float = DRAIN_GRACE_S) -> int:
    """Serve until SIGTERM or SIGINT; the exit status (0 after a drain, 2 bad usage)."""
    config = load_config(config_path)  # a ConfigError is the caller's to report (exit 2)
    if not config.server.keys and not is_loopback(host):
        print(f"router serve: refusing --host {host}: {config_path} configures no server.keys, so the gateway "
              f"would answer anyone who can reach it. Bind to 127.0.0.1 (or ::1), or add keys:\n"
              f"  server:\n    keys:\n      - name: team-a\n        key: ${{ROUTER_TEAM_A_KEY}}", file=sys.stderr)
        return EXIT_USAGE
    if workers < 1:
        print(f"router serve: --workers must be at least 1, got {workers}", file=sys.stderr)
        return EXIT_USAGE
    if config.server.otel and importlib.util.find_spec("opentelemetry") is None:
        print(f"router serve: {config_path}: server.otel is true, which needs opentelemetry-api: "
              f"pip install 'failover-router[otel]' (the SDK and an exporter too, to send spans anywhere)",
              file=sys.stderr)
        return EXIT_USAGE
    if workers > 1 and config.state.backend == "memory":
        log.warning("router serve: %d workers with state.backend: memory: each worker keeps its own circuits, "
                    "retry budgets, rate limits and caches (a failing target is tried up to %d times as often "
                    "before every circuit opens); use state: {backend: redis, url: ...} to share them",
                    workers, workers)
    import uvicorn

    options: dict[str, Any] = dict(host=host, port=port, http="httptools", loop=_loop(), lifespan="on",
                                   access_log=False, log_level="warning", timeout_graceful_shutdown=grace,
                                   server_header=False, date_header=False)
    keys = f"{len(config.server.keys)} key(s)" if config.server.keys else "no keys: loopback only"
    shown = f"[{host}]" if ":" in host else host
    print(f"router serve: http://{shown}:{port}/v1 ({workers} worker(s), {keys}, chains: "
          f"{', '.join(config.chains)})", file=sys.stderr, flush=True)
    _exit_quietly_after_drain()
    if workers == 1:
        uvicorn.run(build_app(config), **options)
    else:
        os.environ[CONFIG_ENV] = os.path.abspath(config_path)
        uvicorn.run("router.serve.app:app_from_environment", factory=True, workers=workers, **options)
    return EXIT_OK


def _loop() -> str:
    try:
        import uvloop  # noqa: F401
    except ImportError:
        return "asyncio"
    return "uvloop"


def _exit_quietly_after_drain() -> None:
    """uvicorn drains on SIGTERM/SIGINT, then raises the signal again under the handler that
    was there before it started: with these, that is a no-op and `serve` returns 0 (with
    Python's defaults, a drained server would still die of SIGTERM or KeyboardInterrupt)."""
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: None)
