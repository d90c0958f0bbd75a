"""The backup archive: an age-encrypted tar with an ``index.json`` of sha256 sums.

Everything here works on bytes in memory. The plaintext tar is built in memory,
encrypted in memory, and only the ciphertext is written; opening decrypts and untars in
memory too. That is the whole point of the module: a backup holds private keys and
credentials, and a plaintext copy on disk (even in /tmp) would outlive the intent.

The layout is plain on purpose, so that ``age -d -i key.txt backup.age | tar -t`` works
with no seedbed at hand (see docs/backup.md).
"""

from __future__ import annotations

import hashlib
import io
import tarfile
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import msgspec
import pyrage

from seedbed import __version__, files, yamlutil
from seedbed.errors import ArchiveError, ConfigError

from . import signing
from .validate import Contents, Policy, validate

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

FORMAT = "seedbed-backup"
FORMAT_VERSION = 1
INDEX = "index.json"
SIGNATURE = signing.SIGNATURE
# The plaintext tar is held in memory; nothing seedbed writes comes near this (Secrets and a git
# bundle), and a hostile archive must not make restore allocate more.
MAX_PLAINTEXT = files.ARCHIVE.limit

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


_ENCODER = msgspec.json.Encoder(order="sorted")


def dumps(obj: Any) -> bytes:
    """Deterministic JSON: the same object always gives the same bytes, so the same sha256.

    Keys sorted, no spaces, UTF-8 as is: the bytes ``json.dumps(obj, sort_keys=True,
    separators=(",", ":"), ensure_ascii=False)`` gives (floats aside: ``1e16``, not ``1e+16``), at
    a tenth of its time for thousands of Secrets.
    """
    return _ENCODER.encode(obj)


class Archive(msgspec.Struct):
    """A decrypted archive, held in memory; ``contents`` is set once it was verified and validated."""

    index: dict[str, Any]
    entries: dict[str, bytes] = msgspec.field(default_factory=dict)
    index_raw: bytes = b""  # the exact bytes the signature covers
    signature: bytes | None = None  # index.sig, when the archive has one
    signer: str | None = None  # fingerprint of the trusted key that signed it (None: not checked)
    contents: Contents | None = None

    @property
    def cluster(self) -> str:
        return str(self.index.get("cluster", ""))

    @property
    def created(self) -> str:
        return str(self.index.get("created", ""))

    def names(self, prefix: str = "") -> list[str]:
        return sorted(n for n in self.entries if n.startswith(prefix))

    def checked(self) -> Contents:
        """The validated contents; an archive is only restored once :func:`open_bytes` validated it."""
        if self.contents is None:
            raise ArchiveError("the archive was not validated before restoring",  # a bug, not an input
                               fix="open archives with open_archive() or open_bytes()")
        return self.contents


# --------------------------------------------------------------------------- building


_UNSAFE_PARTS = frozenset({"", ".", ".."})


def _check_name(name: str) -> None:
    # Names come from Kubernetes object names, which cannot hold '/' or '..'; anything else is a bug
    # or a hostile archive, and stock `tar -x` would write it outside the current folder.
    if not name or name.startswith("/") or not _UNSAFE_PARTS.isdisjoint(name.split("/")) or "\\" in name:
        raise ArchiveError(f"unsafe archive entry name {name!r}", fix="this archive was not made by seedbed")


def build(entries: dict[str, bytes], *, cluster: str, created: datetime,
          seedbed_version: str = __version__, signing_key: Ed25519PrivateKey | None = None) -> bytes:
    """The plaintext tar, in memory: index.json first, its signature (index.sig) when a key is given,
    then the entries in name order."""
    return build_indexed(entries, cluster=cluster, created=created, seedbed_version=seedbed_version,
                         signing_key=signing_key)[0]


def build_indexed(entries: dict[str, bytes], *, cluster: str, created: datetime,
                  seedbed_version: str = __version__,
                  signing_key: Ed25519PrivateKey | None = None) -> tuple[bytes, dict[str, Any]]:
    """:func:`build`, and the index it wrote (names, sizes, hashes, counts: nothing secret)."""
    if INDEX in entries or SIGNATURE in entries:
        raise ValueError("index.json and index.sig are written by build(), not passed in")
    for name in entries:
        _check_name(name)
    names = sorted(entries)
    kinds = {n: entry_kind(n) for n in names}
    index = {
        "format": FORMAT,
        "formatVersion": FORMAT_VERSION,
        "cluster": cluster,
        "created": created.astimezone(UTC).isoformat().replace("+00:00", "Z"),
        "seedbedVersion": seedbed_version,
        "counts": dict(sorted(Counter(kinds.values()).items())),
        "entries": {
            n: {"sha256": hashlib.sha256(entries[n]).hexdigest(), "size": len(entries[n]), "kind": kinds[n]}
            for n in names
        },
    }
    mtime = int(created.timestamp())
    raw_index = dumps(index)
    head = [(INDEX, raw_index)]
    if signing_key is not None:
        head.append((SIGNATURE, signing.sign(raw_index, signing_key)))
    # The pieces, joined once at the end: one copy of the plaintext in memory, not a growing buffer.
    pieces: list[bytes] = []
    size = 0
    for name, data in [*head, *((n, entries[n]) for n in names)]:
        header, pad = _header(name, len(data), mtime), -len(data) % tarfile.BLOCKSIZE
        pieces += (header, data, _ZEROS[:pad])
        size += len(header) + len(data) + pad
    # The end of the archive, as TarFile.close() writes it: two zero blocks, padded to a whole record.
    size += 2 * tarfile.BLOCKSIZE
    pieces.append(bytes(2 * tarfile.BLOCKSIZE + -size % tarfile.RECORDSIZE))
    return b"".join(pieces), index


