"""End to end: `seedbed bootstrap` against the emulator, the fake Gitea and the SSH git server."""

from __future__ import annotations

import base64
import os
import subprocess

import pytest

from conftest import APPS_KUSTOMIZATION, run_cli
from seedbed_lab.lab import Lab, make_worktree


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
    code, _out, err = bootstrap(capsys, lab, config)
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
    code, _out, err = bootstrap(capsys, lab, config)
    assert code == 0, err
    assert "Nothing to do" in err
    assert lab.emu.writes() == writes
    assert len(lab.gitea.tokens) <= max(tokens, 1)
    assert len(lab.gitea.deploy_keys) == deploy_keys == 1


def test_a_re_run_does_not_check_the_hand_over_of_a_commit_already_checked(lab, tmp_path, capsys, monkeypatch):
    """The hand-over check clones the server's branch and builds it with kustomize (seconds on a real
    repository). A re-run at the same commit, with the same configuration, says the earlier answer;
    a new commit is checked again."""
    from seedbed import git

    clones: list[str] = []
    real_clone = git.clone

    async def counting_clone(url, dest, **kw):
        clones.append(str(dest))
        return await real_clone(url, dest, **kw)

    monkeypatch.setattr(git, "clone", counting_clone)
    tree = make_worktree(tmp_path / "gitops")
    config = lab.write_config(tree)
    assert bootstrap(capsys, lab, config)[0] == 0
    assert len([c for c in clones if "seedbed-handoff-" in c]) == 1
    head = lab.gitea.branch_commit("homelab", "gitops", "main")

    code, _out, err = bootstrap(capsys, lab, config)
    assert code == 0, err
    assert f"hand-over to Flux is safe (main on the server: HelmRelease gitea/gitea (chart gitea) in " \
           f"clusters/homelab/flux-system/git-server.yaml); checked at {head[:12]}, unchanged" in err
    assert len([c for c in clones if "seedbed-handoff-" in c]) == 1

    # The operator pulls the flux-system commit, commits on top, and runs the bootstrap again.
    env = {**os.environ, "GIT_AUTHOR_NAME": "Op", "GIT_AUTHOR_EMAIL": "op@example.org", "GIT_COMMITTER_NAME": "Op",
           "GIT_COMMITTER_EMAIL": "op@example.org"}
    bare = str(lab.gitea.bare_path("homelab", "gitops"))
    subprocess.run(["git", "-C", str(tree), "pull", "-q", "--ff-only", bare, "main"], check=True, env=env)
    (tree / "apps/notes.md").write_text("a new commit\n")
    subprocess.run(["git", "-C", str(tree), "add", "-A"], check=True, env=env)
    subprocess.run(["git", "-C", str(tree), "commit", "-q", "-m", "notes"], check=True, env=env)
    code, _out, err = bootstrap(capsys, lab, config)
    assert code == 0, err
    assert len([c for c in clones if "seedbed-handoff-" in c]) == 2
    assert "unchanged" not in next(line for line in err.splitlines() if "Hand-over check:" in line)


def test_forgejo_works_with_the_same_provider(tmp_path, upstream, capsys):
    upstream("longhorn-v1.12.1.yaml")
    with Lab(tmp_path, flavor="forgejo") as lab:
        config = lab.write_config(make_worktree(tmp_path / "gitops"), gitServer={"flavor": "forgejo"})
        code, _, err = bootstrap(capsys, lab, config)
        assert code == 0, err
        dep = lab.emu.get("apps/v1", "Deployment", "gitea", "gitea")
        assert "forgejo" in dep["spec"]["template"]["spec"]["containers"][0]["image"]
        assert lab.gitea.all_violations() == []
        assert lab.flux_clones


def test_acme_and_domain_flags_reach_the_cluster_variables_flux_substitutes(lab, tmp_path, capsys):
    config = lab.write_config(make_worktree(tmp_path / "gitops"))
    code, _, err = bootstrap(capsys, lab, config, "--acme", "production", "--domain", "dev.example.net")
    assert code == 0, err
    vars_ = lab.emu.get("v1", "ConfigMap", "cluster-vars", "flux-system")["data"]
    assert vars_["ACME_SERVER"] == "https://acme-v02.api.letsencrypt.org/directory"
    assert vars_["CLUSTER_ISSUER"] == "letsencrypt-production"
    assert vars_["CLUSTER_DOMAIN"] == "dev.example.net"
    ks = lab.emu.get("kustomize.toolkit.fluxcd.io/v1", "Kustomization", "flux-system", "flux-system")
    assert ks["spec"]["postBuild"]["substituteFrom"] == [{"kind": "ConfigMap", "name": "cluster-vars",
                                                          "optional": False}]


