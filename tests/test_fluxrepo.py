"""The repository as kustomize-controller applies it (seedbed.fluxrepo), seen through check-handoff.

Upstream behaviour: fluxcd/pkg kustomize/kustomize_generator.go (generated kustomization.yaml,
targetNamespace and patches appended to the root kustomization, LoadRestrictionsNone) and
kustomize/kustomize_varsub.go (postBuild substitution, the `substitute: disabled` marker).
"""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from seedbed import fluxrepo
from seedbed.config import Config, FluxConfig, GitServerConfig
from seedbed.handoff import RECOMMENDED_VALUES, check_handoff

CFG = Config()  # the Flux path is clusters/homelab


def write(root: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text))
    return root


def flux_ks(name: str, path: str, extra: str = "", source: str = "flux-system") -> str:
    return f"""\
        apiVersion: kustomize.toolkit.fluxcd.io/v1
        kind: Kustomization
        metadata:
          name: {name}
          namespace: flux-system
        spec:
          interval: 10m
          path: {path}
          prune: true
          sourceRef:
            kind: GitRepository
            name: {source}
        {extra}"""


def release(values: str = RECOMMENDED_VALUES, namespace: str = "") -> str:
    body = "".join(f"            {line}\n" if line else "\n" for line in values.splitlines())
    ns = f"\n          namespace: {namespace}" if namespace else ""
    return f"""\
        apiVersion: helm.toolkit.fluxcd.io/v2
        kind: HelmRelease
        metadata:
          name: gitea{ns}
        spec:
          interval: 30m
          chart:
            spec:
              chart: gitea
              sourceRef:
                kind: HelmRepository
                name: gitea-charts
                namespace: flux-system
          values:
{body}"""


def test_namespace_from_target_namespace_is_the_one_applied(tmp_path):
    repo = write(tmp_path, {
        "clusters/homelab/apps.yaml": flux_ks("gitea", "./apps/gitea", "  targetNamespace: gitea\n"),
        "apps/gitea/kustomization.yaml": "resources: [release.yaml]\n",
        "apps/gitea/release.yaml": release(),
    })
    report = check_handoff(repo, CFG)
    assert report.findings == [], report.format()
    assert "HelmRelease gitea/gitea (chart gitea) in apps/gitea/release.yaml" in report.found
    assert report.read == "2 Flux Kustomization(s) from clusters/homelab (2 objects)"


def test_namespace_from_a_parent_kustomization_is_the_one_applied(tmp_path):
    repo = write(tmp_path, {
        "clusters/homelab/apps.yaml": flux_ks("apps", "./apps"),
        "apps/kustomization.yaml": "namespace: gitea\nresources: [gitea]\n",
        "apps/gitea/kustomization.yaml": "resources: [release.yaml]\n",
        "apps/gitea/release.yaml": release(),
    })
    report = check_handoff(repo, CFG)
    assert report.findings == [], report.format()


def test_target_namespace_overrides_the_written_namespace(tmp_path):
    repo = write(tmp_path, {
        "clusters/homelab/apps.yaml": flux_ks("gitea", "./apps/gitea", "  targetNamespace: git\n"),
        "apps/gitea/release.yaml": release(namespace="gitea"),
    })
    (error,) = check_handoff(repo, CFG).errors
    assert "deploys into namespace 'git'" in error.message


def test_files_outside_every_flux_path_are_ignored(tmp_path):
    repo = write(tmp_path, {
        "clusters/homelab/podinfo.yaml": "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: podinfo\n",
        "old/gitea.yaml": release("image:\n  rootless: false\n", namespace="gitea"),
    })
    report = check_handoff(repo, CFG)
    (warning,) = report.findings
    assert "no Git server in what Flux applies from clusters/homelab" in warning.message


def test_kustomizations_of_another_source_are_not_followed(tmp_path):
    repo = write(tmp_path, {
        "clusters/homelab/apps.yaml": flux_ks("apps", "./apps", source="someone-elses-repo"),
        "apps/release.yaml": release("image:\n  rootless: false\n", namespace="gitea"),
    })
    assert "no Git server" in check_handoff(repo, CFG).findings[0].message


