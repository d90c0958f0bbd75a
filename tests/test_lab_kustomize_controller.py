"""The lab's kustomize-controller does what kustomize-controller does, so that tests of repositories
test seedbed and not the lab:

- it builds with the real kustomize, as kustomize-controller builds with the kustomize it embeds
  (fluxcd/pkg kustomize/kustomize_generator.go: a kustomization generated for a folder without one;
  targetNamespace, patches, images and components of the Flux Kustomization on top);
- it substitutes postBuild variables as fluxcd/pkg kustomize/kustomize_varsub.go (kustomize v1.35.4, kustomize-controller v1.9.4's:
  LoadVariables, SubstituteVariables, varSubstitution) does;
- a failure is reason BuildFailed with upstream's message, and nothing is applied
  (kustomization_controller.go).

SOPS decryption has its own file (test_lab_decryption.py)."""

from __future__ import annotations

import base64
import textwrap
from pathlib import Path

import pytest

pytest.importorskip("seedbed_lab.emulator", reason="the lab (seedbed_lab, the demo extra) is not installed")
from conftest import reconcile_apps
from seedbed_lab.lab import Lab


@pytest.fixture
def lab(kustomize_lab: Lab) -> Lab:
    return kustomize_lab


def write(root: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(textwrap.dedent(text))
    return root


def tree(tmp_path: Path, data: str) -> Path:
    return write(tmp_path / "tree", {
        "cm.yaml": f"apiVersion: v1\nkind: ConfigMap\nmetadata: {{name: cm, namespace: flux-system}}\ndata: {data}\n"})


def applied(lab: Lab) -> dict[str, str] | None:
    cm = lab.emu.get("v1", "ConfigMap", "cm", "flux-system")
    return None if cm is None else cm["data"]


# --------------------------------------------------------------------------- the build


def test_the_path_is_built_by_kustomize_with_the_flux_kustomizations_namespace_and_patches(lab: Lab, tmp_path: Path):
    tree = write(tmp_path / "tree", {
        "apps/web/kustomization.yaml": """\
            resources: [config.yaml]
            namePrefix: web-
            labels:
              - pairs: {app: web}
            """,
        "apps/web/config.yaml": "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: settings}\ndata: {mode: dev}\n",
        "apps/loose.yaml": "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: loose}\ndata: {a: b}\n",
    })
    lab.emu.put({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "apps"}})
    ready = reconcile_apps(lab, tree, {"path": "./apps", "targetNamespace": "apps", "patches": [{
        "target": {"kind": "ConfigMap", "name": "web-settings"},
        "patch": "- op: replace\n  path: /data/mode\n  value: prod\n"}]})
    assert ready["status"] == "True", ready
    web = lab.emu.get("v1", "ConfigMap", "web-settings", "apps")
    assert web is not None and web["data"] == {"mode": "prod"} and web["metadata"]["labels"]["app"] == "web"
    assert lab.emu.get("v1", "ConfigMap", "loose", "apps") is not None  # the generated kustomization's file
    assert lab.emu.get("v1", "ConfigMap", "settings", "flux-system") is None


def test_a_path_kustomize_cannot_build_fails_the_kustomization_with_kustomizes_reason(lab: Lab, tmp_path: Path):
    tree = write(tmp_path / "tree", {"apps/kustomization.yaml": "resources: [missing.yaml]\n"})
    ready = reconcile_apps(lab, tree, {"path": "./apps"})
    assert (ready["status"], ready["reason"]) == ("False", "BuildFailed")
    assert ready["message"].startswith("kustomize build failed: ") and "missing.yaml" in ready["message"]
    # Checked before the build (kustomize-controller v1.9.4 kustomization_controller.go): ArtifactFailed.
    ready = reconcile_apps(lab, tree, {"path": "./nowhere"})
    assert (ready["status"], ready["reason"]) == ("False", "ArtifactFailed")
    assert ready["message"] == f"kustomization path not found: stat {tree / 'nowhere'}: no such file or directory"


# --------------------------------------------------------------------------- postBuild substitution


def test_values_come_from_configmaps_and_secrets_in_order_then_inline_and_unset_is_empty(lab: Lab, tmp_path: Path) -> None:
    lab.emu.put({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "vars", "namespace": "flux-system"},
                 "data": {"DOMAIN": "example.com", "APP": "from-configmap"}})
    lab.emu.put({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "secret-vars", "namespace": "flux-system"},
                 "data": {"APP": base64.b64encode(b"from-secret\n").decode()}})
    ready = reconcile_apps(lab, tree(tmp_path, "{host: '${APP}.${DOMAIN/./-}', port: 'p${PORT}', team: '${TEAM}'}"), {
        "postBuild": {"substituteFrom": [{"kind": "ConfigMap", "name": "vars"}, {"kind": "Secret", "name": "secret-vars"}],
                      "substitute": {"TEAM": "ops"}}})
    assert ready["status"] == "True", ready
    assert applied(lab) == {"host": "from-secret.example-com", "port": "p", "team": "ops"}


def test_a_missing_values_source_fails_the_build_unless_it_is_optional(lab: Lab, tmp_path: Path) -> None:
    source = {"kind": "ConfigMap", "name": "absent"}
    ready = reconcile_apps(lab, tree(tmp_path, "{a: '${X:=x}'}"), {"postBuild": {"substituteFrom": [source]}})
    assert (ready["status"], ready["reason"]) == ("False", "BuildFailed")
    assert ready["message"] == "substitute from 'ConfigMap/absent' error: configmaps \"absent\" not found"
    assert applied(lab) is None
    assert reconcile_apps(lab, tmp_path / "tree", {"postBuild": {"substituteFrom": [{**source, "optional": True}],
                                                            "substitute": {"X": "set"}}})["status"] == "True"
    assert applied(lab) == {"a": "set"}


@pytest.mark.parametrize(("data", "message"), [
    ("{a: '${X-default}'}", "post build failed for 'ConfigMap.v1.[noGrp]/cm': envsubst error: variable "
                            "substitution failed: missing closing brace"),
    ("{a: '${X}'}", "post build failed for 'ConfigMap.v1.[noGrp]/cm': envsubst error: 'bad-name' var name is "
                    "invalid, must match '^[_[:alpha:]][_[:alpha:][:digit:]]*$'"),
])
def test_what_flux_cannot_substitute_fails_the_build_and_nothing_is_applied(lab: Lab, tmp_path: Path, data: str,
                                                                           message: str) -> None:
    ready = reconcile_apps(lab, tree(tmp_path, data), {"postBuild": {"substitute": {"X": "x", "bad-name": "y"} if "X}" in data
                                                                else {"X": "x"}}})
    assert (ready["status"], ready["reason"], ready["message"]) == ("False", "BuildFailed", message)
    assert applied(lab) is None


def test_substitute_strategy_always_substitutes_without_a_variable(lab: Lab, tmp_path: Path) -> None:
    """postBuild.substituteStrategy: Always (kustomize-controller v1.9.4 api/v1 GetSubstituteStrategy):
    defaults apply and $$ becomes $ although no variable is defined; the default strategy leaves it."""
    work = tree(tmp_path, "{size: '${SIZE:=1Gi}', price: 'US$$5'}")
    assert reconcile_apps(lab, work, {"postBuild": {"substituteStrategy": "Always"}})["status"] == "True"
    assert applied(lab) == {"size": "1Gi", "price": "US$5"}
    assert reconcile_apps(lab, work, {"postBuild": {}})["status"] == "True"
    assert applied(lab) == {"size": "${SIZE:=1Gi}", "price": "US$$5"}
