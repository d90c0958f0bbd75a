"""Reliability (issue 8): crash and resume, API faults.

Every test drives the real `seedbed` command as a subprocess against a homelab on loopback
(src/seedbed_lab/lab.py), so that a SIGKILL is a real one. Kill points and faults are chosen by request
index, never by time: the request the process is killed at is held in the server until the
process is dead (see reliability_helpers.Tripwire).

The default run tries a few representative points; the exhaustive sweeps (every write of a
bootstrap and of a restore, before and after it is served; 100 seeded fault runs) are marked
``slow`` and run with ``SEEDBED_SLOW=1``. They print their figures (run pytest with ``-s``) and
write them to ``$SEEDBED_RELIABILITY_REPORT`` when it is set.
"""

from __future__ import annotations

import json
import os
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from reliability_helpers import (
    FaultPlan,
    Homelab,
    Req,
    Rule,
    clean_failure,
    converged,
    leaked_files,
    leaked_output,
    random_faults,
)

SLOW = bool(os.environ.get("SEEDBED_SLOW"))
slow = pytest.mark.skipif(not SLOW, reason="exhaustive sweep: set SEEDBED_SLOW=1")
APPS_SECRETS = {"app-db": {"password": "app-db-password-0f3c9a71"},
                "app-api": {"token": "app-api-token-7d21b8e4c6"}}
BOOTSTRAP_STEPS = ["longhorn", "flux-components", "git-server", "repository", "push", "flux", "(after flux)"]
RESTORE_STEPS = ["longhorn", "restore-volumes", "flux-components", "git-server", "repository", "push",
                 "restore-secrets", "flux",
                 "restore-certificates", "(after restore-certificates)"]


@pytest.fixture(autouse=True)
def _upstream(upstream):
    upstream("longhorn-v1.12.1.yaml")
    upstream("flux-gotk-components-v2.9.3.yaml")


# --------------------------------------------------------------------------- the reference runs


@dataclass
class Reference:
    """A clean bootstrap, its backup, and a clean restore of that backup into a new cluster."""

    root: Path
    worktree: Path
    backup: dict[str, Any]
    archive: Path
    objects: set[tuple[str, str, str, str]]
    trace: list[Req]
    restore_objects: set[tuple[str, str, str, str]]
    restore_trace: list[Req]
    labs: int = 0
    figures: dict[str, Any] = field(default_factory=dict)

    def homelab(self, name: str) -> Homelab:
        """A fresh, empty cluster for the same operator (same work tree, same backup key)."""
        self.labs += 1
        return Homelab(self.root / f"{name}-{self.labs}", backup=self.backup, worktree=self.worktree,
                       ledger_namespaces=("apps",))


def _secret(name: str, data: dict[str, str]) -> dict[str, Any]:
    import base64

    return {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": name, "namespace": "apps"},
            "type": "Opaque", "data": {k: base64.b64encode(v.encode()).decode() for k, v in data.items()}}


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> Reference:
    from conftest import upstream_path
    from seedbed.backup.archive import keygen
    from seedbed_lab.lab import make_worktree

    upstream_path("longhorn-v1.12.1.yaml")  # module-scoped: runs before the autouse check below
    upstream_path("flux-gotk-components-v2.9.3.yaml")

    root = tmp_path_factory.mktemp("reliability")
    keys = root / "keys"
    keys.mkdir(mode=0o700)
    recipient = keygen(keys / "age.key")
    backup = {"recipients": [recipient], "identityFile": str(keys / "age.key"),
              "secrets": {"namespaces": ["apps"]}}
    worktree = make_worktree(root / "operator-gitops")
    archive = root / "keys" / "homelab.age"
    with Homelab(root / "reference", backup=backup, worktree=worktree, ledger_namespaces=("apps",)) as h:
        result = h.bootstrap()
        assert result.code == 0, result.err
        assert converged(h, None) == []
        objects, trace = h.object_keys(), list(h.interceptor.trace)
        h.lab.emu.put({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "apps"}})
        for name, data in APPS_SECRETS.items():
            h.lab.emu.put(_secret(name, data))
        result = h.seedbed("backup", "-o", str(archive), "--skip-volumes")
        assert result.code == 0, result.err
    with Homelab(root / "restore-reference", backup=backup, worktree=worktree, ledger_namespaces=("apps",)) as h:
        result = h.bootstrap("--restore", str(archive))
        assert result.code == 0, result.err
        restore_objects, restore_trace = h.object_keys(), list(h.interceptor.trace)
        assert converged(h, restore_objects) == []
    return Reference(root, worktree, backup, archive, objects, trace, restore_objects, restore_trace)


