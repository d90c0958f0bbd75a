"""Read a GitOps repository as kustomize-controller applies it.

Flux does not apply "the YAML files in the repository": it applies what its ``Kustomization``
objects build. This module does the same, starting where the cluster's own sync starts
(``cfg.flux_path``, the ``flux-system`` Kustomization's ``spec.path``):

1. build the path with the real kustomize (a ``kustomize`` binary when there is one, else the
   one embedded in ``kubectl kustomize``), with kustomize-controller's build options: load
   restrictions off, plugins off;
2. when the path has no kustomization.yaml, list its files the way kustomize-controller's
   generator does (every ``.yaml``/``.yml`` file below it; a sub-folder holding a kustomization
   file is one resource and is not descended into);
3. apply the Flux Kustomization's ``targetNamespace``, ``patches``, ``images`` and ``components``
   on top of the path's own kustomization (the generator appends them to the root kustomization);
4. run ``postBuild`` substitution per object (``substitute`` over ``substituteFrom`` values that
   are in the repository), skipping objects marked ``kustomize.toolkit.fluxcd.io/substitute:
   disabled``;
5. follow every Flux ``Kustomization`` found in the result that syncs from this repository, to
   its ``spec.path``, recursively.

Upstream behaviour read from fluxcd/pkg ``kustomize/kustomize_generator.go`` (``generateKustomization``,
``WriteFile``, ``Build``: ``LoadRestrictionsNone``, ``DisabledPluginConfig``) and
``kustomize/kustomize_varsub.go`` (``SubstituteVariables``, ``loadVars``, ``varSubstitution``), as
called by fluxcd/kustomize-controller ``internal/controller/kustomization_controller.go``. What
seedbed does differently is listed in docs/handoff.md ("How the repository is read").

Builds run concurrently (bounded), are cached by what they build, and each has a deadline. Every
file is read through :mod:`seedbed.files` and every YAML text through
:func:`seedbed.yamlutil.safe_load_all`.
"""

from __future__ import annotations

import base64
import binascii
import functools
import hashlib
import json
import os
import posixpath
import re
import shutil
import subprocess
import tempfile
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any

import msgspec
import yaml

from . import files, yamlutil
from .envsubst import VAR_NAME_PATTERN, SubstitutionError, envsubst, valid_name
from .errors import ConfigError, SeedbedError

if TYPE_CHECKING:
    from .buildcache import BuildCache

KUSTOMIZATION_FILES = ("kustomization.yaml", "kustomization.yml", "Kustomization")
FLUX_KUSTOMIZE_API = "kustomize.toolkit.fluxcd.io/"
SUBSTITUTE_ANNOTATION = "kustomize.toolkit.fluxcd.io/substitute"
ORIGIN_ANNOTATION = "config.kubernetes.io/origin"
BUILD_TIMEOUT = 120.0  # seconds for one kustomize build; a real app path builds in well under one
MAX_JOBS = 4  # concurrent kustomize processes
MAX_KUSTOMIZATIONS = 2000  # a repository with more Flux Kustomizations than this is not a homelab


class KustomizeError(SeedbedError):
    """No kustomize to build the repository with."""


# --------------------------------------------------------------------------- kustomize


class Kustomize(msgspec.Struct, frozen=True):
    """How to run ``kustomize build``: a kustomize binary, or the one kubectl embeds."""

    argv: tuple[str, ...]

    @property
    def name(self) -> str:
        return " ".join(self.argv)

    def build(self, folder: Path, timeout: float = BUILD_TIMEOUT) -> str:
        """The YAML stream kustomize builds from ``folder``, with kustomize-controller's options (a
        change to them is a change of seedbed.buildcache.FORMAT: kept outputs were built with these)."""
        cmd = [*self.argv, "--load-restrictor", "LoadRestrictionsNone", str(folder)]
        try:
            done = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False)
        except subprocess.TimeoutExpired:
            raise BuildFailed(f"`{self.name}` took longer than {timeout:.0f}s") from None
        except OSError as e:
            raise BuildFailed(f"`{self.name}` could not run: {e.strerror or e}") from None
        if done.returncode != 0:
            raise BuildFailed(_kustomize_message(done.stderr) or f"`{self.name}` exited {done.returncode}")
        return done.stdout


class BuildFailed(Exception):
    """kustomize refused a path (its message, cleaned of the wrapper's paths, is the text)."""


class PathNotFound(BuildFailed):
    """The Flux Kustomization's spec.path is not a folder of the tree (kustomize-controller v1.9.4
    internal/controller/kustomization_controller.go: ``kustomization path not found: <stat error>``,
    checked before the build, reason ArtifactFailed)."""


def _kustomize_message(stderr: str) -> str:
    lines = [ln for ln in stderr.splitlines() if ln.strip() and not ln.startswith("# Warning")]
    text = " ".join(lines).strip()
    m = re.search(r'err="(.*)"\s*$', text)  # kubectl wraps the error in a klog line
    if m:
        text = m.group(1).replace('\\"', '"')
    return text


