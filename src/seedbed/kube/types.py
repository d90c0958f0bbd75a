"""The kube package's vocabulary, in one leaf module: objects, results, errors, and the client Protocol.

Everything here depends on nothing else in ``kube/`` (only on ``seedbed.errors``), so the engine
(``client.py``), the helpers (``apply.py``, ``wait.py``, ``portforward.py``) and the rest of
seedbed can all import from it without cycles. Code outside ``kube/`` types its connection as
:class:`KubeClient` (``kube: KubeClient``), the methods it may rely on; :class:`~.client.Kube`
is the one implementation.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterable
from contextlib import AbstractAsyncContextManager
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

import msgspec

from ..errors import ClusterError

if TYPE_CHECKING:
    import httpx2 as httpx

Obj = dict[str, Any]
# Called with one line saying what a long wait is waiting for and the last thing it saw.
WaitProgress = Callable[[str], None]


class NotFound(ClusterError):
    """The object, its namespace, or its kind does not exist."""


class AlreadyExists(ClusterError):
    """A create found the object already there (409 AlreadyExists)."""


class Conflict(ClusterError):
    """Another client changed the object (409 Conflict) and retries did not help."""


class Forbidden(ClusterError):
    """RBAC said no (403)."""


class Invalid(ClusterError):
    """The API server refused an object as invalid (422)."""


class WatchExpired(Exception):
    """The watch's resourceVersion is too old (410 Gone): re-list and start again. Never leaves kube/."""


class Target(msgspec.Struct, frozen=True):
    """Where the API server is and how to talk to it (no secrets in here)."""

    server: str
    context: str
    source: str  # the kubeconfig path(s), or "in-cluster"


class Stats(msgspec.Struct):
    requests: int = 0
    writes: int = 0
    retries: int = 0


class ApplyResult(msgspec.Struct):
    created: list[str] = msgspec.field(default_factory=list)
    configured: list[str] = msgspec.field(default_factory=list)

    @property
    def changed(self) -> bool:
        return bool(self.created or self.configured)

    def summary(self) -> str:
        total = len(self.created) + len(self.configured)
        return f"applied {total} objects ({len(self.created)} created)"


def ref(obj: Obj) -> str:
    """``Kind/namespace/name`` or ``Kind/name``: how objects are named in messages."""
    md = obj.get("metadata") or {}
    if not isinstance(md, dict):
        md = {}
    ns = md.get("namespace")
    return f"{obj.get('kind')}/{ns}/{md.get('name')}" if ns else f"{obj.get('kind')}/{md.get('name')}"


@runtime_checkable
class KubeClient(Protocol):
    """What seedbed outside ``kube/`` may do with a cluster connection (implemented by ``Kube``)."""

    target: Target
    stats: Stats

    async def request(self, method: str, path: str, *, params: dict[str, Any] | None = None,
                      body: Any = None, content_type: str = "application/json",
                      retry_conflicts: bool = False, accept: str = "application/json") -> httpx.Response: ...

    async def serves(self, api_version: str, kind: str) -> bool: ...

    def forget(self, api_version: str) -> None: ...

    async def get(self, api_version: str, kind: str, name: str, namespace: str | None = None) -> Obj | None: ...

    async def list(self, api_version: str, kind: str, namespace: str | None = None, *,
                   label_selector: str | None = None, field_selector: str | None = None) -> list[Obj]: ...

    async def list_metadata(self, api_version: str, kind: str, namespace: str | None = None) -> list[Obj]: ...

    async def create(self, obj: Obj) -> Obj: ...

    async def delete(self, api_version: str, kind: str, name: str, namespace: str | None = None) -> bool: ...

    async def patch(self, api_version: str, kind: str, name: str, patch: Any, namespace: str | None = None,
                    *, patch_type: str = "merge", subresource: str | None = None) -> Obj: ...

    async def apply_one(self, obj: Obj, *, force: bool = True,
                        subresource: str | None = None) -> tuple[Obj, bool]: ...

    async def apply(self, objs: Iterable[Obj], *, force: bool = True,
                    on_progress: Callable[[int, int], None] | None = None, concurrency: int = ...,
                    crd_timeout: float = 120.0) -> ApplyResult: ...

    async def set_configmap_data(self, namespace: str, name: str, data: dict[str, str]) -> None: ...

    def watch(self, api_version: str, kind: str, namespace: str | None = None, *,
              name: str | None = None, label_selector: str | None = None,
              resource_version: str | None = None, timeout: float = 60,
              on_retry: Callable[[str], None] | None = None) -> AsyncIterator[tuple[str, Obj]]: ...

    async def wait_for(self, api_version: str, kind: str, name: str, namespace: str | None,
                       check: Callable[[Obj | None], bool], *, timeout: float, what: str,
                       describe: Callable[[Obj | None], str] | None = None,
                       on_wait: WaitProgress | None = None) -> Obj | None: ...

    async def wait_until_none(self, api_version: str, kind: str, namespace: str | None, label_selector: str, *,
                              timeout: float, what: str, fix: str) -> None: ...

    async def wait_rollout(self, kind: str, name: str, namespace: str, *, timeout: float = 300,
                           on_wait: WaitProgress | None = None) -> Obj: ...

    async def wait_condition(self, api_version: str, kind: str, name: str, namespace: str | None = None, *,
                             condition: str = "Ready", status: str = "True", timeout: float = 300,
                             check: Callable[[Obj], bool] | None = None,
                             on_wait: WaitProgress | None = None) -> Obj: ...

    async def wait_exists(self, api_version: str, kind: str, name: str, namespace: str | None = None, *,
                          timeout: float = 300, on_wait: WaitProgress | None = None) -> Obj: ...

    def port_forward(self, namespace: str, *, port: int, service: str | None = None,
                     pod: str | None = None) -> AbstractAsyncContextManager[int]: ...

    async def close(self) -> None: ...
