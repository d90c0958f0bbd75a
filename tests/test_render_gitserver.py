"""render/gitserver: the bootstrap Gitea/Forgejo objects, schema-checked for Kubernetes 1.37."""

from __future__ import annotations

import base64
import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest

from seedbed.config import Config
from seedbed.errors import ConfigError
from seedbed.render import gitserver
from seedbed.sshkeys import generate_ed25519

KUBERNETES = "1.37"
PASSWORD = "Zq8-vT3#pL0w!sNe9xR2yKb7"  # a stand-in for the generated password
HOST_KEY = generate_ed25519("gitea-ssh.gitea")


def render(cfg: Config | None = None, **kw: Any) -> list[dict[str, Any]]:
    return gitserver.render_git_server(cfg or Config(), admin_password=kw.get("password", PASSWORD),
                                       host_key=kw.get("host_key", HOST_KEY))


def by_kind(objs: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [o for o in objs if o["kind"] == kind]


def one(objs: list[dict[str, Any]], kind: str, name: str | None = None) -> dict[str, Any]:
    found = [o for o in by_kind(objs, kind) if name is None or o["metadata"]["name"] == name]
    assert len(found) == 1, (kind, name, found)
    return found[0]


def deployment(objs: list[dict[str, Any]]) -> dict[str, Any]:
    return one(objs, "Deployment")


def env_of(container: dict[str, Any]) -> dict[str, Any]:
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in container["env"]}


# --------------------------------------------------------------------------- shape


def test_objects_and_names() -> None:
    objs = render()
    assert [(o["kind"], o["metadata"]["name"]) for o in objs] == [
        ("Namespace", "gitea"),
        ("PersistentVolumeClaim", "gitea-shared-storage"),
        ("Secret", "gitea-admin"),
        ("Secret", "gitea-ssh-host-key"),
        ("Deployment", "gitea"),
        ("Service", "gitea-http"),
        ("Service", "gitea-ssh"),
    ]
    for o in objs:
        if o["kind"] != "Namespace":
            assert o["metadata"]["namespace"] == "gitea"
        # What the Gitea chart would render (release gitea) is marked for Helm to adopt in place;
        # the rest (namespace, claim, Secrets) the chart never renders, so seedbed keeps it.
        helm = o["kind"] in ("Deployment", "Service")
        assert o["metadata"]["labels"] == {
            "app.kubernetes.io/name": "gitea",
            "app.kubernetes.io/instance": "gitea",
            "app.kubernetes.io/managed-by": "Helm" if helm else "seedbed",
        }
        if helm:
            assert o["metadata"]["annotations"] == {"meta.helm.sh/release-name": "gitea",
                                                    "meta.helm.sh/release-namespace": "gitea"}
    # Plain JSON: what the API server would take as is.
    assert json.loads(json.dumps(objs)) == objs


@pytest.mark.parametrize("flavor", ["gitea", "forgejo"])
def test_schema_valid_for_kubernetes_1_37(flavor: str) -> None:
    objs = render(Config(git_server={"flavor": flavor}))
    for obj in objs:
        # strict: unknown fields are errors too. validate() returns the schema version it used.
        assert kubernetes_validate.validate(obj, KUBERNETES, strict=True) == KUBERNETES, obj["kind"]


def test_schema_validation_catches_mistakes() -> None:
    """The validator really checks: a typo'd field and a wrong type are rejected."""
    dep = deployment(render())
    dep["spec"]["strategy"]["tpye"] = "Recreate"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(dep, KUBERNETES, strict=True)
    svc = one(render(), "Service", "gitea-ssh")
    svc["spec"]["ports"][0]["port"] = "twenty-two"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(svc, KUBERNETES, strict=True)


def test_pvc() -> None:
    pvc = one(render(Config(git_server={"pvcName": "data", "storageSize": "20Gi"})), "PersistentVolumeClaim")
    assert pvc["metadata"]["name"] == "data"
    assert pvc["spec"] == {"accessModes": ["ReadWriteOnce"], "storageClassName": "longhorn",
                           "resources": {"requests": {"storage": "20Gi"}}}
    claim = deployment(render(Config(git_server={"pvcName": "data"})))["spec"]["template"]["spec"]["volumes"][0]
    assert claim == {"name": "data", "persistentVolumeClaim": {"claimName": "data"}}


