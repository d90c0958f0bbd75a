"""Upstream release manifests by version: download, verify the sha256, cache.

Trust works like ``go.sum`` or ``.terraform.lock.hcl``:

1. A pin shipped in the package (``data/pins.json``) always wins.
2. Otherwise the lock file beside ``seedbed.yaml`` (``seedbed.lock``). The first download of a version
   records its hash there (trust on first use); every later run must get the same bytes. A hash is
   recorded only once the caller accepted the file (:meth:`ManifestStore.accept`, after every step
   rendered it), so a file that ``plan`` refuses is never trusted.
3. A mismatch with either is a hard error, never a warning.
4. The versions seedbed installs by default are never trusted on first use: each ships a pin, or,
   where no hash of the official file could be established, seedbed refuses to download it and asks
   for the file with ``--manifests`` (whose bytes the user vouches for).

The cache (``<user cache>/seedbed/manifests/<component>-<version>.yaml``) only saves downloads: it is
never a source of trust, so every read is hashed again against the pin or the lock entry.
``--manifests DIR`` (or a single file) replaces the download for air-gapped installs; those files go
through the same checks.

The API is synchronous because it is called once or twice per command and mostly reads a cached file;
async callers can use ``await asyncio.to_thread(store.text, "longhorn", version)``.
"""

from __future__ import annotations

import hashlib
import ipaddress
import json
import logging
import os
import re
from collections.abc import Callable, Mapping
from importlib import resources
from pathlib import Path
from typing import Literal

import httpx2
import msgspec
import platformdirs

from . import __version__, files, yamlutil
from .config import FLUX_VERSION, LONGHORN_VERSION, VERSION
from .errors import ManifestError, SeedbedError

log = logging.getLogger(__name__)

Component = Literal["longhorn", "flux"]
Origin = Literal["pin", "lock", "new"]
ProgressCallback = Callable[[int, int | None], None]

COMPONENTS: tuple[str, ...] = ("longhorn", "flux")
DISPLAY = {"longhorn": "Longhorn", "flux": "Flux"}

# The official release addresses. Longhorn commits its manifest at the tag; Flux attaches it to the
# GitHub release (that URL redirects to a storage host, so redirects are followed).
DEFAULT_URLS: dict[str, str] = {
    "longhorn": "https://raw.githubusercontent.com/longhorn/longhorn/{version}/deploy/longhorn.yaml",
    "flux": "https://github.com/fluxcd/flux2/releases/download/{version}/install.yaml",
}

# File names accepted in a --manifests folder, first one preferred. The Flux variants cover a saved
# `install.yaml` and the `gotk-components.yaml` that `flux bootstrap` writes into a repository.
LOCAL_NAMES: dict[str, tuple[str, ...]] = {
    "longhorn": ("longhorn-{version}.yaml",),
    "flux": ("flux-{version}.yaml", "flux-install-{version}.yaml", "flux-gotk-components-{version}.yaml"),
}

# A mirror given by this variable serves the preferred --manifests names, so a --manifests folder
# behind any static web server (`python -m http.server`) is a valid mirror.
BASE_URL_ENV = "SEEDBED_MANIFEST_BASE_URL"

LOCK_HEADER = """\
# seedbed.lock: sha256 of the upstream release manifests seedbed installs for this cluster.
# seedbed records a version here the first time it downloads it (unless seedbed itself ships a pin
# for it) and refuses a file with any other hash on every later run. Commit this file next to
# seedbed.yaml so other machines and later runs install exactly the same bytes.
# To accept a changed upstream file on purpose, delete its line and run seedbed again.
"""

# The largest release manifest today is about 1 MB; the cap only stops a runaway response from
# filling memory and the cache. The same cap as a --manifests file.
MAX_BYTES = files.MANIFEST.limit

# What a fresh bootstrap installs: these are never trusted on first use (module docstring, rule 4).
DEFAULT_VERSIONS: dict[str, str] = {"longhorn": LONGHORN_VERSION, "flux": FLUX_VERSION}

_LOCK_LINE = re.compile(
    r"^(?P<component>[a-z0-9][a-z0-9-]*)\s+(?P<version>\S+)\s+sha256:(?P<sha>[0-9a-f]{64})"
    r"\s*(?:#\s*(?P<note>.*?))?\s*$"
)


