"""Where the issuance history comes from: the cluster, the ledger kept in it, and a backup.

The backup, the certificate guard and `certs budget` all read history through these three.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

from .ledger import Issuance, Ledger, scan_cluster

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


_CM = "cert-manager.io/v1"


async def _list(kube: KubeClient, kind: str) -> list[dict[str, Any]]:
    return list(await kube.list(_CM, kind))


async def cluster_issuances(kube: KubeClient) -> tuple[list[Issuance], list[str]]:
    """Issuances seen in the cluster's cert-manager objects, and notes on what was assumed."""
    from ..errors import ClusterError

    try:
        # One round trip for the four LISTs, not four (each costs a full round trip on a slow link).
        certs, requests, cluster_issuers, issuers = await asyncio.gather(
            *(_list(kube, k) for k in ("Certificate", "CertificateRequest", "ClusterIssuer", "Issuer")))
        issuers = cluster_issuers + issuers
    except ClusterError as e:
        # Before cert-manager is installed its kinds may not be served: nothing issued yet.
        return [], [f"cert-manager objects could not be listed ({e.message}); cluster not counted"]
    scan = scan_cluster(certs, requests, issuers)
    return scan.issuances, scan.notes
