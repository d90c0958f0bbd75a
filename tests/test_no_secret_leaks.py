"""No secret leaks (issue 8): every byte seedbed prints, every log line, every file it leaves behind.

One module-scoped journey runs the user's commands as real processes, with ``-v`` and every Python
logger at DEBUG (tests/crash_runner.py; seedbed has no log-level switch of its own), stdout and
stderr captured: keygen, plan, bootstrap, its re-run, --rotate-keys, status (text and JSON), doctor,
check-handoff, backup, restore --dry-run, restore, and a bootstrap --restore of a fresh cluster.
``$HOME`` and ``$TMPDIR`` of those processes are folders of the test.

Then every generated secret is collected: each version of the Git server's admin password, its SSH
host key, Flux's deploy key (all written to the cluster, seen by an emulator hook), each Gitea token
ever created, the age identity, and the plaintext of the archive (decrypted here with pyrage). None
may appear in any output, nor in any file under the test's folders (git objects included), except
in the encrypted archive itself and in the age identity file the user owns (mode 0600).
"""

from __future__ import annotations

import base64
import io
import json
import tarfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyrage
import pytest

from reliability_helpers import (
    UPSTREAM,
    Homelab,
    RunResult,
    git_objects,
    leaks_in_files,
    leaks_in_text,
    python_with_debug_logging,
)

APPS_SECRETS = {"app-db": {"password": "postgres-password-5be1f07c"},
                "app-api": {"token": "api-token-c41d9e8a27f6"}}


@dataclass
class Journey:
    old: Homelab
    new: Homelab
    runs: list[RunResult]
    archive: Path
    identity: Path
    needles: dict[bytes, str]
    archive_secrets: dict[str, str]


def _apps_secret(name: str, data: dict[str, str]) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": name, "namespace": "apps"},
            "type": "Opaque", "data": {k: base64.b64encode(v.encode()).decode() for k, v in data.items()}}


def _archive_plaintext(archive: Path, identity: Path) -> dict[str, str]:
    """Every value of every Secret in the archive, decrypted independently of seedbed."""
    key = next(line for line in identity.read_text().splitlines() if line.startswith("AGE-SECRET-KEY-"))
    plain = pyrage.decrypt(archive.read_bytes(), [pyrage.x25519.Identity.from_str(key)])
    values: dict[str, str] = {}
    with tarfile.open(fileobj=io.BytesIO(plain)) as tar:
        for member in tar.getmembers():
            if not (member.isfile() and member.name.startswith("secrets/")):
                continue
            obj = json.loads(tar.extractfile(member).read())  # type: ignore[union-attr]
            for k, v in (obj.get("data") or {}).items():
                values[base64.b64decode(v).decode()] = f"archive entry {member.name} {k}"
    return values


@pytest.fixture(scope="module")
def journey(tmp_path_factory, upstream_files) -> Iterator[Journey]:
    root = tmp_path_factory.mktemp("leaks")
    debug = python_with_debug_logging()
    runs: list[RunResult] = []
    with Homelab(root / "old", ledger_namespaces=("apps",)) as old:

        def run(h: Homelab, *args: str, ok: bool = True) -> RunResult:
            result = h.seedbed("-v", *args, argv0=debug)
            runs.append(result)
            if ok:
                assert result.code == 0, f"seedbed {' '.join(args)}: {result.err}"
            return result

        identity = old.home / ".config" / "seedbed" / "age.key"  # keygen's default place
        recipient = run(old, "keygen").out.strip().splitlines()[-1]
        backup = {"recipients": [recipient], "secrets": {"namespaces": ["apps"]}}
        old.config = old.lab.write_config(old.worktree, backup=backup,
                                          repo={"authorizedKeys": [str(old.home / ".ssh" / "id_ed25519.pub")]})
        manifests = ("--manifests", str(UPSTREAM))
        run(old, "plan", "--out", str(old.root / "plan-before"), *manifests)
        run(old, "bootstrap", *manifests)
        run(old, "bootstrap", *manifests, "--output", "json")
        run(old, "bootstrap", *manifests, "--rotate-keys")
        run(old, "plan", "--out", str(old.root / "plan-after"), "--output", "json", *manifests)
        run(old, "status")
        run(old, "status", "--output", "json")
        run(old, "doctor")
        run(old, "check-handoff", ok=False)  # exit 1 while the repository has no Git server manifests
        old.lab.emu.put({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "apps"}})
        for name, data in APPS_SECRETS.items():
            old.lab.emu.put(_apps_secret(name, data))
        archive = old.root / "backups" / "homelab.age"
        archive.parent.mkdir()
        run(old, "backup", "-o", str(archive), "--skip-volumes")
        run(old, "restore", str(archive), "--dry-run")
        run(old, "restore", str(archive))
        run(old, "restore", str(archive), "--force")

        with Homelab(root / "new", worktree=old.worktree, ledger_namespaces=("apps",)) as new:
            new.config = new.lab.write_config(old.worktree, backup={**backup, "identityFile": str(identity)},
                                              repo={"authorizedKeys": [str(old.home / ".ssh" / "id_ed25519.pub")]})
            run(new, "bootstrap", *manifests, "--restore", str(archive))
            run(new, "status")
            archive_secrets = _archive_plaintext(archive, identity)
            needles = {**old.secrets.needles(), **new.secrets.needles()}
            key = next(line for line in identity.read_text().splitlines() if line.startswith("AGE-SECRET-KEY-"))
            needles[key.encode()] = "the age identity"
            for value, origin in archive_secrets.items():
                needles[value.encode()] = origin
                needles[base64.b64encode(value.encode())] = origin + " (base64)"
            yield Journey(old, new, runs, archive, identity, needles, archive_secrets)


