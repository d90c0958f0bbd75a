"""kustomize-controller's apply, simulated: its field manager and its managedFields cleanup.

What decides who owns a field after the hand-over, from the upstream code:

- kustomize-controller v1.9.x ``internal/controller/kustomization_controller.go``: it applies with
  server-side apply, forced, as field manager ``kustomize-controller`` (``ssa.Owner{Field:
  r.ControllerName}``, ``main.go`` ``controllerName``), and before each apply runs
  ``applyOpts.Cleanup``: the managedFields entries of ``kubectl`` (Apply and Update),
  ``before-first-apply`` (Update), ``kustomize-controller`` (Update) and of each
  ``--override-manager`` (Apply and Update) are merged into its own Apply entry;
- fluxcd/pkg ``ssa/patch.go`` (ssa v0.76.1) ``PatchReplaceFieldsManagers`` and ``matchFieldManager``:
  a manager matches by name *prefix* unless ``ExactMatch``, and only entries without a subresource;
- it labels every object ``kustomize.toolkit.fluxcd.io/name`` and ``/namespace``.

The flux CLI's manager ``flux`` (flux2 ``internal/utils/apply.go``) is not in the list.
SIMPLIFICATIONS.md lists what this leaves out.
"""

from __future__ import annotations

import json
import ssl
import threading
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterable
from typing import Any

from .merge import fs_union
from .server import Emulator

FIELD_MANAGER = "kustomize-controller"
# (name prefix, operation) pairs the cleanup takes over, in the upstream order.
CLEANUP_MANAGERS: tuple[tuple[str, str], ...] = (
    ("kubectl", "Apply"),
    ("kubectl", "Update"),
    ("before-first-apply", "Update"),
    (FIELD_MANAGER, "Update"),
)


class ApplyFailed(Exception):
    """The API server refused the apply (the message is the API server's)."""


def in_background(emu: Emulator, fn: Callable[..., None], *args: Any) -> None:
    """Run a simulated controller's work in its own thread (never in the server thread, which it calls
    over HTTP); once the emulator has stopped, whatever that work was doing no longer matters."""
    def run() -> None:
        try:
            fn(*args)
        except Exception:
            if emu._thread is not None and emu.loop is not None and emu.loop.is_running():
                raise

    threading.Thread(target=run, daemon=True).start()


def resource_path(emu: Emulator, obj: dict[str, Any]) -> str:
    info = emu.registry.resolve(obj["apiVersion"], obj["kind"])
    if info is None:
        raise ApplyFailed(f"no matches for kind {obj['kind']!r} in version {obj['apiVersion']!r}")
    base = f"/api/{info.version}" if not info.group else f"/apis/{info.group}/{info.version}"
    md = obj["metadata"]
    ns = f"/namespaces/{md.get('namespace', 'default')}" if info.namespaced else ""
    return f"{base}{ns}/{info.plural}/{md['name']}"


# The simulated controllers say who they are, so that a test can tell their requests from seedbed's.
USER_AGENT_SUFFIX = "lab-simulation"


def server_side_apply(emu: Emulator, obj: dict[str, Any], manager: str, *, attempts: int = 5) -> dict[str, Any]:
    """Server-side apply over real HTTP (so the emulator's controllers and hooks run), forced.

    A 429/5xx or a dropped connection is retried, as a controller requeues; a refusal is ApplyFailed.
    """
    import time

    query = urllib.parse.urlencode({"fieldManager": manager, "force": "true"})
    headers = {"Content-Type": "application/apply-patch+yaml", "User-Agent": f"{manager}/{USER_AGENT_SUFFIX}",
               **({"Authorization": f"Bearer {emu.token}"} if emu.token else {})}
    context = ssl._create_unverified_context() if emu.url.startswith("https") else None  # the lab's own CA
    for attempt in range(attempts):
        req = urllib.request.Request(f"{emu.url}{resource_path(emu, obj)}?{query}", data=json.dumps(obj).encode(),
                                     method="PATCH", headers=headers)
        try:
            with urllib.request.urlopen(req, timeout=30, context=context) as resp:
                result: dict[str, Any] = json.loads(resp.read())
                return result
        except urllib.error.HTTPError as e:  # (before URLError: it is one)
            body = e.read().decode(errors="replace")
            try:
                message = json.loads(body).get("message", body)
            except ValueError:
                message = body
            if (e.code == 429 or e.code >= 500) and attempt + 1 < attempts:
                time.sleep(0.05 * (attempt + 1))
                continue
            raise ApplyFailed(message) from None
        except (urllib.error.URLError, OSError) as e:
            if attempt + 1 < attempts and emu._thread is not None and emu.loop is not None and emu.loop.is_running():
                time.sleep(0.05 * (attempt + 1))
                continue
            raise ApplyFailed(f"the API server is not reachable: {e}") from None
    raise AssertionError("unreachable")


def _matches(entry: dict[str, Any], managers: Iterable[tuple[str, str]]) -> bool:
    return not entry.get("subresource") and any(
        entry.get("operation") == op and str(entry.get("manager", "")).startswith(name) for name, op in managers)


def take_over(emu: Emulator, obj: dict[str, Any], override_managers: Iterable[str] = ()) -> None:
    """``PatchReplaceFieldsManagers``: merge the matching entries into kustomize-controller's Apply entry.

    Done in the store: the emulator ignores managedFields in a write (the real API server accepts
    the JSON patch upstream sends).
    """
    managers = [*CLEANUP_MANAGERS, *((m, op) for m in override_managers for op in ("Apply", "Update"))]

    def run() -> None:
        info = emu.registry.resolve(obj["apiVersion"], obj["kind"])
        if info is None:
            return
        md = obj["metadata"]
        stored = emu.store.get(info, md.get("namespace") if info.namespaced else None, md["name"])
        if stored is None:
            return
        entries = list(stored["metadata"].get("managedFields") or [])
        mine = next((e for e in entries if e.get("manager") == FIELD_MANAGER and e.get("operation") == "Apply"
                     and not e.get("subresource")), None)
        kept, edited = [], False
        for e in entries:
            if e is mine:
                continue
            if _matches(e, managers):
                edited = True
                mine = ({**e, "manager": FIELD_MANAGER, "operation": "Apply"} if mine is None
                        else {**mine, "fieldsV1": fs_union(mine.get("fieldsV1") or {}, e.get("fieldsV1") or {})})
                continue
            kept.append(e)
        if edited and mine is not None:
            stored["metadata"]["managedFields"] = [*kept, mine]

    emu._call(run)


def apply(emu: Emulator, obj: dict[str, Any], kustomization: str, namespace: str,
          override_managers: Iterable[str] = ()) -> dict[str, Any]:
    """Apply one object of a Kustomization the way kustomize-controller does."""
    obj = json.loads(json.dumps(obj))
    labels = obj["metadata"].setdefault("labels", {})
    labels["kustomize.toolkit.fluxcd.io/name"] = kustomization
    labels["kustomize.toolkit.fluxcd.io/namespace"] = namespace
    take_over(emu, obj, override_managers)
    return server_side_apply(emu, obj, FIELD_MANAGER)
