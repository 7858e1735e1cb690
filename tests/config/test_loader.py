"""Config loading: the documented shape loads, every malformed file names file and key path."""

from __future__ import annotations

import logging
import textwrap

import pytest

from router.config import load_config
from router.errors import ConfigError

GOOD = """
defaults:
  timeout: 30
  deadline: 90
  retry:   {attempts: 3, min_wait: 0.5, max_wait: 8, max_retry_after: 20}
  breaker: {fail_max: 5, reset_timeout: 60, success_threshold: 1, half_open_max_calls: 1}
targets:
  primary:
    model: openai/gpt-4o-mini
    api_key: ${ROUTER_TEST_KEY}
    timeout: 10
    retry: {attempts: 2}
  secondary:
    model: anthropic/claude-3-5-haiku-latest
    api_key: ${ROUTER_TEST_UNSET_KEY}
  local:
    provider: llama_cpp
    model_path: models/SmolLM2-135M-Instruct.Q4_1.gguf
    n_ctx: 2048
    degraded: true
chains:
  default: [primary, secondary, local]
  cheap:
    targets: [local]
    static_reply: "Service temporarily unavailable."
state:
  backend: memory
"""


def write(tmp_path, text: str):
    path = tmp_path / "config.yaml"
    path.write_text(textwrap.dedent(text))
    return path


def test_documented_shape_loads_with_inheritance_and_env(tmp_path, monkeypatch, caplog):
    monkeypatch.setenv("ROUTER_TEST_KEY", "sk-test-123456")
    monkeypatch.delenv("ROUTER_TEST_UNSET_KEY", raising=False)
    with caplog.at_level(logging.WARNING, logger="router"):
        config = load_config(write(tmp_path, GOOD))
    primary = config.targets["primary"]
    assert primary.api_key.reveal() == "sk-test-123456"
    assert "sk-test-123456" not in repr(primary)
    assert primary.timeout == 10 and primary.retry.attempts == 2
    assert primary.retry.max_wait == 8 and primary.breaker.fail_max == 5  # inherited
    assert config.targets["secondary"].disabled == "environment variable ROUTER_TEST_UNSET_KEY is not set"
    assert "ROUTER_TEST_UNSET_KEY" in caplog.text and "secondary" in caplog.text
    local = config.targets["local"]
    assert local.local.model_path == str(tmp_path / "models/SmolLM2-135M-Instruct.Q4_1.gguf")
    assert local.degraded and local.context_window == 2048
    assert config.chains["default"].targets == ("primary", "secondary", "local")
    assert config.chains["cheap"].static_reply == "Service temporarily unavailable."
    assert config.deadline == 90


def test_env_default_syntax(tmp_path, monkeypatch):
    monkeypatch.delenv("ROUTER_TEST_BASE", raising=False)
    config = load_config(write(tmp_path, """
        targets:
          a: {model: openai/m, api_base: "${ROUTER_TEST_BASE:-http://127.0.0.1:9/v1}"}
        chains: {default: [a]}
    """))
    assert config.targets["a"].api_base == "http://127.0.0.1:9/v1"
    assert config.targets["a"].disabled is None


MINIMAL_TARGETS = "targets:\n  a: {model: openai/m}\n"

