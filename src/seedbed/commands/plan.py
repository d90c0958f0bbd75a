"""`seedbed plan`: every step's objects, rendered without a cluster."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import msgspec

from ..render.redact import redact
from ..steps.base import Options, Planned, Step, plan_steps
from ..yamlutil import dump_all

if TYPE_CHECKING:
    from ..config import Config
    from ..manifests import ManifestStore


class PlanResult(msgspec.Struct):
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

    plan = plan_steps(bootstrap_steps(options), cfg, manifests, options)
    manifests.accept()  # every step rendered the manifests: only now may a first-seen hash be recorded
    return PlanResult(cfg, plan)


def write_bundle(result: PlanResult, out_dir: Path) -> None:
    """One multi-document YAML per step, plus the files the Flux step commits, under out_dir.

    Every path is checked before the first file is written, so a bad folder (read-only, a file in
    the way) leaves nothing half-written.
    """
    from .. import files

    outputs: dict[Path, str] = {}
    for i, (s, p) in enumerate(result.steps, 1):
        if p.objects:
            outputs[out_dir / f"{i:02d}-{s.name}.yaml"] = dump_all(redact(p.objects))
    for rel, text in result.repo_files.items():
        outputs[out_dir / "repo" / rel] = text
    files.check_output_dir(out_dir, "--out")
    for path in outputs:
        files.check_output_dir(path.parent, "--out")
        if path.exists():
            files.check_output(path, "--out file")
    for path, text in outputs.items():
        files.make_dirs(path.parent, "--out folder")
        files.write_file(path, text, "--out file")
