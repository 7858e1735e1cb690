"""Asking a target to go on from text already written: the assistant prefill.

A stream that broke after content is continued by a target that accepts that content as
the start of the assistant's turn (streaming/recovery.py decides which). Each target kind
builds its request with these two helpers, so the prefill and the token allowance left
for the rest are the same on every tier.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

_LENGTH_KEYS = ("max_tokens", "max_completion_tokens")


def prefill_messages(messages: Sequence[dict[str, Any]], partial: str) -> list[dict[str, Any]]:
    """The original messages plus the text already sent as the assistant's turn: the
    continuation is what the model writes after it, appended to the caller's stream as is."""
    return [*messages, {"role": "assistant", "content": partial}]


def continuation_params(params: dict[str, Any], spent: int) -> dict[str, Any]:
    """`params` for writing the rest of an answer that already holds `spent` tokens: the
    caller's `max_tokens` bounds the whole answer, so the continuation gets what is left
    (at least 1), not a fresh allowance on top of the text already sent."""
    limited = {key: max(1, params[key] - spent) for key in _LENGTH_KEYS if isinstance(params.get(key), int)}
    return {**params, **limited} if limited else params
