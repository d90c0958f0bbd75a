"""From a kubeconfig (or in-cluster service account) to an authenticated HTTP client.

lightkube parses the kubeconfig; the TLS context and credentials are built here because
lightkube (1.0) writes inline client keys to temporary files on disk, which seedbed must not do
with secrets, and does not support exec plugins of apiVersion ``client.authentication.k8s.io/v1``.
"""

from __future__ import annotations

import base64
import json
import os
import ssl
import time
from collections.abc import AsyncGenerator, Generator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx2 as httpx
from lightkube.config.kubeconfig import KubeConfig, SingleConfig
from lightkube.core.exceptions import ConfigError as LightkubeConfigError

from ..errors import ClusterError, ConfigError

SERVICE_ACCOUNT = Path("/var/run/secrets/kubernetes.io/serviceaccount")
EXEC_API_VERSIONS = (
    "client.authentication.k8s.io/v1",
    "client.authentication.k8s.io/v1beta1",
    "client.authentication.k8s.io/v1alpha1",
)


@dataclass(frozen=True)
class Target:
    """Where the API server is and how to talk to it (no secrets in here)."""

    server: str
    context: str
    source: str  # the kubeconfig path, or "in-cluster"


def kubeconfig_path(configured: str | None, base_dir: Path) -> Path | None:
    """The kubeconfig to read: the config's, then $KUBECONFIG (first entry), then ~/.kube/config."""
    if configured:
        p = Path(configured).expanduser()
        return p if p.is_absolute() else base_dir / p
    env = os.environ.get("KUBECONFIG")
    if env:
        return Path(env.split(os.pathsep)[0]).expanduser()
    default = Path("~/.kube/config").expanduser()
    if default.exists() or not (SERVICE_ACCOUNT / "token").exists():
        return default
    return None  # in-cluster


def load_single(configured: str | None, context: str | None, base_dir: Path) -> tuple[SingleConfig, str]:
    path = kubeconfig_path(configured, base_dir)
    if path is None:
        try:
            return KubeConfig.from_service_account(SERVICE_ACCOUNT).get(), "in-cluster"
        except (LightkubeConfigError, KeyError) as e:
            raise ClusterError(f"in-cluster configuration is incomplete: {e}",
                               fix="run with a kubeconfig (--kubeconfig or cluster.kubeconfig)") from None
    if not path.exists():
        raise ConfigError(f"kubeconfig {path} does not exist",
                          fix="set cluster.kubeconfig in seedbed.yaml, $KUBECONFIG, or pass --kubeconfig")
    doc = _read_kubeconfig(path)
    try:
        kc = KubeConfig.from_dict(doc, fname=path)
    except Exception as e:  # lightkube raises KeyError/msgspec errors on malformed entries
        raise ConfigError(f"kubeconfig {path} has a malformed entry: {type(e).__name__}: {e}",
                          fix="check it with `kubectl config view --kubeconfig FILE`") from None
    name = context or doc.get("current-context")
    if not name:
        raise ConfigError(f"kubeconfig {path} has no current-context",
                          fix="set cluster.context in seedbed.yaml or pass --context NAME")
    if name not in kc.contexts:
        available = ", ".join(sorted(kc.contexts)) or "none"
        raise ConfigError(f"kubeconfig {path} has no context {name!r} (available: {available})",
                          fix="set cluster.context in seedbed.yaml or pass --context NAME")
    ctx = kc.contexts[name]
    if ctx.cluster not in kc.clusters:
        raise ConfigError(f"kubeconfig {path}: context {name!r} names cluster {ctx.cluster!r}, which is not defined",
                          fix="fix the kubeconfig (kubectl config view)")
    if ctx.user and ctx.user not in kc.users:
        raise ConfigError(f"kubeconfig {path}: context {name!r} names user {ctx.user!r}, which is not defined",
                          fix="fix the kubeconfig (kubectl config view)")
    raw_cluster = next((c.get("cluster") or {} for c in doc["clusters"] if c.get("name") == ctx.cluster), {})
    if not raw_cluster.get("server"):
        raise ConfigError(f"kubeconfig {path}: cluster {ctx.cluster!r} has no server address",
                          fix="fix the kubeconfig: clusters[].cluster.server, e.g. https://10.0.0.10:6443")
    single = kc.get(name)
    assert single is not None
    return single, str(path)


