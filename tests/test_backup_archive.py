"""The archive format without a cluster: build, encrypt, open, and every way to refuse."""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import stat
import subprocess
import tarfile
from datetime import UTC, datetime
from pathlib import Path

import msgspec
import pyrage
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import given, settings
from hypothesis import strategies as st

from seedbed.backup import archive
from seedbed.backup.archive import FORMAT_VERSION, build, encrypt, keygen, open_archive, untar, write
from seedbed.backup.signing import public_text
from seedbed.backup.validate import Policy
from seedbed.backup.volumes import restore_objects
from seedbed.certs.ledger import Ledger
from seedbed.config import ClusterConfig, Config
from seedbed.errors import ArchiveError, ConfigError

CREATED = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)
SECRET_VALUE = b"s3cr3t-value-never-printed"
ENTRIES = {
    "secrets/cert-manager/acme-key.json": json.dumps({
        "apiVersion": "v1", "kind": "Secret", "metadata": {"name": "acme-key", "namespace": "cert-manager"},
        "data": {"tls.key": "czNjcjN0"}}).encode(),
    "cert-manager/clusterissuers/letsencrypt.json":
        b'{"apiVersion":"cert-manager.io/v1","kind":"ClusterIssuer","metadata":{"name":"letsencrypt"},"spec":{}}',
    "git/homelab-gitops.bundle": b"# v2 git bundle\n" + SECRET_VALUE,
    "ledger.json": Ledger().to_json().encode(),
}
# The user's signing key: archives it signed are trusted by policy().
SIGNER = Ed25519PrivateKey.generate()


def policy(cluster: str | None = "homelab", *, from_other_cluster: bool = False) -> Policy:
    """What a default seedbed.yaml allows, trusting SIGNER."""
    cfg = Config(cluster=ClusterConfig(name=cluster or "homelab"))
    base = Policy.from_config(cfg, from_other_cluster=from_other_cluster, expect_cluster=cluster is not None)
    return msgspec.structs.replace(base, trusted=(public_text(SIGNER.public_key()),))


@pytest.fixture
def key(tmp_path: Path) -> tuple[Path, str]:
    path = tmp_path / "keys" / "age.key"
    path.parent.mkdir()
    return path, keygen(path)


def make(recipient: str, entries: dict[str, bytes] | None = None, cluster: str = "homelab") -> bytes:
    return encrypt(build(entries or ENTRIES, cluster=cluster, created=CREATED, signing_key=SIGNER), [recipient])


def files(folder: Path) -> set[Path]:
    return {p for p in folder.rglob("*")}


# --------------------------------------------------------------------------- round trip


def test_round_trip(tmp_path: Path, key: tuple[Path, str]) -> None:
    ident, recipient = key
    out = tmp_path / "backup.age"
    write(out, make(recipient))
    assert stat.S_IMODE(out.stat().st_mode) == 0o600
    assert SECRET_VALUE not in out.read_bytes()  # the file is ciphertext only
    arc = open_archive(out, [ident], policy=policy("homelab"))
    assert arc.entries == ENTRIES
    assert arc.index["formatVersion"] == FORMAT_VERSION
    assert arc.index["cluster"] == "homelab"
    assert arc.index["created"] == "2025-03-01T12:00:00Z"
    assert arc.index["seedbedVersion"]
    assert arc.index["counts"] == {"ClusterIssuer": 1, "GitBundle": 1, "IssuanceLedger": 1, "Secret": 1}
    for name, data in ENTRIES.items():
        assert arc.index["entries"][name]["sha256"] == hashlib.sha256(data).hexdigest()


def test_build_is_deterministic_and_index_first() -> None:
    a = build(ENTRIES, cluster="c", created=CREATED, signing_key=SIGNER)
    assert a == build(dict(reversed(ENTRIES.items())), cluster="c", created=CREATED, signing_key=SIGNER)
    with tarfile.open(fileobj=io.BytesIO(a)) as tar:
        members = tar.getmembers()
    assert [m.name for m in members[:2]] == ["index.json", "index.sig"]
    assert all(m.mode == 0o600 and m.uid == 0 and m.mtime == int(CREATED.timestamp()) for m in members)


