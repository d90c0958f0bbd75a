"""`seedbed status` and `seedbed doctor`: read-only health of what seedbed set up."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import msgspec

from ..errors import ClusterError
from ..kube.wait import condition_is, describe_conditions, describe_workload, rollout_complete
from ..render.flux import KUSTOMIZE_API

if TYPE_CHECKING:
    from ..config import Config
    from .clients import Clients

BACKUP_STALE_DAYS = 7


class Check(msgspec.Struct):
    component: str
    state: str  # ok | warn | fail
    summary: str
    problem: str = ""
    fix: str = ""
    details: dict[str, Any] = msgspec.field(default_factory=dict)
    hints: list[str] = msgspec.field(default_factory=list)  # shown under the line: how to get at the component

    def as_dict(self) -> dict[str, Any]:
        return {"component": self.component, "state": self.state, "summary": self.summary,
                "problem": self.problem or None, "fix": self.fix or None, **self.details}


class StatusReport(msgspec.Struct):
    cluster: str
    checks: list[Check]

    @property
    def ok(self) -> bool:
        return all(c.state != "fail" for c in self.checks)

    def as_dict(self) -> dict[str, Any]:
        return {"cluster": self.cluster, "ok": self.ok, "components": [c.as_dict() for c in self.checks]}

    def as_text(self) -> str:
        mark = {"ok": "✔", "warn": "!", "fail": "✗"}
        width = max(len(c.component) for c in self.checks)
        lines = []
        for c in self.checks:
            lines.append(f"{mark[c.state]} {c.component:<{width}}  {c.summary}")
            lines += [f"  {'':<{width}}  {hint}" for hint in c.hints]
        return "\n".join(lines)

    def as_doctor_text(self) -> str:
        problems = [c for c in self.checks if c.state != "ok"]
        if not problems:
            return f"✔ no problems found on cluster {self.cluster}"
        out = []
        for c in problems:
            out.append(f"{'✗' if c.state == 'fail' else '!'} {c.component}: {c.problem or c.summary}")
            if c.fix:
                out.append(f"    fix: {c.fix}")
        return "\n".join(out)


async def collect_status(cfg: Config, clients: Clients, *, now: datetime | None = None) -> StatusReport:
    kube = clients.kube
    try:
        checks = [await _api(kube)]
        if checks[0].state == "ok":
            checks += [await _longhorn(kube, cfg), await _git_server(kube, cfg), await _flux(clients),
                       await _handover(clients, cfg), await _backup(kube, now or datetime.now(UTC))]
    except ClusterError as e:  # a config error is not a status: it propagates to a clean exit 2
        checks = [Check("cluster", "fail", e.message, e.message, e.fix or "")]
    return StatusReport(cfg.cluster.name, checks)


async def _api(kube: Any) -> Check:
    resp = await kube.request("GET", "/version")
    version = resp.json().get("gitVersion", "?")
    return Check("cluster", "ok", f"Kubernetes {version} at {kube.target.server}", details={"version": version})


async def _longhorn(kube: Any, cfg: Config) -> Check:
    ds = await kube.get("apps/v1", "DaemonSet", "longhorn-manager", namespace="longhorn-system")
    if ds is None:
        return Check("longhorn", "fail", "not installed", "Longhorn is not installed",
                     "run `seedbed bootstrap`")
    version = ((ds.get("metadata") or {}).get("labels") or {}).get("app.kubernetes.io/version", "?")
    if not rollout_complete(ds):
        return Check("longhorn", "fail", f"{version}: longhorn-manager not ready ({describe_workload(ds)})",
                     f"longhorn-manager is not ready: {describe_workload(ds)}",
                     "check the nodes provide open-iscsi and the data path: "
                     "kubectl -n longhorn-system get pods", {"version": version})
    sc = await kube.get("storage.k8s.io/v1", "StorageClass", "longhorn")
    if sc is None:
        return Check("longhorn", "fail", f"{version}: StorageClass longhorn missing",
                     "the longhorn StorageClass does not exist", "re-run `seedbed bootstrap`")
    return Check("longhorn", "ok", f"{version}, {ds['status'].get('numberReady', 0)} node(s) ready",
                 details={"version": version})


async def serving_workload(kube: Any, namespace: str, service: dict[str, Any] | None) -> dict[str, Any] | None:
    """The Deployment or StatefulSet whose pods the Service selects (with the chart: the release's
    Deployment, whatever it is named); None when the Service is missing or selects none."""
    selector = ((service or {}).get("spec") or {}).get("selector") or {}
    if not selector:
        return None
    for api, kind in (("apps/v1", "Deployment"), ("apps/v1", "StatefulSet")):
        for obj in await kube.list(api, kind, namespace):
            labels = ((((obj.get("spec") or {}).get("template") or {}).get("metadata") or {}).get("labels") or {})
            if all(labels.get(k) == v for k, v in selector.items()):
                return {"kind": kind, **obj}
    return None


async def _git_server(kube: Any, cfg: Config) -> Check:
    gs = cfg.git_server
    service = await kube.get("v1", "Service", gs.ssh_service, namespace=gs.namespace)
    dep = await serving_workload(kube, gs.namespace, service)
    pvc = await kube.get("v1", "PersistentVolumeClaim", gs.pvc_name, namespace=gs.namespace)
    if dep is None:
        what = "no Service" if service is None else "no Deployment or StatefulSet behind Service"
        return Check("git-server", "fail", "not deployed", f"{what} {gs.namespace}/{gs.ssh_service}",
                     "run `seedbed bootstrap`")
    ref = f"{dep['kind'].lower()}/{dep['metadata']['name']}"
    if not rollout_complete(dep):
        return Check("git-server", "fail", f"not ready ({describe_workload(dep)})",
                     f"the Git server is not ready: {describe_workload(dep)}",
                     f"kubectl -n {gs.namespace} describe {ref}; kubectl -n {gs.namespace} logs {ref}")
    phase = ((pvc or {}).get("status") or {}).get("phase", "missing")
    if phase != "Bound":
        return Check("git-server", "fail", f"data claim {gs.pvc_name} is {phase}",
                     f"the data claim {gs.namespace}/{gs.pvc_name} is {phase}",
                     "check Longhorn (seedbed status) and the StorageClass")
    from ..render.gitserver import HTTP_PORT, admin_password_command, port_forward_command

    r = cfg.repo
    login = {"portForward": port_forward_command(cfg), "url": f"http://localhost:{HTTP_PORT}/{r.owner}/{r.name}",
             "user": gs.admin_user, "passwordCommand": admin_password_command(cfg)}
    return Check("git-server", "ok", f"ready; data on {gs.namespace}/{gs.pvc_name}; reach it with "
                 f"{port_forward_command(cfg)}", details={"login": login},
                 hints=[f"log in at {login['url']} as {gs.admin_user}; password: {login['passwordCommand']}"])


async def _handover(clients: Clients, cfg: Config) -> Check:
    """The hand-over as it runs (handoff.check_live): the server Flux fetches from is the bootstrap's."""
    from ..gitserver import fetched_revision, key_fingerprints, secret_value
    from ..handoff import HostKeys, check_live
    from ..render import helmrelease
    from ..sshkeys import KeyPair, fingerprint

    kube, gs = clients.kube, cfg.git_server
    service = await kube.get("v1", "Service", gs.ssh_service, namespace=gs.namespace)
    workload = await serving_workload(kube, gs.namespace, service)
    release = await kube.get(helmrelease.HELM_API, "HelmRelease", helmrelease.RELEASE_NAME, namespace=gs.namespace)
    _, host = await clients.gitserver.stored_secrets()
    flux_ns, flux_name = cfg.flux.secret.split("/")
    flux_secret = await kube.get("v1", "Secret", flux_name, namespace=flux_ns)
    pinned = key_fingerprints(secret_value(flux_secret, "known_hosts", what=f"Secret {cfg.flux.secret}") or "")
    secret_fp = fingerprint(host.public_openssh) if isinstance(host, KeyPair) else None
    served = await clients.gitserver.served_host_keys()
    pinned_fp = next((p for p in pinned if p == secret_fp), pinned[0] if pinned else None)
    served_fp = None if served is None else (pinned_fp if pinned_fp in served else served[0])
    repo, _ = await clients.gitserver.sync_state()
    head = (await clients.gitserver.holdings()).head
    findings = check_live(cfg, service=service, workload=workload,
                          host_keys=HostKeys(secret=secret_fp, pinned=pinned_fp, served=served_fp),
                          git_repository=repo, branch_head=head, helm_release=release)
    details = {"hostKey": served_fp, "pinned": pinned_fp, "revision": fetched_revision(repo), "branchHead": head,
               "findings": [{"object": f.file, "severity": f.severity, "message": f.message, "fix": f.fix}
                            for f in findings]}
    errors = [f for f in findings if f.severity == "error"]
    shown = errors or findings
    if shown:
        problem = "; ".join(f"{f.file}: {f.message}" for f in shown)
        return Check("hand-over", "fail" if errors else "warn", shown[0].message, problem, shown[0].fix, details)
    probed = f"serves the pinned host key {served_fp}" if served_fp else \
        "host key not probed (ssh-keyscan missing or no answer)"
    return Check("hand-over", "ok" if served_fp else "warn",
                 f"Flux fetches {fetched_revision(repo) or '?'} from the bootstrap's server; {probed}",
                 "" if served_fp else "the host key the server presents could not be read",
                 "" if served_fp else "install openssh-client (ssh-keyscan) and check again", details)


