"""The composition root: the one place where seedbed's clients are built, once per command.

Like the flux CLI, which builds its Kubernetes and Git clients once and hands them to
``pkg/bootstrap``, a command gets a :class:`Clients` and passes its parts down; no library
function opens a cluster connection or a port-forward of its own.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import msgspec

if TYPE_CHECKING:
    from ..config import Config
    from ..gitserver import GitServer
    from ..kube import Kube
    from ..manifests import ManifestStore
    from ..output import Output


class Clients(msgspec.Struct):
    kube: Kube
    gitserver: GitServer
    out: Output
    owns_kube: bool = True

    async def aclose(self) -> None:
        try:
            await self.gitserver.close()
        finally:
            self.out.close()
            if self.owns_kube:
                await self.kube.close()


def manifest_store(cfg: Config, *, manifests: Path | None = None, offline: bool = False) -> ManifestStore:
    """The release manifests: pinned, cached, or from --manifests (no cluster needed)."""
    from ..manifests import ManifestStore

    return ManifestStore(lock_file=cfg.lock_file, manifests=manifests, offline=offline)


async def connect(cfg: Config, out: Output) -> Clients:
    """Connect to the cluster the config names; the caller closes the clients (``aclose``)."""
    from ..kube import Kube

    kube = await Kube.connect(cfg.cluster, base_dir=cfg.base_dir)
    kube.on_wait = out.activity  # every long wait shows what it waits for, and its last error
    return attach(cfg, kube, out, owns_kube=True)


def attach(cfg: Config, kube: Kube, out: Output, *, owns_kube: bool = False) -> Clients:
    """Clients around a cluster connection the caller already holds (tests, the demo)."""
    from ..gitserver import GitServer

    return Clients(kube, GitServer(cfg, kube, out), out, owns_kube=owns_kube)
