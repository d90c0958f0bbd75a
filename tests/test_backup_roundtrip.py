"""Back up from one emulated cluster, restore into a fresh one, and compare field by field.

The emulator runs the real cert-manager CRDs (and Longhorn's), so the objects here go
through the same schemas a real API server would apply to them.
"""

from __future__ import annotations

import asyncio
import base64
import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import msgspec
import pytest

from seedbed import yamlutil
from seedbed.backup import archive, make_backup, restore
from seedbed.backup.signing import load_signing_key
from seedbed.backup.validate import Policy
from seedbed.backup.volumes import backup_volumes, restore_objects
from seedbed.certs.ledger import Issuance, Ledger
from seedbed.config import BackupConfig, ClusterConfig, Config, LonghornConfig, SecretSelection, VolumeRef
from seedbed.errors import ArchiveError, ClusterError, ConfigError

pytest.importorskip("seedbed_lab.emulator", reason="the lab (seedbed_lab, the demo extra) is not installed")
from seedbed.kube import Kube
from seedbed_lab.emulator import Emulator
from seedbed_lab.emulator.controllers import BackupStore, LonghornSim

CM_CRDS = "cert-manager-v1.21.1-crds"
NOW = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)
TLS_KEY = b"-----BEGIN PRIVATE KEY-----\nnot-really-a-key-but-secret\n-----END PRIVATE KEY-----\n"
ACCOUNT_KEY = b"acme-account-private-key-value"
API_TOKEN = b"cloudflare-token-value-xyz"


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def crds(upstream: Any) -> list[dict[str, Any]]:
    folder = upstream(CM_CRDS)
    return [doc for f in sorted(Path(folder).glob("*.yaml")) for doc in yamlutil.load_all(f.read_text())]


def longhorn_crds(upstream: Any, names: set[str]) -> list[dict[str, Any]]:
    docs = yamlutil.load_all(upstream("longhorn-v1.12.1.yaml").read_text())
    return [d for d in docs if d.get("kind") == "CustomResourceDefinition" and d["metadata"]["name"] in names]


def ns(name: str) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}}


def secret(namespace: str, name: str, data: dict[str, bytes], *, type_: str = "Opaque",
           labels: dict[str, str] | None = None, annotations: dict[str, str] | None = None,
           owner: dict[str, Any] | None = None) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name, "namespace": namespace}
    if labels:
        meta["labels"] = labels
    if annotations:
        meta["annotations"] = annotations
    if owner:
        meta["ownerReferences"] = [owner]
    return {"apiVersion": "v1", "kind": "Secret", "metadata": meta, "type": type_,
            "data": {k: b64(v) for k, v in data.items()}}


CERT_ANNOTATIONS = {
    "cert-manager.io/alt-names": "web.example.org",
    "cert-manager.io/certificate-name": "web",
    "cert-manager.io/common-name": "web.example.org",
    "cert-manager.io/ip-sans": "",
    "cert-manager.io/issuer-group": "cert-manager.io",
    "cert-manager.io/issuer-kind": "ClusterIssuer",
    "cert-manager.io/issuer-name": "letsencrypt",
    "cert-manager.io/uri-sans": "",
}