def find_kustomize() -> Kustomize:
    """A ``kustomize`` binary when present (it is usually newer), else ``kubectl kustomize``."""
    return _find_kustomize(os.environ.get("PATH", ""))


@functools.cache
def _find_kustomize(search_path: str) -> Kustomize:
    if shutil.which("kustomize", path=search_path):
        return Kustomize(("kustomize", "build"))
    kubectl = shutil.which("kubectl", path=search_path)
    if kubectl:
        # kubectl before 1.21 embeds kustomize v2, which knows neither the flags nor today's fields.
        try:
            out = subprocess.run([kubectl, "version", "--client", "-o", "json"], capture_output=True, text=True,
                                 timeout=30, check=False).stdout
            version = str(yamlutil.safe_json(out, what="kubectl version").get("kustomizeVersion") or "")
        except (OSError, subprocess.TimeoutExpired, SeedbedError, AttributeError):
            version = ""
        if version.startswith("v5"):
            return Kustomize((kubectl, "kustomize"))
        raise KustomizeError(
            f"kubectl embeds kustomize {version or 'of an unknown version'}; reading the repository as Flux does "
            "needs kustomize v5", fix="install kubectl 1.27 or later, or a kustomize v5 binary")
    raise KustomizeError(
        "reading the repository as Flux does needs kustomize, and neither `kustomize` nor `kubectl` "
        "(whose `kubectl kustomize` embeds kustomize v5) is on PATH",
        fix="install kubectl (https://kubernetes.io/docs/tasks/tools/) or kustomize v5 "
            "(https://kubectl.docs.kubernetes.io/installation/kustomize/)")


# --------------------------------------------------------------------------- YAML with positions


class Val(msgspec.Struct):
    """A YAML value that remembers where it was written (the key's line for mapping entries)."""

    value: Any  # dict[str, Val] | list[Val] | scalar
    file: str
    line: int
    node_line: int = 0  # where the value itself starts (``line`` is its key's line in a mapping)
    style: str | None = None  # a scalar's YAML style: '|' for a literal block

    def get(self, *path: str) -> Val | None:
        node: Val | None = self
        for part in path:
            if node is None or not isinstance(node.value, dict):
                return None
            node = node.value.get(part)
        return node

    def plain(self) -> Any:
        if isinstance(self.value, dict):
            return {k: v.plain() for k, v in self.value.items()}
        if isinstance(self.value, list):
            return [v.plain() for v in self.value]
        return self.value


_constructor = yaml.constructor.SafeConstructor()


def _to_val(node: yaml.Node, file: str, line_of: Callable[[yaml.Mark], int]) -> Val:
    if isinstance(node, yaml.MappingNode):
        out: dict[str, Val] = {}
        for key_node, value_node in node.value:
            child = _to_val(value_node, file, line_of)
            key = _constructor.construct_object(key_node, deep=True) if isinstance(key_node, yaml.ScalarNode) else None
            if key == "<<" and isinstance(child.value, dict):  # YAML merge key: earlier keys win
                for k, v in child.value.items():
                    out.setdefault(k, v)
                continue
            child.line = line_of(key_node.start_mark)
            out[str(key)] = child
        line = line_of(node.start_mark)
        return Val(out, file, line, line)
    if isinstance(node, yaml.SequenceNode):
        line = line_of(node.start_mark)
        return Val([_to_val(item, file, line_of) for item in node.value], file, line, line)
    line = line_of(node.start_mark)
    return Val(_constructor.construct_object(node, deep=True), file, line, line, node.style)


def parse_positioned(text: str, file: str, line_of: Callable[[yaml.Mark], int] | None = None) -> list[Val]:
    """Every document of ``text`` with positions. Bounded first (hostile input): a bad text raises
    :class:`ConfigError` naming ``file`` and the line."""
    yamlutil.safe_load_all(text, what=file, error=ConfigError)
    line_of = line_of or (lambda mark: mark.line + 1)
    return [_to_val(node, file, line_of) for node in yamlutil.compose_all(text) if node is not None]


def overlay(built: Any, src: Val | None, file: str, line: int) -> Val:
    """``built`` (a value kustomize/Flux produced) with the positions of its source ``src``.

    Keys the source has keep their line; anything a patch, a component or substitution added is
    reported at the nearest enclosing key the source has.
    """
    if isinstance(built, dict):
        src_map = src.value if src is not None and isinstance(src.value, dict) else {}
        out: dict[str, Val] = {}
        for k, v in built.items():
            s = src_map.get(k)
            out[k] = overlay(v, s, file, s.line if s is not None else line)
        return Val(out, file, line, src.node_line if src is not None else line)
    if isinstance(built, list):
        src_items = src.value if src is not None and isinstance(src.value, list) else []
        by_name = {_name_of(s.plain()): s for s in src_items if _name_of(s.plain())}
        items = []
        for i, v in enumerate(built):
            s = by_name.get(_name_of(v)) if _name_of(v) else (src_items[i] if i < len(src_items) else None)
            items.append(overlay(v, s, file, s.node_line if s is not None else line))
        return Val(items, file, line, src.node_line if src is not None else line)
    return Val(built, file, line, src.node_line if src is not None else line, src.style if src is not None else None)


