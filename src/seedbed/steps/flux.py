"""Flux, in two steps around the Git server, as `flux install` then `flux bootstrap`'s sync.

- ``flux-components``: the pinned release manifest, applied before the Git server (which is a
  HelmRelease, so helm-controller must run first), with no sync objects yet;
- ``flux``: the commit of ``<path>/flux-system/{gotk-components,gotk-sync,git-server,kustomization}.yaml``
  to the in-cluster repository, then the sync objects, pointed at the Git server's in-cluster SSH
  address with the pinned host key, and the wait for the first sync.

Objects Flux will own are applied as :data:`~seedbed.render.helmrelease.HANDOVER_FIELD_MANAGER`, the
field manager kustomize-controller's apply cleanup takes over: once it has applied the repository's
copy it owns them alone (docs/handoff.md, "How the hand-over works").
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .. import files, git, sops
from ..errors import ConfigError
from ..render import flux as render
from ..render import helmrelease
from .base import Context, Options, Outcome, Planned, Step, WorkTree, acme_of, all_hold, domain_of

if TYPE_CHECKING:
    from ..fluxrepo import Repo

FLUX_NAMESPACE = render.FLUX_NAMESPACE
SOURCE_API = render.SOURCE_API
KUSTOMIZE_API = render.KUSTOMIZE_API
CONTROLLERS_WAIT = 300.0


def _deployments(objs: list[dict[str, Any]]) -> list[str]:
    return [o["metadata"]["name"] for o in objs if o.get("kind") == "Deployment"]


class FluxComponentsStep(Step):
    name = "flux-components"
    title = "Flux components"

    def plan(self, cfg: Any, manifests: Any, options: Options) -> Planned:
        text = manifests.text("flux", cfg.flux.version)
        acme, domain = acme_of(cfg, options), domain_of(cfg, options)
        components = render.component_objects(text)
        helmrelease.check_components(components)
        return Planned(
            objects=[render.cluster_vars(cfg, acme=acme, domain=domain), *components],
            waits=[f"Deployment flux-system/{d} rollout" for d in _deployments(components)],
            inputs={"version": cfg.flux.version, "acme": acme, "domain": domain},
            notes=["as `flux install`: the controllers, no sync yet (the Git server comes first)"])

    async def verify(self, ctx: Context, planned: Planned) -> bool:
        from ..kube.wait import rollout_complete

        async def rolled_out(dep: str) -> bool:
            return rollout_complete(await ctx.kube.get("apps/v1", "Deployment", dep, namespace=FLUX_NAMESPACE))

        return await all_hold(*(rolled_out(dep) for dep in _deployments(planned.objects)))

    async def run(self, ctx: Context, planned: Planned) -> Outcome:
        kube = ctx.kube
        # cluster-vars is seedbed's (not in Git: switching ACME environment needs no commit).
        ours = [o for o in planned.objects if o.get("kind") == "ConfigMap"
                and o["metadata"]["name"] == render.CLUSTER_VARS]
        components = [o for o in planned.objects if o not in ours]
        ctx.out.activity(f"applying {len(components)} Flux components")
        applied_components = await kube.apply(components, field_manager=helmrelease.HANDOVER_FIELD_MANAGER,
                                              on_progress=ctx.out.progress("applying the Flux components"))
        applied = await kube.apply(ours)  # after the components: they bring the flux-system Namespace
        for dep in _deployments(components):
            ctx.out.activity(f"waiting for Deployment flux-system/{dep}")
            await kube.wait_rollout("Deployment", dep, FLUX_NAMESPACE, timeout=CONTROLLERS_WAIT)
        return Outcome(applied.changed or applied_components.changed, applied_components.summary())


def existing_files(cfg: Any) -> dict[str, str]:
    """The work tree's own flux-system files (an earlier ``flux bootstrap``), by file name."""
    folder = cfg.resolve(cfg.repo.path) / render.flux_system_folder(cfg)
    return {name: files.read_text(folder / name, files.REPO_FILE)
            for name in (render.KUSTOMIZATION_FILE, render.SYNC_FILE, render.COMPONENTS_FILE)
            if (folder / name).is_file()}


MAX_DIFF_LINES = 60  # per file, in the plan: enough for the lines seedbed rewrites