CLUSTER_ISSUER = {
    "apiVersion": "cert-manager.io/v1", "kind": "ClusterIssuer",
    "metadata": {"name": "letsencrypt", "labels": {"app": "certs"}},
    "spec": {"acme": {
        "server": "https://acme-staging-v02.api.letsencrypt.org/directory",
        "email": "ops@example.org",
        "privateKeySecretRef": {"name": "letsencrypt-account-key"},
        "solvers": [{"dns01": {"cloudflare": {"apiTokenSecretRef": {"name": "cloudflare-api-token",
                                                                     "key": "api-token"}}}}],
    }},
}
ISSUER = {
    "apiVersion": "cert-manager.io/v1", "kind": "Issuer",
    "metadata": {"name": "apps-ca", "namespace": "apps"},
    "spec": {"ca": {"secretName": "apps-ca-key"}},
}
CERTIFICATE = {
    "apiVersion": "cert-manager.io/v1", "kind": "Certificate",
    "metadata": {"name": "web", "namespace": "apps", "annotations": {"team": "web"}},
    "spec": {"secretName": "web-tls", "dnsNames": ["web.example.org"], "commonName": "web.example.org",
             "issuerRef": {"name": "letsencrypt", "kind": "ClusterIssuer", "group": "cert-manager.io"},
             "privateKey": {"rotationPolicy": "Never", "algorithm": "ECDSA", "size": 256}},
}
SHIM_CERTIFICATE = {
    "apiVersion": "cert-manager.io/v1", "kind": "Certificate",
    "metadata": {"name": "shim", "namespace": "apps",
                 "ownerReferences": [{"apiVersion": "networking.k8s.io/v1", "kind": "Ingress", "name": "shim",
                                      "uid": "7d0b6a52-0000-4000-8000-000000000001", "controller": True,
                                      "blockOwnerDeletion": True}]},
    "spec": {"secretName": "shim-tls", "dnsNames": ["shim.example.org"],
             "issuerRef": {"name": "letsencrypt", "kind": "ClusterIssuer"}},
}
CERT_REQUEST = {
    "apiVersion": "cert-manager.io/v1", "kind": "CertificateRequest",
    "metadata": {"name": "web-1", "namespace": "apps"},
    "spec": {"request": b64(b"-----BEGIN CERTIFICATE REQUEST-----\n"),
             "issuerRef": {"name": "letsencrypt", "kind": "ClusterIssuer"}},
}

SECRETS = [
    secret("apps", "web-tls", {"tls.crt": b"CERT", "tls.key": TLS_KEY, "ca.crt": b""},
           type_="kubernetes.io/tls", annotations=CERT_ANNOTATIONS,
           labels={"controller.cert-manager.io/fao": "true"},
           owner={"apiVersion": "cert-manager.io/v1", "kind": "Certificate", "name": "web",
                  "uid": "7d0b6a52-0000-4000-8000-000000000002", "controller": True,
                  "blockOwnerDeletion": True}),
    secret("apps", "shim-tls", {"tls.crt": b"SHIMCERT", "tls.key": b"shim-key"}, type_="kubernetes.io/tls",
           annotations={**CERT_ANNOTATIONS, "cert-manager.io/certificate-name": "shim"}),
    secret("cert-manager", "letsencrypt-account-key", {"tls.key": ACCOUNT_KEY}),
    secret("cert-manager", "cloudflare-api-token", {"api-token": API_TOKEN}),
    secret("apps", "apps-ca-key", {"tls.crt": b"CA", "tls.key": b"ca-key"}, type_="kubernetes.io/tls"),
    secret("apps", "unrelated", {"x": b"not-backed-up"}),
    secret("extra", "by-namespace", {"password": b"by-namespace-password"}),
    secret("default", "by-label", {"password": b"by-label-password"}, labels={"backup": "yes"}),
]
ARCHIVED_SECRETS = {("apps", "web-tls"), ("apps", "shim-tls"), ("cert-manager", "letsencrypt-account-key"),
                    ("cert-manager", "cloudflare-api-token"), ("apps", "apps-ca-key"), ("extra", "by-namespace"),
                    ("default", "by-label")}
VALUES = [TLS_KEY, ACCOUNT_KEY, API_TOKEN, b"by-namespace-password", b"by-label-password"]


@pytest.fixture
def key(tmp_path: Path) -> tuple[Path, str]:
    path = tmp_path / "age.key"
    recipient = archive.keygen(path)
    SIGNING_KEYS[recipient] = tmp_path / "signing.key"
    return path, recipient


def config(recipient: str, cluster: str = "homelab", **backup: Any) -> Config:
    return Config(
        cluster=ClusterConfig(name=cluster),
        backup=BackupConfig(recipients=[recipient], include_git_server_volume=False,
                            secrets=SecretSelection(namespaces=["extra"], label_selector="backup=yes"), **backup),
    )


def signing_key(key: tuple[Path, str]) -> Any:
    """The signing key `keygen` made beside the age identity."""
    return load_signing_key(key[0].parent / "signing.key")


def open_(path: Path, key: tuple[Path, str], identity: Path | None = None, *, cluster: str = "homelab",
          other: bool = False, cfg: Config | None = None) -> archive.Archive:
    """What restore does first: decrypt, verify, check the signature (the user's own key) and validate."""
    cfg = cfg or config(key[1], cluster=cluster)
    cfg = msgspec.structs.replace(cfg, backup=msgspec.structs.replace(cfg.backup, identity_file=str(key[0])))
    return archive.open_archive(path, [identity or key[0]], policy=Policy.from_config(cfg, from_other_cluster=other))


