"""What the detail events say was asked of a target: provider and model as the provider knows them."""

from __future__ import annotations

from router.config import config_from_dict
from router.walk.facts import asked_of


def target(spec: dict) -> object:
    return config_from_dict({"targets": {"t": spec}, "chains": {"default": ["t"]}}).targets["t"]


def test_a_litellm_model_string_is_split_into_provider_and_the_providers_model_name():
    facts = asked_of(target({"model": "openai/gpt-4o-mini", "api_key": "k"}), {"max_tokens": 9})
    assert facts == {"provider": "openai", "model": "gpt-4o-mini", "max_tokens": 9, "temperature": None}
    routed = asked_of(target({"model": "openrouter/anthropic/claude-3-5-haiku", "api_key": "k"}), {})
    assert (routed["provider"], routed["model"]) == ("openrouter", "anthropic/claude-3-5-haiku")


def test_the_calls_parameters_win_over_the_targets_and_max_completion_tokens_counts():
    spec = {"model": "anthropic/claude-3-5-haiku-latest", "api_key": "k",
            "params": {"temperature": 0.2, "max_tokens": 100}}
    assert asked_of(target(spec), {"temperature": 0.7}) == {
        "provider": "anthropic", "model": "claude-3-5-haiku-latest", "max_tokens": 100, "temperature": 0.7}
    assert asked_of(target({"model": "openai/o3", "api_key": "k"}), {"max_completion_tokens": 5})["max_tokens"] == 5


def test_a_local_model_is_named_by_its_file_and_a_cache_tier_by_its_target():
    local = asked_of(target({"provider": "llama_cpp", "model_path": "models/SmolLM2-135M-Instruct.Q4_1.gguf"}), {})
    assert (local["provider"], local["model"]) == ("llama_cpp", "SmolLM2-135M-Instruct.Q4_1")
    cache = asked_of(target({"provider": "cache"}), {})
    assert (cache["provider"], cache["model"]) == ("cache", "t")
