"""The Kubernetes engine, against the API emulator: what a user of `seedbed` would notice."""

from __future__ import annotations

import asyncio
import json
import os
import stat
import sys
from pathlib import Path

import pytest
import yaml

from conftest import upstream_path
from seedbed import yamlutil
from seedbed.config import ClusterConfig
from seedbed.errors import ClusterError, ConfigError, Refused, WaitTimeout
from seedbed.kube import Kube, NotFound
from seedbed.kube.wait import rollout_complete

BUNDLES = ["longhorn-v1.12.1.yaml", "flux-gotk-components-v2.9.3.yaml", "cert-manager-v1.18.0.yaml"]


async def connect(path: Path, **kw) -> Kube:
    kube = await Kube.connect(ClusterConfig(kubeconfig=str(path), **kw))
    kube.backoff = 0.01  # keep retry tests quick; the policy is the same
    return kube


def key(obj: dict) -> tuple:
    md = obj["metadata"]
    return obj["apiVersion"], obj["kind"], md.get("namespace"), md["name"]


# --------------------------------------------------------------------------- applying real bundles


async def test_real_upstream_bundles_apply_establish_and_roll_out(emulator, kubeconfig, upstream):
    docs = [d for name in BUNDLES for d in yamlutil.load_all(upstream(name).read_text())]
    async with await connect(kubeconfig) as kube:
        result = await kube.apply(docs)
        assert len(result.created) == len(docs)
        for d in docs:
            ns = d["metadata"].get("namespace")
            assert emulator.get(d["apiVersion"], d["kind"], d["metadata"]["name"], ns) is not None, key(d)
        for crd in (d for d in docs if d["kind"] == "CustomResourceDefinition"):
            live = emulator.get("apiextensions.k8s.io/v1", "CustomResourceDefinition", crd["metadata"]["name"])
            conds = {c["type"]: c["status"] for c in live["status"]["conditions"]}
            assert conds["Established"] == "True"
        for d in docs:
            if d["kind"] in ("Deployment", "DaemonSet", "StatefulSet"):
                live = await kube.wait_rollout(d["kind"], d["metadata"]["name"], d["metadata"]["namespace"],
                                               timeout=30)
                assert rollout_complete(live)


async def test_a_second_apply_changes_no_resource_version(emulator, kubeconfig, upstream):
    docs = yamlutil.load_all(upstream("longhorn-v1.12.1.yaml").read_text())
    async with await connect(kubeconfig) as kube:
        await kube.apply(docs)
        await kube.wait_rollout("DaemonSet", "longhorn-manager", "longhorn-system", timeout=30)
        before = {key(d): emulator.get(*key(d)[:2], key(d)[3], key(d)[2])["metadata"]["resourceVersion"]
                  for d in docs}
        writes = emulator.writes()
        again = await kube.apply(docs)
        after = {key(d): emulator.get(*key(d)[:2], key(d)[3], key(d)[2])["metadata"]["resourceVersion"]
                 for d in docs}
    assert again.created == []
    assert before == after
    assert emulator.writes() == writes


async def test_namespaces_and_crds_go_first_and_custom_resources_follow(emulator, kubeconfig):
    crd = yaml.safe_load("""
apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata: {name: widgets.example.org}
spec:
  group: example.org
  scope: Namespaced
  names: {plural: widgets, singular: widget, kind: Widget}
  versions:
  - name: v1
    served: true
    storage: true
    schema: {openAPIV3Schema: {type: object, x-kubernetes-preserve-unknown-fields: true}}
""")
    widget = {"apiVersion": "example.org/v1", "kind": "Widget", "metadata": {"name": "w", "namespace": "shop"},
              "spec": {"size": 3}}
    ns = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "shop"}}
    async with await connect(kubeconfig) as kube:
        await kube.apply([widget, crd, ns])  # deliberately in the wrong order
    assert emulator.get("example.org/v1", "Widget", "w", "shop")["spec"] == {"size": 3}


# --------------------------------------------------------------------------- faults