class ManifestSource(msgspec.Struct, frozen=True):
    """Where a verified manifest came from.

    ``origin`` says what vouched for it: ``pin`` (shipped with seedbed), ``lock`` (the lock file) or
    ``new`` (first seen, and now recorded in the lock file). ``path`` is the cache entry or the
    --manifests file the bytes were read from; ``url`` is the official address of the release file.
    """

    component: str
    version: str
    url: str
    sha256: str
    origin: Origin
    path: Path


class LockEntry(msgspec.Struct, frozen=True):
    sha256: str
    note: str = ""
    line: int = 0


def load_pins() -> dict[str, dict[str, str]]:
    """The hashes shipped in the package: ``{component: {version: sha256}}``."""
    text = resources.files("seedbed").joinpath("data/pins.json").read_text(encoding="utf-8")
    data = json.loads(text)
    return {str(c): {str(v): str(h) for v, h in versions.items()} for c, versions in data.items()}


# ---------------------------------------------------------------------------------------------- lock file


def read_lock(path: Path) -> dict[tuple[str, str], LockEntry]:
    """Parse a lock file; a missing file is an empty lock."""
    if not os.path.lexists(path):
        return {}
    text = files.read_text(path, files.LOCK)
    entries: dict[tuple[str, str], LockEntry] = {}
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        m = _LOCK_LINE.match(line)
        if not m:
            raise ManifestError(
                f"{path}:{number}: not a lock line: {line[:80]!r}",
                fix="each line must read `COMPONENT VERSION sha256:HEX  # URL`; fix it, "
                "or delete the line and seedbed records the hash again on the next download",
            )
        key = (m["component"], m["version"])
        entry = LockEntry(m["sha"], m["note"] or "", number)
        old = entries.get(key)
        if old is not None and old.sha256 != entry.sha256:
            raise ManifestError(
                f"{path}:{number}: {key[0]} {key[1]} is listed twice with different hashes "
                f"(also line {old.line})",
                fix="keep the line with the hash you trust and delete the other",
            )
        entries[key] = entry
    return entries


def _version_key(version: str) -> tuple[tuple[int, int | str], ...]:
    # Numeric order keeps v1.9.0 before v1.10.0; the tagged tuples keep mixed parts comparable.
    return tuple((0, int(p)) if p.isdigit() else (1, p) for p in re.split(r"[.+-]", version.lstrip("v")))


def render_lock(entries: Mapping[tuple[str, str], LockEntry]) -> str:
    """The lock file text: header, then one line per entry sorted by component and version.

    Lines are not aligned into columns on purpose: adding a version must change exactly one line.
    """
    lines = [LOCK_HEADER]
    for component, version in sorted(entries, key=lambda k: (k[0], _version_key(k[1]), k[1])):
        entry = entries[(component, version)]
        note = f"  # {entry.note}" if entry.note else ""
        lines.append(f"{component} {version} sha256:{entry.sha256}{note}\n")
    return "".join(lines)


# ---------------------------------------------------------------------------------------------- helpers


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _is_loopback(host: str) -> bool:
    if host.lower() in {"localhost", "localhost."}:
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def _check_transport(url: str | httpx2.URL) -> None:
    """Refuse anything but https, except plain http on loopback (test servers, local mirrors)."""
    u = httpx2.URL(str(url))
    if u.scheme == "https" or (u.scheme == "http" and _is_loopback(u.host)):
        return
    raise ManifestError(
        f"refusing to download {url}: only https:// is allowed (plain http only on localhost)",
        fix=f"use an https:// address in {BASE_URL_ENV}, or pass --manifests DIR with the files",
    )


def _request_hook(request: httpx2.Request) -> None:
    # Runs for every hop of a redirect chain too, so an https -> http downgrade is refused.
    _check_transport(request.url)


def _looks_like_manifest(data: bytes, what: str) -> bool:
    """True when the bytes parse as YAML with at least one Kubernetes object (not an HTML error page).

    The bytes are not trusted yet (no pin, no lock entry): parsed with the bounded loader, so an alias
    bomb is refused here, before the trusted fast loader ever sees the text.
    """
    try:
        docs = yamlutil.safe_load_all(data.decode("utf-8"), what=what, error=ManifestError)
    except UnicodeDecodeError:
        return False
    except ManifestError as e:
        if "not valid YAML" in e.message:
            return False
        raise
    return any(isinstance(d, dict) and "apiVersion" in d and "kind" in d for d in docs)


def _local_names(component: str, version: str) -> list[str]:
    return [t.replace("{version}", version) for t in LOCAL_NAMES[component]]


