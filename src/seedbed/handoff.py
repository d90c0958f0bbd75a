"""``seedbed check-handoff``: will Flux's re-deploy of the Git server keep the repository and Flux's access?

After the bootstrap, Flux owns the cluster and re-deploys Gitea (or Forgejo) from the repository,
usually with the upstream Helm chart through a HelmRelease. That re-deploy must keep the contract
the bootstrap set up, or the repository (and Flux's own source) is lost:

- the same data claim (``git_server.pvc_name``), mounted whole at ``/data``, not re-created by Helm;
- the rootless image of the same flavour (the root image lays ``/data`` out differently);
- the same SQLite database the bootstrap wrote (users, the repository record, Flux's deploy key);
- the SSH host key mounted from the same Secret (Flux's ``known_hosts`` pins it);
- the SSH Service under the same name on port 22, reachable through a cluster IP (the
  GitRepository URL is ``ssh://git@<ssh_service>.<namespace>.svc.cluster.local/...``).

The lint is pure: it reads the YAML files under a folder and never talks to a cluster. Every
finding names a file and line (the offending key, or the object when a key is missing) and a fix.
"""

from __future__ import annotations

import posixpath
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

import msgspec

from . import fluxrepo, images
from .config import Config
from .errors import ConfigError, SeedbedError
from .fluxrepo import Val
from .render.gitserver import DATA_DIR, HOST_KEY_DIR, HOST_KEY_FILE, HTTP_PORT, SSH_LISTEN_PORT, SSH_PORT

# "unverified": a Git server seedbed found but could not check; never reported as OK.
Severity = Literal["error", "warning", "unverified"]

# The bootstrap Deployment's side of the contract, from the module that renders it.
DATA_PATH = DATA_DIR
BOOTSTRAP_DB_TYPE = "sqlite3"

CHARTS = ("gitea", "forgejo")

# The upstream charts' defaults for the values the lint reads (gitea-charts/gitea, forgejo-helm).
# A HelmRelease that does not set a value gets these, so they are checked like explicit values.
_COMMON_DEFAULTS: dict[tuple[str, ...], Any] = {
    ("image", "rootless"): True,
    ("persistence", "enabled"): True,
    ("persistence", "create"): True,
    ("persistence", "mount"): True,
    ("persistence", "claimName"): "gitea-shared-storage",
    ("service", "ssh", "port"): 22,
    ("service", "http", "port"): 3000,
}
_CHART_DEFAULTS: dict[str, dict[tuple[str, ...], Any]] = {
    # gitea-charts/gitea: headless Services and a PostgreSQL HA sub-chart unless told otherwise.
    "gitea": {**_COMMON_DEFAULTS, ("service", "ssh", "clusterIP"): "None", ("service", "http", "clusterIP"): "None",
              ("postgresql-ha", "enabled"): True, ("postgresql", "enabled"): False},
    # forgejo-helm: cluster IPs, SQLite by default.
    "forgejo": {**_COMMON_DEFAULTS, ("service", "ssh", "clusterIP"): None, ("service", "http", "clusterIP"): None},
}

_DB_SUBCHARTS = ("postgresql-ha", "postgresql", "mariadb", "mysql")
_HOST_KEYS_ENV = "GITEA__SERVER__SSH_SERVER_HOST_KEYS"


# --------------------------------------------------------------------------- results


class Finding(msgspec.Struct, frozen=True):
    file: str  # relative to the checked folder, with '/' separators
    line: int  # 1-based; 0 when the finding is about the repository as a whole
    severity: Severity
    message: str
    fix: str

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}" if self.line else self.file
        return f"{where}: {self.severity}: {self.message}"


class HandoffReport(msgspec.Struct):
    findings: list[Finding] = msgspec.field(default_factory=list)
    found: list[str] = msgspec.field(default_factory=list)
    unreadable: list[str] = msgspec.field(default_factory=list)  # SOPS-encrypted files Flux decrypts and seedbed cannot
    read: str = ""  # what was read, e.g. "12 Flux Kustomizations from clusters/homelab (340 objects)"
    self_contained: bool = True  # the same tree gives the same report (fluxrepo.Repo.self_contained)

    @property
    def ok(self) -> bool:
        """True when nothing would lose the repository or Flux's access and every Git server found
        could be checked (warnings allowed)."""
        return not self.errors and not self.unverified

    @property
    def errors(self) -> list[Finding]:
        return [f for f in self.findings if f.severity == "error"]

    @property
    def unverified(self) -> list[Finding]:
        return [f for f in self.findings if f.severity == "unverified"]

    @property
    def warnings(self) -> list[Finding]:
        return [f for f in self.findings if f.severity == "warning"]

    def as_dict(self) -> dict[str, Any]:
        """For ``--output json``."""
        return {"ok": self.ok, "found": list(self.found), "read": self.read, "unreadable": list(self.unreadable),
                "findings": [{"file": f.file, "line": f.line, "severity": f.severity, "message": f.message,
                              "fix": f.fix} for f in self.findings]}

    def as_text(self) -> str:
        return self.format()

    def format(self) -> str:
        """The report as the CLI prints it: what was read and recognised, each finding with its fix,
        then one summary line with the counts."""
        lines = [f"read: {self.read}"] if self.read else []
        lines += [f"found: {item}" for item in self.found]
        if self.unreadable:
            lines.append(f"not readable: {len(self.unreadable)} SOPS-encrypted file(s) (Flux decrypts them; "
                         "seedbed does not): " + ", ".join(self.unreadable))
        for f in self.findings:
            lines.append(str(f))
            if f.fix:
                lines.append(f"  fix: {f.fix}")
        counts = f"{len(self.errors)} error(s), {len(self.warnings)} warning(s)"
        if self.unverified:
            counts += f", {len(self.unverified)} not verified"
        if self.errors:
            lines.append(f"hand-over would break: {counts}")
        elif self.unverified:
            lines.append(f"hand-over NOT verified: {counts}")
        else:
            lines.append("hand-over OK" + (f" ({len(self.warnings)} warning(s))" if self.warnings else ""))
        return "\n".join(lines)


# --------------------------------------------------------------------------- recommended values


def recommended_values(cfg: Config) -> str:
    """HelmRelease ``spec.values`` for the upstream chart that keep the bootstrap's contract."""
    gs = cfg.git_server
    name_line = f"fullnameOverride: {gs.fullname}  # Services {gs.ssh_service} and {gs.http_service}"
    return f"""\
{name_line}
image:
  rootless: true  # same /data layout and built-in SSH server as the bootstrap
persistence:
  enabled: true
  create: false  # seedbed created the claim; Helm must not create or own it
  mount: true
  claimName: {gs.pvc_name}
service:
  ssh:
    port: {SSH_PORT}
    clusterIP: ""  # a cluster IP maps port {SSH_PORT} to {SSH_LISTEN_PORT}; a headless Service would not
  http:
    port: {HTTP_PORT}
postgresql-ha:
  enabled: false  # the bootstrap's SQLite database on the claim holds the users and deploy keys
postgresql:
  enabled: false
extraVolumes:
  - name: ssh-host-key
    secret:
      secretName: {gs.host_key_secret}  # the host key Flux's known_hosts pins
      defaultMode: 0440
extraContainerVolumeMounts:
  - name: ssh-host-key
    mountPath: {HOST_KEY_DIR}
    readOnly: true
gitea:
  config:
    database:
      DB_TYPE: {BOOTSTRAP_DB_TYPE}
    server:
      START_SSH_SERVER: true
      SSH_PORT: {SSH_PORT}
      SSH_LISTEN_PORT: {SSH_LISTEN_PORT}
      SSH_SERVER_HOST_KEYS: {HOST_KEY_DIR}/{HOST_KEY_FILE}
"""


RECOMMENDED_VALUES = recommended_values(Config())


# --------------------------------------------------------------------------- values


def _merge(base: Val | None, over: Val) -> Val:
    """Helm's coalescing: mappings merge key by key, anything else replaces."""
    if base is None or not isinstance(base.value, dict) or not isinstance(over.value, dict):
        return over
    merged = dict(base.value)
    for key, value in over.value.items():
        merged[key] = _merge(merged.get(key), value)
    return Val(merged, over.file, over.line)


def _set_path(root: Val, path: list[str], value: Val) -> Val:
    """``root`` with ``value`` at a dotted ``targetPath`` (creating mappings on the way)."""
    if not path:
        return value
    current = root.value if isinstance(root.value, dict) else {}
    child = current.get(path[0]) or Val({}, value.file, value.line)
    return Val({**current, path[0]: _set_path(child, path[1:], value)}, root.file, root.line)


def _scalar(v: Val | None) -> Any:
    return None if v is None else v.plain()


def _bool(value: Any, default: bool) -> bool:
    if value is None:
        return default
    if isinstance(value, str):
        return value.strip().lower() in {"true", "yes", "on", "1"}
    return bool(value)


def _items(v: Val | None) -> list[Val]:
    return [item for item in v.value if isinstance(item.value, dict)] if v and isinstance(v.value, list) else []


# --------------------------------------------------------------------------- the repository


