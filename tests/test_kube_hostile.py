"""The cluster connection against broken and hostile servers, kubeconfigs and credentials.

Each test is one thing a user would notice: a hang, a traceback, a credential on the screen, or
seedbed talking to another cluster than the one asked for. Deadlines are made small here
(``Deadlines``); what is tested is that the deadline is kept and named, not how long it is.
"""

from __future__ import annotations

import asyncio
import json
import os
import stat
from pathlib import Path

import pytest
import yaml

from hostile_api import HostileServer, answer
from hostile_api import kubeconfig as hostile_kc
from seedbed import kube as kube_pkg
from seedbed.config import ClusterConfig
from seedbed.errors import ClusterError, ConfigError, GitServerError, SeedbedError, WaitTimeout
from seedbed.gitea import GiteaClient
from seedbed.kube import Deadlines, Kube, KubeClient
from test_kube import _deployment

FAST = Deadlines(request=0.5, connect=0.5, exec_plugin=0.5, watch_idle=0.5)
TOKEN = "sekrit-token-0123456789abcdef"


async def connect(path: Path, deadlines: Deadlines = FAST, **kw) -> Kube:
    kube = await Kube.connect(ClusterConfig(kubeconfig=str(path)), deadlines=deadlines, **kw)
    kube.backoff = 0.01
    return kube


def shown(e: SeedbedError) -> str:
    """What the CLI prints for an error: the message and the fix."""
    return f"{e.message}\n{e.fix or ''}"


def plugin(tmp_path: Path, body: str, name: str = "plugin") -> Path:
    path = tmp_path / name
    path.write_text("#!/bin/sh\n" + body + "\n")
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return path


def exec_user(command: str) -> dict:
    return {"exec": {"apiVersion": "client.authentication.k8s.io/v1", "command": command}}


def credential(token: str) -> str:
    """A plugin body printing an ExecCredential with ``token`` (a here-document: no shell escapes)."""
    doc = {"apiVersion": "client.authentication.k8s.io/v1", "kind": "ExecCredential", "status": {"token": token}}
    return f"cat <<'EOF'\n{json.dumps(doc)}\nEOF"


# =========================================================================== deadlines


async def test_an_api_server_that_never_answers_fails_within_the_deadline_naming_the_server(tmp_path):
    async with (HostileServer(lambda *_: asyncio.sleep(0, None)) as srv,
                await connect(hostile_kc(tmp_path / "kc", srv.url)) as kube):
        with pytest.raises(ClusterError) as e:
            await kube.get("v1", "Namespace", "default")
    assert srv.url in e.value.message and "did not answer GET /api/v1 within 0.5 s" in e.value.message
    assert "kubectl" in e.value.fix
    assert len(srv.requests) == 1  # not retried: a server that never answered will not answer a retry


async def test_an_api_server_that_drips_a_byte_every_few_seconds_fails_within_the_deadline(tmp_path):
    async with (HostileServer(drip=b'{"kind": "APIResourceList", ', drip_every=0.05) as srv,
                await connect(hostile_kc(tmp_path / "kc", srv.url)) as kube):
        with pytest.raises(ClusterError) as e:
            await kube.list("v1", "Pod", "default")
    assert "did not answer" in e.value.message and "0.5 s" in e.value.message


async def test_a_silent_tls_handshake_fails_within_the_connect_deadline_without_retries(tmp_path):
    async with HostileServer(silent=True) as srv:
        path = hostile_kc(tmp_path / "kc", f"https://127.0.0.1:{srv.port}")
        async with await connect(path) as kube:
            with pytest.raises(ClusterError) as e:
                await kube.request("GET", "/version")
    assert "did not complete the connection and TLS handshake within 0.5 s" in e.value.message
    assert "firewall" in e.value.fix


async def test_a_watch_whose_answer_never_comes_fails_within_the_request_deadline(emulator, kubeconfig):
    async with await connect(kubeconfig) as kube:
        await kube.get("v1", "Namespace", "default")  # discovery done
        emulator.inject(path=r"/api/v1/namespaces$", latency=30, times=1)
        with pytest.raises(ClusterError) as e:
            async for _ in kube.watch("v1", "Namespace", timeout=60):
                pass
    assert "did not answer GET /api/v1/namespaces" in e.value.message


