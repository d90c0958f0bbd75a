"""kubectl (the real binary) against the emulator: the fidelity check of discovery, OpenAPI, SSA, watch."""

from __future__ import annotations

import json
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from seedbed_lab.emulator import Emulator

KUBECTL = shutil.which("kubectl")
pytestmark = pytest.mark.skipif(KUBECTL is None, reason="kubectl is not on PATH: the kubectl fidelity tests need it")

BUNDLES = ("longhorn-v1.12.1.yaml", "flux-gotk-components-v2.9.3.yaml", "cert-manager-v1.18.0.yaml")


def make_kubectl(kubeconfig: Path, tmp_path: Path) -> Callable[..., subprocess.CompletedProcess[str]]:
    def run(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        # A private --cache-dir: discovery caches must not leak between emulators (ports are reused).
        cmd = [str(KUBECTL), "--kubeconfig", str(kubeconfig), "--cache-dir", str(tmp_path / "kube-cache"), *args]
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
        if check:
            assert proc.returncode == 0, f"{' '.join(args)}\nstdout: {proc.stdout[-2000:]}\nstderr: {proc.stderr[-3000:]}"
        return proc
    return run


def all_versions(emu: Emulator) -> dict[tuple[str, str, str, str], str]:
    def snapshot() -> dict[tuple[str, str, str, str], str]:
        return {(g, r, ns, name): o["metadata"]["resourceVersion"]
                for (g, r), bucket in emu.store.objects.items() for (ns, name), o in bucket.items()}
    return emu._call(snapshot)  # type: ignore[no-any-return]


def test_server_side_apply_of_upstream_bundles(emulator: Emulator, kubeconfig: Path, upstream: Callable[[str], Path],
                                               tmp_path: Path) -> None:
    kubectl = make_kubectl(kubeconfig, tmp_path)
    paths = [upstream(name) for name in BUNDLES]
    for path in paths:
        out = kubectl("apply", "--server-side", "--field-manager=test", "-f", str(path)).stdout
        assert "serverside-applied" in out
        assert "error" not in out.lower()

    crds = kubectl("get", "crds").stdout
    for name in ("volumes.longhorn.io", "gitrepositories.source.toolkit.fluxcd.io", "certificates.cert-manager.io"):
        assert name in crds
    deploys = kubectl("get", "deploy", "-A").stdout
    for name in ("longhorn-ui", "source-controller", "kustomize-controller", "cert-manager-webhook"):
        assert name in deploys
    emulator.settle()
    ds = json.loads(kubectl("-n", "longhorn-system", "get", "ds", "longhorn-manager", "-o", "json").stdout)
    assert ds["status"]["numberReady"] == ds["status"]["desiredNumberScheduled"] == 1
    assert ds["status"]["observedGeneration"] == ds["metadata"]["generation"]
    crd = json.loads(kubectl("get", "crd", "kustomizations.kustomize.toolkit.fluxcd.io", "-o", "json").stdout)
    assert {c["type"]: c["status"] for c in crd["status"]["conditions"]}["Established"] == "True"

    # A second apply of the same bundles changes nothing: no resourceVersion moves, no write.
    before, rv = all_versions(emulator), emulator.store.rv
    emulator.reset_requests()
    for path in paths:
        kubectl("apply", "--server-side", "--field-manager=test", "-f", str(path))
    emulator.settle()
    assert all_versions(emulator) == before
    assert emulator.store.rv == rv and emulator.writes() == 0
    # kubectl used OpenAPI v3 to learn that the server validates fields; it never needed v2.
    paths_seen = {r.path for r in emulator.requests}
    assert "/openapi/v2" not in paths_seen


def test_kubectl_everyday_commands(emulator: Emulator, kubeconfig: Path, tmp_path: Path) -> None:
    kubectl = make_kubectl(kubeconfig, tmp_path)
    manifest = tmp_path / "demo.yaml"
    manifest.write_text("""
apiVersion: v1
kind: Namespace
metadata: {name: demo}
---
apiVersion: v1
kind: ConfigMap
metadata: {name: settings, namespace: demo}
data: {a: "1"}
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: web, namespace: demo}
spec:
  replicas: 2
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec: {containers: [{name: web, image: "nginx:1"}]}
""")
    kubectl("create", "-f", str(manifest))
    got = json.loads(kubectl("-n", "demo", "get", "configmap", "settings", "-o", "json").stdout)
    assert got["data"] == {"a": "1"}
    kubectl("-n", "demo", "label", "configmap", "settings", "tier=web")
    assert "settings" in kubectl("-n", "demo", "get", "cm", "-l", "tier=web").stdout
    kubectl("-n", "demo", "patch", "configmap", "settings", "-p", '{"data": {"b": "2"}}')
    assert emulator.get("v1", "ConfigMap", "settings", "demo")["data"] == {"a": "1", "b": "2"}
    # rollout status and wait both watch
    assert "successfully rolled out" in kubectl("-n", "demo", "rollout", "status", "deployment/web",
                                                "--timeout=60s").stdout
    kubectl("-n", "demo", "wait", "--for=condition=Available", "deployment/web", "--timeout=60s")
    pods = kubectl("-n", "demo", "get", "pods", "-l", "app=web", "-o", "name").stdout.split()
    assert len(pods) == 2
    kubectl("delete", "namespace", "demo", "--timeout=60s")
    assert kubectl("get", "namespace", "demo", check=False).returncode != 0
    # typed `kubectl create <kind>` sends protobuf, which the emulator refuses clearly (SIMPLIFICATIONS.md)
    proc = kubectl("create", "namespace", "typed", check=False)
    assert proc.returncode != 0 and "protobuf" in proc.stderr


def test_kubectl_with_tls_and_token(tmp_path: Path) -> None:
    with Emulator(tls=True, token="t0ken") as emu:
        kubectl = make_kubectl(emu.write_kubeconfig(tmp_path / "kc"), tmp_path)
        assert "default" in kubectl("get", "namespaces").stdout
        bad = emu.write_kubeconfig(tmp_path / "bad")
        bad.write_text(bad.read_text().replace("t0ken", "wrong"))
        proc = make_kubectl(bad, tmp_path / "other")("get", "namespaces", check=False)
        assert proc.returncode != 0 and "must be logged in" in proc.stderr  # kubectl's words for a 401
