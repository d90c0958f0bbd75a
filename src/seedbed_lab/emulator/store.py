"""Object storage, the write path (versions, generation, managedFields, no-op detection), watch events.

Everything here runs in the emulator's server thread; nothing is locked. Stored objects are never
mutated in place: a write builds a new top-level dict and a new metadata dict and shares the rest.
"""

from __future__ import annotations

import asyncio
import base64
import contextvars
import json
import re
import uuid
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from .merge import (
    FieldSet,
    apply_merge,
    diff_fields,
    fields_of,
    fs_intersect,
    fs_paths,
    fs_sub,
    fs_union,
    match_fields,
    match_labels,
    remove_fields,
)
from .resources import Registry, ResourceInfo

Obj = dict[str, Any]

REASONS = {
    400: "BadRequest", 401: "Unauthorized", 403: "Forbidden", 404: "NotFound", 405: "MethodNotAllowed",
    406: "NotAcceptable", 409: "Conflict", 410: "Expired", 415: "UnsupportedMediaType", 422: "Invalid",
    429: "TooManyRequests", 500: "InternalError", 503: "ServiceUnavailable", 504: "Timeout",
}

# The request being served, so the store can mark it as having changed state (emu.writes()).
CURRENT_REQUEST: contextvars.ContextVar[Any] = contextvars.ContextVar(
    "emulator_request", default=None
)

HISTORY = 10_000
_METADATA_OWNED = ("labels", "annotations", "finalizers", "ownerReferences")
_DNS_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?$")
_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")


def status_body(code: int, message: str, reason: str | None = None, details: dict[str, Any] | None = None) -> Obj:
    body: Obj = {
        "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
        "message": message, "reason": reason or REASONS.get(code, "Unknown"), "code": code,
    }
    if details:
        body["details"] = details
    return body


