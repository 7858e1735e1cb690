"""Shared fixtures: one fault server per test module, routers pointed at it."""

from __future__ import annotations

import os
import socket
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from router import Router
from router.testing import FaultServer

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

TEST_KEY = "sk-test-0123456789abcdef"
FAST_RETRY = {"attempts": 3, "min_wait": 0.01, "max_wait": 0.05, "max_retry_after": 2}


@pytest.fixture(scope="session", autouse=True)
def _warm_litellm() -> None:
    """Import and warm litellm once up front so its seconds-long imports are not charged to
    a timed test (a Router would otherwise wait for them before its first attempt)."""
    from router.targets.remote import warm_litellm

    warm_litellm()


@pytest.fixture(scope="module")
def _module_server() -> Iterator[FaultServer]:
    with FaultServer() as server:
        yield server


@pytest.fixture
def server(_module_server: FaultServer) -> FaultServer:
    _module_server.reset()
    return _module_server


def closed_port() -> int:
    """A loopback port with nothing listening (connection refused)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def remote(server: FaultServer, model: str, **overrides: Any) -> dict[str, Any]:
    return {"model": f"openai/{model}", "api_base": server.url, "api_key": TEST_KEY, **overrides}


@pytest.fixture
def make_router(server: FaultServer, request: pytest.FixtureRequest) -> Callable[..., Router]:
    """make_router({"primary": "m1", "secondary": "m2"}, chain=[...], defaults=..., **Router kwargs).
    In a test that uses the `transport` fixture, every openai/... target naming no transport gets it."""
    transport = request.getfixturevalue("transport") if "transport" in request.fixturenames else None

    def make(targets: dict[str, Any], *, chain: list[str] | None = None, defaults: dict[str, Any] | None = None,
             chains: dict[str, Any] | None = None, **kwargs: Any) -> Router:
        resolved = {name: remote(server, spec) if isinstance(spec, str) else spec for name, spec in targets.items()}
        if transport is not None:
            resolved = {name: {"transport": transport, **spec} if str(spec.get("model", "")).startswith("openai/")
                        else spec for name, spec in resolved.items()}
        config = {
            "defaults": {"timeout": 5, "deadline": 30, "retry": FAST_RETRY,
                         "breaker": {"fail_max": 5, "reset_timeout": 60}, **(defaults or {})},
            "targets": resolved,
            "chains": chains or {"default": chain or list(resolved)},
        }
        return Router.from_dict(config, **kwargs)

    return make


# -- transports (issue 19) ---------------------------------------------------------------

TRANSPORTS = ("openai", "litellm")


@pytest.fixture(params=TRANSPORTS)
def transport(request: pytest.FixtureRequest) -> str:
    """Runs a test once per transport of remote targets: a module opts in with
    `pytestmark = pytest.mark.usefixtures("transport")`, a test with the same mark;
    `make_router` then sets it on each openai/... target that names none."""
    return request.param
