"""YAML and JSON: fast loading of trusted bundles, bounded loading of everything from outside.

Two ways in, on purpose:

- :func:`load_all` / :func:`load` for texts already trusted (release manifests verified against a
  pinned sha256, seedbed's own renders): libyaml when PyYAML has it (5-10x faster).
- :func:`safe_load` / :func:`safe_load_all` / :func:`safe_json` for anything from outside (config,
  kubeconfig, GitOps tree, HelmRelease values, archive indexes, cluster state): alias expansion
  ("billion laughs") and nesting depth are bounded *before* any Python object is built, so a
  hostile file is a clear error, never a hang, a MemoryError or a RecursionError.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

import msgspec
import yaml

from .errors import ConfigError, SeedbedError

try:  # libyaml bindings ship in PyYAML's wheels; fall back to pure Python when built without them
    _Loader: type = yaml.CSafeLoader
    _Dumper: type = yaml.CSafeDumper
except AttributeError:  # pragma: no cover
    _Loader = yaml.SafeLoader
    _Dumper = yaml.SafeDumper


def load_all(text: str) -> list[dict[str, Any]]:
    """Every non-empty document of a trusted bundle, in order."""
    return [doc for doc in yaml.load_all(text, Loader=_Loader) if doc]


def load(text: str) -> Any:
    return yaml.load(text, Loader=_Loader)


def dump(obj: Any) -> str:
    return yaml.dump(obj, Dumper=_Dumper, sort_keys=False, default_flow_style=False, allow_unicode=True)


def dump_all(objs: Iterable[dict[str, Any]]) -> str:
    return yaml.dump_all(
        list(objs), Dumper=_Dumper, sort_keys=False, default_flow_style=False, allow_unicode=True,
        explicit_start=True,
    )


# --------------------------------------------------------------------------- untrusted input

MAX_DEPTH = 64  # Kubernetes objects nest a dozen levels; 64 leaves room for any real values file
MAX_NODES = 2_000_000  # nodes after alias expansion: ~40x the largest real manifest bundle
_decode_json = msgspec.json.Decoder().decode


def _bounds(text: str, what: str, error: type[SeedbedError]) -> None:
    """Walk the parser's events (no objects built) counting depth and nodes *after* alias expansion.

    An alias stands for its anchor's whole subtree, so it adds that subtree's node count and height;
    an alias to a collection that is still open would make the object contain itself, and is refused.
    """
    anchors: dict[str, tuple[int, int]] = {}  # anchor -> (nodes, height) of its subtree
    stack: list[list[Any]] = []  # [anchor, node count, height of the tallest child] per open collection
    total = 0

    def add(size: int, height: int) -> None:
        nonlocal total
        total += size
        if total > MAX_NODES:
            raise error(f"{what}: expands to more than {MAX_NODES:,} nodes (aliases repeated many times)",
                        fix="remove the repeated aliases; write the values out")
        if len(stack) + height > MAX_DEPTH:
            raise error(f"{what}: nested more than {MAX_DEPTH} levels deep",
                        fix="flatten the structure; no real file nests this deep")
        if stack:
            stack[-1][1] += size
            stack[-1][2] = max(stack[-1][2], height)

    try:
        for ev in yaml.parse(text, Loader=_Loader):
            if isinstance(ev, yaml.CollectionStartEvent):
                stack.append([ev.anchor, 1, 0])
                if len(stack) > MAX_DEPTH:
                    raise error(f"{what}: nested more than {MAX_DEPTH} levels deep",
                                fix="flatten the structure; no real file nests this deep")
            elif isinstance(ev, yaml.CollectionEndEvent):
                anchor, size, tallest = stack.pop()
                if anchor:
                    anchors[anchor] = (size, tallest + 1)
                add(size, tallest + 1)
            elif isinstance(ev, yaml.ScalarEvent):
                if ev.anchor:
                    anchors[ev.anchor] = (1, 0)
                add(1, 0)
            elif isinstance(ev, yaml.AliasEvent):
                if any(frame[0] == ev.anchor for frame in stack):
                    line = f":{ev.start_mark.line + 1}" if ev.start_mark is not None else ""
                    raise error(f"{what}{line}: the alias *{ev.anchor} refers to a value that contains it",
                                fix="remove the recursive alias; write the value out")
                size, height = anchors.get(ev.anchor, (1, 0))
                add(size, height)
    except yaml.YAMLError:
        return  # a syntax error: the loader below reports it with its line


def _parse(text: str, what: str, error: type[SeedbedError], docs: bool) -> Any:
    _bounds(text, what, error)
    try:
        if docs:
            return [d for d in yaml.load_all(text, Loader=_Loader) if d is not None]
        return yaml.load(text, Loader=_Loader)
    except yaml.YAMLError as e:
        raise error(f"{what}:{_error_line(text, e)}: not valid YAML: {_problem(e)}", fix="fix the YAML syntax") from None
    except ValueError as e:  # a value PyYAML cannot build, e.g. an integer of more than 4300 digits
        raise error(f"{what}: a value cannot be read: {str(e)[:120]}", fix="fix or remove that value") from None
    except RecursionError:  # pragma: no cover - _bounds stops this first
        raise error(f"{what}: nested too deeply", fix="flatten the structure") from None


def _error_line(text: str, e: yaml.YAMLError) -> int:
    """The 1-based line a YAML error is at (a bad character only knows its offset)."""
    if isinstance(e, yaml.reader.ReaderError):
        return text.count("\n", 0, e.position) + 1
    mark = getattr(e, "problem_mark", None) or getattr(e, "context_mark", None)
    return mark.line + 1 if mark is not None else 1


def _problem(e: yaml.YAMLError) -> str:
    if isinstance(e, yaml.reader.ReaderError):
        return f"character {e.character!r} is not allowed in YAML"
    problem = " ".join(filter(None, [getattr(e, "context", None), getattr(e, "problem", None)]))
    problem = problem or str(e).splitlines()[0]
    return problem if len(problem) <= 200 else problem[:197] + "..."


def compose(text: str) -> yaml.Node | None:
    """The node tree of one document (with lines), for text that :func:`safe_load` already accepted."""
    return yaml.compose(text, Loader=_Loader)


def compose_all(text: str) -> list[yaml.Node | None]:
    """The node trees of every document, for text :func:`safe_load_all` already accepted. libyaml's
    marks carry the right lines, but their offsets count bytes, not characters: an editor that
    slices the text by offset composes with the pure-Python ``yaml.SafeLoader`` instead."""
    return list(yaml.compose_all(text, Loader=_Loader))


def safe_load(text: str, *, what: str, error: type[SeedbedError] = ConfigError) -> Any:
    """One YAML document from outside, bounded; a problem is ``error`` naming ``what``."""
    return _parse(text, what, error, docs=False)


def safe_load_all(text: str, *, what: str, error: type[SeedbedError] = ConfigError) -> list[Any]:
    """Every non-empty document of a YAML stream from outside, bounded."""
    return _parse(text, what, error, docs=True)


def safe_json(text: str | bytes, *, what: str, error: type[SeedbedError] = ConfigError) -> Any:
    """JSON from outside (archive indexes, cluster state, API answers): bounded depth, clear errors.

    msgspec decodes (2x the standard library's speed on an API server's LIST of thousands of
    objects); what it refuses goes to the standard library, which accepts what it always did (a
    byte-order mark, UTF-16) and words the error as before.
    """
    try:
        data = _decode_json(text)
    except RecursionError:
        raise error(f"{what}: nested too deeply", fix="the data is damaged or hostile") from None
    except msgspec.DecodeError:
        try:
            data = json.loads(text)
        except (ValueError, UnicodeDecodeError) as e:
            raise error(f"{what}: not valid JSON ({str(e).splitlines()[0][:120]})",
                        fix="the data is damaged; see the fix for where it came from") from None
        except RecursionError:
            raise error(f"{what}: nested too deeply", fix="the data is damaged or hostile") from None
    # Only containers are looked at (an API answer is mostly strings), one level at a time: a non-empty
    # one at MAX_DEPTH has children deeper than allowed, whatever they are.
    level = [data] if data.__class__ is dict or data.__class__ is list else []
    depth = 1
    while level:
        if depth >= MAX_DEPTH and any(level):
            raise error(f"{what}: nested more than {MAX_DEPTH} levels deep", fix="the data is damaged or hostile")
        deeper = []
        for node in level:
            for v in (node.values() if node.__class__ is dict else node):
                if v.__class__ is dict or v.__class__ is list:
                    deeper.append(v)
        level = deeper
        depth += 1
    return data
