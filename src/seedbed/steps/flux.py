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
from .gitserver import repo_remote

FLUX_NAMESPACE = render.FLUX_NAMESPACE
SOURCE_API = "source.toolkit.fluxcd.io/v1"
KUSTOMIZE_API = "kustomize.toolkit.fluxcd.io/v1"


async def sync_state(kube: Any) -> tuple[dict[str, Any] | None, dict[str, Any] | None]:
    """The flux-system GitRepository and Kustomization as the cluster has them (None when absent)."""
    repo = await kube.get(SOURCE_API, "GitRepository", render.SYNC_NAME, namespace=FLUX_NAMESPACE)
    ks = await kube.get(KUSTOMIZE_API, "Kustomization", render.SYNC_NAME, namespace=FLUX_NAMESPACE)
    return repo, ks


def fetched_revision(repo: dict[str, Any] | None) -> str:
    """What source-controller last fetched, e.g. ``main@sha1:<commit>`` ("" when nothing yet)."""
    return str((((repo or {}).get("status") or {}).get("artifact") or {}).get("revision", ""))
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

        return all(obj is not None and condition_is(obj, "Ready") for obj in await sync_state(ctx.kube))

    async def run(self, ctx: Context) -> Outcome:
        cfg, kube, options = ctx.cfg, ctx.kube, ctx.options
        text = ctx.manifests.text("flux", cfg.flux.version)
        acme, domain = acme_of(cfg, options), domain_of(cfg, options)
        files = render.repo_files(cfg, text, acme=acme, domain=domain)
        ctx.out.activity(f"committing {len(files)} files to {cfg.repo.owner}/{cfg.repo.name}")
        async with repo_remote(ctx) as (url, token):
            revision = await git.retrying(lambda: git.commit_files(
                url, cfg.repo.branch, files,
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
        await ctx.kube.wait_condition(SOURCE_API, "GitRepository", render.SYNC_NAME,
                                      namespace=FLUX_NAMESPACE, timeout=timeout, check=at_revision("artifact"))
        ctx.out.activity("waiting for Kustomization flux-system to apply it")
        await ctx.kube.wait_condition(KUSTOMIZE_API, "Kustomization", render.SYNC_NAME,
                                      namespace=FLUX_NAMESPACE, timeout=timeout,
                                      check=at_revision("lastAppliedRevision"))
