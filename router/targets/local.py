"""The local tier: a GGUF model run in process on the CPU with llama-cpp-python.

It is the last link of a chain, the one that must answer when the network is gone, so it
turns every way it can fail into a `TargetFailure` with a clear outcome instead of a raw
llama.cpp error or a silently truncated answer:

- a missing or broken model file is MISCONFIGURED, with the command that fixes it;
- a full pool and queue, or a queue wait past the timeout, is NO_CAPACITY;
- a prompt that cannot fit `n_ctx` with the requested `max_tokens` is CONTEXT_TOO_LONG
  (after dropping the oldest turns when `context_policy: truncate`);
- generation still running when the attempt's timeout is spent is SILENT, unless waiting
  for a free model took a tenth of that timeout or more: then the pool's queue, not the
  model, ate the time, and it is NO_CAPACITY (counted against nothing: a burst of callers
  must not open the last resort's circuit);
- a request offering tools is UNSUPPORTED (the model writes prose, never tool_calls), or,
  with `on_tools: drop`, answered without them and a route note saying so.

A `llama_cpp.Llama` is not thread-safe, and loading one costs time and memory, so each
model is loaded once per process into a `ModelPool` (model_pool.py) of `pool_size` instances that calls
borrow one at a time. llama_cpp is imported on the first load: `import router` stays fast.
The walk loads it before an attempt's clock starts (`ready`), so a load never eats the
first call's timeout, and only real waiting for a busy model counts as queueing.

The degraded tier runs when things are already bad, often on a CPU shared with whatever
went wrong, so its defaults hold up then: `n_threads` 1, for the prompt too
(`n_threads_batch`; llama-cpp-python's default is every core). llama.cpp's threads wait on
each other: one descheduled thread stalls the rest. `router complete` answered locally on 2
shared cores (bench/local_busy.py; table in the README): 1.0 s, 3.7 s with one core
spinning; the old default (every core) 6.1 s and 19.4 s. With idle cores, 2 threads took
0.76 s against ~1.1 s: set `n_threads` higher where cores are to spare.
"""

from __future__ import annotations

import asyncio
import ctypes
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from ..config.schema import LocalOptions, TargetConfig
from ..outcomes import Outcome, TargetFailure
from ..request import Request
from ..response import response_of
from . import Note, Target
from .local_call import CancellableChunks, LocalCall, WorkerThreads
from .model_pool import DEFAULT_THREADS, loaded_pool, pool_for

__all__ = ["DEFAULT_THREADS", "LocalTarget"]

# What `Llama.create_chat_completion` understands; anything else a caller passes
# (user, n, tools for a remote model, ...) is dropped rather than failing the fallback.
_PASSED_PARAMS = frozenset({"temperature", "top_p", "top_k", "min_p", "stop", "seed", "presence_penalty",
                            "frequency_penalty", "repeat_penalty", "response_format", "logit_bias"})
_QUEUE_SHARE = 0.1  # a cut generation that queued this share of its timeout is no_capacity, not silent