async def connect(emu: Any, tmp_path: Path, name: str) -> Kube:
    path = tmp_path / f"{name}.kubeconfig"
    emu.write_kubeconfig(path)
    return await Kube.connect(ClusterConfig(kubeconfig=str(path)))


@pytest.fixture
async def source(emulator: Any, tmp_path: Path, upstream: Any) -> AsyncIterator[Kube]:
    kube = await connect(emulator, tmp_path, "source")
    await kube.apply(crds(upstream))
    for name in ("apps", "cert-manager", "extra"):
        await kube.create(ns(name))
    for obj in [CLUSTER_ISSUER, ISSUER, CERTIFICATE, SHIM_CERTIFICATE, CERT_REQUEST, *SECRETS]:
        await kube.create(obj)
    yield kube
    await kube.close()


@pytest.fixture
async def fresh(tmp_path: Path) -> AsyncIterator[tuple[Any, Kube]]:
    """A second, empty cluster: the rebuilt one."""
    emu = Emulator()
    emu.start()
    kube = await connect(emu, tmp_path, "fresh")
    try:
        yield emu, kube
    finally:
        await kube.close()
        emu.stop()


LEDGER = Ledger.merge([Issuance(frozenset({"web.example.org"}), NOW, "cluster", serial="0a", ca="staging")])
SIGNING_KEYS: dict[str, Path] = {}  # recipient -> the signing key made beside its identity


async def backup_file(kube: Kube, cfg: Config, tmp_path: Path) -> Path:
    result = await make_backup(kube, cfg, git_bundle=b"# v2 git bundle\nfake", ledger=LEDGER, now=NOW,
                               signing_key=load_signing_key(SIGNING_KEYS[cfg.backup.recipients[0]]))
    out = tmp_path / "backup.age"
    archive.write(out, result.ciphertext)
    return out


def strip_server(obj: dict[str, Any]) -> dict[str, Any]:
    """What a restore must reproduce: everything but server-set metadata and status."""
    meta = {k: v for k, v in obj["metadata"].items()
            if k not in ("uid", "resourceVersion", "generation", "creationTimestamp", "managedFields",
                         "ownerReferences", "selfLink")}
    return {**{k: v for k, v in obj.items() if k != "status"}, "metadata": meta}


# --------------------------------------------------------------------------- collect


async def test_collect_picks_the_right_objects(source: Kube, key: tuple[Path, str]) -> None:
    from seedbed.backup.collect import collect

    entries = await collect(source, config(key[1]))
    secrets = {tuple(n.removeprefix("secrets/").removesuffix(".json").split("/")) for n in entries
               if n.startswith("secrets/")}
    assert secrets == ARCHIVED_SECRETS
    assert set(entries) - {f"secrets/{a}/{b}.json" for a, b in ARCHIVED_SECRETS} == {
        "cert-manager/clusterissuers/letsencrypt.json",
        "cert-manager/issuers/apps/apps-ca.json",
        "cert-manager/certificates/apps/web.json",  # not shim: its owner Ingress re-creates it
    }
    for data in entries.values():
        obj = json.loads(data)
        for field in ("uid", "resourceVersion", "managedFields", "creationTimestamp", "ownerReferences"):
            assert field not in obj["metadata"]
        assert "status" not in obj
    web = json.loads(entries["secrets/apps/web-tls.json"])
    assert web["metadata"]["annotations"] == CERT_ANNOTATIONS
    assert web["metadata"]["labels"] == {"controller.cert-manager.io/fao": "true"}


async def test_collect_without_cert_manager(emulator: Any, tmp_path: Path, key: tuple[Path, str]) -> None:
    kube = await connect(emulator, tmp_path, "bare")
    async with kube:
        await kube.create(ns("extra"))
        await kube.create(secret("extra", "s", {"a": b"b"}))
        entries = await __import__("seedbed.backup.collect", fromlist=["collect"]).collect(kube, config(key[1]))
    assert set(entries) == {"secrets/extra/s.json"}


