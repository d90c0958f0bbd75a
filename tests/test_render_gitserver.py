"""render/gitserver and render/helmrelease: seedbed's own Git-server objects and the HelmRelease,
and what the pinned chart makes of the HelmRelease's values (rendered by the lab's helm-controller
from the real chart files, Gitea chart 12.4.0 and Forgejo chart 15.0.3), schema-checked for
Kubernetes 1.37."""

from __future__ import annotations

import base64
import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest

from seedbed.config import Config, from_mapping
from seedbed.errors import ConfigError
from seedbed.render import gitserver, helmrelease
from seedbed.sshkeys import generate_ed25519
from seedbed_lab.emulator.helm_controller import CHART_DIRS, Chart, release_name, release_namespace

KUBERNETES = "1.37"
PASSWORD = "Zq8-vT3#pL0w!sNe9xR2yKb7"  # a stand-in for the generated password
HOST_KEY = generate_ed25519("gitea-ssh.gitea")
SERVER_KEYS = gitserver.generate_server_keys()


def render(cfg: Config | None = None, **kw: Any) -> list[dict[str, Any]]:
    return gitserver.render_git_server(cfg or Config(), admin_password=kw.get("password", PASSWORD),
                                       host_key=kw.get("host_key", HOST_KEY), server_keys=SERVER_KEYS)


def release(cfg: Config | None = None) -> dict[str, Any]:
    return one(helmrelease.objects(cfg or Config()), "HelmRelease")


def chart_objects(upstream: Any, hr: dict[str, Any]) -> list[dict[str, Any]]:
    """What the pinned chart renders for this HelmRelease (the lab's helm-controller)."""
    spec = hr["spec"]["chart"]["spec"]
    chart = Chart(upstream(CHART_DIRS[(spec["chart"], spec["version"])]))
    return chart.render(release_name(hr), release_namespace(hr), hr["spec"].get("values") or {})


def by_kind(objs: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [o for o in objs if o["kind"] == kind]


def one(objs: list[dict[str, Any]], kind: str, name: str | None = None) -> dict[str, Any]:
    found = [o for o in by_kind(objs, kind) if name is None or o["metadata"]["name"] == name]
    assert len(found) == 1, (kind, name, found)
    return found[0]


def env_of(container: dict[str, Any]) -> dict[str, Any]:
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in container["env"]}


# --------------------------------------------------------------------------- seedbed's own objects


def test_seedbed_keeps_only_the_namespace_claim_and_secrets() -> None:
    objs = render()
    assert [(o["kind"], o["metadata"]["name"]) for o in objs] == [
        ("Namespace", "gitea"),
        ("PersistentVolumeClaim", "gitea-shared-storage"),
        ("Secret", "gitea-admin"),
        ("Secret", "gitea-ssh-host-key"),
        ("Secret", "gitea-server-keys"),
    ]
    for o in objs:
        assert o["metadata"]["labels"]["app.kubernetes.io/managed-by"] == "seedbed"
        assert not o["metadata"].get("annotations")  # nothing marks them as Helm's
    assert json.loads(json.dumps(objs)) == objs


@pytest.mark.parametrize("flavor", ["gitea", "forgejo"])
def test_every_object_is_valid_for_kubernetes_1_37(upstream: Any, flavor: str) -> None:
    cfg = from_mapping({"gitServer": {"flavor": flavor}})
    for obj in render(cfg) + [o for o in chart_objects(upstream, release(cfg)) if o["kind"] != "Secret"]:
        assert kubernetes_validate.validate(obj, KUBERNETES, strict=True) == KUBERNETES, obj["kind"]


def test_schema_validation_catches_mistakes() -> None:
    pvc = one(render(), "PersistentVolumeClaim")
    pvc["spec"]["accesModes"] = ["ReadWriteOnce"]
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(pvc, KUBERNETES, strict=True)


def test_pvc() -> None:
    pvc = one(render(from_mapping({"gitServer": {"pvcName": "data", "storageSize": "20Gi"}})), "PersistentVolumeClaim")
    assert pvc["metadata"]["name"] == "data"
    assert pvc["spec"] == {"accessModes": ["ReadWriteOnce"], "storageClassName": "longhorn",
                           "resources": {"requests": {"storage": "20Gi"}}}


