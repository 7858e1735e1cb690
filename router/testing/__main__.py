"""Run a FaultServer in the foreground: ``python -m router.testing [--port N] [--default JSON]``.

Prints the base URL (for ``api_base``) on one line, then serves until Ctrl-C or SIGTERM.
Faults are given as JSON objects with a ``kind`` field, e.g. ``'{"kind": "status", "code": 503}'``.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import threading
from typing import Optional, Sequence

from . import faults
from .server import FaultServer


def _fault(text: str) -> faults.Fault:
    try:
        return faults.from_dict(json.loads(text))
    except (ValueError, TypeError, AttributeError) as exc:
        raise argparse.ArgumentTypeError(f"not a fault: {text!r} ({exc})") from None


def _script(text: str) -> tuple:
    model, sep, steps = text.partition("=")
    try:
        parsed = json.loads(steps) if sep else None
        if isinstance(parsed, dict):
            parsed = [parsed]
        return model, [faults.from_dict(step) for step in parsed]
    except (ValueError, TypeError, AttributeError) as exc:
        raise argparse.ArgumentTypeError(f"expected MODEL=JSON_LIST, got {text!r} ({exc})") from None


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Parse ``argv``, serve until interrupted, return the exit status."""
    parser = argparse.ArgumentParser(
        prog="python -m router.testing",
        description="Serve a fault-injecting OpenAI-compatible API (and Anthropic's /v1/messages) until Ctrl-C; "
                    "prints its OpenAI base URL (Anthropic clients take it without the /v1).")
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=0, help="port to bind (default 0: a free one)")
    parser.add_argument("--default", type=_fault, metavar="JSON",
                        help='fault for unscripted models, e.g. \'{"kind": "status", "code": 503}\'')
    parser.add_argument("--script", type=_script, action="append", default=[], metavar="MODEL=JSON",
                        help='steps for one model, e.g. \'m1=[{"kind": "hang"}, {"kind": "ok"}]\'')
    args = parser.parse_args(argv)

    server = FaultServer(args.host, args.port)
    if args.default is not None:
        server.default(args.default)
    for model, steps in args.script:
        server.script(model, *steps)
    stop = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stop.set())
    with server:
        print(server.url, flush=True)
        while not stop.wait(0.5):
            pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
