"""`seedbed certs budget`: gather the sources, compute the budget, present it.

Every source is optional: an unreachable cluster (the CLI then passes no clients) or a failing
crt.sh becomes a note in the report, because a budget from the other sources is still worth showing.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import msgspec

from ..certs import collect
from ..certs.budget import Budget, registered_domain, validate_domain
from ..certs.history import archive_ledger
from ..certs.ledger import Ledger
from ..config import Config

if TYPE_CHECKING:
    from ..backup.archive import Archive
    from ..output import Output
    from .clients import Clients


class BudgetReport(msgspec.Struct):
    budget: Budget
    ledger: Ledger
    domains: list[str] = msgspec.field(default_factory=list)  # the registered domains asked about (empty: all)

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


async def budget_report(cfg: Config, clients: Clients | None, *, ct: bool = False,
                        archive: Archive | None = None, domains: Iterable[str] = (), out: Output | None = None,
                        now: datetime | None = None) -> BudgetReport:
    """The budget from the cluster (when ``clients``), an optional backup archive and (with ``ct``) crt.sh."""
    now = now or datetime.now(UTC)
    # Validated before anything is read: a typo must not come back as "50 left".
    asked = sorted({registered_domain(d) or d for d in (validate_domain(n) for n in domains)})
    backup = (archive_ledger(archive) or Ledger()) if archive is not None else None
    ct_domains = (asked or _config_domains(cfg)) if ct else []
    if ct and not ct_domains and out is not None:
        out.warn("--ct needs a domain: pass --domain or set certificates.domain")
    kube = clients.kube if clients is not None else None
    ledger, budget = await collect(now=now, kube=kube, backup=backup, ct_domains=ct_domains)
    return BudgetReport(budget, ledger, asked)