def _adoption_notes(cfg: Any, existing: dict[str, str], committed: dict[str, str]) -> list[str]:
    """What seedbed changes in the user's own flux-system files, as a diff, and which Flux wins."""
    import difflib

    folder = render.flux_system_folder(cfg)
    notes: list[str] = []
    for name in (render.KUSTOMIZATION_FILE, render.SYNC_FILE):
        if name not in existing:
            continue
        path = f"{folder}/{name}"
        if existing[name] == committed[path]:
            notes.append(f"keeps your {path} as it is")
            continue
        diff = list(difflib.unified_diff(existing[name].splitlines(), committed[path].splitlines(),
                                         f"{path} (yours)", f"{path} (committed)", n=1, lineterm=""))
        notes.append(f"edits your {path} (only what the in-cluster repository needs; the rest is kept):")
        notes += [f"  {line}" for line in diff[:MAX_DIFF_LINES]]
        if len(diff) > MAX_DIFF_LINES:
            notes.append(f"  ... {len(diff) - MAX_DIFF_LINES} more diff lines (`seedbed plan --out DIR` writes the file)")
    theirs = render.components_version(existing.get(render.COMPONENTS_FILE, ""))
    if render.COMPONENTS_FILE in existing and theirs != cfg.flux.version:
        notes.append(f"warning: your {folder}/{render.COMPONENTS_FILE} is Flux {theirs or 'of an unknown version'}; "
                     f"seedbed installs and commits Flux {cfg.flux.version} (flux.version) over it, so "
                     f"{cfg.flux.version} wins. To keep yours, set flux.version: {theirs or '<its version>'}")
    return notes


def check_repository(cfg: Any, components: list[dict[str, Any]], keys: sops.Keys | None,
                     options: Options, repo: Repo | None) -> list[str]:
    """Stop on what in the work tree as Flux will read it (``repo``, from :class:`WorkTree`; None without
    the Flux path) would fail the first sync: Flux API versions the release does not serve, decryption
    Secrets seedbed will not create, encrypted files the keys given cannot open. Returns the notes (which
    Kustomizations decrypt with what) and warnings."""
    from .. import fluxrepo

    if repo is None:
        return []
    unserved = fluxrepo.unserved_apis(repo, fluxrepo.served_versions(components))
    found = sops.check_repo(repo, cfg, keys,
                          archived=options.archived_secrets if options.restore is not None else None)
    problems = [f"{p.file}:{p.line}: {p.message}" for p in unserved] + found.errors
    if problems:
        fixes = []
        if unserved:
            fixes.append(unserved[0].fix)
        if found.errors:
            fixes.append("give the keys in flux.sops (ageKeyFiles/gpgKeyFiles, and ageSecret/gpgSecret named as "
                         "the Kustomizations ask), or fix the Kustomizations' spec.decryption")
        raise ConfigError(f"the repository would not apply on Flux {cfg.flux.version}:\n  " + "\n  ".join(problems),
                          fix="; ".join(fixes))
    read = [f"warning: {p.file}:{p.line}: {p.message}" if p.line else f"warning: {p.file}: {p.message}"
            for p in repo.problems]
    return read + found.notes + [f"warning: {w}" for w in found.warnings]


async def _request_reconciliation(ctx: Context, api: str, kind: str) -> None:
    """Ask Flux to act on ``kind`` flux-system now rather than at its next interval, as ``flux reconcile
    kustomization --with-source`` does for unchanged sync objects (flux2 cmd/flux/reconcile.go
    requestReconciliation: a merge patch of the ``reconcile.fluxcd.io/requestedAt`` annotation)."""
    from datetime import UTC, datetime

    patch = {"metadata": {"annotations": {"reconcile.fluxcd.io/requestedAt": datetime.now(UTC).isoformat()}}}
    await ctx.kube.patch(api, kind, render.SYNC_NAME, patch, namespace=FLUX_NAMESPACE)