def test_services() -> None:
    objs = render()
    http, ssh = one(objs, "Service", "gitea-http"), one(objs, "Service", "gitea-ssh")
    assert http["spec"]["ports"] == [{"name": "http", "port": 3000, "targetPort": 3000, "protocol": "TCP"}]
    assert ssh["spec"]["ports"] == [{"name": "ssh", "port": 22, "targetPort": 2222, "protocol": "TCP"}]
    selector = deployment(objs)["spec"]["selector"]["matchLabels"]
    assert http["spec"]["selector"] == ssh["spec"]["selector"] == selector
    pod_labels = deployment(objs)["spec"]["template"]["metadata"]["labels"]
    assert selector.items() <= pod_labels.items()
    ports = {p["name"]: p["containerPort"] for p in deployment(objs)["spec"]["template"]["spec"]["containers"][0]["ports"]}
    assert ports == {"http": 3000, "ssh": 2222}


def test_deployment_basics() -> None:
    dep = deployment(render())
    spec = dep["spec"]
    assert spec["replicas"] == 1
    assert spec["strategy"] == {"type": "Recreate"}
    pod = spec["template"]["spec"]
    assert pod["securityContext"]["fsGroup"] == 1000
    assert pod["securityContext"]["runAsUser"] == 1000
    (init,) = pod["initContainers"]
    (server,) = pod["containers"]
    assert init["image"] == server["image"] == "docker.gitea.com/gitea:1.27-rootless"
    assert server["readinessProbe"]["httpGet"] == {"path": "/api/healthz", "port": "http"}
    assert server["resources"]["requests"]
    mounts = {m["mountPath"]: m["name"] for m in server["volumeMounts"]}
    assert mounts["/data"] == "data"
    assert mounts[gitserver.HOST_KEY_DIR] == "ssh-host-key"
    key_volume = next(v for v in pod["volumes"] if v["name"] == "ssh-host-key")
    assert key_volume["secret"]["secretName"] == "gitea-ssh-host-key"
    # Owner root, group fsGroup: group-read is what lets uid 1000 read it; nobody else can.
    assert key_volume["secret"]["defaultMode"] == 0o440


EXPECTED_ENV = {
    "GITEA_WORK_DIR": "/data",
    "GITEA_CUSTOM": "/data/gitea",
    "GITEA_APP_INI": "/data/gitea/conf/app.ini",
    "GITEA_TEMP": "/tmp/gitea",
    "TMPDIR": "/tmp/gitea",
    "HOME": "/data/gitea/git",
    "GITEA__server__APP_DATA_PATH": "/data",
    "GITEA__repository__ROOT": "/data/git/gitea-repositories",
    "GITEA__database__DB_TYPE": "sqlite3",
    "GITEA__database__PATH": "/data/gitea.db",
    "GITEA__security__INSTALL_LOCK": "true",
    "GITEA__service__DISABLE_REGISTRATION": "true",
    "GITEA__server__PROTOCOL": "http",
    "GITEA__server__HTTP_PORT": "3000",
    "GITEA__server__DOMAIN": "gitea-http.gitea.svc.cluster.local",
    "GITEA__server__ROOT_URL": "http://gitea-http.gitea.svc.cluster.local:3000/",
    "GITEA__server__START_SSH_SERVER": "true",
    "GITEA__server__DISABLE_SSH": "false",
    "GITEA__server__SSH_DOMAIN": "gitea-ssh.gitea.svc.cluster.local",
    "GITEA__server__SSH_PORT": "22",
    "GITEA__server__SSH_LISTEN_PORT": "2222",
    "GITEA__server__BUILTIN_SSH_SERVER_USER": "git",
    "GITEA__server__SSH_SERVER_HOST_KEYS": "/etc/gitea-ssh-host-key/ssh_host_ed25519_key",
}


