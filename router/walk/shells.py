"""The walk's shells: the only loops, `chain_sync` and `chain_async`, mirror images that
differ in `await` alone (as tenacity's `Retrying`/`AsyncRetrying` around `BaseRetrying.iter()`).
They take rate-limit room and a bulkhead slot, run an attempt, and sleep when the core
(decisions.py) says. A plain call (`walk_sync`/`walk_async`) and the opening of a stream
(router/streaming/opening.py) are both these loops with a different `attempt`. A first
attempt that succeeds builds none of the retry machinery.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable
from typing import TYPE_CHECKING, TypeVar

from .decisions import Walk
from .parts import Admission, Member, Won

if TYPE_CHECKING:
    from ..response import Response

T = TypeVar("T")


def chain_sync(walk: Walk, members: Iterable[Member], attempt: Callable[[Walk, Member, Admission], T]) -> Won[T] | None:
    for member in members:
        tries = walk.tries(member)
        wait = tries.resumed()
        while wait is not None:
            if wait:
                walk.crew.sleep(wait)
            member.target.ready()  # before the attempt's clock starts
            try:
                tries.room(member.guard.room(walk.cost(), tries.rate_wait()))
                admission = tries.admit(member.guard.bulkhead.acquire(walk.deadline))
                return Won(member, admission, attempt(walk, member, admission))
            except BaseException as exc:
                error = exc
            wait = tries.failed(error)  # outside `except`: what it raises does not carry the raw error along
    return None


async def chain_async(walk: Walk, members: Iterable[Member],
                      attempt: Callable[[Walk, Member, Admission], Awaitable[T]]) -> Won[T] | None:
    for member in members:
        tries = walk.tries(member)
        wait = tries.resumed()
        while wait is not None:
            if wait:
                await walk.crew.async_sleep(wait)
            await member.target.aready()  # before the attempt's clock starts
            try:
                tries.room(await member.guard.room_async(walk.cost(), tries.rate_wait()))
                admission = tries.admit(await member.guard.bulkhead.acquire_async(walk.deadline))
                return Won(member, admission, await attempt(walk, member, admission))
            except BaseException as exc:
                error = exc
            wait = tries.failed(error)  # outside `except`: what it raises does not carry the raw error along
    return None


def walk_sync(walk: Walk) -> Response:
    try:
        won = chain_sync(walk, walk.members(), _complete_sync)
        return walk.answer(won) if won is not None else walk.give_up()
    except BaseException as exc:
        walk.abandoned(exc)  # cancelled: the call is over all the same
        raise


async def walk_async(walk: Walk) -> Response:
    try:
        won = await chain_async(walk, walk.members(), _complete_async)
        return walk.answer(won) if won is not None else walk.give_up()
    except BaseException as exc:
        walk.abandoned(exc)  # cancelled: the call is over all the same
        raise


def _complete_sync(walk: Walk, member: Member, admission: Admission) -> Response:
    return member.target.complete(walk.request, timeout=admission.timeout, note=walk.note(member.config))


async def _complete_async(walk: Walk, member: Member, admission: Admission) -> Response:
    return await member.target.acomplete(walk.request, timeout=admission.timeout, note=walk.note(member.config))
