"""Helpers for the reliability tests: a homelab driven by a real `seedbed` subprocess, deterministic
kill points and fault injection, the "converged" check and a scanner for leaked secrets.

- :class:`Homelab` is a :class:`lab.Lab` plus the operator's side (work tree, an SSH public key,
  seedbed.yaml, a private ``$HOME`` and ``$TMPDIR``) and a request :class:`Interceptor` installed on
  the emulator and on the fake Gitea *before* they start, so that tests can act at an exact request.
- :class:`Tripwire` SIGKILLs the seedbed process group at the n-th request matching a rule, either
  before the request is served or right after (the write landed, the client never saw the answer).
  The server thread that saw the request blocks until the process is dead, so nothing the process
  sends afterwards is served: the kill point is a request index, not a moment in time.
- :class:`FaultPlan` injects, at chosen request indices, one of the emulator's faults (429, 5xx,
  409 conflicts, dropped watches, dropped port-forwards) into exactly that request.
- :func:`converged` lists what keeps a cluster from matching a reference bootstrap.
- :class:`SecretLedger` remembers every secret value that ever reached the cluster or the fake
  Gitea; :func:`leaks_in_text` and :func:`leaks_in_files` look for any of them.
"""

from __future__ import annotations

import base64
import os
import re
import signal
import subprocess
import sys
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from aiohttp import web

from seedbed_lab.lab import Lab, make_worktree

ROOT = Path(__file__).resolve().parents[1]
SEEDBED = ROOT / ".venv" / "bin" / "seedbed"
UPSTREAM = Path(os.environ.get("SEEDBED_UPSTREAM_FIXTURES", ROOT.parent / "shared" / "fixtures" / "upstream"))
RUN_TIMEOUT = 240.0  # a run that takes longer than this is reported as hung, never waited on for ever

REPO = ("homelab", "gitops")
GENERATED_SECRETS = {("gitea", "gitea-admin"), ("gitea", "gitea-ssh-host-key"), ("flux-system", "flux-system")}
PUBLIC_KEYS = re.compile(r"(\.pub|known_hosts|^username)$")  # Secret keys that hold no secret
# Objects whose names the emulator's controllers make up (hash or random suffixes).
VOLATILE_KINDS = {"Pod", "ReplicaSet", "Event", "Lease", "EndpointSlice", "Endpoints", "ControllerRevision"}

# --------------------------------------------------------------------------- request interception


@dataclass
class Req:
    side: str  # "k8s" (the emulator) or "gitea" (the fake Gitea: REST API and git smart HTTP)
    method: str
    path: str
    query: str
    status: int | None = None  # None before the request is served

    @property
    def is_write(self) -> bool:
        return self.method in ("POST", "PUT", "PATCH", "DELETE") and "selfsubjectaccessreviews" not in self.path

    @property
    def label(self) -> str:
        return f"{self.side} {self.method} {self.path}" + (f"?{self.query}" if self.query and self.side == "gitea" else "")


Listener = Callable[[str, Req], "web.StreamResponse | None"]


class Interceptor:
    """Calls listeners before ("before") and after ("after") every request the lab serves."""

    def __init__(self) -> None:
        self.listeners: list[Listener] = []
        self.trace: list[Req] = []  # served requests, in the order their answers were ready
        self.lock = threading.Lock()

    def install(self, lab: Lab) -> None:
        emu_handle = lab.emu._handle

        async def handle(request: web.Request) -> web.StreamResponse:
            from seedbed_lab.emulator.kustomize_controller import USER_AGENT_SUFFIX

            if request.headers.get("User-Agent", "").endswith(USER_AGENT_SUFFIX):
                return await emu_handle(request)  # the lab's simulated Flux controllers: not seedbed's requests
            req = Req("k8s", request.method, request.path, request.query_string)
            early = self._notify("before", req)
            if early is not None:
                return early
            resp = await emu_handle(request)
            req.status = resp.status
            self._notify("after", req)
            return resp

        lab.emu._handle = handle  # type: ignore[method-assign]  # bound by the router at start()

        gitea_mw = lab.gitea._middleware

        @web.middleware
        async def middleware(request: web.Request, handler: Any) -> web.StreamResponse:
            req = Req("gitea", request.method, request.path, request.query_string)
            early = self._notify("before", req)
            if early is not None:
                return early
            resp = await gitea_mw(request, handler)
            req.status = resp.status
            self._notify("after", req)
            return resp

        lab.gitea._middleware = middleware  # type: ignore[method-assign]

    def _notify(self, phase: str, req: Req) -> web.StreamResponse | None:
        result = None
        with self.lock:
            if phase == "after":
                self.trace.append(req)
            for fn in list(self.listeners):
                got = fn(phase, req)
                result = result or got
        return result


