"""Benchmarks for `router`, run with ``python -m bench [overhead|outage|all] [--quick]``.

- ``overhead``: the happy path. What does routing a call through `router.Router` cost
  compared with calling `litellm.completion` directly (and with `litellm.Router`)?
- ``outage``: the failure path. With the primary down (HTTP 503, or hanging), how many
  requests does each contender still answer, how many hit the dead primary, how long?

Every scenario talks to `router.testing.FaultServer` over real loopback HTTP, run in a
separate process so that its request handling does not compete for the client's GIL.
Each prints human-readable lines, then machine-readable ``RATIO name=value target=...
ok=yes|no`` lines, and writes a JSON summary to ``bench/results/<scenario>.json``.
"""