class _Doc:
    """An object Flux applies, positioned in the file it was written in (lazily: few are checked)."""

    def __init__(self, obj: fluxrepo.Obj, repo: fluxrepo.Repo) -> None:
        self.obj = obj
        self.file = obj.file
        self._repo = repo
        self._val: Val | None = None

    @property
    def val(self) -> Val:
        if self._val is None:
            self._val = self._repo.positioned(self.obj)
        return self._val

    @property
    def kind(self) -> str:
        return self.obj.kind

    @property
    def api(self) -> str:
        return self.obj.api

    @property
    def name(self) -> str:
        return self.obj.name

    @property
    def namespace(self) -> str | None:
        return self.obj.namespace

    @property
    def line(self) -> int:
        """Where a missing key is reported: the object's ``kind:`` line."""
        kind = self.val.get("kind")
        return kind.line if kind else self.val.line


class _Repo:
    """The checks' view of the repository as Flux applies it (:mod:`seedbed.fluxrepo`)."""

    def __init__(self, flux: fluxrepo.Repo) -> None:
        self.flux = flux
        self.docs = [_Doc(o, flux) for o in flux.objects]

    def namespace_of(self, doc: _Doc) -> str | None:
        """The namespace the object is applied in: kustomize's ``namespace:`` and Flux's
        ``targetNamespace`` are already in the built object."""
        return doc.namespace

    def source(self, kind: str, name: str, namespace: str | None) -> fluxrepo.Obj | None:
        return self.flux.find(kind, name, namespace)


# --------------------------------------------------------------------------- the checks