def test_long_names_survive() -> None:
    name = f"secrets/{'n' * 63}/{'s' * 253}.json"
    arc = untar(build({name: b"{}"}, cluster="c", created=CREATED))
    assert list(arc.entries) == [name]


def test_archive_tar_is_the_one_pythons_tarfile_writes_and_gnu_tar_reads() -> None:
    """build() writes the ustar headers of short ASCII names itself (for speed) and hands any other
    name to tarfile: the archive must be the same bytes tarfile (CPython 3.11 Lib/tarfile.py) writes
    in PAX format, so that `age -d ... | tar -x` (docs/backup.md) sees the same files as before."""
    entries = {"secrets/a/b.json": b"x" * 1000, f"secrets/{'n' * 87}.json": b"",  # 100 bytes: still ustar
               f"secrets/{'l' * 150}.json": b"y" * 512, "secrets/\u00fc/\u00e9.json": b"z" * 513}
    out = build(entries, cluster="c", created=CREATED, signing_key=SIGNER)
    with tarfile.open(fileobj=io.BytesIO(out)) as tar:
        head = [(m.name, tar.extractfile(m).read()) for m in tar.getmembers()[:2]]  # type: ignore[union-attr]
    ref = io.BytesIO()
    with tarfile.open(fileobj=ref, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name, data in [*head, *sorted(entries.items())]:
            info = tarfile.TarInfo(name)
            info.size, info.mtime, info.mode, info.uid, info.gid = len(data), int(CREATED.timestamp()), 0o600, 0, 0
            info.uname = info.gname = ""
            tar.addfile(info, io.BytesIO(data))
    assert out == ref.getvalue()
    gnu_tar = shutil.which("tar")
    if gnu_tar:
        listed = subprocess.run([gnu_tar, "-t"], input=out, capture_output=True, check=True).stdout.decode()
        assert listed.splitlines() == ["index.json", "index.sig", *sorted(entries)]


@settings(max_examples=30, deadline=None)
@given(st.dictionaries(st.from_regex(r"git/[a-z0-9]{1,10}-[a-z0-9.-]{1,20}\.bundle", fullmatch=True),
                       st.binary(max_size=200), max_size=1))
def test_any_entries_round_trip(entries: dict[str, bytes]) -> None:
    ident = pyrage.x25519.Identity.generate()
    ct = encrypt(build(entries, cluster="c", created=CREATED, signing_key=SIGNER), [str(ident.to_public())])
    arc = archive.open_bytes(ct, [ident], policy=policy("c"))
    assert arc.entries == entries


def test_ssh_ed25519_recipient_and_openssh_identity(tmp_path: Path) -> None:
    key = Ed25519PrivateKey.generate()
    priv = tmp_path / "id_ed25519"
    priv.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH,
                                       serialization.NoEncryption()))
    pub = key.public_key().public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH).decode()
    out = tmp_path / "b.age"
    write(out, make(pub + " me@laptop"))
    assert open_archive(out, [priv], policy=policy("homelab")).entries == ENTRIES


def test_any_of_several_recipients_opens(tmp_path: Path, key: tuple[Path, str]) -> None:
    other = tmp_path / "other.key"
    other_pub = keygen(other)
    out = tmp_path / "b.age"
    write(out, encrypt(build(ENTRIES, cluster="c", created=CREATED, signing_key=SIGNER), [key[1], other_pub]))
    assert open_archive(out, [other], policy=policy("c")).entries == ENTRIES


