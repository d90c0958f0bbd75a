"""seedbed.gitea against the fake Gitea: real HTTP on loopback, requests checked against the real specs."""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator

import pytest

from gitea_helpers import ADMIN, PASSWORD, ssh_public_key
from seedbed.errors import ConfigError, GitServerError, SeedbedError
from seedbed.gitea import TOKEN_NAME, TOKEN_SCOPES, GiteaClient, key_material
from seedbed_lab.fake_gitea import FakeGitea
from seedbed_lab.openapi_check import Spec


@pytest.fixture
async def client(fake: FakeGitea) -> AsyncIterator[GiteaClient]:
    async with GiteaClient(fake.url, username=ADMIN, password=PASSWORD) as c:
        yield c


async def bootstrap(fake: FakeGitea, *, owner: str, kind: str, operator_keys: list[str], deploy_key: str,
                    rotate: bool = False, read_only: bool = True) -> dict:
    """The gitea part of the bootstrap step, in the issue's order, with a fresh client like a new run."""
    async with GiteaClient(fake.url, username=ADMIN, password=PASSWORD) as c:
        version = await c.wait_ready(5)
        token = await c.ensure_token()
        created_owner = await c.ensure_owner(owner, kind)  # type: ignore[arg-type]
        repo = await c.ensure_repo(owner, "gitops", kind=kind, default_branch="main")  # type: ignore[arg-type]
        added = await c.ensure_user_keys(owner, operator_keys, kind=kind)  # type: ignore[arg-type]
        deploy = await c.ensure_deploy_key(owner, "gitops", deploy_key, read_only=read_only, rotate=rotate)
        return {"version": version, "token": token, "owner": created_owner, "repo": repo, "added": added,
                "deploy": deploy}


def writes(fake: FakeGitea, since: int = 0) -> list[tuple[str, str]]:
    return [(r["method"], r["path"]) for r in fake.requests[since:] if r["method"] != "GET"]


@pytest.mark.parametrize("kind", ["org", "user"])
async def test_full_sequence_then_rerun_changes_nothing(fake: FakeGitea, kind: str) -> None:
    op_keys = [ssh_public_key("alice@laptop"), ssh_public_key("alice@desktop")]
    flux = ssh_public_key("flux")
    first = await bootstrap(fake, owner="homelab", kind=kind, operator_keys=op_keys, deploy_key=flux)

    assert first["version"] == "1.27.0"
    assert first["owner"] is True
    assert first["repo"]["full_name"] == "homelab/gitops" and first["repo"]["private"] is True
    assert first["repo"]["empty"] is True  # no auto_init: the first push must be a fast-forward
    assert len(first["added"]) == 2
    assert first["deploy"].state == "created" and first["deploy"].changed
    assert ("homelab" in fake.orgs) == (kind == "org")
    assert ("homelab" in fake.users) == (kind == "user")
    tokens = fake.user_tokens(ADMIN)
    assert [t["name"] for t in tokens] == [TOKEN_NAME]
    assert tokens[0]["scopes"] == list(TOKEN_SCOPES)
    # Orgs have no SSH keys in Gitea: the operator's keys go to the admin, who owns the org.
    key_holder = ADMIN if kind == "org" else "homelab"
    assert sorted(k["material"] for k in fake.user_keys(key_holder)) == sorted(key_material(k) for k in op_keys)
    [dk] = fake.repo_deploy_keys("homelab", "gitops")
    assert dk["title"] == "flux" and dk["read_only"] is True and dk["material"] == key_material(flux)
    assert fake.bare_path("homelab", "gitops").joinpath("HEAD").read_text().strip() == "ref: refs/heads/main"

    mark = len(fake.requests)
    second = await bootstrap(fake, owner="homelab", kind=kind, operator_keys=op_keys, deploy_key=flux)
    assert second["owner"] is False and second["added"] == []
    assert second["deploy"].state == "exists" and not second["deploy"].changed
    assert second["token"] != first["token"]
    # The only writes of a re-run: the previous run's token is replaced by this run's (count stays 1).
    assert writes(fake, mark) == [("DELETE", f"/api/v1/users/{ADMIN}/tokens/{tokens[0]['id']}"),
                                  ("POST", f"/api/v1/users/{ADMIN}/tokens")]
    assert len(fake.user_tokens(ADMIN)) == 1
    assert len(fake.user_keys(key_holder)) == 2
    assert len(fake.repo_deploy_keys("homelab", "gitops")) == 1
    assert fake.all_violations() == []


