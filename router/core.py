"""The chain walk: skip, attempt, retry, fail over, and record the route.

For each target of the chain, in order: pass it over when it is disabled, offline,
known too small, out of time or its circuit is open; otherwise attempt it under its
retry policy (retry.py), each attempt admitted by its circuit (breaker.py) and
classified (outcomes.py). The first answer wins; when none comes, the chain's static
reply or `AllTargetsFailed`.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

from .breaker import Circuit, CircuitOpen
from .config import ChainConfig, RouterConfig, TargetConfig, config_from_dict, load_config
from .errors import AllTargetsFailed, ContentRejected, InvalidRequest
from .outcomes import Failure, Outcome, classify
from .redact import Redactor
from .request import Request, build_request
from .response import Attempt, Choice, Message, Response, Route, Usage
from .retry import AttemptFailed, Deadline, retrying
from .targets import Target, build_target

log = logging.getLogger("router")

_DETAIL_LIMIT = 500


class Router:
    """Routes chat completions down configured chains of targets."""

    def __init__(self, config: RouterConfig, *, sleep: Callable[[float], Any] = time.sleep) -> None:
        self.config = config
        self._sleep = sleep
        self._targets: dict[str, Target] = {}
        self._circuits: dict[str, Circuit] = {}
        for name, target in config.targets.items():
            self._circuits[name] = Circuit(name, target.breaker)
            if not target.disabled:
                self._targets[name] = build_target(target)
        self._redact = Redactor(t.api_key.reveal() for t in config.targets.values() if t.api_key)
        self._misconfigured: dict[str, str] = {}
        for name, target in config.targets.items():
            if target.local is not None and target.local.preload and name in self._targets:
                self._targets[name].preload()  # type: ignore[attr-defined]

    @classmethod
    def from_yaml(cls, path: str | os.PathLike[str], **kwargs: Any) -> Router:
        return cls(load_config(path), **kwargs)

    @classmethod
    def from_dict(cls, data: dict[str, Any], **kwargs: Any) -> Router:
        return cls(config_from_dict(data), **kwargs)

    # -- calls ---------------------------------------------------------------------------

    def complete(self, messages: list[dict[str, Any]], *, chain: str = "default",
                 deadline: float | None = None, **params: Any) -> Response:
        """Answer a chat request from the first target of `chain` that can.

        `deadline` (seconds) bounds the whole call, retries and failover included; extra
        keyword arguments (max_tokens, temperature, ...) pass through to the target.
        """
        request = build_request(messages, params)
        if request.stream:
            raise InvalidRequest("stream=True is not supported yet")
        return self._walk(self._chain(chain), request, self._deadline(deadline))

    def status(self) -> dict[str, dict[str, Any]]:
        """Circuit state of every target, and why a target is out of rotation."""
        report = {}
        for name, target in self.config.targets.items():
            info = self._circuits[name].status()
            if target.disabled:
                info["disabled"] = target.disabled
            elif self.config.offline and target.is_remote:
                info["disabled"] = "offline mode"
            if name in self._misconfigured:
                info["misconfigured"] = self._misconfigured[name]
            report[name] = info
        return report

    def force_open(self, target: str) -> None:
        """Take a target out of rotation until its reset timeout passes (or force_close)."""
        self._circuit(target).force_open()

    def force_close(self, target: str) -> None:
        """Put a target back into rotation now."""
        self._circuit(target).force_close()
        self._misconfigured.pop(target, None)

    reset = force_close

    # -- the walk ------------------------------------------------------------------------

    def _walk(self, chain: ChainConfig, request: Request, deadline: Deadline) -> Response:
        started = time.perf_counter()
        route = Route(chain=chain.name)
        errors: dict[str, BaseException] = {}
        overflowed: int | None = None  # smallest context window that was too small
        for name in chain.targets:
            target = self.config.targets[name]
            skip = self._skip(target, deadline, overflowed)
            if skip is not None:
                route.attempts.append(Attempt(name, skip[0].value, detail=skip[1]))
                continue
            try:
                response = self._attempt_target(target, request, deadline, route)
            except CircuitOpen as exc:
                route.attempts.append(Attempt(name, Outcome.CIRCUIT_OPEN.value, detail=str(exc)))
                continue
            except AttemptFailed as exc:
                failure = exc.failure
                errors[name] = failure.error
                if failure.outcome is Outcome.CONTEXT_TOO_LONG and target.context_window:
                    overflowed = min(overflowed or target.context_window, target.context_window)
                if failure.outcome is Outcome.MISCONFIGURED:
                    self._flag_misconfigured(target, failure)
                if failure.outcome is Outcome.CONTENT_POLICY and chain.on_content_policy == "propagate":
                    route.latency_s = time.perf_counter() - started
                    raise ContentRejected(name, self._detail(failure.message), route) from failure.error
                continue
            route.served_by = name
            route.degraded = target.degraded
            route.latency_s = time.perf_counter() - started
            response.route = route
            return response
        route.latency_s = time.perf_counter() - started
        if chain.static_reply is not None:
            return _static_response(chain.static_reply, route)
        last = next(reversed(errors.values()), None)
        raise AllTargetsFailed(chain.name, route, errors) from last

    def _skip(self, target: TargetConfig, deadline: Deadline,
              overflowed: int | None) -> tuple[Outcome, str] | None:
        if target.disabled:
            return Outcome.DISABLED, target.disabled
        if self.config.offline and target.is_remote:
            return Outcome.OFFLINE, "offline mode: remote targets are skipped"
        if overflowed is not None and target.context_window and target.context_window <= overflowed:
            return Outcome.TOO_SMALL, (f"context window {target.context_window} is not larger than "
                                       f"{overflowed}, which was already too small")
        if deadline.remaining() <= 0:
            return Outcome.DEADLINE, "the call's deadline had passed"
        return None

    def _attempt_target(self, config: TargetConfig, request: Request, deadline: Deadline,
                        route: Route) -> Response:
        name = config.name
        target = self._targets[name]
        circuit = self._circuits[name]
        waited = 0.0

        def note(text: str) -> None:
            route.notes.append(f"{name}: {text}")

        def attempt() -> Response:
            nonlocal waited
            ticket = circuit.admit()
            timeout = min(config.timeout, deadline.remaining())
            started = time.perf_counter()
            try:
                response = target.complete(request, timeout=timeout, note=note)
            except BaseException as exc:
                latency = time.perf_counter() - started
                failure = classify(exc)
                if failure.outcome is Outcome.SILENT and timeout < config.timeout:
                    failure = replace(failure, outcome=Outcome.DEADLINE)
                if failure.handling.counts:
                    circuit.failed(ticket)
                else:
                    circuit.released(ticket)
                route.attempts.append(Attempt(name, failure.outcome.value, type(exc).__name__,
                                              failure.status, latency, waited, self._detail(failure.message)))
                waited = 0.0
                if failure.outcome is Outcome.CANCELLED:
                    raise
                raise AttemptFailed(failure) from exc
            circuit.succeeded(ticket)
            route.attempts.append(Attempt(name, Outcome.OK.value, latency_s=time.perf_counter() - started,
                                          waited_s=waited))
            return response

        def before_sleep(retry_state: Any) -> None:
            nonlocal waited
            waited = retry_state.upcoming_sleep

        loop = retrying(config.retry, deadline, refused=circuit.is_open, sleep=self._sleep,
                        before_sleep=before_sleep)
        return loop(attempt)

    # -- helpers -------------------------------------------------------------------------

    def _chain(self, name: str) -> ChainConfig:
        try:
            return self.config.chains[name]
        except KeyError:
            raise InvalidRequest(f"unknown chain {name!r}; configured chains: "
                                 f"{', '.join(self.config.chains)}") from None

    def _circuit(self, target: str) -> Circuit:
        try:
            return self._circuits[target]
        except KeyError:
            raise KeyError(f"unknown target {target!r}; configured targets: "
                           f"{', '.join(self._circuits)}") from None

    def _deadline(self, seconds: float | None) -> Deadline:
        if seconds is None:
            return Deadline(self.config.deadline)
        if isinstance(seconds, bool) or not isinstance(seconds, (int, float)) or not seconds > 0:
            raise InvalidRequest(f"deadline must be a number of seconds > 0, got {seconds!r}")
        return Deadline(seconds)

    def _detail(self, message: str) -> str:
        text = self._redact(message)
        return text if len(text) <= _DETAIL_LIMIT else text[: _DETAIL_LIMIT - 1] + "…"

    def _flag_misconfigured(self, target: TargetConfig, failure: Failure) -> None:
        detail = self._detail(failure.message)
        if self._misconfigured.get(target.name) != detail:
            log.error("router: target %r looks misconfigured (%s%s): %s; check its api_key, model "
                      "and api_base", target.name, type(failure.error).__name__,
                      f" {failure.status}" if failure.status else "", detail)
        self._misconfigured[target.name] = detail

    def __repr__(self) -> str:
        return f"Router(source={self.config.source!r}, chains={list(self.config.chains)})"


def _static_response(text: str, route: Route) -> Response:
    route.served_by = "static"
    route.degraded = True
    return Response(id="static", model="static",
                    choices=[Choice(0, Message("assistant", text), "stop")],
                    usage=Usage(), route=route)


# -- the module-level default router ---------------------------------------------------

_default: Router | None = None
_default_lock = threading.Lock()


def default_router() -> Router:
    """The Router built from $ROUTER_CONFIG or ./config.yaml on first use."""
    global _default
    with _default_lock:
        if _default is None:
            _default = Router.from_yaml(Path(os.environ.get("ROUTER_CONFIG", "config.yaml")))
        return _default

