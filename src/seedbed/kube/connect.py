"""From a kubeconfig (or in-cluster service account) to an authenticated HTTP client.

The kubeconfig is read as kubectl reads it (k8s.io/client-go ``tools/clientcmd/loader.go``,
``ClientConfigLoadingRules.Load`` and ``ResolveLocalPaths``): ``$KUBECONFIG`` is a list of files
whose empty entries and missing files are skipped and whose entries merge with the first file to
define a name winning; relative file references resolve against the folder of the file that holds
them, and an exec ``command`` does so only when it contains a path separator (a bare name is
looked up in ``$PATH``: ``GetAuthInfoFileReferences``). ``tls-server-name`` names the host the
server's certificate is checked against.

lightkube parses the merged entries into typed models; the TLS context and credentials are built
here because lightkube (1.0) writes inline client keys to temporary files on disk, which seedbed
must not do with secrets, and does not support exec plugins of apiVersion
``client.authentication.k8s.io/v1``. Every credential the kubeconfig yields is registered with
:mod:`seedbed.scrub`, so that no message can show it, whatever a server or library echoes.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import json
import os
import re
import ssl
import time
from collections.abc import AsyncGenerator, Generator
from pathlib import Path
from typing import Any

import httpx2 as httpx
import msgspec
from lightkube.config.kubeconfig import KubeConfig, SingleConfig
from lightkube.core.exceptions import ConfigError as LightkubeConfigError

from .. import files, scrub, yamlutil
from ..errors import ClusterError, ConfigError

SERVICE_ACCOUNT = Path("/var/run/secrets/kubernetes.io/serviceaccount")
EXEC_API_VERSIONS = (
    "client.authentication.k8s.io/v1",
    "client.authentication.k8s.io/v1beta1",
    "client.authentication.k8s.io/v1alpha1",
)
KUBECONFIG_FIX = "check it with `kubectl config view --kubeconfig FILE`"


class Deadlines(msgspec.Struct, frozen=True):
    """How long each kind of external call may take in all, not per read (seconds).

    A server that accepts a connection and never answers, or drips a byte every few seconds, is
    stopped by ``request``; a silent TLS handshake by ``connect``; an exec credential plugin waiting
    for a login nobody will type by ``exec_plugin``. Watches run for as long as their caller waits,
    but a watch that delivers no byte for ``watch_idle`` seconds beyond the server's own
    ``timeoutSeconds`` is dead. Tests pass small values.
    """

    request: float = 30.0
    connect: float = 10.0
    exec_plugin: float = 30.0
    watch_idle: float = 30.0


class Loaded(msgspec.Struct, frozen=True):
    """One context of a kubeconfig, ready to connect with."""

    single: SingleConfig
    source: str
    tls_server_name: str | None = None


# --------------------------------------------------------------------------- finding the files


def kubeconfig_paths(configured: str | None, base_dir: Path) -> list[Path] | None:
    """The kubeconfig files to read: the config's (or the flag's), else $KUBECONFIG, else ~/.kube/config.

    None means in-cluster (no kubeconfig anywhere, but a service account token).
    """
    if configured is not None:
        if not configured.strip():
            raise ConfigError("the kubeconfig path is empty (--kubeconfig '' or cluster.kubeconfig: '')",
                              fix="name a kubeconfig file, or leave the option out to use $KUBECONFIG "
                                  "or ~/.kube/config")
        p = files.expand(configured)
        p = p if p.is_absolute() else base_dir / p
        if not p.exists():
            raise ConfigError(f"kubeconfig {p} does not exist",
                              fix="set cluster.kubeconfig in seedbed.yaml, $KUBECONFIG, or pass --kubeconfig")
        return [p]
    env = os.environ.get("KUBECONFIG", "")
    # client-go: filepath.SplitList, empty entries skipped, duplicates dropped, missing files ignored.
    entries = list(dict.fromkeys(e for e in env.split(os.pathsep) if e.strip()))
    if entries:
        paths = [files.expand(e) for e in entries]
        found = [p for p in paths if p.exists()]
        if not found:
            names = ", ".join(str(p) for p in paths)
            raise ConfigError(f"kubeconfig {names} (from $KUBECONFIG) does not exist",
                              fix="set cluster.kubeconfig in seedbed.yaml, $KUBECONFIG, or pass --kubeconfig")
        return found
    default = Path("~/.kube/config").expanduser()
    if default.exists() or not (SERVICE_ACCOUNT / "token").exists():
        if not default.exists():
            raise ConfigError(f"kubeconfig {default} does not exist",
                              fix="set cluster.kubeconfig in seedbed.yaml, $KUBECONFIG, or pass --kubeconfig")
        return [default]
    return None


def load_single(configured: str | None, context: str | None, base_dir: Path) -> Loaded:
    if context is not None and not context.strip():
        raise ConfigError("the kubeconfig context is empty (--context '' or cluster.context: '')",
                          fix="name a context (kubectl config get-contexts), or leave the option out "
                              "to use the kubeconfig's current-context")
    paths = kubeconfig_paths(configured, base_dir)
    if paths is None:
        return _in_cluster()
    source = os.pathsep.join(str(p) for p in paths)
    doc = _merge([(p, _read_kubeconfig(p)) for p in paths])
    try:
        kc = KubeConfig.from_dict(doc, fname=paths[0])
    except Exception as e:  # lightkube raises KeyError/msgspec errors on malformed entries
        raise ConfigError(f"kubeconfig {source} has a malformed entry: {type(e).__name__}: {scrub.scrub(str(e))}",
                          fix=KUBECONFIG_FIX) from None
    name = context or doc.get("current-context")
    if not name:
        raise ConfigError(f"kubeconfig {source} has no current-context",
                          fix="set cluster.context in seedbed.yaml or pass --context NAME")
    if not isinstance(name, str) or name not in kc.contexts:
        available = ", ".join(sorted(kc.contexts)) or "none"
        raise ConfigError(f"kubeconfig {source} has no context {name!r} (available: {available})",
                          fix="set cluster.context in seedbed.yaml or pass --context NAME")
    ctx = kc.contexts[name]
    if ctx.cluster not in kc.clusters:
        raise ConfigError(f"kubeconfig {source}: context {name!r} names cluster {ctx.cluster!r}, which is not defined",
                          fix="fix the kubeconfig (kubectl config view)")
    if ctx.user and ctx.user not in kc.users:
        raise ConfigError(f"kubeconfig {source}: context {name!r} names user {ctx.user!r}, which is not defined",
                          fix="fix the kubeconfig (kubectl config view)")
    raw_cluster = _entry(doc, "clusters", ctx.cluster, "cluster")
    if not raw_cluster.get("server") or not isinstance(raw_cluster["server"], str):
        raise ConfigError(f"kubeconfig {source}: cluster {ctx.cluster!r} has no server address",
                          fix="fix the kubeconfig: clusters[].cluster.server, e.g. https://10.0.0.10:6443")
    server_name = raw_cluster.get("tls-server-name")
    if server_name is not None and (not isinstance(server_name, str) or not server_name.strip()):
        raise ConfigError(f"kubeconfig {source}: cluster {ctx.cluster!r} has an empty or malformed tls-server-name",
                          fix="set clusters[].cluster.tls-server-name to the name in the server's certificate")
    single = kc.get(name)
    assert single is not None
    return Loaded(single, source, server_name or None)


def _in_cluster() -> Loaded:
    try:
        return Loaded(KubeConfig.from_service_account(SERVICE_ACCOUNT).get(), "in-cluster")
    except (LightkubeConfigError, KeyError, OSError) as e:
        raise ClusterError(f"in-cluster configuration is incomplete: {e}",
                           fix="run with a kubeconfig (--kubeconfig or cluster.kubeconfig)") from None


def _read_kubeconfig(path: Path) -> dict[str, Any]:
    try:
        raw = files.read_bytes(path, files.KUBECONFIG)
        text = raw.decode("utf-8")
    except ConfigError as e:
        raise ConfigError(f"kubeconfig {path} cannot be read: {e.message.removeprefix(f'kubeconfig {path}: ')}",
                          fix=e.fix) from None
    except UnicodeDecodeError:
        raise ConfigError(f"kubeconfig {path} cannot be read: it is not UTF-8 text",
                          fix="check the file is a kubeconfig (kubectl config view --kubeconfig FILE)") from None
    try:
        doc = yamlutil.safe_load(text, what="", error=ConfigError)
    except ConfigError as e:  # "line N: not valid YAML", nested too deep, an alias bomb
        where = re.sub(r"^:(\d+):", r"line \1:", e.message).lstrip(": ")
        raise ConfigError(f"kubeconfig {path} cannot be read: {where}", fix=e.fix) from None
    if not isinstance(doc, dict) or not isinstance(doc.get("clusters"), list) \
            or not isinstance(doc.get("contexts"), list) or not isinstance(doc.get("users") or [], list):
        raise ConfigError(f"kubeconfig {path} is not a kubeconfig: it needs `clusters` and `contexts` lists",
                          fix="point cluster.kubeconfig (or --kubeconfig) at the file your cluster gave you")
    base = path.resolve().parent
    for section, inner in (("clusters", "cluster"), ("contexts", "context"), ("users", "user")):
        for entry in doc.get(section) or []:
            if not isinstance(entry, dict) or not isinstance(entry.get("name"), str):
                raise ConfigError(f"kubeconfig {path}: an entry of `{section}` has no name",
                                  fix="fix the kubeconfig (kubectl config view)")
            body = entry.get(inner)
            if body is None:
                entry[inner] = body = {}
            if not isinstance(body, dict):
                raise ConfigError(f"kubeconfig {path}: {section} entry {entry['name']!r} is not a mapping",
                                  fix="fix the kubeconfig (kubectl config view)")
            _resolve_paths(section, body, base)
    doc["users"] = doc.get("users") or []
    return doc


def _resolve_paths(section: str, body: dict[str, Any], base: Path) -> None:
    """Relative file references resolve against the kubeconfig's own folder (client-go ResolveLocalPaths)."""
    keys = {"clusters": ["certificate-authority"], "users": ["client-certificate", "client-key", "tokenFile"]}
    for key in keys.get(section, []):
        value = body.get(key)
        if isinstance(value, str) and value and not Path(value).is_absolute():
            body[key] = str(base / value)
    exec_ = body.get("exec") if section == "users" else None
    if isinstance(exec_, dict):
        command = exec_.get("command")
        # Only a command with a path separator is a file reference; a bare name is looked up in $PATH.
        if isinstance(command, str) and os.sep in command and not Path(command).is_absolute():
            exec_["command"] = str(base / command)