class FluxStep(Step):
    name = "flux"
    title = "Flux sync"

    def __init__(self, worktree: WorkTree | None = None) -> None:
        self.worktree = worktree or WorkTree()

    def plan(self, cfg: Any, manifests: Any, options: Options) -> Planned:
        text = manifests.text("flux", cfg.flux.version)
        acme, domain = acme_of(cfg, options), domain_of(cfg, options)
        from .gitserver import git_server_choice

        tree = self.worktree.read(cfg)
        choice = git_server_choice(cfg, tree)
        # The user's own Git server release is the one Flux reconciles: no second one beside it.
        server_file = helmrelease.repo_file(cfg) if choice.own else None
        folder = render.flux_system_folder(cfg)
        keys = sops.load(cfg, archived=options.archived_secrets)  # a wrong key file stops the run here
        existing = existing_files(cfg)
        repo_files = render.repo_files(
            cfg, text, acme=acme, domain=domain,
            extra={helmrelease.REPO_FILE: server_file} if server_file is not None else None,
            existing={k: v for k, v in existing.items() if k != render.COMPONENTS_FILE},
            decryption=sops.root_decryption(cfg))
        if server_file is not None:
            notes = [f"commits {folder}/{{gotk-components,gotk-sync,{helmrelease.REPO_FILE.removesuffix('.yaml')},"
                     "kustomization}.yaml"]
        else:
            assert choice.release is not None
            notes = [f"commits {folder}/{{gotk-components,gotk-sync,kustomization}}.yaml; no "
                     f"{helmrelease.REPO_FILE}: the Git server is your {choice.release.file}"]
        notes += _adoption_notes(cfg, existing, repo_files)
        if keys is not None and (written := [s["metadata"]["name"] for s in sops.secrets(cfg, keys, redact=True)]):
            notes.append(f"SOPS keys in Secret(s) {', '.join(f'{FLUX_NAMESPACE}/{n}' for n in written)} "
                         "before the sync: " + ", ".join([*keys.age_recipients,
                                                         *(f"GPG {f}" for f in sorted(keys.gpg_fingerprints))]))
        if keys is not None and keys.from_backup:
            notes.append(f"SOPS keys in Secret(s) {', '.join(f'{FLUX_NAMESPACE}/{n}' for n in sorted(keys.from_backup))} "
                         "from the backup being restored (their flux.sops key files are not on this machine)")
        notes += check_repository(cfg, render.component_objects(text), keys, options, tree)
        return Planned(
            objects=[*sops.secrets(cfg, keys, redact=True), *render.committed_sync_objects(repo_files, cfg)],
            waits=["GitRepository flux-system/flux-system Ready at the pushed revision",
                   "Kustomization flux-system/flux-system Ready at the pushed revision"],
            inputs={"version": cfg.flux.version, "path": cfg.flux_path, "acme": acme, "domain": domain,
                    "gitServer": server_file if server_file is not None else choice.release.file,
                    "sops": keys.public if keys else None},
            notes=notes,
            repo_files=repo_files)

    async def verify(self, ctx: Context, planned: Planned) -> bool:
        from ..kube.wait import condition_is

        keys = sops.load(ctx.cfg, archived=ctx.options.archived_secrets)
        for want in sops.secrets(ctx.cfg, keys):
            have = await ctx.kube.get("v1", "Secret", want["metadata"]["name"], namespace=FLUX_NAMESPACE)
            if have is None or have.get("data") != want["data"]:
                return False
        return all(obj is not None and condition_is(obj, "Ready") for obj in await ctx.gitserver.sync_state())

    async def run(self, ctx: Context, planned: Planned) -> Outcome:
        cfg, kube = ctx.cfg, ctx.kube
        for note in planned.notes:
            if note.startswith("warning: "):
                ctx.out.warn(note.removeprefix("warning: "))
        # The decryption keys first: the first sync decrypts with them (read again here, never kept).
        keys = sops.load(cfg, archived=ctx.options.archived_secrets)
        if written := sops.secrets(cfg, keys):
            ctx.out.activity("putting the SOPS keys in place for kustomize-controller")
            await kube.apply(written)
        repo_files = planned.repo_files
        ctx.out.activity(f"committing {len(repo_files)} files to {cfg.repo.owner}/{cfg.repo.name}")
        url, token = await ctx.gitserver.remote()
        # git-server.yaml is the user's once committed: its values are how they change the server.
        server_file = f"{render.flux_system_folder(cfg)}/{helmrelease.REPO_FILE}"
        revision = await git.retrying(lambda: git.commit_files(
            url, cfg.repo.branch, repo_files,
            f"Add Flux {cfg.flux.version} sync manifests and the Git server for {cfg.cluster.name}",
            username=cfg.git_server.admin_user, token=token, only_if_missing=frozenset({server_file})))
        ctx.gitserver.forget()
        ctx.head = revision

        ns, secret_name = cfg.flux.secret.split("/")
        if await kube.get("v1", "Secret", secret_name, namespace=ns) is None:
            from ..errors import ClusterError

            raise ClusterError(f"Flux's Git credentials Secret {cfg.flux.secret} does not exist",
                               fix="re-run `seedbed bootstrap`: the repository step creates it")
        sync = [o for o in planned.objects if o.get("kind") != "Secret"]  # the Secrets, redacted, are above
        synced = await kube.apply(sync, field_manager=helmrelease.HANDOVER_FIELD_MANAGER)
        await self._wait_synced(ctx, revision, request=not synced.changed)
        return Outcome(synced.changed, f"synced {cfg.repo.branch}@{revision[:12]} from the in-cluster repository")

    async def _wait_synced(self, ctx: Context, revision: str, *, request: bool = False) -> None:
        """Wait for the source, then the Kustomization, at ``revision``; with ``request`` (the sync
        objects were already in place), ask each to reconcile first, the source before the other."""
        timeout = ctx.cfg.flux.ready_timeout

        def at_revision(field: str) -> Any:
            def check(obj: dict[str, Any]) -> bool:
                st = obj.get("status") or {}
                value = st.get(field) if field != "artifact" else (st.get("artifact") or {}).get("revision")
                return revision in str(value or "")
            return check

        if request:
            await _request_reconciliation(ctx, SOURCE_API, "GitRepository")
        ctx.out.activity("waiting for GitRepository flux-system to fetch the pushed revision")
        await ctx.kube.wait_condition(SOURCE_API, "GitRepository", render.SYNC_NAME,
                                      namespace=FLUX_NAMESPACE, timeout=timeout, check=at_revision("artifact"))
        if request:
            await _request_reconciliation(ctx, KUSTOMIZE_API, "Kustomization")
        ctx.out.activity("waiting for Kustomization flux-system to apply it")
        await ctx.kube.wait_condition(KUSTOMIZE_API, "Kustomization", render.SYNC_NAME,
                                      namespace=FLUX_NAMESPACE, timeout=timeout,
                                      check=at_revision("lastAppliedRevision"))
