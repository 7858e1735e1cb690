"""Cached answers as a tier of the chain: the last good answer to the same request.

- policy.py: which answers are kept, under which key, and how they are stored as text;
- stores.py: where they live (this process, an sqlite file, Redis: redis_answers.py);
- writer.py: writes run after the answer is returned, off the caller's thread;
- tier.py: one cache tier (`AnswerCache`) and the Router's hook that feeds every cache
  tier of a chain with that chain's good answers (`AnswerCaches`).
The target that reads them is router/targets/cache.py.
"""
