"""Benchmarks for `router`, run with ``python -m bench [SCENARIO ...|all] [--quick]``.

- ``overhead``: the happy path. What does routing a call through `router.Router` cost
  compared with calling `litellm.completion` directly (and with `litellm.Router`)?
- ``outage``: the failure path. With the primary down (HTTP 503, or hanging), how many
  requests does each contender still answer, how many hit the dead primary, how long?
- ``local``: the degraded tier. Tokens/s of the local GGUF model through
  `Router.complete` vs `llama_cpp.Llama.create_chat_completion` on its own.
- ``coldstart``: fresh processes. How long `import router` takes (vs `import litellm`),
  and how long from process start to the first offline answer, without litellm.
- ``parallel``: 16 threads through one closed circuit against a 200 ms upstream: do
  they run at once (ours), or one at a time (pybreaker's `call()`)?
- ``async``: 2000 requests at concurrency 64 through `Router.acomplete` vs bare
  `litellm.acompletion`: requests per second (module ``asyncload``).
- ``fleet``: 4 processes x 4 threads against a dead primary, circuit state in memory vs
  shared in Redis: how many requests reach the primary; and the happy-path cost of Redis.
- ``ratelimit``: a provider allowing 20 requests per sliding second, 300 requests from 8
  threads with a fallback: ours with `rate_limit: {rpm: 1200, max_wait: 2}` vs
  `litellm.Router` with `rpm` vs ours without a limit: 429s provoked, share served by the
  primary, wall time; then 2 processes sharing the limit through Redis.
- ``cache``: the cache tier. A hit's p50 latency next to a healthy primary's answer, and
  what writing every answer (memory, sqlite, Redis) adds to a healthy call.
- ``streams``: 50 streamed calls whose primary is cut at 2/3 of the answer, recovered by a
  continuation on a prefill target vs a restart vs an uninterrupted stream: time to the
  last token as a ratio to the uninterrupted stream, and garbled answers (module
  ``streamrecovery``; its fault server runs in a thread of the benchmark's process).
- ``otel``: what `router.otel.OpenTelemetryListener` adds to a happy-path call, with the
  OpenTelemetry API alone (no SDK: no-ops) and with the SDK exporting to nowhere, next to
  no listener; on real calls and on the router's own code alone.

The scenarios that make HTTP calls talk to `router.testing.FaultServer` over real
loopback HTTP, run in a separate process so that its request handling does not compete
for the client's GIL; ``local`` and ``coldstart`` need the default GGUF, fetched with
`router.models.pull_default_model()` when missing.
Each prints human-readable lines, then machine-readable ``RATIO name=value target=...
ok=yes|no`` lines, and writes a JSON summary to ``bench/results/<scenario>.json``.
"""
