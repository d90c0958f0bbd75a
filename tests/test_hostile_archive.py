"""Forged and hostile backup archives: nothing they hold is ever written to the cluster.

age gives confidentiality, not authenticity: whoever knows a recipient's public key (it sits in
seedbed.yaml) can write an archive that decrypts and whose hashes agree with its own index. Every
archive here is made that way, by hand, as an attacker would, not by ``seedbed backup``. Each one is
given to ``restore``, ``restore --dry-run`` and ``bootstrap --restore`` against the API emulator, and
each must end in one clear error naming the fix, with the emulator's object store exactly as before.

The archives that pass the signature check (signed by the user's own, trusted key, or let through with
``--insecure-skip-signature``) stand for a trusted writer with a bug, or a user who skipped the check:
the restore validator (seedbed/backup/validate.py) must still refuse what a restore should never create.
"""

from __future__ import annotations

import base64
import copy
import hashlib
import io
import json
import os
import re
import stat
import tarfile
import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import yaml
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from conftest import UPSTREAM, run_cli
from seedbed.backup import archive
from seedbed.backup.signing import SKIP_FLAG, load_signing_key, sign
from seedbed.certs.ledger import Issuance, Ledger

pytest.importorskip("seedbed_lab.emulator", reason="the lab (seedbed_lab, the demo extra) is not installed")

CREATED = "2025-03-01T12:00:00Z"
VALUE = base64.b64encode(b"hostile-secret-value").decode()


@dataclass
class World:
    root: Path
    emu: Any
    config: Path
    recipient: str
    signing_key: Ed25519PrivateKey

    def store(self) -> Any:
        """Every object the emulator holds, deep-copied: compared before and after each run."""
        return self.emu._call(lambda: copy.deepcopy(self.emu.store.objects))


@pytest.fixture
def world(emulator: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> World:
    for var, sub in (("HOME", "home"), ("XDG_CONFIG_HOME", "xdg/config"), ("XDG_STATE_HOME", "xdg/state"),
                     ("XDG_CACHE_HOME", "xdg/cache")):
        (tmp_path / sub).mkdir(parents=True)
        monkeypatch.setenv(var, str(tmp_path / sub))
    keys = tmp_path / "keys"
    keys.mkdir(mode=0o700)
    recipient = archive.keygen(keys / "age.key")  # and keys/signing.key, the user's trusted signing key
    kubeconfig = emulator.write_kubeconfig(tmp_path / "kubeconfig")
    config = tmp_path / "seedbed.yaml"
    config.write_text(yaml.safe_dump({
        "cluster": {"name": "homelab", "kubeconfig": str(kubeconfig)},
        "backup": {"recipients": [recipient], "identityFile": str(keys / "age.key"),
                   "secrets": {"namespaces": ["apps"]}, "includeGitServerVolume": False,
                   "volumes": [{"namespace": "media", "pvc": "library"}]},
    }))
    emulator.put({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "apps"}})
    return World(tmp_path, emulator, config, recipient, load_signing_key(keys / "signing.key"))


# --------------------------------------------------------------------------- forging


def secret(ns: str = "apps", name: str = "db", **extra: Any) -> dict[str, Any]:
    meta = {"name": name, "namespace": ns, **extra.pop("metadata", {})}
    return {"apiVersion": "v1", "kind": "Secret", "type": "Opaque", "metadata": meta, "data": {"pw": VALUE}, **extra}


ADMIN_BINDING = {
    "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
    "metadata": {"name": "seedbed-restore", "namespace": "apps"},
    "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "cluster-admin"},
    "subjects": [{"kind": "ServiceAccount", "name": "default", "namespace": "apps"}],
}
CERTIFICATE = {"apiVersion": "cert-manager.io/v1", "kind": "Certificate",
               "metadata": {"name": "web", "namespace": "apps"},
               "spec": {"secretName": "web-tls", "dnsNames": ["web.example.org"],
                        "issuerRef": {"name": "letsencrypt", "kind": "ClusterIssuer"}}}