async def test_requests_match_real_gitea_and_forgejo_specs(upstream) -> None:
    specs = {"gitea": upstream("gitea-swagger-v1.resolved.json"), "forgejo": upstream("forgejo-swagger-v1.json")}
    with FakeGitea(admin_user=ADMIN, admin_password=PASSWORD, specs=specs) as server:
        for kind, owner in (("org", "homelab"), ("user", "alice")):
            await bootstrap(server, owner=owner, kind=kind, operator_keys=[ssh_public_key()],
                            deploy_key=ssh_public_key("flux"))
        await bootstrap(server, owner="alice", kind="user", operator_keys=[], deploy_key=ssh_public_key("flux"),
                        rotate=True)
        async with GiteaClient(server.url, username=ADMIN, password=PASSWORD) as c:
            await c.ensure_token()
            assert await c.get_branch_commit("alice", "gitops", "main") is None
            assert await c.repo_exists("alice", "gitops")
        assert set(server.violations) == {"gitea", "forgejo"}
        api_paths = {(r["method"], r["path"]) for r in server.requests}
        assert len(api_paths) > 10
        assert server.all_violations() == []


async def test_rotate_keys_replaces_the_deploy_key(fake: FakeGitea) -> None:
    old, new = ssh_public_key("flux"), ssh_public_key("flux")
    await bootstrap(fake, owner="homelab", kind="org", operator_keys=[], deploy_key=old)
    async with GiteaClient(fake.url, username=ADMIN, password=PASSWORD) as c:
        await c.ensure_token()
        mismatch = await c.ensure_deploy_key("homelab", "gitops", new)
        assert mismatch.state == "mismatch" and not mismatch.changed
        assert mismatch.registered_key == key_material(old)
        assert [k["material"] for k in fake.repo_deploy_keys("homelab", "gitops")] == [key_material(old)]

        replaced = await c.ensure_deploy_key("homelab", "gitops", new, rotate=True)
        assert replaced.state == "replaced"
        assert [k["material"] for k in fake.repo_deploy_keys("homelab", "gitops")] == [key_material(new)]
        again = await c.ensure_deploy_key("homelab", "gitops", new, rotate=True)
        assert again.state == "exists"


async def test_read_write_deploy_key_is_re_registered_not_rotated(fake: FakeGitea) -> None:
    key = ssh_public_key("flux")
    await bootstrap(fake, owner="homelab", kind="org", operator_keys=[], deploy_key=key)
    result = (await bootstrap(fake, owner="homelab", kind="org", operator_keys=[], deploy_key=key,
                              read_only=False))["deploy"]
    assert result.state == "updated"
    [dk] = fake.repo_deploy_keys("homelab", "gitops")
    assert dk["read_only"] is False and dk["material"] == key_material(key)


async def test_operator_keys_compared_by_material_not_title(fake: FakeGitea, client: GiteaClient) -> None:
    key = ssh_public_key("alice@laptop")
    await client.ensure_token()
    await client.ensure_owner("alice", "user")
    assert len(await client.ensure_user_keys("alice", [key])) == 1
    renamed = key.rsplit(" ", 1)[0] + " another-comment"
    assert await client.ensure_user_keys("alice", [renamed, key]) == []
    assert len(fake.user_keys("alice")) == 1


async def test_keys_listed_across_pages(fake: FakeGitea, client: GiteaClient) -> None:
    await client.ensure_token()
    many = [ssh_public_key(f"k{i}") for i in range(60)]
    assert len(await client.ensure_user_keys(ADMIN, many, kind="org")) == 60
    assert await client.ensure_user_keys(ADMIN, many[::-1], kind="org") == []  # the last ones are on page 2
    assert len(fake.user_keys(ADMIN)) == 60


async def test_key_of_another_account_is_a_clear_error(fake: FakeGitea, client: GiteaClient) -> None:
    key = ssh_public_key()
    await client.ensure_token()
    await client.ensure_owner("alice", "user")
    await client.ensure_owner("bob", "user")
    await client.ensure_user_keys("alice", [key])
    with pytest.raises(GitServerError) as e:
        await client.ensure_user_keys("bob", [key])
    assert "refused the SSH key SHA256:" in e.value.message and "'bob'" in e.value.message
    assert "only one account" in (e.value.fix or "")


