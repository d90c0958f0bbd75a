"""A real SSH Git server for tests: asyncssh in front of the real ``git upload-pack``.

It stands in for the in-cluster Gitea's built-in SSH server in the one place where only a real
SSH handshake proves anything: that the ``identity`` and ``known_hosts`` seedbed puts in the
``flux-system`` Secret actually work. The server presents exactly the host key it is given and
accepts exactly the listed public keys (user ``git``), so a wrong host key or an unregistered
deploy key fails the same way it would against Gitea.

Usage from a sync test (the server runs its own event loop in a thread)::

    with SSHGitServer(host_key_pem, [deploy_public], repos_root) as server:
        env = git_ssh_env(identity_file, known_hosts_file, host_alias="gitea-ssh.gitea.svc.cluster.local")
        subprocess.run(["git", "clone", server.url("homelab/gitops"), dest], env=env, check=True)

Only ``git-upload-pack`` (fetch/clone) is served unless ``allow_push=True``; then
``git-receive-pack`` is too. Repositories live at ``<repos_root>/<owner>/<repo>.git``.
"""

from __future__ import annotations

import asyncio
import os
import shlex
import subprocess
import threading
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import asyncssh
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

GIT_USER = "git"
SERVICES = ("git-upload-pack", "git-receive-pack")


class SSHGitServer:
    """An SSH server on 127.0.0.1 that runs git's pack services for allowed keys only."""

    def __init__(
        self,
        host_private_openssh: str,
        authorized_public_keys: list[str],
        repos_root: Path,
        *,
        allow_push: bool = False,
        host: str = "127.0.0.1",
    ) -> None:
        self.host_key = asyncssh.import_private_key(host_private_openssh)
        # import_authorized_keys parses the same "type base64 comment" lines OpenSSH does; an
        # empty list must still mean "nobody", hence the explicit None below.
        text = "\n".join(k.strip() for k in authorized_public_keys if k.strip())
        self._authorized = asyncssh.import_authorized_keys(text) if text else None
        self.repos_root = Path(repos_root)
        self.allow_push = allow_push
        self.host = host
        self.port = 0
        # What happened, for assertions: (username, accepted?) per auth attempt, and commands run.
        self.auth_log: list[tuple[str, bool]] = []
        self.commands: list[str] = []
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._server: asyncssh.SSHAcceptor | None = None

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> SSHGitServer:
        started = threading.Event()
        error: list[BaseException] = []

        def run() -> None:
            loop = asyncio.new_event_loop()
            self._loop = loop
            asyncio.set_event_loop(loop)
            try:
                loop.run_until_complete(self._listen())
            except BaseException as e:  # surfaced to start()'s caller, not lost in the thread
                error.append(e)
                started.set()
                loop.close()
                return
            started.set()
            loop.run_forever()
            loop.run_until_complete(loop.shutdown_asyncgens())
            loop.close()

        self._thread = threading.Thread(target=run, name="sshgit", daemon=True)
        self._thread.start()
        started.wait(timeout=30)
        if error:
            raise error[0]
        if not self.port:
            raise RuntimeError("SSHGitServer did not start within 30s")
        return self

    def stop(self) -> None:
        loop, thread = self._loop, self._thread
        if loop is None or thread is None:
            return

        async def close() -> None:
            if self._server is not None:
                self._server.close()
                await self._server.wait_closed()

        if loop.is_running():
            asyncio.run_coroutine_threadsafe(close(), loop).result(timeout=30)
            loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout=30)
        self._loop = self._thread = self._server = None

    def __enter__(self) -> SSHGitServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def url(self, repo: str) -> str:
        """``ssh://git@127.0.0.1:PORT/owner/repo.git`` for ``owner/repo``."""
        repo = repo.strip("/").removesuffix(".git")
        return f"ssh://{GIT_USER}@{self.host}:{self.port}/{repo}.git"

    # ------------------------------------------------------------------ server

    async def _listen(self) -> None:
        self._server = await asyncssh.create_server(
            lambda: _Server(self),
            self.host,
            0,
            server_host_keys=[self.host_key],
            process_factory=self._handle,
            encoding=None,  # pack data is binary
            # Public keys only: nothing else may let a client in.
            password_auth=False,
            kbdint_auth=False,
            gss_host=None,
            allow_scp=False,
            sftp_factory=None,
            agent_forwarding=False,
            x11_forwarding=False,
        )
        self.port = self._server.sockets[0].getsockname()[1]

    def _resolve(self, command: str) -> tuple[str, Path] | str:
        """(service, repository path) for a git command line, or an error message."""
        try:
            argv = shlex.split(command)
        except ValueError:
            return "malformed command"
        if len(argv) != 2 or argv[0] not in SERVICES:
            return f"only {' and '.join(SERVICES)} are served"
        service, path = argv
        if service == "git-receive-pack" and not self.allow_push:
            return "this server is read-only"
        root = self.repos_root.resolve()
        repo = (root / path.lstrip("/")).resolve()
        # A client-chosen path must not escape the repository root.
        if root not in repo.parents or not (repo / "HEAD").exists():
            return f"repository {path!r} not found"
        return service, repo

    async def _handle(self, process: asyncssh.SSHServerProcess) -> None:
        command = process.command or ""
        self.commands.append(command)
        resolved = self._resolve(command)
        if isinstance(resolved, str):
            process.stderr.write(f"fatal: {resolved}\n".encode())
            process.exit(128)
            return
        service, repo = resolved
        env = {k: v for k, v in os.environ.items() if not k.startswith("GIT_")}
        # git sends GIT_PROTOCOL (SendEnv) to select protocol v2; pass it through like sshd would.
        proto = _client_env(process).get("GIT_PROTOCOL")
        if proto:
            env["GIT_PROTOCOL"] = proto
        sub = await asyncio.create_subprocess_exec(
            "git", service.removeprefix("git-"), str(repo),
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env,
        )
        assert sub.stdin and sub.stdout and sub.stderr
        # Pump by hand rather than with process.redirect(): the exit status must only be sent
        # after every byte of git's output went out, or the client sees a truncated pack.
        feeder = asyncio.ensure_future(_feed(process.stdin, sub.stdin))
        try:
            await asyncio.gather(_copy(sub.stdout, process.stdout), _copy(sub.stderr, process.stderr))
            status = await sub.wait()
        except (asyncssh.Error, OSError):
            if sub.returncode is None:
                sub.kill()
            status = await sub.wait()
        finally:
            feeder.cancel()
        process.exit(status)


