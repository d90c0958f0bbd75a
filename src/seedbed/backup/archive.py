"""The backup archive: an age-encrypted tar with an ``index.json`` of sha256 sums.

Everything here works on bytes in memory. The plaintext tar is built in an ``io.BytesIO``,
encrypted in memory, and only the ciphertext is written; opening decrypts and untars in
memory too. That is the whole point of the module: a backup holds private keys and
credentials, and a plaintext copy on disk (even in /tmp) would outlive the intent.

The layout is plain on purpose, so that ``age -d -i key.txt backup.age | tar -t`` works
with no seedbed at hand (see docs/backup.md).
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import tarfile
import tempfile
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pyrage

from seedbed import __version__
from seedbed.errors import ArchiveError, ConfigError

FORMAT = "seedbed-backup"
FORMAT_VERSION = 1
INDEX = "index.json"

# age's two encodings: binary (what we write) and ASCII armour (what `age -a` writes).
_AGE_MAGIC = b"age-encryption.org/v1\n"
_AGE_ARMOR = b"-----BEGIN AGE ENCRYPTED FILE-----"
_AGE_SECRET = "AGE-SECRET-KEY-" "1"  # the prefix of an age identity line (split: secret scanners grep for it)

# Entry kinds by path prefix, recorded in the index so `seedbed restore --dry-run` and humans
# reading index.json can see what an archive holds without opening every entry.
_KINDS = (
    ("secrets/", "Secret"),
    ("cert-manager/certificates/", "Certificate"),
    ("cert-manager/issuers/", "Issuer"),
    ("cert-manager/clusterissuers/", "ClusterIssuer"),
    ("git/", "GitBundle"),
    ("volumes.json", "LonghornVolumes"),
    ("ledger.json", "IssuanceLedger"),
)


def entry_kind(name: str) -> str:
    for prefix, kind in _KINDS:
        if name.startswith(prefix):
            return kind
    return "Other"


def dumps(obj: Any) -> bytes:
    """Deterministic JSON: the same object always gives the same bytes, so the same sha256."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


@dataclass
class Archive:
    """A verified, decrypted archive, held in memory."""

    index: dict[str, Any]
    entries: dict[str, bytes] = field(default_factory=dict)

    @property
    def cluster(self) -> str:
        return str(self.index.get("cluster", ""))

    @property
    def created(self) -> str:
        return str(self.index.get("created", ""))

    def names(self, prefix: str = "") -> list[str]:
        return sorted(n for n in self.entries if n.startswith(prefix))

    def json(self, name: str) -> Any:
        try:
            return json.loads(self.entries[name])
        except KeyError:
            return None
        except ValueError:
            raise ArchiveError(f"archive entry {name} is not valid JSON",
                               fix="the archive is damaged; use another backup") from None


# --------------------------------------------------------------------------- building


def _check_name(name: str) -> None:
    # Names come from Kubernetes object names, which cannot hold '/' or '..'; anything else is a bug
    # or a hostile archive, and stock `tar -x` would write it outside the current folder.
    parts = name.split("/")
    if not name or name.startswith("/") or any(p in ("", ".", "..") for p in parts) or "\\" in name:
        raise ArchiveError(f"unsafe archive entry name {name!r}", fix="this archive was not made by seedbed")


def build(entries: dict[str, bytes], *, cluster: str, created: datetime,
          seedbed_version: str = __version__) -> bytes:
    """The plaintext tar, in memory: index.json first, then the entries in name order."""
    if INDEX in entries:
        raise ValueError("index.json is written by build(), not passed in")
    for name in entries:
        _check_name(name)
    names = sorted(entries)
    index = {
        "format": FORMAT,
        "formatVersion": FORMAT_VERSION,
        "cluster": cluster,
        "created": created.astimezone(UTC).isoformat().replace("+00:00", "Z"),
        "seedbedVersion": seedbed_version,
        "counts": dict(sorted(Counter(entry_kind(n) for n in names).items())),
        "entries": {
            n: {"sha256": hashlib.sha256(entries[n]).hexdigest(), "size": len(entries[n]), "kind": entry_kind(n)}
            for n in names
        },
    }
    mtime = int(created.timestamp())
    buf = io.BytesIO()
    # PAX: object names can exceed ustar's 100 characters; GNU tar and bsdtar read PAX natively.
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name, data in [(INDEX, dumps(index)), *((n, entries[n]) for n in names)]:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            # Fixed owner and time: the same content gives the same tar; 0600 because a user who
            # extracts it by hand gets private keys, and those should not land world-readable.
            info.mtime = mtime
            info.mode = 0o600
            info.uid = info.gid = 0
            info.uname = info.gname = ""
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


