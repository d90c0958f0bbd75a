"""How seedbed talks to the in-cluster Git server: one object per run.

:class:`GitServer` is the one place that knows how to reach Gitea (or Forgejo) on the cluster:
the admin password and SSH host key it keeps in Secrets, one port-forward to its HTTP Service
(opened on first use, kept for the run), the run's API token, what the server holds (read once),
and what Flux last fetched from it. The bootstrap steps, backup, restore and status all use it;
none of them opens a port-forward or reads those Secrets themselves.

The command builds it once (see ``commands/clients.py``) and closes it at the end.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import shutil
import tempfile
from contextlib import AsyncExitStack
from pathlib import Path
from typing import TYPE_CHECKING, Any

import msgspec

from . import git
from .errors import ClusterError, ConfigError, GitServerError, SeedbedError
from .gitea import GiteaClient, key_material
from .render import flux as flux_render
from .render import gitserver as render
from .sshkeys import KeyPair, blob_fingerprint, parse_public_keys

if TYPE_CHECKING:
    from .config import Config
    from .kube import Kube
    from .output import Output


class Holdings(msgspec.Struct, frozen=True):
    """What the server holds for seedbed, read once per run with the admin's basic auth (no writes)."""

    repo: bool = False
    deploy_keys: frozenset[str] = msgspec.field(default_factory=frozenset)  # key material, comments dropped
    head: str | None = None  # the commit of repo.branch on the server


def secret_value(secret: dict[str, Any] | None, key: str, *, what: str) -> str | None:
    """One value of a Secret as text, None when absent; damaged data is a ClusterError naming the Secret."""
    data = (secret or {}).get("data")
    if not isinstance(data, dict) or key not in data:
        return None
    try:
        return base64.b64decode(str(data[key]), validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError, ValueError):
        raise ClusterError(f"{what}: key {key!r} is not base64-encoded UTF-8 text",
                           fix=f"delete the damaged {what} and re-run `seedbed bootstrap` to re-create it") from None


def fetched_revision(repo: dict[str, Any] | None) -> str:
    """What source-controller last fetched, e.g. ``main@sha1:<commit>`` ("" when nothing yet)."""
    artifact = ((repo or {}).get("status") or {}).get("artifact") or {}
    return str(artifact.get("revision", "")) if isinstance(artifact, dict) else ""


KEYSCAN_TIMEOUT = 15.0  # seconds for the SSH handshakes of one host-key probe


def key_fingerprints(text: str) -> list[str]:
    """SHA256 fingerprints of the keys in ``known_hosts`` or ``ssh-keyscan`` lines (others skipped)."""
    out = []
    for line in text.splitlines():
        fields = line.split()
        if len(fields) < 3 or line.lstrip().startswith("#"):
            continue
        try:
            out.append(blob_fingerprint(fields[2]))
        except (binascii.Error, ValueError):
            continue
    return out


def operator_keys(cfg: Config) -> list[str]:
    """The operator's SSH public keys from the files repo.authorizedKeys names, each checked."""
    from . import files

    keys: list[str] = []
    for name in cfg.repo.authorized_keys:
        path = cfg.resolve(name)
        try:
            text = files.read_text(path, files.KEY)
        except ConfigError as e:
            raise ConfigError(f"repo.authorizedKeys: {e.message}",
                              fix="point repo.authorizedKeys at your public key file, e.g. ~/.ssh/id_ed25519.pub"
                              ) from None
        keys += parse_public_keys(text, str(path))
    return keys


