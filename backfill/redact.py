"""Secrets out of every text the tool prints or stores, wherever the text came from.

A server, a proxy or a WAF page may echo the `x-api-key` it was sent. The client redacts its own
outcomes with its key; `SECRETS` is the process-wide list that the last seams (the error printed by
the CLI, the texts the checkpoint stores) apply as well, so that no path can miss it.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

MARK = "[redacted]"
# Parsed answers deeper than this are refused rather than walked (an API answer is a few levels deep).
MAX_DEPTH = 64


# Shorter texts are not taken for secrets: replacing every "k" would garble messages, and no real
# key is that short (the API's are dozens of characters).
MIN_SECRET = 4


class Redactor:
    def __init__(self) -> None:
        self._secrets: list[str] = []

    def add(self, secret: str) -> None:
        for form in (secret, quote(secret, safe="")):
            if len(form) >= MIN_SECRET and form not in self._secrets:
                self._secrets.append(form)
        self._secrets.sort(key=len, reverse=True)  # the longest first: a form may contain another

    def clear(self) -> None:
        self._secrets.clear()

    def __call__(self, text: str) -> str:
        return redact_text(text, self._secrets)

    def value(self, value: Any) -> Any:
        return redact_value(value, self._secrets)


def redact_text(text: str, secrets: list[str]) -> str:
    for secret in secrets:
        if secret in text:
            text = text.replace(secret, MARK)
    return text


def redact_value(value: Any, secrets: list[str]) -> Any:
    """A copy of a parsed JSON value with every secret removed from its strings (keys too)."""
    if not secrets:
        return value
    if isinstance(value, str):
        return redact_text(value, secrets)
    if isinstance(value, list):
        return [redact_value(item, secrets) for item in value]
    if isinstance(value, dict):
        return {redact_text(str(k), secrets): redact_value(v, secrets) for k, v in value.items()}
    return value


def depth(value: Any, limit: int = MAX_DEPTH) -> int:
    """Nesting depth of a parsed JSON value, counted without recursion; stops at `limit` + 1."""
    deepest = 0
    stack = [(value, 1)]
    while stack:
        item, level = stack.pop()
        if not isinstance(item, (list, dict)):
            continue
        deepest = max(deepest, level)
        if deepest > limit:
            return deepest
        stack.extend((child, level + 1) for child in (item.values() if isinstance(item, dict) else item))
    return deepest


# The secrets of this process (the API key once it is read).
SECRETS = Redactor()
