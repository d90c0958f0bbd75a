"""The real ``git`` CLI, talking smart HTTP to the in-cluster Git server through a port-forward.

The access token never appears in argv, in a URL or in any ``.git/config``: it reaches git as an
``Authorization`` header set through git's environment configuration (``GIT_CONFIG_COUNT``,
``GIT_CONFIG_KEY_n``, ``GIT_CONFIG_VALUE_n``), which only the child process and the same OS user can
see. ``-c`` is never used for it because ``-c`` is argv, which every user can read in ``ps``.

Everything is ``async``: the port-forward that carries git's HTTP runs in the same event loop, so a
blocking ``subprocess.run`` here would stall the relay git is talking through.

Commands that work in temporary repositories run hermetically (no global or system git config): the
operator's ``commit.gpgSign``, hooks or ``url.insteadOf`` must not change what seedbed commits.
The push of the operator's own work tree keeps their repository's config, which is theirs.
"""

from __future__ import annotations

import asyncio
import base64
import os
import re
import shutil
import tempfile
from collections.abc import Awaitable, Callable
from pathlib import Path, PurePosixPath
from typing import Literal, TypeVar
from urllib.parse import urlsplit

import msgspec

from . import scrub as _scrub
from .errors import ConfigError, GitError

T = TypeVar("T")

DEFAULT_AUTHOR = ("seedbed", "seedbed@noreply.localhost")
GIT_TIMEOUT = 600.0

PushStatus = Literal["new", "updated", "up-to-date", "forced"]

# Variables that would change what git does or leak what it sends: inherited git plumbing state (when
# seedbed runs from a hook), other config injections, askpass programs, and curl tracing.
_DROP_ENV = re.compile(
    r"^(GIT_(DIR|WORK_TREE|INDEX_FILE|OBJECT_DIRECTORY|ALTERNATE_OBJECT_DIRECTORIES|NAMESPACE|PREFIX"
    r"|CONFIG|CONFIG_PARAMETERS|CONFIG_COUNT|CONFIG_KEY_\d+|CONFIG_VALUE_\d+|ASKPASS|TRACE\w*|CURL_VERBOSE"
    r"|SSH_COMMAND|PROXY_SSL_\w+)|SSH_ASKPASS)$"
)


class PushResult(msgspec.Struct, frozen=True):
    """What a push did. ``old`` is None when the branch was new on the server."""

    branch: str
    old: str | None
    new: str
    status: PushStatus
    dirty: bool = False  # the work tree had uncommitted changes; they were not pushed

    @property
    def changed(self) -> bool:
        return self.status != "up-to-date"


class _Auth(msgspec.Struct, frozen=True):
    url: str
    username: str
    token: str

    @property
    def header_value(self) -> str:
        # Basic with the token as password is what both Gitea and Forgejo accept on git's HTTP paths.
        return base64.b64encode(f"{self.username}:{self.token}".encode()).decode()

    def __post_init__(self) -> None:
        _scrub.secret(self.token)
        _scrub.secret(self.header_value)

    def scrub(self, text: str) -> str:
        return _scrub.scrub(text)


def _check_url(url: str) -> None:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https"):
        raise ValueError(f"not an http(s) Git URL: {url!r}")
    if parts.username or parts.password:
        # Credentials in a URL end up in argv, in .git/config and in error messages.
        raise ValueError("the Git URL must not carry credentials; pass the token separately")


