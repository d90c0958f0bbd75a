"""Checks that protect what is hard to get back: the Let's Encrypt budget and the repository."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import Any

from ..errors import Refused
from .base import Context, Options, Outcome, Planned, Step, WorkTree, acme_of, domain_of


class CertGuardStep(Step):
    """Before Flux starts cert-manager: would the certificates it requests exceed a budget?"""

    name = "cert-guard"
    title = "Certificate guard"
    record = False

    def __init__(self, worktree: WorkTree | None = None) -> None:
        self.worktree = worktree or WorkTree()

    def plan(self, cfg: Any, manifests: Any, options: Options) -> Planned:
        return Planned(notes=[f"ACME {acme_of(cfg, options)}: Certificates in the repository whose Secrets were "
                              "not restored must fit the Let's Encrypt budget"])

    async def run(self, ctx: Context, planned: Planned) -> Outcome:
        from ..certs.budget import compute
        from ..certs.guard import RepoScan, assess, decide, refusal, scan_repo
        from ..certs.history import archive_ledger, cluster_issuances
        from ..certs.ledger import Ledger
        from ..render.certs import PRODUCTION_ISSUER
        from ..render.flux import cluster_vars

        cfg, options = ctx.cfg, ctx.options
        acme = acme_of(cfg, options)
        variables = cluster_vars(cfg, acme=acme, domain=domain_of(cfg, options))["data"]
        # The tree as Flux applies it. The Flux step's plan read it already (every step is planned
        # before anything runs), so this builds nothing again; that step reports what could not be
        # read or built, and Flux applies nothing of it either. Without kustomize that plan stopped
        # the run: a guard that cannot see what Flux applies must not let Flux start. Without the
        # Flux path in the tree, Flux applies only the flux-system/ files seedbed commits: no Certificates.
        repo = await asyncio.to_thread(self.worktree.read, cfg)
        scan = scan_repo(repo, variables) if repo is not None else RepoScan([], frozenset())
        # ${CLUSTER_ISSUER} resolves to the production issuer under --acme production, even when the
        # repository does not (yet) define that ClusterIssuer itself.
        issuers = set(scan.production_issuers)
        if acme == "production":
            issuers.add(f"ClusterIssuer/{PRODUCTION_ISSUER}")
        now = datetime.now(UTC)
        # cert-manager's own re-issue decision on each restored Secret (certs/policies.py).
        found, kept = decide(scan.certificates, ctx.restored_secrets, now, production_issuers=issuers) \
            if issuers else ([], [])
        for issue in found:
            ctx.out.log(f"{issue.cert.file}:{issue.cert.line}: {', '.join(sorted(issue.cert.names))} "
                        f"will be issued: {issue.reason}")
        # The other half of the decision: which restored certificates cost nothing, so that a user
        # who expected one to be kept sees it was (or, above, why it was not).
        for cert in kept:
            ctx.out.log(f"{cert.file}:{cert.line}: {', '.join(sorted(cert.names))} will not be issued: "
                        f"cert-manager keeps its restored Secret {cert.secret_name}")
        planned = [issue.cert for issue in found]
        sources: list[Any] = [(await cluster_issuances(ctx.kube))[0]]
        if ctx.archive is not None:
            ledger = archive_ledger(ctx.archive)
            if ledger is not None:
                sources.append(list(ledger))
        budget = compute(Ledger.merge(*sources), now)
        result = assess([c.names for c in planned], budget, acme=acme, ignore_budget=options.ignore_budget)
        for note in result.notes:
            ctx.out.log(note)
        if not result.ok:
            raise refusal(result)
        if acme != "production":
            return Outcome(False, f"ACME {acme}: no production budget at stake")
        return Outcome(False, f"{len(planned)} certificate(s) would be issued; within budget")


class HandoffStep(Step):
    """After Flux: will Flux's own re-deploy of the Git server keep the repository and its access?

    It checks what Flux will apply: the server's branch, cloned through the port-forward, not the
    operator's work tree (which lacks the ``flux-system/git-server.yaml`` the flux step commits on
    the server, and may hold commits not pushed yet).
    """

    name = "check-handoff"
    title = "Hand-over check"
    record = False

    def plan(self, cfg: Any, manifests: Any, options: Options) -> Planned:
        return Planned(notes=[f"the Git server manifests on the server's {cfg.repo.branch} (what Flux applies) keep "
                              "the data claim, image flavour, host key Secret and SSH service"])

    async def run(self, ctx: Context, planned: Planned) -> Outcome:
        import asyncio
        import tempfile
        from pathlib import Path

        from .. import git
        from ..handoff import check_handoff

        cfg, r = ctx.cfg, ctx.cfg.repo
        url, token = await ctx.gitserver.remote()
        user = cfg.git_server.admin_user
        with tempfile.TemporaryDirectory(prefix="seedbed-handoff-") as tmp:
            tree = Path(tmp) / "repo"
            await git.retrying(lambda: git.clone(url, tree, username=user, token=token, branch=r.branch))
            # kustomize runs as a subprocess; the port-forward lives in this event loop.
            report = await asyncio.to_thread(check_handoff, tree, cfg)
        for f in report.findings:
            if f.severity != "error":
                ctx.out.warn(_where(f) + f.message)
        errors = report.errors
        if errors:
            lines = "\n".join(_where(f) + f.message for f in errors)
            raise Refused(f"Flux's re-deploy of the Git server would break it:\n{lines}",
                          fix=errors[0].fix + " (see `seedbed check-handoff` and the README's hand-over section)")
        where = f"{r.branch} on the server"
        if report.unverified:
            return Outcome(False, f"hand-over NOT verified in {where}: {len(report.unverified)} finding(s) "
                                  "seedbed could not check (warnings above)")
        if not report.found:
            return Outcome(False, f"no Git server manifests in {where}")
        return Outcome(False, f"the Git server's hand-over to Flux is safe ({where}: {report.found[0]})")


def _where(finding: Any) -> str:
    return f"{finding.file}:{finding.line}: " if finding.line else ""
