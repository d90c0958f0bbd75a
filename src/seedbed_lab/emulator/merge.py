"""Structured merge for server-side apply, field ownership sets, the three patch types, selectors.

Stored objects are treated as immutable: every function here returns new containers along the
paths it changes and shares untouched subtrees, so no large object (CRDs!) is ever deep-copied, and
"nothing changed" is simply `result is live`.

Field sets have the shape of `managedFields[].fieldsV1`: {"f:spec": {"f:replicas": {}}}, keyed list
items as 'k:{"name":"x"}' with a "." member for the item itself; an empty dict is a leaf.
"""

from __future__ import annotations

import copy
import json
import re
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .resources import ResourceInfo

MISSING: Any = object()
FieldSet = dict[str, Any]

# Merge keys of associative lists, by field name (the real server takes them from the OpenAPI
# schema; these are the common ones). The first candidate whose fields every item has wins.
MERGE_KEYS: dict[str, tuple[tuple[str, ...], ...]] = {
    "containers": (("name",),),
    "initContainers": (("name",),),
    "ephemeralContainers": (("name",),),
    "env": (("name",),),
    "volumes": (("name",),),
    "volumeMounts": (("mountPath",), ("name",)),
    "volumeDevices": (("devicePath",),),
    "imagePullSecrets": (("name",),),
    "ports": (("containerPort",), ("port",)),
    "conditions": (("type",),),
    "hostAliases": (("ip",),),
    "ownerReferences": (("uid",),),
    "topologySpreadConstraints": (("topologyKey", "whenUnsatisfiable"),),
    # admissionregistration/v1 (Validating|Mutating)WebhookConfiguration: re-applying the manifest keeps
    # the caBundle cainjector wrote.
    "webhooks": (("name",),),
}


def list_keys(field: str | None, items: list[Any]) -> tuple[str, ...] | None:
    """The merge key of a list of maps, or None if the list is atomic."""
    if field is None or not items:
        return None
    candidates = MERGE_KEYS.get(field)
    if not candidates:
        return None
    for keys in candidates:
        seen: set[tuple[Any, ...]] = set()
        ok = True
        for item in items:
            if not isinstance(item, dict) or any(k not in item for k in keys):
                ok = False
                break
            kv = tuple(_hashable(item[k]) for k in keys)
            if kv in seen:  # duplicate keys: the real server rejects these; treat as atomic
                ok = False
                break
            seen.add(kv)
        if ok:
            return keys
    return None


def _hashable(v: Any) -> Any:
    return v if isinstance(v, str | int | float | bool) or v is None else json.dumps(v, sort_keys=True)


def item_key(item: dict[str, Any], keys: tuple[str, ...]) -> str:
    return "k:" + json.dumps({k: item[k] for k in keys}, separators=(",", ":"), sort_keys=True)


def _keyed_index(items: list[Any], keys: tuple[str, ...]) -> dict[str, Any]:
    return {item_key(i, keys): i for i in items}


# ---- field sets ----------------------------------------------------------------------------


def fields_of(value: Any, field: str | None = None) -> FieldSet:
    """The set of leaf fields a value sets."""
    if isinstance(value, dict):
        return {"f:" + k: fields_of(v, k) for k, v in value.items()}
    if isinstance(value, list):
        keys = list_keys(field, value)
        if keys is None:
            return {}
        return {item_key(i, keys): {".": {}, **fields_of(i)} for i in value}
    return {}


def fs_union(a: FieldSet, b: FieldSet) -> FieldSet:
    if not a:
        return b
    if not b:
        return a
    out = dict(a)
    for k, bv in b.items():
        av = out.get(k)
        out[k] = bv if av is None else fs_union(av, bv)
    return out


def fs_sub(a: FieldSet, b: FieldSet) -> FieldSet:
    """Leaves of a that b does not cover (a leaf in b covers a whole subtree of a)."""
    out: FieldSet = {}
    for k, av in a.items():
        bv = b.get(k)
        if bv is None:
            out[k] = av
        elif av and bv:
            r = fs_sub(av, bv)
            if r:
                out[k] = r
    return out


def fs_intersect(a: FieldSet, b: FieldSet) -> FieldSet:
    out: FieldSet = {}
    for k, av in a.items():
        bv = b.get(k)
        if bv is None:
            continue
        if av and bv:
            r = fs_intersect(av, bv)
            if r:
                out[k] = r
        else:
            out[k] = av if not av else bv
    return out


def fs_paths(fs: FieldSet, prefix: str = "") -> list[str]:
    """Human-readable paths of the leaves, as in the real server's conflict messages."""
    out: list[str] = []
    for k, v in fs.items():
        if k == ".":
            out.append(prefix)
            continue
        if k.startswith("f:"):
            p = f"{prefix}.{k[2:]}"
        else:
            kv = json.loads(k[2:])
            p = prefix + "[" + ",".join(f"{a}={json.dumps(b)}" for a, b in kv.items()) + "]"
        out.extend(fs_paths(v, p) if v else [p])
    return out


