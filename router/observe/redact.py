"""Keep secrets out of logs, error texts, reprs and routes.

Configured API keys are held as `Secret` (its repr and str never show the value) and
every provider message the router stores or raises goes through a `Redactor`, which removes
the configured keys and anything shaped like a credential, including keys in URLs.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

_PATTERNS = [
    (re.compile(r"\b(sk|pk|rk|xai|gsk|sk-ant|sk-proj)-[A-Za-z0-9_\-]{6,}"), r"\1-***"),
    (re.compile(r"(?i)\b(bearer|basic)\s+[A-Za-z0-9._~+/=\-]{6,}"), r"\1 ***"),
    (re.compile(r"(?i)([?&](?:api[_-]?key|key|token|access_token|sig|signature)=)[^&\s\"']+"), r"\1***"),
    (re.compile(r"(?i)((?:api[_-]?key|authorization|x-api-key)[\"']?\s*[:=]\s*[\"']?)[^\s\"',}]{4,}"), r"\1***"),
    (re.compile(r"(://[^/\s:@]+:)[^@\s/]+@"), r"\1***@"),
]


class Secret:
    """A configured credential: usable with `reveal()`, invisible everywhere else."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return "Secret('***')"

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(self._value)

    def __reduce__(self):
        raise TypeError("a Secret is not pickled")


class Redactor:
    """Replaces the known secrets and credential-shaped strings in a text."""

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        # longest first, so a key that contains another is removed whole
        self._secrets = sorted({s for s in secrets if s and len(s) >= 4}, key=len, reverse=True)

    def __call__(self, text: str) -> str:
        for secret in self._secrets:
            if secret in text:
                text = text.replace(secret, "***")
        for pattern, replacement in _PATTERNS:
            text = pattern.sub(replacement, text)
        return text