def test_flux_credentials_do_not_work_with_another_host_key(lab, tmp_path, capsys):
    """The known_hosts seedbed wrote pins the host key: a server with any other key is refused."""
    from seedbed.sshkeys import generate_ed25519

    config = lab.write_config(make_worktree(tmp_path / "gitops"))
    assert bootstrap(capsys, lab, config)[0] == 0
    secret = lab.emu.get("v1", "Secret", "flux-system", "flux-system")
    repo = lab.emu.get("source.toolkit.fluxcd.io/v1", "GitRepository", "flux-system", "flux-system")
    impostor = generate_ed25519("impostor").private_openssh
    with pytest.raises(RuntimeError, match="Host key verification failed"):
        lab._clone(repo["spec"]["url"], "main", secret, impostor)


def test_status_is_green_after_bootstrap_and_doctor_explains_a_broken_git_server(lab, tmp_path, capsys):
    import json

    config = lab.write_config(make_worktree(tmp_path / "gitops"))
    assert bootstrap(capsys, lab, config)[0] == 0
    code, out, _ = run_cli(capsys, "-c", str(config), "status", "--output", "json")
    report = json.loads(out)
    assert code == 0 and report["ok"]
    states = {c["component"]: c["state"] for c in report["components"]}
    assert states == {"cluster": "ok", "longhorn": "ok", "git-server": "ok", "flux": "ok", "hand-over": "ok",
                      "backup": "warn"}
    # The flags work after the verb too, and status says how to log in without printing the password.
    code, out, _ = run_cli(capsys, "status", "-c", str(config))
    password = lab.emu.get("v1", "Secret", "gitea-admin", "gitea")["data"]["password"]
    assert code == 0 and "port-forward svc/gitea-http 3000:3000" in out
    assert "get secret gitea-admin -o jsonpath='{.data.password}' | base64 -d" in out
    assert password not in out and base64.b64decode(password).decode() not in out
    lab.emu.hold_ready("Deployment", "gitea", "gitea")
    lab.emu.put({**lab.emu.get("apps/v1", "Deployment", "gitea", "gitea"), "status": {}})
    code, out, _ = run_cli(capsys, "-c", str(config), "doctor")
    assert code == 1
    assert "✗ git-server" in out and "fix: kubectl -n gitea describe deployment/gitea" in out


# --------------------------------------------------------------------------- rebuild from a backup

CERT_SECRET_ANNOTATIONS = {
    "cert-manager.io/alt-names": "git.example.org",
    "cert-manager.io/certificate-name": "git",
    "cert-manager.io/common-name": "git.example.org",
    "cert-manager.io/issuer-kind": "ClusterIssuer",
    "cert-manager.io/issuer-name": "letsencrypt-production",
    "cert-manager.io/uri-sans": "",
}


def _cert_manager_objects() -> list[dict]:
    import base64

    def b64(text: str) -> str:
        return base64.b64encode(text.encode()).decode()

    return [
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "apps"}},
        {"apiVersion": "v1", "kind": "Secret", "type": "kubernetes.io/tls",
         "metadata": {"name": "git-tls", "namespace": "apps", "annotations": CERT_SECRET_ANNOTATIONS},
         "data": {"tls.crt": b64("-----BEGIN CERTIFICATE-----\nMIIBfake\n-----END CERTIFICATE-----\n"),
                  "tls.key": b64("-----BEGIN PRIVATE KEY-----\nserving-key-that-must-survive\n-----END PRIVATE KEY-----\n")}},
        {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "letsencrypt-production-account-key",
                                                            "namespace": "cert-manager"},
         "data": {"tls.key": b64("-----BEGIN EC " "PRIVATE KEY-----\nacme-account-key\n-----END EC " "PRIVATE KEY-----\n")}},
        {"apiVersion": "cert-manager.io/v1", "kind": "ClusterIssuer", "metadata": {"name": "letsencrypt-production"},
         "spec": {"acme": {"server": "https://acme-v02.api.letsencrypt.org/directory", "email": "a@example.org",
                           "privateKeySecretRef": {"name": "letsencrypt-production-account-key"},
                           "solvers": [{"http01": {"ingress": {"ingressClassName": "nginx"}}}]}}},
        {"apiVersion": "cert-manager.io/v1", "kind": "Certificate", "metadata": {"name": "git", "namespace": "apps"},
         "spec": {"secretName": "git-tls", "dnsNames": ["git.example.org"],
                  "issuerRef": {"kind": "ClusterIssuer", "name": "letsencrypt-production"}}},
    ]


def _crds_tree(upstream) -> dict[str, str]:
    """A GitOps tree whose cluster folder installs cert-manager's CRDs (as Flux would)."""
    names = ["cert-manager.io_certificates.yaml", "cert-manager.io_issuers.yaml",
             "cert-manager.io_clusterissuers.yaml", "cert-manager.io_certificaterequests.yaml"]
    crds = "\n---\n".join(upstream(f"cert-manager-v1.21.1-crds/{n}").read_text() for n in names)
    return {"clusters/homelab/cert-manager/crds.yaml": crds,
            "clusters/homelab/cert-manager/namespace.yaml":
                "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: cert-manager\n"}