def _name_of(value: Any) -> str | None:
    return str(value["name"]) if isinstance(value, dict) and isinstance(value.get("name"), str | int) else None


# --------------------------------------------------------------------------- the result


class Problem(msgspec.Struct, frozen=True):
    """Something about the repository as Flux reads it (a path that does not build, ...)."""

    file: str
    line: int
    severity: str  # "error" | "warning"
    message: str
    fix: str


class FluxKustomization(msgspec.Struct):
    """A Flux ``Kustomization`` that applies a path of this repository."""

    name: str
    namespace: str
    path: str  # repository-relative, '/'-separated, '.' for the root
    file: str  # where the object is written ('' for the cluster's own sync)
    line: int
    spec: dict[str, Any] = msgspec.field(default_factory=dict)

    @property
    def ref(self) -> str:
        return f"{self.namespace}/{self.name}"


class Obj(msgspec.Struct):
    """One object kustomize-controller would apply, and where it came from."""

    data: dict[str, Any]
    file: str  # the source file (repository-relative) or the kustomization.yaml that generated it
    generator: str | None  # "ConfigMapGenerator"/"SecretGenerator" for generated objects
    applied_by: FluxKustomization

    @property
    def kind(self) -> str:
        return str(self.data.get("kind") or "")

    @property
    def api(self) -> str:
        return str(self.data.get("apiVersion") or "")

    @property
    def name(self) -> str:
        return str((self.data.get("metadata") or {}).get("name") or "")

    @property
    def namespace(self) -> str | None:
        ns = (self.data.get("metadata") or {}).get("namespace")
        return str(ns) if ns else None

    @property
    def encrypted(self) -> bool:
        return isinstance(self.data.get("sops"), dict)


class Repo(msgspec.Struct):
    """The repository as Flux applies it."""

    tree: Path
    objects: list[Obj] = msgspec.field(default_factory=list)
    kustomizations: list[FluxKustomization] = msgspec.field(default_factory=list)
    problems: list[Problem] = msgspec.field(default_factory=list)
    encrypted_files: list[str] = msgspec.field(default_factory=list)  # SOPS files (read once, reported once)
    builds: list[str] = msgspec.field(default_factory=list)  # the folders built, for the bench and the report
    # False when the result may change without the tree changing: an object kustomize fetched from a
    # remote repository or URL, or a build that failed (perhaps fetching one).
    self_contained: bool = True
    _sources: dict[str, list[Val] | None] = msgspec.field(default_factory=dict)

    def __repr__(self) -> str:
        return f"Repo({str(self.tree)!r}, {len(self.objects)} objects, {len(self.problems)} problems)"

    def rel(self, path: Path) -> str:
        try:
            return path.resolve().relative_to(self.tree.resolve()).as_posix()
        except ValueError:
            return path.resolve().as_posix()

    def find(self, kind: str, name: str, namespace: str | None) -> Obj | None:
        for o in self.objects:
            if o.kind == kind and o.name == name and (namespace is None or o.namespace in {None, namespace}):
                return o
        return None

    # ---------------------------------------------------------------- positions

    def source_docs(self, file: str) -> list[Val] | None:
        """The positioned documents of a repository file (cached), or None when it cannot be read."""
        if file not in self._sources:
            try:
                text = files.read_text(self.tree / file, files.REPO_FILE)
                self._sources[file] = parse_positioned(text, file)
            except SeedbedError:
                self._sources[file] = None
        return self._sources[file]

    def positioned(self, obj: Obj) -> Val:
        """``obj`` as applied, with the lines of the document it was written as."""
        docs = self.source_docs(obj.file) or []
        src = _matching_doc(docs, obj)
        line = src.get("kind").line if src is not None and src.get("kind") is not None else 1
        return overlay(obj.data, src, obj.file, line)

    def data_text(self, obj: Obj, key: str) -> tuple[str, str, Callable[[yaml.Mark], int], int] | None:
        """A ConfigMap/Secret key's text, the file to report it in, a line map into that file, and the
        line of the key itself. None when the key is absent or the object is SOPS-encrypted."""
        data = obj.data.get("data") or {}
        string_data = obj.data.get("stringData") or {}
        if obj.kind == "Secret" and key in data:
            try:
                text = base64.b64decode(str(data[key]), validate=True).decode()
            except (binascii.Error, UnicodeDecodeError, ValueError):
                return None
        elif key in string_data or (obj.kind == "ConfigMap" and key in data):
            text = str(string_data[key] if key in string_data else data[key])
        else:
            return None
        if obj.generator:
            return self._generated_text(obj, key, text)
        pos = self.positioned(obj)
        section = "stringData" if key in string_data else "data"
        v = pos.get(section, key)
        key_line = v.line if v is not None else pos.line
        if v is not None and v.style == "|":  # a literal block keeps its lines one for one
            return text, obj.file, (lambda mark, v=v: v.node_line + 1 + mark.line), key_line
        return text, obj.file, (lambda mark: key_line), key_line

    def _generated_text(self, obj: Obj, key: str, text: str) -> tuple[str, str, Callable[[yaml.Mark], int], int]:
        """A generated key's text mapped to the file the generator read it from (same lines: Flux's
        substitution replaces within lines)."""
        folder = posixpath.dirname(obj.file)
        section = "configMapGenerator" if obj.generator == "ConfigMapGenerator" else "secretGenerator"
        docs = self.source_docs(obj.file) or []
        gens = [g for d in docs for g in _list(d.get(section)) if isinstance(g.value, dict)]
        best = None
        for g in gens:
            gname = str(g.get("name").value) if g.get("name") is not None else ""
            if gname and gname in obj.name and (best is None or len(gname) > len(str(best.get("name").value))):
                best = g
        if best is None:
            return text, obj.file, (lambda mark: 1), 1
        for entry in _list(best.get("files")):
            spec = str(entry.value)
            k, _, path = spec.partition("=") if "=" in spec else (posixpath.basename(spec), "", spec)
            if k == key:
                target = posixpath.normpath(posixpath.join(folder, path))
                return text, target, (lambda mark: mark.line + 1), 1
        return text, obj.file, (lambda mark, line=best.line: line), best.line


