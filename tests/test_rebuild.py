"""The rebuild path against simulations of the real controllers: Longhorn's backups and restores,
cert-manager's webhook, and the certificate guard's re-issue decision.

Each simulation names the upstream file it follows (tests/emulator/controllers.py); what it leaves
out is in tests/emulator/SIMPLIFICATIONS.md.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from seedbed import yamlutil
from seedbed.backup.volumes import backup_volumes
from seedbed.config import BackupConfig, ClusterConfig, Config, LonghornConfig, VolumeRef
from seedbed.errors import ClusterError

pytest.importorskip("emulator", reason="tests/emulator (the API-server emulator) is not there yet")
from seedbed.kube import Kube

LH_API = "longhorn.io/v1beta2"
LH_NS = "longhorn-system"
LH_CRDS = {"volumes.longhorn.io", "backups.longhorn.io", "snapshots.longhorn.io", "backuptargets.longhorn.io",
           "backupvolumes.longhorn.io", "settings.longhorn.io"}


def ns(name: str) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}}


def longhorn_crds(upstream: Any) -> list[dict[str, Any]]:
    docs = yamlutil.load_all(upstream("longhorn-v1.12.1.yaml").read_text())
    return [d for d in docs if d.get("kind") == "CustomResourceDefinition" and d["metadata"]["name"] in LH_CRDS]


async def connect(emu: Any, tmp_path: Path, name: str = "kube") -> Kube:
    path = tmp_path / f"{name}.kubeconfig"
    emu.write_kubeconfig(path)
    return await Kube.connect(ClusterConfig(kubeconfig=str(path)))


@pytest.fixture
async def kube(emulator: Any, tmp_path: Path) -> AsyncIterator[Kube]:
    k = await connect(emulator, tmp_path)
    try:
        yield k
    finally:
        await k.close()


def lh_config(target: str | None = "s3://backups@us-east-1/lh") -> Config:
    return Config(longhorn=LonghornConfig(backup_target=target),
                  backup=BackupConfig(recipients=["age1qyqszqgpqyqszqgpqyqszqgpqyqszqgpqyqszqgpqyqszqgpqyqs3290gq"],
                                      include_git_server_volume=False,
                                      volumes=[VolumeRef(namespace="gitea", pvc="gitea-shared-storage")]))


async def longhorn_volume(kube: Kube, upstream: Any, vol: str = "pvc-0b1c") -> None:
    """A bound Longhorn claim gitea/gitea-shared-storage on volume ``vol``."""
    await kube.apply([*longhorn_crds(upstream), ns(LH_NS), ns("gitea")])
    await kube.create({"apiVersion": LH_API, "kind": "Volume", "metadata": {"name": vol, "namespace": LH_NS},
                       "spec": {"size": "10737418240", "numberOfReplicas": 2, "frontend": "blockdev",
                                "accessMode": "rwo", "dataEngine": "v1"}})
    await kube.create({"apiVersion": "v1", "kind": "PersistentVolume", "metadata": {"name": vol},
                       "spec": {"capacity": {"storage": "10Gi"}, "accessModes": ["ReadWriteOnce"],
                                "storageClassName": "longhorn", "persistentVolumeReclaimPolicy": "Delete",
                                "csi": {"driver": "driver.longhorn.io", "volumeHandle": vol, "fsType": "ext4"}}})
    await kube.create({"apiVersion": "v1", "kind": "PersistentVolumeClaim",
                       "metadata": {"name": "gitea-shared-storage", "namespace": "gitea"},
                       "spec": {"accessModes": ["ReadWriteOnce"], "storageClassName": "longhorn",
                                "resources": {"requests": {"storage": "10Gi"}}, "volumeName": vol}})


# --------------------------------------------------------------------------- taking backups


@pytest.mark.parametrize("state", ["Unknown", "Error"])
async def test_a_failed_longhorn_backup_stops_at_once_without_waiting_for_the_timeout(
        emulator: Any, kube: Kube, upstream: Any, state: str) -> None:
    """Error and Unknown are final for Longhorn's backup controller (backupInFinalState,
    longhorn-manager v1.12.1 controller/backup_controller.go): seedbed reports them instead of waiting."""
    await longhorn_volume(kube, upstream)

    def snapshot_ready(emu: Any, obj: dict[str, Any]) -> None:
        emu.set_status(LH_API, "Snapshot", obj["metadata"]["name"], LH_NS, {"readyToUse": True})

    def backup_lost(emu: Any, obj: dict[str, Any]) -> None:
        emu.set_status(LH_API, "Backup", obj["metadata"]["name"], LH_NS,
                       {"state": state, "error": "lost contact with the replica"})

    emulator.on_apply("Snapshot", snapshot_ready)
    emulator.on_apply("Backup", backup_lost)
    # An hour's timeout: the old code waited all of it for "Unknown"; a result here means it did not.
    with pytest.raises(ClusterError, match=f"state {state}.*lost contact") as e:
        await backup_volumes(kube, lh_config(), timeout=3600)
    assert "detached volume cannot be snapshotted" not in (e.value.fix or "")


async def test_a_backup_leaves_no_snapshot_behind(emulator: Any, kube: Kube, upstream: Any) -> None:
    """Longhorn keeps an on-demand backup's snapshot unless auto-cleanup-snapshot-after-on-demand-backup-
    completed is set (default false; deleteSnapshotAfterBackupCompleted in longhorn-manager v1.12.1
    controller/backup_controller.go), so seedbed deletes it once the backup is Completed."""
    await longhorn_volume(kube, upstream)

    def snapshot_ready(emu: Any, obj: dict[str, Any]) -> None:
        emu.set_status(LH_API, "Snapshot", obj["metadata"]["name"], LH_NS, {"readyToUse": True})

    def backup_done(emu: Any, obj: dict[str, Any]) -> None:
        name = obj["metadata"]["name"]
        emu.set_status(LH_API, "Backup", name, LH_NS, {
            "state": "Completed", "url": f"s3://backups@us-east-1/lh?backup={name}&volume=pvc-0b1c",
            "size": "4096", "volumeSize": "10737418240"})

    emulator.on_apply("Snapshot", snapshot_ready)
    emulator.on_apply("Backup", backup_done)
    (record,) = await backup_volumes(kube, lh_config(), timeout=30)
    assert emulator.get(LH_API, "Backup", record["backup"], LH_NS) is not None
    assert emulator.list(LH_API, "Snapshot", LH_NS) == []
