"""seedbed.manifests against a real HTTP server on loopback and the real upstream files."""

from __future__ import annotations

import hashlib
import re
import shutil
import socket
import threading
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from seedbed.errors import ManifestError, SeedbedError
from seedbed.manifests import (
    BASE_URL_ENV,
    DEFAULT_VERSIONS,
    LOCK_HEADER,
    LockEntry,
    ManifestStore,
    load_pins,
    read_lock,
    render_lock,
)

LONGHORN = "v1.12.1"
LONGHORN_SHA = "41648963af867ac1d0c85755fb53cf61cacd57c9bb22e1942e3fb0439eeb04fd"
DEFAULT_FLUX = "v2.9.3"  # seedbed's default: ships no pin, so it is never downloaded on trust
FLUX = "v2.9.2"  # a version the user chose: trusted on first download, then locked
FLUX_FIXTURE_SHA = "4e2b0567407b1ebb5e772bbb3ef0da088e0a1ad3039d0d913249c2661bb2d365"


@dataclass
class Upstream:
    """A loopback web server laid out like the two official release addresses."""

    url: str = ""
    files: dict[str, bytes] = field(default_factory=dict)
    redirects: dict[str, str] = field(default_factory=dict)
    hits: Counter[str] = field(default_factory=Counter)

    def urls(self) -> dict[str, str]:
        return {
            "longhorn": f"{self.url}/longhorn/longhorn/{{version}}/deploy/longhorn.yaml",
            "flux": f"{self.url}/fluxcd/flux2/releases/download/{{version}}/install.yaml",
        }

    def serve_longhorn(self, version: str, data: bytes) -> None:
        self.files[f"/longhorn/longhorn/{version}/deploy/longhorn.yaml"] = data

    def serve_flux(self, version: str, data: bytes) -> None:
        # Like GitHub: the release address redirects to a storage host.
        release = f"/fluxcd/flux2/releases/download/{version}/install.yaml"
        storage = f"/release-assets/flux2/{version}/install.yaml"
        self.redirects[release] = self.url + storage
        self.files[storage] = data

    @property
    def requests(self) -> int:
        return sum(self.hits.values())


@pytest.fixture
def server() -> Iterator[Upstream]:
    state = Upstream()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            state.hits[self.path] += 1
            if self.path in state.redirects:
                self.send_response(302)
                self.send_header("Location", state.redirects[self.path])
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            data = state.files.get(self.path)
            if data is None:
                self.send_error(404)
                return
            self.send_response(200)
            self.send_header("Content-Type", "application/octet-stream")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *args: object) -> None:
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    state.url = f"http://127.0.0.1:{httpd.server_address[1]}"
    # A short poll interval so shutdown() returns quickly at teardown.
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)
    thread.start()
    try:
        yield state
    finally:
        httpd.shutdown()
        httpd.server_close()