def test_every_env_var() -> None:
    pod = deployment(render())["spec"]["template"]["spec"]
    (server,) = pod["containers"]
    (init,) = pod["initContainers"]
    assert env_of(server) == EXPECTED_ENV
    assert env_of(init) == {
        **EXPECTED_ENV,
        "ADMIN_USER": "seedbed-admin",
        "ADMIN_EMAIL": "seedbed-admin@seedbed.invalid",
        "ADMIN_PASSWORD": {"secretKeyRef": {"name": "gitea-admin", "key": "password"}},
    }
    # Every GITEA__section__KEY has exactly that shape (environment-to-ini splits on "__").
    for name in EXPECTED_ENV:
        if name.startswith("GITEA__"):
            assert len(name.split("__")) == 3, name


def test_host_key_path_matches_mount_and_secret() -> None:
    objs = render()
    pod = deployment(objs)["spec"]["template"]["spec"]
    path = env_of(pod["containers"][0])["GITEA__server__SSH_SERVER_HOST_KEYS"]
    directory, _, filename = path.rpartition("/")
    mount = next(m for m in pod["containers"][0]["volumeMounts"] if m["mountPath"] == directory)
    assert mount["readOnly"] is True
    secret = one(objs, "Secret", "gitea-ssh-host-key")
    assert base64.b64decode(secret["data"][filename]).decode() == HOST_KEY.private_openssh
    assert base64.b64decode(secret["data"][filename + ".pub"]).decode() == HOST_KEY.public_openssh + "\n"


def test_names_follow_config() -> None:
    cfg = Config(git_server={"namespace": "git", "httpService": "web", "sshService": "shell"},
                 repo={"owner": "me", "name": "fleet"})
    env = env_of(deployment(render(cfg))["spec"]["template"]["spec"]["containers"][0])
    assert env["GITEA__server__ROOT_URL"] == "http://web.git.svc.cluster.local:3000/"
    assert env["GITEA__server__SSH_DOMAIN"] == "shell.git.svc.cluster.local"
    assert gitserver.ssh_host(cfg) == "shell.git.svc.cluster.local"
    assert gitserver.clone_url_ssh(cfg) == "ssh://git@shell.git.svc.cluster.local/me/fleet.git"
    assert {o["metadata"].get("namespace", o["metadata"]["name"]) for o in render(cfg)} == {"git"}


# --------------------------------------------------------------------------- secrets


def test_admin_password_only_in_the_secret() -> None:
    objs = render()
    encoded = base64.b64encode(PASSWORD.encode()).decode()
    admin = one(objs, "Secret", "gitea-admin")
    assert admin["data"] == {"username": base64.b64encode(b"seedbed-admin").decode(), "password": encoded}
    assert "stringData" not in admin
    others = [o for o in objs if o is not admin]
    text = json.dumps(others)
    assert PASSWORD not in text
    assert encoded not in text
    assert PASSWORD not in json.dumps(admin)  # only base64 in the Secret itself


def test_host_private_key_only_in_its_secret() -> None:
    objs = render()
    body = HOST_KEY.private_openssh.splitlines()[1]
    holder = one(objs, "Secret", "gitea-ssh-host-key")
    assert body not in json.dumps([o for o in objs if o is not holder])


def test_redact() -> None:
    objs = render()
    red = gitserver.redact(objs)
    assert PASSWORD not in json.dumps(red)
    assert base64.b64encode(PASSWORD.encode()).decode() not in json.dumps(red)
    assert HOST_KEY.private_openssh.splitlines()[1] not in json.dumps(red)
    assert one(red, "Secret", "gitea-admin")["data"] == {"username": "<redacted>", "password": "<redacted>"}
    # The originals are untouched and everything else is the same.
    assert one(objs, "Secret", "gitea-admin")["data"]["password"] != "<redacted>"
    assert [o for o in red if o["kind"] != "Secret"] == [o for o in objs if o["kind"] != "Secret"]


def test_secret_change_restarts_the_pod() -> None:
    def checksum(**kw: Any) -> str:
        return deployment(render(**kw))["spec"]["template"]["metadata"]["annotations"]["checksum/secrets"]

    assert checksum() == checksum()  # deterministic: a re-run changes nothing
    assert checksum(password=PASSWORD + "x") != checksum()
    assert checksum(host_key=generate_ed25519("other")) != checksum()


