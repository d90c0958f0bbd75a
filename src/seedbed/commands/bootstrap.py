"""`seedbed bootstrap`: verify a restore archive, plan every step, run them, summarise."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import msgspec
from msgspec.structs import replace

from ..steps.base import Context, Options, StepReport, plan_steps, run_steps

if TYPE_CHECKING:
    from ..config import Config
    from ..manifests import ManifestStore
    from .clients import Clients


class BootstrapResult(msgspec.Struct):
    cfg: Config
    reports: list[StepReport]
    head: str | None = None
    requests: int = 0
    writes: int = 0

    @property
    def changed(self) -> list[StepReport]:
        return [r for r in self.reports if r.status == "changed"]

    def access(self) -> str:
        from ..render.gitserver import port_forward_command

        return port_forward_command(self.cfg)

    def as_dict(self) -> dict[str, Any]:
        return {"cluster": self.cfg.cluster.name, "changed": bool(self.changed), "head": self.head,
                "steps": [r.as_dict() for r in self.reports], "gitServer": self.access(),
                "requests": self.requests, "writes": self.writes}

    def as_text(self) -> str:
        changed = [r.title for r in self.reports if r.status == "changed"]
        unchanged = [r.title for r in self.reports if r.status == "unchanged"]
        lines = []
        if changed:
            lines.append(f"Changed: {', '.join(changed)}.")
        else:
            lines.append("Nothing to do: the cluster already matches seedbed.yaml.")
        if unchanged and changed:
            lines.append(f"Unchanged: {', '.join(unchanged)}.")
        r = self.cfg.repo
        lines.append(f"Git server: {self.access()}  then  http://localhost:3000/{r.owner}/{r.name}")
        return "\n".join(lines)


async def run_bootstrap(cfg: Config, options: Options, manifests: ManifestStore, clients: Clients) -> BootstrapResult:
    from ..state import StepRecords
    from ..steps import bootstrap_steps

    out = clients.out
    archive = None
    if options.restore is not None:
        from .backup import open_verified

        # Verify before anything: decrypt, authenticate and check every entry before the first write.
        archive = open_verified(cfg, options.restore, out, from_other_cluster=options.from_other_cluster,
                                identities=[], skip_signature=options.insecure_skip_signature)
        carried = archive.contents.secrets if archive.contents else []
        options = replace(options, archived_secrets=frozenset(
            (s.namespace, s.name) for s in carried))
    # First contact with the cluster, so an unreachable one is reported before anything else
    # (planning may record a manifest's hash in seedbed.lock).
    records = StepRecords(clients.kube, out)
    await records.load()
    # Plan every step before the first write; the same plan is what the steps then carry out.
    plan = plan_steps(bootstrap_steps(options), cfg, manifests, options)
    manifests.accept()  # every step rendered the manifests: only now is a first-seen hash recorded
    ctx = Context(cfg=cfg, kube=clients.kube, options=options, manifests=manifests, out=out,
                  gitserver=clients.gitserver, archive=archive, records=records)
    reports = await run_steps(plan, ctx, records)
    stats = clients.kube.stats
    return BootstrapResult(cfg, reports, head=ctx.head, requests=stats.requests, writes=stats.writes)