# --------------------------------------------------------------------------- kill points


def _is_state_write(r: Req) -> bool:
    return r.side == "k8s" and r.is_write and (
        r.path.endswith("/configmaps/seedbed-state")
        or (r.method == "POST" and r.path == "/api/v1/namespaces/kube-system/configmaps"))


def _is_k8s_write(r: Req) -> bool:
    return r.side == "k8s" and r.is_write


@dataclass
class Point:
    """Where to kill: the n-th request matching ``match``, before or after it is served."""

    name: str
    match: Callable[[Req], bool]
    nth: int
    phase: str
    restore: bool = False

    def rule(self) -> Rule:
        return Rule(self.name, self.match, self.nth, self.phase)


def _ok(r: Req) -> bool:
    return (r.status or 0) < 400


def _step(steps: list[str], i: int) -> str:
    """The step the i-th state write records; the writes of seedbed-state after the last step's
    record (the ledger, the hand-over check's memo) are named after the last entry."""
    return steps[min(i, len(steps) - 1)]


def _k8s_write_points(trace: list[Req], steps: list[str], *, restore: bool) -> list[Point]:
    """A point after every successful write to the cluster, named by the step it belongs to."""
    points, n, records = [], 0, 0
    for r in trace:
        if not (_is_k8s_write(r) and _ok(r)):
            continue
        n += 1
        if _is_state_write(r):
            records += 1
            points.append(Point(f"boundary: after step {_step(steps, records - 1)!r} is recorded (write {n})",
                                _is_k8s_write, n, "after", restore))
        else:
            points.append(Point(f"mid-{_step(steps, records)}: after cluster write {n} ({r.method} {r.path})",
                                _is_k8s_write, n, "after", restore))
    return points


def _gitea_write_points(trace: list[Req], steps: list[str], *, restore: bool) -> list[Point]:
    """Before and after every write to the Git server: REST calls and git-receive-pack (the pushes)."""
    points: list[Point] = []
    seen: dict[tuple[str, str], int] = {}
    records = 0
    for r in trace:
        if _is_state_write(r) and _ok(r):
            records += 1
        if r.side != "gitea" or not r.is_write or not _ok(r):
            continue
        if r.path.endswith("git-upload-pack"):
            continue  # a fetch, not a write
        key = (r.method, r.path)
        seen[key] = seen.get(key, 0) + 1
        nth = seen[key]

        def match(q: Req, key: tuple[str, str] = key) -> bool:
            return q.side == "gitea" and (q.method, q.path) == key

        what = "push" if r.path.endswith("git-receive-pack") else "Git server write"
        for phase in ("before", "after"):
            points.append(Point(f"mid-{_step(steps, records)}: {phase} {what} {r.method} {r.path} #{nth}",
                                match, nth, phase, restore))
    return points


def all_points(ref: Reference) -> list[Point]:
    return (_k8s_write_points(ref.trace, BOOTSTRAP_STEPS, restore=False)
            + _gitea_write_points(ref.trace, BOOTSTRAP_STEPS, restore=False)
            + _k8s_write_points(ref.restore_trace, RESTORE_STEPS, restore=True)
            + _gitea_write_points(ref.restore_trace, RESTORE_STEPS, restore=True))


