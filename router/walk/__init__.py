"""The chain walk: skip, attempt, retry, fail over, and record the route.

For each target of the chain, in order: pass it over when it is disabled, offline, known
too small, out of time or its circuit is open; otherwise attempt it through its `Guard`
(guards/guard.py: rate-limit room, bulkhead slot, circuit admission), classify what went wrong
(outcomes.py), and let the outcome table say whether to retry it (after a wait from
guards/retry.py), count it, or fail over. The first answer wins; when none comes, the chain's
static reply or `AllTargetsFailed`.

- parts.py: the data the layers hand each other (`Crew`, `Member`, `Admission`, `Won`,
  `StreamEnd`, `Verdict`, `NoCapacity`, `Throttled`);
- decisions.py: the core, `Walk` (the call) and `Tries` (one target): every decision, no I/O;
- record.py: `CallRecord`, what a `Walk` leaves: the route (its attempts) and the events,
  with what was measured for router advise;
- facts.py: what the GenAI conventions name of a request and an answer, for the detail
  events (observe/events.py);
- shells.py: the only loops, `chain_sync`/`chain_async` and `walk_sync`/`walk_async`,
  mirror images that differ in `await` alone.

The walk knows nothing of the Router: it gets a `Crew` (targets, guards, events, redactor,
sleep functions) for each call.
"""

from .decisions import Tries, Walk
from .parts import Admission, Crew, Member, NoCapacity, StreamEnd, Throttled, Verdict, Won
from .shells import chain_async, chain_sync, walk_async, walk_sync

__all__ = ["Admission", "Crew", "Member", "NoCapacity", "StreamEnd", "Throttled", "Tries", "Verdict", "Walk", "Won",
           "chain_async", "chain_sync", "walk_async", "walk_sync"]
