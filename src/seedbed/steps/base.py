"""Steps and the runner, after Flux's `pkg/bootstrap`: a short sequence of idempotent steps.

A step knows how to *plan* (pure: the objects it would apply, what it waits for, and the inputs
that decide its result) and how to *run* that plan against a cluster. The runner records each
finished step with a digest of its plan in the cluster (``state.StepRecords``). A re-run skips a
step whose digest is unchanged *and* whose result is still in place (``verify``, read-only), so a
finished bootstrap re-runs quickly with no writes, while a half-finished one resumes at the first
step that is not done.

Steps hand values on through typed fields of :class:`Context`, never through a loose dict.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import time
from collections.abc import Awaitable
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import msgspec

from ..errors import SeedbedError

if TYPE_CHECKING:
    from ..backup.archive import Archive
    from ..config import Config
    from ..fluxrepo import Repo
    from ..gitserver import GitServer
    from ..kube import Kube
    from ..manifests import ManifestStore
    from ..output import Output
    from ..state import StepRecords


class Options(msgspec.Struct, frozen=True):
    """What the command line says, beyond seedbed.yaml."""

    allow_upgrade: bool = False
    rotate_keys: bool = False
    force: bool = False
    force_push: bool = False
    dry_run: bool = False
    restore: Path | None = None
    from_other_cluster: bool = False
    insecure_skip_signature: bool = False
    acme: str | None = None
    domain: str | None = None
    ignore_budget: bool = False
    manifests: Path | None = None
    offline: bool = False
    # (namespace, name) of the Secrets the verified --restore archive carries: set by bootstrap once
    # the archive is checked, so the plan can count on them before the first write.
    archived_secrets: frozenset[tuple[str, str]] = frozenset()


def acme_of(cfg: Config, options: Options) -> str:
    """The Let's Encrypt environment of this run: --acme, else certificates.acme."""
    return options.acme or cfg.certificates.acme


def domain_of(cfg: Config, options: Options) -> str | None:
    """The cluster domain of this run: --domain, else certificates.domain."""
    return options.domain or cfg.certificates.domain


class WorkTree:
    """The operator's work tree (repo.path) as Flux will apply it, read once per run with
    :func:`seedbed.fluxrepo.read`: the Flux step checks it while planning, and the certificate guard
    counts its Certificates. The steps of one run share one (:func:`seedbed.steps.bootstrap_steps`)."""

    def __init__(self) -> None:
        self._read: dict[tuple[Path, str], Repo | None] = {}

    def read(self, cfg: Config) -> Repo | None:
        """None when the tree has no Flux path: Flux then applies only the flux-system/ files seedbed
        commits there, nothing else of the tree. Raises fluxrepo.KustomizeError without kustomize."""
        from .. import fluxrepo
        from ..buildcache import default_root

        tree = cfg.resolve(cfg.repo.path)
        key = (tree, cfg.flux_path)
        if key not in self._read:
            self._read[key] = (fluxrepo.read(tree, cfg.flux_path, cache=default_root())
                               if (tree / cfg.flux_path).is_dir() else None)
        return self._read[key]


class Planned(msgspec.Struct):
    """What a step would do: objects to apply, waits, and the inputs its result depends on."""

    objects: list[dict[str, Any]] = msgspec.field(default_factory=list)
    waits: list[str] = msgspec.field(default_factory=list)
    inputs: dict[str, Any] = msgspec.field(default_factory=dict)
    notes: list[str] = msgspec.field(default_factory=list)
    # Files the step commits to the repository (path in the repository -> text): derived from the
    # same inputs as the objects, so not part of the digest.
    repo_files: dict[str, str] = msgspec.field(default_factory=dict)

    def digest(self) -> str:
        payload = json.dumps({"objects": self.objects, "inputs": self.inputs}, sort_keys=True, default=str)
        return "sha256:" + hashlib.sha256(payload.encode()).hexdigest()


class Outcome(msgspec.Struct):
    changed: bool
    summary: str


class Context(msgspec.Struct):
    """What every step gets: the clients the command built once, and what earlier steps handed on."""

    cfg: Config
    kube: Kube
    options: Options
    manifests: ManifestStore
    out: Output
    gitserver: GitServer
    # With --restore: the archive, decrypted and verified before the first step ran.
    archive: Archive | None = None
    # Handed on: the Secrets restore-secrets put back (the certificate guard counts them as not
    # re-issued), and the commit the server's branch points at (push, then flux).
    restored_secrets: list[dict[str, Any]] = msgspec.field(default_factory=list)
    head: str | None = None
    # What this run read of seedbed-state: the checks' memos (the runner has the steps' records).
    records: StepRecords | None = None


