"""seedbed.git: the real git CLI pushing to real bare repositories behind the fake Gitea's smart HTTP."""

from __future__ import annotations

import asyncio
import os
import tempfile
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

import seedbed.git as sgit
from gitea_helpers import ADMIN, PASSWORD, basic_header, commit, git, make_worktree
from seedbed.errors import ConfigError, GitError
from seedbed.gitea import GiteaClient
from seedbed_lab.fake_gitea import FakeGitea


@pytest.fixture
async def token(fake: FakeGitea) -> AsyncIterator[str]:
    """A real token from the fake, and an empty private org repository homelab/gitops."""
    async with GiteaClient(fake.url, username=ADMIN, password=PASSWORD) as c:
        value = await c.ensure_token()
        await c.ensure_owner("homelab", "org")
        await c.ensure_repo("homelab", "gitops", kind="org", default_branch="main")
        yield value


@pytest.fixture
def url(fake: FakeGitea) -> str:
    return fake.repo_url("homelab", "gitops")


def plain_clone(url: str, dest: Path) -> Path:
    """What a person would do: git clone with their own credentials (the repository is private)."""
    git("-c", f"http.extraHeader={basic_header(ADMIN, PASSWORD)}", "clone", "-q", url, str(dest))
    return dest


async def test_push_then_plain_clone_has_the_commits(fake: FakeGitea, token: str, url: str, tmp_path: Path) -> None:
    work = make_worktree(tmp_path / "gitops", files={"clusters/homelab/app.yaml": "kind: Namespace\n"})
    head = commit(work, "clusters/homelab/two.yaml", "x: 1\n", "second")
    result = await sgit.push(work, url, "main", token=token, username=ADMIN)
    assert result.status == "new" and result.old is None and result.new == head and result.changed
    assert not result.dirty

    clone = plain_clone(url, tmp_path / "clone")
    assert git("rev-parse", "HEAD", cwd=clone).stdout.strip() == head
    assert git("log", "--format=%s", cwd=clone).stdout.split("\n")[:2] == ["second", "initial"]
    assert (clone / "clusters/homelab/app.yaml").read_text() == "kind: Namespace\n"
    assert fake.branch_commit("homelab", "gitops", "main") == head

    async with GiteaClient(fake.url, username=ADMIN, password=PASSWORD) as c:  # basic auth: keep the token
        assert await c.get_branch_commit("homelab", "gitops", "main") == head

    again = await sgit.push(work, url, "main", token=token, username=ADMIN)
    assert again.status == "up-to-date" and not again.changed and again.old == head

    newer = commit(work, "clusters/homelab/three.yaml", "y: 2\n")
    (work / "untracked.txt").write_text("not committed")
    third = await sgit.push(work, url, "main", token=token, username=ADMIN)
    assert (third.status, third.old, third.new, third.dirty) == ("updated", head, newer, True)
    assert await sgit.remote_head(url, "main", username=ADMIN, token=token) == newer


async def test_token_never_in_config_url_or_argv(
    fake: FakeGitea, token: str, url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    calls: list[tuple[tuple[str, ...], dict[str, str]]] = []
    real_exec = asyncio.create_subprocess_exec

    async def spy(*args: Any, **kw: Any) -> Any:
        if "http-backend" in args:  # the fake server's own git, in its thread
            return await real_exec(*args, **kw)
        calls.append((tuple(map(str, args)), dict(kw["env"])))
        return await real_exec(*args, **kw)

    monkeypatch.setattr(sgit.asyncio, "create_subprocess_exec", spy)
    monkeypatch.setenv("GIT_ASKPASS", "/bin/echo")  # would answer a prompt with garbage: must be dropped
    monkeypatch.setenv("GIT_TRACE_CURL", "1")  # would trace the request headers: must be dropped
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))

    work = make_worktree(tmp_path / "gitops")
    config_before = (work / ".git" / "config").read_text()
    await sgit.push(work, url, "main", token=token, username=ADMIN)
    await sgit.commit_files(url, "main", {"a.txt": "a\n"}, "add a", username=ADMIN, token=token)
    await sgit.bundle_create(url, tmp_path / "b.bundle", username=ADMIN, token=token)
    await sgit.clone(url, tmp_path / "c", username=ADMIN, token=token)

    header = basic_header(ADMIN, token).removeprefix("Authorization: Basic ")
    assert calls
    for argv, env in calls:
        assert not any(token in a or header in a for a in argv), argv
        assert "-c" not in argv
        assert "GIT_ASKPASS" not in env and "GIT_TRACE_CURL" not in env
        assert env["GIT_TERMINAL_PROMPT"] == "0"
    authed = [env for argv, env in calls if any(a in ("push", "fetch", "ls-remote", "clone") for a in argv)]
    assert authed and all(header in "".join(env.values()) for env in authed)

    assert (work / ".git" / "config").read_text() == config_before
    clone_config = (tmp_path / "c" / ".git" / "config").read_text()
    assert token not in clone_config and header not in clone_config and url in clone_config
    assert list(scratch.iterdir()) == []  # temporary repositories are gone
    for r in fake.git_requests:
        assert token not in r["path"] + r["query"]