def _list(v: Val | None) -> list[Val]:
    return list(v.value) if v is not None and isinstance(v.value, list) else []


def _matching_doc(docs: list[Val], obj: Obj) -> Val | None:
    """The source document ``obj`` was built from: same kind, and the same name or the name a
    prefix/suffix/hash was added to."""
    same_kind = [d for d in docs if isinstance(d.value, dict) and d.get("kind") is not None
                 and d.get("kind").value == obj.kind]
    for d in same_kind:
        if str(_plain_name(d)) == obj.name:
            return d
    named = [d for d in same_kind if _plain_name(d) and str(_plain_name(d)) in obj.name]
    if named:
        return max(named, key=lambda d: len(str(_plain_name(d))))
    return same_kind[0] if len(same_kind) == 1 else None


def _plain_name(doc: Val) -> Any:
    n = doc.get("metadata", "name")
    return n.value if n is not None else None


# --------------------------------------------------------------------------- reading


def read(tree: Path, flux_path: str, *, kustomize: Kustomize | None = None, jobs: int = MAX_JOBS,
         timeout: float = BUILD_TIMEOUT, cache: Path | None = None) -> Repo:
    """The objects Flux applies from ``tree`` when its sync starts at ``flux_path``. With ``cache`` (a
    folder, :func:`seedbed.buildcache.default_root`), kustomize's outputs are kept there and used
    again while the tree, the generated kustomizations and kustomize are unchanged."""
    from .buildcache import BuildCache, tool_identity

    tool = kustomize or find_kustomize()
    kept = BuildCache.open(cache, Path(tree), tool_identity(tool.argv)) if cache is not None else None
    reader = _Reader(Path(tree), tool, jobs, timeout, kept)
    return reader.run(flux_path)


class _Build(msgspec.Struct):
    text: str = ""
    error: str = ""
    key: str = ""  # in the build cache; "" when there is none
    from_cache: bool = False


