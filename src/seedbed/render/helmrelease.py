"""The Git server as Flux runs it: a HelmRelease of the official chart, from its first minute.

seedbed applies these objects itself (before Flux syncs anything) and commits the very same
manifests as ``<flux.path>/flux-system/git-server.yaml``, beside ``gotk-*.yaml``, the way
``flux bootstrap`` makes Flux manage itself: Flux then reconciles exactly what is running, and the
user changes the server by editing the values in that file. docs/handoff.md ("How the hand-over
works") cites the upstream files each choice below comes from.

:data:`INVARIANTS` is what any later values must keep (check-handoff's contract), as data;
:func:`check_values` lists the violations of one set of values.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import msgspec
from msgspec.structs import replace

from .. import yamlutil
from ..config import Config
from ..errors import ManifestError
from . import gitserver
from .gitserver import SERVER_KEYS, SERVER_KEYS_SECRET

HELM_API = "helm.toolkit.fluxcd.io/v2"
SOURCE_API = "source.toolkit.fluxcd.io/v1"
RELEASE_NAME = "gitea"  # set as spec.releaseName: the selector's instance label, immutable
REPO_FILE = "git-server.yaml"
HEADER = ("# The in-cluster Git server Flux syncs from, written by seedbed. Edit the values to change it;\n"
          "# `seedbed check-handoff` checks that the edit keeps the repository and Flux's access.\n")

# What seedbed applies objects Flux will own with: kustomize-controller's apply cleanup merges every
# `kubectl` Apply entry into its own (kustomize-controller v1.9.x
# internal/controller/kustomization_controller.go, applyOpts.Cleanup.FieldManagers; fluxcd/pkg
# ssa/patch.go matchFieldManager), so after its first apply it owns those fields alone and a key
# removed from Git is removed from the cluster. The flux CLI's own manager "flux" (flux2
# internal/utils/apply.go) is not in that list.
HANDOVER_FIELD_MANAGER = "kubectl"



class Chart(msgspec.Struct, frozen=True):
    """A pinned chart: where it comes from and the name its selector labels carry."""

    name: str  # the chart's name: `app.kubernetes.io/name` of its selector (gitea.name in _helpers.tpl)
    version: str
    url: str
    oci: bool
    registry: str  # image.registry / image.repository: the image seedbed runs, not the chart's default
    repository: str
    subcharts: tuple[str, ...]  # dependencies that must stay off (values `<name>.enabled`)


CHARTS = {
    # Gitea chart 12.4.0 (gitea.com/gitea/helm-gitea, Chart.yaml appVersion 1.24.6).
    "gitea": Chart("gitea", "12.4.0", "https://dl.gitea.com/charts/", False, "docker.gitea.com", "gitea",
                   ("postgresql-ha", "postgresql", "valkey-cluster", "valkey")),
    # Forgejo chart 15.0.3 (code.forgejo.org/forgejo-helm/forgejo-helm, appVersion 13.0.3): no database subcharts.
    "forgejo": Chart("forgejo", "15.0.3", "oci://code.forgejo.org/forgejo-helm", True, "codeberg.org",
                     "forgejo/forgejo", ()),
}


def chart(cfg: Config) -> Chart:
    """The flavour's chart at ``gitServer.chart.version`` (default: the version seedbed pins).

    Flux's HelmRepository gives no way to pin a chart archive's sha256 (only OCI sources verify, by
    signature), so the version is exact: ``spec.chart.spec.version`` is never a range.
    """
    pinned = CHARTS[cfg.git_server.flavor]
    version = cfg.git_server.chart.version
    return pinned if version in (None, pinned.version) else replace(pinned, version=version)


def selector_labels(cfg: Config) -> dict[str, str]:
    """The chart's Deployment selector (``gitea.selectorLabels``): immutable once installed."""
    return {"app.kubernetes.io/name": chart(cfg).name, "app.kubernetes.io/instance": RELEASE_NAME}


def source_name(cfg: Config) -> str:
    return f"{chart(cfg).name}-charts"


# --------------------------------------------------------------------------- values


