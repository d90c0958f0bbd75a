"""Backups carry the SOPS decryption keys (issue 15): the one Secret that is, by definition, stored
nowhere else. Collected from flux-system like the other such Secrets, accepted by the restore
validator, and put back by the restore phase that `bootstrap --restore` runs before Flux."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pyrage
import pytest

from seedbed.backup import archive, make_backup, restore
from seedbed.backup.collect import collect
from seedbed.backup.signing import load_signing_key
from seedbed.backup.validate import Policy, validate
from seedbed.config import Config, from_mapping
from seedbed.steps import bootstrap_steps
from seedbed.steps.base import Options
from test_backup_roundtrip import NOW, connect, ns, secret

IDENTITY = (str(pyrage.x25519.Identity.generate()) + "\n").encode()  # made at test time, never committed


def config(recipient: str, **flux: Any) -> Config:
    return from_mapping({"backup": {"recipients": [recipient]}, "flux": flux})


async def test_the_decryption_secrets_are_collected_and_nothing_else_of_flux_system(emulator, tmp_path: Path):
    kube = await connect(emulator, tmp_path, "source")
    async with kube:
        await kube.create(ns("flux-system"))
        await kube.create(secret("flux-system", "sops-age", {"age.agekey": IDENTITY}))
        await kube.create(secret("flux-system", "my-gpg", {"flux.asc": b"-----BEGIN PGP PRIVATE KEY BLOCK-----"}))
        # Flux's deploy key is made again by every bootstrap: it is not carried.
        await kube.create(secret("flux-system", "flux-system", {"identity": b"-----BEGIN OPENSSH " b"PRIVATE KEY-----"}))
        entries = await collect(kube, config("age1xyz"))
    assert sorted(n for n in entries if n.startswith("secrets/")) == [
        "secrets/flux-system/my-gpg.json", "secrets/flux-system/sops-age.json"]
    contents = validate(entries, Policy.from_config(Config()))
    assert {(s.namespace, s.name) for s in contents.secrets} == {("flux-system", "sops-age"),
                                                                 ("flux-system", "my-gpg")}


async def test_a_rebuild_from_the_archive_alone_puts_the_key_back_before_flux(emulator, tmp_path: Path):
    """The archive is the only copy: restored on an empty cluster, the Secret is as it was, and
    bootstrap --restore runs that phase before the Flux sync."""
    recipient = archive.keygen(tmp_path / "age.key")
    cfg = from_mapping({"backup": {"recipients": [recipient], "identityFile": str(tmp_path / "age.key")}})
    source = await connect(emulator, tmp_path, "source")
    async with source:
        await source.create(ns("flux-system"))
        await source.create(secret("flux-system", "sops-age", {"age.agekey": IDENTITY}))
        result = await make_backup(source, cfg, git_bundle=None, ledger=None, now=NOW,
                                   signing_key=load_signing_key(tmp_path / "signing.key"))
        await source.delete("v1", "Secret", "sops-age", namespace="flux-system")
        path = tmp_path / "backup.age"
        archive.write(path, result.ciphertext)
        opened = archive.open_archive(path, [tmp_path / "age.key"], policy=Policy.from_config(cfg))
        summary = await restore.restore_secrets(source, opened, force=False, dry_run=False)
        assert [i.name for i in summary.items] == ["sops-age"]
        back = await source.get("v1", "Secret", "sops-age", namespace="flux-system")
    assert back is not None and back["data"] == secret("flux-system", "x", {"age.agekey": IDENTITY})["data"]
    names = [s.name for s in bootstrap_steps(Options(restore=path))]
    assert names.index("restore-secrets") < names.index("flux")


# --------------------------------------------------------------------------- the whole rebuild, in the lab

APP_SECRET = {"apiVersion": "v1", "kind": "Secret", "type": "Opaque",
              "metadata": {"name": "lldap-credentials", "namespace": "lldap"}}


def _encrypted_tree(tmp_path: Path, public: str, value: str) -> Path:
    """A GitOps repository as SOPS users keep one: a Flux Kustomization ``apps`` that decrypts with
    Secret sops-age, and a Secret under it encrypted with the real sops CLI to ``public``."""
    import base64

    import yaml

    from seedbed_lab.lab import make_worktree
    from test_flux_repos import app_kustomization, encrypt

    plain = tmp_path / "lldap-credentials.sops.yaml"
    plain.write_text(yaml.safe_dump({**APP_SECRET, "data": {"LLDAP_JWT_SECRET": base64.b64encode(value.encode())
                                                           .decode()}}))
    encrypt(plain, public)
    encrypted = plain.read_text()
    plain.unlink()
    assert value not in encrypted
    return make_worktree(tmp_path / "gitops", {
        "clusters/homelab/apps.yaml": app_kustomization("apps", "./apps", decryption="sops-age"),
        "apps/namespace.yaml": "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: lldap\n",
        "apps/lldap-credentials.sops.yaml": encrypted,
        ".sops.yaml": f"creation_rules:\n  - path_regex: .*\\.sops\\.yaml$\n    encrypted_regex: ^(data|stringData)$\n"
                      f"    age: {public}\n"})


def _reconciled(lab: Any, name: str) -> dict[str, Any]:
    """The Kustomization once the simulated kustomize-controller has set its Ready condition."""
    import time

    for _ in range(600):
        ks = lab.emu.get("kustomize.toolkit.fluxcd.io/v1", "Kustomization", name, "flux-system")
        if any(c.get("type") == "Ready" for c in ((ks or {}).get("status") or {}).get("conditions") or []):
            return ks
        time.sleep(0.05)
    raise AssertionError(f"Kustomization {name} was never reconciled")


def _old_cluster(tmp_path: Path, capsys: Any, *, carried: bool,
                 before_backup: Any = None) -> tuple[Path, Path, Path, str, list[str]]:
    """A cluster bootstrapped with ``flux.sops.ageKeyFiles``, whose Flux decrypted the repository's
    Secret, then backed up. ``carried=False``: the archive of a cluster whose key Secret was gone
    when it was backed up (put there by hand and lost, or an archive from before backups carried it).
    Returns the work tree, the archive, the backup identity, the SOPS identity and the runs' output."""
    import base64

    from conftest import run_cli, upstream_path
    from seedbed.backup.archive import keygen
    from seedbed_lab.lab import Lab
    from test_bootstrap import bootstrap
    from test_flux_repos import age_key

    for name in ("longhorn-v1.12.1.yaml", "flux-gotk-components-v2.9.3.yaml", "gitea-chart-12.4.0"):
        upstream_path(name)  # the lab's bootstrap installs them: skip, naming the file, without them
    backup_key = tmp_path / "backup.key"
    sops_key = tmp_path / "sops" / "keys.txt"
    sops_key.parent.mkdir()
    public = age_key(sops_key)
    identity = next(line for line in sops_key.read_text().splitlines() if not line.startswith("#"))
    tree = _encrypted_tree(tmp_path, public, VALUE)
    archive_path = tmp_path / "homelab.age"
    outputs: list[str] = []
    (tmp_path / "old").mkdir()
    with Lab(tmp_path / "old") as old:
        config = old.write_config(tree, backup={"recipients": [keygen(backup_key)], "identityFile": str(backup_key),
                                                "includeGitServerVolume": False},
                                  flux={"sops": {"ageKeyFiles": [str(sops_key)]}})
        code, out, err = bootstrap(capsys, old, config)
        outputs += [out, err]
        assert code == 0, err
        ks = _reconciled(old, "apps")
        assert [c["reason"] for c in ks["status"]["conditions"]] == ["ReconciliationSucceeded"], ks["status"]
        stored = old.emu.get("v1", "Secret", "lldap-credentials", "lldap")
        assert base64.b64decode(stored["data"]["LLDAP_JWT_SECRET"]).decode() == VALUE
        if not carried:
            old.emu.delete("v1", "Secret", "sops-age", "flux-system")
        if before_backup is not None:
            before_backup(old, config)
        code, out, err = run_cli(capsys, "-c", str(config), "backup", "-o", str(archive_path))
        outputs += [out, err]
        assert code == 0, err
    return tree, archive_path, backup_key, identity, outputs