class _Reader:
    def __init__(self, tree: Path, kustomize: Kustomize, jobs: int, timeout: float,
                 kept: BuildCache | None = None) -> None:
        self.tree = tree
        self.repo = Repo(tree)
        self.kustomize = kustomize
        self.jobs = max(1, jobs)
        self.timeout = timeout
        self.cache: dict[Path, _Build] = {}  # by wrapper folder: one build per distinct input
        self.wrapper_texts: dict[Path, str] = {}  # by wrapper folder: what was written there this run
        self.kept = kept
        self.scratch = kept.wrappers if kept is not None else Path(tempfile.mkdtemp(prefix="seedbed-kustomize-"))
        self.source_ref: tuple[str, str] = ("flux-system", "flux-system")  # (namespace, name)

    def run(self, flux_path: str) -> Repo:
        try:
            root_path = _clean_path(flux_path)
            if not (self.tree / root_path).is_dir():
                # seedbed commits only <path>/flux-system/ to the in-cluster repository: from a tree
                # without the folder, Flux applies nothing else.
                self.repo.problems.append(Problem(
                    ".", 0, "warning",
                    f"the cluster's Flux path {root_path} is not in the repository: Flux applies only the "
                    "flux-system/ files seedbed commits there, so nothing in this tree is applied",
                    f"add {root_path}/ with the manifests (or Flux Kustomizations pointing at them) Flux should apply"))
                return self.repo
            root = FluxKustomization("flux-system", "flux-system", root_path, "", 0)
            self._walk([root])
            return self.repo
        finally:
            if self.kept is None:
                shutil.rmtree(self.scratch, ignore_errors=True)

    def _walk(self, level: list[FluxKustomization]) -> None:
        """Build one level of Flux Kustomizations at a time (concurrently), then the ones they name."""
        seen = {(k.namespace, k.name) for k in level}
        with ThreadPoolExecutor(max_workers=self.jobs) as pool:
            while level:
                self.repo.kustomizations += level
                folders = [self._wrapper(k) for k in level]
                todo = list(dict.fromkeys(f for f in folders if f not in self.cache))
                for folder, built in zip(todo, pool.map(self._build, todo), strict=True):
                    self.cache[folder] = built
                found: list[FluxKustomization] = []
                for k, folder in zip(level, folders, strict=True):
                    found += self._apply(k, folder, self.cache[folder])
                level = []
                for k in found:
                    if (k.namespace, k.name) not in seen and len(seen) < MAX_KUSTOMIZATIONS:
                        seen.add((k.namespace, k.name))
                        level.append(k)

    def _build(self, folder: Path) -> _Build:
        key = self.kept.key(self.wrapper_texts[folder]) if self.kept is not None else ""
        if key and (text := self.kept.get(key)) is not None:  # type: ignore[union-attr]
            return _Build(text=text, key=key, from_cache=True)
        try:
            return _Build(text=self.kustomize.build(folder, self.timeout), key=key)
        except BuildFailed as e:
            # kustomize names files relative to the scratch folder or absolutely: name them from the
            # repository, and keep the innermost cause (the end of kustomize's chain of contexts).
            text = str(e).replace(os.path.relpath(self.tree, folder) + "/", "").replace(f"{self.tree.resolve()}/", "")
            text = text.rsplit("': ", 1)[-1]
            return _Build(error=text if len(text) <= 300 else "..." + text[-300:])

    # ---------------------------------------------------------------- one Flux Kustomization

    def _wrapper(self, k: FluxKustomization) -> Path:
        """The folder :func:`wrapper_kustomization` is written to, with origin annotations so each
        object can be traced to its file. Two Flux Kustomizations that build the same thing share one
        folder (and one build)."""
        key = hashlib.sha256(json.dumps([k.path, wrapper_fields(k.spec)], sort_keys=True, default=str).encode())
        folder = self.scratch / key.hexdigest()[:16]
        if folder not in self.wrapper_texts:  # once per run (in the build cache's folder, again each run)
            folder.mkdir(exist_ok=True)
            doc = wrapper_kustomization(self.tree, k.path, k.spec, folder)
            doc["buildMetadata"] = ["originAnnotations"]
            text = self.wrapper_texts[folder] = yamlutil.dump(doc)
            tmp = folder / f".kustomization.{os.getpid()}.tmp"  # another run may be reading it
            tmp.write_text(text)
            os.replace(tmp, folder / "kustomization.yaml")
        return folder

    def _apply(self, k: FluxKustomization, folder: Path, built: _Build) -> list[FluxKustomization]:
        """Record the objects of one build (substituted as Flux would); return the Kustomizations in it."""
        where = (k.file, k.line) if k.file else (k.path, 0)
        if built.error:
            self.repo.self_contained = False
            self.repo.problems.append(Problem(
                where[0], where[1], "warning",
                f"Flux Kustomization {k.ref} cannot be built from ./{k.path.strip('.')}: {built.error}; nothing in it is checked",
                "make `kustomize build` of the path succeed (Flux fails the same way)"))
            return []
        self.repo.builds.append(k.path)
        variables, unknown, refused = self._variables(k)
        if refused is not None:
            why, fix = refused
            self.repo.problems.append(Problem(where[0], where[1], "warning",
                                              f"Flux Kustomization {k.ref} fails: {why}; nothing in it is checked", fix))
            return []
        objs = []
        for doc in re.split(r"(?m)^---[ \t]*$", built.text):
            m = re.search(r"^\s+path: (.*)$", doc, re.M)  # the origin annotation, still in the text
            file, line = (self.repo.rel(folder / m.group(1)), 0) if m else where
            try:
                doc = _substituted(doc, variables, unknown, always=substitutes_always(k.spec))
            except SubstitutionError as e:
                # kustomize-controller: "post build failed for '<name>': envsubst error: variable
                # substitution failed: <e>", and nothing of the revision is applied.
                self.repo.problems.append(Problem(
                    file, line, "warning",
                    f"Flux Kustomization {k.ref} fails: the postBuild substitution of an object of this file "
                    f"fails ({e}); nothing in it is checked",
                    "write ${VAR}, ${VAR:=default} or ${VAR/from/to} in full, and $$ for a literal $"))
                return []
            try:
                objs += yamlutil.safe_load_all(doc, what=f"the build of ./{k.path}", error=ConfigError)
            except ConfigError as e:
                self.repo.problems.append(Problem(
                    file, line, "warning",
                    f"seedbed cannot read an object of this file as built ({e.message.split(': ', 1)[-1]}); "
                    "it is not checked", "quote the value (PyYAML and Go read some plain scalars differently)"))
        children: list[Obj] = []
        keep = bool(built.key) and not built.from_cache  # in the build cache, unless something below says not
        for data in objs:
            if not isinstance(data, dict):
                continue
            file, generator, remote = self._origin(data, folder)
            if remote:
                self.repo.self_contained = keep = False
            obj = Obj(data, file, generator, k)
            if obj.kind == "Secret" and not obj.encrypted and (data.get("data") or data.get("stringData")):
                keep = False  # a Secret in clear is not copied onto disk a second time
            if obj.encrypted and file not in self.repo.encrypted_files:
                self.repo.encrypted_files.append(file)
            self.repo.objects.append(obj)
            if obj.kind == "Kustomization" and obj.api.startswith(FLUX_KUSTOMIZE_API):
                children.append(obj)
        if keep and self.kept is not None:
            self.kept.put(built.key, built.text)
        if not k.file:
            # The cluster's own sync: the Kustomization in it that applies this very path (flux-system,
            # written by `flux bootstrap`) names the source that is this repository.
            for obj in children:
                spec = obj.data.get("spec") or {}
                ref = spec.get("sourceRef") or {}
                if _clean_path(str(spec.get("path") or ".")) == k.path and ref.get("kind") == "GitRepository":
                    self.source_ref = (str(ref.get("namespace") or obj.namespace or "flux-system"),
                                       str(ref.get("name")))
        return [c for obj in children if (c := self._child(obj)) is not None]

    def _origin(self, data: dict[str, Any], folder: Path) -> tuple[str, str | None, bool]:
        """The file an object comes from (repository-relative), its generator, and whether kustomize
        fetched it from a remote repository or URL (the origin annotation, which is removed)."""
        meta = data.get("metadata") or {}
        annotations = meta.get("annotations") or {}
        raw = annotations.pop(ORIGIN_ANNOTATION, None)
        if not annotations and "annotations" in meta:
            del meta["annotations"]
        try:
            origin = yamlutil.safe_load(str(raw or ""), what="origin annotation") or {}
        except ConfigError:
            origin = {}
        if not isinstance(origin, dict):
            return "", None, False
        remote = bool(origin.get("repo")) or str(origin.get("path") or "").startswith(("http://", "https://"))
        if origin.get("path"):
            return self.repo.rel(folder / str(origin["path"])), None, remote
        if origin.get("configuredIn"):
            by = origin.get("configuredBy") or {}
            return self.repo.rel(folder / str(origin["configuredIn"])), str(by.get("kind") or "") or None, remote
        return "", None, remote

    def _child(self, obj: Obj) -> FluxKustomization | None:
        spec = obj.data.get("spec") or {}
        ref = spec.get("sourceRef") or {}
        ns = obj.namespace or "flux-system"
        path = _clean_path(str(spec.get("path") or "."))
        pos = self.repo.positioned(obj)
        line = pos.get("kind").line if pos.get("kind") is not None else pos.line
        if ref.get("kind") != "GitRepository" or (str(ref.get("namespace") or ns), str(ref.get("name"))) \
                != self.source_ref:
            return None  # another source: not this repository
        if not (self.tree / path).is_dir():
            self.repo.problems.append(Problem(obj.file, line, "warning",
                                              f"Flux Kustomization {ns}/{obj.name}: spec.path ./{path} is not a "
                                              "folder of the repository (Flux fails it)", "fix spec.path"))
            return None
        return FluxKustomization(obj.name, ns, path, obj.file, line, spec)

    def _variables(self, k: FluxKustomization) -> tuple[dict[str, str], bool, tuple[str, str] | None]:
        """postBuild variables (substituteFrom values read from the repository, then substitute),
        whether some source could not be read (its variables are then left as written), and why Flux
        fails the Kustomization over them, with the fix, if it does."""
        post = k.spec.get("postBuild") or {}
        if not isinstance(post, dict):
            return {}, False, None
        variables: dict[str, str] = {}
        unknown = False
        for ref in post.get("substituteFrom") or []:
            if not isinstance(ref, dict):
                continue
            src = self.repo.find(str(ref.get("kind")), str(ref.get("name")), k.namespace)
            if src is None or src.encrypted:
                unknown = True
                continue
            for key, value in (src.data.get("data") or {}).items():
                if src.kind == "Secret":
                    try:
                        value = base64.b64decode(str(value), validate=True).decode()
                    except (binascii.Error, UnicodeDecodeError, ValueError):
                        continue
                variables[str(key)] = str(value).replace("\n", "")
            for key, value in (src.data.get("stringData") or {}).items():
                variables[str(key)] = str(value).replace("\n", "")
        inline = post.get("substitute") or {}
        for key, value in inline.items():
            variables[str(key)] = str(value).replace("\n", "")
        # The Kustomization CRD types substitute as a map of strings (the API server refuses `PORT: 22`
        # when the parent applies it); kustomize_varsub.go varSubstitution checks every name first.
        if typed := sorted(str(key) for key, value in inline.items() if not isinstance(value, str)):
            return variables, unknown, (f"postBuild.substitute.{typed[0]} is not a string, so the API server refuses "
                                        "the Kustomization", f"quote the value: {typed[0]}: \"...\"")
        if bad := sorted(name for name in variables if not valid_name(name)):
            return variables, unknown, (f"postBuild variable name {bad[0]!r} is invalid, must match {VAR_NAME_PATTERN!r}",
                                        "rename the variable: letters, digits and _, not starting with a digit")
        return variables, unknown, None