def test_admin_password_only_in_the_secret() -> None:
    objs = render() + helmrelease.objects(Config())
    encoded = base64.b64encode(PASSWORD.encode()).decode()
    admin = one(objs, "Secret", "gitea-admin")
    assert admin["data"] == {"username": base64.b64encode(b"seedbed-admin").decode(), "password": encoded}
    others = json.dumps([o for o in objs if o is not admin])
    assert PASSWORD not in others and encoded not in others
    assert PASSWORD not in json.dumps(admin)


def test_secrets_stay_out_of_the_committed_file() -> None:
    text = helmrelease.repo_file(Config())
    for secret in (PASSWORD, HOST_KEY.private_openssh.splitlines()[1], *SERVER_KEYS.values()):
        assert secret not in text


def test_host_private_key_only_in_its_secret() -> None:
    objs = render()
    body = HOST_KEY.private_openssh.splitlines()[1]
    holder = one(objs, "Secret", "gitea-ssh-host-key")
    assert body not in json.dumps([o for o in objs if o is not holder])
    assert base64.b64decode(holder["data"]["ssh_host_ed25519_key.pub"]).decode() == HOST_KEY.public_openssh + "\n"


def test_redact() -> None:
    red = gitserver.redact(render())
    text = json.dumps(red)
    for secret in (PASSWORD, HOST_KEY.private_openssh.splitlines()[1], *SERVER_KEYS.values()):
        assert secret not in text
    assert one(red, "Secret", "gitea-server-keys")["data"]["secret-key"] == "<redacted>"


def test_render_is_deterministic() -> None:
    assert render() == render()
    assert helmrelease.repo_file(Config()) == helmrelease.repo_file(Config())


def test_server_keys_are_fresh_and_in_the_form_gitea_reads() -> None:
    a, b = gitserver.generate_server_keys(), gitserver.generate_server_keys()
    assert set(a) == set(gitserver.SERVER_KEYS) and all(a[k] != b[k] for k in a)
    for key in ("jwt-secret", "lfs-jwt-secret"):  # 32 bytes, unpadded base64url (gitea generate secret JWT_SECRET)
        assert len(base64.urlsafe_b64decode(a[key] + "=")) == 32


# --------------------------------------------------------------------------- what the chart makes of the values


def test_the_http_service_gets_a_cluster_ip_not_the_charts_headless_default(upstream: Any) -> None:
    """Gitea chart 12.4.0 values.yaml: service.http.clusterIP: None; http-svc.yaml writes it when set."""
    objs = chart_objects(upstream, release())
    http, ssh = one(objs, "Service", "gitea-http"), one(objs, "Service", "gitea-ssh")
    assert "clusterIP" not in http["spec"] and "clusterIP" not in ssh["spec"]  # the API server allocates one
    assert http["spec"]["ports"] == [{"name": "http", "port": 3000, "targetPort": 3000}]
    assert ssh["spec"]["ports"] == [{"name": "ssh", "port": 22, "targetPort": 2222, "protocol": "TCP"}]
    bare = dict(release(), spec={**release()["spec"], "values": {}})
    assert one(chart_objects(upstream, bare), "Service", "gitea-http")["spec"]["clusterIP"] == "None"


def test_the_git_server_is_never_rolled_with_two_pods_on_one_volume(upstream: Any) -> None:
    """Both charts default to RollingUpdate with maxSurge 100%."""
    for flavor in ("gitea", "forgejo"):
        dep = one(chart_objects(upstream, release(from_mapping({"gitServer": {"flavor": flavor}}))), "Deployment")
        assert dep["spec"]["strategy"] == {"type": "Recreate"}
        assert dep["spec"]["replicas"] == 1


def test_the_chart_mounts_seedbeds_claim_and_never_creates_one(upstream: Any) -> None:
    cfg = from_mapping({"gitServer": {"pvcName": "data"}})
    objs = chart_objects(upstream, release(cfg))
    assert not by_kind(objs, "PersistentVolumeClaim")  # deleting the release cannot delete the data
    volumes = one(objs, "Deployment")["spec"]["template"]["spec"]["volumes"]
    assert {"name": "data", "persistentVolumeClaim": {"claimName": "data"}} in volumes