def _name_pattern(template: str) -> re.Pattern[str]:
    # A version always starts with "v<digit>", so "flux-{version}" cannot swallow "flux-gotk-components-v…".
    return re.compile("^" + re.escape(template).replace(r"\{version\}", r"(v\d[^/]*)") + "$")


def _component_of_filename(name: str) -> tuple[str, str] | None:
    """(component, version) a --manifests file name stands for, or None."""
    for component, templates in LOCAL_NAMES.items():
        for template in templates:
            m = _name_pattern(template).match(name)
            if m:
                return component, m.group(1)
    return None


def _url_templates(urls: Mapping[str, str] | None) -> dict[str, str]:
    templates = dict(DEFAULT_URLS)
    base = os.environ.get(BASE_URL_ENV, "").strip()
    if base:
        if not re.match(r"^https?://[^/]", base):
            raise ManifestError(
                f"{BASE_URL_ENV}={base!r} is not an http(s) address",
                fix=f"set {BASE_URL_ENV} to a URL like https://mirror.example/seedbed, or unset it",
            )
        for component in COMPONENTS:
            templates[component] = base.rstrip("/") + "/" + LOCAL_NAMES[component][0]
    for component, template in (urls or {}).items():
        _check_component(component)
        templates[component] = template
    return templates


def _check_component(component: str) -> None:
    if component not in COMPONENTS:
        raise ManifestError(
            f"unknown upstream component {component!r}",
            fix=f"use one of: {', '.join(COMPONENTS)}",
        )


# ---------------------------------------------------------------------------------------------- store


