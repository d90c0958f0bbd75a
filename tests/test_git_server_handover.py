"""The Git server is Flux's from its first minute: a HelmRelease seedbed applies and commits, that Flux
then reconciles from the repository (issue 11).

The lab runs the simulated helm-controller (src/seedbed_lab/emulator/helm_controller.py, rendering the pinned
Gitea chart 12.4.0 from its real files) and kustomize-controller (src/seedbed_lab/emulator/kustomize_controller.py:
field manager ``kustomize-controller`` and the cleanup of kustomize-controller v1.9.x
``internal/controller/kustomization_controller.go``).
"""

from __future__ import annotations

import base64
from typing import Any

import pytest
import yaml

from conftest import run_cli
from seedbed_lab.emulator import kustomize_controller
from seedbed_lab.lab import Lab, make_worktree

SERVER_FILE = "clusters/homelab/flux-system/git-server.yaml"
HELM_API = "helm.toolkit.fluxcd.io/v2"


def bootstrap(capsys, lab: Lab, tmp_path) -> None:
    from conftest import UPSTREAM

    config = lab.write_config(make_worktree(tmp_path / "gitops"))
    code, _out, err = run_cli(capsys, "-c", str(config), "bootstrap", "--manifests", str(UPSTREAM))
    assert code == 0, err
    lab.settle()
    return config


def server_file(lab: Lab) -> list[dict[str, Any]]:
    import subprocess

    text = subprocess.run(["git", "--git-dir", str(lab.gitea.bare_path("homelab", "gitops")), "show",
                           f"main:{SERVER_FILE}"], capture_output=True, text=True, check=True).stdout
    return list(yaml.safe_load_all(text))


def with_values(docs: list[dict[str, Any]], change: Any) -> str:
    for d in docs:
        if d["kind"] == "HelmRelease":
            change(d["spec"]["values"])
    return yaml.safe_dump_all(docs, sort_keys=False)


def flux_owned(lab: Lab) -> list[dict[str, Any]]:
    """Every object kustomize-controller applied (it labels them)."""
    kinds = [("v1", "Service"), ("v1", "Namespace"), ("v1", "ServiceAccount"), ("apps/v1", "Deployment"),
             ("apiextensions.k8s.io/v1", "CustomResourceDefinition"), (HELM_API, "HelmRelease"),
             ("source.toolkit.fluxcd.io/v1", "HelmRepository"), ("source.toolkit.fluxcd.io/v1", "GitRepository"),
             ("kustomize.toolkit.fluxcd.io/v1", "Kustomization")]
    return [o for api, kind in kinds for o in lab.emu.list(api, kind)
            if "kustomize.toolkit.fluxcd.io/name" in (o["metadata"].get("labels") or {})]


def managers(obj: dict[str, Any]) -> set[str]:
    return {e["manager"] for e in obj["metadata"].get("managedFields") or [] if not e.get("subresource")}