def _merge(docs: list[tuple[Path, dict[str, Any]]]) -> dict[str, Any]:
    """Several kubeconfigs as one: the first file to define a name (or current-context) wins."""
    if len(docs) == 1:
        return docs[0][1]
    merged: dict[str, Any] = {"clusters": [], "contexts": [], "users": []}
    for _, doc in docs:
        if not merged.get("current-context") and doc.get("current-context"):
            merged["current-context"] = doc["current-context"]
        for section in ("clusters", "contexts", "users"):
            seen = {e["name"] for e in merged[section]}
            merged[section] += [e for e in doc.get(section) or [] if e["name"] not in seen]
    return merged


def _entry(doc: dict[str, Any], section: str, name: str, inner: str) -> dict[str, Any]:
    return next((e.get(inner) or {} for e in doc[section] if e.get("name") == name), {})


# --------------------------------------------------------------------------- the HTTP client


def http_client(loaded: Loaded, deadlines: Deadlines) -> httpx.AsyncClient:
    single = loaded.single
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
    limits = httpx.Limits(max_connections=32, max_keepalive_connections=32)
    transport: httpx.AsyncBaseTransport = httpx.AsyncHTTPTransport(verify=verify, limits=limits, trust_env=False)
    if loaded.tls_server_name:
        transport = _ServerName(transport, loaded.tls_server_name)
    return httpx.AsyncClient(
        base_url=server.rstrip("/"),
        transport=transport,
        auth=_auth(single, deadlines),
        # Per read; the overall deadline of each call is kept by the caller (Kube.request).
        timeout=httpx.Timeout(deadlines.request, connect=deadlines.connect),
        trust_env=False,
        headers={"User-Agent": "seedbed"},
        event_hooks={"response": [_read_refused_upgrade]},
    )