class Process:
    """The seedbed subprocess currently running (the one a Tripwire kills)."""

    def __init__(self) -> None:
        self.popen: subprocess.Popen[bytes] | None = None
        self.killed: set[int] = set()  # pids killed on purpose

    def kill(self) -> None:
        p = self.popen
        if p is None or p.poll() is not None:
            return
        self.killed.add(p.pid)
        # Its own process group: git children die with it, as on a crash of the machine.
        os.killpg(p.pid, signal.SIGKILL)
        p.wait(10)


@dataclass
class Rule:
    """Kill at the n-th request matching ``match`` (counted when seen in ``phase``)."""

    name: str
    match: Callable[[Req], bool]
    nth: int = 1
    phase: str = "after"  # "before": the request is never served; "after": it was, the answer is lost
    seen: int = 0
    fired: Req | None = None


class Tripwire:
    def __init__(self, process: Process, rule: Rule | None = None) -> None:
        self.process = process
        self.rule = rule

    def __call__(self, phase: str, req: Req) -> web.StreamResponse | None:
        rule = self.rule
        if rule is None or rule.fired is not None or phase != rule.phase:
            return None
        if phase == "after" and (req.status or 0) >= 400:
            return None  # a refused request is not the write we are waiting for
        if not rule.match(req):
            return None
        rule.seen += 1
        if rule.seen < rule.nth:
            return None
        rule.fired = req
        self.process.kill()
        return web.Response(status=503, text="killed") if phase == "before" else None


# --------------------------------------------------------------------------- faults

FAULT_KINDS = ("429", "500", "502", "503", "504", "409", "drop-watch", "drop-port-forward")


@dataclass
class Fault:
    index: int  # the request index (0-based, counted on the emulator) that gets the fault
    kind: str
    times: int = 1  # that many consecutive matching requests (same method and path) fail

    def __str__(self) -> str:
        return f"#{self.index}:{self.kind}x{self.times}"


class FaultPlan:
    """Faults at exact emulator request indices: a fault applies to the request with that index
    (or, for drops and conflicts, to the first suitable request from that index on)."""

    def __init__(self, lab: Lab, faults: Iterable[Fault]) -> None:
        self.lab = lab
        self.pending = sorted(faults, key=lambda f: f.index)
        self.count = 0
        self.applied: list[tuple[Fault, str]] = []

    def __call__(self, phase: str, req: Req) -> web.StreamResponse | None:
        if phase != "before" or req.side != "k8s":
            return None
        i = self.count
        self.count += 1
        for f in list(self.pending):
            if f.index > i:
                break
            if not self._suits(f, req):
                continue
            self.pending.remove(f)
            path = "^" + re.escape(req.path) + "$"
            if f.kind == "drop-watch":
                self.lab.emu.inject(method="GET", path=path, drop_watch=True, times=f.times)
            elif f.kind == "drop-port-forward":
                self.lab.emu.inject(path=path, drop_port_forward=True, times=f.times)
            else:
                retry_after = 0 if f.kind == "429" else None
                self.lab.emu.inject(method=req.method, path=path, status=int(f.kind), times=f.times,
                                    retry_after=retry_after)
            self.applied.append((f, f"{req.method} {req.path}"))
        return None

    @staticmethod
    def _suits(f: Fault, req: Req) -> bool:
        if f.kind == "drop-watch":
            return req.method == "GET" and "watch=" in req.query
        if f.kind == "drop-port-forward":
            return req.path.endswith("/portforward")
        if f.kind == "409":
            return req.method in ("PATCH", "PUT")  # conflicts happen on writes to existing objects
        return not req.path.endswith("/portforward")


def random_faults(rng: Any, *, requests: int, count: int) -> list[Fault]:
    """``count`` faults at random request indices below ``requests``; kinds and repeats random.
    One status fault in eight is persistent (8 times in a row: more than the client's 6 retries)."""
    faults = []
    for _ in range(count):
        kind = rng.choice(FAULT_KINDS)
        times = 1 if kind.startswith("drop") else rng.choice((1, 1, 1, 2, 2, 3, 3, 8))
        faults.append(Fault(rng.randrange(requests), kind, times))
    return faults


# --------------------------------------------------------------------------- secrets


