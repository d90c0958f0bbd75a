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
        """Clone the server's branch and check it, unless it was checked at this very commit with the
        same inputs (a re-run of a finished bootstrap): a repository of a few hundred files costs
        seconds of kustomize builds, and the same commit gives the same answer."""
        import asyncio
        import tempfile
        from pathlib import Path

        from .. import git, state
        from ..handoff import check_handoff

        cfg, r = ctx.cfg, ctx.cfg.repo
        inputs = _inputs_digest(cfg)
        head = (await ctx.gitserver.holdings()).head
        memo = ctx.records.check(self.name) if ctx.records is not None else None
        if memo is not None and head is not None and (memo.commit, memo.inputs) == (head, inputs):
            for line in memo.warnings:
                ctx.out.warn(line)
            return Outcome(False, f"{memo.summary}; checked at {head[:12]}, unchanged")
        url, token = await ctx.gitserver.remote()
        user = cfg.git_server.admin_user
        with tempfile.TemporaryDirectory(prefix="seedbed-handoff-") as tmp:
            tree = Path(tmp) / "repo"
            await git.retrying(lambda: git.clone(url, tree, username=user, token=token, branch=r.branch))
            checked = await git.head_commit(tree)
            # kustomize runs as a subprocess; the port-forward lives in this event loop.
            report = await asyncio.to_thread(check_handoff, tree, cfg)
        warnings = [_where(f) + f.message for f in report.findings if f.severity != "error"]
        for line in warnings:
            ctx.out.warn(line)
        errors = report.errors
        if errors:
            lines = "\n".join(_where(f) + f.message for f in errors)
            raise Refused(f"Flux's re-deploy of the Git server would break it:\n{lines}",
                          fix=errors[0].fix + " (see `seedbed check-handoff` and the README's hand-over section)")
        where = f"{r.branch} on the server"
        if report.unverified:
            summary = (f"hand-over NOT verified in {where}: {len(report.unverified)} finding(s) seedbed could not "
                       "check (warnings above)")
        elif not report.found:
            summary = f"no Git server manifests in {where}"
        else:
            summary = f"the Git server's hand-over to Flux is safe ({where}: {report.found[0]})"
        if report.self_contained and ctx.records is not None:
            await ctx.records.record_check(self.name, state.CheckMemo(checked, inputs, tuple(warnings), summary))
        return Outcome(False, summary)


def _inputs_digest(cfg: Any) -> str:
    """What a check of the server's repository depends on besides the commit: seedbed (its checks),
    the whole configuration, and the kustomize that builds the tree (buildcache.tool_identity)."""
    import hashlib

    import msgspec

    from .. import __version__, fluxrepo
    from ..buildcache import tool_identity

    try:
        kustomize = tool_identity(fluxrepo.find_kustomize().argv)
    except fluxrepo.KustomizeError:
        kustomize = ""
    payload = msgspec.json.encode([__version__, cfg, kustomize], enc_hook=str)  # Paths as text
    return "sha256:" + hashlib.sha256(payload).hexdigest()


def _where(finding: Any) -> str:
    return f"{finding.file}:{finding.line}: " if finding.line else ""
