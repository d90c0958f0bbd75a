"""Steps and the runner, after Flux's `pkg/bootstrap`: a short sequence of idempotent steps.

A step knows how to *plan* (pure: the objects it would apply, what it waits for, and the inputs
that decide its result) and how to *run* against a cluster. The runner records each finished
step with a digest of its plan, in the cluster (ConfigMap ``kube-system/seedbed-state``) and
locally. A re-run skips a step whose digest is unchanged *and* whose result is still in place
(``verify``, read-only), so a finished bootstrap re-runs quickly with no writes, while a
half-finished one resumes at the first step that is not done.
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from ..errors import SeedbedError

if TYPE_CHECKING:
    from ..config import Config
    from ..kube import Kube
    from ..manifests import ManifestStore
    from ..output import Output

STATE_NAMESPACE = "kube-system"
STATE_CONFIGMAP = "seedbed-state"


@dataclass(frozen=True)
class Options:
    """What the command line says, beyond seedbed.yaml."""

    allow_upgrade: bool = False
    rotate_keys: bool = False
    force: bool = False
    force_push: bool = False
    dry_run: bool = False
    restore: Path | None = None
    from_other_cluster: bool = False
    acme: str | None = None
    domain: str | None = None
    ignore_budget: bool = False
    manifests: Path | None = None
    offline: bool = False


@dataclass
class Planned:
    """What a step would do: objects to apply, waits, and the inputs its result depends on."""

    objects: list[dict[str, Any]] = field(default_factory=list)
    waits: list[str] = field(default_factory=list)
    inputs: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    def digest(self) -> str:
        payload = json.dumps({"objects": self.objects, "inputs": self.inputs}, sort_keys=True, default=str)
        return "sha256:" + hashlib.sha256(payload.encode()).hexdigest()


@dataclass
class Outcome:
    changed: bool
    summary: str


@dataclass
class Context:
    cfg: Config
    kube: Kube
    options: Options
    manifests: ManifestStore
    out: Output
    # Values one step hands to a later one (host key, deploy key, pushed revision...). In memory only.
    shared: dict[str, Any] = field(default_factory=dict)


class Step:
    """Base class of a bootstrap step. Subclasses set ``name``/``title`` and implement the three methods."""

    name: ClassVar[str]
    title: ClassVar[str]
    record: ClassVar[bool] = True  # False: run every time, never recorded (preflight, checks)

    def plan(self, cfg: Config, manifests: ManifestStore, options: Options) -> Planned:
        return Planned()

    async def verify(self, ctx: Context) -> bool:
        """Read-only: is this step's result still in place? Used to skip a re-run safely."""
        return False

    async def run(self, ctx: Context) -> Outcome:
        raise NotImplementedError


@dataclass
class StepReport:
    name: str
    title: str
    status: str  # "changed" | "unchanged" | "skipped" | "failed"
    summary: str
    seconds: float

    def as_dict(self) -> dict[str, Any]:
        return {"name": self.name, "title": self.title, "status": self.status, "summary": self.summary,
                "seconds": round(self.seconds, 3)}


class StepFailed(SeedbedError):
    """A step stopped; the message says which, and that a re-run resumes there."""

    def __init__(self, step: Step, cause: SeedbedError, done: list[str]) -> None:
        finished = ", ".join(done) if done else "none"
        super().__init__(
            f"step '{step.name}' failed: {cause.message}",
            fix=(cause.fix + "; then " if cause.fix else "")
            + f"re-run the same command to resume (finished steps: {finished})",
        )
        self.exit_code = cause.exit_code
        self.cause = cause


class StateStore:
    """Which steps finished, with the digest of their plan: in the cluster and in a local file."""

    def __init__(self, kube: Kube, local: Path | None) -> None:
        self.kube = kube
        self.local = local
        self._records: dict[str, dict[str, Any]] = {}

    async def load(self) -> None:
        cm = await self.kube.get("v1", "ConfigMap", STATE_CONFIGMAP, namespace=STATE_NAMESPACE)
        data = (cm or {}).get("data") or {}
        self._records = {k: json.loads(v) for k, v in data.items() if k != "backup"}

    def digest(self, name: str) -> str | None:
        return (self._records.get(name) or {}).get("digest")

    async def record(self, name: str, digest: str) -> None:
        from .. import __version__

        self._records[name] = {"digest": digest, "finishedAt": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                               "seedbedVersion": __version__}
        await self.kube.set_configmap_data(STATE_NAMESPACE, STATE_CONFIGMAP,
                                           {name: json.dumps(self._records[name], sort_keys=True)})
        if self.local is not None:
            self.local.parent.mkdir(parents=True, exist_ok=True)
            tmp = self.local.with_suffix(".tmp")
            tmp.write_text(json.dumps(self._records, indent=2, sort_keys=True))
            tmp.replace(self.local)


async def run_steps(steps: list[Step], ctx: Context, state: StateStore) -> list[StepReport]:
    """Run steps in order, skipping the ones already done; stop at the first failure."""
    reports: list[StepReport] = []
    done: list[str] = []
    # First contact with the cluster, so an unreachable one is reported before anything else.
    await state.load()
    # Plan every step before running the first: a bad input anywhere (a key file, a manifest)
    # then stops the bootstrap before it has written anything.
    plans = [step.plan(ctx.cfg, ctx.manifests, ctx.options) for step in steps]
    ctx.manifests.accept()  # every step rendered the manifests: only now is a first-seen hash recorded
    for step, planned in zip(steps, plans, strict=True):
        started = time.monotonic()
        digest = planned.digest()
        if step.record and state.digest(step.name) == digest and await step.verify(ctx):
            ctx.out.skip(f"{step.title}: unchanged")
            reports.append(StepReport(step.name, step.title, "unchanged", "already done",
                                      time.monotonic() - started))
            done.append(step.name)
            continue
        ctx.out.begin(step.title)
        try:
            outcome = await step.run(ctx)
            if step.record and not ctx.options.dry_run and state.digest(step.name) != digest:
                await state.record(step.name, digest)
        except SeedbedError as e:
            ctx.out.fail(f"{step.title}: {e.message}")
            reports.append(StepReport(step.name, step.title, "failed", e.message, time.monotonic() - started))
            raise StepFailed(step, e, done) from None
        ctx.out.done(f"{step.title}: {outcome.summary}")
        reports.append(StepReport(step.name, step.title, "changed" if outcome.changed else "unchanged",
                                  outcome.summary, time.monotonic() - started))
        done.append(step.name)
    return reports