@pytest.fixture(scope="module")
def upstream_files():
    from conftest import upstream_path

    upstream_path("longhorn-v1.12.1.yaml")
    upstream_path("flux-gotk-components-v2.9.3.yaml")


def test_the_journey_generated_and_archived_the_secrets_it_then_looks_for(journey):
    origins = set(journey.needles.values())
    for what in ("Secret gitea/gitea-admin password", "Secret gitea/gitea-ssh-host-key", "Gitea token 'seedbed'",
                 "Secret flux-system/flux-system identity", "archive entry secrets/apps/app-db.json password",
                 "the age identity"):
        assert any(o.startswith(what) for o in origins), what
    # --rotate-keys made a second deploy key and each run a new token: every version is looked for.
    identities = [v for v, o in journey.old.secrets.values.items() if o == "Secret flux-system/flux-system identity"]
    assert len(identities) >= 2
    tokens = [v for v, o in journey.old.secrets.values.items() if o == "Gitea token 'seedbed'"]
    assert len(tokens) >= 2  # bootstrap, --rotate-keys and backup each log in with a new one
    assert set(APPS_SECRETS["app-db"].values()) <= set(journey.archive_secrets)


def test_no_secret_appears_in_any_output_or_log_line_of_any_command(journey):
    assert len(journey.runs) >= 15
    assert any("DEBUG" in r.err for r in journey.runs)  # the logging really was at DEBUG
    leaks = {f"seedbed {' '.join(r.args[3:])}: {origin}"
             for r in journey.runs for origin in leaks_in_text(r.output, journey.needles)}
    assert sorted(leaks) == []


def test_no_secret_is_left_in_any_file_outside_the_encrypted_archive(journey):
    roots = [journey.old.root, journey.new.root]  # the labs, the work tree, $HOME, $TMPDIR, plan bundles
    # The key files the user owns (mode 0600): the age identity and the signing key keygen made beside it,
    # whose OpenSSH header line every unencrypted ed25519 key shares with Flux's identity.
    signing_key = journey.identity.parent / "signing.key"
    leaks = leaks_in_files(roots, journey.needles, skip=[journey.archive, journey.identity, signing_key])
    assert leaks == []
    assert journey.identity.stat().st_mode & 0o777 == 0o600
    assert signing_key.stat().st_mode & 0o777 == 0o600
    # The archive holds the secrets, encrypted: not one of them readable in its bytes.
    assert leaks_in_text(journey.archive.read_bytes(), journey.needles) == []


def test_the_scanner_finds_a_private_key_line_in_a_file_and_in_a_git_object(tmp_path):
    """The scans above are only worth something if they find what they look for."""
    import subprocess

    from seedbed.sshkeys import generate_ed25519

    private = generate_ed25519("probe").private_openssh
    line = next(x for x in private.splitlines() if len(x) >= 40 and not x.startswith("-----"))
    needles = {line.encode(): "probe key"}
    (tmp_path / "notes.txt").write_text(f"oops: {line}\n")
    repo = tmp_path / "repo"
    subprocess.run(["git", "init", "-q", str(repo)], check=True)
    (repo / "key").write_text(private)
    subprocess.run(["git", "-C", str(repo), "add", "key"], check=True)
    (repo / "key").unlink()
    assert line.encode() in git_objects(repo / ".git")
    found = leaks_in_files([tmp_path], needles)
    assert f"{tmp_path / 'notes.txt'}: probe key" in found
    assert f"{repo / '.git'} (git objects): probe key" in found
