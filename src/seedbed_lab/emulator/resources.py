"""The resource registry: built-in kinds, CRD-defined kinds, discovery and OpenAPI v3 documents."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from typing import Any

ALL_VERBS = ("create", "delete", "deletecollection", "get", "list", "patch", "update", "watch")
CLUSTER_VERBS = ALL_VERBS


@dataclass(frozen=True)
class ResourceInfo:
    group: str
    version: str
    plural: str
    singular: str
    kind: str
    namespaced: bool
    short_names: tuple[str, ...] = ()
    verbs: tuple[str, ...] = ALL_VERBS
    status: bool = False  # has a /status subresource: main-resource writes ignore .status
    extra_subresources: tuple[tuple[str, str, tuple[str, ...]], ...] = ()  # (name, kind, verbs)
    categories: tuple[str, ...] = ()
    crd: str | None = None  # name of the defining CRD, None for built-ins

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version

    @property
    def group_resource(self) -> str:
        return f"{self.plural}.{self.group}" if self.group else self.plural

    @property
    def store_key(self) -> tuple[str, str]:
        # All versions of one group/resource share storage, as in the real server.
        return (self.group, self.plural)


def _r(
    group: str,
    version: str,
    plural: str,
    kind: str,
    namespaced: bool,
    short: tuple[str, ...] = (),
    status: bool = False,
    verbs: tuple[str, ...] = ALL_VERBS,
    extra: tuple[tuple[str, str, tuple[str, ...]], ...] = (),
    singular: str | None = None,
) -> ResourceInfo:
    return ResourceInfo(
        group, version, plural, singular or kind.lower(), kind, namespaced, short, verbs, status, extra
    )


BUILTINS: tuple[ResourceInfo, ...] = (
    _r("", "v1", "namespaces", "Namespace", False, ("ns",), True,
       verbs=("create", "delete", "get", "list", "patch", "update", "watch"),
       extra=(("finalize", "Namespace", ("update",)),)),
    _r("", "v1", "configmaps", "ConfigMap", True, ("cm",)),
    _r("", "v1", "secrets", "Secret", True),
    _r("", "v1", "services", "Service", True, ("svc",), True,
       verbs=("create", "delete", "deletecollection", "get", "list", "patch", "update", "watch")),
    _r("", "v1", "serviceaccounts", "ServiceAccount", True, ("sa",)),
    _r("", "v1", "pods", "Pod", True, ("po",), True,
       extra=(("portforward", "PodPortForwardOptions", ("create", "get")), ("log", "Pod", ("get",)))),
    _r("", "v1", "persistentvolumeclaims", "PersistentVolumeClaim", True, ("pvc",), True),
    _r("", "v1", "persistentvolumes", "PersistentVolume", False, ("pv",), True),
    _r("", "v1", "nodes", "Node", False, ("no",), True),
    _r("", "v1", "events", "Event", True, ("ev",)),
    _r("", "v1", "endpoints", "Endpoints", True, ("ep",), singular="endpoints"),
    _r("", "v1", "resourcequotas", "ResourceQuota", True, ("quota",), True),
    _r("", "v1", "limitranges", "LimitRange", True, ("limits",)),
    _r("apps", "v1", "deployments", "Deployment", True, ("deploy",), True),
    _r("apps", "v1", "daemonsets", "DaemonSet", True, ("ds",), True),
    _r("apps", "v1", "statefulsets", "StatefulSet", True, ("sts",), True),
    _r("apps", "v1", "replicasets", "ReplicaSet", True, ("rs",), True),
    _r("batch", "v1", "jobs", "Job", True, (), True),
    _r("batch", "v1", "cronjobs", "CronJob", True, ("cj",), True),
    _r("rbac.authorization.k8s.io", "v1", "roles", "Role", True),
    _r("rbac.authorization.k8s.io", "v1", "rolebindings", "RoleBinding", True),
    _r("rbac.authorization.k8s.io", "v1", "clusterroles", "ClusterRole", False),
    _r("rbac.authorization.k8s.io", "v1", "clusterrolebindings", "ClusterRoleBinding", False),
    _r("apiextensions.k8s.io", "v1", "customresourcedefinitions", "CustomResourceDefinition", False,
       ("crd", "crds"), True),
    _r("admissionregistration.k8s.io", "v1", "mutatingwebhookconfigurations",
       "MutatingWebhookConfiguration", False),
    _r("admissionregistration.k8s.io", "v1", "validatingwebhookconfigurations",
       "ValidatingWebhookConfiguration", False),
    _r("networking.k8s.io", "v1", "networkpolicies", "NetworkPolicy", True, ("netpol",)),
    _r("networking.k8s.io", "v1", "ingresses", "Ingress", True, ("ing",), True),
    _r("networking.k8s.io", "v1", "ingressclasses", "IngressClass", False),
    _r("policy", "v1", "poddisruptionbudgets", "PodDisruptionBudget", True, ("pdb",), True),
    _r("scheduling.k8s.io", "v1", "priorityclasses", "PriorityClass", False, ("pc",)),
    _r("storage.k8s.io", "v1", "storageclasses", "StorageClass", False, ("sc",)),
    _r("storage.k8s.io", "v1", "csidrivers", "CSIDriver", False),
    _r("coordination.k8s.io", "v1", "leases", "Lease", True),
    _r("authorization.k8s.io", "v1", "selfsubjectaccessreviews", "SelfSubjectAccessReview", False,
       verbs=("create",)),
    _r("apiregistration.k8s.io", "v1", "apiservices", "APIService", False, (), True),
)


@dataclass
class Registry:
    """Which group/version/resources are served. Mutated only in the server thread."""

    by_gvr: dict[tuple[str, str, str], ResourceInfo] = field(default_factory=dict)
    by_gvk: dict[tuple[str, str, str], ResourceInfo] = field(default_factory=dict)
    by_gk: dict[tuple[str, str], ResourceInfo] = field(default_factory=dict)
    # group -> ordered versions (first is preferred)
    groups: dict[str, list[str]] = field(default_factory=dict)
    generation: int = 0
    _openapi_cache: dict[tuple[int, str], tuple[str, bytes]] = field(default_factory=dict)

    @classmethod
    def builtin(cls) -> Registry:
        reg = cls()
        for info in BUILTINS:
            reg.add(info)
        return reg

    def add(self, info: ResourceInfo, preferred: bool = False) -> None:
        self.by_gvr[(info.group, info.version, info.plural)] = info
        self.by_gvk[(info.group, info.version, info.kind)] = info
        if preferred or (info.group, info.kind) not in self.by_gk:
            self.by_gk[(info.group, info.kind)] = info
        versions = self.groups.setdefault(info.group, [])
        if info.version not in versions:
            if preferred:
                versions.insert(0, info.version)
            else:
                versions.append(info.version)
        self.generation += 1

    def remove_crd(self, crd_name: str) -> None:
        for key, info in list(self.by_gvr.items()):
            if info.crd == crd_name:
                del self.by_gvr[key]
                self.by_gvk.pop((info.group, info.version, info.kind), None)
                if self.by_gk.get((info.group, info.kind)) is info:
                    del self.by_gk[(info.group, info.kind)]
        for group in list(self.groups):
            self.groups[group] = [v for v in self.groups[group] if self.versions_have_resources(group, v)]
            if not self.groups[group]:
                del self.groups[group]
        # A remaining version of the same kind becomes the lookup target.
        for info in self.by_gvr.values():
            self.by_gk.setdefault((info.group, info.kind), info)
        self.generation += 1

    def versions_have_resources(self, group: str, version: str) -> bool:
        return any(g == group and v == version for (g, v, _p) in self.by_gvr)

    def resolve(self, api_version: str, kind: str) -> ResourceInfo | None:
        group, _, version = api_version.rpartition("/")
        return self.by_gvk.get((group, version, kind)) or self.by_gk.get((group, kind))

    def resources_of(self, group: str, version: str) -> list[ResourceInfo]:
        return [i for (g, v, _p), i in self.by_gvr.items() if g == group and v == version]

    # ---- discovery documents -------------------------------------------------------------

    def api_resource_list(self, group: str, version: str) -> dict[str, Any]:
        resources: list[dict[str, Any]] = []
        for info in self.resources_of(group, version):
            entry: dict[str, Any] = {
                "name": info.plural,
                "singularName": info.singular,
                "namespaced": info.namespaced,
                "kind": info.kind,
                "verbs": list(info.verbs),
            }
            if info.short_names:
                entry["shortNames"] = list(info.short_names)
            if info.categories:
                entry["categories"] = list(info.categories)
            resources.append(entry)
            subs = list(info.extra_subresources)
            if info.status:
                subs.insert(0, ("status", info.kind, ("get", "patch", "update")))
            for sub, kind, verbs in subs:
                resources.append(
                    {"name": f"{info.plural}/{sub}", "singularName": "", "namespaced": info.namespaced,
                     "kind": kind, "verbs": list(verbs)}
                )
        gv = f"{group}/{version}" if group else version
        return {"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": gv, "resources": resources}

    def api_group(self, group: str) -> dict[str, Any]:
        versions = [{"groupVersion": f"{group}/{v}", "version": v} for v in self.groups[group]]
        return {"kind": "APIGroup", "apiVersion": "v1", "name": group, "versions": versions,
                "preferredVersion": versions[0]}

    def api_group_list(self) -> dict[str, Any]:
        groups = []
        for group in self.groups:
            if group:
                g = self.api_group(group)
                del g["kind"], g["apiVersion"]
                groups.append(g)
        return {"kind": "APIGroupList", "apiVersion": "v1", "groups": groups}

    # ---- OpenAPI v3 ------------------------------------------------------------------------
    # kubectl (apply, create, replace) asks OpenAPI v3 whether the PATCH operation of a kind takes
    # the `fieldValidation` query parameter; if so it leaves validation to the server and does no
    # client-side schema validation. So each group/version document lists, per resource, the
    # PATCH operation with its x-kubernetes-group-version-kind and that parameter. No schemas.

    def _openapi_doc(self, group: str, version: str) -> tuple[str, bytes]:
        prefix = f"/apis/{group}/{version}" if group else f"/api/{version}"
        params = [
            {"name": n, "in": "query", "schema": {"type": t, "uniqueItems": True}}
            for n, t in (("dryRun", "string"), ("fieldManager", "string"), ("fieldValidation", "string"),
                         ("force", "boolean"))
        ]
        paths: dict[str, Any] = {}
        for info in self.resources_of(group, version):
            gvk = {"group": group, "version": version, "kind": info.kind}
            base = f"{prefix}/namespaces/{{namespace}}/{info.plural}" if info.namespaced else f"{prefix}/{info.plural}"
            ops: dict[str, Any] = {}
            if "get" in info.verbs:
                ops["get"] = {"operationId": f"read{info.kind}", "responses": {"200": {"description": "OK"}},
                              "x-kubernetes-action": "get", "x-kubernetes-group-version-kind": gvk}
            if "patch" in info.verbs:
                ops["patch"] = {"operationId": f"patch{info.kind}", "parameters": params,
                                "responses": {"200": {"description": "OK"}},
                                "x-kubernetes-action": "patch", "x-kubernetes-group-version-kind": gvk}
            if ops:
                paths[f"{base}/{{name}}"] = ops
            if "create" in info.verbs:
                paths[base] = {"post": {"operationId": f"create{info.kind}", "parameters": params,
                                        "responses": {"201": {"description": "Created"}},
                                        "x-kubernetes-action": "post", "x-kubernetes-group-version-kind": gvk}}
        doc = {"openapi": "3.0.0", "info": {"title": "Kubernetes", "version": "v1.37.0"}, "paths": paths,
               "components": {"schemas": {}}}
        body = json.dumps(doc, separators=(",", ":")).encode()
        return hashlib.sha512(body).hexdigest().upper()[:128], body

    def openapi_v3_index(self) -> dict[str, Any]:
        paths: dict[str, Any] = {}
        for group, versions in self.groups.items():
            for version in versions:
                digest, _ = self._openapi_doc_cached(group, version)
                p = f"apis/{group}/{version}" if group else f"api/{version}"
                paths[p] = {"serverRelativeURL": f"/openapi/v3/{p}?hash={digest}"}
        return {"paths": paths}

    def _openapi_doc_cached(self, group: str, version: str) -> tuple[str, bytes]:
        key = (self.generation, f"{group}/{version}")
        hit = self._openapi_cache.get(key)
        if hit is not None:
            return hit
        digest, body = self._openapi_doc(group, version)
        # Only the current registry generation is worth keeping.
        old = {k: v for k, v in self._openapi_cache.items() if k[0] == self.generation}
        old[key] = (digest, body)
        self._openapi_cache = old
        return digest, body

    def openapi_v3_doc(self, group: str, version: str) -> bytes | None:
        if version not in self.groups.get(group, []):
            return None
        return self._openapi_doc_cached(group, version)[1]


def crd_resource_infos(crd: dict[str, Any]) -> list[tuple[ResourceInfo, bool]]:
    """(ResourceInfo, is_storage_version) for each served version of a CRD."""
    spec = crd.get("spec") or {}
    names = spec.get("names") or {}
    group = spec.get("group", "")
    kind = names.get("kind", "")
    plural = names.get("plural", "")
    out = []
    for ver in spec.get("versions") or []:
        if not ver.get("served", True):
            continue
        subres = ver.get("subresources") or spec.get("subresources") or {}
        extra: tuple[tuple[str, str, tuple[str, ...]], ...] = ()
        if "scale" in subres:
            extra = (("scale", "Scale", ("get", "patch", "update")),)
        info = ResourceInfo(
            group=group,
            version=ver.get("name", ""),
            plural=plural,
            singular=names.get("singular") or kind.lower(),
            kind=kind,
            namespaced=spec.get("scope", "Namespaced") == "Namespaced",
            short_names=tuple(names.get("shortNames") or ()),
            status="status" in subres,
            extra_subresources=extra,
            categories=tuple(names.get("categories") or ()),
            crd=(crd.get("metadata") or {}).get("name"),
        )
        out.append((info, bool(ver.get("storage"))))
    return out
