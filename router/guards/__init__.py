"""What stands between the walk and one target: its `Guard` and the parts it holds.

- guard.py: `Guard`, one per target, and the attempt protocol the walk follows (room,
  admit, then succeeded / failed / released);
- circuit.py: the circuit breaker, on pybreaker's state machine (its internals stay there);
- retry_budget.py: the retry budget, a token bucket per target (gRPC-style throttling);
- bulkhead.py: `max_concurrency` per target, one FIFO line for threads and tasks;
- retry.py: how long to wait before a retry and when to stop (tenacity's strategies).

Uses limits/ (the rate limiter a guard holds), config/, and the bottom of the tree
(outcomes, response, deadline, clock). Where the counts live is state/'s business: it
builds guards with memory or Redis parts.
"""
