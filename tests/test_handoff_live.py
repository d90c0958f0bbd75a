"""The live hand-over (``seedbed.handoff.check_live``): the running Git server is still the bootstrap's."""

from __future__ import annotations

import copy

import pytest

from conftest import upstream_path
from seedbed.config import Config
from seedbed.handoff import HostKeys, check_live

CFG = Config()
KEY = "SHA256:pinned"
READY = {"status": {"conditions": [{"type": "Ready", "status": "True"}],
                    "artifact": {"revision": "main@sha1:abc123"}}}


@pytest.fixture(scope="module")
def bootstrap_objects():
    """What runs after bootstrap: the pinned chart rendered for seedbed's HelmRelease (the lab's
    helm-controller reads the real chart files)."""
    from seedbed.render import helmrelease
    from seedbed_lab.emulator.helm_controller import CHART_DIRS, Chart, release_name, release_namespace

    hr = next(o for o in helmrelease.objects(CFG) if o["kind"] == "HelmRelease")
    spec = hr["spec"]["chart"]["spec"]
    chart = Chart(upstream_path(CHART_DIRS[(spec["chart"], spec["version"])]))
    objs = chart.render(release_name(hr), release_namespace(hr), hr["spec"].get("values") or {})
    service = next(o for o in objs if o["kind"] == "Service" and o["metadata"]["name"] == "gitea-ssh")
    workload = next(o for o in objs if o["kind"] in {"Deployment", "StatefulSet"})
    return service, workload


SAME = HostKeys(KEY, KEY, KEY)


def run(service, workload, keys=SAME, repo=READY, head="abc123"):
    return check_live(CFG, service=service, workload=workload, host_keys=keys, git_repository=repo, branch_head=head)


def test_the_bootstrap_server_passes(bootstrap_objects):
    assert run(*bootstrap_objects) == []


def test_a_broken_hand_over_says_what_changed_and_how_back(bootstrap_objects):
    service, workload = copy.deepcopy(bootstrap_objects)
    service["spec"]["clusterIP"] = "None"
    service["spec"]["ports"][0]["targetPort"] = 22
    pod = workload["spec"]["template"]["spec"]
    for v in pod["volumes"]:
        if "persistentVolumeClaim" in v:
            v["persistentVolumeClaim"]["claimName"] = "gitea-new"
    repo = {"status": {"conditions": [{"type": "Ready", "status": "False", "message": "unable to clone: host key mismatch"}]}}
    findings = run(service, workload, HostKeys(KEY, KEY, "SHA256:other"), repo)
    messages = [f.message for f in findings]
    assert len(messages) == 5, messages
    assert any("sends port 22 to 22" in m for m in messages)
    assert any("headless" in m for m in messages)
    assert any("does not mount the claim 'gitea-shared-storage'" in m and "gitea-new" in m for m in messages)
    assert any("presents host key SHA256:other" in m for m in messages)
    assert any("unable to clone: host key mismatch" in m for m in messages)
    assert all("roll the Git server back" in f.fix for f in findings)


def test_a_missing_service_and_workload(bootstrap_objects):
    findings = run(None, None)
    assert [f.file for f in findings] == ["Service gitea/gitea-ssh"] * 2


def test_a_secret_that_is_not_the_pinned_key():
    (finding,) = [f for f in check_live(CFG, service=None, workload=None, host_keys=HostKeys("SHA256:a", KEY),
                                        git_repository=READY) if f.file.startswith("Secret")]
    assert "pins SHA256:pinned" in finding.message and "seedbed restore" in finding.fix


def test_flux_behind_the_branch_head_is_a_warning(bootstrap_objects):
    (finding,) = run(*bootstrap_objects, head="def456")
    assert finding.severity == "warning" and "not the branch head def456" in finding.message


ROLLED_BACK = {
    "metadata": {"name": "gitea", "namespace": "gitea"},
    "spec": {"releaseName": "gitea"},
    "status": {"conditions": [
        {"type": "Ready", "status": "False", "reason": "RollbackSucceeded",
         "message": "Helm rollback to previous release gitea/gitea with chart gitea@12.4.0 succeeded"},
        {"type": "Released", "status": "False", "reason": "UpgradeFailed",
         "message": "Upgrade of release gitea/gitea with chart gitea@12.4.0 failed: context deadline exceeded"},
        {"type": "Remediated", "status": "True", "reason": "RollbackSucceeded",
         "message": "Helm rollback to previous release gitea/gitea.v1 with chart gitea@12.4.0 succeeded"}]}}


AT_HEAD = {"status": {"conditions": [{"type": "Ready", "status": "True"}],
                      "artifact": {"revision": "main@sha1:abc123def4567"}}}


def test_a_rolled_back_upgrade_says_the_old_version_serves_and_how_to_push_the_fix_past_flux(bootstrap_objects):
    (finding,) = check_live(CFG, service=bootstrap_objects[0], workload=bootstrap_objects[1], host_keys=SAME,
                            git_repository=AT_HEAD, branch_head="abc123def4567", helm_release=ROLLED_BACK)
    assert finding.file == "HelmRelease gitea/gitea" and finding.severity == "error"
    assert "the last upgrade of release gitea failed (Upgrade of release gitea/gitea" in finding.message
    assert "rolled it back" in finding.message and "the previous version serves" in finding.message
    assert "still on main (at abc123def456)" in finding.message
    fix = finding.fix
    assert "`flux -n gitea suspend helmrelease gitea`" in fix and "`helm -n gitea rollback gitea`" in fix
    assert "kubectl -n gitea port-forward svc/gitea-http 3000:3000" in fix and "git revert abc123def456" in fix
    assert "git push http://localhost:3000/homelab/gitops.git main" in fix
    assert "`flux -n gitea resume helmrelease gitea`" in fix


def test_an_upgrade_that_cut_flux_off_says_the_fix_must_go_past_flux(bootstrap_objects):
    failing = copy.deepcopy(ROLLED_BACK)
    failing["status"]["conditions"] = [{**failing["status"]["conditions"][1], "type": "Ready"}]
    cut_off = {"status": {"conditions": [{"type": "Ready", "status": "False",
                                          "message": "failed to checkout and determine revision: connection refused"}],
                          "artifact": {"revision": "main@sha1:0ld"}}}
    findings = check_live(CFG, service=bootstrap_objects[0], workload=bootstrap_objects[1], host_keys=SAME,
                          git_repository=cut_off, branch_head="abc123", helm_release=failing)
    release = next(f for f in findings if f.file == "HelmRelease gitea/gitea")
    assert "release gitea is not Ready" in release.message
    assert "Flux cannot fetch from the server it is upgrading" in release.message
    assert "suspend helmrelease" in release.fix


def test_a_suspended_git_server_release_is_a_warning_with_how_to_resume(bootstrap_objects):
    suspended = {**copy.deepcopy(ROLLED_BACK), "spec": {"suspend": True}}
    (finding,) = check_live(CFG, service=bootstrap_objects[0], workload=bootstrap_objects[1], host_keys=SAME,
                            git_repository=READY, branch_head="abc123", helm_release=suspended)
    assert finding.severity == "warning" and "resume helmrelease gitea" in finding.fix
