"""A cache tier as a target of the chain (`provider: cache`): it answers with the stored
answer to the same request (router/cache/), or fails with `cache_miss`, an outcome that
counts against nothing and is never retried, so its circuit never opens on misses.

A stream served from the cache replays the answer as chunks (a few words each), in the
same shape as a provider's stream: a role chunk, the content, the tool calls, a finish.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Iterator
from typing import TYPE_CHECKING, Any

from ..cache.tier import AnswerCache
from ..request import Request
from ..config.schema import TargetConfig
from . import Note, Target

if TYPE_CHECKING:
    from ..response import Response

WORDS_PER_CHUNK = 8
_WORDS = re.compile(r"\S+\s*|\s+")


class CacheTarget(Target):
    streams_async = True  # the replay is an async generator (the lookup in a thread when it does I/O)
    continues_streams = False  # a stored answer does not start from someone else's text

    def __init__(self, config: TargetConfig, cache: AnswerCache) -> None:
        self.config = config
        self.cache = cache

    def complete(self, request: Request, *, timeout: float, note: Note) -> Response:
        response, hit = self.cache.lookup(request)
        note(hit)  # type: ignore[arg-type]  # a CacheHit: the walk reads its age
        return response

    async def acomplete(self, request: Request, *, timeout: float, note: Note) -> Response:
        response, hit = await self.cache.alookup(request)
        note(hit)  # type: ignore[arg-type]
        return response

    def stream(self, request: Request, *, timeout: float, note: Note, partial: str = "") -> Iterator[dict[str, Any]]:
        response, hit = self.cache.lookup(request)  # now, not at the first chunk: a miss fails the attempt
        note(hit)  # type: ignore[arg-type]
        return replay(response)

    async def astream(self, request: Request, *, timeout: float, note: Note) -> AsyncIterator[dict[str, Any]]:
        response, hit = await self.cache.alookup(request)
        note(hit)  # type: ignore[arg-type]

        async def chunks() -> AsyncIterator[dict[str, Any]]:
            for chunk in replay(response):
                yield chunk

        return chunks()

    def __repr__(self) -> str:
        return f"CacheTarget({self.config.name!r}, backend={self.cache.store.backend!r})"


def replay(response: Response) -> Iterator[dict[str, Any]]:
    """`response` as OpenAI-style chunk dicts: what `answer_of` joins back into the same
    answer (reasoning, refusal, tool calls each whole, logprobs with the finish)."""
    head = {"id": response.id, "model": response.model, "created": response.created,
            "object": "chat.completion.chunk",
            **{k: getattr(response, k) for k in ("system_fingerprint", "service_tier") if getattr(response, k)}}

    def chunk(index: int, delta: dict[str, Any], finish_reason: str | None = None,
              logprobs: Any = None) -> dict[str, Any]:
        choice = {"index": index, "delta": delta, "finish_reason": finish_reason}
        if logprobs is not None:
            choice["logprobs"] = logprobs.model_dump()
        return {**head, "choices": [choice]}

    for choice in response.choices:
        message = choice.message
        yield chunk(choice.index, {"role": message.role})
        for name in ("reasoning_content", "refusal"):
            if getattr(message, name, None):
                yield chunk(choice.index, {name: getattr(message, name)})
        words = _WORDS.findall(message.content or "")
        for i in range(0, len(words), WORDS_PER_CHUNK):
            yield chunk(choice.index, {"content": "".join(words[i:i + WORDS_PER_CHUNK])})
        if message.tool_calls:
            calls = [{"index": i, **call.model_dump(exclude_none=True)} for i, call in enumerate(message.tool_calls)]
            yield chunk(choice.index, {"tool_calls": calls})
        yield chunk(choice.index, {}, choice.finish_reason, choice.logprobs)