async def test_apply_survives_throttling_server_errors_and_conflicts(emulator, kubeconfig, upstream):
    docs = yamlutil.load_all(upstream("flux-gotk-components-v2.9.3.yaml").read_text())
    emulator.inject(method="PATCH", path=r".*deployments.*", status=429, times=3, retry_after="0")
    emulator.inject(method="PATCH", path=r".*services.*", status=503, times=2)
    emulator.inject(method="PATCH", path=r".*serviceaccounts.*", status=500, times=2)
    emulator.inject(method="PATCH", path=r".*clusterroles/.*", status=409, times=1)
    async with await connect(kubeconfig) as kube:
        result = await kube.apply(docs)
        assert kube.stats.retries >= 8
    assert len(result.created) == len(docs)


async def test_a_persistent_server_error_is_one_clear_message(emulator, kubeconfig):
    emulator.inject(method="PATCH", path=r".*configmaps.*", status=500, times=100)
    cm = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "x", "namespace": "default"}}
    async with await connect(kubeconfig) as kube:
        kube.retries = 2
        with pytest.raises(ClusterError) as e:
            await kube.apply([cm])
    assert "500" in e.value.message and e.value.fix


async def test_waits_survive_dropped_watches(emulator, kubeconfig):
    dep = _deployment("web")
    emulator.hold_ready("Deployment", "default", "web")
    async with await connect(kubeconfig) as kube:
        await kube.apply([dep])
        emulator.inject(method="GET", path=r".*deployments.*", drop_watch=True, times=3)
        waiter = asyncio.create_task(kube.wait_rollout("Deployment", "web", "default", timeout=20))
        await asyncio.sleep(0.5)
        emulator.release_ready("Deployment", "default", "web")
        live = await waiter
    assert rollout_complete(live)


async def test_a_wait_survives_a_watch_the_api_server_throttles_or_cannot_serve_for_a_moment(emulator, kubeconfig):
    """Was: one 503 (or 429 from API priority and fairness) on opening a watch ended the whole wait,
    and the bootstrap step with it (found by the seeded-fault sweep, seeds 169 and 180)."""
    dep = _deployment("web")
    emulator.hold_ready("Deployment", "default", "web")
    said: list[str] = []
    async with await connect(kubeconfig) as kube:
        await kube.apply([dep])
        emulator.inject(method="GET", path=r".*deployments.*", status=503, times=1, watches_only=True)
        emulator.inject(method="GET", path=r".*deployments.*", status=429, times=1, watches_only=True, retry_after=0)
        waiter = asyncio.create_task(kube.wait_rollout("Deployment", "web", "default", timeout=20,
                                                       on_wait=said.append))
        await asyncio.sleep(0.5)
        emulator.release_ready("Deployment", "default", "web")
        live = await waiter
    assert rollout_complete(live)
    assert any("refused the watch" in line and "503" in line for line in said)


async def test_a_watch_the_api_server_keeps_refusing_is_one_clear_message(emulator, kubeconfig):
    emulator.hold_ready("Deployment", "default", "web")
    async with await connect(kubeconfig) as kube:
        await kube.apply([_deployment("web")])
        kube.retries = 2
        emulator.inject(method="GET", path=r".*deployments.*", status=503, times=100, watches_only=True)
        with pytest.raises(ClusterError) as e:
            await kube.wait_rollout("Deployment", "web", "default", timeout=20)
    assert "503" in e.value.message and e.value.fix


async def test_a_wait_that_times_out_names_what_is_not_ready_and_why(emulator, kubeconfig):
    emulator.hold_ready("Deployment", "default", "web")
    async with await connect(kubeconfig) as kube:
        await kube.apply([_deployment("web")])
        with pytest.raises(WaitTimeout) as e:
            await kube.wait_rollout("Deployment", "web", "default", timeout=1)
    msg = e.value.message
    assert "Deployment default/web" in msg
    assert "Available=False" in msg and "MinimumReplicasUnavailable" in msg
    assert "kubectl describe deployment web -n default" in e.value.fix


