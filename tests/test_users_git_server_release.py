"""A repository that already holds its own Git server HelmRelease (issue 11, item 5).

The rule (docs/handoff.md, "Your own Git server release"): a Gitea/Forgejo chart HelmRelease that
deploys into ``gitServer.namespace`` is *the* Git server: seedbed bootstraps with it and commits no
second release; one that deploys elsewhere is a separate server, left alone. The repository is read
as kustomize-controller applies it (seedbed.fluxrepo), before anything is written.
"""

from __future__ import annotations

import subprocess
from typing import Any

import yaml

from conftest import UPSTREAM, run_cli
from seedbed.config import load
from seedbed.render import helmrelease
from seedbed_lab.lab import Lab, make_worktree

HELM_API = "helm.toolkit.fluxcd.io/v2"
USER_FILE = "clusters/homelab/apps/gitea/release.yaml"


def users_release(config: Any, change: Any = None, *, namespace: str = "gitea") -> str:
    """The user's own release: seedbed's hand-over values plus their own settings (an ingress)."""
    source, release = helmrelease.objects(load(config))
    for obj in (source, release):
        obj["metadata"]["namespace"] = namespace
    release["spec"]["values"]["ingress"] = {
        "enabled": True, "className": "traefik",
        "hosts": [{"host": "git.example.org", "paths": [{"path": "/", "pathType": "Prefix"}]}]}
    if change:
        change(release)
    docs = [source, release]
    if namespace != "gitea":  # the user's namespace is theirs to create
        docs.insert(0, {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": namespace}})
    return yaml.safe_dump_all(docs, sort_keys=False)


def worktree_with(lab: Lab, tmp_path, text_of: Any) -> Any:
    """A work tree holding the user's release, and the config pointing at it."""
    tree = tmp_path / "gitops"
    config = lab.write_config(tree)
    make_worktree(tree, {USER_FILE: text_of(config)})
    return config


def plan(capsys, config) -> tuple[int, str, str]:
    return run_cli(capsys, "-c", str(config), "plan", "--manifests", str(UPSTREAM))


def server_has(lab: Lab, path: str) -> bool:
    return subprocess.run(["git", "--git-dir", str(lab.gitea.bare_path("homelab", "gitops")), "cat-file", "-e",
                           f"main:{path}"], capture_output=True).returncode == 0


def test_a_repository_with_its_own_git_server_release_is_bootstrapped_with_it_and_no_second_one(
        lab, tmp_path, capsys):
    config = worktree_with(lab, tmp_path, users_release)
    code, out, err = plan(capsys, config)
    assert code == 0, err
    assert f"uses your HelmRelease gitea/gitea ({USER_FILE}) as the Git server" in out
    assert "git-server.yaml" not in out.split("Commits to the repository:")[1]

    code, out, err = run_cli(capsys, "-c", str(config), "bootstrap", "--manifests", str(UPSTREAM))
    assert code == 0, err
    lab.settle()
    assert not server_has(lab, "clusters/homelab/flux-system/git-server.yaml")
    kustomization = subprocess.run(["git", "--git-dir", str(lab.gitea.bare_path("homelab", "gitops")), "show",
                                    "main:clusters/homelab/flux-system/kustomization.yaml"],
                                   capture_output=True, text=True, check=True).stdout
    assert "git-server.yaml" not in kustomization
    releases = lab.emu.list(HELM_API, "HelmRelease")
    assert [(r["metadata"]["namespace"], r["metadata"]["name"]) for r in releases] == [("gitea", "gitea")]
    assert releases[0]["status"]["conditions"][0]["status"] == "True"
    # The user's settings were installed from the first minute, and Flux now owns their release.
    assert lab.emu.get("networking.k8s.io/v1", "Ingress", "gitea", "gitea")["spec"]["rules"][0]["host"] \
        == "git.example.org"
    assert "kustomize.toolkit.fluxcd.io/name" in releases[0]["metadata"]["labels"]
    assert lab.flux_errors == [] and lab.helm.errors == [] and lab.kustomize_errors == []


def test_a_separate_gitea_in_another_namespace_is_left_alone_and_seedbeds_own_release_is_used(
        lab, tmp_path, capsys):
    def full_featured(release: dict[str, Any]) -> None:
        release["spec"]["values"] = {"postgresql-ha": {"enabled": True}}  # a different server altogether

    config = worktree_with(lab, tmp_path, lambda c: users_release(c, full_featured, namespace="apps"))
    code, out, err = plan(capsys, config)
    assert code == 0, err
    assert (f"HelmRelease apps/gitea (chart gitea, {USER_FILE}) deploys into 'apps', not the Git server's "
            "namespace 'gitea': a separate gitea, left alone") in out
    assert "clusters/homelab/flux-system/git-server.yaml" in out.split("Commits to the repository:")[1]

    # The bootstrap installs seedbed's own, and its hand-over check tells the two apart.
    code, out, err = run_cli(capsys, "-c", str(config), "bootstrap", "--manifests", str(UPSTREAM))
    assert code == 0, err
    assert server_has(lab, "clusters/homelab/flux-system/git-server.yaml")
    assert "the Git server's hand-over to Flux is safe" in err + out
    served = tmp_path / "served"
    subprocess.run(["git", "clone", "-q", str(lab.gitea.bare_path("homelab", "gitops")), str(served)], check=True)
    code, out, err = run_cli(capsys, "-c", str(config), "check-handoff", "--repo", str(served))
    assert code == 0, out + err
    assert f"found: HelmRelease apps/gitea (chart gitea) in {USER_FILE}: a separate gitea (not in 'gitea'), " \
           "not checked" in out + err


def test_a_git_server_release_that_cannot_serve_is_refused_before_any_write_with_every_reason(
        lab, tmp_path, capsys):
    def todays_gitea(release: dict[str, Any]) -> None:
        release["spec"]["releaseName"] = "git"
        values = release["spec"]["values"]
        del values["gitea"]["admin"]  # the chart's gitea_admin with the password from its values.yaml
        values["strategy"] = {"type": "RollingUpdate"}
        values["persistence"]["claimName"] = "gitea-data"

    config = worktree_with(lab, tmp_path, lambda c: users_release(c, todays_gitea))
    code, _, err = run_cli(capsys, "-c", str(config), "bootstrap", "--manifests", str(UPSTREAM))
    assert code != 0
    assert "HelmRelease gitea/gitea (clusters/homelab/apps/gitea/release.yaml) deploys into the Git server's " \
           "namespace 'gitea'" in err
    for reason in ("release name 'git'", "gitea.admin.existingSecret", "strategy.type: 'RollingUpdate'",
                   "'gitea-data'"):
        assert reason in err, reason
    assert "fix: give it the hand-over values of seedbed's own release" in err and "another namespace" in err
    assert "Traceback" not in err
    # Refused while planning: nothing was written to the cluster.
    assert lab.emu.get("v1", "Namespace", "gitea") is None and lab.emu.list(HELM_API, "HelmRelease") == []
