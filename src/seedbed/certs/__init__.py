"""Certificate safety across rebuilds: issuance ledger, Let's Encrypt budget, crt.sh, pre-Flux guard.

The pieces, from the bottom up:

- :mod:`.ledger`: :class:`Issuance` and :class:`Ledger` (merged, de-duplicated, JSON for backups);
- :mod:`.budget`: :func:`compute` turns a ledger into per-domain and per-name-set budgets;
- :mod:`.ct`: :func:`fetch_ct` reads Certificate Transparency through crt.sh;
- :mod:`.guard`: which certificates a bootstrap would request, and whether that is safe.

:func:`collect` is the one place that talks to a cluster; the rest is pure or plain HTTP.
"""

from __future__ import annotations

import importlib
from collections.abc import Iterable
from datetime import datetime
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ..kube import KubeClient
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

__all__ = [
    "EXACT_SET_LIMIT", "REGISTERED_DOMAIN_LIMIT", "WINDOW", "Budget", "CTResult", "CertificateDoc",
    "DomainBudget", "ExactSetBudget", "GuardResult", "Issuance", "Ledger", "RepoScan", "assess",
    "collect", "compute", "fetch_ct", "from_cluster", "registered_domain",
    "scan_cluster", "scan_repo", "would_issue",
]

# The names above, by the module that defines them. They are imported on first use (PEP 562), so
# that importing one piece (the backup reads the ledger through .history) does not import them all:
# .guard and .policies bring cryptography's x509, .ct the crt.sh client.
_WHERE = {
    **dict.fromkeys(("EXACT_SET_LIMIT", "REGISTERED_DOMAIN_LIMIT", "WINDOW", "Budget", "DomainBudget",
                     "ExactSetBudget", "compute", "registered_domain"), "budget"),
    **dict.fromkeys(("CTResult", "fetch_ct"), "ct"),
    **dict.fromkeys(("CertificateDoc", "GuardResult", "RepoScan", "assess", "scan_repo",
                     "would_issue"), "guard"),
    **dict.fromkeys(("Issuance", "Ledger", "from_cluster", "scan_cluster"), "ledger"),
}


def __getattr__(name: str) -> Any:
    where = _WHERE.get(name)
    if where is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f".{where}", __name__), name)


async def collect(*, now: datetime, kube: KubeClient | None = None, backup: Ledger | None = None,
                  ct_domains: Iterable[str] = (), ct_base_url: str | None = None) -> tuple[Ledger, Budget]:
    """Gather issuances from the cluster, a backup's ledger and (optionally) crt.sh; compute the budget.

    ``kube`` is a :class:`seedbed.kube.Kube` (or None to skip the cluster). A cluster without
    cert-manager's CRDs is simply empty. The ledger returned is what the next backup should carry.
    """
    from .budget import compute
    from .ct import fetch_ct, window_start
    from .history import cluster_issuances
    from .ledger import Ledger

    notes: list[str] = []
    ledger = Ledger()
    if backup is not None:
        ledger.extend(backup)
    if kube is not None:
        issuances, cluster_notes = await cluster_issuances(kube)
        ledger.extend(issuances)
        notes += cluster_notes
    for domain in sorted(set(ct_domains)):
        result = await fetch_ct(domain, base_url=ct_base_url, since=window_start(now))
        ledger.extend(result.issuances)
        notes += result.warnings
        if result.partial:
            notes.append(f"CT answer for {domain} is partial: the counts are a lower bound")
    return ledger, compute(ledger, now, notes=notes)