def _read_kubeconfig(path: Path) -> dict[str, Any]:
    import yaml

    try:
        doc = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as e:
        raise ConfigError(f"kubeconfig {path} cannot be read: {type(e).__name__}",
                          fix="check the file is a kubeconfig (kubectl config view --kubeconfig FILE)") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("clusters"), list) \
            or not isinstance(doc.get("contexts"), list):
        raise ConfigError(f"kubeconfig {path} is not a kubeconfig: it needs `clusters` and `contexts` lists",
                          fix="point cluster.kubeconfig (or --kubeconfig) at the file your cluster gave you")
    for section in ("clusters", "contexts", "users"):
        for entry in doc.get(section) or []:
            if not isinstance(entry, dict) or "name" not in entry:
                raise ConfigError(f"kubeconfig {path}: an entry of `{section}` has no name",
                                  fix="fix the kubeconfig (kubectl config view)")
    doc.setdefault("users", [])
    return doc


def http_client(single: SingleConfig, *, timeout: float = 30.0) -> httpx.AsyncClient:
    server = single.cluster.server
    # A plain-http server (a local proxy such as `kubectl proxy`, or the test emulator) has no TLS to
    # verify; an https server always gets a verifying context. Building the default context for
    # nothing costs a tenth of a second on every start.
    verify: ssl.SSLContext | bool = _ssl_context(single) if server.startswith("https://") else False
    try:
        httpx.URL(server)
    except httpx.InvalidURL as e:
        raise ConfigError(f"context {single.context_name!r}: the server address {server!r} is not a URL ({e})",
                          fix="fix clusters[].cluster.server in the kubeconfig") from None
    return httpx.AsyncClient(
        base_url=server.rstrip("/"),
        verify=verify,
        auth=_auth(single),
        timeout=httpx.Timeout(timeout, connect=10.0),
        limits=httpx.Limits(max_connections=16, max_keepalive_connections=16),
        trust_env=False,
        headers={"User-Agent": "seedbed"},
    )


def _ssl_context(single: SingleConfig) -> ssl.SSLContext:
    cluster, user = single.cluster, single.user
    if cluster.insecure:
        raise ConfigError(
            f"context {single.context_name!r} sets insecure-skip-tls-verify; seedbed always verifies TLS",
            fix="put the cluster's CA in certificate-authority-data instead")
    try:
        if cluster.certificate_auth_data:
            ctx = ssl.create_default_context(cadata=base64.b64decode(cluster.certificate_auth_data).decode())
        elif cluster.certificate_auth:
            ctx = ssl.create_default_context(cafile=str(single.abs_file(cluster.certificate_auth)))
        else:
            ctx = ssl.create_default_context()
        if user and (user.client_cert_data or user.client_cert):
            cert = _pem(user.client_cert_data, user.client_cert, single)
            key = _pem(user.client_key_data, user.client_key, single)
            _load_chain_in_memory(ctx, cert, key)
    except (ssl.SSLError, ValueError, OSError, TypeError) as e:
        raise ConfigError(f"the TLS material of context {single.context_name!r} is invalid: {e}",
                          fix="re-export the kubeconfig from your cluster") from None
    return ctx


def _pem(data: str | None, file: str | None, single: SingleConfig) -> bytes:
    if data:
        return base64.b64decode(data)
    if file is None:
        raise ValueError("a client certificate needs both the certificate and its key")
    return Path(single.abs_file(file)).read_bytes()


def _load_chain_in_memory(ctx: ssl.SSLContext, cert: bytes, key: bytes) -> None:
    # ssl can only load a client key from a path. A memfd is a file that lives in memory only,
    # so the private key never reaches a disk (Linux); elsewhere fall back to an 0600 temp file.
    if hasattr(os, "memfd_create"):
        fd = os.memfd_create("seedbed-client-cert", 0)
        try:
            os.write(fd, cert + b"\n" + key)
            ctx.load_cert_chain(f"/proc/self/fd/{fd}")
        finally:
            os.close(fd)
        return
    import tempfile

    with tempfile.NamedTemporaryFile() as f:  # pragma: no cover - non-Linux
        os.chmod(f.name, 0o600)
        f.write(cert + b"\n" + key)
        f.flush()
        ctx.load_cert_chain(f.name)