def test_flux_reconciling_the_git_server_keeps_the_claim_host_key_and_flux_access(lab, tmp_path, capsys):
    config = bootstrap(capsys, lab, tmp_path)
    get = lab.emu.get
    hr = get(HELM_API, "HelmRelease", "gitea", "gitea")
    assert hr["status"]["conditions"][0]["status"] == "True"
    before = {
        "pvc": get("v1", "PersistentVolumeClaim", "gitea-shared-storage", "gitea")["metadata"]["uid"],
        "deployment": get("apps/v1", "Deployment", "gitea", "gitea")["spec"]["selector"],
        "http": get("v1", "Service", "gitea-http", "gitea")["spec"]["clusterIP"],
        "ssh": get("v1", "Service", "gitea-ssh", "gitea")["spec"]["clusterIP"],
        "hostKey": get("v1", "Secret", "gitea-ssh-host-key", "gitea")["data"],
    }
    assert before["http"] not in ("", "None") and before["ssh"] not in ("", "None")
    # Flux's copy is what seedbed applied: kustomize-controller took every field over.
    owned = flux_owned(lab)
    assert {o["kind"] for o in owned} >= {"HelmRelease", "HelmRepository", "GitRepository", "Kustomization",
                                          "Deployment", "CustomResourceDefinition"}
    for obj in owned:
        assert managers(obj) <= {"kustomize-controller", "emulator"}, (obj["kind"], obj["metadata"]["name"])

    # The user exposes the server and adds settings, by a commit to the values.
    def expose(values: dict[str, Any]) -> None:
        values["ingress"] = {"enabled": True, "className": "traefik",
                             "hosts": [{"host": "git.example.org", "paths": [{"path": "/", "pathType": "Prefix"}]}]}
        values["gitea"]["config"]["server"].update({"DOMAIN": "git.example.org",
                                                     "ROOT_URL": "https://git.example.org/"})
        values["gitea"]["config"]["openid"] = {"ENABLE_OPENID_SIGNIN": False}

    revision = lab.commit_to_server({SERVER_FILE: with_values(server_file(lab), expose)}, "Expose the Git server")
    lab.flux_reconcile()

    hr = get(HELM_API, "HelmRelease", "gitea", "gitea")
    assert hr["status"]["conditions"][0]["status"] == "True", hr["status"]
    assert hr["spec"]["releaseName"] == "gitea"
    ingress = get("networking.k8s.io/v1", "Ingress", "gitea", "gitea")
    assert ingress["spec"]["rules"][0]["host"] == "git.example.org"
    config_ini = {k: base64.b64decode(v).decode()  # the API server keeps stringData as data
                  for k, v in get("v1", "Secret", "gitea-inline-config", "gitea")["data"].items()}
    assert "DOMAIN=git.example.org" in config_ini["server"] and "openid" in config_ini
    # Same claim, same selector, same Services, same host key: the repository and Flux's access stay.
    assert get("v1", "PersistentVolumeClaim", "gitea-shared-storage", "gitea")["metadata"]["uid"] == before["pvc"]
    dep = get("apps/v1", "Deployment", "gitea", "gitea")
    assert dep["spec"]["selector"] == before["deployment"]
    assert {"name": "data", "persistentVolumeClaim": {"claimName": "gitea-shared-storage"}} \
        in dep["spec"]["template"]["spec"]["volumes"]
    assert get("v1", "Service", "gitea-http", "gitea")["spec"]["clusterIP"] == before["http"]
    assert get("v1", "Service", "gitea-ssh", "gitea")["spec"]["clusterIP"] == before["ssh"]
    assert get("v1", "Secret", "gitea-ssh-host-key", "gitea")["data"] == before["hostKey"]
    assert revision in lab.flux_clones and lab.flux_errors == []
    assert lab.helm.errors == [] and lab.kustomize_errors == []
    for obj in flux_owned(lab):
        assert managers(obj) <= {"kustomize-controller", "emulator"}, (obj["kind"], obj["metadata"]["name"])
    # seedbed still reaches the server through the chart's HTTP Service.
    code, _out, err = run_cli(capsys, "-c", str(config), "status")
    assert code == 0, err


def test_a_values_commit_that_removes_a_key_removes_it_from_the_cluster(lab, tmp_path, capsys):
    bootstrap(capsys, lab, tmp_path)
    hr = lab.emu.get(HELM_API, "HelmRelease", "gitea", "gitea")
    assert hr["spec"]["values"]["gitea"]["config"]["server"]["BUILTIN_SSH_SERVER_USER"] == "git"

    def drop(values: dict[str, Any]) -> None:
        del values["gitea"]["config"]["server"]["BUILTIN_SSH_SERVER_USER"]

    lab.commit_to_server({SERVER_FILE: with_values(server_file(lab), drop)}, "Use the default SSH user")
    lab.flux_reconcile()
    hr = lab.emu.get(HELM_API, "HelmRelease", "gitea", "gitea")
    assert "BUILTIN_SSH_SERVER_USER" not in hr["spec"]["values"]["gitea"]["config"]["server"]
    ini = base64.b64decode(lab.emu.get("v1", "Secret", "gitea-inline-config", "gitea")["data"]["server"]).decode()
    assert "BUILTIN_SSH_SERVER_USER" not in ini


def test_a_later_bootstrap_leaves_the_users_git_server_values_alone(lab, tmp_path, capsys):
    """Once committed, git-server.yaml and the HelmRelease are the user's and Flux's: seedbed neither
    re-commits the bootstrap values nor re-applies the HelmRelease over them."""
    config = bootstrap(capsys, lab, tmp_path)

    def expose(values: dict[str, Any]) -> None:
        values["ingress"] = {"enabled": True, "hosts": [{"host": "git.example.org"}]}

    lab.commit_to_server({SERVER_FILE: with_values(server_file(lab), expose)}, "Expose the Git server")
    lab.flux_reconcile()
    lab.emu.delete("v1", "ConfigMap", "seedbed-state", "kube-system")  # every step runs again
    from conftest import UPSTREAM

    code, _out, err = run_cli(capsys, "-c", str(config), "bootstrap", "--manifests", str(UPSTREAM))
    assert code == 0, err
    lab.settle()
    assert server_file(lab)[1]["spec"]["values"]["ingress"]["hosts"] == [{"host": "git.example.org"}]
    hr = lab.emu.get(HELM_API, "HelmRelease", "gitea", "gitea")
    assert hr["spec"]["values"]["ingress"]["enabled"] is True
    assert managers(hr) <= {"kustomize-controller", "emulator"}


