"""A cluster bootstrapped by the earlier, Deployment-based seedbed converts on the next ``bootstrap``
(issue 11, item 6).

The earlier seedbed (commit 61ed7dd, src/seedbed/render/gitserver.py) applied, as field manager
``seedbed``, a Deployment ``gitea`` (selector ``app.kubernetes.io/name``/``instance`` = ``gitea``, an
init container ``configure`` running ``gitea migrate``, an httpGet readiness probe, ``GITEA__*``
variables) and the Services ``gitea-http``/``gitea-ssh``, all three with Helm's ownership marks. Its
shape is copied below (the minimum the conversion looks at), not imported.

helm-controller v1.6.3 ``internal/action/install.go`` installs with ``TakeOwnership`` and forced
server-side apply, and Helm v4.2.1 ``pkg/action/install.go`` then adopts existing objects with
``KubeClient.Update``: server-side apply keeps the fields another manager owns, so a Deployment left
in place would keep seedbed's init container, probe and variables. The lab's helm-controller applies
the same way (src/seedbed_lab/emulator/helm_controller.py).
"""

from __future__ import annotations

import subprocess
from typing import Any

import yaml

from conftest import UPSTREAM, run_cli
from seedbed_lab.emulator.kustomize_controller import server_side_apply
from seedbed_lab.lab import Lab, make_worktree

HELM_API = "helm.toolkit.fluxcd.io/v2"
FLUX_DIR = "clusters/homelab/flux-system"
SELECTOR = {"app.kubernetes.io/name": "gitea", "app.kubernetes.io/instance": "gitea"}


def managers(obj: dict[str, Any]) -> set[str]:
    return {e["manager"] for e in obj["metadata"].get("managedFields") or [] if not e.get("subresource")}


def _meta(name: str) -> dict[str, Any]:
    # 61ed7dd render/gitserver.py adoptable(): Helm's ownership marks on the Deployment and Services.
    return {"name": name, "namespace": "gitea",
            "labels": {**SELECTOR, "app.kubernetes.io/managed-by": "Helm"},
            "annotations": {"meta.helm.sh/release-name": "gitea", "meta.helm.sh/release-namespace": "gitea"}}


def earlier_objects() -> list[dict[str, Any]]:
    """The Deployment and Services of the earlier seedbed, in its shape (61ed7dd render/gitserver.py)."""
    env = [{"name": "GITEA__database__DB_TYPE", "value": "sqlite3"},
           {"name": "GITEA__server__SSH_LISTEN_PORT", "value": "2222"},
           {"name": "GITEA__server__SSH_SERVER_HOST_KEYS", "value": "/etc/gitea-ssh-host-key/ssh_host_ed25519_key"}]
    mounts = [{"name": "data", "mountPath": "/data"}, {"name": "temp", "mountPath": "/tmp"},
              {"name": "ssh-host-key", "mountPath": "/etc/gitea-ssh-host-key", "readOnly": True}]
    image = "docker.gitea.com/gitea:1.27-rootless"
    deployment = {
        "apiVersion": "apps/v1", "kind": "Deployment", "metadata": _meta("gitea"),
        "spec": {"replicas": 1, "strategy": {"type": "Recreate"}, "selector": {"matchLabels": dict(SELECTOR)},
                 "template": {"metadata": {"labels": {**SELECTOR, "app.kubernetes.io/managed-by": "seedbed"}},
                              "spec": {"initContainers": [{"name": "configure", "image": image,
                                                           "args": ["/bin/sh", "-c", "gitea migrate"],
                                                           "env": env, "volumeMounts": mounts}],
                                       "containers": [{"name": "gitea", "image": image, "env": env,
                                                       "ports": [{"name": "http", "containerPort": 3000},
                                                                 {"name": "ssh", "containerPort": 2222}],
                                                       "readinessProbe": {"httpGet": {"path": "/api/healthz",
                                                                                      "port": "http"}},
                                                       "volumeMounts": mounts}],
                                       "volumes": [{"name": "data", "persistentVolumeClaim":
                                                    {"claimName": "gitea-shared-storage"}},
                                                   {"name": "temp", "emptyDir": {}},
                                                   {"name": "ssh-host-key", "secret": {
                                                       "secretName": "gitea-ssh-host-key", "defaultMode": 0o440}}]}}}}
    services = [{"apiVersion": "v1", "kind": "Service", "metadata": _meta(name),
                 "spec": {"type": "ClusterIP", "selector": dict(SELECTOR),
                          "ports": [{"name": port_name, "port": port, "targetPort": target, "protocol": "TCP"}]}}
                for name, port_name, port, target in (("gitea-http", "http", 3000, 3000),
                                                      ("gitea-ssh", "ssh", 22, 2222))]
    return [deployment, *services]


def server_show(lab: Lab, path: str) -> str:
    return subprocess.run(["git", "--git-dir", str(lab.gitea.bare_path("homelab", "gitops")), "show",
                           f"main:{path}"], capture_output=True, text=True, check=True).stdout


def bootstrap(capsys, config) -> tuple[int, str, str]:
    return run_cli(capsys, "-c", str(config), "bootstrap", "--manifests", str(UPSTREAM))


