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
model is loaded once per process into a `_ModelPool` of `pool_size` instances that calls
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
import atexit
import ctypes
import os
import threading
import time
from collections import deque
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from ..config.schema import LocalOptions, TargetConfig
from ..deadline import Deadline
from ..models import ModelFileError, verify_model_file
from ..outcomes import Outcome, TargetFailure
from .prefill import continuation_params
from ..request import Request
from ..response import response_of
from . import Note, Target
from .local_call import CancellableChunks, LocalCall, WorkerThreads, stoppable_llama_class

# What `Llama.create_chat_completion` understands; anything else a caller passes
# (user, n, tools for a remote model, ...) is dropped rather than failing the fallback.
_PASSED_PARAMS = frozenset({"temperature", "top_p", "top_k", "min_p", "stop", "seed", "presence_penalty",
                            "frequency_penalty", "repeat_penalty", "response_format", "logit_bias"})
_MESSAGE_OVERHEAD = 8  # tokens per message for role markers, when the template cannot be rendered
_QUEUE_SHARE = 0.1  # a cut generation that queued this share of its timeout is no_capacity, not silent
DEFAULT_THREADS = 1  # n_threads when the config says nothing: the module docstring has the numbers


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
        _pool_for(self.options, note or (lambda _: None))

    def ready(self) -> None:
        """Load the model before the attempt's clock starts (as the remote tier waits for
        litellm): a fresh Router's first call with `timeout: 1` was cut as no_capacity, its
        load counted as queueing. A model that cannot load is left for the attempt to report."""
        if _loaded(self.options):
            return
        try:
            _pool_for(self.options, None)
        except TargetFailure:
            pass

    async def aready(self) -> None:
        if not _loaded(self.options):
            await asyncio.to_thread(self.ready)

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
        pool = _pool_for(opts, note)
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


