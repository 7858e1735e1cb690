"""Local throughput: does the degraded tier generate as fast through the router as
llama.cpp does on its own?

The default GGUF (SmolLM2-135M-Instruct Q4_1, fetched with
`router.models.pull_default_model()` when missing) is loaded twice, with the same
settings: n_ctx 2048, n_threads = n_threads_batch = the router's default (1), the GGUF's own
chat template. Every call asks for max_tokens=96 at temperature 0 (greedy decoding, so
both contenders write the same tokens for the same prompt, which is checked).

- ``ours``: ``router.Router.from_dict(one target "local": provider llama_cpp,
  degraded: true; chain default: [local]).complete(messages, max_tokens=96, temperature=0)``:
  the chain walk, the circuit, the pool borrow, the context fit (the prompt rendered and
  tokenized once more to count it) and the per-token deadline check;
- ``direct``: ``llama_cpp.Llama(model_path, n_ctx=2048, n_threads=1, n_threads_batch=1,
  verbose=False).create_chat_completion(messages, max_tokens=96, temperature=0)`` on an
  instance loaded separately;
- ``direct_aa``: ``direct`` again, an A/A control: direct_aa/direct shows how far the
  ratio of two identical contenders strays on this machine.

Tokens/s is completion_tokens / wall time of a block (prompt evaluation included): one
call (PER_BLOCK = 1, ~1 s), the same prompt for every contender of a round, the next of
PROMPTS in the next round. The two models never run at once (two 2-thread llama.cpp
instances on 2 cores would measure the contention, not the router): each round runs one
block per contender, one after the other, in an order rotated every round (A B C,
B C A, C A B, then reversed), after one warm-up call each for ours and direct (the
router loads its model on its first call). ROUNDS = 18, or fewer (whole rotations, at
least MIN_ROUNDS = 6) once BUDGET_S = 70 s have been spent, so that a contended machine
does not stretch the scenario to minutes. The answers of ours and direct to the same
prompt in the same round are compared. Target: the median over rounds of the per-round
ratio ours/direct of tokens/s >= 0.97.

llama.cpp with n_threads = all cores slows down by 10x and more when another process
takes one of the cores (its threads wait for each other at every step): on a shared
machine a call can take far longer than its ~1 s, so ours gets an attempt timeout and
deadline of TIMEOUT s (direct has none) and a slow round shows in both contenders' block
times of that round, which the per-round ratio cancels out as far as it can.
"""

from __future__ import annotations

import gc
import os
import time
from collections.abc import Callable
from typing import Any

from .common import ROOT, Report, median, paired_ratio, rotations

TARGET_OURS_OVER_DIRECT = 0.97
N_CTX = 2048
MAX_TOKENS = 96
PER_BLOCK = 1  # calls per contender and round; round r uses PROMPTS[r % 4]
ROUNDS, MIN_ROUNDS, BUDGET_S = 18, 6, 70  # fewer rounds (whole rotations) once BUDGET_S is spent
TIMEOUT = 600  # seconds: direct has no timeout, so ours must not give up on a slow (contended) call
PROMPTS = [
    "Explain in a few sentences why the sky is blue.",
    "Write a short story about a robot who learns to paint.",
    "List some tips for staying productive when working from home.",
    "Describe how a bicycle works to a ten-year-old.",
]

Call = Callable[[list[dict[str, Any]]], tuple[str, int]]  # messages -> (text, completion tokens)


def model_path() -> str:
    """The default GGUF under models/, fetched (and verified) if missing."""
    from router.models import pull_default_model

    return str(pull_default_model(ROOT / "models", quiet=True))


def contenders(path: str) -> tuple[dict[str, Call], dict[str, Any]]:
    import llama_cpp

    from router import Router

    from router.targets.local import DEFAULT_THREADS

    threads = DEFAULT_THREADS
    router = Router.from_dict({
        "defaults": {"timeout": TIMEOUT, "deadline": TIMEOUT},
        "targets": {"local": {"provider": "llama_cpp", "model_path": path, "n_ctx": N_CTX, "degraded": True}},
        "chains": {"default": ["local"]},
    })

    def ours(messages: list[dict[str, Any]]) -> tuple[str, int]:
        resp = router.complete(messages, max_tokens=MAX_TOKENS, temperature=0)
        if resp.route.served_by != "local" or not resp.route.degraded:
            raise RuntimeError(f"ours: unexpected route {resp.route!r}")
        return resp.choices[0].message.content, resp.usage.completion_tokens

    llm = llama_cpp.Llama(model_path=path, n_ctx=N_CTX, n_threads=threads, n_threads_batch=threads, verbose=False)

    def direct(messages: list[dict[str, Any]]) -> tuple[str, int]:
        out = llm.create_chat_completion(messages=messages, max_tokens=MAX_TOKENS, temperature=0)
        return out["choices"][0]["message"]["content"], out["usage"]["completion_tokens"]

    settings = {"n_ctx": N_CTX, "n_threads_direct": threads, "max_tokens": MAX_TOKENS, "temperature": 0,
                "n_threads_ours": None}
    return {"ours": ours, "direct": direct, "direct_aa": direct}, settings