_ZEROS = bytes(tarfile.BLOCKSIZE)
_USTAR_MODE = b"0000600\0" b"0000000\0" b"0000000\0"  # mode, uid, gid
# type, link name, magic, then uname, gname, devmajor, devminor (a file has none), prefix, padding
_USTAR_TAIL = tarfile.REGTYPE + bytes(tarfile.LENGTH_LINK) + tarfile.POSIX_MAGIC + bytes(32 + 32 + 8 + 8 + 155 + 12)
_USTAR_SUM = sum(_USTAR_MODE) + sum(b" " * 8) + sum(_USTAR_TAIL)


def _header(name: str, size: int, mtime: int) -> bytes:
    """The tar header of one entry, exactly as ``tarfile`` writes it in PAX format.

    Fixed owner and time: the same content gives the same tar; 0600 because a user who extracts it
    by hand gets private keys, and those should not land world-readable. PAX because object names can
    exceed ustar's 100 characters; GNU tar and bsdtar read PAX natively.

    An ASCII name of at most 100 bytes needs no PAX record, so the header is the plain ustar block
    tarfile's ``_create_header`` builds (CPython 3.11 Lib/tarfile.py), made here directly: tarfile's
    generic header code was the largest CPU cost of a backup of thousands of Secrets. Any other name
    goes through tarfile itself. tests/test_backup_archive.py checks both against tarfile and GNU tar.
    """
    if len(name) <= tarfile.LENGTH_NAME and name.isascii() and size < 8 ** 11 and 0 <= mtime < 8 ** 11:
        raw = name.encode("ascii")
        sizes = b"%011o\0%011o\0" % (size, mtime)
        # The checksum is the sum of the header's bytes, its own field counted as spaces: the fixed
        # parts' share is summed once (_USTAR_SUM), only the name, size and time are summed here.
        check = _USTAR_SUM + sum(raw) + sum(sizes)
        return b"".join((raw.ljust(tarfile.LENGTH_NAME, b"\0"), _USTAR_MODE, sizes, b"%06o\0 " % check,
                         _USTAR_TAIL))
    info = tarfile.TarInfo(name)
    info.size = size
    info.mtime = mtime
    info.mode = 0o600
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    return info.tobuf(tarfile.PAX_FORMAT, tarfile.ENCODING, "surrogateescape")


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


def keygen(path: str | Path, *, signing_path: Path | None = None) -> str:
    """Write a new age identity file (mode 0600) in age-keygen's format; return its recipient.

    The signing key (see signing.py) is made too when there is none yet at ``signing_path``
    (default ``signing.key`` beside the identity, where seedbed looks for it by default). Neither
    key is ever overwritten.
    """
    path = files.expand(path)
    # Overwriting a key would make every archive encrypted to it unreadable.
    target = files.check_output(path, "age identity", overwrite=False)
    if target.stream:
        raise ConfigError(f"age identity {path} is not a regular file; a key written there would be lost",
                          fix="choose a file path for the identity")
    signing_path = signing_path or path.parent / signing.SIGNING_KEY_NAME
    identity = pyrage.x25519.Identity.generate()
    public = str(identity.to_public())
    now = datetime.now(UTC).replace(microsecond=0).isoformat()
    text = f"# created: {now}\n# public key: {public}\n{identity}\n"
    files.write_output(target, text, mode=0o600)
    if not signing_path.exists():
        signing.signing_keygen(signing_path)
    return public


_IDENTITY = files.Kind("identity file", files.KEY.limit, "pass --identity FILE or set backup.identityFile")