VOLUME = {"namespace": "media", "pvc": "library", "volume": "pvc-0b1c", "sizeBytes": 10737418240,
          "url": "s3://backups@us-east-1/lh?backup=b-1&volume=pvc-0b1c", "backup": "b-1"}
GOOD_LEDGER = json.loads(Ledger.merge([Issuance(frozenset({"web.example.org"}), datetime(2025, 2, 1, tzinfo=UTC),
                                                "cluster", serial="0a", ca="production")]).to_json())


def j(obj: Any) -> bytes:
    return json.dumps(obj).encode()


def tar_of(members: list[tuple[str, bytes]], extra: Sequence[tuple[tarfile.TarInfo, bytes]] = ()) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
        for info, data in extra:
            tar.addfile(info, io.BytesIO(data) if data else None)
    return buf.getvalue()


def forge(world: World, members: list[tuple[str, bytes]], *, signer: Ed25519PrivateKey | str | None = "user",
          extra: Sequence[tuple[tarfile.TarInfo, bytes]] = (), cluster: str = "homelab") -> bytes:
    """An archive made with the recipient's public key only: index.json lists every member with its
    true sha256 and size (so it verifies), signed by ``signer`` ("user": the user's trusted key)."""
    index = {"format": "seedbed-backup", "formatVersion": 1, "cluster": cluster, "created": CREATED,
             "seedbedVersion": "0.0.0", "counts": {},
             "entries": {n: {"sha256": hashlib.sha256(d).hexdigest(), "size": len(d), "kind": "Secret"}
                         for n, d in members}}
    raw = archive.dumps(index)
    key = world.signing_key if signer == "user" else signer
    head = [("index.json", raw)] + ([("index.sig", sign(raw, key))] if key is not None else [])  # type: ignore[arg-type]
    return archive.encrypt(tar_of([*head, *members], extra), [world.recipient])


def sparse_member(name: str, size: int) -> tuple[tarfile.TarInfo, bytes]:
    """A PAX 1.0 GNU sparse member: 512 bytes stored, ``size`` bytes of zeros claimed."""
    sparse_map = b"1\n0\n0\n".ljust(512, b"\0")
    info = tarfile.TarInfo(f"GNUSparseFile.0/{name.rsplit('/', 1)[-1]}")
    info.size = len(sparse_map)
    info.pax_headers = {"GNU.sparse.major": "1", "GNU.sparse.minor": "0", "GNU.sparse.name": name,
                        "GNU.sparse.realsize": str(size)}
    return info, sparse_map


# --------------------------------------------------------------------------- running


MODES = ["restore", "restore --dry-run", "bootstrap --restore"]


def run(world: World, capsys: Any, data: bytes, mode: str, *flags: str) -> tuple[int, str]:
    path = world.root / "forged.age"
    path.write_bytes(data)
    if mode == "bootstrap --restore":
        if not (UPSTREAM / "longhorn-v1.12.1.yaml").exists():
            pytest.skip(f"no upstream fixtures in {UPSTREAM}")
        argv = ["bootstrap", "--offline", "--manifests", str(UPSTREAM), "--restore", str(path), *flags]
    else:
        argv = ["restore", str(path), *mode.split()[1:], *flags]
    code, out, err = run_cli(capsys, "-c", str(world.config), *argv)
    return code, out + err


def assert_refused(world: World, capsys: Any, data: bytes, needle: str, *flags: str,
                   fix: str = "") -> None:
    """One clear error (cause and fix, no traceback) in every mode, and not one object written."""
    for mode in MODES:
        before = world.store()
        code, text = run(world, capsys, data, mode, *flags)
        assert code == 1, f"{mode}: exit {code}\n{text[-2000:]}"
        assert "Traceback" not in text, text
        assert len(re.findall(r"error:", text)) == 1, f"{mode}: not one error:\n{text}"
        assert re.search(r"(?m)^\s+fix: \S", text), f"{mode}: no fix:\n{text}"
        assert needle.lower() in text.lower(), f"{mode}: {needle!r} not in:\n{text}"
        assert fix in text, f"{mode}: {fix!r} not in:\n{text}"
        assert "hostile-secret-value" not in text and VALUE not in text
        assert world.store() == before, f"{mode}: the archive wrote to the cluster"