async def test_waiting_for_a_deleted_workloads_pods_watches_and_ends_with_the_last_one(emulator, kubeconfig):
    """The conversion of an earlier Git server waits for its pods to let go of the claim: one LIST, then
    a watch that ends when the last matching pod is deleted (it was a LIST every 2 s)."""
    pods = [{"apiVersion": "v1", "kind": "Pod", "metadata": {"name": f"git-{i}", "namespace": "default",
                                                            "labels": {"app": "git"}},
             "spec": {"containers": [{"name": "c", "image": "busybox"}]}} for i in range(2)]
    other = {**pods[0], "metadata": {"name": "other", "namespace": "default", "labels": {"app": "other"}}}
    said: list[str] = []
    async with await connect(kubeconfig) as kube:
        kube.on_wait = said.append
        await kube.apply([*pods, other])
        emulator.reset_requests()
        waiter = asyncio.create_task(kube.wait_until_none("v1", "Pod", "default", "app=git", timeout=20,
                                                          what="the old pods to stop", fix="look at them"))
        await asyncio.sleep(0.3)
        assert not waiter.done()
        for pod in pods:
            await kube.delete("v1", "Pod", pod["metadata"]["name"], namespace="default")
        await asyncio.wait_for(waiter, 5)
    reads = [r for r in emulator.requests if r.method == "GET" and r.path.endswith("/pods")]
    assert [r.query.get("watch") for r in reads] == [None, "true"]
    assert said[0] == "waiting for the old pods to stop: 2 left: git-0, git-1"


async def test_pods_that_never_stop_end_the_wait_with_the_callers_fix(emulator, kubeconfig):
    pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "git-0", "namespace": "default",
                                                          "labels": {"app": "git"}},
           "spec": {"containers": [{"name": "c", "image": "busybox"}]}}
    async with await connect(kubeconfig) as kube:
        await kube.apply([pod])
        with pytest.raises(WaitTimeout) as e:
            await kube.wait_until_none("v1", "Pod", "default", "app=git", timeout=0.5, what="the old pods to stop",
                                       fix="kubectl -n default get pods -l app=git")
    assert e.value.message == "timed out after 0.5s waiting for the old pods to stop: 1 left: git-0"
    assert e.value.fix == "kubectl -n default get pods -l app=git"


def _deployment(name: str, replicas: int = 1) -> dict:
    labels = {"app": name}
    return {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": name, "namespace": "default"},
            "spec": {"replicas": replicas, "selector": {"matchLabels": labels},
                     "template": {"metadata": {"labels": labels},
                                  "spec": {"containers": [{"name": "c", "image": "busybox",
                                                           "ports": [{"name": "http", "containerPort": 8080}]}]}}}}


# --------------------------------------------------------------------------- port-forward


class Echo:
    """A loopback TCP server that answers every chunk with b"echo:" + chunk."""

    async def __aenter__(self) -> int:
        async def handle(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
            while data := await r.read(65536):
                w.write(b"echo:" + data)
                await w.drain()
            w.close()

        self.server = await asyncio.start_server(handle, "127.0.0.1", 0)
        return self.server.sockets[0].getsockname()[1]

    async def __aexit__(self, *exc: object) -> None:
        self.server.close()


async def _roundtrip(port: int, payload: bytes) -> bytes:
    r, w = await asyncio.open_connection("127.0.0.1", port)
    w.write(payload)
    await w.drain()
    data = await asyncio.wait_for(r.readexactly(len(payload) + 5), 10)
    w.close()
    return data


async def test_port_forward_to_a_service_reaches_its_pod(emulator, kubeconfig):
    svc = {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "web", "namespace": "default"},
           "spec": {"selector": {"app": "web"}, "ports": [{"port": 80, "targetPort": "http"}]}}
    async with Echo() as echo_port, await connect(kubeconfig) as kube:
        emulator.route_port("default", 8080, "127.0.0.1", echo_port)
        await kube.apply([_deployment("web"), svc])
        await kube.wait_rollout("Deployment", "web", "default", timeout=20)
        async with kube.port_forward("default", service="web", port=80) as local:
            assert await _roundtrip(local, b"hello") == b"echo:hello"
            assert await _roundtrip(local, b"again") == b"echo:again"
    assert emulator.port_forward_streams >= 2


