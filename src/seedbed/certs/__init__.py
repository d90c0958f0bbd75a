"""Certificate safety across rebuilds: issuance ledger, Let's Encrypt budget, crt.sh, pre-Flux guard.

The pieces, from the bottom up:

- :mod:`.ledger`: :class:`Issuance` and :class:`Ledger` (merged, de-duplicated, JSON for backups);
- :mod:`.budget`: :func:`compute` turns a ledger into per-domain and per-name-set budgets;
- :mod:`.ct`: :func:`fetch_ct` reads Certificate Transparency through crt.sh;
- :mod:`.guard`: which certificates a bootstrap would request, and whether that is safe.

:func:`collect` is the one place that talks to a cluster; the rest is pure or plain HTTP.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from datetime import datetime
from typing import TYPE_CHECKING, Any

from .budget import (
    EXACT_SET_LIMIT,
    REGISTERED_DOMAIN_LIMIT,
    WINDOW,
    Budget,
    DomainBudget,
    ExactSetBudget,
    compute,
    registered_domain,
)
from .ct import CTResult, fetch_ct
from .guard import (
    CertificateDoc,
    GuardResult,
    RepoScan,
    assess,
    scan_repo,
    would_issue,
)
from .ledger import Issuance, Ledger, from_cluster, scan_cluster

if TYPE_CHECKING:
    from ..kube import KubeClient

__all__ = [
    "EXACT_SET_LIMIT", "REGISTERED_DOMAIN_LIMIT", "WINDOW", "Budget", "CTResult", "CertificateDoc",
    "DomainBudget", "ExactSetBudget", "GuardResult", "Issuance", "Ledger", "RepoScan", "assess",
    "collect", "compute", "fetch_ct", "from_cluster", "registered_domain",
    "scan_cluster", "scan_repo", "would_issue",
]

_CM = "cert-manager.io/v1"


async def _list(kube: KubeClient, kind: str) -> list[dict[str, Any]]:
    return list(await kube.list(_CM, kind))


async def _cluster_scan(kube: KubeClient) -> tuple[list[Issuance], list[str]]:
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


async def collect(*, now: datetime, kube: KubeClient | None = None, backup: Ledger | None = None,
                  ct_domains: Iterable[str] = (), ct_base_url: str | None = None) -> tuple[Ledger, Budget]:
    """Gather issuances from the cluster, a backup's ledger and (optionally) crt.sh; compute the budget.

    ``kube`` is a :class:`seedbed.kube.Kube` (or None to skip the cluster). A cluster without
    cert-manager's CRDs is simply empty. The ledger returned is what the next backup should carry.
    """
    from .ct import window_start

    notes: list[str] = []
    ledger = Ledger()
    if backup is not None:
        ledger.extend(backup)
    if kube is not None:
        issuances, cluster_notes = await _cluster_scan(kube)
        ledger.extend(issuances)
        notes += cluster_notes
    for domain in sorted(set(ct_domains)):
        result = await fetch_ct(domain, base_url=ct_base_url, since=window_start(now))
        ledger.extend(result.issuances)
        notes += result.warnings
        if result.partial:
            notes.append(f"CT answer for {domain} is partial: the counts are a lower bound")
    return ledger, compute(ledger, now, notes=notes)
