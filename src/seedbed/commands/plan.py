"""`seedbed plan`: every step's objects, rendered without a cluster."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..render.redact import redact
from ..steps.base import Options, Planned, Step, plan_steps
from ..yamlutil import dump_all

if TYPE_CHECKING:
    from ..config import Config
    from ..manifests import ManifestStore


@dataclass
class PlanResult:
    cfg: Config
    steps: list[tuple[Step, Planned]]

    @property
    def repo_files(self) -> dict[str, str]:
        return {path: text for _, p in self.steps for path, text in p.repo_files.items()}

    def as_dict(self, out_dir: Path | None = None) -> dict[str, Any]:
        return {
            "cluster": self.cfg.cluster.name,
            "steps": [
                {"name": s.name, "title": s.title, "objects": len(p.objects),
                 "kinds": _kinds(p.objects), "waits": p.waits, "notes": p.notes, "digest": p.digest()}
                for s, p in self.steps
            ],
            "repoFiles": sorted(self.repo_files),
            "out": str(out_dir) if out_dir else None,
        }

    def as_text(self, out_dir: Path | None = None) -> str:
        lines = [f"Plan for cluster {self.cfg.cluster.name!r}:"]
        for i, (s, p) in enumerate(self.steps, 1):
            head = f"{i:>2}. {s.title}"
            if p.objects:
                head += f": {len(p.objects)} objects ({_kinds_text(p.objects)})"
            lines.append(head)
            lines += [f"      waits for {w}" for w in p.waits]
            lines += [f"      {n}" for n in p.notes]
        if self.repo_files:
            lines.append(f"Commits to the repository: {', '.join(sorted(self.repo_files))}")
        if out_dir:
            lines.append(f"Rendered bundle written to {out_dir}/")
        return "\n".join(lines)


def _kinds(objs: list[dict[str, Any]]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for o in objs:
        counts[o.get("kind", "?")] = counts.get(o.get("kind", "?"), 0) + 1
    return counts


def _kinds_text(objs: list[dict[str, Any]]) -> str:
    counts = _kinds(objs)
    return ", ".join(f"{n} {k}" for k, n in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])))


def render_plan(cfg: Config, options: Options, manifests: ManifestStore) -> PlanResult:
    from ..steps import bootstrap_steps

    return PlanResult(cfg, plan_steps(bootstrap_steps(options), cfg, manifests, options))


def write_bundle(result: PlanResult, out_dir: Path) -> None:
    """One multi-document YAML per step, plus the files the Flux step commits, under out_dir."""
    from ..errors import ConfigError

    if out_dir.exists() and not out_dir.is_dir():
        raise ConfigError(f"--out {out_dir} is a file, not a folder", fix="name a folder (it is created if missing)")
    out_dir.mkdir(parents=True, exist_ok=True)
    for i, (s, p) in enumerate(result.steps, 1):
        if p.objects:
            (out_dir / f"{i:02d}-{s.name}.yaml").write_text(dump_all(redact(p.objects)))
    for rel, text in result.repo_files.items():
        path = out_dir / "repo" / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