# --------------------------------------------------------------------------- forged: the signature


def test_a_forged_archive_with_only_the_recipient_key_is_refused_naming_the_flag(world: World, capsys: Any) -> None:
    """The issue's escalation: a cluster-admin binding under secrets/, not *.json, in an unsigned archive."""
    data = forge(world, [("secrets/apps/restore.yaml", j(ADMIN_BINDING))], signer=None)
    assert_refused(world, capsys, data, "is not signed", fix=SKIP_FLAG)


def test_an_archive_signed_by_a_key_nobody_trusts_is_refused(world: World, capsys: Any) -> None:
    data = forge(world, [("secrets/apps/db.json", j(secret()))], signer=Ed25519PrivateKey.generate())
    assert_refused(world, capsys, data, "which is not a trusted signer", fix="backup.trustedSigners")


def test_a_genuine_signature_moved_onto_another_index_is_refused(world: World, capsys: Any) -> None:
    genuine = archive.decrypt(forge(world, [("secrets/apps/db.json", j(secret()))]),
                              archive.load_identities([world.root / "keys" / "age.key"]))
    sig = archive.untar(genuine).signature
    assert sig is not None
    forged = [("secrets/apps/db.json", j(secret(data={"pw": base64.b64encode(b"attacker").decode()})))]
    members = archive.untar(archive.decrypt(forge(world, forged, signer=None),
                                            archive.load_identities([world.root / "keys" / "age.key"])))
    data = archive.encrypt(tar_of([("index.json", members.index_raw), ("index.sig", sig), *forged]), [world.recipient])
    assert_refused(world, capsys, data, "does not match index.json")


def test_a_damaged_signature_entry_is_refused(world: World, capsys: Any) -> None:
    raw = b'{"format": "seedbed-signature", "algorithm": "ed25519", "signer": "ssh-ed25519 AAAA", "signature": "x"}'
    members = [("secrets/apps/db.json", j(secret()))]
    index = archive.untar(archive.decrypt(forge(world, members, signer=None),
                                          archive.load_identities([world.root / "keys" / "age.key"]))).index_raw
    data = archive.encrypt(tar_of([("index.json", index), ("index.sig", raw), *members]), [world.recipient])
    assert_refused(world, capsys, data, "index.sig is damaged")


def test_without_any_trusted_key_even_a_signed_archive_is_refused(world: World, capsys: Any) -> None:
    """No backup.trustedSigners and no signing key of one's own: nothing is trusted, and the message says so."""
    (world.root / "keys" / "signing.key").unlink()
    data = forge(world, [("secrets/apps/db.json", j(secret()))])
    assert_refused(world, capsys, data, "no signing key is trusted here", fix="seedbed keygen")


# --------------------------------------------------------------------------- content: kinds, names, types


def _entries(*pairs: tuple[str, Any]) -> list[tuple[str, bytes]]:
    return [(n, v if isinstance(v, bytes) else j(v)) for n, v in pairs]


