"""The local tier's model pool: `pool_size` loaded llama.cpp models per model settings,
each lent to one call at a time, loaded once per process.

A `llama_cpp.Llama` is not thread-safe, and loading one costs time and memory, so each
model is loaded once per process, on first use or at `preload`, and targets with the same
settings share it. llama_cpp is imported on the first
load: `import router` stays fast. The pool also fits a prompt to the model's context and
counts its tokens, since both need a loaded model and its chat template.
"""

from __future__ import annotations

import atexit
import threading
import time
from collections import deque
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from ..config.schema import LocalOptions
from ..deadline import Deadline
from ..models import ModelFileError, verify_model_file
from ..outcomes import Outcome, TargetFailure
from . import Note
from .local_call import LocalCall, stoppable_llama_class
from .prefill import continuation_params

_MESSAGE_OVERHEAD = 8  # tokens per message for role markers, when the template cannot be rendered
DEFAULT_THREADS = 1  # n_threads when the config says nothing: local.py's docstring has the numbers


class ModelPool:
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

    def load(self) -> dict[str, int]:
        """Callers running on a model, callers queued for one, models loaded: read without
        the pool's lock (each `len` is atomic), so a status read never waits behind callers;
        the two counts may be one call apart from each other for an instant."""
        return {"running": self.size - len(self._free), "waiting": len(self._waiters), "pool_size": self.size}

    def _load(self, max_queue: int) -> str:
        load = self.load()
        return (f"{load['running']} running, {load['waiting']} waiting "
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

_POOLS: dict[tuple[Any, ...], ModelPool] = {}
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


def loaded_pool(opts: LocalOptions) -> ModelPool | None:
    """The pool of `opts` if it is loaded, without loading it."""
    return _POOLS.get(_key(opts))


def pool_for(opts: LocalOptions, note: Note | None) -> ModelPool:
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
            pool = load_pool(opts)
            pool.loaded(f"loaded {Path(opts.model_path).name} in {time.monotonic() - started:.2f} s")
            _POOLS[key] = pool
            pool.note_load(note)
    return pool


def load_pool(opts: LocalOptions) -> ModelPool:
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
    return ModelPool(models, formatter)
