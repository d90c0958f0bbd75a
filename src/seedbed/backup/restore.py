"""Restoring an opened (already verified) archive, phase by phase.

The phases are separate functions because bootstrap interleaves them with its own steps:
volumes before the Git server (so Gitea finds its data), Secrets before Flux starts
cert-manager (so cert-manager finds its keys and does not re-issue), cert-manager objects once
their CRDs are Established, and the repository last. ``seedbed restore`` on a running cluster
runs them in the same order (``backup/sequence.py``).

Nothing here overwrites an existing object unless ``force``; ``dry_run`` only reads. Output is
names and reasons, never a Secret value.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

import msgspec

from seedbed.errors import ClusterError

from .archive import Archive
from .certmanager import WebhookRetry, wait_for_webhook
from .collect import CM_API, CM_KINDS
from .volumes import LONGHORN_API, LONGHORN_NS, create_restored

if TYPE_CHECKING:
    from seedbed.certs.ledger import Ledger

    from ..kube import KubeClient

_CONCURRENCY = 16  # writes in flight
# Reads in flight: one LIST per namespace of the archive; 32 covers a homelab's namespaces in one
# round trip (on a 20 ms link every extra round of LISTs is 20 ms more).
_READ_CONCURRENCY = 32
_EXISTS = "exists (use --force to overwrite)"
Key = tuple[str, str, str]  # (kind, namespace or "", name)


class PlanItem(msgspec.Struct, frozen=True):
    phase: str  # volumes | secrets | cert-manager | git | ledger
    kind: str
    namespace: str
    name: str
    action: str  # restore | overwrite | skip
    reason: str = ""

    @property
    def ref(self) -> str:
        return f"{self.kind} {self.namespace}/{self.name}" if self.namespace else f"{self.kind} {self.name}"

    def line(self) -> str:
        return f"{self.action:9} {self.ref}" + (f": {self.reason}" if self.reason else "")


class Summary(msgspec.Struct):
    """What one phase did (or, in a dry run, would do)."""

    phase: str
    items: list[PlanItem] = msgspec.field(default_factory=list)
    dry_run: bool = False

    @property
    def restored(self) -> list[str]:
        return [i.ref for i in self.items if i.action in ("restore", "overwrite")]

    @property
    def skipped(self) -> list[tuple[str, str]]:
        return [(i.ref, i.reason) for i in self.items if i.action == "skip"]

    def lines(self) -> list[str]:
        return [i.line() for i in self.items]

    def __str__(self) -> str:
        verb = "would restore" if self.dry_run else "restored"
        return f"{self.phase}: {verb} {len(self.restored)}, skipped {len(self.skipped)}"


# --------------------------------------------------------------------------- reading the archive


def _meta(obj: dict[str, Any]) -> tuple[str, str]:
    md = obj.get("metadata") or {}
    return md.get("namespace", ""), md["name"]


# Every reader below returns what validate.py checked and cleaned when the archive was opened.


def secrets(archive: Archive) -> list[dict[str, Any]]:
    return [o.body for o in archive.checked().secrets]


def cert_manager_objects(archive: Archive) -> list[dict[str, Any]]:
    """Issuers and ClusterIssuers before Certificates, so a Certificate never waits on a missing issuer."""
    return [o.body for o in archive.checked().cert_manager]


def volume_records(archive: Archive) -> list[dict[str, Any]]:
    return [v.record for v in archive.checked().volumes]


def git_bundle(archive: Archive) -> bytes | None:
    """The repository bundle, for the caller to push back if the server's copy is missing or behind."""
    return archive.checked().git_bundle


def git_bundle_name(archive: Archive) -> str | None:
    return archive.checked().git_repo


def ledger(archive: Archive) -> Ledger | None:
    """The archive's issuance ledger, validated in full, or None."""
    return archive.checked().ledger


# --------------------------------------------------------------------------- planning (pure)


def _decide(phase: str, kind: str, ns: str, name: str, existing: set[Key], force: bool) -> PlanItem:
    if (kind, ns, name) in existing:
        if force:
            return PlanItem(phase, kind, ns, name, "overwrite", "exists; --force")
        return PlanItem(phase, kind, ns, name, "skip", _EXISTS)
    return PlanItem(phase, kind, ns, name, "restore")


