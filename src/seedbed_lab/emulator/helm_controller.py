"""helm-controller, simulated: a HelmRelease renders the pinned chart's Deployment, Services, claim,
ingress and inline config, read from the real chart files, and applies them as helm-controller.

Upstream, at the versions Flux v2.9 runs:

- helm-controller v1.6.3 ``api/v2/helmrelease_types.go``: ``GetReleaseName`` is
  ``spec.releaseName`` or ``[<targetNamespace>-]<name>``, ``GetReleaseNamespace`` the
  targetNamespace or the HelmRelease's namespace; ``main.go``: ``kube.ManagedFieldsManager =
  controllerName`` ("helm-controller"), server-side apply on install by default (Helm 4);
- the chart (Gitea chart 12.4.0, Forgejo chart 15.0.3, in ../shared/fixtures/upstream/):
  ``values.yaml`` defaults under the release's values; ``templates/_helpers.tpl`` ``gitea.name``,
  ``gitea.fullname``, ``gitea.selectorLabels``, ``gitea.labels``, ``gitea.image``;
  ``templates/gitea/deployment.yaml``, ``http-svc.yaml``, ``ssh-svc.yaml``, ``pvc.yaml``,
  ``ingress.yaml``, ``config.yaml`` (the ``-inline-config`` Secret).

The templates are not executed: the fields that decide the hand-over (names, labels and selector,
clusterIP, ports, strategy, volumes and claim, environment, init containers) are derived from the
merged values the way those templates derive them. SIMPLIFICATIONS.md lists what is left out.
The API server's immutability rules that the emulator does not enforce (a Deployment's selector, a
Service's clusterIP) are checked here.

An upgrade whose pods never become ready fails Helm's wait, and helm-controller's remediation rolls
it back (helm-controller v1.6.3 ``internal/reconcile/upgrade.go``: ``Released=False``/
``UpgradeFailed``, "Upgrade of release %s/%s with chart %s@%s failed: %s";
``rollback_remediation.go``: ``Remediated=True``/``RollbackSucceeded``, "Helm rollback to previous
release %s with chart %s succeeded"; ``summarize`` in ``reconcile.go`` makes Ready the Remediated
condition's reason and message with status False; ``api/v2/helmrelease_types.go``
``UpgradeRemediation``: strategy rollback by default, ``MustRemediateLastFailure`` true with
retries > 0). What never becomes ready is Gitea's own rule: it refuses a database a newer Gitea
migrated (go-gitea/gitea ``models/migrations/migrations.go``, "Your database (migration version: %d)
is for a newer Gitea, you can not use the newer database for this old Gitea release"), so a values
commit that gives the claim an older image crash-loops; the newest version that ran on each claim
is remembered. A refused apply (an immutable field) is an upgrade failure remediated the same way.
"""

from __future__ import annotations

import copy
import threading
from pathlib import Path
from typing import Any

import yaml

from .kustomize_controller import ApplyFailed, in_background, server_side_apply
from .server import Emulator

HELM_API = "helm.toolkit.fluxcd.io/v2"
FIELD_MANAGER = "helm-controller"
CHART_DIRS = {("gitea", "12.4.0"): "gitea-chart-12.4.0", ("forgejo", "15.0.3"): "forgejo-chart-15.0.3"}
Obj = dict[str, Any]


def coalesce(defaults: Any, override: Any) -> Any:
    """Helm's values merge: maps merge deeply, anything else replaces, and null deletes the key."""
    if not isinstance(defaults, dict) or not isinstance(override, dict):
        return copy.deepcopy(override)
    out = copy.deepcopy(defaults)
    for k, v in override.items():
        if v is None:
            out.pop(k, None)
        else:
            out[k] = coalesce(out.get(k), v)
    return out


def release_name(hr: Obj) -> str:
    spec = hr.get("spec") or {}
    if spec.get("releaseName"):
        return str(spec["releaseName"])
    if spec.get("targetNamespace"):
        return f"{spec['targetNamespace']}-{hr['metadata']['name']}"
    return str(hr["metadata"]["name"])


def release_namespace(hr: Obj) -> str:
    return str((hr.get("spec") or {}).get("targetNamespace") or hr["metadata"]["namespace"])


