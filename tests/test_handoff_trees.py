"""check-handoff on real public homelab repositories (../shared/fixtures/upstream/gitops-trees/, see
SOURCES.md there): the exact findings for each, read as kustomize-controller applies the tree.

The seedbed.yaml for each names the namespace the tree's Git server runs in (and Forgejo where it
runs Forgejo), as a user adopting that repository would; every other name is seedbed's default, so
the findings are the real differences between the tree's Git server and seedbed's bootstrap.
"""

from __future__ import annotations

import pytest

from seedbed.config import Config, FluxConfig, GitServerConfig
from seedbed.handoff import check_handoff

GITEA = "kubernetes/apps/default/gitea/app/helmrelease.yaml"

TREES = {
    # Official Gitea chart; namespace from the Flux Kustomization's targetNamespace and the parent
    # kustomization.yaml; eight valuesFrom entries of one ExternalSecret-made Secret.
    "marcolongol-homelab-cluster": ("kubernetes/flux/cluster", {"namespace": "default"}, [
        (GITEA, 4, "warning", "the SSH host key is not mounted from Secret 'gitea-ssh-host-key'"),
        (GITEA, 42, "warning", "valuesFrom Secret gitea-secret: cannot read it (ExternalSecret gitea-secret creates "
                               "it on the cluster)"),
        (GITEA, 64, "error", "DB_TYPE 'postgres'"),
        (GITEA, 94, "error", "the claim 'gitea' is not the bootstrap's 'gitea-shared-storage'"),
    ], "HelmRelease default/gitea (chart gitea) in " + GITEA),
    # Official Forgejo chart through a base/prod overlay, values from a configMapGenerator with a
    # nameReference configuration, ${FORGEJO_DOMAIN} from a SOPS Secret.
    "lordmathis-dev-cluster": ("clusters/prod", {"namespace": "forgejo", "flavor": "forgejo"}, [
        ("apps/prod/forgejo/release.yaml", 4, "error", "the SSH Service would be forgejo-ssh"),
        ("apps/prod/forgejo/release.yaml", 4, "warning", "the HTTP Service would be forgejo-http"),
        ("apps/prod/forgejo/values.yaml", 1, "error", "persistence.create is true (the chart's default)"),
        ("apps/prod/forgejo/values.yaml", 55, "error", "the SSH host key is not mounted from Secret"),
    ], "HelmRelease forgejo/forgejo (chart forgejo) in apps/prod/forgejo/release.yaml"),
    # Gitea through bjw-s app-template: found by its image, checked where the values tell, never OK.
    # Two app paths do not build (the fixture leaves out their program files, so Flux would fail
    # them too), and one file holds a plain `=` that PyYAML cannot read.
    "Tomyail-talos-cluster": ("kubernetes/flux/cluster", {"namespace": "default"}, [
        (GITEA, 3, "error", "the SSH host key is not mounted from Secret 'gitea-ssh-host-key' (the values never name it)"),
        (GITEA, 3, "unverified", "HelmRelease gitea runs gitea through chart 'app-template', whose templates seedbed "
                                 "does not know"),
        (GITEA, 89, "error", "the Git server mounts claim 'gitea', not the bootstrap's 'gitea-shared-storage'"),
        ("kubernetes/apps/default/openclaw/ks.yaml", 4, "warning",
         "Flux Kustomization default/openclaw cannot be built from ./kubernetes/apps/default/openclaw/app: loading KV "
         "pairs"),
        ("kubernetes/apps/default/webtop/ks.yaml", 4, "warning",
         "Flux Kustomization default/webtop cannot be built from ./kubernetes/apps/default/webtop/app"),
        ("kubernetes/apps/observability/kube-prometheus-stack/app/alertmanagerconfig.yaml", 0, "warning",
         "seedbed cannot read an object of this file as built"),
    ], "HelmRelease default/gitea (chart app-template, image ghcr.io/go-gitea/gitea:1.27.2-rootless) in " + GITEA),
}


@pytest.mark.parametrize("tree", sorted(TREES))
def test_real_trees_give_exactly_these_findings(tree, upstream):
    flux_path, git_server, expected, found = TREES[tree]
    cfg = Config(flux=FluxConfig(path=flux_path), git_server=GitServerConfig(**git_server))
    report = check_handoff(upstream(f"gitops-trees/{tree}"), cfg)
    got = [(f.file, f.line, f.severity, f.message) for f in report.findings]
    assert [g[:3] for g in got] == [e[:3] for e in expected], report.format()
    for (*_, message), (*_, start) in zip(got, expected, strict=True):
        assert message.startswith(start), message
    assert found in report.found
    assert not report.ok
    # Namespaces come from kustomize and Flux, not from metadata.namespace alone.
    assert not any("names no namespace" in f.message for f in report.findings)
    for f in report.findings:
        assert f.fix
