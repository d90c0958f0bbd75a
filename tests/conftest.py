"""Shared fixtures: the API-server emulator and the real upstream files."""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from seedbed_lab.upstream import upstream_dir

UPSTREAM = upstream_dir()


def upstream_path(name: str) -> Path:
    """The path of a real upstream file, or skip the test naming the missing file."""
    path = UPSTREAM / name
    if not path.exists():
        pytest.skip(f"upstream fixture {name} not found in {UPSTREAM} (it lives in ../shared/fixtures/upstream/)")
    return path


def run_cli(capsys, *args: str) -> tuple[int, str, str]:
    """Run `seedbed ARGS...` in this process, as the console script does: (exit code, stdout, stderr)."""
    from seedbed.cli import main

    try:
        main(list(args))
        code = 0
    except SystemExit as e:
        code = int(e.code or 0)
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture
def upstream():
    return upstream_path


@pytest.fixture
def emulator() -> Iterator[Emulator]:  # noqa: F821
    from seedbed_lab.emulator import Emulator

    emu = Emulator()
    emu.start()
    try:
        yield emu
    finally:
        emu.stop()


@pytest.fixture
def kubeconfig(emulator, tmp_path) -> Path:
    path = tmp_path / "kubeconfig"
    emulator.write_kubeconfig(path)
    return path


@pytest.fixture
def lab(tmp_path, upstream):
    """A Lab (emulator, fake Gitea, simulated Flux controllers) whose helm-controller renders the real
    Gitea chart: skips, naming the chart, without it. Test modules that need another lab define
    their own ``lab`` fixture, which takes precedence."""
    from seedbed_lab.lab import Lab

    upstream("gitea-chart-12.4.0")
    with Lab(tmp_path) as lab:
        yield lab


# A Flux Kustomization that applies the repository's apps/ folder (the usual layout).
APPS_KUSTOMIZATION = """apiVersion: kustomize.toolkit.fluxcd.io/v1
kind: Kustomization
metadata: {name: apps, namespace: flux-system}
spec:
  interval: 10m
  path: ./apps
  prune: true
  sourceRef: {kind: GitRepository, name: flux-system}
"""


def reconcile_apps(lab, tree: Path, spec: dict) -> dict:
    """Kustomization flux-system/apps over ``tree`` with ``spec`` (besides the usual interval, prune
    and source), reconciled once by the lab's kustomize-controller; its Ready condition."""
    revision = "0" * 40
    lab._trees[revision] = tree
    lab.emu.put({"apiVersion": "kustomize.toolkit.fluxcd.io/v1", "kind": "Kustomization",
                 "metadata": {"name": "apps", "namespace": "flux-system"},
                 "spec": {"interval": "10m", "path": "./", "prune": True,
                          "sourceRef": {"kind": "GitRepository", "name": "flux-system"}, **spec}})
    lab.reconcile_kustomization("flux-system", "apps", f"main@sha1:{revision}")
    [ready] = lab.emu.get("kustomize.toolkit.fluxcd.io/v1", "Kustomization", "apps", "flux-system")["status"]["conditions"]
    return ready


@pytest.fixture
def kustomize_lab(tmp_path, upstream):
    """A Lab whose cluster has only Flux's Kustomization CRD (Flux v2.9.3's) and the flux-system
    namespace: for tests of the simulated kustomize-controller alone."""
    from seedbed import yamlutil
    from seedbed_lab.lab import Lab

    crd = next(d for d in yamlutil.load_all(upstream("flux-gotk-components-v2.9.3.yaml").read_text())
               if d.get("kind") == "CustomResourceDefinition"
               and d["metadata"]["name"] == "kustomizations.kustomize.toolkit.fluxcd.io")
    (tmp_path / "lab").mkdir()
    with Lab(tmp_path / "lab") as lab:
        lab.emu.put(crd)
        lab.emu.put({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "flux-system"}})
        yield lab


@pytest.fixture
def gpg_key(tmp_path) -> Iterator[tuple[Path, str]]:
    """A real GPG private key exported armored, and its fingerprint as gpg prints it (the agent gpg
    starts for the test's keyring is stopped afterwards)."""
    if shutil.which("gpg") is None:
        pytest.skip("gpg is not installed")
    home = tmp_path / "gnupg"
    home.mkdir(mode=0o700)
    env = {**os.environ, "GNUPGHOME": str(home)}
    subprocess.run(["gpg", "--batch", "--quiet", "--pinentry-mode", "loopback", "--passphrase", "", "--quick-gen-key", "flux <flux@lab>",
                    "ed25519", "cert,sign", "never"], check=True, env=env, capture_output=True)
    listing = subprocess.run(["gpg", "--batch", "--with-colons", "--list-keys"], check=True, env=env,
                             capture_output=True, text=True).stdout
    fpr = next(line.split(":")[9] for line in listing.splitlines() if line.startswith("fpr:"))
    subprocess.run(["gpg", "--batch", "--quiet", "--pinentry-mode", "loopback", "--passphrase", "", "--quick-add-key", fpr, "cv25519", "encr", "never"],
                   check=True, env=env, capture_output=True)
    armored = subprocess.run(["gpg", "--batch", "--pinentry-mode", "loopback", "--passphrase", "", "--armor",
                              "--export-secret-keys", fpr], check=True, env=env,
                             capture_output=True, text=True).stdout
    (tmp_path / "flux.asc").write_text(armored)
    yield tmp_path / "flux.asc", fpr
    subprocess.run(["gpgconf", "--kill", "all"], env=env, capture_output=True, check=False)


@pytest.fixture
def fake():
    """A started fake Gitea with the admin user of tests/gitea_helpers.py."""
    from gitea_helpers import ADMIN, PASSWORD
    from seedbed_lab.fake_gitea import FakeGitea

    server = FakeGitea(admin_user=ADMIN, admin_password=PASSWORD).start()
    try:
        yield server
    finally:
        server.stop()