def test_a_rebuilt_cluster_comes_back_from_a_backup(tmp_path, upstream, capsys):
    from seedbed.backup.archive import keygen

    key = tmp_path / "age.key"
    recipient = keygen(key)
    backup_cfg = {"recipients": [recipient], "identityFile": str(key)}
    archive = tmp_path / "homelab.age"
    tree = make_worktree(tmp_path / "gitops", _crds_tree(upstream))  # the operator's one work tree

    # The old cluster: bootstrapped, with certificates cert-manager issued, then backed up.
    (tmp_path / "old").mkdir()
    with Lab(tmp_path / "old") as old:
        config = old.write_config(tree, backup=backup_cfg)
        assert bootstrap(capsys, old, config)[0] == 0
        for obj in _cert_manager_objects():
            old.emu.put(obj)
        originals = {n: old.emu.get("v1", "Secret", n, ns) for ns, n in
                     [("apps", "git-tls"), ("cert-manager", "letsencrypt-production-account-key")]}
        code, _, err = run_cli(capsys, "-c", str(config), "backup", "-o", str(archive))
        assert code == 0, err
        old_head = old.gitea.branch_commit("homelab", "gitops", "main")

    # The new cluster: empty, bootstrapped from the archive.
    (tmp_path / "new").mkdir()
    with Lab(tmp_path / "new") as new:
        secrets_when_flux_started: list[bool] = []
        new.emu.on_apply("Kustomization", lambda emu, obj: secrets_when_flux_started.append(
            emu.get("v1", "Secret", "letsencrypt-production-account-key", "cert-manager") is not None))
        config = new.write_config(tree, backup=backup_cfg)
        code, _, err = bootstrap(capsys, new, config, "--restore", str(archive))
        assert code == 0, err
        for (ns, name), before in ((("apps", "git-tls"), originals["git-tls"]),
                                   (("cert-manager", "letsencrypt-production-account-key"),
                                    originals["letsencrypt-production-account-key"])):
            after = new.emu.get("v1", "Secret", name, ns)
            assert after["data"] == before["data"]  # byte-identical certificate material
            assert after["metadata"].get("annotations") == before["metadata"].get("annotations")
        assert secrets_when_flux_started and all(secrets_when_flux_started)  # restored before Flux started
        cert = new.emu.get("cert-manager.io/v1", "Certificate", "git", "apps")
        assert cert["spec"]["secretName"] == "git-tls"
        assert new.emu.get("cert-manager.io/v1", "ClusterIssuer", "letsencrypt-production") is not None
        # The repository is the archived one (whose tip is already the flux-system commit).
        assert new.gitea.branch_commit("homelab", "gitops", "main") == old_head
        code, out, _ = run_cli(capsys, "-c", str(config), "status", "--output", "json")
        import json

        report = json.loads(out)
        assert {c["component"]: c["state"] for c in report["components"]}["flux"] == "ok"


@pytest.mark.parametrize(("content", "needle"), [
    (None, "no such file"),
    ("-----BEGIN OPENSSH " "PRIVATE KEY-----\nb3BlbnNzaC1rZXktdjEAAAAA\n-----END OPENSSH " "PRIVATE KEY-----\n",
     "private key"),
    ("hello world\n", "not"),
])
def test_a_bad_operator_key_file_is_one_clear_error(lab, tmp_path, capsys, content, needle):
    key = tmp_path / "id_ed25519.pub"
    if content is not None:
        key.write_text(content)
    config = lab.write_config(make_worktree(tmp_path / "gitops"), repo={"authorizedKeys": [str(key)]})
    code, _, err = bootstrap(capsys, lab, config)
    assert code == 2, err
    assert str(key) in err and needle in err and "fix:" in err and "Traceback" not in err
    assert lab.emu.writes() == 0  # found while planning, before the first write


def test_operator_keys_are_added_once(lab, tmp_path, capsys):
    from seedbed.sshkeys import generate_ed25519

    key = tmp_path / "id_ed25519.pub"
    key.write_text(generate_ed25519("op@laptop").public_openssh + "\n")
    config = lab.write_config(make_worktree(tmp_path / "gitops"), repo={"authorizedKeys": [str(key)]})
    assert bootstrap(capsys, lab, config)[0] == 0
    assert bootstrap(capsys, lab, config)[0] == 0
    keys = [k for u in lab.gitea.users for k in lab.gitea.user_keys(u)]
    assert len(keys) == 1