async def test_push_only_works_with_the_header(fake: FakeGitea, token: str, url: str, tmp_path: Path) -> None:
    work = make_worktree(tmp_path / "gitops")
    # The same push without seedbed's environment header: git cannot authenticate, and cannot prompt.
    plain = git("push", url, "main:main", cwd=work, check=False)
    assert plain.returncode != 0 and fake.branch_commit("homelab", "gitops", "main") is None
    with pytest.raises(GitError) as e:
        await sgit.push(work, url, "main", token="not-the-token", username=ADMIN)
    assert "refused the credentials" in e.value.message and "not-the-token" not in e.value.message
    assert "write:repository" in (e.value.fix or "")
    await sgit.push(work, url, "main", token=token, username=ADMIN)
    assert fake.branch_commit("homelab", "gitops", "main") is not None


async def test_non_fast_forward_is_refused_unless_forced(
    fake: FakeGitea, token: str, url: str, tmp_path: Path,
) -> None:
    work = make_worktree(tmp_path / "gitops")
    await sgit.push(work, url, "main", token=token, username=ADMIN)
    theirs = await sgit.commit_files(url, "main", {"from-elsewhere.txt": "x\n"}, "elsewhere",
                                     username=ADMIN, token=token)
    mine = commit(work, "local.txt", "mine\n")
    with pytest.raises(GitError) as e:
        await sgit.push(work, url, "main", token=token, username=ADMIN)
    assert e.value.message == "push rejected: the server's main has commits your work tree does not have"
    assert e.value.fix == "pull/rebase first, or set repo.forcePush / --force-push if you mean to overwrite them"
    assert fake.branch_commit("homelab", "gitops", "main") == theirs

    # The work tree knows the server's commit but has rewritten history: still refused ("non-fast-forward").
    git("fetch", "-q", url, "main", cwd=work, env={"GIT_CONFIG_COUNT": "1", "GIT_CONFIG_KEY_0": "http.extraHeader",
                                                  "GIT_CONFIG_VALUE_0": basic_header(ADMIN, token)})
    with pytest.raises(GitError, match="has commits your work tree does not have"):
        await sgit.push(work, url, "main", token=token, username=ADMIN)

    forced = await sgit.push(work, url, "main", token=token, username=ADMIN, force=True)
    assert (forced.status, forced.old, forced.new) == ("forced", theirs, mine)
    assert fake.branch_commit("homelab", "gitops", "main") == mine


async def test_pre_receive_rejection(fake: FakeGitea, token: str, url: str, tmp_path: Path) -> None:
    work = make_worktree(tmp_path / "gitops")
    fake.reject_pushes("homelab", "gitops", "branch main is protected")
    with pytest.raises(GitError) as e:
        await sgit.push(work, url, "main", token=token, username=ADMIN)
    assert e.value.message == ("push rejected by the Git server (pre-receive hook declined); "
                               "the server said: Gitea: branch main is protected")
    assert "hooks or branch protection" in (e.value.fix or "")
    assert fake.branch_commit("homelab", "gitops", "main") is None


async def test_work_tree_problems_are_config_errors(token: str, url: str, tmp_path: Path) -> None:
    async def push(path: Path, branch: str = "main") -> ConfigError:
        with pytest.raises(ConfigError) as e:
            await sgit.push(path, url, branch, token=token, username=ADMIN)
        return e.value

    err = await push(tmp_path / "missing")
    assert "is not a folder" in err.message and "git -C" in (err.fix or "")
    (tmp_path / "plain").mkdir()
    err = await push(tmp_path / "plain")
    assert err.message == f"repo.path {tmp_path / 'plain'} is not a git work tree"
    assert "init -b main" in (err.fix or "") and "commit" in (err.fix or "")
    empty = tmp_path / "empty"
    empty.mkdir()
    git("init", "-q", cwd=empty)
    assert "has no commits" in (await push(empty)).message
    work = make_worktree(tmp_path / "gitops", branch="trunk")
    err = await push(work, "main")
    assert "has no branch 'main'" in err.message and "repo.branch" in (err.fix or "")
    (work / "sub").mkdir()
    err = await push(work / "sub", "trunk")
    assert "is inside the git work tree" in err.message


async def test_other_branch_name(fake: FakeGitea, token: str, url: str, tmp_path: Path) -> None:
    work = make_worktree(tmp_path / "gitops", branch="production")
    result = await sgit.push(work, url, "production", token=token, username=ADMIN)
    assert result.status == "new"
    assert fake.branch_commit("homelab", "gitops", "production") == result.new
    assert await sgit.remote_head(url, "main", username=ADMIN, token=token) is None


