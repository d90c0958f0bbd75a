"""Simulated controllers: workloads and their Pods, PVC binding, CRD establishment, namespaces, GC.

They run in the server thread, scheduled with call_soon after the write that triggers them, so a
watcher sees the ADDED event of the write first and the controller's MODIFIED after it. Every
controller write goes through the store's no-op detection, so re-running a reconcile that finds
nothing to do emits nothing.
"""

from __future__ import annotations

import contextlib
import contextvars
import hashlib
import itertools
import json
import logging
import re
import uuid
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from .resources import Registry, ResourceInfo, crd_resource_infos
from .store import ApiError, Obj, Store, now

if TYPE_CHECKING:
    from .server import Emulator

log = logging.getLogger(__name__)

WORKLOADS = ("Deployment", "DaemonSet", "StatefulSet")
_EMPTY_CONTEXT = contextvars.Context()


def _version_priority(v: str) -> tuple[int, int, int, str]:
    """Kubernetes version ordering: GA before beta before alpha, higher numbers first."""
    m = re.fullmatch(r"v(\d+)(?:(alpha|beta)(\d+))?", v)
    if not m:
        return (3, 0, 0, v)
    stage = {None: 0, "beta": 1, "alpha": 2}[m.group(2)]
    return (stage, -int(m.group(1)), -int(m.group(3) or 0), v)


def template_hash(template: Any) -> str:
    digest = hashlib.sha256(json.dumps(template, sort_keys=True).encode()).hexdigest()
    return "".join(c for c in digest if c in "bcdfghjklmnpqrstvwxz2456789")[:10] or digest[:10]


def merge_conditions(old: list[Obj] | None, new: list[Obj]) -> list[Obj]:
    """Keep transition/update times of conditions whose status (or reason/message) did not change,
    so that a reconcile that changes nothing writes nothing."""
    prev = {c.get("type"): c for c in old or []}
    out = []
    for c in new:
        p = prev.get(c.get("type"))
        if p is not None:
            c = dict(c)
            if p.get("status") == c.get("status") and "lastTransitionTime" in p:
                c["lastTransitionTime"] = p["lastTransitionTime"]
            if (p.get("status"), p.get("reason"), p.get("message")) == (c.get("status"), c.get("reason"),
                                                                         c.get("message")):
                for k in ("lastUpdateTime", "lastProbeTime", "lastHeartbeatTime"):
                    if k in p:
                        c[k] = p[k]
        out.append(c)
    return out


def _cond(type_: str, status: bool, reason: str, message: str, update_time: bool = False) -> Obj:
    t = now()
    c: Obj = {"type": type_, "status": "True" if status else "False"}
    if update_time:
        c["lastUpdateTime"] = t
    c.update({"lastTransitionTime": t, "reason": reason, "message": message})
    return c


def _drop_zero(d: Obj, keep: tuple[str, ...] = ()) -> Obj:
    # The real controllers leave zero counters out (omitempty).
    return {k: v for k, v in d.items() if v not in (0, None) or k in keep}


