"""Encrypted backups: collect, archive (age + tar + index.json), verify, restore.

The one rule of this package: the archive's plaintext exists only in memory. See
docs/backup.md for the format and the restore order.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import msgspec

from seedbed import __version__
from seedbed.config import Config

from .archive import build_indexed, encrypt
from .collect import collect, extra_entries
from .volumes import backup_volumes

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    from ..kube import KubeClient


class BackupResult(msgspec.Struct):
    """The ciphertext and its index (names, sizes, hashes: nothing secret) for the summary output."""

    ciphertext: bytes
    index: dict[str, Any]


async def make_backup(kube: KubeClient, cfg: Config, *, git_bundle: bytes | None = None, ledger: Any = None,
                      volume_timeout: float = 1800, now: datetime | None = None,
                      signing_key: Ed25519PrivateKey | None = None,
                      collected: dict[str, bytes] | None = None) -> BackupResult:
    """Collect, take the Longhorn backups, build and encrypt; the caller writes ``ciphertext``.

    ``git_bundle`` is the repository bundle (seedbed.git, through the port-forward) and ``ledger``
    the issuance ledger; both are passed in so this package stays free of Git and HTTP.
    ``collected``: what :func:`collect` returned, when the caller read it already (concurrently
    with the bundle, so that a slow link pays for the longer of the two, not for both).
    """
    # Fail on the keys before anything slow (or a Longhorn backup) happens.
    encrypt(b"", cfg.backup.recipients)
    now = now or datetime.now(UTC)
    entries = collected if collected is not None else await collect(kube, cfg)
    volumes = await backup_volumes(kube, cfg, timeout=volume_timeout, now=now)
    entries.update(extra_entries(git_bundle=git_bundle, repo=f"{cfg.repo.owner}/{cfg.repo.name}",
                                 ledger=ledger, volumes=volumes))
    tar, index = build_indexed(entries, cluster=cfg.cluster.name, created=now, seedbed_version=__version__,
                               signing_key=signing_key)
    del entries  # let the plaintext go as soon as it is encrypted
    ciphertext = encrypt(tar, cfg.backup.recipients)
    del tar
    return BackupResult(ciphertext=ciphertext, index=index)


__all__ = ["BackupResult", "make_backup"]
