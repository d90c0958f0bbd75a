"""What seedbed keeps on the cluster (seedbed.state), read back as hostile input."""

from __future__ import annotations

import json

import pytest

from seedbed import state
from seedbed.config import ClusterConfig
from seedbed.kube import Kube


@pytest.mark.parametrize("raw", [
    "{not json", json.dumps([1, 2]), json.dumps({"commit": "c", "inputs": "i", "summary": "s"}),
    json.dumps({"commit": "c", "inputs": "i", "summary": "s", "warnings": "one line"}),
    json.dumps({"commit": 1, "inputs": "i", "summary": "s", "warnings": []}),
    json.dumps({"commit": "c", "inputs": "i", "summary": "s", "warnings": ["w"] * 51}),
])
async def test_a_damaged_check_memo_means_the_check_runs_again(emulator, kubeconfig, raw):
    emulator.put({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": state.STATE_CONFIGMAP,
                                                                         "namespace": state.NAMESPACE},
                  "data": {"check.check-handoff": raw}})
    async with await Kube.connect(ClusterConfig(kubeconfig=str(kubeconfig))) as kube:
        assert await state.read_check(kube, "check-handoff") is None


async def test_a_check_memo_reads_back_and_is_not_taken_for_a_step(emulator, kubeconfig):
    memo = state.CheckMemo("a" * 40, "sha256:" + "b" * 64, ("apps/x.yaml:3: a warning",), "safe")
    async with await Kube.connect(ClusterConfig(kubeconfig=str(kubeconfig))) as kube:
        await state.record_check(kube, "check-handoff", memo)
        assert await state.read_check(kube, "check-handoff") == memo
        warned: list[str] = []

        class Out:
            warn = staticmethod(warned.append)

        records = state.StepRecords(kube, Out())  # type: ignore[arg-type]
        await records.load()
    assert records.digest("check.check-handoff") is None and warned == []