def values(cfg: Config) -> dict[str, Any]:
    """The bootstrap values: the minimal, gitops-only server, in the chart's own terms."""
    gs = cfg.git_server
    c = chart(cfg)
    gitserver.image(cfg)  # validates the tag
    if gs.image:
        image: dict[str, Any] = {"fullOverride": gs.image, "rootless": True}
    else:
        # The chart appends -rootless itself (_helpers.tpl gitea.image); the tag is the running
        # server's, never the chart's older appVersion (an older Gitea refuses a newer database).
        tag = gs.version.removesuffix("-rootless")
        image = {"registry": c.registry, "repository": c.repository, "tag": tag, "rootless": True}
    out: dict[str, Any] = {
        "fullnameOverride": cfg.git_server.fullname,
        "image": image,
        # RollingUpdate (the chart default, maxSurge 100%) would start a second pod on the
        # ReadWriteOnce volume: stuck on another node, two servers on one SQLite file on the same one.
        "strategy": {"type": "Recreate"},
        "persistence": {
            "enabled": True,
            "create": False,  # seedbed's claim: Helm never owns it, so deleting the release keeps the data
            "mount": True,
            "claimName": gs.pvc_name,
        },
        "service": {
            # The chart's default clusterIP is None (headless); a clusterIP cannot change later.
            "http": {"type": "ClusterIP", "clusterIP": "", "port": gitserver.HTTP_PORT},
            "ssh": {"type": "ClusterIP", "clusterIP": "", "port": gitserver.SSH_PORT},
        },
        "extraVolumes": [{"name": "ssh-host-key",
                          "secret": {"secretName": gs.host_key_secret, "defaultMode": 0o440}}],
        "extraContainerVolumeMounts": [{"name": "ssh-host-key", "mountPath": gitserver.HOST_KEY_DIR,
                                        "readOnly": True}],
        "gitea": {
            "admin": {"existingSecret": gs.admin_secret, "email": gitserver.admin_email(cfg),
                      "passwordMode": "keepUpdated"},
            "additionalConfigFromEnvs": [
                {"name": env, "valueFrom": {"secretKeyRef": {"name": SERVER_KEYS_SECRET, "key": key}}}
                for key, env in SERVER_KEYS.items()],
            "config": {
                "database": {"DB_TYPE": "sqlite3", "PATH": f"{gitserver.DATA_DIR}/gitea.db"},
                "server": {
                    "DOMAIN": gitserver.http_host(cfg),
                    "ROOT_URL": gitserver.root_url(cfg),
                    "SSH_DOMAIN": gitserver.ssh_host(cfg),
                    "START_SSH_SERVER": True,
                    "SSH_PORT": gitserver.SSH_PORT,
                    "SSH_LISTEN_PORT": gitserver.SSH_LISTEN_PORT,
                    "BUILTIN_SSH_SERVER_USER": gitserver.SSH_USER,
                    "SSH_SERVER_HOST_KEYS": gitserver.HOST_KEY_PATH,
                },
                "service": {"DISABLE_REGISTRATION": True},
            },
        },
    }
    for sub in c.subcharts:
        out[sub] = {"enabled": False}
    return out


# --------------------------------------------------------------------------- objects


def objects(cfg: Config) -> list[dict[str, Any]]:
    """The chart source and the HelmRelease, exactly as committed in git-server.yaml."""
    gs = cfg.git_server
    c = chart(cfg)
    source_spec: dict[str, Any] = {"interval": "24h0m0s", "url": c.url}
    if c.oci:
        source_spec["type"] = "oci"
    source = {"apiVersion": SOURCE_API, "kind": "HelmRepository",
              "metadata": {"name": source_name(cfg), "namespace": gs.namespace}, "spec": source_spec}
    release = {
        "apiVersion": HELM_API,
        "kind": "HelmRelease",
        "metadata": {"name": RELEASE_NAME, "namespace": gs.namespace},
        "spec": {
            "interval": "30m0s",
            # Explicit: without it, a targetNamespace would make the release (and the immutable
            # selector) `<targetNamespace>-<name>` (helm-controller api/v2 GetReleaseName).
            "releaseName": RELEASE_NAME,
            "chart": {"spec": {"chart": c.name, "version": c.version, "interval": "24h0m0s",
                               "sourceRef": {"kind": "HelmRepository", "name": source_name(cfg)}}},
            # Flux fetches its fixes from this very server: a failed install or upgrade is rolled
            # back by helm-controller itself, or no fix could ever arrive through Git
            # (api/v2/helmrelease_types.go: remediateLastFailure defaults to true only with retries).
            "install": {"remediation": {"retries": 3}},
            "upgrade": {"remediation": {"retries": 3, "remediateLastFailure": True, "strategy": "rollback"}},
            "values": values(cfg),
        },
    }
    return [source, release]


def repo_file(cfg: Config) -> str:
    return HEADER + yamlutil.dump_all(objects(cfg))


def required_crds() -> tuple[str, ...]:
    return ("helmreleases.helm.toolkit.fluxcd.io", "helmrepositories.source.toolkit.fluxcd.io")


def check_components(objs: list[dict[str, Any]]) -> None:
    """The Flux manifest must bring helm-controller: the Git server is a HelmRelease."""
    names = {o["metadata"]["name"] for o in objs if o.get("kind") == "CustomResourceDefinition"}
    missing = [c for c in required_crds() if c not in names]
    if missing:
        raise ManifestError(f"the Flux manifest lacks CustomResourceDefinition {', '.join(missing)}",
                            fix="use a Flux release manifest with source-, kustomize- and helm-controller")


# --------------------------------------------------------------------------- what later values must keep


class Invariant(msgspec.Struct, frozen=True):
    """One value of the HelmRelease that a later commit must keep, and what breaks otherwise."""

    path: tuple[str, ...]  # in the merged values (chart defaults under the release's values)
    expected: Callable[[Config], Any]
    why: str
    check: Callable[[Any, Any], bool] = lambda actual, expected: actual == expected


