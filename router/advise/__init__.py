"""`router advise`: turn the router's own event log into tuned settings.

- evidence.py reads a JSON event log (`events: {log: json}`) into per-target evidence:
  attempts by outcome, latency percentiles, runs of failures, outages, retries that worked,
  Retry-After values;
- recommend.py turns that evidence into recommended `timeout`, `first_token_timeout`,
  `retry.*` and `breaker.*` values, each with its reason, or "unchanged" when too thin;
- replay.py plays the log back through real Routers (the walk's own decisions) on a
  simulated clock, for the current and the recommended config: the "what if";
- yaml_edit.py writes the recommendations into the config's text, comments kept.

Nothing here is imported by `import router`; the CLI (cli.py) loads it on demand.
"""