class _ModelPool:
    """`pool_size` loaded models, each lent to one call at a time.

    Waiters are served first come, first served (a caller arriving while others wait
    queues behind them even if a model is free at that instant), and each caller brings
    its own bound on how many may wait: targets sharing a pool keep their own max_queue.
    """

    def __init__(self, models: list[Any], formatter: Any) -> None:
        self.size = len(models)
        self._load_note: str | None = None  # told to the first call that uses the pool
        self._free = list(models)
        self._waiters: deque[object] = deque()
        self._cond = threading.Condition()
        self._formatter = formatter  # the GGUF's chat template, to count prompt tokens exactly

    @contextmanager
    def slot(self, *, max_queue: int, deadline: Deadline, call: LocalCall | None = None) -> Iterator[Any]:
        llm = self._acquire(max_queue, deadline, call)
        try:
            yield llm
        finally:
            with self._cond:
                self._free.append(llm)
                self._cond.notify_all()

    def _acquire(self, max_queue: int, deadline: Deadline, call: LocalCall | None = None) -> Any:
        with self._cond:
            if self._free and not self._waiters:
                return self._free.pop()
            if len(self._waiters) >= max_queue:
                raise TargetFailure(Outcome.NO_CAPACITY, f"local capacity exhausted: {self._load(max_queue)}")
            ticket = object()
            self._waiters.append(ticket)
            if call is not None:
                call.on_cancel(self._wake)
            try:
                while True:  # a model freed after the deadline is no use: generating would overrun it
                    if call is not None and call.cancelled:
                        raise TargetFailure(Outcome.CANCELLED, "the caller cancelled while waiting for a local model")
                    remaining = deadline.remaining()
                    if remaining <= 0:
                        raise TargetFailure(Outcome.NO_CAPACITY, "no local model became free within the timeout: "
                                                                 f"{self._load(max_queue)}")
                    if self._free and self._waiters[0] is ticket:
                        return self._free.pop()
                    self._cond.wait(remaining)
            finally:
                if call is not None:
                    call.on_cancel(None)
                self._waiters.remove(ticket)
                self._cond.notify_all()  # the next waiter may now be first in line

    def _wake(self) -> None:
        with self._cond:
            self._cond.notify_all()

    def loaded(self, text: str) -> None:
        self._load_note = text

    def note_load(self, note: Note | None) -> None:
        """Tell `note` how long the load took, once per pool (the first call, or preload)."""
        if self._load_note is None or note is None:
            return
        with self._cond:
            text, self._load_note = self._load_note, None
        if text is not None:
            note(text)

    def close(self) -> None:
        """Free the models not in use (at exit: a model still generating is left alone)."""
        with self._cond:
            for llm in self._free:
                llm.close()
            self._free.clear()

    def _load(self, max_queue: int) -> str:
        return (f"{self.size - len(self._free)} running, {len(self._waiters)} waiting "
                f"(pool_size={self.size}, max_queue={max_queue})")

    # -- context fitting ----------------------------------------------------------------

    def fit(self, llm: Any, messages: list[dict[str, Any]], max_tokens: int, policy: str,
            note: Note) -> list[dict[str, Any]]:
        """The messages to send so that prompt + max_tokens fits n_ctx, or CONTEXT_TOO_LONG.

        llama-cpp-python would otherwise shrink max_tokens without a word (a truncated
        answer) or raise its own error. Truncation drops the oldest turns that are not
        system messages and never the last message; the number dropped is found by
        bisection, since counting means rendering the whole prompt.
        """
        n_ctx = llm.n_ctx()
        prompt = self.count(llm, messages)
        if prompt + max_tokens <= n_ctx:
            return messages
        too_long = f"prompt of {prompt} tokens + max_tokens {max_tokens} exceeds n_ctx {n_ctx}"
        droppable = [i for i, m in enumerate(messages[:-1]) if m["role"] != "system"]
        if policy != "truncate" or not droppable:
            raise TargetFailure(Outcome.CONTEXT_TOO_LONG, too_long)

        def without_oldest(k: int) -> list[dict[str, Any]]:
            gone = set(droppable[:k])
            return [m for i, m in enumerate(messages) if i not in gone]

        smallest = self.count(llm, without_oldest(len(droppable)))
        if smallest + max_tokens > n_ctx:
            raise TargetFailure(Outcome.CONTEXT_TOO_LONG, f"{too_long} (still {smallest} tokens after dropping "
                                                          f"all {len(droppable)} older messages)")
        lo, hi = 1, len(droppable)  # invariant: dropping hi fits, dropping lo - 1 does not
        while lo < hi:
            mid = (lo + hi) // 2
            if self.count(llm, without_oldest(mid)) + max_tokens <= n_ctx:
                hi = mid
            else:
                lo = mid + 1
        note(f"dropped {hi} oldest messages to fit n_ctx={n_ctx}")
        return without_oldest(hi)

    def continue_chunks(self, llm: Any, messages: list[dict[str, Any]], partial: str,
                        params: dict[str, Any]) -> Iterator[dict[str, Any]]:
        """Chat chunks continuing `partial`: the template's prompt for `messages` (which
        ends by opening the assistant turn) followed by the text already sent."""
        if self._formatter is None:
            raise TargetFailure(Outcome.REJECTED, "cannot continue a partial answer without the GGUF's chat template")
        from llama_cpp.llama_chat_format import _convert_text_completion_chunks_to_chat

        rendered = self._formatter(messages=messages)
        tokens = llm.tokenize((rendered.prompt + partial).encode("utf-8"), add_bos=False, special=True)
        kwargs = {k: v for k, v in params.items() if k not in ("response_format", "stop")}  # no grammar mid-answer
        kwargs = continuation_params(kwargs, len(llm.tokenize(partial.encode("utf-8"), add_bos=False, special=False)))
        stop = params.get("stop") or []
        stop = ([stop] if isinstance(stop, str) else list(stop)) + list(rendered.stop or [])
        return _convert_text_completion_chunks_to_chat(llm.create_completion(
            prompt=tokens, stream=True, stop=stop, **kwargs))

    def count(self, llm: Any, messages: list[dict[str, Any]]) -> int:
        """Prompt tokens: exact when the GGUF's template renders them, else an estimate."""
        if self._formatter is not None:
            try:
                text = self._formatter(messages=messages).prompt
            except Exception as exc:  # the template's raise_exception, e.g. roles must alternate
                raise TargetFailure(Outcome.REJECTED, f"the local model's chat template refused the "
                                                      f"messages: {exc}") from exc
            # as llama-cpp-python does for a template-rendered prompt (added_special=True)
            return len(llm.tokenize(text.encode("utf-8"), add_bos=False, special=True))
        return sum(len(llm.tokenize(m["content"].encode("utf-8"), add_bos=False, special=False))
                   + _MESSAGE_OVERHEAD for m in messages)


