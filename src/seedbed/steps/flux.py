"""Flux: commit its manifests to the in-cluster repository, apply them, wait for the first sync.

Like `flux bootstrap`, the components are committed as ``<path>/flux-system/gotk-components.yaml``
so that Flux manages its own upgrades from Git; the sync objects point at the Git server's
in-cluster SSH address with the pinned host key, not at the port-forward seedbed pushed through.
"""

from __future__ import annotations

from typing import Any

from .. import git
from ..render import flux as render
from .base import Context, Options, Outcome, Planned, Step
from .gitserver import gitea_session, repo_http_url, session_token

FLUX_NAMESPACE = "flux-system"
CONTROLLERS_WAIT = 300.0


def acme_of(cfg: Any, options: Options) -> str:
    return options.acme or cfg.certificates.acme


def domain_of(cfg: Any, options: Options) -> str | None:
    return options.domain or cfg.certificates.domain


class FluxStep(Step):
    name = "flux"
    title = "Flux"

    def repo_files(self, cfg: Any, manifests: Any, options: Options) -> dict[str, str]:
        text = manifests.text("flux", cfg.flux.version)
        return render.repo_files(cfg, text, acme=acme_of(cfg, options), domain=domain_of(cfg, options))

    def plan(self, cfg: Any, manifests: Any, options: Options) -> Planned:
        text = manifests.text("flux", cfg.flux.version)
        acme, domain = acme_of(cfg, options), domain_of(cfg, options)
        objs = [render.cluster_vars(cfg, acme=acme, domain=domain), *render.component_objects(text),
                *render.sync_objects(cfg, acme=acme, domain=domain)]
        deployments = [o["metadata"]["name"] for o in objs if o.get("kind") == "Deployment"]
        return Planned(
            objects=objs,
            waits=[f"Deployment flux-system/{d} rollout" for d in deployments]
            + ["GitRepository flux-system/flux-system Ready at the pushed revision",
               "Kustomization flux-system/flux-system Ready at the pushed revision"],
            inputs={"version": cfg.flux.version, "path": cfg.flux_path, "acme": acme, "domain": domain},
            notes=[f"commits {cfg.flux_path}/flux-system/{{gotk-components,gotk-sync,kustomization}}.yaml"])

    async def verify(self, ctx: Context) -> bool:
        from ..kube.wait import condition_is

        kube = ctx.kube
        for kind, api in (("GitRepository", "source.toolkit.fluxcd.io/v1"),
                          ("Kustomization", "kustomize.toolkit.fluxcd.io/v1")):
            obj = await kube.get(api, kind, "flux-system", namespace=FLUX_NAMESPACE)
            if obj is None or not condition_is(obj, "Ready"):
                return False
        return True

    async def run(self, ctx: Context) -> Outcome:
        cfg, kube, options = ctx.cfg, ctx.kube, ctx.options
        text = ctx.manifests.text("flux", cfg.flux.version)
        acme, domain = acme_of(cfg, options), domain_of(cfg, options)
        files = render.repo_files(cfg, text, acme=acme, domain=domain)
        ctx.out.activity(f"committing {len(files)} files to {cfg.repo.owner}/{cfg.repo.name}")
        async with gitea_session(ctx) as (client, port):
            token = await session_token(ctx, client)
            revision = await git.retrying(lambda: git.commit_files(
                repo_http_url(ctx, port), cfg.repo.branch, files,
                f"Add Flux {cfg.flux.version} sync manifests for {cfg.cluster.name}",
                username=cfg.git_server.admin_user, token=token))
        ctx.shared["repo.head"] = revision

        ns, secret_name = cfg.flux.secret.split("/")
        if await kube.get("v1", "Secret", secret_name, namespace=ns) is None:
            from ..errors import ClusterError

            raise ClusterError(f"Flux's Git credentials Secret {cfg.flux.secret} does not exist",
                               fix="re-run `seedbed bootstrap`: the repository step creates it")

        components = render.component_objects(text)
        ctx.out.activity(f"applying {len(components)} Flux components")
        applied = await kube.apply([render.cluster_vars(cfg, acme=acme, domain=domain), *components],
                                   on_progress=ctx.out.progress("applying the Flux components"))
        for dep in [o["metadata"]["name"] for o in components if o.get("kind") == "Deployment"]:
            ctx.out.activity(f"waiting for Deployment flux-system/{dep}")
            await kube.wait_rollout("Deployment", dep, FLUX_NAMESPACE, timeout=CONTROLLERS_WAIT)

        sync = render.sync_objects(cfg, acme=acme, domain=domain)
        synced = await kube.apply(sync)
        await self._wait_synced(ctx, revision)
        changed = applied.changed or synced.changed
        return Outcome(changed, f"synced {cfg.repo.branch}@{revision[:12]} from the in-cluster repository")

    async def _wait_synced(self, ctx: Context, revision: str) -> None:
        timeout = ctx.cfg.flux.ready_timeout

        def at_revision(field: str) -> Any:
            def check(obj: dict[str, Any]) -> bool:
                st = obj.get("status") or {}
                value = st.get(field) if field != "artifact" else (st.get("artifact") or {}).get("revision")
                return revision in str(value or "")
            return check

        ctx.out.activity("waiting for GitRepository flux-system to fetch the pushed revision")
        await ctx.kube.wait_condition("source.toolkit.fluxcd.io/v1", "GitRepository", "flux-system",
                                      namespace=FLUX_NAMESPACE, timeout=timeout, check=at_revision("artifact"))
        ctx.out.activity("waiting for Kustomization flux-system to apply it")
        await ctx.kube.wait_condition("kustomize.toolkit.fluxcd.io/v1", "Kustomization", "flux-system",
                                      namespace=FLUX_NAMESPACE, timeout=timeout,
                                      check=at_revision("lastAppliedRevision"))
