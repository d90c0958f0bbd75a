"""Restore from a backup during bootstrap, each part just before something needs it.

- volumes, before the Git server: a restored Gitea comes back with its repository;
- Secrets, before Flux: cert-manager finds its ACME account keys and certificates in place;
- cert-manager objects, after Flux: their CRDs exist only once Flux has installed cert-manager.

The archive was decrypted and verified before the first step ran (bootstrap.py); these steps
only write. Existing objects are kept unless --force. The repository bundle is pushed back by
the push step, the ledger is read by the certificate guard.
"""

from __future__ import annotations

from typing import Any, ClassVar

from .base import Context, Options, Outcome, Planned, Step


class _RestoreStep(Step):
    note: ClassVar[str]

    def plan(self, cfg: Any, manifests: Any, options: Options) -> Planned:
        return Planned(inputs={"archive": str(options.restore)}, notes=[self.note])

    async def run(self, ctx: Context) -> Outcome:
        summary = await self.restore(ctx, ctx.shared["restore.archive"])
        return Outcome(bool(summary.restored), str(summary))

    async def restore(self, ctx: Context, archive: Any) -> Any:
        raise NotImplementedError


class RestoreVolumesStep(_RestoreStep):
    name = "restore-volumes"
    title = "Restore volumes"
    note = "Longhorn Volumes from their backups (fromBackup), then PV and PVC"

    async def restore(self, ctx: Context, archive: Any) -> Any:
        from ..backup.restore import restore_volumes

        return await restore_volumes(ctx.kube, archive, force=ctx.options.force)


class RestoreSecretsStep(_RestoreStep):
    name = "restore-secrets"
    title = "Restore Secrets"
    note = "certificate, ACME account-key, DNS-01 and selected Secrets, before Flux"

    async def restore(self, ctx: Context, archive: Any) -> Any:
        from ..backup.restore import restore_secrets, secrets

        # The certificate guard counts these as restored: cert-manager will not re-issue them.
        ctx.shared["restore.secrets"] = [f"{s['metadata'].get('namespace', '')}/{s['metadata']['name']}"
                                         for s in secrets(archive)]
        return await restore_secrets(ctx.kube, archive, force=ctx.options.force)


class RestoreCertificatesStep(_RestoreStep):
    name = "restore-certificates"
    title = "Restore certificates"
    note = "Certificates, Issuers, ClusterIssuers once cert-manager's CRDs exist"

    async def restore(self, ctx: Context, archive: Any) -> Any:
        from ..backup.restore import restore_cert_manager

        return await restore_cert_manager(ctx.kube, archive, force=ctx.options.force)
