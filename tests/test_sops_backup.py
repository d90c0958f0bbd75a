"""Backups carry the SOPS decryption keys (issue 15): the one Secret that is, by definition, stored
nowhere else. Collected from flux-system like the other such Secrets, accepted by the restore
validator, and put back by the restore phase that `bootstrap --restore` runs before Flux."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pyrage

from seedbed.backup import archive, make_backup, restore
from seedbed.backup.collect import collect
from seedbed.backup.signing import load_signing_key
from seedbed.backup.validate import Policy, validate
from seedbed.config import Config
from seedbed.steps import bootstrap_steps
from seedbed.steps.base import Options
from test_backup_roundtrip import NOW, connect, ns, secret

IDENTITY = (str(pyrage.x25519.Identity.generate()) + "\n").encode()  # made at test time, never committed


def config(recipient: str, **flux: Any) -> Config:
    return Config.model_validate({"backup": {"recipients": [recipient]}, "flux": flux})


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
    cfg = Config.model_validate({"backup": {"recipients": [recipient], "identityFile": str(tmp_path / "age.key")}})
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
