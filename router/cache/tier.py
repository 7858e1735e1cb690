"""One cache tier (`AnswerCache`), and the Router's hook that feeds each cache tier of a
chain with that chain's good answers (`AnswerCaches.answered`).

A read is one store lookup on the caller's path (a hit is served; anything else is a
`cache_miss`, which counts against nothing and is never retried). Writes happen after
the answer is complete: the key and the answer's text are made on the caller's thread
(~15 us for a short chat; the caller may change the response object afterwards), the
store write itself inline for the memory store, on a background thread for sqlite and
Redis. A store that fails is logged once (and once more when it works again); a call
never fails because of its cache. A Router reads its own writes: an answer still queued
for the store is served from the queue. A stored answer that does not decode (bad JSON,
not an answer's shape) is a `cache_miss` too, never an error of the tier (five of them
used to open its circuit and hide the intact answers): it is deleted, and said once.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, NoReturn

from ..errors import ConfigError
from ..outcomes import Outcome, TargetFailure
from ..request import Request
from ..config.schema import ChainConfig, RouterConfig, TargetConfig
from .policy import Unreadable, cache_key, decode, encode, why_not_kept
from .stores import AnswerStore, Entry, MemoryStore, SqliteStore, Stored, UnreadableEntry
from .writer import BackgroundWriter

if TYPE_CHECKING:
    from ..response import Response, Route

log = logging.getLogger("router")


@dataclass(frozen=True)
class CacheHit:
    """What a cache tier notes in the route when it answers (the walk sets route.cache_age_s)."""

    age_s: float

    def __str__(self) -> str:
        return f"served from the cache, stored {self.age_s:.1f} s ago"


class AnswerCache:
    """One cache tier: its store, its bounds, its writes, and what this process saw of it."""

    def __init__(self, config: TargetConfig, store: AnswerStore) -> None:
        assert config.cache is not None
        self.name = config.name
        self.options = config.cache
        self.store = store
        self.writer = BackgroundWriter(config.name, self._put_many) if store.does_io else None
        self.counts = {"hits": 0, "misses": 0, "writes": 0, "too_large": 0, "read_errors": 0, "write_errors": 0,
                       "unreadable": 0}
        self._failing: set[str] = set()
        self._warned_unreadable = False
        # answers handed to the writer and not yet written, by key (dict ops are atomic under the GIL)
        self._pending: dict[str, Entry] = {}
        self._pending_pid = os.getpid()

    def lookup(self, request: Request) -> tuple[Response, CacheHit]:
        """The stored answer to `request` and its age; a `cache_miss` TargetFailure if none.
        An answer this Router has queued for the store but not yet written is read too (read
        your own writes: the background writer holds answers `LINGER_S` and more)."""
        if not request.cache:
            raise TargetFailure(Outcome.CACHE_MISS, "not read: the call said cache=False")
        key, now = cache_key(request), time.time()
        stored = self._queued_answer(key, now)
        try:
            stored = stored or self.store.get(key, now)
        except UnreadableEntry as exc:
            self._unreadable(key, exc.payload, str(exc))
        except Exception as exc:
            self.counts["read_errors"] += 1
            self._trouble("read", exc)
            raise TargetFailure(Outcome.CACHE_MISS, f"the {self.store.backend} store could not be read: "
                                                    f"{type(exc).__name__}") from exc
        self._works("read")
        if stored is None:
            self.counts["misses"] += 1
            raise TargetFailure(Outcome.CACHE_MISS, f"no answer stored for this request within the last "
                                                    f"{self.options.ttl:g} s")
        try:
            response = decode(stored.payload)
        except Unreadable as exc:
            self._unreadable(key, stored.payload, str(exc))
        self.counts["hits"] += 1
        self._touch(key, now)
        return response, CacheHit(max(0.0, now - stored.stored_at))

    def _queued_answer(self, key: str, now: float) -> Stored | None:
        if self._pending_pid != os.getpid():  # a forked child: the parent's queue is not its own
            self._pending.clear()
            self._pending_pid = os.getpid()
        entry = self._pending.get(key)
        if entry is None or entry.now < now - self.options.ttl:
            return None
        return Stored(entry.payload, entry.now)

    def _unreadable(self, key: str, payload: Any, why: str) -> NoReturn:
        """A stored answer that is not one: a miss (it says nothing of the store's health:
        counts nothing, never opens the tier's circuit), deleted, said once per tier."""
        self.counts["unreadable"] += 1
        self.counts["misses"] += 1  # served as one
        if not self._warned_unreadable:
            self._warned_unreadable = True
            log.warning("router: cache %r: a stored answer could not be read (%s); deleted and served as a "
                        "miss (further ones count in cache_stats(): this_process.unreadable)", self.name, why)
        self._in_background(lambda: self.store.delete(key, payload))
        raise TargetFailure(Outcome.CACHE_MISS, f"the stored answer could not be read back ({why}); deleted")

    async def alookup(self, request: Request) -> tuple[Response, CacheHit]:
        """`lookup` without blocking the event loop on a store that does I/O."""
        if self.writer is None:
            return self.lookup(request)
        return await asyncio.to_thread(self.lookup, request)

    def keep(self, key: str, payload: str) -> None:
        """Store an answer (already encoded) under `key`, unless it is too large."""
        if len(payload) > self.options.max_answer_bytes or len(payload.encode()) > self.options.max_answer_bytes:
            self.counts["too_large"] += 1
            return
        entry = Entry(key, payload, time.time())
        if self.writer is None:
            self._put_many([entry])
            return
        self._queued_answer(key, entry.now)  # (drops a forked parent's queue first)
        self._pending[key] = entry
        if not self._queued(self.writer.submit_batched(entry)):
            self._forget([entry])

    def _put_many(self, entries: list[Entry]) -> None:
        if self._write(lambda: self.store.put_many(entries), len(entries)):
            self.counts["writes"] += len(entries)
        self._forget(entries)

    def _forget(self, entries: list[Entry]) -> None:
        """Written (or failed): no longer read from the queue. A newer answer queued under the
        same key meanwhile stays."""
        for entry in entries:
            if self._pending.get(entry.key) is entry:
                self._pending.pop(entry.key, None)

    def _touch(self, key: str, now: float) -> None:
        self._in_background(lambda: self.store.touch(key, now))

    def _in_background(self, write: Callable[[], None]) -> None:
        """One write of one entry, off the call path where the store does I/O."""
        def job() -> None:
            self._write(write, 1)

        if self.writer is None:
            job()
        else:
            self._queued(self.writer.submit(job))

    def _write(self, write: Callable[[], None], count: int) -> bool:
        """Run one write of `count` answers; a failure is counted and logged (once), never raised."""
        try:
            write()
        except Exception as exc:
            self.counts["write_errors"] += count
            self._trouble("write", exc)
            return False
        self._works("write")
        return True

    def _queued(self, accepted: bool) -> bool:
        if not accepted:
            assert self.writer is not None
            self._trouble("write", RuntimeError(f"{self.writer.dropped} writes dropped: the store is too slow"))
        return accepted

    def _trouble(self, kind: str, exc: BaseException) -> None:
        if kind not in self._failing:
            self._failing.add(kind)
            log.warning("router: cache %r: %s failed (%s: %s); calls go on without it", self.name, kind,
                        type(exc).__name__, exc)

    def _works(self, kind: str) -> None:
        if kind in self._failing:
            self._failing.discard(kind)
            log.info("router: cache %r: %s works again", self.name, kind)

    def flush(self, timeout: float = 5.0) -> bool:
        return self.writer.flush(timeout) if self.writer is not None else True

    def stats(self) -> dict[str, Any]:
        self.flush()
        info: dict[str, Any] = {"backend": self.store.backend, "ttl": self.options.ttl,
                                "max_entries": self.options.max_entries}
        if self.options.path:
            info["path"] = self.options.path
        info.update(self.store.stats(time.time()))
        info["this_process"] = dict(self.counts)
        return info

    def clear(self) -> int:
        self.flush()
        return self.store.clear()

    def close(self) -> None:
        self.flush()
        self.store.close()


class AnswerCaches:
    """Every cache tier of one Router, and which chains write to which."""

    def __init__(self, caches: Mapping[str, AnswerCache], chains: Mapping[str, ChainConfig]) -> None:
        self.caches = dict(caches)
        self._writes = {name: [self.caches[t] for t in chain.targets if t in self.caches]
                        for name, chain in chains.items()}

    def keeps(self, chain: str, request: Request) -> bool:
        """Will an answer to `request` on `chain` be written to a cache tier?"""
        return request.cache and bool(self._writes.get(chain))

    def answered(self, chain: str, request: Request, config: TargetConfig, response: Response, route: Route) -> None:
        """The hook: `config` answered `request` on `chain`; keep the answer if it deserves it."""
        caches = self._writes.get(chain)
        if not caches or not request.cache or config.degraded or config.cache is not None:
            return
        reason = why_not_kept(request, response, route, config.params)
        if reason is not None:
            log.debug("router: answer of %r not cached: %s", config.name, reason)
            return
        key, payload = cache_key(request), encode(response)
        for cache in caches:
            cache.keep(key, payload)

    def flush(self, timeout: float = 5.0) -> bool:
        return all([cache.flush(timeout) for cache in self.caches.values()])

    def close(self) -> None:
        for cache in self.caches.values():
            cache.close()


def open_caches(config: RouterConfig) -> AnswerCaches:
    """The cache tiers of `config`, their stores opened (a store that cannot be: ConfigError)."""
    caches: dict[str, AnswerCache] = {}
    client: Any = None
    for name, target in config.targets.items():
        options = target.cache
        if options is None:
            continue
        store: AnswerStore
        if options.backend == "sqlite":
            assert options.path is not None
            try:
                store = SqliteStore(options.path, options.ttl, options.max_entries)
            except Exception as exc:
                raise ConfigError(f"cannot open the sqlite cache {options.path}: {type(exc).__name__}: {exc}",
                                  file=config.source, key_path=f"targets.{name}.path") from None
        elif options.backend == "redis":
            from .redis_answers import RedisStore, redis_client

            if client is None:
                try:
                    client = redis_client(config.state.url or "")
                except ImportError:
                    raise ConfigError("the redis cache backend needs the redis package: pip install "
                                      "'failover-router[redis]'", file=config.source,
                                      key_path=f"targets.{name}.backend") from None
            store = RedisStore(client, config.state.namespace, name, options.ttl, options.max_entries)
        else:
            store = MemoryStore(options.ttl, options.max_entries)
        caches[name] = AnswerCache(target, store)
    return AnswerCaches(caches, config.chains)
