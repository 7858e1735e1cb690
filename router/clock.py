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
import threading
import time
from collections.abc import Callable, Iterator
from datetime import datetime, timezone

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
            await asyncio.wait_for(event.wait(), seconds)
        except asyncio.TimeoutError:
            return False
        return True
    if seconds is not None:
        _simulated.advance(seconds)
    return event.is_set()
