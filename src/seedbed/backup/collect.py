"""Collect what a rebuilt cluster cannot get back from Git: certificates, their keys, chosen Secrets.

Speed matters (thousands of Secrets): one LIST per kind and namespace, never one GET per
object, and the namespace LISTs run concurrently.
"""

from __future__ import annotations

import asyncio
import copy
import json
import logging
from collections.abc import Iterator
from typing import Any

from seedbed.config import Config

from .archive import dumps

log = logging.getLogger("seedbed.backup")

CM_API = "cert-manager.io/v1"
# kind -> (CRD name, archive folder). Orders, Challenges and CertificateRequests are left out on
# purpose: they are one issuance's working state, and cert-manager makes new ones as needed.
CM_KINDS: dict[str, tuple[str, str]] = {
    "Certificate": ("certificates.cert-manager.io", "cert-manager/certificates"),
    "Issuer": ("issuers.cert-manager.io", "cert-manager/issuers"),
    "ClusterIssuer": ("clusterissuers.cert-manager.io", "cert-manager/clusterissuers"),
}

# Set by the API server for one object in one cluster; carried over they make create() fail or lie.
_DROP_META = ("uid", "resourceVersion", "generation", "creationTimestamp", "managedFields", "selfLink",
              "deletionTimestamp", "deletionGracePeriodSeconds", "ownerReferences", "generateName")

# Made by Kubernetes for a ServiceAccount of *this* cluster; in another cluster they are just wrong.
_SKIP_SECRET_TYPES = {"kubernetes.io/service-account-token"}

# Namespace LISTs in flight: 32 covers a homelab's namespaces in one round trip (each extra round
# costs a full round trip on a laptop's Wi-Fi or VPN link).
_CONCURRENCY = 32


def clean(obj: dict[str, Any]) -> dict[str, Any]:
    """A copy fit for creating in a new cluster; labels and annotations are kept exactly.

    ownerReferences go, all of them: owners are found by uid, and no uid survives a rebuild.
    (cert-manager re-adds the Certificate -> Secret one when it runs with
    --enable-certificate-owner-ref.) The ``cert-manager.io/*`` annotations on Secrets stay as they
    are: cert-manager compares them with the Certificate and re-issues when they differ.
    """
    out = {k: v for k, v in obj.items() if k != "status"}
    meta = {k: v for k, v in (obj.get("metadata") or {}).items() if k not in _DROP_META}
    out["metadata"] = meta
    return out


def entry_name(obj: dict[str, Any]) -> str:
    kind = obj["kind"]
    meta = obj["metadata"]
    if kind == "Secret":
        return f"secrets/{meta['namespace']}/{meta['name']}.json"
    folder = CM_KINDS[kind][1]
    if kind == "ClusterIssuer":
        return f"{folder}/{meta['name']}.json"
    return f"{folder}/{meta['namespace']}/{meta['name']}.json"


def secret_refs(spec: Any) -> Iterator[str]:
    """Names of Secrets a cert-manager spec refers to, wherever they are.

    Walking the whole spec, rather than listing paths, covers every DNS-01 provider
    (cloudflare.apiTokenSecretRef, route53.secretAccessKeySecretRef, ...), the ACME account key
    (privateKeySecretRef), EAB keys, CA/Vault/Venafi issuers and keystore passwords alike.
    """
    if isinstance(spec, dict):
        for key, value in spec.items():
            if key == "secretName" and isinstance(value, str) and value:
                yield value
            elif key.lower().endswith("secretref") and isinstance(value, dict) and isinstance(value.get("name"), str):
                yield value["name"]
                yield from secret_refs({k: v for k, v in value.items() if k != "name"})
            else:
                yield from secret_refs(value)
    elif isinstance(spec, list):
        for item in spec:
            yield from secret_refs(item)


async def _list(kube: Any, api_version: str, kind: str, **kw: Any) -> list[dict[str, Any]]:
    items = await kube.list(api_version, kind, **kw)
    return [dict(i) for i in items]


async def collect(kube: Any, cfg: Config) -> dict[str, bytes]:
    """Archive entries (name -> deterministic JSON) for cert-manager objects and Secrets."""
    entries: dict[str, bytes] = {}
    cm_ns = cfg.certificates.namespace

    # cert-manager objects; Kube.list gives [] for a kind the cluster does not serve, so a cluster
    # without cert-manager simply has none.
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

    # Secrets: referenced ones, whole configured namespaces, and the label selector, one LIST each.
    sel = cfg.backup.secrets
    namespaces = sorted({ns for ns, _ in wanted} | set(sel.namespaces))
    sem = asyncio.Semaphore(_CONCURRENCY)

    async def in_namespace(ns: str) -> list[dict[str, Any]]:
        async with sem:
            return await _list(kube, "v1", "Secret", namespace=ns)

    jobs = [in_namespace(ns) for ns in namespaces]
    if sel.label_selector:
        jobs.append(_list(kube, "v1", "Secret", label_selector=sel.label_selector))
    results = await asyncio.gather(*jobs)
    whole = set(sel.namespaces)
    by_key: dict[tuple[str, str], dict[str, Any]] = {}
    for i, items in enumerate(results):
        from_selector = i >= len(namespaces)
        for obj in items:
            meta = obj.get("metadata") or {}
            key = (meta.get("namespace", ""), meta.get("name", ""))
            if not (from_selector or key in wanted or key[0] in whole):
                continue
            if obj.get("type") in _SKIP_SECRET_TYPES and key not in wanted:
                continue
            by_key[key] = obj
    for ns, name in sorted(wanted - set(by_key)):
        # Normal before a first issuance; only the name is logged, there is no value to leak.
        log.warning("Secret %s/%s is referenced by cert-manager but does not exist; not archived", ns, name)
    for obj in by_key.values():
        obj.setdefault("apiVersion", "v1")
        obj.setdefault("kind", "Secret")
        cleaned = clean(obj)
        entries[entry_name(cleaned)] = dumps(cleaned)
    return entries


def extra_entries(*, git_bundle: bytes | None = None, repo: str | None = None, ledger: Any = None,
                  volumes: list[dict[str, Any]] | None = None) -> dict[str, bytes]:
    """The non-Kubernetes entries: the repository bundle, the issuance ledger, the volume records."""
    entries: dict[str, bytes] = {}
    if git_bundle is not None:
        entries[f"git/{(repo or 'repo').replace('/', '-')}.bundle"] = git_bundle
    if ledger is not None:
        # The ledger is the certs module's; keep it opaque. It may be an object with to_json().
        data = ledger.to_json() if hasattr(ledger, "to_json") else ledger
        if isinstance(data, str | bytes):
            data = json.loads(data)
        entries["ledger.json"] = dumps(copy.deepcopy(data))
    if volumes:
        entries["volumes.json"] = dumps({"volumes": volumes})
    return entries


def summarize(entries: dict[str, bytes]) -> list[str]:
    """Names only, for `seedbed backup` output: never a value."""
    return sorted(entries)