def _env(auth: _Auth | None, *, hermetic: bool, extra: dict[str, str] | None = None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not _DROP_ENV.match(k)}
    env["GIT_TERMINAL_PROMPT"] = "0"  # fail instead of asking for a password nobody will type
    env["LC_ALL"] = "C"  # the rejection reasons are parsed; they must be in English
    env["LANGUAGE"] = "C"
    # The port-forward is on loopback; a proxy from the environment must not be used for it.
    no_proxy = ",".join(filter(None, [env.get("no_proxy") or env.get("NO_PROXY"), "127.0.0.1,localhost,::1"]))
    env["no_proxy"] = env["NO_PROXY"] = no_proxy
    config: list[tuple[str, str]] = [
        ("credential.helper", ""),  # an empty value resets the list: no stored credentials are tried
        ("core.askPass", ""),
    ]
    if auth is not None:
        # Scoped to the repository URL, so the header is never sent to any other server.
        config.append((f"http.{auth.url}.extraHeader", f"Authorization: Basic {auth.header_value}"))
    if hermetic:
        env["GIT_CONFIG_NOSYSTEM"] = "1"
        env["GIT_CONFIG_GLOBAL"] = os.devnull
        config += [("commit.gpgSign", "false"), ("tag.gpgSign", "false"), ("init.defaultBranch", "main")]
    env["GIT_CONFIG_COUNT"] = str(len(config))
    for i, (key, value) in enumerate(config):
        env[f"GIT_CONFIG_KEY_{i}"] = key
        env[f"GIT_CONFIG_VALUE_{i}"] = value
    env.update(extra or {})
    return env


class _Run(msgspec.Struct, frozen=True):
    rc: int
    out: str
    err: str


async def _git(
    args: list[str], *, cwd: Path, env: dict[str, str], auth: _Auth | None = None, timeout: float = GIT_TIMEOUT,
) -> _Run:
    git = shutil.which("git", path=env.get("PATH"))
    if git is None:
        raise GitError("the `git` command was not found", fix="install git (2.31 or newer) and re-run")
    proc = await asyncio.create_subprocess_exec(
        git, *args, cwd=cwd, env=env,
        stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )
    try:
        out, err = await asyncio.wait_for(proc.communicate(), timeout)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        raise GitError(
            f"`git {args[0]}` did not finish within {timeout:g} s",
            fix="check the port-forward to the Git server and re-run",
        ) from None
    scrub = auth.scrub if auth else (lambda s: s)
    return _Run(proc.returncode or 0, scrub(out.decode(errors="replace")), scrub(err.decode(errors="replace")))


def _remote_lines(stderr: str) -> str:
    lines = [ln.removeprefix("remote:").strip() for ln in stderr.splitlines() if ln.startswith("remote:")]
    return "; ".join(ln for ln in lines if ln)


def _transport_error(run: _Run, what: str, url: str) -> GitError:
    err = run.err.strip()
    low = err.lower()
    if "authentication failed" in low or "could not read username" in low or "401" in low or "403" in low:
        return GitError(
            f"{what}: the Git server refused the credentials for {url}",
            fix="the access token may have been deleted or lack the write:repository scope; re-run seedbed",
        )
    if "not found" in low and "repository" in low:
        return GitError(f"{what}: the Git server has no repository at {url}",
                        fix="check repo.owner and repo.name in seedbed.yaml")
    if "failed to connect" in low or "couldn't connect" in low or "connection refused" in low:
        return GitError(f"{what}: cannot connect to {url}",
                        fix="check that the port-forward is open and the Git server pod is running", transient=True)
    last = err.splitlines()[-1] if err else f"exit status {run.rc}"
    broken = any(s in low for s in _BROKEN_CONNECTION)
    return GitError(f"{what} failed: {last}", fix="see the git message above; re-run when it is fixed",
                    transient=broken)


# What git says when the connection (here: one port-forward stream) breaks under it.
_BROKEN_CONNECTION = ("empty reply from server", "unexpected disconnect", "the remote end hung up",
                      "rpc failed", "early eof", "connection reset", "recv failure", "send failure",
                      "transfer closed", "expected 'packfile'", "expected flush")


async def retrying(operation: Callable[[], Awaitable[T]], *, attempts: int = 3, delay: float = 0.5) -> T:
    """Run a git operation again when its connection broke; every operation here is idempotent
    (a push that did land is "up to date" the second time, commit_files commits only changes)."""
    for attempt in range(attempts):
        try:
            return await operation()
        except GitError as e:
            if not e.transient or attempt == attempts - 1:
                raise
            await asyncio.sleep(delay * (attempt + 1))
    raise AssertionError("unreachable")


_FORCE_FIX = "pull/rebase first, or set repo.forcePush / --force-push if you mean to overwrite them"


