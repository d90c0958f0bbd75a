"""End to end: `seedbed bootstrap` against the emulator, the fake Gitea and the SSH git server."""

from __future__ import annotations

import subprocess

import pytest

from lab import Lab, make_worktree
from seedbed.cli import main


def run_cli(capsys, *args: str) -> tuple[int, str, str]:
    try:
        main(list(args))
        code = 0
    except SystemExit as e:
        code = int(e.code or 0)
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture
def lab(tmp_path, upstream):
    upstream("longhorn-v1.12.1.yaml")
    upstream("flux-gotk-components-v2.9.3.yaml")
    with Lab(tmp_path) as lab:
        yield lab


def bootstrap(capsys, lab: Lab, config, *extra: str) -> tuple[int, str, str]:
    from conftest import UPSTREAM

    return run_cli(capsys, "-c", str(config), "bootstrap", "--manifests", str(UPSTREAM), *extra)


def test_bootstrap_takes_an_empty_cluster_to_flux_syncing_from_the_in_cluster_repository(lab, tmp_path, capsys):
    tree = make_worktree(tmp_path / "gitops")
    config = lab.write_config(tree)
    code, out, err = bootstrap(capsys, lab, config)
    assert code == 0, err
    assert "✗" not in err
    # The repository holds the user's commit and, on top, the flux-system commit.
    head = lab.gitea.branch_commit("homelab", "gitops", "main")
    log = subprocess.run(["git", "--git-dir", str(lab.gitea.bare_path("homelab", "gitops")), "log",
                          "--format=%s", "main"], capture_output=True, text=True, check=True).stdout.splitlines()
    assert log == [log[0], "initial tree"] and "Flux" in log[0]
    # Flux fetched exactly that revision over SSH with the Secret seedbed wrote.
    assert lab.flux_errors == []
    assert head in lab.flux_clones
    repo = lab.emu.get("source.toolkit.fluxcd.io/v1", "GitRepository", "flux-system", "flux-system")
    assert repo["spec"]["url"] == "ssh://git@gitea-ssh.gitea.svc.cluster.local/homelab/gitops.git"
    assert lab.gitea.all_violations() == []
    assert "port-forward svc/gitea-http 3000:3000" in err


def test_a_second_bootstrap_changes_nothing_and_says_so(lab, tmp_path, capsys):
    tree = make_worktree(tmp_path / "gitops")
    config = lab.write_config(tree)
    assert bootstrap(capsys, lab, config)[0] == 0
    tokens = len(lab.gitea.tokens)
    deploy_keys = len(lab.gitea.deploy_keys)
    writes = lab.emu.writes()
    code, out, err = bootstrap(capsys, lab, config)
    assert code == 0, err
    assert "Nothing to do" in err
    assert lab.emu.writes() == writes
    assert len(lab.gitea.tokens) <= max(tokens, 1)
    assert len(lab.gitea.deploy_keys) == deploy_keys == 1
