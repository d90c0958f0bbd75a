"""check-handoff: the Git server manifests Flux re-deploys must keep the bootstrap's contract.

Fixtures in tests/fixtures/handoff mark the lines where findings are expected with
``# expect: error`` (or ``warning``, or several: ``# expect: error, warning``). Findings about
a missing key land on the HelmRelease; a values file announces those with
``# expect-release: error, ...``.
"""

from __future__ import annotations

import re
import shutil
from collections import Counter
from pathlib import Path

import pytest
import yaml

from seedbed.config import Config, FluxConfig, GitServerConfig
from seedbed.errors import ConfigError
from seedbed.handoff import (
    RECOMMENDED_VALUES,
    Finding,
    HandoffReport,
    check_handoff,
    recommended_values,
)

FIXTURES = Path(__file__).parent / "fixtures" / "handoff"
MARK = re.compile(r"#\s*expect:\s*([a-z, ]+)$")
RELEASE_MARK = re.compile(r"#\s*expect-release:\s*([a-z, ]+)$")

# The test repositories are whole Flux paths: the cluster syncs their root.
ROOT = FluxConfig(path=".")
CFG = Config(flux=ROOT)

# The HelmRelease that reads a values file through kustomize's configMapGenerator (a common layout).
RELEASE = """\
apiVersion: helm.toolkit.fluxcd.io/v2
kind: HelmRelease
metadata:
  name: gitea
  namespace: gitea
spec:
  interval: 30m
  chart:
    spec:
      chart: gitea
      version: "12.x"
      sourceRef:
        kind: HelmRepository
        name: gitea-charts
        namespace: flux-system
  valuesFrom:
    - kind: ConfigMap
      name: gitea-values
"""
RELEASE_KIND_LINE = 2

KUSTOMIZATION = """\
apiVersion: kustomize.config.k8s.io/v1beta1
kind: Kustomization
namespace: gitea
resources:
  - release.yaml
configMapGenerator:
  - name: gitea-values
    files:
      - values.yaml=values.yaml
configurations:
  - kustomizeconfig.yaml
"""

# kustomize's nameReference for HelmRelease valuesFrom, so the generated name (with its hash) is
# written into the release (the layout of the fluxcd/flux2-kustomize-helm-example repository).
KUSTOMIZECONFIG = """\
nameReference:
  - kind: ConfigMap
    version: v1
    fieldSpecs:
      - path: spec/valuesFrom/name
        kind: HelmRelease
"""


def expected_marks(text: str, file: str) -> Counter[tuple[str, int, str]]:
    marks: Counter[tuple[str, int, str]] = Counter()
    for lineno, line in enumerate(text.splitlines(), start=1):
        if m := MARK.search(line):
            for severity in m.group(1).split(","):
                marks[(file, lineno, severity.strip())] += 1
    return marks


def got(report: HandoffReport) -> Counter[tuple[str, int, str]]:
    return Counter((f.file, f.line, f.severity) for f in report.findings)


def values_repo(tmp_path: Path, values_fixture: str) -> tuple[Path, Counter[tuple[str, int, str]]]:
    """A repository with the fixture as apps/gitea/values.yaml, and the findings it expects."""
    app = tmp_path / "repo" / "apps" / "gitea"
    app.mkdir(parents=True)
    text = (FIXTURES / values_fixture).read_text()
    (app / "values.yaml").write_text(text)
    (app / "release.yaml").write_text(RELEASE)
    (app / "kustomization.yaml").write_text(KUSTOMIZATION)
    (app / "kustomizeconfig.yaml").write_text(KUSTOMIZECONFIG)
    expected = expected_marks(text, "apps/gitea/values.yaml")
    for line in text.splitlines():
        if m := RELEASE_MARK.search(line):
            for severity in m.group(1).split(","):
                expected[("apps/gitea/release.yaml", RELEASE_KIND_LINE, severity.strip())] += 1
    return tmp_path / "repo", expected


def fixture_repo(tmp_path: Path, *fixtures: str) -> tuple[Path, Counter[tuple[str, int, str]]]:
    repo = tmp_path / "repo"
    expected: Counter[tuple[str, int, str]] = Counter()
    for name in fixtures:
        target = repo / "gitea" / name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(FIXTURES / name, target)
        expected += expected_marks(target.read_text(), f"gitea/{name}")
    return repo, expected


def explain(report: HandoffReport) -> str:
    return "\n" + report.format()


# --------------------------------------------------------------------------- values files


