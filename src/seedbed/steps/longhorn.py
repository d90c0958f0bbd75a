"""The first bootstrap step: Longhorn, so that the Git server and every later volume have storage.

Reads what is already on the cluster (an installed Longhorn, Longhorn's Node disks, other default
StorageClasses), refuses what would hurt, applies the rendered manifest and waits until Longhorn
is usable. The decisions themselves are the pure :func:`seedbed.render.longhorn.check_existing`.
"""

from __future__ import annotations

import asyncio
import base64
import os
import stat
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from .. import files
from ..config import BackupCredentials, Config, LonghornConfig
from ..errors import ConfigError, WaitTimeout
from ..render.longhorn import (
    NAMESPACE,
    REDACTED,
    ROLLOUTS,
    SETTING_CONFIGMAP,
    STORAGE_CLASS,
    check_existing,
    credentials_secret,
    daemonset_version,
    default_storage_classes,
    node_disk_paths,
    parse_credentials_file,
    raise_refusals,
    render_longhorn,
)
from .base import Context, Options, Outcome, Planned, Step, all_hold

if TYPE_CHECKING:
    from ..manifests import ManifestStore

# LonghornConfig has no timeout of its own; pulling images on a fresh node is the slow part.

NOT_READY_FIX = (
    "check the pods with `kubectl -n longhorn-system get pods` and `kubectl -n longhorn-system describe "
    "daemonset longhorn-manager`; every node needs open-iscsi (iscsid running) and the data path; "
    "then re-run"
)