CONTENT_CASES: list[tuple[str, list[tuple[str, bytes]], str]] = [
    ("binding under secrets, not json", _entries(("secrets/apps/restore.yaml", ADMIN_BINDING)),
     "is not named secrets/<namespace>/<name>.json"),
    ("binding under secrets as json", _entries(("secrets/apps/seedbed-restore.json", ADMIN_BINDING)),
     "its folder holds only v1 Secret"),
    ("binding at the top", _entries(("clusterrolebinding.json", ADMIN_BINDING)), "is not an entry seedbed writes"),
    ("binding in a folder of its own", _entries(("rbac/admin.json", ADMIN_BINDING)), "is not an entry seedbed writes"),
    ("secret in the certificates folder", _entries(("cert-manager/certificates/apps/db.json", secret())),
     "holds only cert-manager.io/v1 Certificate"),
    ("certificate in the issuers folder", _entries(("cert-manager/issuers/apps/web.json", CERTIFICATE)),
     "holds only cert-manager.io/v1 Issuer"),
    ("an Order in the certificates folder", _entries(("cert-manager/certificates/apps/web.json",
                                                      {**CERTIFICATE, "kind": "Order"})), "Certificate"),
    ("unknown cert-manager folder", _entries(("cert-manager/orders/apps/web.json", CERTIFICATE)),
     "is in no folder seedbed writes"),
    ("cluster issuer with a namespace", _entries(("cert-manager/clusterissuers/le.json", {
        "apiVersion": "cert-manager.io/v1", "kind": "ClusterIssuer",
        "metadata": {"name": "le", "namespace": "apps"}, "spec": {}})), "cluster-scoped"),
    ("name differs from the entry", _entries(("secrets/apps/db.json", secret(name="other"))),
     "not 'db' as its entry name says"),
    ("namespace differs from the entry", _entries(("secrets/apps/db.json", secret(ns="kube-system", name="db"))),
     "its entry name says namespace 'apps'"),
    ("service-account token", _entries(("secrets/apps/db.json", secret(type="kubernetes.io/service-account-token"))),
     "type 'kubernetes.io/service-account-token'"),
    ("bootstrap token", _entries(("secrets/apps/db.json", secret(type="bootstrap.kubernetes.io/token"))),
     "type 'bootstrap.kubernetes.io/token'"),
    ("unknown secret type", _entries(("secrets/apps/db.json", secret(type="example.com/thing"))), "never restores"),
    ("secret in kube-system", _entries(("secrets/kube-system/db.json", secret(ns="kube-system"))),
     "system namespace kube-system"),
    ("secret in an unselected namespace", _entries(("secrets/payments/db.json", secret(ns="payments"))),
     "which seedbed.yaml does not select"),
    ("issuer in kube-system", _entries(("cert-manager/issuers/kube-system/ca.json", {
        "apiVersion": "cert-manager.io/v1", "kind": "Issuer", "metadata": {"name": "ca", "namespace": "kube-system"},
        "spec": {"selfSigned": {}}})), "system namespace kube-system"),
    ("secret with a field secrets do not have", _entries(("secrets/apps/db.json", secret(rules=[{"verbs": ["*"]}]))),
     "fields a Secret does not have: rules"),
    ("secret data not base64", _entries(("secrets/apps/db.json", secret(data={"pw": "not base64!"}))), "not base64"),
    ("secret labels not strings", _entries(("secrets/apps/db.json", secret(metadata={"labels": {"a": 1}}))),
     "metadata.labels"),
    ("entry not json", _entries(("secrets/apps/db.json", b"{not json")), "not valid JSON"),
    ("entry nested past the limit", _entries(("secrets/apps/db.json", b"[" * 200 + b"]" * 200)), "nested"),
    ("uppercase namespace", _entries(("secrets/Apps/db.json", secret(ns="Apps"))), "not a valid Kubernetes name"),
    ("two repository bundles", _entries(("git/a.bundle", b"x"), ("git/b.bundle", b"y")), "repository bundles"),
    ("bundle with another extension", _entries(("git/a.tar", b"x")), "is not an entry seedbed writes"),
]


@pytest.mark.parametrize(("members", "needle"), [pytest.param(m, n, id=i) for i, m, n in CONTENT_CASES])
def test_entries_a_restore_must_never_create_are_refused_even_when_signed(
        world: World, capsys: Any, members: list[tuple[str, bytes]], needle: str) -> None:
    assert_refused(world, capsys, forge(world, members), needle)


@pytest.mark.parametrize(("members", "needle"), [pytest.param(m, n, id=i) for i, m, n in CONTENT_CASES[:4]])
def test_skipping_the_signature_check_does_not_skip_the_validator(
        world: World, capsys: Any, members: list[tuple[str, bytes]], needle: str) -> None:
    assert_refused(world, capsys, forge(world, members, signer=None), needle, SKIP_FLAG)