def test_the_pinned_host_key_is_mounted_and_named_in_the_config(upstream: Any) -> None:
    objs = chart_objects(upstream, release())
    pod = one(objs, "Deployment")["spec"]["template"]["spec"]
    assert {"name": "ssh-host-key", "secret": {"secretName": "gitea-ssh-host-key", "defaultMode": 0o440}} \
        in pod["volumes"]
    mount = next(m for m in pod["containers"][0]["volumeMounts"] if m["name"] == "ssh-host-key")
    assert mount == {"name": "ssh-host-key", "mountPath": gitserver.HOST_KEY_DIR, "readOnly": True}
    server = one(objs, "Secret", "gitea-inline-config")["stringData"]["server"].splitlines()
    assert f"SSH_SERVER_HOST_KEYS={gitserver.HOST_KEY_PATH}" in server
    assert "SSH_LISTEN_PORT=2222" in server and "START_SSH_SERVER=true" in server


def test_the_admin_comes_from_seedbeds_secret_not_the_charts_published_password(upstream: Any) -> None:
    objs = chart_objects(upstream, release())
    init = {c["name"]: c for c in one(objs, "Deployment")["spec"]["template"]["spec"]["initContainers"]}
    env = env_of(init["configure-gitea"])
    assert env["GITEA_ADMIN_USERNAME"] == {"secretKeyRef": {"key": "username", "name": "gitea-admin"}}
    assert env["GITEA_ADMIN_PASSWORD"] == {"secretKeyRef": {"key": "password", "name": "gitea-admin"}}
    assert "r8sA8CPHD9!bt6d" not in json.dumps(objs)  # Gitea chart 12.4.0 values.yaml gitea.admin.password


def test_the_server_keys_come_from_a_generated_secret(upstream: Any) -> None:
    init = {c["name"]: c for c in one(chart_objects(upstream, release()), "Deployment")
            ["spec"]["template"]["spec"]["initContainers"]}
    env = env_of(init["init-app-ini"])  # environment-to-ini writes them into app.ini
    for key, var in gitserver.SERVER_KEYS.items():
        assert env[var] == {"secretKeyRef": {"name": gitserver.SERVER_KEYS_SECRET, "key": key}}


def test_sqlite_stays_and_no_database_or_cache_subchart_starts() -> None:
    values = release()["spec"]["values"]
    for sub in ("postgresql-ha", "postgresql", "valkey-cluster", "valkey"):  # Gitea 12.4.0 enables two of them
        assert values[sub] == {"enabled": False}
    assert values["gitea"]["config"]["database"]["DB_TYPE"] == "sqlite3"


def test_the_image_is_the_running_servers_not_the_charts_older_app_version(upstream: Any) -> None:
    dep = one(chart_objects(upstream, release(from_mapping({"gitServer": {"version": "1.27.1"}}))), "Deployment")
    assert dep["spec"]["template"]["spec"]["containers"][0]["image"] == "docker.gitea.com/gitea:1.27.1-rootless"
    fj = one(chart_objects(upstream, release(from_mapping({"gitServer": {"flavor": "forgejo"}}))), "Deployment")
    assert fj["spec"]["template"]["spec"]["containers"][0]["image"] == gitserver.image(from_mapping({"gitServer": {"flavor": "forgejo"}}))


@pytest.mark.parametrize(("flavor", "name"), [("gitea", "gitea"), ("forgejo", "forgejo")])
def test_the_selector_is_the_charts_and_the_release_name_is_pinned(upstream: Any, flavor: str, name: str) -> None:
    """The selector's name label is the chart's (forgejo for Forgejo); its instance is the release name,
    pinned with spec.releaseName so a targetNamespace cannot turn it into gitea-gitea."""
    cfg = from_mapping({"gitServer": {"flavor": flavor}})
    hr = release(cfg)
    assert hr["spec"]["releaseName"] == "gitea"
    moved = {**hr, "metadata": {**hr["metadata"], "namespace": "flux-system"},
             "spec": {**hr["spec"], "targetNamespace": "gitea"}}
    for r in (hr, moved):
        dep = one(chart_objects(upstream, r), "Deployment")
        assert dep["metadata"]["name"] == "gitea" and dep["metadata"]["namespace"] == "gitea"
        assert dep["spec"]["selector"] == {"matchLabels": helmrelease.selector_labels(cfg)}
        assert helmrelease.selector_labels(cfg) == {"app.kubernetes.io/name": name, "app.kubernetes.io/instance": "gitea"}
    unpinned = {**moved, "spec": {k: v for k, v in moved["spec"].items() if k != "releaseName"}}
    assert release_name(unpinned) == "gitea-gitea"