# (yaml text, expected key path, a fragment of the message)
BAD = [
    ("", "", "empty"),
    ("- just\n- a list\n", "", "expected a mapping"),
    ("targets: {a: {model: openai/m}}\n", "chains", "missing"),
    ("chains: {default: [a]}\n", "targets", "missing"),
    (MINIMAL_TARGETS + "chains: {default: [a]}\nbogus: 1\n", "bogus", "unknown key"),
    ("targets:\n  a: {model: openai/m, temprature: 1}\nchains: {default: [a]}\n", "targets.a.temprature",
     "unknown key"),
    ("targets:\n  a: {api_key: x}\nchains: {default: [a]}\n", "targets.a.model", "missing"),
    ("targets:\n  a: {model: openai/m, timeout: fast}\nchains: {default: [a]}\n", "targets.a.timeout",
     "expected a number"),
    ("targets:\n  a: {model: openai/m, timeout: -1}\nchains: {default: [a]}\n", "targets.a.timeout", "> 0"),
    ("targets:\n  a: {model: openai/m, retry: {attempts: 0}}\nchains: {default: [a]}\n",
     "targets.a.retry.attempts", ">= 1"),
    ("targets:\n  a: {model: openai/m, retry: {attempts: 2.5}}\nchains: {default: [a]}\n",
     "targets.a.retry.attempts", "whole number"),
    ("targets:\n  a: {model: openai/m, retry: {tries: 2}}\nchains: {default: [a]}\n",
     "targets.a.retry.tries", "unknown key"),
    ("targets:\n  a: {model: openai/m, breaker: {fail_max: -3}}\nchains: {default: [a]}\n",
     "targets.a.breaker.fail_max", ">= 1"),
    ("targets:\n  a: {model: openai/m, breaker: {reset_timeout: true}}\nchains: {default: [a]}\n",
     "targets.a.breaker.reset_timeout", "expected a number"),
    ("targets:\n  a: {model: openai/m, retry: {min_wait: 5, max_wait: 1}}\nchains: {default: [a]}\n",
     "targets.a.retry.min_wait", "exceeds max_wait"),
    ("targets:\n  a: {model: openai/m, retry: {budget: {max_tokens: 0}}}\nchains: {default: [a]}\n",
     "targets.a.retry.budget.max_tokens", ">= 1"),
    ("defaults: {retry: {budget: {refill: 0.5}}}\n" + MINIMAL_TARGETS + "chains: {default: [a]}\n",
     "defaults.retry.budget.refill", "unknown key"),
    ("defaults: {deadline: 0}\n" + MINIMAL_TARGETS + "chains: {default: [a]}\n", "defaults.deadline", "> 0"),
    ("defaults: {retries: 3}\n" + MINIMAL_TARGETS + "chains: {default: [a]}\n", "defaults.retries",
     "unknown key"),
    (MINIMAL_TARGETS + "chains: {default: []}\n", "chains.default", "empty"),
    (MINIMAL_TARGETS + "chains: {default: [a, b]}\n", "chains.default[1]", "unknown target 'b'"),
    (MINIMAL_TARGETS + "chains: {default: [a, a]}\n", "chains.default[1]", "listed twice"),
    (MINIMAL_TARGETS + "chains: {default: a}\n", "chains.default", "expected a mapping"),
    (MINIMAL_TARGETS + "chains: {default: {targets: [a], on_content_policy: maybe}}\n",
     "chains.default.on_content_policy", "propagate or fail_over"),
    (MINIMAL_TARGETS + "chains: {default: {targets: [a], mid_stream: retry}}\n",
     "chains.default.mid_stream", "continue or restart or auto or error"),
    (MINIMAL_TARGETS + "chains: {default: {targets: [a], max_recoveries: -1}}\n",
     "chains.default.max_recoveries", "expected a number >= 0, got -1"),
    (MINIMAL_TARGETS + "chains: {default: {targets: [a], max_recoveries: 2.5}}\n",
     "chains.default.max_recoveries", "expected a whole number, got a number (2.5)"),
    ("targets:\n  a: {model: openai/m, max_concurrency: 0}\nchains: {default: [a]}\n", "targets.a.max_concurrency",
     "> 0"),
    ("defaults: {queue_timeout: -1}\n" + MINIMAL_TARGETS + "chains: {default: [a]}\n", "defaults.queue_timeout",
     ">= 0"),
    (MINIMAL_TARGETS + "chains: {}\n", "chains", "no chains"),
    ("targets: {}\nchains: {default: [a]}\n", "targets", "no targets"),
    ("targets:\n  a: [openai/m]\nchains: {default: [a]}\n", "targets.a", "expected a mapping"),
    ("targets:\n  a: {provider: bedrockish, model: m}\nchains: {default: [a]}\n", "targets.a.provider",
     "expected one of"),
    ("targets:\n  l: {provider: llama_cpp}\nchains: {default: [l]}\n", "targets.l.model_path", "missing"),
    ("targets:\n  l: {provider: llama_cpp, model_path: m.gguf, n_ctx: 8}\nchains: {default: [l]}\n",
     "targets.l.n_ctx", ">= 16"),
    ("targets:\n  l: {provider: llama_cpp, model_path: m.gguf, context_policy: squash}\n"
     "chains: {default: [l]}\n", "targets.l.context_policy", "expected one of truncate, reject"),
    ("targets:\n  l: {provider: llama_cpp, model_path: m.gguf, n_ctx: 512, max_tokens: 512}\n"
     "chains: {default: [l]}\n", "targets.l.max_tokens", "must be below n_ctx"),
    ("targets:\n  a: {model: openai/m, n_ctx: 512}\nchains: {default: [a]}\n", "targets.a.n_ctx",
     "unknown key"),
    ("targets:\n  a: {model: openai/m, degraded: 'yes'}\nchains: {default: [a]}\n", "targets.a.degraded",
     "true or false"),
    ("targets:\n  a: {model: openai/m, api_base: '${BROKEN'}\nchains: {default: [a]}\n", "targets.a.api_base",
     "unterminated"),
    (MINIMAL_TARGETS + "chains: {default: [a]}\nstate: {backend: etcd}\n", "state.backend", "expected one of"),
    (MINIMAL_TARGETS + "chains: {default: [a]}\nstate: {backend: redis}\n", "state.url", "missing"),
    (MINIMAL_TARGETS + "chains: {default: [a]}\nstate: {backend: redis, url: 'http://x'}\n", "state.url",
     "redis://"),
    (MINIMAL_TARGETS + "chains: {default: [a]}\nstate: {backend: redis, url: '${ROUTER_TEST_NO_URL}'}\n",
     "state", "ROUTER_TEST_NO_URL is not set"),
    (MINIMAL_TARGETS + "chains: {default: [a]}\noffline: 1\n", "offline", "true or false"),
    (MINIMAL_TARGETS + "chains: {default: [a]}\nstate: {required: true}\n", "state.required",
     "only the redis backend"),
    (MINIMAL_TARGETS + "chains: {default: [a]}\nstate: {backend: redis, url: 'redis://h', required: 2}\n",
     "state.required", "true or false"),
]