@pytest.fixture
def dead_urls() -> dict[str, str]:
    """Loopback addresses nothing listens on: any download attempt fails instead of leaving the host."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return {c: f"http://127.0.0.1:{port}/{c}/{{version}}.yaml" for c in ("longhorn", "flux")}


@pytest.fixture
def longhorn_bytes(upstream) -> bytes:
    return upstream("longhorn-v1.12.1.yaml").read_bytes()


@pytest.fixture
def flux_bytes(upstream) -> bytes:
    return upstream("flux-gotk-components-v2.9.3.yaml").read_bytes()


class Accepting(ManifestStore):
    """A store used the way plan and bootstrap use it when every step accepts the file: each file
    first seen is recorded right after it is fetched. (ManifestStore itself waits for accept().)"""

    def _get(self, component: str, version: str):  # type: ignore[override]
        result = super()._get(component, version)
        self.accept()
        return result


def store(tmp_path: Path, server: Upstream | None = None, **kw) -> ManifestStore:
    kw.setdefault("lock_file", tmp_path / "seedbed.lock")
    kw.setdefault("cache_dir", tmp_path / "cache")
    if server is not None:
        kw.setdefault("urls", server.urls())
    return Accepting(**kw)


# ---------------------------------------------------------------------------------------------- pins


def test_pins_ship_the_official_longhorn_hash():
    # No chart digest is pinned: none of the published archives could be hashed here (the fixture
    # charts are the files at the release commit, not the packaged .tgz); seedbed.lock records them.
    assert load_pins() == {"longhorn": {LONGHORN: LONGHORN_SHA}, "flux": {}, "chart-gitea": {}, "chart-forgejo": {}}


def test_every_default_version_is_pinned_or_never_trusted_on_first_download(tmp_path, server, flux_bytes):
    """No pin for the default Flux: its install.yaml hash could not be established (SOURCES.md: the
    fixture is a `flux bootstrap` gotk-components.yaml, other bytes), so a download is refused."""
    assert DEFAULT_VERSIONS == {"longhorn": LONGHORN, "flux": DEFAULT_FLUX}
    assert load_pins()["longhorn"][LONGHORN] == LONGHORN_SHA
    server.serve_flux(DEFAULT_FLUX, flux_bytes)
    with pytest.raises(ManifestError, match="will not trust a download") as e:
        store(tmp_path, server).text("flux", DEFAULT_FLUX)
    assert "--manifests" in e.value.fix and server.requests == 0
    assert not (tmp_path / "seedbed.lock").exists()


def test_a_first_seen_hash_is_recorded_only_once_the_file_is_accepted(tmp_path, server, flux_bytes):
    server.serve_flux(FLUX, flux_bytes)
    s = ManifestStore(lock_file=tmp_path / "seedbed.lock", cache_dir=tmp_path / "cache", urls=server.urls())
    s.text("flux", FLUX)
    assert not (tmp_path / "seedbed.lock").exists(), "plan may still refuse the file"
    s.accept()
    assert read_lock(tmp_path / "seedbed.lock")[("flux", FLUX)].sha256 == FLUX_FIXTURE_SHA


def test_default_urls_are_the_official_release_addresses(tmp_path, monkeypatch):
    monkeypatch.delenv(BASE_URL_ENV, raising=False)
    s = store(tmp_path)
    assert s.url("longhorn", LONGHORN) == (
        "https://raw.githubusercontent.com/longhorn/longhorn/v1.12.1/deploy/longhorn.yaml"
    )
    assert s.url("flux", DEFAULT_FLUX) == "https://github.com/fluxcd/flux2/releases/download/v2.9.3/install.yaml"


# ---------------------------------------------------------------------------------------------- download


def test_first_download_records_lock_and_caches(tmp_path, server, flux_bytes):
    server.serve_flux(FLUX, flux_bytes)
    s = store(tmp_path, server)

    src = s.source("flux", FLUX)

    assert src.origin == "new"
    assert src.sha256 == FLUX_FIXTURE_SHA
    assert src.url == f"{server.url}/fluxcd/flux2/releases/download/{FLUX}/install.yaml"
    assert src.path == tmp_path / "cache" / f"flux-{FLUX}.yaml"
    assert src.path.read_bytes() == flux_bytes
    assert s.text("flux", FLUX) == flux_bytes.decode()
    assert read_lock(tmp_path / "seedbed.lock")[("flux", FLUX)].sha256 == FLUX_FIXTURE_SHA
    assert s.downloads == 1
    # The redirect was followed, once; text/sha256 after source() reuse the verified bytes.
    assert server.hits[f"/fluxcd/flux2/releases/download/{FLUX}/install.yaml"] == 1
    assert s.sha256("flux", FLUX) == FLUX_FIXTURE_SHA
    assert server.requests == 2


def test_second_run_uses_the_cache_without_a_request(tmp_path, server, flux_bytes):
    server.serve_flux(FLUX, flux_bytes)
    store(tmp_path, server).text("flux", FLUX)
    before = server.requests

    s = store(tmp_path, server)
    src = s.source("flux", FLUX)

    assert src.origin == "lock"
    assert server.requests == before
    assert s.downloads == 0


def test_pinned_download_verifies_against_the_pin_and_leaves_no_lock(tmp_path, server, longhorn_bytes):
    server.serve_longhorn(LONGHORN, longhorn_bytes)
    src = store(tmp_path, server).source("longhorn", LONGHORN)
    assert (src.origin, src.sha256) == ("pin", LONGHORN_SHA)
    assert not (tmp_path / "seedbed.lock").exists()


def test_pin_mismatch_is_a_hard_error(tmp_path, server, longhorn_bytes):
    server.serve_longhorn(LONGHORN, longhorn_bytes.replace(b"longhornio/", b"evil.example/", 1))

    with pytest.raises(ManifestError) as e:
        store(tmp_path, server).text("longhorn", LONGHORN)

    msg = str(e.value)
    assert "pin shipped with seedbed" in msg and LONGHORN_SHA in msg and "hard error" in msg
    assert "tampered" in msg and e.value.fix
    assert not (tmp_path / "cache" / f"longhorn-{LONGHORN}.yaml").exists(), "a bad file must not be cached"
    assert not (tmp_path / "seedbed.lock").exists()


def test_lock_mismatch_is_a_hard_error(tmp_path, server, flux_bytes):
    server.serve_flux(FLUX, flux_bytes)
    store(tmp_path, server).text("flux", FLUX)
    shutil.rmtree(tmp_path / "cache")
    server.serve_flux(FLUX, flux_bytes + b"\n# changed upstream\n")

    with pytest.raises(ManifestError) as e:
        store(tmp_path, server).text("flux", FLUX)

    lock = tmp_path / "seedbed.lock"
    assert f"lock file at {lock}" in str(e.value) and FLUX_FIXTURE_SHA in str(e.value)
    assert "hard error" in str(e.value)
    assert f"flux {FLUX}" in e.value.fix and str(lock) in e.value.fix and "delete" in e.value.fix
    assert read_lock(lock)[("flux", FLUX)].sha256 == FLUX_FIXTURE_SHA, "the lock is never rewritten"


def test_deleting_the_lock_entry_accepts_the_new_file(tmp_path, server, flux_bytes):
    server.serve_flux(FLUX, flux_bytes)
    store(tmp_path, server).text("flux", FLUX)
    changed = flux_bytes + b"\n# changed upstream\n"
    server.serve_flux(FLUX, changed)
    (tmp_path / "seedbed.lock").write_text(LOCK_HEADER)

    src = store(tmp_path, server).source("flux", FLUX)

    assert src.origin == "new" and src.sha256 == hashlib.sha256(changed).hexdigest()
    assert src.path.read_bytes() == changed


def test_corrupted_cache_is_downloaded_again(tmp_path, server, flux_bytes):
    server.serve_flux(FLUX, flux_bytes)
    store(tmp_path, server).text("flux", FLUX)
    cached = tmp_path / "cache" / f"flux-{FLUX}.yaml"
    cached.write_bytes(flux_bytes[:1000])

    s = store(tmp_path, server)
    assert s.text("flux", FLUX) == flux_bytes.decode()
    assert s.downloads == 1
    assert cached.read_bytes() == flux_bytes


def test_tampered_cache_of_a_pinned_version_is_downloaded_again(tmp_path, server, longhorn_bytes):
    server.serve_longhorn(LONGHORN, longhorn_bytes)
    cached = tmp_path / "cache" / f"longhorn-{LONGHORN}.yaml"
    cached.parent.mkdir()
    cached.write_bytes(longhorn_bytes.replace(b"longhornio/", b"evil.example/"))

    s = store(tmp_path, server)
    assert s.sha256("longhorn", LONGHORN) == LONGHORN_SHA
    assert s.downloads == 1 and cached.read_bytes() == longhorn_bytes


def test_download_progress_is_reported(tmp_path, server, flux_bytes):
    server.serve_flux(FLUX, flux_bytes)
    seen: list[tuple[int, int | None]] = []
    store(tmp_path, server, on_progress=lambda done, total: seen.append((done, total))).text("flux", FLUX)
    assert seen and seen[-1] == (len(flux_bytes), len(flux_bytes))


def test_base_url_variable_points_at_a_mirror(tmp_path, server, flux_bytes, monkeypatch):
    # A mirror serves the --manifests names, so a --manifests folder behind a web server works.
    server.files[f"/mirror/flux-{FLUX}.yaml"] = flux_bytes
    monkeypatch.setenv(BASE_URL_ENV, server.url + "/mirror/")
    s = ManifestStore(lock_file=tmp_path / "seedbed.lock", cache_dir=tmp_path / "cache")
    assert s.url("flux", FLUX) == f"{server.url}/mirror/flux-{FLUX}.yaml"
    assert s.sha256("flux", FLUX) == FLUX_FIXTURE_SHA


def test_bad_base_url_variable(tmp_path, monkeypatch):
    monkeypatch.setenv(BASE_URL_ENV, "mirror.example")
    with pytest.raises(ManifestError, match=BASE_URL_ENV):
        ManifestStore(lock_file=tmp_path / "seedbed.lock", cache_dir=tmp_path / "cache")


# ---------------------------------------------------------------------------------------------- failures


def test_http_404_names_the_url(tmp_path, server):
    with pytest.raises(ManifestError) as e:
        store(tmp_path, server).text("flux", "v9.9.9")
    assert f"{server.url}/fluxcd/flux2/releases/download/v9.9.9/install.yaml" in str(e.value)
    assert "HTTP 404" in str(e.value) and "Flux v9.9.9" in e.value.fix


def test_connection_refused_names_the_url(tmp_path, dead_urls):
    with pytest.raises(ManifestError) as e:
        store(tmp_path, urls=dead_urls).text("flux", FLUX)
    assert dead_urls["flux"].replace("{version}", FLUX) in str(e.value)
    assert "--manifests DIR" in e.value.fix and f"flux-{FLUX}.yaml" in e.value.fix


def test_plain_http_is_refused_for_non_loopback_hosts(tmp_path):
    # Refused before any connection is attempted (.invalid never resolves anyway).
    s = store(tmp_path, urls={"flux": "http://mirror.invalid/flux-{version}.yaml"})
    with pytest.raises(ManifestError, match="only https") as e:
        s.text("flux", FLUX)
    assert e.value.fix


def test_redirect_to_plain_http_is_refused(tmp_path, server):
    server.redirects[f"/fluxcd/flux2/releases/download/{FLUX}/install.yaml"] = "http://mirror.invalid/x.yaml"
    with pytest.raises(ManifestError, match="only https"):
        store(tmp_path, server).text("flux", FLUX)


def test_an_html_page_is_never_recorded(tmp_path, server):
    server.serve_flux(FLUX, b"<!doctype html><html><body>Please log in to the Wi-Fi</body></html>")
    with pytest.raises(ManifestError, match="not a Kubernetes YAML manifest"):
        store(tmp_path, server).text("flux", FLUX)
    assert not (tmp_path / "seedbed.lock").exists()
    assert not (tmp_path / "cache" / f"flux-{FLUX}.yaml").exists()


@pytest.mark.parametrize(
    ("component", "version", "words"),
    [("helm", "v1.0.0", "unknown upstream component"), ("flux", "2.9.3", "release tag"),
     ("longhorn", "v1.12.1/../../x", "release tag"), ("longhorn", "v1.12.1\n", "release tag")],
)
def test_bad_component_or_version(tmp_path, component, version, words):
    with pytest.raises(ManifestError, match=words) as e:
        store(tmp_path).text(component, version)  # type: ignore[arg-type]
    assert e.value.fix


# ---------------------------------------------------------------------------------------------- offline


def test_offline_with_nothing_cached_names_both_remedies(tmp_path, dead_urls):
    with pytest.raises(ManifestError) as e:
        store(tmp_path, urls=dead_urls, offline=True).text("longhorn", LONGHORN)
    assert "no cached copy of Longhorn v1.12.1" in str(e.value) and "--offline" in str(e.value)
    assert e.value.fix == "run once online to cache it, or pass --manifests DIR with longhorn-v1.12.1.yaml"


def test_offline_with_cache_works(tmp_path, server, flux_bytes, longhorn_bytes):
    server.serve_flux(FLUX, flux_bytes)
    server.serve_longhorn(LONGHORN, longhorn_bytes)
    online = store(tmp_path, server)
    online.text("flux", FLUX)
    online.text("longhorn", LONGHORN)
    before = server.requests

    offline = store(tmp_path, server, offline=True)
    assert offline.source("flux", FLUX).origin == "lock"
    assert offline.source("longhorn", LONGHORN).origin == "pin"
    assert server.requests == before


def test_offline_with_a_corrupted_cache_is_an_error(tmp_path, server, flux_bytes):
    server.serve_flux(FLUX, flux_bytes)
    store(tmp_path, server).text("flux", FLUX)
    (tmp_path / "cache" / f"flux-{FLUX}.yaml").write_bytes(b"kind: Evil\n")

    with pytest.raises(ManifestError, match="cached copy does not match") as e:
        store(tmp_path, server, offline=True).text("flux", FLUX)
    assert "--manifests DIR" in e.value.fix


def test_offline_new_project_reuses_a_cache_seedbed_wrote(tmp_path, server, flux_bytes):
    # Another project downloaded it; this project has no lock entry yet and no network.
    server.serve_flux(FLUX, flux_bytes)
    for project in ("a", "b"):  # the lock file sits beside each project's seedbed.yaml
        (tmp_path / project).mkdir()
    store(tmp_path, server, lock_file=tmp_path / "a" / "seedbed.lock").text("flux", FLUX)

    other = store(tmp_path, server, lock_file=tmp_path / "b" / "seedbed.lock", offline=True)
    assert other.source("flux", FLUX).origin == "new"
    assert read_lock(tmp_path / "b" / "seedbed.lock")[("flux", FLUX)].sha256 == FLUX_FIXTURE_SHA


# ---------------------------------------------------------------------------------------------- --manifests


def test_manifests_folder_with_the_real_files_verifies_against_the_pin(tmp_path, upstream, dead_urls):
    folder = upstream("longhorn-v1.12.1.yaml").parent
    s = store(tmp_path, urls=dead_urls, manifests=folder)

    src = s.source("longhorn", LONGHORN)

    assert (src.origin, src.sha256, src.path) == ("pin", LONGHORN_SHA, folder / "longhorn-v1.12.1.yaml")
    assert "kind: Namespace" in s.text("longhorn", LONGHORN)
    assert not (tmp_path / "seedbed.lock").exists()


def test_manifests_folder_finds_the_flux_gotk_components_name(tmp_path, upstream, dead_urls):
    folder = upstream("flux-gotk-components-v2.9.3.yaml").parent
    src = store(tmp_path, urls=dead_urls, manifests=folder).source("flux", DEFAULT_FLUX)
    assert src.origin == "new" and src.path.name == "flux-gotk-components-v2.9.3.yaml"
    assert read_lock(tmp_path / "seedbed.lock")[("flux", DEFAULT_FLUX)].sha256 == FLUX_FIXTURE_SHA

    again = store(tmp_path, urls=dead_urls, manifests=folder, offline=True).source("flux", DEFAULT_FLUX)
    assert again.origin == "lock"


def test_manifests_folder_prefers_the_plain_name(tmp_path, flux_bytes, dead_urls):
    (tmp_path / "m").mkdir()
    (tmp_path / "m" / f"flux-{FLUX}.yaml").write_bytes(flux_bytes)
    (tmp_path / "m" / f"flux-gotk-components-{FLUX}.yaml").write_bytes(b"not used")
    src = store(tmp_path, urls=dead_urls, manifests=tmp_path / "m").source("flux", FLUX)
    assert src.path.name == f"flux-{FLUX}.yaml"


def test_tampered_local_copy_is_refused(tmp_path, longhorn_bytes, dead_urls):
    folder = tmp_path / "airgap"
    folder.mkdir()
    (folder / "longhorn-v1.12.1.yaml").write_bytes(longhorn_bytes.replace(b"replicas: 1", b"replicas: 9", 1))

    with pytest.raises(ManifestError) as e:
        store(tmp_path, urls=dead_urls, manifests=folder).text("longhorn", LONGHORN)
    assert str(folder / "longhorn-v1.12.1.yaml") in str(e.value) and "pin" in str(e.value)


def test_tampered_local_copy_of_a_locked_version_is_refused(tmp_path, upstream, flux_bytes, dead_urls):
    store(tmp_path, urls=dead_urls, manifests=upstream("flux-gotk-components-v2.9.3.yaml")).text("flux", DEFAULT_FLUX)
    folder = tmp_path / "airgap"
    folder.mkdir()
    (folder / f"flux-{DEFAULT_FLUX}.yaml").write_bytes(flux_bytes.replace(b"ghcr.io/fluxcd/", b"evil.example/", 1))
    with pytest.raises(ManifestError, match="lock file at"):
        store(tmp_path, urls=dead_urls, manifests=folder).text("flux", DEFAULT_FLUX)


def test_manifests_folder_missing_file_names_the_expected_names(tmp_path, dead_urls):
    (tmp_path / "empty").mkdir()
    with pytest.raises(ManifestError) as e:
        store(tmp_path, urls=dead_urls, manifests=tmp_path / "empty").text("flux", FLUX)
    for name in (f"flux-{FLUX}.yaml", f"flux-install-{FLUX}.yaml", f"flux-gotk-components-{FLUX}.yaml"):
        assert name in str(e.value)
    assert f"flux-{FLUX}.yaml" in e.value.fix


def test_manifests_single_file(tmp_path, server, upstream, flux_bytes):
    longhorn_file = upstream("longhorn-v1.12.1.yaml")
    server.serve_flux(FLUX, flux_bytes)
    s = store(tmp_path, server, manifests=longhorn_file)

    assert s.source("longhorn", LONGHORN).path == longhorn_file
    # The file is Longhorn's, so Flux still comes from the network (or the cache).
    assert s.source("flux", FLUX).path == tmp_path / "cache" / f"flux-{FLUX}.yaml"

    with pytest.raises(ManifestError, match=re.escape("is Longhorn v1.12.1, but Longhorn v1.11.0 is asked for")):
        store(tmp_path, server, manifests=longhorn_file).text("longhorn", "v1.11.0")


def test_manifests_single_file_with_an_unknown_name(tmp_path, longhorn_bytes):
    (tmp_path / "deploy.yaml").write_bytes(longhorn_bytes)
    with pytest.raises(ManifestError, match="cannot tell which manifest") as e:
        store(tmp_path, manifests=tmp_path / "deploy.yaml").text("longhorn", LONGHORN)
    assert "longhorn-v1.12.1.yaml" in e.value.fix


def test_manifests_path_must_exist(tmp_path):
    with pytest.raises(ManifestError, match="no such file or folder"):
        store(tmp_path, manifests=tmp_path / "nope")


# ---------------------------------------------------------------------------------------------- lock file


def test_lock_file_format_is_stable_and_sorted(tmp_path, server, flux_bytes):
    def manifest(n: int) -> bytes:
        return f"apiVersion: v1\nkind: Namespace\nmetadata:\n  name: ns{n}\n".encode()

    served = {("flux", "v2.10.0"): manifest(1), ("longhorn", "v1.11.0"): manifest(2),
              ("flux", FLUX): flux_bytes, ("flux", "v2.9.10"): manifest(3)}
    for (component, version), data in served.items():
        getattr(server, f"serve_{component}")(version, data)
    for component, version in served:  # recorded in this (unsorted) order
        store(tmp_path, server).text(component, version)  # type: ignore[arg-type]

    lock = tmp_path / "seedbed.lock"
    text = lock.read_text()
    sha = {k: hashlib.sha256(v).hexdigest() for k, v in served.items()}
    flux_url = server.urls()["flux"]
    assert text == LOCK_HEADER + "".join(
        f"{c} {v} sha256:{sha[(c, v)]}  # {server.urls()[c].replace('{version}', v)}\n"
        for c, v in [("flux", FLUX), ("flux", "v2.9.10"), ("flux", "v2.10.0"), ("longhorn", "v1.11.0")]
    )
    assert flux_url.replace("{version}", FLUX) in text
    # Parsing and rendering again gives the same bytes: re-runs never churn the file.
    assert render_lock(read_lock(lock)) == text
    assert oct(lock.stat().st_mode & 0o777) == oct(0o644)
    assert not list(tmp_path.glob(".seedbed.lock.*")), "no temporary files left behind"


def test_hand_edited_lock_file(tmp_path):
    lock = tmp_path / "seedbed.lock"
    lock.write_text(f"# mine\n\n  flux {FLUX}   sha256:{FLUX_FIXTURE_SHA}\n")
    assert read_lock(lock) == {("flux", FLUX): LockEntry(FLUX_FIXTURE_SHA, "", 3)}

    lock.write_text(f"flux {FLUX} {FLUX_FIXTURE_SHA}\n")
    with pytest.raises(ManifestError, match=r"seedbed.lock:1: not a lock line") as e:
        read_lock(lock)
    assert e.value.fix

    lock.write_text(f"flux {FLUX} sha256:{FLUX_FIXTURE_SHA}\nflux {FLUX} sha256:{'0' * 64}\n")
    with pytest.raises(ManifestError, match="listed twice"):
        read_lock(lock)


def test_lock_entry_contradicting_a_pin_is_an_error(tmp_path, upstream, dead_urls):
    lock = tmp_path / "seedbed.lock"
    lock.write_text(LOCK_HEADER + f"longhorn {LONGHORN} sha256:{'0' * 64}  # hand-edited\n")
    with pytest.raises(ManifestError, match="contradicts the pin") as e:
        store(tmp_path, urls=dead_urls, manifests=upstream("longhorn-v1.12.1.yaml")).text("longhorn", LONGHORN)
    assert f"{lock}:6" in str(e.value) and "delete that line" in e.value.fix


def test_lock_entry_agreeing_with_a_pin_is_fine(tmp_path, upstream, dead_urls):
    (tmp_path / "seedbed.lock").write_text(f"longhorn {LONGHORN} sha256:{LONGHORN_SHA}\n")
    src = store(tmp_path, urls=dead_urls, manifests=upstream("longhorn-v1.12.1.yaml")).source("longhorn", LONGHORN)
    assert src.origin == "pin"


def test_every_error_is_a_seedbed_error():
    assert issubclass(ManifestError, SeedbedError)
