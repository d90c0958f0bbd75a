"""The rebuild path against simulations of the real controllers: Longhorn's backups and restores,
cert-manager's webhook, and the certificate guard's re-issue decision.

Each simulation names the upstream file it follows (src/seedbed_lab/emulator/controllers.py); what it leaves
out is in src/seedbed_lab/emulator/SIMPLIFICATIONS.md.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from seedbed import yamlutil
from seedbed.backup import archive, restore
from seedbed.backup.volumes import backup_volumes
from seedbed.config import BackupConfig, ClusterConfig, Config, LonghornConfig, VolumeRef
from seedbed.errors import ClusterError

pytest.importorskip("seedbed_lab.emulator", reason="the lab (seedbed_lab, the demo extra) is not installed")
from seedbed.kube import Kube
from seedbed_lab.emulator import Emulator
from seedbed_lab.emulator.controllers import BackupStore, LonghornSim

NOW = datetime(2026, 3, 10, 12, 0, tzinfo=UTC)
TARGET = "s3://backups@us-east-1/lh"

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
    k.backoff = 0.01  # keep the client's own 5xx retries quick; the policy is the same
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


# --------------------------------------------------------------------------- restoring volumes on a new cluster


@pytest.fixture
async def rebuilt(tmp_path: Path) -> AsyncIterator[tuple[Emulator, Kube]]:
    """A second, empty cluster: the rebuilt one."""
    emu = Emulator().start()
    kube = await connect(emu, tmp_path, "rebuilt")
    try:
        yield emu, kube
    finally:
        await kube.close()
        emu.stop()


async def install_longhorn(kube: Kube, upstream: Any) -> None:
    """What the Longhorn step leaves behind: the CRDs, and the default BackupTarget longhorn-manager makes."""
    await kube.apply([*longhorn_crds(upstream), ns(LH_NS)])
    await kube.create({"apiVersion": LH_API, "kind": "BackupTarget", "metadata": {"name": "default", "namespace": LH_NS},
                       "spec": {"backupTargetURL": TARGET, "pollInterval": "5m0s"}})


def validated(entries: dict[str, bytes]) -> Any:
    """An archive as restore gets it: opened and validated (signatures are test_hostile_archive's)."""
    from seedbed.backup.validate import Policy
    from seedbed.config import Config

    arc = archive.untar(archive.build(entries, cluster="homelab", created=NOW))
    archive.verify(arc, policy=Policy.from_config(Config(), skip_signature=True))
    return arc


def volumes_archive(records: list[dict[str, Any]]) -> Any:
    return validated({"volumes.json": archive.dumps({"volumes": records})})


async def test_a_rebuild_restores_volumes_once_longhorn_has_synced_the_backups(
        emulator: Any, kube: Kube, rebuilt: tuple[Emulator, Kube], upstream: Any) -> None:
    """On a new cluster Longhorn's webhook refuses a Volume restoring a backup until the backup target
    has synced the Backup and BackupVolume (longhorn-manager v1.12.1 webhook/resources/volume/mutator.go);
    seedbed waits for them, saying what it waits for, and the claim comes back bound to the restored data."""
    bucket = BackupStore()  # the S3 bucket: outlives the first cluster
    LonghornSim(emulator, bucket, sync_delay=0.01)
    await longhorn_volume(kube, upstream)
    await kube.create({"apiVersion": LH_API, "kind": "BackupTarget", "metadata": {"name": "default", "namespace": LH_NS},
                       "spec": {"backupTargetURL": TARGET}})
    records = await backup_volumes(kube, lh_config(), timeout=30)
    assert bucket.backups["pvc-0b1c"]

    emu, dest = rebuilt
    LonghornSim(emu, bucket, sync_delay=0.3)
    await install_longhorn(dest, upstream)
    # What seedbed did before: create the Volume at once. Longhorn's webhook says no.
    volume = {"apiVersion": LH_API, "kind": "Volume", "metadata": {"name": "probe", "namespace": LH_NS},
              "spec": {"fromBackup": records[0]["url"], "size": "10737418240", "accessMode": "rwo"}}
    with pytest.raises(ClusterError, match=r'mutator\.longhorn\.io" denied the request: cannot get backup seedbed-'):
        await dest.create(volume)

    said: list[str] = []
    summary = await restore.restore_volumes(dest, volumes_archive(records), timeout=60, log=said.append)
    assert summary.restored == ["PersistentVolumeClaim gitea/gitea-shared-storage"]
    assert "waiting for Longhorn's backup target default to be available" in said
    assert any(s.startswith(f"waiting for Longhorn to sync Backup {records[0]['backup']} of volume pvc-0b1c")
               for s in said)
    restored = emu.get(LH_API, "Volume", "pvc-0b1c", LH_NS) or {}
    assert restored["status"]["restoreRequired"] is False
    assert emu.get("v1", "PersistentVolumeClaim", "gitea-shared-storage", "gitea")["spec"]["volumeName"] == "pvc-0b1c"


async def test_a_backup_missing_from_the_target_is_an_error_naming_it_and_the_target(
        rebuilt: tuple[Emulator, Kube], upstream: Any) -> None:
    emu, dest = rebuilt
    LonghornSim(emu, BackupStore(), sync_delay=0.01)  # another (empty) bucket: the wrong backupTarget
    await install_longhorn(dest, upstream)
    record = {"namespace": "gitea", "pvc": "gitea-shared-storage", "volume": "pvc-0b1c", "backup": "nightly-1",
              "url": f"{TARGET}?backup=nightly-1&volume=pvc-0b1c", "sizeBytes": 10737418240}
    with pytest.raises(ClusterError) as e:
        await restore.restore_volumes(dest, volumes_archive([record]), timeout=1)
    assert "Longhorn backup nightly-1 (of gitea/gitea-shared-storage) did not appear" in e.value.message
    assert TARGET in (e.value.fix or "") and "longhorn.backupTarget" in (e.value.fix or "")
    assert emu.get(LH_API, "Volume", "pvc-0b1c", LH_NS) is None  # nothing half-made


# --------------------------------------------------------------------------- cert-manager's webhook

ISSUER = {"apiVersion": "cert-manager.io/v1", "kind": "ClusterIssuer", "metadata": {"name": "letsencrypt-production"},
          "spec": {"acme": {"server": "https://acme-v02.api.letsencrypt.org/directory", "email": "a@example.org",
                            "privateKeySecretRef": {"name": "letsencrypt-production-account-key"},
                            "solvers": [{"http01": {"ingress": {"ingressClassName": "nginx"}}}]}}}
CERTIFICATE = {"apiVersion": "cert-manager.io/v1", "kind": "Certificate", "metadata": {"name": "web", "namespace": "apps"},
               "spec": {"secretName": "web-tls", "dnsNames": ["web.example.org"],
                        "issuerRef": {"kind": "ClusterIssuer", "name": "letsencrypt-production"}}}


async def test_certificates_are_restored_once_cert_managers_webhook_answers(
        emulator: Any, kube: Kube, upstream: Any) -> None:
    """cert-manager v1.18.0's ValidatingWebhookConfiguration (failurePolicy Fail, every cert-manager.io and
    acme.cert-manager.io resource) refuses writes with 500 until the webhook Deployment is ready and
    cainjector has injected the CA bundle. seedbed waits for both, saying so, instead of failing."""
    emulator.controllers.webhooks.delay = 0.3  # the webhook's CA, then cainjector: a real cluster takes longer
    emulator.hold_ready("Deployment", "cert-manager", "cert-manager-webhook")
    await kube.apply(yamlutil.load_all(upstream("cert-manager-v1.18.0.yaml").read_text()))
    await kube.create(ns("apps"))
    with pytest.raises(ClusterError, match=r'500 InternalError: Internal error occurred: failed calling webhook '
                                           r'"webhook\.cert-manager\.io".*no endpoints available'):
        await kube.create(ISSUER)

    arc = validated({"cert-manager/clusterissuers/letsencrypt-production.json": archive.dumps(ISSUER),
                     "cert-manager/certificates/apps/web.json": archive.dumps(CERTIFICATE)})
    said: list[str] = []

    def log(line: str) -> None:
        said.append(line)
        if line.startswith("waiting for Deployment cert-manager/cert-manager-webhook"):
            emulator.release_ready("Deployment", "cert-manager", "cert-manager-webhook")

    summary = await restore.restore_cert_manager(kube, arc, timeout=60, log=log)
    assert summary.restored == ["ClusterIssuer letsencrypt-production", "Certificate apps/web"]
    assert "waiting for cainjector to inject the CA bundle into ValidatingWebhookConfiguration cert-manager-webhook" \
        in said
    config = emulator.get("admissionregistration.k8s.io/v1", "ValidatingWebhookConfiguration", "cert-manager-webhook")
    assert config["webhooks"][0]["clientConfig"]["caBundle"]


# --------------------------------------------------------------------------- the whole rebuild, end to end

CERTIFICATES = """apiVersion: cert-manager.io/v1
kind: Certificate
metadata: {name: web, namespace: apps}
spec:
  secretName: web-tls
  dnsNames: [web.example.org]
  issuerRef: {kind: ClusterIssuer, name: letsencrypt-production}
---
apiVersion: cert-manager.io/v1
kind: Certificate
metadata: {name: blog, namespace: apps}
spec:
  secretName: blog-tls
  dnsNames: [blog.example.org]
  issuerRef: {kind: ClusterIssuer, name: letsencrypt-production}
"""


def test_a_whole_rebuild_against_longhorn_and_cert_manager_as_upstream_behaves(tmp_path: Path, upstream: Any,
                                                                               capsys: Any) -> None:
    """`seedbed backup`, then `seedbed bootstrap --restore` on a new cluster whose Longhorn syncs the
    backups from the same bucket only after a while (LonghornSim: longhorn-manager v1.12.1's Volume
    webhook and backup target/volume/backup controllers) and whose cert-manager, installed by Flux from
    the repository (the v1.18.0 release manifest), refuses writes until its webhook is up (WebhookSim).

    The Git server's claim comes back from its Longhorn backup before the Git server starts; the
    progress says what each wait is for; the certificate guard names the one certificate cert-manager
    will issue again (inside its renewal window; cert-manager's trigger policies, certs/policies.py)
    and the one it will not; the Certificates and the ClusterIssuer are restored once the webhook
    answers; and `seedbed status` is green.
    """
    import json
    from datetime import timedelta

    from conftest import APPS_KUSTOMIZATION, run_cli
    from seedbed.backup.archive import keygen
    from seedbed_lab.lab import Lab, make_worktree
    from test_bootstrap import bootstrap
    from test_certs import tls_secret

    upstream("longhorn-v1.12.1.yaml")
    upstream("flux-gotk-components-v2.9.3.yaml")
    key = tmp_path / "age.key"
    sections = {"longhorn": {"backupTarget": TARGET},
                "backup": {"recipients": [keygen(key)], "identityFile": str(key)},  # + the Git server's claim
                "certificates": {"acme": "production"}}
    archive_path = tmp_path / "homelab.age"
    tree = make_worktree(tmp_path / "gitops", {
        "clusters/homelab/cert-manager/cert-manager.yaml": upstream("cert-manager-v1.18.0.yaml").read_text(),
        "clusters/homelab/apps.yaml": APPS_KUSTOMIZATION, "apps/certificates.yaml": CERTIFICATES})
    bucket = BackupStore()  # the S3 bucket behind longhorn.backupTarget: it outlives the old cluster
    now = datetime.now(UTC)

    # The old cluster: bootstrapped; cert-manager issued two certificates, one now due for renewal.
    (tmp_path / "old").mkdir()
    with Lab(tmp_path / "old") as old:
        LonghornSim(old.emu, bucket, sync_delay=0.01)
        config = old.write_config(tree, **sections)
        code, _, err = bootstrap(capsys, old, config)
        assert code == 0, err
        old.emu.put(ns("apps"))
        for name, age in (("web", timedelta(days=10)), ("blog", timedelta(days=70))):  # renews at day 60
            old.emu.put(tls_secret([f"{name}.example.org"], age=age, now=now, cert_name=name,
                                   secret_name=f"{name}-tls"))
        old.emu.put(ISSUER)
        for cert in yamlutil.load_all(CERTIFICATES):
            old.emu.put(cert)
        code, _, err = run_cli(capsys, "-c", str(config), "backup", "-o", str(archive_path))
        assert code == 0, err
        git_volume = old.emu.get("v1", "PersistentVolumeClaim", "gitea-shared-storage", "gitea")["spec"]["volumeName"]
        issued = {n: old.emu.get("v1", "Secret", f"{n}-tls", "apps")["data"] for n in ("web", "blog")}
        assert list(bucket.backups) == [git_volume]

    # The new cluster: Longhorn takes a while to sync the bucket, cert-manager's webhook to come up.
    (tmp_path / "new").mkdir()
    with Lab(tmp_path / "new") as new:
        LonghornSim(new.emu, bucket, sync_delay=0.2)
        new.emu.controllers.webhooks.delay = 0.2
        claim_when_git_server_started: list[dict[str, Any] | None] = []
        new.emu.on_apply("Deployment", lambda emu, obj: obj["metadata"]["name"] != "gitea" or
                         claim_when_git_server_started.append(
                             emu.get("v1", "PersistentVolumeClaim", "gitea-shared-storage", "gitea")))
        config = new.write_config(tree, **sections)
        code, _, err = bootstrap(capsys, new, config, "--restore", str(archive_path))
        assert code == 0, err

        # Every volume is back before the Git server needs it: the claim was bound to the restored
        # Longhorn volume when the Git server's Deployment first appeared.
        first = claim_when_git_server_started[0]
        assert first is not None and first["spec"]["volumeName"] == git_volume
        assert first["status"]["phase"] == "Bound"
        # Nothing made anew that the backup had: no empty volume beside the restored one, the same key
        # pairs and certificates in the Secrets.
        assert [v["metadata"]["name"] for v in new.emu.list(LH_API, "Volume", LH_NS)] == [git_volume]
        assert [pv["metadata"]["name"] for pv in new.emu.list("v1", "PersistentVolume")] == [git_volume]
        assert {n: new.emu.get("v1", "Secret", f"{n}-tls", "apps")["data"] for n in issued} == issued
        restored = new.emu.get(LH_API, "Volume", git_volume, LH_NS)
        assert restored["spec"]["fromBackup"].startswith(TARGET) and restored["status"]["restoreRequired"] is False
        lines = err.splitlines()

        def at(text: str) -> int:
            return next(i for i, line in enumerate(lines) if text in line)

        assert at("✔ Restore volumes: volumes: restored 1") < at("► Git server")
        # The waits say what they wait for.
        assert "waiting for Longhorn's backup target default to be available" in err
        assert "waiting for Longhorn to sync Backup seedbed-" in err and f"of volume {git_volume}" in err
        assert "waiting for Deployment cert-manager/cert-manager-webhook (cert-manager's webhook) to be ready" in err
        assert "waiting for cainjector to inject the CA bundle into ValidatingWebhookConfiguration " \
               "cert-manager-webhook" in err
        # The guard: the certificate inside its renewal window will be issued, and why; the valid one will not.
        assert "blog.example.org will be issued: Renewing certificate as renewal was scheduled at" in err
        assert "apps/certificates.yaml:1: web.example.org will not be issued: cert-manager keeps its restored " \
               "Secret web-tls" in err
        assert "1 certificate(s) would be issued; within budget" in err
        # Restored once the webhook answered.
        assert new.emu.get("cert-manager.io/v1", "ClusterIssuer", "letsencrypt-production") is not None
        for name in ("web", "blog"):
            assert new.emu.get("cert-manager.io/v1", "Certificate", name, "apps") is not None
        config_obj = new.emu.get("admissionregistration.k8s.io/v1", "ValidatingWebhookConfiguration",
                                 "cert-manager-webhook")
        assert config_obj["webhooks"][0]["clientConfig"]["caBundle"]

        code, out, _ = run_cli(capsys, "-c", str(config), "status", "--output", "json")
        report = json.loads(out)
        assert code == 0 and report["ok"], out
