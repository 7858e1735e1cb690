"""pytest plugin: a real `redis-server` for the shared-state tests, never fakeredis.

`redis_url` (session): $ROUTER_TEST_REDIS_URL when set, else a redis-server this plugin
starts on a free loopback port (no persistence) and stops after the session. Nothing
relies on a Redis already running on the machine. Tests that kill or pause Redis start
their own with `start_redis()` so the session's server stays up.

Use it with `pytest_plugins = ["tests.redis_server"]` at the top of a test module.
A machine without redis-server fails these tests, loudly: `.ci/run` installs it.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterator

import pytest

from router.testing.redis_server import RedisServer


@pytest.fixture(scope="session")
def redis_url() -> Iterator[str]:
    """A Redis for the whole session (tests keep apart by namespace)."""
    url = os.environ.get("ROUTER_TEST_REDIS_URL")
    if url:
        yield url
        return
    server = RedisServer().start()
    try:
        yield server.url
    finally:
        server.stop()


@pytest.fixture
def start_redis() -> Iterator[Callable[..., RedisServer]]:
    """`start_redis(port=None)`: a dedicated redis-server for this test (to kill, pause or
    restart on the same port); every one is stopped after the test."""
    servers: list[RedisServer] = []

    def start(port: int | None = None) -> RedisServer:
        servers.append(RedisServer(port).start())
        return servers[-1]

    try:
        yield start
    finally:
        for server in servers:
            server.stop()


@pytest.fixture
def namespace() -> str:
    """A namespace of its own for each test, so tests sharing one Redis never meet."""
    return f"test-{uuid.uuid4().hex[:12]}"