def plan_volumes(records: list[dict[str, Any]], existing: set[Key]) -> list[PlanItem]:
    items = []
    for r in records:
        ns, pvc, vol = r["namespace"], r["pvc"], r["volume"]
        # Never replaced, even with --force: replacing a claim would throw away whatever data it now holds.
        if ("PersistentVolumeClaim", ns, pvc) in existing:
            why = "the claim exists; delete it first to restore its data (--force does not replace volumes)"
        elif ("Volume", LONGHORN_NS, vol) in existing:
            why = f"Longhorn volume {vol} exists; delete it first to restore from the backup"
        elif ("PersistentVolume", "", r.get("pvName") or vol) in existing:
            why = f"PersistentVolume {r.get('pvName') or vol} exists; delete it first"
        else:
            items.append(PlanItem("volumes", "PersistentVolumeClaim", ns, pvc, "restore",
                                  f"from Longhorn backup {r.get('backup')}"))
            continue
        items.append(PlanItem("volumes", "PersistentVolumeClaim", ns, pvc, "skip", why))
    return items


# --------------------------------------------------------------------------- cluster helpers


def _is_exists(e: Exception) -> bool:
    # seedbed.kube raises AlreadyExists (a ClusterError) on 409; matched by name to avoid importing the engine.
    return type(e).__name__ == "AlreadyExists"


async def _existing(kube: KubeClient, api_version: str, kind: str, namespaces: Iterable[str] | None) -> set[Key]:
    """Keys of existing objects: one LIST per namespace (or one cluster-wide LIST when None), of their
    metadata only: a restore into a running cluster does not download its Secrets' values (nor
    Helm's release history) to learn their names."""
    sem = asyncio.Semaphore(_READ_CONCURRENCY)

    async def one(ns: str | None) -> list[dict[str, Any]]:
        async with sem:
            return await kube.list_metadata(api_version, kind, namespace=ns)

    groups = await asyncio.gather(*(one(ns) for ns in (sorted(set(namespaces)) if namespaces is not None else [None])))
    return {(kind, *_meta(o)) for items in groups for o in items}


async def _ensure_namespaces(kube: KubeClient, namespaces: Iterable[str]) -> list[str]:
    wanted = sorted({ns for ns in namespaces if ns})
    if not wanted:
        return []
    have = {o["metadata"]["name"] for o in await kube.list("v1", "Namespace")}
    made = []
    for ns in wanted:
        if ns in have:
            continue
        try:
            await kube.create({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}})
            made.append(ns)
        except ClusterError as e:
            if not _is_exists(e):
                raise
    return made


async def _write(kube: KubeClient, objs: dict[Key, dict[str, Any]], items: list[PlanItem]) -> list[PlanItem]:
    """Create (or, for overwrite, server-side apply) each planned object; a create race becomes a skip."""
    sem = asyncio.Semaphore(_CONCURRENCY)

    async def one(item: PlanItem) -> PlanItem:
        if item.action == "skip":
            return item
        obj = objs[(item.kind, item.namespace, item.name)]
        async with sem:
            try:
                if item.action == "overwrite":
                    await kube.apply_one(obj, force=True)
                else:
                    await kube.create(obj)
            except ClusterError as e:
                if _is_exists(e):
                    return PlanItem(item.phase, item.kind, item.namespace, item.name, "skip", _EXISTS)
                # Only the reference, never the object: the message must not carry Secret data.
                raise ClusterError(f"cannot restore {item.ref}: {e.message}", fix=e.fix) from None
        return item

    return list(await asyncio.gather(*(one(i) for i in items)))


# --------------------------------------------------------------------------- phases


async def restore_volumes(kube: KubeClient, archive: Archive, *, force: bool = False, dry_run: bool = False,
                          wait: bool = True, timeout: float = 1800,
                          log: Callable[[str], None] | None = None) -> Summary:
    """Longhorn Volume (fromBackup) -> PV -> PVC per recorded claim, then wait for the data."""
    del force  # volumes are never replaced (see plan_volumes); the flag is accepted for a uniform call
    records = volume_records(archive)
    checks = [check for r in records for check in (
        ("v1", "PersistentVolumeClaim", r["pvc"], r["namespace"]),
        (LONGHORN_API, "Volume", r["volume"], LONGHORN_NS),
        ("v1", "PersistentVolume", r.get("pvName") or r["volume"], None))]
    sem = asyncio.Semaphore(_READ_CONCURRENCY)

    async def exists(api: str, kind: str, name: str, ns: str | None) -> bool:
        async with sem:
            return await kube.get(api, kind, name, namespace=ns) is not None

    # All at once: three GETs per claim one after another cost three round trips each on a slow link.
    found = await asyncio.gather(*(exists(*c) for c in checks))
    existing = {(kind, ns or "", name) for (_, kind, name, ns), there in zip(checks, found, strict=True) if there}
    items = plan_volumes(records, existing)
    if dry_run:
        return Summary("volumes", items, dry_run=True)
    todo = [r for r, i in zip(records, items, strict=True) if i.action == "restore"]
    await _ensure_namespaces(kube, (r["namespace"] for r in todo))
    # Waits for Longhorn to sync the backups from the target, then creates Volume, PV, PVC per claim.
    await create_restored(kube, todo, timeout=timeout, log=log)
    if wait:
        await asyncio.gather(*(_wait_restored(kube, r, timeout) for r in todo))
    return Summary("volumes", items)