async def _feed(source: asyncssh.SSHReader, sink: asyncio.StreamWriter) -> None:
    """Client → git: everything the client sends, then EOF."""
    try:
        while data := await source.read(65536):
            sink.write(data)
            await sink.drain()
    except (asyncssh.Error, OSError):
        pass  # the client went away or git exited early; git sees EOF either way
    finally:
        sink.close()


async def _copy(source: asyncio.StreamReader, sink: asyncssh.SSHWriter) -> None:
    """git → client, until git closes the stream."""
    while data := await source.read(65536):
        sink.write(data)
        await sink.drain()


class _Server(asyncssh.SSHServer):
    def __init__(self, owner: SSHGitServer) -> None:
        self._owner = owner

    def begin_auth(self, username: str) -> bool:
        return True  # always demand authentication

    def public_key_auth_supported(self) -> bool:
        return True

    def validate_public_key(self, username: str, key: asyncssh.SSHKey) -> bool:
        authorized = self._owner._authorized
        ok = (
            username == GIT_USER
            and authorized is not None
            and authorized.validate(key, "", "127.0.0.1") is not None
        )
        self._owner.auth_log.append((username, ok))
        return ok


def _client_env(process: asyncssh.SSHServerProcess) -> Mapping[str, str]:
    env: Mapping[Any, Any] = process.env or {}
    return {
        (k.decode() if isinstance(k, bytes) else str(k)): (v.decode() if isinstance(v, bytes) else str(v))
        for k, v in env.items()
    }


