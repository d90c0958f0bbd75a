"""Simulated controllers: workloads and their Pods, PVC binding, CRD establishment, namespaces, GC.

They run in the server thread, scheduled with call_soon after the write that triggers them, so a
watcher sees the ADDED event of the write first and the controller's MODIFIED after it. Every
controller write goes through the store's no-op detection, so re-running a reconcile that finds
nothing to do emits nothing.
"""

from __future__ import annotations

import base64
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
        self.store.admit = self.admit
        # Admission webhooks: each gets (info, old or None, new) for API writes and raises ApiError to deny.
        self.admission: list[Callable[[ResourceInfo, Obj | None, Obj], None]] = []
        # Simulated controllers that want every write (the webhook and Longhorn simulations).
        self.listeners: list[Callable[[ResourceInfo, Obj | None, Obj, str], None]] = []
        self.webhooks = WebhookSim(self)

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

    def admit(self, info: ResourceInfo, old: Obj | None, new: Obj) -> None:
        for fn in list(self.admission):
            fn(info, old, new)

    def after_write(self, info: ResourceInfo, old: Obj | None, new: Obj, part: str) -> None:
        for listener in list(self.listeners):
            listener(info, old, new, part)
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
        elif (info.group == "storage.k8s.io" and kind == "StorageClass") or (
                info.group == "" and kind == "PersistentVolume" and old is None):
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
        if spec.get("volumeName"):
            self.bind_prebound(pvc)
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

    def bind_prebound(self, pvc: Obj) -> None:
        """A claim that names its volume binds to that PersistentVolume, never to a new one
        (kubernetes v1.32 pkg/controller/volume/persistentvolume/pv_controller.go syncUnboundClaim:
        Pending while the volume is missing, bound when the volume's claimRef is empty or names this
        claim; ``pv.kubernetes.io/bound-by-controller`` is not set, the user bound it)."""
        pvc_info, pv_info = self.info("v1", "PersistentVolumeClaim"), self.info("v1", "PersistentVolume")
        md, spec = pvc["metadata"], pvc.get("spec") or {}
        pv = self.store.get(pv_info, None, spec["volumeName"])
        ref = ((pv or {}).get("spec") or {}).get("claimRef") or {}
        if pv is None or (ref and ((ref.get("namespace"), ref.get("name")) != (md["namespace"], md["name"])
                                   or ref.get("uid", md["uid"]) != md["uid"])):
            self.set_status(pvc_info, pvc, {"phase": "Pending"})
            return
        pv_spec = pv.get("spec") or {}
        claim_ref = {"apiVersion": "v1", "kind": "PersistentVolumeClaim", "namespace": md["namespace"],
                     "name": md["name"], "uid": md["uid"], "resourceVersion": md["resourceVersion"]}
        if ref != claim_ref:
            self.store.update(pv_info, "", pv["metadata"]["name"], {**pv, "spec": {**pv_spec, "claimRef": claim_ref}},
                              None, internal=True)
        pv = self.store.get(pv_info, None, spec["volumeName"]) or pv
        self.set_status(pv_info, pv, {"phase": "Bound"})
        ann = {**(md.get("annotations") or {}), "pv.kubernetes.io/bind-completed": "yes"}
        self.store.update(pvc_info, md["namespace"], md["name"], {
            **pvc, "metadata": {**md, "annotations": ann},
            "status": {"phase": "Bound", "accessModes": pv_spec.get("accessModes") or spec.get("accessModes") or [],
                       "capacity": pv_spec.get("capacity") or {}}}, None, internal=True)

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


# ---- admission webhooks and cert-manager's CA injection -------------------------------------


def _labels_match(labels: dict[str, Any], selector: Obj | None) -> bool:
    """A LabelSelector (matchLabels, matchExpressions In/NotIn/Exists/DoesNotExist) against labels."""
    selector = selector or {}
    if any(labels.get(k) != v for k, v in (selector.get("matchLabels") or {}).items()):
        return False
    for e in selector.get("matchExpressions") or []:
        key, op, values = e.get("key"), e.get("operator"), e.get("values") or []
        ok = {"In": labels.get(key) in values, "NotIn": labels.get(key) not in values,
              "Exists": key in labels, "DoesNotExist": key not in labels}.get(op, True)
        if not ok:
            return False
    return True