def test_real_world_values_pass(tmp_path):
    repo, _expected = values_repo(tmp_path, "values-realworld.yaml")
    report = check_handoff(repo, CFG)
    assert report.ok, explain(report)
    assert report.findings == [], explain(report)
    assert "HelmRelease gitea/gitea (chart gitea) in apps/gitea/release.yaml" in report.found
    # The ConfigMap as applied: kustomize's generator appends a content hash to its name.
    assert any(f.startswith("values for gitea from ConfigMap gitea-values-") and f.endswith("(apps/gitea/values.yaml)")
               for f in report.found), report.found


@pytest.mark.parametrize("fixture", [*sorted(p.name for p in FIXTURES.glob("values-bad-*.yaml")), "values-chart-defaults.yaml"])
def test_bad_values_are_reported_at_the_right_line(tmp_path, fixture):
    repo, expected = values_repo(tmp_path, fixture)
    assert expected, "a bad fixture must mark what it expects"
    report = check_handoff(repo, CFG)
    assert got(report) == expected, explain(report)
    assert not report.ok
    for finding in report.findings:
        assert finding.message and finding.fix


def test_findings_name_the_cause(tmp_path):
    cases = {
        "values-bad-create.yaml": "persistence.create is true",
        "values-bad-claim.yaml": "'gitea-data' is not the bootstrap's 'gitea-shared-storage'",
        "values-bad-root.yaml": "image.rootless is false",
        "values-bad-other-secret.yaml": "not 'gitea-ssh-host-key'",
        "values-bad-no-host-key.yaml": "not mounted from Secret 'gitea-ssh-host-key'",
        "values-bad-ssh-port.yaml": "service.ssh.port is 2222",
        "values-bad-fullname.yaml": "git-ssh",
        "values-bad-postgres.yaml": "new, empty database",
        "values-bad-keys-path.yaml": "does not point into /etc/gitea-ssh-host-key",
    }
    for n, (fixture, text) in enumerate(cases.items()):
        repo, _ = values_repo(tmp_path / str(n), fixture)
        messages = " | ".join(f.message for f in check_handoff(repo, CFG).errors)
        assert text in messages, (fixture, messages)


def test_chart_defaults_are_checked_like_explicit_values(tmp_path):
    repo, _ = values_repo(tmp_path, "values-chart-defaults.yaml")
    messages = [f.message for f in check_handoff(repo, CFG).errors]
    assert any("the chart's default" in m and "persistence.create" in m for m in messages)
    assert any("postgresql-ha.enabled is true (the chart default)" in m for m in messages)
    assert any("headless" in m and "the chart default" in m for m in messages)
    assert any("host key is not mounted" in m for m in messages)


# --------------------------------------------------------------------------- whole HelmReleases


@pytest.mark.parametrize("fixture", ["release-good.yaml", "release-configmap-good.yaml"])
def test_good_helmreleases_pass(tmp_path, fixture):
    repo, expected = fixture_repo(tmp_path, fixture)
    assert not expected
    report = check_handoff(repo, CFG)
    assert report.findings == [], explain(report)
    assert report.ok


@pytest.mark.parametrize("fixture", ["release-configmap-bad.yaml", "release-target-namespace.yaml",
                                     "release-sops-values.yaml"])
def test_bad_helmreleases(tmp_path, fixture):
    repo, expected = fixture_repo(tmp_path, fixture)
    report = check_handoff(repo, CFG)
    assert got(report) == expected, explain(report)


def test_release_name_from_target_namespace_is_explained(tmp_path):
    repo, _ = fixture_repo(tmp_path, "release-target-namespace.yaml")
    (error,) = check_handoff(repo, CFG).errors
    assert "gitea-gitea-ssh" in error.message and "release name 'gitea-gitea'" in error.message
    assert error.fix == "set fullnameOverride: gitea in the values"


def test_unreadable_values_downgrade_missing_keys_to_warnings(tmp_path):
    repo, _ = fixture_repo(tmp_path, "release-sops-values.yaml")
    report = check_handoff(repo, CFG)
    assert report.ok, explain(report)
    assert any("Secret gitea-secret-values" in f.message and "cannot read" in f.message for f in report.warnings)
    assert any("unless it is set in Secret gitea-secret-values" in f.message for f in report.warnings)


def test_forgejo_chart_matches_only_a_forgejo_bootstrap(tmp_path):
    repo, _ = fixture_repo(tmp_path, "release-forgejo.yaml")
    forgejo = Config(flux=ROOT, git_server=GitServerConfig(flavor="forgejo"))
    report = check_handoff(repo, forgejo)
    assert report.findings == [], explain(report)
    assert "HelmRelease gitea/forgejo (chart forgejo) in gitea/release-forgejo.yaml" in report.found
    errors = check_handoff(repo, CFG).errors
    assert [e.message for e in errors if "bootstrap ran gitea" in e.message]