class ApiError(Exception):
    def __init__(self, code: int, message: str, reason: str | None = None,
                 details: dict[str, Any] | None = None, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.body = status_body(code, message, reason, details)
        self.headers = headers or {}


def not_found(info: ResourceInfo, name: str) -> ApiError:
    return ApiError(404, f'{info.group_resource} "{name}" not found', "NotFound",
                    {"name": name, "group": info.group, "kind": info.plural})


def now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass
class Event:
    rv: int
    type: str
    key: tuple[str, str]
    namespace: str
    obj: Obj
    old: Obj | None
    _lines: dict[tuple[str, str], bytes] = field(default_factory=dict)

    def line(self, type_: str, api_version: str | None) -> bytes:
        """The serialized event, cached: every watcher of the same shape shares one encoding."""
        cache_key = (type_, api_version or "")
        cached = self._lines.get(cache_key)
        if cached is None:
            obj = self.obj
            if api_version and obj.get("apiVersion") != api_version:
                obj = {**obj, "apiVersion": api_version}
            cached = json.dumps({"type": type_, "object": obj}, separators=(",", ":")).encode() + b"\n"
            self._lines[cache_key] = cached
        return cached


@dataclass(eq=False)
class Watcher:
    key: tuple[str, str]
    namespace: str | None
    labels: list[Any]
    fields: list[Any]
    api_version: str
    queue: asyncio.Queue[tuple[Event, str] | None] = field(default_factory=asyncio.Queue)

    def matches(self, obj: Obj | None) -> bool:
        if obj is None:
            return False
        md = obj.get("metadata") or {}
        if self.namespace is not None and md.get("namespace", "") != self.namespace:
            return False
        if self.labels and not match_labels(self.labels, md.get("labels")):
            return False
        return not (self.fields and not match_fields(self.fields, obj))

    def offer(self, ev: Event) -> None:
        new_match = ev.type != "DELETED" and self.matches(ev.obj)
        old_match = self.matches(ev.old) if ev.old is not None else False
        if ev.type == "DELETED":
            if self.matches(ev.obj):
                self.queue.put_nowait((ev, "DELETED"))
        elif new_match and old_match:
            self.queue.put_nowait((ev, "MODIFIED"))
        elif new_match:
            self.queue.put_nowait((ev, "ADDED"))
        elif old_match:  # stopped matching the selector: the real server sends DELETED
            self.queue.put_nowait((ev, "DELETED"))


def tracked(info: ResourceInfo, obj: Obj, part: str) -> Obj:
    """The part of an object field ownership is tracked for (main resource or status)."""
    if part == "status":
        return {"status": obj["status"]} if "status" in obj else {}
    out: Obj = {}
    for k, v in obj.items():
        if k in ("apiVersion", "kind", "metadata") or (k == "status" and info.status):
            continue
        out[k] = v
    md = obj.get("metadata") or {}
    sub = {k: md[k] for k in _METADATA_OWNED if k in md}
    if sub:
        out["metadata"] = sub
    return out


class Store:
    def __init__(self, registry: Registry, history: int = HISTORY) -> None:
        self.registry = registry
        self.objects: dict[tuple[str, str], dict[tuple[str, str], Obj]] = {}
        self.rv = 1
        self.history: deque[Event] = deque(maxlen=history)
        self.watchers: set[Watcher] = set()
        # Callbacks set by the emulator (controllers, hooks, garbage collection).
        self.after_write: Callable[[ResourceInfo, Obj | None, Obj, str], None] = lambda *a: None
        self.after_delete: Callable[[ResourceInfo, Obj], None] = lambda *a: None
        self.before_create: Callable[[ResourceInfo, Obj], Obj] = lambda info, obj: obj
        # Admission: called for every main-resource write an API request makes (not for controller writes
        # or emu.put), with the stored object (None on create) and the new one; raises ApiError to deny.
        self.admit: Callable[[ResourceInfo, Obj | None, Obj], None] = lambda *a: None

    # ---- reads --------------------------------------------------------------------------

    def bucket(self, info: ResourceInfo) -> dict[tuple[str, str], Obj]:
        return self.objects.setdefault(info.store_key, {})

    def get(self, info: ResourceInfo, namespace: str | None, name: str) -> Obj | None:
        return self.objects.get(info.store_key, {}).get((namespace or "", name))

    def list(self, info: ResourceInfo, namespace: str | None) -> list[Obj]:
        bucket = self.objects.get(info.store_key, {})
        keys = sorted(k for k in bucket if namespace is None or k[0] == namespace)
        return [bucket[k] for k in keys]

    def namespace_obj(self, name: str) -> Obj | None:
        return self.objects.get(("", "namespaces"), {}).get(("", name))

    # ---- the write path -----------------------------------------------------------------

    def _check_namespace(self, info: ResourceInfo, namespace: str) -> None:
        if not info.namespaced:
            return
        ns = self.namespace_obj(namespace)
        if ns is None:
            raise ApiError(404, f'namespaces "{namespace}" not found', "NotFound",
                           {"name": namespace, "kind": "namespaces"})
        if (ns.get("metadata") or {}).get("deletionTimestamp"):
            raise ApiError(
                403,
                f"{info.kind.lower()}s \"{(ns.get('metadata') or {}).get('name')}\" is forbidden: unable to create "
                f"new content in namespace {namespace} because it is being terminated",
                "Forbidden",
                {"name": namespace, "kind": info.plural,
                 "causes": [{"reason": "NamespaceTerminating", "message": f"namespace {namespace} is being terminated",
                             "field": "metadata.namespace"}]},
            )

    def _validate_name(self, info: ResourceInfo, name: str) -> None:
        if not name:
            raise ApiError(422, f"{info.kind} is invalid: metadata.name: Required value: name or generateName is required",
                           "Invalid", {"kind": info.kind, "causes": [{"reason": "FieldValueRequired",
                                                                        "message": "Required value", "field": "metadata.name"}]})
        if info.group == "rbac.authorization.k8s.io":
            ok = "/" not in name and "%" not in name and name not in (".", "..")
        elif info.kind == "Namespace":
            ok = bool(_DNS_LABEL.match(name))
        else:
            ok = bool(_DNS_SUBDOMAIN.match(name))
        if info.kind == "CustomResourceDefinition":
            ok = ok and name.count(".") >= 1
        if not ok:
            raise ApiError(422, f'{info.kind} "{name}" is invalid: metadata.name: Invalid value: "{name}": '
                                "a lowercase RFC 1123 name must consist of lower case alphanumeric characters, '-' or '.'",
                           "Invalid", {"name": name, "kind": info.kind,
                                       "causes": [{"reason": "FieldValueInvalid", "field": "metadata.name"}]})

    def _finish(self, info: ResourceInfo, old: Obj | None, new: Obj, part: str, dry_run: bool) -> tuple[Obj, bool]:
        """Store new (unless it equals old), bump versions, emit the event. Returns (obj, changed)."""
        if info.group == "" and info.kind == "Secret":
            if "stringData" in new:
                _merge_string_data(new)
            # kubernetes pkg/apis/core/v1/defaults.go SetDefaults_Secret (e34b0935): an empty type is Opaque (and
            # so a LIST with fieldSelector type=Opaque finds it).
            if not new.get("type"):
                new["type"] = "Opaque"
        if part == "main" and CURRENT_REQUEST.get() is not None:
            self.admit(info, old, new)
        md = new["metadata"]
        if old is not None:
            omd = old["metadata"]
            if _same(old, new):
                return old, False
            # generation: bumped only by a change of the spec (or of everything but metadata/status)
            if "spec" in new or "spec" in old:
                spec_changed = new.get("spec") is not old.get("spec") and new.get("spec") != old.get("spec")
            else:
                spec_changed = any(
                    new.get(k) is not old.get(k) and new.get(k) != old.get(k)
                    for k in set(new) | set(old) if k not in ("metadata", "status", "apiVersion", "kind")
                )
            md["generation"] = omd.get("generation", 1) + (1 if spec_changed and part == "main" else 0)
        if dry_run:
            md["resourceVersion"] = md.get("resourceVersion") or str(self.rv)
            return new, True
        if old is not None and md.get("deletionTimestamp") and not md.get("finalizers") and info.kind != "Namespace":
            self._remove(info, new)  # the last finalizer is gone: deletion completes now
            return new, True
        self.rv += 1
        md["resourceVersion"] = str(self.rv)
        self.bucket(info)[(md.get("namespace", ""), md["name"])] = new
        self._emit(Event(self.rv, "MODIFIED" if old is not None else "ADDED", info.store_key,
                         md.get("namespace", ""), new, old))
        req = CURRENT_REQUEST.get()
        if req is not None:
            req.changed = True
        self.after_write(info, old, new, part)
        return new, True

    def _emit(self, ev: Event) -> None:
        self.history.append(ev)
        for w in self.watchers:
            if w.key == ev.key:
                w.offer(ev)

    def _remove(self, info: ResourceInfo, obj: Obj) -> Obj:
        md = obj["metadata"]
        self.bucket(info).pop((md.get("namespace", ""), md["name"]), None)
        self.rv += 1
        # The DELETED event carries the resourceVersion of the deletion, as in the real server.
        gone = {**obj, "metadata": {**md, "resourceVersion": str(self.rv)}}
        self._emit(Event(self.rv, "DELETED", info.store_key, md.get("namespace", ""), gone, None))
        req = CURRENT_REQUEST.get()
        if req is not None:
            req.changed = True
        self.after_delete(info, gone)
        return gone

    def _base_metadata(self, info: ResourceInfo, body_md: Obj, namespace: str, name: str, old: Obj | None) -> Obj:
        md = {k: v for k, v in body_md.items() if k not in (
            "uid", "resourceVersion", "generation", "creationTimestamp", "managedFields", "selfLink",
            "deletionTimestamp", "deletionGracePeriodSeconds")}
        md["name"] = name
        if info.namespaced:
            md["namespace"] = namespace
        else:
            md.pop("namespace", None)
        if old is None:
            md["uid"] = str(uuid.uuid4())
            md["creationTimestamp"] = now()
            md["generation"] = 1
        else:
            omd = old["metadata"]
            for k in ("uid", "creationTimestamp", "generation", "deletionTimestamp", "deletionGracePeriodSeconds"):
                if k in omd:
                    md[k] = omd[k]
            if old.get("kind") == "Namespace" and "labels" in omd:
                # the server-maintained name label survives updates that drop it
                md["labels"] = {**md.get("labels", {}), "kubernetes.io/metadata.name": name}
        return md

    def check_identity(self, info: ResourceInfo, body: Any, namespace: str, name: str | None) -> Obj:
        if not isinstance(body, dict):
            raise ApiError(400, "the body of the request was in an unknown format - accepted media types include: "
                                "application/json, application/yaml", "BadRequest")
        api_version, kind = body.get("apiVersion"), body.get("kind")
        # Any served version of the right group is accepted: stored objects keep the version they were
        # written in (no conversion), and the test back door passes them back as they are.
        if api_version is not None and api_version.rpartition("/")[0] != info.group:
            raise ApiError(400, f"the API version in the data ({api_version}) does not match the expected API "
                                f"version ({info.api_version})", "BadRequest")
        if kind is not None and kind != info.kind:
            raise ApiError(400, f"the kind in the data ({kind}) does not match the expected kind ({info.kind})",
                           "BadRequest")
        md = body.get("metadata") or {}
        if not isinstance(md, dict):
            raise ApiError(400, "metadata must be an object", "BadRequest")
        if info.namespaced and md.get("namespace") not in (None, "", namespace):
            raise ApiError(400, "the namespace of the provided object does not match the namespace sent on the request",
                           "BadRequest")
        if name is not None and md.get("name") not in (None, name):
            raise ApiError(400, "the name of the object "
                                f"({md.get('name')}) does not match the name on the URL ({name})", "BadRequest")
        return md

    def create(self, info: ResourceInfo, namespace: str, body: Obj, manager: str | None,
               dry_run: bool = False, internal: bool = False) -> Obj:
        md = self.check_identity(info, body, namespace, None)
        name = md.get("name") or ""
        if not name and md.get("generateName"):
            name = md["generateName"] + uuid.uuid4().hex[:5]
        self._validate_name(info, name)
        if self.get(info, namespace, name) is not None:
            raise ApiError(409, f'{info.group_resource} "{name}" already exists', "AlreadyExists",
                           {"name": name, "group": info.group, "kind": info.plural})
        self._check_namespace(info, namespace)
        new = dict(body)
        new["apiVersion"], new["kind"] = info.api_version, info.kind
        new["metadata"] = self._base_metadata(info, md, namespace, name, None)
        if info.status and not internal:
            new.pop("status", None)  # status is set through /status, as in the real server
        new = self.before_create(info, new)
        if manager:
            new["metadata"]["managedFields"] = [_entry(manager, "Update", info.api_version,
                                                       fields_of(tracked(info, new, "main")), None)]
        return self._finish(info, None, new, "main", dry_run)[0]

    def update(self, info: ResourceInfo, namespace: str, name: str, body: Obj, manager: str | None,
               part: str = "main", dry_run: bool = False, internal: bool = False) -> tuple[Obj, bool]:
        """Replace (PUT, or the result of a non-apply patch). Returns (obj, changed)."""
        old = self.get(info, namespace, name)
        if old is None:
            raise not_found(info, name)
        md = self.check_identity(info, body, namespace, name)
        want_rv = md.get("resourceVersion")
        if want_rv and want_rv != old["metadata"].get("resourceVersion"):
            raise ApiError(409, f'Operation cannot be fulfilled on {info.group_resource} "{name}": the object has been '
                                "modified; please apply your changes to the latest version and try again", "Conflict",
                           {"name": name, "group": info.group, "kind": info.plural})
        if part == "status":
            new = {**old, "metadata": dict(old["metadata"])}
            if "status" in body:
                new["status"] = body["status"]
            else:
                new.pop("status", None)
        else:
            new = dict(body)
            new["apiVersion"], new["kind"] = old["apiVersion"], info.kind
            new["metadata"] = self._base_metadata(info, md, namespace, name, old)
            if info.status and not internal:
                if "status" in old:
                    new["status"] = old["status"]
                else:
                    new.pop("status", None)
            if info.kind == "Service":
                _keep_cluster_ip(old, new)
        new["metadata"]["managedFields"] = _managed_after_update(info, old, new, manager, part)
        return self._finish(info, old, new, part, dry_run)

    def apply(self, info: ResourceInfo, namespace: str, name: str, body: Any, manager: str, force: bool,
              part: str = "main", dry_run: bool = False) -> tuple[Obj, bool, bool]:
        """Server-side apply. Returns (obj, created, changed)."""
        md = self.check_identity(info, body, namespace, name)
        if body.get("apiVersion") is None or body.get("kind") is None:
            raise ApiError(400, "apiVersion and kind must be set in an apply configuration", "BadRequest")
        if md.get("name") is None:
            raise ApiError(400, "metadata.name must be set in an apply configuration", "BadRequest")
        old = self.get(info, namespace, name)
        config = tracked(info, body, part)
        mine_fields = fields_of(config)
        if old is None:
            if part == "status":
                raise not_found(info, name)
            self._validate_name(info, name)
            self._check_namespace(info, namespace)
            new = dict(config)
            new["apiVersion"], new["kind"] = info.api_version, info.kind
            new["metadata"] = self._base_metadata(info, {**md, **config.get("metadata", {})}, namespace, name, None)
            new = self.before_create(info, new)
            new["metadata"]["managedFields"] = [_entry(manager, "Apply", info.api_version, mine_fields, None)]
            obj, _ = self._finish(info, None, new, part, dry_run)
            return obj, True, True

        entries: list[Obj] = list(old["metadata"].get("managedFields") or [])
        sub = "status" if part == "status" else None
        mine_i = next((i for i, e in enumerate(entries) if e.get("manager") == manager
                       and e.get("operation") == "Apply" and e.get("subresource") == sub), None)
        merged = apply_merge(old, config)
        changed: FieldSet = {}
        if merged is not old:
            changed = diff_fields(tracked(info, old, part), tracked(info, merged, part)) or {}
        if changed:
            conflicts: list[tuple[int, FieldSet]] = []
            for i, e in enumerate(entries):
                if i == mine_i or e.get("subresource") != sub:
                    continue
                owned = e.get("fieldsV1") or {}
                c = fs_intersect(changed, owned)
                if not c:
                    continue
                if e.get("operation") == "Apply":
                    conflicts.append((i, c))
                # Update managers lose the fields this apply changes (no conflict with them here).
                entries[i] = {**e, "fieldsV1": fs_sub(owned, c)}
            if conflicts and not force:
                causes = []
                lines = []
                for i, c in conflicts:
                    e = entries[i]
                    for p in fs_paths(c):
                        causes.append({"type": "FieldManagerConflict", "field": p,
                                       "message": f'conflict with "{e.get("manager")}": {p}'})
                        lines.append(f'conflict with "{e.get("manager")}" using {e.get("apiVersion")}: {p}')
                n = len(causes)
                msg = f"Apply failed with {n} conflict{'s' if n != 1 else ''}: " + "\n".join(lines)
                raise ApiError(409, msg, "Conflict",
                               {"name": name, "group": info.group, "kind": info.plural, "causes": causes})
            for i, c in conflicts:
                entries[i] = {**entries[i], "fieldsV1": fs_sub(entries[i].get("fieldsV1") or {}, c)}
        # Fields this manager applied before but no longer does are removed unless someone else owns them.
        if mine_i is not None:
            removed = fs_sub(entries[mine_i].get("fieldsV1") or {}, mine_fields)
            for i, e in enumerate(entries):
                if removed and i != mine_i and e.get("subresource") == sub:
                    removed = fs_sub(removed, e.get("fieldsV1") or {})
            if removed:
                merged = remove_fields(merged, removed)
        entry = _entry(manager, "Apply", info.api_version, mine_fields, sub)
        if mine_i is None:
            entries.append(entry)
        else:
            prev = entries[mine_i]
            if prev.get("fieldsV1") == mine_fields and prev.get("apiVersion") == info.api_version:
                entry["time"] = prev.get("time", entry["time"])
            entries[mine_i] = entry
        # Managers left owning nothing disappear; the applier stays listed even when it owns nothing.
        entries = [e for e in entries if e.get("fieldsV1") or e is entry]
        if merged is old and _entries_equal(entries, old["metadata"].get("managedFields") or []):
            return old, False, False
        new = dict(merged)
        new["metadata"] = dict(merged["metadata"])
        new["metadata"]["managedFields"] = entries
        obj, did = self._finish(info, old, new, part, dry_run)
        return obj, False, did

    def delete(self, info: ResourceInfo, namespace: str, name: str, dry_run: bool = False) -> tuple[Obj, bool]:
        """Delete; with finalizers only mark it. Returns (last state, actually removed)."""
        old = self.get(info, namespace, name)
        if old is None:
            raise not_found(info, name)
        if dry_run:
            return old, False
        md = old["metadata"]
        if md.get("finalizers") or info.kind == "Namespace":
            if md.get("deletionTimestamp"):
                return old, False
            new = {**old, "metadata": {**md, "deletionTimestamp": now(), "deletionGracePeriodSeconds": 0}}
            if info.kind == "Namespace":
                new["status"] = {**(old.get("status") or {}), "phase": "Terminating"}
            self.rv += 1
            new["metadata"]["resourceVersion"] = str(self.rv)
            self.bucket(info)[(namespace or "", name)] = new
            self._emit(Event(self.rv, "MODIFIED", info.store_key, namespace or "", new, old))
            req = CURRENT_REQUEST.get()
            if req is not None:
                req.changed = True
            self.after_write(info, old, new, "delete")
            return new, False
        return self._remove(info, old), True

    def force_remove(self, info: ResourceInfo, obj: Obj) -> None:
        """Remove regardless of finalizers (namespace teardown, CRD removal)."""
        md = obj["metadata"]
        if self.get(info, md.get("namespace"), md["name"]) is not None:
            self._remove(info, obj)


def _merge_string_data(secret: Obj) -> None:
    """A Secret's stringData goes into data and is never stored or returned: kubernetes
    pkg/apis/core/v1/conversion.go Convert_v1_Secret_To_core_Secret ("StringData overwrites Data")."""
    string_data = secret.pop("stringData") or {}
    if isinstance(string_data, dict) and string_data:
        data = dict(secret.get("data") or {})
        for key, value in string_data.items():
            data[key] = base64.b64encode(str(value).encode()).decode()
        secret["data"] = data


def _keep_cluster_ip(old: Obj, new: Obj) -> None:
    ospec, nspec = old.get("spec") or {}, new.get("spec")
    if isinstance(nspec, dict) and ospec.get("clusterIP") and not nspec.get("clusterIP"):
        new["spec"] = {**nspec, "clusterIP": ospec["clusterIP"], "clusterIPs": ospec.get("clusterIPs", [ospec["clusterIP"]])}


def _entry(manager: str, op: str, api_version: str, fs: FieldSet, sub: str | None) -> Obj:
    e: Obj = {"manager": manager, "operation": op, "apiVersion": api_version, "time": now(),
              "fieldsType": "FieldsV1", "fieldsV1": fs}
    if sub:
        e["subresource"] = sub
    return e


def _strip_time(e: Obj) -> Obj:
    return {k: v for k, v in e.items() if k != "time"}


def _entries_equal(a: list[Obj], b: list[Obj]) -> bool:
    return len(a) == len(b) and all(_strip_time(x) == _strip_time(y) for x, y in zip(a, b, strict=True))


def _same(old: Obj, new: Obj) -> bool:
    """Equal apart from resourceVersion and managedFields times."""
    if old.keys() != new.keys():
        return False
    for k, v in new.items():
        if k == "metadata":
            continue
        ov = old[k]
        if ov is not v and ov != v:
            return False
    omd, nmd = old["metadata"], new["metadata"]
    keys = (set(omd) | set(nmd)) - {"resourceVersion", "managedFields"}
    for k in keys:
        if omd.get(k) != nmd.get(k):
            return False
    return _entries_equal(omd.get("managedFields") or [], nmd.get("managedFields") or [])


def _managed_after_update(info: ResourceInfo, old: Obj, new: Obj, manager: str | None, part: str) -> list[Obj]:
    entries: list[Obj] = list(old["metadata"].get("managedFields") or [])
    if not manager:
        return entries
    sub = "status" if part == "status" else None
    changed = diff_fields(tracked(info, old, part), tracked(info, new, part))
    if not changed:
        return entries
    owned_now = fs_intersect(changed, fields_of(tracked(info, new, part)))
    out = []
    mine: Obj | None = None
    for e in entries:
        if e.get("manager") == manager and e.get("operation") == "Update" and e.get("subresource") == sub:
            mine = e
            continue
        if e.get("subresource") == sub:
            rest = fs_sub(e.get("fieldsV1") or {}, changed)
            if rest:
                out.append({**e, "fieldsV1": rest})
        else:
            out.append(e)
    fs = fs_union(mine.get("fieldsV1") or {}, owned_now) if mine else owned_now
    if fs:
        out.append(_entry(manager, "Update", info.api_version, fs, sub))
    return out
