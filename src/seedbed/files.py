"""The one way seedbed reads a file it was given and writes a file it was asked to write.

Everything from outside is hostile until checked: a FIFO would block a plain ``open()`` forever,
``/dev/zero`` never ends, a 50 MB "config" is a mistake. So inputs are opened without blocking,
must be regular files, and are read up to a size cap chosen per kind of file. Outputs are checked
*before* the work that produces them, and only a regular file is ever replaced (a rename over
``/dev/null`` run as root would turn the system's null device into a file); pipes and character
devices are written by streaming into them.
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
import secrets
import stat
from pathlib import Path

import msgspec

from .errors import ConfigError, SeedbedError

KiB = 1024
MiB = 1024 * KiB


class Kind(msgspec.Struct, frozen=True):
    """A kind of input file: what to call it in a message, its size cap, and the fix to offer."""

    what: str
    limit: int
    fix: str


CONFIG = Kind("config file", 1 * MiB, "run `seedbed init` to write an example, or pass --config PATH")
KUBECONFIG = Kind("kubeconfig", 4 * MiB, "pass a kubeconfig file with --kubeconfig or $KUBECONFIG")
CREDENTIAL = Kind("credential file", 1 * MiB, "point the kubeconfig at a regular file")
KEY = Kind("key file", 256 * KiB, "pass the path of a key file")
PUBLIC_KEYS = Kind("public key file", 256 * KiB,
                   "point repo.authorizedKeys at your public key file, e.g. ~/.ssh/id_ed25519.pub")
BACKUP_CREDENTIALS = Kind("credentials file", 64 * KiB,
                          "point longhorn.backupCredentials.fromFile at a KEY=VALUE file (mode 0600)")
MANIFEST = Kind("release manifest", 32 * MiB, "pass the release manifest file or a folder of them with --manifests")
ARCHIVE = Kind("backup archive", 8 * 1024 * MiB, "pass a file written by `seedbed backup`")
REPO_FILE = Kind("repository file", 4 * MiB, "keep manifests in the GitOps tree below 4 MiB")
LOCK = Kind("lock file", 1 * MiB, "fix or delete seedbed.lock beside seedbed.yaml; seedbed records the hashes again")


def expand(path: str | os.PathLike[str]) -> Path:
    """``~`` and ``~user`` expanded; an unknown user is a clear error, not a traceback."""
    text = os.fspath(path)
    if text == "":
        raise ConfigError("an empty path was given", fix="name a file")
    if text.startswith("~"):
        expanded = os.path.expanduser(text)
        if expanded.startswith("~"):
            user = text[1:].split("/", 1)[0]
            raise ConfigError(f"{text}: there is no user {user!r} on this machine to expand ~{user}",
                              fix="write the path out in full")
        return Path(expanded)
    return Path(text)


def _refuse(path: Path, kind: Kind, why: str) -> SeedbedError:
    return ConfigError(f"{kind.what} {path}: {why}", fix=kind.fix)


def read_bytes(path: str | os.PathLike[str], kind: Kind, *, limit: int | None = None) -> bytes:
    """The whole of a regular file, at most ``limit`` (default: the kind's cap) bytes, or a ConfigError."""
    p = expand(path)
    cap = kind.limit if limit is None else limit
    # A first look without opening: a socket cannot be opened at all, and opening some devices has
    # side effects (a tape rewinds, a terminal becomes the controlling one), so refuse them by name.
    try:
        st = os.stat(p)
    except FileNotFoundError:
        raise _refuse(p, kind, "no such file") from None
    except NotADirectoryError:
        raise _refuse(p, kind, "a part of the path is a file, not a folder") from None
    except OSError as e:
        raise _refuse(p, kind, f"cannot open: {e.strerror or e}") from None
    _check_regular(p, kind, st.st_mode)
    try:
        # O_NONBLOCK: should the path become a FIFO after the look above, opening it must not hang;
        # O_NOCTTY: nor may a terminal become ours. The fstat below decides on what was opened.
        fd = os.open(p, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | getattr(os, "O_CLOEXEC", 0))
    except FileNotFoundError:
        raise _refuse(p, kind, "no such file") from None
    except IsADirectoryError:
        raise _refuse(p, kind, "is a folder, not a file") from None
    except PermissionError:
        raise _refuse(p, kind, "permission denied") from None
    except OSError as e:
        raise _refuse(p, kind, f"cannot open: {e.strerror or e}") from None
    try:
        st = os.fstat(fd)
        _check_regular(p, kind, st.st_mode)
        if st.st_size > cap:
            raise _refuse(p, kind, f"is {_size(st.st_size)}; a {kind.what} may be at most {_size(cap)}")
        os.set_blocking(fd, True)
        chunks: list[bytes] = []
        total = 0
        while True:
            chunk = os.read(fd, min(1 * MiB, cap + 1 - total))
            if not chunk:
                break
            chunks.append(chunk)
            total += len(chunk)
            if total > cap:  # the file grew while we read it
                raise _refuse(p, kind, f"is larger than {_size(cap)}, the most a {kind.what} may be")
        return b"".join(chunks)
    except OSError as e:
        raise _refuse(p, kind, f"cannot read: {e.strerror or e}") from None
    finally:
        os.close(fd)


def _check_regular(p: Path, kind: Kind, mode: int) -> None:
    if stat.S_ISDIR(mode):
        raise _refuse(p, kind, "is a folder, not a file")
    if not stat.S_ISREG(mode):
        raise _refuse(p, kind, f"is a {_type_name(mode)}, not a regular file")


def read_text(path: str | os.PathLike[str], kind: Kind, *, limit: int | None = None) -> str:
    """:func:`read_bytes` decoded as UTF-8 (a BOM is tolerated), or a ConfigError."""
    data = read_bytes(path, kind, limit=limit)
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise _refuse(expand(path), kind, "is not UTF-8 text") from None


def _type_name(mode: int) -> str:
    for test, name in ((stat.S_ISFIFO, "named pipe (FIFO)"), (stat.S_ISCHR, "character device"),
                       (stat.S_ISBLK, "block device"), (stat.S_ISSOCK, "socket")):
        if test(mode):
            return name
    return "special file"


def _size(n: int) -> str:
    for unit, size in (("GiB", 1024 * MiB), ("MiB", MiB), ("KiB", KiB)):
        if n >= size:
            return f"{n / size:.1f} {unit}"
    return f"{n} bytes"


# --------------------------------------------------------------------------- outputs


class OutputTarget(msgspec.Struct, frozen=True):
    """Where an output goes, checked before the work: a regular file (new or replaced) or a stream."""

    path: Path
    stream: bool  # a pipe, character device or /dev/fd/N: written in place, never renamed over


def _is_fd_folder(folder: Path) -> bool:
    # /dev/fd/N, /dev/stdout and /proc/self/fd/N name an open descriptor, not a folder entry that a
    # rename could replace: they are always written in place.
    return re.fullmatch(r"/proc/(self|thread-self|\d+)(/task/\d+)?/fd", os.path.realpath(folder)) is not None


def check_output(path: str | os.PathLike[str], what: str, *, overwrite: bool = True) -> OutputTarget:
    """Refuse, before any work, an output seedbed could not write or must not replace."""
    p = expand(path)
    fix = f"choose another path for the {what}"
    try:
        st = os.stat(p)
    except FileNotFoundError:
        st = None
    except NotADirectoryError:
        raise ConfigError(f"{what} {p}: a part of the path is a file, not a folder", fix=fix) from None
    except OSError as e:
        raise ConfigError(f"{what} {p}: {e.strerror or e}", fix=fix) from None
    if st is not None:
        if stat.S_ISDIR(st.st_mode):
            raise ConfigError(f"{what} {p} is a folder", fix=f"name a file inside it, e.g. {p / 'out'}")
        if stat.S_ISFIFO(st.st_mode) or stat.S_ISCHR(st.st_mode) or _is_fd_folder(p.parent):
            if not os.access(p, os.W_OK):
                raise ConfigError(f"{what} {p}: permission denied", fix=fix)
            return OutputTarget(p, stream=True)
        if not stat.S_ISREG(st.st_mode):
            raise ConfigError(f"{what} {p} is a {_type_name(st.st_mode)}; only a regular file is replaced",
                              fix=fix)
        if not overwrite:
            raise ConfigError(f"{p} already exists", fix="pass --force to overwrite it, or choose another path")
    # A symbolic link is followed: the file it names is replaced, the link itself stays.
    if os.path.islink(p):
        p = Path(os.path.realpath(p))
    parent = p.parent
    if not parent.is_dir():
        if parent.exists() or _existing_ancestor(parent).is_file():
            raise ConfigError(f"{what} {p}: {_existing_ancestor(parent)} is a file, not a folder", fix=fix)
        raise ConfigError(f"{what} {p}: the folder {parent} does not exist", fix=f"create it first: mkdir -p {parent}")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise ConfigError(f"{what} {p}: the folder {parent} is not writable", fix=fix)
    return OutputTarget(p, stream=False)


def check_output_dir(path: str | os.PathLike[str], what: str) -> Path:
    """Refuse, before any work, a folder seedbed could not create or write files in (it may not exist yet)."""
    p = expand(path)
    fix = f"choose another folder for the {what}"
    if p.exists() and not p.is_dir():
        raise ConfigError(f"{what} {p} is a file, not a folder", fix="name a folder (it is created if missing)")
    existing = _existing_ancestor(p)
    if not existing.is_dir():
        raise ConfigError(f"{what} {p}: {existing} is a file, not a folder", fix=fix)
    if not os.access(existing, os.W_OK | os.X_OK):
        where = "" if existing == p else f": the folder {existing} is"
        raise ConfigError(f"{what} {p}{where or ' is'} not writable", fix=fix)
    return p


def make_dirs(path: Path, what: str) -> None:
    """``mkdir -p`` with a ConfigError instead of an OSError."""
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise ConfigError(f"cannot create the {what} {path}: {e.strerror or e}", fix=f"choose another folder for the {what}") from None


def _existing_ancestor(p: Path) -> Path:
    """``p`` or its nearest ancestor that exists (as anything)."""
    p = Path(os.path.abspath(p))
    while not os.path.lexists(p) and p != p.parent:
        p = p.parent
    return p


def write_output(target: OutputTarget, data: bytes | str, *, mode: int = 0o644) -> None:
    """Write ``data``: into a stream in place; to a regular file atomically (temp file, fsync, rename)."""
    raw = data.encode() if isinstance(data, str) else data
    p = target.path
    try:
        if target.stream:
            _write_stream(p, raw)
            return
        tmp = p.with_name(f".{p.name}.{secrets.token_hex(4)}.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0), mode)
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(raw)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, p)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise
    except OSError as e:
        raise ConfigError(f"cannot write {p}: {e.strerror or e}", fix="check the path and free disk space") from None


def _write_stream(p: Path, raw: bytes) -> None:
    # Non-blocking open: a FIFO nobody reads is an error now, not a hang; then write normally.
    try:
        fd = os.open(p, os.O_WRONLY | os.O_NONBLOCK | os.O_NOCTTY | getattr(os, "O_CLOEXEC", 0))
    except OSError as e:
        if e.errno == errno.ENXIO:
            raise ConfigError(f"cannot write {p}: no program is reading from this pipe",
                              fix="start the reader first, or write to a regular file") from None
        raise
    os.set_blocking(fd, True)
    with os.fdopen(fd, "wb", buffering=0) as f:
        view = memoryview(raw)
        while view:
            view = view[f.write(view) or 0:]


def write_file(path: str | os.PathLike[str], data: bytes | str, what: str, *, mode: int = 0o644,
               overwrite: bool = True) -> Path:
    """:func:`check_output` then :func:`write_output`, for outputs that need no work in between."""
    target = check_output(path, what, overwrite=overwrite)
    write_output(target, data, mode=mode)
    return target.path