class _Checker:
    def __init__(self, repo: _Repo, cfg: Config, report: HandoffReport) -> None:
        self.repo = repo
        self.cfg = cfg
        self.gs = cfg.git_server
        self.report = report

    def add(self, file: str, line: int, severity: Severity, message: str, fix: str) -> None:
        """Record a finding once: the same cause reached twice (two Kustomizations applying one
        file, one Secret named by several valuesFrom entries) is one message."""
        finding = Finding(file, line, severity, message, fix)
        if finding not in self.report.findings:
            self.report.findings.append(finding)

    # ---------------------------------------------------------------- HelmRelease

    def helm_chart(self, doc: _Doc) -> str | None:
        """'gitea' or 'forgejo' when ``doc`` is a HelmRelease of one of the upstream charts."""
        if doc.kind != "HelmRelease" or not doc.api.startswith("helm.toolkit.fluxcd.io/"):
            return None
        chart = _scalar(doc.val.get("spec", "chart", "spec", "chart"))
        if isinstance(chart, str):
            base = chart.rstrip("/").rsplit("/", 1)[-1]
            return base if base in CHARTS else None
        ref = doc.val.get("spec", "chartRef")
        if ref is not None:
            ref_name = str(_scalar(ref.get("name")) or "")
            source = self.repo.source(str(_scalar(ref.get("kind")) or ""), ref_name, self.repo.namespace_of(doc))
            if source is not None:
                spec = source.data.get("spec") or {}
                base = str(spec.get("url") or spec.get("chart") or "").rstrip("/").rsplit("/", 1)[-1]
                return base if base in CHARTS else None
            # The chart's source is not in the repository: go by the names.
            for chart_name in CHARTS:
                if chart_name in ref_name or chart_name in doc.name:
                    return chart_name
        return None

    def values_of(self, doc: _Doc) -> tuple[Val, list[str]]:
        """The merged values (valuesFrom in order, then spec.values) and the sources not read.

        A source named by several entries (one Secret, eight ``targetPath``s) is one source: it is
        read, or reported unreadable, once.
        """
        namespace = self.repo.namespace_of(doc)
        merged = Val({}, doc.file, doc.line)
        unread: list[str] = []
        for ref in _items(doc.val.get("spec", "valuesFrom")):
            kind = str(_scalar(ref.get("kind")) or "")
            name = str(_scalar(ref.get("name")) or "")
            key = str(_scalar(ref.get("valuesKey")) or "values.yaml")
            target = _scalar(ref.get("targetPath"))
            optional = _bool(_scalar(ref.get("optional")), False)
            source = self.repo.source(kind, name, namespace)
            label = f"{kind} {name}"
            data = None if source is None or source.encrypted else self.repo.flux.data_text(source, key)
            if data is None:
                if label in unread:
                    continue
                unread.append(label)
                if source is not None and source.encrypted:
                    why = f"it is SOPS-encrypted ({source.file})"
                elif source is None and self.repo.source("ExternalSecret", name, namespace) is not None:
                    why = f"ExternalSecret {name} creates it on the cluster"
                elif source is None:
                    why = "it is not in what Flux applies from the repository"
                else:
                    why = f"it has no key {key!r}"
                if not optional or source is not None:
                    self.add(doc.file, ref.line, "warning",
                             f"valuesFrom {label}: cannot read it ({why}); the values it sets are not checked",
                             "keep the hand-over values (the README's hand-over section) in spec.values or "
                             "a plain ConfigMap in the repository")
                continue
            text, file, line_of, key_line = data
            found = f"values for {doc.name} from {label} ({file})"
            if found not in self.report.found:
                self.report.found.append(found)
            if target:
                merged = _set_path(merged, str(target).split("."), Val(text, file, key_line))
                continue
            try:
                docs = fluxrepo.parse_positioned(text, file, line_of)
            except SeedbedError as e:
                self.add(file, key_line, "error",
                         f"{label} key {key!r}: not valid YAML, so Helm cannot use it ({e.message.split(': ')[-1]})",
                         "fix the YAML syntax of the values")
                continue
            for d in docs:
                if isinstance(d.value, dict):
                    merged = _merge(merged, d)
        inline = doc.val.get("spec", "values")
        if inline is not None and isinstance(inline.value, dict):
            merged = _merge(merged, inline)
        return merged, unread

    def check_helmrelease(self, doc: _Doc, chart: str) -> None:
        namespace = (_scalar(doc.val.get("spec", "targetNamespace")) or self.repo.namespace_of(doc))
        self.report.found.append(
            f"HelmRelease {namespace or '?'}/{doc.name} (chart {chart}) in {doc.file}")
        values, unread = self.values_of(doc)
        defaults = _CHART_DEFAULTS[chart]

        def val(*path: str) -> Val | None:
            return values.get(*path)

        def value(*path: str) -> Any:
            v = val(*path)
            return v.plain() if v is not None else defaults.get(path)

        def at(*path: str) -> tuple[str, int]:
            """The file and line of the key, or of the deepest parent written, or the HelmRelease."""
            for depth in range(len(path), 0, -1):
                v = val(*path[:depth])
                if v is not None:
                    return v.file, v.line
            return doc.file, doc.line

        def flag(path: tuple[str, ...], severity: Severity, message: str, fix: str,
                 at_node: Val | None = None) -> None:
            file, line = (at_node.file, at_node.line) if at_node is not None else at(*path)
            # When the key is absent but a values source could not be read, it may be set there.
            if severity == "error" and val(*path) is None and at_node is None and unread:
                severity = "warning"
                message += f" (unless it is set in {', '.join(unread)}, which seedbed cannot read)"
            self.add(file, line, severity, message, fix)

        # -- namespace: the claim and the Secret are namespaced; another namespace has neither.
        ns_override = val("namespaceOverride") or val("namespace")
        if ns_override is not None and _scalar(ns_override):
            namespace = str(_scalar(ns_override))
        if not namespace:
            self.add(doc.file, doc.line, "warning",
                     f"HelmRelease {doc.name} names no namespace; it must deploy into {self.gs.namespace!r}",
                     f"set metadata.namespace or spec.targetNamespace: {self.gs.namespace}")
        elif namespace != self.gs.namespace:
            node = ns_override or doc.val.get("spec", "targetNamespace") or doc.val.get("metadata", "namespace")
            self.add(node.file if node else doc.file, node.line if node else doc.line, "error",
                     f"deploys into namespace {namespace!r}, but the data claim {self.gs.pvc_name!r} and the "
                     f"host key Secret live in {self.gs.namespace!r}",
                     f"deploy the release into {self.gs.namespace!r} (metadata.namespace or spec.targetNamespace)")

        self._check_helm_names(doc, chart, val, value, flag)
        self._check_helm_storage(chart, val, value, flag)
        self._check_helm_image(chart, val, value, flag)
        self._check_helm_database(val, value, flag)
        self._check_helm_ssh(doc, val, value, flag)

    def _check_helm_names(self, doc: _Doc, chart: str, val: Any, value: Any, flag: Any) -> None:
        spec_release = _scalar(doc.val.get("spec", "releaseName"))
        target_ns = _scalar(doc.val.get("spec", "targetNamespace"))
        # helm-controller's default release name is [<targetNamespace>-]<metadata.name>.
        release = str(spec_release or (f"{target_ns}-{doc.name}" if target_ns else doc.name))
        override = value("fullnameOverride")
        chart_name = str(value("nameOverride") or chart)
        if override:
            fullname, how = str(override), "fullnameOverride"
        elif chart_name in release:
            fullname, how = release, f"release name {release!r}"
        else:
            fullname, how = f"{release}-{chart_name}", f"release name {release!r} + chart name {chart_name!r}"
        fullname = fullname[:63].rstrip("-")
        path = ("fullnameOverride",)
        fix = f"set fullnameOverride: {self.cfg.git_server.fullname} in the values"

        # Point at what decides the name: fullnameOverride, else releaseName/targetNamespace/name.
        name_node = (val("fullnameOverride") if override else None) or doc.val.get("spec", "releaseName") \
            or doc.val.get("spec", "targetNamespace") or doc.val.get("metadata", "name") or doc.val
        if f"{fullname}-ssh" != self.gs.ssh_service:
            flag(path, "error",
                 f"the SSH Service would be {fullname}-ssh (from {how}), but Flux's GitRepository URL "
                 f"names {self.gs.ssh_service!r}", fix, at_node=name_node)
        if f"{fullname}-http" != self.gs.http_service:
            flag(path, "warning",
                 f"the HTTP Service would be {fullname}-http (from {how}), not {self.gs.http_service!r}: "
                 f"seedbed's later runs (push, backup) reach Gitea through that name", fix, at_node=name_node)

    def _check_helm_storage(self, chart: str, val: Any, value: Any, flag: Any) -> None:
        pvc = self.gs.pvc_name
        if not _bool(value("persistence", "enabled"), True):
            flag(("persistence", "enabled"), "error",
                 "persistence is disabled: Gitea would run on an empty scratch volume and the repository "
                 f"on {pvc!r} would be gone from Flux's source", "set persistence.enabled: true")
            return
        if not _bool(value("persistence", "mount"), True):
            flag(("persistence", "mount"), "error",
                 f"persistence.mount is false: the claim {pvc!r} would not be mounted at {DATA_PATH}",
                 "set persistence.mount: true")
        # Older charts spelled a reused claim persistence.existingClaim.
        existing = value("persistence", "existingClaim")
        claim_path: tuple[str, ...] = ("persistence", "claimName")
        claim = value(*claim_path)
        create = _bool(value("persistence", "create"), True)
        if existing and val("persistence", "claimName") is None:
            claim, claim_path, create = existing, ("persistence", "existingClaim"), False
        if claim != pvc:
            if create:
                msg = (f"the chart would create a new, empty claim {claim!r}; the repository stays on "
                       f"{pvc!r}, which nothing would mount")
            else:
                msg = f"the claim {claim!r} is not the bootstrap's {pvc!r}, which holds the repository"
            flag(claim_path, "error", msg, f"set persistence.claimName: {pvc} and persistence.create: false")
        elif create:
            flag(("persistence", "create"), "error",
                 f"persistence.create is true (the chart's default): Helm would try to create the claim "
                 f"{pvc!r} that seedbed already created. The install fails on the existing claim, and a claim "
                 f"Helm adopts is deleted with the release",
                 "set persistence.create: false so the chart mounts the existing claim")
        sub = value("persistence", "subPath")
        if sub:
            flag(("persistence", "subPath"), "error",
                 f"persistence.subPath {sub!r}: the bootstrap wrote the repository at the root of the claim",
                 "remove persistence.subPath")

    def _check_helm_image(self, chart: str, val: Any, value: Any, flag: Any) -> None:
        if not _bool(value("image", "rootless"), True):
            flag(("image", "rootless"), "error",
                 "image.rootless is false: the root image keeps its data in another /data layout and "
                 "runs OpenSSH instead of the built-in server that serves the pinned host key",
                 "set image.rootless: true")
        full = value("image", "fullOverride")
        if full:
            if not _image_is_rootless(str(full)):
                flag(("image", "fullOverride"), "error",
                     f"image.fullOverride {full!r} is not a -rootless image", "use the <version>-rootless tag")
        else:
            tag = value("image", "tag")
            if tag and str(tag).endswith("-rootless") and _bool(value("image", "rootless"), True):
                flag(("image", "tag"), "error",
                     f"image.tag {tag!r}: the chart appends -rootless itself, so the image would be "
                     f"{tag}-rootless, which does not exist", f"set image.tag: {str(tag).removesuffix('-rootless')}")
        flavour = chart
        for path in (("image", "fullOverride"), ("image", "repository")):
            ref = value(*path)
            if ref:
                flavour = "forgejo" if "forgejo" in str(ref).lower() else "gitea" if "gitea" in str(ref).lower() \
                    else flavour
                break
        if flavour != self.gs.flavor:
            flag(("image", "repository") if val("image", "repository") is not None else ("image",), "error",
                 f"this deploys {flavour}, but the bootstrap ran {self.gs.flavor}: their databases have diverged, "
                 "so switching is a migration, not a re-deploy",
                 f"deploy {self.gs.flavor} (or set gitServer.flavor: {flavour} before the bootstrap)")

    def _check_helm_database(self, val: Any, value: Any, flag: Any) -> None:
        for sub in _DB_SUBCHARTS:
            if _bool(value(sub, "enabled"), False):
                default = val(sub, "enabled") is None
                flag((sub, "enabled"), "error",
                     f"{sub}.enabled is true{' (the chart default)' if default else ''}: Gitea would switch to a "
                     f"new, empty database; the users, the repository record and Flux's deploy key are in the "
                     f"bootstrap's SQLite database on the claim",
                     f"set {sub}.enabled: false")
        db_type = value("gitea", "config", "database", "DB_TYPE")
        if db_type and str(db_type) != BOOTSTRAP_DB_TYPE:
            flag(("gitea", "config", "database", "DB_TYPE"), "error",
                 f"DB_TYPE {db_type!r}: the bootstrap's data is in {BOOTSTRAP_DB_TYPE}; a new database starts empty",
                 f"keep DB_TYPE: {BOOTSTRAP_DB_TYPE} (migrate later, deliberately, with a backup)")

    def _check_helm_ssh(self, doc: _Doc, val: Any, value: Any, flag: Any) -> None:
        server = ("gitea", "config", "server")
        if not _bool(value(*server, "START_SSH_SERVER"), True):
            flag((*server, "START_SSH_SERVER"), "error",
                 "START_SSH_SERVER is false: the rootless image has no other SSH server, so Flux could not fetch",
                 "set gitea.config.server.START_SSH_SERVER: true")
        if _bool(value(*server, "DISABLE_SSH"), False):
            flag((*server, "DISABLE_SSH"), "error", "DISABLE_SSH is true: Flux fetches over SSH",
                 "remove gitea.config.server.DISABLE_SSH")
        port = value("service", "ssh", "port")
        if _int(port) != SSH_PORT:
            flag(("service", "ssh", "port"), "error",
                 f"service.ssh.port is {port}: Flux's GitRepository URL uses port {SSH_PORT}",
                 f"set service.ssh.port: {SSH_PORT}")
        listen = _int(value(*server, "SSH_LISTEN_PORT")) or SSH_LISTEN_PORT
        cluster_ip = value("service", "ssh", "clusterIP")
        # The chart only renders clusterIP for type ClusterIP; a LoadBalancer/NodePort always gets one.
        ssh_type = value("service", "ssh", "type") or "ClusterIP"
        if cluster_ip == "None" and ssh_type == "ClusterIP" and listen != _int(port):
            default = val("service", "ssh", "clusterIP") is None
            flag(("service", "ssh", "clusterIP"), "error",
                 f"the SSH Service is headless (clusterIP: None{', the chart default' if default else ''}): "
                 f"no port mapping, so Flux would connect to the pod's port {port} while Gitea listens on {listen}",
                 'set service.ssh.clusterIP: "" to get a cluster IP that maps the port')
        http_port = value("service", "http", "port")
        if _int(http_port) != HTTP_PORT:
            flag(("service", "http", "port"), "warning",
                 f"service.http.port is {http_port}: seedbed's later runs reach Gitea on port {HTTP_PORT}",
                 f"set service.http.port: {HTTP_PORT}")

        volumes = [(_scalar(v.get("name")), v) for v in _items(val("extraVolumes"))]
        mounts: list[Val] = []
        for key in ("extraContainerVolumeMounts", "extraVolumeMounts"):
            mounts += _items(val(key))
        keys_val = val(*server, "SSH_SERVER_HOST_KEYS")
        for key in ("deployment", "statefulset"):
            for env in _items(val(key, "env")):
                if str(_scalar(env.get("name")) or "").upper() == _HOST_KEYS_ENV:
                    keys_val = env.get("value") or env
        for env in _items(val("gitea", "additionalConfigFromEnvs")):
            if str(_scalar(env.get("name")) or "").upper() == _HOST_KEYS_ENV:
                keys_val = env.get("value") or env
        self._check_host_key(
            volumes, mounts, keys_val,
            missing=lambda msg, fix, path=("extraVolumes",): flag(path, "error", msg, fix),
            values_style=True,
        )

    # ---------------------------------------------------------------- charts seedbed does not know

    def chart_label(self, doc: _Doc) -> str:
        """The chart a HelmRelease installs, as far as the repository says (for messages)."""
        chart = _scalar(doc.val.get("spec", "chart", "spec", "chart"))
        if chart:
            return str(chart).rstrip("/").rsplit("/", 1)[-1]
        ref = doc.val.get("spec", "chartRef")
        name = str(_scalar(ref.get("name")) if ref is not None else "") or "?"
        source = self.repo.source(str(_scalar(ref.get("kind")) if ref is not None else ""), name,
                                  self.repo.namespace_of(doc))
        url = str((source.data.get("spec") or {}).get("url") or "") if source is not None else ""
        return url.rstrip("/").rsplit("/", 1)[-1] or name

    def check_other_chart(self, doc: _Doc) -> bool:
        """A HelmRelease of another chart (bjw-s app-template, a generic chart) that runs a Gitea or
        Forgejo image: check what its values show (image, claim, host key, SSH port), and name what
        seedbed cannot verify without the chart's templates. False when it runs no Git server."""
        before = (len(self.report.findings), len(self.report.found))
        values, unread = self.values_of(doc)
        image = _find_image(values)
        if image is None:  # not a Git server: what reading its values found is none of this check's business
            del self.report.findings[before[0]:], self.report.found[before[1]:]
            return False
        at, ref = image
        chart = self.chart_label(doc)
        ns = self.repo.namespace_of(doc)
        self.report.found.append(f"HelmRelease {ns or '?'}/{doc.name} (chart {chart}, image {ref}) in {doc.file}")
        flavour = _image_flavour(ref)
        if flavour != self.gs.flavor:
            self.add(at.file, at.line, "error",
                     f"this deploys {flavour}, but the bootstrap ran {self.gs.flavor}: their databases have diverged, "
                     "so switching is a migration, not a re-deploy", f"deploy {self.gs.flavor}")
        if not _image_is_rootless(ref):
            self.add(at.file, at.line, "error",
                     f"image {ref!r} is not the rootless image: the root image keeps its data in another /data "
                     "layout and runs OpenSSH instead of the built-in server with the pinned host key",
                     "use the <version>-rootless tag")
        if ns is not None and ns != self.gs.namespace:
            node = doc.val.get("spec", "targetNamespace") or doc.val.get("metadata", "namespace") or doc.val
            self.add(node.file, node.line, "error",
                     f"deploys into namespace {ns!r}, but the data claim {self.gs.pvc_name!r} and the host key "
                     f"Secret live in {self.gs.namespace!r}", f"deploy the release into {self.gs.namespace!r}")
        unverified: list[str] = []
        pvc = self.gs.pvc_name
        claims = _find_keys(values, {"existingClaim", "claimName"})
        if any(_scalar(c) == pvc for c in claims):
            pass
        elif claims:
            c = claims[0]
            self.add(c.file, c.line, "error",
                     f"the Git server mounts claim {_scalar(c)!r}, not the bootstrap's {pvc!r}, which holds the "
                     "repository", f"mount the existing claim {pvc}")
        else:
            unverified.append(f"that the claim {pvc!r} is mounted (no existingClaim/claimName in the values)")
        secret = self.gs.host_key_secret
        if not any(_scalar(v) == secret for v in _find_keys(values, {"secretName", "name"})):
            if unread:
                unverified.append(f"the host key Secret {secret!r} (the values in {', '.join(unread)} are unread)")
            else:
                self.add(doc.file, doc.line, "error",
                         f"the SSH host key is not mounted from Secret {secret!r} (the values never name it): Gitea "
                         "would present another host key and Flux's known_hosts (which pins seedbed's key) would "
                         "stop matching", f"mount Secret {secret} and point SSH_SERVER_HOST_KEYS at it")
        ssh_ports = [p for p in _find_mappings(values) if _int(_scalar(p.get("port"))) == SSH_PORT]
        if not ssh_ports:
            unverified.append(f"that a Service maps port {SSH_PORT} to Gitea's SSH port")
        for p in ssh_ports:
            target = p.get("targetPort")
            if target is not None and _int(_scalar(target)) not in {None, SSH_LISTEN_PORT}:
                self.add(target.file, target.line, "error",
                         f"port {SSH_PORT} goes to {_scalar(target)}, but Gitea's SSH server listens on "
                         f"{SSH_LISTEN_PORT}", f"set targetPort: {SSH_LISTEN_PORT}")
        unverified += ["that the claim is mounted whole at the image's data folder",
                       f"the Service names ({self.gs.ssh_service}, {self.gs.http_service}) the chart renders",
                       "the pods' labels and selectors", "the update strategy (two pods must never share the claim)",
                       "the database (the bootstrap's is SQLite on the claim)"]
        self.add(doc.file, doc.line, "unverified",
                 f"HelmRelease {doc.name} runs {flavour} through chart {chart!r}, whose templates seedbed does not "
                 f"know; it could not verify: {'; '.join(unverified)}",
                 f"deploy the Git server with the official {self.gs.flavor} chart and the recommended values "
                 "(README, hand-over section), or check these by hand before pushing")
        return True

    # ---------------------------------------------------------------- host key (both styles)

    def _check_host_key(self, volumes: list[tuple[Any, Val]], mounts: list[Val], keys_val: Val | None, *,
                        missing: Callable[..., None], values_style: bool) -> None:
        secret = self.gs.host_key_secret
        vol_key = "extraVolumes" if values_style else "volumes"
        mount_key = "extraContainerVolumeMounts" if values_style else "volumeMounts"
        keys_key = "gitea.config.server.SSH_SERVER_HOST_KEYS" if values_style else \
            "env GITEA__server__SSH_SERVER_HOST_KEYS"
        recommended = f"{HOST_KEY_DIR}/{HOST_KEY_FILE}"
        fix_all = (f"mount Secret {secret} ({vol_key} + {mount_key} at {HOST_KEY_DIR}) and set "
                   f"{keys_key}: {recommended}")

        secret_vols: dict[str, Val] = {}
        for name, v in volumes:
            if v.get("secret") is not None and name:
                secret_vols[str(name)] = v
        # (mount path, is a single file via subPath, volume, mount) for every mounted Secret volume.
        mounted: list[tuple[str, bool, Val, Val]] = []
        for m in mounts:
            name = _scalar(m.get("name"))
            path = _scalar(m.get("mountPath"))
            if name in secret_vols and path:
                mounted.append((str(path).rstrip("/") or "/", bool(_scalar(m.get("subPath"))),
                                secret_vols[str(name)], m))
        keys = [k.strip() for k in str(_scalar(keys_val) or "").split(",") if k.strip()]
        paths = [k if k.startswith("/") else posixpath.join(DATA_PATH, k) for k in keys]

        def serves(mount: tuple[str, bool, Val, Val]) -> list[str]:
            path, single, _, _ = mount
            return [p for p in paths if (p == path if single else p.startswith(path + "/"))]

        ours = [m for m in mounted if _scalar(m[2].get("secret", "secretName")) == secret]
        theirs = [m for m in mounted if m not in ours]
        if not ours:
            other = next((m for m in theirs if serves(m)), None)
            if other is not None:
                sn = other[2].get("secret", "secretName") or other[2]
                self.add(sn.file, sn.line, "error",
                         f"the SSH host key comes from Secret {_scalar(sn)!r}, not {secret!r}: Gitea would present "
                         "another key and Flux's known_hosts would stop matching",
                         f"set secretName: {secret}")
                return
            unmounted = next((v for v in secret_vols.values()
                              if _scalar(v.get("secret", "secretName")) == secret), None)
            if unmounted is not None:
                self.add(unmounted.file, unmounted.line, "error",
                         f"the volume for Secret {secret!r} is never mounted into the Gitea container",
                         f"add it to {mount_key} with mountPath: {HOST_KEY_DIR}")
                return
            missing(f"the SSH host key is not mounted from Secret {secret!r}: Gitea would generate a new host "
                    "key and Flux's known_hosts (which pins seedbed's key) would stop matching", fix_all)
            return
        mount = ours[0]
        if not keys:
            if keys_val is not None:
                self.add(keys_val.file, keys_val.line, "error",
                         "SSH_SERVER_HOST_KEYS is empty: Gitea would generate its own host key",
                         f"set {keys_key}: {mount[0]}/{HOST_KEY_FILE}")
            else:
                m = mount[3]
                self.add(m.file, m.line, "error",
                         f"Secret {secret!r} is mounted at {mount[0]}, but SSH_SERVER_HOST_KEYS is not set, so "
                         "Gitea would not use it", f"set {keys_key}: {mount[0]}/{HOST_KEY_FILE}")
            return
        used = serves(mount)
        assert keys_val is not None
        if not used:
            self.add(keys_val.file, keys_val.line, "error",
                     f"SSH_SERVER_HOST_KEYS {', '.join(keys)} does not point into {mount[0]}, where Secret "
                     f"{secret!r} is mounted: Gitea would present another host key",
                     f"set {keys_key}: {mount[0]}/{HOST_KEY_FILE}")
            return
        items = [_scalar(i.get("path")) for i in _items(mount[2].get("secret", "items"))]
        if items and not mount[1]:
            unknown = [p for p in used if posixpath.relpath(p, mount[0]) not in items]
            if unknown:
                self.add(keys_val.file, keys_val.line, "error",
                         f"SSH_SERVER_HOST_KEYS names {', '.join(unknown)}, but the Secret volume only projects "
                         f"{', '.join(map(str, items))}", "name a file the volume's items project")
        extra = [k for k, p in zip(keys, paths, strict=True) if p not in used]
        if extra:
            self.add(keys_val.file, keys_val.line, "warning",
                     f"SSH_SERVER_HOST_KEYS also lists {', '.join(extra)}: Gitea would generate and offer those "
                     "keys too, which Flux does not pin", f"list only {', '.join(used)}")

    # ---------------------------------------------------------------- plain manifests

    def is_git_workload(self, doc: _Doc) -> bool:
        if doc.kind not in {"Deployment", "StatefulSet"}:
            return False
        return any(_image_flavour(str(_scalar(c.get("image")) or "")) for c in self._containers(doc))

    @staticmethod
    def _containers(doc: _Doc) -> list[Val]:
        return _items(doc.val.get("spec", "template", "spec", "containers"))

    def check_workload(self, doc: _Doc) -> dict[str, Any]:
        """Check a plain Gitea Deployment/StatefulSet; returns what the Service checks need."""
        ns = self.repo.namespace_of(doc)
        self.report.found.append(f"{doc.kind} {ns or '?'}/{doc.name} in {doc.file}")
        self._check_namespace(doc, ns)
        container = next(c for c in self._containers(doc)
                         if _image_flavour(str(_scalar(c.get("image")) or "")))
        image_val = container.get("image")
        assert image_val is not None
        image = str(image_val.value)
        pvc = self.gs.pvc_name
        if not _image_is_rootless(image):
            self.add(image_val.file, image_val.line, "error",
                     f"image {image!r} is not the rootless image: the root image keeps its data in another /data "
                     "layout and runs OpenSSH instead of the built-in server with the pinned host key",
                     "use the <version>-rootless tag")
        flavour = _image_flavour(image)
        if flavour != self.gs.flavor:
            self.add(image_val.file, image_val.line, "error",
                     f"this deploys {flavour}, but the bootstrap ran {self.gs.flavor}: their databases have "
                     "diverged, so switching is a migration, not a re-deploy", f"deploy {self.gs.flavor}")

        pod = doc.val.get("spec", "template", "spec")
        volumes = _items(pod.get("volumes") if pod else None)
        mounts = _items(container.get("volumeMounts"))
        by_name = {str(_scalar(v.get("name"))): v for v in volumes}
        data_mount = next((m for m in mounts if str(_scalar(m.get("mountPath")) or "").rstrip("/") == DATA_PATH),
                          None)
        templates = {str(_scalar(t.get("metadata", "name"))) for t in _items(doc.val.get("spec",
                                                                                          "volumeClaimTemplates"))}
        if data_mount is None:
            self.add(container.file, container.line, "error",
                     f"nothing is mounted at {DATA_PATH}: the repository on claim {pvc!r} would not be there",
                     f"mount a volume with persistentVolumeClaim.claimName: {pvc} at {DATA_PATH}")
        else:
            vol_name = str(_scalar(data_mount.get("name")))
            vol = by_name.get(vol_name)
            claim_val = vol.get("persistentVolumeClaim", "claimName") if vol else None
            if vol_name in templates and vol is None:
                self.add(data_mount.file, data_mount.line, "error",
                         f"{DATA_PATH} comes from volumeClaimTemplates: the StatefulSet would create a new, empty "
                         f"claim {vol_name}-{doc.name}-0 instead of reusing {pvc!r}",
                         f"use a volume with persistentVolumeClaim.claimName: {pvc}")
            elif claim_val is None:
                at = vol or data_mount
                self.add(at.file, at.line, "error",
                         f"{DATA_PATH} is not the claim {pvc!r}: the repository would not be there",
                         f"use a volume with persistentVolumeClaim.claimName: {pvc}")
            elif _scalar(claim_val) != pvc:
                self.add(claim_val.file, claim_val.line, "error",
                         f"claim {_scalar(claim_val)!r} is not the bootstrap's {pvc!r}, which holds the repository",
                         f"set claimName: {pvc}")
            sub = data_mount.get("subPath")
            if sub is not None and _scalar(sub):
                self.add(sub.file, sub.line, "error",
                         f"subPath {_scalar(sub)!r}: the bootstrap wrote the repository at the root of the claim",
                         "remove the subPath")

        env = {str(_scalar(e.get("name")) or "").upper(): e for e in _items(container.get("env"))}
        start = env.get("GITEA__SERVER__START_SSH_SERVER")
        if start is not None and not _bool(_scalar(start.get("value")), True):
            self.add(start.file, start.line, "error",
                     "START_SSH_SERVER is false: the rootless image has no other SSH server, so Flux could not fetch",
                     "set it to true")
        db = env.get("GITEA__DATABASE__DB_TYPE")
        if db is not None and str(_scalar(db.get("value"))) not in {BOOTSTRAP_DB_TYPE, "None"}:
            self.add(db.file, db.line, "error",
                     f"DB_TYPE {_scalar(db.get('value'))!r}: the bootstrap's data is in {BOOTSTRAP_DB_TYPE}",
                     f"keep DB_TYPE {BOOTSTRAP_DB_TYPE}")
        keys_env = env.get(_HOST_KEYS_ENV)
        keys_val = (keys_env.get("value") or keys_env) if keys_env is not None else None
        self._check_host_key(
            [(_scalar(v.get("name")), v) for v in volumes], mounts, keys_val,
            missing=lambda msg, fix: self.add(container.file, container.line, "error", msg, fix),
            values_style=False,
        )
        listen = _int(_scalar(env["GITEA__SERVER__SSH_LISTEN_PORT"].get("value"))) \
            if "GITEA__SERVER__SSH_LISTEN_PORT" in env else SSH_LISTEN_PORT
        ports = {str(_scalar(p.get("name"))): _int(_scalar(p.get("containerPort")))
                 for p in _items(container.get("ports")) if _scalar(p.get("name"))}
        labels = _scalar(doc.val.get("spec", "template", "metadata", "labels")) or {}
        return {"listen": listen, "ports": ports, "labels": labels, "namespace": ns}

    def _check_namespace(self, doc: _Doc, ns: str | None) -> None:
        if ns is None:
            self.add(doc.file, doc.line, "warning",
                     f"{doc.kind} {doc.name} names no namespace; it must be in {self.gs.namespace!r}",
                     f"set metadata.namespace: {self.gs.namespace}")
        elif ns != self.gs.namespace:
            node = doc.val.get("metadata", "namespace") or doc.val
            self.add(node.file, node.line, "error",
                     f"{doc.kind} {doc.name} is in namespace {ns!r}, but the bootstrap's claim, Secret and "
                     f"Services are in {self.gs.namespace!r}", f"set metadata.namespace: {self.gs.namespace}")

    def check_services(self, services: list[_Doc], workloads: list[dict[str, Any]]) -> None:
        by_name = {s.name: s for s in services}
        anchor = workloads[0] if workloads else None
        listen = anchor["listen"] if anchor else SSH_LISTEN_PORT
        ssh = by_name.get(self.gs.ssh_service)
        if ssh is None:
            # Is the SSH port exposed under another name? Then say which.
            other = next((s for s in services if any(
                _int(_scalar(p.get("targetPort"))) == listen or _scalar(p.get("name")) == "ssh"
                for p in _items(s.val.get("spec", "ports")))), None)
            if other is not None:
                meta = other.val.get("metadata", "name") or other.val
                self.add(meta.file, meta.line, "error",
                         f"the SSH Service is named {other.name!r}, but Flux's GitRepository URL names "
                         f"{self.gs.ssh_service!r}", f"name it {self.gs.ssh_service}")
            elif anchor is not None:
                self.add(anchor["doc"].file, anchor["doc"].line, "error",
                         f"no Service {self.gs.ssh_service!r} in the manifests: Flux's GitRepository URL names it, "
                         "and nothing would keep it once the bootstrap's copy is gone",
                         f"add a Service {self.gs.ssh_service} with port {SSH_PORT} -> {listen}")
        else:
            self._check_service(ssh, SSH_PORT, listen, anchor, "error")
        http = by_name.get(self.gs.http_service)
        if http is not None:
            self._check_service(http, HTTP_PORT, None, anchor, "warning")
        elif anchor is not None:
            self.add(anchor["doc"].file, anchor["doc"].line, "warning",
                     f"no Service {self.gs.http_service!r} in the manifests: seedbed's later runs (push, backup) "
                     "reach Gitea through it", f"add a Service {self.gs.http_service} with port {HTTP_PORT}")

    def _check_service(self, svc: _Doc, port: int, target: int | None, workload: dict[str, Any] | None,
                       severity: Severity) -> None:
        self.report.found.append(f"Service {self.repo.namespace_of(svc) or '?'}/{svc.name} in {svc.file}")
        ns = self.repo.namespace_of(svc)
        if ns is not None and ns != self.gs.namespace:
            node = svc.val.get("metadata", "namespace") or svc.val
            self.add(node.file, node.line, "error",
                     f"Service {svc.name} is in namespace {ns!r}, not {self.gs.namespace!r}: the URL's DNS name "
                     "would not resolve", f"set metadata.namespace: {self.gs.namespace}")
        ports = _items(svc.val.get("spec", "ports"))
        match = next((p for p in ports if _int(_scalar(p.get("port"))) == port), None)
        if match is None:
            at = svc.val.get("spec", "ports") or svc.val
            what = ", ".join(str(_scalar(p.get("port"))) for p in ports) or "none"
            self.add(at.file, at.line, severity,
                     f"Service {svc.name} has no port {port} (it has {what})"
                     + (": Flux's GitRepository URL uses port 22" if port == SSH_PORT else ""),
                     f"expose port {port}" + (f" with targetPort {target}" if target else ""))
            return
        tp_val = match.get("targetPort")
        tp_raw = _scalar(tp_val) if tp_val is not None else port
        tp = _int(tp_raw)
        if tp is None and workload is not None:
            tp = workload["ports"].get(str(tp_raw))
        if target is not None and tp is not None and tp != target:
            at = tp_val or match
            self.add(at.file, at.line, severity,
                     f"Service {svc.name} sends port {port} to {tp_raw}, but Gitea's SSH server listens on {target}",
                     f"set targetPort: {target}")
        if _scalar(svc.val.get("spec", "clusterIP")) == "None" and tp is not None and tp != port:
            at = svc.val.get("spec", "clusterIP") or svc.val
            self.add(at.file, at.line, severity,
                     f"Service {svc.name} is headless (clusterIP: None): no port mapping, so clients would reach "
                     f"the pod's port {port} while Gitea listens on {tp}", "remove clusterIP: None")
        selector = _scalar(svc.val.get("spec", "selector")) or {}
        if workload is not None and selector and any(workload["labels"].get(k) != v for k, v in selector.items()):
            at = svc.val.get("spec", "selector") or svc.val
            self.add(at.file, at.line, severity,
                     f"Service {svc.name}'s selector {selector} does not match the Gitea pods' labels",
                     "make the selector match the pod template's labels")

    def check_claim(self, doc: _Doc) -> None:
        self.report.found.append(f"PersistentVolumeClaim {self.repo.namespace_of(doc) or '?'}/{doc.name} in {doc.file}")
        annotations = _scalar(doc.val.get("metadata", "annotations")) or {}
        if annotations.get("kustomize.toolkit.fluxcd.io/prune") != "disabled":
            self.add(doc.file, doc.line, "warning",
                     f"Flux would own the claim {doc.name!r}: removing this manifest (with prune enabled) would "
                     "delete the claim and the repository on it",
                     "annotate it with kustomize.toolkit.fluxcd.io/prune: disabled, or leave the claim out of "
                     "the repository")
        sc = doc.val.get("spec", "storageClassName")
        if sc is not None and _scalar(sc) != self.gs.storage_class:
            self.add(sc.file, sc.line, "error",
                     f"storageClassName {_scalar(sc)!r} differs from the existing claim's "
                     f"{self.gs.storage_class!r}; the field is immutable, so Flux's apply would fail",
                     f"set storageClassName: {self.gs.storage_class}")


