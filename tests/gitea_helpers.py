"""Small helpers shared by test_gitea.py and test_git.py (keys, git commands, a fake Gitea fixture)."""

from __future__ import annotations

import base64
import os
import subprocess
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519

ADMIN = "seedbed-admin"
PASSWORD = "s3cret-admin-password-9f2c"


def ssh_public_key(comment: str = "operator@laptop") -> str:
    """A fresh ed25519 public key line (the tests do not depend on seedbed.sshkeys)."""
    key = ed25519.Ed25519PrivateKey.generate().public_key()
    raw = key.public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH).decode()
    return f"{raw} {comment}"


def git(*args: str, cwd: Path | None = None, check: bool = True, env: dict[str, str] | None = None,
        ) -> subprocess.CompletedProcess[str]:
    """Run the real git with a hermetic config (no global/system files) and a fixed identity."""
    full_env = {
        **os.environ, "GIT_CONFIG_GLOBAL": os.devnull, "GIT_CONFIG_NOSYSTEM": "1", "GIT_TERMINAL_PROMPT": "0",
        "GIT_AUTHOR_NAME": "Op", "GIT_AUTHOR_EMAIL": "op@example.org",
        "GIT_COMMITTER_NAME": "Op", "GIT_COMMITTER_EMAIL": "op@example.org", **(env or {}),
    }
    return subprocess.run(["git", *args], cwd=cwd, env=full_env, capture_output=True, text=True, check=check)


def basic_header(user: str, secret: str) -> str:
    return "Authorization: Basic " + base64.b64encode(f"{user}:{secret}".encode()).decode()


def make_worktree(path: Path, branch: str = "main", files: dict[str, str] | None = None) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    git("init", "-q", f"--initial-branch={branch}", cwd=path)
    for name, text in (files or {"clusters/homelab/README.md": "hello\n"}).items():
        (path / name).parent.mkdir(parents=True, exist_ok=True)
        (path / name).write_text(text)
    git("add", "-A", cwd=path)
    git("commit", "-q", "-m", "initial", cwd=path)
    return path


def commit(path: Path, name: str, text: str, message: str = "change") -> str:
    (path / name).parent.mkdir(parents=True, exist_ok=True)
    (path / name).write_text(text)
    git("add", "-A", cwd=path)
    git("commit", "-q", "-m", message, cwd=path)
    return git("rev-parse", "HEAD", cwd=path).stdout.strip()

