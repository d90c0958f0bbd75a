"""`seedbed bootstrap`: connect, run the steps in order, summarise."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from .steps.base import Context, Options, StateStore, StepReport, run_steps

if TYPE_CHECKING:
    from .config import Config
    from .output import Output


@dataclass
class BootstrapResult:
    cfg: Config
    reports: list[StepReport]
    head: str | None = None
    requests: int = 0
    writes: int = 0
    notes: list[str] = field(default_factory=list)

    @property
    def changed(self) -> list[StepReport]:
        return [r for r in self.reports if r.status == "changed"]

    def access(self) -> str:
        from .render.gitserver import port_forward_command

        return port_forward_command(self.cfg)

    def as_dict(self) -> dict[str, Any]:
        return {"cluster": self.cfg.cluster.name, "changed": bool(self.changed), "head": self.head,
                "steps": [r.as_dict() for r in self.reports], "gitServer": self.access(),
                "requests": self.requests, "writes": self.writes, "notes": self.notes}

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
        lines += self.notes
        r = self.cfg.repo
        lines.append(f"Git server: {self.access()}  then  http://localhost:3000/{r.owner}/{r.name}")
        return "\n".join(lines)


async def run_bootstrap(cfg: Config, options: Options, out: Output, *, kube: Any = None) -> BootstrapResult:
    from .kube import Kube
    from .manifests import ManifestStore
    from .steps import bootstrap_steps

    manifests = ManifestStore(lock_file=cfg.lock_file, manifests=options.manifests, offline=options.offline)
    own = kube is None
    if own:
        kube = await Kube.connect(cfg.cluster, base_dir=cfg.base_dir)
    try:
        ctx = Context(cfg=cfg, kube=kube, options=options, manifests=manifests, out=out)
        if options.restore is not None:
            # Verify before anything: decrypt and check every hash before the first write.
            from .backup.run import open_for_restore, verified_text

            archive = open_for_restore(cfg, options.restore, from_other_cluster=options.from_other_cluster,
                                       skip_signature=options.insecure_skip_signature)
            ctx.shared["restore.archive"] = archive
            out.done(verified_text(options.restore, archive))
        state = StateStore(kube, _local_state(cfg))
        reports = await run_steps(bootstrap_steps(options), ctx, state)
        return BootstrapResult(cfg, reports, head=ctx.shared.get("repo.head"),
                               requests=kube.stats.requests, writes=kube.stats.writes,
                               notes=ctx.shared.get("notes", []))
    finally:
        out.close()
        if own:
            await kube.close()


def _local_state(cfg: Config) -> Any:
    from pathlib import Path

    import platformdirs

    return Path(platformdirs.user_state_dir("seedbed")) / f"{cfg.cluster.name}.json"
