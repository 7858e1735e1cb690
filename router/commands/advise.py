"""`router advise`: read event logs, print (or --write, --replay) the recommended timeouts,
retries and breaker settings; the reasoning itself is router/advise/."""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import sys
import tempfile
from typing import Any

from ..config import load_config
from ..errors import ConfigError
from . import EXIT_OK, EXIT_USAGE


def run(args: argparse.Namespace) -> int:
    from ..advise import recommend, replay
    from ..advise.evidence import gather, read_logs

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
        write_config(args.config, args.write, found)
        result["written"] = args.write
    if args.replay:
        assert config is not None
        result["replay"] = {"current": replay.replay(log.events, config),
                            "recommended": replay.replay(log.events, recommend.applied(config, found))}
    if args.json:
        if "replay" in result:
            result["replay"] = {k: v.to_dict() for k, v in result["replay"].items()}
        print(json.dumps(finite(result), indent=2, allow_nan=False))  # always valid JSON: no bare NaN
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


def finite(data: Any) -> Any:
    """`data` with every NaN or infinite float replaced by None (JSON has neither)."""
    if isinstance(data, float) and not math.isfinite(data):
        return None
    if isinstance(data, dict):
        return {k: finite(v) for k, v in data.items()}
    if isinstance(data, (list, tuple)):
        return [finite(v) for v in data]
    return data


def write_config(source: str, dest: str, found: dict[str, Any]) -> None:
    """The config's text with the recommendations set in each target's own mapping,
    checked by the loader `check-config` uses before it replaces `dest`."""
    from ..advise.yaml_edit import EditError, set_values

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