def wrapper_fields(spec: Mapping[str, Any]) -> dict[str, Any]:
    """What a Flux Kustomization's spec adds on top of its path's own kustomization: targetNamespace
    (as ``namespace``), patches, images, components (fluxcd/pkg kustomize/kustomize_generator.go)."""
    extra: dict[str, Any] = {}
    if isinstance(spec.get("targetNamespace"), str) and spec["targetNamespace"]:
        extra["namespace"] = spec["targetNamespace"]
    patches = [{kk: v for kk, v in p.items() if kk in {"patch", "target"}}
               for p in spec.get("patches") or [] if isinstance(p, dict)]
    if patches:
        extra["patches"] = patches
    images = [i for i in spec.get("images") or [] if isinstance(i, dict)]
    if images:
        extra["images"] = images
    components = [c for c in spec.get("components") or [] if isinstance(c, str)]
    if components:
        extra["components"] = components
    return extra


def wrapper_kustomization(tree: Path, path: str, spec: Mapping[str, Any], folder: Path) -> dict[str, Any]:
    """A kustomization, to be written in ``folder``, that builds ``path`` of ``tree`` as
    kustomize-controller does: the path (or the file list Flux generates for a path without a
    kustomization file), then the spec's :func:`wrapper_fields` on top."""
    target = tree / path
    rel = os.path.relpath(target, folder)
    if any((target / name).is_file() for name in KUSTOMIZATION_FILES):
        resources = [rel]
    else:
        resources = [posixpath.join(rel, p) for p in _generated_resources(target)]
    extra = wrapper_fields(spec)
    if "components" in extra:
        extra["components"] = [os.path.relpath(target / c, folder) for c in extra["components"]]
    return {"apiVersion": "kustomize.config.k8s.io/v1beta1", "kind": "Kustomization", "resources": resources,
            **extra}