def test_flux_patches_are_applied(tmp_path):
    patch = """\
          patches:
            - patch: |
                - op: replace
                  path: /spec/values/persistence/claimName
                  value: other-claim
              target:
                kind: HelmRelease
        """
    repo = write(tmp_path, {
        "clusters/homelab/apps.yaml": flux_ks("gitea", "./apps/gitea", "  targetNamespace: gitea\n" + patch),
        "apps/gitea/release.yaml": release(),
    })
    (error,) = check_handoff(repo, CFG).errors
    assert "'other-claim' is not the bootstrap's" in error.message
    # The patched key is reported where the release writes it.
    assert error.file == "apps/gitea/release.yaml"
    lines = (repo / "apps/gitea/release.yaml").read_text().splitlines()
    assert error.line == next(n for n, line in enumerate(lines, 1) if "claimName:" in line)


def test_postbuild_substitution_from_the_repository(tmp_path):
    values = RECOMMENDED_VALUES.replace("claimName: gitea-shared-storage", "claimName: ${CLAIM}") \
        .replace("port: 22\n", "port: ${SSH_PORT:=22}\n")
    post = """\
          postBuild:
            substitute:
              CLAIM: gitea-shared-storage
            substituteFrom:
              - kind: ConfigMap
                name: cluster-vars
        """
    repo = write(tmp_path, {
        "clusters/homelab/vars.yaml": "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: cluster-vars\n"
                                      "  namespace: flux-system\ndata:\n  CLAIM: wrong-claim\n",
        "clusters/homelab/apps.yaml": flux_ks("gitea", "./apps/gitea", "  targetNamespace: gitea\n" + post),
        "apps/gitea/release.yaml": release(values),
    })
    report = check_handoff(repo, CFG)
    # substitute wins over substituteFrom; ${SSH_PORT:=22} takes its default.
    assert report.findings == [], report.format()


def test_substitution_disabled_keeps_the_text(tmp_path):
    values = RECOMMENDED_VALUES.replace("claimName: gitea-shared-storage", "claimName: ${CLAIM}")
    text = release(values).replace("  name: gitea\n", "  name: gitea\n          annotations:\n"
                                   "            kustomize.toolkit.fluxcd.io/substitute: disabled\n", 1)
    repo = write(tmp_path, {
        "clusters/homelab/apps.yaml": flux_ks("gitea", "./apps/gitea", "  targetNamespace: gitea\n"
                                              "          postBuild: {substitute: {CLAIM: gitea-shared-storage}}\n"),
        "apps/gitea/release.yaml": text,
    })
    (error,) = check_handoff(repo, CFG).errors
    assert "'${CLAIM}' is not the bootstrap's" in error.message


def test_eight_valuesfrom_entries_of_one_secret_are_one_finding(tmp_path):
    entries = "".join(f"    - kind: Secret\n      name: gitea-secret\n      valuesKey: k{i}\n"
                      f"      targetPath: gitea.config.k{i}\n" for i in range(8))
    text = textwrap.dedent(release()) + "  valuesFrom:\n" + entries
    (tmp_path / "clusters/homelab").mkdir(parents=True)
    (tmp_path / "clusters/homelab/release.yaml").write_text(text.replace("name: gitea\n", "name: gitea\n  namespace: gitea\n", 1))
    (tmp_path / "clusters/homelab/secret.sops.yaml").write_text(
        "apiVersion: v1\nkind: Secret\nmetadata:\n  name: gitea-secret\n  namespace: gitea\n"
        "stringData:\n  k0: ENC[AES256_GCM,data:abc=,type:str]\nsops:\n  version: 3.9.0\n")
    report = check_handoff(tmp_path, CFG)
    (warning,) = report.findings
    assert "valuesFrom Secret gitea-secret: cannot read it (it is SOPS-encrypted" in warning.message
    assert warning.message.count("gitea-secret") == 1
    assert report.unreadable == ["clusters/homelab/secret.sops.yaml"]
    assert report.format().count("secret.sops.yaml") == 2  # the not-readable line and the finding


