"""Where a cache tier's answers live: `MemoryStore` (this process), `SqliteStore` (a file
that survives restarts and that several processes share) or `RedisStore`
(redis_answers.py: the whole fleet).

Every store keeps, per key, the answer's text, when it was stored (wall-clock seconds:
processes and machines compare them) and when it was last served (least recently used
entries go first beyond `max_entries`). `get` is what a call waits for; `put` and
`touch` (a hit: last used, hit count) run off the call path for the stores that do I/O.
"""

from __future__ import annotations

import os
import threading
import time
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import sqlite3


@dataclass(frozen=True)
class Stored:
    payload: str  # the answer (policy.encode)
    stored_at: float  # time.time() when it was written


class UnreadableEntry(Exception):
    """What a store holds under a key is not an answer it can return (not text, a time that
    is not a number). `payload` is as stored: `delete` takes it to remove just that."""

    def __init__(self, payload: Any, why: str) -> None:
        super().__init__(why)
        self.payload = payload


@dataclass(frozen=True)
class Entry:
    """One answer to store: under `key`, encoded, as of `now` (epoch seconds)."""

    key: str
    payload: str
    now: float


class AnswerStore:
    """The interface of the three stores."""

    backend = ""
    does_io = True  # writes go through the background writer

    def get(self, key: str, now: float) -> Stored | None:
        """The fresh answer under `key`, or None (missing or older than the ttl)."""
        raise NotImplementedError

    def put(self, key: str, payload: str, now: float) -> None:
        raise NotImplementedError

    def put_many(self, entries: Sequence[Entry]) -> None:
        """Several answers at once (the background writer's batch): one round trip or one
        transaction where the store can, not one per answer."""
        for entry in entries:
            self.put(entry.key, entry.payload, entry.now)

    def touch(self, key: str, now: float) -> None:
        """`key` was served: it is the most recently used, and one hit more."""
        raise NotImplementedError

    def delete(self, key: str, payload: Any) -> None:
        """Remove `key` if it still holds `payload` (an unreadable answer; a newer answer
        written meanwhile stays)."""
        raise NotImplementedError

    def stats(self, now: float) -> dict[str, Any]:
        """entries, bytes, hits, oldest_s, newest_s (ages of the fresh entries)."""
        raise NotImplementedError

    def clear(self) -> int:
        """Remove every entry; how many there were."""
        raise NotImplementedError

    def close(self) -> None:
        pass


class MemoryStore(AnswerStore):
    """An LRU dict in this process: each Router has its own, gone with the process."""

    backend = "memory"
    does_io = False

    def __init__(self, ttl: float, max_entries: int) -> None:
        self.ttl = ttl
        self.max_entries = max_entries
        self._entries: OrderedDict[str, list[Any]] = OrderedDict()  # key -> [payload, stored_at, hits]
        self._lock = threading.Lock()

    def get(self, key: str, now: float) -> Stored | None:
        with self._lock:
            entry = self._entries.get(key)
            if entry is None:
                return None
            if entry[1] < now - self.ttl:
                del self._entries[key]
                return None
            return Stored(entry[0], entry[1])

    def put(self, key: str, payload: str, now: float) -> None:
        with self._lock:
            self._entries[key] = [payload, now, 0]
            self._entries.move_to_end(key)
            while len(self._entries) > self.max_entries:
                self._entries.popitem(last=False)

    def touch(self, key: str, now: float) -> None:
        with self._lock:
            entry = self._entries.get(key)
            if entry is not None:
                entry[2] += 1
                self._entries.move_to_end(key)

    def delete(self, key: str, payload: Any) -> None:
        with self._lock:
            entry = self._entries.get(key)
            if entry is not None and entry[0] == payload:
                del self._entries[key]

    def stats(self, now: float) -> dict[str, Any]:
        with self._lock:
            fresh = [e for e in self._entries.values() if e[1] >= now - self.ttl]
        return summarize(len(fresh), sum(len(e[0].encode()) for e in fresh), sum(e[2] for e in fresh),
                        [e[1] for e in fresh], now)

    def clear(self) -> int:
        with self._lock:
            count = len(self._entries)
            self._entries.clear()
        return count


_SCHEMA = """
CREATE TABLE IF NOT EXISTS answers (
    key TEXT PRIMARY KEY,
    payload TEXT NOT NULL,
    stored_at REAL NOT NULL,
    last_used REAL NOT NULL,
    hits INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS answers_last_used ON answers (last_used);
CREATE INDEX IF NOT EXISTS answers_stored_at ON answers (stored_at);
-- the row count, kept by triggers: trimming to max_entries then costs the excess, not a scan
CREATE TABLE IF NOT EXISTS counts (name TEXT PRIMARY KEY, value INTEGER NOT NULL);
INSERT OR IGNORE INTO counts (name, value) SELECT 'answers', COUNT(*) FROM answers;
CREATE TRIGGER IF NOT EXISTS answers_added AFTER INSERT ON answers
BEGIN UPDATE counts SET value = value + 1 WHERE name = 'answers'; END;
CREATE TRIGGER IF NOT EXISTS answers_removed AFTER DELETE ON answers
BEGIN UPDATE counts SET value = value - 1 WHERE name = 'answers'; END;
"""
_PUT = """INSERT INTO answers (key, payload, stored_at, last_used, hits) VALUES (?, ?, ?, ?, 0)
ON CONFLICT (key) DO UPDATE SET payload = excluded.payload, stored_at = excluded.stored_at,
last_used = excluded.last_used"""
# the least recently used beyond max_entries (an upsert that replaces a key fires no INSERT trigger)
_TRIM = """DELETE FROM answers WHERE key IN (SELECT key FROM answers ORDER BY last_used
LIMIT max(0, (SELECT value FROM counts WHERE name = 'answers') - ?))"""
READ_BUSY_S = 1.0  # a read waits at most this long for another process's write lock
WRITE_BUSY_S = 10.0  # writes run in the background: they may wait longer


