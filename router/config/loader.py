"""YAML (or a dict) -> a validated, typed `RouterConfig`.

Every mistake is a `ConfigError` naming the file and the key path, never a KeyError
from deep inside a call. The schema is the dataclasses of schema.py: their fields, types
and `metadata` (minimum values, allowed choices) are what is checked (values.py checks each
value), and the keys a target accepts are the fields of `TargetConfig`, so a key is
declared in one place. This module holds the sections: defaults, targets (remote, llama_cpp,
cache), chains, state; `server:` is server_section.py's.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Mapping
from dataclasses import fields, replace
from pathlib import Path
from typing import Any

import yaml

from ..errors import ConfigError, InvalidRequest
from ..observe.redact import Secret
from ..request import ROUTER_OWNED_PARAMS, check_params
from .server_section import server_section
from .values import ValueChecker, interpolate, kind_of
from .strict_yaml import load_yaml
from .schema import (MID_STREAM_CHOICES, MAX_DURATION_S, BreakerPolicy, CacheOptions, ChainConfig, EventsConfig, LocalOptions,
                     LITELLM, OPENAI, TRANSPORTS, speaks_openai, RateLimitPolicy, RetryPolicy, RouterConfig, StateConfig, TargetConfig)

log = logging.getLogger("router")


PROVIDERS = ("litellm", "llama_cpp", "cache")
_TOP_KEYS = ("defaults", "targets", "chains", "state", "offline", "events", "server")
# Scalar target settings that `defaults` may set for every target: (type, minimum, > 0, maximum).
_LIMITS: dict[str, tuple[type, float, bool, float | None]] = {
    "timeout": (float, 0, True, MAX_DURATION_S),
    "max_concurrency": (int, 1, True, None),
    "queue_timeout": (float, 0, False, MAX_DURATION_S),
    "first_token_timeout": (float, 0, True, MAX_DURATION_S),
    "stream_idle_timeout": (float, 0, True, MAX_DURATION_S),
}
_DEFAULT_KEYS = ("deadline", "retry", "breaker", "params", "rate_limit", *_LIMITS)
# Every field of TargetConfig is a key of a target, except those the loader fills in.
_TARGET_KEYS = tuple(f.name for f in fields(TargetConfig) if f.name not in ("name", "local", "cache", "disabled"))
# A cache tier calls no provider: it takes its own options and nothing about a model.
_CACHE_OPTION_KEYS = tuple(f.name for f in fields(CacheOptions))
_CACHE_TARGET_KEYS = ("provider", "degraded", "timeout", "breaker", *_CACHE_OPTION_KEYS)
DEFAULT_CACHE_FILE = ".router-cache.sqlite"
_CHAIN_KEYS = ("targets", "static_reply", "on_content_policy", "mid_stream", "max_recoveries")


def load_config(path: str | os.PathLike[str]) -> RouterConfig:
    """Read and validate a YAML config file (safe constructors only, read strictly: strict_yaml.py)."""
    file = str(path)
    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError("file not found", file=file) from None
    except OSError as exc:
        raise ConfigError(f"cannot read: {exc.strerror}", file=file) from None
    try:
        data = load_yaml(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise ConfigError(f"not valid YAML{where}: {problem}", file=file) from None
    return config_from_dict(data, source=file, base_dir=Path(path).resolve().parent)


def config_from_dict(data: Any, *, source: str = "<dict>", base_dir: Path | None = None) -> RouterConfig:
    """Validate an already-parsed config; `source` names it in errors."""
    try:
        return _Loader(source, base_dir or Path.cwd()).load(data)
    except RecursionError:  # a dict that contains itself (YAML files are refused earlier, with a line)
        raise ConfigError("the config contains itself (a mapping or list nested inside itself)",
                          file=source) from None


class _Loader(ValueChecker):
    """The sections, in order; each value is checked by `ValueChecker` (values.py)."""

    def __init__(self, file: str, base_dir: Path) -> None:
        super().__init__(file)
        self.base_dir = base_dir

    def load(self, data: Any) -> RouterConfig:
        if data is None:
            raise self.error("", "the file is empty; expected a mapping with 'targets' and 'chains'")
        top = self.mapping(data, "", _TOP_KEYS)
        for key in ("targets", "chains"):
            if key not in top:
                raise self.error(key, "missing; every config needs 'targets' and 'chains'")
        offline = self.value(top.get("offline", False), "offline", bool)
        offline = offline or os.environ.get("ROUTER_OFFLINE", "").lower() in ("1", "true", "yes")

        defaults = self.mapping(self.resolved(top.get("defaults", {}), "defaults"), "defaults", _DEFAULT_KEYS)
        deadline = self.number(defaults.get("deadline", 90.0), "defaults.deadline", positive=True,
                               maximum=MAX_DURATION_S)
        retry = self.build(RetryPolicy, defaults.get("retry", {}), "defaults.retry", RetryPolicy())
        breaker = self.build(BreakerPolicy, defaults.get("breaker", {}), "defaults.breaker", BreakerPolicy())
        params = self.params(defaults.get("params", {}), "defaults.params")
        rate_limit = self.build(RateLimitPolicy, defaults.get("rate_limit", {}), "defaults.rate_limit",
                                RateLimitPolicy())
        base = TargetConfig(name="", provider="litellm", model=None, timeout=30.0, retry=retry,
                            breaker=breaker, params=params, rate_limit=rate_limit)
        base = replace(base, **self.limits(defaults, "defaults"))

        targets_raw = self.mapping(top["targets"], "targets")
        if not targets_raw:
            raise self.error("targets", "no targets defined")
        targets = {str(name): self.target(str(name), raw, base) for name, raw in targets_raw.items()}

        chains_raw = self.mapping(self.resolved(top["chains"], "chains"), "chains")
        if not chains_raw:
            raise self.error("chains", "no chains defined")
        chains = {str(name): self.chain(str(name), raw, targets) for name, raw in chains_raw.items()}

        state = self.build(StateConfig, self.resolved(top.get("state", {}), "state"), "state", StateConfig())
        self.check_state(state)
        self.check_cache_backends(targets, state)
        events = self.build(EventsConfig, top.get("events", {}), "events", EventsConfig())
        return RouterConfig(targets=targets, chains=chains, deadline=deadline, state=state,
                            offline=offline, events=events, source=self.file,
                            server=server_section(self, top.get("server"), chains))

    # -- sections ---------------------------------------------------------------------

    def target(self, name: str, raw: Any, base: TargetConfig) -> TargetConfig:
        path = f"targets.{name}"
        missing_env: list[str] = []
        raw = interpolate(raw, path, self, missing_env)
        provider = raw.get("provider", "litellm") if isinstance(raw, Mapping) else "litellm"
        if provider not in PROVIDERS:
            raise self.error(f"{path}.provider", f"expected one of {', '.join(PROVIDERS)}, got {provider!r}")
        if provider == "cache":
            return self.cache_target(name, raw, base)
        local_keys = tuple(f.name for f in fields(LocalOptions)) if provider == "llama_cpp" else ()
        data = self.mapping(raw, path, _TARGET_KEYS + local_keys)

        model = data.get("model")
        if model is not None:
            model = self.value(model, f"{path}.model", str)
        if provider == "litellm" and not model:
            raise self.error(f"{path}.model", "missing; a remote target needs a litellm model string "
                                              "such as openai/gpt-4o-mini")
        api_key = data.get("api_key")
        if api_key is not None:
            api_key = Secret(self.value(api_key, f"{path}.api_key", str))
        local = None
        if provider == "llama_cpp":
            local_raw = {k: v for k, v in data.items() if k in local_keys}
            if "model_path" not in local_raw:
                raise self.error(f"{path}.model_path", "missing; a llama_cpp target needs the path of a GGUF file")
            local = self.build(LocalOptions, local_raw, path)
            if local.max_tokens is None:
                local = replace(local, max_tokens=min(512, local.n_ctx // 2))
            elif local.max_tokens >= local.n_ctx:
                raise self.error(f"{path}.max_tokens", f"max_tokens ({local.max_tokens}) must be below n_ctx "
                                                       f"({local.n_ctx}), or no prompt fits beside it")
            model_path = Path(os.path.expanduser(local.model_path))
            local = replace(local, model_path=str(model_path if model_path.is_absolute()
                                                  else self.base_dir / model_path))
            model = model or Path(local.model_path).stem
        disabled = None
        if missing_env:
            disabled = missing_env[0]
        elif api_key is not None and not api_key.reveal():
            disabled = "api_key is empty"
        if disabled:
            log.warning("router: target %r disabled: %s (%s)", name, disabled, self.file)
        context_window = data.get("context_window")
        if context_window is not None:
            context_window = self.number(context_window, f"{path}.context_window", integer=True, minimum=1)
        elif local is not None:
            context_window = local.n_ctx
        return replace(
            base,
            name=name,
            provider=provider,
            model=model,
            api_key=api_key,
            api_base=self.value(data["api_base"], f"{path}.api_base", str) if "api_base" in data else None,
            retry=self.build(RetryPolicy, data.get("retry", {}), f"{path}.retry", base.retry),
            breaker=self.build(BreakerPolicy, data.get("breaker", {}), f"{path}.breaker", base.breaker),
            rate_limit=self.build(RateLimitPolicy, data.get("rate_limit", {}), f"{path}.rate_limit",
                                  base.rate_limit),
            degraded=self.value(data.get("degraded", False), f"{path}.degraded", bool),
            prefill=self.value(data["prefill"], f"{path}.prefill", bool) if "prefill" in data else None,
            transport=self.transport(data, model, provider, f"{path}.transport"),
            context_window=context_window,
            params={**base.params, **self.params(data.get("params", {}), f"{path}.params")},
            local=local,
            disabled=disabled,
            **self.limits(data, path),
        )

    def cache_target(self, name: str, raw: Any, base: TargetConfig) -> TargetConfig:
        """A cache tier: degraded unless it says otherwise (an old answer is a fallback)."""
        path = f"targets.{name}"
        data = self.mapping(raw, path, _CACHE_TARGET_KEYS)
        options = self.build(CacheOptions, {k: v for k, v in data.items() if k in _CACHE_OPTION_KEYS}, path)
        if options.path is not None and options.backend != "sqlite":
            raise self.error(f"{path}.path", f"only the sqlite backend takes a path (backend is {options.backend})")
        if options.backend == "sqlite":
            file = Path(os.path.expanduser(options.path or DEFAULT_CACHE_FILE))
            options = replace(options, path=str(file if file.is_absolute() else self.base_dir / file))
        return replace(base, name=name, provider="cache", model=None, params={}, cache=options,
                       # a miss is never retried: no retries, so no retry budget either
                       retry=replace(base.retry, attempts=1, budget=replace(base.retry.budget, enabled=False)),
                       rate_limit=RateLimitPolicy(),  # no provider to pace: defaults.rate_limit is not for it
                       breaker=self.build(BreakerPolicy, data.get("breaker", {}), f"{path}.breaker", base.breaker),
                       degraded=self.value(data.get("degraded", True), f"{path}.degraded", bool),
                       **self.limits({k: v for k, v in data.items() if k == "timeout"}, path))

    def check_cache_backends(self, targets: Mapping[str, TargetConfig], state: StateConfig) -> None:
        for name, target in targets.items():
            if target.cache is not None and target.cache.backend == "redis" and state.backend != "redis":
                raise self.error(f"targets.{name}.backend", "the redis cache backend uses state.url; set "
                                                            "state: {backend: redis, url: redis://host:port/db}")

    def chain(self, name: str, raw: Any, targets: Mapping[str, TargetConfig]) -> ChainConfig:
        path = f"chains.{name}"
        data = {"targets": raw} if isinstance(raw, list) else self.mapping(raw, path, _CHAIN_KEYS)
        members = data.get("targets")
        members_path = f"{path}.targets" if not isinstance(raw, list) else path
        if not isinstance(members, list):
            raise self.error(members_path, f"expected a list of target names, got {kind_of(members)}")
        if not members:
            raise self.error(members_path, "the chain is empty; list at least one target")
        for i, member in enumerate(members):
            if not isinstance(member, str):
                raise self.error(f"{members_path}[{i}]", f"expected a target name, got {kind_of(member)}")
            if member not in targets:
                raise self.error(f"{members_path}[{i}]", f"unknown target {member!r}; "
                                                         f"defined targets: {', '.join(targets)}")
            if members.index(member) != i:
                raise self.error(f"{members_path}[{i}]", f"target {member!r} is listed twice")
        static = data.get("static_reply")
        if static is not None:
            static = self.value(static, f"{path}.static_reply", str)
        policy = self.choice(data.get("on_content_policy", "propagate"), f"{path}.on_content_policy",
                             ("propagate", "fail_over"))
        mid_stream = self.choice(data.get("mid_stream", "continue"), f"{path}.mid_stream", MID_STREAM_CHOICES)
        recoveries = self.number(data.get("max_recoveries", 3), f"{path}.max_recoveries", integer=True)
        return ChainConfig(name=name, targets=tuple(members), static_reply=static, on_content_policy=policy,
                           mid_stream=mid_stream, max_recoveries=recoveries)

    def limits(self, data: Mapping[str, Any], path: str) -> dict[str, Any]:
        """The `_LIMITS` keys present in `data`, validated."""
        return {key: self.number(data[key], f"{path}.{key}", integer=kind is int, minimum=minimum, positive=positive,
                                 maximum=maximum)
                for key, (kind, minimum, positive, maximum) in _LIMITS.items() if key in data}

    def params(self, raw: Any, path: str) -> dict[str, Any]:
        """Parameters passed to every call of a target: never the keys the router owns
        (`timeout: 8` would outlive a 2 s deadline, `num_retries: 3` multiply attempts,
        `stream: true` turn every plain call into an empty stream)."""
        data = self.mapping(raw, path)
        owned = sorted(ROUTER_OWNED_PARAMS & data.keys())
        if owned:
            raise self.error(f"{path}.{owned[0]}", f"set by the router, not a parameter: use the target's own "
                                                   f"keys (timeout, retry.attempts, model, api_key, api_base) or "
                                                   f"per-call arguments (stream=True); router-owned: "
                                                   f"{', '.join(sorted(ROUTER_OWNED_PARAMS))}")
        for key, value in data.items():  # as a call's own arguments are checked
            try:
                check_params({key: value})
            except InvalidRequest as exc:
                raise self.error(f"{path}.{key}", str(exc)) from None
        return data

    def transport(self, data: Mapping[str, Any], model: str | None, provider: str, path: str) -> str | None:
        """`openai` by default for an `openai/...` model, else `litellm`; never `openai` for
        a model that needs litellm's translation."""
        if provider != "litellm":
            if "transport" in data:
                raise self.error(path, f"only remote targets have a transport; a {provider} target has none")
            return None
        if "transport" not in data:
            return OPENAI if speaks_openai(model) else LITELLM
        transport = self.choice(data["transport"], path, TRANSPORTS)
        if transport == OPENAI and not speaks_openai(model):
            raise self.error(path, f"transport openai needs an OpenAI-compatible model string (openai/<model>, "
                                   f"with or without api_base), got {model!r}: its provider needs litellm's "
                                   f"translation (transport: litellm)")
        return transport

    def check_state(self, state: StateConfig) -> None:
        if state.backend == "redis":
            if not state.url:
                raise self.error("state.url", "missing; the redis backend needs url: redis://host:port/db")
            if not re.match(r"(rediss?|unix)://", state.url):
                raise self.error("state.url", "expected a redis://, rediss:// or unix:// URL")
        elif state.url:
            raise self.error("state.url", "only the redis backend takes a url")
        elif state.required:
            raise self.error("state.required", "only the redis backend can be required")