def _ours_n_threads() -> int | None:
    """n_threads of the model the router loaded (read back from its pool, for the report)."""
    from router.targets import model_pool

    for pool in model_pool._POOLS.values():
        for llm in pool._free:
            return int(llm.n_threads)
    return None


def block(call: Call, prompts: list[str]) -> tuple[float, int, list[str]]:
    """Each prompt once: (wall seconds, completion tokens, texts)."""
    tokens, texts, wall = 0, [], 0.0
    perf = time.perf_counter
    for prompt in prompts:
        messages = [{"role": "user", "content": prompt}]
        started = perf()
        text, n = call(messages)
        wall += perf() - started
        tokens += n
        texts.append(text)
    return wall, tokens, texts


def run(report: Report, *, quick: bool = False) -> dict[str, Any]:
    rounds, min_rounds, budget = (6, 3, 20) if quick else (ROUNDS, MIN_ROUNDS, BUDGET_S)
    path = model_path()
    report.line(f"model: {os.path.relpath(path, ROOT)}; {PER_BLOCK} of {len(PROMPTS)} prompts per block, up to "
                f"{rounds} rounds (at least {min_rounds}, fewer once {budget} s are spent), "
                f"max_tokens={MAX_TOKENS}, temperature 0, n_ctx={N_CTX}")
    calls, settings = contenders(path)
    names = list(calls)
    for name in ("ours", "direct"):  # warm-up: the router loads its model here
        started = time.perf_counter()
        block(calls[name], PROMPTS[-1:])
        report.line(f"warm-up call {name}: {time.perf_counter() - started:.2f} s")
    settings["n_threads_ours"] = _ours_n_threads()
    report.line(f"n_threads: ours {settings['n_threads_ours']} (the router's default), "
                f"direct {settings['n_threads_direct']}")

    gc.collect()
    gc.freeze()
    walls: dict[str, list[float]] = {name: [] for name in names}
    tokens: dict[str, list[int]] = {name: [] for name in names}
    rates: dict[str, list[float]] = {name: [] for name in names}
    same = compared = 0
    timed = time.perf_counter()
    for r, order in enumerate(rotations(names, rounds)):
        if r >= min_rounds and r % len(names) == 0 and time.perf_counter() - timed > budget:
            report.line(f"time budget of {budget} s spent: stopping after {r} of {rounds} rounds")
            rounds = r
            break
        first = PER_BLOCK * r % len(PROMPTS)
        prompts = (PROMPTS * 2)[first:first + PER_BLOCK]
        answers = {}
        for name in order:
            wall, n, answers[name] = block(calls[name], prompts)
            walls[name].append(wall)
            tokens[name].append(n)
            rates[name].append(n / wall)
        same += sum(a == b for a, b in zip(answers["ours"], answers["direct"], strict=True))
        compared += PER_BLOCK
    gc.unfreeze()
    report.line(f"identical answers ours vs direct (greedy, same prompt, same round): {same}/{compared}")

    report.line()
    report.line(f"{rounds} rounds; per block of {PER_BLOCK} call(s):")
    report.line(f"{'contender':<12}{'tokens':>8}{'median wall':>13}{'median tok/s':>14}{'min..max tok/s':>18}")
    for name in names:
        report.line(f"{name:<12}{median(tokens[name]):>8.0f}{median(walls[name]):>11.3f} s{median(rates[name]):>14.1f}"
                    f"{min(rates[name]):>10.1f}..{max(rates[name]):.1f}")

    ratios = {f"{a}/{b}": paired_ratio(rates[a], rates[b]) for a, b in (("ours", "direct"), ("direct_aa", "direct"))}
    report.line()
    report.line(f"tokens/s, median over {rounds} rounds of the per-round ratio (interquartile range):")
    for key, r in ratios.items():
        note = "  <- A/A control: the noise floor" if key == "direct_aa/direct" else ""
        report.line(f"  {key:<20}{r['median']:>8.4f} ({r['q25']:.3f}..{r['q75']:.3f}){note}")
    extra_ms = median((x - y) / PER_BLOCK * 1e3 for x, y in zip(walls["ours"], walls["direct"], strict=True))
    report.line(f"extra wall time per call, ours - direct (median over rounds): {extra_ms:+.2f} ms")

    report.data.update({
        "model": os.path.relpath(path, ROOT), "prompts": PROMPTS, "settings": settings, "rounds": rounds,
        "identical_answers": same, "answers_compared": compared,
        "block_wall_s": walls, "block_tokens": tokens, "tokens_per_s": rates,
        "tokens_per_s_ratios": ratios, "extra_ms_per_call": extra_ms,
    })
    value = ratios["ours/direct"]["median"]
    report.ratio("local_ours_over_direct_tokens_per_s", value, f">={TARGET_OURS_OVER_DIRECT}",
                 value >= TARGET_OURS_OVER_DIRECT)
    report.ratio("local_direct_aa_over_direct_tokens_per_s", ratios["direct_aa/direct"]["median"], "none", None)
    report.ratio("local_ours_tokens_per_s", round(median(rates["ours"]), 1), "none", None)
    report.ratio("local_direct_tokens_per_s", round(median(rates["direct"]), 1), "none", None)
    report.ratio("local_identical_answers", same, str(compared), same == compared)
    return report.finish()