async def _read_refused_upgrade(response: httpx.Response) -> None:
    # A refused websocket upgrade (a port-forward the API server cannot dial) carries its reason in
    # the body, and the websocket client closes the stream before anyone could read it.
    if response.status_code >= 300 and response.request.headers.get("upgrade"):
        with contextlib.suppress(httpx.HTTPError):
            await response.aread()


class _ServerName(httpx.AsyncBaseTransport):
    """Checks the server's certificate (and sends SNI) for ``tls-server-name``, as client-go does."""

    def __init__(self, inner: httpx.AsyncBaseTransport, name: str) -> None:
        self._inner = inner
        self._name = name

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        request.extensions = {**request.extensions, "sni_hostname": self._name}
        return await self._inner.handle_async_request(request)

    async def aclose(self) -> None:
        await self._inner.aclose()


def _ssl_context(single: SingleConfig) -> ssl.SSLContext:
    cluster, user = single.cluster, single.user
    if cluster.insecure:
        raise ConfigError(
            f"context {single.context_name!r} sets insecure-skip-tls-verify; seedbed always verifies TLS",
            fix="put the cluster's CA in certificate-authority-data instead")
    try:
        if cluster.certificate_auth_data:
            ctx = ssl.create_default_context(cadata=_b64(cluster.certificate_auth_data).decode())
        elif cluster.certificate_auth:
            ctx = ssl.create_default_context(
                cadata=files.read_text(single.abs_file(cluster.certificate_auth), files.CREDENTIAL))
        else:
            ctx = ssl.create_default_context()
        if user and (user.client_cert_data or user.client_cert):
            cert = _pem(user.client_cert_data, user.client_cert, single)
            key = _pem(user.client_key_data, user.client_key, single)
            scrub.secret(key)
            _load_chain_in_memory(ctx, cert, key)
    except (ssl.SSLError, ValueError, OSError, TypeError, ConfigError) as e:
        detail = e.message if isinstance(e, ConfigError) else str(e) or type(e).__name__
        raise ConfigError(f"the TLS material of context {single.context_name!r} is invalid: {scrub.scrub(detail)}",
                          fix="re-export the kubeconfig from your cluster") from None
    return ctx


