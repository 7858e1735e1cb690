"""The router's clock, in one replaceable place.

Deadlines (retry.py) and circuits (breaker.py) read the time through here, so that
`router advise --replay` can run the real chain walk on a simulated clock: hours of
recorded traffic replay in seconds of CPU. Outside a replay these are exactly
`time.monotonic` and `datetime.now(timezone.utc)`.

`simulated(clock)` swaps the source for the whole process while it is active: it is
meant for a replay (a CLI command), not for a process that also serves live calls.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator
from datetime import datetime, timezone

_monotonic: Callable[[], float] = time.monotonic
_wall: Callable[[], datetime] = lambda: datetime.now(timezone.utc)  # noqa: E731


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
    global _monotonic, _wall
    saved = _monotonic, _wall
    _monotonic = lambda: clock.now  # noqa: E731
    _wall = lambda: datetime.fromtimestamp(clock.now, timezone.utc)  # noqa: E731
    try:
        yield clock
    finally:
        _monotonic, _wall = saved
