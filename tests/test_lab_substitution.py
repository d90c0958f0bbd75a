"""The lab's kustomize-controller substitutes postBuild variables as kustomize-controller does, so that
tests of repositories with variables test seedbed and not the lab: fluxcd/pkg kustomize/kustomize_varsub.go
(kustomize v1.39.0: LoadVariables, SubstituteVariables, varSubstitution) and kustomization_controller.go
(a failure is reason BuildFailed, "post build failed for 'NAME': ...", and nothing is applied)."""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("seedbed_lab.emulator", reason="the lab (seedbed_lab, the demo extra) is not installed")
from seedbed_lab.lab import Lab

KS_API = "kustomize.toolkit.fluxcd.io/v1"
REVISION = "0" * 40


@pytest.fixture
def lab(kustomize_lab: Lab) -> Lab:
    return kustomize_lab


def reconcile(lab: Lab, tree: Path, post_build: dict[str, Any]) -> dict[str, Any]:
    """Kustomization flux-system/apps over ``tree`` with ``post_build``, reconciled once; its Ready condition."""
    lab._trees[REVISION] = tree
    lab.emu.put({"apiVersion": KS_API, "kind": "Kustomization", "metadata": {"name": "apps", "namespace": "flux-system"},
                 "spec": {"interval": "10m", "path": "./", "prune": True, "postBuild": post_build,
                          "sourceRef": {"kind": "GitRepository", "name": "flux-system"}}})
    lab.reconcile_kustomization("flux-system", "apps", f"main@sha1:{REVISION}")
    [ready] = lab.emu.get(KS_API, "Kustomization", "apps", "flux-system")["status"]["conditions"]
    return ready


def tree(tmp_path: Path, data: str) -> Path:
    (tmp_path / "tree").mkdir()
    (tmp_path / "tree/cm.yaml").write_text(
        f"apiVersion: v1\nkind: ConfigMap\nmetadata: {{name: cm, namespace: flux-system}}\ndata: {data}\n")
    return tmp_path / "tree"


def applied(lab: Lab) -> dict[str, str] | None:
    cm = lab.emu.get("v1", "ConfigMap", "cm", "flux-system")
    return None if cm is None else cm["data"]


def test_values_come_from_configmaps_and_secrets_in_order_then_inline_and_unset_is_empty(lab: Lab, tmp_path: Path) -> None:
    lab.emu.put({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "vars", "namespace": "flux-system"},
                 "data": {"DOMAIN": "example.com", "APP": "from-configmap"}})
    lab.emu.put({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "secret-vars", "namespace": "flux-system"},
                 "data": {"APP": base64.b64encode(b"from-secret\n").decode()}})
    ready = reconcile(lab, tree(tmp_path, "{host: '${APP}.${DOMAIN/./-}', port: 'p${PORT}', team: '${TEAM}'}"), {
        "substituteFrom": [{"kind": "ConfigMap", "name": "vars"}, {"kind": "Secret", "name": "secret-vars"}],
        "substitute": {"TEAM": "ops"}})
    assert ready["status"] == "True", ready
    assert applied(lab) == {"host": "from-secret.example-com", "port": "p", "team": "ops"}


def test_a_missing_values_source_fails_the_build_unless_it_is_optional(lab: Lab, tmp_path: Path) -> None:
    source = {"kind": "ConfigMap", "name": "absent"}
    ready = reconcile(lab, tree(tmp_path, "{a: '${X:=x}'}"), {"substituteFrom": [source]})
    assert (ready["status"], ready["reason"]) == ("False", "BuildFailed")
    assert ready["message"] == "substitute from 'ConfigMap/absent' error: configmaps \"absent\" not found"
    assert applied(lab) is None
    assert reconcile(lab, tmp_path / "tree", {"substituteFrom": [{**source, "optional": True}],
                                              "substitute": {"X": "set"}})["status"] == "True"
    assert applied(lab) == {"a": "set"}


@pytest.mark.parametrize(("data", "message"), [
    ("{a: '${X-default}'}", "post build failed for 'cm': envsubst error: variable substitution failed: "
                            "missing closing brace"),
    ("{a: '${X}'}", "post build failed for 'cm': envsubst error: 'bad-name' var name is invalid, must match "
                    "'^[_[:alpha:]][_[:alpha:][:digit:]]*$'"),
])
def test_what_flux_cannot_substitute_fails_the_build_and_nothing_is_applied(lab: Lab, tmp_path: Path, data: str,
                                                                           message: str) -> None:
    ready = reconcile(lab, tree(tmp_path, data), {"substitute": {"X": "x", "bad-name": "y"} if "X}" in data
                                                   else {"X": "x"}})
    assert (ready["status"], ready["reason"], ready["message"]) == ("False", "BuildFailed", message)
    assert applied(lab) is None