# --------------------------------------------------------------------------- keys


def parse_recipient(value: str) -> Any:
    value = value.strip()
    try:
        if value.startswith("age1"):
            return pyrage.x25519.Recipient.from_str(value)
        if value.startswith("ssh-ed25519 "):
            return pyrage.ssh.Recipient.from_str(value)
    except (pyrage.RecipientError, ValueError) as e:
        raise ConfigError(
            f"backup.recipients: {value[:24]}... is not a valid public key ({e})",
            fix="copy the whole line printed by `seedbed keygen`, `age-keygen -y` or ~/.ssh/id_ed25519.pub",
        ) from None
    raise ConfigError(
        f"backup.recipients: {value[:24]!r}... is neither an age (age1...) nor an ssh-ed25519 public key",
        fix="use an age X25519 or ssh-ed25519 public key (RSA keys are not supported)",
    )


def encrypt(tar_bytes: bytes, recipients: list[str]) -> bytes:
    """age-encrypt in memory to every recipient; any one of their identities can open it."""
    if not recipients:
        raise ConfigError(
            "backup.recipients is empty: a backup must be encrypted to at least one key",
            fix="generate one with `seedbed keygen` and add the printed age1... key to backup.recipients",
        )
    parsed = [parse_recipient(r) for r in recipients]
    try:
        return pyrage.encrypt(tar_bytes, parsed)
    except pyrage.EncryptError as e:  # pragma: no cover - only on an internal pyrage failure
        raise ArchiveError(f"cannot encrypt the backup: {e}") from None


def keygen(path: str | Path) -> str:
    """Write a new age identity file (mode 0600) in age-keygen's format; return its recipient."""
    path = Path(path).expanduser()
    if path.exists():
        # Overwriting a key would make every archive encrypted to it unreadable.
        raise ConfigError(f"{path} already exists; seedbed never overwrites a key",
                          fix="choose another path, or use the existing key (`age-keygen -y` prints its public key)")
    identity = pyrage.x25519.Identity.generate()
    public = str(identity.to_public())
    now = datetime.now(UTC).replace(microsecond=0).isoformat()
    text = f"# created: {now}\n# public key: {public}\n{identity}\n"
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)
    return public


def load_identities(paths: list[str | Path]) -> list[Any]:
    """age identity files (AGE-SECRET-KEY-...) and unencrypted OpenSSH ed25519 private keys."""
    if not paths:
        raise ConfigError("no identity to decrypt the archive with",
                          fix="pass --identity FILE or set backup.identityFile (an age key or ~/.ssh/id_ed25519)")
    identities: list[Any] = []
    for p in paths:
        path = Path(p).expanduser()
        try:
            raw = path.read_bytes()
        except FileNotFoundError:
            raise ConfigError(f"identity file {path} not found",
                              fix="pass --identity FILE or set backup.identityFile") from None
        except OSError as e:
            raise ConfigError(f"cannot read identity file {path}: {e.strerror}") from None
        if b"-----BEGIN OPENSSH " b"PRIVATE KEY-----" in raw:  # split: not a key for scanners
            try:
                identities.append(pyrage.ssh.Identity.from_buffer(raw))
            except (pyrage.IdentityError, ValueError):
                raise ConfigError(
                    f"{path} is not a usable ssh-ed25519 private key (passphrase-protected keys are not supported)",
                    fix="use an age identity, or a copy of the key without a passphrase kept somewhere safe",
                ) from None
            continue
        keys = [ln.strip() for ln in raw.decode(errors="replace").splitlines()
                if ln.strip().startswith(_AGE_SECRET)]
        if not keys:
            raise ConfigError(f"{path} holds no age identity (AGE-SECRET-KEY-...) or OpenSSH private key",
                              fix="pass the private key file, not the public one")
        for key in keys:
            try:
                identities.append(pyrage.x25519.Identity.from_str(key))
            except (pyrage.IdentityError, ValueError):
                raise ConfigError(f"{path}: an AGE-SECRET-KEY line is damaged",
                                  fix="restore the identity file from your copy") from None
    return identities


