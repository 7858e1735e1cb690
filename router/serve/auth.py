"""Who may call: bearer keys, chain allow-lists and per-key rate limits.

The presented key is hashed (sha256) and its digest compared with every configured
digest by `hmac.compare_digest`, all of them every time: how long a check takes tells
nothing about how much of a key matched, nor which key. The config holds digests only
(config/server_section.py), so no key is ever in memory except the one presented.

A key's `rate_limit` is the targets' own limiter (limits/limiter.py) on buckets from the
configured state (state/backends.py): per process with `state.backend: memory`, fleet-wide
(every worker, every host) with Redis.
"""

from __future__ import annotations

import hashlib
import hmac
from typing import Any

from ..config.schema import ServerKey, StateConfig
from ..limits.buckets import Cost
from ..limits.limiter import Permit, RateLimiter
from ..state import build_state
from .errors import forbidden, rate_limited, unauthorized

_BEARER = "bearer "
_NO_KEY = ServerKey(name="(no keys configured)", key_sha256="")


class KeyRing:
    """The configured keys; with none, every caller is let in (the server is loopback-only)."""

    def __init__(self, keys: tuple[ServerKey, ...], state: StateConfig, *, source: str = "<dict>") -> None:
        self.keys = keys
        self._digests = [bytes.fromhex(k.key_sha256) for k in keys]
        limited = [k for k in keys if k.rate_limit.configured]
        self._state = build_state(state, source=source) if limited else None
        self._limiters = {k.name: RateLimiter(f"server-key:{k.name}", k.rate_limit,
                                              self._state.buckets(f"server-key:{k.name}", k.rate_limit))
                          for k in limited} if self._state is not None else {}

    @property
    def required(self) -> bool:
        return bool(self.keys)

    def authenticate(self, authorization: str | None) -> ServerKey:
        """The key an `Authorization` header carries; `GatewayError` 401 if none matches."""
        if not self.keys:
            return _NO_KEY
        presented = b""
        if authorization and authorization[:len(_BEARER)].lower() == _BEARER:
            presented = authorization[len(_BEARER):].strip().encode("utf-8", "replace")
        digest = hashlib.sha256(presented).digest()
        found = -1
        for i, expected in enumerate(self._digests):  # every one, no early exit
            if hmac.compare_digest(digest, expected) and presented:
                found = i
        if found < 0:
            raise unauthorized()
        return self.keys[found]

    def check_chain(self, key: ServerKey, chain: str) -> None:
        if key.chains is not None and chain not in key.chains:
            raise forbidden(key.name, chain)

    async def admit(self, key: ServerKey, tokens: float) -> Permit | None:
        """Room under the key's rate limit (waiting up to its `max_wait`), or 429."""
        limiter = self._limiters.get(key.name)
        if limiter is None:
            return None
        cost = Cost(1.0, tokens if key.rate_limit.tpm is not None else 0.0)
        granted = await limiter.acquire_async(cost, key.rate_limit.max_wait)
        if not isinstance(granted, Permit):
            raise rate_limited(key.name, granted.wait_s)
        return granted

    def settle(self, key: ServerKey, permit: Permit | None, tokens_used: int | None) -> None:
        """The call ended: correct the token estimate from its usage."""
        if permit is not None:
            self._limiters[key.name].answered(permit, tokens_used, None)

    def status(self) -> dict[str, Any]:
        return {name: limiter.status() for name, limiter in self._limiters.items()}

    def close(self) -> None:
        if self._state is not None:
            self._state.close()