async def test_collect_reads_the_configured_namespaces_with_the_cert_manager_objects(
        source: Kube, emulator: Any, key: tuple[Path, str]) -> None:
    """On a slow link the configured namespaces' Secrets are read in the same round trip as the
    cert-manager objects (only a namespace known from those waits for them); the issuance scan
    and the collector share one LIST per cert-manager kind."""
    from seedbed.backup.collect import collect
    from seedbed.certs.history import cluster_issuances
    from seedbed.kube.shared import SharedLists

    cfg = config(key[1])
    emulator.latency = 0.05
    try:
        emulator.reset_requests()
        reads = SharedLists(source)
        await asyncio.gather(collect(reads, cfg), cluster_issuances(reads))
    finally:
        emulator.latency = 0.0
    lists = {r.path: r for r in emulator.requests}
    assert [r.path for r in emulator.requests].count("/apis/cert-manager.io/v1/certificates") == 1
    first_cm_answer = min(r.end for p, r in lists.items() if p.startswith("/apis/cert-manager.io/v1/"))
    for namespace in cfg.backup.secrets.namespaces:
        assert lists[f"/api/v1/namespaces/{namespace}/secrets"].start < first_cm_answer, namespace


async def test_helm_release_history_never_crosses_the_link(source: Kube, emulator: Any,
                                                           key: tuple[Path, str]) -> None:
    """Helm keeps each release's history as Secrets of type helm.sh/release.v1 (helm
    pkg/storage/driver/secrets.go newSecretsObject), hundreds of KB each, in the very namespaces a
    backup selects. They are never restored, so the LISTs ask the API server to leave them out
    (`type` is a Secret field label): a backup over Wi-Fi does not download them to drop them."""
    from seedbed.backup.collect import collect

    chart = b64(bytes(range(256)) * 1024)  # 256 KB of gzipped chart, values and manifest
    for version in range(1, 6):
        await source.create(secret("extra", f"sh.helm.release.v1.app.v{version}", {"release": chart.encode()},
                                   type_="helm.sh/release.v1",
                                   labels={"name": "app", "owner": "helm", "status": "superseded",
                                           "version": str(version)}))
    emulator.reset_requests()
    entries = await collect(source, config(key[1]))
    assert not [n for n in entries if "sh.helm.release" in n]
    answers = [r for r in emulator.requests if r.path.endswith("/secrets")]
    assert {r.path for r in answers} >= {"/api/v1/namespaces/extra/secrets", "/api/v1/secrets"}  # by name, by label
    assert sum(r.size for r in answers) < len(chart)


# --------------------------------------------------------------------------- the round trip


async def test_round_trip_field_by_field(source: Kube, fresh: tuple[Any, Kube], tmp_path: Path,
                                         key: tuple[Path, str], upstream: Any) -> None:
    cfg = config(key[1])
    out = await backup_file(source, cfg, tmp_path)
    arc = open_(out, key)
    assert restore.git_bundle(arc) == b"# v2 git bundle\nfake"
    assert restore.git_bundle_name(arc) == "homelab-gitops"
    ledger = restore.ledger(arc)
    assert ledger is not None and [i.serial for i in ledger] == ["a"]

    _, dest = fresh
    secrets = await restore.restore_secrets(dest, arc)
    assert len(secrets.restored) == len(ARCHIVED_SECRETS) and not secrets.skipped
    await dest.apply(crds(upstream))  # "Flux installs cert-manager"
    cm = await restore.restore_cert_manager(dest, arc, timeout=30)
    assert sorted(cm.restored) == ["Certificate apps/web", "ClusterIssuer letsencrypt", "Issuer apps/apps-ca"]

    for namespace, name in ARCHIVED_SECRETS:
        before = await source.get("v1", "Secret", name, namespace=namespace)
        after = await dest.get("v1", "Secret", name, namespace=namespace)
        assert before is not None and after is not None
        assert after["data"] == before["data"]  # byte-identical (base64 of the same bytes)
        assert after["type"] == before["type"]
        assert after["metadata"].get("annotations") == before["metadata"].get("annotations")
        assert after["metadata"].get("labels") == before["metadata"].get("labels")
        assert after["metadata"]["uid"] != before["metadata"]["uid"]
        assert "ownerReferences" not in after["metadata"]
        assert strip_server(after) == strip_server(before)
    for api, kind, name, namespace in [("cert-manager.io/v1", "ClusterIssuer", "letsencrypt", None),
                                       ("cert-manager.io/v1", "Issuer", "apps-ca", "apps"),
                                       ("cert-manager.io/v1", "Certificate", "web", "apps")]:
        before = await source.get(api, kind, name, namespace=namespace)
        after = await dest.get(api, kind, name, namespace=namespace)
        assert before is not None and after is not None
        assert after["spec"] == before["spec"]
        assert strip_server(after) == strip_server(before)
    assert await dest.get("cert-manager.io/v1", "Certificate", "shim", namespace="apps") is None
    assert await dest.get("cert-manager.io/v1", "CertificateRequest", "web-1", namespace="apps") is None
    assert await dest.get("v1", "Secret", "unrelated", namespace="apps") is None