class Chart:
    def __init__(self, root: Path) -> None:
        self.meta = yaml.safe_load((root / "Chart.yaml").read_text())
        self.defaults = yaml.safe_load((root / "values.yaml").read_text())

    def render(self, release: str, namespace: str, overrides: Obj) -> list[Obj]:
        return Rendering(self, release, namespace, coalesce(self.defaults, overrides or {})).objects()


class Rendering:
    def __init__(self, chart: Chart, release: str, namespace: str, values: Obj) -> None:
        self.chart, self.release, self.values = chart, release, values
        self.namespace = values.get("namespace") or namespace
        v = values
        self.name = (v.get("nameOverride") or chart.meta["name"])[:63].rstrip("-")  # gitea.name
        if v.get("fullnameOverride"):  # gitea.fullname
            self.fullname = v["fullnameOverride"][:63].rstrip("-")
        elif self.name in release:
            self.fullname = release[:63].rstrip("-")
        else:
            self.fullname = f"{release}-{self.name}"[:63].rstrip("-")
        server = ((v.get("gitea") or {}).get("config") or {}).get("server") or {}
        self.http_port = server.get("HTTP_PORT", v["service"]["http"]["port"])
        self.ssh_listen_port = server.get("SSH_LISTEN_PORT")
        self.ssh_port = server.get("SSH_PORT") or v["service"]["ssh"]["port"]

    # -------------------------------------------------------------- _helpers.tpl

    def selector_labels(self) -> dict[str, str]:
        return {"app.kubernetes.io/name": self.name, "app.kubernetes.io/instance": self.release}

    def labels(self) -> dict[str, str]:
        version = str(self.values["image"].get("tag") or self.chart.meta["appVersion"])
        return {"helm.sh/chart": f"{self.chart.meta['name']}-{self.chart.meta['version']}", "app": self.name,
                **self.selector_labels(), "app.kubernetes.io/version": version, "version": version,
                "app.kubernetes.io/managed-by": "Helm"}

    def image(self) -> str:
        img = self.values["image"]
        if img.get("fullOverride"):
            return str(img["fullOverride"])
        registry = (self.values.get("global") or {}).get("imageRegistry") or img.get("registry")
        tag = str(img.get("tag") or self.chart.meta["appVersion"]) + ("-rootless" if img.get("rootless") else "")
        digest = f"@{img['digest']}" if img.get("digest") else ""
        return f"{registry + '/' if registry else ''}{img['repository']}:{tag}{digest}"

    def meta(self, name: str, extra_labels: dict[str, str] | None = None) -> Obj:
        return {"name": name, "namespace": self.namespace, "labels": {**self.labels(), **(extra_labels or {})},
                "annotations": {"meta.helm.sh/release-name": self.release,
                                "meta.helm.sh/release-namespace": self.namespace}}

    # -------------------------------------------------------------- templates

    def objects(self) -> list[Obj]:
        objs = [self.inline_config(), self.service("http"), self.service("ssh"), self.deployment()]
        p = self.values.get("persistence") or {}
        if p.get("enabled") and p.get("create"):
            objs.append(self.pvc())
        if (self.values.get("ingress") or {}).get("enabled"):
            objs.append(self.ingress())
        return objs

    def inline_config(self) -> Obj:
        """config.yaml's ``<fullname>-inline-config``: one app.ini section per key of gitea.config."""
        data: dict[str, str] = {}
        for section, entries in sorted((((self.values.get("gitea") or {}).get("config")) or {}).items()):
            if isinstance(entries, dict) and entries:
                data[section] = "\n".join(f"{k}={_go(v)}" for k, v in sorted(entries.items()))
        return {"apiVersion": "v1", "kind": "Secret", "metadata": self.meta(f"{self.fullname}-inline-config"),
                "type": "Opaque", "stringData": data}

    def service(self, which: str) -> Obj:
        s = self.values["service"][which]
        spec: Obj = {"type": s["type"]}
        if s.get("clusterIP") and s["type"] == "ClusterIP":
            spec["clusterIP"] = str(s["clusterIP"])
        if which == "http":
            port: Obj = {"name": "http", "port": s["port"], "targetPort": self.http_port}
        else:
            port = {"name": "ssh", "port": s["port"], "protocol": "TCP"}
            if self.ssh_listen_port:
                port["targetPort"] = self.ssh_listen_port
        spec["ports"] = [port]
        spec["selector"] = self.selector_labels()
        return {"apiVersion": "v1", "kind": "Service",
                "metadata": self.meta(f"{self.fullname}-{which}", s.get("labels") or {}), "spec": spec}

    def pvc(self) -> Obj:
        p = self.values["persistence"]
        spec: Obj = {"accessModes": p.get("accessModes") or ["ReadWriteOnce"], "volumeMode": "Filesystem",
                     "resources": {"requests": {"storage": p.get("size")}}}
        sc = p.get("storageClass") or (self.values.get("global") or {}).get("storageClass")
        if sc:
            spec["storageClassName"] = sc
        return {"apiVersion": "v1", "kind": "PersistentVolumeClaim",
                "metadata": {"name": p["claimName"], "namespace": self.namespace, "labels": p.get("labels") or {}},
                "spec": spec}

    def ingress(self) -> Obj:
        ing = self.values["ingress"]
        rules = [{"host": h["host"], "http": {"paths": [
            {"path": (p if isinstance(p, str) else p.get("path", "/")), "pathType": ing.get("pathType", "Prefix"),
             "backend": {"service": {"name": f"{self.fullname}-http",
                                     "port": {"number": self.values["service"]["http"]["port"]}}}}
            for p in (h.get("paths") or ["/"])]}} for h in ing.get("hosts") or []]
        spec: Obj = {"rules": rules}
        if ing.get("className"):
            spec["ingressClassName"] = ing["className"]
        if ing.get("tls"):
            spec["tls"] = [{"hosts": t.get("hosts", []), "secretName": t.get("secretName")} for t in ing["tls"]]
        return {"apiVersion": "networking.k8s.io/v1", "kind": "Ingress", "metadata": self.meta(self.fullname),
                "spec": spec}

    def deployment(self) -> Obj:
        v = self.values
        g = v.get("gitea") or {}
        dep_labels = (v.get("deployment") or {}).get("labels") or {}
        strategy: Obj = {"type": v["strategy"]["type"]}
        if strategy["type"] == "RollingUpdate":
            strategy["rollingUpdate"] = {"maxUnavailable": v["strategy"]["rollingUpdate"]["maxUnavailable"],
                                         "maxSurge": v["strategy"]["rollingUpdate"]["maxSurge"]}
        base_env = [{"name": "GITEA_APP_INI", "value": "/data/gitea/conf/app.ini"},
                    {"name": "GITEA_CUSTOM", "value": "/data/gitea"},
                    {"name": "GITEA_WORK_DIR", "value": "/data"},
                    {"name": "GITEA_TEMP", "value": "/tmp/gitea"}]
        admin = g.get("admin") or {}
        if admin.get("existingSecret"):
            admin_env = [{"name": f"GITEA_ADMIN_{k.upper()}",
                          "valueFrom": {"secretKeyRef": {"key": k, "name": admin["existingSecret"]}}}
                         for k in ("username", "password")]
        else:
            admin_env = [{"name": "GITEA_ADMIN_USERNAME", "value": str(admin.get("username"))},
                         {"name": "GITEA_ADMIN_PASSWORD", "value": str(admin.get("password"))}]
        data_mount = {"name": "data", "mountPath": "/data"}
        if (v.get("persistence") or {}).get("subPath"):
            data_mount["subPath"] = v["persistence"]["subPath"]
        image = self.image()
        init = [
            {"name": "init-directories", "image": image, "env": base_env,
             "volumeMounts": [{"name": "init", "mountPath": "/usr/sbinx"}, {"name": "temp", "mountPath": "/tmp"},
                              data_mount, *(v.get("extraInitVolumeMounts") or [])]},
            {"name": "init-app-ini", "image": image,
             "env": [*base_env, *(g.get("additionalConfigFromEnvs") or [])],
             "volumeMounts": [{"name": "config", "mountPath": "/usr/sbinx"}, {"name": "temp", "mountPath": "/tmp"},
                              data_mount, {"name": "inline-config-sources", "mountPath": "/env-to-ini-mounts/inlines/"},
                              *(v.get("extraInitVolumeMounts") or [])]},
            {"name": "configure-gitea", "image": image,
             "env": [*base_env, *([{"name": "HOME", "value": "/data/gitea/git"}] if v["image"].get("rootless") else []),
                     *admin_env, {"name": "GITEA_ADMIN_PASSWORD_MODE", "value": str(admin.get("passwordMode"))}],
             "volumeMounts": [{"name": "init", "mountPath": "/usr/sbinx"}, {"name": "temp", "mountPath": "/tmp"},
                              data_mount, *(v.get("extraInitVolumeMounts") or [])]},
        ]
        container = {
            "name": self.chart.meta["name"], "image": image,
            "env": [{"name": "SSH_LISTEN_PORT", "value": str(self.ssh_listen_port)},
                    {"name": "SSH_PORT", "value": str(self.ssh_port)}, *base_env,
                    {"name": "TMPDIR", "value": "/tmp/gitea"},
                    *([{"name": "HOME", "value": "/data/gitea/git"}] if v["image"].get("rootless") else []),
                    *((v.get("deployment") or {}).get("env") or [])],
            "ports": [{"name": "ssh", "containerPort": self.ssh_listen_port},
                      {"name": "http", "containerPort": self.http_port}],
            "volumeMounts": [{"name": "temp", "mountPath": "/tmp"}, data_mount,
                             *(v.get("extraContainerVolumeMounts") or []), *(v.get("extraVolumeMounts") or [])],
        }
        p = v.get("persistence") or {}
        volumes: list[Obj] = [
            {"name": "init", "secret": {"secretName": f"{self.fullname}-init", "defaultMode": 110}},
            {"name": "config", "secret": {"secretName": self.fullname, "defaultMode": 110}},
            *(v.get("extraVolumes") or []),
            {"name": "inline-config-sources", "secret": {"secretName": f"{self.fullname}-inline-config"}},
            {"name": "temp", "emptyDir": {}},
        ]
        if p.get("enabled") and p.get("mount"):
            volumes.append({"name": "data", "persistentVolumeClaim": {"claimName": p["claimName"]}})
        elif not p.get("enabled"):
            volumes.append({"name": "data", "emptyDir": {}})
        return {
            "apiVersion": "apps/v1", "kind": "Deployment", "metadata": self.meta(self.fullname, dep_labels),
            "spec": {
                "replicas": v.get("replicaCount", 1),
                "strategy": strategy,
                "selector": {"matchLabels": {**self.selector_labels(), **dep_labels}},
                "template": {
                    "metadata": {"labels": {**self.labels(), **dep_labels}},
                    "spec": {"securityContext": v.get("podSecurityContext") or {}, "initContainers": init,
                             "containers": [container], "volumes": volumes},
                },
            },
        }


