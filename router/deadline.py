"""`Deadline`: the one type for "this must be over by then".

Time in the router has three words, each with one meaning:
- a *deadline* is a point in time (`Deadline`): the call's (`deadline:`), a local model's
  queue-and-generate limit, a stream's first token;
- a *timeout* is seconds one wait or one attempt may take (`timeout`, `queue_timeout`,
  `first_token_timeout`, `stream_idle_timeout`), usually cut to what a deadline leaves;
- a *wait* is seconds slept on purpose (backoff, Retry-After).

On the monotonic clock (clock.py, which `router advise --replay` swaps for a simulated
one): wall-clock jumps never stretch or shrink a deadline.
"""

from __future__ import annotations

from . import clock


class Deadline:
    """A point in time, `seconds` from now when made."""

    __slots__ = ("end", "seconds")

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.end = clock.monotonic() + seconds

    def renewed(self) -> Deadline:
        """The same length of time, counted again from now (a stream's recovery after a
        break gets the caller's deadline anew)."""
        return Deadline(self.seconds)

    def remaining(self) -> float:
        """Seconds left; zero or less once passed."""
        return self.end - clock.monotonic()

    def passed(self) -> bool:
        return clock.monotonic() >= self.end

    def cap(self, timeout: float) -> float:
        """`timeout`, or what is left when that is less (never negative)."""
        return max(0.0, min(timeout, self.end - clock.monotonic()))

    def __repr__(self) -> str:
        return f"Deadline(remaining={self.remaining():.3f})"
