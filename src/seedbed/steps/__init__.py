"""The bootstrap steps, in order. See base.py for what a step is and how the runner skips work."""

from __future__ import annotations

from .base import Options, Step, WorkTree


def bootstrap_steps(options: Options) -> list[Step]:
    """Preflight, Longhorn, (restore volumes,) Flux components, Git server (a HelmRelease), repository,
    push, (restore Secrets,) certificate guard, Flux sync, (restore certificates,) hand-over check."""
    from .checks import CertGuardStep, HandoffStep
    from .flux import FluxComponentsStep, FluxStep
    from .gitserver import GitServerStep, PushStep, RepositoryStep
    from .longhorn import LonghornStep
    from .preflight import PreflightStep
    from .restore import RestoreCertificatesStep, RestoreSecretsStep, RestoreVolumesStep

    restoring = options.restore is not None
    worktree = WorkTree()  # read once, by the Git server step's plan; the Flux step and the guard reuse it
    steps: list[Step | None] = [
        PreflightStep(),
        LonghornStep(),
        RestoreVolumesStep() if restoring else None,
        FluxComponentsStep(),
        GitServerStep(worktree),
        RepositoryStep(),
        PushStep(),
        RestoreSecretsStep() if restoring else None,
        CertGuardStep(worktree),
        FluxStep(worktree),
        RestoreCertificatesStep() if restoring else None,
        HandoffStep(),
    ]
    return [s for s in steps if s is not None]
