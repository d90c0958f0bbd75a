"""Restore from a backup during bootstrap, each part just before something needs it.

- volumes, before the Git server: a restored Gitea comes back with its repository;
- Secrets, before Flux: cert-manager finds its ACME account keys and certificates in place;
- cert-manager objects, after Flux: their CRDs exist only once Flux has installed cert-manager;
  then the issuance ledger is kept in the cluster.

Each step is one phase of the same restore sequence `seedbed restore` runs
(``backup/sequence.py``); the push step runs its repository phase. The archive was decrypted and
verified before the first step ran (``commands/bootstrap.py``). Existing objects are kept unless --force.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar

from .base import Context, Options, Outcome, Planned, Step

if TYPE_CHECKING:
    from ..backup.restore import Summary
    from ..backup.sequence import Restore


def restore_of(ctx: Context) -> Restore:
    """The restore sequence over this run's archive and clients."""
    from ..backup.sequence import Restore

    assert ctx.archive is not None, "restore phases are planned only with --restore"
    return Restore(ctx.archive, ctx.kube, ctx.gitserver, force=ctx.options.force, log=ctx.out.log)


class _RestoreStep(Step):
    note: ClassVar[str]

    def plan(self, cfg: Any, manifests: Any, options: Options) -> Planned:
        return Planned(inputs={"archive": str(options.restore)}, notes=[self.note])

    async def run(self, ctx: Context, planned: Planned) -> Outcome:
        summary = await self.restore(ctx, restore_of(ctx))
        return Outcome(bool(summary.restored), str(summary))

    async def restore(self, ctx: Context, restore: Restore) -> Summary:
        raise NotImplementedError


class RestoreVolumesStep(_RestoreStep):
    name = "restore-volumes"
    title = "Restore volumes"
    note = "Longhorn Volumes from their backups (fromBackup), then PV and PVC"

    async def restore(self, ctx: Context, restore: Restore) -> Summary:
        return await restore.volumes()


class RestoreSecretsStep(_RestoreStep):
    name = "restore-secrets"
    title = "Restore Secrets"
    note = "certificate, ACME account-key, DNS-01 and selected Secrets, before Flux"

    async def restore(self, ctx: Context, restore: Restore) -> Summary:
        from ..backup.restore import secrets

        # The certificate guard decides from these whether cert-manager will re-issue.
        ctx.restored_secrets = secrets(restore.archive)
        return await restore.secrets()


class RestoreCertificatesStep(_RestoreStep):
    name = "restore-certificates"
    title = "Restore certificates"
    note = "Certificates, Issuers, ClusterIssuers once cert-manager's CRDs exist; the issuance ledger"

    async def restore(self, ctx: Context, restore: Restore) -> Summary:
        summary = await restore.cert_manager()
        await restore.ledger()
        return summary