async def test_port_forward_survives_a_dropped_stream(emulator, kubeconfig):
    svc = {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "web", "namespace": "default"},
           "spec": {"selector": {"app": "web"}, "ports": [{"port": 80, "targetPort": 8080}]}}
    async with Echo() as echo_port, await connect(kubeconfig) as kube:
        emulator.route_port("default", 8080, "127.0.0.1", echo_port)
        await kube.apply([_deployment("web"), svc])
        await kube.wait_rollout("Deployment", "web", "default", timeout=20)
        async with kube.port_forward("default", service="web", port=80) as local:
            emulator.inject(path=r".*portforward.*", drop_port_forward=True, times=1)
            with pytest.raises((asyncio.IncompleteReadError, ConnectionError, TimeoutError)):
                await _roundtrip(local, b"first")
            # The same local port keeps working: the next connection opens a new stream.
            assert await _roundtrip(local, b"second") == b"echo:second"


async def test_port_forward_reads_its_service_once_and_follows_it_to_a_replaced_pod(emulator, kubeconfig):
    """Connections reuse the pod the forward found (no Service GET and Pod LIST per connection on a
    slow link); when that pod is gone, the next connection finds its replacement through the Service."""
    svc = {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "web", "namespace": "default"},
           "spec": {"selector": {"app": "web"}, "ports": [{"port": 80, "targetPort": 8080}]}}
    async with Echo() as echo_port, await connect(kubeconfig) as kube:
        emulator.route_port("default", 8080, "127.0.0.1", echo_port)
        await kube.apply([_deployment("web"), svc])
        await kube.wait_rollout("Deployment", "web", "default", timeout=20)
        emulator.reset_requests()
        async with kube.port_forward("default", service="web", port=80) as local:
            assert await _roundtrip(local, b"one") == b"echo:one"
            assert await _roundtrip(local, b"two") == b"echo:two"
            assert sum(1 for r in emulator.requests if r.method == "GET" and r.path.endswith("/services/web")) == 1
            (old,) = await kube.list("v1", "Pod", "default", label_selector="app=web")
            await kube.delete("v1", "Pod", old["metadata"]["name"], "default")
            await kube.wait_rollout("Deployment", "web", "default", timeout=20)
            assert await _roundtrip(local, b"three") == b"echo:three"
        (new,) = await kube.list("v1", "Pod", "default", label_selector="app=web")
        assert new["metadata"]["name"] != old["metadata"]["name"]


async def test_port_forward_to_a_missing_service_says_so(emulator, kubeconfig):
    async with await connect(kubeconfig) as kube:
        with pytest.raises(ClusterError) as e:
            async with kube.port_forward("default", service="nope", port=80):
                pass
    assert "service default/nope does not exist" in e.value.message


# --------------------------------------------------------------------------- kubeconfig and credentials


async def test_a_wrong_context_lists_the_ones_that_exist(kubeconfig):
    with pytest.raises(ConfigError) as e:
        await connect(kubeconfig, context="prod")
    assert "no context 'prod'" in e.value.message and "emulator" in e.value.message
    assert "--context" in e.value.fix


async def test_a_missing_kubeconfig_names_the_file_and_the_fix(tmp_path):
    with pytest.raises(ConfigError) as e:
        await connect(tmp_path / "nope")
    assert str(tmp_path / "nope") in e.value.message and "kubeconfig" in e.value.fix


async def test_an_unreachable_cluster_is_one_line_with_the_fix(tmp_path):
    path = tmp_path / "kc"
    path.write_text(yaml.safe_dump({
        "apiVersion": "v1", "kind": "Config", "current-context": "lab",
        "clusters": [{"name": "lab", "cluster": {"server": "http://127.0.0.1:9"}}],
        "contexts": [{"name": "lab", "context": {"cluster": "lab", "user": "u"}}],
        "users": [{"name": "u", "user": {"token": "t"}}]}))
    async with await connect(path) as kube:
        kube.retries = 1
        with pytest.raises(ClusterError) as e:
            await kube.get("v1", "Namespace", "default")
    assert "cannot reach the Kubernetes API at http://127.0.0.1:9" in e.value.message
    assert "kubectl --context lab get nodes" in e.value.fix