def _b64(data: str) -> bytes:
    try:
        return base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError):
        raise ValueError("a *-data field is not valid base64") from None


def _pem(data: str | None, file: str | None, single: SingleConfig) -> bytes:
    if data:
        return _b64(data)
    if file is None:
        raise ValueError("a client certificate needs both the certificate and its key")
    return files.read_bytes(single.abs_file(file), files.CREDENTIAL)


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


# --------------------------------------------------------------------------- credentials


def bearer(token: Any, where: str) -> str:
    """An ``Authorization`` value for a token from ``where``, registered with the scrubber.

    Surrounding whitespace is dropped (client-go trims token files too; a token pasted with its
    newline is the usual case); a token with a line break or control character inside cannot go
    into an HTTP header and is refused without being shown.
    """
    if not isinstance(token, str):
        raise ConfigError(f"the token {where} is not a string", fix="re-copy the token from your cluster")
    scrub.secret(token)
    value = token.strip()
    if not value:
        raise ConfigError(f"the token {where} is empty", fix="re-copy the token from your cluster")
    if any(c.isspace() or ord(c) < 0x21 or ord(c) > 0x7E for c in value):
        raise ConfigError(f"the token {where} contains a line break, space or non-ASCII character, "
                          "which cannot go into an HTTP header (the token is not shown)",
                          fix="re-copy the token as one line, without quotes or spaces")
    return f"Bearer {value}"


def _auth(single: SingleConfig, deadlines: Deadlines) -> httpx.Auth | None:
    user = single.user
    if user is None:
        return None
    where = f"of user {single.context.user!r}"
    if user.token_file:
        return _TokenFileAuth(Path(single.abs_file(user.token_file)), where)
    if user.token:
        return _BearerAuth(bearer(user.token, f"{where} (users[].user.token)"))
    if user.exec:
        command = user.exec.command
        if not command or not command.strip():
            raise ConfigError(f"the exec credential plugin {where} has no command",
                              fix="fix users[].user.exec.command in the kubeconfig")
        env = {e.name: e.value for e in (user.exec.env or [])}
        for value in env.values():
            scrub.secret(value)  # plugin settings are often client secrets
        return ExecAuth(command, list(user.exec.args or []), env, user.exec.apiVersion, user.exec.installHint,
                        timeout=deadlines.exec_plugin)
    if user.username and user.password:
        scrub.secret(user.password)
        return httpx.BasicAuth(user.username, user.password)
    if user.auth_provider:
        raise ConfigError(f"context {single.context_name!r} uses an auth-provider, which kubectl also dropped",
                          fix="use an exec credential plugin (client.authentication.k8s.io/v1)")
    return None


class _BearerAuth(httpx.Auth):
    def __init__(self, header: str) -> None:
        self._header = header

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        request.headers["Authorization"] = self._header
        yield request


