"""The `server:` section (what `router serve` reads): client keys and the body limit.

    server:
      keys:
        - name: team-a
          key: ${ROUTER_TEAM_A_KEY}     # or key_sha256: <64 hex digits>: the config holds no secret
          chains: [default]            # optional allow-list
          rate_limit: {rpm: 600}       # optional: the targets' limiter, fleet-wide with Redis state
      max_body_bytes: 10485760
      otel: true                       # optional: OpenTelemetry spans and metrics (router.otel)

A `key:` is hashed (sha256) as it is read and never kept: the gateway compares digests
(serve/auth.py). An unset `${VAR}` in a key is an error, not a key silently dropped. Every
mistake is a `ConfigError` naming the file and the key path, as for every other section;
the loader passes itself in (`loader.mapping`, `loader.number`, ... are its checks).
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping
from typing import Any

from .schema import DEFAULT_MAX_BODY_BYTES, RateLimitPolicy, ServerConfig, ServerKey

_SERVER_KEYS = ("keys", "max_body_bytes", "otel")
_KEY_KEYS = ("name", "key", "key_sha256", "chains", "rate_limit")
_SHA256_HEX = re.compile(r"[0-9a-fA-F]{64}$")
MIN_KEY_CHARS = 16  # a shorter bearer key is guessable; `openssl rand -hex 32` gives 64


def server_section(loader: Any, raw: Any, chains: Mapping[str, Any]) -> ServerConfig:
    """Validate `server:` against the configured `chains`; `loader` is config/loader.py's."""
    if raw is None:
        return ServerConfig()
    data = loader.mapping(raw, "server", _SERVER_KEYS)
    max_body = loader.number(data.get("max_body_bytes", DEFAULT_MAX_BODY_BYTES), "server.max_body_bytes",
                             integer=True, minimum=1)
    keys_raw = data.get("keys", [])
    if keys_raw is None:
        keys_raw = []
    if not isinstance(keys_raw, list):
        raise loader.error("server.keys", "expected a list of keys (each: name, key or key_sha256)")
    keys = tuple(_key(loader, item, f"server.keys[{i}]", chains) for i, item in enumerate(keys_raw))
    seen_names: dict[str, int] = {}
    seen_digests: dict[str, int] = {}
    for i, key in enumerate(keys):
        if key.name in seen_names:
            raise loader.error(f"server.keys[{i}].name", f"{key.name!r} is already the name of "
                                                         f"server.keys[{seen_names[key.name]}]")
        if key.key_sha256 in seen_digests:
            raise loader.error(f"server.keys[{i}]", f"the same key as server.keys[{seen_digests[key.key_sha256]}] "
                                                    f"({keys[seen_digests[key.key_sha256]].name!r})")
        seen_names[key.name] = i
        seen_digests[key.key_sha256] = i
    otel = loader.value(data.get("otel", False), "server.otel", bool)
    return ServerConfig(keys=keys, max_body_bytes=max_body, otel=otel)


def _key(loader: Any, raw: Any, path: str, chains: Mapping[str, Any]) -> ServerKey:
    data = loader.mapping(raw, path, _KEY_KEYS)
    if "name" not in data:
        raise loader.error(f"{path}.name", "missing; each key has a name (it is shown in logs, never the key)")
    name = loader.value(data["name"], f"{path}.name", str)
    if ("key" in data) == ("key_sha256" in data):
        raise loader.error(path, "give exactly one of key (the key itself, e.g. ${ENV_VAR}) or key_sha256 "
                                 "(its sha256 in hex)")
    if "key" in data:
        secret = loader.resolved(data["key"], f"{path}.key")
        if not isinstance(secret, str):
            raise loader.error(f"{path}.key", f"expected a string, got a {type(secret).__name__}")
        if len(secret) < MIN_KEY_CHARS:
            raise loader.error(f"{path}.key", f"too short ({len(secret)} characters); use at least "
                                              f"{MIN_KEY_CHARS} random characters (openssl rand -hex 32)")
        digest = hashlib.sha256(secret.encode("utf-8")).hexdigest()
    else:
        digest = loader.resolved(data["key_sha256"], f"{path}.key_sha256")
        if not isinstance(digest, str) or not _SHA256_HEX.match(digest):
            raise loader.error(f"{path}.key_sha256", "expected 64 hex digits (sha256 of the key: "
                                                     "printf %s KEY | sha256sum)")
        digest = digest.lower()
    allowed = None
    if "chains" in data:
        listed = data["chains"]
        if not isinstance(listed, list) or not listed:
            raise loader.error(f"{path}.chains", "expected a non-empty list of chain names")
        for j, chain in enumerate(listed):
            if chain not in chains:
                raise loader.error(f"{path}.chains[{j}]", f"unknown chain {chain!r}; configured chains: "
                                                          f"{', '.join(chains)}")
        allowed = tuple(listed)
    rate_limit = loader.build(RateLimitPolicy, data.get("rate_limit", {}), f"{path}.rate_limit", RateLimitPolicy())
    return ServerKey(name=name, key_sha256=digest, chains=allowed, rate_limit=rate_limit)