def test_a_bad_entry_after_good_ones_writes_none_of_them(world: World, capsys: Any) -> None:
    """Kind/folder mismatches used to crash mid-restore, after the Secrets before them were created."""
    members = _entries(*((f"secrets/apps/s{i}.json", secret(name=f"s{i}")) for i in range(5)),
                       ("volumes.json", {"volumes": [VOLUME]}),
                       ("cert-manager/issuers/apps/web.json", CERTIFICATE))
    assert_refused(world, capsys, forge(world, members), "holds only cert-manager.io/v1 Issuer")


# --------------------------------------------------------------------------- volume records and ledgers


def _volume(**change: Any) -> list[tuple[str, bytes]]:
    record = {k: v for k, v in {**VOLUME, **change}.items() if v is not None}
    return _entries(("secrets/apps/db.json", secret()), ("volumes.json", {"volumes": [record]}))


RECORD_CASES = [
    ("size as a quantity string", _volume(sizeBytes="10Gi"), "sizeBytes"),
    ("size a fraction", _volume(sizeBytes=1.5), "sizeBytes"),
    ("size boolean", _volume(sizeBytes=True), "sizeBytes"),
    ("size negative", _volume(sizeBytes=-1), "sizeBytes"),
    ("size past int64", _volume(sizeBytes=2**64), "sizeBytes"),
    ("no url", _volume(url=None), "lacks url"),
    ("url to a local file", _volume(url="file:///etc/shadow"), "not a Longhorn backup URL"),
    ("access modes a string", _volume(accessModes="ReadWriteOnce"), "accessModes"),
    ("replicas zero", _volume(numberOfReplicas=0), "numberOfReplicas"),
    ("frontend unknown", _volume(frontend="iscsi-evil"), "frontend"),
    ("unknown field", _volume(hostPath="/"), "unknown fields: hostPath"),
    ("namespace not selected", _volume(namespace="kube-system"), "namespace kube-system, which seedbed.yaml"),
    ("volume name with a slash", _volume(volume="../pvc"), "not a valid Kubernetes name"),
    ("labels not strings", _volume(pvcLabels={"a": ["b"]}), "pvcLabels"),
    ("not a list", _entries(("volumes.json", {"volumes": {"a": 1}})), 'is not {"volumes": [...]}'),
    ("the same claim twice", _entries(("volumes.json", {"volumes": [VOLUME, VOLUME]})), "listed twice"),
]


@pytest.mark.parametrize(("members", "needle"), [pytest.param(m, n, id=i) for i, m, n in RECORD_CASES])
def test_a_bad_volume_record_is_refused_before_any_namespace_is_made(
        world: World, capsys: Any, members: list[tuple[str, bytes]], needle: str) -> None:
    assert_refused(world, capsys, forge(world, members), needle)


def _ledger(change: Callable[[dict[str, Any]], None]) -> list[tuple[str, bytes]]:
    doc = copy.deepcopy(GOOD_LEDGER)
    change(doc)
    return _entries(("secrets/apps/db.json", secret()), ("ledger.json", doc))


LEDGER_CASES = [
    ("serial a float", _ledger(lambda d: d["issuances"][0].update(serial=1.5)), "serial"),
    ("year one", _ledger(lambda d: d["issuances"][0].update(issuedAt="0001-01-01T00:00:00Z")), "issuedAt"),
    ("year 9999", _ledger(lambda d: d["issuances"][0].update(notBefore="9999-12-31T00:00:00Z")), "notBefore"),
    ("time a number", _ledger(lambda d: d["issuances"][0].update(issuedAt=1700000000)), "issuedAt"),
    ("names a string", _ledger(lambda d: d["issuances"][0].update(names="web.example.org")), "names"),
    ("name with a space", _ledger(lambda d: d["issuances"][0].update(names=["exa mple.org"])), "names"),
    ("unknown ca", _ledger(lambda d: d["issuances"][0].update(ca="evil")), "ca must be"),
    ("unknown entry field", _ledger(lambda d: d["issuances"][0].update(extra=1)), "unknown field"),
    ("version 2", _ledger(lambda d: d.update(version=2)), "version 2"),
    ("version true", _ledger(lambda d: d.update(version=True)), "version True"),
    ("issuances not a list", _ledger(lambda d: d.update(issuances={})), "'issuances' list"),
    ("another kind", _ledger(lambda d: d.update(kind="something-else")), "not a seedbed certificate ledger"),
]


