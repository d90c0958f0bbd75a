"""Applying a bundle in the order the API server needs."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import httpx2 as httpx

from ..errors import ClusterError
from .types import ApplyResult, Obj, WatchExpired, ref

if TYPE_CHECKING:
    from .client import Kube

FIRST = {"Namespace", "CustomResourceDefinition"}
# Applied after everything else: a webhook registered before its Service has endpoints
# would reject the creation of the very objects it guards.
LAST = {"MutatingWebhookConfiguration", "ValidatingWebhookConfiguration", "APIService"}


async def apply_bundle(kube: Kube, objs: list[Obj], *, force: bool, concurrency: int, crd_timeout: float,
                       on_progress: Callable[[int, int], None] | None, field_manager: str) -> ApplyResult:
    result = ApplyResult()
    for obj in objs:
        if not isinstance(obj, dict) or not obj.get("apiVersion") or not obj.get("kind") \
                or not (obj.get("metadata") or {}).get("name"):
            raise ClusterError(f"cannot apply {ref(obj) if isinstance(obj, dict) else obj!r}: "
                               "an object needs apiVersion, kind and metadata.name",
                               fix="fix the manifest")
    first = [o for o in objs if o["kind"] in FIRST]
    last = [o for o in objs if o["kind"] in LAST]
    rest = [o for o in objs if o["kind"] not in FIRST and o["kind"] not in LAST]
    total = len(objs)
    done = 0
    sem = asyncio.Semaphore(concurrency)
    # The CRDs as the API server answered their apply: on a re-apply they are Established already.
    applied_crds: list[Obj] = []

    async def one(obj: Obj) -> None:
        nonlocal done
        async with sem:
            answer, created = await kube.apply_one(obj, force=force, field_manager=field_manager)
        if obj["kind"] == "CustomResourceDefinition":
            applied_crds.append(answer)
        (result.created if created else result.configured).append(ref(obj))
        done += 1
        if on_progress:
            on_progress(done, total)

    async def batch(group: list[Obj]) -> None:
        tasks = [asyncio.create_task(one(o)) for o in group]
        try:
            await asyncio.gather(*tasks)
        except BaseException:
            for t in tasks:
                t.cancel()
            raise

    # Every group-version the bundle uses, read at once (those of its own CRDs are read again below).
    await kube.discover(*(o["apiVersion"] for o in objs))
    await batch(first)
    crds = [o for o in first if o["kind"] == "CustomResourceDefinition"]
    if crds:
        await _crds_ready(kube, crds, applied_crds, crd_timeout)
    await batch(rest)
    await batch(last)
    return result


async def _crds_ready(kube: Kube, crds: list[Obj], answers: list[Obj], timeout: float) -> None:
    """Wait until every CRD is Established, then until discovery serves each of their kinds.

    The apply answers first (a re-applied CRD is Established already), then one LIST (and, if some
    are still pending, one watch) for all of them, and one discovery request per group-version: a
    bundle like cert-manager's has dozens of CRDs.
    """
    from .wait import condition_is

    pending = {c["metadata"]["name"] for c in crds}
    pending -= {a["metadata"]["name"] for a in answers if condition_is(a, "Established")}
    if pending:
        items, rv = await kube.list_with_version("apiextensions.k8s.io/v1", "CustomResourceDefinition")
        pending -= {i["metadata"]["name"] for i in items if condition_is(i, "Established")}
    if pending:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while pending:
            remaining = deadline - loop.time()
            if remaining <= 0:
                raise ClusterError(f"CRDs not Established after {timeout:g}s: {', '.join(sorted(pending))}",
                                   fix="check the API server's logs (kubectl get crd NAME -o yaml), then re-run")
            try:
                async with asyncio.timeout(remaining):
                    async for _, obj in kube.watch("apiextensions.k8s.io/v1", "CustomResourceDefinition",
                                                   resource_version=rv, timeout=remaining):
                        if condition_is(obj, "Established"):
                            pending.discard(obj["metadata"]["name"])
                        rv = obj["metadata"].get("resourceVersion", rv)
                        if not pending:
                            break
            except TimeoutError:
                continue
            except (WatchExpired, httpx.TransportError):  # a dropped watch: list again and carry on
                items, rv = await kube.list_with_version("apiextensions.k8s.io/v1", "CustomResourceDefinition")
                pending -= {i["metadata"]["name"] for i in items if condition_is(i, "Established")}
    wanted: dict[str, set[str]] = {}
    for crd in crds:
        spec: dict[str, Any] = crd.get("spec") or {}
        for version in spec.get("versions") or []:
            if version.get("served", True):
                wanted.setdefault(f"{spec.get('group')}/{version['name']}", set()).add(spec["names"]["kind"])
    await asyncio.gather(*(_served(kube, gv, kinds, timeout) for gv, kinds in wanted.items()))


async def _served(kube: Kube, api_version: str, kinds: set[str], timeout: float) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        # A kind missing from what discovery said earlier is looked up again (Kube.resource), so the
        # first round costs nothing when the group-version was read after its CRDs were served.
        served = await asyncio.gather(*(kube.serves(api_version, k) for k in sorted(kinds)))
        if all(served):
            return
        if asyncio.get_running_loop().time() > deadline:
            raise ClusterError(f"CRDs are Established but discovery does not serve {api_version}",
                               fix="check the API server's aggregation layer, then re-run")
        await asyncio.sleep(0.2)
        kube.forget(api_version)
