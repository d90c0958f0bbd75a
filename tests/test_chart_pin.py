"""The Git server's chart archive is locked by its sha256 (issue 11: pin the chart like the release
manifests).

helm-controller cannot verify a chart from an HTTP Helm repository by digest: source-controller
v1.9.x api/v1/helmchart_types.go offers ``spec.verify`` only for OCI Helm repositories (cosign or
notation signatures). It stores the downloaded archive unchanged when no values files are merged
(internal/helm/chart/builder_remote.go, "Use literal chart copy from remote"), so the HelmChart's
``status.artifact.digest`` is the installed archive's sha256. seedbed records it in seedbed.lock on
first use and refuses another archive under the same version afterwards.
"""

from __future__ import annotations

import shutil

import pytest

from conftest import UPSTREAM, run_cli
from seedbed_lab.lab import Lab, make_worktree


@pytest.fixture
def upstream_chart(upstream):
    upstream("gitea-chart-12.4.0")


def test_the_chart_archive_is_recorded_in_the_lock_file_and_a_rebuild_refuses_a_different_one(
        tmp_path, capsys, upstream_chart):
    (tmp_path / "first").mkdir()
    (tmp_path / "rebuild").mkdir()
    with Lab(tmp_path / "first") as lab:
        config = lab.write_config(make_worktree(tmp_path / "first" / "gitops"))
        code, _, err = run_cli(capsys, "-c", str(config), "bootstrap", "--manifests", str(UPSTREAM))
        assert code == 0, err
        assert "gitea chart 12.4.0 archive sha256:" in err and "recorded in seedbed.lock (first use)" in err
        lock = (tmp_path / "first" / "seedbed.lock").read_text()
        recorded = lab.helm.chart_digest(("gitea", "12.4.0")).removeprefix("sha256:")
        assert f"chart-gitea 12.4.0 sha256:{recorded}" in lock

    # A rebuild of the cluster, with the lock file committed beside seedbed.yaml, against a chart
    # repository that now serves other bytes for 12.4.0.
    with Lab(tmp_path / "rebuild") as lab:
        config = lab.write_config(make_worktree(tmp_path / "rebuild" / "gitops"))
        shutil.copy(tmp_path / "first" / "seedbed.lock", tmp_path / "rebuild" / "seedbed.lock")
        lab.helm.served_digests[("gitea", "12.4.0")] = "sha256:" + "0" * 64
        code, _, err = run_cli(capsys, "-c", str(config), "bootstrap", "--manifests", str(UPSTREAM))
        assert code != 0
        assert f"the gitea chart 12.4.0 that source-controller fetched from https://dl.gitea.com/charts/ has " \
               f"sha256 {'0' * 64}, but the lock file at" in err
        assert f"expects {recorded}" in err and "fix: suspend it (flux suspend helmrelease)" in err
        assert "Traceback" not in err
        # Nothing after the Git server ran: no repository, no Flux sync.
        assert lab.emu.get("source.toolkit.fluxcd.io/v1", "GitRepository", "flux-system", "flux-system") is None