def _parse_push(
    run: _Run, branch: str, url: str, *, worktree_hint: str, nonff_fix: str = _FORCE_FIX,
) -> tuple[str, str]:
    """(flag, summary) of the one ref in ``git push --porcelain`` output, or a GitError."""
    ref = f"refs/heads/{branch}"
    for line in run.out.splitlines():
        parts = line.split("\t")
        if len(parts) >= 3 and parts[1].endswith(":" + ref):
            flag, summary = parts[0], parts[2]
            if flag != "!":
                return flag, summary
            remote = _remote_lines(run.err)
            if "non-fast-forward" in summary or "fetch first" in summary:
                raise GitError(
                    f"push rejected: the server's {branch} has commits {worktree_hint} does not have",
                    fix=nonff_fix,
                )
            if "stale info" in summary:
                raise GitError(
                    f"push rejected: the server's {branch} changed while seedbed was pushing",
                    fix="re-run; if someone else is pushing, pull their commits first",
                )
            if "remote rejected" in summary:
                reason = summary.split("(", 1)[-1].rstrip(")") if "(" in summary else summary
                said = f"; the server said: {remote}" if remote else ""
                raise GitError(
                    f"push rejected by the Git server ({reason}){said}",
                    fix="the server's hooks or branch protection refused the push; fix what it names and re-run",
                )
            raise GitError(f"push of {branch} rejected: {summary}",
                           fix="see the git message above; re-run when it is fixed")
    raise _transport_error(run, f"git push to {url}", url)


_STATUS: dict[str, PushStatus] = {" ": "updated", "+": "forced", "*": "new", "=": "up-to-date"}


async def _rev(cwd: Path, env: dict[str, str], rev: str) -> str | None:
    run = await _git(["rev-parse", "--verify", "--quiet", f"{rev}^{{commit}}"], cwd=cwd, env=env)
    return run.out.strip() if run.rc == 0 and run.out.strip() else None


# --------------------------------------------------------------------------- public API


async def remote_head(url: str, branch: str, *, username: str, token: str) -> str | None:
    """The commit at ``branch`` on the server, or None when the branch does not exist (``git ls-remote``)."""
    _check_url(url)
    auth = _Auth(url, username, token)
    with tempfile.TemporaryDirectory(prefix="seedbed-git-") as tmp:
        run = await _git(["ls-remote", "--refs", url, f"refs/heads/{branch}"],
                         cwd=Path(tmp), env=_env(auth, hermetic=True), auth=auth)
    if run.rc != 0:
        raise _transport_error(run, f"git ls-remote {url}", url)
    for line in run.out.splitlines():
        sha, _, ref = line.partition("\t")
        if ref == f"refs/heads/{branch}":
            return sha
    return None


async def _local_head(worktree: Path, branch: str) -> str:
    """The commit of ``branch`` in the operator's work tree, or a ConfigError saying how to get one."""
    worktree = Path(worktree).expanduser()
    plain = _env(None, hermetic=False)
    init_fix = (f"make it a git work tree with a commit on {branch}: `git -C {worktree} init -b {branch} && "
                f"git -C {worktree} add -A && git -C {worktree} commit -m 'initial'`")
    if not worktree.is_dir():
        raise ConfigError(f"repo.path {worktree} is not a folder", fix=f"create it, then {init_fix}")
    top = await _git(["rev-parse", "--show-toplevel"], cwd=worktree, env=plain)
    if top.rc != 0:
        raise ConfigError(f"repo.path {worktree} is not a git work tree", fix=init_fix)
    toplevel = Path(top.out.strip())
    if toplevel.resolve() != worktree.resolve():
        # Pushing the enclosing repository would publish far more than the GitOps tree.
        raise ConfigError(
            f"repo.path {worktree} is inside the git work tree {toplevel} but is not its top",
            fix=f"point repo.path at {toplevel}, or make {worktree} a repository of its own: {init_fix}",
        )
    new = await _rev(worktree, plain, f"refs/heads/{branch}")
    if new is None:
        has_any = await _rev(worktree, plain, "HEAD")
        what = f"has no branch {branch!r}" if has_any else "has no commits"
        raise ConfigError(
            f"the work tree {worktree} {what}",
            fix=f"commit to {branch} (`git -C {worktree} switch -c {branch} && git -C {worktree} commit`), "
                "or set repo.branch to the branch you use",
        )
    return new