# -- loading: once per process per model settings ------------------------------------------

_POOLS: dict[tuple[Any, ...], _ModelPool] = {}
_LOADING: dict[tuple[Any, ...], threading.Lock] = {}
_POOLS_LOCK = threading.Lock()


@atexit.register
def _close_all() -> None:
    """Free cached models before the interpreter tears modules down, when llama_cpp's own
    `Llama.__del__` can no longer run cleanly and prints a traceback instead."""
    for pool in list(_POOLS.values()):
        pool.close()
    _POOLS.clear()


def _key(opts: LocalOptions) -> tuple[Any, ...]:
    return (opts.model_path, opts.n_ctx, opts.n_threads, opts.chat_format, opts.pool_size)


def _loaded(opts: LocalOptions) -> bool:
    return _key(opts) in _POOLS


def _pool_for(opts: LocalOptions, note: Note | None) -> _ModelPool:
    """The pool of `opts`, loaded on first use; `note` hears of a load (else its first call)."""
    key = _key(opts)
    pool = _POOLS.get(key)
    if pool is not None:
        return pool
    with _POOLS_LOCK:
        lock = _LOADING.setdefault(key, threading.Lock())
    with lock:  # one loader per key; other models load (or serve) meanwhile
        pool = _POOLS.get(key)
        if pool is None:
            started = time.monotonic()
            pool = _load_pool(opts)
            pool.loaded(f"loaded {Path(opts.model_path).name} in {time.monotonic() - started:.2f} s")
            _POOLS[key] = pool
            pool.note_load(note)
    return pool


def _load_pool(opts: LocalOptions) -> _ModelPool:
    """Load `pool_size` instances; a failure leaves nothing cached, so a later call retries
    (after `make model`, say) without restarting the process."""
    path = opts.model_path
    try:
        verify_model_file(path)
    except ModelFileError as exc:
        raise TargetFailure(Outcome.MISCONFIGURED, str(exc)) from None
    import llama_cpp
    from llama_cpp.llama_chat_format import Jinja2ChatFormatter

    cls = stoppable_llama_class(llama_cpp)
    threads = opts.n_threads or DEFAULT_THREADS
    # n_threads_batch too: llama-cpp-python's default for it is every core, whatever n_threads says
    kwargs: dict[str, Any] = {"n_ctx": opts.n_ctx, "n_threads": threads, "n_threads_batch": threads,
                              "verbose": False}
    if opts.chat_format is not None:
        kwargs["chat_format"] = opts.chat_format
    try:
        models = [cls(model_path=path, **kwargs) for _ in range(opts.pool_size)]
    except Exception as exc:
        raise TargetFailure(Outcome.MISCONFIGURED, f"cannot load {path}: {exc}; is it a complete GGUF file? "
                                                   f"re-fetch with `make model`") from exc
    first = models[0]
    template = first.metadata.get("tokenizer.chat_template") if opts.chat_format is None else None
    formatter = None
    if template:  # built as Llama.__init__ builds its own handler from the same metadata
        def token_text(token: int) -> str:
            return first.detokenize([token], special=True).decode("utf-8", "replace") if token != -1 else ""

        formatter = Jinja2ChatFormatter(template=template, eos_token=token_text(first.token_eos()),
                                        bos_token=token_text(first.token_bos()))
    return _ModelPool(models, formatter)


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