async def test_existing_objects_skipped_unless_force(source: Kube, fresh: tuple[Any, Kube], tmp_path: Path,
                                                     key: tuple[Path, str]) -> None:
    out = await backup_file(source, config(key[1]), tmp_path)
    arc = open_(out, key)
    _, dest = fresh
    await dest.create(ns("cert-manager"))
    await dest.create(secret("cert-manager", "cloudflare-api-token", {"api-token": b"newer-token"}))

    summary = await restore.restore_secrets(dest, arc)
    assert ("Secret cert-manager/cloudflare-api-token", "exists (use --force to overwrite)") in summary.skipped
    live = await dest.get("v1", "Secret", "cloudflare-api-token", namespace="cert-manager")
    assert live and live["data"]["api-token"] == b64(b"newer-token")

    summary = await restore.restore_secrets(dest, arc, force=True)
    assert not summary.skipped
    live = await dest.get("v1", "Secret", "cloudflare-api-token", namespace="cert-manager")
    assert live and live["data"]["api-token"] == b64(API_TOKEN)


async def test_dry_run_writes_nothing_and_shows_no_values(source: Kube, fresh: tuple[Any, Kube], tmp_path: Path,
                                                          key: tuple[Path, str]) -> None:
    out = await backup_file(source, config(key[1]), tmp_path)
    arc = open_(out, key)
    _, dest = fresh
    await dest.create(ns("apps"))
    await dest.create(secret("apps", "web-tls", {"tls.crt": b"other"}))
    writes = dest.stats.writes
    summaries = await _sequence(dest, arc, dry_run=True).all()
    assert dest.stats.writes == writes
    text = "\n".join(line for s in summaries for line in s.lines()) + restore.dumps_summary(summaries)
    assert "restore   Secret cert-manager/cloudflare-api-token" in text
    assert "skip      Secret apps/web-tls: exists (use --force to overwrite)" in text
    assert "Certificate apps/web" in text
    for value in VALUES:
        assert value.decode() not in text and b64(value) not in text


async def test_restore_learns_what_exists_without_downloading_values(
        source: Kube, fresh: tuple[Any, Kube], tmp_path: Path, key: tuple[Path, str]) -> None:
    """To tell which Secrets exist, a restore into a running cluster asks for their metadata only
    (a PartialObjectMetadataList, as client-go's metadata client does): no value of the cluster's
    Secrets, nor Helm's release history, crosses the link; an existing one is still skipped."""
    out = await backup_file(source, config(key[1]), tmp_path)
    arc = open_(out, key)
    emu, dest = fresh
    await dest.create(ns("apps"))
    big = b"x" * 300_000
    await dest.create(secret("apps", "web-tls", {"tls.crt": big}))
    await dest.create(secret("apps", "sh.helm.release.v1.web.v1", {"release": big}, type_="helm.sh/release.v1"))
    emu.reset_requests()
    summaries = await _sequence(dest, arc, dry_run=True).all()
    text = "\n".join(line for s in summaries for line in s.lines())
    assert "skip      Secret apps/web-tls: exists (use --force to overwrite)" in text
    lists = [r for r in emu.requests if r.method == "GET" and r.path.endswith("/secrets")]
    assert lists and sum(r.size for r in lists) < len(big)


