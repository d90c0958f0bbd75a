"""Helpers for tests/test_bad_input.py: run the CLI in-process, emit YAML with known line numbers,
write kubeconfigs, and build (and damage) backup archives.

Nothing here talks to the network: kubeconfigs only ever point at a loopback port that is bound
but not listening, so a connection attempt is refused at once.
"""

from __future__ import annotations

import copy
import io
import json
import re
import socket
import tarfile
import traceback
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import yaml

from seedbed.example import EXAMPLE_CONFIG

# --------------------------------------------------------------------------- the figures

CASES: Counter[str] = Counter()
CLEAN: Counter[str] = Counter()
NOTES: dict[str, Any] = {}
CATEGORIES = ("config", "cli", "kubeconfig", "archive")


@contextmanager
def case(category: str) -> Iterator[None]:
    """Count one generated case; it counts as clean only if every assertion in the block held."""
    assert category in CATEGORIES
    CASES[category] += 1
    yield
    CLEAN[category] += 1


# --------------------------------------------------------------------------- secrets we plant

SECRET_MARKERS = (
    "kc-token-SEKRIT-1234",
    "pw-SEKRIT-5678",
    "exec-token-SEKRIT-9012",
    "s3cr3t-value-never-printed",
    "czNjcjN0LXZhbHVl",  # base64 of the planted Secret value prefix
    "BEGIN PRIVATE KEY",
    "BEGIN RSA " "PRIVATE KEY",
    "BEGIN EC " "PRIVATE KEY",
)


# --------------------------------------------------------------------------- running the CLI


@dataclass
class Result:
    code: int | str
    out: str
    err: str

    @property
    def text(self) -> str:
        return self.out + self.err


def run_cli(argv: list[str], capsys: Any) -> Result:
    """``seedbed.cli.main(argv)`` in-process; an exception escaping main() is kept as a traceback in err."""
    from seedbed.cli import main

    capsys.readouterr()
    tb = ""
    try:
        main([str(a) for a in argv])
        code: int | str = 0
    except SystemExit as e:
        code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
    except BaseException:  # a bug: main() let an exception through
        tb = traceback.format_exc()
        code = "exception"
    out, err = capsys.readouterr()
    return Result(code, out, err + tb)


def assert_clean(r: Result, code: int, *, fix: bool | None = None, stream: str = "err",
                 contains: str | list[str] | None = None, max_len: int | None = 4000) -> None:
    """The contract for a bad input: the expected exit code, ``error:`` (and ``fix:``), no traceback,
    no planted secret echoed back, and a message of reasonable length."""
    assert "Traceback" not in r.text, f"traceback for a user error:\n{r.text[-3000:]}"
    assert r.code == code, f"exit {r.code!r}, expected {code}\nstdout: {r.out[-1500:]}\nstderr: {r.err[-1500:]}"
    where = r.err if stream == "err" else r.out
    if stream == "err":
        assert re.search(r"(?i)\berror:", where), f"no 'error:' on stderr: {r.err[-1500:]!r}"
    if fix is True:
        assert re.search(r"(?m)^\s+fix: \S", where), f"no 'fix:' line: {where[-1500:]!r}"
    for needle in [contains] if isinstance(contains, str) else (contains or []):
        assert needle.lower() in where.lower(), f"{needle!r} not in output: {where[-2000:]!r}"
    for secret in SECRET_MARKERS:
        assert secret not in r.text, f"secret-looking {secret!r} echoed back"
    key = re.search(r"AGE-SECRET-KEY-" r"1[0-9A-Z]{20,}", r.text)
    assert key is None, "an age secret key echoed back"
    if max_len is not None:
        assert len(r.text) <= max_len, f"error output is {len(r.text)} characters long"


# --------------------------------------------------------------------------- loopback


class ClosedPort:
    """A loopback TCP port that is bound but never listens: connecting to it is refused at once."""

    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.bind(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]

    def close(self) -> None:
        self.sock.close()


# --------------------------------------------------------------------------- YAML with known lines

BASE_CONFIG: dict[str, Any] = yaml.safe_load(EXAMPLE_CONFIG)
_PLAIN_KEY = re.compile(r"^[a-zA-Z][a-zA-Z0-9]*$")
_YAML11_WORDS = {"y", "n", "yes", "no", "on", "off", "true", "false", "null", "none", "nan", "inf"}


def base_config() -> dict[str, Any]:
    return copy.deepcopy(BASE_CONFIG)


def _key(k: str) -> str:
    if _PLAIN_KEY.match(k) and k.lower() not in _YAML11_WORDS:
        return k
    return _quoted(k)


_PAIR = re.compile(r"\\u(d[89ab][0-9a-f]{2})\\u(d[c-f][0-9a-f]{2})")


def _quoted(text: str) -> str:
    """A JSON string is a YAML double-quoted scalar, except that YAML's \\u escapes are code points:
    libyaml refuses a UTF-16 surrogate pair, so characters beyond U+FFFF are written as \\U escapes."""
    def astral(m: re.Match[str]) -> str:
        return f"\\U{0x10000 + ((int(m[1], 16) - 0xD800) << 10) + (int(m[2], 16) - 0xDC00):08x}"

    return _PAIR.sub(astral, json.dumps(text))