class SecretLedger:
    """Every secret value that reached the cluster or the Git server during a test."""

    def __init__(self, lab: Lab, *, namespaces: Iterable[str] = ()) -> None:
        self.lab = lab
        self.namespaces = set(namespaces)
        self.values: dict[str, str] = {}  # value -> where it came from
        lab.emu.on_apply("Secret", self._on_secret)
        ledger = self

        class TokenLog(list):  # type: ignore[type-arg]
            def append(self, tok: Any) -> None:
                ledger.add(tok["sha1"], f"Gitea token {tok['name']!r}")
                super().append(tok)

        lab.gitea.tokens = TokenLog(lab.gitea.tokens)

    def add(self, value: str, origin: str) -> None:
        if value and len(value.strip()) >= 8:
            self.values.setdefault(value, origin)

    def _on_secret(self, emu: Any, obj: dict[str, Any]) -> None:
        md = obj.get("metadata") or {}
        key = (md.get("namespace"), md.get("name"))
        if key not in GENERATED_SECRETS and md.get("namespace") not in self.namespaces:
            return
        for k, v in (obj.get("data") or {}).items():
            if PUBLIC_KEYS.search(k):
                continue
            try:
                self.add(base64.b64decode(v).decode(), f"Secret {key[0]}/{key[1]} {k}")
            except (ValueError, UnicodeDecodeError):
                continue

    def needles(self) -> dict[bytes, str]:
        """Byte strings whose presence anywhere is a leak: each value, its base64, and, for multi-line
        values (private keys), every line of 40 characters or more on its own. Also the HTTP basic
        credentials the admin password and tokens travel in."""
        admin = self.lab.gitea.admin_user
        out: dict[bytes, str] = {}
        for value, origin in self.values.items():
            out[value.strip().encode()] = origin
            out[base64.b64encode(value.encode())] = origin + " (base64)"
            for line in value.splitlines():
                if len(line.strip()) >= 40 and not line.startswith("-----"):
                    out[line.strip().encode()] = origin + " (a line of it)"
            out[base64.b64encode(f"{admin}:{value.strip()}".encode())] = origin + " (HTTP basic credentials)"
        return out


def leaks_in_text(text: str | bytes, needles: dict[bytes, str]) -> list[str]:
    data = text.encode() if isinstance(text, str) else text
    return sorted({origin for needle, origin in needles.items() if needle in data})


def git_objects(repo: Path) -> bytes:
    """Every object of a git repository, uncompressed (packs and loose objects are zlib data)."""
    run = subprocess.run(["git", "-C", str(repo), "cat-file", "--batch", "--batch-all-objects"],
                         capture_output=True, check=False, timeout=60)
    return run.stdout


def leaks_in_files(roots: Iterable[Path], needles: dict[bytes, str], *, skip: Iterable[Path] = ()) -> list[str]:
    """``path: origin`` for every file under ``roots`` (and every git object of every repository
    found there) that holds a needle."""
    skipped = {p.resolve() for p in skip}
    found: set[str] = set()
    for root in roots:
        if not root.exists():
            continue
        for dirpath, dirnames, filenames in os.walk(root):
            here = Path(dirpath)
            # The lab's simulated source-controller clones with the deploy key in lab-flux-* while it
            # fetches (in a cluster: the pod's memory), in the background, so a scan can meet it.
            dirnames[:] = [d for d in dirnames if not d.startswith("lab-flux-")]
            if (here / "HEAD").is_file() and (here / "objects").is_dir():  # a git directory
                for origin in leaks_in_text(git_objects(here), needles):
                    found.add(f"{here} (git objects): {origin}")
            for name in filenames:
                path = here / name
                if path.resolve() in skipped or path.is_symlink() or not path.is_file():
                    continue
                try:
                    data = path.read_bytes()
                except OSError:
                    continue
                for origin in leaks_in_text(data, needles):
                    found.add(f"{path}: {origin}")
    return sorted(found)


# --------------------------------------------------------------------------- the homelab


@dataclass
class RunResult:
    args: list[str]
    code: int | None  # None: killed, or hung and killed
    out: str
    err: str
    killed: bool = False
    hung: bool = False

    @property
    def output(self) -> str:
        return self.out + self.err