class ManifestStore:
    """Release manifests by component and version, verified against a pin or the lock file.

    ``lock_file`` is ``seedbed.lock`` beside the config. ``manifests`` is the ``--manifests`` folder or
    file. ``urls`` overrides the address template per component (``{version}`` is replaced); the
    ``SEEDBED_MANIFEST_BASE_URL`` variable points both at a mirror. ``on_progress(done, total)`` is
    called while downloading (``total`` is None when the server does not say).
    """

    def __init__(
        self,
        *,
        lock_file: Path,
        cache_dir: Path | None = None,
        manifests: Path | None = None,
        offline: bool = False,
        urls: Mapping[str, str] | None = None,
        on_progress: ProgressCallback | None = None,
        timeout: float = 60.0,
    ) -> None:
        self.lock_file = Path(lock_file)
        self.cache_dir = (
            Path(cache_dir) if cache_dir is not None else Path(platformdirs.user_cache_dir("seedbed")) / "manifests"
        )
        self.manifests = files.expand(manifests) if manifests is not None else None
        if self.manifests is not None and not os.path.lexists(self.manifests):
            raise ManifestError(
                f"--manifests {self.manifests}: no such file or folder",
                fix="pass the folder holding files like longhorn-v1.12.1.yaml, or drop --manifests",
            )
        self.offline = offline
        self.on_progress = on_progress
        self.timeout = timeout
        self.downloads = 0  # HTTP downloads made by this store; "second run makes no request" checks
        self._urls = _url_templates(urls)
        self._pins = load_pins()
        self._memo: dict[tuple[str, str], tuple[ManifestSource, str]] = {}
        self._pending: dict[tuple[str, str], tuple[str, str]] = {}  # first seen, recorded by accept()

    # -- public

    def text(self, component: Component, version: str) -> str:
        """The verified manifest text."""
        return self._get(component, version)[1]

    def source(self, component: Component, version: str) -> ManifestSource:
        return self._get(component, version)[0]

    def sha256(self, component: Component, version: str) -> str:
        return self._get(component, version)[0].sha256

    def accept(self) -> None:
        """Record the hashes of files first seen this run, now that the caller rendered and checked them."""
        for (component, version), (sha, url) in sorted(self._pending.items()):
            self._record(component, version, sha, url)
        self._pending.clear()

    def check_chart(self, chart: str, version: str, digest: str, url: str) -> Origin:
        """The Git server's chart archive, as source-controller fetched it: its ``sha256:HEX`` digest
        against seedbed's pin (``data/pins.json`` ``chart-<name>``), else the lock file, where it is
        recorded on first use (``chart-<name> VERSION sha256:HEX``). A mismatch is a hard error.

        What this can and cannot verify: helm-controller verifies nothing of a chart from an HTTP
        Helm repository (source-controller v1.9.x api/v1/helmchart_types.go: ``spec.verify`` is
        "only supported when using HelmRepository source with spec.type 'oci'", by cosign/notation
        signature, never by digest). source-controller stores the downloaded archive unchanged when no
        values files are merged (internal/helm/chart/builder_remote.go, "Use literal chart copy from
        remote"), so the HelmChart's ``status.artifact.digest`` is the sha256 of the archive that was
        installed. seedbed compares it once the release is installed: a tampered chart has then run,
        but the bootstrap stops and says so, and a rebuild against a changed archive never goes on.
        """
        component = f"chart-{chart}"
        sha = digest.removeprefix("sha256:")
        if not re.fullmatch(r"[0-9a-f]{64}", sha):
            raise ManifestError(f"the {chart} chart {version} that source-controller fetched has no sha256 digest "
                                f"({digest!r})", fix="check source-controller's HelmChart status, then re-run")
        pin = self._pins.get(component, {}).get(version)
        if pin:
            if pin != sha:
                raise self._chart_mismatch(chart, version, sha, pin, "the pin shipped with seedbed", url,
                                           "a pinned hash cannot be overridden: use the official chart")
            return "pin"
        entry = read_lock(self.lock_file).get((component, version))
        if entry is not None:
            if entry.sha256 != sha:
                raise self._chart_mismatch(
                    chart, version, sha, entry.sha256, f"the lock file at {self.lock_file}", url,
                    f"if you trust the new archive, delete the line `{component} {version} sha256:...` "
                    f"from {self.lock_file} and re-run")
            return "lock"
        files.check_output(self.lock_file, "lock file")
        entries = read_lock(self.lock_file)
        entries[(component, version)] = LockEntry(sha, url)
        files.write_file(self.lock_file, render_lock(entries), "lock file")
        return "new"

    def _chart_mismatch(self, chart: str, version: str, actual: str, expected: str, what: str, url: str,
                        fix: str) -> ManifestError:
        return ManifestError(
            f"the {chart} chart {version} that source-controller fetched from {url} has sha256 {actual}, but "
            f"{what} expects {expected}: the chart repository serves other bytes under the same version (changed "
            "upstream or tampered with). helm-controller has installed it; nothing more is done",
            fix=f"suspend it (flux suspend helmrelease) and check the chart's origin; {fix}")

    def url(self, component: Component, version: str) -> str:
        """The address this store downloads the manifest from."""
        self._check(component, version)
        return self._url(component, version)

    def _url(self, component: str, version: str) -> str:
        return self._urls[component].replace("{version}", version)

    def _cache_path(self, component: str, version: str) -> Path:
        return self.cache_dir / f"{component}-{version}.yaml"

    # -- the one path every call goes through

    def _check(self, component: str, version: str) -> None:
        _check_component(component)
        # The version becomes part of a URL and a file name: only release tags get that far.
        if not isinstance(version, str) or not VERSION.fullmatch(version):
            raise ManifestError(
                f"{version!r} is not a {DISPLAY[component]} release tag like v1.2.3",
                fix=f"set {component}.version in seedbed.yaml to a release tag (with the leading 'v')",
            )

    def _get(self, component: str, version: str) -> tuple[ManifestSource, str]:
        self._check(component, version)
        key = (component, version)
        if key in self._memo:
            return self._memo[key]
        name = f"{DISPLAY[component]} {version}"
        url = self._url(component, version)

        pin = self._pins.get(component, {}).get(version)
        entry = read_lock(self.lock_file).get(key)
        if pin and entry and entry.sha256 != pin:
            raise ManifestError(
                f"{self.lock_file}:{entry.line}: {component} {version} sha256:{entry.sha256} contradicts "
                f"the pin shipped with seedbed (sha256:{pin})",
                fix=f"delete that line from {self.lock_file}: seedbed's pin decides for {name}",
            )
        expected: str | None
        origin: Origin
        if pin:
            expected, origin = pin, "pin"
        elif entry:
            expected, origin = entry.sha256, "lock"
        else:
            expected, origin = None, "new"
        if origin == "new":  # before any download: the hash will have to be written there
            files.check_output(self.lock_file, "lock file")

        local = self._local_file(component, version)
        if local is not None:
            data = files.read_bytes(local, files.MANIFEST)
            self._verify(component, version, data, expected, origin, where=str(local))
            if origin == "new":
                self._check_manifest(component, version, data, where=str(local))
            path = local
        else:
            path = self._cache_path(component, version)
            cached = self._read_cache(path, expected)
            if cached is not None:
                data = cached
            elif self.offline:
                raise self._offline_error(component, version, path)
            elif origin == "new" and DEFAULT_VERSIONS.get(component) == version:
                raise self._unpinned_default(component, version, url)
            else:
                data = self._download(component, version, url)
                self._verify(component, version, data, expected, origin, where=url)
                if origin == "new":
                    self._check_manifest(component, version, data, where=url)
                self._write_cache(path, data)

        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError:
            raise ManifestError(
                f"{DISPLAY[component]} {version} manifest at {path} is not UTF-8 text",
                fix="check that the file is the release's YAML manifest",
            ) from None
        sha = _sha256(data)
        if origin == "new":
            self._pending[key] = (sha, url)
        result = (ManifestSource(component, version, url, sha, origin, path), text)
        self._memo[key] = result
        return result

    # -- sources

    def _local_file(self, component: str, version: str) -> Path | None:
        """The --manifests file for this manifest, None to use the cache or the network."""
        if self.manifests is None:
            return None
        names = _local_names(component, version)
        name = f"{DISPLAY[component]} {version}"
        if self.manifests.is_dir():
            for candidate in names:
                path = self.manifests / candidate
                if os.path.lexists(path):  # anything by that name; files.read_bytes refuses a non-file
                    return path
            raise ManifestError(
                f"--manifests {self.manifests}: no {name} manifest there (looked for {', '.join(names)})",
                fix=f"save {self._url(component, version)} there as {names[0]}",
            )
        if self.manifests.name in names:
            return self.manifests
        found = _component_of_filename(self.manifests.name)
        if found is None:
            raise ManifestError(
                f"--manifests {self.manifests}: cannot tell which manifest this file is from its name",
                fix=f"rename it like {names[0]} (or flux-<version>.yaml), or pass the folder holding it",
            )
        if found[0] == component:
            raise ManifestError(
                f"--manifests {self.manifests} is {DISPLAY[component]} {found[1]}, but {name} is asked for",
                fix=f"pass the {names[0]} file instead, or set {component}.version to {found[1]}",
            )
        # A single file for the other component: this one comes from the cache or the network.
        return None

    def _read_cache(self, path: Path, expected: str | None) -> bytes | None:
        """Cached bytes that match ``expected``; None when absent, damaged or not yet trusted."""
        if not os.path.lexists(path):
            return None
        try:
            data = files.read_bytes(path, files.MANIFEST)
        except SeedbedError as e:
            log.warning("cannot use the cached manifest: %s; downloading it again", e.message)
            return None
        if expected is None and self.offline:
            # No pin and no lock entry: the cache is trusted only as seedbed wrote it, which the sidecar
            # hash (written together with it) shows. Online, a first record always comes from upstream.
            expected = self._cache_sidecar(path)
        if expected is None or _sha256(data) != expected:
            if expected is not None:
                log.warning("cached manifest %s does not match its expected sha256; not using it", path)
            return None
        return data

    def _cache_sidecar(self, path: Path) -> str | None:
        try:
            value = files.read_text(path.with_name(path.name + ".sha256"), files.MANIFEST, limit=1024).strip()
        except SeedbedError:
            return None
        return value if re.fullmatch(r"[0-9a-f]{64}", value) else None

    def _write_cache(self, path: Path, data: bytes) -> None:
        # The cache only saves a download; failing to write it must not fail the bootstrap.
        try:
            files.make_dirs(path.parent, "manifest cache")
            files.write_file(path, data, "cached manifest")
            files.write_file(path.with_name(path.name + ".sha256"), _sha256(data) + "\n", "cached manifest hash")
        except SeedbedError as e:
            log.warning("cannot cache the manifest: %s", e.message)

    def _download(self, component: str, version: str, url: str) -> bytes:
        name = f"{DISPLAY[component]} {version}"
        _check_transport(url)
        host = httpx2.URL(url).host
        try:
            with httpx2.Client(
                timeout=httpx2.Timeout(self.timeout, connect=min(self.timeout, 15.0)),
                follow_redirects=True,
                # A loopback mirror must not be sent through an HTTP(S)_PROXY from the environment.
                trust_env=not _is_loopback(host),
                event_hooks={"request": [_request_hook]},
                headers={"User-Agent": f"seedbed/{__version__}"},
            ) as client, client.stream("GET", url) as response:
                if response.status_code != 200:
                    raise self._status_error(component, version, url, response.status_code)
                length = response.headers.get("content-length")
                total = int(length) if length and length.isdigit() else None
                buf = bytearray()
                for chunk in response.iter_bytes():
                    buf += chunk
                    if len(buf) > MAX_BYTES:
                        raise ManifestError(
                            f"{url}: response larger than {MAX_BYTES // (1024 * 1024)} MiB; not a manifest",
                            fix="check the address and the version",
                        )
                    if self.on_progress is not None:
                        self.on_progress(response.num_bytes_downloaded, total)
        except httpx2.TooManyRedirects:
            raise ManifestError(
                f"cannot download {name} from {url}: too many redirects",
                fix=self._network_fix(component, version),
            ) from None
        except httpx2.TimeoutException:
            raise ManifestError(
                f"cannot download {name} from {url}: timed out",
                fix=self._network_fix(component, version),
            ) from None
        except httpx2.HTTPError as e:
            reason = str(e) or type(e).__name__
            raise ManifestError(
                f"cannot download {name} from {url}: {reason}",
                fix=self._network_fix(component, version),
            ) from None
        self.downloads += 1
        return bytes(buf)

    # -- checks and errors

    def _verify(self, component: str, version: str, data: bytes, expected: str | None, origin: Origin,
                *, where: str) -> None:
        if expected is not None and _sha256(data) != expected:
            raise self._mismatch(component, version, _sha256(data), expected, origin, where=where)

    def _mismatch(self, component: str, version: str, actual: str, expected: str, origin: Origin,
                  *, where: str) -> ManifestError:
        name = f"{DISPLAY[component]} {version}"
        if origin == "pin":
            what = "the pin shipped with seedbed"
            fix = (
                f"check the {name} release and where this file came from; a pinned hash cannot be "
                "overridden (use the official file, or a seedbed release that pins the new one)"
            )
        else:
            what = f"the lock file at {self.lock_file}"
            fix = (
                f"check the {name} release; if you trust the new file, delete the line "
                f"`{component} {version} sha256:...` from {self.lock_file} and run again"
            )
        return ManifestError(
            f"{name} from {where} has sha256 {actual}, but {what} expects {expected}. This is a hard "
            "error: the file changed upstream or was tampered with",
            fix=fix,
        )

    def _check_manifest(self, component: str, version: str, data: bytes, *, where: str) -> None:
        # Only for files about to be recorded: a captive portal's HTML must not become the trusted hash.
        if not _looks_like_manifest(data, f"{DISPLAY[component]} {version} from {where}"):
            raise ManifestError(
                f"{DISPLAY[component]} {version} from {where} is not a Kubernetes YAML manifest",
                fix="check the address and the version (a proxy or login page may have answered), "
                "or pass --manifests DIR with the release file",
            )

    def _record(self, component: str, version: str, sha: str, url: str) -> None:
        # Re-read right before writing so an entry another run added meanwhile is kept (or enforced).
        entries = read_lock(self.lock_file)
        old = entries.get((component, version))
        if old is not None:
            if old.sha256 == sha:
                return
            raise self._mismatch(component, version, sha, old.sha256, "lock", where=url)
        entries[(component, version)] = LockEntry(sha, url)
        files.write_file(self.lock_file, render_lock(entries), "lock file")

    def _unpinned_default(self, component: str, version: str, url: str) -> ManifestError:
        name = f"{DISPLAY[component]} {version}"
        first = _local_names(component, version)[0]
        return ManifestError(
            f"seedbed ships no sha256 for {name}, the version it installs by default, so it will not trust "
            f"a download of {url} on first use",
            fix=f"save the release file you verified as {first} in a folder and pass --manifests FOLDER "
            f"(seedbed then records its hash in {self.lock_file.name}), or set {component}.version to a "
            "version you choose to trust on first use",
        )

    def _status_error(self, component: str, version: str, url: str, status: int) -> ManifestError:
        name = f"{DISPLAY[component]} {version}"
        if status == 404:
            fix = f"check that {name} exists (the release tag in seedbed.yaml), or pass --manifests DIR"
        else:
            fix = self._network_fix(component, version)
        return ManifestError(f"cannot download {name} from {url}: HTTP {status}", fix=fix)

    def _network_fix(self, component: str, version: str) -> str:
        first = _local_names(component, version)[0]
        return f"check the network and try again, or pass --manifests DIR with {first} for an offline install"

    def _offline_error(self, component: str, version: str, path: Path) -> ManifestError:
        name = f"{DISPLAY[component]} {version}"
        first = _local_names(component, version)[0]
        state = "the cached copy does not match its hash" if path.exists() else "no cached copy"
        return ManifestError(
            f"{state} of {name} ({path}) and --offline given",
            fix=f"run once online to cache it, or pass --manifests DIR with {first}",
        )