def _auth(single: SingleConfig) -> httpx.Auth | None:
    user = single.user
    if user is None:
        return None
    if user.token_file:
        token_file = Path(single.abs_file(user.token_file))
        if not token_file.is_file():
            raise ConfigError(f"context {single.context_name!r}: token file {token_file} does not exist",
                              fix="fix users[].user.tokenFile in the kubeconfig")
        return _TokenFileAuth(token_file)
    if user.token:
        return _BearerAuth(user.token)
    if user.exec:
        return ExecAuth(user.exec.command, list(user.exec.args or []),
                        {e.name: e.value for e in (user.exec.env or [])}, user.exec.apiVersion,
                        user.exec.installHint)
    if user.username and user.password:
        return httpx.BasicAuth(user.username, user.password)
    if user.auth_provider:
        raise ConfigError(f"context {single.context_name!r} uses an auth-provider, which kubectl also dropped",
                          fix="use an exec credential plugin (client.authentication.k8s.io/v1)")
    return None


class _BearerAuth(httpx.Auth):
    def __init__(self, token: str) -> None:
        self._header = f"Bearer {token}"

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        request.headers["Authorization"] = self._header
        yield request


class _TokenFileAuth(httpx.Auth):
    """Bound service-account tokens rotate: re-read the file every minute."""

    def __init__(self, path: Path) -> None:
        self._path = path
        self._read_at = 0.0
        self._token = ""

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        if time.monotonic() - self._read_at > 60:
            self._token = self._path.read_text().strip()
            self._read_at = time.monotonic()
        request.headers["Authorization"] = f"Bearer {self._token}"
        yield request


class ExecAuth(httpx.Auth):
    """An exec credential plugin (v1, v1beta1): run the command, use its token until it expires."""

    def __init__(self, command: str, args: list[str], env: dict[str, str], api_version: str,
                 install_hint: str | None = None) -> None:
        if api_version not in EXEC_API_VERSIONS:
            raise ConfigError(f"exec credential plugin apiVersion {api_version!r} is not supported",
                              fix=f"use one of {', '.join(EXEC_API_VERSIONS)}")
        self.command, self.args, self.env, self.api_version = command, args, env, api_version
        self.install_hint = install_hint
        self._header: str | None = None
        self._expires: float | None = None

    def _valid(self) -> bool:
        return self._header is not None and (self._expires is None or time.time() < self._expires - 10)

    async def _refresh(self) -> None:
        import asyncio

        env = {**os.environ, **self.env, "KUBERNETES_EXEC_INFO": json.dumps({
            "apiVersion": self.api_version, "kind": "ExecCredential",
            "spec": {"interactive": False},
        })}
        try:
            proc = await asyncio.create_subprocess_exec(
                self.command, *self.args, env=env, stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
        except FileNotFoundError:
            raise ClusterError(f"the kubeconfig's credential plugin {self.command!r} is not installed",
                               fix=self.install_hint or f"install {self.command} or fix the path") from None
        except OSError as e:
            raise ClusterError(f"the kubeconfig's credential plugin {self.command!r} cannot run: {e.strerror}",
                               fix=f"make {self.command} executable (chmod +x) or fix the path") from None
        out, err = await proc.communicate()
        if proc.returncode != 0:
            last = err.decode(errors="replace").strip().splitlines()[-1:] or ["no output"]
            raise ClusterError(f"credential plugin {self.command!r} failed (exit {proc.returncode}): {last[0]}",
                               fix="log in again with your cluster's tool, then re-run")
        try:
            status = json.loads(out)["status"]
            token = status["token"]
        except (ValueError, KeyError, TypeError):
            raise ClusterError(f"credential plugin {self.command!r} did not print an ExecCredential with a token",
                               fix="client-certificate exec plugins are not supported; use a token plugin") from None
        self._header = f"Bearer {token}"
        self._expires = _parse_time(status.get("expirationTimestamp"))

    async def async_auth_flow(self, request: httpx.Request) -> AsyncGenerator[httpx.Request, httpx.Response]:
        if not self._valid():
            await self._refresh()
        assert self._header
        request.headers["Authorization"] = self._header
        response = yield request
        if response.status_code == 401:  # revoked early: run the plugin once more
            await self._refresh()
            request.headers["Authorization"] = self._header
            yield request


def _parse_time(value: str | None) -> float | None:
    if not value:
        return None
    from datetime import datetime

    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None
