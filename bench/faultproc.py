"""A `FaultServer` in its own process, with a control channel on stdin/stdout.

``python -m router.testing`` scripts models from its command line but has no way to
report how many requests each model received, which the outage scenario needs. This
runs the same `router.testing.FaultServer` in a child process and answers one JSON
command per stdin line with one JSON line on stdout:

    {"op": "script", "model": "p", "steps": [{"kind": "status", "code": 503}]} -> {"ok": true}
    {"op": "count", "model": "p"}                                              -> {"count": 12}
    {"op": "statuses", "model": "p"}                                           -> {"statuses": {"200": 9, "429": 3}}
    {"op": "reset"}                                                            -> {"ok": true}

The first line printed is the server's base URL. EOF on stdin stops the server.
"""

from __future__ import annotations

import json
import sys

from router.testing import FaultServer, faults


def main() -> int:
    server = FaultServer("127.0.0.1", 0).start()
    print(server.url, flush=True)
    try:
        for line in sys.stdin:
            if not line.strip():
                continue
            try:
                command = json.loads(line)
                op = command["op"]
                if op == "script":
                    server.script(command["model"], *(faults.from_dict(s) for s in command["steps"]))
                    answer = {"ok": True}
                elif op == "count":
                    answer = {"count": server.count(command.get("model"))}
                elif op == "statuses":
                    answer = {"statuses": server.statuses(command.get("model"))}
                elif op == "reset":
                    server.reset()
                    answer = {"ok": True}
                else:
                    answer = {"error": f"unknown op {op!r}"}
            except Exception as exc:  # report, keep serving
                answer = {"error": f"{type(exc).__name__}: {exc}"}
            print(json.dumps(answer), flush=True)
    finally:
        server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