def _scalar(v: Any) -> str:
    if isinstance(v, str):
        return _quoted(v)
    if isinstance(v, float) and v != v:
        return ".nan"
    if isinstance(v, float) and v in (float("inf"), float("-inf")):
        return ".inf" if v > 0 else "-.inf"
    if isinstance(v, float):
        r = repr(v)
        assert "." in r and "e" not in r, f"use plain decimals in generated floats, not {r}"
        return r
    if v is None:
        return "null"
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    raise TypeError(type(v))


def emit(doc: Any, *, header_lines: int = 0, blank_between: bool = False) -> tuple[str, dict[tuple[Any, ...], int]]:
    """Block-style YAML for ``doc``, and the 1-based line of every key and list item by path.

    The line map is computed while writing, independently of seedbed.config, so a test can check
    the line seedbed reports against where the mutation was really put.
    """
    lines: list[str] = [f"# header comment {i}" for i in range(header_lines)]
    where: dict[tuple[Any, ...], int] = {}

    def mapping(d: dict[str, Any], indent: int, path: tuple[Any, ...], first_prefix: str | None = None) -> None:
        for i, (k, v) in enumerate(d.items()):
            pre = first_prefix if (i == 0 and first_prefix is not None) else " " * indent
            if indent == 0 and blank_between and i:
                lines.append("")
            where[(*path, k)] = len(lines) + 1
            value(v, f"{pre}{_key(k)}:", indent, (*path, k))

    def value(v: Any, head: str, indent: int, path: tuple[Any, ...]) -> None:
        if isinstance(v, dict) and v:
            lines.append(head)
            mapping(v, indent + 2, path)
        elif isinstance(v, list) and v:
            lines.append(head)
            seq(v, indent + 2, path)
        elif isinstance(v, dict):
            lines.append(f"{head} {{}}")
        elif isinstance(v, list):
            lines.append(f"{head} []")
        else:
            lines.append(f"{head} {_scalar(v)}")

    def seq(items: list[Any], indent: int, path: tuple[Any, ...]) -> None:
        for j, item in enumerate(items):
            where[(*path, j)] = len(lines) + 1
            pre = " " * indent + "- "
            if isinstance(item, dict) and item:
                mapping(item, indent + 2, (*path, j), first_prefix=pre)
            elif isinstance(item, list) and item:
                lines.append(pre + json.dumps(item))  # flow style: the item's node starts on this line
            elif isinstance(item, dict):
                lines.append(pre + "{}")
            elif isinstance(item, list):
                lines.append(pre + "[]")
            else:
                lines.append(pre + _scalar(item))

    if isinstance(doc, dict):
        mapping(doc, 0, ())
    else:
        lines.append(_scalar(doc))
    return "\n".join(lines) + "\n", where


def line_for(where: dict[tuple[Any, ...], int], loc: tuple[Any, ...]) -> int:
    """The line of ``loc``, or of its deepest ancestor that the document has (a missing key)."""
    for n in range(len(loc), 0, -1):
        if loc[:n] in where:
            return where[loc[:n]]
    return 1


def get_in(doc: dict[str, Any], path: tuple[Any, ...]) -> Any:
    for p in path:
        doc = doc[p]
    return doc


def set_in(doc: dict[str, Any], path: tuple[Any, ...], value: Any) -> None:
    parent = doc
    for p in path[:-1]:
        parent = parent.setdefault(p, {}) if isinstance(parent, dict) else parent[p]
    parent[path[-1]] = value


def insert_key(parent: dict[str, Any], key: str, value: Any, position: int) -> dict[str, Any]:
    items = list(parent.items())
    position = min(position, len(items))
    items.insert(position, (key, value))
    return dict(items)


# --------------------------------------------------------------------------- kubeconfigs


def kubeconfig(server: str, *, cluster: dict[str, Any] | None = None, user: dict[str, Any] | None = None,
               context: str = "lab", current: str | None = "lab") -> dict[str, Any]:
    kc: dict[str, Any] = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "lab-cluster", "cluster": {"server": server, **(cluster or {})}}],
        "users": [{"name": "lab-user", "user": user if user is not None else {"token": "kc-token-SEKRIT-1234"}}],
        "contexts": [{"name": context, "context": {"cluster": "lab-cluster", "user": "lab-user"}}],
    }
    if current is not None:
        kc["current-context"] = current
    return kc


# --------------------------------------------------------------------------- archives


def tar_bytes(members: list[tuple[str, bytes]], *, extra: list[tarfile.TarInfo] | None = None,
              pax_headers: dict[str, dict[str, str]] | None = None) -> bytes:
    """A plain tar of regular files (plus any prepared non-file members), like archive.build writes."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            info.mode = 0o600
            if pax_headers and name in pax_headers:
                info.pax_headers = pax_headers[name]
            tar.addfile(info, io.BytesIO(data))
        for info in extra or []:
            tar.addfile(info)
    return buf.getvalue()


def tar_members(plain: bytes) -> list[tuple[str, bytes]]:
    out = []
    with tarfile.open(fileobj=io.BytesIO(plain), mode="r:") as tar:
        for m in tar:
            f = tar.extractfile(m)
            out.append((m.name, f.read() if f else b""))
    return out