@pytest.mark.parametrize(("members", "needle"), [pytest.param(m, n, id=i) for i, m, n in LEDGER_CASES])
def test_a_bad_ledger_is_refused_and_never_stored(world: World, capsys: Any, members: list[tuple[str, bytes]],
                                                  needle: str) -> None:
    assert_refused(world, capsys, forge(world, members), needle)


# --------------------------------------------------------------------------- the tar itself


def test_a_sparse_64_gib_member_is_refused_without_allocating_it(world: World, capsys: Any) -> None:
    data = forge(world, [], extra=[sparse_member("secrets/apps/big.json", 64 * 2**30)])
    assert_refused(world, capsys, data, "unexpected sparse member")


def test_a_plaintext_over_the_cap_is_refused(world: World, capsys: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(archive, "MAX_PLAINTEXT", 64 * 1024)
    data = forge(world, [("git/homelab-gitops.bundle", os.urandom(128 * 1024))])
    assert_refused(world, capsys, data, "decrypts to more than")


def _special(name: str, type_: bytes, link: str = "") -> tuple[tarfile.TarInfo, bytes]:
    info = tarfile.TarInfo(name)
    info.type, info.linkname = type_, link
    return info, b""


TAR_CASES = [
    ("path traversal", [("../../etc/cron.d/x", b"{}")], [], "unsafe archive entry name"),
    ("traversal inside a folder", [("secrets/apps/../../x.json", b"{}")], [], "unsafe archive entry name"),
    ("absolute path", [("/etc/passwd", b"x")], [], "unsafe archive entry name"),
    ("symlink", [], [_special("secrets/apps/db.json", tarfile.SYMTYPE, "/etc/shadow")], "unexpected"),
    ("hard link", [], [_special("secrets/apps/db.json", tarfile.LNKTYPE, "index.json")], "unexpected"),
    ("device", [], [_special("secrets/apps/db.json", tarfile.CHRTYPE)], "unexpected"),
    ("duplicate entry", [("secrets/apps/db.json", j(secret())), ("secrets/apps/db.json", j(secret(type="x")))], [],
     "appears twice"),
]


@pytest.mark.parametrize(("members", "extra", "needle"), [pytest.param(m, e, n, id=i) for i, m, e, n in TAR_CASES])
def test_tar_members_seedbed_never_writes_are_refused(world: World, capsys: Any, members: list[tuple[str, bytes]],
                                                       extra: list[Any], needle: str) -> None:
    assert_refused(world, capsys, forge(world, members, extra=extra), needle)


# --------------------------------------------------------------------------- what is restored is clean


def test_a_signed_archive_restores_and_loses_every_reference_to_the_old_cluster(world: World, capsys: Any) -> None:
    """The control: a trusted archive does write, and ownerReferences (the garbage collector would delete
    the Secret: its owner's uid does not exist here), uid, managedFields, finalizers and status do not survive."""
    dirty = secret(metadata={
        "uid": "7d0b6a52-0000-4000-8000-000000000001", "resourceVersion": "42", "generation": 3,
        "creationTimestamp": "2024-01-01T00:00:00Z", "finalizers": ["example.com/hold"],
        "managedFields": [{"manager": "x", "operation": "Update"}], "labels": {"app": "db"},
        "ownerReferences": [{"apiVersion": "v1", "kind": "ConfigMap", "name": "gone",
                             "uid": "7d0b6a52-0000-4000-8000-000000000002"}]}, status={"phase": "x"})
    data = forge(world, _entries(("secrets/apps/db.json", dirty), ("ledger.json", GOOD_LEDGER)))
    before = world.store()
    code, text = run(world, capsys, data, "restore --dry-run")
    assert code == 0, text
    assert "signed by SHA256:" in text and world.store() == before
    code, text = run(world, capsys, data, "restore")
    assert code == 0, text
    restored = world.emu.get("v1", "Secret", "db", "apps")
    assert restored["data"] == {"pw": VALUE} and restored["metadata"]["labels"] == {"app": "db"}
    for gone in ("ownerReferences", "finalizers"):
        assert gone not in restored["metadata"]
    # Set again by this API server, for this object; none of the archived values came through.
    for field in ("uid", "resourceVersion", "generation", "creationTimestamp"):
        assert restored["metadata"].get(field) != dirty["metadata"][field]
    assert all(m.get("manager") != "x" for m in restored["metadata"].get("managedFields", []))
    assert "status" not in restored
    stored = world.emu.get("v1", "ConfigMap", "seedbed-ledger", "kube-system")
    assert [i.serial for i in Ledger.from_json(stored["data"]["ledger.json"])] == ["a"]


def test_insecure_skip_signature_restores_an_older_unsigned_archive_and_says_so(world: World, capsys: Any) -> None:
    data = forge(world, _entries(("secrets/apps/db.json", secret())), signer=None)
    code, text = run(world, capsys, data, "restore", SKIP_FLAG)
    assert code == 0, text
    assert f"signature NOT checked ({SKIP_FLAG})" in text
    assert world.emu.get("v1", "Secret", "db", "apps") is not None


def test_a_corrupt_ledger_configmap_names_itself_and_how_to_fix_it(world: World, capsys: Any) -> None:
    """A bogus ledger in the cluster used to break every later backup with a traceback."""
    world.emu.put({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "seedbed-ledger",
                                                                       "namespace": "kube-system"},
                   "data": {"ledger.json": json.dumps({**GOOD_LEDGER, "issuances": [{"serial": 1.5}]})}})
    code, _, err = run_cli(capsys, "-c", str(world.config), "backup", "-o", str(world.root / "b.age"),
                           "--skip-volumes")
    assert code == 1, err
    assert "ConfigMap kube-system/seedbed-ledger" in err and "delete configmap seedbed-ledger" in err
    assert "Traceback" not in err and not (world.root / "b.age").exists()


