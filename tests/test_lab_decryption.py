"""The lab's kustomize-controller decrypts as kustomize-controller v1.9.4 (Flux v2.9.3) does, so that
tests of SOPS repositories test seedbed and not the lab: ``internal/decryptor/decryptor.go``
(ImportKeys, DecryptResource, detectFormatFromMarkerBytes) and ``internal/controller/
kustomization_controller.go`` (build failures are reason BuildFailed; an encrypted Secret left
encrypted stops the apply). The files are encrypted at test time with the real sops CLI to real age
keys; the lab decrypts with the same binary."""

from __future__ import annotations

import base64
import os
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

pytest.importorskip("seedbed_lab.emulator", reason="the lab (seedbed_lab, the demo extra) is not installed")
from conftest import reconcile_apps
from seedbed_lab.lab import Lab
from test_flux_repos import age_key, encrypt, sops_binary

PLAIN = "hunter2-" + "5c1e"


@pytest.fixture
def lab(kustomize_lab: Lab) -> Lab:
    return kustomize_lab


def reconcile(lab: Lab, tree: Path, *, decryption: str | None) -> dict[str, Any]:
    """Kustomization flux-system/apps over ``tree``, reconciled once; its Ready condition."""
    spec = {"decryption": {"provider": "sops", "secretRef": {"name": decryption}}} if decryption else {}
    return reconcile_apps(lab, tree, spec)


def key_secret(lab: Lab, keys: Path) -> None:
    lab.emu.put({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "sops-age", "namespace": "flux-system"},
                 "data": {"age.agekey": base64.b64encode(keys.read_bytes()).decode()}})


def secret_tree(tmp_path: Path, recipient: str) -> Path:
    tree = tmp_path / "tree"
    tree.mkdir()
    (tree / "namespace.yaml").write_text("apiVersion: v1\nkind: Namespace\nmetadata:\n  name: lldap\n")
    (tree / "secret.sops.yaml").write_text(yaml.safe_dump({
        "apiVersion": "v1", "kind": "Secret", "metadata": {"name": "lldap-credentials", "namespace": "lldap"},
        "stringData": {"LLDAP_LDAP_USER_PASS": PLAIN}}))
    encrypt(tree / "secret.sops.yaml", recipient)
    return tree


def test_a_file_encrypted_to_another_key_fails_the_build_and_nothing_is_applied(lab: Lab, tmp_path: Path) -> None:
    age_key(tmp_path / "keys.txt")
    other = age_key(tmp_path / "other.txt")
    key_secret(lab, tmp_path / "keys.txt")
    ready = reconcile(lab, secret_tree(tmp_path, other), decryption="sops-age")
    assert (ready["status"], ready["reason"]) == ("False", "BuildFailed")
    assert ready["message"].startswith(
        "decryption failed for 'Secret.v1.[noGrp]/lldap-credentials': failed to decrypt and format "
        "'lldap/lldap-credentials' Secret data: cannot get sops data key")
    assert lab.emu.get("v1", "Namespace", "lldap") is None  # a build failure applies nothing


def test_an_encrypted_secret_under_a_kustomization_without_decryption_is_refused(lab: Lab, tmp_path: Path) -> None:
    ready = reconcile(lab, secret_tree(tmp_path, age_key(tmp_path / "keys.txt")), decryption=None)
    assert (ready["status"], ready["reason"], ready["message"]) == (
        "False", "ReconciliationFailed", "Secret/lldap/lldap-credentials is SOPS encrypted, configuring decryption "
                                         "is required for this secret to be reconciled")
    assert lab.emu.get("v1", "Secret", "lldap-credentials", "lldap") is None


def test_a_decryption_secret_with_a_damaged_age_key_fails_the_build_naming_the_key(lab: Lab, tmp_path: Path) -> None:
    (tmp_path / "keys.txt").write_text("not an identity\n")
    key_secret(lab, tmp_path / "keys.txt")
    ready = reconcile(lab, secret_tree(tmp_path, age_key(tmp_path / "other.txt")), decryption="sops-age")
    assert (ready["reason"], ready["message"]) == (
        "BuildFailed", "failed to import 'age.agekey' data from sops decryption Secret 'flux-system/sops-age': "
                       "error at line 1: malformed secret key")


def test_a_secret_value_encrypted_as_a_dotenv_file_is_decrypted_in_place(lab: Lab, tmp_path: Path) -> None:
    """A Secret whose data value is a whole SOPS file (e.g. from a secretGenerator): decrypted field by
    field, in the format the key's name says (DecryptResource, the Secret data branch)."""
    recipient = age_key(tmp_path / "keys.txt")
    key_secret(lab, tmp_path / "keys.txt")
    env_file = tmp_path / "app.env"
    env_file.write_text(f"DB_PASSWORD={PLAIN}\n")
    encrypted = subprocess.run([sops_binary(), "--encrypt", "--age", recipient, str(env_file)], check=True,
                               capture_output=True, env={**os.environ, "SOPS_AGE_KEY": ""}).stdout
    assert PLAIN.encode() not in encrypted
    tree = tmp_path / "tree"
    tree.mkdir()
    (tree / "secret.yaml").write_text(yaml.safe_dump({
        "apiVersion": "v1", "kind": "Secret", "metadata": {"name": "app", "namespace": "flux-system"},
        "data": {"app.env": base64.b64encode(encrypted).decode()}}))
    ready = reconcile(lab, tree, decryption="sops-age")
    assert ready["reason"] == "ReconciliationSucceeded", ready
    stored = lab.emu.get("v1", "Secret", "app", "flux-system")
    assert base64.b64decode(stored["data"]["app.env"]).decode() == f"DB_PASSWORD={PLAIN}\n"


def test_a_secret_encrypted_to_a_gpg_key_is_decrypted_with_the_armored_key_of_the_decryption_secret(
        lab: Lab, tmp_path: Path, gpg_key: tuple[Path, str]) -> None:
    """ImportKeys: a data key ending in .asc is an armored OpenPGP key, imported into a keyring of the
    controller's own; sops then decrypts a file encrypted to its fingerprint (`sops -e --pgp FPR`)."""
    armored, fingerprint = gpg_key
    tree = tmp_path / "tree"
    tree.mkdir()
    (tree / "secret.sops.yaml").write_text(yaml.safe_dump({
        "apiVersion": "v1", "kind": "Secret", "metadata": {"name": "gpg-app", "namespace": "flux-system"},
        "stringData": {"password": PLAIN}}))
    subprocess.run([sops_binary(), "--encrypt", "--pgp", fingerprint, "--encrypted-regex", "^(data|stringData)$",
                    "--in-place", str(tree / "secret.sops.yaml")], check=True, capture_output=True,
                   env={**os.environ, "GNUPGHOME": str(tmp_path / "gnupg")})
    assert PLAIN not in (tree / "secret.sops.yaml").read_text()
    lab.emu.put({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "sops-gpg", "namespace": "flux-system"},
                 "data": {"sops.asc": base64.b64encode(armored.read_bytes()).decode()}})
    ready = reconcile(lab, tree, decryption="sops-gpg")
    assert ready["reason"] == "ReconciliationSucceeded", ready
    stored = lab.emu.get("v1", "Secret", "gpg-app", "flux-system")
    assert base64.b64decode(stored["data"]["password"]).decode() == PLAIN