def test_wrong_namespace(tmp_path):
    repo, _ = fixture_repo(tmp_path, "release-good.yaml")
    path = repo / "gitea" / "release-good.yaml"
    path.write_text(path.read_text().replace("  name: gitea\n  namespace: gitea\n", "  name: gitea\n  namespace: git\n"))
    (error,) = check_handoff(repo, CFG).errors
    assert (error.file, error.line) == ("gitea/release-good.yaml", 14)
    assert "namespace 'git'" in error.message


def test_custom_names_in_seedbed_yaml(tmp_path):
    cfg = Config(flux=ROOT, git_server=GitServerConfig(pvc_name="git-data", ssh_service="git-ssh", http_service="git-http",
                                            host_key_secret="git-host-key"))
    repo, _ = fixture_repo(tmp_path, "release-good.yaml")
    report = check_handoff(repo, cfg)
    text = report.format()
    assert "'git-data'" in text and "git-ssh" in text and "'git-host-key'" in text
    assert "set fullnameOverride: git in the values" in text


# --------------------------------------------------------------------------- recommended values


def helmrelease_with(values: str) -> str:
    indented = "".join(f"    {line}\n" if line else "\n" for line in values.splitlines())
    return RELEASE.split("  valuesFrom:")[0] + "  values:\n" + indented


@pytest.mark.parametrize("git_server", [
    GitServerConfig(),
    GitServerConfig(flavor="forgejo"),
    GitServerConfig(namespace="forge", pvc_name="forge-data", ssh_service="forge-ssh", http_service="forge-http",
                    host_key_secret="forge-host-key"),
], ids=["default", "forgejo", "custom-names"])
def test_recommended_values_pass_their_own_lint(tmp_path, git_server):
    cfg = Config(flux=ROOT, git_server=git_server)
    values = recommended_values(cfg)
    yaml.safe_load(values)  # valid YAML on its own
    release = helmrelease_with(values).replace("namespace: gitea", f"namespace: {git_server.namespace}")
    if git_server.flavor == "forgejo":
        release = release.replace("chart: gitea", "chart: forgejo")
    (tmp_path / "release.yaml").write_text(release)
    report = check_handoff(tmp_path, cfg)
    assert report.findings == [], explain(report)


def test_recommended_values_constant_is_the_default_rendering():
    assert recommended_values(Config()) == RECOMMENDED_VALUES
    values = yaml.safe_load(RECOMMENDED_VALUES)
    assert values["persistence"] == {"enabled": True, "create": False, "mount": True,
                                     "claimName": "gitea-shared-storage"}
    assert values["fullnameOverride"] == "gitea"
    assert values["extraVolumes"][0]["secret"]["secretName"] == "gitea-ssh-host-key"


def test_service_names_no_chart_can_give_are_refused_with_the_config():
    """The charts name their Services <fullname>-http and <fullname>-ssh: any other pair could never be
    served after the hand-over, so the config is refused where it is read, not found out later."""
    with pytest.raises(ConfigError, match=r"gitServer\.httpService: 'web' and sshService 'ssh' are not a pair"):
        Config(flux=ROOT, git_server=GitServerConfig(ssh_service="ssh", http_service="web"))
    cfg = Config(flux=ROOT, git_server=GitServerConfig(ssh_service="git-ssh", http_service="git-http"))
    assert yaml.safe_load(recommended_values(cfg))["fullnameOverride"] == "git"


# --------------------------------------------------------------------------- plain manifests


def test_plain_manifests_pass(tmp_path):
    repo, _ = fixture_repo(tmp_path, "plain-good.yaml")
    report = check_handoff(repo, CFG)
    assert report.findings == [], explain(report)
    assert "Deployment gitea/gitea in gitea/plain-good.yaml" in report.found
    assert "Service gitea/gitea-ssh in gitea/plain-good.yaml" in report.found


@pytest.mark.parametrize("fixture", ["plain-bad.yaml", "plain-bad-service-name.yaml", "plain-statefulset.yaml"])
def test_bad_plain_manifests(tmp_path, fixture):
    repo, expected = fixture_repo(tmp_path, fixture)
    assert expected
    report = check_handoff(repo, CFG)
    assert got(report) == expected, explain(report)
    assert not report.ok


def test_plain_manifests_without_the_host_key(tmp_path):
    repo, _ = fixture_repo(tmp_path, "plain-good.yaml")
    path = repo / "gitea" / "plain-good.yaml"
    text = path.read_text()
    text = text.replace("            - name: ssh-host-key\n              mountPath: /etc/gitea-ssh-host-key\n"
                        "              readOnly: true\n", "")
    path.write_text(text)
    (error,) = check_handoff(repo, CFG).errors
    assert "never mounted" in error.message
    assert error.line == text.splitlines().index("        - name: ssh-host-key") + 1