def test_a_failed_upgrade_rolls_back_on_its_own() -> None:
    spec = release()["spec"]
    assert spec["install"]["remediation"]["retries"] > 0
    assert spec["upgrade"]["remediation"] == {"retries": 3, "remediateLastFailure": True, "strategy": "rollback"}


def test_the_committed_file_is_what_seedbed_applies() -> None:
    import yaml

    docs = list(yaml.safe_load_all(helmrelease.repo_file(Config())))
    assert docs == helmrelease.objects(Config())
    assert [d["kind"] for d in docs] == ["HelmRepository", "HelmRelease"]


# --------------------------------------------------------------------------- what later values must keep


def test_the_bootstrap_values_keep_every_invariant(upstream: Any) -> None:
    from seedbed_lab.emulator.helm_controller import coalesce

    for flavor in ("gitea", "forgejo"):
        cfg = from_mapping({"gitServer": {"flavor": flavor}})
        hr = release(cfg)
        chart = Chart(upstream(CHART_DIRS[(flavor, helmrelease.CHARTS[flavor].version)]))
        assert helmrelease.check_values(cfg, hr, coalesce(chart.defaults, hr["spec"]["values"])) == []


@pytest.mark.parametrize(("change", "needle"), [
    ({"strategy": {"type": "RollingUpdate"}}, "strategy.type"),
    ({"service": {"http": {"clusterIP": "None"}}}, "service.http.clusterIP"),
    ({"persistence": {"create": True}}, "persistence.create"),
    ({"persistence": {"claimName": "other"}}, "persistence.claimName"),
    ({"gitea": {"admin": {"existingSecret": None}}}, "gitea.admin.existingSecret"),
    ({"gitea": {"additionalConfigFromEnvs": []}}, "SECRET_KEY"),
    ({"postgresql-ha": {"enabled": True}}, "postgresql-ha"),
    ({"extraVolumes": []}, "extraVolumes"),
])
def test_check_values_names_each_broken_invariant(upstream: Any, change: dict[str, Any], needle: str) -> None:
    from seedbed_lab.emulator.helm_controller import coalesce

    cfg = Config()
    hr = release(cfg)
    chart = Chart(upstream(CHART_DIRS[("gitea", "12.4.0")]))
    merged = coalesce(chart.defaults, coalesce(hr["spec"]["values"], change))
    problems = helmrelease.check_values(cfg, hr, merged)
    assert any(needle in p for p in problems), problems


def test_check_values_sees_a_target_namespace_change_the_release_name() -> None:
    cfg = Config()
    hr = release(cfg)
    moved = {**hr, "spec": {**{k: v for k, v in hr["spec"].items() if k != "releaseName"}, "targetNamespace": "gitea"}}
    assert any("gitea-gitea" in p for p in helmrelease.check_values(cfg, moved, hr["spec"]["values"]))


# --------------------------------------------------------------------------- flavours and helpers


def test_service_names_must_be_what_the_chart_can_make() -> None:
    with pytest.raises(ConfigError, match="httpService") as e:
        helmrelease.objects(from_mapping({"gitServer": {"httpService": "web", "sshService": "shell"}}))
    assert e.value.fix
    assert from_mapping({"gitServer": {"httpService": "git-http", "sshService": "git-ssh"}}).git_server.fullname == "git"


