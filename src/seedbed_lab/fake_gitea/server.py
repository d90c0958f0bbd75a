"""The fake Gitea server.

An aiohttp app in its own thread on 127.0.0.1, so that the code under test (async, in the test's
event loop) and the real ``git`` CLI talk real HTTP to it. It keeps its state in plain dicts for
assertions, answers with Gitea's JSON shapes and error messages, and stores repositories as real bare
git repositories served by ``git http-backend`` (CGI).

With ``spec_check=True`` every ``/api/v1`` request is checked against the real Gitea and Forgejo
OpenAPI documents; problems collect in :attr:`FakeGitea.violations`.

Deliberate simplifications (see also the tests that rely on them):
- one permission rule: the site admin may do anything, a user may touch their own repositories;
- scopes are checked per route category like Gitea does (write implies read), public-only is ignored;
- no web UI, no SSH, no LFS, no organisation teams.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import hashlib
import itertools
import json
import os
import re
import secrets
import shutil
import struct
import subprocess
import tempfile
import threading
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from aiohttp import web

from seedbed_lab.openapi_check import Spec
from seedbed_lab.upstream import upstream_dir

API = "/api/v1"
VERSION = "1.27.0"

# Gitea's reserved user/org names (models/user/user.go, abridged) and repository names and patterns.
RESERVED_USERNAMES = {
    ".", "..", "-", ".well-known", "admin", "api", "assets", "attachments", "avatar", "avatars", "captcha",
    "commits", "debug", "error", "explore", "favicon.ico", "ghost", "issues", "login", "manifest.json",
    "metrics", "milestones", "new", "notifications", "org", "pulls", "raw", "repo", "repo-avatars",
    "robots.txt", "search", "serviceworker.js", "ssh_info", "swagger.v1.json", "user", "v2",
}
RESERVED_REPO_NAMES = {".", "..", "-"}
RESERVED_REPO_PATTERNS = ("*.git", "*.rss", "*.atom", "*.wiki")
ALPHA_DASH_DOT = re.compile(r"^[\w.-]+$", re.ASCII)
USERNAME = re.compile(r"^[A-Za-z0-9]+(?:[-_.][A-Za-z0-9]+)*$")

# Route category -> scope name, as Gitea's tokenRequiresScopes groups them.
READ, WRITE = "read", "write"
BODY = web.RequestKey("body", object)  # the parsed JSON body, read once by the middleware


def default_spec_paths() -> dict[str, Path]:
    """The real specs of the upstream files (seedbed_lab.upstream), those that exist."""
    base = upstream_dir()
    found = {
        "gitea": base / "gitea-swagger-v1.resolved.json",
        "forgejo": base / "forgejo-swagger-v1.json",
    }
    return {name: path for name, path in found.items() if path.exists()}


def _now() -> str:
    return datetime.now(UTC).replace(microsecond=0).isoformat().replace("+00:00", "Z")


def _err(status: int, message: str, url: str = "") -> web.Response:
    return web.json_response({"message": message, "url": url or "https://docs.gitea.com/api/1.27/"}, status=status)


def _parse_ssh_key(text: str) -> tuple[str, str, str] | None:
    """(type, base64, SHA256 fingerprint) of an OpenSSH public key line, or None when it is not one."""
    parts = text.strip().split()
    if len(parts) < 2:
        return None
    try:
        blob = base64.b64decode(parts[1], validate=True)
    except (binascii.Error, ValueError):
        return None
    if len(blob) < 4:
        return None
    (n,) = struct.unpack(">I", blob[:4])
    if blob[4:4 + n].decode(errors="replace") != parts[0]:
        return None
    fp = "SHA256:" + base64.b64encode(hashlib.sha256(blob).digest()).decode().rstrip("=")
    return parts[0], parts[1], fp


class FakeGitea:
    """A Gitea on loopback. ``start()``, then ``.url``; ``stop()`` removes its repositories."""

    def __init__(
        self, *, admin_user: str = "seedbed-admin", admin_password: str = "admin-password-123",
        spec_check: bool = True, specs: dict[str, Path] | None = None, root: Path | None = None,
        flavor: str = "gitea",
    ) -> None:
        self.admin_user = admin_user
        self.flavor = flavor
        self.ready = True
        self._ids = itertools.count(1)
        self._own_root = root is None
        self.root = Path(root or tempfile.mkdtemp(prefix="fake-gitea-"))
        # State, keyed by lower-case name like Gitea's lookups.
        self.users: dict[str, dict[str, Any]] = {}
        self.orgs: dict[str, dict[str, Any]] = {}
        self.repos: dict[str, dict[str, Any]] = {}
        self.tokens: list[dict[str, Any]] = []
        self.keys: list[dict[str, Any]] = []  # users' SSH keys
        self.deploy_keys: list[dict[str, Any]] = []
        self.requests: list[dict[str, Any]] = []
        self.git_requests: list[dict[str, Any]] = []
        self.violations: dict[str, list[str]] = {}
        self.specs: dict[str, Spec] = {}
        if spec_check:
            for name, path in (specs if specs is not None else default_spec_paths()).items():
                self.specs[name] = Spec(path)
                self.violations[name] = []
        self._add_user(admin_user, f"{admin_user}@{'noreply.localhost'}", admin_password, is_admin=True)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._runner: web.AppRunner | None = None
        self.port = 0

    # ------------------------------------------------------------------ lifecycle

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def repo_url(self, owner: str, repo: str) -> str:
        return f"{self.url}/{owner}/{repo}.git"

    def start(self) -> FakeGitea:
        loop = asyncio.new_event_loop()
        started = threading.Event()
        failure: list[BaseException] = []

        def run() -> None:
            asyncio.set_event_loop(loop)
            try:
                loop.run_until_complete(self._serve())
            except BaseException as e:  # handed to the starting thread
                failure.append(e)
                started.set()
                return
            started.set()
            loop.run_forever()

        self._loop = loop
        self._thread = threading.Thread(target=run, name="fake-gitea", daemon=True)
        self._thread.start()
        started.wait(10)
        if failure:
            raise failure[0]
        return self

    async def _serve(self) -> None:
        app = web.Application(middlewares=[self._middleware], client_max_size=1 << 30)
        r = app.router
        r.add_get("/api/healthz", self._healthz)
        r.add_get(API + "/version", self._version)
        r.add_get(API + "/user", self._get_self)
        r.add_get(API + "/users/{username}", self._get_user)
        r.add_get(API + "/users/{username}/tokens", self._list_tokens)
        r.add_post(API + "/users/{username}/tokens", self._create_token)
        r.add_delete(API + "/users/{username}/tokens/{token}", self._delete_token)
        r.add_post(API + "/admin/users", self._admin_create_user)
        r.add_get(API + "/orgs/{org}", self._get_org)
        r.add_post(API + "/orgs", self._create_org)
        r.add_post(API + "/orgs/{org}/repos", self._create_org_repo)
        r.add_post(API + "/admin/users/{username}/repos", self._admin_create_repo)
        r.add_get(API + "/repos/{owner}/{repo}", self._get_repo)
        r.add_get(API + "/repos/{owner}/{repo}/branches/{branch}", self._get_branch)
        r.add_get(API + "/users/{username}/keys", self._list_user_keys)
        r.add_get(API + "/user/keys", self._list_own_keys)
        r.add_post(API + "/user/keys", self._add_own_key)
        r.add_post(API + "/admin/users/{username}/keys", self._admin_add_key)
        r.add_get(API + "/repos/{owner}/{repo}/keys", self._list_deploy_keys)
        r.add_post(API + "/repos/{owner}/{repo}/keys", self._add_deploy_key)
        r.add_delete(API + "/repos/{owner}/{repo}/keys/{id}", self._delete_deploy_key)
        r.add_route("*", API + "/{tail:.*}", self._api_not_found)
        # Smart HTTP last: /{owner}/{repo}/... would otherwise shadow the API.
        r.add_route("*", "/{owner}/{repo}/{tail:.*}", self._git_http)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]

    def stop(self) -> None:
        if self._loop is not None and self._runner is not None:
            asyncio.run_coroutine_threadsafe(self._runner.cleanup(), self._loop).result(10)
            self._loop.call_soon_threadsafe(self._loop.stop)
            if self._thread:
                self._thread.join(10)
            self._loop.close()
            self._loop = None
        if self._own_root:
            shutil.rmtree(self.root, ignore_errors=True)

    def __enter__(self) -> FakeGitea:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ------------------------------------------------------------------ test helpers

    def all_violations(self) -> list[str]:
        return [f"[{name}] {v}" for name, vs in self.violations.items() for v in vs]

    def bare_path(self, owner: str, repo: str) -> Path:
        return self.root / owner.lower() / f"{repo.lower()}.git"

    def reject_pushes(self, owner: str, repo: str, message: str = "branch is protected") -> None:
        """Install a pre-receive hook that refuses every push with ``message``, like Gitea's own hook."""
        hook = self.bare_path(owner, repo) / "hooks" / "pre-receive"
        hook.write_text(f"#!/bin/sh\necho {json.dumps('Gitea: ' + message)} >&2\nexit 1\n")
        hook.chmod(0o755)

    def allow_pushes(self, owner: str, repo: str) -> None:
        (self.bare_path(owner, repo) / "hooks" / "pre-receive").unlink(missing_ok=True)

    def branch_commit(self, owner: str, repo: str, branch: str) -> str | None:
        run = subprocess.run(
            ["git", "--git-dir", str(self.bare_path(owner, repo)), "rev-parse", "--verify", "--quiet",
             f"refs/heads/{branch}"], capture_output=True, text=True, check=False,
        )
        return run.stdout.strip() or None

    def user_tokens(self, username: str) -> list[dict[str, Any]]:
        return [t for t in self.tokens if t["owner"] == username.lower()]

    def user_keys(self, username: str) -> list[dict[str, Any]]:
        return [k for k in self.keys if k["owner"] == username.lower()]

    def repo_deploy_keys(self, owner: str, repo: str) -> list[dict[str, Any]]:
        return [k for k in self.deploy_keys if k["repo"] == f"{owner}/{repo}".lower()]

    # ------------------------------------------------------------------ middleware

    @web.middleware
    async def _middleware(self, request: web.Request, handler: Any) -> web.StreamResponse:
        is_api = request.path.startswith(API + "/") or request.path == API
        body: Any = None
        raw = await request.read() if is_api else b""
        if raw:
            try:
                body = json.loads(raw)
            except ValueError:
                return _err(400, "invalid JSON body")
        if is_api:
            query = dict(request.query)
            for name, spec in self.specs.items():
                self.violations[name] += spec.check(request.method, request.path, body, query)
        request[BODY] = body
        if not self.ready and request.path != "/api/healthz":
            resp: web.StreamResponse = _err(503, "service unavailable")
        else:
            resp = await handler(request)
        if is_api:
            logged = dict(body) if isinstance(body, dict) else body
            if isinstance(logged, dict) and "password" in logged:
                logged["password"] = "<redacted>"  # the log is test state, but secrets stay out of it
            self.requests.append({
                "method": request.method, "path": request.path, "query": request.query_string,
                "auth": self._auth_kind(request), "status": resp.status, "body": logged,
            })
        return resp

    # ------------------------------------------------------------------ auth

    def _auth_kind(self, request: web.Request) -> str | None:
        header = request.headers.get("Authorization", "")
        return header.split(" ", 1)[0].lower() or None if header else None

    def _authenticate(self, request: web.Request) -> tuple[dict[str, Any] | None, dict[str, Any] | None, bool]:
        """(user, token, bad): the caller, the token used (None for a password), bad credentials given."""
        header = request.headers.get("Authorization", "")
        if not header:
            return None, None, False
        kind, _, value = header.partition(" ")
        kind = kind.lower()
        if kind in ("token", "bearer"):
            tok = self._token_by_value(value.strip())
            if tok is None:
                return None, None, True
            return self.users[tok["owner"]], tok, False
        if kind == "basic":
            try:
                login, _, secret = base64.b64decode(value.strip()).decode().partition(":")
            except (binascii.Error, UnicodeDecodeError):
                return None, None, True
            user = self.users.get(login.lower())
            if user is None:
                return None, None, True
            if secrets.compare_digest(user["password"], secret):
                return user, None, False
            # Gitea accepts a token as the password of basic auth (that is how git sends it).
            tok = self._token_by_value(secret)
            if tok is not None and tok["owner"] == user["login"].lower():
                return user, tok, False
            return None, None, True
        return None, None, True

    def _token_by_value(self, value: str) -> dict[str, Any] | None:
        for tok in self.tokens:
            if secrets.compare_digest(tok["sha1"], value):
                return tok
        return None

    def _require(
        self, request: web.Request, category: str, level: str = READ, *, admin: bool = False,
        basic_only: bool = False,
    ) -> dict[str, Any] | web.Response:
        user, tok, bad = self._authenticate(request)
        if bad or user is None:
            return _err(401, "user does not exist or the credentials are wrong" if bad else "token is required")
        if basic_only and tok is not None:
            return _err(401, "auth method not allowed")
        if tok is not None:
            needed = f"{level}:{category}"
            have = set(tok["scopes"])
            if needed not in have and f"write:{category}" not in have and "all" not in have:
                return _err(403, f"token does not have at least one of required scope(s), "
                                 f"required=[{needed}], token scope={','.join(tok['scopes'])}")
        if admin and not user["is_admin"]:
            return _err(403, "reqSiteAdmin")
        return user

    # ------------------------------------------------------------------ JSON shapes

    def _user_json(self, u: dict[str, Any]) -> dict[str, Any]:
        return {
            "id": u["id"], "login": u["login"], "login_name": "", "source_id": 0, "full_name": u.get("full_name", ""),
            "email": u["email"], "avatar_url": f"{self.url}/avatars/{u['id']}", "html_url": f"{self.url}/{u['login']}",
            "language": "", "is_admin": u["is_admin"], "last_login": u["created"], "created": u["created"],
            "restricted": False, "active": True, "prohibit_login": False, "location": "", "website": "",
            "description": "", "visibility": u.get("visibility", "public"), "followers_count": 0,
            "following_count": 0, "starred_repos_count": 0,
        }

    def _org_json(self, o: dict[str, Any]) -> dict[str, Any]:
        return {
            "id": o["id"], "name": o["login"], "username": o["login"], "full_name": o.get("full_name", ""),
            "email": "", "avatar_url": f"{self.url}/avatars/{o['id']}", "description": "", "website": "",
            "location": "", "visibility": o["visibility"], "repo_admin_change_team_access": False,
        }

    def _repo_json(self, r: dict[str, Any]) -> dict[str, Any]:
        owner = self.users.get(r["owner"].lower()) or self.orgs[r["owner"].lower()]
        full = f"{r['owner']}/{r['name']}"
        empty = not self._branches(r)
        return {
            "id": r["id"], "owner": self._user_json(owner) if "password" in owner else self._org_json(owner),
            "name": r["name"], "full_name": full, "description": r["description"], "empty": empty,
            "private": r["private"], "fork": False, "template": False, "mirror": False, "size": 0,
            "html_url": f"{self.url}/{full}", "url": f"{self.url}{API}/repos/{full}",
            "ssh_url": f"git@127.0.0.1:{full}.git", "clone_url": f"{self.url}/{full}.git",
            "default_branch": r["default_branch"], "object_format_name": "sha1", "archived": False,
            "created_at": r["created"], "updated_at": r["created"], "has_issues": True, "has_wiki": True,
            "has_pull_requests": True, "permissions": {"admin": True, "push": True, "pull": True},
        }

    def _key_json(self, k: dict[str, Any]) -> dict[str, Any]:
        return {
            "id": k["id"], "key": k["key"], "url": f"{self.url}{API}/user/keys/{k['id']}", "title": k["title"],
            "fingerprint": k["fingerprint"], "created_at": k["created"], "key_type": "user", "read_only": False,
        }

    def _deploy_key_json(self, k: dict[str, Any]) -> dict[str, Any]:
        return {
            "id": k["id"], "key_id": k["key_id"], "key": k["key"], "title": k["title"],
            "url": f"{self.url}{API}/repos/{k['repo']}/keys/{k['id']}", "fingerprint": k["fingerprint"],
            "created_at": k["created"], "read_only": k["read_only"],
        }

    def _token_json(self, t: dict[str, Any], *, with_value: bool) -> dict[str, Any]:
        data = {"id": t["id"], "name": t["name"], "token_last_eight": t["sha1"][-8:], "scopes": t["scopes"],
                "created_at": t["created"]}
        if with_value:
            data["sha1"] = t["sha1"]
        return data

    # ------------------------------------------------------------------ helpers

    def _add_user(self, login: str, email: str, password: str, *, is_admin: bool = False,
                  visibility: str = "public") -> dict[str, Any]:
        user = {"id": next(self._ids), "login": login, "email": email, "password": password, "is_admin": is_admin,
                "created": _now(), "visibility": visibility}
        self.users[login.lower()] = user
        return user

    def _paginate(self, request: web.Request, items: list[Any]) -> web.Response:
        page = max(1, int(request.query.get("page", "1")))
        limit = min(50, max(1, int(request.query.get("limit", "30"))))  # MAX_RESPONSE_ITEMS = 50
        chunk = items[(page - 1) * limit: page * limit]
        return web.json_response(chunk, headers={"X-Total-Count": str(len(items))})

    def _name_problem(self, name: str, *, repo: bool) -> str | None:
        if repo:
            if not ALPHA_DASH_DOT.match(name) or len(name) > 100:
                return "[Name]: AlphaDashDot" if len(name) <= 100 else "[Name]: MaxSize"
            if name.lower() in RESERVED_REPO_NAMES:
                return f"name is reserved [name: {name}]"
            for pat in RESERVED_REPO_PATTERNS:
                if name.lower().endswith(pat[1:]):
                    return f"name is pattern not allowed [pattern: {pat}]"
            return None
        if not USERNAME.match(name) or len(name) > 40:
            return f"name is invalid [name: {name}]"
        if name.lower() in RESERVED_USERNAMES:
            return f"name is reserved [name: {name}]"
        return None

    def _repo(self, owner: str, repo: str) -> dict[str, Any] | None:
        return self.repos.get(f"{owner}/{repo}".lower())

    def _may_admin_repo(self, user: dict[str, Any], r: dict[str, Any]) -> bool:
        return bool(user["is_admin"]) or r["owner"].lower() == user["login"].lower()

    def _branches(self, r: dict[str, Any]) -> list[str]:
        run = subprocess.run(["git", "--git-dir", r["path"], "for-each-ref", "--format=%(refname:short)",
                              "refs/heads"], capture_output=True, text=True, check=False)
        return run.stdout.split()

    async def _create_repo(self, request: web.Request, owner: dict[str, Any], org: bool) -> web.Response:
        body = request[BODY] or {}
        name = body.get("name")
        if not isinstance(name, str) or not name:
            return _err(422, "[Name]: Required")
        problem = self._name_problem(name, repo=True)
        if problem:
            return _err(422, problem)
        if self._repo(owner["login"], name):
            return _err(409, "The repository with the same name already exists.")
        branch = body.get("default_branch") or "main"
        path = self.bare_path(owner["login"], name)
        path.parent.mkdir(parents=True, exist_ok=True)
        subprocess.run(["git", "init", "--quiet", "--bare", f"--initial-branch={branch}", str(path)], check=True,
                       env={**os.environ, "GIT_CONFIG_GLOBAL": os.devnull, "GIT_CONFIG_NOSYSTEM": "1"})
        r = {"id": next(self._ids), "owner": owner["login"], "name": name, "private": bool(body.get("private")),
             "default_branch": branch, "description": body.get("description", ""), "created": _now(),
             "path": str(path)}
        self.repos[f"{owner['login']}/{name}".lower()] = r
        return web.json_response(self._repo_json(r), status=201)

    def _validate_key(self, body: Any) -> tuple[str, str, str] | web.Response:
        if not isinstance(body, dict) or not body.get("title") or not body.get("key"):
            return _err(422, "[Title]: Required" if not (body or {}).get("title") else "[Key]: Required")
        parsed = _parse_ssh_key(str(body["key"]))
        if parsed is None:
            return _err(422, "Invalid key content: no key found")
        return parsed

    # ------------------------------------------------------------------ handlers: misc

    async def _healthz(self, request: web.Request) -> web.Response:
        if not self.ready:
            return web.json_response({"status": "fail", "description": "Gitea: Git with a cup of tea"}, status=503)
        return web.json_response({"status": "pass", "description": "Gitea: Git with a cup of tea"})

    async def _version(self, request: web.Request) -> web.Response:
        return web.json_response({"version": VERSION if self.flavor == "gitea" else "16.0.1+gitea-1.22.0"})

    async def _api_not_found(self, request: web.Request) -> web.Response:
        return _err(404, "not found")

    async def _get_self(self, request: web.Request) -> web.Response:
        user = self._require(request, "user")
        if isinstance(user, web.Response):
            return user
        return web.json_response(self._user_json(user))

    async def _get_user(self, request: web.Request) -> web.Response:
        caller = self._require(request, "user")
        if isinstance(caller, web.Response):
            return caller
        name = request.match_info["username"].lower()
        # Gitea's /users/{username} finds organisations too (they are users of another type).
        if name in self.users:
            return web.json_response(self._user_json(self.users[name]))
        if name in self.orgs:
            o = self.orgs[name]
            return web.json_response({**self._user_json({**o, "email": "", "is_admin": False}), "login": o["login"]})
        return web.Response(status=404)

    # ------------------------------------------------------------------ handlers: tokens

    def _token_owner(self, request: web.Request) -> dict[str, Any] | web.Response:
        caller = self._require(request, "user", basic_only=True)
        if isinstance(caller, web.Response):
            return caller
        name = request.match_info["username"].lower()
        if name != caller["login"].lower() and not caller["is_admin"]:
            return _err(403, "user should be the site admin or the owner of the token")
        if name not in self.users:
            return web.Response(status=404)
        return self.users[name]

    async def _list_tokens(self, request: web.Request) -> web.Response:
        owner = self._token_owner(request)
        if isinstance(owner, web.Response):
            return owner
        return self._paginate(request, [self._token_json(t, with_value=False) for t in self.user_tokens(owner["login"])])

    async def _create_token(self, request: web.Request) -> web.Response:
        owner = self._token_owner(request)
        if isinstance(owner, web.Response):
            return owner
        body = request[BODY] or {}
        name = body.get("name")
        if not name:
            return _err(422, "[Name]: Required")
        if any(t["name"] == name for t in self.user_tokens(owner["login"])):
            return _err(400, "access token name has been used already")
        scopes = body.get("scopes") or []
        if not scopes:
            return _err(400, "access token must have a scope")
        known = {f"{lv}:{c}" for lv in (READ, WRITE) for c in
                 ("activitypub", "admin", "issue", "misc", "notification", "organization", "package", "repository",
                  "user")} | {"all", "public-only"}
        bad = [s for s in scopes if s not in known]
        if bad:
            return _err(400, f"invalid access token scope provided: {bad[0]}")
        tok = {"id": next(self._ids), "owner": owner["login"].lower(), "name": name, "scopes": list(scopes),
               "sha1": secrets.token_hex(20), "created": _now()}
        self.tokens.append(tok)
        return web.json_response(self._token_json(tok, with_value=True), status=201)

    async def _delete_token(self, request: web.Request) -> web.Response:
        owner = self._token_owner(request)
        if isinstance(owner, web.Response):
            return owner
        ident = request.match_info["token"]
        mine = self.user_tokens(owner["login"])
        found = [t for t in mine if str(t["id"]) == ident] or [t for t in mine if t["name"] == ident]
        if not found:
            return web.Response(status=404)
        if len(found) > 1:
            return _err(422, "multiple matches for token name, please specify the ID")
        self.tokens.remove(found[0])
        return web.Response(status=204)

    # ------------------------------------------------------------------ handlers: owners

    async def _admin_create_user(self, request: web.Request) -> web.Response:
        caller = self._require(request, "admin", WRITE, admin=True)
        if isinstance(caller, web.Response):
            return caller
        body = request[BODY] or {}
        name, email = body.get("username", ""), body.get("email", "")
        problem = self._name_problem(name, repo=False)
        if problem:
            return _err(422, problem)
        if name.lower() in self.users or name.lower() in self.orgs:
            return _err(422, f"user already exists [name: {name}]")
        if not re.fullmatch(r"[^@\s]+@[^@\s]+", email):
            return _err(422, f"e-mail invalid [email: {email}]")
        if any(u["email"].lower() == email.lower() for u in self.users.values()):
            return _err(422, f"e-mail already in use [email: {email}]")
        if len(body.get("password") or "") < 8:
            return _err(400, "PasswordIsRequired" if not body.get("password") else "PasswordTooShort")
        user = self._add_user(name, email, body["password"], visibility=body.get("visibility") or "public")
        return web.json_response(self._user_json(user), status=201)

    async def _get_org(self, request: web.Request) -> web.Response:
        caller = self._require(request, "organization")
        if isinstance(caller, web.Response):
            return caller
        org = self.orgs.get(request.match_info["org"].lower())
        if org is None:
            return web.Response(status=404)
        return web.json_response(self._org_json(org))

    async def _create_org(self, request: web.Request) -> web.Response:
        caller = self._require(request, "organization", WRITE)
        if isinstance(caller, web.Response):
            return caller
        body = request[BODY] or {}
        name = body.get("username", "")
        problem = self._name_problem(name, repo=False)
        if problem:
            return _err(422, problem)
        if name.lower() in self.users or name.lower() in self.orgs:
            return _err(422, f"user already exists [name: {name}]")
        org = {"id": next(self._ids), "login": name, "visibility": body.get("visibility") or "public",
               "created": _now(), "owners": [caller["login"].lower()]}
        self.orgs[name.lower()] = org
        return web.json_response(self._org_json(org), status=201)

    # ------------------------------------------------------------------ handlers: repositories

    async def _create_org_repo(self, request: web.Request) -> web.Response:
        caller = self._require(request, "organization", WRITE)
        if isinstance(caller, web.Response):
            return caller
        org = self.orgs.get(request.match_info["org"].lower())
        if org is None:
            return web.Response(status=404)
        if not caller["is_admin"] and caller["login"].lower() not in org["owners"]:
            return _err(403, "Given user is not allowed to create repository in organization.")
        return await self._create_repo(request, org, org=True)

    async def _admin_create_repo(self, request: web.Request) -> web.Response:
        caller = self._require(request, "admin", WRITE, admin=True)
        if isinstance(caller, web.Response):
            return caller
        name = request.match_info["username"].lower()
        owner = self.users.get(name) or self.orgs.get(name)
        if owner is None:
            return web.Response(status=404)
        return await self._create_repo(request, owner, org=name in self.orgs)

    def _visible_repo(self, request: web.Request) -> dict[str, Any] | web.Response:
        """The repository of the path, as Gitea shows it to the caller: a private one the caller
        may not administer is a 404, as if it did not exist."""
        caller = self._require(request, "repository")
        if isinstance(caller, web.Response):
            return caller
        r = self._repo(request.match_info["owner"], request.match_info["repo"])
        if r is None or (r["private"] and not self._may_admin_repo(caller, r)):
            return web.Response(status=404)
        return r

    async def _get_repo(self, request: web.Request) -> web.Response:
        r = self._visible_repo(request)
        if isinstance(r, web.Response):
            return r
        return web.json_response(self._repo_json(r))

    async def _get_branch(self, request: web.Request) -> web.Response:
        r = self._visible_repo(request)
        if isinstance(r, web.Response):
            return r
        branch = request.match_info["branch"]
        run = subprocess.run(
            ["git", "--git-dir", r["path"], "log", "-1", "--format=%H%x00%s%x00%an%x00%ae%x00%cI",
             f"refs/heads/{branch}", "--"], capture_output=True, text=True, check=False)
        if run.returncode != 0 or not run.stdout.strip():
            return _err(404, f"branch does not exist [name: {branch}]")
        sha, subject, name, email, date = run.stdout.strip().split("\x00")
        person = {"name": name, "email": email, "username": ""}
        return web.json_response({
            "name": branch, "protected": False, "user_can_push": True, "user_can_merge": True,
            "effective_branch_protection_name": "", "required_approvals": 0, "enable_status_check": False,
            "status_check_contexts": [],
            "commit": {"id": sha, "message": subject + "\n", "url": f"{self.url}/{r['owner']}/{r['name']}/commit/{sha}",
                       "author": person, "committer": person, "timestamp": date, "added": None, "removed": None,
                       "modified": None, "verification": None},
        })

    # ------------------------------------------------------------------ handlers: SSH keys

    async def _list_user_keys(self, request: web.Request) -> web.Response:
        caller = self._require(request, "user")
        if isinstance(caller, web.Response):
            return caller
        name = request.match_info["username"].lower()
        if name not in self.users:
            return web.Response(status=404)
        return self._paginate(request, [self._key_json(k) for k in self.user_keys(name)])

    async def _list_own_keys(self, request: web.Request) -> web.Response:
        caller = self._require(request, "user")
        if isinstance(caller, web.Response):
            return caller
        return self._paginate(request, [self._key_json(k) for k in self.user_keys(caller["login"])])

    def _add_key(self, user: dict[str, Any], body: Any) -> web.Response:
        parsed = self._validate_key(body)
        if isinstance(parsed, web.Response):
            return parsed
        typ, b64, fp = parsed
        material = f"{typ} {b64}"
        if any(k["material"] == material for k in self.keys + self.deploy_keys):
            return _err(422, "Key content has been used as non-deploy key")
        if any(k["title"] == body["title"] for k in self.user_keys(user["login"])):
            return _err(422, "Key title has been used")
        key = {"id": next(self._ids), "owner": user["login"].lower(), "title": body["title"],
               "key": f"{material} {body['title']}", "material": material, "fingerprint": fp, "created": _now()}
        self.keys.append(key)
        return web.json_response(self._key_json(key), status=201)

    async def _add_own_key(self, request: web.Request) -> web.Response:
        caller = self._require(request, "user", WRITE)
        if isinstance(caller, web.Response):
            return caller
        return self._add_key(caller, request[BODY])

    async def _admin_add_key(self, request: web.Request) -> web.Response:
        caller = self._require(request, "admin", WRITE, admin=True)
        if isinstance(caller, web.Response):
            return caller
        user = self.users.get(request.match_info["username"].lower())
        if user is None:
            return web.Response(status=404)
        return self._add_key(user, request[BODY])

    # ------------------------------------------------------------------ handlers: deploy keys

    def _deploy_repo(self, request: web.Request, level: str) -> dict[str, Any] | web.Response:
        caller = self._require(request, "repository", level)
        if isinstance(caller, web.Response):
            return caller
        r = self._repo(request.match_info["owner"], request.match_info["repo"])
        if r is None or not self._may_admin_repo(caller, r):
            return web.Response(status=404)
        return r

    async def _list_deploy_keys(self, request: web.Request) -> web.Response:
        r = self._deploy_repo(request, READ)
        if isinstance(r, web.Response):
            return r
        keys = self.repo_deploy_keys(r["owner"], r["name"])
        return self._paginate(request, [self._deploy_key_json(k) for k in keys])

    async def _add_deploy_key(self, request: web.Request) -> web.Response:
        r = self._deploy_repo(request, WRITE)
        if isinstance(r, web.Response):
            return r
        body = request[BODY]
        parsed = self._validate_key(body)
        if isinstance(parsed, web.Response):
            return parsed
        typ, b64, fp = parsed
        material = f"{typ} {b64}"
        if any(k["material"] == material for k in self.keys):
            return _err(422, "Key content has been used as non-deploy key")
        mine = self.repo_deploy_keys(r["owner"], r["name"])
        if any(k["material"] == material for k in mine):
            return _err(422, "This key has already been added to this repository")
        if any(k["title"] == body["title"] for k in mine):
            return _err(422, "A key with the same name already exists")
        other = [k for k in self.deploy_keys if k["material"] == material]
        key = {"id": next(self._ids), "key_id": other[0]["key_id"] if other else next(self._ids),
               "repo": f"{r['owner']}/{r['name']}".lower(), "title": body["title"],
               "key": f"{material} {body['title']}", "material": material, "fingerprint": fp,
               "read_only": body.get("read_only", False) is not False, "created": _now()}
        self.deploy_keys.append(key)
        return web.json_response(self._deploy_key_json(key), status=201)

    async def _delete_deploy_key(self, request: web.Request) -> web.Response:
        r = self._deploy_repo(request, WRITE)
        if isinstance(r, web.Response):
            return r
        ident = request.match_info["id"]
        for k in self.repo_deploy_keys(r["owner"], r["name"]):
            if str(k["id"]) == ident:
                self.deploy_keys.remove(k)
                return web.Response(status=204)
        return web.Response(status=404)

    # ------------------------------------------------------------------ git smart HTTP

    async def _git_http(self, request: web.Request) -> web.StreamResponse:
        owner, repo_part, tail = (request.match_info[k] for k in ("owner", "repo", "tail"))
        if owner == "api":
            return _err(404, "not found")
        r = self._repo(owner, repo_part.removesuffix(".git"))
        if r is None or tail not in ("info/refs", "git-upload-pack", "git-receive-pack"):
            return web.Response(status=404, text="Not found.\n")
        service = request.query.get("service", "") if tail == "info/refs" else tail
        write = service == "git-receive-pack"
        user, tok, bad = self._authenticate(request)
        self.git_requests.append({"method": request.method, "path": request.path, "query": request.query_string,
                                  "auth": self._auth_kind(request), "service": service})
        if bad or (user is None and (write or r["private"])):
            return web.Response(status=401, text="Unauthorized\n",
                                headers={"WWW-Authenticate": 'Basic realm="Gitea"'})
        if user is not None:
            if not self._may_admin_repo(user, r):
                return web.Response(status=403, text="User permission denied\n")
            if tok is not None and (write and "write:repository" not in tok["scopes"]):
                return web.Response(status=403, text="token does not have the write:repository scope\n")
        body = await request.read()
        env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(self.root),
            "GIT_CONFIG_NOSYSTEM": "1", "GIT_CONFIG_GLOBAL": os.devnull,
            "GIT_PROJECT_ROOT": str(self.root), "GIT_HTTP_EXPORT_ALL": "1",
            "PATH_INFO": f"/{r['owner'].lower()}/{r['name'].lower()}.git/{tail}",
            "REQUEST_METHOD": request.method, "QUERY_STRING": request.query_string,
            "CONTENT_TYPE": request.headers.get("Content-Type", ""), "CONTENT_LENGTH": str(len(body)),
            "REMOTE_ADDR": "127.0.0.1",
        }
        if user is not None:
            env["REMOTE_USER"] = user["login"]
        if "Content-Encoding" in request.headers:
            env["HTTP_CONTENT_ENCODING"] = request.headers["Content-Encoding"]
        if "Git-Protocol" in request.headers:
            env["GIT_PROTOCOL"] = request.headers["Git-Protocol"]
        proc = await asyncio.create_subprocess_exec(
            "git", "http-backend", env=env,
            stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        )
        out, _err_out = await proc.communicate(body)
        sep = out.find(b"\r\n\r\n")
        head, payload = (out[:sep], out[sep + 4:]) if sep >= 0 else out.split(b"\n\n", 1) if b"\n\n" in out else (out, b"")
        status, headers = 200, {}
        for line in head.decode(errors="replace").splitlines():
            name, _, value = line.partition(":")
            if name.lower() == "status":
                status = int(value.strip().split()[0])
            elif name:
                headers[name.strip()] = value.strip()
        with contextlib.suppress(KeyError):
            del headers["Content-Length"]
        return web.Response(status=status, body=payload, headers=headers)
