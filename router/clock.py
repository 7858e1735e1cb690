"""The router's clock, in one replaceable place.

Deadlines (guards/retry.py) and circuits (guards/circuit.py) read the time through here, so that
`router advise --replay` can run the real chain walk on a simulated clock: hours of
recorded traffic replay in seconds of CPU. Outside a replay these are exactly
`time.monotonic` and `datetime.now(timezone.utc)`.

`simulated(clock)` swaps the source for the whole process while it is active: it is
meant for a replay (a CLI command), not for a process that also serves live calls.
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
import threading
import time
from collections.abc import Awaitable, Callable, Iterator
from datetime import datetime, timezone
from typing import TypeVar

T = TypeVar("T")

_monotonic: Callable[[], float] = time.monotonic
_wall: Callable[[], datetime] = lambda: datetime.now(timezone.utc)  # noqa: E731


_simulated: SimulatedClock | None = None


def monotonic() -> float:
    """Seconds on a clock that never goes back (deadlines)."""
    return _monotonic()


def utcnow() -> datetime:
    """The current time in UTC (when a circuit opened, when it may probe)."""
    return _wall()


class SimulatedClock:
    """A clock that only moves when told to: `advance(seconds)`, or `sleep(seconds)`."""

    def __init__(self, start: float = 0.0) -> None:
        self.now = start

    def advance(self, seconds: float) -> None:
        self.now += max(0.0, seconds)

    sleep = advance

    async def async_sleep(self, seconds: float) -> None:
        self.advance(seconds)


@contextlib.contextmanager
def simulated(clock: SimulatedClock) -> Iterator[SimulatedClock]:
    """Read `clock` instead of the real time until the block ends."""
    global _monotonic, _wall, _simulated
    saved = _monotonic, _wall, _simulated
    _monotonic = lambda: clock.now  # noqa: E731
    _wall = lambda: datetime.fromtimestamp(clock.now, timezone.utc)  # noqa: E731
    _simulated = clock
    try:
        yield clock
    finally:
        _monotonic, _wall, _simulated = saved


def wait(event: threading.Event, seconds: float | None) -> bool:
    """`event.wait(seconds)`, on this clock: a simulated clock moves on by `seconds` at once
    (nobody else can set the event in a replay: it runs one call at a time)."""
    if _simulated is None:
        return event.wait(seconds)
    if seconds is not None:
        _simulated.advance(seconds)
    return event.is_set()


async def async_wait(event: asyncio.Event, seconds: float | None) -> bool:
    """`wait` for an asyncio event."""
    if _simulated is None:
        try:
            await within(event.wait(), seconds)
        except asyncio.TimeoutError:
            return False
        return True
    if seconds is not None:
        _simulated.advance(seconds)
    return event.is_set()


async def within(awaitable: Awaitable[T], seconds: float | None) -> T:
    """`await awaitable`, raising `asyncio.TimeoutError` after `seconds` (None: no limit),
    and always raising the caller's own cancellation.

    `asyncio.wait_for` before Python 3.12 returns the result instead when the awaited thing
    finished in the same loop turn as the caller was cancelled (CPython gh-86296). That lost
    a gateway client's hang-up whenever it coincided with a chunk of the local model: 1
    first stream in 6-8, under load, went on generating its 3000 tokens for nobody.
    """
    if sys.version_info >= (3, 11):
        async with asyncio.timeout(seconds):
            return await awaitable
    future = asyncio.ensure_future(awaitable)  # Python 3.10: no asyncio.timeout
    try:
        done, _ = await asyncio.wait((future,), timeout=seconds)
    except BaseException:
        future.cancel()
        raise
    if not done:
        future.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await future
        raise asyncio.TimeoutError
    return future.result()