async def test_commit_files_is_idempotent(fake: FakeGitea, token: str, url: str, tmp_path: Path) -> None:
    files = {"clusters/homelab/flux-system/gotk-sync.yaml": "kind: GitRepository\n",
             "clusters/homelab/flux-system/kustomization.yaml": "resources: []\n"}
    first = await sgit.commit_files(url, "main", files, "Add Flux sync manifests", username=ADMIN, token=token)
    assert fake.branch_commit("homelab", "gitops", "main") == first
    again = await sgit.commit_files(url, "main", files, "Add Flux sync manifests", username=ADMIN, token=token)
    assert again == first

    work = make_worktree(tmp_path / "gitops")
    with pytest.raises(GitError):  # the empty-repo commit is on the server, the work tree does not have it
        await sgit.push(work, url, "main", token=token, username=ADMIN)
    changed = await sgit.commit_files(url, "main", {**files, "clusters/homelab/flux-system/kustomization.yaml":
                                                    "resources: [gotk-sync.yaml]\n"}, "Update", username=ADMIN,
                                      token=token, author=("Flux Bootstrap", "flux@example.org"))
    assert changed != first
    clone = plain_clone(url, tmp_path / "clone")
    log = git("log", "--format=%an <%ae>|%s|%P", cwd=clone).stdout.strip().splitlines()
    assert log == [f"Flux Bootstrap <flux@example.org>|Update|{first}", "seedbed <seedbed@noreply.localhost>|"
                   "Add Flux sync manifests|"]
    assert (clone / "clusters/homelab/flux-system/gotk-sync.yaml").read_text() == "kind: GitRepository\n"
    # One commit for several files, and other files are kept.
    assert git("show", "--name-only", "--format=", first, cwd=clone).stdout.split() == sorted(files)

    with pytest.raises(ValueError):
        await sgit.commit_files(url, "main", {"../escape": "x"}, "bad", username=ADMIN, token=token)


async def test_commit_files_keeps_the_users_files(fake: FakeGitea, token: str, url: str, tmp_path: Path) -> None:
    work = make_worktree(tmp_path / "gitops", files={"apps/app.yaml": "a: 1\n"})
    pushed = await sgit.push(work, url, "main", token=token, username=ADMIN)
    new = await sgit.commit_files(url, "main", {"clusters/x.yaml": "b: 2\n"}, "flux", username=ADMIN, token=token)
    clone = plain_clone(url, tmp_path / "clone")
    assert (clone / "apps/app.yaml").read_text() == "a: 1\n" and (clone / "clusters/x.yaml").exists()
    assert git("rev-parse", "HEAD^", cwd=clone).stdout.strip() == pushed.new
    assert git("rev-parse", "HEAD", cwd=clone).stdout.strip() == new


async def test_bundle(token: str, url: str, tmp_path: Path) -> None:
    dest = tmp_path / "repo.bundle"
    assert await sgit.bundle_create(url, dest, username=ADMIN, token=token) is False
    assert not dest.exists()
    work = make_worktree(tmp_path / "gitops")
    head = commit(work, "b.txt", "b\n")
    await sgit.push(work, url, "main", token=token, username=ADMIN)
    assert await sgit.bundle_create(url, dest, username=ADMIN, token=token) is True
    heads = git("bundle", "list-heads", str(dest), cwd=tmp_path).stdout.splitlines()
    assert sorted(heads) == [f"{head} HEAD", f"{head} refs/heads/main"]
    restored = tmp_path / "restored"
    git("clone", "-q", "--branch", "main", str(dest), str(restored))
    assert git("rev-parse", "HEAD", cwd=restored).stdout.strip() == head
    assert not dest.with_name("repo.bundle.partial").exists()


async def test_clone_helper(token: str, url: str, tmp_path: Path) -> None:
    work = make_worktree(tmp_path / "gitops")
    await sgit.push(work, url, "main", token=token, username=ADMIN)
    dest = await sgit.clone(url, tmp_path / "c", username=ADMIN, token=token, branch="main")
    assert (dest / "clusters/homelab/README.md").read_text() == "hello\n"


async def test_missing_repository_and_unreachable_server(fake: FakeGitea, token: str, tmp_path: Path) -> None:
    with pytest.raises(GitError) as e:
        await sgit.remote_head(fake.repo_url("homelab", "nope"), "main", username=ADMIN, token=token)
    assert "git ls-remote" in e.value.message
    with pytest.raises(GitError, match="cannot connect"):
        await sgit.remote_head("http://127.0.0.1:9/x/y.git", "main", username=ADMIN, token=token)