def test_expired_credentials_say_so():
    from seedbed_lab.emulator import Emulator

    with Emulator(token="fresh") as emu:
        import tempfile

        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "kc"
            emu.write_kubeconfig(path)
            doc = yaml.safe_load(path.read_text())
            doc["users"][0]["user"]["token"] = "expired"
            path.write_text(yaml.safe_dump(doc))

            err = asyncio.run(_first_request_error(path))
    assert "401 Unauthorized" in err.message and "expired" in err.message
    assert "refresh your kubeconfig" in err.fix


async def test_rbac_denial_is_reported_with_the_fix(emulator, kubeconfig):
    emulator.deny("create", "namespaces")
    from seedbed.steps.preflight import PreflightStep

    async with await connect(kubeconfig) as kube:
        review = {"apiVersion": "authorization.k8s.io/v1", "kind": "SelfSubjectAccessReview",
                  "spec": {"resourceAttributes": {"verb": "create", "resource": "namespaces"}}}
        assert (await kube.create(review))["status"]["allowed"] is False
        ctx = _ctx(kube)
        with pytest.raises(Refused) as e:
            await PreflightStep().run(ctx, PreflightStep().plan(ctx.cfg, None, ctx.options))
    assert "may not: create namespaces" in e.value.message and "cluster-admin" in e.value.fix


async def _first_request_error(path: Path) -> ClusterError:
    async with await connect(path) as kube:
        with pytest.raises(ClusterError) as e:
            await kube.get("v1", "Namespace", "default")
        return e.value


def _ctx(kube: Kube):
    from seedbed.config import Config
    from seedbed.gitserver import GitServer
    from seedbed.output import Output
    from seedbed.steps.base import Context, Options

    cfg, out = Config(), Output(quiet=True)
    return Context(cfg=cfg, kube=kube, options=Options(), manifests=None, out=out,  # type: ignore[arg-type]
                   gitserver=GitServer(cfg, kube, out))


def _exec_plugin(tmp_path: Path, body: str) -> Path:
    script = tmp_path / "plugin"
    script.write_text(f"#!{sys.executable}\n{body}")
    script.chmod(script.stat().st_mode | stat.S_IXUSR)
    return script


def _exec_kubeconfig(emu, tmp_path: Path, plugin: Path, api_version: str) -> Path:
    path = tmp_path / "kc"
    emu.write_kubeconfig(path)
    doc = yaml.safe_load(path.read_text())
    doc["users"][0]["user"] = {"exec": {"apiVersion": api_version, "command": str(plugin),
                                        "args": ["--cluster", "lab"], "interactiveMode": "Never"}}
    path.write_text(yaml.safe_dump(doc))
    return path


def test_exec_credential_plugins_of_api_version_v1_work(tmp_path):
    from seedbed_lab.emulator import Emulator

    plugin = _exec_plugin(tmp_path, """
import json, os, sys
info = json.loads(os.environ["KUBERNETES_EXEC_INFO"])
assert info["apiVersion"] == "client.authentication.k8s.io/v1", info
assert sys.argv[1:] == ["--cluster", "lab"]
print(json.dumps({"apiVersion": "client.authentication.k8s.io/v1", "kind": "ExecCredential",
                  "status": {"token": "from-plugin", "expirationTimestamp": "2999-01-01T00:00:00Z"}}))
""")
    with Emulator(token="from-plugin") as emu:
        path = _exec_kubeconfig(emu, tmp_path, plugin, "client.authentication.k8s.io/v1")

        async def go() -> dict | None:
            async with await connect(path) as kube:
                return await kube.get("v1", "Namespace", "default")

        assert asyncio.run(go()) is not None


