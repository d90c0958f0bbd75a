"""The Git server on the cluster: deploy it, create the repository and keys, push the tree.

Three steps, because each has its own inputs and can fail on its own:

- ``git-server``: the minimal Gitea/Forgejo (render/gitserver.py), its admin password and SSH
  host key generated once and read back from the cluster on every later run;
- ``repository``: over the REST API through a port-forward: token, owner, repository, the
  operator's keys, Flux's deploy key (its private half only in the cluster Secret);
- ``push``: the operator's work tree with the real git CLI, through a port-forward.
"""

from __future__ import annotations

import base64
import secrets
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from .. import git
from ..errors import GitServerError, Refused, SeedbedError
from ..kube.wait import rollout_complete
from ..render import flux as flux_render
from ..render import gitserver as render
from ..sshkeys import KeyPair, fingerprint, generate_ed25519
from .base import Context, Options, Outcome, Planned, Step

PLACEHOLDER_KEY = KeyPair(private_openssh="<generated at bootstrap>",
                          public_openssh="ssh-ed25519 <generated-at-bootstrap> gitea-host-key")
PLACEHOLDER_PASSWORD = "<generated at bootstrap>"


def _b64(data: dict[str, str] | None, key: str) -> str | None:
    if not data or key not in data:
        return None
    return base64.b64decode(data[key]).decode()


# --------------------------------------------------------------------------- shared helpers


async def _stored_secrets(ctx: Context) -> tuple[str | None, KeyPair | None]:
    """The admin password and host key the cluster holds, or None for each that is missing."""
    gs = ctx.cfg.git_server
    admin = await ctx.kube.get("v1", "Secret", gs.admin_secret, namespace=gs.namespace)
    host = await ctx.kube.get("v1", "Secret", gs.host_key_secret, namespace=gs.namespace)
    password = _b64((admin or {}).get("data"), render.ADMIN_PASSWORD_KEY)
    host_private = _b64((host or {}).get("data"), render.HOST_KEY_FILE)
    pair = None
    if host_private is not None:
        pair = KeyPair.from_private(host_private, source=f"Secret {gs.namespace}/{gs.host_key_secret}")
        ctx.out.secret(host_private)
    ctx.out.secret(password)
    return password, pair


async def server_secrets(ctx: Context) -> tuple[str, KeyPair]:
    """The admin password and the host key, from the cluster (cached for the run)."""
    if "git_server.secrets" in ctx.shared:
        return ctx.shared["git_server.secrets"]
    gs = ctx.cfg.git_server
    password, pair = await _stored_secrets(ctx)
    if password is None or pair is None:
        raise GitServerError(
            f"the Git server's Secrets {gs.namespace}/{gs.admin_secret} and {gs.namespace}/{gs.host_key_secret} "
            "are missing or incomplete",
            fix="re-run `seedbed bootstrap`: the git-server step re-creates them")
    ctx.shared["git_server.secrets"] = (password, pair)
    return password, pair


@asynccontextmanager
async def gitea_session(ctx: Context) -> AsyncIterator[tuple[Any, int]]:
    """A GiteaClient on a port-forward to the HTTP service, logged in as the admin."""
    from ..gitea import GiteaClient

    gs = ctx.cfg.git_server
    password, _ = await server_secrets(ctx)
    async with ctx.kube.port_forward(gs.namespace, service=gs.http_service, port=render.HTTP_PORT) as port:
        name = "Forgejo" if gs.flavor == "forgejo" else "Gitea"
        async with GiteaClient(f"http://127.0.0.1:{port}", username=gs.admin_user, password=password,
                               name=name) as client:
            await client.wait_ready(gs.ready_timeout)
            yield client, port


async def session_token(ctx: Context, client: Any) -> str:
    """This run's API token (one per run; Gitea keeps exactly one named `seedbed`)."""
    token = ctx.shared.get("git_server.token")
    if token is None:
        token = await client.ensure_token()
        ctx.out.secret(token)
        ctx.shared["git_server.token"] = token
    else:
        client.use_token(token)  # the same server, a new port-forward: reuse the token
    return token


async def probe(ctx: Context) -> dict[str, Any]:
    """What the Git server holds, read once per run with the admin's basic auth (no token, no writes)."""
    if "git_server.probe" in ctx.shared:
        return ctx.shared["git_server.probe"]
    from ..gitea import key_material

    r = ctx.cfg.repo
    found: dict[str, Any] = {"repo": False, "deploy_keys": set(), "head": None}
    try:
        async with gitea_session(ctx) as (client, _port):
            if await client.repo_exists(r.owner, r.name):
                found["repo"] = True
                found["deploy_keys"] = {key_material(k.get("key", "x x"))
                                        for k in await client.list_deploy_keys(r.owner, r.name)}
                found["head"] = await client.get_branch_commit(r.owner, r.name, r.branch)
    except SeedbedError as e:
        ctx.out.debug(f"Git server not reachable for a check: {e.message}")
    ctx.shared["git_server.probe"] = found
    return found


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


