"""`seedbed certs budget`: gather the sources, compute the budget, present it.

The glue the CLI calls. Every source is optional: an unreachable cluster or a failing crt.sh
becomes a note in the report, because a budget from the other sources is still worth showing.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from ..config import Config
from ..errors import SeedbedError
from . import _cluster_scan, collect
from .budget import Budget, registered_domain, validate_domain
from .ledger import Issuance, Ledger

DEFAULT_IDENTITY = "~/.config/seedbed/age.key"


@dataclass
class BudgetReport:
    budget: Budget
    ledger: Ledger
    domains: list[str] = field(default_factory=list)  # the registered domains asked about (empty: all)

    def _filtered(self) -> Budget:
        if not self.domains:
            return self.budget
        keep = {d: self.budget.domain(d) for d in self.domains}
        return Budget(self.budget.now, keep, self.budget.notes, self.budget.sources)

    def to_json(self) -> dict[str, Any]:
        return self._filtered().to_json()

    def render_text(self) -> str:
        return "\n".join(self._filtered().render_table())


def _config_domains(cfg: Config) -> list[str]:
    c = cfg.certificates
    names = [n for n in (c.domain, c.wildcard.domain if c.wildcard else None) if n]
    return sorted({d for d in (registered_domain(n) for n in names) if d})


def archive_ledger(cfg: Config, archive: Any) -> Ledger | None:
    """The issuance ledger carried in a backup: ``archive`` is a path or an opened Archive.

    None when the archive carries no ledger (made before ledgers, or by a cluster without any).
    """
    from ..backup.restore import ledger as ledger_data

    if isinstance(archive, str | Path):
        from ..backup import open_archive

        identity = cfg.resolve(cfg.backup.identity_file or DEFAULT_IDENTITY)
        # The ledger counts for the domain whatever cluster wrote it: accept other clusters' archives.
        archive = open_archive(archive, [identity], expect_cluster=cfg.cluster.name, from_other_cluster=True)
    data = ledger_data(archive)
    return None if data is None else Ledger.from_json(data)


def backup_ledger(cfg: Config, archive: Any) -> Ledger:
    """:func:`archive_ledger`, with an empty ledger for "none"."""
    return archive_ledger(cfg, archive) or Ledger()


async def cluster_issuances(kube: Any) -> tuple[list[Issuance], list[str]]:
    """Issuances seen in the cluster's cert-manager objects, and notes on what was assumed."""
    return await _cluster_scan(kube)


async def budget_report(cfg: Config, *, ct: bool = False, archive: Path | None = None,
                        domains: Iterable[str] = (), out: Any = None, now: datetime | None = None,
                        kube: Any = None) -> BudgetReport:
    """The budget from the cluster, an optional backup archive and (with ``ct``) crt.sh."""
    now = now or datetime.now(UTC)
    # Validated before anything is read: a typo must not come back as "50 left".
    asked = sorted({registered_domain(d) or d for d in (validate_domain(n) for n in domains)})
    backup = backup_ledger(cfg, archive) if archive is not None else None
    ct_domains = (asked or _config_domains(cfg)) if ct else []
    if ct and not ct_domains and out is not None:
        out.warn("--ct needs a domain: pass --domain or set certificates.domain")

    if kube is not None:
        ledger, budget = await collect(now=now, kube=kube, backup=backup, ct_domains=ct_domains)
        return BudgetReport(budget, ledger, asked)
    try:
        from ..kube import Kube

        conn = await Kube.connect(cfg.cluster, base_dir=cfg.base_dir)
    except SeedbedError as e:
        if out is not None:
            out.warn(f"cluster not reachable ({e.message}); budget from the other sources only")
        ledger, budget = await collect(now=now, backup=backup, ct_domains=ct_domains)
        return BudgetReport(budget, ledger, asked)
    async with conn as k:
        ledger, budget = await collect(now=now, kube=k, backup=backup, ct_domains=ct_domains)
    return BudgetReport(budget, ledger, asked)
