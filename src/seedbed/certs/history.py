"""Where the issuance history comes from: the cluster, the ledger kept in it, and a backup.

The backup, the certificate guard and `certs budget` all read history through these three.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from . import _cluster_scan
from .ledger import Issuance, Ledger

if TYPE_CHECKING:
    from ..backup.archive import Archive
    from ..kube import KubeClient


def archive_ledger(archive: Archive) -> Ledger | None:
    """The issuance ledger carried in an opened (validated) backup; None when it carries none."""
    return archive.checked().ledger


async def stored_ledger(kube: KubeClient) -> list[Issuance]:
    """The ledger a previous restore kept in the cluster, so that history survives many rebuilds."""
    from ..errors import ClusterError
    from ..state import LEDGER_FIX, LEDGER_WHERE, read_ledger_text

    # Anyone who can edit ConfigMaps in kube-system can change it: validated like an archive's.
    text = await read_ledger_text(kube)
    if text is None:
        return []
    return list(Ledger.from_json(text, what=LEDGER_WHERE, error=ClusterError, fix=LEDGER_FIX))


async def cluster_issuances(kube: KubeClient) -> tuple[list[Issuance], list[str]]:
    """Issuances seen in the cluster's cert-manager objects, and notes on what was assumed."""
    return await _cluster_scan(kube)
