"""Streams: failover until the first content reaches the caller; after that, a break is
recovered as the chain's `mid_stream` says.

- opening.py: opening a stream is the walk's chain loop (walk/shells.py) with "first
  content" as an attempt's success, the chunks before it held back (`_Prelude`);
- reading.py: `Stream` and `AsyncStream`, mirrored shells that only read and close
  sources, around `_StreamCore`, which delivers chunks and judges ends and breaks;
- recovery.py: the decisions about a break after content (continue, restart or error;
  which targets; what a break is; the restart marker);
- sources.py: reading a target's chunks with exact timeouts (`first_token_timeout`,
  `stream_idle_timeout`) for both APIs.

Uses walk/ (the chain loop), targets/ (the prefill helpers), and the bottom of the tree.
"""

from .reading import AsyncStream, Stream, stream_async, stream_sync

__all__ = ["AsyncStream", "Stream", "stream_async", "stream_sync"]