def diff_fields(old: Any, new: Any, field: str | None = None) -> FieldSet | None:
    """Fields whose value differs between old and new (added, changed or removed); None if equal."""
    if old is new:
        return None
    if isinstance(old, dict) and isinstance(new, dict):
        out: FieldSet = {}
        for k, nv in new.items():
            ov = old.get(k, MISSING)
            if ov is MISSING:
                out["f:" + k] = fields_of(nv, k)
            else:
                d = diff_fields(ov, nv, k)
                if d is not None:
                    out["f:" + k] = d
        for k, ov in old.items():
            if k not in new:
                out["f:" + k] = fields_of(ov, k)
        return out or None
    if isinstance(old, list) and isinstance(new, list):
        keys = list_keys(field, new) if new else list_keys(field, old)
        if keys is not None and (not old or list_keys(field, old) == keys) and (not new or list_keys(field, new) == keys):
            oi, ni = _keyed_index(old, keys), _keyed_index(new, keys)
            out = {}
            for k, item in ni.items():
                if k not in oi:
                    out[k] = {".": {}, **fields_of(item)}
                else:
                    d = diff_fields(oi[k], item)
                    if d is not None:
                        out[k] = d
            for k, item in oi.items():
                if k not in ni:
                    out[k] = {".": {}, **fields_of(item)}
            return out or None
    if type(old) is type(new) and old == new:
        return None
    return {}


# ---- server-side apply merge ---------------------------------------------------------------


def apply_merge(live: Any, applied: Any, field: str | None = None) -> Any:
    """Merge an applied configuration into the live value; returns `live` itself when unchanged."""
    if isinstance(applied, dict) and isinstance(live, dict):
        out: dict[str, Any] | None = None
        for k, v in applied.items():
            lv = live.get(k, MISSING)
            nv = v if lv is MISSING else apply_merge(lv, v, k)
            if nv is not lv:
                if out is None:
                    out = dict(live)
                out[k] = nv
        return live if out is None else out
    if isinstance(applied, list) and isinstance(live, list):
        keys = list_keys(field, applied)
        if keys is not None and live and list_keys(field, live) == keys:
            li = _keyed_index(live, keys)
            result: list[Any] = []
            seen = set()
            for item in applied:
                k = item_key(item, keys)
                seen.add(k)
                result.append(apply_merge(li[k], item) if k in li else item)
            result.extend(i for k, i in li.items() if k not in seen)  # items other managers own
            if len(result) == len(live) and all(a is b for a, b in zip(result, live, strict=True)):
                return live
            return result
        return live if live == applied else applied
    if type(live) is type(applied) and live == applied:
        return live
    return applied


def remove_fields(obj: Any, fs: FieldSet, field: str | None = None) -> Any:
    """obj without the leaves in fs (copy-on-write)."""
    if not fs:
        return obj
    if isinstance(obj, dict):
        out = dict(obj)
        for k, sub in fs.items():
            if not k.startswith("f:"):
                continue
            name = k[2:]
            if name not in out:
                continue
            if not sub:
                del out[name]
            else:
                out[name] = remove_fields(out[name], sub, name)
        return out
    if isinstance(obj, list):
        keys = list_keys(field, obj)
        if keys is None:
            return obj
        result = []
        for item in obj:
            sub = fs.get(item_key(item, keys))
            if sub is None:
                result.append(item)
            elif "." not in sub:
                result.append(remove_fields(item, sub))
        return result
    return obj