def test_not_a_public_key_is_a_config_error() -> None:
    with pytest.raises(ConfigError) as e:
        key_material("-----BEGIN OPENSSH " "PRIVATE KEY-----\nb3BlbnNzaC1rZXktdjEAAAA\n")
    assert "not an OpenSSH public key" in e.value.message and ".pub" in (e.value.fix or "")


@pytest.mark.parametrize("name, said", [
    ("gitops.git", "name is pattern not allowed [pattern: *.git]"),
    ("-", "name is reserved [name: -]"),
])
async def test_repo_name_gitea_rejects(fake: FakeGitea, client: GiteaClient, name: str, said: str) -> None:
    await client.ensure_token()
    await client.ensure_owner("homelab", "org")
    with pytest.raises(ConfigError) as e:
        await client.ensure_repo("homelab", name, kind="org")
    assert e.value.message == f"Gitea rejected the repository name {name!r}: {said}"
    assert "repo.name" in (e.value.fix or "")
    assert fake.repos == {}


async def test_owner_name_gitea_rejects(client: GiteaClient) -> None:
    await client.ensure_token()
    with pytest.raises(ConfigError) as e:
        await client.ensure_owner("admin", "org")
    assert "Gitea rejected the owner name 'admin': name is reserved" in e.value.message
    assert "repo.owner" in (e.value.fix or "")


async def test_owner_of_the_other_kind(client: GiteaClient) -> None:
    await client.ensure_token()
    await client.ensure_owner("alice", "user")
    with pytest.raises(ConfigError, match="'alice' is a user on Gitea, not an organisation") as e:
        await client.ensure_owner("alice", "org")
    assert "ownerType: user" in (e.value.fix or "")
    await client.ensure_owner("team", "org")
    with pytest.raises(ConfigError, match="is an organisation on Gitea, not a user"):
        await client.ensure_owner("team", "user")
    assert await client.ensure_owner(ADMIN, "user") is False  # the admin may own the repository itself


async def test_repo_created_concurrently_is_reused(fake: FakeGitea, client: GiteaClient) -> None:
    await client.ensure_token()
    await client.ensure_owner("homelab", "org")
    first = await client.ensure_repo("homelab", "gitops", kind="org")
    second = await client.ensure_repo("homelab", "GitOps", kind="org")  # Gitea names are case-insensitive
    assert first["id"] == second["id"] and len(fake.repos) == 1


async def test_never_ready_is_a_clear_timeout(fake: FakeGitea) -> None:
    fake.ready = False
    async with GiteaClient(fake.url, username=ADMIN, password=PASSWORD) as c:
        with pytest.raises(GitServerError) as e:
            await c.wait_ready(0.6, interval=0.1)
    assert e.value.message == (f"Gitea at {fake.url} did not become ready within 0.6 s: "
                               "GET /api/healthz answered 503")
    assert "kubectl -n gitea logs deploy/gitea" in (e.value.fix or "")


async def test_becomes_ready_later(fake: FakeGitea) -> None:
    import asyncio

    fake.ready = False
    async with GiteaClient(fake.url, username=ADMIN, password=PASSWORD) as c:
        asyncio.get_running_loop().call_later(0.3, setattr, fake, "ready", True)
        assert await c.wait_ready(5, interval=0.1) == "1.27.0"


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def test_unreachable_server() -> None:
    url = f"http://127.0.0.1:{_closed_port()}"
    async with GiteaClient(url, username=ADMIN, password=PASSWORD, name="Forgejo") as c:
        with pytest.raises(GitServerError, match=r"did not become ready within 0.3 s: ConnectError"):
            await c.wait_ready(0.3, interval=0.1)
        with pytest.raises(GitServerError) as e:
            await c.ensure_token()
    assert e.value.message.startswith(f"cannot reach Forgejo at {url}")
    assert "port-forward" in (e.value.fix or "")


async def test_wrong_password_never_shows_the_secret(fake: FakeGitea) -> None:
    wrong = "wrong-password-77"
    async with GiteaClient(fake.url, username=ADMIN, password=wrong) as c:
        with pytest.raises(GitServerError) as e:
            await c.ensure_token()
        assert wrong not in repr(c)
    assert "refused the credentials of 'seedbed-admin'" in e.value.message
    assert "adminSecret" in (e.value.fix or "")
    assert wrong not in e.value.message + (e.value.fix or "")