VALUE = "jwt-" + "0f3c9a7e51d2b864"  # the Secret's plaintext, which only the cluster may hold decrypted


def _rebuild(tmp_path: Path, capsys: Any, tree: Path, archive_path: Path, backup_key: Path, **sections: Any) -> Any:
    """`seedbed bootstrap --restore ARCHIVE` on a new cluster, with a seedbed.yaml that has no
    flux.sops unless ``sections`` gives one (the key file is not on this machine): the archive is
    the only copy of the key."""
    from seedbed_lab.lab import Lab
    from test_bootstrap import bootstrap

    (tmp_path / "new").mkdir()
    new = Lab(tmp_path / "new").start()
    identity = next(line for line in backup_key.read_text().splitlines() if line and not line.startswith("#"))
    recipient = str(pyrage.x25519.Identity.from_str(identity.strip()).to_public())
    config = new.write_config(tree, backup={"recipients": [recipient], "identityFile": str(backup_key),
                                            "includeGitServerVolume": False}, **sections)
    code, out, err = bootstrap(capsys, new, config, "--restore", str(archive_path))
    return new, config, code, out, err


@pytest.mark.parametrize("config_names_the_key", [False, True], ids=["no flux.sops", "flux.sops names a lost file"])
def test_a_rebuild_from_the_archive_alone_decrypts_the_repositorys_secrets(tmp_path: Path, capsys: Any,
                                                                          config_names_the_key: bool) -> None:
    """The whole journey: bootstrap with flux.sops.ageKeyFiles, backup, a new cluster, and
    `bootstrap --restore` with no key file on the machine (and a seedbed.yaml without flux.sops, or
    one that still names the lost file). The SOPS key comes back from the archive
    before Flux, and the simulated kustomize-controller (kustomize-controller v1.9.4
    internal/decryptor/decryptor.go: ImportKeys reads ``*.agekey`` of spec.decryption's Secret,
    DecryptResource decrypts objects with a ``sops`` field) decrypts the repository's Secret with it,
    by the real sops binary. Neither the key nor the plaintext is in any output or file."""
    import base64
    import json

    from conftest import run_cli
    from reliability_helpers import leaks_in_files, leaks_in_text

    tree, archive_path, backup_key, identity, outputs = _old_cluster(tmp_path, capsys, carried=True)
    (tmp_path / "sops" / "keys.txt").unlink()  # the laptop with the key is gone
    sections = {"flux": {"sops": {"ageKeyFiles": [str(tmp_path / "sops" / "keys.txt")]}}} if config_names_the_key else {}
    new, config, code, out, err = _rebuild(tmp_path, capsys, tree, archive_path, backup_key, **sections)
    try:
        outputs += [out, err]
        assert code == 0, err
        assert "Restore Secrets: secrets: restored 1" in err  # sops-age, before the Flux sync
        ks = _reconciled(new, "apps")
        assert [c["reason"] for c in ks["status"]["conditions"]] == ["ReconciliationSucceeded"], ks["status"]
        stored = new.emu.get("v1", "Secret", "lldap-credentials", "lldap")
        assert base64.b64decode(stored["data"]["LLDAP_JWT_SECRET"]).decode() == VALUE
        assert "sops" not in stored  # applied decrypted, without the SOPS metadata
        assert stored["metadata"]["labels"]["kustomize.toolkit.fluxcd.io/name"] == "apps"  # by Flux, from Git
        code, out, err = run_cli(capsys, "-c", str(config), "status", "--output", "json")
        outputs += [out, err]
        assert code == 0 and json.loads(out)["ok"], out
    finally:
        new.stop()
    needles = {identity.encode(): "the SOPS age identity", VALUE.encode(): "the decrypted Secret value"}
    assert leaks_in_text("\n".join(outputs), needles) == []
    assert leaks_in_files([tmp_path], needles, skip=[archive_path]) == []