class SqliteStore(AnswerStore):
    """One sqlite file, in WAL mode: readers never wait for a writer, and several processes
    (and Routers) share it; a write that finds the file locked by another process waits up
    to `WRITE_BUSY_S` (sqlite's busy timeout) instead of failing. One connection reads (for
    calls), one writes (the background writer, `clear`), so a read never queues behind a
    write that waits for another process. A write is one transaction: upsert, drop what
    the ttl expired, drop the least recently used beyond `max_entries` (the row count is
    kept by triggers, so this costs the excess, not a scan: ~35-80 us of CPU per write with
    10000 entries, against ~350 us when it walked the index). A process forked from one
    that had the file open opens its own connections (sqlite forbids using a parent's) and
    locks."""

    backend = "sqlite"

    def __init__(self, path: str, ttl: float, max_entries: int) -> None:
        self.path = path
        self.ttl = ttl
        self.max_entries = max_entries
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        self._open()

    def _open(self) -> None:
        self._pid = os.getpid()
        self._writer = self._connect(WRITE_BUSY_S)
        self._create()
        self._reader = self._connect(READ_BUSY_S)
        self._write_lock = threading.Lock()
        self._read_lock = threading.Lock()

    def _own(self) -> None:
        """In a forked child, connections and locks of its own (the parent's are left alone:
        closing them here could release the parent's locks on the file)."""
        if self._pid != os.getpid():
            self._open()

    def _connect(self, busy_s: float) -> sqlite3.Connection:
        import sqlite3  # on first use: `import router` stays lean

        # isolation_level=None: autocommit, transactions only where this code opens them
        connection = sqlite3.connect(self.path, timeout=busy_s, isolation_level=None, check_same_thread=False)
        connection.execute("PRAGMA synchronous=NORMAL")  # WAL: durable across a crash of the process
        return connection

    def _create(self) -> None:
        """WAL mode and the table. Switching to WAL does not wait on sqlite's busy handler,
        so two processes opening a new file at once retry here, as long as a write would."""
        import sqlite3

        give_up = time.monotonic() + WRITE_BUSY_S
        while True:
            try:
                self._writer.execute("PRAGMA journal_mode=WAL")
                self._writer.executescript(_SCHEMA)
                return
            except sqlite3.OperationalError as exc:
                if "locked" not in str(exc) or time.monotonic() > give_up:
                    raise
                time.sleep(0.02)

    def get(self, key: str, now: float) -> Stored | None:
        self._own()
        with self._read_lock:
            row = self._reader.execute("SELECT payload, stored_at FROM answers WHERE key = ? AND stored_at >= ?",
                                       (key, now - self.ttl)).fetchone()
        if row is None:
            return None
        payload, stored_at = row
        try:
            return Stored(payload if isinstance(payload, str) else bytes(payload).decode(), float(stored_at))
        except (ValueError, TypeError) as exc:
            raise UnreadableEntry(payload, f"{type(exc).__name__}: {exc}") from None

    def put(self, key: str, payload: str, now: float) -> None:
        self.put_many([Entry(key, payload, now)])

    def put_many(self, entries: Sequence[Entry]) -> None:
        """One transaction: the upserts, then one expiry and one trim for them all."""
        self._own()
        with self._write_lock:
            self._writer.execute("BEGIN IMMEDIATE")
            try:
                self._writer.executemany(_PUT, [(e.key, e.payload, e.now, e.now) for e in entries])
                self._writer.execute("DELETE FROM answers WHERE stored_at < ?", (entries[-1].now - self.ttl,))
                self._writer.execute(_TRIM, (self.max_entries,))
                self._writer.execute("COMMIT")
            except BaseException:
                self._writer.execute("ROLLBACK")
                raise

    def touch(self, key: str, now: float) -> None:
        self._own()
        with self._write_lock:
            self._writer.execute("UPDATE answers SET last_used = ?, hits = hits + 1 WHERE key = ?", (now, key))

    def delete(self, key: str, payload: Any) -> None:
        self._own()
        with self._write_lock:
            self._writer.execute("DELETE FROM answers WHERE key = ? AND payload IS ?", (key, payload))

    def stats(self, now: float) -> dict[str, Any]:
        self._own()
        with self._read_lock:
            count, size, hits, oldest, newest = self._reader.execute(
                "SELECT COUNT(*), SUM(LENGTH(CAST(payload AS BLOB))), SUM(hits), MIN(stored_at), MAX(stored_at) "
                "FROM answers WHERE stored_at >= ?", (now - self.ttl,)).fetchone()
        return summarize(count, size or 0, hits or 0, [t for t in (oldest, newest) if t is not None], now)

    def clear(self) -> int:
        self._own()
        with self._write_lock:
            return self._writer.execute("DELETE FROM answers").rowcount

    def close(self) -> None:
        with self._write_lock, self._read_lock:
            self._writer.close()
            self._reader.close()


def summarize(entries: int, size: int, hits: int, stored: list[float], now: float) -> dict[str, Any]:
    return {"entries": entries, "bytes": size, "hits": hits,
            "oldest_s": round(now - min(stored), 3) if stored else None,
            "newest_s": round(now - max(stored), 3) if stored else None}
