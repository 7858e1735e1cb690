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
import shutil
import signal
import socket
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator

import pytest


class RedisServer:
    """One redis-server subprocess on 127.0.0.1; restartable on the same port."""

    def __init__(self, port: int | None = None) -> None:
        self.port = port or free_port()
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> RedisServer:
        binary = shutil.which("redis-server")
        if binary is None:
            pytest.fail("redis-server is not installed; the shared-state tests need a real one. "
                        "Install the Debian package (apt-get install -y redis-server), as .ci/run does, "
                        "or point ROUTER_TEST_REDIS_URL at a Redis to use.", pytrace=False)
        self.process = subprocess.Popen(
            [binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
             "--daemonize", "no", "--logfile", ""],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        while not self.answers():
            if self.process.poll() is not None:
                pytest.fail(f"redis-server exited with {self.process.returncode} on port {self.port}", pytrace=False)
            if time.monotonic() > deadline:
                self.stop()
                pytest.fail(f"redis-server did not answer on port {self.port} within 10 s", pytrace=False)
            time.sleep(0.02)
        return self

    def stop(self) -> None:
        """Kill it (SIGKILL: a crash, not a goodbye) and wait until it is gone."""
        process, self.process = self.process, None
        if process is not None and process.poll() is None:
            process.send_signal(signal.SIGCONT)  # in case a test paused it
            process.kill()
            process.wait(timeout=10)

    def pause(self) -> None:
        """SIGSTOP: connections stay open but nothing answers (a slow Redis)."""
        assert self.process is not None
        self.process.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGCONT)

    def answers(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as sock:
                sock.sendall(b"PING\r\n")
                return sock.recv(16).startswith(b"+PONG")
        except OSError:
            return False


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


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
