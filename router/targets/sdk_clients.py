"""One OpenAI SDK client per remote target, reused, with each attempt's timeout passed
per request.

litellm caches one OpenAI client, with its own connection pool, per distinct `timeout`
(the value is part of its cache key). With timeouts cut to what a deadline leaves, every
call made a new one: 300 calls with deadlines of 0.05-0.1 s left 200 cached clients and
398 open file descriptors (measured here), which is why timeouts used to be rounded
down, giving up early. The SDK takes a timeout per request and litellm passes it per
request, so one client per target (one per event loop for the async client, whose
connections belong to a loop) keeps the timeout exact and the count of clients fixed:
the same 300 calls end with the descriptors they started with.

Only targets that litellm sends through the OpenAI SDK (provider "openai", which
includes any OpenAI-compatible server reached with `openai/...` and `api_base`) get one;
litellm's HTTP clients for other providers are keyed by provider and SSL settings, not
by timeout. Without a resolvable API key litellm builds the client, and raises its own
authentication error.

The same clients serve both transports (targets/remote.py): through litellm they get
litellm's HTTP clients and its credential resolution; called directly (`transport:
openai`) they get the SDK's own HTTP clients and the same resolution done here, without
importing litellm (api_key, else $OPENAI_API_KEY; api_base, else $OPENAI_BASE_URL,
$OPENAI_API_BASE, then OpenAI's; $OPENAI_ORGANIZATION). Their HTTP clients are shared by
every such target, as litellm shares its own: one sync client per process, one async
client per event loop, with one TLS context, made once (building an SDK client with its
own HTTP client took 65-170 ms here, mostly loading CA certificates; with a shared one
under 1 ms), so no target's first call pays for it.
"""

from __future__ import annotations

import asyncio
import os
import threading
import weakref
from typing import Any

from ..config.schema import TargetConfig


class SharedHttp:
    """The openai SDK's default HTTP clients, shared by the targets called directly."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._tls: Any = None
        self._sync: Any = None
        self._by_loop: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, Any] = weakref.WeakKeyDictionary()

    def sync(self) -> Any:
        with self._lock:
            if self._sync is None:
                import openai

                self._sync = openai.DefaultHttpxClient(verify=self.tls_context())
            return self._sync

    def for_loop(self, loop: asyncio.AbstractEventLoop) -> Any:
        with self._lock:
            client = self._by_loop.get(loop)
            if client is None:
                import openai

                client = self._by_loop[loop] = openai.DefaultAsyncHttpxClient(verify=self.tls_context())
            return client

    def tls_context(self) -> Any:
        """The one TLS context (certifi's CAs) of every shared client: loading the CAs is
        most of the cost of a client (~20 ms)."""
        if self._tls is None:
            import httpx2

            self._tls = httpx2.create_ssl_context()
        return self._tls


SHARED_HTTP = SharedHttp()


class SdkClients:
    """The OpenAI SDK clients of one target, made on first use."""

    def __init__(self, config: TargetConfig, *, via_litellm: bool = True) -> None:
        self._config = config
        self._via_litellm = via_litellm
        self._lock = threading.Lock()
        self._resolved = False
        self._settings: dict[str, Any] | None = None
        self._sync: Any = None
        self._by_loop: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, Any] = weakref.WeakKeyDictionary()

    def sync(self) -> Any:
        """The target's `openai.OpenAI`, or None when litellm should build its own."""
        with self._lock:
            if self._sync is None and self._usable():
                import openai

                if self._via_litellm:
                    from litellm.llms.openai.common_utils import BaseOpenAILLM

                    http = BaseOpenAILLM.get_sync_http_client()
                else:
                    http = SHARED_HTTP.sync()
                self._sync = openai.OpenAI(http_client=http, **self._settings)
            return self._sync

    def for_running_loop(self) -> Any:
        """The target's `openai.AsyncOpenAI` for the running event loop, or None."""
        loop = asyncio.get_running_loop()
        with self._lock:
            client = self._by_loop.get(loop)
            if client is None and self._usable():
                import openai

                if self._via_litellm:
                    from litellm.llms.openai.common_utils import BaseOpenAILLM

                    http = BaseOpenAILLM.get_async_http_client()
                else:
                    http = SHARED_HTTP.for_loop(loop)
                client = openai.AsyncOpenAI(http_client=http, **self._settings)
                self._by_loop[loop] = client
            return client

    def _usable(self) -> bool:
        if not self._resolved:
            self._resolved = True
            self._settings = self._litellm_settings() if self._via_litellm else self._direct_settings()
        return self._settings is not None

    def _direct_settings(self) -> dict[str, Any] | None:
        """Resolved as litellm resolves an `openai/...` model's, without litellm's globals."""
        config = self._config
        key = (config.api_key.reveal() if config.api_key is not None else None) or os.getenv("OPENAI_API_KEY")
        if not key:
            return None
        base = (config.api_base or os.getenv("OPENAI_BASE_URL") or os.getenv("OPENAI_API_BASE")
                or "https://api.openai.com/v1")
        return {"api_key": key, "base_url": base, "organization": os.getenv("OPENAI_ORGANIZATION") or None,
                "max_retries": 0, "timeout": config.timeout}

    def _litellm_settings(self) -> dict[str, Any] | None:
        """The client's settings, resolved as litellm resolves them; None: not our client."""
        import litellm  # already imported (and set up offline) by the caller, remote.py
        from litellm.llms.openai.common_utils import get_openai_credentials

        config = self._config
        try:
            _, provider, _, _ = litellm.get_llm_provider(model=config.model, api_base=config.api_base)
        except Exception:  # an unknown provider: litellm's own call raises it, classified
            return None
        if provider != "openai":
            return None

        key = config.api_key.reveal() if config.api_key is not None else None
        credentials = get_openai_credentials(api_base=config.api_base, api_key=key)
        if not credentials.api_key:
            return None
        return {"api_key": credentials.api_key, "base_url": credentials.api_base,
                "organization": credentials.organization, "max_retries": 0, "timeout": config.timeout}