async def test_an_exec_credential_plugin_that_never_returns_is_stopped_and_named(tmp_path):
    cmd = plugin(tmp_path, "sleep 600")
    async with (HostileServer(lambda *_: asyncio.sleep(0, answer(200, {}))) as srv,
                await connect(hostile_kc(tmp_path / "kc", srv.url, user=exec_user(str(cmd)))) as kube):
        with pytest.raises(ClusterError) as e:
            await kube.request("GET", "/version")
    assert f"credential plugin {str(cmd)!r} did not finish within 0.5 s" in e.value.message
    assert "log in" in e.value.fix
    assert srv.requests == []  # nothing was sent without credentials


async def test_a_git_server_that_never_answers_is_polled_again_not_waited_on_forever():
    async with HostileServer(lambda *_: asyncio.sleep(0, None)) as srv:
        seen: list[str] = []
        async with GiteaClient(srv.url, username="admin", password="pw-0123456789", timeout=0.2) as client:
            with pytest.raises(GitServerError) as e:
                await client.wait_ready(0.5, interval=0.05, on_progress=seen.append)
    assert "did not become ready within 0.5 s: no answer within 0.2 s" in e.value.message
    assert seen == [f"waiting for Gitea at {srv.url} to answer: no answer within 0.2 s"]
    assert len(srv.requests) >= 2


# =========================================================================== port-forward and long waits

DIAL = "error dialing backend: dial tcp 10.0.0.5:10250: connect: connection refused"


async def _git_server_like(emulator, kube: Kube) -> None:
    svc = {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "web", "namespace": "default"},
           "spec": {"selector": {"app": "web"}, "ports": [{"port": 80, "targetPort": 8080}]}}
    await kube.apply([_deployment("web"), svc])
    await kube.wait_rollout("Deployment", "web", "default", timeout=20)


async def test_a_port_forward_the_api_server_refuses_ends_the_git_server_wait_at_once_with_the_reason(
        emulator, kubeconfig):
    async with await connect(kubeconfig, Deadlines()) as kube:
        await _git_server_like(emulator, kube)
        emulator.inject(path=r"/portforward$", status=500, message=DIAL, times=100)
        with pytest.raises(ClusterError) as e:
            async with (kube.port_forward("default", service="web", port=80) as port,
                        GiteaClient(f"http://127.0.0.1:{port}", username="admin", password="pw") as client):
                await client.wait_ready(60, interval=0.05)  # would sit here for a minute without the fix
    assert not isinstance(e.value, GitServerError)
    assert DIAL in e.value.message and "refused the port-forward to pod default/web-" in e.value.message
    assert "10250" in e.value.fix and "kubectl get nodes" in e.value.fix


async def test_a_forbidden_port_forward_names_the_missing_permission_without_retrying(emulator, kubeconfig):
    async with await connect(kubeconfig, Deadlines()) as kube:
        await _git_server_like(emulator, kube)
        emulator.inject(path=r"/portforward$", status=403, times=100,
                        message='pods "web-1" is forbidden: User "bob" cannot create resource "pods/portforward"')
        with pytest.raises(ClusterError) as e:
            async with kube.port_forward("default", service="web", port=80) as port:
                reader, _ = await asyncio.open_connection("127.0.0.1", port)
                await reader.read()  # the body waits on the connection; the refusal ends it
    assert "cannot create resource" in e.value.message and "(403)" in e.value.message
    assert "pods/portforward" in e.value.fix
    assert sum(1 for r in emulator.requests if r.path.endswith("/portforward")) == 1


async def test_a_dropped_port_forward_stream_is_not_a_refusal(emulator, kubeconfig):
    """A refusal ends the forward; a stream that breaks after opening only ends that connection."""
    async with await connect(kubeconfig, Deadlines()) as kube:
        await _git_server_like(emulator, kube)
        emulator.inject(path=r"/portforward$", drop_port_forward=True, times=1)
        async with kube.port_forward("default", service="web", port=80) as port:
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(b"x")
            await writer.drain()
            await reader.read()
            writer.close()