class WebhookSim:
    """The API server calling admission webhooks, and cert-manager's CA injection.

    kube-apiserver (k8s.io/apiserver pkg/admission/plugin/webhook, v1.32): an API write matching a
    ValidatingWebhookConfiguration's rules (apiGroups, apiVersions, operations, resources, and the
    namespaceSelector for namespaced objects) is sent to the webhook's Service. When the call fails
    and ``failurePolicy`` is Fail, the write is refused with 500 InternalError ``Internal error
    occurred: failed calling webhook "NAME": failed to call webhook: Post "https://SVC.NS.svc:443/PATH
    ?timeout=30s": ...``. Here a call fails when the Service is missing, has no Ready pod behind its
    selector ("no endpoints available for service"), or ``clientConfig.caBundle`` is empty (the
    server's certificate cannot be verified). A webhook that answers allows the write: the webhook's
    own validation is not simulated.

    cert-manager v1.18.0 (the webhook's dynamic serving certificate; cainjector,
    ``cert-manager.io/inject-ca-from-secret``): once the webhook's pod is Ready it writes its CA to the
    Secret the annotation names; once cainjector's pod is Ready it copies that Secret's ``ca.crt`` into
    every webhook's ``caBundle``. Each takes ``delay`` seconds (0 by default; tens of seconds on a
    fresh real cluster).
    """

    CONFIG_KINDS = ("ValidatingWebhookConfiguration", "MutatingWebhookConfiguration")

    def __init__(self, ctl: Controllers) -> None:
        self.ctl = ctl
        self.delay = 0.0
        ctl.admission.append(self.check)
        ctl.listeners.append(self.on_write)

    def _configs(self) -> list[tuple[ResourceInfo, Obj]]:
        out = []
        for kind in self.CONFIG_KINDS:
            info = self.ctl.registry.resolve("admissionregistration.k8s.io/v1", kind)
            if info is not None:
                out += [(info, o) for o in self.ctl.store.list(info, None)]
        return out

    def _endpoints(self, ns: str, name: str) -> str | None:
        """Why a call to Service ns/name fails for want of a backend, or None when a Ready pod serves it."""
        svc = self.ctl.store.get(self.ctl.info("v1", "Service"), ns, name)
        if svc is None:
            return f'service "{name}" not found'
        selector = (svc.get("spec") or {}).get("selector") or {}
        for pod in self.ctl.store.list(self.ctl.info("v1", "Pod"), ns):
            labels = pod["metadata"].get("labels") or {}
            ready = any(c.get("type") == "Ready" and c.get("status") == "True"
                        for c in (pod.get("status") or {}).get("conditions") or [])
            if selector and ready and all(labels.get(k) == v for k, v in selector.items()):
                return None
        return f'no endpoints available for service "{name}"'

    def check(self, info: ResourceInfo, old: Obj | None, new: Obj) -> None:
        op = "CREATE" if old is None else "UPDATE"
        ns = new["metadata"].get("namespace", "")
        for _, config in self._configs():
            for hook in config.get("webhooks") or []:
                if not self._matches(hook, info, op, ns):
                    continue
                client = hook.get("clientConfig") or {}
                svc = client.get("service") or {}
                why = self._endpoints(svc.get("namespace", ""), svc.get("name", "")) if svc else None
                if why is None and not client.get("caBundle"):
                    why = "tls: failed to verify certificate: x509: certificate signed by unknown authority"
                if why is None or hook.get("failurePolicy", "Fail") != "Fail":
                    continue
                url = (f'https://{svc.get("name")}.{svc.get("namespace")}.svc:{svc.get("port", 443)}'
                       f'{svc.get("path", "")}?timeout={hook.get("timeoutSeconds", 10)}s')
                raise ApiError(500, f'Internal error occurred: failed calling webhook "{hook.get("name")}": '
                                    f'failed to call webhook: Post "{url}": {why}', "InternalError")

    def _matches(self, hook: Obj, info: ResourceInfo, op: str, ns: str) -> bool:
        if info.namespaced and ns and hook.get("namespaceSelector"):
            nso = self.ctl.store.get(self.ctl.info("v1", "Namespace"), None, ns)
            if not _labels_match((nso or {}).get("metadata", {}).get("labels") or {}, hook["namespaceSelector"]):
                return False
        for rule in hook.get("rules") or []:
            groups, versions = rule.get("apiGroups") or [], rule.get("apiVersions") or []
            ops, resources = rule.get("operations") or [], rule.get("resources") or []
            if (("*" in groups or info.group in groups) and ("*" in versions or info.version in versions)
                    and ("*" in ops or op in ops)
                    and any(r in ("*", "*/*", info.plural, f"{info.plural}/*") for r in resources)):
                return True
        return False

    # cainjector and the webhook's CA Secret

    def on_write(self, info: ResourceInfo, old: Obj | None, new: Obj, part: str) -> None:
        del old, new, part
        if (info.kind in ("Pod", "Secret") and not info.group) or info.kind in ("Deployment", *self.CONFIG_KINDS):
            self.ctl.schedule(("cainjector",), self._inject_soon)

    def _inject_soon(self) -> None:
        if self.ctl.emu.loop is not None and any(
                ((c["metadata"].get("annotations") or {}).get("cert-manager.io/inject-ca-from-secret"))
                for _, c in self._configs()):
            self.ctl.emu.loop.call_later(self.delay, self.inject, context=_EMPTY_CONTEXT)

    def inject(self) -> None:
        secrets = self.ctl.info("v1", "Secret")
        for cinfo, config in self._configs():
            ref = (config["metadata"].get("annotations") or {}).get("cert-manager.io/inject-ca-from-secret")
            if not ref or "/" not in ref:
                continue
            ns, name = ref.split("/", 1)
            hooks = config.get("webhooks") or []
            services = [(h.get("clientConfig") or {}).get("service") or {} for h in hooks]
            secret = self.ctl.store.get(secrets, ns, name)
            if secret is None:
                # The webhook makes its CA when it starts serving.
                if any(s and self._endpoints(s.get("namespace", ""), s.get("name", "")) is None for s in services):
                    ca = base64.b64encode(self.ctl.emu.ca_pem.encode()).decode()
                    self.ctl.store.create(secrets, ns, {
                        "apiVersion": "v1", "kind": "Secret", "type": "Opaque",
                        "metadata": {"name": name, "namespace": ns,
                                     "annotations": {"cert-manager.io/allow-direct-injection": "true"}},
                        "data": {"ca.crt": ca, "tls.crt": ca, "tls.key": ""}}, None, internal=True)
                continue
            if not self._cainjector_ready(ns):
                continue
            bundle = (secret.get("data") or {}).get("ca.crt", "")
            if bundle and any((h.get("clientConfig") or {}).get("caBundle") != bundle for h in hooks):
                new_hooks = [{**h, "clientConfig": {**(h.get("clientConfig") or {}), "caBundle": bundle}} for h in hooks]
                self.ctl.store.update(cinfo, "", config["metadata"]["name"], {**config, "webhooks": new_hooks}, None,
                                      internal=True)

    def _cainjector_ready(self, ns: str) -> bool:
        for dep in self.ctl.store.list(self.ctl.info("apps/v1", "Deployment"), ns):
            if dep["metadata"]["name"].endswith("cainjector"):
                return int((dep.get("status") or {}).get("readyReplicas") or 0) > 0
        return False