def test_a_tree_without_the_flux_path_applies_nothing(tmp_path):
    """seedbed commits only clusters/<name>/flux-system/ itself: a tree without the folder gives Flux nothing."""
    report = check_handoff(tmp_path, Config(flux=FluxConfig(path="clusters/lab")))
    (warning,) = report.findings  # one cause, one message: no "no Git server found" on top
    assert warning.severity == "warning" and "Flux path clusters/lab is not in the repository" in warning.message


def test_a_chart_seedbed_does_not_know_is_never_ok(tmp_path):
    values = """\
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
    text = release(textwrap.dedent(values), namespace="gitea").replace("chart: gitea", "chart: app-template")
    repo = write(tmp_path, {"clusters/homelab/gitea.yaml": text})
    report = check_handoff(repo, CFG)
    (unverified,) = report.findings
    assert unverified.severity == "unverified" and not report.ok
    assert "chart 'app-template'" in unverified.message and "the Service names" in unverified.message
    assert "no existingClaim" not in unverified.message  # the claim, host key and port were checked
    assert report.format().splitlines()[-1] == "hand-over NOT verified: 0 error(s), 0 warning(s), 1 not verified"


def test_no_kustomize_names_both_tools(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(fluxrepo.KustomizeError) as e:
        fluxrepo.find_kustomize()
    assert "`kustomize`" in str(e.value) and "`kubectl`" in str(e.value)
    assert e.value.fix and "kubectl" in e.value.fix


def test_a_git_server_found_twice_is_reported_once(tmp_path):
    """Two Flux Kustomizations applying one path: each finding is said once."""
    repo = write(tmp_path, {
        "clusters/homelab/a.yaml": flux_ks("a", "./apps/gitea", "  targetNamespace: gitea\n"),
        "clusters/homelab/b.yaml": flux_ks("b", "./apps/gitea", "  targetNamespace: gitea\n"),
        "apps/gitea/release.yaml": release("image:\n  rootless: false\n" + RECOMMENDED_VALUES.split("image:\n  rootless: true"
                                                                                                  "  # same /data layout and built-in SSH server as the bootstrap\n")[1]),
    })
    report = check_handoff(repo, Config(git_server=GitServerConfig()))
    assert [f.message for f in report.errors].count(report.errors[0].message) == 1
    assert len(report.errors) == 1, report.format()


def _objects(repo: fluxrepo.Repo, kind: str) -> dict[str, dict]:
    return {o.name: o.data for o in repo.objects if o.kind == kind}


def test_a_substitution_flux_cannot_parse_fails_its_whole_kustomization(tmp_path):
    """kustomize-controller: "post build failed for 'NAME': envsubst error: variable substitution failed:
    missing closing brace", and nothing of that revision is applied (kustomization_controller.go build)."""
    repo = fluxrepo.read(write(tmp_path, {
        "clusters/homelab/apps.yaml": flux_ks("apps", "./apps", "  postBuild: {substitute: {APP: web}}\n"),
        "apps/ok.yaml": "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: ok, namespace: default}\ndata: {a: '${APP}'}\n",
        "apps/bad.yaml": "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: bad, namespace: default}\n"
                         "data: {a: '${APP-fallback}'}\n",
    }), "clusters/homelab")
    (problem,) = repo.problems
    assert (problem.file, problem.severity) == ("apps/bad.yaml", "warning")
    assert "Flux Kustomization flux-system/apps fails" in problem.message and "(missing closing brace)" in problem.message
    assert "${VAR:=default}" in problem.fix
    assert _objects(repo, "ConfigMap") == {}  # not even the good one: Flux applies none of it


def test_an_invalid_variable_name_fails_the_kustomization_that_reads_it(tmp_path):
    """kustomize_varsub.go varSubstitution checks every name before substituting anything."""
    repo = fluxrepo.read(write(tmp_path, {
        "clusters/homelab/vars.yaml": "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: vars, namespace: flux-system}\n"
                                      "data: {my-var: x, OK: y}\n",
        "clusters/homelab/apps.yaml": flux_ks("apps", "./apps",
                                              "  postBuild: {substituteFrom: [{kind: ConfigMap, name: vars}]}\n"),
        "apps/cm.yaml": "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: cm, namespace: default}\ndata: {a: '${OK}'}\n",
    }), "clusters/homelab")
    (problem,) = repo.problems
    assert (problem.file, problem.line) == ("clusters/homelab/apps.yaml", 2)
    assert "postBuild variable name 'my-var' is invalid" in problem.message
    assert "cm" not in _objects(repo, "ConfigMap")


