"""Restore from a backup during bootstrap, each part just before something needs it.

- volumes, before the Git server: a restored Gitea comes back with its repository;
- Secrets, before Flux: cert-manager finds its ACME account keys and certificates in place;
- cert-manager objects, after Flux: their CRDs exist only once Flux has installed cert-manager.

The archive was decrypted and verified before the first step ran (bootstrap.py); these steps
only write. Existing objects are kept unless --force.
"""

from __future__ import annotations

from typing import Any

from .base import Context, Options, Outcome, Planned, Step


def _archive(ctx: Context) -> Any:
    return ctx.shared["restore.archive"]


def _outcome(summary: Any) -> Outcome:
    for ref, reason in summary.skipped:
        del ref, reason  # listed by `seedbed restore --dry-run`; here only counted
    return Outcome(bool(summary.restored), str(summary))


class RestoreVolumesStep(Step):
    name = "restore-volumes"
    title = "Restore volumes"

    def plan(self, cfg: Any, manifests: Any, options: Options) -> Planned:
        return Planned(inputs={"archive": str(options.restore)},
                       notes=["Longhorn Volumes from their backups (fromBackup), then PV and PVC"])

    async def run(self, ctx: Context) -> Outcome:
        from ..backup.restore import restore_volumes

        return _outcome(await restore_volumes(ctx.kube, _archive(ctx), force=ctx.options.force))


class RestoreSecretsStep(Step):
    name = "restore-secrets"
    title = "Restore Secrets"

    def plan(self, cfg: Any, manifests: Any, options: Options) -> Planned:
        return Planned(inputs={"archive": str(options.restore)},
                       notes=["certificate, ACME account-key, DNS-01 and selected Secrets, before Flux"])

    async def run(self, ctx: Context) -> Outcome:
        from ..backup.restore import restore_secrets, secrets

        summary = await restore_secrets(ctx.kube, _archive(ctx), force=ctx.options.force)
        # The certificate guard counts these as restored: cert-manager will not re-issue them.
        ctx.shared["restore.secrets"] = [
            f"{(s.get('metadata') or {}).get('namespace', '')}/{s['metadata']['name']}"
            for s in secrets(_archive(ctx))]
        return _outcome(summary)


class RestoreCertificatesStep(Step):
    name = "restore-certificates"
    title = "Restore certificates"

    def plan(self, cfg: Any, manifests: Any, options: Options) -> Planned:
        return Planned(inputs={"archive": str(options.restore)},
                       notes=["Certificates, Issuers, ClusterIssuers once cert-manager's CRDs exist"])

    async def run(self, ctx: Context) -> Outcome:
        from ..backup.restore import restore_cert_manager

        return _outcome(await restore_cert_manager(ctx.kube, _archive(ctx), force=ctx.options.force))