async def test_a_long_wait_says_what_it_waits_for_and_the_last_state_it_saw(emulator, kubeconfig):
    seen: list[str] = []
    async with await connect(kubeconfig, Deadlines()) as kube:
        emulator.hold_ready("Deployment", "default", "web")
        await kube.apply([_deployment("web")])
        with pytest.raises(WaitTimeout):
            await kube.wait_rollout("Deployment", "web", "default", timeout=0.5, on_wait=seen.append)
    assert seen and all(s.startswith("waiting for the rollout of Deployment default/web: ") for s in seen)
    assert "replicas ready" in seen[-1]
    assert len(seen) == len(set(seen))  # only changes, no line per poll


async def test_a_kube_wide_progress_sink_hears_every_wait_that_passes_none(emulator, kubeconfig):
    seen: list[str] = []
    async with await connect(kubeconfig, Deadlines()) as kube:
        kube.on_wait = seen.append
        with pytest.raises(WaitTimeout):
            await kube.wait_exists("v1", "ConfigMap", "nope", "default", timeout=0.3)
    assert seen == ["waiting for ConfigMap default/nope to exist: it does not exist yet"]


async def test_the_git_server_wait_reports_the_last_error_while_it_waits(unused_tcp_port):
    seen: list[str] = []
    async with GiteaClient(f"http://127.0.0.1:{unused_tcp_port}", username="admin", password="pw-0123456789",
                           timeout=1) as client:
        with pytest.raises(GitServerError) as e:
            await client.wait_ready(0.3, interval=0.05, on_progress=seen.append)
    assert seen and "ConnectError" in seen[0] and seen[0].startswith("waiting for Gitea at http://127.0.0.1:")
    assert "ConnectError" in e.value.message


@pytest.fixture
def unused_tcp_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# =========================================================================== kubeconfigs kubectl accepts


def _emulator_kc(emulator, path: Path, **user) -> Path:
    emulator.write_kubeconfig(path)
    doc = yaml.safe_load(path.read_text())
    doc["users"][0]["user"] = user
    path.write_text(yaml.safe_dump(doc))
    return path


async def test_a_relative_exec_command_resolves_against_the_kubeconfigs_folder(tmp_path, monkeypatch):
    """client-go tools/clientcmd/loader.go (GetAuthInfoFileReferences): a command with a path separator
    is a file reference, resolved against the folder of the kubeconfig that names it."""
    from seedbed_lab.emulator import Emulator

    (tmp_path / "conf" / "bin").mkdir(parents=True)
    plugin(tmp_path / "conf" / "bin", credential(TOKEN))
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    with Emulator(token=TOKEN) as emu:
        path = _emulator_kc(emu, tmp_path / "conf" / "kubeconfig", **exec_user("./bin/plugin"))
        async with await connect(path) as kube:
            assert await kube.get("v1", "Namespace", "default") is not None


async def test_a_bare_exec_command_is_looked_up_in_path_not_in_the_kubeconfigs_folder(tmp_path, monkeypatch):
    from seedbed_lab.emulator import Emulator

    plugin(tmp_path, "echo wrong >&2; exit 3", name="kube-login")  # beside the kubeconfig: not used
    bindir = tmp_path / "bin"
    bindir.mkdir()
    plugin(bindir, credential(TOKEN), name="kube-login")
    monkeypatch.setenv("PATH", f"{bindir}{os.pathsep}{os.environ['PATH']}")
    with Emulator(token=TOKEN) as emu:
        async with await connect(_emulator_kc(emu, tmp_path / "kc", **exec_user("kube-login"))) as kube:
            assert await kube.get("v1", "Namespace", "default") is not None


def _tls_kc(emu, path: Path, server_name: str) -> Path:
    emu.write_kubeconfig(path)
    doc = yaml.safe_load(path.read_text())
    doc["clusters"][0]["cluster"]["server"] = f"https://127.0.0.2:{emu.port}"  # not a name in its certificate
    doc["clusters"][0]["cluster"]["tls-server-name"] = server_name
    path.write_text(yaml.safe_dump(doc))
    return path


