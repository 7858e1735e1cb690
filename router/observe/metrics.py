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
Without prometheus-client installed, only constructing this listener fails (with an
ImportError saying what to install); nothing else imports it.
"""

from __future__ import annotations

from typing import Any

from .events import Event

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
