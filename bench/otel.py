"""What tracing costs a call: `router.otel.OpenTelemetryListener` on the happy path.

One healthy model on the fault server (a separate process), the same sequential call
(messages=[{"role": "user", "content": "hi"}], max_tokens=16) through four Routers:

- ``plain``: no listener;
- ``otel_api``: an `OpenTelemetryListener()` with no SDK configured: the API's global
  providers, no-ops (what a library user gets who installed the `otel` extra and set up
  nothing);
- ``otel_sdk``: an `OpenTelemetryListener` on an SDK TracerProvider (BatchSpanProcessor into
  an exporter that drops everything) and an SDK MeterProvider (an in-memory reader): every
  span, event and histogram point is built, nothing leaves the process;
- ``plain_aa``: ``plain`` again, the A/A control: how far two identical contenders stray.

Method as in overhead.py: warm-up, gc.freeze, R rounds of one block of calls per
contender in rotated order, the median over rounds of per-round block-time ratios, and the
extra time per call (median of block differences / calls per block). A real call is ~5 ms
here, so a few microseconds are below what blocks can resolve: the router's own code is
also timed alone (litellm.completion answering a recorded response at once), in interleaved
batches, as microseconds per call and as the median of paired ratios to ``plain``.
"""

from __future__ import annotations

import gc
from collections.abc import Callable
from typing import Any

from .common import API_KEY, HI, CliServer, Report, litellm, median, paired_ratio, rotations, timed_block


def routers(url: str) -> dict[str, Callable[[], Any]]:
    """name -> one call."""
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import InMemoryMetricReader
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult

    from router import Router
    from router.otel import OpenTelemetryListener

    class Dropped(SpanExporter):
        def export(self, spans: Any) -> SpanExportResult:
            return SpanExportResult.SUCCESS

    tracer_provider = TracerProvider()
    tracer_provider.add_span_processor(BatchSpanProcessor(Dropped()))
    meter_provider = MeterProvider(metric_readers=[InMemoryMetricReader()])
    config = {"defaults": {"timeout": 30},
              "targets": {"primary": {"model": "openai/m", "api_base": url, "api_key": API_KEY}},
              "chains": {"default": ["primary"]}}
    listeners: dict[str, list[Any]] = {
        "plain": [], "otel_api": [OpenTelemetryListener()],
        "otel_sdk": [OpenTelemetryListener(tracer_provider=tracer_provider, meter_provider=meter_provider)],
        "plain_aa": []}

    def caller(router: Any) -> Callable[[], Any]:
        def call() -> Any:
            resp = router.complete(HI, max_tokens=16)
            if resp.route.served_by != "primary":
                raise RuntimeError(f"unexpected route: {resp.route}")
            return resp
        return call

    return {name: caller(Router.from_dict(config, listeners=extra)) for name, extra in listeners.items()}


def isolated_us(calls: dict[str, Callable[[], Any]], url: str, rounds: int, per_batch: int) -> dict[str, list[float]]:
    """Microseconds per call of the router's own code, litellm.completion answering a
    recorded response at once: one batch per contender per round, interleaved."""
    lt = litellm()
    recorded = lt.completion(model="openai/m", api_base=url, api_key=API_KEY, messages=HI, max_tokens=16,
                             max_retries=0)
    real = lt.completion
    lt.completion = lambda **kwargs: recorded
    out: dict[str, list[float]] = {name: [] for name in calls}
    try:
        for order in rotations(list(calls), rounds):
            for name in order:
                block, _ = timed_block(calls[name], per_batch)
                out[name].append(block / per_batch * 1e6)
    finally:
        lt.completion = real
    return out


def run(report: Report, *, quick: bool = False) -> dict[str, Any]:
    n, rounds, warmup = (300, 15, 20) if quick else (1000, 50, 50)
    per_block = n // rounds
    with CliServer() as server:
        report.line(f"fault server: {server.how} at {server.url}")
        calls = routers(server.url)
        names = list(calls)
        for call in calls.values():
            for _ in range(warmup):
                call()
        gc.collect()
        gc.freeze()
        blocks: dict[str, list[float]] = {name: [] for name in names}
        for order in rotations(names, rounds):
            for name in order:
                blocks[name].append(timed_block(calls[name], per_block)[0])
        alone = isolated_us(calls, server.url, 30 if quick else 100, 100)
        gc.unfreeze()

    report.line(f"calls: {rounds} rounds x {per_block} calls per contender after {warmup} warm-up calls")
    report.line(f"{'contender':<12}{'median block':>14}{'own code alone':>17}")
    for name in names:
        report.line(f"{name:<12}{median(blocks[name]) * 1e3:>11.1f} ms{median(alone[name]):>12.1f} us")
    pairs = [(name, "plain") for name in names if name != "plain"]
    ratios = {f"{a}/plain": paired_ratio(blocks[a], blocks[b]) for a, b in pairs}
    alone_ratios = {f"{a}/plain": paired_ratio(alone[a], alone[b]) for a, b in pairs}
    extra = {a: median((x - y) / per_block * 1e6 for x, y in zip(blocks[a], blocks[b], strict=True))
             for a, b in pairs}
    extra_alone = {a: median(x - y for x, y in zip(alone[a], alone[b], strict=True)) for a, b in pairs}
    report.line()
    report.line("median over rounds of the per-round ratio (interquartile range); extra us per call:")
    report.line(f"  {'':<16}{'real calls':>24}{'extra':>10}{'own code alone':>26}{'extra':>10}")
    for a, _ in pairs:
        r, s = ratios[f"{a}/plain"], alone_ratios[f"{a}/plain"]
        report.line(f"  {a + '/plain':<16}{r['median']:>8.4f} ({r['q25']:.3f}..{r['q75']:.3f}){extra[a]:>+9.1f}"
                    f"{s['median']:>10.4f} ({s['q25']:.3f}..{s['q75']:.3f}){extra_alone[a]:>+9.1f}")
    report.data.update({"rounds": rounds, "calls_per_block": per_block, "block_s": blocks, "alone_us": alone,
                        "ratios": ratios, "alone_ratios": alone_ratios, "extra_us": extra,
                        "extra_alone_us": extra_alone})
    for a, _ in pairs:
        report.ratio(f"otel_{a}_over_plain", ratios[f"{a}/plain"]["median"], "none", None)
        report.ratio(f"otel_{a}_extra_us_alone", round(extra_alone[a], 1), "none", None)
    return report.finish()
