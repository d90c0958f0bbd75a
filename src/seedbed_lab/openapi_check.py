"""Check a request against a real swagger 2.0 spec (Gitea's, Forgejo's).

This is deliberately small: it answers "would the real server know this route, and is the JSON body
shaped like the option struct it binds to?". It resolves ``$ref`` to ``definitions``, checks required
fields, JSON types, enums and array items, and flags fields the schema does not declare (Gitea's
binder silently drops those, so a typo would go unnoticed against the real server).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

_JSON_TYPES: dict[str, tuple[type, ...]] = {
    "string": (str,),
    "integer": (int,),
    "number": (int, float),
    "boolean": (bool,),
    "array": (list,),
    "object": (dict,),
}


@dataclass(frozen=True)
class _Route:
    template: str
    pattern: re.Pattern[str]
    params: tuple[str, ...]
    literal_segments: int


class Spec:
    """One loaded swagger 2.0 document."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.doc: dict[str, Any] = json.loads(self.path.read_text(encoding="utf-8"))
        if self.doc.get("swagger") != "2.0":
            raise ValueError(f"{self.path}: not a swagger 2.0 document")
        # Gitea's rendered spec has an absolute basePath (https://gitea.com/api/v1); only the path counts.
        self.base_path = urlsplit(self.doc.get("basePath", "")).path.rstrip("/")
        self.definitions: dict[str, Any] = self.doc.get("definitions", {})
        routes = []
        for template in self.doc["paths"]:
            params = tuple(re.findall(r"\{([^}]+)\}", template))
            regex = "^" + re.sub(r"\\\{[^}]+\\\}", "([^/]+)", re.escape(template)) + "$"
            literal = sum(1 for seg in template.split("/") if seg and not seg.startswith("{"))
            routes.append(_Route(template, re.compile(regex), params, literal))
        # Prefer the most literal template: /user/keys must win over a /{a}/{b} style route.
        self.routes = sorted(routes, key=lambda r: (-r.literal_segments, r.template))

    @property
    def version(self) -> str:
        return str(self.doc.get("info", {}).get("version", "?"))

    def route(self, path: str) -> tuple[str, dict[str, str]] | None:
        """The path template matching ``path`` (with or without the base path) and its parameters."""
        if self.base_path and path.startswith(self.base_path + "/"):
            path = path[len(self.base_path):]
        for route in self.routes:
            m = route.pattern.match(path)
            if m:
                return route.template, dict(zip(route.params, m.groups(), strict=True))
        return None

    def check(self, method: str, path: str, body: Any = None, query: dict[str, str] | None = None) -> list[str]:
        """Problems with one request; an empty list means the spec has nothing against it."""
        method = method.lower()
        where = f"{method.upper()} {path}"
        found = self.route(path)
        if found is None:
            return [f"{where}: no such path in {self.path.name}"]
        template, path_params = found
        op = self.doc["paths"][template].get(method)
        if op is None:
            return [f"{where}: {template} has no {method.upper()} in {self.path.name}"]
        problems: list[str] = []
        params = op.get("parameters", [])
        for p in params:
            if p.get("in") == "path":
                value = path_params.get(p["name"])
                if value is None:
                    problems.append(f"{where}: path parameter {p['name']} missing")
                elif p.get("type") == "integer" and not re.fullmatch(r"-?\d+", value):
                    problems.append(f"{where}: path parameter {p['name']}={value!r} is not an integer")
        declared_query = {p["name"]: p for p in params if p.get("in") == "query"}
        for name, value in (query or {}).items():
            if name not in declared_query:
                problems.append(f"{where}: query parameter {name!r} is not declared")
            elif declared_query[name].get("type") == "integer" and not re.fullmatch(r"-?\d+", value):
                problems.append(f"{where}: query parameter {name}={value!r} is not an integer")
        body_params = [p for p in params if p.get("in") == "body"]
        if body is not None and not body_params:
            problems.append(f"{where}: sends a body but {template} takes none")
        for p in body_params:
            if body is None:
                if p.get("required"):
                    problems.append(f"{where}: body required")
                continue
            problems += [f"{where}: {msg}" for msg in self._validate(body, p.get("schema", {}), "body")]
        return problems

    def _resolve(self, schema: dict[str, Any]) -> dict[str, Any]:
        seen = set()
        while "$ref" in schema:
            ref = schema["$ref"]
            if ref in seen or not ref.startswith("#/definitions/"):
                raise ValueError(f"cannot resolve {ref}")
            seen.add(ref)
            schema = self.definitions[ref.removeprefix("#/definitions/")]
        return schema

    def _validate(self, value: Any, schema: dict[str, Any], where: str) -> list[str]:
        schema = self._resolve(schema)
        problems: list[str] = []
        typ = schema.get("type")
        if typ is None and "properties" in schema:
            typ = "object"
        if typ in _JSON_TYPES:
            # bool is an int in Python; JSON keeps them apart.
            ok = isinstance(value, _JSON_TYPES[typ]) and not (typ in ("integer", "number") and isinstance(value, bool))
            if not ok:
                return [f"{where}: expected {typ}, got {type(value).__name__}"]
        if "enum" in schema and value not in schema["enum"]:
            problems.append(f"{where}: {value!r} is not one of {schema['enum']}")
        if typ == "object" and isinstance(value, dict):
            props = schema.get("properties", {})
            for name in schema.get("required", []):
                if name not in value:
                    problems.append(f"{where}: required field {name!r} missing")
            for name, item in value.items():
                if name in props:
                    problems += self._validate(item, props[name], f"{where}.{name}")
                elif props and not schema.get("additionalProperties"):
                    problems.append(f"{where}: field {name!r} is not in the schema")
        if typ == "array" and isinstance(value, list) and "items" in schema:
            for i, item in enumerate(value):
                problems += self._validate(item, schema["items"], f"{where}[{i}]")
        return problems


def check(spec: Spec, method: str, path: str, body: Any = None) -> list[str]:
    """Module-level convenience: ``spec.check(method, path, body)``."""
    return spec.check(method, path, body)