def test_a_rebuild_whose_archive_lacks_the_key_is_refused_before_the_first_write(tmp_path: Path, capsys: Any) -> None:
    """bootstrap --restore verifies the archive before planning, so the plan knows which Secrets it
    carries: a Kustomization that decrypts with a Secret neither flux.sops nor the archive gives
    would fail on the new cluster, so the run stops before writing anything, naming it and the fix."""
    tree, archive_path, backup_key, _, _ = _old_cluster(tmp_path, capsys, carried=False)
    new, _, code, out, err = _rebuild(tmp_path, capsys, tree, archive_path, backup_key)
    try:
        assert code == 2, out + err
        assert ("Kustomization flux-system/apps decrypts with Secret flux-system/sops-age, which neither seedbed "
                "nor the backup being restored carries") in err
        assert "flux.sops" in err and "Traceback" not in err
        assert new.emu.get("v1", "Namespace", "longhorn-system") is None  # nothing was written
    finally:
        new.stop()


def test_a_kustomization_that_cannot_decrypt_is_named_by_status_and_doctor(tmp_path: Path, capsys: Any) -> None:
    """A cluster whose key Secret is lost: the simulated kustomize-controller fails the Kustomization
    as v1.9.4 does (Ready=False, reason BuildFailed, ``secrets "sops-age" not found`` from
    ImportKeys, kustomization_controller.go), and `seedbed status` and `seedbed doctor` name the
    Kustomization and say how to give the key."""
    import json

    from conftest import run_cli

    seen: dict[str, Any] = {}

    def lose_the_key(old: Any, config: Path) -> None:
        repo = old.emu.get("source.toolkit.fluxcd.io/v1", "GitRepository", "flux-system", "flux-system")
        old.reconcile_kustomization("flux-system", "apps", repo["status"]["artifact"]["revision"])
        ks = _reconciled(old, "apps")
        [ready] = ks["status"]["conditions"]
        seen["ready"] = (ready["status"], ready["reason"], ready["message"])
        seen["status"] = run_cli(capsys, "-c", str(config), "status", "--output", "json")
        seen["doctor"] = run_cli(capsys, "-c", str(config), "doctor")

    _old_cluster(tmp_path, capsys, carried=False, before_backup=lose_the_key)
    assert seen["ready"] == ("False", "BuildFailed", 'secrets "sops-age" not found')
    code, out, _ = seen["status"]
    [flux] = [c for c in json.loads(out)["components"] if c["component"] == "flux"]
    assert code != 0 and flux["state"] == "fail"
    assert flux["failedKustomizations"] == ["flux-system/apps"]
    assert 'Kustomization flux-system/apps not ready: Ready=False (BuildFailed: secrets "sops-age" not found)' \
        in flux["problem"]
    assert "flux.sops" in flux["fix"] and "flux-system/sops-age" in flux["fix"]
    _, out, err = seen["doctor"]
    assert "Kustomization flux-system/apps not ready" in out + err and "flux.sops" in out + err