def test_stock_age_and_tar_open_it(tmp_path: Path, key: tuple[Path, str]) -> None:
    if not shutil.which("age"):
        pytest.skip("the age CLI is not installed (Debian package `age`); CI must install it")
    ident, recipient = key
    out = tmp_path / "b.age"
    write(out, make(recipient))
    plain = subprocess.run(["age", "-d", "-i", str(ident), str(out)], check=True, capture_output=True).stdout
    listing = subprocess.run(["tar", "-t"], input=plain, check=True, capture_output=True).stdout.decode().split()
    assert listing[0] == "index.json"
    assert sorted(listing[2:]) == sorted(ENTRIES) and listing[1] == "index.sig"
    # And the other way: a file `age` encrypted is not mistaken for ours, but an age-armoured copy of ours opens.
    armored = subprocess.run(["age", "-a", "-r", recipient], input=plain, check=True, capture_output=True).stdout
    assert archive.open_bytes(armored, archive.load_identities([ident]), policy=policy("homelab")).entries == ENTRIES


# --------------------------------------------------------------------------- keys and config errors


def test_keygen_file_is_private_and_never_overwritten(key: tuple[Path, str]) -> None:
    path, recipient = key
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert recipient.startswith("age1") and f"# public key: {recipient}" in path.read_text()
    before = path.read_bytes()
    with pytest.raises(ConfigError) as e:
        keygen(path)
    assert e.value.fix and path.read_bytes() == before


def test_no_recipients() -> None:
    with pytest.raises(ConfigError, match=r"backup.recipients is empty") as e:
        encrypt(b"x", [])
    assert "seedbed keygen" in (e.value.fix or "")


@pytest.mark.parametrize("bad", ["age1notakey", "ssh-ed25519 AAAAnot-base64", "ssh-rsa AAAAB3Nza", "hello"])
def test_bad_recipient_named(bad: str) -> None:
    with pytest.raises(ConfigError) as e:
        encrypt(b"x", [bad])
    assert bad[:10] in e.value.message and e.value.fix


def test_identity_errors(tmp_path: Path, key: tuple[Path, str]) -> None:
    with pytest.raises(ConfigError, match="not found"):
        archive.load_identities([tmp_path / "missing"])
    pub = tmp_path / "pub.txt"
    pub.write_text(key[1] + "\n")
    with pytest.raises(ConfigError, match="no age identity") as e:
        archive.load_identities([pub])
    assert "private key" in (e.value.fix or "")
    with pytest.raises(ConfigError, match="no identity"):
        archive.load_identities([])


def test_write_refuses_plaintext(tmp_path: Path) -> None:
    with pytest.raises(ValueError):
        write(tmp_path / "x", b"index.json plaintext")
    assert files(tmp_path) == set()


# --------------------------------------------------------------------------- refusals