@dataclass
class Homelab:
    """A Lab and the operator's side of it, all under ``root``."""

    root: Path
    backup: dict[str, Any] | None = None
    worktree: Path | None = None  # share one work tree between labs (backup, then restore elsewhere)
    ledger_namespaces: tuple[str, ...] = ()
    lab: Lab = field(init=False)
    process: Process = field(init=False)
    interceptor: Interceptor = field(init=False)
    tripwire: Tripwire = field(init=False)
    runs: list[RunResult] = field(default_factory=list)

    def __post_init__(self) -> None:
        from seedbed.sshkeys import generate_ed25519

        self.root.mkdir(parents=True, exist_ok=True)
        self.home = self.root / "home"
        self.tmp = self.root / "tmp"
        for d in (self.home, self.tmp, self.root / "lab"):
            d.mkdir(exist_ok=True)
        self.lab = Lab(self.root / "lab")
        self.process = Process()
        self.interceptor = Interceptor()
        self.tripwire = Tripwire(self.process)
        self.interceptor.listeners.append(self.tripwire)
        self.interceptor.install(self.lab)
        self.secrets = SecretLedger(self.lab, namespaces=self.ledger_namespaces)
        self.lab.start()
        if self.worktree is None:
            self.worktree = make_worktree(self.root / "gitops")
        self.user_commit = subprocess.run(["git", "-C", str(self.worktree), "rev-parse", "HEAD"],
                                          capture_output=True, text=True, check=True).stdout.strip()
        key_file = self.home / ".ssh" / "id_ed25519.pub"
        if not key_file.exists():
            key_file.parent.mkdir(mode=0o700)
            key_file.write_text(generate_ed25519("operator@laptop").public_openssh + "\n")
        self.operator_key = key_file.read_text().strip()
        sections: dict[str, Any] = {
            "repo": {"authorizedKeys": [str(key_file)]},
            "flux": {"readyTimeout": 90},
            "gitServer": {"readyTimeout": 90},
        }
        if self.backup:
            sections["backup"] = self.backup
        self.config = self.lab.write_config(self.worktree, **sections)

    def stop(self) -> None:
        self.process.kill()
        self.lab.stop()

    def __enter__(self) -> Homelab:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ------------------------------------------------------------------ running seedbed

    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("XDG_", "SEEDBED_", "KUBECONFIG"))}
        env.update(HOME=str(self.home), TMPDIR=str(self.tmp), NO_COLOR="1", COLUMNS="200")
        return env

    def seedbed(self, *args: str, argv0: list[str] | None = None, rule: Rule | None = None,
                timeout: float = RUN_TIMEOUT) -> RunResult:
        """Run ``seedbed -c CONFIG ARGS`` as a real process; ``rule``: SIGKILL it at that request."""
        cmd = [*(argv0 or [str(SEEDBED)]), "-c", str(self.config), *args]
        self.tripwire.rule = rule
        popen = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=self.env(),
                                 cwd=self.root, start_new_session=True)
        self.process.popen = popen
        hung = False
        try:
            out, err = popen.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            hung = True
            self.process.kill()
            out, err = popen.communicate()
        self.tripwire.rule = None
        killed = popen.pid in self.process.killed and not hung
        result = RunResult(cmd, None if (killed or hung) else popen.returncode, out.decode(errors="replace"),
                           err.decode(errors="replace"), killed=killed, hung=hung)
        self.runs.append(result)
        return result

    def bootstrap(self, *extra: str, rule: Rule | None = None) -> RunResult:
        return self.seedbed("bootstrap", "--manifests", str(UPSTREAM), *extra, rule=rule)

    # ------------------------------------------------------------------ what the cluster holds

    def object_keys(self) -> set[tuple[str, str, str, str]]:
        emu = self.lab.emu
        keys = set()
        for info in emu._call(lambda: list(emu.registry.by_gvr.values())):
            if info.kind in VOLATILE_KINDS or not info.verbs or "list" not in info.verbs:
                continue
            for obj in emu.list(info.api_version, info.kind):
                md = obj.get("metadata") or {}
                name = md["name"]
                if info.kind == "PersistentVolume":  # provisioned with a random name: named by its claim
                    claim = (obj.get("spec") or {}).get("claimRef") or {}
                    name = f"claim:{claim.get('namespace')}/{claim.get('name')}"
                keys.add((info.api_version, info.kind, md.get("namespace", ""), name))
        return keys

    def secret_value(self, namespace: str, name: str, key: str) -> str | None:
        obj = self.lab.emu.get("v1", "Secret", name, namespace)
        data = (obj or {}).get("data") or {}
        return base64.b64decode(data[key]).decode() if key in data else None