def build(tree: Path, spec: Mapping[str, Any], *, kustomize: Kustomize | None = None,
          timeout: float = BUILD_TIMEOUT) -> str:
    """``kustomize build`` of a Flux Kustomization's ``spec.path`` in ``tree`` as kustomize-controller
    runs it, before decryption and substitution; raises BuildFailed with kustomize's reason."""
    path = _clean_path(str(spec.get("path") or "."))
    if not (tree / path).is_dir():
        raise PathNotFound(f"kustomization path not found: stat {tree / path}: no such file or directory")
    with tempfile.TemporaryDirectory(prefix="seedbed-kustomize-") as scratch:
        folder = Path(scratch)
        (folder / "kustomization.yaml").write_text(yamlutil.dump(wrapper_kustomization(tree, path, spec, folder)))
        return (kustomize or find_kustomize()).build(folder, timeout)


def _clean_path(path: str) -> str:
    """A Flux ``spec.path`` as a repository-relative folder. Like kustomize-controller's securejoin,
    ``..`` cannot climb above the repository root."""
    return posixpath.normpath(posixpath.join("/", path.strip())).lstrip("/") or "."


# What source-controller leaves out of the artifact it serves kustomize-controller
# (fluxcd/source-controller internal/controller/gitrepository_controller.go -> pkg/sourceignore
# VCSPatterns and default exclusions); .sourceignore files are not read.
_IGNORED_DIRS = {".git", ".github", ".circleci"}
_IGNORED_FILES = {".travis.yml", ".gitlab-ci.yml", "appveyor.yml", ".drone.yml", "cloudbuild.yaml",
                  "codeship-services.yml", "codeship-steps.yml", ".goreleaser.yml", ".sops.yaml", ".flux.yaml"}


