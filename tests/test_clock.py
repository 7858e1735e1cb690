"""`clock.within`: a timeout that never swallows the caller's cancellation. Every async
read of a stream, a bulkhead's queue and `clock.async_wait` go through it."""

from __future__ import annotations

import asyncio

import pytest

from router.clock import within


def test_a_cancellation_in_the_turn_the_awaited_thing_finishes_is_still_raised():
    """asyncio.wait_for on Python 3.11 returns 1 here: the caller's cancel is lost (gh-86296)."""
    async def main() -> None:
        loop = asyncio.get_running_loop()
        ready = loop.create_future()
        task = asyncio.ensure_future(within(ready, 5.0))
        await asyncio.sleep(0)  # the task now waits on `ready`
        ready.set_result(1)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(main())


def test_a_cancellation_while_a_queue_hands_over_an_item_is_raised():
    async def main() -> None:
        items: asyncio.Queue[int] = asyncio.Queue()
        task = asyncio.ensure_future(within(items.get(), 5.0))
        await asyncio.sleep(0)
        items.put_nowait(7)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(main())


def test_what_does_not_come_in_time_is_a_timeout_and_what_comes_is_returned():
    async def main() -> None:
        loop = asyncio.get_running_loop()
        never = loop.create_future()
        with pytest.raises(asyncio.TimeoutError):
            await within(never, 0.05)
        assert never.cancelled()
        assert await within(asyncio.sleep(0.01, result="late enough"), 1.0) == "late enough"
        assert await within(asyncio.sleep(0, result="no limit"), None) == "no limit"

    asyncio.run(main())
