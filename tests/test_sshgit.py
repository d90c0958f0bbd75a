"""The test SSH Git server: a real `git clone` over real SSH accepts exactly the right credentials."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from seedbed_lab.sshgit import SSHGitServer, generate_keypair, git_ssh_env, make_repo, write_private_key

pytestmark = pytest.mark.skipif(
    not (shutil.which("git") and shutil.which("ssh")), reason="needs the git and OpenSSH (ssh) clients"
)

IN_CLUSTER = "gitea-ssh.gitea.svc.cluster.local"
REPO = "homelab/gitops"
FILES = {"clusters/homelab/kustomization.yaml": "resources: []\n", "README.md": "seedbed test\n"}


@pytest.fixture(scope="module")
def keys() -> dict[str, tuple[str, str]]:
    # Generated per run: no private key is ever committed.
    return {name: generate_keypair(name) for name in ("host", "other-host", "deploy", "stranger")}


@pytest.fixture
def repos(tmp_path: Path) -> Path:
    root = tmp_path / "repos"
    make_repo(root, REPO, FILES)
    return root


def credentials(tmp_path: Path, identity: str, known_hosts: str) -> tuple[Path, Path]:
    """The two files Flux would read from its Secret (``identity``, ``known_hosts``), written as-is."""
    ident = write_private_key(tmp_path / "identity", identity)
    kh = tmp_path / "known_hosts"
    kh.write_text(known_hosts)
    return ident, kh


def clone(server: SSHGitServer, dest: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["git", "clone", "-q", server.url(REPO), str(dest)],
        env=env, capture_output=True, text=True, timeout=60,
    )


def test_clone_with_the_registered_key_and_pinned_host_key(tmp_path, keys, repos):
    host_priv, host_pub = keys["host"]
    deploy_priv, deploy_pub = keys["deploy"]
    # The known_hosts content exactly as seedbed renders it: it names the in-cluster Service.
    ident, kh = credentials(tmp_path, deploy_priv, f"{IN_CLUSTER} {host_pub}\n")
    with SSHGitServer(host_priv, [deploy_pub], repos) as server:
        result = clone(server, tmp_path / "clone", git_ssh_env(ident, kh, host_alias=IN_CLUSTER))
        assert result.returncode == 0, result.stderr
        assert server.commands == [f"git-upload-pack '/{REPO}.git'"]
        assert ("git", True) in server.auth_log
    for name, content in FILES.items():
        assert (tmp_path / "clone" / name).read_text() == content
    log = subprocess.run(["git", "-C", str(tmp_path / "clone"), "log", "--format=%s"],
                         capture_output=True, text=True, check=True)
    assert log.stdout.strip() == "initial commit"


def test_clone_with_known_hosts_naming_host_and_port(tmp_path, keys, repos):
    host_priv, host_pub = keys["host"]
    deploy_priv, deploy_pub = keys["deploy"]
    with SSHGitServer(host_priv, [deploy_pub], repos) as server:
        ident, kh = credentials(tmp_path, deploy_priv, f"[127.0.0.1]:{server.port} {host_pub}\n")
        result = clone(server, tmp_path / "clone", git_ssh_env(ident, kh))
        assert result.returncode == 0, result.stderr
    assert (tmp_path / "clone" / "README.md").exists()


def test_a_different_host_key_fails_verification(tmp_path, keys, repos):
    _, host_pub = keys["host"]
    other_priv, _ = keys["other-host"]
    deploy_priv, deploy_pub = keys["deploy"]
    ident, kh = credentials(tmp_path, deploy_priv, f"{IN_CLUSTER} {host_pub}\n")
    with SSHGitServer(other_priv, [deploy_pub], repos) as server:
        result = clone(server, tmp_path / "clone", git_ssh_env(ident, kh, host_alias=IN_CLUSTER))
        # ssh refuses before authenticating: the server never sees the deploy key.
        assert server.auth_log == []
        assert server.commands == []
    assert result.returncode != 0
    assert "Host key verification failed" in result.stderr
    assert not (tmp_path / "clone" / "README.md").exists()


def test_unknown_host_is_refused_not_trusted(tmp_path, keys, repos):
    host_priv, host_pub = keys["host"]
    deploy_priv, deploy_pub = keys["deploy"]
    # A known_hosts entry for some other name must not be accepted for this host.
    ident, kh = credentials(tmp_path, deploy_priv, f"gitea-ssh.other.svc.cluster.local {host_pub}\n")
    with SSHGitServer(host_priv, [deploy_pub], repos) as server:
        result = clone(server, tmp_path / "clone", git_ssh_env(ident, kh, host_alias=IN_CLUSTER))
    assert result.returncode != 0
    assert "Host key verification failed" in result.stderr


def test_an_unregistered_client_key_is_denied(tmp_path, keys, repos):
    host_priv, host_pub = keys["host"]
    _, deploy_pub = keys["deploy"]
    stranger_priv, _ = keys["stranger"]
    ident, kh = credentials(tmp_path, stranger_priv, f"{IN_CLUSTER} {host_pub}\n")
    with SSHGitServer(host_priv, [deploy_pub], repos) as server:
        result = clone(server, tmp_path / "clone", git_ssh_env(ident, kh, host_alias=IN_CLUSTER))
        assert ("git", False) in server.auth_log
        assert server.commands == []
    assert result.returncode != 0
    assert "Permission denied (publickey)" in result.stderr


def test_only_user_git_is_accepted(tmp_path, keys, repos):
    host_priv, host_pub = keys["host"]
    deploy_priv, deploy_pub = keys["deploy"]
    ident, kh = credentials(tmp_path, deploy_priv, f"{IN_CLUSTER} {host_pub}\n")
    with SSHGitServer(host_priv, [deploy_pub], repos) as server:
        url = server.url(REPO).replace("git@", "root@")
        result = subprocess.run(["git", "clone", "-q", url, str(tmp_path / "clone")],
                                env=git_ssh_env(ident, kh, host_alias=IN_CLUSTER),
                                capture_output=True, text=True, timeout=60)
    assert result.returncode != 0
    assert "Permission denied" in result.stderr


@pytest.mark.parametrize("path", ["homelab/missing", "../outside", "homelab/gitops.git/../../../etc"])
def test_unknown_or_escaping_repositories_are_refused(tmp_path, keys, repos, path):
    host_priv, host_pub = keys["host"]
    deploy_priv, deploy_pub = keys["deploy"]
    ident, kh = credentials(tmp_path, deploy_priv, f"{IN_CLUSTER} {host_pub}\n")
    with SSHGitServer(host_priv, [deploy_pub], repos) as server:
        url = f"ssh://git@127.0.0.1:{server.port}/{path}"
        result = subprocess.run(["git", "clone", "-q", url, str(tmp_path / "clone")],
                                env=git_ssh_env(ident, kh, host_alias=IN_CLUSTER),
                                capture_output=True, text=True, timeout=60)
    assert result.returncode != 0
    assert "not found" in result.stderr


def test_push_only_when_allowed(tmp_path, keys, repos):
    host_priv, host_pub = keys["host"]
    deploy_priv, deploy_pub = keys["deploy"]
    ident, kh = credentials(tmp_path, deploy_priv, f"{IN_CLUSTER} {host_pub}\n")
    env = git_ssh_env(ident, kh, host_alias=IN_CLUSTER)
    env.update(GIT_AUTHOR_NAME="t", GIT_AUTHOR_EMAIL="t@t.invalid",
               GIT_COMMITTER_NAME="t", GIT_COMMITTER_EMAIL="t@t.invalid")
    work = tmp_path / "clone"

    def git(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(["git", "-C", str(work), *args], env=env, capture_output=True, text=True,
                              timeout=60)

    for allow in (False, True):
        with SSHGitServer(host_priv, [deploy_pub], repos, allow_push=allow) as server:
            if not work.exists():
                assert clone(server, work, env).returncode == 0
                (work / "new.txt").write_text("pushed\n")
                git("add", "new.txt")
                assert git("commit", "-q", "-m", "second").returncode == 0
            git("remote", "set-url", "origin", server.url(REPO))
            result = git("push", "-q", "origin", "HEAD:main")
            assert (result.returncode == 0) is allow, result.stderr
    head = subprocess.run(["git", "--git-dir", str(repos / f"{REPO}.git"), "log", "-1", "--format=%s", "main"],
                          capture_output=True, text=True, check=True)
    assert head.stdout.strip() == "second"


def test_with_seedbed_generated_keys(tmp_path, repos):
    """The same clone with keys and known_hosts from seedbed.sshkeys, used unchanged."""
    sshkeys = pytest.importorskip("seedbed.sshkeys")
    host = sshkeys.generate_ed25519("gitea host key")
    deploy = sshkeys.generate_ed25519("flux")
    ident, kh = credentials(tmp_path, deploy.private_openssh,
                            sshkeys.known_hosts_line([IN_CLUSTER], host.public_openssh))
    with SSHGitServer(host.private_openssh, [deploy.public_openssh], repos) as server:
        result = clone(server, tmp_path / "clone", git_ssh_env(ident, kh, host_alias=IN_CLUSTER))
    assert result.returncode == 0, result.stderr

    other = sshkeys.generate_ed25519("another host key")
    with SSHGitServer(other.private_openssh, [deploy.public_openssh], repos) as server:
        result = clone(server, tmp_path / "clone2", git_ssh_env(ident, kh, host_alias=IN_CLUSTER))
    assert result.returncode != 0
    assert "Host key verification failed" in result.stderr


def test_a_large_pack_arrives_whole(tmp_path, keys):
    """More than one SSH window of pack data: the exit status must not overtake the output."""
    root = tmp_path / "repos"
    blob = os.urandom(3 * 1024 * 1024).hex()  # incompressible, ~6 MB
    make_repo(root, REPO, {"big.txt": blob})
    host_priv, host_pub = keys["host"]
    deploy_priv, deploy_pub = keys["deploy"]
    ident, kh = credentials(tmp_path, deploy_priv, f"{IN_CLUSTER} {host_pub}\n")
    with SSHGitServer(host_priv, [deploy_pub], root) as server:
        result = clone(server, tmp_path / "clone", git_ssh_env(ident, kh, host_alias=IN_CLUSTER))
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "clone" / "big.txt").read_text() == blob
