"""Longhorn volumes: take backups to the backup target, and render the objects that restore them.

The archive does not hold volume data: Longhorn already copies it, block by block and
incrementally, to the backup target (S3/NFS). The archive records *which* backup belongs to
which claim, and the exact size and CSI attributes, so that a rebuilt cluster can re-create
the Volume with ``fromBackup`` and bind the same claim to it before anything else (the Git
server above all) provisions an empty one.

Field names follow Longhorn v1.12's CRDs (longhorn.io/v1beta2): Volume ``spec.fromBackup``,
``spec.size`` (a string of bytes, ``format: int64``), Backup ``spec.snapshotName`` with the
``backup-volume`` label, Snapshot ``spec.volume``/``createSnapshot``.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Callable
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from seedbed.config import Config, VolumeRef
from seedbed.errors import ClusterError, ConfigError, WaitTimeout

if TYPE_CHECKING:
    from ..kube import KubeClient

LONGHORN_NS = "longhorn-system"
LONGHORN_API = "longhorn.io/v1beta2"
CSI_DRIVER = "driver.longhorn.io"

# Longhorn's final Backup states (longhorn-manager v1.12.1 controller/backup_controller.go backupInFinalState):
# after Error or Unknown the controller stops monitoring the backup, so waiting longer changes nothing.
BACKUP_FINAL_STATES = ("Completed", "Error", "Unknown")

# Kubernetes access modes -> Longhorn's Volume.spec.accessMode enum (rwo, rwop, rwx).
_ACCESS = {"ReadWriteOnce": "rwo", "ReadWriteOncePod": "rwop", "ReadWriteMany": "rwx"}


def _quantity_bytes(value: Any) -> int:
    """Bytes of a Kubernetes quantity ("10Gi", "1G", "10737418240"): Longhorn wants exact bytes."""
    from lightkube.utils.quantity import parse_quantity

    try:
        number = parse_quantity(str(value).strip())
    except (ValueError, ArithmeticError):
        raise ValueError(f"not a byte quantity: {value!r}") from None
    if number is None or number != number.to_integral_value() or number < 0:
        raise ValueError(f"not a whole number of bytes: {value!r}")
    return int(number)


# --------------------------------------------------------------------------- restore objects (pure)


def restore_objects(record: dict[str, Any]) -> list[dict[str, Any]]:
    """The Volume (fromBackup), PV and PVC that bring one recorded volume back, in that order.

    The Volume keeps the original name: the PV's ``volumeHandle`` is that name, and Longhorn's CSI
    driver finds the volume by it. The PV's reclaim policy is Retain so that deleting a half-restored
    claim cannot delete the only fresh copy of the data.
    """
    vol = record["volume"]
    size = str(int(record["sizeBytes"]))
    access_modes = list(record.get("accessModes") or ["ReadWriteOnce"])
    volume_spec: dict[str, Any] = {
        "fromBackup": record["url"],
        "size": size,
        "numberOfReplicas": int(record.get("numberOfReplicas") or 3),
        "frontend": record.get("frontend") or "blockdev",
        "accessMode": record.get("accessMode") or _ACCESS.get(access_modes[0], "rwo"),
        "dataEngine": record.get("dataEngine") or "v1",
    }
    volume = {
        "apiVersion": LONGHORN_API,
        "kind": "Volume",
        "metadata": {"name": vol, "namespace": LONGHORN_NS},
        "spec": volume_spec,
    }
    csi: dict[str, Any] = {"driver": CSI_DRIVER, "volumeHandle": vol, "fsType": record.get("fsType") or "ext4"}
    if record.get("volumeAttributes"):
        csi["volumeAttributes"] = dict(record["volumeAttributes"])
    pv_name = record.get("pvName") or vol
    pv = {
        "apiVersion": "v1",
        "kind": "PersistentVolume",
        "metadata": {"name": pv_name},
        "spec": {
            "capacity": {"storage": size},
            "volumeMode": record.get("volumeMode") or "Filesystem",
            "accessModes": access_modes,
            "persistentVolumeReclaimPolicy": "Retain",
            "storageClassName": record.get("storageClass") or "longhorn",
            "csi": csi,
            # No uid: the claim does not exist yet; the binder fills it in when it binds.
            "claimRef": {"apiVersion": "v1", "kind": "PersistentVolumeClaim",
                         "namespace": record["namespace"], "name": record["pvc"]},
        },
    }
    pvc_meta: dict[str, Any] = {"name": record["pvc"], "namespace": record["namespace"]}
    if record.get("pvcLabels"):
        pvc_meta["labels"] = dict(record["pvcLabels"])
    pvc = {
        "apiVersion": "v1",
        "kind": "PersistentVolumeClaim",
        "metadata": pvc_meta,
        "spec": {
            "accessModes": access_modes,
            "storageClassName": record.get("storageClass") or "longhorn",
            "volumeMode": record.get("volumeMode") or "Filesystem",
            # The original request (e.g. "10Gi"), so the Git server's own manifest later agrees with it.
            "resources": {"requests": {"storage": record.get("request") or size}},
            "volumeName": pv_name,
        },
    }
    return [volume, pv, pvc]


# --------------------------------------------------------------------------- taking backups


def volume_refs(cfg: Config) -> list[tuple[VolumeRef, bool]]:
    """The claims to back up, each with whether the user named it (True) or it is implied (False)."""
    refs = [(ref, True) for ref in cfg.backup.volumes]
    if cfg.backup.include_git_server_volume:
        git = VolumeRef(namespace=cfg.git_server.namespace, pvc=cfg.git_server.pvc_name)
        if all((r.namespace, r.pvc) != (git.namespace, git.pvc) for r, _ in refs):
            refs.append((git, False))
    return refs


def _state(obj: dict[str, Any] | None) -> str:
    """What a waited-for Longhorn object last said, for the timeout message."""
    if obj is None:
        return "it does not exist yet"
    status = obj.get("status") or {}
    parts = [f"{k}={status[k]}" for k in ("state", "readyToUse", "progress", "error") if k in status]
    return ", ".join(parts) or "Longhorn has not reported a status yet"


def _backup_name(vol: str, stamp: str) -> str:
    # Object names are at most 63 here (Longhorn uses them as backup-store names); keep the stamp.
    return f"seedbed-{stamp}-{vol}"[:63].rstrip("-")


async def backup_volumes(kube: KubeClient, cfg: Config, *, timeout: float = 1800,
                         now: datetime | None = None,
                         log: Callable[[str], None] | None = None) -> list[dict[str, Any]]:
    """Back up each configured claim through Longhorn and return the records for volumes.json."""
    refs = volume_refs(cfg)
    if not refs:
        return []
    if not cfg.longhorn.backup_target:
        explicit = [f"{r.namespace}/{r.pvc}" for r, named in refs if named]
        if explicit:
            raise ConfigError(
                f"backup.volumes lists {', '.join(explicit)} but longhorn.backupTarget is not set",
                fix="set longhorn.backupTarget (s3://bucket@region/path or nfs://host:/path) and re-run bootstrap",
            )
        # Only the implied Git server claim: the git bundle still carries the repository, so go on.
        if log:
            log("no longhorn.backupTarget: the Git server volume is not backed up (the repository bundle is)")
        return []
    target = await kube.get(LONGHORN_API, "BackupTarget", "default", namespace=LONGHORN_NS)
    if target is not None and (target.get("status") or {}).get("available") is False:
        msgs = "; ".join(c.get("message", "") for c in (target.get("status") or {}).get("conditions") or []
                         if c.get("message"))
        raise ClusterError(f"Longhorn's backup target is not available{': ' + msgs if msgs else ''}",
                           fix="check longhorn.backupTarget and its credentials Secret in longhorn-system")
    stamp = (now or datetime.now(UTC)).strftime("%Y%m%d%H%M%S")
    return list(await asyncio.gather(*(
        _backup_one(kube, ref, stamp=stamp, timeout=timeout) for ref, _ in refs
    )))


async def _backup_one(kube: KubeClient, ref: VolumeRef, *, stamp: str, timeout: float) -> dict[str, Any]:
    where = f"{ref.namespace}/{ref.pvc}"
    pvc = await kube.get("v1", "PersistentVolumeClaim", ref.pvc, namespace=ref.namespace)
    if pvc is None:
        raise ClusterError(f"backup.volumes: PersistentVolumeClaim {where} does not exist",
                           fix="fix the namespace/pvc in backup.volumes, or remove the entry")
    pv_name = (pvc.get("spec") or {}).get("volumeName")
    if not pv_name:
        raise ClusterError(f"PersistentVolumeClaim {where} is not bound to a volume yet",
                           fix="wait until it is Bound (a pod must use a WaitForFirstConsumer claim), then retry")
    pv = await kube.get("v1", "PersistentVolume", pv_name)
    csi = ((pv or {}).get("spec") or {}).get("csi") or {}
    if csi.get("driver") != CSI_DRIVER:
        raise ClusterError(f"{where} is not a Longhorn volume (its PersistentVolume {pv_name} "
                           f"uses {csi.get('driver') or 'no CSI driver'})",
                           fix="only Longhorn volumes can be backed up; remove it from backup.volumes")
    vol_name = csi["volumeHandle"]
    volume = await kube.get(LONGHORN_API, "Volume", vol_name, namespace=LONGHORN_NS)
    if volume is None:
        raise ClusterError(f"Longhorn volume {vol_name} (of {where}) not found in {LONGHORN_NS}",
                           fix="check that Longhorn is healthy: kubectl -n longhorn-system get volumes")
    vspec = volume.get("spec") or {}

    name = _backup_name(vol_name, stamp)
    await kube.create({
        "apiVersion": LONGHORN_API, "kind": "Snapshot",
        "metadata": {"name": name, "namespace": LONGHORN_NS, "labels": {"app.kubernetes.io/managed-by": "seedbed"}},
        "spec": {"volume": vol_name, "createSnapshot": True},
    })
    # Longhorn attaches a detached volume itself for the snapshot and the backup (attachment tickets,
    # longhorn-manager v1.12.1 controller/backup_controller.go handleAttachmentTicketCreation).
    fix = ("check the volume's health and the backup target in the Longhorn UI "
           "(kubectl -n longhorn-system get volume,backuptarget)")
    snap = await kube.wait_for(
        LONGHORN_API, "Snapshot", name, LONGHORN_NS,
        lambda o: o is not None and bool((o.get("status") or {}).get("readyToUse") or (o.get("status") or {}).get("error")),
        timeout=timeout, what=f"Longhorn snapshot {name} of {where}", describe=_state)
    if (snap.get("status") or {}).get("error"):
        raise ClusterError(f"Longhorn could not snapshot {where}: {snap['status']['error']}", fix=fix)
    await kube.create({
        "apiVersion": LONGHORN_API, "kind": "Backup",
        # Longhorn's backup controller finds the volume through this label, not through the spec.
        "metadata": {"name": name, "namespace": LONGHORN_NS, "labels": {"backup-volume": vol_name}},
        "spec": {"snapshotName": name, "labels": {"seedbed.io/pvc": f"{ref.namespace}.{ref.pvc}"}},
    })
    backup = await kube.wait_for(
        LONGHORN_API, "Backup", name, LONGHORN_NS,
        lambda o: o is not None and (o.get("status") or {}).get("state") in BACKUP_FINAL_STATES,
        timeout=timeout, what=f"Longhorn backup {name} of {where}", describe=_state)
    status = backup.get("status") or {}
    if status.get("state") != "Completed":
        detail = status.get("error") or "; ".join((status.get("messages") or {}).values()) or "no message"
        raise ClusterError(f"Longhorn backup of {where} failed (state {status.get('state')}): {detail}", fix=fix)
    # The snapshot served only this backup. Longhorn deletes it itself only with the setting
    # auto-cleanup-snapshot-after-on-demand-backup-completed (default false; controller/backup_controller.go
    # deleteSnapshotAfterBackupCompleted); otherwise every backup would leave one behind.
    await kube.delete(LONGHORN_API, "Snapshot", name, namespace=LONGHORN_NS)
    if not status.get("url"):
        raise ClusterError(f"Longhorn backup {name} of {where} completed without a URL",
                           fix="check the backup target; kubectl -n longhorn-system get backups " + name)
    pvc_spec = pvc.get("spec") or {}
    pv_spec = (pv or {}).get("spec") or {}
    size = vspec.get("size") or status.get("volumeSize") or (pv_spec.get("capacity") or {}).get("storage")
    try:
        size_bytes = _quantity_bytes(size)
    except ValueError:
        raise ClusterError(f"cannot tell the size in bytes of Longhorn volume {vol_name} ({size!r})",
                           fix="check the volume in the Longhorn UI: kubectl -n longhorn-system get volume " + vol_name) from None
    return {
        "namespace": ref.namespace,
        "pvc": ref.pvc,
        "pvName": pv_name,
        "volume": vol_name,
        "backup": name,
        "url": status["url"],
        "sizeBytes": size_bytes,
        "backupSize": int(status["size"]) if str(status.get("size", "")).isdigit() else None,
        "request": ((pvc_spec.get("resources") or {}).get("requests") or {}).get("storage"),
        "storageClass": pvc_spec.get("storageClassName") or pv_spec.get("storageClassName"),
        "accessModes": pvc_spec.get("accessModes") or pv_spec.get("accessModes") or ["ReadWriteOnce"],
        "volumeMode": pvc_spec.get("volumeMode") or "Filesystem",
        "fsType": csi.get("fsType") or "ext4",
        "volumeAttributes": csi.get("volumeAttributes") or {},
        "numberOfReplicas": vspec.get("numberOfReplicas"),
        "accessMode": vspec.get("accessMode"),
        "frontend": vspec.get("frontend"),
        "dataEngine": vspec.get("dataEngine"),
        "pvcLabels": (pvc.get("metadata") or {}).get("labels") or {},
    }


# --------------------------------------------------------------------------- restoring on a new cluster
#
# Longhorn's Volume mutating webhook (longhorn-manager v1.12.1 webhook/resources/volume/mutator.go)
# denies a Volume with spec.fromBackup until the Backup named in the URL exists with
# status.backupTargetName set and the matching BackupVolume exists. On a new cluster those appear only
# after the BackupTarget is available and the backup-target and backup-volume controllers have synced
# from the store (controller/backup_target_controller.go, backup_volume_controller.go), seconds to a
# poll interval (300 s by default) after Longhorn starts. So the restore waits for them, then creates
# the Volume, retrying the webhook's denial until the deadline.

_RETRY_PAUSE = 1.0


def backup_of(url: str) -> tuple[str, str]:
    """(backup name, volume name) from a backup URL ``...?backup=NAME&volume=VOL`` (backupstore.DecodeBackupURL)."""
    from urllib.parse import parse_qs, urlsplit

    query = parse_qs(urlsplit(url).query)
    return (query.get("backup") or [""])[0], (query.get("volume") or [""])[0]


def backup_volume_name(volume: str, target: str) -> str:
    """The BackupVolume Longhorn pulls for ``volume`` from ``target`` (types.GetBackupVolumeNameFromVolumeName)."""
    return f"{volume}-{hashlib.sha256(f'{volume}-{target}'.strip().encode()).hexdigest()[:8]}"


def _never_synced(record: dict[str, Any], what: str, timeout: float) -> ClusterError:
    backup, _ = backup_of(record["url"])
    return ClusterError(
        f"Longhorn backup {backup} (of {record['namespace']}/{record['pvc']}) did not appear in this cluster "
        f"within {timeout:g}s: {what}",
        fix="check that longhorn.backupTarget names the store the backup was written to "
            f"({record['url'].split('?')[0]}) and that its credentials work "
            "(kubectl -n longhorn-system get backuptarget default -o yaml: status.available, conditions), "
            "and that the backup still exists there; then re-run")


async def wait_backups_synced(kube: KubeClient, records: list[dict[str, Any]], *, timeout: float,
                              log: Callable[[str], None] | None = None) -> None:
    """Wait until Longhorn's webhook will accept a Volume restoring each record's backup."""
    if not records:
        return
    say = log or (lambda _: None)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout

    async def wait(api: str, kind: str, name: str, check: Callable[[dict[str, Any] | None], bool],
                   what: str, record: dict[str, Any]) -> dict[str, Any] | None:
        try:
            return await kube.wait_for(api, kind, name, LONGHORN_NS, check, timeout=max(0.0, deadline - loop.time()),
                                       what=what, describe=_state)
        except WaitTimeout as e:
            raise _never_synced(record, e.message, timeout) from None

    target = await kube.get(LONGHORN_API, "BackupTarget", "default", namespace=LONGHORN_NS)
    if target is not None and not (target.get("spec") or {}).get("backupTargetURL"):
        raise ClusterError("the archive has Longhorn volume backups but this cluster's Longhorn has no backup target",
                           fix="set longhorn.backupTarget (and its credentials) to the store the backups are in "
                               f"({records[0]['url'].split('?')[0]}) and re-run")
    say("waiting for Longhorn's backup target default to be available")
    await wait(LONGHORN_API, "BackupTarget", "default",
               lambda o: o is not None and (o.get("status") or {}).get("available") is True,
               "BackupTarget default to be available", records[0])

    async def one(record: dict[str, Any]) -> None:
        backup, volume = backup_of(record["url"])
        say(f"waiting for Longhorn to sync Backup {backup} of volume {volume} from the backup target")
        obj = await wait(LONGHORN_API, "Backup", backup,
                         lambda o: o is not None and bool((o.get("status") or {}).get("backupTargetName")),
                         f"Backup {backup} with status.backupTargetName", record)
        target = str(((obj or {}).get("status") or {}).get("backupTargetName") or "default")
        bv = backup_volume_name(volume, target)
        await wait(LONGHORN_API, "BackupVolume", bv, lambda o: o is not None,
                   f"BackupVolume {bv} (volume {volume} on target {target})", record)

    await asyncio.gather(*(one(r) for r in records))


async def create_restored(kube: KubeClient, records: list[dict[str, Any]], *, timeout: float,
                          log: Callable[[str], None] | None = None) -> None:
    """Volume (fromBackup), PV and PVC per record, once Longhorn has synced the backups; the Volume's
    create is retried while Longhorn's webhook still denies it (its caches lag the objects)."""
    if not records:
        return
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    await wait_backups_synced(kube, records, timeout=timeout, log=log)
    for record in records:
        volume, *rest = restore_objects(record)
        while True:
            try:
                await kube.create(volume)
                break
            except ClusterError as e:
                denied = "mutator.longhorn.io" in e.message or "validator.longhorn.io" in e.message
                if not denied or loop.time() + _RETRY_PAUSE > deadline:
                    if denied:
                        raise _never_synced(record, e.message, timeout) from None
                    raise
                if log:
                    log(f"Longhorn refused volume {record['volume']} for now ({e.message}); retrying")
                await asyncio.sleep(_RETRY_PAUSE)
        for obj in rest:
            await kube.create(obj)