def test_a_values_commit_that_changes_the_selector_is_refused_and_the_server_keeps_serving(lab, tmp_path, capsys):
    """Dropping releaseName with a targetNamespace renames the release (gitea-gitea): a new selector,
    which the API server refuses; the old Deployment keeps serving."""
    config = bootstrap(capsys, lab, tmp_path)
    docs = server_file(lab)
    for d in docs:
        if d["kind"] == "HelmRelease":
            del d["spec"]["releaseName"]
            d["spec"]["targetNamespace"] = "gitea"
    lab.commit_to_server({SERVER_FILE: yaml.safe_dump_all(docs, sort_keys=False)}, "Move the release")
    lab.flux_reconcile()
    hr = lab.emu.get(HELM_API, "HelmRelease", "gitea", "gitea")
    ready, released = hr["status"]["conditions"][:2]
    assert ready["status"] == "False" and ready["reason"] == "RollbackSucceeded"
    assert "spec.selector" in released["message"] and "immutable" in released["message"]
    dep = lab.emu.get("apps/v1", "Deployment", "gitea", "gitea")
    assert dep["spec"]["selector"]["matchLabels"]["app.kubernetes.io/instance"] == "gitea"
    code, out, err = run_cli(capsys, "-c", str(config), "status", "-o", "json")
    import json

    states = {c["component"]: c for c in json.loads(out)["components"]}
    assert states["git-server"]["state"] == "ok"  # reached through the old Deployment
    assert states["hand-over"]["state"] == "fail" and "immutable" in states["hand-over"]["summary"]
    assert code == 1, err


@pytest.mark.parametrize(("manager", "kept"), [("seedbed", True), ("kubectl", False)])
def test_fields_seedbed_applies_outlive_their_removal_from_git_unless_kustomize_controller_takes_them_over(
        emulator, manager, kept):
    """Server-side apply removes a field only when no manager owns it any more: under seedbed's own
    manager a key deleted from Git stays; under `kubectl` kustomize-controller's cleanup takes it over."""
    cm = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c", "namespace": "default"},
          "data": {"keep": "1", "drop": "2"}}
    kustomize_controller.server_side_apply(emulator, cm, manager)
    in_git = {**cm, "data": {"keep": "1"}}
    kustomize_controller.apply(emulator, in_git, "flux-system", "flux-system")  # first apply
    kustomize_controller.apply(emulator, in_git, "flux-system", "flux-system")
    data = emulator.get("v1", "ConfigMap", "c", "default")["data"]
    assert ("drop" in data) is kept


def test_bootstrap_checks_the_git_server_release_flux_applies_from_the_server(lab, tmp_path, capsys):
    """The hand-over check reads the server's branch (with the flux-system/git-server.yaml the flux
    step committed there), not the operator's work tree, which never holds that file."""
    from conftest import UPSTREAM

    config = lab.write_config(make_worktree(tmp_path / "gitops"))
    code, out, err = run_cli(capsys, "-c", str(config), "bootstrap", "--manifests", str(UPSTREAM))
    assert code == 0, err
    text = out + err
    assert "no Git server manifests" not in text
    assert "hand-over to Flux is safe (main on the server: HelmRelease gitea/gitea (chart gitea) in " \
           "clusters/homelab/flux-system/git-server.yaml)" in text
    assert not (tmp_path / "gitops" / SERVER_FILE).exists()


APP_TEMPLATE_GITEA = """\
apiVersion: helm.toolkit.fluxcd.io/v2
kind: HelmRelease
metadata:
  name: code
  namespace: gitea
spec:
  interval: 30m
  chart:
    spec:
      chart: app-template
      sourceRef: {kind: HelmRepository, name: bjw-s, namespace: flux-system}
  values:
    controllers:
      gitea:
        containers:
          app:
            image:
              repository: docker.gitea.com/gitea
              tag: 1.24.0-rootless
    persistence:
      data:
        existingClaim: gitea-shared-storage
      host-key:
        type: secret
        name: gitea-ssh-host-key
    service:
      ssh:
        ports:
          ssh:
            port: 22
            targetPort: 2222
"""