def test_render_is_deterministic() -> None:
    assert render() == render()


# --------------------------------------------------------------------------- admin creation


def test_admin_script() -> None:
    init = deployment(render())["spec"]["template"]["spec"]["initContainers"][0]
    # Only args: the image entrypoint still writes app.ini before running them.
    assert "command" not in init
    assert init["args"][:2] == ["/bin/sh", "-c"]
    script = init["args"][2]
    assert PASSWORD not in script
    assert "gitea migrate" in script
    assert "gitea admin user create --admin" in script
    assert '--password "$ADMIN_PASSWORD"' in script
    assert "--must-change-password=false" in script
    assert "admin user change-password" in script


@pytest.mark.skipif(shutil.which("sh") is None, reason="no POSIX shell")
@pytest.mark.parametrize("exists", [False, True])
def test_admin_script_runs(tmp_path: Path, exists: bool) -> None:
    """Run the init script against a fake `gitea` binary that records its arguments."""
    log = tmp_path / "calls"
    fake = tmp_path / "gitea"
    listing = "ID   Username        Email   IsActive  IsAdmin\n"
    if exists:
        listing += "1    seedbed-admin   a@b.c   true      true\n"
    fake.write_text(
        "#!/bin/sh\n"
        f'printf "%s\\n" "$*" >> {log}\n'
        'if [ "$1 $2 $3" = "admin user list" ]; then printf "%s" "$LISTING"; fi\n'
        'if [ "$4" = "--help" ]; then echo "--must-change-password  (default: true)"; fi\n'
    )
    fake.chmod(0o755)
    init = deployment(render())["spec"]["template"]["spec"]["initContainers"][0]
    env = {"PATH": f"{tmp_path}:/usr/bin:/bin", "LISTING": listing, "ADMIN_USER": "seedbed-admin",
           "ADMIN_EMAIL": "seedbed-admin@seedbed.invalid", "ADMIN_PASSWORD": "p a$s'w\"d"}
    subprocess.run(init["args"], env=env, check=True)
    calls = log.read_text().splitlines()
    assert calls[0] == "migrate"
    if exists:
        assert calls[-1] == ("admin user change-password --username seedbed-admin --password p a$s'w\"d "
                             "--must-change-password=false")
    else:
        assert calls[-1] == ("admin user create --admin --username seedbed-admin --password p a$s'w\"d "
                             "--email seedbed-admin@seedbed.invalid --must-change-password=false")


# --------------------------------------------------------------------------- flavours and helpers


def test_forgejo() -> None:
    cfg = Config(git_server={"flavor": "forgejo"})
    assert gitserver.image(cfg) == "codeberg.org/forgejo/forgejo:16-rootless"
    dep = deployment(render(cfg))
    pod = dep["spec"]["template"]["spec"]
    assert pod["containers"][0]["image"] == "codeberg.org/forgejo/forgejo:16-rootless"
    script = pod["initContainers"][0]["args"][2]
    assert "forgejo migrate" in script and "forgejo admin user create" in script
    assert "gitea " not in script
    # Same names, same API, same env contract.
    assert env_of(pod["containers"][0]) == EXPECTED_ENV
    assert dep["metadata"]["name"] == gitserver.DEPLOYMENT_NAME


def test_image() -> None:
    assert gitserver.image(Config()) == "docker.gitea.com/gitea:1.27-rootless"
    assert gitserver.image(Config(git_server={"version": "1.27.1"})) == "docker.gitea.com/gitea:1.27.1-rootless"
    assert gitserver.image(Config(git_server={"version": "1.27.1-rootless"})) == "docker.gitea.com/gitea:1.27.1-rootless"
    assert gitserver.image(Config(git_server={"image": "registry.local/gitea:x"})) == "registry.local/gitea:x"
    for bad in ("v1.27", "1.27 ", "", "a/b"):
        with pytest.raises(ConfigError, match=r"gitServer\.version"):
            gitserver.image(Config(git_server={"version": bad}))


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
        render(Config(git_server=git_server), password=password)
    assert e.value.fix
    assert password not in str(e.value) + str(e.value.fix)
