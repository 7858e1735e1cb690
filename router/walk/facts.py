"""The facts of a request and an answer that the GenAI semantic conventions name, for the
walk's detail events (`attempt_start`, `answer`: observe/events.py). Built only when a
listener takes those events (observe/otel.py does)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ..config.schema import TargetConfig
from ..response import Response
from .parts import StreamEnd


def max_tokens(params: Mapping[str, Any]) -> Any:
    value = params.get("max_tokens")
    return params.get("max_completion_tokens") if value is None else value


def asked_of(config: TargetConfig, params: Mapping[str, Any]) -> dict[str, Any]:
    """What was asked of `config`: provider and model as the provider knows them (litellm's
    "openai/gpt-4o-mini" is openai's "gpt-4o-mini"; a local model is its file's name),
    max_tokens and temperature (the call's, else the target's `params`)."""
    model = config.model or ""
    if config.is_remote:
        provider, _, name = model.partition("/") if "/" in model else (config.provider, "", model)
    else:
        provider, name = config.provider, model
        if config.local is not None and not name:
            name = config.local.model_path.replace("\\", "/").rsplit("/", 1)[-1].removesuffix(".gguf")
    merged = {**config.params, **params}
    return {"provider": provider, "model": name or config.name, "max_tokens": max_tokens(merged),
            "temperature": merged.get("temperature")}


def answer_facts(response: Response | None, ended: StreamEnd | None, *, content: bool) -> dict[str, Any]:
    """Model, usage and finish reasons of a plain call's `response` or of a stream that
    `ended`; the answer's text only when `content` is asked for."""
    if response is not None:
        usage, model, text = response.usage, response.model, response.text if content else None
        reasons = tuple(c.finish_reason for c in response.choices if c.finish_reason)
    else:
        last = ended.last if ended is not None else None
        usage, model = (last.usage, last.model) if last is not None else (None, None)
        reasons = (ended.finish_reason,) if ended is not None and ended.finish_reason else ()
        text = "".join(ended.parts) if content and ended is not None else None
    return {"response_model": model or None, "input_tokens": getattr(usage, "prompt_tokens", None),
            "output_tokens": getattr(usage, "completion_tokens", None), "finish_reasons": reasons or None,
            "content": text}