def _go(value: Any) -> str:
    """How Go's %v prints a YAML scalar in the chart's `printf "%s=%v"`."""
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def immutable_errors(emu: Emulator, objs: list[Obj]) -> list[str]:
    """What the API server would refuse, as it words it (the emulator does not check these)."""
    errors = []
    for obj in objs:
        md = obj["metadata"]
        cur = emu.get(obj["apiVersion"], obj["kind"], md["name"], md["namespace"])
        if cur is None:
            continue
        if obj["kind"] == "Deployment" and cur["spec"].get("selector") != obj["spec"]["selector"]:
            errors.append(f'Deployment.apps "{md["name"]}" is invalid: spec.selector: Invalid value: '
                          f'{obj["spec"]["selector"]}: field is immutable')
        if obj["kind"] == "Service":
            old, new = cur["spec"].get("clusterIP"), obj["spec"].get("clusterIP")
            if old and new and old != new:
                errors.append(f'Service "{md["name"]}" is invalid: spec.clusterIPs[0]: Invalid value: '
                              f'["{new}"]: may not change once set')
    return errors


def image_version(image: str) -> tuple[int, ...] | None:
    """The Gitea/Forgejo version of an image reference (``...:1.27-rootless`` -> (1, 27))."""
    tag = image.rpartition(":")[2].split("@")[0].removesuffix("-rootless")
    parts = tag.split(".")
    return tuple(int(p) for p in parts) if all(p.isdigit() for p in parts) else None


