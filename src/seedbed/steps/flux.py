"""Flux: commit its manifests to the in-cluster repository, apply them, wait for the first sync.

Like `flux bootstrap`, the components are committed as ``<path>/flux-system/gotk-components.yaml``
so that Flux manages its own upgrades from Git; the sync objects point at the Git server's
in-cluster SSH address with the pinned host key, not at the port-forward seedbed pushed through.
"""

from __future__ import annotations

from typing import Any

from .. import git
from ..render import flux as render
from .base import Context, Options, Outcome, Planned, Step, acme_of, domain_of

FLUX_NAMESPACE = render.FLUX_NAMESPACE
SOURCE_API = render.SOURCE_API
KUSTOMIZE_API = render.KUSTOMIZE_API
CONTROLLERS_WAIT = 300.0


class FluxStep(Step):
    name = "flux"
    title = "Flux"

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
            notes=[f"commits {cfg.flux_path}/flux-system/{{gotk-components,gotk-sync,kustomization}}.yaml"],
            repo_files=render.repo_files(cfg, text, acme=acme, domain=domain))

    async def verify(self, ctx: Context) -> bool:
        from ..kube.wait import condition_is

        return all(obj is not None and condition_is(obj, "Ready") for obj in await ctx.gitserver.sync_state())

    async def run(self, ctx: Context, planned: Planned) -> Outcome:
        cfg, kube = ctx.cfg, ctx.kube
        files = planned.repo_files
        ctx.out.activity(f"committing {len(files)} files to {cfg.repo.owner}/{cfg.repo.name}")
        url, token = await ctx.gitserver.remote()
        revision = await git.retrying(lambda: git.commit_files(
            url, cfg.repo.branch, files,
            f"Add Flux {cfg.flux.version} sync manifests for {cfg.cluster.name}",
            username=cfg.git_server.admin_user, token=token))
        ctx.gitserver.forget()
        ctx.head = revision

        ns, secret_name = cfg.flux.secret.split("/")
        if await kube.get("v1", "Secret", secret_name, namespace=ns) is None:
            from ..errors import ClusterError

            raise ClusterError(f"Flux's Git credentials Secret {cfg.flux.secret} does not exist",
                               fix="re-run `seedbed bootstrap`: the repository step creates it")

        # The plan holds the cluster variables, the components, then the two sync objects.
        sync = [o for o in planned.objects if o.get("kind") in ("GitRepository", "Kustomization")]
        components = [o for o in planned.objects if o not in sync]
        ctx.out.activity(f"applying {len(components)} Flux components")
        applied = await kube.apply(components, on_progress=ctx.out.progress("applying the Flux components"))
        for dep in [o["metadata"]["name"] for o in components if o.get("kind") == "Deployment"]:
            ctx.out.activity(f"waiting for Deployment flux-system/{dep}")
            await kube.wait_rollout("Deployment", dep, FLUX_NAMESPACE, timeout=CONTROLLERS_WAIT)

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
        await ctx.kube.wait_condition(SOURCE_API, "GitRepository", render.SYNC_NAME,
                                      namespace=FLUX_NAMESPACE, timeout=timeout, check=at_revision("artifact"))
        ctx.out.activity("waiting for Kustomization flux-system to apply it")
        await ctx.kube.wait_condition(KUSTOMIZE_API, "Kustomization", render.SYNC_NAME,
                                      namespace=FLUX_NAMESPACE, timeout=timeout,
                                      check=at_revision("lastAppliedRevision"))