def test_a_failing_exec_plugin_is_one_clear_message(tmp_path):
    from seedbed_lab.emulator import Emulator

    plugin = _exec_plugin(tmp_path, "import sys\nprint('error: you must log in first', file=sys.stderr)\nsys.exit(1)\n")
    with Emulator(token="x") as emu:
        path = _exec_kubeconfig(emu, tmp_path, plugin, "client.authentication.k8s.io/v1")

        err = asyncio.run(_first_request_error(path))
    assert "you must log in first" in err.message and "log in again" in err.fix


def test_tls_is_verified_against_the_kubeconfig_ca(tmp_path):
    from seedbed_lab.emulator import Emulator

    with Emulator(tls=True) as emu:
        good = tmp_path / "good"
        emu.write_kubeconfig(good)

        async def get(path: Path) -> dict | None:
            async with await connect(path) as kube:
                kube.retries = 0
                return await kube.get("v1", "Namespace", "default")

        assert asyncio.run(get(good)) is not None
        import trustme

        doc = yaml.safe_load(good.read_text())
        import base64

        other = trustme.CA().cert_pem.bytes()
        doc["clusters"][0]["cluster"]["certificate-authority-data"] = base64.b64encode(other).decode()
        bad = tmp_path / "bad"
        bad.write_text(yaml.safe_dump(doc))
        with pytest.raises(ClusterError) as e:
            asyncio.run(get(bad))
    assert "TLS verification" in e.value.message and "re-export the kubeconfig" in e.value.fix


def test_inline_client_keys_never_touch_the_disk(tmp_path, monkeypatch):
    """The kubeconfig's client key is loaded through a memfd, not a temporary file."""
    import tempfile

    import trustme
    from cryptography import x509  # noqa: F401  (trustme needs it; keeps the import explicit)

    ca = trustme.CA()
    client = ca.issue_cert("admin")
    doc = {"apiVersion": "v1", "kind": "Config", "current-context": "c",
           "clusters": [{"name": "c", "cluster": {"server": "https://127.0.0.1:9",
                                                  "certificate-authority-data": _b64(ca.cert_pem.bytes())}}],
           "contexts": [{"name": "c", "context": {"cluster": "c", "user": "u"}}],
           "users": [{"name": "u", "user": {"client-certificate-data": _b64(client.cert_chain_pems[0].bytes()),
                                            "client-key-data": _b64(client.private_key_pem.bytes())}}]}
    path = tmp_path / "kc"
    path.write_text(json.dumps(doc))
    seen: list[str] = []
    real = tempfile.NamedTemporaryFile
    monkeypatch.setattr(tempfile, "NamedTemporaryFile", lambda *a, **k: seen.append("tmp") or real(*a, **k))
    before = set(os.listdir(tempfile.gettempdir()))

    async def go() -> None:
        kube = await connect(path)
        await kube.close()

    asyncio.run(go())
    assert seen == []
    assert set(os.listdir(tempfile.gettempdir())) - before == set()


def _b64(data: bytes) -> str:
    import base64

    return base64.b64encode(data).decode()


def test_in_cluster_configuration_is_used_when_there_is_no_kubeconfig(tmp_path, monkeypatch):
    """Run as a Pod (a CronJob taking backups, say): the service account's token and CA."""
    from urllib.parse import urlsplit

    import seedbed.kube.connect as connect
    from seedbed_lab.emulator import Emulator

    with Emulator(tls=True, token="sa-token") as emu:
        sa = tmp_path / "serviceaccount"
        sa.mkdir()
        (sa / "token").write_text("sa-token")
        (sa / "namespace").write_text("seedbed")
        (sa / "ca.crt").write_bytes(emu.ca_pem if isinstance(emu.ca_pem, bytes) else emu.ca_pem.encode())
        url = urlsplit(emu.url)
        monkeypatch.setattr(connect, "SERVICE_ACCOUNT", sa)
        monkeypatch.setenv("KUBERNETES_SERVICE_HOST", "localhost")
        monkeypatch.setenv("KUBERNETES_SERVICE_PORT", str(url.port))
        monkeypatch.delenv("KUBECONFIG", raising=False)
        monkeypatch.setenv("HOME", str(tmp_path))

        async def go() -> dict | None:
            kube = await Kube.connect(ClusterConfig())
            async with kube:
                assert kube.target.source == "in-cluster"
                return await kube.get("v1", "Namespace", "default")

        assert asyncio.run(go()) is not None