# --------------------------------------------------------------------------- writing and opening


def write(path: str | Path, ciphertext: bytes) -> None:
    """Atomically write the ciphertext, mode 0600: a crash leaves the old file or none, never half."""
    path = Path(path).expanduser()
    if not ciphertext.startswith(_AGE_MAGIC):
        raise ValueError("write() takes age ciphertext only")  # a guard against writing plaintext by mistake
    folder = path.parent if str(path.parent) else Path(".")
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(ciphertext)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def open_archive(path: str | Path, identities: list[str | Path], *, expect_cluster: str | None,
                 from_other_cluster: bool = False) -> Archive:
    """Read, decrypt and verify an archive; any doubt is an ArchiveError before anything is written."""
    path = Path(path).expanduser()
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise ArchiveError(f"{path}: no such file", fix="pass the path of a file written by `seedbed backup -o`") from None
    except OSError as e:
        raise ArchiveError(f"{path}: cannot read: {e.strerror}") from None
    keys = load_identities(identities)
    return open_bytes(data, keys, name=str(path), identity_names=[str(i) for i in identities],
                      expect_cluster=expect_cluster, from_other_cluster=from_other_cluster)


def decrypt(data: bytes, identities: list[Any], *, name: str = "archive",
            identity_names: list[str] | None = None) -> bytes:
    if not (data.startswith(_AGE_MAGIC) or data.lstrip().startswith(_AGE_ARMOR)):
        raise ArchiveError(f"{name} is not an age-encrypted seedbed backup (empty, truncated at the start, or another file)",
                           fix="pass the file written by `seedbed backup -o`")
    try:
        return pyrage.decrypt(data, identities)
    except pyrage.DecryptError as e:
        who = ", ".join(identity_names or []) or "the given identities"
        if "no matching keys" in str(e).lower():
            raise ArchiveError(f"cannot decrypt {name} with {who}: wrong key?",
                               fix="pass the identity matching one of backup.recipients at backup time (--identity FILE)") from None
        raise ArchiveError(f"{name} is truncated or damaged: {e}",
                           fix="copy the archive again from where it is stored; it was cut short or altered") from None


def open_bytes(data: bytes, identities: list[Any], *, name: str = "archive", identity_names: list[str] | None = None,
               expect_cluster: str | None = None, from_other_cluster: bool = False) -> Archive:
    plain = decrypt(data, identities, name=name, identity_names=identity_names)
    archive = untar(plain, name=name)
    verify(archive, name=name, expect_cluster=expect_cluster, from_other_cluster=from_other_cluster)
    return archive


def read_index(plain: bytes) -> dict[str, Any]:
    """Only index.json of a plaintext tar (it is the first member), without copying the rest."""
    with tarfile.open(fileobj=io.BytesIO(plain), mode="r:") as tar:
        first = tar.next()
        f = tar.extractfile(first) if first is not None and first.name == INDEX else None
        if f is None:
            raise ArchiveError("the archive has no index.json first", fix="this is not a seedbed backup")
        return json.loads(f.read())


def untar(plain: bytes, *, name: str = "archive") -> Archive:
    damaged = ArchiveError(f"{name} is truncated or damaged: the tar inside cannot be read",
                           fix="copy the archive again from where it is stored")
    entries: dict[str, bytes] = {}
    try:
        with tarfile.open(fileobj=io.BytesIO(plain), mode="r:") as tar:
            for member in tar:
                if not member.isfile():
                    raise ArchiveError(f"{name}: unexpected {member.type!r} member {member.name!r}",
                                       fix="this archive was not made by seedbed")
                _check_name(member.name)
                if member.name in entries:
                    raise ArchiveError(f"{name}: entry {member.name} appears twice",
                                       fix="this archive was altered; use another backup")
                f = tar.extractfile(member)
                assert f is not None
                entries[member.name] = f.read()
                if len(entries[member.name]) != member.size:
                    raise damaged
    except (tarfile.TarError, EOFError, OSError):
        raise damaged from None
    raw_index = entries.pop(INDEX, None)
    if raw_index is None:
        raise ArchiveError(f"{name} has no index.json", fix="this is not a seedbed backup, or it was altered")
    try:
        index = json.loads(raw_index)
    except ValueError:
        raise ArchiveError(f"{name}: index.json is not valid JSON", fix="the archive was altered; use another backup") from None
    if not isinstance(index, dict):
        raise ArchiveError(f"{name}: index.json is not an object", fix="the archive was altered; use another backup")
    return Archive(index=index, entries=entries)