# ---- patches -------------------------------------------------------------------------------


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386 JSON merge patch."""
    if not isinstance(patch, dict):
        return patch
    out = dict(target) if isinstance(target, dict) else {}
    for k, v in patch.items():
        if v is None:
            out.pop(k, None)
        else:
            out[k] = merge_patch(out.get(k), v)
    return out


def strategic_merge_patch(target: Any, patch: Any, field: str | None = None) -> Any:
    """Merge patch plus merge-by-key lists and the $patch directive (replace/delete)."""
    if isinstance(patch, dict):
        directive = patch.get("$patch")
        if directive == "replace":
            return {k: v for k, v in patch.items() if k != "$patch"}
        if directive == "delete":
            return None
        out = dict(target) if isinstance(target, dict) else {}
        for k, v in patch.items():
            if k.startswith("$"):
                continue
            if k.startswith("$setElementOrder/") or k.startswith("$deleteFromPrimitiveList/"):
                continue
            if v is None:
                out.pop(k, None)
            else:
                nv = strategic_merge_patch(out.get(k), v, k)
                if nv is None:
                    out.pop(k, None)
                else:
                    out[k] = nv
        return out
    if isinstance(patch, list) and isinstance(target, list):
        plain = [p for p in patch if not (isinstance(p, dict) and "$patch" in p)]
        keys = list_keys(field, [p for p in patch if isinstance(p, dict)]) if patch else None
        if keys is not None and list_keys(field, target) in (keys, None) and all(
            isinstance(t, dict) and all(k in t for k in keys) for t in target
        ):
            result = list(target)
            index = {item_key(t, keys): n for n, t in enumerate(result)}
            removed: set[int] = set()
            for p in patch:
                k = item_key(p, keys)
                if p.get("$patch") == "delete":
                    if k in index:
                        removed.add(index[k])
                    continue
                if k in index:
                    result[index[k]] = strategic_merge_patch(result[index[k]], p)
                else:
                    index[k] = len(result)
                    result.append(strategic_merge_patch({}, p))
            return [x for n, x in enumerate(result) if n not in removed]
        return plain
    return patch


class PatchError(Exception):
    pass


def _pointer(path: str) -> list[str]:
    if path == "":
        return []
    if not path.startswith("/"):
        raise PatchError(f"invalid JSON pointer {path!r}")
    return [p.replace("~1", "/").replace("~0", "~") for p in path[1:].split("/")]


def _walk(doc: Any, parts: list[str]) -> Any:
    for p in parts:
        if isinstance(doc, list):
            doc = doc[int(p)]
        elif isinstance(doc, dict):
            doc = doc[p]
        else:
            raise PatchError("path does not exist")
    return doc


def json_patch(doc: Any, ops: list[dict[str, Any]]) -> Any:
    """RFC 6902 JSON patch on a copy of doc."""
    doc = copy.deepcopy(doc)
    for op in ops:
        kind = op.get("op")
        parts = _pointer(op.get("path", ""))
        try:
            if kind == "test":
                if _walk(doc, parts) != op.get("value"):
                    raise PatchError(f"test failed at {op.get('path')}")
                continue
            if kind in ("move", "copy"):
                src = _pointer(op.get("from", ""))
                value = copy.deepcopy(_walk(doc, src))
                if kind == "move":
                    doc = _remove(doc, src)
                doc = _add(doc, parts, value)
            elif kind == "add":
                doc = _add(doc, parts, op.get("value"))
            elif kind == "remove":
                doc = _remove(doc, parts)
            elif kind == "replace":
                doc = _remove(doc, parts)
                doc = _add(doc, parts, op.get("value"))
            else:
                raise PatchError(f"unknown op {kind!r}")
        except (KeyError, IndexError, ValueError, TypeError) as e:
            raise PatchError(f"{kind} {op.get('path')}: {e}") from e
    return doc


def _add(doc: Any, parts: list[str], value: Any) -> Any:
    if not parts:
        return value
    parent = _walk(doc, parts[:-1])
    last = parts[-1]
    if isinstance(parent, list):
        if last == "-":
            parent.append(value)
        else:
            idx = int(last)
            if idx > len(parent):
                raise PatchError("index out of range")
            parent.insert(idx, value)
    elif isinstance(parent, dict):
        parent[last] = value
    else:
        raise PatchError("parent is not a container")
    return doc


def _remove(doc: Any, parts: list[str]) -> Any:
    if not parts:
        return None
    parent = _walk(doc, parts[:-1])
    if isinstance(parent, list):
        del parent[int(parts[-1])]
    else:
        del parent[parts[-1]]
    return doc


# ---- selectors -----------------------------------------------------------------------------


class SelectorError(ValueError):
    pass


Requirement = tuple[str, str, tuple[str, ...]]

_SET_RE = re.compile(r"^([^\s!=]+)\s+(in|notin)\s+\((.*)\)$")
_EQ_RE = re.compile(r"^([^\s!=]+)\s*(==|=|!=)\s*([^\s]*)$")
_KEY_RE = re.compile(r"^[A-Za-z0-9]([-A-Za-z0-9_./]*[A-Za-z0-9])?$")


def _split_terms(s: str) -> list[str]:
    terms, depth, cur = [], 0, []
    for ch in s:
        if ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
        if ch == "," and depth == 0:
            terms.append("".join(cur))
            cur = []
        else:
            cur.append(ch)
    terms.append("".join(cur))
    return [t.strip() for t in terms if t.strip()]


def parse_label_selector(s: str | None) -> list[Requirement]:
    reqs: list[Requirement] = []
    for term in _split_terms(s or ""):
        if m := _SET_RE.match(term):
            vals = tuple(v.strip() for v in m.group(3).split(",") if v.strip())
            reqs.append((m.group(1), m.group(2), vals))
        elif term.startswith("!"):
            key = term[1:].strip()
            if not _KEY_RE.match(key):
                raise SelectorError(f"invalid label selector term {term!r}")
            reqs.append((key, "!", ()))
        elif m := _EQ_RE.match(term):
            reqs.append((m.group(1), "!=" if m.group(2) == "!=" else "=", (m.group(3),)))
        elif _KEY_RE.match(term):
            reqs.append((term, "exists", ()))
        else:
            raise SelectorError(f"unable to parse requirement: {term!r}")
    return reqs


def match_labels(reqs: list[Requirement], labels: dict[str, str] | None) -> bool:
    labels = labels or {}
    for key, op, vals in reqs:
        present = key in labels
        if op == "=" and (not present or labels[key] != vals[0]):
            return False
        if op == "!=" and present and labels[key] == vals[0]:
            return False
        if op == "in" and (not present or labels[key] not in vals):
            return False
        if op == "notin" and present and labels[key] in vals:
            return False
        if op == "exists" and not present:
            return False
        if op == "!" and present:
            return False
    return True


# The field labels a LIST or watch of a built-in core/v1 kind accepts: kubernetes
# pkg/apis/core/v1/conversion.go (AddFieldLabelConversionFunc for Pod, Node, ReplicationController,
# and AddFieldLabelConversionsFor{Event,Namespace,Secret,Service}; read at kubernetes/kubernetes
# 0158de93, the emulator reports v1.37). The values they select by are those of
# pkg/registry/core/<kind>/strategy.go SelectableFields (a Secret's `type`, for instance), the
# object's own fields at the same path; the one label renamed is Pod's old `spec.host`.
_META = frozenset({"metadata.name", "metadata.namespace"})
_CORE_FIELD_LABELS: dict[str, frozenset[str]] = {
    "Pod": _META | {"spec.nodeName", "spec.restartPolicy", "spec.schedulerName", "spec.serviceAccountName",
                    "spec.hostNetwork", "status.phase", "status.podIP", "status.podIPs",
                    "status.nominatedNodeName", "spec.host"},
    "Node": frozenset({"metadata.name", "spec.unschedulable"}),
    "ReplicationController": _META | {"status.replicas"},
    "Event": _META | {"involvedObject.kind", "involvedObject.namespace", "involvedObject.name",
                      "involvedObject.uid", "involvedObject.apiVersion", "involvedObject.resourceVersion",
                      "involvedObject.fieldPath", "reason", "reportingComponent", "source", "type"},
    "Namespace": frozenset({"metadata.name", "status.phase"}),
    "Secret": _META | {"type"},
    "Service": _META | {"spec.clusterIP", "spec.type"},
}
_RENAMED = {"spec.host": "spec.nodeName"}  # Pod: "backwards compatibility with old v1 clients"


def _field_label(info: ResourceInfo, label: str) -> str:
    """The path ``label`` selects by on ``info``'s kind, or the API server's refusal (400 BadRequest):

    - core/v1 kinds with their own list (above): "field label not supported: <label>";
    - custom resources: apiextensions-apiserver pkg/apiserver/conversion/converter.go
      ``crConverter.ConvertFieldLabel`` (kubernetes/kubernetes 8444b373): metadata.name, and
      metadata.namespace when namespaced (CRD ``selectableFields`` are not modelled);
    - every other built-in kind: apimachinery pkg/runtime/conversion.go
      ``DefaultMetaV1FieldSelectorConversion`` (cb192922): metadata.name and metadata.namespace.
    """
    if info.crd is not None:
        if label == "metadata.name" or (info.namespaced and label == "metadata.namespace"):
            return label
        raise SelectorError(f"field label not supported: {label}")
    if not info.group and info.kind in _CORE_FIELD_LABELS:
        if label in _CORE_FIELD_LABELS[info.kind]:
            return _RENAMED.get(label, label)
        raise SelectorError(f"field label not supported: {label}")
    if label in _META:
        return label
    raise SelectorError(f'"{label}" is not a known field selector: only "metadata.name", "metadata.namespace"')


def parse_field_selector(s: str | None, info: ResourceInfo) -> list[tuple[str, bool, str]]:
    """(dotted path, equal?, value) terms, each label checked for ``info``'s kind as the API server does."""
    out = []
    for term in _split_terms(s or ""):
        m = re.match(r"^([A-Za-z0-9_.]+)\s*(==|=|!=)\s*(.*)$", term)
        if not m:
            raise SelectorError(f"invalid field selector term {term!r}")
        out.append((_field_label(info, m.group(1)), m.group(2) != "!=", m.group(3)))
    return out


def match_fields(reqs: list[tuple[str, bool, str]], obj: dict[str, Any]) -> bool:
    for path, eq, value in reqs:
        cur: Any = obj
        for part in path.split("."):
            cur = cur.get(part) if isinstance(cur, dict) else None
        actual = "" if cur is None else str(cur).lower() if isinstance(cur, bool) else str(cur)
        if (actual == value) != eq:
            return False
    return True