async def test_tls_server_name_is_the_name_the_servers_certificate_is_checked_against(tmp_path):
    from seedbed_lab.emulator import Emulator

    with Emulator(tls=True, host="127.0.0.2") as emu:
        async with await connect(_tls_kc(emu, tmp_path / "kc", "localhost")) as kube:
            assert await kube.get("v1", "Namespace", "default") is not None
        async with await connect(_tls_kc(emu, tmp_path / "kc2", "api.elsewhere.example")) as kube:
            with pytest.raises(ClusterError) as e:
                await kube.get("v1", "Namespace", "default")
    assert "TLS verification" in e.value.message and "tls-server-name" in e.value.fix


async def test_an_empty_entry_in_KUBECONFIG_is_skipped_as_kubectl_does(emulator, kubeconfig, monkeypatch):
    monkeypatch.setenv("KUBECONFIG", f"{os.pathsep}{kubeconfig}{os.pathsep}")
    async with await Kube.connect(ClusterConfig(), deadlines=FAST) as kube:
        assert await kube.get("v1", "Namespace", "default") is not None


async def test_KUBECONFIG_files_merge_with_the_first_to_name_a_context_winning(emulator, kubeconfig, tmp_path,
                                                                                monkeypatch):
    first = yaml.safe_load(kubeconfig.read_text())
    first["current-context"] = "lab"
    first["contexts"][0]["name"] = "lab"
    (tmp_path / "a").write_text(yaml.safe_dump(first))
    hostile_kc(tmp_path / "b", "http://127.0.0.1:9", context="lab")  # same names, a closed port: shadowed
    monkeypatch.setenv("KUBECONFIG", f"{tmp_path / 'missing'}{os.pathsep}{tmp_path / 'a'}{os.pathsep}{tmp_path / 'b'}")
    async with await Kube.connect(ClusterConfig(), deadlines=FAST) as kube:
        assert kube.target.server == emulator.url
        assert await kube.get("v1", "Namespace", "default") is not None


@pytest.mark.parametrize("flag", ["--kubeconfig", "--context"])
def test_an_empty_kubeconfig_or_context_flag_is_an_error_not_another_cluster(flag, tmp_path, capsys, monkeypatch,
                                                                             emulator, kubeconfig):
    from conftest import run_cli

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("KUBECONFIG", str(kubeconfig))  # the cluster seedbed must not silently fall back to
    (tmp_path / "seedbed.yaml").write_text("cluster:\n  name: homelab\n")
    code, _, err = run_cli(capsys, flag, "", "status")
    assert code != 0
    assert f"{flag} was given an empty value" in err and "fix:" in err
    assert "Traceback" not in err
    assert emulator.requests == []


@pytest.mark.parametrize("text, needle", [
    ("a: &a [x, x, x, x, x, x, x, x, x]\n" + "".join(
        f"{c}: &{c} [*{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}]\n"
        for p, c in zip("abcdefgh", "bcdefghi", strict=True)), "aliases"),
    ("clusters: " + "[" * 200 + "]" * 200 + "\n", "nested"),
    ("clusters: [unclosed\n\t- x", "line 2"),
    ("\xff\xfe not text", "cannot be read"),
])
def test_a_hostile_kubeconfig_is_a_clean_error_naming_the_file(tmp_path, text, needle):
    path = tmp_path / "kc"
    path.write_bytes(text.encode("latin-1"))
    with pytest.raises(ConfigError) as e:
        asyncio.run(connect(path))
    assert str(path) in e.value.message and needle in e.value.message


def test_a_kubeconfig_that_is_a_fifo_is_refused_not_waited_on(tmp_path):
    path = tmp_path / "kc"
    os.mkfifo(path)
    with pytest.raises(ConfigError) as e:
        asyncio.run(connect(path))
    assert "cannot be read" in e.value.message and "FIFO" in e.value.message.upper()


