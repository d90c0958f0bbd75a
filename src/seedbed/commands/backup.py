"""`seedbed backup` and `seedbed restore`: the cluster-facing sequence around the archive format."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import TYPE_CHECKING, Any

import msgspec

from ..backup.signing import default_identity_path

if TYPE_CHECKING:
    from ..backup.archive import Archive
    from ..backup.restore import Summary
    from ..config import Config
    from ..files import OutputTarget
    from .clients import Clients


class MadeKeys(msgspec.Struct, frozen=True):
    identity: Path
    signing_key: Path
    recipient: str | None  # the new age identity's public key; None when one was kept
    signer_public: str | None  # the new signing key's public key; None when one was kept
    kept_identity: bool


def make_keys(output_file: Path | None, signing_file: Path | None) -> MadeKeys:
    """`seedbed keygen`: an age identity and an ed25519 signing key, never overwriting either."""
    from .. import files
    from ..backup.archive import keygen
    from ..backup.signing import SIGNING_KEY_NAME, load_signing_key, public_text, signing_keygen
    from ..errors import ConfigError

    path = files.expand(output_file) if output_file else default_identity_path()
    signing_path = files.expand(signing_file) if signing_file else path.parent / SIGNING_KEY_NAME
    for p, what in ((path, "age identity"), (signing_path, "signing key")):
        if p.exists() and not p.is_file():
            raise ConfigError(f"{what} {p} exists and is not a regular file; a key written there would be lost",
                              fix=f"choose a file path for the {what}")
    have_identity, have_signing = path.exists(), signing_path.exists()
    if have_identity and have_signing:
        raise ConfigError(f"{path} already exists, and so does {signing_path}; seedbed never overwrites a key",
                          fix="choose other paths with -o and --signing-key, or keep using these keys")
    if output_file is None:
        files.make_dirs(path.parent, "key folder")
        path.parent.chmod(0o700)
    # Both outputs are checked before either key is written.
    for p, what, exists in ((path, "age identity", have_identity), (signing_path, "signing key", have_signing)):
        if not exists:
            files.check_output(p, what, overwrite=False)
    recipient = None
    if have_identity:
        signing_keygen(signing_path)
    else:
        recipient = keygen(path, signing_path=signing_path)
    signer = None if have_signing else public_text(load_signing_key(signing_path).public_key())
    return MadeKeys(path, signing_path, recipient, signer, have_identity)


def identity_paths(cfg: Config, extra: list[Path] | None = None) -> list[Path]:
    if extra:
        return list(extra)
    return [cfg.resolve(cfg.backup.identity_file) if cfg.backup.identity_file else default_identity_path()]


def open_for_restore(cfg: Config, path: Path, *, from_other_cluster: bool = False,
                     identities: list[Path] | None = None, skip_signature: bool = False) -> Archive:
    """Decrypt, verify, check the signature and validate every entry; an ArchiveError here means
    nothing was written."""
    from ..backup.archive import open_archive
    from ..backup.validate import Policy

    policy = Policy.from_config(cfg, from_other_cluster=from_other_cluster, skip_signature=skip_signature)
    return open_archive(path, identity_paths(cfg, identities), policy=policy)


def verified_text(path: Path, archive: Archive) -> str:
    """What the user is told once an archive opened: how many entries, and who signed it."""
    from ..backup.signing import SKIP_FLAG

    who = f"signed by {archive.signer}" if archive.signer else f"signature NOT checked ({SKIP_FLAG})"
    return f"{path}: decrypted and verified ({len(archive.entries)} entries, {who})"


def check_backup(cfg: Config, output_file: Path) -> OutputTarget:
    """Everything a backup needs from the operator, checked before connecting to anything: the output
    first (a missing folder, a folder, or a device seedbed must not replace is found before a single
    Longhorn backup is taken), then the recipients."""
    from .. import files
    from ..backup import archive as fmt
    from ..errors import ConfigError

    target = files.check_output(output_file, "backup archive")
    if not cfg.backup.recipients:
        raise ConfigError("backup.recipients is empty: the archive would have no one to decrypt it",
                          fix="run `seedbed keygen` and add the printed age1... key to backup.recipients")
    for recipient in cfg.backup.recipients:
        fmt.parse_recipient(recipient)
    return target


def _signing_key(cfg: Config) -> Any:
    from ..backup.signing import default_signing_key_path, load_signing_key
    from ..errors import ConfigError

    path = default_signing_key_path(cfg)
    if not path.exists():
        raise ConfigError(f"no signing key at {path}: backups are signed, so that restore can tell yours "
                          "from one forged with your public key",
                          fix="run `seedbed keygen` (it adds the signing key beside an existing age identity), "
                              "or set backup.signingKey")
    return load_signing_key(path)


async def run_backup(cfg: Config, target: OutputTarget, clients: Clients, *, skip_volumes: bool = False) -> str:
    """Take the backup into ``target`` (from :func:`check_backup`) and write the archive."""
    from msgspec.structs import replace

    from ..backup import archive as fmt
    from ..backup import make_backup
    from ..backup.collect import collect
    from ..certs.history import cluster_issuances, stored_ledger
    from ..certs.ledger import Ledger
    from ..errors import SeedbedError
    from ..kube.shared import SharedLists
    from ..state import record_backup

    kube, out = clients.kube, clients.out
    # Connected, nothing read yet: the key that signs the archive must be there before any backup work.
    signing_key = _signing_key(cfg)
    out.begin("Backup")
    out.activity("bundling the in-cluster repository, reading certificates and Secrets")

    async def bundle_or_none() -> bytes | None:
        try:
            return await clients.gitserver.bundle()
        except SeedbedError as e:
            out.warn(f"repository not backed up: {e.message}")
            return None

    # Independent reads, concurrently: on a slow link each one after another costs its round trips
    # (and the bundle, through a port-forward, costs many). The issuance scan and the collector read
    # the same cert-manager objects: one LIST each, shared.
    reads = SharedLists(kube)
    bundle, (issuances, _), stored, collected = await asyncio.gather(
        bundle_or_none(), cluster_issuances(reads), stored_ledger(kube), collect(reads, cfg))
    ledger = Ledger.merge(issuances, stored)
    if skip_volumes:
        cfg = replace(cfg, backup=replace(cfg.backup, volumes=[], include_git_server_volume=False))
    else:
        out.activity("backing up volumes")
    result = await make_backup(kube, cfg, git_bundle=bundle, ledger=ledger, signing_key=signing_key,
                               collected=collected)
    fmt.write(target, result.ciphertext)
    entries = list(result.index.get("entries", {}))
    await record_backup(kube, target.path.name, len(entries))
    out.close()
    parts = ", ".join(f"{n} {k}" for k, n in sorted(result.index.get("counts", {}).items()))
    return f"wrote {target.path} ({parts}), encrypted to {len(cfg.backup.recipients)} recipient(s)"


def open_verified(cfg: Config, archive_path: Path, out: Any, *, from_other_cluster: bool,
                  identities: list[Path], skip_signature: bool = False) -> Archive:
    """Open the archive before connecting anywhere: a bad archive is reported without a cluster."""
    archive = open_for_restore(cfg, archive_path, from_other_cluster=from_other_cluster, identities=identities,
                               skip_signature=skip_signature)
    out.done(verified_text(archive_path, archive))
    return archive


async def run_restore(archive: Archive, clients: Clients, *, dry_run: bool, force: bool) -> list[Summary]:
    """Every phase of the one restore sequence (see backup/sequence.py); one Summary per phase
    (names and reasons only, never a value)."""
    from ..backup.sequence import Restore

    try:
        return await Restore(archive, clients.kube, clients.gitserver, force=force, dry_run=dry_run,
                             log=clients.out.log).all()
    finally:
        clients.out.close()


def restore_text(summaries: list[Any], *, dry_run: bool) -> str:
    lines = []
    for s in summaries:
        lines.append(str(s))
        if dry_run or s.skipped:
            lines += [f"  {line}" for line in s.lines() if dry_run or line.startswith("skip")]
    return "\n".join(lines)