def verify(archive: Archive, *, name: str = "archive", expect_cluster: str | None = None,
           from_other_cluster: bool = False) -> None:
    """Format version, every sha256, the exact entry list, and the cluster name."""
    index = archive.index
    version = index.get("formatVersion")
    if index.get("format") != FORMAT or version != FORMAT_VERSION:
        writer = index.get("seedbedVersion", "unknown")
        raise ArchiveError(
            f"{name} has backup format version {version!r}; seedbed {__version__} reads version {FORMAT_VERSION} only",
            fix=f"restore it with the seedbed that wrote it (seedbed {writer}) or a later one",
        )
    listed = index.get("entries")
    if not isinstance(listed, dict):
        raise ArchiveError(f"{name}: index.json lists no entries", fix="the archive was altered; use another backup")
    missing = sorted(set(listed) - set(archive.entries))
    extra = sorted(set(archive.entries) - set(listed))
    if missing or extra:
        what = "; ".join(filter(None, [
            f"missing from the archive: {', '.join(missing[:5])}" if missing else "",
            f"not in the index: {', '.join(extra[:5])}" if extra else "",
        ]))
        raise ArchiveError(f"{name} does not match its index ({what})", fix="the archive was altered; use another backup")
    bad = sorted(n for n, meta in listed.items()
                 if not isinstance(meta, dict) or meta.get("sha256") != hashlib.sha256(archive.entries[n]).hexdigest())
    if bad:
        raise ArchiveError(f"{name}: sha256 mismatch for {len(bad)} entr{'y' if len(bad) == 1 else 'ies'} "
                           f"({', '.join(bad[:5])})", fix="the archive was altered or damaged; use another backup")
    wrong_size = sorted(n for n, meta in listed.items() if meta.get("size", len(archive.entries[n])) != len(archive.entries[n]))
    if wrong_size:
        raise ArchiveError(f"{name}: recorded size differs for {', '.join(wrong_size[:5])}",
                           fix="the archive was altered or damaged; use another backup")
    check_shapes(archive, name=name)
    if expect_cluster is not None and archive.cluster != expect_cluster and not from_other_cluster:
        raise ArchiveError(
            f"{name} is a backup of cluster {archive.cluster!r}, not {expect_cluster!r}",
            fix=f"restore into cluster {archive.cluster!r}, or pass --from-other-cluster to restore it here anyway",
        )


_OBJECT_PREFIXES = ("secrets/", "cert-manager/")
_VOLUME_KEYS = ("namespace", "pvc", "volume", "url", "sizeBytes")


def check_shapes(archive: Archive, *, name: str = "archive") -> None:
    """Every entry is what a restore expects, so that a restore never stops half-way on a bad one.

    The hashes prove the entries are what the writer wrote; this proves the writer wrote
    something seedbed can restore, before the first object is created.
    """
    def bad(entry: str, why: str) -> ArchiveError:
        return ArchiveError(f"{name}: entry {entry} {why}", fix="the archive was not written by seedbed backup; "
                            "use another backup")

    for entry, data in archive.entries.items():
        if not entry.endswith(".json"):
            continue
        try:
            obj = json.loads(data)
        except ValueError:
            raise bad(entry, "is not valid JSON") from None
        if entry.startswith(_OBJECT_PREFIXES):
            md = obj.get("metadata") if isinstance(obj, dict) else None
            if not (isinstance(obj, dict) and isinstance(obj.get("apiVersion"), str) and isinstance(obj.get("kind"), str)
                    and isinstance(md, dict) and isinstance(md.get("name"), str) and md["name"]):
                raise bad(entry, "is not a Kubernetes object (apiVersion, kind, metadata.name)")
            if entry.startswith("secrets/") and (obj["kind"] != "Secret" or not isinstance(md.get("namespace"), str)):
                raise bad(entry, "is not a namespaced Secret")
        elif entry == "volumes.json":
            records = obj.get("volumes") if isinstance(obj, dict) else None
            if not isinstance(records, list) or not all(
                    isinstance(r, dict) and all(k in r for k in _VOLUME_KEYS) for r in records):
                raise bad(entry, f"does not list volume records with {', '.join(_VOLUME_KEYS)}")
