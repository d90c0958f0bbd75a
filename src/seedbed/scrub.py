"""The one scrubber: every line that leaves seedbed (progress, errors, JSON) passes through it.

It knows two things: the exact credentials in play this run (registered with :func:`secret` by
whoever loads them: tokens, passwords, private keys, backup credentials) and the shapes that only
credentials have (PEM private-key blocks, age secret keys, bearer headers), so that text that came
from a server or a library (an HTTP library echoing a header, a 403 body repeating a token) is
cleaned too.
"""

from __future__ import annotations

import json
import re
import threading
from typing import Any

REDACTED = "<redacted>"
_MIN_LEN = 8  # shorter fragments would blank out ordinary words

# What a credential looks like in a place seedbed did not put it: a digit, '+', '/' or '=', or a
# capital after a small letter. Ordinary words after "token" or "basic" ("token permissions",
# "basic authentication") have none of these and stay readable.
_CRED = r"(?=[^\s\"',]*?(?:[0-9+/=]|(?-i:[a-z][A-Z])))[A-Za-z0-9._~+/=-]"

_SHAPES = [
    # PEM and OpenSSH private keys, whole blocks (or what is left of one).
    re.compile(r"-----BEGIN [A-Z0-9 ]*PRIVATE KEY-----.*?(?:-----END [A-Z0-9 ]*PRIVATE KEY-----|\Z)", re.S),
    # The base64 body of an OpenSSH private key without its armour ("openssh-key-v1\0").
    re.compile(r"b3BlbnNzaC1rZXktdjE[A-Za-z0-9+/=]*"),
    re.compile(r"AGE-SECRET-KEY-" r"1[0-9A-Z]{20,}", re.I),  # split: secret scanners grep for it
    re.compile(r"(?i)\b((?:bearer|basic)\s+)" + _CRED + "{8,}"),
    re.compile(r"(?i)\b(token[\s:=]+[\"']?)" + _CRED + "{16,}"),
    re.compile(r"(?i)(authorization[\"']?\s*[:=]\s*[\"']?)(?!bearer\b|basic\b)[^\s\"',]{8,}"),
    # JSON Web Tokens (service-account tokens): three base64url parts.
    re.compile(r"\beyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}"),
]


class Scrubber:
    def __init__(self) -> None:
        self._values: set[str] = set()
        self._lock = threading.Lock()

    def secret(self, value: str | bytes | None) -> None:
        """Never show this value (nor any of its lines, stripped) in any output."""
        if not value:
            return
        text = value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)
        parts = {text.strip(), *(line.strip() for line in text.splitlines())}
        # The same value as a JSON string or a Python repr shows it (a library's message quoting a
        # header, our own --output json): a newline inside is then a backslash and an "n".
        parts |= {json.dumps(p)[1:-1] for p in list(parts)} | {repr(p)[1:-1] for p in list(parts)}
        with self._lock:
            self._values |= {p for p in parts if len(p) >= _MIN_LEN}

    def scrub(self, text: str) -> str:
        with self._lock:
            values = sorted(self._values, key=len, reverse=True)
        for v in values:
            if v in text:
                text = text.replace(v, REDACTED)
        for shape in _SHAPES:
            text = shape.sub(_keep_label, text)
        return text


def _keep_label(m: re.Match[str]) -> str:
    # "Bearer abc..." keeps "Bearer ", "authorization: xyz" keeps "authorization: ".
    return (m.group(1) if m.lastindex else "") + REDACTED


_default = Scrubber()


def secret(value: str | bytes | None) -> None:
    """Register a credential with the process's scrubber."""
    _default.secret(value)


def scrub(text: str) -> str:
    """``text`` with every registered credential and every credential-shaped string replaced."""
    return _default.scrub(text)


def scrub_data(data: Any) -> Any:
    """A copy of JSON-shaped ``data`` (dicts, lists, strings) with every string scrubbed."""
    if isinstance(data, str):
        return scrub(data)
    if isinstance(data, dict):
        return {scrub_data(k): scrub_data(v) for k, v in data.items()}
    if isinstance(data, (list, tuple)):
        return [scrub_data(v) for v in data]
    return data
