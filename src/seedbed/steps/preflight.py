"""Preflight: is this a cluster seedbed can bootstrap? Read-only, and run every time."""

from __future__ import annotations

import asyncio
from typing import Any

from ..errors import ClusterError, Refused
from .base import Context, Options, Outcome, Planned, Step

MIN_MINOR = 28  # the oldest Kubernetes the pinned Longhorn and Flux releases support

def needed(cfg: Any) -> list[tuple[str, str, str, str | None]]:
    """(verb, group, resource, namespace): what the bootstrap itself does."""
    from ..state import NAMESPACE as STATE_NAMESPACE

    return [
        ("create", "", "namespaces", None),
        ("create", "apiextensions.k8s.io", "customresourcedefinitions", None),
        ("create", "rbac.authorization.k8s.io", "clusterroles", None),
        ("create", "rbac.authorization.k8s.io", "clusterrolebindings", None),
        ("patch", "apps", "deployments", "longhorn-system"),
        ("patch", "apps", "daemonsets", "longhorn-system"),
        ("create", "", "secrets", cfg.flux.secret.split("/")[0]),
        ("create", "", "pods/portforward", cfg.git_server.namespace),
        ("patch", "", "configmaps", STATE_NAMESPACE),
    ]


class PreflightStep(Step):
    name = "preflight"
    title = "Preflight"
    record = False  # always run: it is cheap, read-only, and the cluster may have changed

    def plan(self, cfg: Any, manifests: Any, options: Options) -> Planned:
        return Planned(notes=["API reachable, server version, RBAC (SelfSubjectAccessReview), nodes Ready"])

    async def run(self, ctx: Context, planned: Planned) -> Outcome:
        kube = ctx.kube
        # All read at once, answered in the order a person would check them: the version, then RBAC,
        # then the nodes (a later read's error counts only once the earlier checks passed).
        reads = [asyncio.ensure_future(kube.request("GET", "/version")),
                 asyncio.ensure_future(asyncio.gather(*(self._allowed(ctx, *n) for n in needed(ctx.cfg)))),
                 asyncio.ensure_future(kube.list("v1", "Node"))]
        try:
            version = (await reads[0]).json()
            minor = int("".join(ch for ch in str(version.get("minor", "0")) if ch.isdigit()) or 0)
            if str(version.get("major")) != "1" or minor < MIN_MINOR:
                raise Refused(f"Kubernetes {version.get('gitVersion')} is too old for seedbed",
                              fix=f"upgrade the cluster to 1.{MIN_MINOR} or newer")
            denied = [d for d in await reads[1] if d]
            if denied:
                raise Refused(f"the kubeconfig's user may not: {'; '.join(denied)}",
                              fix="use a context bound to cluster-admin for the bootstrap")
            nodes = await reads[2]
        finally:
            for read in reads:
                read.cancel()
            await asyncio.gather(*reads, return_exceptions=True)
        ready = [n for n in nodes if any(c.get("type") == "Ready" and c.get("status") == "True"
                                         for c in (n.get("status") or {}).get("conditions") or [])]
        if not ready:
            raise ClusterError("no node is Ready", fix="wait for the nodes to join (kubectl get nodes), then re-run")
        if len(ready) < len(nodes):
            ctx.out.warn(f"{len(nodes) - len(ready)} of {len(nodes)} nodes are not Ready")
        if len(ready) < ctx.cfg.longhorn.replica_count:
            ctx.out.warn(f"longhorn.replicaCount is {ctx.cfg.longhorn.replica_count} but only {len(ready)} "
                         "node(s) are Ready: volumes will stay degraded; lower replicaCount")
        return Outcome(False, f"Kubernetes {version.get('gitVersion')}, {len(ready)} node(s) Ready, RBAC ok")

    async def _allowed(self, ctx: Context, verb: str, group: str, resource: str, namespace: str | None) -> str:
        res, _, sub = resource.partition("/")
        attrs: dict[str, Any] = {"verb": verb, "group": group, "resource": res}
        if sub:
            attrs["subresource"] = sub
        if namespace:
            attrs["namespace"] = namespace
        review = {"apiVersion": "authorization.k8s.io/v1", "kind": "SelfSubjectAccessReview",
                  "spec": {"resourceAttributes": attrs}}
        result = await ctx.kube.create(review)
        if (result.get("status") or {}).get("allowed"):
            return ""
        return f"{verb} {resource}" + (f" in {namespace}" if namespace else "")