def test_a_double_dollar_is_one_dollar_only_where_flux_substitutes(tmp_path):
    """Upstream's scanner turns every ``$$`` into ``$`` in an object it substitutes, and substitutes
    only under a Kustomization that has variables (``len(vars) > 0``)."""
    secret = "apiVersion: v1\nkind: ConfigMap\nmetadata: {{name: {n}, namespace: default}}\ndata: {{hash: pa$$word}}\n"
    repo = fluxrepo.read(write(tmp_path, {
        "clusters/homelab/with.yaml": flux_ks("with", "./with", "  postBuild: {substitute: {A: a}}\n"),
        "clusters/homelab/without.yaml": flux_ks("without", "./without"),
        "with/cm.yaml": secret.format(n="with"),
        "without/cm.yaml": secret.format(n="without"),
    }), "clusters/homelab")
    got = {name: data["data"]["hash"] for name, data in _objects(repo, "ConfigMap").items()}
    assert got == {"with": "pa$word", "without": "pa$$word"}
    assert repo.problems == []


def test_a_variable_written_as_a_number_is_refused_by_the_api_server(tmp_path):
    """The Kustomization CRD (Flux v2.9.3) types spec.postBuild.substitute as a map of strings."""
    repo = fluxrepo.read(write(tmp_path, {
        "clusters/homelab/apps.yaml": flux_ks("apps", "./apps", "  postBuild: {substitute: {PORT: 22, HOST: h}}\n"),
        "apps/cm.yaml": "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: cm, namespace: default}\ndata: {a: '${PORT}'}\n",
    }), "clusters/homelab")
    (problem,) = repo.problems
    assert "postBuild.substitute.PORT is not a string" in problem.message and problem.fix == 'quote the value: PORT: "..."'


def test_a_read_whose_build_failed_may_change_without_a_commit(tmp_path):
    """A failed build may have failed fetching a remote base: a check of such a read is not kept for
    the next run (state.CheckMemo); a read of the tree alone is."""
    ok = fluxrepo.read(write(tmp_path / "ok", {
        "clusters/homelab/apps.yaml": flux_ks("apps", "./apps"),
        "apps/cm.yaml": "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: cm, namespace: default}\n",
    }), "clusters/homelab")
    assert ok.self_contained
    broken = fluxrepo.read(write(tmp_path / "broken", {
        "clusters/homelab/apps.yaml": flux_ks("apps", "./apps"),
        "apps/kustomization.yaml": "resources: [missing.yaml]\n",
    }), "clusters/homelab")
    assert not broken.self_contained


def test_substitute_strategy_always_substitutes_without_a_variable(tmp_path):
    """kustomize-controller v1.9.4 api/v1 GetSubstituteStrategy; fluxcd/pkg kustomize v1.35.4
    kustomize_varsub.go: ``len(vars) > 0 || options.Always``."""
    cm = "apiVersion: v1\nkind: ConfigMap\nmetadata: {{name: {n}, namespace: default}}\ndata: {{size: '${{SIZE:=1Gi}}'}}\n"
    repo = fluxrepo.read(write(tmp_path, {
        "clusters/homelab/always.yaml": flux_ks("always", "./always", "  postBuild: {substituteStrategy: Always}\n"),
        "clusters/homelab/default.yaml": flux_ks("default", "./default", "  postBuild: {}\n"),
        "always/cm.yaml": cm.format(n="always"),
        "default/cm.yaml": cm.format(n="default"),
    }), "clusters/homelab")
    assert {name: data["data"]["size"] for name, data in _objects(repo, "ConfigMap").items()} == {
        "always": "1Gi", "default": "${SIZE:=1Gi}"}