def _int(value: Any) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str) and value.strip().isdigit():
        return int(value.strip())
    return None


def _image_flavour(image: str) -> str | None:
    """'gitea' or 'forgejo' for a Gitea/Forgejo image reference, else None."""
    name = images.parse(image).name
    return name if name in CHARTS else None


def _image_is_rootless(image: str) -> bool:
    tag = images.parse(image).tag or "latest"
    return tag.endswith("-rootless") or tag == "rootless"


def _walk(v: Val) -> list[Val]:
    out = [v]
    i = 0
    while i < len(out):
        node = out[i].value
        out += list(node.values()) if isinstance(node, dict) else node if isinstance(node, list) else []
        i += 1
    return out


def _find_mappings(values: Val) -> list[Val]:
    return [v for v in _walk(values) if isinstance(v.value, dict)]


def _find_keys(values: Val, keys: set[str]) -> list[Val]:
    """Every value written under one of ``keys``, anywhere in the values (generic charts)."""
    return [child for m in _find_mappings(values) for k, child in m.value.items()
            if k in keys and not isinstance(child.value, dict | list)]


def _find_image(values: Val) -> tuple[Val, str] | None:
    """Where the values name a Gitea/Forgejo image, and the reference: ``image: {repository, tag}``
    (app-template and most charts) or ``image: repo:tag``."""
    for m in _find_mappings(values):
        image = m.value.get("image")
        if image is None:
            continue
        if isinstance(image.value, str) and _image_flavour(image.value):
            return image, image.value
        repo = image.get("repository")
        if repo is not None and isinstance(repo.value, str) and _image_flavour(repo.value):
            tag = _scalar(image.get("tag"))
            return repo, f"{repo.value}:{tag}" if tag else str(repo.value)
    return None


