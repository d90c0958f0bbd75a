"""YAML for multi-document Kubernetes bundles, using libyaml when PyYAML has it (5-10x faster)."""

from __future__ import annotations

import contextlib
import hashlib
import json
from collections.abc import Iterable
from typing import Any

import yaml

try:  # libyaml bindings ship in PyYAML's wheels; fall back to pure Python when built without them
    _Loader: type = yaml.CSafeLoader
    _Dumper: type = yaml.CSafeDumper
except AttributeError:  # pragma: no cover
    _Loader = yaml.SafeLoader
    _Dumper = yaml.SafeDumper


# Release manifests are parsed more than once per run (plan, then run; rendering, then checks), and
# PyYAML builds Python objects in Python: ~0.1 s for Longhorn + Flux. Large texts are remembered as
# JSON, which gives back fresh objects (callers mutate them) in a few milliseconds.
_CACHE_MIN = 64 * 1024
_cache: dict[str, str] = {}


def load_all(text: str) -> list[dict[str, Any]]:
    """Every non-empty document of a bundle, in order (fresh objects on every call)."""
    if len(text) < _CACHE_MIN:
        return [doc for doc in yaml.load_all(text, Loader=_Loader) if doc]
    key = hashlib.sha256(text.encode()).hexdigest()
    cached = _cache.get(key)
    if cached is not None:
        return json.loads(cached)
    docs = [doc for doc in yaml.load_all(text, Loader=_Loader) if doc]
    with contextlib.suppress(TypeError, ValueError):  # a value JSON cannot hold: parsed every time
        dumped = json.dumps(docs)
        if json.loads(dumped) == docs:  # e.g. integer keys would come back as strings
            _cache[key] = dumped
    return docs


def load(text: str) -> Any:
    return yaml.load(text, Loader=_Loader)


def dump(obj: Any) -> str:
    return yaml.dump(obj, Dumper=_Dumper, sort_keys=False, default_flow_style=False, allow_unicode=True)


def dump_all(objs: Iterable[dict[str, Any]]) -> str:
    return yaml.dump_all(
        list(objs), Dumper=_Dumper, sort_keys=False, default_flow_style=False, allow_unicode=True,
        explicit_start=True,
    )