def load_identities(paths: list[str | Path]) -> list[Any]:
    """age identity files (AGE-SECRET-KEY-...) and unencrypted OpenSSH ed25519 private keys."""
    if not paths:
        raise ConfigError("no identity to decrypt the archive with",
                          fix="pass --identity FILE or set backup.identityFile (an age key or ~/.ssh/id_ed25519)")
    identities: list[Any] = []
    for p in paths:
        path = files.expand(p)
        if not path.exists():
            raise ConfigError(f"identity file {path} not found",
                              fix="pass --identity FILE or set backup.identityFile")
        try:
            # Regular files only, size-capped: a FIFO given as the identity must not hang the restore.
            raw = files.read_bytes(path, _IDENTITY)
        except ConfigError as e:
            why = e.message.removeprefix(f"{_IDENTITY.what} {path}: ")
            raise ConfigError(f"cannot read identity file {path}: {why}", fix=_IDENTITY.fix) from None
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


def write(path: str | Path | files.OutputTarget, ciphertext: bytes) -> None:
    """Write the ciphertext, mode 0600: over a regular file atomically (a crash leaves the old file or
    none, never half), into a pipe or device by streaming. Check the path with ``files.check_output``
    before the backup starts; a path given here is checked now."""
    if not ciphertext.startswith(_AGE_MAGIC):
        raise ValueError("write() takes age ciphertext only")  # a guard against writing plaintext by mistake
    target = path if isinstance(path, files.OutputTarget) else files.check_output(path, "backup archive")
    files.write_output(target, ciphertext, mode=0o600)


def open_archive(path: str | Path, identities: list[str | Path], *, policy: Policy) -> Archive:
    """Read, decrypt, verify, check the signature and validate an archive; any doubt is an
    ArchiveError before anything is written."""
    try:
        data = files.read_bytes(path, files.ARCHIVE)
    except ConfigError as e:  # the archive is the thing at fault: an archive error (exit 1)
        raise ArchiveError(e.message, fix=e.fix) from None
    keys = load_identities(identities)
    return open_bytes(data, keys, name=str(files.expand(path)), identity_names=[str(i) for i in identities],
                      policy=policy)


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


def open_bytes(data: bytes, identities: list[Any], *, policy: Policy, name: str = "archive",
               identity_names: list[str] | None = None) -> Archive:
    plain = decrypt(data, identities, name=name, identity_names=identity_names)
    archive = untar(plain, name=name)
    del plain
    verify(archive, name=name, policy=policy)
    return archive


def untar(plain: bytes, *, name: str = "archive") -> Archive:
    damaged = ArchiveError(f"{name} is truncated or damaged: the tar inside cannot be read",
                           fix="copy the archive again from where it is stored")
    if len(plain) > MAX_PLAINTEXT:
        raise ArchiveError(f"{name} decrypts to more than {MAX_PLAINTEXT // files.MiB} MiB, more than any seedbed "
                           "backup holds", fix="this archive was not made by seedbed; use another backup")
    entries: dict[str, bytes] = {}
    try:
        with tarfile.open(fileobj=io.BytesIO(plain), mode="r:") as tar:
            for member in tar:
                # Regular files only: a sparse member claims gigabytes of zeros it does not store
                # (reading it would allocate them all), links and devices are never written by seedbed.
                if not member.isfile() or member.issparse():
                    what = "sparse" if member.isfile() else repr(member.type)
                    raise ArchiveError(f"{name}: unexpected {what} member {member.name!r}",
                                       fix="this archive was not made by seedbed")
                _check_name(member.name)
                if member.name in entries:
                    raise ArchiveError(f"{name}: entry {member.name} appears twice",
                                       fix="this archive was altered; use another backup")
                if member.offset_data + member.size > len(plain):  # claims more bytes than there are
                    raise damaged
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
        index = yamlutil.safe_json(raw_index, what=f"{name}: index.json", error=ArchiveError)
    except ArchiveError as e:
        raise ArchiveError(e.message, fix="the archive was altered; use another backup") from None
    if not isinstance(index, dict):
        raise ArchiveError(f"{name}: index.json is not an object", fix="the archive was altered; use another backup")
    return Archive(index=index, entries=entries, index_raw=raw_index, signature=entries.pop(SIGNATURE, None))


def verify(archive: Archive, *, policy: Policy, name: str = "archive") -> None:
    """Format version, the exact entry list, every sha256, the cluster name, the signature, and then
    every entry's content (validate.py). Sets ``archive.contents``; raises before anything is written."""
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
    expect = policy.cluster
    if expect is not None and archive.cluster != expect and not policy.from_other_cluster:
        raise ArchiveError(
            f"{name} is a backup of cluster {archive.cluster!r}, not {expect!r}",
            fix=f"restore into cluster {archive.cluster!r}, or pass --from-other-cluster to restore it here anyway",
        )
    # The refusals above only ever refuse; from here on the archive's content is believed, so it must
    # come from a trusted key (or the user said, by name, that it need not).
    if not policy.skip_signature:
        archive.signer = signing.check(archive.index_raw, archive.signature, policy.trusted, name=name)
    archive.contents = validate(archive.entries, policy, name=name)