# --------------------------------------------------------------------------- the live hand-over


class HostKeys(msgspec.Struct, frozen=True):
    """SHA256 fingerprints (``SHA256:...``) of the Git server's SSH host key, from three places."""

    secret: str | None  # the public half of the host-key Secret
    pinned: str | None  # the key Flux's known_hosts pins (in Flux's Git credentials Secret)
    served: str | None = None  # what the running server presents (an SSH handshake); None if not probed


_ROLLBACK = ("roll the Git server back to the last commit that worked (`git revert` the change and push it "
             "through `seedbed`'s port-forward, or suspend its HelmRelease and `helm rollback`), then see "
             "`seedbed check-handoff`")


def way_out(cfg: Config, release: str, failed_commit: str | None) -> str:
    """How to get out of a Git server upgrade that broke it, when fixes can only arrive through it.

    helm-controller retries a failed upgrade of the same values and rolls back after each failure
    (``upgrade.remediation``): suspending the HelmRelease stops the retries, so the old version keeps
    serving while the fix is pushed through a port-forward, past Flux.
    """
    from .render.gitserver import admin_password_command, port_forward_command

    gs, r = cfg.git_server, cfg.repo
    ns = gs.namespace
    commit = failed_commit[:12] if failed_commit else "<the commit that changed the values>"
    return (f"(1) stop the retries: `flux -n {ns} suspend helmrelease {release}` (or `kubectl -n {ns} patch "
            f"helmrelease {release} --type merge -p '{{\"spec\":{{\"suspend\":true}}}}'`); "
            f"(2) if the old version does not serve again, roll it back: `helm -n {ns} rollback {release}`; "
            f"(3) push the fix past Flux through a port-forward: `{port_forward_command(cfg)}`, then in your work "
            f"tree `git revert {commit}` and `git push http://localhost:{HTTP_PORT}/{r.owner}/{r.name}.git "
            f"{r.branch}` as {gs.admin_user} (password: `{admin_password_command(cfg)}`), or `seedbed bootstrap`, "
            f"which pushes the work tree the same way; (4) `flux -n {ns} resume helmrelease {release}`")