class GitServer:
    """The in-cluster Git server for one run (see the module docstring)."""

    def __init__(self, cfg: Config, kube: Kube, out: Output) -> None:
        self.cfg = cfg
        self.kube = kube
        self.out = out
        self._secrets: tuple[str, KeyPair] | None = None
        self._stack: AsyncExitStack | None = None
        self._client: GiteaClient | None = None
        self._port: int | None = None
        self._token: str | None = None
        self._holdings: Holdings | None = None
        self._sync_state: tuple[dict[str, Any] | None, dict[str, Any] | None] | None = None
        # The bootstrap checks its steps concurrently: these make each thing be read (and the
        # port-forward opened) once, however many checks ask at the same time.
        self._client_lock = asyncio.Lock()
        self._holdings_lock = asyncio.Lock()
        self._sync_lock = asyncio.Lock()

    @property
    def name(self) -> str:
        return "Forgejo" if self.cfg.git_server.flavor == "forgejo" else "Gitea"

    # ----------------------------------------------------------------- the Secrets it keeps

    async def stored_secrets(self) -> tuple[str | None, KeyPair | None]:
        """The admin password and host key the cluster holds, or None for each that is missing."""
        gs = self.cfg.git_server
        admin, host = await asyncio.gather(self.kube.get("v1", "Secret", gs.admin_secret, namespace=gs.namespace),
                                           self.kube.get("v1", "Secret", gs.host_key_secret, namespace=gs.namespace))
        password = secret_value(admin, render.ADMIN_PASSWORD_KEY, what=f"Secret {gs.namespace}/{gs.admin_secret}")
        where = f"Secret {gs.namespace}/{gs.host_key_secret}"
        host_private = secret_value(host, render.HOST_KEY_FILE, what=where)
        self.out.secret(password)
        self.out.secret(host_private)
        pair = None
        if host_private is not None:
            host_public = secret_value(host, f"{render.HOST_KEY_FILE}.pub", what=where)
            pair = KeyPair.from_private(host_private, public=host_public, source=where)
        return password, pair

    async def secrets(self) -> tuple[str, KeyPair]:
        """The admin password and the host key, from the cluster (read once per run)."""
        if self._secrets is None:
            gs = self.cfg.git_server
            password, pair = await self.stored_secrets()
            if password is None or pair is None:
                raise GitServerError(
                    f"the Git server's Secrets {gs.namespace}/{gs.admin_secret} and "
                    f"{gs.namespace}/{gs.host_key_secret} are missing or incomplete",
                    fix="re-run `seedbed bootstrap`: the git-server step re-creates them")
            self._secrets = (password, pair)
        return self._secrets

    async def redeployed(self, password: str, host_key: KeyPair) -> None:
        """The git-server step (re)applied the server: remember its Secrets, drop what the old pod gave."""
        self._secrets = (password, host_key)
        await self.close()

    # ----------------------------------------------------------------- the API, through one port-forward

    async def client(self) -> GiteaClient:
        """The admin's API client on this run's port-forward (opened on first use, then kept)."""
        async with self._client_lock:
            return await self._open_client()

    async def _open_client(self) -> GiteaClient:
        if self._client is None:
            gs = self.cfg.git_server
            password, _ = await self.secrets()
            stack = AsyncExitStack()
            try:
                port = await stack.enter_async_context(
                    self.kube.port_forward(gs.namespace, service=gs.http_service, port=render.HTTP_PORT))
                client = await stack.enter_async_context(GiteaClient(
                    f"http://127.0.0.1:{port}", username=gs.admin_user, password=password, name=self.name,
                    namespace=gs.namespace))
                await client.wait_ready(gs.ready_timeout, on_progress=self.out.activity)
            except BaseException:
                await stack.aclose()
                raise
            self._stack, self._client, self._port = stack, client, port
            if self._token is not None:
                client.use_token(self._token)
        return self._client

    async def token(self) -> str:
        """This run's API token (one per run; the server keeps exactly one named `seedbed`)."""
        client = await self.client()
        if self._token is None:
            self._token = await client.ensure_token()
            self.out.secret(self._token)
        return self._token

    async def remote(self) -> tuple[str, str]:
        """(URL, token) of the repository through the port-forward, for the git CLI."""
        token = await self.token()
        r = self.cfg.repo
        return f"http://127.0.0.1:{self._port}/{r.owner}/{r.name}.git", token

    async def holdings(self) -> Holdings:
        """What the server holds (read once per run; :meth:`forget` after a change)."""
        async with self._holdings_lock:
            if self._holdings is None:
                self._holdings = await self._read_holdings()
            return self._holdings

    async def _read_holdings(self) -> Holdings:
        r = self.cfg.repo
        try:
            client = await self.client()
            if not await client.repo_exists(r.owner, r.name):
                return Holdings()
            deploy_keys, head = await asyncio.gather(client.list_deploy_keys(r.owner, r.name),
                                                     client.get_branch_commit(r.owner, r.name, r.branch))
        except SeedbedError as e:  # not deployed yet, not ready: nothing held
            self.out.debug(f"{self.name} not reachable for a check: {e.message}")
            return Holdings()
        return Holdings(True, frozenset(key_material(str(k.get("key", "x x"))) for k in deploy_keys), head)

    def forget(self) -> None:
        """A step changed what the server holds (or what Flux fetches from it): the next
        :meth:`holdings` and :meth:`sync_state` read it again."""
        self._holdings = None
        self._sync_state = None

    # ----------------------------------------------------------------- the repository as a whole

    async def bundle(self) -> bytes | None:
        """The repository as a git bundle, in memory; None when the repository is empty."""
        url, token = await self.remote()
        user = self.cfg.git_server.admin_user
        with tempfile.TemporaryDirectory(prefix="seedbed-bundle-") as tmp:
            # The bundle holds the GitOps tree, which is in Git anyway (and holds no Secrets);
            # it is read back into memory and the temporary copy removed at once.
            dest = Path(tmp) / "repo.bundle"
            made = await git.retrying(lambda: git.bundle_create(url, dest, username=user, token=token))
            return dest.read_bytes() if made else None

    async def push_bundle(self, bundle: bytes) -> int:
        """Push the bundle's branches that the server is missing or behind on; how many were pushed."""
        url, token = await self.remote()
        user = self.cfg.git_server.admin_user
        pushed = await git.retrying(lambda: git.push_bundle(bundle, url, username=user, token=token))
        if pushed:
            self.forget()
        return pushed

    async def served_host_keys(self) -> list[str] | None:
        """Fingerprints of the SSH host keys the running server presents on its SSH Service.

        An SSH handshake is enough: ``ssh-keyscan`` (openssh-client) through a port-forward to
        port 22 of the Service, as Flux reaches it, with a deadline. None when it could not be
        probed (no ssh-keyscan, no ready pod, no answer): the caller says so instead of guessing.
        """
        gs = self.cfg.git_server
        exe = shutil.which("ssh-keyscan")
        if exe is None:
            self.out.debug("ssh-keyscan (openssh-client) not found: the served host key is not checked")
            return None
        try:
            async with self.kube.port_forward(gs.namespace, service=gs.ssh_service, port=render.SSH_PORT) as port:
                proc = await asyncio.create_subprocess_exec(
                    exe, "-T", "5", "-p", str(port), "127.0.0.1",
                    stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE,
                    stderr=asyncio.subprocess.DEVNULL)
                try:
                    async with asyncio.timeout(KEYSCAN_TIMEOUT):
                        stdout, _ = await proc.communicate()
                except TimeoutError:
                    proc.kill()
                    await proc.wait()
                    return None
        except ClusterError as e:
            self.out.debug(f"cannot reach {gs.namespace}/{gs.ssh_service} for its host key: {e.message}")
            return None
        return key_fingerprints(stdout.decode("utf-8", errors="replace")) or None

    # ----------------------------------------------------------------- what Flux fetched from it

    async def sync_state(self) -> tuple[dict[str, Any] | None, dict[str, Any] | None]:
        """The flux-system GitRepository and Kustomization as the cluster has them (None when absent;
        read once per run, :meth:`forget` after a change)."""
        async with self._sync_lock:
            if self._sync_state is None:
                ns, name = flux_render.FLUX_NAMESPACE, flux_render.SYNC_NAME
                repo, ks = await asyncio.gather(
                    self.kube.get(flux_render.SOURCE_API, "GitRepository", name, namespace=ns),
                    self.kube.get(flux_render.KUSTOMIZE_API, "Kustomization", name, namespace=ns))
                self._sync_state = (repo, ks)
            return self._sync_state

    # ----------------------------------------------------------------- lifetime

    async def close(self) -> None:
        """Close the port-forward and the API client (the token stays valid for the run)."""
        stack, self._stack, self._client, self._port = self._stack, None, None, None
        self._holdings = None
        if stack is not None:
            await stack.aclose()
