"""One value at its key path: checked against the schema's dataclasses, `${VAR}`-interpolated,
and named in every error. The sections (loader.py, server_section.py) say which keys a
section has; this says whether a value is right for its key.

The dataclasses of schema.py are the schema: their fields, types and `metadata` (minimum
and maximum values, allowed choices) are what `ValueChecker.build` checks, so a key is
declared in one place. Every mistake is a `ConfigError` with the file and key path; an
`api_key` that has the wrong type is described by its type only, never echoed.
"""

from __future__ import annotations

import math
import os
import re
import types
import typing
from collections.abc import Mapping
from dataclasses import MISSING, fields, is_dataclass, replace
from typing import Any

from ..errors import ConfigError
from .schema import MAX_DURATION_S, RetryPolicy

_ENV = re.compile(r"\$\{([^}]*)\}")
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*$")


class ValueChecker:
    """The checks every section uses, each raising a `ConfigError` for `file` at a key path."""

    def __init__(self, file: str) -> None:
        self.file = file

    def error(self, path: str, message: str) -> ConfigError:
        return ConfigError(message, file=self.file, key_path=path)

    def resolved(self, raw: Any, path: str) -> Any:
        """Interpolate env vars where an unset one is an error, not a disabled target."""
        missing: list[str] = []
        value = interpolate(raw, path, self, missing)
        if missing:
            raise self.error(path, missing[0])
        return value

    def mapping(self, raw: Any, path: str, allowed: tuple[str, ...] | None = None) -> dict[str, Any]:
        if not isinstance(raw, Mapping):
            raise self.error(path, f"expected a mapping, got {kind_of(raw)}")
        if allowed is not None:
            for key in raw:
                if key not in allowed:
                    where = f"{path}.{key}" if path else str(key)
                    raise self.error(where, f"unknown key; expected one of: {', '.join(allowed)}")
        return dict(raw)

    def value(self, raw: Any, path: str, kind: type) -> Any:
        shown = f"a {type(raw).__name__}" if path.endswith("api_key") else kind_of(raw)  # never echo a key
        if kind is bool and not isinstance(raw, bool):
            raise self.error(path, f"expected true or false, got {shown}")
        if kind is str and not isinstance(raw, str):
            raise self.error(path, f"expected a string, got {shown}")
        return raw

    def number(self, raw: Any, path: str, *, integer: bool = False, minimum: float = 0.0,
               positive: bool = False, maximum: float | None = None) -> Any:
        ok = isinstance(raw, int) if integer else isinstance(raw, (int, float))
        if isinstance(raw, bool) or not ok or (isinstance(raw, float) and not math.isfinite(raw)):
            raise self.error(path, f"expected {'a whole number' if integer else 'a number'}, got {kind_of(raw)}")
        if positive and raw <= 0:
            raise self.error(path, f"expected a number > 0, got {raw}")
        if raw < minimum:
            raise self.error(path, f"expected a number >= {minimum:g}, got {raw}")
        if maximum is not None and raw > maximum:
            unit = " seconds (one day)" if maximum == MAX_DURATION_S else ""
            shown = str(raw) if len(str(raw)) <= 24 else f"{str(raw)[:20]}..."
            raise self.error(path, f"expected at most {maximum:g}{unit}, got {shown}")
        return raw

    def build(self, cls: type, raw: Any, path: str, base: Any = None) -> Any:
        """Validate `raw` against dataclass `cls` and lay it over `base`."""
        hints = typing.get_type_hints(cls)
        known = {f.name: f for f in fields(cls)}
        data = self.mapping(raw, path, tuple(known))
        values: dict[str, Any] = {}
        for key, value in data.items():
            if is_dataclass(hints[key]):  # a nested section, laid over the base's
                inner = getattr(base, key) if base is not None else hints[key]()
                values[key] = self.build(hints[key], value, f"{path}.{key}", inner)
            else:
                values[key] = self.field_value(value, f"{path}.{key}", hints[key], known[key].metadata)
        if base is None:
            for name, f in known.items():
                if name not in values and f.default is MISSING and f.default_factory is MISSING:
                    raise self.error(f"{path}.{name}", "missing")
            result = cls(**values)
        else:
            result = replace(base, **values)
        if isinstance(result, RetryPolicy) and result.min_wait > result.max_wait:
            raise self.error(f"{path}.min_wait", f"min_wait ({result.min_wait}) exceeds max_wait "
                                                 f"({result.max_wait})")
        return result

    def field_value(self, raw: Any, path: str, hint: Any, metadata: Mapping[str, Any]) -> Any:
        optional = typing.get_origin(hint) in (typing.Union, types.UnionType) and type(None) in typing.get_args(hint)
        if optional:
            if raw is None:
                return None
            hint = next(a for a in typing.get_args(hint) if a is not type(None))
        if hint in (int, float):
            return self.number(raw, path, integer=hint is int, minimum=metadata.get("min", 0.0),
                               maximum=metadata.get("max"))
        value = self.value(raw, path, hint)
        choices = metadata.get("choices")
        if choices and value not in choices:
            raise self.error(path, f"expected one of {', '.join(choices)}, got {value!r}")
        return value

    def choice(self, raw: Any, path: str, choices: tuple[str, ...]) -> str:
        if raw not in choices:
            raise self.error(path, f"expected {' or '.join(choices)}, got {raw!r}")
        return raw


def interpolate(raw: Any, path: str, checker: ValueChecker, missing: list[str]) -> Any:
    """Replace ${VAR} and ${VAR:-default} in every string; note unset variables."""
    if isinstance(raw, str):
        if "${" not in raw:
            return raw
        if raw.count("${") != len(_ENV.findall(raw)):
            raise checker.error(path, "unterminated ${...}; write ${NAME} or ${NAME:-default}")

        def substitute(match: re.Match[str]) -> str:
            name, sep, default = match.group(1).partition(":-")
            if not _ENV_NAME.match(name):
                raise checker.error(path, f"bad environment variable name {name!r} in ${{...}}")
            value = os.environ.get(name)
            if value:
                return value
            if sep:
                return default
            missing.append(f"environment variable {name} is " + ("not set" if value is None else "set but empty"))
            return ""

        return _ENV.sub(substitute, raw)
    if isinstance(raw, Mapping):
        return {k: interpolate(v, f"{path}.{k}" if path else str(k), checker, missing) for k, v in raw.items()}
    if isinstance(raw, list):
        return [interpolate(v, f"{path}[{i}]", checker, missing) for i, v in enumerate(raw)]
    return raw


def kind_of(value: Any) -> str:
    """What `value` is, for an error message (a string shown only to 40 characters)."""
    if value is None:
        return "nothing (null)"
    if isinstance(value, bool):
        return f"a boolean ({str(value).lower()})"
    if isinstance(value, (int, float)):
        return f"a number ({value})"
    if isinstance(value, str):
        return f"a string ({value[:40]!r})"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, Mapping):
        return "a mapping"
    return type(value).__name__