def test_a_ca_file_that_is_a_fifo_is_refused_not_waited_on(tmp_path):
    os.mkfifo(tmp_path / "ca.crt")
    path = hostile_kc(tmp_path / "kc", "https://127.0.0.1:9", cluster={"certificate-authority": "ca.crt"})
    with pytest.raises(ConfigError) as e:
        asyncio.run(connect(path))
    assert "TLS material" in e.value.message and str(tmp_path / "ca.crt") in e.value.message


# =========================================================================== credentials never shown


async def test_a_static_token_with_a_trailing_newline_works(tmp_path):
    from seedbed_lab.emulator import Emulator

    with Emulator(token=TOKEN) as emu:
        async with await connect(_emulator_kc(emu, tmp_path / "kc", token=TOKEN + "\n")) as kube:
            assert await kube.get("v1", "Namespace", "default") is not None


async def test_a_token_file_with_a_trailing_newline_works(tmp_path):
    from seedbed_lab.emulator import Emulator

    (tmp_path / "token").write_text(TOKEN + "\r\n")
    with Emulator(token=TOKEN) as emu:
        async with await connect(_emulator_kc(emu, tmp_path / "kc", tokenFile="token")) as kube:
            assert await kube.get("v1", "Namespace", "default") is not None


async def test_an_exec_plugin_token_with_a_newline_works(tmp_path):
    from seedbed_lab.emulator import Emulator

    cmd = plugin(tmp_path, credential(TOKEN + "\n"))
    with Emulator(token=TOKEN) as emu:
        async with await connect(_emulator_kc(emu, tmp_path / "kc", **exec_user(str(cmd)))) as kube:
            assert await kube.get("v1", "Namespace", "default") is not None


@pytest.mark.parametrize("where", ["token", "tokenFile", "exec"])
def test_a_token_with_a_line_break_inside_is_refused_without_showing_it(tmp_path, where):
    bad = "first-half-0123456789\nsecond-half-0123456789"
    if where == "token":
        user = {"token": bad}
    elif where == "tokenFile":
        (tmp_path / "token").write_text(bad)
        user = {"tokenFile": str(tmp_path / "token")}
    else:
        user = exec_user(str(plugin(tmp_path, credential(bad))))

    async def go() -> None:
        async with (HostileServer(lambda *_: asyncio.sleep(0, answer(200, {}))) as srv,
                    await connect(hostile_kc(tmp_path / "kc", srv.url, user=user)) as kube):
            await kube.request("GET", "/version")

    with pytest.raises(SeedbedError) as e:
        asyncio.run(go())
    assert "line break" in e.value.message
    assert "first-half" not in shown(e.value) and "second-half" not in shown(e.value)


async def test_a_403_body_repeating_the_token_is_not_printed_as_is(tmp_path):
    async def script(method, path, headers):
        return answer(403, {"kind": "Status", "code": 403, "reason": "Forbidden",
                            "message": f"user with token {headers['authorization']} cannot list namespaces; "
                                       f"raw={TOKEN}"})

    async with (HostileServer(script) as srv,
                await connect(hostile_kc(tmp_path / "kc", srv.url, user={"token": TOKEN})) as kube):
        with pytest.raises(ClusterError) as e:
            await kube.request("GET", "/api/v1/namespaces")
    assert "permission denied" in e.value.message
    assert TOKEN not in shown(e.value)


async def test_a_failing_exec_plugin_that_prints_its_secret_does_not_show_it(tmp_path):
    cmd = plugin(tmp_path, "echo \"login failed for client secret $CLIENT_SECRET\" >&2; exit 1")
    user = {"exec": {"apiVersion": "client.authentication.k8s.io/v1", "command": str(cmd),
                     "env": [{"name": "CLIENT_SECRET", "value": "client-secret-0123456789"}]}}
    async with (HostileServer(lambda *_: asyncio.sleep(0, answer(200, {}))) as srv,
                await connect(hostile_kc(tmp_path / "kc", srv.url, user=user)) as kube):
        with pytest.raises(ClusterError) as e:
            await kube.request("GET", "/version")
    assert "exit 1" in e.value.message and "client-secret-0123456789" not in shown(e.value)