def load_backup_credentials(creds: BackupCredentials, cfg: Config,
                            environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """Read the credential values from the file or the environment variables the config names.

    Errors name the file, line or variable, never a value.
    """
    if creds.from_file:
        path = cfg.resolve(creds.from_file)
        try:
            text = files.read_text(path, files.BACKUP_CREDENTIALS)
        except ConfigError as e:
            raise ConfigError(f"longhorn.backupCredentials.fromFile: {e.message}", fix=e.fix) from None
        return parse_credentials_file(text, str(path))
    if creds.from_env:
        env = os.environ if environ is None else environ
        missing = [var for var in creds.from_env.values() if not env.get(var)]
        if missing:
            raise ConfigError(
                "longhorn.backupCredentials.fromEnv: environment variable "
                + ", ".join(missing) + (" is" if len(missing) == 1 else " are") + " not set or empty",
                fix="export " + ", ".join(missing) + " before running seedbed, or fix the names in fromEnv",
            )
        return {key: env[var] for key, var in creds.from_env.items()}
    raise ConfigError("longhorn.backupCredentials: neither fromFile nor fromEnv is given",
                      fix="give fromFile (a KEY=VALUE file) or fromEnv (Secret key -> variable name)")


def _credentials_loose(creds: BackupCredentials, cfg: Config) -> str | None:
    """The credentials file, when group or others can read it."""
    if not creds.from_file:
        return None
    try:
        mode = cfg.resolve(creds.from_file).stat().st_mode
    except OSError:
        return None
    return str(cfg.resolve(creds.from_file)) if mode & (stat.S_IRWXG | stat.S_IRWXO) else None


def _inputs(lh: LonghornConfig) -> dict[str, Any]:
    """What the result depends on besides the objects. The credential *source*, never a value."""
    creds = lh.backup_credentials
    return {
        "version": lh.version,
        "dataPath": lh.data_path,
        "backupTarget": lh.backup_target,
        "backupCredentials": None if creds is None else {
            "secretName": creds.secret_name, "fromFile": creds.from_file, "fromEnv": creds.from_env},
        "defaultStorageClass": lh.default_storage_class,
        "replicaCount": lh.replica_count,
    }


class LonghornStep(Step):
    name = "longhorn"
    title = "Longhorn"

    def plan(self, cfg: Config, manifests: ManifestStore, options: Options) -> Planned:
        lh = cfg.longhorn
        text = manifests.text("longhorn", lh.version)
        creds = lh.backup_credentials
        # Plan never reads the credentials: keys known from the config are shown with redacted values.
        shown = {key: REDACTED for key in (creds.from_env or {})} if creds else None
        objects = render_longhorn(lh, text, backup_credentials=shown, redact=True)
        waits = [f"rollout {kind} {NAMESPACE}/{name}" for kind, name in ROLLOUTS]
        waits.append(f"StorageClass {STORAGE_CLASS} (created by longhorn-manager)")
        notes = [f"data path {lh.data_path} must exist on every node (a bind mount, never a symlink)"]
        if creds is not None:
            source = f"file {creds.from_file}" if creds.from_file else "environment variables " + ", ".join(
                (creds.from_env or {}).values())
            notes.append(f"Secret {NAMESPACE}/{creds.secret_name}: values read from {source} at run time")
        return Planned(objects=objects, waits=waits, inputs=_inputs(lh), notes=notes)

    async def verify(self, ctx: Context, planned: Planned) -> bool:
        lh = ctx.cfg.longhorn
        kube = ctx.kube

        async def manager() -> bool:
            ds = await kube.get("apps/v1", "DaemonSet", "longhorn-manager", namespace=NAMESPACE)
            return ds is not None and daemonset_version(ds) == lh.version

        async def exists(api_version: str, kind: str, name: str, namespace: str | None = None) -> bool:
            return await kube.get(api_version, kind, name, namespace=namespace) is not None

        async def credentials() -> bool:
            if lh.backup_credentials is None:
                return True
            # The digest holds only where credentials come from; compare the values in memory so a
            # rotated key in the file or environment makes the step run again.
            try:
                values = load_backup_credentials(lh.backup_credentials, ctx.cfg)
            except ConfigError:
                return False  # run() raises it with its fix
            secret = await kube.get("v1", "Secret", lh.backup_credentials.secret_name, namespace=NAMESPACE)
            want = {k: base64.b64encode(v.encode()).decode() for k, v in values.items()}
            return secret is not None and (secret.get("data") or {}) == want

        return await all_hold(manager(), exists("storage.k8s.io/v1", "StorageClass", STORAGE_CLASS),
                              exists("v1", "ConfigMap", SETTING_CONFIGMAP[0], NAMESPACE), credentials())

    async def run(self, ctx: Context, planned: Planned) -> Outcome:
        cfg, lh, kube = ctx.cfg, ctx.cfg.longhorn, ctx.kube

        ctx.out.activity("reading the cluster's storage")
        ds = await kube.get("apps/v1", "DaemonSet", "longhorn-manager", namespace=NAMESPACE)
        installed = daemonset_version(ds) if ds is not None else None
        # Both lists are empty when the kind is not served (no Longhorn CRDs yet).
        nodes = await kube.list("longhorn.io/v1beta2", "Node", namespace=NAMESPACE)
        classes = await kube.list("storage.k8s.io/v1", "StorageClass")
        findings = check_existing(
            lh, installed_version=installed, node_disk_paths=node_disk_paths(nodes),
            default_storage_classes=default_storage_classes(classes), allow_upgrade=ctx.options.allow_upgrade)
        raise_refusals(findings)
        for finding in findings:
            ctx.out.warn(finding.message + (f" ({finding.fix})" if finding.fix else ""))

        if installed is not None and installed != lh.version:
            # warn, not log: an upgrade of the cluster's storage should stand out in the output.
            ctx.out.warn(f"Longhorn {installed} is installed; upgrading to {lh.version} (--allow-upgrade)")

        values: dict[str, str] | None = None
        if lh.backup_credentials is not None:
            values = load_backup_credentials(lh.backup_credentials, cfg)
            for value in values.values():
                ctx.out.secret(value)  # second line of defence: scrubbed from any output line
            loose = _credentials_loose(lh.backup_credentials, cfg)
            if loose:
                ctx.out.warn(f"{loose} can be read by other users; `chmod 600 {loose}`")

        objects = planned.objects
        if values is not None and lh.backup_credentials is not None:
            # The plan holds the credentials Secret with redacted values: put the real one in its place.
            real = credentials_secret(lh.backup_credentials, values, redact=False)
            objects = [real if o.get("kind") == "Secret" and o["metadata"] == real["metadata"] else o
                       for o in objects]
        if ctx.options.dry_run:
            return Outcome(False, f"would apply {len(objects)} objects (Longhorn {lh.version})")

        ctx.out.activity(f"applying Longhorn {lh.version}")
        result = await kube.apply(objects, on_progress=ctx.out.progress(f"applying Longhorn {lh.version}"))
        ctx.out.activity("waiting for Longhorn")
        await self._wait(ctx, ctx.cfg.longhorn.ready_timeout)
        ctx.out.activity(None)
        verb = "upgraded to" if installed not in (None, lh.version) else "installed"
        return Outcome(result.changed, f"{verb} {lh.version}, data path {lh.data_path} ({result.summary()})")

    async def _wait(self, ctx: Context, timeout: float) -> None:
        """Wait for every component at once; name each one that is not ready, with its status."""
        kube = ctx.kube
        waits = [kube.wait_rollout(kind, name, NAMESPACE, timeout=timeout) for kind, name in ROLLOUTS]
        waits.append(kube.wait_exists("storage.k8s.io/v1", "StorageClass", STORAGE_CLASS, timeout=timeout))
        results = await asyncio.gather(*waits, return_exceptions=True)
        failures: list[str] = []
        for (kind, _name), res in zip([*ROLLOUTS, ("StorageClass", STORAGE_CLASS)], results, strict=True):
            if isinstance(res, WaitTimeout):
                detail = res.message  # already names the object and its status conditions
                if kind == "StorageClass":
                    detail += " (longhorn-manager creates it from ConfigMap longhorn-storageclass once it runs)"
                failures.append(detail)
            elif isinstance(res, BaseException):
                raise res
        if failures:
            raise WaitTimeout("Longhorn is not ready: " + "; ".join(failures), fix=NOT_READY_FIX)