def test_the_certificate_guard_stops_before_flux_when_a_rebuild_would_exceed_lets_encrypt_limits(
        lab, tmp_path, capsys):
    """Five certificates for git.example.org in the last hours (from the backup's ledger: five quick
    rebuilds), a sixth would be requested because its Secret is not in the backup: with production
    issuers, bootstrap refuses (Let's Encrypt gives one back only every 34 hours)."""
    from datetime import UTC, datetime, timedelta

    from seedbed.backup.archive import build, encrypt, keygen, write
    from seedbed.backup.signing import load_signing_key
    from seedbed.certs.ledger import Issuance, Ledger

    key = tmp_path / "age.key"
    recipient = keygen(key)
    now = datetime.now(UTC)
    ledger = Ledger.merge([Issuance(frozenset({"git.example.org"}), now - timedelta(minutes=20 * i + 60), "cluster",
                                    serial=f"0{i}", ca="production") for i in range(5)])
    archive = tmp_path / "old.age"
    signer = load_signing_key(tmp_path / "signing.key")  # made by keygen beside the identity
    write(archive, encrypt(build({"ledger.json": ledger.to_json().encode()}, cluster="homelab", created=now,
                                 signing_key=signer), [recipient]))
    certificate = """apiVersion: cert-manager.io/v1
kind: Certificate
metadata:
  name: git
  namespace: apps
spec:
  secretName: git-tls
  dnsNames: ["git.${CLUSTER_DOMAIN}"]
  issuerRef: {kind: ClusterIssuer, name: "${CLUSTER_ISSUER}"}
"""
    # The guard counts what Flux applies: here through a Flux Kustomization of the cluster's path.
    config = lab.write_config(make_worktree(tmp_path / "gitops", {
        "clusters/homelab/apps.yaml": APPS_KUSTOMIZATION, "apps/git-cert.yaml": certificate}),
                              backup={"recipients": [recipient], "identityFile": str(key)})
    code, _, err = bootstrap(capsys, lab, config, "--restore", str(archive), "--acme", "production")
    assert code == 1, err
    assert "git.example.org" in err and "5" in err
    assert "--acme staging" in err and "--ignore-budget" in err and "--restore" in err
    assert lab.emu.get("source.toolkit.fluxcd.io/v1", "GitRepository", "flux-system", "flux-system") is None
    # The remedies work: staging, or going ahead knowingly.
    assert bootstrap(capsys, lab, config, "--restore", str(archive), "--acme", "staging")[0] == 0


def test_restore_on_a_running_cluster_lists_first_then_restores(tmp_path, upstream, capsys):
    """`seedbed restore --dry-run --output json` names what it would do (never a value); the real
    run restores Secrets and cert-manager objects and says why the repository was left alone."""
    import json

    from seedbed.backup.archive import keygen

    key = tmp_path / "age.key"
    backup_cfg = {"recipients": [keygen(key)], "identityFile": str(key)}
    archive = tmp_path / "homelab.age"
    tree = make_worktree(tmp_path / "gitops", _crds_tree(upstream))
    (tmp_path / "old").mkdir()
    with Lab(tmp_path / "old") as old:
        config = old.write_config(tree, backup=backup_cfg)
        assert bootstrap(capsys, old, config)[0] == 0
        for obj in _cert_manager_objects():
            old.emu.put(obj)
        assert run_cli(capsys, "-c", str(config), "backup", "-o", str(archive))[0] == 0
        key_value = old.emu.get("v1", "Secret", "letsencrypt-production-account-key", "cert-manager")["data"]

    (tmp_path / "new").mkdir()
    with Lab(tmp_path / "new") as new:
        config = new.write_config(tree, backup=backup_cfg)
        for crd in yamlutil_load(_crds_tree(upstream)["clusters/homelab/cert-manager/crds.yaml"]):
            new.emu.put(crd)
        code, out, err = run_cli(capsys, "-c", str(config), "restore", str(archive), "--dry-run", "--output", "json")
        assert code == 0, err
        phases = {p["phase"]: p for p in json.loads(out)}
        names = {(i["kind"], i["name"]) for p in phases.values() for i in p["items"]}
        assert ("Secret", "letsencrypt-production-account-key") in names and ("Certificate", "git") in names
        assert "tls.key" not in out and key_value["tls.key"] not in out
        assert new.emu.writes() == 0
        code, out, err = run_cli(capsys, "-c", str(config), "restore", str(archive))
        assert code == 0, err
        assert new.emu.get("v1", "Secret", "letsencrypt-production-account-key", "cert-manager")["data"] == key_value
        assert new.emu.get("cert-manager.io/v1", "Certificate", "git", "apps") is not None
        assert "bootstrap --restore" in out  # no Git server yet: the repository waits for the bootstrap


def yamlutil_load(text: str) -> list[dict]:
    from seedbed import yamlutil

    return yamlutil.load_all(text)
