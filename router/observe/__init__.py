"""What the router lets its operators see, and what it keeps from them.

- events.py: `Event`, the listener list of a Router and the logging listener (text or
  JSON lines, the input of `router advise`);
- metrics.py: the Prometheus listener (public as `router.metrics`);
- redact.py: `Secret` and `Redactor`: keys out of every log line, route and error.

Uses nothing else of the router: every other package may report through it.
"""