async def push(
    worktree: Path, url: str, branch: str, *, token: str, username: str, force: bool = False,
) -> PushResult:
    """Push ``branch`` of the operator's work tree to ``url``. Never forces unless ``force``.

    A forced push uses ``--force-with-lease`` against the commit seen just before, so commits pushed
    by someone else in between are not silently lost. Nothing is written to the work tree's config:
    the URL is given on the command line (it holds no secret) rather than as a remote.
    """
    _check_url(url)
    worktree = Path(worktree).expanduser()
    new = await _local_head(worktree, branch)
    plain = _env(None, hermetic=False)
    status = await _git(["status", "--porcelain", "--untracked-files=normal"], cwd=worktree, env=plain)
    dirty = status.rc == 0 and bool(status.out.strip())

    auth = _Auth(url, username, token)
    env = _env(auth, hermetic=False)
    old = await remote_head(url, branch, username=username, token=token)
    ref = f"refs/heads/{branch}"
    args = ["push", "--porcelain"]
    if force:
        args.append(f"--force-with-lease={ref}:{old or ''}")
    args += [url, f"{ref}:{ref}"]
    run = await _git(args, cwd=worktree, env=env, auth=auth)
    flag, _summary = _parse_push(run, branch, url, worktree_hint="your work tree")
    return PushResult(branch=branch, old=old, new=new, status=_STATUS.get(flag, "updated"), dirty=dirty)


async def contains(worktree: Path, url: str, branch: str, *, username: str, token: str) -> bool:
    """True when the server's ``branch`` already has the work tree's ``branch`` commit in its history.

    So a re-run does not push (and is not refused) after seedbed itself committed the Flux manifests on
    top of the operator's commits. The server's history is fetched into a temporary repository, never
    into the operator's.
    """
    _check_url(url)
    local = await _local_head(Path(worktree).expanduser(), branch)
    remote = await remote_head(url, branch, username=username, token=token)
    if remote is None:
        return False
    if remote == local:
        return True
    auth = _Auth(url, username, token)
    env = _env(auth, hermetic=True)
    with tempfile.TemporaryDirectory(prefix="seedbed-contains-") as tmp:
        bare = Path(tmp)
        await _git(["init", "--quiet", "--bare", "."], cwd=bare, env=env)
        run = await _git(["fetch", "--quiet", url, f"+refs/heads/{branch}:refs/heads/{branch}"],
                         cwd=bare, env=env, auth=auth)
        if run.rc != 0:
            raise _transport_error(run, f"git fetch {url}", url)
        # A commit the server lacks is not in this repository at all: merge-base then fails, as it should.
        run = await _git(["merge-base", "--is-ancestor", local, f"refs/heads/{branch}"], cwd=bare, env=env)
        return run.rc == 0