def _condition(obj: dict[str, Any] | None, kind: str) -> dict[str, Any] | None:
    conds = ((obj or {}).get("status") or {}).get("conditions") or []
    return next((c for c in conds if isinstance(c, dict) and c.get("type") == kind), None)


def check_live(cfg: Config, *, service: dict[str, Any] | None, workload: dict[str, Any] | None,
               host_keys: HostKeys, git_repository: dict[str, Any] | None,
               branch_head: str | None = None, helm_release: dict[str, Any] | None = None) -> list[Finding]:
    """The hand-over as it runs: is the Git server Flux fetches from still the bootstrap's?

    Pure: the caller reads the objects (the Service ``gitServer.sshService``, the Deployment or
    StatefulSet whose pods it selects, the GitRepository Flux syncs from) and the fingerprints; this
    says what is wrong, one finding per cause, each with the way back. Findings name the object
    (``Service gitea/gitea-ssh``) with line 0. ``helm_release`` is the HelmRelease that deploys the
    server, when there is one: not Ready means an upgrade (or install) failed, and helm-controller's
    remediation may have rolled it back (fluxcd/helm-controller ``internal/reconcile/upgrade.go``
    marks ``Ready=False``/``UpgradeFailed``, ``rollback_remediation.go`` ``Remediated=True``/
    ``RollbackSucceeded``).
    """
    gs = cfg.git_server
    out: list[Finding] = []

    def add(where: str, message: str, fix: str, severity: Severity = "error") -> None:
        out.append(Finding(where, 0, severity, message, fix))

    svc_ref = f"Service {gs.namespace}/{gs.ssh_service}"
    if service is None:
        add(svc_ref, "the SSH Service Flux's GitRepository URL names does not exist", _ROLLBACK)
    if workload is None:
        add(svc_ref, "no Deployment or StatefulSet serves the SSH Service: Flux cannot fetch", _ROLLBACK)
    pod = ((workload or {}).get("spec") or {}).get("template") or {}
    labels = (pod.get("metadata") or {}).get("labels") or {}
    containers = (pod.get("spec") or {}).get("containers") or []
    if service is not None:
        spec = service.get("spec") or {}
        selector = spec.get("selector") or {}
        if workload is not None and (not selector or any(labels.get(k) != v for k, v in selector.items())):
            add(svc_ref, f"the Service's selector {selector} does not select the Git server's pods {labels}",
                _ROLLBACK)
        port = next((p for p in spec.get("ports") or [] if p.get("port") == SSH_PORT), None)
        if port is None:
            add(svc_ref, f"the Service has no port {SSH_PORT}: Flux's GitRepository URL uses it", _ROLLBACK)
        else:
            target = port.get("targetPort", SSH_PORT)
            if isinstance(target, str):  # a named port: the container's port of that name
                named = [p.get("containerPort") for c in containers for p in c.get("ports") or []
                         if p.get("name") == target]
                target = named[0] if named else target
            if target != SSH_LISTEN_PORT:
                add(svc_ref, f"the Service sends port {SSH_PORT} to {target}, but the rootless server listens on "
                    f"{SSH_LISTEN_PORT}", _ROLLBACK)
            if spec.get("clusterIP") == "None":
                add(svc_ref, "the Service is headless: no port mapping, Flux reaches the pod's port 22", _ROLLBACK)
    if workload is not None:
        meta = workload.get("metadata") or {}
        ref = f"{workload.get('kind', 'Deployment')} {meta.get('namespace', gs.namespace)}/{meta.get('name', '?')}"
        volumes = (pod.get("spec") or {}).get("volumes") or []
        claims = [(v.get("persistentVolumeClaim") or {}).get("claimName") for v in volumes]
        secrets = [(v.get("secret") or {}).get("secretName") for v in volumes]
        if gs.pvc_name not in claims:
            add(ref, f"the Git server does not mount the claim {gs.pvc_name!r} that holds the repository "
                f"(it mounts {[c for c in claims if c] or 'no claim'})", _ROLLBACK)
        if gs.host_key_secret not in secrets:
            add(ref, f"the Git server does not mount the host key Secret {gs.host_key_secret!r}: it presents "
                "another key, and Flux's known_hosts stops matching", _ROLLBACK)
        strategy = ((workload.get("spec") or {}).get("strategy") or {}).get("type")
        if workload.get("kind", "Deployment") == "Deployment" and strategy not in {None, "Recreate"}:
            add(ref, f"update strategy {strategy}: during an upgrade two pods would share the claim (or the new "
                "one waits forever for the volume)", "set the strategy to Recreate", "warning")
    key_ref = f"Secret {gs.namespace}/{gs.host_key_secret}"
    if host_keys.secret and host_keys.pinned and host_keys.secret != host_keys.pinned:
        add(key_ref, f"the host key Secret holds {host_keys.secret}, but Flux's known_hosts pins {host_keys.pinned}",
            "restore the host key Secret from the backup (`seedbed restore`), or re-pin with `seedbed bootstrap`")
    if host_keys.served and host_keys.pinned and host_keys.served != host_keys.pinned:
        add(svc_ref, f"the Git server presents host key {host_keys.served}, but Flux's known_hosts pins "
            f"{host_keys.pinned}", _ROLLBACK)
    if helm_release is not None:
        _check_release(cfg, helm_release, git_repository, branch_head, add)
    source_ref = f"GitRepository {cfg.flux.secret}"
    if git_repository is None:
        add(source_ref, "Flux's GitRepository does not exist", "run `seedbed bootstrap` again")
    else:
        status = git_repository.get("status") or {}
        ready = next((c for c in status.get("conditions") or [] if c.get("type") == "Ready"), None)
        if ready is None or ready.get("status") != "True":
            why = (ready or {}).get("message") or "no Ready condition yet"
            add(source_ref, f"Flux cannot fetch the repository: {why}", _ROLLBACK)
        revision = str((status.get("artifact") or {}).get("revision") or "")
        if branch_head and ready is not None and ready.get("status") == "True" and not revision.endswith(branch_head):
            add(source_ref, f"Flux has revision {revision or 'none'}, not the branch head {branch_head}",
                "wait one interval, or `flux reconcile source git flux-system`", "warning")
    return out