# ---- Longhorn: backups, the backup target's sync, restores ------------------------------------


class BackupStore:
    """The S3 bucket (or NFS export) behind a Longhorn backup target. It outlives clusters: give the
    same store to the source cluster's and the rebuilt cluster's :class:`LonghornSim`."""

    def __init__(self) -> None:
        self.backups: dict[str, dict[str, Obj]] = {}  # volume -> backup name -> Backup status fields


class LonghornSim:
    """longhorn-manager v1.12.1, the parts that backups and a rebuild meet. Opt in per emulator:
    ``LonghornSim(emu, BackupStore(), sync_delay=0.05)``.

    - ``webhook/resources/volume/mutator.go`` (Create): a Volume with ``spec.fromBackup`` is denied
      with 422 by ``mutator.longhorn.io`` unless the Backup named in the URL exists (``cannot get
      backup NAME: backup.longhorn.io "NAME" not found``) with ``status.backupTargetName`` set, and a
      BackupVolume with labels ``backup-target``/``backup-volume`` exists (``cannot get backup volume
      for backup target T and volume V: ...``; datastore ``GetBackupVolumeByBackupTargetAndVolumeRO``).
    - ``controller/backup_target_controller.go``: the ``default`` BackupTarget comes from the
      ``longhorn-default-resource`` ConfigMap (``backup-target``). One reconcile marks it available
      and returns; the next pulls a BackupVolume per volume in the store, named
      ``VOL-sha256("VOL-TARGET")[:8]`` (types.GetBackupVolumeNameFromVolumeName).
    - ``controller/backup_volume_controller.go``: a BackupVolume pulls a Backup per backup in the store
      (label ``backup-target``); ``controller/backup_controller.go`` then sets its status
      (``backupTargetName``, ``state: Completed``, ``url``, ``size``...).
    - ``csi/controller_server.go`` (CreateVolume): a claim provisioned by ``driver.longhorn.io`` has a
      Longhorn Volume named after its PersistentVolume (the CSI volume ID), ``spec.size`` the request in
      bytes, ``numberOfReplicas``/``dataLocality`` etc. from the StorageClass parameters. Here the Volume
      appears with the PV (the real driver makes it just before); a PV whose Volume exists (a restore
      made it) is left alone.
    - An on-demand Backup (``spec.snapshotName``, label ``backup-volume``) is written to the store and
      Completed; a Snapshot becomes ``readyToUse``; a Volume restoring from a backup reports
      ``restoreInitiated`` and then ``restoreRequired: false``, or a ``Restore`` condition with
      reason ``RestoreFailure`` when the backup is not in the store.

    Every hop waits ``sync_delay`` seconds: on a real new cluster each takes seconds, and a target
    that was unreachable at first is retried only at its poll interval (300 s by default).
    """

    API = "longhorn.io/v1beta2"
    NS = "longhorn-system"

    def __init__(self, emu: Emulator, store: BackupStore, *, sync_delay: float = 0.05) -> None:
        self.emu, self.ctl, self.bucket, self.delay = emu, emu.controllers, store, sync_delay
        self.ctl.admission.append(self.mutate_volume)
        self.ctl.listeners.append(self.on_write)

    def later(self, fn: Callable[[], None]) -> None:
        def run() -> None:
            try:
                fn()
            except ApiError as e:
                log.debug("longhorn sim: %s", e)
        assert self.emu.loop is not None
        self.emu.loop.call_later(self.delay, run, context=_EMPTY_CONTEXT)

    def _info(self, kind: str) -> ResourceInfo | None:
        return self.ctl.registry.resolve(self.API, kind)

    def _get(self, kind: str, name: str) -> Obj | None:
        info = self._info(kind)
        return self.ctl.store.get(info, self.NS, name) if info else None

    @staticmethod
    def decode_url(url: str) -> tuple[str, str]:
        """(backup name, volume name) of ``s3://bucket@region/path?backup=NAME&volume=VOL`` (backupstore)."""
        from urllib.parse import parse_qs, urlsplit

        q = parse_qs(urlsplit(url).query)
        return (q.get("backup") or [""])[0], (q.get("volume") or [""])[0]

    # admission: webhook/resources/volume/mutator.go

    def mutate_volume(self, info: ResourceInfo, old: Obj | None, new: Obj) -> None:
        url = (new.get("spec") or {}).get("fromBackup")
        if info.group != "longhorn.io" or info.kind != "Volume" or old is not None or not url:
            return
        backup_name, vol = self.decode_url(url)

        def deny(message: str) -> None:
            raise ApiError(422, f'admission webhook "mutator.longhorn.io" denied the request: {message}', "Invalid")

        if not backup_name or not vol:
            deny(f"cannot get backup and volume name from backup URL {url}: invalid backup URL")
        backup = self._get("Backup", backup_name)
        if backup is None:
            deny(f'cannot get backup {backup_name}: backup.longhorn.io "{backup_name}" not found')
        target = ((backup or {}).get("status") or {}).get("backupTargetName", "")
        if not target:
            deny(f"cannot get backup volume for backup target  and volume {vol}: "
                 "backup target name and volume name cannot be empty")
        bv_info = self._info("BackupVolume")
        found = [o for o in (self.ctl.store.list(bv_info, self.NS) if bv_info else [])
                 if (o["metadata"].get("labels") or {}).get("backup-target") == target
                 and (o["metadata"].get("labels") or {}).get("backup-volume") == vol]
        if not found:
            deny(f'cannot get backup volume for backup target {target} and volume {vol}: backupVolumes "" not found')

    # controllers

    def on_write(self, info: ResourceInfo, old: Obj | None, new: Obj, part: str) -> None:
        md = new["metadata"]
        if info.kind == "PersistentVolume" and not info.group and old is None \
                and ((new.get("spec") or {}).get("csi") or {}).get("driver") == "driver.longhorn.io":
            self.ctl.schedule(("longhorn-csi", md["name"]), lambda: self.provision(new))
        if info.kind == "ConfigMap" and not info.group and md.get("namespace") == self.NS \
                and md["name"] == "longhorn-default-resource" and part == "main":
            self.later(lambda: self.target_from_configmap(new))
        if info.group != "longhorn.io" or part != "main" or old is not None:
            return
        name = md["name"]
        if info.kind == "BackupTarget":
            self.later(lambda: self.target_available(name))
        elif info.kind == "BackupVolume":
            self.later(lambda: self.pull_backups(name))
        elif info.kind == "Snapshot":
            self.later(lambda: self.set_status("Snapshot", name, {"readyToUse": True, "size": "4096"}))
        elif info.kind == "Backup":
            self.later(lambda: self.sync_backup(name))
        elif info.kind == "Volume" and (new.get("spec") or {}).get("fromBackup"):
            self.later(lambda: self.restore(name))

    def provision(self, pv: Obj) -> None:
        """csi/controller_server.go CreateVolume: the Volume behind a dynamically provisioned claim."""
        from lightkube.utils.quantity import parse_quantity

        info, spec = self._info("Volume"), pv.get("spec") or {}
        name = (spec.get("csi") or {}).get("volumeHandle") or pv["metadata"]["name"]
        if info is None or self._get("Volume", name) is not None:
            return
        sc = self.ctl.store.get(self.ctl.info("storage.k8s.io/v1", "StorageClass"), None,
                                spec.get("storageClassName") or "")
        params = (sc or {}).get("parameters") or {}
        size = parse_quantity(str((spec.get("capacity") or {}).get("storage", "0"))) or 0
        access = "rwx" if "ReadWriteMany" in (spec.get("accessModes") or []) else "rwo"
        self.ctl.store.create(info, self.NS, {
            "apiVersion": self.API, "kind": "Volume", "metadata": {"name": name, "namespace": self.NS},
            "spec": {"size": str(int(size)), "numberOfReplicas": int(params.get("numberOfReplicas", 3)),
                     "frontend": "blockdev", "accessMode": access, "dataEngine": params.get("dataEngine", "v1")}},
            None, internal=True)

    def set_status(self, kind: str, name: str, status: Obj) -> None:
        info, obj = self._info(kind), self._get(kind, name)
        if info is not None and obj is not None:
            self.ctl.set_status(info, obj, {**(obj.get("status") or {}), **status})

    def target_from_configmap(self, cm: Obj) -> None:
        import yaml

        settings = yaml.safe_load((cm.get("data") or {}).get("default-resource.yaml") or "") or {}
        url = settings.get("backup-target") if isinstance(settings, dict) else None
        info = self._info("BackupTarget")
        if not url or info is None or self._get("BackupTarget", "default") is not None:
            return
        self.ctl.store.create(info, self.NS, {
            "apiVersion": self.API, "kind": "BackupTarget", "metadata": {"name": "default", "namespace": self.NS},
            "spec": {"backupTargetURL": url, "credentialSecret": settings.get("backup-target-credential-secret", ""),
                     "pollInterval": "5m0s"}}, None, internal=True)

    def target_available(self, name: str) -> None:
        target = self._get("BackupTarget", name)
        if target is None or not (target.get("spec") or {}).get("backupTargetURL"):
            return
        self.set_status("BackupTarget", name, {"available": True, "conditions": []})
        self.later(lambda: self.pull_backup_volumes(name))

    def pull_backup_volumes(self, target: str) -> None:
        info = self._info("BackupVolume")
        if info is None:
            return
        for vol in sorted(self.bucket.backups):
            name = f"{vol}-{hashlib.sha256(f'{vol}-{target}'.encode()).hexdigest()[:8]}"
            if self._get("BackupVolume", name) is None:
                self.ctl.store.create(info, self.NS, {
                    "apiVersion": self.API, "kind": "BackupVolume",
                    "metadata": {"name": name, "namespace": self.NS,
                                 "labels": {"backup-target": target, "backup-volume": vol}},
                    "spec": {"backupTargetName": target, "volumeName": vol}}, None, internal=True)
        self.set_status("BackupTarget", target, {"lastSyncedAt": now()})

    def pull_backups(self, bv_name: str) -> None:
        bv, info = self._get("BackupVolume", bv_name), self._info("Backup")
        if bv is None or info is None:
            return
        target, vol = bv["spec"]["backupTargetName"], bv["spec"]["volumeName"]
        for name in sorted(self.bucket.backups.get(vol, {})):
            if self._get("Backup", name) is None:
                self.ctl.store.create(info, self.NS, {
                    "apiVersion": self.API, "kind": "Backup",
                    "metadata": {"name": name, "namespace": self.NS,
                                 "labels": {"backup-target": target, "backup-volume": vol}},
                    "spec": {"labels": {}}}, None, internal=True)
        self.set_status("BackupVolume", bv_name, {"lastSyncedAt": now()})

    def sync_backup(self, name: str) -> None:
        backup = self._get("Backup", name)
        if backup is None:
            return
        labels = backup["metadata"].get("labels") or {}
        vol = labels.get("backup-volume", "")
        target = self._get("BackupTarget", "default")
        url = ((target or {}).get("spec") or {}).get("backupTargetURL", "")
        if (backup.get("spec") or {}).get("snapshotName"):  # on demand: take it, write it to the store
            volume = self._get("Volume", vol)
            if volume is None:
                self.set_status("Backup", name, {"state": "Error", "error": f'cannot find the corresponding volume: '
                                                 f'volume.longhorn.io "{vol}" not found'})
                return
            self.bucket.backups.setdefault(vol, {})[name] = {
                "url": f"{url}?backup={name}&volume={vol}", "size": "4096",
                "volumeSize": str((volume.get("spec") or {}).get("size", "0"))}
        record = self.bucket.backups.get(vol, {}).get(name)
        if record is None:
            return
        self.set_status("Backup", name, {"backupTargetName": "default", "state": "Completed", **record,
                                         "lastSyncedAt": now()})

    def restore(self, name: str) -> None:
        volume = self._get("Volume", name)
        if volume is None:
            return
        backup_name, vol = self.decode_url(volume["spec"]["fromBackup"])
        if backup_name not in self.bucket.backups.get(vol, {}):
            self.set_status("Volume", name, {"state": "detached", "restoreInitiated": True, "conditions": [
                {"type": "Restore", "status": "False", "reason": "RestoreFailure",
                 "message": f"backup {backup_name} not found in the backup target"}]})
            return
        self.set_status("Volume", name, {"state": "attached", "restoreInitiated": True, "restoreRequired": True})
        self.later(lambda: self.set_status("Volume", name, {"state": "detached", "restoreRequired": False}))
