"""A client that hangs up stops the local model through the gateway: the stream is closed
as `cancelled`, and the one llama.cpp slot (pool_size 1, max_queue 0) is free again within
moments, not after the 3000 tokens it was forced to write (~30 s on 2 idle cores, minutes on
a loaded machine: the bounds below are generous for load and still tell the two apart)."""

from __future__ import annotations

import time
from pathlib import Path

import httpx

from router import models

from .gateway_process import Gateway

# Greedy, with the end-of-text tokens banned: the model writes until max_tokens (~30 s for
# 3000 tokens at ~100 tokens/s), whatever it would have chosen to say (tests/targets/test_local.py).
NEVER_ENDING = {"temperature": 0, "seed": 7, "logit_bias": {"0": -100, "1": -100, "2": -100}}


def test_a_stream_client_that_hangs_up_stops_the_local_generation(tmp_path: Path) -> None:
    model_path = models.pull_default_model(quiet=True)
    config = {"targets": {"local": {"provider": "llama_cpp", "model_path": str(model_path), "n_ctx": 4096,
                                    "max_tokens": 3000, "pool_size": 1, "max_queue": 0, "preload": True}},
              "chains": {"default": ["local"]}}
    gateway = Gateway(config, tmp_path).start()
    try:
        body = {"model": "default", "stream": True, "max_tokens": 3000,
                "messages": [{"role": "user", "content": "Count from 1 to 1000."}], **NEVER_ENDING}
        with httpx.stream("POST", f"{gateway.url}/chat/completions", json=body, timeout=60) as reply:
            assert reply.status_code == 200
            lines = reply.iter_lines()
            content = [line for line in (next(lines) for _ in range(8)) if line.startswith("data: ")]
        assert len(content) == 4  # the model was writing when the client left
        left = time.monotonic()
        cancelled = 'router_calls_total{chain="default",outcome="cancelled"} 1.0'
        while cancelled not in (metrics := httpx.get(f"{gateway.base}/metrics").text):
            assert time.monotonic() - left < 15.0, ("the gateway did not close the stream its client left: "
                                                     + " ".join(l for l in metrics.splitlines() if "calls_total" in l))
            time.sleep(0.05)
        while True:  # the slot comes back once the generation thread has stopped at its next token
            again = httpx.post(f"{gateway.url}/chat/completions", timeout=60, json={
                "model": "default", "max_tokens": 4, "messages": [{"role": "user", "content": "Hi"}]})
            if again.status_code == 200:
                break
            assert "no_capacity" in again.text
            assert time.monotonic() - left < 20.0, "the model was still writing the abandoned answer"
            time.sleep(0.1)
    finally:
        gateway.stop()
