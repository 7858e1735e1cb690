"""The local tier when the CPU is shared: `router complete` answered by the local model, end
to end (a new process each time: start, import, load, answer), with the CPU idle and with
one core kept busy by a spin loop (`python -c "while True: pass"`), for several n_threads
settings, with and without litellm importing in the background (chain [local, remote]: the
Router starts litellm's import when it has a remote target; the remote one is never tried).

    python bench/local_busy.py [--reps 3] [--tree PATH ...] [--threads default,1,2] [--busy 0,1]

`--tree` (repeatable) also runs another checkout's router, to compare with the code before
a change. Every (tree, n_threads, litellm) runs `--reps` times, interleaved with the others
in a rotating order (a shared machine's load drifts: only runs made side by side compare);
the medians are printed with the load average (a shared machine is never idle).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
MODEL = REPO / "models" / "SmolLM2-135M-Instruct.Q4_1.gguf"
PROMPT = "What is the capital of France? Answer in one sentence."


def config(folder: Path, threads: str, litellm: bool) -> Path:
    local: dict = {"provider": "llama_cpp", "model_path": str(MODEL), "n_ctx": 2048, "degraded": True,
                   "timeout": 120}
    if threads != "default":
        local["n_threads"] = int(threads)
    targets = {"local": local}
    chain = ["local"]
    if litellm:  # never tried (local answers first); its presence starts litellm's import at Router build
        targets["remote"] = {"model": "anthropic/claude-3-5-haiku-latest", "api_key": "unused",
                             "api_base": "http://127.0.0.1:9"}
        chain.append("remote")
    path = folder / f"t{threads}-{int(litellm)}.json"
    path.write_text(json.dumps({"defaults": {"deadline": 300}, "targets": targets, "chains": {"default": chain}}))
    return path


def run(tree: Path, cfg: Path, env: dict[str, str] | None = None) -> float:
    started = time.monotonic()
    done = subprocess.run([sys.executable, "-m", "router.cli", "complete", PROMPT, "--max-tokens", "32",
                           "--config", str(cfg)], cwd=tree, env={**os.environ, **(env or {})}, capture_output=True, text=True, timeout=600)
    elapsed = time.monotonic() - started
    if done.returncode != 0 or "served by local" not in done.stderr:
        raise RuntimeError(done.stderr[-500:])
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--tree", action="append", default=[], help="another checkout to compare (repeatable)")
    parser.add_argument("--threads", default="default,1,2")
    parser.add_argument("--busy", default="0,1", help="spin loops during the runs, e.g. 0,1")
    args = parser.parse_args()
    trees = [str(REPO), *args.tree]
    folder = Path(tempfile.mkdtemp(prefix="local-busy-"))
    cases = [(tree, t, lit) for tree in trees for t in args.threads.split(",") for lit in (False, True)]
    results: dict[tuple, list[float]] = {}
    loads: list[float] = []
    for busy in [int(b) for b in args.busy.split(",")]:
        spinners = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(busy)]
        try:
            for rep in range(args.reps):
                shift = rep % len(cases)
                order = cases[shift:] + cases[:shift]
                for tree, threads, litellm in (order if rep % 2 == 0 else order[::-1]):
                    loads.append(os.getloadavg()[0])
                    results.setdefault((busy, tree, threads, litellm), []).append(
                        run(Path(tree), config(folder, threads, litellm)))
        finally:
            for spinner in spinners:
                spinner.kill()
                spinner.wait()
    print(f"load average during the runs: median {statistics.median(loads):.1f}, max {max(loads):.1f} "
          f"({os.cpu_count()} cores)")
    print(f"{'busy cores':>10} {'tree':>24} {'n_threads':>9} {'litellm':>8}  median s  (runs)")
    for (busy, tree, threads, litellm), times in sorted(results.items()):
        print(f"{busy:>10} {tree[-24:]:>24} {threads:>9} {'import' if litellm else '-':>8}  "
              f"{statistics.median(times):8.2f}  ({', '.join(f'{t:.2f}' for t in times)})")


if __name__ == "__main__":
    main()
