"""One LIST per kind for readers that need the same objects at the same time.

A backup reads the cert-manager objects twice: to archive them (backup/collect.py) and to count
the issuances they witness (certs/history.py). Both read concurrently; through :class:`SharedLists`
they share one request and one decoded answer, so thousands of Certificates are fetched and parsed
once. The answer is the one snapshot both see; readers must not change the objects (they copy what
they keep).
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .types import KubeClient, Obj


class SharedLists:
    """A :class:`~.types.KubeClient` whose ``list`` is made once per (kind, namespace, selectors);
    every other call goes to the connection it wraps. Use it for one operation, then drop it: it
    never re-reads."""

    def __init__(self, kube: KubeClient) -> None:
        self._kube = kube
        self._lists: dict[tuple[Any, ...], asyncio.Future[list[Obj]]] = {}

    def __getattr__(self, name: str) -> Any:
        return getattr(self._kube, name)

    async def list(self, api_version: str, kind: str, namespace: str | None = None, *,
                   label_selector: str | None = None, field_selector: str | None = None) -> list[Obj]:
        key = (api_version, kind, namespace, label_selector, field_selector)
        future = self._lists.get(key)
        if future is None:
            future = self._lists[key] = asyncio.ensure_future(self._kube.list(
                api_version, kind, namespace, label_selector=label_selector, field_selector=field_selector))
            # Its error reaches every reader still waiting; with none left, it is not logged as lost.
            future.add_done_callback(lambda f: f.cancelled() or f.exception())
        # Shielded: one reader given up (cancelled) must not cancel the request the others wait for.
        return list(await asyncio.shield(future))
