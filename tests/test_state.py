"""What seedbed keeps on the cluster (seedbed.state), read back as hostile input."""

from __future__ import annotations

import json

import pytest

from seedbed import state
from seedbed.config import ClusterConfig
from seedbed.kube import Kube


class Out:
    def __init__(self) -> None:
        self.warnings: list[str] = []

    def warn(self, line: str) -> None:
        self.warnings.append(line)


async def records(kubeconfig) -> tuple[state.StepRecords, Out]:
    out = Out()
    async with await Kube.connect(ClusterConfig(kubeconfig=str(kubeconfig))) as kube:
        loaded = state.StepRecords(kube, out)  # type: ignore[arg-type]
        await loaded.load()
    return loaded, out


@pytest.mark.parametrize("raw", [
    "{not json", json.dumps([1, 2]), json.dumps({"commit": "c", "inputs": "i", "summary": "s"}),
    json.dumps({"commit": "c", "inputs": "i", "summary": "s", "warnings": "one line"}),
    json.dumps({"commit": 1, "inputs": "i", "summary": "s", "warnings": []}),
    json.dumps({"commit": "c", "inputs": "i", "summary": "s", "warnings": ["w"] * 51}),
])
async def test_a_damaged_check_memo_means_the_check_runs_again_without_a_warning(emulator, kubeconfig, raw):
    emulator.put({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": state.STATE_CONFIGMAP,
                                                                         "namespace": state.NAMESPACE},
                  "data": {"check.check-handoff": raw}})
    loaded, out = await records(kubeconfig)
    assert loaded.check("check-handoff") is None and out.warnings == []


async def test_a_check_memo_reads_back_and_is_not_taken_for_a_step(emulator, kubeconfig):
    memo = state.CheckMemo("a" * 40, "sha256:" + "b" * 64, ("apps/x.yaml:3: a warning",), "safe")
    async with await Kube.connect(ClusterConfig(kubeconfig=str(kubeconfig))) as kube:
        await state.StepRecords(kube, Out()).record_check("check-handoff", memo)  # type: ignore[arg-type]
    loaded, out = await records(kubeconfig)
    assert loaded.check("check-handoff") == memo
    assert loaded.digest("check.check-handoff") is None and out.warnings == []