def repo_http_url(ctx: Context, port: int) -> str:
    r = ctx.cfg.repo
    return f"http://127.0.0.1:{port}/{r.owner}/{r.name}.git"


@asynccontextmanager
async def repo_remote(ctx: Context) -> AsyncIterator[tuple[str, str]]:
    """(URL, token) of the repository through a port-forward, for the git CLI."""
    async with gitea_session(ctx) as (client, port):
        yield repo_http_url(ctx, port), await session_token(ctx, client)


# --------------------------------------------------------------------------- git-server


class GitServerStep(Step):
    name = "git-server"
    title = "Git server"

    def plan(self, cfg: Any, manifests: Any, options: Options) -> Planned:
        objs = render.render_git_server(cfg, admin_password=PLACEHOLDER_PASSWORD, host_key=PLACEHOLDER_KEY)
        gs = cfg.git_server
        return Planned(objects=objs,
                       waits=[f"Deployment {gs.namespace}/{render.DEPLOYMENT_NAME} rollout",
                              f"PVC {gs.namespace}/{gs.pvc_name} bound"],
                       inputs={"image": render.image(cfg)},
                       notes=["admin password and SSH host key are generated once and kept in the cluster"])

    async def verify(self, ctx: Context) -> bool:
        gs = ctx.cfg.git_server
        dep = await ctx.kube.get("apps/v1", "Deployment", render.DEPLOYMENT_NAME, namespace=gs.namespace)
        if not rollout_complete(dep):
            return False
        try:
            await server_secrets(ctx)
        except GitServerError:
            return False
        return True

    async def run(self, ctx: Context) -> Outcome:
        gs = ctx.cfg.git_server
        kube = ctx.kube
        # Generated once, then read back on every run: rendering never rotates them.
        password, host_key = await _stored_secrets(ctx)
        generated = []
        if password is None:
            password = secrets.token_urlsafe(24)
            generated.append("admin password")
        if host_key is None:
            host_key = generate_ed25519(f"{gs.ssh_service}.{gs.namespace}")
            generated.append("SSH host key")
        ctx.out.secret(password)
        ctx.out.secret(host_key.private_openssh)
        await _check_storage_class(ctx)
        objs = render.render_git_server(ctx.cfg, admin_password=password, host_key=host_key)
        ctx.out.activity(f"applying {len(objs)} objects")
        result = await kube.apply(objs, on_progress=ctx.out.progress("applying the Git server"))
        ctx.out.activity(f"waiting for Deployment {gs.namespace}/{render.DEPLOYMENT_NAME}")
        await kube.wait_rollout("Deployment", render.DEPLOYMENT_NAME, gs.namespace, timeout=gs.ready_timeout)
        ctx.shared["git_server.secrets"] = (password, host_key)
        ctx.out.log(f"SSH host key {host_key.public_openssh.split()[0]} pinned "
                    f"({fingerprint(host_key.public_openssh)})")
        what = result.summary() + (f"; generated {', '.join(generated)}" if generated else "")
        return Outcome(result.changed or bool(generated), what)


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

    async def verify(self, ctx: Context) -> bool:
        if ctx.options.rotate_keys:
            return False
        from ..gitea import key_material

        ns, name = ctx.cfg.flux.secret.split("/")
        secret = await ctx.kube.get("v1", "Secret", name, namespace=ns)
        public = _b64((secret or {}).get("data"), "identity.pub")
        if public is None:
            return False
        found = await probe(ctx)
        return found["repo"] and key_material(public) in found["deploy_keys"]

    async def run(self, ctx: Context) -> Outcome:
        cfg, r = ctx.cfg, ctx.cfg.repo
        ctx.shared.pop("git_server.probe", None)  # this step changes what a probe saw
        keys = operator_keys(cfg)
        changes: list[str] = []
        async with gitea_session(ctx) as (client, _port):
            await session_token(ctx, client)
            if await client.ensure_owner(r.owner, r.owner_type):
                changes.append(f"{r.owner_type} {r.owner}")
            await client.ensure_repo(r.owner, r.name, kind=r.owner_type, default_branch=r.branch)
            added = await client.ensure_user_keys(r.owner, keys, kind=r.owner_type)
            if added:
                changes.append(f"{len(added)} operator key(s)")
            deploy, changed = await _deploy_key(ctx, client)
            if changed:
                changes.append("deploy key")
        _, host = await server_secrets(ctx)
        secret = flux_render.credentials_secret(cfg, deploy, host.public_openssh)
        if await _ensure_secret(ctx, secret):
            changes.append(f"Secret {cfg.flux.secret}")
        return Outcome(bool(changes), ("created " + ", ".join(changes)) if changes else "all in place")


