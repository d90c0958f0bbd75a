"""The Git server on the cluster: deploy it, create the repository and keys, push the tree.

Three steps, because each has its own inputs and can fail on its own:

- ``git-server``: the minimal Gitea/Forgejo as a HelmRelease of the official chart
  (render/helmrelease.py) on seedbed's claim (render/gitserver.py), its admin password, SSH host
  key and server keys generated once and read back from the cluster on every later run;
- ``repository``: over the REST API through a port-forward: token, owner, repository, the
  operator's keys, Flux's deploy key (its private half only in the cluster Secret);
- ``push``: the operator's work tree with the real git CLI, through a port-forward.
"""

from __future__ import annotations

import asyncio
import secrets
from typing import Any

from .. import git
from ..errors import Refused
from ..gitea import key_material
from ..gitserver import operator_keys, secret_value
from ..kube.wait import rollout_complete
from ..render import flux as flux_render
from ..render import gitserver as render
from ..render import helmrelease
from ..sshkeys import KeyPair, fingerprint, generate_ed25519
from .base import Context, Options, Outcome, Planned, Step, WorkTree, all_hold

FLUX_GROUP = ".toolkit.fluxcd.io"  # the API groups of Flux's kinds (HelmRelease, HelmRepository, OCIRepository)
PLACEHOLDER_KEY = KeyPair(private_openssh="<generated at bootstrap>",
                          public_openssh="ssh-ed25519 <generated-at-bootstrap> gitea-host-key")
PLACEHOLDER_PASSWORD = "<generated at bootstrap>"
PLACEHOLDER_SERVER_KEYS = {k: "<generated at bootstrap>" for k in render.SERVER_KEYS}


