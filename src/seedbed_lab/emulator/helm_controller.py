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
Service's clusterIP) are checked here, and a refused upgrade leaves the release as it was
(``Ready=False``), as a failed upgrade with rollback remediation does.
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


class HelmController:
    """Reconciles every HelmRelease written to the emulator (see the module docstring)."""

    def __init__(self, emu: Emulator, upstream: Path) -> None:
        self.emu = emu
        self.upstream = upstream
        self.rendered: dict[tuple[str, str], list[Obj]] = {}  # (namespace, name) -> last applied objects
        self.errors: list[str] = []
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
            except ApplyFailed as e:
                self.errors.append(str(e))
                # Upgrade remediation (rollback): the previous release's objects stay as they were.
                reason = "UpgradeFailed" if previous else "InstallFailed"
                self._status(hr, generation, "False", reason, str(e))
                return
            self.rendered[(namespace, name)] = objs
            self._status(hr, generation, "True", "UpgradeSucceeded" if previous else "InstallSucceeded",
                         f"Helm {'upgrade' if previous else 'install'} succeeded for release "
                         f"{release_namespace(hr)}/{release_name(hr)} with chart {key[0]}@{key[1]}")

    def _status(self, hr: Obj, generation: int, status: str, reason: str, message: str) -> None:
        md = hr["metadata"]
        self.emu.set_status(HELM_API, "HelmRelease", md["name"], md["namespace"], {
            "observedGeneration": generation,
            "conditions": [{"type": "Ready", "status": status, "reason": reason, "message": message,
                            "lastTransitionTime": "2026-01-01T00:00:00Z"}]})