class Controllers:
    def __init__(self, emu: Emulator) -> None:
        self.emu = emu
        self.store: Store = emu.store
        self.registry: Registry = emu.registry
        self._pending: set[tuple[Any, ...]] = set()
        self._ips = itertools.count(10)
        self._svc_ips = itertools.count(10)
        self.store.after_write = self.after_write
        self.store.after_delete = self.after_delete
        self.store.before_create = self.before_create

    # ---- scheduling ---------------------------------------------------------------------

    def schedule(self, key: tuple[Any, ...], fn: Callable[[], None]) -> None:
        if key in self._pending or self.emu.loop is None:
            return
        self._pending.add(key)

        def run() -> None:
            self._pending.discard(key)
            try:
                fn()
            except ApiError as e:  # e.g. the namespace started terminating meanwhile
                log.debug("controller %s: %s", key, e)
            except Exception:
                log.exception("emulator controller %s failed", key)

        # An empty context: controller writes are not attributed to the request that triggered them.
        self.emu.loop.call_soon(run, context=_EMPTY_CONTEXT)

    def info(self, api_version: str, kind: str) -> ResourceInfo:
        info = self.registry.resolve(api_version, kind)
        assert info is not None, (api_version, kind)
        return info

    # ---- store callbacks ----------------------------------------------------------------

    def before_create(self, info: ResourceInfo, obj: Obj) -> Obj:
        if info.kind == "Namespace" and not info.group:
            name = obj["metadata"]["name"]
            obj["metadata"]["labels"] = {**(obj["metadata"].get("labels") or {}), "kubernetes.io/metadata.name": name}
            obj["spec"] = {"finalizers": ["kubernetes"], **(obj.get("spec") or {})}
            obj["status"] = {"phase": "Active"}
        elif info.kind == "Service" and not info.group:
            spec = dict(obj.get("spec") or {})
            if not spec.get("clusterIP") and spec.get("type") != "ExternalName":
                n = next(self._svc_ips)
                ip = f"10.96.{n // 250}.{n % 250 + 1}"
                spec["clusterIP"] = ip
                spec["clusterIPs"] = [ip]
            obj["spec"] = spec
        elif info.kind == "PersistentVolumeClaim" and not info.group:
            obj["status"] = {"phase": "Pending"}
        elif info.kind == "CustomResourceDefinition":
            spec = obj.get("spec") or {}
            names = spec.get("names") or {}
            want = f"{names.get('plural')}.{spec.get('group')}"
            if obj["metadata"]["name"] != want:
                raise ApiError(422, f'CustomResourceDefinition.apiextensions.k8s.io "{obj["metadata"]["name"]}" is '
                                    f'invalid: metadata.name: Invalid value: "{obj["metadata"]["name"]}": must be '
                                    "spec.names.plural+\".\"+spec.group", "Invalid")
        return obj

    def after_write(self, info: ResourceInfo, old: Obj | None, new: Obj, part: str) -> None:
        md = new["metadata"]
        ns, name, kind = md.get("namespace", ""), md["name"], info.kind
        if part == "main" and kind in self.emu._hooks:
            self.schedule(("hook", kind, ns, name, info.store_key), lambda: self.emu._run_hooks(info, ns, name))
        if info.group == "" and kind == "Namespace":
            if md.get("deletionTimestamp"):
                self.schedule(("ns-teardown", name), lambda: self.teardown_namespace(name))
            elif old is None:
                self.schedule(("ns-init", name), lambda: self.init_namespace(name))
            return
        if part != "main":
            return
        if info.group == "apps" and kind in WORKLOADS:
            self.schedule(("workload", kind, ns, name), lambda: self.reconcile_workload(kind, ns, name))
        elif info.group == "apiextensions.k8s.io" and kind == "CustomResourceDefinition":
            self.schedule(("crd", name), lambda: self.reconcile_crd(name))
        elif info.group == "" and kind == "PersistentVolumeClaim":
            self.schedule(("pvc", ns, name), lambda: self.bind_pvc(ns, name))
        elif info.group == "storage.k8s.io" and kind == "StorageClass":
            self.schedule(("pvc-all",), self.bind_all_pvcs)
        elif info.group == "" and kind == "Node" and old is None:
            self.schedule(("ds-all",), self.reconcile_all_daemonsets)

    def after_delete(self, info: ResourceInfo, obj: Obj) -> None:
        md = obj["metadata"]
        uid, ns = md.get("uid"), md.get("namespace", "")
        self.schedule(("gc", uid), lambda: self.collect_garbage(uid, ns))
        if info.group == "apiextensions.k8s.io" and info.kind == "CustomResourceDefinition":
            self.remove_crd(obj)
        elif info.group == "" and info.kind == "PersistentVolumeClaim":
            self.release_pv(obj)
        elif info.group == "" and info.kind == "Pod":
            for ref in md.get("ownerReferences") or []:
                if ref.get("controller"):
                    self.schedule(("pod-owner", ns, ref.get("uid")), lambda r=ref: self.reconcile_owner(ns, r))
        elif info.group == "" and info.kind == "Node":
            self.schedule(("ds-all",), self.reconcile_all_daemonsets)

    # ---- helpers ------------------------------------------------------------------------

    def set_status(self, info: ResourceInfo, obj: Obj, status: Obj) -> None:
        md = obj["metadata"]
        cur = self.store.get(info, md.get("namespace"), md["name"])
        if cur is None or cur.get("status") == status:
            return
        self.store.update(info, md.get("namespace", ""), md["name"], {**cur, "status": status}, None, part="status")

    def owned(self, info: ResourceInfo, ns: str, uid: str) -> list[Obj]:
        return [o for o in self.store.list(info, ns)
                if any(r.get("uid") == uid for r in o["metadata"].get("ownerReferences") or [])]

    @staticmethod
    def owner_ref(owner: Obj) -> Obj:
        md = owner["metadata"]
        return {"apiVersion": owner["apiVersion"], "kind": owner["kind"], "name": md["name"], "uid": md["uid"],
                "controller": True, "blockOwnerDeletion": True}

    def collect_garbage(self, uid: str | None, ns: str) -> None:
        if not uid:
            return
        for info in list(self.registry.by_gk.values()):
            bucket = self.store.objects.get(info.store_key)
            if not bucket:
                continue
            for obj in list(bucket.values()):
                md = obj["metadata"]
                if info.namespaced and ns and md.get("namespace") != ns:
                    continue
                if any(r.get("uid") == uid for r in md.get("ownerReferences") or []):
                    with contextlib.suppress(ApiError):
                        self.store.delete(info, md.get("namespace", ""), md["name"])

    # ---- namespaces ---------------------------------------------------------------------

    def init_namespace(self, ns: str) -> None:
        sa, cm = self.info("v1", "ServiceAccount"), self.info("v1", "ConfigMap")
        if self.store.get(sa, ns, "default") is None:
            self.store.create(sa, ns, {"apiVersion": "v1", "kind": "ServiceAccount",
                                       "metadata": {"name": "default", "namespace": ns}}, None, internal=True)
        if self.store.get(cm, ns, "kube-root-ca.crt") is None:
            self.store.create(cm, ns, {"apiVersion": "v1", "kind": "ConfigMap",
                                       "metadata": {"name": "kube-root-ca.crt", "namespace": ns,
                                                    "annotations": {"kubernetes.io/description": "Contains a CA bundle "
                                                                    "that can be used to verify the kube-apiserver "
                                                                    "when using internal endpoints."}},
                                       "data": {"ca.crt": self.emu.ca_pem}}, None, internal=True)

    def teardown_namespace(self, ns: str) -> None:
        for info in list({i.store_key: i for i in self.registry.by_gvr.values() if i.namespaced}.values()):
            for obj in list(self.store.list(info, ns)):
                self.store.force_remove(info, obj)
        ns_info = self.info("v1", "Namespace")
        obj = self.store.get(ns_info, None, ns)
        if obj is not None:
            self.store.force_remove(ns_info, obj)

    # ---- CRDs ---------------------------------------------------------------------------

    def reconcile_crd(self, name: str) -> None:
        crd_info = self.info("apiextensions.k8s.io/v1", "CustomResourceDefinition")
        crd = self.store.get(crd_info, None, name)
        if crd is None or crd["metadata"].get("deletionTimestamp"):
            return
        infos = sorted(crd_resource_infos(crd), key=lambda x: _version_priority(x[0].version))
        current = {i for i in self.registry.by_gvr.values() if i.crd == name}
        if current != {i for i, _ in infos}:
            self.registry.remove_crd(name)
            for n, (info, _storage) in enumerate(infos):
                self.registry.add(info, preferred=n == 0)
        spec = crd.get("spec") or {}
        names = dict(spec.get("names") or {})
        names.setdefault("singular", names.get("kind", "").lower())
        names.setdefault("listKind", names.get("kind", "") + "List")
        old_status = crd.get("status") or {}
        stored = list(old_status.get("storedVersions") or [])
        for info, storage in infos:
            if storage and info.version not in stored:
                stored.append(info.version)
        status = {
            "conditions": merge_conditions(old_status.get("conditions"), [
                _cond("NamesAccepted", True, "NoConflicts", "no conflicts found"),
                _cond("Established", True, "InitialNamesAccepted", "the initial names have been accepted"),
            ]),
            "acceptedNames": names,
            "storedVersions": stored,
        }
        self.set_status(crd_info, crd, status)

    def remove_crd(self, crd: Obj) -> None:
        name = crd["metadata"]["name"]
        infos = [i for i in self.registry.by_gvr.values() if i.crd == name]
        if infos:
            for obj in list(self.store.list(infos[0], None)):
                self.store.force_remove(infos[0], obj)
        self.registry.remove_crd(name)

    # ---- storage ------------------------------------------------------------------------

    def bind_all_pvcs(self) -> None:
        for pvc in self.store.list(self.info("v1", "PersistentVolumeClaim"), None):
            if (pvc.get("status") or {}).get("phase") != "Bound":
                self.bind_pvc(pvc["metadata"]["namespace"], pvc["metadata"]["name"])

    def default_storage_class(self) -> Obj | None:
        for sc in self.store.list(self.info("storage.k8s.io/v1", "StorageClass"), None):
            ann = sc["metadata"].get("annotations") or {}
            if ann.get("storageclass.kubernetes.io/is-default-class") == "true":
                return sc
        return None

    def bind_pvc(self, ns: str, name: str) -> None:
        pvc_info, sc_info = self.info("v1", "PersistentVolumeClaim"), self.info("storage.k8s.io/v1", "StorageClass")
        pv_info = self.info("v1", "PersistentVolume")
        pvc = self.store.get(pvc_info, ns, name)
        if pvc is None or pvc["metadata"].get("deletionTimestamp"):
            return
        spec = pvc.get("spec") or {}
        if (pvc.get("status") or {}).get("phase") == "Bound" and spec.get("volumeName"):
            return
        sc_name = spec.get("storageClassName")
        sc = self.store.get(sc_info, None, sc_name) if sc_name else self.default_storage_class()
        if sc is None:
            self.set_status(pvc_info, pvc, {"phase": "Pending"})
            return
        sc_name = sc["metadata"]["name"]
        provisioner = sc.get("provisioner", "")
        pv_name = "pvc-" + pvc["metadata"]["uid"]
        storage = ((spec.get("resources") or {}).get("requests") or {}).get("storage", "1Gi")
        access = spec.get("accessModes") or ["ReadWriteOnce"]
        if self.store.get(pv_info, None, pv_name) is None:
            self.store.create(pv_info, "", {
                "apiVersion": "v1", "kind": "PersistentVolume",
                "metadata": {"name": pv_name, "annotations": {"pv.kubernetes.io/provisioned-by": provisioner},
                             "finalizers": ["kubernetes.io/pv-protection"]},
                "spec": {
                    "accessModes": access, "capacity": {"storage": storage},
                    "claimRef": {"apiVersion": "v1", "kind": "PersistentVolumeClaim", "namespace": ns, "name": name,
                                 "uid": pvc["metadata"]["uid"], "resourceVersion": pvc["metadata"]["resourceVersion"]},
                    "csi": {"driver": provisioner, "volumeHandle": pv_name, "fsType": "ext4"},
                    "persistentVolumeReclaimPolicy": sc.get("reclaimPolicy", "Delete"),
                    "storageClassName": sc_name, "volumeMode": spec.get("volumeMode", "Filesystem"),
                },
                "status": {"phase": "Bound"},
            }, None, internal=True)
        ann = {**(pvc["metadata"].get("annotations") or {}), "pv.kubernetes.io/bind-completed": "yes",
               "pv.kubernetes.io/bound-by-controller": "yes",
               "volume.beta.kubernetes.io/storage-provisioner": provisioner,
               "volume.kubernetes.io/storage-provisioner": provisioner}
        new = {**pvc, "metadata": {**pvc["metadata"], "annotations": ann},
               "spec": {**spec, "volumeName": pv_name, "storageClassName": sc_name},
               "status": {"phase": "Bound", "accessModes": access, "capacity": {"storage": storage}}}
        self.store.update(pvc_info, ns, name, new, None, internal=True)

    def release_pv(self, pvc: Obj) -> None:
        pv_info = self.info("v1", "PersistentVolume")
        pv_name = (pvc.get("spec") or {}).get("volumeName")
        pv = self.store.get(pv_info, None, pv_name) if pv_name else None
        if pv is None:
            return
        if (pv.get("spec") or {}).get("persistentVolumeReclaimPolicy", "Delete") == "Delete":
            self.store.force_remove(pv_info, pv)
        else:
            self.set_status(pv_info, pv, {"phase": "Released"})

    # ---- workloads ----------------------------------------------------------------------

    def nodes(self) -> list[Obj]:
        return self.store.list(self.info("v1", "Node"), None)

    def reconcile_all_daemonsets(self) -> None:
        for ds in self.store.list(self.info("apps/v1", "DaemonSet"), None):
            self.reconcile_workload("DaemonSet", ds["metadata"]["namespace"], ds["metadata"]["name"])

    def reconcile_owner(self, ns: str, ref: Obj) -> None:
        kind = ref.get("kind")
        if kind == "ReplicaSet":
            rs = self.store.get(self.info("apps/v1", "ReplicaSet"), ns, ref.get("name", ""))
            for r in (rs or {}).get("metadata", {}).get("ownerReferences") or []:
                if r.get("kind") == "Deployment":
                    self.reconcile_workload("Deployment", ns, r.get("name", ""))
        elif kind in WORKLOADS:
            self.reconcile_workload(kind, ns, ref.get("name", ""))

    def reconcile_workload(self, kind: str, ns: str, name: str) -> None:
        info = self.info("apps/v1", kind)
        obj = self.store.get(info, ns, name)
        if obj is None or obj["metadata"].get("deletionTimestamp"):
            return
        held = (kind, ns, name) in self.emu._held
        spec = obj.get("spec") or {}
        template = spec.get("template") or {}
        h = template_hash(template)
        gen = obj["metadata"].get("generation", 1)
        old_status = obj.get("status") or {}
        if kind == "Deployment":
            n = int(spec.get("replicas", 1))
            rs = self._ensure_replicaset(obj, template, h, n)
            pods = self._ensure_pods(rs, ns, template, {"pod-template-hash": h}, [(None, None)] * n, held)
            ready = 0 if held else len(pods)
            rs_info = self.info("apps/v1", "ReplicaSet")
            self.set_status(rs_info, rs, _drop_zero({
                "replicas": n, "fullyLabeledReplicas": n, "readyReplicas": ready, "availableReplicas": ready,
                "observedGeneration": rs["metadata"].get("generation", 1)}, keep=("replicas",)))
            rs_name = rs["metadata"]["name"]
            if held and n > 0:
                conds = [
                    _cond("Available", False, "MinimumReplicasUnavailable", "Deployment does not have minimum availability.", True),
                    _cond("Progressing", True, "ReplicaSetUpdated", f'ReplicaSet "{rs_name}" is progressing.', True),
                ]
            else:
                conds = [
                    _cond("Available", True, "MinimumReplicasAvailable", "Deployment has minimum availability.", True),
                    _cond("Progressing", True, "NewReplicaSetAvailable", f'ReplicaSet "{rs_name}" has successfully progressed.', True),
                ]
            status = _drop_zero({"observedGeneration": gen, "replicas": n, "updatedReplicas": n, "readyReplicas": ready,
                                 "availableReplicas": ready, "unavailableReplicas": n - ready})
            status["conditions"] = merge_conditions(old_status.get("conditions"), conds)
        elif kind == "DaemonSet":
            nodes = [nd["metadata"]["name"] for nd in self.nodes()]
            pods = self._ensure_pods(obj, ns, template, {"controller-revision-hash": h}, [(None, nd) for nd in nodes], held)
            n = len(nodes)
            ready = 0 if held else len(pods)
            status = _drop_zero({"currentNumberScheduled": n, "desiredNumberScheduled": n, "numberMisscheduled": 0,
                                 "numberReady": ready, "observedGeneration": gen, "updatedNumberScheduled": n,
                                 "numberAvailable": ready, "numberUnavailable": n - ready},
                                keep=("currentNumberScheduled", "desiredNumberScheduled", "numberMisscheduled", "numberReady"))
        else:  # StatefulSet
            n = int(spec.get("replicas", 1))
            revision = f"{name}-{h}"
            self._ensure_claims(obj, ns, name, n)
            pods = self._ensure_pods(obj, ns, template, {"controller-revision-hash": revision,
                                                          "apps.kubernetes.io/pod-index": None},
                                     [(f"{name}-{i}", None) for i in range(n)], held)
            ready = 0 if held else len(pods)
            status = _drop_zero({"observedGeneration": gen, "replicas": n, "readyReplicas": ready,
                                 "currentReplicas": n, "updatedReplicas": n, "availableReplicas": ready},
                                keep=("replicas",))
            status.update({"currentRevision": revision, "updateRevision": revision, "collisionCount": 0})
        self.set_status(info, obj, status)

    def _ensure_replicaset(self, dep: Obj, template: Obj, h: str, n: int) -> Obj:
        rs_info = self.info("apps/v1", "ReplicaSet")
        ns, name, uid = dep["metadata"]["namespace"], dep["metadata"]["name"], dep["metadata"]["uid"]
        rs_name = f"{name}-{h}"
        for rs in self.owned(rs_info, ns, uid):
            if rs["metadata"]["name"] != rs_name:
                self.store.force_remove(rs_info, rs)  # the old ReplicaSet's pods go with it (GC)
        labels = {**((template.get("metadata") or {}).get("labels") or {}), "pod-template-hash": h}
        tmpl = {**template, "metadata": {**(template.get("metadata") or {}), "labels": labels}}
        selector = dict((dep.get("spec") or {}).get("selector") or {})
        selector["matchLabels"] = {**(selector.get("matchLabels") or {}), "pod-template-hash": h}
        body = {"apiVersion": "apps/v1", "kind": "ReplicaSet",
                "metadata": {"name": rs_name, "namespace": ns, "labels": labels,
                             "annotations": {"deployment.kubernetes.io/revision": "1"},
                             "ownerReferences": [self.owner_ref(dep)]},
                "spec": {"replicas": n, "selector": selector, "template": tmpl}}
        cur = self.store.get(rs_info, ns, rs_name)
        if cur is None:
            return self.store.create(rs_info, ns, body, None, internal=True)
        if (cur.get("spec") or {}).get("replicas") != n:
            cur, _ = self.store.update(rs_info, ns, rs_name, {**cur, "spec": {**cur["spec"], "replicas": n}}, None)
        return cur

    def _ensure_claims(self, sts: Obj, ns: str, name: str, n: int) -> None:
        pvc_info = self.info("v1", "PersistentVolumeClaim")
        for tmpl in (sts.get("spec") or {}).get("volumeClaimTemplates") or []:
            tname = (tmpl.get("metadata") or {}).get("name", "data")
            for i in range(n):
                claim = f"{tname}-{name}-{i}"
                if self.store.get(pvc_info, ns, claim) is None:
                    labels = ((sts.get("spec") or {}).get("selector") or {}).get("matchLabels") or {}
                    self.store.create(pvc_info, ns, {"apiVersion": "v1", "kind": "PersistentVolumeClaim",
                                                     "metadata": {"name": claim, "namespace": ns, "labels": labels},
                                                     "spec": tmpl.get("spec") or {}}, None, internal=True)

    def _ensure_pods(self, owner: Obj, ns: str, template: Obj, extra_labels: dict[str, Any],
                     slots: list[tuple[str | None, str | None]], held: bool) -> list[Obj]:
        """Make the owner's pods match the slots (fixed name and/or node); returns them."""
        pod_info = self.info("v1", "Pod")
        uid = owner["metadata"]["uid"]
        hash_key, hash_val = next((k, v) for k, v in extra_labels.items() if v is not None)
        current = []
        for pod in self.owned(pod_info, ns, uid):
            if (pod["metadata"].get("labels") or {}).get(hash_key) != hash_val:
                self.store.force_remove(pod_info, pod)  # template changed: replace the pod
            else:
                current.append(pod)
        nodes = [nd["metadata"]["name"] for nd in self.nodes()] or ["node-1"]
        kept: list[Obj] = []
        free = list(current)
        for i, (name, node) in enumerate(slots):
            match = next((p for p in free if (name is None or p["metadata"]["name"] == name)
                          and (node is None or (p.get("spec") or {}).get("nodeName") == node)), None)
            if match is not None:
                free.remove(match)
                kept.append(match)
                continue
            pod_name = name or f"{owner['metadata']['name']}-{uuid.uuid4().hex[:5]}"
            labels = {**((template.get("metadata") or {}).get("labels") or {}), hash_key: hash_val}
            if "apps.kubernetes.io/pod-index" in extra_labels:
                labels["apps.kubernetes.io/pod-index"] = str(i)
                labels["statefulset.kubernetes.io/pod-name"] = pod_name
            pod_spec = {**(template.get("spec") or {}), "nodeName": node or nodes[i % len(nodes)]}
            kept.append(self.store.create(pod_info, ns, {
                "apiVersion": "v1", "kind": "Pod",
                "metadata": {"name": pod_name, "namespace": ns, "labels": labels,
                             "annotations": (template.get("metadata") or {}).get("annotations") or {},
                             "ownerReferences": [self.owner_ref(owner)]},
                "spec": pod_spec,
            }, None, internal=True))
        for pod in free:
            self.store.force_remove(pod_info, pod)
        out = []
        for pod in kept:
            self.set_status(pod_info, pod, self.pod_status(pod, ready=not held))
            out.append(self.store.get(pod_info, ns, pod["metadata"]["name"]) or pod)
        return out

    def pod_status(self, pod: Obj, ready: bool) -> Obj:
        old = pod.get("status") or {}
        start = old.get("startTime") or now()
        ip = old.get("podIP")
        if not ip:
            n = next(self._ips)
            ip = f"10.244.{n // 250}.{n % 250 + 1}"
        node = (pod.get("spec") or {}).get("nodeName", "node-1")
        host_ip = "10.0.0." + (node.rsplit("-", 1)[-1] if node.rsplit("-", 1)[-1].isdigit() else "1")
        flag = "True" if ready else "False"
        conds = [
            {"type": "PodReadyToStartContainers", "status": "True"},
            {"type": "Initialized", "status": "True"},
            {"type": "Ready", "status": flag, **({} if ready else {"reason": "ContainersNotReady"})},
            {"type": "ContainersReady", "status": flag, **({} if ready else {"reason": "ContainersNotReady"})},
            {"type": "PodScheduled", "status": "True"},
        ]
        for c in conds:
            c["lastProbeTime"] = None
            c["lastTransitionTime"] = start
        containers = [{"name": c.get("name"), "image": c.get("image", ""), "imageID": "", "ready": ready,
                       "started": True, "restartCount": 0, "state": {"running": {"startedAt": start}}}
                      for c in (pod.get("spec") or {}).get("containers") or []]
        return {"phase": "Running", "conditions": merge_conditions(old.get("conditions"), conds),
                "hostIP": host_ip, "hostIPs": [{"ip": host_ip}], "podIP": ip, "podIPs": [{"ip": ip}],
                "startTime": start, "containerStatuses": containers, "qosClass": "BestEffort"}
