"""Checks that protect what is hard to get back: the Let's Encrypt budget and the repository."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from ..errors import Refused
from .base import Context, Options, Outcome, Planned, Step, acme_of, domain_of


class CertGuardStep(Step):
    """Before Flux starts cert-manager: would the certificates it requests exceed a budget?"""

    name = "cert-guard"
    title = "Certificate guard"
    record = False

    def plan(self, cfg: Any, manifests: Any, options: Options) -> Planned:
        return Planned(notes=[f"ACME {acme_of(cfg, options)}: Certificates in the repository whose Secrets were "
                              "not restored must fit the Let's Encrypt budget"])

    async def run(self, ctx: Context, planned: Planned) -> Outcome:
        from ..certs.budget import compute
        from ..certs.guard import assess, decide, refusal, scan_repo
        from ..certs.history import archive_ledger, cluster_issuances
        from ..certs.ledger import Ledger
        from ..render.certs import PRODUCTION_ISSUER
        from ..render.flux import cluster_vars

        cfg, options = ctx.cfg, ctx.options
        acme = acme_of(cfg, options)
        variables = cluster_vars(cfg, acme=acme, domain=domain_of(cfg, options))["data"]
        scan = scan_repo(cfg.resolve(cfg.repo.path), variables)
        for w in scan.warnings:
            ctx.out.warn(w)
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
    """After Flux: will Flux's own re-deploy of the Git server keep the repository and its access?"""

    name = "check-handoff"
    title = "Hand-over check"
    record = False

    def plan(self, cfg: Any, manifests: Any, options: Options) -> Planned:
        return Planned(notes=["the repository's Git server manifests keep the data claim, image flavour, "
                              "host key Secret and SSH service"])

    async def run(self, ctx: Context, planned: Planned) -> Outcome:
        from ..handoff import check_handoff

        tree = ctx.cfg.resolve(ctx.cfg.repo.path)
        report = check_handoff(tree, ctx.cfg)
        for f in report.findings:
            if f.severity != "error":
                ctx.out.warn(_where(f) + f.message)
        errors = [f for f in report.findings if f.severity == "error"]
        if errors:
            lines = "\n".join(_where(f) + f.message for f in errors)
            raise Refused(f"Flux's re-deploy of the Git server would break it:\n{lines}",
                          fix=errors[0].fix + " (see `seedbed check-handoff` and the README's hand-over section)")
        return Outcome(False, "the Git server's hand-over to Flux is safe" if report.found
                       else "no Git server manifests in the repository yet")


def _where(finding: Any) -> str:
    return f"{finding.file}:{finding.line}: " if finding.line else ""