def _nonempty_ip(actual: Any, expected: Any) -> bool:
    # "" or absent: the API server allocates an address; "None" (or None) is headless.
    return actual in ("", None) if expected == "" else actual == expected


INVARIANTS: tuple[Invariant, ...] = (
    Invariant(("persistence", "enabled"), lambda c: True, "the repository is on the volume"),
    Invariant(("persistence", "create"), lambda c: False,
              "Helm must not create (and own, and delete with the release) seedbed's claim"),
    Invariant(("persistence", "mount"), lambda c: True, "the repository is on the volume"),
    Invariant(("persistence", "claimName"), lambda c: c.git_server.pvc_name,
              "another claim is another (empty) repository"),
    Invariant(("strategy", "type"), lambda c: "Recreate",
              "a rolling update starts a second server on the ReadWriteOnce volume and its SQLite file"),
    Invariant(("service", "http", "clusterIP"), lambda c: "",
              "a Service's clusterIP is immutable, and seedbed reaches the server through it", _nonempty_ip),
    Invariant(("service", "ssh", "clusterIP"), lambda c: "",
              "a headless SSH Service maps no port: Flux would reach port 22, not 2222", _nonempty_ip),
    Invariant(("service", "ssh", "port"), lambda c: gitserver.SSH_PORT, "Flux's URL uses port 22"),
    Invariant(("service", "http", "port"), lambda c: gitserver.HTTP_PORT, "seedbed reaches the API on 3000"),
    Invariant(("gitea", "config", "server", "SSH_LISTEN_PORT"), lambda c: gitserver.SSH_LISTEN_PORT,
              "the rootless server listens on 2222, the SSH Service's target port"),
    Invariant(("gitea", "config", "server", "SSH_SERVER_HOST_KEYS"), lambda c: gitserver.HOST_KEY_PATH,
              "another host key breaks Flux's pinned known_hosts"),
    Invariant(("extraVolumes",), lambda c: {"name": "ssh-host-key", "secretName": c.git_server.host_key_secret},
              "the pinned host key is mounted from its Secret",
              lambda actual, exp: any(isinstance(v, dict) and v.get("name") == exp["name"]
                                      and (v.get("secret") or {}).get("secretName") == exp["secretName"]
                                      for v in actual or [])),
    Invariant(("gitea", "admin", "existingSecret"), lambda c: c.git_server.admin_secret,
              "without it the chart creates an admin with the password published in its values.yaml"),
    Invariant(("gitea", "config", "database", "DB_TYPE"), lambda c: "sqlite3",
              "the users and Flux's deploy key are in the bootstrap's SQLite database"),
    Invariant(("fullnameOverride",), lambda c: c.git_server.fullname, "the Services' names are in Flux's URL"),
)


def _get(values: dict[str, Any], path: tuple[str, ...]) -> Any:
    cur: Any = values
    for part in path:
        if not isinstance(cur, dict):
            return None
        cur = cur.get(part)
    return cur


def check_values(cfg: Config, release: dict[str, Any], merged_values: dict[str, Any]) -> list[str]:
    """Every way ``release`` (a HelmRelease) with ``merged_values`` breaks the hand-over; [] when none.

    ``merged_values`` are the chart's defaults with the release's values over them (the caller
    reads the chart); release-level invariants (release name, chart, subcharts off, the server keys)
    are checked here too.
    """
    problems = [f"{'.'.join(inv.path)}: {_get(merged_values, inv.path)!r}, expected "
                f"{inv.expected(cfg)!r}: {inv.why}"
                for inv in INVARIANTS if not inv.check(_get(merged_values, inv.path), inv.expected(cfg))]
    spec = release.get("spec") or {}
    name = spec.get("releaseName") or "-".join(
        p for p in (spec.get("targetNamespace"), (release.get("metadata") or {}).get("name")) if p)
    if name != RELEASE_NAME:
        problems.append(f"release name {name!r}, expected {RELEASE_NAME!r}: the Deployment selector's "
                        "instance label is the release name, and a selector is immutable")
    chart_name = ((spec.get("chart") or {}).get("spec") or {}).get("chart")
    if chart_name != chart(cfg).name or merged_values.get("nameOverride"):
        problems.append(f"chart {chart_name!r}: the selector's name label must stay {chart(cfg).name!r}")
    for sub in chart(cfg).subcharts:
        if _get(merged_values, (sub, "enabled")):
            problems.append(f"{sub}.enabled: a new database or cache starts empty; keep the SQLite database")
    envs = {e.get("name") for e in _get(merged_values, ("gitea", "additionalConfigFromEnvs")) or []
            if isinstance(e, dict)}
    for env in SERVER_KEYS.values():
        if env not in envs:
            problems.append(f"gitea.additionalConfigFromEnvs lacks {env} from Secret {SERVER_KEYS_SECRET}")
    return problems
