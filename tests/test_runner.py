"""The step runner (steps/base.py run_steps): a re-run checks its finished steps all at once, yet
says and does everything in the order of the steps, as a run that checked them one by one would."""

from __future__ import annotations

import asyncio
import io
from types import SimpleNamespace
from typing import Any

import pytest

from seedbed.errors import ClusterError
from seedbed.output import Output
from seedbed.steps.base import Outcome, Planned, Step, StepFailed, all_hold, run_steps


class Cluster:
    """What the fake steps read and write, and the order things happened in."""

    def __init__(self, done: set[str]) -> None:
        self.done = set(done)
        self.events: list[str] = []
        self.checking = 0
        self.most_checking = 0


class FakeStep(Step):
    record = True

    def __init__(self, name: str, cluster: Cluster, *, record: bool = True, fails: bool = False,
                 broken_check: bool = False) -> None:
        self.name = name  # type: ignore[misc]
        self.title = name.title()  # type: ignore[misc]
        self.record = record  # type: ignore[misc]
        self.cluster = cluster
        self.fails = fails
        self.broken_check = broken_check

    async def verify(self, ctx: Any, planned: Any) -> bool:
        c = self.cluster
        c.checking += 1
        c.most_checking = max(c.most_checking, c.checking)
        try:
            await asyncio.sleep(0.01)  # a read on the link
            if self.broken_check:
                raise ClusterError(f"{self.name}: damaged", fix="repair it")
            c.events.append(f"checked {self.name}: {self.name in c.done}")
            return self.name in c.done
        finally:
            c.checking -= 1

    async def run(self, ctx: Any, planned: Planned) -> Outcome:
        if self.fails:
            raise ClusterError(f"{self.name} broke", fix="mend it")
        self.cluster.events.append(f"ran {self.name}")
        self.cluster.done.add(self.name)
        # A step's run can undo what a later step did (here: the next one must be done again).
        self.cluster.done.discard(f"after-{self.name}")
        return Outcome(True, "done")


class Records:
    def __init__(self, names: list[str]) -> None:
        self.digests = {n: Planned().digest() for n in names}

    def digest(self, name: str) -> str | None:
        return self.digests.get(name)

    async def record(self, name: str, digest: str) -> None:
        self.digests[name] = digest


def run(steps: list[FakeStep], records: list[str]) -> tuple[list[str], list[Any]]:
    stream = io.StringIO()
    ctx = SimpleNamespace(out=Output(stream=stream, color=False), options=SimpleNamespace(dry_run=False))
    reports = asyncio.run(run_steps([(s, Planned()) for s in steps], ctx, Records(records)))  # type: ignore[arg-type]
    return stream.getvalue().splitlines(), reports


def test_a_finished_run_checks_every_step_at_once_and_reports_them_in_order() -> None:
    names = ["longhorn", "flux", "git-server", "repository"]
    cluster = Cluster(set(names))
    steps = [FakeStep("preflight", cluster, record=False), *(FakeStep(n, cluster) for n in names)]
    lines, reports = run(steps, names)
    assert cluster.most_checking == len(names)  # all checks in flight together
    assert lines == ["► Preflight", "✔ Preflight: done", *(f"◎ {n.title()}: unchanged" for n in names)]
    assert [r.status for r in reports] == ["changed", "unchanged", "unchanged", "unchanged", "unchanged"]


def test_a_rerun_resumes_at_the_first_step_not_done_and_checks_the_later_ones_again_after_it() -> None:
    cluster = Cluster({"a", "after-b"})  # b is not done; running b undoes after-b
    steps = [FakeStep("a", cluster), FakeStep("b", cluster), FakeStep("after-b", cluster)]
    lines, _ = run(steps, ["a", "b", "after-b"])
    assert lines == ["◎ A: unchanged", "► B", "✔ B: done", "► After-B", "✔ After-B: done"]
    # after-b's early answer (done) was dropped once b ran: it was checked again, after b, and ran.
    assert cluster.events[-3:] == ["ran b", "checked after-b: False", "ran after-b"]


def test_a_failing_step_stops_the_run_and_no_check_started_ahead_outlives_it() -> None:
    cluster = Cluster({"c"})
    steps = [FakeStep("a", cluster, fails=True), FakeStep("b", cluster), FakeStep("c", cluster)]
    with pytest.raises(StepFailed, match="step 'a' failed: a broke"):
        run(steps, ["b", "c"])
    assert cluster.checking == 0


def test_an_error_in_a_check_ahead_is_raised_only_when_its_step_is_reached() -> None:
    cluster = Cluster({"a"})
    steps = [FakeStep("a", cluster), FakeStep("b", cluster, fails=True), FakeStep("c", cluster, broken_check=True)]
    # b runs (and fails) before c is reached: c's damaged check is never the error the user sees.
    with pytest.raises(StepFailed, match="step 'b' failed"):
        run(steps, ["a", "c"])
    cluster = Cluster({"a"})
    with pytest.raises(ClusterError, match="c: damaged"):
        run([FakeStep("a", cluster), FakeStep("c", cluster, broken_check=True)], ["a", "c"])


def test_all_hold_answers_as_in_order_while_reading_at_once() -> None:
    async def check(value: bool | Exception, delay: float) -> bool:
        await asyncio.sleep(delay)
        if isinstance(value, Exception):
            raise value
        return value

    # The first failing check in order decides, even when a later one errs or answers first.
    assert asyncio.run(all_hold(check(True, 0.02), check(False, 0.01), check(ClusterError("x"), 0))) is False
    with pytest.raises(ClusterError):
        asyncio.run(all_hold(check(True, 0), check(ClusterError("x"), 0.01), check(False, 0)))
    assert asyncio.run(all_hold(check(True, 0.01), check(True, 0))) is True