# ---------------------------------------------------------------------- helpers for tests


def generate_keypair(comment: str = "") -> tuple[str, str]:
    """(private OpenSSH PEM, public ``ssh-ed25519 AAAA... comment``), made fresh at run time."""
    key = Ed25519PrivateKey.generate()
    private = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH, serialization.NoEncryption()
    ).decode()
    public = key.public_key().public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
    return private, (public.decode() + (f" {comment}" if comment else ""))


def write_private_key(path: Path, private_openssh: str) -> Path:
    """Write a private key the way ssh insists on: mode 0600, trailing newline."""
    path.write_text(private_openssh if private_openssh.endswith("\n") else private_openssh + "\n")
    path.chmod(0o600)
    return path


def git_ssh_env(
    identity_file: Path,
    known_hosts_file: Path,
    *,
    host_alias: str | None = None,
    base: Mapping[str, str] | None = None,
) -> dict[str, str]:
    """An environment in which ``git`` reaches the server with exactly these credentials.

    ``host_alias`` makes ssh look the host key up under that name instead of
    ``[127.0.0.1]:PORT``, so a ``known_hosts`` written for the in-cluster Service name is used
    unchanged. Nothing from the user's ~/.ssh (config, keys, agent, known_hosts) takes part.
    """
    opts = [
        "ssh", "-F", "/dev/null",
        "-i", str(identity_file),
        "-o", "IdentitiesOnly=yes",
        "-o", "IdentityAgent=none",
        "-o", f"UserKnownHostsFile={known_hosts_file}",
        "-o", "GlobalKnownHostsFile=/dev/null",
        "-o", "StrictHostKeyChecking=yes",
        "-o", "BatchMode=yes",
        "-o", "ConnectTimeout=10",
        "-o", "LogLevel=ERROR",
    ]
    if host_alias:
        opts += ["-o", f"HostKeyAlias={host_alias}"]
    env = {k: v for k, v in (base if base is not None else os.environ).items()
           if not k.startswith(("GIT_", "SSH_"))}
    env.update({
        "GIT_SSH_COMMAND": shlex.join(opts),
        "GIT_SSH_VARIANT": "ssh",
        "GIT_TERMINAL_PROMPT": "0",
        "GIT_CONFIG_NOSYSTEM": "1",
        "GIT_CONFIG_GLOBAL": "/dev/null",
    })
    return env


def make_repo(repos_root: Path, repo: str, files: Mapping[str, str], *, branch: str = "main",
              message: str = "initial commit") -> Path:
    """A bare repository ``<repos_root>/<owner>/<name>.git`` holding one commit of ``files``."""
    bare = repos_root / f"{repo.strip('/').removesuffix('.git')}.git"
    work = bare.with_name(bare.name + ".work")
    env = {**os.environ, "GIT_CONFIG_NOSYSTEM": "1", "GIT_CONFIG_GLOBAL": "/dev/null",
           "GIT_AUTHOR_NAME": "seedbed test", "GIT_AUTHOR_EMAIL": "test@seedbed.invalid",
           "GIT_COMMITTER_NAME": "seedbed test", "GIT_COMMITTER_EMAIL": "test@seedbed.invalid"}

    def git(*args: str, cwd: Path | None = None) -> None:
        subprocess.run(["git", *args], cwd=cwd, env=env, check=True, capture_output=True)

    bare.parent.mkdir(parents=True, exist_ok=True)
    git("init", "-q", "--bare", "-b", branch, str(bare))
    git("init", "-q", "-b", branch, str(work))
    for name, content in files.items():
        target = work / name
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(content)
    git("add", "-A", cwd=work)
    git("commit", "-q", "-m", message, cwd=work)
    git("push", "-q", str(bare), f"HEAD:refs/heads/{branch}", cwd=work)
    return bare
