"""Secret values out of anything shown to a person."""

from __future__ import annotations

from typing import Any

REDACTED = "<redacted>"


def redact(objs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """A copy with every Secret's data and stringData values replaced by <redacted>."""
    out = []
    for obj in objs:
        if obj.get("kind") == "Secret":
            obj = dict(obj)
            for key in ("data", "stringData"):
                if obj.get(key):
                    obj[key] = dict.fromkeys(obj[key], REDACTED)
        out.append(obj)
    return out