@pytest.mark.parametrize(("text", "key_path", "fragment"), BAD, ids=[b[1] or "top" for b in BAD])
def test_malformed_config_names_file_and_key_path(tmp_path, monkeypatch, text, key_path, fragment):
    monkeypatch.delenv("ROUTER_TEST_NO_URL", raising=False)
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        load_config(path)
    error = info.value
    assert error.file == str(path)
    assert error.key_path == key_path
    assert fragment in str(error)
    assert str(path) in str(error) and key_path in str(error)


def test_yaml_syntax_error_names_line(tmp_path):
    path = write(tmp_path, "targets:\n  a: {model: openai/m\nchains: {default: [a]}\n")
    with pytest.raises(ConfigError, match=r"not valid YAML at line \d+"):
        load_config(path)


def test_unsafe_yaml_tag_is_refused(tmp_path):
    path = write(tmp_path, "targets: !!python/object/apply:os.system ['true']\nchains: {default: [a]}\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(path)


def test_missing_file(tmp_path):
    with pytest.raises(ConfigError, match="file not found"):
        load_config(tmp_path / "nope.yaml")


def test_wrong_typed_secret_is_not_echoed(tmp_path):
    path = write(tmp_path, "targets:\n  a: {model: openai/m, api_key: 987654321987}\nchains: {default: [a]}\n")
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert info.value.key_path == "targets.a.api_key"
    assert "987654321987" not in str(info.value)