# --------------------------------------------------------------------------- nothing, or noise


def test_nothing_found_is_a_warning(tmp_path):
    (tmp_path / "clusters" / "homelab").mkdir(parents=True)
    (tmp_path / "clusters" / "homelab" / "podinfo.yaml").write_text(
        "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: podinfo\n")
    (tmp_path / ".git").mkdir()
    (tmp_path / ".git" / "gitea.yaml").write_text((FIXTURES / "values-bad-root.yaml").read_text())
    report = check_handoff(tmp_path, CFG)
    assert report.ok
    (warning,) = report.findings
    assert warning.severity == "warning" and warning.file == "." and warning.line == 0
    assert "nothing manages gitea" in warning.message
    assert report.found == []


def test_a_path_kustomize_cannot_build_is_named_and_never_called_ok(tmp_path):
    """kustomize-controller lists every .yaml file of a path without kustomization.yaml
    (fluxcd/pkg kustomize/kustomize_generator.go generateKustomization), so broken YAML fails the
    whole path, as Flux would; nothing in it is checked, and the report does not say OK."""
    (tmp_path / "chart" / "templates").mkdir(parents=True)
    (tmp_path / "chart" / "templates" / "svc.yaml").write_text("name: {{ .Release.Name }}\n  bad: [\n")
    (tmp_path / "gitea.yaml").write_text("kind: HelmRelease\nmetadata: {name: gitea\n")
    report = check_handoff(tmp_path, CFG)
    build, nothing = report.findings
    assert (build.file, build.severity) == (".", "warning")
    assert "cannot be built" in build.message and "chart/templates/svc.yaml" in build.message
    assert nothing.severity == "unverified" and "could not be read (flux-system/flux-system)" in nothing.message
    assert not report.ok
    assert report.format().splitlines()[-1] == "hand-over NOT verified: 0 error(s), 1 warning(s), 1 not verified"


def test_finding_format():
    f = Finding("apps/gitea/values.yaml", 12, "error", "image.rootless is false", "set image.rootless: true")
    assert str(f) == "apps/gitea/values.yaml:12: error: image.rootless is false"
    report = HandoffReport([f], ["HelmRelease gitea/gitea (chart gitea) in apps/gitea/release.yaml"])
    assert report.format().splitlines() == [
        "found: HelmRelease gitea/gitea (chart gitea) in apps/gitea/release.yaml",
        "apps/gitea/values.yaml:12: error: image.rootless is false",
        "  fix: set image.rootless: true",
        "hand-over would break: 1 error(s), 0 warning(s)",
    ]


@pytest.mark.parametrize("flavor", ["gitea", "forgejo"])
def test_the_git_server_file_seedbed_commits_passes(tmp_path, flavor):
    """The HelmRelease seedbed applies and commits as flux-system/git-server.yaml keeps the contract."""
    from seedbed.render.helmrelease import repo_file

    cfg = Config(flux=ROOT, git_server=GitServerConfig(flavor=flavor))
    (tmp_path / "git-server.yaml").write_text(repo_file(cfg))
    report = check_handoff(tmp_path, cfg)
    assert report.ok, explain(report)
    assert report.findings == []


def test_the_documented_values_are_the_recommended_ones():
    doc = (Path(__file__).parent.parent / "docs" / "handoff.md").read_text()
    indented = "\n".join(f"    {line}" if line else "" for line in RECOMMENDED_VALUES.splitlines())
    assert indented in doc, "docs/handoff.md is out of date: re-render the values block from RECOMMENDED_VALUES"


def test_json_form(tmp_path):
    repo, _ = values_repo(tmp_path, "values-bad-root.yaml")
    data = check_handoff(repo, CFG).as_dict()
    assert data["ok"] is False
    assert data["findings"][0]["file"] == "apps/gitea/values.yaml" and data["findings"][0]["severity"] == "error"


def test_the_readme_example_output_is_a_real_run():
    """The README's hand-over section shows check-handoff's output on tests/fixtures/handoff/readme-example."""
    readme = (Path(__file__).parent.parent / "README.md").read_text()
    block = readme.split("<!-- check-handoff example:", 1)[1].split("```console\n$ seedbed check-handoff\n", 1)[1]
    shown = block.split("```", 1)[0].rstrip("\n")
    report = check_handoff(FIXTURES / "readme-example", Config())
    assert shown == report.format(), "README.md's check-handoff example is out of date: paste a new run"