async def push_bundle(bundle: bytes | Path, url: str, *, username: str, token: str) -> int:
    """Push a backup bundle's branches and tags back where the server lacks them; return how many branches.

    A branch is pushed when the server does not have it or is behind it (a fast-forward). A server
    branch that has moved on or diverged is left alone: a restore never overwrites newer work.
    """
    _check_url(url)
    auth = _Auth(url, username, token)
    env = _env(auth, hermetic=True)
    with tempfile.TemporaryDirectory(prefix="seedbed-restore-") as tmp:
        bare = Path(tmp) / "repo.git"
        if isinstance(bundle, bytes):
            path = Path(tmp) / "backup.bundle"
            path.write_bytes(bundle)
        else:
            path = Path(bundle).resolve()
        await _git(["init", "--quiet", "--bare", str(bare)], cwd=Path(tmp), env=env)
        run = await _git(["fetch", "--quiet", str(path), "+refs/heads/*:refs/bundle/heads/*",
                          "+refs/tags/*:refs/bundle/tags/*"], cwd=bare, env=env)
        if run.rc != 0:
            raise GitError(f"the backup's git bundle cannot be read: {run.err.strip()}",
                           fix="the archive may be damaged; restore the repository from another backup")
        run = await _git(["fetch", "--quiet", url, "+refs/heads/*:refs/server/heads/*",
                          "+refs/tags/*:refs/server/tags/*"], cwd=bare, env=env, auth=auth)
        if run.rc != 0:
            raise _transport_error(run, f"git fetch {url}", url)
        refs = await _git(["for-each-ref", "--format=%(objectname) %(refname)"], cwd=bare, env=env)
        have = dict(reversed(line.split(" ", 1)) for line in refs.out.splitlines() if " " in line)
        refspecs: list[str] = []
        branches = 0
        for ref, sha in sorted(have.items()):
            for kind in ("heads", "tags"):
                prefix = f"refs/bundle/{kind}/"
                if not ref.startswith(prefix):
                    continue
                name = ref.removeprefix(prefix)
                server = have.get(f"refs/server/{kind}/{name}")
                if server == sha:
                    continue
                if server is not None:
                    if kind == "tags":
                        continue  # a tag that exists is never moved
                    ff = await _git(["merge-base", "--is-ancestor", server, sha], cwd=bare, env=env)
                    if ff.rc != 0:
                        continue
                refspecs.append(f"{ref}:refs/{kind}/{name}")
                branches += kind == "heads"
        if not refspecs:
            return 0
        run = await _git(["push", "--porcelain", url, *refspecs], cwd=bare, env=env, auth=auth)
        if run.rc != 0:
            rejected = [ln for ln in run.out.splitlines() if ln.startswith("!")]
            detail = rejected[0].split("\t")[-1] if rejected else (run.err.strip().splitlines() or ["?"])[-1]
            remote = _remote_lines(run.err)
            raise GitError(f"pushing the backup's branches back was refused: {detail}"
                           + (f"; the server said: {remote}" if remote else ""),
                           fix="re-run the restore; if the server's hooks refuse it, fix what they name")
        return branches


async def clone(url: str, dest: Path, *, username: str, token: str, branch: str | None = None) -> Path:
    """A plain clone of ``url`` into ``dest`` (which must not exist). Its config holds the URL only."""
    _check_url(url)
    auth = _Auth(url, username, token)
    dest = Path(dest)
    args = ["clone", "--quiet"] + (["--branch", branch] if branch else []) + [url, str(dest)]
    run = await _git(args, cwd=dest.parent, env=_env(auth, hermetic=True), auth=auth)
    if run.rc != 0:
        raise _transport_error(run, f"git clone {url}", url)
    return dest


async def head_commit(repo: Path) -> str:
    """The commit checked out in ``repo`` (a clone made by :func:`clone`)."""
    sha = await _rev(Path(repo), _env(None, hermetic=True), "HEAD")
    if sha is None:
        raise GitError(f"{repo} has no commit checked out", fix="re-run; if it stays so, the branch on the server is empty")
    return sha


async def bundle_create(url: str, dest: Path, *, username: str, token: str) -> bool:
    """Write every branch and tag of ``url`` to the git bundle ``dest``; False (no file) when empty.

    The refs are fetched into a temporary bare repository first, so nothing but the bundle remains.
    """
    _check_url(url)
    auth = _Auth(url, username, token)
    env = _env(auth, hermetic=True)
    dest = Path(dest)
    with tempfile.TemporaryDirectory(prefix="seedbed-bundle-") as tmp:
        bare = Path(tmp) / "repo.git"
        run = await _git(["init", "--quiet", "--bare", str(bare)], cwd=Path(tmp), env=env)
        if run.rc != 0:
            raise GitError(f"git init failed: {run.err.strip()}", fix="check that TMPDIR is writable")
        run = await _git(["fetch", "--quiet", url, "+refs/heads/*:refs/heads/*", "+refs/tags/*:refs/tags/*"],
                         cwd=bare, env=env, auth=auth)
        if run.rc != 0:
            raise _transport_error(run, f"git fetch {url}", url)
        refs = await _git(["for-each-ref", "--format=%(refname)"], cwd=bare, env=env)
        if not refs.out.strip():
            return False
        # Carry the server's default branch as the bundle's HEAD, so a restore checks out the right one.
        sym = await _git(["ls-remote", "--symref", url, "HEAD"], cwd=bare, env=env, auth=auth)
        m = re.search(r"^ref: (refs/heads/\S+)\tHEAD$", sym.out, re.M)
        if m and m.group(1) in refs.out.split():
            await _git(["symbolic-ref", "HEAD", m.group(1)], cwd=bare, env=env)
        partial = dest.with_name(dest.name + ".partial")
        run = await _git(["bundle", "create", "--quiet", str(partial.resolve()), "--all"], cwd=bare, env=env)
        if run.rc != 0:
            partial.unlink(missing_ok=True)
            raise GitError(f"git bundle create failed: {run.err.strip()}", fix=f"check that {dest.parent} is writable")
        partial.replace(dest)
    return True


