"""`router serve`: the router as an OpenAI-compatible HTTP gateway, for any language and
any client that lets you set a `base_url`.

- app.py: the Starlette app; each route a small handler over `Router.acomplete` (the
  gateway has no chain logic of its own);
- auth.py: bearer keys (sha256, compared in constant time), chain allow-lists, per-key
  rate limits on the targets' limiter;
- shapes.py: answers, chunks, the route and errors as the bytes OpenAI's clients read;
- errors.py: the router's exceptions as OpenAI-shaped errors with their HTTP status;
- responses.py: sending a JSON answer or an SSE stream while watching for the client
  hanging up (which cancels the call upstream);
- process.py: the uvicorn server(s): loopback-only without keys, `--workers`, SIGTERM drain.

Imported only by `router serve` (cli.py, lazily): `import router` never loads it, nor
starlette or uvicorn (the optional extra `[serve]`).
"""
