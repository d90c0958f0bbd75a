"""Applying a bundle in the order the API server needs."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from ..errors import ClusterError
from .client import ApplyResult, Obj, ref

if TYPE_CHECKING:
    from .client import Kube

FIRST = {"Namespace", "CustomResourceDefinition"}
# Applied after everything else: a webhook registered before its Service has endpoints
# would reject the creation of the very objects it guards.
LAST = {"MutatingWebhookConfiguration", "ValidatingWebhookConfiguration", "APIService"}


async def apply_bundle(kube: Kube, objs: list[Obj], *, force: bool, concurrency: int, crd_timeout: float,
                       on_progress: Callable[[int, int], None] | None) -> ApplyResult:
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

    async def one(obj: Obj) -> None:
        nonlocal done
        async with sem:
            applied, created = await kube.apply_one(obj, force=force)
        (result.created if created else result.configured).append(ref(obj))
        result.objects.append(applied)
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

    await batch(first)
    crds = [o for o in first if o["kind"] == "CustomResourceDefinition"]
    if crds:
        await asyncio.gather(*(_crd_ready(kube, crd, crd_timeout) for crd in crds))
    await batch(rest)
    await batch(last)
    return result


async def _crd_ready(kube: Kube, crd: Obj, timeout: float) -> None:
    """Wait until the CRD is Established and discovery serves its kind."""
    from .wait import condition_is

    name = crd["metadata"]["name"]
    current = await kube.get("apiextensions.k8s.io/v1", "CustomResourceDefinition", name)
    if current is None or not condition_is(current, "Established", "True"):
        await kube.wait_condition("apiextensions.k8s.io/v1", "CustomResourceDefinition", name,
                                  condition="Established", timeout=timeout)
    spec: dict[str, Any] = crd.get("spec") or {}
    group, kind = spec.get("group"), (spec.get("names") or {}).get("kind")
    for version in spec.get("versions") or []:
        if not version.get("served", True):
            continue
        api_version = f"{group}/{version['name']}"
        kube.forget(api_version)
        deadline = asyncio.get_running_loop().time() + timeout
        while not await kube.serves(api_version, kind):
            if asyncio.get_running_loop().time() > deadline:
                raise ClusterError(f"CRD {name} is Established but discovery does not serve {kind} {api_version}",
                                   fix="check the API server's aggregation layer, then re-run")
            await asyncio.sleep(0.2)
            kube.forget(api_version)