def _safe_relpath(name: str) -> PurePosixPath:
    p = PurePosixPath(name)
    if p.is_absolute() or not p.parts or ".." in p.parts or p.parts[0] == ".git":
        raise ValueError(f"not a safe path inside the repository: {name!r}")
    return p


async def commit_files(
    url: str, branch: str, files: dict[str, str], message: str, *, username: str, token: str,
    author: tuple[str, str] = DEFAULT_AUTHOR, only_if_missing: frozenset[str] = frozenset(),
) -> str:
    """Write ``files`` (path -> text) on ``branch`` of ``url`` in one commit and push it; return the head.

    A path in ``only_if_missing`` is written only when the branch does not have it yet (the user's
    edits to it win).

    Idempotent: when the files already have this content nothing is committed and the current head is
    returned. Other files in the repository are left as they are. The work happens in a temporary
    clone that is removed afterwards; the token only travels in git's environment.
    """
    _check_url(url)
    paths = {str(_safe_relpath(name)): text for name, text in files.items()}
    if not paths:
        raise ValueError("commit_files needs at least one file")
    auth = _Auth(url, username, token)
    name, email = author
    env = _env(auth, hermetic=True, extra={
        "GIT_AUTHOR_NAME": name, "GIT_AUTHOR_EMAIL": email, "GIT_COMMITTER_NAME": name, "GIT_COMMITTER_EMAIL": email,
    })
    with tempfile.TemporaryDirectory(prefix="seedbed-commit-") as tmp:
        work = Path(tmp)
        run = await _git(["init", "--quiet", f"--initial-branch={branch}", "."], cwd=work, env=env)
        if run.rc != 0:
            raise GitError(f"git init failed: {run.err.strip()}", fix="check that TMPDIR is writable")
        head = await remote_head(url, branch, username=username, token=token)
        if head is not None:
            # Only the tip is needed to add a commit on top of it.
            run = await _git(["fetch", "--quiet", "--depth=1", url, f"refs/heads/{branch}"],
                             cwd=work, env=env, auth=auth)
            if run.rc != 0:
                raise _transport_error(run, f"git fetch {url}", url)
            run = await _git(["checkout", "--quiet", "-B", branch, "FETCH_HEAD"], cwd=work, env=env)
            if run.rc != 0:
                raise GitError(f"git checkout failed: {run.err.strip()}", fix="re-run")
        for rel, text in paths.items():
            target = work / rel
            if rel in only_if_missing and target.exists():
                continue
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(text, encoding="utf-8")
        run = await _git(["add", "--all", "--", *paths], cwd=work, env=env)
        if run.rc != 0:
            raise GitError(f"git add failed: {run.err.strip()}", fix="re-run")
        diff = await _git(["diff", "--cached", "--quiet"], cwd=work, env=env)
        if diff.rc == 0 and head is not None:
            return head
        run = await _git(["commit", "--quiet", "--no-verify", "-m", message], cwd=work, env=env)
        if run.rc != 0:
            raise GitError(f"git commit failed: {run.err.strip()}", fix="re-run")
        new = await _rev(work, env, "HEAD")
        assert new is not None
        ref = f"refs/heads/{branch}"
        run = await _git(["push", "--porcelain", url, f"{ref}:{ref}"], cwd=work, env=env, auth=auth)
        _parse_push(run, branch, url, worktree_hint="seedbed's commit",
                    nonff_fix="someone pushed while seedbed was committing; re-run")
        return new