def test_image() -> None:
    assert gitserver.image(Config()) == "docker.gitea.com/gitea:1.27-rootless"
    assert gitserver.image(from_mapping({"gitServer": {"version": "1.27.1"}})) == "docker.gitea.com/gitea:1.27.1-rootless"
    assert gitserver.image(from_mapping({"gitServer": {"version": "1.27.1-rootless"}})) == "docker.gitea.com/gitea:1.27.1-rootless"
    assert gitserver.image(from_mapping({"gitServer": {"image": "registry.local/gitea:x"}})) == "registry.local/gitea:x"
    for bad in ("v1.27", "1.27 ", "", "a/b"):
        with pytest.raises(ConfigError, match=r"gitServer\.version"):
            gitserver.image(from_mapping({"gitServer": {"version": bad}}))


def test_helpers() -> None:
    cfg = Config()
    assert gitserver.ssh_host(cfg) == "gitea-ssh.gitea.svc.cluster.local"
    assert gitserver.clone_url_ssh(cfg) == "ssh://git@gitea-ssh.gitea.svc.cluster.local/homelab/gitops.git"
    assert gitserver.labels(cfg)["app.kubernetes.io/managed-by"] == "seedbed"
    kind, b64, _ = HOST_KEY.public_openssh.split()
    assert gitserver.known_hosts(cfg, HOST_KEY.public_openssh) == (
        f"gitea-ssh.gitea.svc.cluster.local,gitea-ssh.gitea.svc,gitea-ssh.gitea {kind} {b64}\n")


@pytest.mark.skipif(shutil.which("ssh-keygen") is None, reason="ssh-keygen not installed")
def test_known_hosts_found_by_ssh_keygen(tmp_path: Path) -> None:
    path = tmp_path / "known_hosts"
    path.write_text(gitserver.known_hosts(Config(), HOST_KEY.public_openssh))
    for host in ("gitea-ssh.gitea.svc.cluster.local", "gitea-ssh.gitea"):
        out = subprocess.run(["ssh-keygen", "-F", host, "-f", str(path)], capture_output=True, text=True, check=True)
        assert HOST_KEY.public_openssh.split()[1] in out.stdout


@pytest.mark.parametrize(
    ("git_server", "password", "needle"),
    [
        ({"adminUser": "admin"}, PASSWORD, "adminUser"),
        ({"adminUser": "bad name"}, PASSWORD, "adminUser"),
        ({"adminUser": "trailing-"}, PASSWORD, "adminUser"),
        ({"adminUser": "a..b"}, PASSWORD, "adminUser"),
        ({"storageSize": "lots"}, PASSWORD, "storageSize"),
        ({"storageClass": "Long Horn"}, PASSWORD, "storageClass"),
        ({"adminSecret": "Bad_Name"}, PASSWORD, "adminSecret"),
        ({"adminSecret": "same", "hostKeySecret": "same"}, PASSWORD, "same Secret"),
        ({"httpService": "same", "sshService": "same"}, PASSWORD, "same Service"),
        ({}, "x7#Q", "password"),
        ({}, "long enough\nbut two lines", "password"),
    ],
)
def test_bad_input(git_server: dict[str, str], password: str, needle: str) -> None:
    with pytest.raises(ConfigError, match=needle) as e:
        render(from_mapping({"gitServer": git_server}), password=password)
    assert e.value.fix
    assert password not in str(e.value) + str(e.value.fix)


def test_the_chart_version_is_the_pinned_one_unless_the_config_chooses_another() -> None:
    from seedbed.config import GitServerChartConfig, GitServerConfig

    def version(cfg: Config) -> str:
        hr = next(o for o in helmrelease.objects(cfg) if o["kind"] == "HelmRelease")
        return hr["spec"]["chart"]["spec"]["version"]

    assert version(Config()) == helmrelease.CHARTS["gitea"].version == "12.4.0"
    assert version(Config(git_server=GitServerConfig(flavor="forgejo"))) == "15.0.3"
    chosen = Config(git_server=GitServerConfig(chart=GitServerChartConfig(version="12.5.0")))
    assert version(chosen) == "12.5.0" and helmrelease.chart(chosen).name == "gitea"


def test_a_chart_version_range_in_the_config_is_refused(tmp_path: Path) -> None:
    from seedbed import config

    path = tmp_path / "seedbed.yaml"
    path.write_text("gitServer:\n  chart:\n    version: '>=12.0.0'\n")
    with pytest.raises(ConfigError, match=r"not an exact chart version like 12\.4\.0"):
        config.load(path)