# --------------------------------------------------------------------------- outputs: backup -o and keygen


def test_backup_into_a_missing_folder_fails_before_any_work(world: World, capsys: Any) -> None:
    requests = len(world.emu.requests)
    code, _, err = run_cli(capsys, "-c", str(world.config), "backup", "-o", str(world.root / "nope" / "b.age"))
    assert code == 2 and "does not exist" in err and "mkdir -p" in err
    assert len(world.emu.requests) == requests  # not even a connection


def test_backup_without_a_signing_key_says_how_to_make_one_before_any_work(world: World, capsys: Any) -> None:
    (world.root / "keys" / "signing.key").unlink()
    before = world.store()
    code, _, err = run_cli(capsys, "-c", str(world.config), "backup", "-o", str(world.root / "b.age"))
    assert code == 2 and "no signing key" in err and "seedbed keygen" in err
    assert world.emu.writes() == 0 and world.store() == before and not (world.root / "b.age").exists()


@pytest.mark.parametrize("damage", ["not a key", "truncated"])
def test_backup_with_a_damaged_signing_key_names_it_and_writes_nothing(world: World, capsys: Any,
                                                                       damage: str) -> None:
    """A signing key that is not one stops the backup before it writes anything, naming the file and
    the fix. The damaged key is the one keygen made for this test, cut in half."""
    key = world.root / "keys" / "signing.key"
    made = key.read_text()
    key.write_text("not a key\n" if damage == "not a key" else made[: len(made) // 2] + "\n")
    before = world.store()
    code, _, err = run_cli(capsys, "-c", str(world.config), "backup", "-o", str(world.root / "b.age"),
                           "--skip-volumes")
    assert code == 2 and f"signing key {key} is not an ed25519 private key" in err and "seedbed keygen" in err
    assert "Traceback" not in err and err.count("✗ error") == 1
    assert world.emu.writes() == 0 and world.store() == before and not (world.root / "b.age").exists()


def test_backup_into_a_pipe_streams_and_leaves_the_pipe_a_pipe(world: World, capsys: Any) -> None:
    fifo = world.root / "out.fifo"
    os.mkfifo(fifo)
    got: list[bytes] = []
    reader = threading.Thread(target=lambda: got.append(fifo.read_bytes()))
    reader.start()
    code, _, err = run_cli(capsys, "-c", str(world.config), "backup", "-o", str(fifo), "--skip-volumes")
    reader.join(30)
    assert code == 0, err
    assert stat.S_ISFIFO(fifo.stat().st_mode)
    assert got and got[0].startswith(b"age-encryption.org/v1\n")


def test_keygen_makes_both_keys_private_and_never_overwrites_either(world: World, capsys: Any) -> None:
    folder = world.root / "new-keys"
    folder.mkdir()
    code, out, err = run_cli(capsys, "keygen", "-o", str(folder / "age.key"))
    assert code == 0, err
    signing_pub, recipient = out.strip().splitlines()
    assert signing_pub.startswith("ssh-ed25519 ") and recipient.startswith("age1")
    for name in ("age.key", "signing.key"):
        assert stat.S_IMODE((folder / name).stat().st_mode) == 0o600
    assert load_signing_key(folder / "signing.key")  # OpenSSH format, ed25519
    before = {p: p.read_bytes() for p in folder.iterdir()}
    code, _, err = run_cli(capsys, "keygen", "-o", str(folder / "age.key"))
    assert code == 2 and "never overwrites" in err
    assert {p: p.read_bytes() for p in folder.iterdir()} == before
    # An identity made before signing existed: keygen adds only the signing key.
    (folder / "signing.key").unlink()
    code, out, err = run_cli(capsys, "keygen", "-o", str(folder / "age.key"))
    assert code == 0 and out.strip().startswith("ssh-ed25519 ") and (folder / "age.key").read_bytes() == before[
        folder / "age.key"]


@pytest.mark.parametrize("where", ["missing folder", "fifo"])
def test_keygen_refuses_an_output_it_cannot_keep_a_key_in(world: World, capsys: Any, where: str) -> None:
    target = {"missing folder": world.root / "nope" / "age.key", "fifo": world.root / "k.fifo"}[where]
    if where == "fifo":
        os.mkfifo(target)
    listing = sorted(world.root.rglob("*"))
    code, _, err = run_cli(capsys, "keygen", "-o", str(target))
    assert code == 2 and "Traceback" not in err and "fix:" in err
    assert sorted(world.root.rglob("*")) == listing


def test_restore_trusts_keys_listed_in_the_config(world: World, capsys: Any, tmp_path: Path) -> None:
    """backup.trustedSigners: an archive made on another machine restores once its key is listed."""
    other = Ed25519PrivateKey.generate()
    data = forge(world, _entries(("secrets/apps/db.json", secret())), signer=other)
    from seedbed.backup.signing import public_text

    doc = yaml.safe_load(world.config.read_text())
    doc["backup"]["trustedSigners"] = [public_text(other.public_key())]
    world.config.write_text(yaml.safe_dump(doc))
    code, text = run(world, capsys, data, "restore")
    assert code == 0, text


def _iter_cases() -> Iterator[str]:
    yield from (i for i, *_ in CONTENT_CASES + RECORD_CASES + LEDGER_CASES + TAR_CASES)


def test_the_suite_covers_every_category_with_several_cases() -> None:
    """Forged signatures, kinds and folders, Secret types and namespaces, records, ledgers, the tar itself."""
    assert len(CONTENT_CASES) >= 20 and len(RECORD_CASES) >= 10 and len(LEDGER_CASES) >= 10 and len(TAR_CASES) >= 5
    assert len(set(_iter_cases())) == len(list(_iter_cases()))


def test_a_fifo_given_as_the_identity_is_refused_instead_of_hanging(world: World, capsys: Any) -> None:
    fifo = world.root / "identity.fifo"
    os.mkfifo(fifo)
    (world.root / "b.age").write_bytes(forge(world, _entries(("secrets/apps/db.json", secret()))))
    before = world.store()
    code, _, err = run_cli(capsys, "-c", str(world.config), "restore", str(world.root / "b.age"), "-i", str(fifo))
    assert code == 2 and "named pipe" in err and "fix:" in err
    assert world.store() == before
