"""Rate limits: pacing calls so that a provider never has to say 429.

- provider_headers.py: reading what a provider says of its limits (Retry-After in its
  three forms, `x-ratelimit-*`, `anthropic-ratelimit-*`);
- limiter.py: `RateLimiter`, one per target: permits, a FIFO queue, pauses after a 429;
- buckets.py: the GCRA buckets a limiter takes from (this process; the Redis version is
  in state/);
- learned.py: limits learned from the headers, for targets with no `rate_limit` or a
  tighter one than configured.

Uses config/, request (a call's token estimate) and clock only.
"""
