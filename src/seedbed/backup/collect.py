"""Collect what a rebuilt cluster cannot get back from Git: certificates, their keys, chosen Secrets.

Speed matters (thousands of Secrets): one LIST per kind and namespace, never one GET per
object, and the LISTs run concurrently: the configured namespaces' together with the cert-manager
objects, so that a backup costs one round trip of reads, not two.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from seedbed import sops
from seedbed.config import Config

from .archive import dumps
from .validate import CM_API, CM_KINDS, SECRET_TYPES, clean, secret_refs

__all__ = ["CM_API", "CM_KINDS", "collect", "entry_name", "extra_entries"]

log = logging.getLogger("seedbed.backup")

# Secrets of these types are never archived (SECRET_TYPES keeps the restorable ones), so the API server
# is asked to leave them out of its answer: Helm's release history above all (helm pkg/storage/driver/
# secrets.go newSecretsObject, read at helm/helm 02ad2b11: type helm.sh/release.v1, one Secret per revision, each the gzipped
# chart, values and manifest: often hundreds of KB, and helm-controller keeps five revisions per
# release), which would otherwise cross a laptop's Wi-Fi or VPN link at every backup only to be
# dropped here. `type` is a field label Secrets support (kubernetes pkg/apis/core/v1/conversion.go
# AddFieldLabelConversionsForSecret, read at kubernetes/kubernetes 0158de93;
# pkg/registry/core/secret/strategy.go SelectableFields); terms
# are ANDed. Field selectors have no "in", so the restorable types cannot be asked for directly:
# keep() still checks every answer against SECRET_TYPES.
_NEVER_ARCHIVED = ("helm.sh/release.v1", "kubernetes.io/service-account-token", "bootstrap.kubernetes.io/token")
_SECRETS_SELECTOR = ",".join(f"type!={t}" for t in _NEVER_ARCHIVED)

# Namespace LISTs in flight: 32 covers a homelab's namespaces in one round trip (each extra round
# costs a full round trip on a laptop's Wi-Fi or VPN link).
_CONCURRENCY = 32


def entry_name(obj: dict[str, Any]) -> str:
    kind = obj["kind"]
    meta = obj["metadata"]
    if kind == "Secret":
        return f"secrets/{meta['namespace']}/{meta['name']}.json"
    folder = CM_KINDS[kind][1]
    if kind == "ClusterIssuer":
        return f"{folder}/{meta['name']}.json"
    return f"{folder}/{meta['namespace']}/{meta['name']}.json"


async def _list(kube: Any, api_version: str, kind: str, **kw: Any) -> list[dict[str, Any]]:
    items = await kube.list(api_version, kind, **kw)
    return [dict(i) for i in items]


async def collect(kube: Any, cfg: Config) -> dict[str, bytes]:
    """Archive entries (name -> deterministic JSON) for cert-manager objects and Secrets."""
    sel = cfg.backup.secrets
    whole = set(sel.namespaces)
    sem = asyncio.Semaphore(_CONCURRENCY)
    secrets: dict[str, bytes] = {}
    kept: set[tuple[str, str]] = set()
    # Secrets of other namespaces, kept only if a cert-manager object refers to them (known once
    # those objects are read).
    maybe: list[dict[str, Any]] = []

    def keep(obj: dict[str, Any]) -> None:
        meta = obj.get("metadata") or {}
        key = (meta.get("namespace", ""), meta.get("name", ""))
        if key in kept:
            return
        if obj.get("type", "Opaque") not in SECRET_TYPES:
            # ServiceAccount and bootstrap tokens are valid only in the cluster that made them, and a
            # restore refuses them (validate.py): only the name is logged, never a value.
            log.info("not archiving Secret %s/%s: type %s is never restored", *key, obj.get("type"))
            return
        kept.add(key)
        obj.setdefault("apiVersion", "v1")
        obj.setdefault("kind", "Secret")
        cleaned = clean(obj)
        secrets[entry_name(cleaned)] = dumps(cleaned)

    async def in_namespace(ns: str) -> None:
        async with sem:
            items = await _list(kube, "v1", "Secret", namespace=ns, field_selector=_SECRETS_SELECTOR)
        # Archived as each answer arrives: the encoding of one namespace's Secrets overlaps the wait
        # for the others' (a cluster's LISTs are answered one after another).
        for obj in items:
            if (obj.get("metadata") or {}).get("namespace", "") in whole or sops.is_decryption_secret(obj):
                keep(obj)
            else:
                maybe.append(obj)

    # The Secrets of the namespaces known now (the configured ones, and the one holding the SOPS keys)
    # are read at the same time as the cert-manager objects; only a namespace that is known once
    # those are read (a Secret a Certificate or Issuer refers to, elsewhere) costs a round trip more.
    namespaces = sorted(whole | {sops.NAMESPACE})
    pending = [asyncio.ensure_future(in_namespace(ns)) for ns in namespaces]
    by_selector = (asyncio.ensure_future(_list(kube, "v1", "Secret", label_selector=sel.label_selector,
                                               field_selector=_SECRETS_SELECTOR))
                   if sel.label_selector else None)
    try:
        entries, wanted = await _cert_manager_entries(kube, cfg)
        later = sorted({ns for ns, _ in wanted} - set(namespaces))
        pending += [asyncio.ensure_future(in_namespace(ns)) for ns in later]
        await asyncio.gather(*pending)
        selected = await by_selector if by_selector is not None else []
    finally:
        for job in [*pending, *([by_selector] if by_selector else [])]:
            # On an error, nothing is left reading, and no second error is logged.
            if job.done():
                _ = job.cancelled() or job.exception()
            else:
                job.cancel()
    for obj in maybe:
        meta = obj.get("metadata") or {}
        if (meta.get("namespace", ""), meta.get("name", "")) in wanted:
            keep(obj)
    for obj in selected:
        keep(obj)
    for ns, name in sorted(wanted - kept):
        # Normal before a first issuance; only the name is logged, there is no value to leak.
        log.warning("Secret %s/%s is referenced by cert-manager but does not exist; not archived", ns, name)
    entries.update(secrets)
    return entries


async def _cert_manager_entries(kube: Any, cfg: Config) -> tuple[dict[str, bytes], set[tuple[str, str]]]:
    """The cert-manager objects' entries, and the (namespace, name) of every Secret to keep for them."""
    entries: dict[str, bytes] = {}
    cm_ns = cfg.certificates.namespace
    # Kube.list gives [] for a kind the cluster does not serve, so a cluster without cert-manager
    # simply has none.
    kinds = list(CM_KINDS)
    lists = await asyncio.gather(*(_list(kube, CM_API, k) for k in kinds))
    wanted: set[tuple[str, str]] = set()  # (namespace, name) of referenced Secrets
    for kind, items in zip(kinds, lists, strict=True):
        for obj in items:
            obj.setdefault("apiVersion", CM_API)
            obj.setdefault("kind", kind)
            meta = obj.get("metadata") or {}
            if kind == "Certificate" and meta.get("ownerReferences"):
                # Made by ingress-shim/gateway-shim from an Ingress or Gateway that Flux re-creates; restored
                # without its owner the shim would refuse to manage it. Its Secret is kept, which is what
                # saves the re-issuance: the shim's new Certificate finds it with matching annotations.
                ns = meta.get("namespace", "")
                wanted.update((ns, s) for s in secret_refs(obj.get("spec")))
                log.info("not archiving Certificate %s/%s: generated by its owner; its Secret is kept",
                         ns, meta.get("name"))
                continue
            ns = cm_ns if kind == "ClusterIssuer" else meta.get("namespace", "")
            wanted.update((ns, s) for s in secret_refs(obj.get("spec")))
            cleaned = clean(obj)
            entries[entry_name(cleaned)] = dumps(cleaned)

    # The SOPS decryption keys Flux reads: stored nowhere else by definition (a repository holds only
    # what they encrypted). The ones flux.sops names, and any flux-system Secret in the format
    # kustomize-controller imports (seedbed.sops.is_decryption_secret), e.g. one made by hand.
    wanted.update((sops.NAMESPACE, name) for name in sops.secret_names(cfg))
    return entries, wanted


def extra_entries(*, git_bundle: bytes | None = None, repo: str | None = None, ledger: Any = None,
                  volumes: list[dict[str, Any]] | None = None) -> dict[str, bytes]:
    """The non-Kubernetes entries: the repository bundle, the issuance ledger, the volume records."""
    entries: dict[str, bytes] = {}
    if git_bundle is not None:
        entries[f"git/{(repo or 'repo').replace('/', '-')}.bundle"] = git_bundle
    if ledger is not None:
        # Written through the Ledger type, so a backup never carries a ledger its restore would refuse.
        from seedbed.certs.ledger import Ledger

        typed = ledger if isinstance(ledger, Ledger) else Ledger.from_json(ledger)
        entries["ledger.json"] = typed.to_json().encode()
    if volumes:
        entries["volumes.json"] = dumps({"volumes": volumes})
    return entries