def crash_loop(dep: Obj, data_versions: dict[tuple[str, str], tuple[int, ...]]) -> str | None:
    """Why the Deployment's pods would never become ready, or None: an image older than the newest
    Gitea that migrated its claim's database."""
    pod = dep["spec"]["template"]["spec"]
    version = image_version(pod["containers"][0]["image"])
    ns = dep["metadata"]["namespace"]
    for v in pod.get("volumes") or []:
        claim = (v.get("persistentVolumeClaim") or {}).get("claimName")
        newest = data_versions.get((ns, claim)) if claim else None
        if version is not None and newest is not None and version < newest:
            return (f"Your database is for a newer Gitea ({'.'.join(map(str, newest))}), you can not use the "
                    f"newer database for this old Gitea release ({'.'.join(map(str, version))})")
    return None


def _ran(dep: Obj, data_versions: dict[tuple[str, str], tuple[int, ...]]) -> None:
    """The Deployment's pods started: its Gitea migrated the claim's database to its version."""
    pod = dep["spec"]["template"]["spec"]
    version = image_version(pod["containers"][0]["image"])
    ns = dep["metadata"]["namespace"]
    for v in pod.get("volumes") or []:
        claim = (v.get("persistentVolumeClaim") or {}).get("claimName")
        if claim and version is not None:
            data_versions[(ns, claim)] = max(version, data_versions.get((ns, claim), version))