# --------------------------------------------------------------------------- fewer round trips


async def test_secrets_and_configmaps_are_read_without_a_discovery_request(emulator, kubeconfig):
    """Core v1 Secrets and ConfigMaps are served the same way by every API server: reading them
    costs no discovery round trip. Other kinds still go through discovery."""
    emulator.put({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c", "namespace": "default"},
                  "data": {"k": "v"}})
    async with await connect(kubeconfig) as kube:
        emulator.reset_requests()
        assert (await kube.get("v1", "ConfigMap", "c", "default"))["data"] == {"k": "v"}
        assert await kube.list("v1", "Secret", "default") == []
        assert [r.path for r in emulator.requests] == ["/api/v1/namespaces/default/configmaps/c",
                                                       "/api/v1/namespaces/default/secrets"]
        await kube.get("v1", "Namespace", "default")
        assert "/api/v1" in [r.path for r in emulator.requests]


async def test_cert_manager_objects_are_read_without_a_discovery_request(emulator, kubeconfig):
    """A backup reads Certificates, CertificateRequests, Issuers and ClusterIssuers in its first round
    trip: their names and scopes are the ones cert-manager's CRDs (v1.21.1, deploy/crds) give on every
    cluster. Without cert-manager a read finds nothing, and a write still names the missing CRD."""
    from seedbed.kube.client import _KNOWN_FOR_READS

    async with await connect(kubeconfig) as kube:
        emulator.reset_requests()
        assert await kube.list("cert-manager.io/v1", "Certificate") == []
        assert await kube.get("cert-manager.io/v1", "ClusterIssuer", "letsencrypt-production") is None
        assert "/apis/cert-manager.io/v1" not in [r.path for r in emulator.requests]
        with pytest.raises(NotFound, match="does not serve Certificate"):
            await kube.create({"apiVersion": "cert-manager.io/v1", "kind": "Certificate",
                               "metadata": {"name": "c", "namespace": "default"}, "spec": {}})

    folder = upstream_path("cert-manager-v1.21.1-crds")
    for path in sorted(folder.glob("cert-manager.io_*.yaml")):
        crd = yaml.safe_load(path.read_text())
        names = crd["spec"]["names"]
        known = _KNOWN_FOR_READS[("cert-manager.io/v1", names["kind"])]
        assert (known.plural, known.namespaced) == (names["plural"], crd["spec"]["scope"] == "Namespaced"), path.name
        emulator.put(crd)
    emulator.settle()
    emulator.put({"apiVersion": "cert-manager.io/v1", "kind": "Certificate",
                  "metadata": {"name": "web", "namespace": "default"}, "spec": {"secretName": "web-tls"}})
    async with await connect(kubeconfig) as kube:
        emulator.reset_requests()
        [cert] = await kube.list("cert-manager.io/v1", "Certificate", "default")
        assert cert["metadata"]["name"] == "web" and cert["kind"] == "Certificate"
        assert [r.path for r in emulator.requests] == ["/apis/cert-manager.io/v1/namespaces/default/certificates"]


async def test_shared_lists_make_one_request_for_readers_of_the_same_kind(emulator, kubeconfig):
    from seedbed.kube.shared import SharedLists

    for i in range(3):
        emulator.put({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": f"s{i}", "namespace": "default"},
                      "data": {}})
    async with await connect(kubeconfig) as kube:
        shared = SharedLists(kube)
        emulator.reset_requests()
        a, b = await asyncio.gather(shared.list("v1", "Secret", "default"), shared.list("v1", "Secret", "default"))
        assert [o["metadata"]["name"] for o in a] == [o["metadata"]["name"] for o in b] == ["s0", "s1", "s2"]
        assert a is not b  # each reader gets its own list
        assert len([r for r in emulator.requests if r.path.endswith("/secrets")]) == 1
        assert shared.target == kube.target  # everything else is the connection's own