# =========================================================================== API answers are hostile


async def _answer_with(tmp_path, body, content_type="application/json", call=None):
    async def script(method, path, headers):
        return answer(200, body, content_type)

    async with HostileServer(script) as srv, await connect(hostile_kc(tmp_path / "kc", srv.url)) as kube:
        with pytest.raises(ClusterError) as e:
            await (call or (lambda k: k.get("v1", "Namespace", "default")))(kube)
    assert "Traceback" not in shown(e.value)
    return e.value


async def test_an_html_page_where_the_api_should_answer_is_a_clear_error(tmp_path):
    e = await _answer_with(tmp_path, "<html><body>Welcome to nginx!</body></html>", "text/html")
    assert "GET /api/v1 is text/html, not JSON" in e.message and "Welcome to nginx" in e.message
    assert "is the Kubernetes API server" in e.fix


async def test_a_json_list_where_an_object_belongs_is_a_clear_error(tmp_path):
    e = await _answer_with(tmp_path, [1, 2, 3])
    assert "GET /api/v1 is a JSON list, not an object" in e.message


async def test_a_body_that_is_not_json_is_a_clear_error(tmp_path):
    e = await _answer_with(tmp_path, b"\x00\xffgarbage")
    assert "not valid JSON" in e.message and "GET /api/v1" in e.message


async def test_the_version_endpoint_answering_a_list_is_a_clear_error(tmp_path):
    e = await _answer_with(tmp_path, ["v1.31"], call=lambda k: k.request("GET", "/version"))
    assert "GET /version" in e.message


async def test_discovery_entries_without_kind_are_a_clear_error(tmp_path):
    e = await _answer_with(tmp_path, {"kind": "APIResourceList", "resources": [{"name": "pods"}]})
    assert "discovery at /api/v1: resource 'pods' has no kind" in e.message


async def test_discovery_entries_that_are_not_objects_are_a_clear_error(tmp_path):
    e = await _answer_with(tmp_path, {"kind": "APIResourceList", "resources": ["pods", 7]})
    assert "discovery at /api/v1: an entry has no name" in e.message


async def test_a_list_whose_items_are_not_objects_is_a_clear_error(tmp_path):
    async def script(method, path, headers):
        if path == "/api/v1":
            return answer(200, {"resources": [{"name": "pods", "kind": "Pod", "namespaced": True}]})
        return answer(200, {"kind": "PodList", "items": ["a", "b"]})

    async with HostileServer(script) as srv, await connect(hostile_kc(tmp_path / "kc", srv.url)) as kube:
        with pytest.raises(ClusterError) as e:
            await kube.list("v1", "Pod", "default")
    assert "GET /api/v1/namespaces/default/pods is not a Pod list" in e.value.message


async def test_a_watch_that_sends_garbage_is_a_clear_error(tmp_path):
    async def script(method, path, headers):
        if path == "/api/v1":
            return answer(200, {"resources": [{"name": "pods", "kind": "Pod", "namespaced": True}]})
        return answer(200, b'{"type": "ADDED", "object": []}\n')

    async with HostileServer(script) as srv, await connect(hostile_kc(tmp_path / "kc", srv.url)) as kube:
        with pytest.raises(ClusterError) as e:
            async for _ in kube.watch("v1", "Pod", "default"):
                pass
    assert "the watch of /api/v1/namespaces/default/pods sent something that is not a watch event" in e.value.message


# =========================================================================== structure


def test_kube_satisfies_the_kube_client_protocol_that_the_rest_of_seedbed_types_against():
    assert "KubeClient" in kube_pkg.__all__
    kube = Kube.__new__(Kube)
    kube.target, kube.stats = None, None  # instance attributes the Protocol names
    assert isinstance(kube, KubeClient)


def test_the_kube_helpers_import_no_private_name_from_the_client():
    src = Path(kube_pkg.__file__).parent
    for name in ("wait.py", "apply.py", "portforward.py"):
        text = (src / name).read_text()
        assert "from .client import" not in text.replace("    from .client import Kube", ""), name