async def test_urls_with_credentials_are_refused(token: str) -> None:
    with pytest.raises(ValueError, match="must not carry credentials"):
        await sgit.remote_head("http://admin:pw@127.0.0.1:1/a/b.git", "main", username=ADMIN, token=token)


def test_env_is_scoped_and_hermetic(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GIT_CONFIG_PARAMETERS", "'http.extraheader'='X: y'")
    monkeypatch.setenv("GIT_DIR", "/somewhere/.git")
    env = sgit._env(sgit._Auth("http://127.0.0.1:1/a/b.git", "u", "t"), hermetic=True)
    pairs = {env[f"GIT_CONFIG_KEY_{i}"]: env[f"GIT_CONFIG_VALUE_{i}"] for i in range(int(env["GIT_CONFIG_COUNT"]))}
    assert pairs["http.http://127.0.0.1:1/a/b.git.extraHeader"].startswith("Authorization: Basic ")
    assert pairs["credential.helper"] == "" and pairs["core.askPass"] == ""
    assert "GIT_CONFIG_PARAMETERS" not in env and "GIT_DIR" not in env
    assert env["GIT_CONFIG_GLOBAL"] == os.devnull and "127.0.0.1" in env["no_proxy"]


async def test_contains_after_seedbed_committed_on_top(fake: FakeGitea, token: str, url: str, tmp_path: Path) -> None:
    work = make_worktree(tmp_path / "gitops")
    assert await sgit.contains(work, url, "main", username=ADMIN, token=token) is False  # nothing on the server
    await sgit.push(work, url, "main", token=token, username=ADMIN)
    assert await sgit.contains(work, url, "main", username=ADMIN, token=token) is True  # same commit
    await sgit.commit_files(url, "main", {"flux.yaml": "f\n"}, "flux", username=ADMIN, token=token)
    objects_before = sorted(p.name for p in (work / ".git" / "objects").iterdir())
    assert await sgit.contains(work, url, "main", username=ADMIN, token=token) is True  # server is ahead
    assert sorted(p.name for p in (work / ".git" / "objects").iterdir()) == objects_before  # nothing fetched here
    commit(work, "more.txt", "m\n")
    assert await sgit.contains(work, url, "main", username=ADMIN, token=token) is False  # the server lacks it


async def test_push_bundle_restores_missing_and_behind_branches(
    fake: FakeGitea, token: str, url: str, tmp_path: Path,
) -> None:
    work = make_worktree(tmp_path / "gitops")
    git("branch", "staging", cwd=work)
    git("tag", "v1", cwd=work)
    git("push", "-q", str(fake.bare_path("homelab", "gitops")), "main", "staging", "v1", cwd=work)
    bundle_path = tmp_path / "backup.bundle"
    assert await sgit.bundle_create(url, bundle_path, username=ADMIN, token=token)
    data = bundle_path.read_bytes()

    # Nothing to do when the server has it all.
    assert await sgit.push_bundle(data, url, username=ADMIN, token=token) == 0

    # A fresh, empty server repository (a rebuilt cluster): everything goes back.
    async with GiteaClient(fake.url, username=ADMIN, password=PASSWORD) as c:
        await c.ensure_repo("homelab", "fresh", kind="org")
    fresh = fake.repo_url("homelab", "fresh")
    assert await sgit.push_bundle(data, fresh, username=ADMIN, token=token) == 2
    head = git("rev-parse", "main", cwd=work).stdout.strip()
    assert fake.branch_commit("homelab", "fresh", "main") == head
    assert fake.branch_commit("homelab", "fresh", "staging") == head
    assert git("--git-dir", str(fake.bare_path("homelab", "fresh")), "tag").stdout.split() == ["v1"]

    # The server moved on (a newer commit on main): the backup never overwrites it.
    newer = await sgit.commit_files(fresh, "main", {"new.txt": "n\n"}, "newer", username=ADMIN, token=token)
    assert await sgit.push_bundle(bundle_path, fresh, username=ADMIN, token=token) == 0
    assert fake.branch_commit("homelab", "fresh", "main") == newer

    with pytest.raises(GitError, match="bundle cannot be read"):
        await sgit.push_bundle(b"not a bundle", fresh, username=ADMIN, token=token)


async def test_push_bundle_fast_forwards_a_branch_that_is_behind(
    fake: FakeGitea, token: str, url: str, tmp_path: Path,
) -> None:
    work = make_worktree(tmp_path / "gitops")
    old = git("rev-parse", "main", cwd=work).stdout.strip()
    new = commit(work, "b.txt", "b\n")
    bundle = tmp_path / "b.bundle"
    git("bundle", "create", str(bundle), "main", cwd=work)
    git("push", "-q", str(fake.bare_path("homelab", "gitops")), f"{old}:refs/heads/main", cwd=work)
    assert await sgit.push_bundle(bundle, url, username=ADMIN, token=token) == 1
    assert fake.branch_commit("homelab", "gitops", "main") == new