def local_head(cfg: Any) -> str | None:
    """The commit of repo.branch in the operator's work tree (None when there is none yet)."""
    import subprocess

    path = cfg.resolve(cfg.repo.path)
    try:
        run = subprocess.run(["git", "-C", str(path), "rev-parse", "--verify", "--quiet",
                              f"refs/heads/{cfg.repo.branch}^{{commit}}"],
                             capture_output=True, text=True, timeout=30, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return run.stdout.strip() or None


# --------------------------------------------------------------------------- git-server


def git_server_choice(cfg: Any, repo: Any) -> Any:
    """Which release is the Git server: the user's, when the work tree (``repo``, as Flux will apply
    it; None without the Flux path) already holds one that deploys into gitServer.namespace
    (handoff.choose_git_server states the rule), else seedbed's own git-server.yaml."""
    from ..handoff import ServerChoice, choose_git_server

    if repo is None:
        return ServerChoice()
    return choose_git_server(repo, cfg, own_file=f"{flux_render.flux_system_folder(cfg)}/{helmrelease.REPO_FILE}")


class GitServerStep(Step):
    """The Git server as a HelmRelease of the official chart, applied by seedbed and waited for.

    seedbed's own objects (namespace, claim, Secrets) are applied as seedbed; the chart source and
    the HelmRelease as the field manager kustomize-controller takes over, since Flux owns them from
    the sync on (the same manifests are committed as git-server.yaml by the flux step). Once Flux
    manages the HelmRelease, a re-run leaves it alone: the repository's copy is the truth.
    """

    name = "git-server"
    title = "Git server"

    def __init__(self, worktree: WorkTree | None = None) -> None:
        self.worktree = worktree or WorkTree()

    def plan(self, cfg: Any, manifests: Any, options: Options) -> Planned:
        choice = git_server_choice(cfg, self.worktree.read(cfg))
        handed = helmrelease.objects(cfg) if choice.own else choice.objects
        objs = render.render_git_server(cfg, admin_password=PLACEHOLDER_PASSWORD, host_key=PLACEHOLDER_KEY,
                                        server_keys=PLACEHOLDER_SERVER_KEYS) + handed
        gs = cfg.git_server
        c = helmrelease.chart(cfg)
        if choice.own:
            which = [f"{c.name} chart {c.version} from {c.url} as HelmRelease "
                     f"{gs.namespace}/{helmrelease.RELEASE_NAME}; the same manifests are committed as "
                     f"{cfg.flux_path}/flux-system/{helmrelease.REPO_FILE}", *choice.notes]
        else:
            which = choice.notes
        return Planned(objects=objs,
                       waits=[f"HelmRelease {gs.namespace}/{helmrelease.RELEASE_NAME} Ready",
                              f"Deployment {gs.namespace}/{cfg.git_server.fullname} rollout",
                              f"PVC {gs.namespace}/{gs.pvc_name} bound"],
                       inputs={"image": render.image(cfg), "chart": f"{c.name}-{c.version}",
                               "release": "seedbed" if choice.release is None else choice.release.file},
                       notes=[*which,
                              "admin password, SSH host key and server keys are generated once and kept in the cluster",
                              CONVERSION_NOTE.format(ns=gs.namespace, claim=gs.pvc_name, admin=gs.admin_secret,
                                                     host_key=gs.host_key_secret, flux=cfg.flux.secret)])

    async def verify(self, ctx: Context, planned: Planned) -> bool:
        from ..kube.wait import condition_is

        cfg = ctx.cfg
        gs = cfg.git_server

        async def released() -> bool:
            release = await ctx.kube.get(helmrelease.HELM_API, "HelmRelease", helmrelease.RELEASE_NAME,
                                         namespace=gs.namespace)
            return release is not None and condition_is(release, "Ready")

        async def rolled_out() -> bool:
            return rollout_complete(await ctx.kube.get("apps/v1", "Deployment", cfg.git_server.fullname,
                                                       namespace=gs.namespace))

        async def stored() -> bool:
            password, host_key = await ctx.gitserver.stored_secrets()
            return password is not None and host_key is not None

        async def server_keys() -> bool:
            return await _stored_server_keys(ctx) is not None

        return await all_hold(released(), rolled_out(), stored(), server_keys())

    async def run(self, ctx: Context, planned: Planned) -> Outcome:
        cfg = ctx.cfg
        gs = cfg.git_server
        kube = ctx.kube
        # Generated once, then read back on every run: rendering never rotates them.
        password, host_key = await ctx.gitserver.stored_secrets()
        server_keys = await _stored_server_keys(ctx)
        generated = []
        if password is None:
            password = secrets.token_urlsafe(24)
            generated.append("admin password")
        if host_key is None:
            host_key = generate_ed25519(f"{gs.ssh_service}.{gs.namespace}")
            generated.append("SSH host key")
        if server_keys is None:
            server_keys = render.generate_server_keys()
            generated.append("server keys")
        ctx.out.secret(password)
        ctx.out.secret(host_key.private_openssh)
        for value in server_keys.values():
            ctx.out.secret(value)
        await _check_storage_class(ctx)
        ours = render.render_git_server(cfg, admin_password=password, host_key=host_key, server_keys=server_keys)
        ctx.out.activity(f"applying {len(ours)} objects")
        result = await kube.apply(ours, on_progress=ctx.out.progress("applying the Git server's claim and Secrets"))
        earlier = await earlier_server(ctx)
        if earlier:
            await _convert(ctx, earlier)
        release = await kube.get(helmrelease.HELM_API, "HelmRelease", helmrelease.RELEASE_NAME, namespace=gs.namespace)
        if _flux_manages(release):
            ctx.out.log(f"HelmRelease {gs.namespace}/{helmrelease.RELEASE_NAME} is Flux's now; "
                        f"it changes through {helmrelease.REPO_FILE} in the repository")
        else:
            # seedbed's own release, or the user's from the repository (git_server_choice), as planned:
            # the planned objects Flux takes over (its kinds), beside the claim and Secrets above.
            release_objects = [o for o in planned.objects if o["apiVersion"].split("/")[0].endswith(FLUX_GROUP)]
            handed = await kube.apply(release_objects, field_manager=helmrelease.HANDOVER_FIELD_MANAGER)
            result.created += handed.created
            result.configured += handed.configured
        ctx.out.activity(f"waiting for HelmRelease {gs.namespace}/{helmrelease.RELEASE_NAME}")
        await kube.wait_condition(helmrelease.HELM_API, "HelmRelease", helmrelease.RELEASE_NAME,
                                  namespace=gs.namespace, timeout=gs.ready_timeout, check=_observed)
        deployment = cfg.git_server.fullname
        ctx.out.activity(f"waiting for Deployment {gs.namespace}/{deployment}")
        await kube.wait_rollout("Deployment", deployment, gs.namespace, timeout=gs.ready_timeout)
        if planned.inputs["release"] == "seedbed":
            await _check_chart(ctx)
        await ctx.gitserver.redeployed(password, host_key)
        ctx.out.log(f"SSH host key {host_key.public_openssh.split()[0]} pinned "
                    f"({fingerprint(host_key.public_openssh)})")
        what = result.summary() + (f"; generated {', '.join(generated)}" if generated else "")
        if earlier:
            what += f"; converted the earlier seedbed's {', '.join(o['kind'] for o in earlier)} to the chart's"
        return Outcome(result.changed or bool(generated) or bool(earlier), what)


# --------------------------------------------------------------------------- an earlier seedbed's server

CONVERSION_NOTE = (
    "if the cluster runs the Git server of an earlier seedbed (a Deployment and Services in {ns} applied by "
    "field manager seedbed), they are deleted first and the chart installs in their place; kept: the claim "
    "{claim} (the database and repositories), Secrets {admin} and {host_key} (admin, pinned host key) and "
    "Flux's deploy key ({flux})")


async def earlier_server(ctx: Context) -> list[dict[str, Any]]:
    """The Deployment and Services an earlier, Deployment-based seedbed applied in the Git server's
    namespace (field manager ``seedbed``), that the chart has not taken over yet.

    They cannot be left for the chart to adopt: helm-controller installs with ``TakeOwnership`` and
    server-side apply with forced conflicts (helm-controller v1.6.3 ``internal/action/install.go``:
    ``install.TakeOwnership = !DisableTakeOwnership``, ``install.ForceConflicts =
    install.ServerSideApply``; Helm v4.2.1 ``pkg/action/install.go``: ``requireAdoption`` then
    ``KubeClient.Update`` of the existing objects). Server-side apply keeps every field another
    manager owns, so seedbed's init container (``gitea migrate`` with the old image), its httpGet
    readiness probe beside the chart's tcpSocket one and its ``GITEA__*`` variables would stay on the
    adopted Deployment; and a Forgejo chart's selector differs from the old one (immutable).
    """
    gs = ctx.cfg.git_server
    deployments, services = await asyncio.gather(ctx.kube.list("apps/v1", "Deployment", namespace=gs.namespace),
                                                 ctx.kube.list("v1", "Service", namespace=gs.namespace))
    return [o for o in [*deployments, *services] if _applied_by_seedbed(o)]


def _applied_by_seedbed(obj: dict[str, Any]) -> bool:
    from ..kube.client import FIELD_MANAGER

    entries = (obj.get("metadata") or {}).get("managedFields") or []
    managers = {e.get("manager") for e in entries if e.get("operation") == "Apply" and not e.get("subresource")}
    return FIELD_MANAGER in managers and FIELD_MANAGER_HELM not in {e.get("manager") for e in entries}


FIELD_MANAGER_HELM = "helm-controller"  # helm-controller v1.6.3 main.go: kube.ManagedFieldsManager = controllerName


async def _convert(ctx: Context, earlier: list[dict[str, Any]]) -> None:
    """Delete what the chart cannot take over, the Deployment first (its pods let go of the
    ReadWriteOnce claim before the chart's pod mounts it). Resumable: an interrupted run leaves
    objects that still carry seedbed's fields, and the next run deletes those before the install."""
    gs = ctx.cfg.git_server
    names = ", ".join(f"{o['kind']} {o['metadata']['name']}" for o in earlier)
    ctx.out.log(f"converting the Git server an earlier seedbed deployed: deleting {names} in {gs.namespace} "
                f"(kept: claim {gs.pvc_name}, Secrets {gs.admin_secret} and {gs.host_key_secret}, "
                f"Flux's deploy key)")
    for obj in sorted(earlier, key=lambda o: o["kind"] != "Deployment"):
        md = obj["metadata"]
        if obj["kind"] != "Deployment":
            await ctx.kube.delete("v1", obj["kind"], md["name"], namespace=gs.namespace)
            continue
        await ctx.kube.delete("apps/v1", "Deployment", md["name"], namespace=gs.namespace, propagation="Foreground")
        ctx.out.activity(f"waiting for Deployment {gs.namespace}/{md['name']} and its pods to be gone")
        await ctx.kube.wait_for("apps/v1", "Deployment", md["name"], gs.namespace, lambda o: o is None,
                                timeout=gs.ready_timeout, what=f"the deletion of Deployment {gs.namespace}/{md['name']}")
        selector = ",".join(f"{k}={v}" for k, v in
                            sorted(((obj.get("spec") or {}).get("selector") or {}).get("matchLabels", {}).items()))
        if selector:
            await ctx.kube.wait_until_none(
                "v1", "Pod", gs.namespace, selector, timeout=gs.ready_timeout,
                what=f"the pods of the earlier Git server ({selector}) in {gs.namespace} to stop, so that the "
                     f"chart's pod can mount {gs.pvc_name}",
                fix=f"kubectl -n {gs.namespace} get pods -l {selector}; once they are gone, re-run `seedbed bootstrap` "
                    "(it resumes the conversion)")


async def _check_chart(ctx: Context) -> None:
    """The chart archive helm-controller installed, by its digest, against the pin or seedbed.lock
    (ManifestStore.check_chart says what this can and cannot verify)."""
    cfg = ctx.cfg
    gs = cfg.git_server
    c = helmrelease.chart(cfg)
    # helm-controller v1.6.3 api/v2/helmrelease_types.go GetHelmChartName: <namespace>-<name>, in the
    # namespace of the chart source (seedbed's is beside the release).
    name = f"{gs.namespace}-{helmrelease.RELEASE_NAME}"
    chart = await ctx.kube.get(helmrelease.SOURCE_API, "HelmChart", name, namespace=gs.namespace)
    digest = (((chart or {}).get("status") or {}).get("artifact") or {}).get("digest")
    if not digest:
        ctx.out.warn(f"HelmChart {gs.namespace}/{name} reports no artifact digest: the {c.name} chart {c.version} "
                     "was not checked against seedbed.lock")
        return
    origin = await asyncio.to_thread(ctx.manifests.check_chart, c.name, c.version, str(digest), c.url)
    how = {"pin": "matches seedbed's pin", "lock": f"matches {ctx.manifests.lock_file.name}",
           "new": f"recorded in {ctx.manifests.lock_file.name} (first use)"}[origin]
    ctx.out.log(f"{c.name} chart {c.version} archive {str(digest)[:19]}... {how}")


def _observed(obj: dict[str, Any]) -> bool:
    """helm-controller has acted on the current spec (not a Ready left from the previous one)."""
    st = obj.get("status") or {}
    return int(st.get("observedGeneration") or 0) >= int((obj.get("metadata") or {}).get("generation") or 0)


def _flux_manages(obj: dict[str, Any] | None) -> bool:
    """kustomize-controller labels what it applies (kustomize.toolkit.fluxcd.io/name)."""
    return bool(((obj or {}).get("metadata") or {}).get("labels", {}).get("kustomize.toolkit.fluxcd.io/name"))


async def _stored_server_keys(ctx: Context) -> dict[str, str] | None:
    """The server keys the cluster holds, or None when any is missing (all are generated together)."""
    gs = ctx.cfg.git_server
    secret = await ctx.kube.get("v1", "Secret", render.SERVER_KEYS_SECRET, namespace=gs.namespace)
    keys = {k: secret_value(secret, k, what=f"Secret {gs.namespace}/{render.SERVER_KEYS_SECRET}")
            for k in render.SERVER_KEYS}
    for value in keys.values():
        ctx.out.secret(value)
    if any(v is None for v in keys.values()):
        return None
    return {k: v for k, v in keys.items() if v is not None}


async def _check_storage_class(ctx: Context) -> None:
    sc = ctx.cfg.git_server.storage_class
    if await ctx.kube.get("storage.k8s.io/v1", "StorageClass", sc) is None:
        raise Refused(f"StorageClass {sc!r} does not exist, so the Git server's volume would never bind",
                      fix="let the longhorn step finish first, or set gitServer.storageClass")


# --------------------------------------------------------------------------- repository


class RepositoryStep(Step):
    name = "repository"
    title = "Repository and keys"

    def plan(self, cfg: Any, manifests: Any, options: Options) -> Planned:
        r = cfg.repo
        keys = operator_keys(cfg)
        return Planned(
            waits=[f"{cfg.git_server.flavor} API through a port-forward to {cfg.git_server.http_service}:{render.HTTP_PORT}"],
            inputs={"owner": r.owner, "ownerType": r.owner_type, "repo": r.name, "branch": r.branch,
                    "keys": keys, "readOnly": r.deploy_key_read_only, "secret": cfg.flux.secret,
                    "rotate": options.rotate_keys},
            notes=[f"{r.owner_type} {r.owner}, repository {r.owner}/{r.name}, {len(keys)} operator key(s), "
                   f"Flux deploy key ({'read-only' if r.deploy_key_read_only else 'read-write'}) "
                   f"in Secret {cfg.flux.secret}"])

    async def verify(self, ctx: Context, planned: Planned) -> bool:
        if ctx.options.rotate_keys:
            return False
        ns, name = ctx.cfg.flux.secret.split("/")
        # holdings() reports an unreachable server as holding nothing, so both read at once.
        secret, found = await asyncio.gather(ctx.kube.get("v1", "Secret", name, namespace=ns),
                                             ctx.gitserver.holdings())
        public = secret_value(secret, "identity.pub", what=f"Secret {ctx.cfg.flux.secret}")
        if public is None:
            return False
        return found.repo and key_material(public) in found.deploy_keys

    async def run(self, ctx: Context, planned: Planned) -> Outcome:
        cfg, r = ctx.cfg, ctx.cfg.repo
        ctx.gitserver.forget()  # this step changes what the server holds
        keys = planned.inputs["keys"]
        changes: list[str] = []
        client = await ctx.gitserver.client()
        await ctx.gitserver.token()
        if await client.ensure_owner(r.owner, r.owner_type):
            changes.append(f"{r.owner_type} {r.owner}")
        await client.ensure_repo(r.owner, r.name, kind=r.owner_type, default_branch=r.branch)
        added = await client.ensure_user_keys(r.owner, keys, kind=r.owner_type)
        if added:
            changes.append(f"{len(added)} operator key(s)")
        deploy, changed = await _deploy_key(ctx, client)
        if changed:
            changes.append("deploy key")
        _, host = await ctx.gitserver.secrets()
        secret = flux_render.credentials_secret(cfg, deploy, host.public_openssh)
        if await _ensure_secret(ctx, secret):
            changes.append(f"Secret {cfg.flux.secret}")
        return Outcome(bool(changes), ("created " + ", ".join(changes)) if changes else "all in place")


async def _deploy_key(ctx: Context, client: Any) -> tuple[KeyPair, bool]:
    """Flux's deploy key: the one in the cluster Secret, unless missing or --rotate-keys."""
    cfg, r = ctx.cfg, ctx.cfg.repo
    ns, name = cfg.flux.secret.split("/")
    existing = await ctx.kube.get("v1", "Secret", name, namespace=ns)
    private = secret_value(existing, "identity", what=f"Secret {cfg.flux.secret}")
    rotate = ctx.options.rotate_keys or private is None
    if rotate:
        pair = generate_ed25519(f"flux@{cfg.cluster.name}")
    else:
        assert private is not None
        public = secret_value(existing, "identity.pub", what=f"Secret {cfg.flux.secret}")
        pair = KeyPair.from_private(private, public=public, source=f"Secret {cfg.flux.secret}")
    ctx.out.secret(pair.private_openssh)
    result = await client.ensure_deploy_key(r.owner, r.name, pair.public_openssh, title="flux",
                                            read_only=r.deploy_key_read_only, rotate=rotate)
    if result.state == "mismatch":
        raise Refused(
            f"the deploy key titled 'flux' on {r.owner}/{r.name} is not the one in Secret {cfg.flux.secret}",
            fix="re-run with --rotate-keys to replace it with a new key (Flux then uses the new Secret)")
    return pair, result.changed or rotate


async def _ensure_secret(ctx: Context, secret: dict[str, Any]) -> bool:
    """Apply the Secret unless it already holds exactly this content."""
    md = secret["metadata"]
    current = await ctx.kube.get("v1", "Secret", md["name"], namespace=md["namespace"])
    if current is not None and (current.get("data") or {}) == secret.get("data"):
        return False
    await ctx.kube.apply([{"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": md["namespace"]}},
                          secret])
    return True