def test_bootstrap_does_not_call_a_hand_over_safe_that_it_could_not_verify(lab, tmp_path, capsys):
    """A second Gitea through a chart seedbed does not know is a warning, and the summary says
    NOT verified instead of safe."""
    from conftest import UPSTREAM

    worktree = make_worktree(tmp_path / "gitops", {"clusters/homelab/apps/code.yaml": APP_TEMPLATE_GITEA})
    config = lab.write_config(worktree)
    code, out, err = run_cli(capsys, "-c", str(config), "bootstrap", "--manifests", str(UPSTREAM))
    assert code == 0, err
    text = out + err
    assert "chart 'app-template', whose templates seedbed does not know" in text
    assert "hand-over NOT verified in main on the server: 1 finding(s) seedbed could not check" in text
    assert "is safe" not in text


def test_status_checks_the_running_git_server_flux_fetches_from(lab, tmp_path, capsys):
    """status finds the server by the SSH Service's selector (the chart's Deployment), and reads the
    host key it presents through a port-forward (an SSH handshake with ssh-keyscan)."""
    import json
    import shutil

    from seedbed.sshkeys import fingerprint

    if shutil.which("ssh-keyscan") is None:
        pytest.skip("ssh-keyscan (openssh-client) is not installed")
    config = bootstrap(capsys, lab, tmp_path)
    code, out, err = run_cli(capsys, "-c", str(config), "status", "-o", "json")
    assert code == 0, err
    handover = next(c for c in json.loads(out)["components"] if c["component"] == "hand-over")
    host = lab.emu.get("v1", "Secret", "gitea-ssh-host-key", "gitea")
    import base64

    public = base64.b64decode(host["data"]["ssh_host_ed25519_key.pub"]).decode()
    assert handover["state"] == "ok", handover
    assert handover["hostKey"] == handover["pinned"] == fingerprint(public)
    assert handover["revision"].endswith(handover["branchHead"])


def test_a_values_commit_that_breaks_the_server_is_rolled_back_and_doctor_gives_the_way_out(lab, tmp_path, capsys):
    """Dropping image.tag lets the chart pick its appVersion (1.24.6), older than the Gitea that
    migrated the database: the pods crash-loop, helm-controller's upgrade remediation rolls back, the
    old version serves and Flux still fetches. doctor says what happened and how to push the fix
    past Flux; following it brings the release back to Ready."""
    import json

    config = bootstrap(capsys, lab, tmp_path)
    get = lab.emu.get
    good = get("apps/v1", "Deployment", "gitea", "gitea")["spec"]["template"]["spec"]["containers"][0]["image"]
    original = server_file(lab)

    def drop_tag(values: dict[str, Any]) -> None:
        del values["image"]["tag"]

    bad = lab.commit_to_server({SERVER_FILE: with_values(server_file(lab), drop_tag)}, "Let the chart pick Gitea")
    lab.flux_reconcile()

    hr = get(HELM_API, "HelmRelease", "gitea", "gitea")
    conditions = {c["type"]: c for c in hr["status"]["conditions"]}
    assert conditions["Ready"]["status"] == "False" and conditions["Remediated"]["reason"] == "RollbackSucceeded"
    assert "1.24.6-rootless" in conditions["Released"]["message"] or "newer Gitea" in conditions["Released"]["message"]
    dep = get("apps/v1", "Deployment", "gitea", "gitea")
    assert dep["spec"]["template"]["spec"]["containers"][0]["image"] == good  # the old version serves
    repo = get("source.toolkit.fluxcd.io/v1", "GitRepository", "flux-system", "flux-system")
    assert repo["status"]["conditions"][0]["status"] == "True"  # Flux still reaches the server

    code, out, err = run_cli(capsys, "-c", str(config), "doctor")
    assert code == 1, out + err
    assert "✗ hand-over: HelmRelease gitea/gitea: the last upgrade of release gitea failed" in out
    assert "helm-controller rolled it back" in out and f"at {bad[:12]}" in out
    assert "flux -n gitea suspend helmrelease gitea" in out and f"git revert {bad[:12]}" in out

    # The way out: the fix (here the old values) pushed to the server past Flux, then a reconcile.
    revision = lab.commit_to_server({SERVER_FILE: yaml.safe_dump_all(original, sort_keys=False)}, "Revert")
    lab.flux_reconcile()
    hr = get(HELM_API, "HelmRelease", "gitea", "gitea")
    assert hr["status"]["conditions"][0]["status"] == "True", hr["status"]
    assert revision in lab.flux_clones
    code, out, err = run_cli(capsys, "-c", str(config), "status", "-o", "json")
    assert code == 0, out + err
    states = {c["component"]: c["state"] for c in json.loads(out)["components"]}
    assert states["git-server"] == states["flux"] == "ok" and states["hand-over"] in {"ok", "warn"}
