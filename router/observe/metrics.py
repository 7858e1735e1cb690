"""Prometheus metrics as an event listener (the optional `metrics` extra: prometheus-client).

    from router.metrics import PrometheusListener
    router = Router.from_yaml("config.yaml", listeners=[PrometheusListener()])

Metric names follow Prometheus conventions:
  router_requests_total{target,outcome}        counter: every attempt and skip, by outcome
  router_retries_total{target}                 counter: backoff waits before a retry
  router_failovers_total{target,outcome}       counter: a target left behind, and why
  router_degraded_answers_total{target}        counter: answers from a degraded target
  router_budget_exhausted_total{target}        counter: retries refused by the retry budget
  router_throttled_total{target}               counter: targets skipped: no rate-limit room within max_wait
  router_rate_limit_wait_seconds{target}       histogram: time queued for rate-limit room before an attempt
  router_calls_total{chain,outcome}            counter: whole calls: ok, static, failed, cancelled
  router_circuit_state{target}                 gauge: 0 closed, 1 half-open, 2 open
  router_attempt_duration_seconds{target}      histogram: one attempt
  router_call_duration_seconds{chain}          histogram: the whole call
Gauges read from `Router.status()` at each scrape (`watch(router.status)`; a Router does it
for the listeners it is given), so they say why a target is held back right now:
  router_in_flight{target}                     calls to the target now (this process)
  router_queued{target}                        calls waiting for a bulkhead slot (or a local model)
  router_pool_size{target}                     models in a local tier's pool
  router_rate_limit_waiters{target}            calls queued for rate-limit room
  router_rate_limit_room{target,limit}         requests / tokens that fit now (configured buckets)
  router_rate_limit_next_room_seconds{target}  until one more request fits
  router_learned_remaining{target,limit}       what the provider last said remains
  router_learned_reset_seconds{target,limit}   until that limit resets, as it said
  router_paused_seconds{target}                left of a pause after a 429
  router_misconfigured{target}                 1 while flagged (401/403/404, quota or billing)
Without prometheus-client installed, only constructing this listener fails (with an
ImportError saying what to install); nothing else imports it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

from .events import Event

Status = Callable[[], "dict[str, dict[str, Any]]"]

CIRCUIT_STATE_VALUES = {"closed": 0, "half_open": 1, "open": 2}
_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)


class PrometheusListener:
    """Turns router events into Prometheus metrics on `registry` (default: the global one)."""

    def __init__(self, registry: Any = None, *, prefix: str = "router") -> None:
        try:
            import prometheus_client as prom
        except ImportError as exc:
            raise ImportError("PrometheusListener needs prometheus-client: pip install 'failover-router[metrics]'"
                              ) from exc
        kw: dict[str, Any] = {"registry": registry} if registry is not None else {}
        self.requests = prom.Counter(f"{prefix}_requests_total", "Attempts and skips, by target and outcome",
                                     ["target", "outcome"], **kw)
        self.retries = prom.Counter(f"{prefix}_retries_total", "Retries after a backoff wait", ["target"], **kw)
        self.failovers = prom.Counter(f"{prefix}_failovers_total", "Targets left behind, and why",
                                      ["target", "outcome"], **kw)
        self.degraded = prom.Counter(f"{prefix}_degraded_answers_total", "Answers from a degraded target",
                                     ["target"], **kw)
        self.budget = prom.Counter(f"{prefix}_budget_exhausted_total", "Retries refused by the retry budget",
                                   ["target"], **kw)
        self.throttled = prom.Counter(f"{prefix}_throttled_total", "Targets skipped: no rate-limit room in time",
                                      ["target"], **kw)
        self.rate_wait = prom.Histogram(f"{prefix}_rate_limit_wait_seconds", "Time queued for rate-limit room",
                                        ["target"], buckets=_LATENCY_BUCKETS, **kw)
        self.calls = prom.Counter(f"{prefix}_calls_total", "Whole calls, by chain and outcome",
                                  ["chain", "outcome"], **kw)
        self.circuit = prom.Gauge(f"{prefix}_circuit_state", "Circuit state: 0 closed, 1 half-open, 2 open",
                                  ["target"], **kw)
        self.attempt_seconds = prom.Histogram(f"{prefix}_attempt_duration_seconds", "Duration of one attempt",
                                              ["target"], buckets=_LATENCY_BUCKETS, **kw)
        self.call_seconds = prom.Histogram(f"{prefix}_call_duration_seconds", "Duration of a whole call",
                                           ["chain"], buckets=_LATENCY_BUCKETS, **kw)
        self.held_back = StatusGauges(prefix)
        (registry if registry is not None else prom.REGISTRY).register(self.held_back)

    def watch(self, status: Status) -> None:
        """Also export, at each scrape, the gauges of `status()` (a Router's `status`)."""
        self.held_back.sources.append(status)

    def __call__(self, event: Event) -> None:
        name, target = event.name, event.target or ""
        if name == "attempt":
            self.requests.labels(target, event.outcome).inc()
            if event.latency_s:  # skips take no time and are not attempts
                self.attempt_seconds.labels(target).observe(event.latency_s)
        elif name == "retry":
            self.retries.labels(target).inc()
        elif name == "failover":
            self.failovers.labels(target, event.outcome).inc()
        elif name == "degraded":
            self.degraded.labels(target).inc()
        elif name == "budget_exhausted":
            self.budget.labels(target).inc()
        elif name == "throttled":
            self.throttled.labels(target).inc()
        elif name == "rate_wait":
            self.rate_wait.labels(target).observe(event.wait_s or 0.0)
        elif name == "circuit":
            self.circuit.labels(target).set(CIRCUIT_STATE_VALUES.get(event.new_state or "", 0))
        elif name == "call":
            self.calls.labels(event.chain, event.outcome).inc()
            self.call_seconds.labels(event.chain).observe(event.latency_s or 0.0)


# name, help, labels (besides target), and how to read its samples from one target's status
_GAUGES: tuple[tuple[str, str, tuple[str, ...]], ...] = (
    ("in_flight", "Calls to the target now, in this process", ()),
    ("queued", "Calls waiting for a bulkhead slot or, in the local tier, for a model", ()),
    ("pool_size", "Models in the local tier's pool", ()),
    ("rate_limit_waiters", "Calls queued for rate-limit room", ()),
    ("rate_limit_room", "Requests or tokens that fit the configured rate limit now", ("limit",)),
    ("rate_limit_next_room_seconds", "Seconds until one more request fits", ()),
    ("learned_remaining", "What the provider last said remains of its limit", ("limit",)),
    ("learned_reset_seconds", "Seconds until the provider's limit resets, as it said", ("limit",)),
    ("paused_seconds", "Seconds left of a pause after a 429", ()),
    ("misconfigured", "1 while the target is flagged misconfigured (401/403/404, quota or billing)", ()),
)


def _samples(info: dict[str, Any]) -> Iterator[tuple[str, tuple[str, ...], float]]:
    """(gauge, extra label values, value) for one target's `status()` entry."""
    yield "in_flight", (), info.get("in_flight", 0)
    yield "queued", (), info.get("queued", 0)
    if "pool_size" in info:
        yield "pool_size", (), info["pool_size"]
    limiter = info.get("rate_limit") or {}
    yield "rate_limit_waiters", (), limiter.get("waiters", 0)
    yield "rate_limit_next_room_seconds", (), limiter.get("wait_s", 0.0)
    yield "paused_seconds", (), limiter.get("paused_s", 0.0)
    for limit, room in (limiter.get("room") or {}).items():
        yield "rate_limit_room", (limit,), room
    for limit, learned in (limiter.get("learned") or {}).items():
        yield "learned_remaining", (limit,), learned["remaining"]
        yield "learned_reset_seconds", (limit,), learned["reset_in_s"]
    yield "misconfigured", (), 1.0 if info.get("misconfigured") else 0.0


class StatusGauges:
    """A Prometheus collector: the gauges of the watched `status()` functions, read at scrape."""

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix
        self.sources: list[Status] = []

    def describe(self) -> list[Any]:
        return list(self._families().values())

    def collect(self) -> Iterator[Any]:
        families = self._families()
        for source in list(self.sources):
            for target, info in source().items():
                for name, labels, value in _samples(info):
                    families[name].add_metric([target, *labels], float(value))
        yield from families.values()

    def _families(self) -> dict[str, Any]:
        from prometheus_client.core import GaugeMetricFamily

        return {name: GaugeMetricFamily(f"{self.prefix}_{name}", text, labels=["target", *labels])
                for name, text, labels in _GAUGES}