async def test_backup_output_has_no_values(source: Kube, key: tuple[Path, str], tmp_path: Path,
                                           caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level("DEBUG")
    result = await make_backup(source, config(key[1]), now=NOW)
    shown = json.dumps(result.index) + caplog.text
    for value in VALUES:
        assert value.decode() not in shown and b64(value) not in shown
        assert value not in result.ciphertext and b64(value).encode() not in result.ciphertext
    assert result.index["counts"]["Secret"] == len(ARCHIVED_SECRETS)


# --------------------------------------------------------------------------- refusals write nothing


def _tamper(key: tuple[Path, str], data: bytes, how: str) -> bytes:
    """Decrypt, change, re-encrypt: what someone holding the key could do."""
    import io
    import tarfile

    plain = archive.decrypt(data, archive.load_identities([key[0]]))
    arc = archive.untar(plain)
    index, entries = arc.index, dict(arc.entries)
    if how == "index":
        index["entries"]["secrets/apps/web-tls.json"]["sha256"] = "0" * 64
    elif how == "entry":
        entries["secrets/apps/web-tls.json"] = entries["secrets/apps/web-tls.json"].replace(b"Q0VSVA", b"Q0VSVB")
    elif how == "version":
        index["formatVersion"] = 7
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name, body in [("index.json", json.dumps(index).encode()), *entries.items()]:
            info = tarfile.TarInfo(name)
            info.size = len(body)
            tar.addfile(info, io.BytesIO(body))
    return archive.encrypt(buf.getvalue(), [key[1]])


async def _restore_cli_like(kube: Kube, path: Path, key: tuple[Path, str], identity: Path, *,
                            cluster: str = "homelab", other: bool = False) -> None:
    """What `seedbed restore ARCHIVE` does: verify everything first, then restore."""
    arc = open_(path, key, identity, cluster=cluster, other=other)
    await _sequence(kube, arc, timeout=30).all()


class _NoGitServer:
    """A cluster without a Git server yet: `seedbed restore` skips the repository and says why."""

    async def push_bundle(self, bundle: bytes) -> int:
        from seedbed.errors import GitServerError

        raise GitServerError("no Git server runs yet", fix="run `seedbed bootstrap --restore`")


def _sequence(kube: Kube, arc: Any, **kw: Any) -> Any:
    """The one restore sequence of `seedbed restore`."""
    from seedbed.backup.sequence import Restore

    return Restore(arc, kube, _NoGitServer(), **kw)  # type: ignore[arg-type]


@pytest.mark.parametrize("case", ["wrong key", "truncated", "index", "entry", "version", "other cluster"])
async def test_each_corruption_writes_nothing(source: Kube, fresh: tuple[Any, Kube], tmp_path: Path,
                                              key: tuple[Path, str], case: str) -> None:
    out = await backup_file(source, config(key[1]), tmp_path)
    data = out.read_bytes()
    identity, cluster = key[0], "homelab"
    if case == "wrong key":
        identity = tmp_path / "wrong.key"
        archive.keygen(identity)
    elif case == "truncated":
        out.write_bytes(data[: len(data) // 2])
    elif case == "other cluster":
        cluster = "newlab"
    else:
        out.write_bytes(_tamper(key, data, case))
    _, dest = fresh
    files = set(tmp_path.rglob("*"))
    with pytest.raises(ArchiveError) as e:
        await _restore_cli_like(dest, out, key, identity, cluster=cluster)
    assert e.value.fix
    assert dest.stats.writes == 0
    assert set(tmp_path.rglob("*")) == files


async def test_from_other_cluster_override(source: Kube, fresh: tuple[Any, Kube], tmp_path: Path,
                                           key: tuple[Path, str], upstream: Any) -> None:
    out = await backup_file(source, config(key[1]), tmp_path)
    _, dest = fresh
    await dest.apply(crds(upstream))
    await _restore_cli_like(dest, out, key, key[0], cluster="newlab", other=True)
    assert await dest.get("v1", "Secret", "web-tls", namespace="apps") is not None


async def test_no_recipients_refused_before_anything(source: Kube) -> None:
    cfg = Config(backup=BackupConfig(recipients=[]))
    writes = source.stats.writes
    with pytest.raises(ConfigError, match=r"backup\.recipients is empty"):
        await make_backup(source, cfg)
    assert source.stats.writes == writes


# --------------------------------------------------------------------------- ordering


async def test_restore_order_secrets_before_flux(source: Kube, fresh: tuple[Any, Kube], tmp_path: Path,
                                                 key: tuple[Path, str], upstream: Any) -> None:
    """Secrets land before anything Flux applies; cert-manager objects only after their CRDs."""
    out = await backup_file(source, config(key[1]), tmp_path)
    arc = open_(out, key)
    emu, dest = fresh
    seen: list[str] = []

    def on_flux(_emu: Any, obj: dict[str, Any]) -> None:
        have = {(s["metadata"]["namespace"], s["metadata"]["name"]) for s in emu.list("v1", "Secret")}
        seen.append("ok" if have >= ARCHIVED_SECRETS else "missing secrets")

    emu.on_apply("Kustomization", on_flux)
    await restore.restore_secrets(dest, arc)
    flux_crd = next(d for d in yamlutil.load_all(upstream("flux-gotk-components-v2.9.3.yaml").read_text())
                    if d.get("kind") == "CustomResourceDefinition"
                    and d["metadata"]["name"] == "kustomizations.kustomize.toolkit.fluxcd.io")
    await dest.apply([flux_crd, ns("flux-system")])
    await dest.apply([{"apiVersion": "kustomize.toolkit.fluxcd.io/v1", "kind": "Kustomization",
                       "metadata": {"name": "flux-system", "namespace": "flux-system"},
                       "spec": {"interval": "10m", "path": "./clusters/homelab", "prune": True,
                                "sourceRef": {"kind": "GitRepository", "name": "flux-system"}}}])
    emu.settle()  # hooks run deferred in the server thread
    assert seen == ["ok"]
    # cert-manager objects wait for their CRDs rather than failing.
    with pytest.raises(ClusterError):
        await restore.restore_cert_manager(dest, arc, timeout=0.5)
    assert await dest.get("v1", "Secret", "web-tls", namespace="apps") is not None


# --------------------------------------------------------------------------- Longhorn


LH_CRDS = {"volumes.longhorn.io", "backups.longhorn.io", "snapshots.longhorn.io", "backuptargets.longhorn.io",
           "backupvolumes.longhorn.io"}
BACKUP_URL = "s3://backups@us-east-1/lh?backup={name}&volume=pvc-0b1c"


async def _longhorn_source(emu: Any, kube: Kube, upstream: Any, *, fail: str | None = None) -> None:
    await kube.apply([*longhorn_crds(upstream, LH_CRDS), ns("longhorn-system"), ns("gitea")])
    await kube.create({"apiVersion": "longhorn.io/v1beta2", "kind": "Volume",
                       "metadata": {"name": "pvc-0b1c", "namespace": "longhorn-system"},
                       "spec": {"size": "10737418240", "numberOfReplicas": 2, "frontend": "blockdev",
                                "accessMode": "rwo", "dataEngine": "v1"}})
    await kube.create({"apiVersion": "v1", "kind": "PersistentVolume", "metadata": {"name": "pvc-0b1c"},
                       "spec": {"capacity": {"storage": "10Gi"}, "accessModes": ["ReadWriteOnce"],
                                "storageClassName": "longhorn", "persistentVolumeReclaimPolicy": "Delete",
                                "csi": {"driver": "driver.longhorn.io", "volumeHandle": "pvc-0b1c",
                                        "fsType": "ext4",
                                        "volumeAttributes": {"numberOfReplicas": "2"}}}})
    await kube.create({"apiVersion": "v1", "kind": "PersistentVolumeClaim",
                       "metadata": {"name": "gitea-shared-storage", "namespace": "gitea"},
                       "spec": {"accessModes": ["ReadWriteOnce"], "storageClassName": "longhorn",
                                "resources": {"requests": {"storage": "10Gi"}}, "volumeName": "pvc-0b1c"}})

    def snapshot_ready(emu: Any, obj: dict[str, Any]) -> None:
        md = obj["metadata"]
        emu.set_status(obj["apiVersion"], "Snapshot", md["name"], md["namespace"], {"readyToUse": True, "size": 123})

    def backup_done(emu: Any, obj: dict[str, Any]) -> None:
        assert obj["metadata"]["labels"]["backup-volume"] == "pvc-0b1c"
        name = obj["metadata"]["name"]
        status = ({"state": "Error", "error": fail} if fail else
                  {"state": "Completed", "url": BACKUP_URL.format(name=name), "size": "4096",
                   "volumeSize": "10737418240"})
        emu.set_status(obj["apiVersion"], "Backup", name, "longhorn-system", status)

    emu.on_apply("Snapshot", snapshot_ready)
    emu.on_apply("Backup", backup_done)


def _lh_config(recipient: str, target: str | None = "s3://backups@us-east-1/lh") -> Config:
    return Config(longhorn=LonghornConfig(backup_target=target),
                  backup=BackupConfig(recipients=[recipient], include_git_server_volume=False,
                                      volumes=[VolumeRef(namespace="gitea", pvc="gitea-shared-storage")]))


async def test_longhorn_backup_and_restore(emulator: Any, fresh: tuple[Any, Kube], tmp_path: Path,
                                           key: tuple[Path, str], upstream: Any) -> None:
    kube = await connect(emulator, tmp_path, "lh")
    async with kube:
        await _longhorn_source(emulator, kube, upstream)
        records = await backup_volumes(kube, _lh_config(key[1]), timeout=10, now=NOW)
    (rec,) = records
    assert rec["volume"] == "pvc-0b1c" and rec["sizeBytes"] == 10737418240
    assert rec["url"] == BACKUP_URL.format(name=rec["backup"]) and rec["backupSize"] == 4096

    emu, dest = fresh
    # The rebuilt cluster's Longhorn syncs the backups from the same store (the S3 bucket outlives the cluster).
    bucket = BackupStore()
    bucket.backups["pvc-0b1c"] = {rec["backup"]: {"url": rec["url"], "size": "4096", "volumeSize": "10737418240"}}
    LonghornSim(emu, bucket, sync_delay=0.01)
    await dest.apply([*longhorn_crds(upstream, LH_CRDS), ns("longhorn-system")])
    await dest.create({"apiVersion": "longhorn.io/v1beta2", "kind": "BackupTarget",
                       "metadata": {"name": "default", "namespace": "longhorn-system"},
                       "spec": {"backupTargetURL": "s3://backups@us-east-1/lh"}})
    sealed = archive.encrypt(archive.build({"volumes.json": archive.dumps({"volumes": records})}, cluster="homelab",
                                           created=NOW, signing_key=signing_key(key)), [key[1]])
    out = tmp_path / "volumes.age"
    archive.write(out, sealed)
    arc = open_(out, key, cfg=_lh_config(key[1]))
    summary = await restore.restore_volumes(dest, arc, timeout=10)
    assert summary.restored == ["PersistentVolumeClaim gitea/gitea-shared-storage"]
    volume = await dest.get("longhorn.io/v1beta2", "Volume", "pvc-0b1c", namespace="longhorn-system")
    pv = await dest.get("v1", "PersistentVolume", "pvc-0b1c")
    pvc = await dest.get("v1", "PersistentVolumeClaim", "gitea-shared-storage", namespace="gitea")
    assert volume and pv and pvc
    assert volume["spec"]["fromBackup"] == rec["url"] and volume["spec"]["size"] == "10737418240"
    assert pv["spec"]["csi"]["volumeHandle"] == "pvc-0b1c"
    assert pvc["spec"]["volumeName"] == "pvc-0b1c"
    want_volume, want_pv, _ = restore_objects(rec)
    assert volume["spec"] == want_volume["spec"]
    assert pv["spec"]["csi"] == want_pv["spec"]["csi"] and pv["spec"]["claimRef"]["name"] == "gitea-shared-storage"

    again = await restore.restore_volumes(dest, arc, force=True, timeout=10)
    assert again.restored == [] and "delete it first" in again.skipped[0][1]


async def test_longhorn_backup_error_and_no_target(emulator: Any, tmp_path: Path, key: tuple[Path, str],
                                                   upstream: Any) -> None:
    kube = await connect(emulator, tmp_path, "lh")
    async with kube:
        await _longhorn_source(emulator, kube, upstream, fail="s3: access denied")
        with pytest.raises(ConfigError, match=r"longhorn\.backupTarget is not set"):
            await backup_volumes(kube, _lh_config(key[1], target=None), timeout=5)

        with pytest.raises(ClusterError, match="access denied"):
            await backup_volumes(kube, _lh_config(key[1]), timeout=5, now=NOW)