class HelmController:
    """Reconciles every HelmRelease written to the emulator (see the module docstring)."""

    def __init__(self, emu: Emulator, upstream: Path) -> None:
        self.emu = emu
        self.upstream = upstream
        self.rendered: dict[tuple[str, str], list[Obj]] = {}  # (namespace, name) -> last good objects
        self.errors: list[str] = []
        self.data_versions: dict[tuple[str, str], tuple[int, ...]] = {}  # (namespace, claim) -> newest Gitea
        self.served_digests: dict[tuple[Any, Any], str] = {}  # (chart, version) -> a tampered archive's digest
        self._lock = threading.Lock()

    def idle(self) -> bool:
        """No reconcile running (one may still be about to start: see Lab.settle)."""
        if self._lock.acquire(blocking=False):
            self._lock.release()
            return True
        return False

    def attach(self) -> HelmController:
        self.emu.on_apply("HelmRelease", self._on_write)
        return self

    def _on_write(self, emu: Emulator, obj: Obj) -> None:
        md = obj["metadata"]
        in_background(emu, self.reconcile, md["namespace"], md["name"])

    def reconcile(self, namespace: str, name: str) -> None:
        with self._lock:
            hr = self.emu.get(HELM_API, "HelmRelease", name, namespace)
            if hr is None:
                return
            chart_spec = ((hr.get("spec") or {}).get("chart") or {}).get("spec") or {}
            key = (chart_spec.get("chart"), chart_spec.get("version"))
            generation = hr["metadata"].get("generation", 1)
            previous = self.rendered.get((namespace, name))
            try:
                if key not in CHART_DIRS:
                    raise ApplyFailed(f"chart {key[0]}@{key[1]} is not among the lab's pinned charts")
                chart = Chart(self.upstream / CHART_DIRS[key])
                objs = chart.render(release_name(hr), release_namespace(hr), (hr.get("spec") or {}).get("values") or {})
                refused = immutable_errors(self.emu, objs)
                if refused:
                    raise ApplyFailed("; ".join(refused))
                for obj in objs:
                    server_side_apply(self.emu, obj, FIELD_MANAGER)
                self._wait(objs)
            except ApplyFailed as e:
                self.errors.append(str(e))
                self._failed(hr, generation, key, previous, str(e))
                return
            self.rendered[(namespace, name)] = objs
            self._chart_artifact(hr, key)
            self._status(hr, generation, [_cond(
                "Ready", "True", "UpgradeSucceeded" if previous else "InstallSucceeded",
                f"Helm {'upgrade' if previous else 'install'} succeeded for release "
                f"{release_namespace(hr)}/{release_name(hr)} with chart {key[0]}@{key[1]}")])

    def chart_digest(self, key: tuple[Any, Any]) -> str:
        """The digest source-controller reports for the chart archive: a stand-in, the sha256 of the
        chart's files (the published .tgz is not among the fixtures), unless a test serves another."""
        import hashlib

        if key in self.served_digests:
            return self.served_digests[key]
        h = hashlib.sha256()
        root = self.upstream / CHART_DIRS[key]
        for path in sorted(p for p in root.rglob("*") if p.is_file()):
            h.update(path.relative_to(root).as_posix().encode() + b"\0" + path.read_bytes())
        return f"sha256:{h.hexdigest()}"

    def _chart_artifact(self, hr: Obj, key: tuple[Any, Any]) -> None:
        """The HelmChart helm-controller creates (api/v2/helmrelease_types.go GetHelmChartName:
        <namespace>-<name>, in the source's namespace) with source-controller's artifact digest."""
        md = hr["metadata"]
        spec = ((hr.get("spec") or {}).get("chart") or {}).get("spec") or {}
        ref = spec.get("sourceRef") or {}
        ns = ref.get("namespace") or md["namespace"]
        name = f"{md['namespace']}-{md['name']}"
        chart = {"apiVersion": "source.toolkit.fluxcd.io/v1", "kind": "HelmChart",
                 "metadata": {"name": name, "namespace": ns},
                 "spec": {"chart": key[0], "version": key[1], "sourceRef": ref, "interval": "24h0m0s"}}
        server_side_apply(self.emu, chart, FIELD_MANAGER)
        digest = self.chart_digest(key)
        self.emu.set_status("source.toolkit.fluxcd.io/v1", "HelmChart", name, ns, {
            "artifact": {"digest": digest, "revision": str(key[1]),
                         "path": f"helmchart/{ns}/{name}/{key[0]}-{key[1]}.tgz"},
            "conditions": [_cond("Ready", "True", "ChartPullSucceeded", f"pulled '{key[0]}' chart with version "
                                 f"'{key[1]}'")]})

    def _wait(self, objs: list[Obj]) -> None:
        """Helm's wait: every Deployment's pods become ready, or the action fails."""
        for dep in (o for o in objs if o["kind"] == "Deployment"):
            md = dep["metadata"]
            why = crash_loop(dep, self.data_versions)
            if why is not None:
                self.emu.hold_ready("Deployment", md["namespace"], md["name"])  # CrashLoopBackOff
                raise ApplyFailed(f"resource Deployment/{md['namespace']}/{md['name']} not ready: "
                                  f"container {dep['spec']['template']['spec']['containers'][0]['name']} "
                                  f"crash-looping ({why}): context deadline exceeded")
            self.emu.release_ready("Deployment", md["namespace"], md["name"])
            _ran(dep, self.data_versions)

    def _failed(self, hr: Obj, generation: int, key: tuple[Any, Any], previous: list[Obj] | None,
                error: str) -> None:
        """The failed install or upgrade, and the upgrade remediation (rollback) when the spec asks."""
        spec = hr.get("spec") or {}
        release = f"{release_namespace(hr)}/{release_name(hr)}"
        if previous is None:
            self._status(hr, generation, [_cond("Ready", "False", "InstallFailed",
                                                f"Helm install failed for release {release} with chart "
                                                f"{key[0]}@{key[1]}: {error}")])
            return
        released = _cond("Released", "False", "UpgradeFailed",
                         f"Upgrade of release {release} with chart {key[0]}@{key[1]} failed: {error}")
        remediation = (spec.get("upgrade") or {}).get("remediation") or {}
        retries = int(remediation.get("retries") or 0)
        last = remediation.get("remediateLastFailure", retries > 0)
        if (retries == 0 and not last) or remediation.get("strategy", "rollback") != "rollback":
            self._status(hr, generation, [{**released, "type": "Ready"}, released], failures=1)
            return
        # Each retry renders the same failing values, so the retries end as the first attempt did:
        # rolled back to the previous release, stalled once they are exhausted (atomic_release.go).
        for obj in previous:
            server_side_apply(self.emu, obj, FIELD_MANAGER)
        self._wait(previous)
        message = f"Helm rollback to previous release {release} with chart {key[0]}@{key[1]} succeeded"
        self._status(hr, generation, [
            _cond("Ready", "False", "RollbackSucceeded", message), released,
            _cond("Remediated", "True", "RollbackSucceeded", message),
            _cond("Stalled", "True", "RetriesExceeded", f"Failed to upgrade after {retries + 1} attempt(s)")],
            failures=retries + 1)

    def _status(self, hr: Obj, generation: int, conditions: list[Obj], failures: int = 0) -> None:
        md = hr["metadata"]
        status: Obj = {"observedGeneration": generation, "conditions": conditions}
        if failures:
            status["upgradeFailures"] = failures
        self.emu.set_status(HELM_API, "HelmRelease", md["name"], md["namespace"], status)


def _cond(kind: str, status: str, reason: str, message: str) -> Obj:
    return {"type": kind, "status": status, "reason": reason, "message": message,
            "lastTransitionTime": "2026-01-01T00:00:00Z"}
