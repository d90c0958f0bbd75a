"""One restore sequence, for `seedbed restore` and `seedbed bootstrap --restore` alike.

The phases run in one order: volumes (before the Git server needs its data), Secrets (before
Flux starts cert-manager), cert-manager objects (once their CRDs are Established), the
repository (pushed back where the server's copy is missing or behind), and the issuance ledger
(kept in the cluster so the Let's Encrypt history survives every rebuild). `seedbed restore`
runs them back to back (:meth:`Restore.all`); bootstrap calls each phase from the step that
comes just before something needs it. Either way the archive was decrypted and verified
before the first phase, and each phase is the same code.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import TYPE_CHECKING

from .restore import (
    PlanItem,
    Summary,
    git_bundle,
    git_bundle_name,
    ledger,
    restore_cert_manager,
    restore_secrets,
    restore_volumes,
)

if TYPE_CHECKING:
    from ..gitserver import GitServer
    from ..kube import Kube
    from .archive import Archive


class Restore:
    def __init__(self, archive: Archive, kube: Kube, gitserver: GitServer, *, force: bool = False,
                 dry_run: bool = False, timeout: float = 1800, log: Callable[[str], None] | None = None) -> None:
        self.archive = archive
        self.log = log  # what the phases wait for (Longhorn syncing backups, cert-manager's webhook)
        self.kube = kube
        self.gitserver = gitserver
        self.force = force
        self.dry_run = dry_run
        self.timeout = timeout

    async def volumes(self) -> Summary:
        return await restore_volumes(self.kube, self.archive, force=self.force, dry_run=self.dry_run,
                                     timeout=self.timeout, log=self.log)

    async def secrets(self) -> Summary:
        return await restore_secrets(self.kube, self.archive, force=self.force, dry_run=self.dry_run)

    async def cert_manager(self) -> Summary:
        return await restore_cert_manager(self.kube, self.archive, force=self.force, dry_run=self.dry_run,
                                          timeout=min(self.timeout, 600), log=self.log)

    async def repository(self, *, required: bool = False) -> Summary:
        """Push the archived branches the server is missing or behind on.

        With ``required`` (bootstrap: the server was just deployed) a failure is an error; for
        `seedbed restore` on a cluster without a Git server yet it is a skip with the reason.
        """
        from ..errors import SeedbedError

        summary = Summary("git", dry_run=self.dry_run)
        bundle, repo = git_bundle(self.archive), git_bundle_name(self.archive)
        if bundle is None or not repo:
            return summary
        if self.dry_run:
            summary.items.append(PlanItem("git", "Repository", "", repo, "restore",
                                          "pushed back if the server's copy is missing or behind"))
            return summary
        try:
            pushed = await self.gitserver.push_bundle(bundle)
        except SeedbedError as e:
            if required:
                raise
            pushed, why = 0, f"no Git server reachable ({e.message}); `seedbed bootstrap --restore` pushes it then"
        else:
            why = "the server's copy is up to date"
        summary.items.append(PlanItem("git", "Repository", "", repo, "restore" if pushed else "skip",
                                      "" if pushed else why))
        return summary

    async def ledger(self) -> Summary:
        """Keep the archive's issuance ledger in the cluster for the next backup and guard."""
        from ..state import store_ledger_text

        summary = Summary("ledger", dry_run=self.dry_run)
        validated = ledger(self.archive)
        if validated is None:
            return summary
        summary.items.append(PlanItem("ledger", "IssuanceLedger", "", "ledger.json", "restore"))
        if not self.dry_run:
            # The validated ledger, re-serialised: never the archive's raw text.
            await store_ledger_text(self.kube, validated.to_json())
        return summary

    async def all(self) -> list[Summary]:
        """Every phase, in order (`seedbed restore`)."""
        if self.dry_run:  # only reads: one round of them, not three
            summaries = list(await asyncio.gather(self.volumes(), self.secrets(), self.cert_manager()))
        else:
            summaries = [await self.volumes(), await self.secrets(), await self.cert_manager()]
        git = await self.repository()
        if git.items:
            summaries.append(git)
        await self.ledger()  # reported by `certs budget`, not as a restore phase
        return summaries