def _generated_resources(folder: Path) -> list[str]:
    """The resource list kustomize-controller generates for a path without kustomization.yaml."""
    out: list[str] = []
    for dirpath, dirnames, filenames in os.walk(folder):
        dirnames.sort()
        here = Path(dirpath)
        keep = []
        for d in dirnames:
            if d in _IGNORED_DIRS:
                continue
            if any((here / d / name).is_file() for name in KUSTOMIZATION_FILES):
                out.append((here / d).relative_to(folder).as_posix())
            else:
                keep.append(d)
        dirnames[:] = keep
        for f in sorted(filenames):
            if f.endswith((".yaml", ".yml")) and f not in _IGNORED_FILES and os.path.isfile(here / f):
                out.append((here / f).relative_to(folder).as_posix())
    return sorted(out, key=lambda p: p.split("/"))  # Go's filepath.Walk order: lexical, depth first


def substitutes_always(spec: Mapping[str, Any]) -> bool:
    """``spec.postBuild.substituteStrategy: Always``: Flux substitutes even without a variable (for
    expressions with defaults). The default, WithVariables, substitutes only when there is one
    (kustomize-controller v1.9.4 api/v1/kustomization_types.go GetSubstituteStrategy, and fluxcd/pkg
    kustomize v1.35.4 kustomize_varsub.go: ``len(vars) > 0 || options.Always``)."""
    post = spec.get("postBuild")
    return isinstance(post, dict) and post.get("substituteStrategy") == "Always"


def _substituted(doc: str, variables: dict[str, str], unknown: bool, *, always: bool = False) -> str:
    """One object of a build as kustomize-controller's ``SubstituteVariables`` leaves it: substituted
    only when the Kustomization has variables or :func:`substitutes_always`, never when it is marked
    ``substitute: disabled``; raises SubstitutionError where Flux fails the Kustomization. Every
    ``$`` matters (``$$`` becomes ``$``), so a document without one is the only one left alone."""
    if (not variables and not unknown and not always) or "$" not in doc or _substitution_disabled(doc):
        return doc
    return envsubst(doc, variables, keep_unset=unknown)


def _substitution_disabled(doc: str) -> bool:
    if SUBSTITUTE_ANNOTATION not in doc:
        return False
    try:
        data = yamlutil.safe_load(doc, what="an object", error=ConfigError)
    except ConfigError:
        return False
    return isinstance(data, dict) and substitution_disabled(data)


def substitution_disabled(data: Mapping[str, Any]) -> bool:
    """An object Flux does not substitute in: labelled or annotated ``kustomize.toolkit.fluxcd.io/
    substitute: disabled`` (fluxcd/pkg kustomize/kustomize_varsub.go, SubstituteVariables, which
    kustomize-controller v1.9.4 calls)."""
    meta = data.get("metadata") or {}
    if not isinstance(meta, dict):
        return False
    return "disabled" in {(meta.get(k) or {}).get(SUBSTITUTE_ANNOTATION) for k in ("labels", "annotations")
                          if isinstance(meta.get(k) or {}, dict)}


# --------------------------------------------------------------------------- Flux API versions


def served_versions(crds: list[dict[str, Any]]) -> dict[tuple[str, str], list[str]]:
    """(group, kind) → the versions the Flux CRDs of a release serve (``spec.versions[].served``)."""
    out: dict[tuple[str, str], list[str]] = {}
    for crd in crds:
        if crd.get("kind") != "CustomResourceDefinition":
            continue
        spec = crd.get("spec") or {}
        kind = (spec.get("names") or {}).get("kind")
        out[(str(spec.get("group")), str(kind))] = [str(v.get("name")) for v in spec.get("versions") or []
                                                    if isinstance(v, dict) and v.get("served")]
    return out


def unserved_apis(repo: Repo, served: dict[tuple[str, str], list[str]]) -> list[Problem]:
    """Every object of a Flux API group whose apiVersion the Flux being installed does not serve
    (``kustomize.toolkit.fluxcd.io/v1beta1``, ``helm.toolkit.fluxcd.io/v2beta1``...): the API server
    refuses it, and the Kustomization applying it fails."""
    groups = {g for g, _ in served}
    out: list[Problem] = []
    seen: set[tuple[str, str, str]] = set()
    for obj in repo.objects:
        group, _, version = obj.api.rpartition("/")
        if group not in groups or (obj.file, obj.api, obj.kind) in seen:
            continue
        versions = served.get((group, obj.kind))
        if versions is not None and version in versions:
            continue
        seen.add((obj.file, obj.api, obj.kind))
        pos = repo.positioned(obj).get("apiVersion")
        why = (f"served: {group}/{', '.join(versions)}" if versions
               else f"no kind {obj.kind} in {group}")
        out.append(Problem(obj.file, pos.line if pos is not None else 1, "error",
                           f"{obj.kind} {obj.name}: {obj.api} is not served by the Flux being installed ({why})",
                           "run `flux migrate` on the repository (or edit the apiVersion), or pin the older Flux "
                           "in flux.version"))
    return out