def _restore_done(obj: dict[str, Any] | None) -> bool:
    status = (obj or {}).get("status") or {}
    failed = any(c.get("type") == "Restore" and c.get("reason") == "RestoreFailure"
                 for c in status.get("conditions") or [])
    # restoreRequired is absent until Longhorn starts, so "done" needs restoreInitiated as well.
    return failed or (status.get("restoreInitiated") is True and status.get("restoreRequired") is False)


async def _wait_restored(kube: KubeClient, record: dict[str, Any], timeout: float) -> None:
    vol = record["volume"]

    def describe(obj: dict[str, Any] | None) -> str:
        status = (obj or {}).get("status") or {}
        return f"state={status.get('state', '?')}, restoreRequired={status.get('restoreRequired', '?')}"

    obj = await kube.wait_for(LONGHORN_API, "Volume", vol, LONGHORN_NS, _restore_done, timeout=timeout,
                              what=f"Longhorn to restore volume {vol} from its backup", describe=describe)
    for c in ((obj or {}).get("status") or {}).get("conditions") or []:
        if c.get("type") == "Restore" and c.get("reason") == "RestoreFailure":
            raise ClusterError(f"Longhorn could not restore {record['namespace']}/{record['pvc']}: "
                               f"{c.get('message') or 'no message'}",
                               fix="check the backup target and the backup in the Longhorn UI")


async def restore_secrets(kube: KubeClient, archive: Archive, *, force: bool = False, dry_run: bool = False) -> Summary:
    """Secrets into their namespaces (created as needed); existing ones kept unless force."""
    objs = {("Secret", *_meta(o)): o for o in secrets(archive)}
    namespaces = {k[1] for k in objs}
    existing = await _existing(kube, "v1", "Secret", namespaces) if objs else set()
    items = [_decide("secrets", "Secret", ns, name, existing, force) for (_, ns, name) in sorted(objs)]
    if dry_run:
        return Summary("secrets", items, dry_run=True)
    await _ensure_namespaces(kube, namespaces)
    return Summary("secrets", await _write(kube, objs, items))


async def restore_cert_manager(kube: KubeClient, archive: Archive, *, force: bool = False, dry_run: bool = False,
                               timeout: float = 300, log: Callable[[str], None] | None = None) -> Summary:
    """Issuers, ClusterIssuers and Certificates, once their CRDs are Established."""
    ordered = cert_manager_objects(archive)
    objs = {(o["kind"], *_meta(o)): o for o in ordered}
    kinds = sorted({k[0] for k in objs})
    if not dry_run:
        # Waiting here rather than failing: bootstrap reaches this phase while Flux is installing cert-manager.
        await asyncio.gather(*(kube.wait_condition("apiextensions.k8s.io/v1", "CustomResourceDefinition",
                                                   CM_KINDS[k][0], condition="Established", timeout=timeout)
                               for k in kinds))
    existing: set[Key] = set().union(*await asyncio.gather(*(_existing(kube, CM_API, k, None) for k in kinds)))
    items = [_decide("cert-manager", k, ns, name, existing, force) for (k, ns, name) in objs]
    if dry_run:
        served = dict(zip(kinds, await asyncio.gather(*(kube.serves(CM_API, k) for k in kinds)), strict=True))
        items = [i if served[i.kind] or i.action != "restore"
                 else PlanItem(i.phase, i.kind, i.namespace, i.name, i.action, "once cert-manager's CRDs are installed")
                 for i in items]
        return Summary("cert-manager", items, dry_run=True)
    await _ensure_namespaces(kube, (ns for (_, ns, _) in objs))
    # Established CRDs are not enough: cert-manager's webhook refuses every write until it is up.
    await wait_for_webhook(kube, timeout=timeout, log=log)
    kube = WebhookRetry(kube, timeout=timeout, log=log)
    done: list[PlanItem] = []
    # Issuers first, then Certificates: cert-manager would otherwise log a missing issuer for each.
    for group in (["ClusterIssuer", "Issuer"], ["Certificate"]):
        done += await _write(kube, objs, [i for i in items if i.kind in group])
    return Summary("cert-manager", done)


def dumps_summary(summaries: list[Summary]) -> str:
    """--output json: names, actions and reasons only."""
    return json.dumps([{"phase": s.phase, "dryRun": s.dry_run,
                        "items": [{"kind": i.kind, "namespace": i.namespace, "name": i.name,
                                   "action": i.action, "reason": i.reason} for i in s.items]}
                       for s in summaries], indent=2)
