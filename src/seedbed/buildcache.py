"""kustomize's output for the operator's work tree, kept between runs.

Every ``seedbed bootstrap`` and ``seedbed plan`` reads the work tree as Flux applies it: one
``kustomize build`` per Flux Kustomization (seedbed.fluxrepo). On a repository of a few hundred files
that is seconds of subprocesses, spent again on every re-run of a finished bootstrap although nothing
changed. A build's output depends only on the files of the tree (Flux confines kustomize to it), the
kustomization seedbed generates for it and the kustomize binary: with all three in the key, an output
can be used again for as long as nothing of them changes.

What is not kept: a build that failed, one that fetched a remote base or URL (it can change without
the tree changing), and one with a Secret in clear (a repository should hold none; seedbed does not
copy one onto disk a second time). SOPS-encrypted Secrets are kept: they are ciphertext, as in Git.

The cache is the user's own (``~/.cache/seedbed/kustomize``, 0700 folders, 0600 files), and what is
read back goes through the same bounded YAML parsing as the repository itself, so a damaged or forged
entry is no worse than an edited repository. At most ``MAX_ENTRIES`` outputs are kept, the oldest
removed first.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
from pathlib import Path

from . import files
from .errors import SeedbedError

FORMAT = "seedbed-kustomize-cache/1"
MAX_ENTRIES = 2000
MAX_TREE_FILES = 20_000  # a bigger tree is not digested: the cache is off for it
MAX_TREE_BYTES = 64 * files.MiB  # hashing it costs ~0.1 s; a tree bigger than that holds more than manifests
ENTRY = files.Kind("cached kustomize output", files.REPO_FILE.limit * 8, "delete ~/.cache/seedbed/kustomize")


def default_root() -> Path:
    import platformdirs

    return Path(platformdirs.user_cache_dir("seedbed")) / "kustomize"


class BuildCache:
    """The outputs of one tree's builds; :meth:`open` gives None when the tree cannot be digested."""

    def __init__(self, root: Path, tree: Path, tree_digest: str, tool: str) -> None:
        self.root = root
        self.tree_digest = tree_digest
        self.tool = tool
        # The generated kustomizations live at a stable place per tree, so that the paths kustomize
        # writes into its output (relative to them) are the same from one run to the next.
        self.wrappers = root / "wrappers" / hashlib.sha256(str(tree.resolve()).encode()).hexdigest()[:16]
        self.builds = root / "builds"

    @classmethod
    def open(cls, root: Path, tree: Path, tool: str) -> BuildCache | None:
        digest = tree_digest(tree)
        if digest is None:
            return None
        cache = cls(root, tree, digest, tool)
        try:
            for folder in (root, cache.wrappers, cache.builds):
                folder.mkdir(mode=0o700, parents=True, exist_ok=True)
            cache._trim()  # once per read: a read adds at most one entry per Flux Kustomization
        except OSError:
            return None
        return cache

    def key(self, wrapper_text: str) -> str:
        from . import __version__

        # FORMAT changes with the way seedbed runs kustomize (fluxrepo.Kustomize.build's flags).
        parts = [FORMAT, __version__, self.tool, self.tree_digest, wrapper_text]
        return hashlib.sha256("\0".join(parts).encode()).hexdigest()

    def get(self, key: str) -> str | None:
        path = self.builds / f"{key}.yaml"
        if not os.path.lexists(path):
            return None
        try:
            text = files.read_text(path, ENTRY)
        except SeedbedError:
            return None
        with contextlib.suppress(OSError):
            os.utime(path)  # recently used: kept the longest
        return text

    def put(self, key: str, text: str) -> None:
        # Only saves time: a cache that cannot be written changes nothing else.
        with contextlib.suppress(SeedbedError, OSError):
            files.write_file(self.builds / f"{key}.yaml", text, "cached kustomize output", mode=0o600)

    def _trim(self) -> None:
        """Down to MAX_ENTRIES, the least recently used first."""
        entries = list(os.scandir(self.builds))
        if len(entries) <= MAX_ENTRIES:
            return
        entries.sort(key=lambda e: e.stat(follow_symlinks=False).st_mtime)
        for e in entries[:len(entries) - MAX_ENTRIES]:
            with contextlib.suppress(OSError):
                os.unlink(e.path)


def tree_digest(tree: Path) -> str | None:
    """A digest of every file of ``tree`` (names, symlink targets, contents), ``.git`` left out;
    None when the tree is too big to digest quickly or cannot be read."""
    h = hashlib.sha256()
    count = size = 0
    try:
        for dirpath, dirnames, filenames in os.walk(tree):
            dirnames[:] = sorted(d for d in dirnames if d != ".git")
            here = Path(dirpath)
            for name in sorted(filenames):
                path = here / name
                rel = path.relative_to(tree).as_posix()
                st = path.lstat()
                count += 1
                size += st.st_size
                if count > MAX_TREE_FILES or size > MAX_TREE_BYTES:
                    return None
                if path.is_symlink():
                    h.update(f"L\0{rel}\0{os.readlink(path)}\0".encode())
                elif path.is_file():
                    h.update(f"F\0{rel}\0".encode())
                    h.update(hashlib.sha256(path.read_bytes()).digest())
    except OSError:
        return None
    return h.hexdigest()


def tool_identity(argv: tuple[str, ...]) -> str:
    """The kustomize that builds: its command line, and the binary's size and time (an upgrade in
    place changes them)."""
    exe = shutil.which(argv[0]) or argv[0]
    try:
        st = os.stat(exe)
    except OSError:
        return " ".join(argv)
    return f"{' '.join(argv)}\0{exe}\0{st.st_size}\0{st.st_mtime_ns}"
