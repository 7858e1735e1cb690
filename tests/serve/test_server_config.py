"""The `server:` section: keys hashed as read, every mistake a ConfigError with file and key path."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from router import ConfigError
from router.config import load_config

BASE = """targets:
  a: {model: openai/x, api_key: sk-test-0123456789}
chains:
  default: [a]
"""


def _load(tmp_path: Path, server: str) -> object:
    path = tmp_path / "config.yaml"
    path.write_text(BASE + "server:\n" + server, encoding="utf-8")
    return load_config(path)


def test_a_key_is_kept_only_as_its_sha256(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TEAM_KEY", "k" * 32)
    config = _load(tmp_path, "  keys:\n    - {name: t, key: '${TEAM_KEY}', chains: [default], rate_limit: {rpm: 60}}\n")
    (key,) = config.server.keys
    assert key.key_sha256 == hashlib.sha256(b"k" * 32).hexdigest()
    assert "k" * 32 not in repr(config)
    assert key.chains == ("default",) and key.rate_limit.rpm == 60
    assert config.server.max_body_bytes == 10 * 1024 * 1024


@pytest.mark.parametrize(("server", "key_path", "words"), [
    ("  keys:\n    - {name: t}\n", "server.keys[0]", "exactly one of key"),
    ("  keys:\n    - {name: t, key: short}\n", "server.keys[0].key", "too short"),
    ("  keys:\n    - {name: t, key: '${NOT_SET_ANYWHERE}'}\n", "server.keys[0].key", "NOT_SET_ANYWHERE is not set"),
    ("  keys:\n    - {name: t, key_sha256: abc}\n", "server.keys[0].key_sha256", "64 hex digits"),
    ("  keys:\n    - {name: t, key: aaaaaaaaaaaaaaaaaaaa, chains: [nope]}\n", "server.keys[0].chains[0]", "unknown chain"),
    ("  keys:\n    - {name: t, key: aaaaaaaaaaaaaaaaaaaa}\n    - {name: t, key: bbbbbbbbbbbbbbbbbbbb}\n",
     "server.keys[1].name", "already the name"),
    ("  keys:\n    - {name: t, key: aaaaaaaaaaaaaaaaaaaa}\n    - {name: u, key: aaaaaaaaaaaaaaaaaaaa}\n",
     "server.keys[1]", "the same key"),
    ("  keys:\n    - {name: t, key: aaaaaaaaaaaaaaaaaaaa, rate_limit: {rpm: -1}}\n", "server.keys[0].rate_limit.rpm",
     ">= 1"),
    ("  max_body_bytes: 0\n", "server.max_body_bytes", ">= 1"),
    ("  port: 8080\n", "server.port", "unknown key"),
])
def test_a_bad_server_section_names_the_file_and_key_path(tmp_path: Path, server: str, key_path: str,
                                                          words: str) -> None:
    with pytest.raises(ConfigError) as caught:
        _load(tmp_path, server)
    assert caught.value.key_path == key_path and caught.value.file.endswith("config.yaml")
    assert words in caught.value.reason
    assert "aaaaaaaaaaaaaaaaaaaa" not in str(caught.value)
