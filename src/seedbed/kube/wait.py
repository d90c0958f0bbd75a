"""Waiting on the cluster with watches, and saying clearly what never became ready."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import httpx2 as httpx

from .. import scrub
from ..errors import WaitTimeout
from .types import Obj, WaitProgress, WatchExpired

if TYPE_CHECKING:
    from .client import Kube


async def wait_for(kube: Kube, api_version: str, kind: str, name: str, namespace: str | None,
                   check: Callable[[Obj | None], bool], *, timeout: float, what: str,
                   describe: Callable[[Obj | None], str] | None,
                   on_wait: WaitProgress | None = None) -> Obj | None:
    """Until ``check`` holds for the object ``name`` (None: it does not exist)."""
    fix = (f"inspect it with `kubectl describe {kind.lower()} {name}" + (f" -n {namespace}`" if namespace else "`")
           + ", fix the cause, then re-run")
    objects = await _watch_until(
        kube, api_version, kind, namespace, field_selector=f"metadata.name={name}", name=name,
        done=lambda objs: check(objs.get(name)), describe=(lambda objs: describe(objs.get(name))) if describe else None,
        timeout=timeout, what=what, fix=fix, on_wait=on_wait)
    return objects.get(name)


async def wait_until_none(kube: Kube, api_version: str, kind: str, namespace: str | None, label_selector: str, *,
                          timeout: float, what: str, fix: str, on_wait: WaitProgress | None = None) -> None:
    """Until no object matches ``label_selector`` (the pods of a deleted workload, say)."""
    await _watch_until(kube, api_version, kind, namespace, label_selector=label_selector, done=lambda objs: not objs,
                       describe=lambda objs: f"{len(objs)} left: {', '.join(sorted(objs)[:5])}", timeout=timeout,
                       what=what, fix=fix, on_wait=on_wait)


async def _watch_until(kube: Kube, api_version: str, kind: str, namespace: str | None, *,
                       done: Callable[[dict[str, Obj]], bool], describe: Callable[[dict[str, Obj]], str] | None,
                       timeout: float, what: str, fix: str, on_wait: WaitProgress | None,
                       name: str | None = None, field_selector: str | None = None,
                       label_selector: str | None = None) -> dict[str, Obj]:
    """List-then-watch the objects a selector picks (by name), until ``done`` holds for them."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    objects: dict[str, Obj] = {}
    said = ""

    def tell(detail: str) -> None:
        # Only changes are worth a line: what is awaited, and the last state or error seen.
        nonlocal said
        line = f"waiting for {what}" + (f": {detail}" if detail else "")
        if on_wait is not None and line != said:
            said = line
            on_wait(line)

    while True:
        # List to learn the current state and a resourceVersion to watch from.
        items, rv = await kube.list_with_version(api_version, kind, namespace, field_selector=field_selector,
                                                 label_selector=label_selector)
        objects = {str((o.get("metadata") or {}).get("name")): o for o in items}
        if done(objects):
            return objects
        tell(describe(objects) if describe else "")
        remaining = deadline - loop.time()
        if remaining <= 0:
            break
        try:
            async with asyncio.timeout(remaining):
                async for etype, obj in kube.watch(api_version, kind, namespace, name=name, resource_version=rv,
                                                   label_selector=label_selector, timeout=remaining, on_retry=tell):
                    key = str((obj.get("metadata") or {}).get("name"))
                    if etype == "DELETED":
                        objects.pop(key, None)
                    else:
                        objects[key] = obj
                    if done(objects):
                        return objects
                    tell(describe(objects) if describe else "")
        except TimeoutError:
            break
        except (WatchExpired, httpx.TransportError, ValueError) as e:
            # A dropped or expired watch: back off a little, then re-list and watch again.
            if not isinstance(e, WatchExpired):
                tell(f"the watch dropped ({scrub.scrub(str(e) or type(e).__name__)}); listing again")
            await asyncio.sleep(min(0.2, max(0.0, deadline - loop.time())))
        if loop.time() >= deadline:
            break
    detail = describe(objects) if describe else ""
    raise WaitTimeout(f"timed out after {timeout:g}s waiting for {what}" + (f": {detail}" if detail else ""), fix=fix)


def condition_is(obj: Obj, type_: str, status: str = "True") -> bool:
    for c in (obj.get("status") or {}).get("conditions") or []:
        if c.get("type") == type_:
            return str(c.get("status")) == status
    return False


def describe_conditions(obj: Obj | None) -> str:
    if obj is None:
        return "it does not exist"
    conds = (obj.get("status") or {}).get("conditions") or []
    if not conds:
        return "no status conditions reported yet"
    parts = []
    for c in conds:
        text = f"{c.get('type')}={c.get('status')}"
        if c.get("reason"):
            text += f" ({c['reason']}"
            text += f": {c['message']})" if c.get("message") else ")"
        parts.append(text)
    return "; ".join(parts)


def rollout_complete(obj: Obj | None) -> bool:
    """The rules of `kubectl rollout status`, for Deployments, DaemonSets and StatefulSets."""
    if obj is None:
        return False
    spec: dict[str, Any] = obj.get("spec") or {}
    st: dict[str, Any] = obj.get("status") or {}
    if st.get("observedGeneration", 0) < (obj.get("metadata") or {}).get("generation", 0):
        return False
    kind = obj.get("kind")
    if kind == "Deployment":
        want = spec.get("replicas", 1)
        updated = st.get("updatedReplicas", 0)
        return (updated >= want and st.get("replicas", 0) <= updated
                and st.get("availableReplicas", 0) >= updated)
    if kind == "DaemonSet":
        want = st.get("desiredNumberScheduled", 0)
        return st.get("updatedNumberScheduled", 0) >= want and st.get("numberAvailable", 0) >= want
    if kind == "StatefulSet":
        want = spec.get("replicas", 1)
        if st.get("readyReplicas", 0) < want:
            return False
        strategy = (spec.get("updateStrategy") or {}).get("type", "RollingUpdate")
        return strategy == "OnDelete" or st.get("updateRevision") == st.get("currentRevision")
    return False


def describe_workload(obj: Obj | None) -> str:
    if obj is None:
        return "it does not exist"
    st = obj.get("status") or {}
    kind = obj.get("kind")
    if kind == "DaemonSet":
        counts = (f"{st.get('numberReady', 0)}/{st.get('desiredNumberScheduled', 0)} pods ready, "
                  f"{st.get('updatedNumberScheduled', 0)} updated")
    else:
        want = (obj.get("spec") or {}).get("replicas", 1)
        counts = f"{st.get('readyReplicas', 0)}/{want} replicas ready, {st.get('updatedReplicas', 0)} updated"
    conds = describe_conditions(obj) if st.get("conditions") else ""
    return counts + (f"; {conds}" if conds else "")