async def _flux(clients: Clients) -> Check:
    from ..gitserver import fetched_revision

    repo, ks = await clients.gitserver.sync_state()
    if repo is None or ks is None:
        return Check("flux", "fail", "not installed", "Flux's flux-system sync objects do not exist",
                     "run `seedbed bootstrap`")
    revision = fetched_revision(repo)
    applied = (ks.get("status") or {}).get("lastAppliedRevision", "")
    if not condition_is(repo, "Ready"):
        return Check("flux", "fail", f"GitRepository not ready: {describe_conditions(repo)}",
                     f"Flux cannot fetch the repository: {describe_conditions(repo)}",
                     "check Secret flux-system/flux-system (known_hosts, identity) and the Git server; "
                     "`seedbed bootstrap --rotate-keys` replaces the deploy key", {"revision": revision})
    if not condition_is(ks, "Ready"):
        return Check("flux", "fail", f"Kustomization not ready: {describe_conditions(ks)}",
                     f"Flux cannot apply the repository: {describe_conditions(ks)}",
                     _kustomization_fix(ks), {"revision": revision})
    # The repository's own Kustomizations (apps, infrastructure...): one that fails is as much a
    # failed sync to the user as the root one, above all one that cannot decrypt its Secrets.
    failed = [k for k in await clients.kube.list(KUSTOMIZE_API, "Kustomization", namespace=None)
              if (k["metadata"].get("namespace"), k["metadata"].get("name")) != (ks["metadata"].get("namespace"),
                                                                                ks["metadata"].get("name"))
              and condition_is(k, "Ready", "False")]
    if failed:
        first = failed[0]
        names = ", ".join(f"{k['metadata'].get('namespace')}/{k['metadata']['name']}" for k in failed)
        return Check("flux", "fail", f"synced {applied or revision}; Kustomization {names} not ready",
                     "; ".join(f"Kustomization {k['metadata'].get('namespace')}/{k['metadata']['name']} not ready: "
                               f"{describe_conditions(k)}" for k in failed),
                     _kustomization_fix(first), {"revision": revision, "lastAppliedRevision": applied,
                                                 "failedKustomizations": names.split(", ")})
    return Check("flux", "ok", f"synced {applied or revision}", details={"revision": revision,
                                                                         "lastAppliedRevision": applied})