def _check_release(cfg: Config, hr: dict[str, Any], git_repository: dict[str, Any] | None, branch_head: str | None,
                   add: Callable[..., None]) -> None:
    """The HelmRelease of the Git server: a failed upgrade, a rollback, a suspension."""
    meta = hr.get("metadata") or {}
    name = str(meta.get("name") or "?")
    ref = f"HelmRelease {meta.get('namespace', cfg.git_server.namespace)}/{name}"
    spec = hr.get("spec") or {}
    release = str(spec.get("releaseName") or name)
    ready, remediated = _condition(hr, "Ready"), _condition(hr, "Remediated")
    fix = way_out(cfg, name, branch_head)
    if spec.get("suspend"):
        add(ref, "suspended: Flux does not upgrade the Git server until it is resumed",
            f"once the fix is on the branch: `flux -n {meta.get('namespace')} resume helmrelease {name}`", "warning")
        return
    if ready is None or ready.get("status") == "True":
        return
    # After a rollback, Ready carries the rollback's message; the failure is in Released.
    released = _condition(hr, "Released")
    failed = released if released is not None and released.get("status") == "False" else ready
    why = str(failed.get("message") or failed.get("reason") or "no reason given")
    fetch_ok = (_condition(git_repository, "Ready") or {}).get("status") == "True"
    if remediated is not None and remediated.get("status") == "True":
        message = (f"the last upgrade of release {release} failed ({why}), and helm-controller rolled it back "
                   f"({remediated.get('message') or remediated.get('reason')}): the previous version serves, but the "
                   f"values that broke it are still on {cfg.repo.branch}"
                   + (f" (at {branch_head[:12]})" if branch_head else "")
                   + " and Flux retries them")
    elif remediated is not None:
        message = (f"the last upgrade of release {release} failed ({why}) and its rollback failed too "
                   f"({remediated.get('message') or remediated.get('reason')}): the Git server may not serve, and "
                   "no fix can reach Flux through it")
    else:
        message = f"release {release} is not Ready: {why}"
    if not fetch_ok:
        message += "; Flux cannot fetch from the server it is upgrading, so the fix must be pushed past Flux"
    add(ref, message, fix)


# --------------------------------------------------------------------------- entry point


def check_handoff(tree: Path, cfg: Config, *, kustomize: fluxrepo.Kustomize | None = None,
                  cache: Path | None = None) -> HandoffReport:
    """Check the Git server that Flux will apply from ``tree`` against the bootstrap contract in ``cfg``.

    The repository is read as kustomize-controller applies it, starting at ``cfg.flux_path``
    (:func:`seedbed.fluxrepo.read`, with its build ``cache``); files outside every Flux path are not
    looked at.
    """
    return check_repo(fluxrepo.read(Path(tree), cfg.flux_path, kustomize=kustomize, cache=cache), cfg)


def check_repo(flux: fluxrepo.Repo, cfg: Config) -> HandoffReport:
    """The checks, on a repository already read."""
    report = HandoffReport()
    report.read = (f"{len(flux.kustomizations)} Flux Kustomization(s) from {cfg.flux_path} "
                   f"({len(flux.objects)} objects)")
    report.unreadable = list(flux.encrypted_files)
    report.self_contained = flux.self_contained
    repo = _Repo(flux)
    checker = _Checker(repo, cfg, report)
    gs = cfg.git_server
    for p in flux.problems:
        checker.add(p.file, p.line, "error" if p.severity == "error" else "warning", p.message, p.fix)
    if not flux.kustomizations:  # the Flux path itself is missing: that is the one thing to say
        return report

    releases = [(doc, chart) for doc in repo.docs if (chart := checker.helm_chart(doc))]
    # Once a release deploys into the Git server's namespace (seedbed's git-server.yaml, or the user's
    # own), a Gitea elsewhere is a separate server: left alone, as the bootstrap leaves it
    # (choose_git_server).
    separate = [r for r in releases if _target_namespace(r[0]) != gs.namespace] \
        if any(_target_namespace(doc) == gs.namespace for doc, _ in releases) else []
    releases = [r for r in releases if r not in separate]
    for doc, chart in releases:
        checker.check_helmrelease(doc, chart)
    for doc, chart in separate:
        report.found.append(f"HelmRelease {doc.namespace}/{doc.name} (chart {chart}) in {doc.file}: a separate "
                            f"{chart} (not in {gs.namespace!r}), not checked")
    others = [doc for doc in repo.docs if doc.kind == "HelmRelease" and doc.api.startswith("helm.toolkit.fluxcd.io/")
              and checker.helm_chart(doc) is None and checker.check_other_chart(doc)]

    workloads = []
    for doc in repo.docs:
        if checker.is_git_workload(doc):
            info = checker.check_workload(doc)
            info["doc"] = doc
            workloads.append(info)
    services = [d for d in repo.docs if d.kind == "Service" and (
        d.name in {gs.ssh_service, gs.http_service} or repo.namespace_of(d) == gs.namespace)]
    if workloads:
        checker.check_services(services, workloads)
    for doc in repo.docs:
        if doc.kind == "PersistentVolumeClaim" and doc.name == gs.pvc_name and (
                repo.namespace_of(doc) in {None, gs.namespace}):
            checker.check_claim(doc)

    # Report in reading order, file by file; the checks themselves run object by object.
    report.findings.sort(key=lambda f: (f.file, f.line))
    unbuilt = [k for k in flux.kustomizations if k.path not in flux.builds]
    if not releases and not workloads and not others and unbuilt:
        report.findings.append(Finding(
            ".", 0, "unverified",
            f"no Git server found, but {len(unbuilt)} Flux Kustomization(s) could not be read "
            f"({', '.join(k.ref for k in unbuilt[:5])}{', ...' if len(unbuilt) > 5 else ''}): the Git server "
            "may be in one of them", "make those paths build (see the warnings above), then check again"))
    elif not releases and not workloads and not others:
        report.findings.append(Finding(
            ".", 0, "warning",
            f"no Git server in what Flux applies from {cfg.flux_path} (no Gitea/Forgejo HelmRelease, Deployment or "
            f"StatefulSet): once Flux takes over, nothing manages {gs.flavor}; the bootstrap's minimal server keeps "
            "running unmanaged",
            "add a HelmRelease for the chart with the recommended values of the README's hand-over "
            "section"))
    return report