async def test_secrets_never_in_urls_or_messages(fake: FakeGitea) -> None:
    result = await bootstrap(fake, owner="homelab", kind="org", operator_keys=[ssh_public_key()],
                             deploy_key=ssh_public_key("flux"))
    token = result["token"]
    for r in fake.requests:
        assert token not in r["path"] + r["query"] and PASSWORD not in r["path"] + r["query"]
        assert PASSWORD not in str(r["body"])
    # Token endpoints used basic auth; everything else the token.
    auth = {(r["path"].endswith("/tokens") or "/tokens/" in r["path"], r["auth"]) for r in fake.requests
            if r["path"].startswith("/api/v1/") and r["path"] != "/api/v1/version"}
    assert auth == {(True, "basic"), (False, "token")}


async def test_forbidden_is_explained(fake: FakeGitea) -> None:
    fake._add_user("bob", "bob@example.org", "bob-password-1", is_admin=False)
    async with GiteaClient(fake.url, username="bob", password="bob-password-1") as c:
        await c.ensure_token()
        with pytest.raises(GitServerError) as e:
            await c.ensure_owner("carol", "user")
    assert "forbade POST /api/v1/admin/users for 'bob' (403)" in e.value.message
    assert "site administrator" in (e.value.fix or "")


def test_every_error_is_a_seedbed_error() -> None:
    assert issubclass(GitServerError, SeedbedError) and issubclass(ConfigError, SeedbedError)


# --------------------------------------------------------------------------- openapi_check itself


def test_openapi_check_finds_problems(upstream) -> None:
    spec = Spec(upstream("gitea-swagger-v1.resolved.json"))
    assert spec.base_path == "/api/v1"
    assert spec.check("POST", "/api/v1/orgs/x/repos", {"name": "r", "private": True}) == []
    assert spec.check("GET", "/api/v1/user/keys") == []
    assert spec.route("/api/v1/user/keys")[0] == "/user/keys"  # type: ignore[index]
    problems = spec.check("POST", "/api/v1/orgs/x/repos", {"private": "yes", "nmae": "r"})
    assert any("required field 'name' missing" in p for p in problems)
    assert any("body.private: expected boolean, got str" in p for p in problems)
    assert any("field 'nmae' is not in the schema" in p for p in problems)
    assert spec.check("POST", "/api/v1/users/a/tokens", {"name": "t", "scopes": [1]}) == [
        "POST /api/v1/users/a/tokens: body.scopes[0]: expected string, got int"]
    assert "no such path" in spec.check("GET", "/api/v1/nowhere/at/all")[0]
    assert "has no PUT" in spec.check("PUT", "/api/v1/user/keys", {})[0]
    assert "not an integer" in spec.check("DELETE", "/api/v1/repos/a/b/keys/abc")[0]
    assert "query parameter 'pgae'" in spec.check("GET", "/api/v1/user/keys", query={"pgae": "1"})[0]
    assert spec.check("POST", "/api/v1/orgs", {"username": "o", "visibility": "secret"})[0].endswith(
        "'secret' is not one of ['public', 'limited', 'private']")


@pytest.mark.parametrize(("body", "ctype"), [
    ("<html><body>502 Bad Gateway</body></html>", "text/html"),  # a proxy in front of the port-forward
    ("[1, 2, 3]", "application/json"),
    ('{"sha1": 42}', "application/json"),
])
async def test_an_answer_that_is_not_what_gitea_sends_is_one_clear_error(body: str, ctype: str) -> None:
    """A server's answer is input: HTML, a list of numbers or an object where a list belongs is one
    GitServerError naming the request and the fix, never a traceback."""
    from aiohttp import web

    async def handler(request: web.Request) -> web.Response:
        return web.Response(text=body, status=201 if request.method == "POST" else 200, content_type=ctype)

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", handler)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        async with GiteaClient(f"http://127.0.0.1:{port}", username=ADMIN, password=PASSWORD) as c:
            with pytest.raises(GitServerError) as e:
                await c.ensure_token()
        assert f"GET /api/v1/users/{ADMIN}/tokens" in e.value.message and "not a JSON list" in e.value.message
        assert e.value.fix
    finally:
        await runner.cleanup()