def _kustomization_fix(ks: dict[str, Any]) -> str:
    """What to do about a Kustomization that is not Ready. A decryption failure (kustomize-controller
    v1.9.4: reason BuildFailed, the Secret not found or ``decryption failed for ...``) needs the key."""
    dec = (ks.get("spec") or {}).get("decryption") or {}
    secret = (dec.get("secretRef") or {}).get("name") if isinstance(dec, dict) else None
    message = " ".join(str(c.get("message", "")) for c in (ks.get("status") or {}).get("conditions") or [])
    if secret and (f'secrets "{secret}" not found' in message or "decryption failed" in message
                   or "failed to import" in message):
        where = f"{ks['metadata'].get('namespace')}/{secret}"
        return (f"Flux cannot decrypt with Secret {where}: give the SOPS key the files are encrypted to in "
                "flux.sops (ageKeyFiles or gpgKeyFiles, named as the Kustomization asks: ageSecret/gpgSecret) "
                "and run `seedbed bootstrap` again; a rebuild restores it only from a backup that carried it")
    return "fix the manifests named in the message and push"


async def _backup(kube: Any, now: datetime) -> Check:
    from ..state import read_backup_record

    record = await read_backup_record(kube)
    if record is None:
        return Check("backup", "warn", "no backup yet", "no backup has been taken of this cluster",
                     "seedbed backup -o backups/$(date +%F).age")
    age = now - record.time
    days = age.total_seconds() / 86400
    text = f"last backup {_age(age.total_seconds())} ago ({record.file})"
    if days > BACKUP_STALE_DAYS:
        return Check("backup", "warn", text, f"the last backup is {days:.0f} days old",
                     "seedbed backup -o backups/$(date +%F).age", {"ageSeconds": int(age.total_seconds())})
    return Check("backup", "ok", text, details={"ageSeconds": int(age.total_seconds())})


def _age(seconds: float) -> str:
    if seconds < 3600:
        return f"{int(seconds // 60)}m"
    if seconds < 86400 * 2:
        return f"{int(seconds // 3600)}h"
    return f"{int(seconds // 86400)}d"
