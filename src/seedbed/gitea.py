"""A thin async client for the few Gitea REST endpoints seedbed uses (Forgejo speaks the same API).

Every ``ensure_*`` method is idempotent: it looks first, creates only what is missing, and never
rotates anything unless asked. Credentials (the admin password, the access token) travel only in
``Authorization`` headers; they never appear in URLs, log lines or exception messages.

The client talks to Gitea through a port-forward on loopback, so it ignores proxy settings from the
environment (``trust_env=False``): an ``HTTP_PROXY`` meant for the internet must not swallow
``127.0.0.1``.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import secrets
import time
from collections.abc import Callable
from typing import Any, Literal
from urllib.parse import quote

import httpx2
import msgspec

from . import scrub
from .errors import ConfigError, GitServerError
from .sshkeys import blob_fingerprint

API = "/api/v1"
TOKEN_NAME = "seedbed"
# The least the bootstrap needs: admin (create users, their repos and keys), organization (create the
# org and its repo), repository (deploy keys, branches, git push over HTTP), user (the admin's own SSH
# keys). write:X implies read:X in Gitea and Forgejo.
TOKEN_SCOPES = ("write:admin", "write:organization", "write:repository", "write:user")
PAGE_LIMIT = 50  # Gitea's default MAX_RESPONSE_ITEMS; larger pages are silently cut to it.
NOREPLY_DOMAIN = "noreply.localhost"  # Gitea's own default no-reply domain: always a valid address.

OwnerKind = Literal["user", "org"]
DeployKeyState = Literal["created", "exists", "updated", "replaced", "mismatch"]



class DeployKeyResult(msgspec.Struct, frozen=True):
    """What :meth:`GiteaClient.ensure_deploy_key` found or did.

    ``state``:
      - ``created``: there was no deploy key with this title or material; it was added.
      - ``exists``: the same key material is registered with the wanted access; nothing changed.
      - ``updated``: same material, but read-only/read-write differed; it was re-registered (Gitea
        cannot edit a deploy key). The key itself was not rotated.
      - ``replaced``: ``rotate=True`` and a different key had the title; the old one was removed.
      - ``mismatch``: a key with this title but different material is registered and ``rotate`` was
        False; nothing changed. The caller decides (the private half lives in the cluster Secret, so
        only the caller knows whether the registered key is the one Flux holds).
    """

    state: DeployKeyState
    key_id: int | None
    registered_key: str | None = None  # the server's key material, for ``mismatch``

    @property
    def changed(self) -> bool:
        return self.state in ("created", "updated", "replaced")


def _blob_type(b64: str) -> str | None:
    """The key type named inside an OpenSSH key blob; it must repeat the type in front of it."""
    try:
        blob = base64.b64decode(b64, validate=True)
    except (binascii.Error, ValueError):
        return None
    if len(blob) < 4:
        return None
    n = int.from_bytes(blob[:4], "big")
    return blob[4:4 + n].decode("ascii", errors="replace") if 0 < n <= len(blob) - 4 else None


def key_material(public_openssh: str) -> str:
    """``type base64`` of an OpenSSH public key line: what identifies a key (comments and titles do not)."""
    parts = public_openssh.strip().split()
    if len(parts) < 2 or _blob_type(parts[1]) != parts[0]:
        raise ConfigError(
            f"not an OpenSSH public key: {public_openssh.strip()[:40]!r}...",
            fix="give the .pub file (one line like `ssh-ed25519 AAAA... comment`), not the private key",
        )
    return f"{parts[0]} {parts[1]}"


def _server_material(text: str) -> str:
    # What the server lists is trusted to be a key; it is only normalised, never rejected.
    return " ".join(text.split()[:2])


def key_fingerprint(public_openssh: str) -> str:
    """``SHA256:...`` like ``ssh-keygen -l`` prints it (keys as the server lists them, too)."""
    return blob_fingerprint(key_material(public_openssh).split()[1])


def _key_title(public_openssh: str) -> str:
    # Gitea titles are unique per user and at most 50 characters; the fingerprint makes them unique
    # and lets a human match the key to the file it came from.
    comment = " ".join(public_openssh.strip().split()[2:])[:28]
    fp = key_fingerprint(public_openssh).removeprefix("SHA256:")[:16]
    return f"{comment} {fp}".strip() if comment else f"seedbed {fp}"


def _seg(value: str) -> str:
    return quote(value, safe="")


class GiteaClient:
    """The admin's view of one Gitea (or Forgejo) server.

    ``base_url`` is the server root (``http://127.0.0.1:PORT``), not the API root; ``name`` is the
    flavour as messages should call it. Use as an async
    context manager, or call :meth:`aclose`.
    """

    def __init__(
        self, base_url: str, *, username: str, password: str, timeout: float = 30.0, name: str = "Gitea",
        namespace: str = "gitea",
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.namespace = namespace  # where the server runs: only for the kubectl commands in hints
        self.name = name  # "Gitea" or "Forgejo": only for messages
        self.username = username
        self._password = password
        scrub.secret(password)
        self._token: str | None = None
        self._timeout = timeout
        self._http = httpx2.AsyncClient(
            base_url=self.base_url, timeout=timeout, trust_env=False, follow_redirects=False,
            headers={"Accept": "application/json"},
        )

    def __repr__(self) -> str:  # never the secrets
        return f"GiteaClient({self.base_url!r}, username={self.username!r})"

    async def __aenter__(self) -> GiteaClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._http.aclose()

    @property
    def token(self) -> str:
        """The access token of this run (after :meth:`ensure_token`). Keep it in memory only."""
        if self._token is None:
            raise RuntimeError("ensure_token() has not been called")
        return self._token

    def use_token(self, token: str) -> None:
        """Use a token this run already created (a new port-forward to the same server, say)."""
        self._token = token
        scrub.secret(token)

    # ------------------------------------------------------------------ plumbing

    def _basic(self) -> str:
        raw = f"{self.username}:{self._password}".encode()
        return "Basic " + base64.b64encode(raw).decode()

    def _auth(self, basic: bool) -> str:
        if basic or self._token is None:
            return self._basic()
        return f"token {self._token}"

    async def _request(
        self, method: str, path: str, *, json: Any = None, params: dict[str, Any] | None = None,
        basic: bool = False, ok: tuple[int, ...] = (200, 201, 204), allow: tuple[int, ...] = (),
    ) -> httpx2.Response:
        """One API call. Statuses in ``ok`` and ``allow`` are returned; anything else raises.

        GETs are retried briefly on dropped connections and 502-504: a port-forward to a pod that has
        just become ready drops the odd connection. Writes are not retried blindly; every caller looks
        before it writes, so a re-run is the retry.
        """
        url = API + path
        headers = {"Authorization": self._auth(basic)}
        attempts = 3 if method == "GET" else 1
        for attempt in range(attempts):
            try:
                # An overall deadline: a per-read timeout never fires on a server that drips bytes.
                async with asyncio.timeout(self._timeout):
                    resp = await self._http.request(method, url, json=json, params=params, headers=headers)
            except (TimeoutError, httpx2.TransportError) as e:
                if attempt + 1 < attempts:
                    await asyncio.sleep(0.5 * (attempt + 1))
                    continue
                why = f"no answer within {self._timeout:g} s" if isinstance(e, TimeoutError) else type(e).__name__
                raise GitServerError(
                    f"cannot reach {self.name} at {self.base_url} ({method} {url}): {why}",
                    fix="check that the port-forward is open and the pod is running: "
                        f"`kubectl -n {self.namespace} get pods` and `kubectl -n {self.namespace} logs deploy/gitea`",
                ) from None
            if resp.status_code in (502, 503, 504) and attempt + 1 < attempts:
                await asyncio.sleep(0.5 * (attempt + 1))
                continue
            break
        if resp.status_code in ok or resp.status_code in allow:
            return resp
        raise self._error(method, url, resp)

    def _message(self, resp: httpx2.Response) -> str:
        try:
            data = resp.json()
        except ValueError:
            return scrub.scrub(resp.text.strip()[:200])
        if isinstance(data, dict):
            msg = str(data.get("message") or data.get("error") or "")
            errors = data.get("errors")
            if errors:
                msg = f"{msg} {errors}".strip()
            return scrub.scrub(msg)
        if isinstance(data, list):  # binding errors come as a list of {fieldNames, message}
            return scrub.scrub("; ".join(str(e.get("message", e)) if isinstance(e, dict) else str(e) for e in data))
        return scrub.scrub(str(data))

    def _error(self, method: str, url: str, resp: httpx2.Response) -> GitServerError:
        msg = self._message(resp)
        status = resp.status_code
        detail = f": {msg}" if msg else ""
        if status == 401:
            return GitServerError(
                f"{self.name} refused the credentials of {self.username!r} ({method} {url}: 401){detail}",
                fix="the admin password in the gitServer.adminSecret Secret must be the Gitea admin's; "
                    "re-run after fixing the Secret, or reset it with `gitea admin user change-password`",
            )
        if status == 403:
            return GitServerError(
                f"{self.name} forbade {method} {url} for {self.username!r} (403){detail}",
                fix=f"{self.username!r} must be a site administrator without a pending password change, "
                    f"and the {TOKEN_NAME!r} token needs the scopes {', '.join(TOKEN_SCOPES)}",
            )
        return GitServerError(
            f"{self.name} answered {method} {url} with {status}{detail}",
            fix=f"check `kubectl -n {self.namespace} logs deploy/gitea` for the cause",
        )

    def _json(self, resp: httpx2.Response, kind: type) -> Any:
        """The answer's JSON, checked to be a ``kind`` (dict or list of dicts): a server's answer is input."""
        method, url = resp.request.method, resp.request.url.path
        try:
            data = resp.json()
        except ValueError:
            data = None
        ok = isinstance(data, kind) and (kind is not list or all(isinstance(i, dict) for i in data))
        if not ok:
            raise GitServerError(
                f"{self.name} answered {method} {url} with something that is not a JSON "
                f"{'list of objects' if kind is list else 'object'}",
                fix=f"check that {self.base_url} reaches {self.name} (and not another service); "
                    f"`kubectl -n {self.namespace} logs deploy/gitea` shows its side")
        return data

    async def _list(self, path: str, *, basic: bool = False) -> list[dict[str, Any]]:
        """Every page of a list endpoint."""
        items: list[dict[str, Any]] = []
        page = 1
        while True:
            resp = await self._request("GET", path, params={"page": page, "limit": PAGE_LIMIT}, basic=basic)
            batch = self._json(resp, list)
            items += batch
            if len(batch) < PAGE_LIMIT:
                return items
            page += 1

    # ------------------------------------------------------------------ readiness

    async def wait_ready(self, timeout: float, *, interval: float = 1.0,
                         on_progress: Callable[[str], None] | None = None) -> str:
        """Poll until the server answers; return its version string.

        ``/api/healthz`` says whether the database is reachable (503 until it is); ``/api/v1/version``
        then proves the API is routed. Both are anonymous. ``on_progress`` hears what is awaited and
        the last answer or error, each time it changes. Each poll has an overall deadline, so a
        server that accepts and never answers is polled again rather than waited on.
        """
        deadline = time.monotonic() + timeout
        last = "no answer yet"
        said = ""
        while True:
            try:
                async with asyncio.timeout(max(0.1, min(self._timeout, deadline - time.monotonic()))):
                    health = await self._http.get("/api/healthz")
                    if health.status_code == 200 or health.status_code == 404:  # 404: a server without healthz
                        version = await self._http.get(API + "/version")
                        if version.status_code == 200:
                            data = version.json()
                            if isinstance(data, dict):
                                return str(data.get("version", "?"))
                            last = f"GET {API}/version answered a JSON {type(data).__name__}, not an object"
                        else:
                            last = f"GET {API}/version answered {version.status_code}"
                    else:
                        last = f"GET /api/healthz answered {health.status_code}"
            except TimeoutError:
                last = f"no answer within {self._timeout:g} s"
            except (httpx2.TransportError, ValueError) as e:
                last = f"{type(e).__name__}: {e}" if str(e) else type(e).__name__
            last = scrub.scrub(last)
            if on_progress is not None and last != said:
                said = last
                on_progress(f"waiting for {self.name} at {self.base_url} to answer: {last}")
            if time.monotonic() + interval > deadline:
                raise GitServerError(
                    f"{self.name} at {self.base_url} did not become ready within {timeout:g} s: {last}",
                    fix=f"check `kubectl -n {self.namespace} logs deploy/gitea` and `kubectl -n {self.namespace} get pods`; "
                        "raise gitServer.readyTimeout if it is only slow",
                )
            await asyncio.sleep(interval)

    # ------------------------------------------------------------------ token

    async def ensure_token(self) -> str:
        """A fresh access token named ``seedbed``; the previous one (if any) is deleted first.

        Gitea shows a token's value only once, at creation, so a token from an earlier run cannot be
        reused without storing it, and seedbed stores no secrets on disk. Deleting the old ``seedbed``
        token and creating a new one keeps exactly one on the server, however many runs there are.
        The token is a per-run credential, not a key anything else holds, so this is not a rotation in
        the ``--rotate-keys`` sense. Token endpoints accept only basic auth, hence the password here.
        """
        user = _seg(self.username)
        for tok in await self._list(f"/users/{user}/tokens", basic=True):
            if tok.get("name") == TOKEN_NAME:
                await self._request("DELETE", f"/users/{user}/tokens/{tok['id']}", basic=True, allow=(404,))
        resp = await self._request(
            "POST", f"/users/{user}/tokens", basic=True,
            json={"name": TOKEN_NAME, "scopes": list(TOKEN_SCOPES)},
        )
        value = self._json(resp, dict).get("sha1")
        if not value:
            raise GitServerError(
                f"{self.name} created the access token but did not return its value",
                fix="this Gitea/Forgejo version is not supported; use Gitea >= 1.19 or Forgejo",
            )
        self._token = value
        scrub.secret(value)
        return value

    # ------------------------------------------------------------------ owner

    async def _get(self, path: str) -> dict[str, Any] | None:
        resp = await self._request("GET", path, allow=(404,))
        return None if resp.status_code == 404 else self._json(resp, dict)

    async def ensure_owner(self, name: str, kind: OwnerKind, *, private: bool = True) -> bool:
        """Make sure the user or organisation ``name`` exists; True when it was created.

        A new user gets a random password nobody knows (the admin can reset it): it owns the repository,
        and people reach it with their SSH keys. A new organisation is owned by the admin user.
        """
        seg = _seg(name)
        org = await self._get(f"/orgs/{seg}")
        if kind == "org":
            if org is not None:
                return False
            if name.lower() == self.username.lower() or await self._get(f"/users/{seg}") is not None:
                raise ConfigError(
                    f"repo.owner {name!r} is a user on {self.name}, not an organisation",
                    fix="set repo.ownerType: user, or choose another repo.owner",
                )
            resp = await self._request(
                "POST", "/orgs", allow=(409, 422),
                json={"username": name, "visibility": "private" if private else "public"},
            )
            return self._created(resp, "owner", name)
        if org is not None:
            raise ConfigError(
                f"repo.owner {name!r} is an organisation on {self.name}, not a user",
                fix="set repo.ownerType: org, or choose another repo.owner",
            )
        if name.lower() == self.username.lower() or await self._get(f"/users/{seg}") is not None:
            return False
        resp = await self._request(
            "POST", "/admin/users", allow=(409, 422),
            json={
                "username": name,
                "email": f"{name}@{NOREPLY_DOMAIN}",
                "password": secrets.token_urlsafe(24),
                "must_change_password": False,
                "send_notify": False,
                "visibility": "private" if private else "public",
            },
        )
        return self._created(resp, "owner", name)

    def _created(self, resp: httpx2.Response, what: str, name: str) -> bool:
        if resp.status_code == 409:  # made by someone else since we looked: that is fine
            return False
        if resp.status_code == 422:
            msg = self._message(resp)
            if "already" in msg.lower() and "exist" in msg.lower():
                return False
            key = "repo.name" if what == "repository" else "repo.owner"
            raise ConfigError(
                f"{self.name} rejected the {what} name {name!r}: {msg}",
                fix=f"choose another {key} in seedbed.yaml: letters, digits, '-', '_' and '.', not ending "
                    "in .git, .wiki, .rss or .atom, and not a reserved name",
            )
        return True

    # ------------------------------------------------------------------ repository

    async def repo_exists(self, owner: str, repo: str) -> bool:
        return await self._get(f"/repos/{_seg(owner)}/{_seg(repo)}") is not None

    async def ensure_repo(
        self, owner: str, name: str, *, kind: OwnerKind, private: bool = True, default_branch: str = "main",
    ) -> dict[str, Any]:
        """The repository ``owner/name`` (created empty when missing); returns Gitea's Repository JSON.

        It is created without ``auto_init``: an initial commit would make the first push of the user's
        tree a non-fast-forward.
        """
        path = f"/repos/{_seg(owner)}/{_seg(name)}"
        existing = await self._get(path)
        if existing is not None:
            return existing
        create = f"/orgs/{_seg(owner)}/repos" if kind == "org" else f"/admin/users/{_seg(owner)}/repos"
        resp = await self._request(
            "POST", create, allow=(409, 422),
            json={"name": name, "private": private, "auto_init": False, "default_branch": default_branch,
                  "description": "GitOps repository bootstrapped by seedbed"},
        )
        self._created(resp, "repository", name)
        if resp.status_code == 201:
            return self._json(resp, dict)
        found = await self._get(path)
        if found is None:
            raise GitServerError(
                f"{self.name} says {owner}/{name} exists but does not show it to {self.username!r}",
                fix=f"give {self.username!r} access to {owner}/{name}, or delete it in the web UI",
            )
        return found

    async def get_branch_commit(self, owner: str, repo: str, branch: str) -> str | None:
        """The commit id at the tip of ``branch``, or None when the branch (or repository) does not exist."""
        data = await self._get(f"/repos/{_seg(owner)}/{_seg(repo)}/branches/{_seg(branch)}")
        if data is None:
            return None
        commit = data.get("commit")
        sha = commit.get("id") if isinstance(commit, dict) else None
        return sha if isinstance(sha, str) and sha else None

    # ------------------------------------------------------------------ keys

    async def ensure_user_keys(self, owner: str, keys: list[str], *, kind: OwnerKind = "user") -> list[str]:
        """Add the operator's SSH public keys; return the fingerprints of the keys that were added.

        Keys are matched by material, not title, so a key is never added twice. Gitea has no SSH keys
        for organisations: for an org owner the keys go to the admin user, who owns the org.
        """
        wanted: dict[str, str] = {}
        for key in keys:
            wanted.setdefault(key_material(key), key.strip())
        if kind == "org" or owner.lower() == self.username.lower():
            list_path, add_path, account = "/user/keys", "/user/keys", self.username
        else:
            seg = _seg(owner)
            list_path, add_path, account = f"/users/{seg}/keys", f"/admin/users/{seg}/keys", owner
        have = {_server_material(k["key"]) for k in await self._list(list_path) if k.get("key")}
        added = []
        for material, line in wanted.items():
            if material in have:
                continue
            resp = await self._request(
                "POST", add_path, allow=(422,), json={"title": _key_title(line), "key": material},
            )
            if resp.status_code == 422:
                raise GitServerError(
                    f"{self.name} refused the SSH key {key_fingerprint(line)} for {account!r}: "
                    f"{self._message(resp)}",
                    fix="a key can belong to only one account (and not be a deploy key too); "
                        "remove it from the other account or list another key in repo.authorizedKeys",
                )
            added.append(key_fingerprint(line))
        return added

    async def list_deploy_keys(self, owner: str, repo: str) -> list[dict[str, Any]]:
        return await self._list(f"/repos/{_seg(owner)}/{_seg(repo)}/keys")

    async def ensure_deploy_key(
        self, owner: str, repo: str, public_openssh: str, *, title: str = "flux", read_only: bool = True,
        rotate: bool = False,
    ) -> DeployKeyResult:
        """Register Flux's deploy key on ``owner/repo``; see :class:`DeployKeyResult` for the outcomes."""
        base = f"/repos/{_seg(owner)}/{_seg(repo)}/keys"
        material = key_material(public_openssh)
        keys = await self.list_deploy_keys(owner, repo)
        same = [k for k in keys if _server_material(k.get("key", "")) == material]
        titled = [k for k in keys if k.get("title") == title and k not in same]
        for k in same:
            if bool(k.get("read_only")) == read_only:
                # Leftover keys under our title with other material would keep old clusters' access.
                if rotate:
                    for old in titled:
                        await self._request("DELETE", f"{base}/{old['id']}", allow=(404,))
                return DeployKeyResult("exists", int(k["id"]))
        if same:
            # Same key, other access: Gitea cannot edit a deploy key, so register it again.
            for k in same:
                await self._request("DELETE", f"{base}/{k['id']}", allow=(404,))
            created = await self._add_deploy_key(base, title, material, read_only)
            return DeployKeyResult("updated", created)
        if titled and not rotate:
            return DeployKeyResult("mismatch", int(titled[0]["id"]), _server_material(titled[0].get("key", "")))
        for old in titled:
            await self._request("DELETE", f"{base}/{old['id']}", allow=(404,))
        created = await self._add_deploy_key(base, title, material, read_only)
        return DeployKeyResult("replaced" if titled else "created", created)

    async def _add_deploy_key(self, base: str, title: str, material: str, read_only: bool) -> int:
        resp = await self._request(
            "POST", base, allow=(422,), json={"title": title, "key": material, "read_only": read_only},
        )
        if resp.status_code == 422:
            raise GitServerError(
                f"{self.name} refused the deploy key {title!r}: {self._message(resp)}",
                fix="the key may already be a user's SSH key; a deploy key must be a key of its own "
                    "(re-run with --rotate-keys to generate a new one)",
            )
        key_id = self._json(resp, dict).get("id")
        if not isinstance(key_id, int):
            raise GitServerError(f"{self.name} added the deploy key {title!r} but gave no id for it",
                                 fix="this Gitea/Forgejo version is not supported; use Gitea >= 1.19 or Forgejo")
        return key_id
