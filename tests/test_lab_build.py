"""The lab's kustomize-controller builds with the real kustomize, as kustomize-controller builds with the
kustomize it embeds (fluxcd/pkg kustomize/kustomize_generator.go: a kustomization generated for a folder
without one; targetNamespace, patches, images and components of the Flux Kustomization on top), so a
test repository is applied as Flux would apply it, not as a list of files."""

from __future__ import annotations

import textwrap
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("seedbed_lab.emulator", reason="the lab (seedbed_lab, the demo extra) is not installed")
from seedbed_lab.lab import Lab

KS_API = "kustomize.toolkit.fluxcd.io/v1"
REVISION = "1" * 40


@pytest.fixture
def lab(kustomize_lab: Lab) -> Lab:
    return kustomize_lab


def reconcile(lab: Lab, tree: Path, spec: dict[str, Any]) -> dict[str, Any]:
    lab._trees[REVISION] = tree
    lab.emu.put({"apiVersion": KS_API, "kind": "Kustomization", "metadata": {"name": "apps", "namespace": "flux-system"},
                 "spec": {"interval": "10m", "prune": True, "sourceRef": {"kind": "GitRepository", "name": "flux-system"},
                          **spec}})
    lab.reconcile_kustomization("flux-system", "apps", f"main@sha1:{REVISION}")
    [ready] = lab.emu.get(KS_API, "Kustomization", "apps", "flux-system")["status"]["conditions"]
    return ready


def write(root: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(textwrap.dedent(text))
    return root


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
    ready = reconcile(lab, tree, {"path": "./apps", "targetNamespace": "apps", "patches": [{
        "target": {"kind": "ConfigMap", "name": "web-settings"},
        "patch": "- op: replace\n  path: /data/mode\n  value: prod\n"}]})
    assert ready["status"] == "True", ready
    web = lab.emu.get("v1", "ConfigMap", "web-settings", "apps")
    assert web is not None and web["data"] == {"mode": "prod"} and web["metadata"]["labels"]["app"] == "web"
    assert lab.emu.get("v1", "ConfigMap", "loose", "apps") is not None  # the generated kustomization's file
    assert lab.emu.get("v1", "ConfigMap", "settings", "flux-system") is None


def test_a_path_kustomize_cannot_build_fails_the_kustomization_with_kustomizes_reason(lab: Lab, tmp_path: Path):
    tree = write(tmp_path / "tree", {"apps/kustomization.yaml": "resources: [missing.yaml]\n"})
    ready = reconcile(lab, tree, {"path": "./apps"})
    assert (ready["status"], ready["reason"]) == ("False", "BuildFailed")
    assert ready["message"].startswith("kustomize build failed: ") and "missing.yaml" in ready["message"]
    ready = reconcile(lab, tree, {"path": "./nowhere"})
    assert ready["message"] == "kustomize build failed: kustomization path not found: stat nowhere: no such file or directory"