class Step:
    """Base class of a bootstrap step. Subclasses set ``name``/``title`` and implement the three methods."""

    name: ClassVar[str]
    title: ClassVar[str]
    record: ClassVar[bool] = True  # False: run every time, never recorded (preflight, checks)

    def plan(self, cfg: Config, manifests: ManifestStore, options: Options) -> Planned:
        return Planned()

    async def verify(self, ctx: Context, planned: Planned) -> bool:
        """Read-only: is ``planned`` (this run's plan of the step) still in place? Used to skip a re-run safely."""
        return False

    async def run(self, ctx: Context, planned: Planned) -> Outcome:
        """Carry out ``planned`` (what :meth:`plan` returned for this run's inputs)."""
        raise NotImplementedError


class StepReport(msgspec.Struct):
    name: str
    title: str
    status: str  # "changed" | "unchanged" | "skipped" | "failed"
    summary: str
    seconds: float

    def as_dict(self) -> dict[str, Any]:
        return {"name": self.name, "title": self.title, "status": self.status, "summary": self.summary,
                "seconds": round(self.seconds, 3)}


class Interrupted(SeedbedError):
    """The run was stopped (Ctrl-C) inside a step: what finished, and that a re-run resumes."""

    exit_code = 130

    def __init__(self, step: Step, done: list[str]) -> None:
        finished = ", ".join(done) if done else "none"
        super().__init__(f"interrupted during step '{step.name}' (finished steps: {finished})",
                         fix="re-run the same command to resume there; every step is idempotent")


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


async def all_hold(*checks: Awaitable[bool]) -> bool:
    """Whether every check holds, the checks reading concurrently (for ``verify``).

    Answered as if checked one after another: the first check (in order) that fails decides, and a
    check's error is raised only when every check before it held. The rest are cancelled.
    """
    tasks = [asyncio.ensure_future(c) for c in checks]
    try:
        for task in tasks:
            if not await task:
                return False
        return True
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


def plan_steps(steps: list[Step], cfg: Config, manifests: ManifestStore, options: Options) -> list[tuple[Step, Planned]]:
    """Plan every step, before anything runs: a bad input anywhere (a key file, a manifest) then
    stops the bootstrap before it has written anything, and ``seedbed plan`` shows the same plan."""
    return [(step, step.plan(cfg, manifests, options)) for step in steps]


async def run_steps(plan: list[tuple[Step, Planned]], ctx: Context, records: StepRecords) -> list[StepReport]:
    """Run planned steps in order, skipping the ones already done (``records``, loaded); stop at the
    first failure.

    The read-only ``verify`` of every recorded step whose digest is unchanged starts at once, so a
    finished bootstrap costs the round trips of its slowest check, not of all of them in a row. The
    answers are used in order, as long as nothing has written: once a recorded step runs, the checks
    of the steps after it are dropped and made again when each is reached (the step may have changed
    what they read). The steps that are not recorded (preflight and the checks) are read-only.
    """
    reports: list[StepReport] = []
    done: list[str] = []
    digests = [planned.digest() for _, planned in plan]
    ahead = {i: asyncio.ensure_future(step.verify(ctx, planned)) for i, (step, planned) in enumerate(plan)
             if step.record and records.digest(step.name) == digests[i]}
    try:
        for i, (step, planned) in enumerate(plan):
            started = time.monotonic()
            digest = digests[i]
            if step.record and records.digest(step.name) == digest:
                verified = ahead.pop(i, None)
                if await (verified if verified is not None else step.verify(ctx, planned)):
                    ctx.out.skip(f"{step.title}: unchanged")
                    reports.append(StepReport(step.name, step.title, "unchanged", "already done",
                                              time.monotonic() - started))
                    done.append(step.name)
                    continue
            if step.record:
                await _drop(ahead)
            ctx.out.begin(step.title)
            try:
                outcome = await step.run(ctx, planned)
                if step.record and not ctx.options.dry_run and records.digest(step.name) != digest:
                    await records.record(step.name, digest)
            except SeedbedError as e:
                ctx.out.fail(f"{step.title}: {e.message}")
                reports.append(StepReport(step.name, step.title, "failed", e.message, time.monotonic() - started))
                raise StepFailed(step, e, done) from None
            except (KeyboardInterrupt, asyncio.CancelledError):
                # Ctrl-C mid-step (asyncio.run turns SIGINT into a cancellation): say what finished.
                ctx.out.fail(f"{step.title}: interrupted")
                raise Interrupted(step, done) from None
            ctx.out.done(f"{step.title}: {outcome.summary}")
            reports.append(StepReport(step.name, step.title, "changed" if outcome.changed else "unchanged",
                                      outcome.summary, time.monotonic() - started))
            done.append(step.name)
    finally:
        await _drop(ahead)
    return reports


async def _drop(ahead: dict[int, asyncio.Future[bool]]) -> None:
    """Cancel checks started ahead whose answers will not be used, and wait until they have stopped
    (so that none still reads while a step writes); their errors are of no interest then."""
    for verified in ahead.values():
        verified.cancel()
    await asyncio.gather(*ahead.values(), return_exceptions=True)
    ahead.clear()