def _middle(points: list[Point], prefix: str, restore: bool) -> Point:
    chosen = [p for p in points if p.name.startswith(prefix) and p.restore == restore]
    assert chosen, f"no kill point starts with {prefix!r}"
    return chosen[len(chosen) // 2]


def _first(points: list[Point], prefix: str, contains: str, restore: bool) -> Point:
    chosen = [p for p in points if p.name.startswith(prefix) and contains in p.name and p.restore == restore]
    assert chosen, f"no kill point starts with {prefix!r} and contains {contains!r}"
    return chosen[0]


# The representative points of the default run, each picked from the reference runs' traces.
DEFAULT_POINTS: dict[str, Callable[[list[Point]], Point]] = {
    "step-boundary-after-git-server": lambda ps: _first(ps, "boundary", "'git-server'", False),
    "mid-longhorn-apply": lambda ps: _middle(ps, "mid-longhorn: after cluster write", False),
    "mid-flux-apply": lambda ps: _middle(ps, "mid-flux: after cluster write", False),
    "after-deploy-key-registered": lambda ps: _first(ps, "mid-repository: after", "/keys #1", False),
    "mid-push-after-receive-pack": lambda ps: _first(ps, "mid-push: after push", "receive-pack #1", False),
    "mid-push-before-receive-pack": lambda ps: _first(ps, "mid-push: before push", "receive-pack #1", False),
    "mid-restore-secrets": lambda ps: _middle(ps, "mid-restore-secrets: after cluster write", True),
    "mid-restore-bundle-push": lambda ps: _first(ps, "mid-push: before push", "receive-pack #1", True),
}


@dataclass
class Attempt:
    point: str
    killed_at: str | None
    problems: list[str]


def crash_and_resume(ref: Reference, point: Point) -> Attempt:
    """SIGKILL a bootstrap (or a restore) at ``point``, re-run it, and list what did not converge."""
    extra = ("--restore", str(ref.archive)) if point.restore else ()
    expected = ref.restore_objects if point.restore else ref.objects
    h = ref.homelab("restore" if point.restore else "crash")
    problems: list[str] = []
    try:
        rule = point.rule()
        first = h.bootstrap(*extra, rule=rule)
        if first.hung:
            problems.append("the killed run hung")
        elif rule.fired is None:
            problems.append(f"the kill point was never reached (exit {first.code})")
        again = h.bootstrap(*extra)
        if again.code != 0:
            problems.append(f"the re-run failed (exit {again.code}): {again.err.strip().splitlines()[-3:]}")
        problems += converged(h, expected)
        problems += [f"secret on disk: {leak}" for leak in leaked_files(h, extra_roots=[ref.worktree],
                                                                        skip=[ref.archive])]
        problems += [f"secret in output: {leak}" for leak in leaked_output(h)]
        killed_at = rule.fired.label if rule.fired else None
    finally:
        h.stop()
    return Attempt(point.name, killed_at, problems)


@pytest.mark.parametrize("which", list(DEFAULT_POINTS))
def test_a_bootstrap_killed_then_re_run_converges_to_the_reference_state(reference, which):
    point = DEFAULT_POINTS[which](all_points(reference))
    attempt = crash_and_resume(reference, point)
    assert attempt.killed_at is not None, attempt
    assert attempt.problems == [], f"{point.name}: killed at {attempt.killed_at}"


@slow
def test_every_kill_point_of_a_bootstrap_and_a_restore_converges(reference, tmp_path):
    points = all_points(reference)
    attempts = [crash_and_resume(reference, p) for p in points]
    failed = [a for a in attempts if a.problems]
    figures = {"points tried": len(attempts),
               "points converged": len(attempts) - len(failed),
               "bootstrap points": sum(not p.restore for p in points),
               "restore points": sum(p.restore for p in points),
               "failures": [{"point": a.point, "killed at": a.killed_at, "problems": a.problems} for a in failed]}
    _report("crash-and-resume", figures)
    assert failed == []


# --------------------------------------------------------------------------- API faults


@dataclass
class FaultRun:
    seed: int
    faults: list[str]
    outcome: str  # "converged" | "stopped cleanly, then converged" | "failed: ..."


def faulty_bootstrap(ref: Reference, seed: int) -> FaultRun:
    """A fresh cluster, 1 to 4 seeded faults at random request indices, and a bootstrap. A run that
    stops must say why (✗ error: + fix:, no traceback) and a re-run without faults must finish."""
    rng = random.Random(seed)
    requests = sum(1 for r in ref.trace if r.side == "k8s")
    faults = random_faults(rng, requests=requests, count=rng.randint(1, 4))
    h = ref.homelab(f"faults-{seed}")
    plan = FaultPlan(h.lab, faults)
    h.interceptor.listeners.append(plan)
    try:
        first = h.bootstrap()
        applied = [f"{f}@{where}" for f, where in plan.applied]
        h.interceptor.listeners.remove(plan)
        h.lab.emu.clear_faults()
        if first.hung:
            return FaultRun(seed, applied, "failed: hung")
        leaks = leaked_output(h)
        if leaks:
            return FaultRun(seed, applied, f"failed: secret in output: {leaks}")
        if first.code == 0:
            problems = converged(h, ref.objects)
            return FaultRun(seed, applied, "converged" if not problems else f"failed: exit 0 but {problems}")
        unclear = clean_failure(first)
        if unclear:
            return FaultRun(seed, applied, f"failed: stopped with {', '.join(unclear)}: {first.err[-800:]}")
        again = h.bootstrap()
        problems = converged(h, ref.objects) if again.code == 0 else [f"re-run exit {again.code}: {again.err[-400:]}"]
        problems += [f"secret in output: {leak}" for leak in leaked_output(h)]
        if problems:
            return FaultRun(seed, applied, f"failed: after a clean stop ({_error_line(first.err)}), {problems}")
        return FaultRun(seed, applied, f"stopped cleanly, then converged ({_error_line(first.err)})")
    finally:
        h.stop()


def _error_line(err: str) -> str:
    return next((line for line in err.splitlines() if line.startswith("✗ error:")), "?")


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_a_bootstrap_under_api_faults_converges_or_stops_cleanly_and_a_re_run_converges(reference, seed):
    run = faulty_bootstrap(reference, seed)
    assert not run.outcome.startswith("failed"), run


@slow
def test_one_hundred_seeded_fault_runs(reference):
    runs = [faulty_bootstrap(reference, seed) for seed in range(100, 200)]
    figures = {
        "runs": len(runs),
        "converged first time": sum(r.outcome == "converged" for r in runs),
        "stopped cleanly, then converged on re-run": sum(r.outcome.startswith("stopped cleanly") for r in runs),
        "failed": sum(r.outcome.startswith("failed") for r in runs),
        "faults applied": sum(len(r.faults) for r in runs),
        "stopped with no persistent (8x) fault among its faults": sum(
            r.outcome.startswith("stopped cleanly") and not any("x8@" in f for f in r.faults) for r in runs),
        "clean stops": sorted({r.outcome.split("(", 1)[1][:120] for r in runs
                               if r.outcome.startswith("stopped cleanly")}),
        "failures": [{"seed": r.seed, "faults": r.faults, "outcome": r.outcome[:600]}
                     for r in runs if r.outcome.startswith("failed")],
    }
    _report("api-faults", figures)
    assert figures["failed"] == 0


# --------------------------------------------------------------------------- regressions


def test_a_successful_bootstrap_prints_no_traceback(reference):
    """Was: port-forward connection handlers ended cancelled and asyncio (3.11) logged a CancelledError
    traceback on stderr in every bootstrap (found by these tests, fixed in kube/portforward.py)."""
    h = reference.homelab("traceback")
    try:
        result = h.bootstrap()
    finally:
        h.stop()
    assert result.code == 0, result.err
    assert "Traceback" not in result.err, result.err[:3000]


def _report(name: str, figures: dict[str, Any]) -> None:
    text = json.dumps(figures, indent=2)
    print(f"\n{name}: {text}")
    target = os.environ.get("SEEDBED_RELIABILITY_REPORT")
    if target:
        with open(target, "a") as f:
            f.write(json.dumps({name: figures}) + "\n")