def retar(members: list[tuple[str, bytes]]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def altered(recipient: str, change) -> bytes:  # type: ignore[no-untyped-def]
    """An archive decrypted, changed by someone holding the key, and re-encrypted."""
    arc = untar(build(ENTRIES, cluster="homelab", created=CREATED))
    index, entries = json.loads(json.dumps(arc.index)), dict(arc.entries)
    change(index, entries)
    return encrypt(retar([("index.json", json.dumps(index).encode()), *entries.items()]), [recipient])


def _bump_version(i, e):  # type: ignore[no-untyped-def]
    i["formatVersion"] = 99


def _edit_entry(i, e):  # type: ignore[no-untyped-def]
    e["ledger.json"] = b'{"issued":["forged"]}'


def _edit_index_hash(i, e):  # type: ignore[no-untyped-def]
    i["entries"]["ledger.json"]["sha256"] = "0" * 64


def _extra_entry(i, e):  # type: ignore[no-untyped-def]
    e["secrets/kube-system/planted.json"] = b"{}"


def _missing_entry(i, e):  # type: ignore[no-untyped-def]
    del e["ledger.json"]


def _index_lists_more(i, e):  # type: ignore[no-untyped-def]
    i["entries"]["secrets/x/y.json"] = {"sha256": "0" * 64}


CASES = {
    "unknown version": (_bump_version, "format version 99"),
    "altered entry": (_edit_entry, "sha256 mismatch"),
    "altered index hash": (_edit_index_hash, "sha256 mismatch"),
    "entry not in index": (_extra_entry, "not in the index"),
    "entry missing": (_missing_entry, "missing from the archive"),
    "index lists more": (_index_lists_more, "missing from the archive"),
}


@pytest.mark.parametrize("case", list(CASES))
def test_tampering_refused(tmp_path: Path, key: tuple[Path, str], case: str) -> None:
    change, message = CASES[case]
    out = tmp_path / "in" / "b.age"
    out.parent.mkdir()
    out.write_bytes(altered(key[1], change))
    before = files(tmp_path)
    with pytest.raises(ArchiveError, match=message) as e:
        open_archive(out, [key[0]], policy=policy("homelab"))
    assert e.value.fix
    assert files(tmp_path) == before


def test_unknown_version_names_the_writer(key: tuple[Path, str]) -> None:
    def change(i, e):  # type: ignore[no-untyped-def]
        i["formatVersion"], i["seedbedVersion"] = 2, "9.9.0"

    with pytest.raises(ArchiveError) as e:
        archive.open_bytes(altered(key[1], change), archive.load_identities([key[0]]), policy=policy("homelab"))
    assert "9.9.0" in (e.value.fix or "") and f"reads version {FORMAT_VERSION}" in e.value.message


def test_wrong_key(tmp_path: Path, key: tuple[Path, str]) -> None:
    out = tmp_path / "b.age"
    write(out, make(key[1]))
    wrong = tmp_path / "wrong.key"
    keygen(wrong)
    with pytest.raises(ArchiveError, match=r"cannot decrypt .* with .*wrong.key: wrong key\?") as e:
        open_archive(out, [wrong], policy=policy("homelab"))
    assert e.value.fix


@pytest.mark.parametrize("cut", [0, 10, 100, -1, -17, -200])
def test_truncated(tmp_path: Path, key: tuple[Path, str], cut: int) -> None:
    data = make(key[1])
    out = tmp_path / "b.age"
    out.write_bytes(data[:cut])
    with pytest.raises(ArchiveError, match=r"truncated|not an age-encrypted") as e:
        open_archive(out, [key[0]], policy=policy("homelab"))
    assert e.value.fix


def test_flipped_byte(tmp_path: Path, key: tuple[Path, str]) -> None:
    data = bytearray(make(key[1]))
    data[len(data) // 2] ^= 0x01
    with pytest.raises(ArchiveError, match="truncated or damaged"):
        archive.open_bytes(bytes(data), archive.load_identities([key[0]]), policy=policy("homelab"))


def test_other_cluster(tmp_path: Path, key: tuple[Path, str]) -> None:
    out = tmp_path / "b.age"
    write(out, make(key[1], cluster="old-lab"))
    with pytest.raises(ArchiveError, match="cluster 'old-lab', not 'homelab'") as e:
        open_archive(out, [key[0]], policy=policy("homelab"))
    assert "--from-other-cluster" in (e.value.fix or "")
    arc = open_archive(out, [key[0]], policy=policy("homelab", from_other_cluster=True))
    assert arc.cluster == "old-lab"


def test_unsafe_member_names_refused(key: tuple[Path, str]) -> None:
    bad = encrypt(retar([("index.json", b"{}"), ("../../etc/passwd", b"x")]), [key[1]])
    with pytest.raises(ArchiveError, match="unsafe"):
        archive.open_bytes(bad, archive.load_identities([key[0]]), policy=policy())


def test_error_messages_carry_no_values(tmp_path: Path, key: tuple[Path, str]) -> None:
    def change(i, e):  # type: ignore[no-untyped-def]
        e["git/homelab-gitops.bundle"] = SECRET_VALUE + b"!"

    with pytest.raises(ArchiveError) as e:
        archive.open_bytes(altered(key[1], change), archive.load_identities([key[0]]), policy=policy("homelab"))
    assert SECRET_VALUE.decode() not in f"{e.value.message} {e.value.fix}"


def test_nothing_written_in_cwd(tmp_path: Path, key: tuple[Path, str], monkeypatch: pytest.MonkeyPatch) -> None:
    """Opening never spills a temporary plaintext file anywhere we can see."""
    out = tmp_path / "b.age"
    write(out, make(key[1]))
    work = tmp_path / "cwd"
    work.mkdir()
    monkeypatch.chdir(work)
    monkeypatch.setenv("TMPDIR", str(work))
    open_archive(out, [key[0]], policy=policy("homelab"))
    assert os.listdir(work) == []


# --------------------------------------------------------------------------- Longhorn restore objects


RECORD = {
    "namespace": "gitea", "pvc": "gitea-shared-storage", "pvName": "pvc-0b1c", "volume": "pvc-0b1c",
    "backup": "seedbed-20250301120000-pvc-0b1c",
    "url": "s3://backups@us-east-1/lh?backup=seedbed-20250301120000-pvc-0b1c&volume=pvc-0b1c",
    "sizeBytes": 10737418240, "request": "10Gi", "storageClass": "longhorn", "accessModes": ["ReadWriteOnce"],
    "volumeMode": "Filesystem", "fsType": "ext4", "numberOfReplicas": 2, "accessMode": "rwo",
    "frontend": "blockdev", "dataEngine": "v1",
    "volumeAttributes": {"numberOfReplicas": "2", "staleReplicaTimeout": "30"},
}


def _crd_schema(upstream, name: str) -> dict:  # type: ignore[no-untyped-def]
    from seedbed import yamlutil

    for doc in yamlutil.load_all(upstream("longhorn-v1.12.1.yaml").read_text()):
        if doc.get("kind") == "CustomResourceDefinition" and doc["metadata"]["name"] == name:
            return next(v for v in doc["spec"]["versions"] if v["name"] == "v1beta2")["schema"]["openAPIV3Schema"]
    raise AssertionError(f"{name} not in the Longhorn manifest")


def _check(schema: dict, value: object, path: str = "") -> None:
    """A small structural validator: types, enums and unknown fields against the CRD's schema."""
    kind = schema.get("type")
    if kind == "object":
        assert isinstance(value, dict), path
        props = schema.get("properties")
        for k, v in value.items():
            if props is not None and "additionalProperties" not in schema:
                assert k in props, f"{path}.{k} is not a field of the CRD"
                _check(props[k], v, f"{path}.{k}")
            elif isinstance(schema.get("additionalProperties"), dict):
                _check(schema["additionalProperties"], v, f"{path}.{k}")
    elif kind == "string":
        assert isinstance(value, str), f"{path} must be a string, not {value!r}"
        if "enum" in schema:
            assert value in schema["enum"], f"{path}={value!r} not in {schema['enum']}"
        if schema.get("format") == "int64":
            assert value.lstrip("-").isdigit(), f"{path}={value!r} is not bytes as a string"
    elif kind == "integer":
        assert isinstance(value, int) and not isinstance(value, bool), path
    elif kind == "boolean":
        assert isinstance(value, bool), path


def test_longhorn_restore_objects_match_the_real_crd(upstream) -> None:  # type: ignore[no-untyped-def]
    volume, pv, pvc = restore_objects(RECORD)
    schema = _crd_schema(upstream, "volumes.longhorn.io")
    _check(schema["properties"]["spec"], volume["spec"], "spec")
    assert volume["apiVersion"] == "longhorn.io/v1beta2" and volume["kind"] == "Volume"
    assert volume["metadata"] == {"name": "pvc-0b1c", "namespace": "longhorn-system"}
    assert volume["spec"]["fromBackup"] == RECORD["url"]
    assert volume["spec"]["size"] == "10737418240"
    assert volume["spec"]["numberOfReplicas"] == 2

    assert pv["spec"]["csi"]["driver"] == "driver.longhorn.io"
    assert pv["spec"]["csi"]["volumeHandle"] == volume["metadata"]["name"]
    assert pv["spec"]["csi"]["fsType"] == "ext4"
    assert pv["spec"]["csi"]["volumeAttributes"] == RECORD["volumeAttributes"]
    assert pv["spec"]["capacity"]["storage"] == "10737418240"
    assert pv["spec"]["persistentVolumeReclaimPolicy"] == "Retain"
    assert pv["spec"]["claimRef"] == {"apiVersion": "v1", "kind": "PersistentVolumeClaim",
                                      "namespace": "gitea", "name": "gitea-shared-storage"}
    assert pvc["metadata"] == {"name": "gitea-shared-storage", "namespace": "gitea"}
    assert pvc["spec"]["volumeName"] == pv["metadata"]["name"]
    assert pvc["spec"]["resources"]["requests"]["storage"] == "10Gi"
    assert pvc["spec"]["storageClassName"] == pv["spec"]["storageClassName"] == "longhorn"


def test_longhorn_backup_objects_use_real_fields(upstream) -> None:  # type: ignore[no-untyped-def]
    """The Snapshot and Backup that backup_volumes creates, checked against Longhorn's CRDs."""
    backup = _crd_schema(upstream, "backups.longhorn.io")
    _check(backup["properties"]["spec"], {"snapshotName": "s", "labels": {"seedbed.io/pvc": "gitea.data"}}, "spec")
    for field in ("url", "size", "state", "error", "volumeSize"):
        assert field in backup["properties"]["status"]["properties"]
    snap = _crd_schema(upstream, "snapshots.longhorn.io")
    _check(snap["properties"]["spec"], {"volume": "pvc-0b1c", "createSnapshot": True}, "spec")
    assert "readyToUse" in snap["properties"]["status"]["properties"]
    vol = _crd_schema(upstream, "volumes.longhorn.io")
    for field in ("restoreRequired", "restoreInitiated", "conditions"):
        assert field in vol["properties"]["status"]["properties"]


def test_kubernetes_objects_validate() -> None:
    kv = pytest.importorskip("kubernetes_validate")
    _, pv, pvc = restore_objects(RECORD)
    version = "1.31"
    for obj in (pv, pvc):
        kv.validate(obj, version, strict=True)


def test_quantities() -> None:
    from seedbed.backup.volumes import _quantity_bytes

    assert _quantity_bytes("10Gi") == 10737418240
    assert _quantity_bytes("1G") == 10**9
    assert _quantity_bytes("2147483648") == 2147483648
    assert _quantity_bytes("1.5Gi") == 1610612736  # Kubernetes' own arithmetic (lightkube's parse_quantity)
    for bad in ("0.5", "100m", "-1", "ten"):
        with pytest.raises(ValueError):
            _quantity_bytes(bad)


@pytest.mark.parametrize(("selector", "matches"), [
    ("backup=yes", True), ("backup==yes", True), ("backup!=yes", False), ("backup", True), ("!backup", False),
    ("tier in (db, web)", True), ("tier notin (db)", False), ("backup=yes,tier=web", False), ("!missing", True),
    ("not a selector", False),
])
def test_secrets_outside_the_selected_namespaces_restore_when_their_labels_match_the_selector(
        selector: str, matches: bool) -> None:
    """backup.secrets.labelSelector picks Secrets in any namespace; restore accepts exactly those (the grammar
    of k8s.io/apimachinery/pkg/labels/selector.go, equality- and set-based)."""
    from seedbed.backup.validate import selector_matches

    assert selector_matches(selector, {"backup": "yes", "tier": "db"}) is matches