class LocalTarget(Target):
    """One `provider: llama_cpp` target. Instances with the same model settings share a pool.
    Its async calls and streams run in a worker thread (the `Target` defaults)."""

    continues_streams = True  # stream(partial=...) picks up a broken stream where it stopped

    def __init__(self, config: TargetConfig) -> None:
        if config.local is None:
            raise ValueError(f"target {config.name!r} is not a llama_cpp target")
        self.config = config
        self.options: LocalOptions = config.local
        self._workers = WorkerThreads(self.options.pool_size + self.options.max_queue, config.name)

    def preload(self, note: Note | None = None) -> None:
        """Load the model now instead of on the first call (the router does this at start
        when `preload: true`, so the first degraded answer does not also pay the load)."""
        pool_for(self.options, note or (lambda _: None))

    def ready(self) -> None:
        """Load the model before the attempt's clock starts (as the remote tier waits for
        litellm): a fresh Router's first call with `timeout: 1` was cut as no_capacity, its
        load counted as queueing. A model that cannot load is left for the attempt to report."""
        if loaded_pool(self.options) is not None:
            return
        try:
            pool_for(self.options, None)
        except TargetFailure:
            pass

    async def aready(self) -> None:
        if loaded_pool(self.options) is None:
            await asyncio.to_thread(self.ready)

    def load(self) -> dict[str, int]:
        """The model pool's numbers: `running` (callers on a model), `waiting` (callers queued
        for one), `pool_size` (models configured); read without blocking, zeros before the
        model is loaded. Targets with the same model settings share one pool, so they count
        each other's calls."""
        pool = loaded_pool(self.options)
        if pool is None:
            return {"running": 0, "waiting": 0, "pool_size": self.options.pool_size}
        return pool.load()

    def complete(self, request: Request, *, timeout: float, note: Note) -> Response:
        return self._complete(request, LocalCall(timeout), note)

    async def acomplete(self, request: Request, *, timeout: float, note: Note) -> Response:
        """`complete` in this target's own worker threads (local_call.py): the clock starts
        now, and cancelling the caller stops the generation at the next token."""
        call = LocalCall(timeout)
        return await self._workers.run(call, lambda: self._complete(request, call, note))

    def _complete(self, request: Request, call: LocalCall, note: Note) -> Response:
        with self._borrow(request, call, note) as (llm, pool, messages, params):
            result = llm.create_chat_completion(messages=messages, **params)
        response = response_of(result)
        response.model = params["model"]
        return response

    def stream(self, request: Request, *, timeout: float, note: Note, partial: str = "") -> Iterator[dict[str, Any]]:
        """OpenAI-style chunk dicts as the model writes them. The model stays borrowed until
        the chunks end or are closed: close them when abandoning a stream; `abort()` (from
        any thread) stops the generation at the next token.

        `partial` is assistant text a target already delivered before it broke: the prompt is
        rendered with it appended, so the model writes what comes next.
        """
        call = LocalCall(timeout)
        return CancellableChunks(self._generate(request, call, note, partial), call)

    def _generate(self, request: Request, call: LocalCall, note: Note, partial: str) -> Iterator[dict[str, Any]]:
        with self._borrow(request, call, note, partial) as (llm, pool, messages, params):
            chunks = (pool.continue_chunks(llm, messages, partial, params) if partial
                      else llm.create_chat_completion(messages=messages, stream=True, **params))
            try:
                for chunk in chunks:
                    if llm.timed_out:  # the clock ended it, not the model: no clean finish
                        break
                    yield chunk
            finally:
                chunks.close()  # before the model goes back to the pool

    @contextmanager
    def _borrow(self, request: Request, call: LocalCall, note: Note, partial: str = "") -> Iterator[tuple]:
        """A model for one call with the messages fitted to its context and the call's
        deadline and cancellation armed; llama.cpp's own errors and a spent deadline come
        out as `TargetFailure`. Queueing and generating share the call's one deadline."""
        opts = self.options
        if request.wants_tools:
            if opts.on_tools == "skip":
                raise TargetFailure(Outcome.UNSUPPORTED, "the local model cannot call tools: skipped "
                                                         "(on_tools: drop answers without them)")
            note("tools dropped: the local model answers in prose, without tool_calls")
        pool = pool_for(opts, note)
        pool.note_load(note)
        messages = _plain_messages(request.messages, note)
        params = _params(self.config, request)
        timeout, deadline = call.timeout, call.deadline
        waiting = deadline.remaining()
        with pool.slot(max_queue=opts.max_queue, deadline=deadline, call=call) as llm:
            queued = waiting - deadline.remaining()  # real waiting for a free model, nothing else
            # a partial answer is fitted as a last turn, so that its tokens are counted too
            tail = [{"role": "assistant", "content": partial}] if partial else []
            fitted = pool.fit(llm, messages + tail, params["max_tokens"], opts.context_policy, note)
            llm.call, llm.timed_out = call, False
            try:
                yield llm, pool, fitted[:len(fitted) - len(tail)], params
            except (ValueError, TypeError, ctypes.ArgumentError) as exc:  # bad parameter values
                if "exceed context window" in str(exc):
                    raise TargetFailure(Outcome.CONTEXT_TOO_LONG, f"local model: {exc}") from exc
                raise TargetFailure(Outcome.REJECTED, f"local model rejected the request: {exc}") from exc
            finally:
                llm.call = None
            if call.cancelled:
                raise TargetFailure(Outcome.CANCELLED, "the caller cancelled the local call")
            if llm.timed_out and queued >= _QUEUE_SHARE * timeout:
                raise TargetFailure(Outcome.NO_CAPACITY, f"local model cut off after {timeout - queued:.2f} s of "
                                                         f"generation: {queued:.2f} s of its {timeout:g} s timeout "
                                                         f"went to waiting for a free model")
            if llm.timed_out:
                raise TargetFailure(Outcome.SILENT, f"local model exceeded its timeout of {timeout:g} s")

    def __repr__(self) -> str:
        return f"LocalTarget({self.config.name!r}, model_path={self.options.model_path!r})"


# -- request translation ------------------------------------------------------------------

def _plain_messages(messages: list[dict[str, Any]], note: Note) -> list[dict[str, Any]]:
    """Messages as chat templates expect them: string contents, roles they know."""
    plain, skipped = [], 0
    for message in messages:
        content = message.get("content")
        if isinstance(content, list):
            texts = [p.get("text", "") for p in content if isinstance(p, dict) and p.get("type") == "text"]
            skipped += len(content) - len(texts)
            content = "\n".join(texts)
        role = "system" if message["role"] == "developer" else message["role"]
        plain.append({**message, "role": role, "content": content or ""})
    if skipped:
        note(f"ignored {skipped} non-text message part(s): the local model reads text only")
    return plain


def _params(config: TargetConfig, request: Request) -> dict[str, Any]:
    """Target defaults under the caller's values, filtered; max_tokens capped; the model name."""
    merged = {**config.params, **request.params}
    cap = config.local.max_tokens
    asked = merged.get("max_tokens") or merged.get("max_completion_tokens") or cap
    params = {k: v for k, v in merged.items() if k in _PASSED_PARAMS}
    fmt = params.get("response_format")
    if isinstance(fmt, dict) and fmt.get("type") == "json_schema":  # OpenAI's shape -> llama-cpp-python's
        schema = (fmt.get("json_schema") or {}).get("schema")
        params["response_format"] = {"type": "json_object", **({"schema": schema} if schema else {})}
    return {**params, "max_tokens": min(int(asked), cap), "model": config.model}
