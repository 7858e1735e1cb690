"""What the walk's layers hand each other: the `Crew` a call works with, a chain `Member`,
an attempt's `Admission`, the attempt that `Won`, how a stream ended (`StreamEnd`), a
failure's `Verdict`, and the two refusals that send nothing (`NoCapacity`, `Throttled`).
Data only, so that the core (decisions.py), the shells (shells.py) and streams
(router/streaming/) share them without importing each other."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any, Generic, NamedTuple, TypeVar

from ..guards.circuit import Ticket
from ..cache.tier import AnswerCaches
from ..observe.events import Events
from ..guards.guard import Guard
from ..limits.limiter import Permit
from ..outcomes import Failure, Handling
from ..response import Chunk
from ..config.schema import TargetConfig
from ..targets import Target

T = TypeVar("T")


class Crew(NamedTuple):
    """What a walk works with, handed over by the Router for each call."""

    targets: Mapping[str, Target]  # enabled targets only
    guards: Mapping[str, Guard]  # every configured target
    events: Events
    redact: Callable[[str], str]
    sleep: Callable[[float], Any]
    async_sleep: Callable[[float], Awaitable[Any]]
    offline: bool  # remote targets are skipped
    answers: AnswerCaches | None = None  # the cache tiers, fed by the "answered" hook


class Member(NamedTuple):
    """One target of the chain, as the walk sees it."""

    config: TargetConfig
    target: Target
    guard: Guard


class Admission(NamedTuple):
    """One attempt let through: its circuit ticket, timeout, start time and rate-limit permit."""

    ticket: Ticket
    timeout: float
    started: float
    permit: Permit | None = None


@dataclass(slots=True)
class Won(Generic[T]):
    """The attempt that succeeded, and what it returned."""

    member: Member
    admission: Admission
    value: T


class StreamEnd(NamedTuple):
    """How a stream that finished ended, for the `answer` event: its last chunk (model and
    usage), finish_reason, and the text it delivered (in parts, joined only when asked)."""

    last: Chunk | None
    finish_reason: str | None
    parts: list[str]


class Verdict(NamedTuple):
    failure: Failure
    handling: Handling


class NoCapacity(Exception):
    """The bulkhead had no slot in time (already recorded)."""

    def __init__(self, failure: Failure) -> None:
        self.failure = failure
        super().__init__(failure.message)


class Throttled(NoCapacity):
    """The rate limit had no room in time (already recorded): nothing sent, as with a full bulkhead."""

