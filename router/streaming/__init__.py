"""Streams: failover until the first content reaches the caller; after that, a break is
recovered as the chain's `mid_stream` says (router/recovery.py: continue, restart or error).

- opening.py: opening a stream is the walk's chain loop (walk/shells.py) with "first
  content" as an attempt's success, the chunks before it held back (`_Prelude`);
- reading.py: `Stream` and `AsyncStream`, mirrored shells that only read and close
  sources, around `_StreamCore`, which delivers chunks and judges ends and breaks.

Timing is exact for both APIs (`first_token_timeout`, `stream_idle_timeout`): see
router/stream_sources.py.
"""

from .reading import AsyncStream, Stream, stream_async, stream_sync

__all__ = ["AsyncStream", "Stream", "stream_async", "stream_sync"]