def operator_keys(cfg: Any) -> list[str]:
    """The operator's SSH public keys from the files repo.authorizedKeys names, each checked."""
    from .. import files
    from ..errors import ConfigError
    from ..sshkeys import parse_public_keys

    keys: list[str] = []
    for name in cfg.repo.authorized_keys:
        path = cfg.resolve(name)
        try:
            text = files.read_text(path, files.PUBLIC_KEYS)
        except ConfigError as e:
            raise ConfigError(f"repo.authorizedKeys: {e.message}", fix=e.fix) from None
        keys += parse_public_keys(text, str(path))
    return keys


async def _deploy_key(ctx: Context, client: Any) -> tuple[KeyPair, bool]:
    """Flux's deploy key: the one in the cluster Secret, unless missing or --rotate-keys."""
    cfg, r = ctx.cfg, ctx.cfg.repo
    ns, name = cfg.flux.secret.split("/")
    existing = await ctx.kube.get("v1", "Secret", name, namespace=ns)
    private = _b64((existing or {}).get("data"), "identity")
    rotate = ctx.options.rotate_keys or private is None
    if rotate:
        pair = generate_ed25519(f"flux@{cfg.cluster.name}")
    else:
        assert private is not None
        pair = KeyPair.from_private(private, source=f"Secret {cfg.flux.secret}")
    ctx.out.secret(pair.private_openssh)
    result = await client.ensure_deploy_key(r.owner, r.name, pair.public_openssh, title="flux",
                                            read_only=r.deploy_key_read_only, rotate=rotate)
    if result.state == "mismatch":
        raise Refused(
            f"the deploy key titled 'flux' on {r.owner}/{r.name} is not the one in Secret {cfg.flux.secret}",
            fix="re-run with --rotate-keys to replace it with a new key (Flux then uses the new Secret)")
    ctx.shared["flux.deploy_key"] = pair
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

    async def verify(self, ctx: Context) -> bool:
        """The pushed commit is still what Flux last fetched from the server's branch."""
        from ..kube.wait import condition_is
        from .flux import fetched_revision, sync_state

        head = (await probe(ctx))["head"]
        if head is None:
            return False
        repo, _ = await sync_state(ctx.kube)
        return repo is not None and condition_is(repo, "Ready") and fetched_revision(repo).endswith(head)

    async def run(self, ctx: Context) -> Outcome:
        cfg, r = ctx.cfg, ctx.cfg.repo
        ctx.shared.pop("git_server.probe", None)  # this step changes what a probe saw
        worktree = cfg.resolve(r.path)
        async with repo_remote(ctx) as (url, token):
            user = cfg.git_server.admin_user
            restored = await _push_bundle_back(ctx, url, token)
            if await git.retrying(lambda: git.contains(worktree, url, r.branch, username=user, token=token)):
                head = await git.retrying(lambda: git.remote_head(url, r.branch, username=user, token=token))
                ctx.shared["repo.head"] = head
                return Outcome(bool(restored), (restored + "; " if restored else "")
                               + f"{r.branch} is up to date on the server ({(head or '')[:12]})")
            force = ctx.options.force_push or r.force_push
            result = await git.retrying(lambda: git.push(worktree, url, r.branch, token=token, username=user,
                                                         force=force))
        ctx.shared["repo.head"] = result.new
        if result.dirty:
            ctx.out.warn(f"{worktree} has uncommitted changes; only committed work was pushed")
        return Outcome(result.changed, (restored + "; " if restored else "")
                       + f"{r.branch}: {(result.old or 'new')[:12]} → {result.new[:12]} ({result.status})")


async def _push_bundle_back(ctx: Context, url: str, token: str) -> str:
    """With --restore: put the archived repository back when the server's copy is missing or behind."""
    archive = ctx.shared.get("restore.archive")
    if archive is None:
        return ""
    from ..backup.restore import git_bundle

    bundle = git_bundle(archive)
    if bundle is None:
        return ""
    user = ctx.cfg.git_server.admin_user
    pushed = await git.retrying(lambda: git.push_bundle(bundle, url, username=user, token=token))
    return f"restored {pushed} branch(es) from the backup bundle" if pushed else ""