def converged(h: Homelab, reference: set[tuple[str, str, str, str]] | None) -> list[str]:
    """What keeps the homelab from the state a clean bootstrap leaves; [] when it is there."""
    from seedbed.sshkeys import KeyPair

    problems: list[str] = []
    lab, emu = h.lab, h.lab.emu
    if reference is not None:
        have = h.object_keys()
        missing, extra = sorted(reference - have), sorted(have - reference)
        if missing:
            problems.append(f"lost objects: {missing[:5]}{' ...' if len(missing) > 5 else ''}")
        if extra:
            problems.append(f"unexpected objects: {extra[:5]}{' ...' if len(extra) > 5 else ''}")
    head = lab.gitea.branch_commit(*REPO, "main")
    bare = lab.gitea.bare_path(*REPO)
    if head is None:
        problems.append("the repository has no main branch")
    elif subprocess.run(["git", "--git-dir", str(bare), "merge-base", "--is-ancestor", h.user_commit, head],
                        capture_output=True, check=False).returncode != 0:
        problems.append("the user's commit is not in the repository's main branch")
    repo = emu.get("source.toolkit.fluxcd.io/v1", "GitRepository", "flux-system", "flux-system")
    ks = emu.get("kustomize.toolkit.fluxcd.io/v1", "Kustomization", "flux-system", "flux-system")
    for what, obj, revision in (
            ("GitRepository", repo, (((repo or {}).get("status") or {}).get("artifact") or {}).get("revision")),
            ("Kustomization", ks, ((ks or {}).get("status") or {}).get("lastAppliedRevision"))):
        ready = [c for c in ((obj or {}).get("status") or {}).get("conditions", []) if c.get("type") == "Ready"]
        if not ready or ready[0].get("status") != "True":
            problems.append(f"Flux {what} is not Ready")
        elif head and head not in str(revision):
            problems.append(f"Flux {what} is at {revision}, not at the repository's head {head[:12]}")
    repos = [r for r in lab.gitea.repos.values()]
    if len(repos) != 1:
        problems.append(f"{len(repos)} repositories on the Git server, not 1")
    deploy = lab.gitea.repo_deploy_keys(*REPO)
    if len(deploy) != 1:
        problems.append(f"{len(deploy)} deploy keys, not 1")
    tokens = [t for t in lab.gitea.tokens if t["name"] == "seedbed"]
    if len(tokens) > 1:
        problems.append(f"{len(tokens)} `seedbed` tokens, not at most 1")
    materials = [k["key"].split()[1] for k in lab.gitea.keys]
    op = h.operator_key.split()[1]
    if materials.count(op) != 1:
        problems.append(f"the operator's key is registered {materials.count(op)} times, not once")
    if len(materials) != len(set(materials)):
        problems.append("an SSH key is registered twice")
    identity = h.secret_value("flux-system", "flux-system", "identity")
    if identity is None:
        problems.append("Secret flux-system/flux-system has no identity")
    elif len(deploy) == 1:
        public = KeyPair.from_private(identity, source="flux-system").public_openssh.split()[1]
        if public != deploy[0]["key"].split()[1]:
            problems.append("the flux-system Secret's identity is not the registered deploy key")
    password = h.secret_value("gitea", "gitea-admin", "password")
    admin = lab.gitea.users[lab.gitea.admin_user.lower()]["password"]
    if password is None or password != admin:
        problems.append("the Git server's admin password is not the one in Secret gitea/gitea-admin")
    if lab.flux_errors and not (repo and "True" in str(repo.get("status"))):
        problems.append(f"Flux could not fetch: {lab.flux_errors[-1]}")
    return problems


def clean_failure(result: RunResult) -> list[str]:
    """What is wrong with how a failed run stopped (a run that failed must say why and what to do)."""
    problems = []
    err = result.err
    if "Traceback" in err or "Traceback" in result.out:
        problems.append("a traceback")
    if "✗ error:" not in err:
        problems.append("no `✗ error:` line")
    if "fix:" not in err:
        problems.append("no `fix:` line")
    return problems


def leaked_output(h: Homelab) -> list[str]:
    """Secrets found in the stdout or stderr of any seedbed run of this homelab."""
    needles = h.secrets.needles()
    return sorted({f"{' '.join(r.args[-3:])}: {o}" for r in h.runs for o in leaks_in_text(r.output, needles)})


def leaked_files(h: Homelab, *, extra_roots: Iterable[Path] = (), skip: Iterable[Path] = ()) -> list[str]:
    return leaks_in_files([h.root, *extra_roots], h.secrets.needles(), skip=skip)


def python_with_debug_logging() -> list[str]:
    """argv for running seedbed with every Python logger at DEBUG (seedbed has no log-level switch)."""
    return [sys.executable, str(Path(__file__).with_name("crash_runner.py"))]


def dump_yaml(obj: Any) -> str:
    return yaml.safe_dump(obj, sort_keys=False)