# --------------------------------------------------------------------------- which release is the Git server


class ServerChoice(msgspec.Struct):
    """Which HelmRelease will be the Git server Flux syncs from: seedbed's own ``git-server.yaml``, or
    the user's release already in the repository (then seedbed applies it as Flux will, and commits
    no second one). ``objects`` are the user's release and what it needs (its chart source, its
    values objects) as kustomize-controller applies them; ``notes`` say which one and why."""

    release: fluxrepo.Obj | None = None
    objects: list[dict[str, Any]] = msgspec.field(default_factory=list)
    notes: list[str] = msgspec.field(default_factory=list)

    @property
    def own(self) -> bool:
        return self.release is None


def _target_namespace(doc: _Doc) -> str | None:
    """Where the release's objects go: spec.targetNamespace, else the HelmRelease's namespace."""
    return _scalar(doc.val.get("spec", "targetNamespace")) or doc.namespace


def choose_git_server(flux: fluxrepo.Repo, cfg: Config, *, own_file: str) -> ServerChoice:
    """The rule (docs/handoff.md, "Your own Git server release"): a HelmRelease of the Gitea or Forgejo
    chart in what Flux applies from ``cfg.flux_path`` that **deploys into** ``gitServer.namespace``
    (``spec.targetNamespace``, else its own namespace) is meant to be the Git server: the claim, the
    admin and host-key Secrets live there, and two releases there would fight over the same Services
    and claim. seedbed then uses it instead of committing ``own_file``, provided it can serve: the
    HelmRelease object is ``<gitServer.namespace>/gitea`` with release name ``gitea`` (where seedbed,
    ``status`` and ``doctor`` look, and the Deployment selector's instance label), the flavour's
    chart, no ``dependsOn``, its chart source and values objects in the repository in plain text,
    and no check-handoff error in its values. Otherwise the plan stops with every reason and the fix.
    Releases that deploy elsewhere are a separate Gitea: left alone, and seedbed's own is used.
    A release in ``own_file`` (seedbed's own, pulled into the work tree) is seedbed's.
    """
    from .render import helmrelease

    gs = cfg.git_server
    report = HandoffReport()
    repo = _Repo(flux)
    checker = _Checker(repo, cfg, report)
    charts = [(doc, chart) for doc in repo.docs if doc.file != own_file and (chart := checker.helm_chart(doc))]
    serving = [(doc, chart) for doc, chart in charts if _target_namespace(doc) == gs.namespace]
    choice = ServerChoice()
    for doc, chart in charts:
        if (doc, chart) not in serving:
            choice.notes.append(
                f"HelmRelease {doc.namespace}/{doc.name} (chart {chart}, {doc.file}) deploys into "
                f"{_target_namespace(doc)!r}, not the Git server's namespace {gs.namespace!r}: a separate {chart}, "
                "left alone")
    if not serving:
        return choice
    where = ", ".join(f"HelmRelease {d.namespace}/{d.name} ({d.file})" for d, _ in serving)
    if len(serving) > 1:
        raise ConfigError(
            f"the repository holds {len(serving)} Git server releases that deploy into {gs.namespace!r}: {where}; "
            "only one can be the Git server Flux syncs from",
            fix=f"keep one of them in {gs.namespace!r} and deploy the others into another namespace")
    doc, chart = serving[0]
    problems: list[str] = []
    spec = doc.val.get("spec")
    release = str(_scalar(doc.val.get("spec", "releaseName")) or "-".join(
        p for p in (_scalar(doc.val.get("spec", "targetNamespace")), doc.name) if p))
    if (doc.namespace, doc.name) != (gs.namespace, helmrelease.RELEASE_NAME):
        problems.append(f"{doc.file}:{doc.line}: the HelmRelease is {doc.namespace}/{doc.name}; seedbed, `seedbed "
                        f"status` and `doctor` look for {gs.namespace}/{helmrelease.RELEASE_NAME}")
    if release != helmrelease.RELEASE_NAME:
        problems.append(f"{doc.file}:{doc.line}: release name {release!r}: the Deployment selector's instance label "
                        f"is the release name; seedbed's contract is {helmrelease.RELEASE_NAME!r}")
    if chart != helmrelease.chart(cfg).name:
        problems.append(f"{doc.file}:{doc.line}: chart {chart!r}, but gitServer.flavor is {gs.flavor!r} "
                        f"(chart {helmrelease.chart(cfg).name!r})")
    if spec is not None and _items(spec.get("dependsOn")):
        problems.append(f"{doc.file}:{spec.get('dependsOn').line}: dependsOn: the Git server is installed before "
                        "Flux syncs anything, so what it depends on would never be Ready")
    objects: list[dict[str, Any]] = []
    namespace = doc.namespace
    ref = doc.val.get("spec", "chart", "spec", "sourceRef") or doc.val.get("spec", "chartRef")
    if ref is not None:
        kind, name = str(_scalar(ref.get("kind")) or ""), str(_scalar(ref.get("name")) or "")
        src_ns = _scalar(ref.get("namespace")) or namespace
        source = repo.source(kind, name, src_ns)
        if source is None:
            problems.append(f"{doc.file}:{ref.line}: its chart source {kind} {src_ns}/{name} is not in what Flux "
                            "applies from the repository, so it cannot be installed before the sync")
        else:
            objects.append(source.data)
    for item in _items(doc.val.get("spec", "valuesFrom")):
        kind, name = str(_scalar(item.get("kind")) or ""), str(_scalar(item.get("name")) or "")
        source = repo.source(kind, name, namespace)
        if source is None or source.encrypted:
            if source is None and _bool(_scalar(item.get("optional")), False):
                continue
            why = "SOPS-encrypted" if source is not None else "not in what Flux applies from the repository"
            problems.append(f"{doc.file}:{item.line}: valuesFrom {kind} {name} is {why}; seedbed installs the "
                            "Git server before Flux has decrypted or created anything")
        elif source.data not in objects:
            objects.append(source.data)
    checker.check_helmrelease(doc, chart)
    problems += [f"{f.file}:{f.line}: {f.message}" for f in report.errors]
    values, _ = checker.values_of(doc)
    merged: dict[str, Any] = {}
    for path, default in _CHART_DEFAULTS[chart].items():
        merged = _plain_set(merged, path, default)
    merged = _plain_merge(merged, values.plain() if isinstance(values.value, dict) else {})
    problems += [f"{doc.file}:{doc.line}: values: {p}" for p in
                 helmrelease.check_values(cfg, doc.obj.data, merged)
                 if not p.startswith(("release name", "chart "))]
    if problems:
        unique = list(dict.fromkeys(problems))
        raise ConfigError(
            f"HelmRelease {doc.namespace}/{doc.name} ({doc.file}) deploys into the Git server's namespace "
            f"{gs.namespace!r}, so seedbed would use it as the Git server Flux syncs from, but it cannot serve "
            "as one:\n  " + "\n  ".join(unique),
            fix=f"give it the hand-over values of seedbed's own release (docs/handoff.md, \"Your own Git server "
                f"release\", and the README's hand-over section list them), or deploy it into another namespace to "
                f"keep it as a separate {chart} beside seedbed's")
    choice.release = doc.obj
    choice.objects = [*objects, doc.obj.data]
    choice.notes.insert(0, f"uses your HelmRelease {doc.namespace}/{doc.name} ({doc.file}) as the Git server: it "
                           f"deploys into {gs.namespace!r}, the Git server's namespace; seedbed applies it as Flux "
                           f"will and commits no {own_file.rsplit('/', 1)[-1]} beside it")
    return choice


def _plain_set(root: dict[str, Any], path: tuple[str, ...], value: Any) -> dict[str, Any]:
    out = dict(root)
    if len(path) == 1:
        out[path[0]] = value
        return out
    child = out.get(path[0])
    out[path[0]] = _plain_set(child if isinstance(child, dict) else {}, path[1:], value)
    return out


def _plain_merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for k, v in over.items():
        out[k] = _plain_merge(out[k], v) if isinstance(out.get(k), dict) and isinstance(v, dict) else v
    return out