# --------------------------------------------------------------------------- push


class PushStep(Step):
    name = "push"
    title = "Push the GitOps tree"

    def plan(self, cfg: Any, manifests: Any, options: Options) -> Planned:
        r = cfg.repo
        # The local commit is an input: a new commit in the work tree makes the step run again.
        return Planned(inputs={"path": str(cfg.resolve(r.path)), "branch": r.branch, "head": local_head(cfg)},
                       notes=[f"pushes {cfg.resolve(r.path)} ({r.branch}) through a port-forward"])

    async def verify(self, ctx: Context, planned: Planned) -> bool:
        """The pushed commit is still what Flux last fetched from the server's branch."""
        from ..gitserver import fetched_revision
        from ..kube.wait import condition_is

        held, (repo, _) = await asyncio.gather(ctx.gitserver.holdings(), ctx.gitserver.sync_state())
        head = held.head
        if head is None:
            return False
        return repo is not None and condition_is(repo, "Ready") and fetched_revision(repo).endswith(head)

    async def run(self, ctx: Context, planned: Planned) -> Outcome:
        cfg, r = ctx.cfg, ctx.cfg.repo
        worktree = cfg.resolve(r.path)
        restored = await _push_bundle_back(ctx)
        url, token = await ctx.gitserver.remote()
        ctx.gitserver.forget()  # this step changes what the server holds
        user = cfg.git_server.admin_user
        if await git.retrying(lambda: git.contains(worktree, url, r.branch, username=user, token=token)):
            head = await git.retrying(lambda: git.remote_head(url, r.branch, username=user, token=token))
            ctx.head = head
            return Outcome(bool(restored), (restored + "; " if restored else "")
                           + f"{r.branch} is up to date on the server ({(head or '')[:12]})")
        force = ctx.options.force_push or r.force_push
        result = await git.retrying(lambda: git.push(worktree, url, r.branch, token=token, username=user,
                                                     force=force))
        ctx.head = result.new
        if result.dirty:
            ctx.out.warn(f"{worktree} has uncommitted changes; only committed work was pushed")
        return Outcome(result.changed, (restored + "; " if restored else "")
                       + f"{r.branch}: {(result.old or 'new')[:12]} → {result.new[:12]} ({result.status})")


async def _push_bundle_back(ctx: Context) -> str:
    """With --restore: the restore sequence's repository phase, before the work tree is pushed."""
    if ctx.archive is None:
        return ""
    from .restore import restore_of

    summary = await restore_of(ctx).repository(required=True)
    return f"restored the repository from the backup bundle ({summary.items[0].name})" if summary.restored else ""
