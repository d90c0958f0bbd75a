"""Where the issuance history comes from: the cluster, the ledger kept in it, and a backup.

The backup, the certificate guard and `certs budget` all read history through these three.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from . import _cluster_scan
from .ledger import Issuance, Ledger

if TYPE_CHECKING:
    from ..backup.archive import Archive


def archive_ledger(archive: Archive) -> Ledger | None:
    """The issuance ledger carried in an opened backup; None when it carries none."""
    from ..backup.restore import ledger as ledger_data

    data = ledger_data(archive)
    return None if data is None else Ledger.from_json(data)


async def stored_ledger(kube: Any) -> list[Issuance]:
    """The ledger a previous restore kept in the cluster, so that history survives many rebuilds."""
    from ..errors import ArchiveError, ClusterError
    from ..state import LEDGER_FIX, LEDGER_WHERE, read_ledger_text

    text = await read_ledger_text(kube)
    if text is None:
        return []
    try:
        return list(Ledger.from_json(text))
    except ArchiveError as e:
        raise ClusterError(f"{LEDGER_WHERE}: {e.message}", fix=LEDGER_FIX) from None


async def cluster_issuances(kube: Any) -> tuple[list[Issuance], list[str]]:
    """Issuances seen in the cluster's cert-manager objects, and notes on what was assumed."""
    return await _cluster_scan(kube)