class _TokenFileAuth(httpx.Auth):
    """Bound service-account tokens rotate: re-read the file every minute."""

    def __init__(self, path: Path, where: str) -> None:
        self._path = path
        self._where = where
        self._read_at = 0.0
        self._header = ""
        self.refresh()  # a missing or broken file is reported before the first request

    def refresh(self) -> None:
        try:
            text = files.read_text(self._path, files.CREDENTIAL)
        except ConfigError as e:
            raise ConfigError(f"the token file {self._where}: {e.message}",
                              fix="fix users[].user.tokenFile in the kubeconfig") from None
        self._header = bearer(text, f"in {self._path}")
        self._read_at = time.monotonic()

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        if time.monotonic() - self._read_at > 60:
            self.refresh()
        request.headers["Authorization"] = self._header
        yield request


class ExecAuth(httpx.Auth):
    """An exec credential plugin (v1, v1beta1): run the command, use its token until it expires."""

    def __init__(self, command: str, args: list[str], env: dict[str, str], api_version: str,
                 install_hint: str | None = None, *, timeout: float = 30.0) -> None:
        if api_version not in EXEC_API_VERSIONS:
            raise ConfigError(f"exec credential plugin apiVersion {api_version!r} is not supported",
                              fix=f"use one of {', '.join(EXEC_API_VERSIONS)}")
        self.command, self.args, self.env, self.api_version = command, args, env, api_version
        self.install_hint = install_hint
        self.timeout = timeout
        self._header: str | None = None
        self._expires: float | None = None

    def _valid(self) -> bool:
        return self._header is not None and (self._expires is None or time.time() < self._expires - 10)

    async def ensure(self) -> None:
        """Run the plugin now if there is no valid token (callers do this outside a request's deadline)."""
        if not self._valid():
            await self._refresh()

    async def _refresh(self) -> None:
        env = {**os.environ, **self.env, "KUBERNETES_EXEC_INFO": json.dumps({
            "apiVersion": self.api_version, "kind": "ExecCredential",
            "spec": {"interactive": False},
        })}
        try:
            proc = await asyncio.create_subprocess_exec(
                self.command, *self.args, env=env, stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, start_new_session=True)
        except FileNotFoundError:
            raise ClusterError(f"the kubeconfig's credential plugin {self.command!r} is not installed",
                               fix=self.install_hint or f"install {self.command} or fix the path") from None
        except OSError as e:
            raise ClusterError(f"the kubeconfig's credential plugin {self.command!r} cannot run: {e.strerror}",
                               fix=f"make {self.command} executable (chmod +x) or fix the path") from None
        try:
            async with asyncio.timeout(self.timeout):
                out, err = await proc.communicate()
        except TimeoutError:
            raise ClusterError(
                f"the kubeconfig's credential plugin {self.command!r} did not finish within {self.timeout:g} s",
                fix=f"run `{self.command}` yourself: it may be waiting for a login in a browser or a prompt; "
                    "log in with your cluster's tool first, then re-run") from None
        finally:
            if proc.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, 9)  # the plugin and whatever it started
                await proc.wait()
        if proc.returncode != 0:
            last = err.decode(errors="replace").strip().splitlines()[-1:] or ["no output"]
            raise ClusterError(f"credential plugin {self.command!r} failed (exit {proc.returncode}): "
                               f"{scrub.scrub(last[0][:300])}",
                               fix="log in again with your cluster's tool, then re-run")
        scrub.secret(out)
        data = yamlutil.safe_json(out, what=f"the output of credential plugin {self.command!r}", error=ClusterError) \
            if out.strip().startswith(b"{") else None
        status = data.get("status") if isinstance(data, dict) else None
        token = status.get("token") if isinstance(status, dict) else None
        if not isinstance(status, dict) or not isinstance(token, str):
            raise ClusterError(f"credential plugin {self.command!r} did not print an ExecCredential with a token",
                               fix="client-certificate exec plugins are not supported; use a token plugin")
        try:
            self._header = bearer(token, f"printed by credential plugin {self.command!r}")
        except ConfigError as e:
            raise ClusterError(e.message, fix=f"fix the plugin {self.command!r} or log in again") from None
        expiry = status.get("expirationTimestamp")
        self._expires = _parse_time(expiry if isinstance(expiry, str) else None)

    async def async_auth_flow(self, request: httpx.Request) -> AsyncGenerator[httpx.Request, httpx.Response]:
        await self.ensure()
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