def earlier_cluster(capsys, lab: Lab, tmp_path) -> Any:
    """A cluster as the earlier seedbed left it: claim, admin and host-key Secrets, Flux's deploy key and
    sync, the repository without git-server.yaml, and the Deployment and Services applied as seedbed."""
    config = lab.write_config(make_worktree(tmp_path / "gitops"))
    code, _, err = bootstrap(capsys, config)
    assert code == 0, err
    lab.settle()
    kustomization = yaml.safe_load(server_show(lab, f"{FLUX_DIR}/kustomization.yaml"))
    kustomization["resources"] = [r for r in kustomization["resources"] if r != "git-server.yaml"]
    lab.commit_to_server({f"{FLUX_DIR}/git-server.yaml": None,
                          f"{FLUX_DIR}/kustomization.yaml": yaml.safe_dump(kustomization)}, "as seedbed 0.x left it")
    emu = lab.emu
    emu.delete(HELM_API, "HelmRelease", "gitea", "gitea")
    emu.delete("source.toolkit.fluxcd.io/v1", "HelmRepository", "gitea-charts", "gitea")
    lab.helm.rendered.clear()
    for kind, name in (("Secret", "gitea-inline-config"), ("Secret", "gitea-server-keys"),
                       ("Service", "gitea-http"), ("Service", "gitea-ssh")):
        emu.delete("v1", kind, name, "gitea")
    emu.delete("apps/v1", "Deployment", "gitea", "gitea")
    emu.delete("v1", "ConfigMap", "seedbed-state", "kube-system")  # the earlier seedbed's records differ
    for obj in earlier_objects():
        server_side_apply(emu, obj, "seedbed")
    lab.flux_reconcile()
    assert lab.flux_errors == []
    return config


def kept(lab: Lab) -> dict[str, Any]:
    get = lab.emu.get
    return {"claim": get("v1", "PersistentVolumeClaim", "gitea-shared-storage", "gitea")["metadata"]["uid"],
            "hostKey": get("v1", "Secret", "gitea-ssh-host-key", "gitea")["data"],
            "admin": get("v1", "Secret", "gitea-admin", "gitea")["data"],
            "deployKey": get("v1", "Secret", "flux-system", "flux-system")["data"],
            "repo": server_show(lab, "apps/README.md")}


def assert_converted(lab: Lab, before: dict[str, Any]) -> None:
    get = lab.emu.get
    hr = get(HELM_API, "HelmRelease", "gitea", "gitea")
    assert hr["status"]["conditions"][0]["status"] == "True", hr["status"]
    dep = get("apps/v1", "Deployment", "gitea", "gitea")
    pod = dep["spec"]["template"]["spec"]
    assert "seedbed" not in managers(dep)
    assert "configure" not in [c["name"] for c in pod.get("initContainers") or []]
    assert "httpGet" not in (pod["containers"][0].get("readinessProbe") or {})
    assert not [e for e in pod["containers"][0].get("env") or [] if e["name"].startswith("GITEA__server__SSH_LISTEN")]
    for name in ("gitea-http", "gitea-ssh"):
        svc = get("v1", "Service", name, "gitea")
        assert "seedbed" not in managers(svc) and svc["spec"]["clusterIP"] not in ("", "None")
    assert kept(lab) == before
    # Flux fetched the commit that added git-server.yaml with the same deploy key and host key.
    ks = get("kustomize.toolkit.fluxcd.io/v1", "Kustomization", "flux-system", "flux-system")
    assert ks["status"]["conditions"][0]["status"] == "True"
    assert "git-server.yaml" in yaml.safe_load(server_show(lab, f"{FLUX_DIR}/kustomization.yaml"))["resources"]
    assert lab.flux_errors == [] and lab.helm.errors == []


def test_a_cluster_of_the_earlier_seedbed_converts_keeping_claim_host_key_repository_and_flux_access(
        lab, tmp_path, capsys):
    config = earlier_cluster(capsys, lab, tmp_path)
    before = kept(lab)
    code, out, err = bootstrap(capsys, config)
    assert code == 0, err
    lab.settle()
    assert_converted(lab, before)
    assert "converting the Git server an earlier seedbed deployed: deleting Deployment gitea, Service gitea-http, " \
           "Service gitea-ssh" in out + err


def test_the_plan_says_that_an_earlier_seedbeds_git_server_is_converted_and_what_is_kept(lab, tmp_path, capsys):
    config = lab.write_config(make_worktree(tmp_path / "gitops"))
    code, out, err = run_cli(capsys, "-c", str(config), "plan", "--manifests", str(UPSTREAM))
    assert code == 0, err
    assert "if the cluster runs the Git server of an earlier seedbed" in out
    assert "kept: the claim gitea-shared-storage" in out and "Flux's deploy key (flux-system/flux-system)" in out


def test_a_conversion_interrupted_after_the_deletion_finishes_on_the_next_bootstrap(
        lab, tmp_path, capsys, monkeypatch):
    from seedbed.errors import ClusterError
    from seedbed.kube import client

    config = earlier_cluster(capsys, lab, tmp_path)
    before = kept(lab)
    real_delete = client.Kube.delete

    async def cut_after_the_deployment(self, api_version, kind, name, namespace=None, **kw):
        if kind == "Service":
            raise ClusterError("connection to the cluster lost", fix="re-run")
        return await real_delete(self, api_version, kind, name, namespace, **kw)

    monkeypatch.setattr(client.Kube, "delete", cut_after_the_deployment)
    code, _, _ = bootstrap(capsys, config)
    assert code != 0
    assert lab.emu.get("apps/v1", "Deployment", "gitea", "gitea") is None
    assert lab.emu.get(HELM_API, "HelmRelease", "gitea", "gitea") is None
    monkeypatch.setattr(client.Kube, "delete", real_delete)

    code, out, err = bootstrap(capsys, config)
    assert code == 0, err
    lab.settle()
    assert "deleting Service gitea-http, Service gitea-ssh" in out + err
    assert_converted(lab, before)
