"""Stream recovery: a primary whose stream is cut at 2/3 of the answer, recovered by a
continuation on a prefill target versus a restart, against an uninterrupted stream.

The fault server (in this process) streams a 30-word answer, one word per SSE event,
`TOKEN_DELAY` apart. Three routers, each with its breaker out of the way (fail_max
1000: the circuit must not open and skip the primary half-way through the run):

- ``uninterrupted``: chain [secondary]: the whole answer from one stream;
- ``continuation``: chain [primary (prefill: false, one attempt), secondary (prefill:
  true)]: the primary is cut (TCP reset) after 20 of the 30 words; the secondary gets
  the original messages plus those 20 words as an assistant prefill and streams the
  last 10;
- ``restart``: the same chain with ``mid_stream: restart``: the secondary answers again
  from scratch after a restart marker.

Each round times one streamed call of each (order rotated every round) from the call to
its last chunk; the ratio to the same round's uninterrupted call is taken per round and
the median over rounds reported. Target: continuation / uninterrupted <= 1.5. Every
answer is checked: the text a caller shows (cleared on a restart marker) and
`stream.text` must both be exactly the answer; anything else is a garbled answer
(target: 0).
"""

from __future__ import annotations

import time
from typing import Any

from .common import API_KEY, HI, Report, ThreadServer, median, paired_ratio, quantile, rotations

TARGET_CONTINUATION = 1.5
WORDS = 30
CUT_AT = 20  # 2/3 of the answer
TOKEN_DELAY = 0.01
ANSWER = " ".join(f"word{i}" for i in range(1, WORDS + 1)) + "."


def _routers(url: str) -> dict[str, Any]:
    from router import Router

    def target(model: str, **extra: Any) -> dict[str, Any]:
        return {"model": f"openai/{model}", "api_base": url, "api_key": API_KEY, **extra}

    defaults = {"timeout": 10, "deadline": 30, "retry": {"attempts": 1}, "breaker": {"fail_max": 1000}}
    cut = target("cut", prefill=False)
    whole = target("whole", prefill=True)
    return {
        "uninterrupted": Router.from_dict({"defaults": defaults, "targets": {"secondary": whole},
                                           "chains": {"default": ["secondary"]}}),
        "continuation": Router.from_dict({"defaults": defaults, "targets": {"primary": cut, "secondary": whole},
                                          "chains": {"default": ["primary", "secondary"]}}),
        "restart": Router.from_dict({"defaults": defaults, "targets": {"primary": cut, "secondary": whole},
                                     "chains": {"default": {"targets": ["primary", "secondary"],
                                                            "mid_stream": "restart"}}}),
    }


def _one(router: Any) -> tuple[float, bool]:
    """Seconds to the last chunk, and whether the answer came out whole."""
    started = time.perf_counter()
    stream = router.complete(HI, stream=True)
    shown = ""
    for chunk in stream:
        if chunk.restart:
            shown = ""
        shown += chunk.text
    elapsed = time.perf_counter() - started
    return elapsed, shown == ANSWER == stream.text


def run(report: Report, quick: bool = False) -> None:
    from router.testing import faults

    calls = 10 if quick else 50
    server = ThreadServer()
    try:
        server.script("cut", faults.stream(ANSWER, token_delay=TOKEN_DELAY, cut_after=CUT_AT))
        server.script("whole", faults.stream(ANSWER, token_delay=TOKEN_DELAY))
        routers = _routers(server.url)
        for router in routers.values():  # warm: connections, litellm's lazy imports
            _one(router)
        times: dict[str, list[float]] = {name: [] for name in routers}
        garbled = dict.fromkeys(routers, 0)
        for order in rotations(list(routers), calls):
            for name in order:
                elapsed, whole = _one(routers[name])
                times[name].append(elapsed)
                garbled[name] += not whole
    finally:
        server.close()

    report.line(f"{calls} streamed calls each; answer {WORDS} words {TOKEN_DELAY * 1000:g} ms apart, "
                f"primary cut after {CUT_AT}")
    for name, values in times.items():
        report.line(f"  {name:<14} time to last token: median {median(values) * 1000:6.1f} ms, "
                    f"p90 {quantile(values, 0.9) * 1000:6.1f} ms, garbled {garbled[name]}")
    ratios = {name: paired_ratio(times[name], times["uninterrupted"]) for name in ("continuation", "restart")}
    for name, r in ratios.items():
        report.line(f"  {name}/uninterrupted: median {r['median']:.3f} (IQR {r['q25']:.3f}-{r['q75']:.3f})")
    report.data.update(times_s=times, garbled=garbled, ratios=ratios)
    value = ratios["continuation"]["median"]
    report.ratio("stream_continuation_over_uninterrupted", value, f"<={TARGET_CONTINUATION}",
                 value <= TARGET_CONTINUATION)
    report.ratio("stream_restart_over_uninterrupted", ratios["restart"]["median"], "none", None)
    report.ratio("stream_garbled_answers", sum(garbled.values()), "0", sum(garbled.values()) == 0)
    report.finish()
