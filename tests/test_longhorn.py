"""Longhorn: rendering against the real release manifest, the checks on existing clusters, and the step."""

from __future__ import annotations

import base64
import copy
import io
import json
from pathlib import Path
from typing import Any

import pytest

from seedbed import images, yamlutil
from seedbed.config import (
    BackupCredentials,
    Config,
    LonghornConfig,
    check_data_path,
    from_mapping,
    json_schema,
    parse,
)
from seedbed.errors import ConfigError, ManifestError, Refused, SeedbedError, WaitTimeout
from seedbed.render.longhorn import (
    REDACTED,
    check_existing,
    daemonset_version,
    default_storage_classes,
    node_disk_paths,
    parse_credentials_file,
    raise_refusals,
    render_longhorn,
    set_top_level_keys,
)

UPSTREAM = "longhorn-v1.12.1.yaml"
OLD_LAYOUT = Path(__file__).parent / "fixtures" / "longhorn-old-layout.yaml"
# A value no real key looks like, so "does it appear anywhere" checks are meaningful.
SECRET = "s3cr3t-VALUE-9f2b7c1e"


@pytest.fixture
def manifest(upstream) -> str:
    return upstream(UPSTREAM).read_text(encoding="utf-8")


def find(objs: list[dict[str, Any]], kind: str, name: str) -> dict[str, Any]:
    [obj] = [o for o in objs if o["kind"] == kind and o["metadata"]["name"] == name]
    return obj


def key(obj: dict[str, Any]) -> tuple[str, str, str | None]:
    return obj["kind"], obj["metadata"]["name"], obj["metadata"].get("namespace")


def unchanged_except(original: list[dict[str, Any]], rendered: list[dict[str, Any]],
                     changed: set[tuple[str, str]]) -> None:
    """Every upstream document not named in ``changed`` comes out exactly as it went in, in order."""
    upstream_keys = [key(o) for o in original]
    assert [key(o) for o in rendered[: len(original)]] == upstream_keys
    for before, after in zip(original, rendered, strict=False):
        if (before["kind"], before["metadata"]["name"]) not in changed:
            assert after == before, f"{key(before)} changed"


def settings(objs: list[dict[str, Any]], cm: str = "longhorn-default-setting",
             doc: str = "default-setting.yaml") -> dict[str, Any]:
    return yamlutil.load(find(objs, "ConfigMap", cm)["data"][doc]) or {}


# --------------------------------------------------------------------------- render: real manifest


def test_data_path_set_and_every_other_setting_kept(manifest: str) -> None:
    original = yamlutil.load_all(manifest)
    objs = render_longhorn(LonghornConfig(data_path="/srv/longhorn"), manifest)

    before_text = find(original, "ConfigMap", "longhorn-default-setting")["data"]["default-setting.yaml"]
    after_text = find(objs, "ConfigMap", "longhorn-default-setting")["data"]["default-setting.yaml"]
    before = yamlutil.load(before_text)
    after = yamlutil.load(after_text)
    assert before, "the upstream ConfigMap has settings of its own"
    assert after == {**before, "default-data-path": "/srv/longhorn"}
    assert list(after)[: len(before)] == list(before)  # upstream's order kept, ours appended
    # Upstream's lines are kept byte for byte (quoting and all), not merely re-dumped.
    assert after_text.startswith(before_text)
    assert not after_text.endswith("\n")  # still a `|-` block

    # With the default StorageClass settings, nothing but the one ConfigMap differs.
    unchanged_except(original, objs, {("ConfigMap", "longhorn-default-setting")})
    assert len(objs) == len(original) == 51


def test_default_version_is_the_real_manifest(manifest: str) -> None:
    objs = render_longhorn(LonghornConfig(), manifest)
    assert daemonset_version(find(objs, "DaemonSet", "longhorn-manager")) == LonghornConfig().version == "v1.12.1"
    assert settings(objs)["default-data-path"] == "/var/lib/longhorn"


def test_backup_target_goes_to_default_resource(manifest: str) -> None:
    original = yamlutil.load_all(manifest)
    cfg = LonghornConfig(backup_target="s3://backups@us-east-1/longhorn",
                         backup_credentials=BackupCredentials(from_env={"AWS_SECRET_ACCESS_KEY": "X"}))
    objs = render_longhorn(cfg, manifest, backup_credentials={"AWS_ACCESS_KEY_ID": "AKIA1",
                                                              "AWS_SECRET_ACCESS_KEY": SECRET})

    assert settings(objs, "longhorn-default-resource", "default-resource.yaml") == {
        "backup-target": "s3://backups@us-east-1/longhorn",
        "backup-target-credential-secret": "longhorn-backup-credentials",
    }
    # v1.8+ layout: the backup target is not an ordinary setting any more.
    assert "backup-target" not in settings(objs)
    secret = find(objs, "Secret", "longhorn-backup-credentials")
    assert secret["metadata"]["namespace"] == "longhorn-system"
    assert base64.b64decode(secret["data"]["AWS_SECRET_ACCESS_KEY"]).decode() == SECRET
    assert SECRET not in json.dumps(secret)  # stored base64-encoded, as Kubernetes expects
    unchanged_except(original, objs, {("ConfigMap", "longhorn-default-setting"),
                                      ("ConfigMap", "longhorn-default-resource")})
    assert len(objs) == len(original) + 1


def test_nfs_target_without_credentials(manifest: str) -> None:
    objs = render_longhorn(LonghornConfig(backup_target="nfs://nas.lan:/export/longhorn"), manifest)
    assert settings(objs, "longhorn-default-resource", "default-resource.yaml") == {
        "backup-target": "nfs://nas.lan:/export/longhorn"}
    assert not [o for o in objs if o["kind"] == "Secret"]


def test_storage_class_replicas_and_default(manifest: str) -> None:
    original = yamlutil.load_all(manifest)
    objs = render_longhorn(LonghornConfig(replica_count=1, default_storage_class=False), manifest)
    load = lambda objs: yamlutil.load(  # noqa: E731
        find(objs, "ConfigMap", "longhorn-storageclass")["data"]["storageclass.yaml"])
    before, after = load(original), load(objs)
    expected = copy.deepcopy(before)
    expected["metadata"]["annotations"]["storageclass.kubernetes.io/is-default-class"] = "false"
    expected["parameters"]["numberOfReplicas"] = "1"
    assert after == expected
    assert list(after) == list(before) and list(after["parameters"]) == list(before["parameters"])
    unchanged_except(original, objs, {("ConfigMap", "longhorn-default-setting"),
                                      ("ConfigMap", "longhorn-storageclass")})


def test_redacted_rendering_has_no_values(manifest: str) -> None:
    cfg = LonghornConfig(backup_target="s3://b@r/", backup_credentials=BackupCredentials(from_file="creds.env"))
    objs = render_longhorn(cfg, manifest, backup_credentials={"AWS_SECRET_ACCESS_KEY": SECRET}, redact=True)
    assert find(objs, "Secret", "longhorn-backup-credentials")["data"] == {"AWS_SECRET_ACCESS_KEY": REDACTED}
    assert SECRET not in json.dumps(objs)


# --------------------------------------------------------------------------- render: refusals


@pytest.mark.parametrize("path", ["var/lib/longhorn", "./data", "~/longhorn", "", "/", "/data/../etc", "/data\n"])
def test_data_path_must_be_absolute(path: str) -> None:
    # Checked where every config value is (config.py), so render_longhorn can trust it.
    with pytest.raises(ConfigError) as e:
        check_data_path(path)
    assert e.value.fix and "absolute path" in e.value.fix
    with pytest.raises(ConfigError):
        parse(f"longhorn:\n  dataPath: {json.dumps(path)}\n")


def test_relative_data_path_in_config_file() -> None:
    with pytest.raises(ConfigError) as e:
        parse("longhorn:\n  dataPath: data/longhorn\n")
    assert "seedbed.yaml:2: longhorn.dataPath" in e.value.message and "absolute" in e.value.message
    assert e.value.fix


def test_manifest_of_another_version(manifest: str) -> None:
    with pytest.raises(ManifestError) as e:
        render_longhorn(LonghornConfig(version="v1.11.0"), manifest)
    assert "v1.12.1" in e.value.message and e.value.fix


def test_not_a_longhorn_manifest() -> None:
    with pytest.raises(ManifestError) as e:
        render_longhorn(LonghornConfig(), "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: x\n")
    assert "longhorn-default-setting" in e.value.message and e.value.fix


def test_credentials_need_a_target() -> None:
    with pytest.raises(ConfigError) as e:
        Config(longhorn=LonghornConfig(backup_credentials=BackupCredentials(from_env={"A": "B"})))
    assert "backupTarget" in e.value.message and e.value.fix


def test_bad_secret_key(manifest: str) -> None:
    cfg = LonghornConfig(backup_target="s3://b@r/", backup_credentials=BackupCredentials(from_env={"A": "B"}))
    with pytest.raises(ConfigError) as e:
        render_longhorn(cfg, manifest, backup_credentials={"bad key": SECRET})
    assert SECRET not in str(e.value) and e.value.fix


# --------------------------------------------------------------------------- render: older layout


def test_old_layout_uses_setting_keys() -> None:
    text = OLD_LAYOUT.read_text(encoding="utf-8")
    original = yamlutil.load_all(text)
    assert not [o for o in original if o["metadata"]["name"] == "longhorn-default-resource"]
    cfg = LonghornConfig(version="v1.5.3", data_path="/mnt/longhorn", backup_target="nfs://nas:/export/lh",
                         backup_credentials=BackupCredentials(from_env={"NFS_OPTS": "X"}))
    objs = render_longhorn(cfg, text, backup_credentials={"NFS_OPTS": "vers=4.1"})

    before_text = find(original, "ConfigMap", "longhorn-default-setting")["data"]["default-setting.yaml"]
    after_text = find(objs, "ConfigMap", "longhorn-default-setting")["data"]["default-setting.yaml"]
    before, after = yamlutil.load(before_text), yamlutil.load(after_text)
    assert after == {**before, "backup-target": "nfs://nas:/export/lh",
                     "backup-target-credential-secret": "longhorn-backup-credentials",
                     "default-data-path": "/mnt/longhorn"}
    assert list(after) == list(before)  # every key stays where upstream listed it
    # Lines of settings we did not touch are kept verbatim, the comment too.
    untouched = [ln for ln in before_text.splitlines()
                 if not ln.startswith(("backup-target:", "backup-target-credential-secret:", "default-data-path:"))]
    assert [ln for ln in after_text.splitlines() if ln in untouched] == untouched
    assert not [o for o in objs if o["metadata"]["name"] == "longhorn-default-resource"]
    unchanged_except(original, objs, {("ConfigMap", "longhorn-default-setting")})
    assert find(objs, "Secret", "longhorn-backup-credentials")


# --------------------------------------------------------------------------- embedded YAML editing


def test_set_keys_on_empty_and_odd_documents() -> None:
    assert set_top_level_keys("", {"a": "1"}) == "a: '1'"
    assert yamlutil.load(set_top_level_keys("{x: 1, y: 2}", {"y": 3})) == {"x": 1, "y": 3}
    text = "a: 1\nb: |\n  two\n  lines\nc: 3\nb: dup\n"
    out = set_top_level_keys(text, {"b": "new"})
    assert out == "a: 1\nb: new\nc: 3\n"
    assert set_top_level_keys("a: 1\n", {}) == "a: 1\n"


# --------------------------------------------------------------------------- credentials


def test_credentials_file_parsing() -> None:
    text = f"# comment\n\nexport AWS_ACCESS_KEY_ID=AKIA\nAWS_SECRET_ACCESS_KEY = '{SECRET}'\nAWS_ENDPOINTS=https://s3.lan:9000\n"
    assert parse_credentials_file(text, "creds.env") == {
        "AWS_ACCESS_KEY_ID": "AKIA", "AWS_SECRET_ACCESS_KEY": SECRET, "AWS_ENDPOINTS": "https://s3.lan:9000"}


def test_credentials_file_errors_never_echo_the_line() -> None:
    with pytest.raises(ConfigError) as e:
        parse_credentials_file(f"A=1\njust {SECRET} here\n", "creds.env")
    assert "creds.env:2" in e.value.message and SECRET not in e.value.message and e.value.fix
    with pytest.raises(ConfigError):
        parse_credentials_file("# only a comment\n", "creds.env")


def test_credentials_from_env_missing_variable(tmp_path: Path) -> None:
    from seedbed.steps.longhorn import load_backup_credentials

    cfg = Config(base_dir=tmp_path)
    creds = BackupCredentials(from_env={"AWS_ACCESS_KEY_ID": "LH_KEY_ID", "AWS_SECRET_ACCESS_KEY": "LH_SECRET"})
    with pytest.raises(ConfigError) as e:
        load_backup_credentials(creds, cfg, environ={"LH_KEY_ID": "AKIA"})
    assert "LH_SECRET" in e.value.message and e.value.fix
    assert load_backup_credentials(creds, cfg, environ={"LH_KEY_ID": "AKIA", "LH_SECRET": SECRET}) == {
        "AWS_ACCESS_KEY_ID": "AKIA", "AWS_SECRET_ACCESS_KEY": SECRET}


def test_credentials_from_file(tmp_path: Path) -> None:
    from seedbed.steps.longhorn import load_backup_credentials

    cfg = Config(base_dir=tmp_path)
    with pytest.raises(ConfigError) as e:
        load_backup_credentials(BackupCredentials(from_file="missing.env"), cfg)
    assert "missing.env" in e.value.message and e.value.fix
    (tmp_path / "creds.env").write_text(f"AWS_SECRET_ACCESS_KEY={SECRET}\n")
    assert load_backup_credentials(BackupCredentials(from_file="creds.env"), cfg) == {
        "AWS_SECRET_ACCESS_KEY": SECRET}


# --------------------------------------------------------------------------- existing clusters (pure)


def check(cfg: LonghornConfig | None = None, **kw: Any) -> list[Any]:
    args: dict[str, Any] = {"installed_version": None, "node_disk_paths": {}, "default_storage_classes": [],
                            "allow_upgrade": False}
    return check_existing(cfg or LonghornConfig(), **{**args, **kw})


def test_fresh_cluster_has_no_findings() -> None:
    assert check() == []
    assert check(installed_version="v1.12.1") == []


def test_other_version_installed_is_refused_without_allow_upgrade() -> None:
    findings = check(installed_version="v1.11.2")
    assert [f.refuse for f in findings] == [True]
    with pytest.raises(Refused) as e:
        raise_refusals(findings)
    assert "v1.11.2" in e.value.message and "already installed" in e.value.message
    assert "--allow-upgrade" in (e.value.fix or "")
    assert check(installed_version="v1.11.2", allow_upgrade=True) == []


def test_downgrade_is_refused_even_with_allow_upgrade() -> None:
    findings = check(installed_version="v1.13.0", allow_upgrade=True)
    assert [f.refuse for f in findings] == [True] and "downgrade" in findings[0].message


def test_skipping_a_minor_release_warns() -> None:
    [finding] = check(installed_version="v1.10.3", allow_upgrade=True)
    assert not finding.refuse and "minor" in finding.message


def test_disks_at_another_path_warn() -> None:
    [finding] = check(LonghornConfig(data_path="/srv/longhorn"),
                      node_disk_paths={"n1": ["/var/lib/longhorn/"], "n2": [], "n3": ["/srv/longhorn/"]})
    assert not finding.refuse
    assert "n1" in finding.message and "/var/lib/longhorn/" in finding.message
    assert "only to nodes without disks" in finding.message
    raise_refusals([finding])  # a warning does not stop anything


def test_second_default_storage_class_is_refused() -> None:
    findings = check(default_storage_classes=["local-path"])
    with pytest.raises(Refused) as e:
        raise_refusals(findings)
    assert "local-path" in e.value.message and "defaultStorageClass: false" in (e.value.fix or "")
    assert check(LonghornConfig(default_storage_class=False), default_storage_classes=["local-path"]) == []


def test_readers_of_cluster_objects() -> None:
    classes = [
        {"metadata": {"name": "local-path", "annotations": {"storageclass.kubernetes.io/is-default-class": "true"}}},
        {"metadata": {"name": "old", "annotations": {"storageclass.beta.kubernetes.io/is-default-class": "true"}}},
        {"metadata": {"name": "longhorn", "annotations": {"storageclass.kubernetes.io/is-default-class": "true"}}},
        {"metadata": {"name": "nfs", "annotations": {"storageclass.kubernetes.io/is-default-class": "false"}}},
        {"metadata": {"name": "plain"}},
    ]
    assert default_storage_classes(classes) == ["local-path", "old"]
    nodes = [{"metadata": {"name": "n1"}, "spec": {"disks": {"default-disk-1": {"path": "/var/lib/longhorn/"}}}},
             {"metadata": {"name": "n2"}, "spec": {}}]
    assert node_disk_paths(nodes) == {"n1": ["/var/lib/longhorn/"], "n2": []}
    assert images.parse("registry.lan:5000/longhornio/longhorn-manager:v1.9.0").tag == "v1.9.0"
    assert images.parse("registry.lan:5000/longhorn-manager@sha256:abc").tag is None
    ds = {"spec": {"template": {"spec": {"containers": [
        {"name": "longhorn-manager", "image": "longhornio/longhorn-manager:v1.9.0"}]}}}}
    assert daemonset_version(ds) == "v1.9.0"


# --------------------------------------------------------------------------- the step, against the emulator


class FixedManifests:
    """A ManifestStore stand-in serving one file, so these tests need no download or lock file."""

    def __init__(self, text: str) -> None:
        self._text = text

    def text(self, component: str, version: str) -> str:
        assert component == "longhorn"
        return self._text


def test_plan_never_shows_credentials(manifest: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from seedbed.steps.base import Options
    from seedbed.steps.longhorn import LonghornStep

    monkeypatch.setenv("LH_SECRET", SECRET)
    (tmp_path / "creds.env").write_text(f"AWS_SECRET_ACCESS_KEY={SECRET}\n")
    for creds in ({"fromEnv": {"AWS_SECRET_ACCESS_KEY": "LH_SECRET"}}, {"fromFile": "creds.env"}):
        cfg = from_mapping({"longhorn": {"backupTarget": "s3://b@r/", "backupCredentials": creds}},
                           base_dir=tmp_path)
        planned = LonghornStep().plan(cfg, FixedManifests(manifest), Options())  # type: ignore[arg-type]
        shown = json.dumps({"objects": planned.objects, "inputs": planned.inputs, "waits": planned.waits,
                            "notes": planned.notes})
        assert SECRET not in shown
        assert base64.b64encode(SECRET.encode()).decode() not in shown
        assert "longhorn-manager" in " ".join(planned.waits)


def _context(cfg: Config, kube: Any, manifest: str, options: Any, out: Any) -> Any:
    from seedbed.gitserver import GitServer
    from seedbed.steps.base import Context

    return Context(cfg=cfg, kube=kube, options=options, manifests=FixedManifests(manifest),  # type: ignore[arg-type]
                   out=out, gitserver=GitServer(cfg, kube, out))


async def _run(ctx: Any) -> Any:
    """Plan the Longhorn step as the runner does, then run that plan."""
    from seedbed.steps.longhorn import LonghornStep

    step = LonghornStep()
    return await step.run(ctx, step.plan(ctx.cfg, ctx.manifests, ctx.options))


async def _run_step(kubeconfig: Path, manifest: str, lh: dict[str, Any], *, options: Any = None,
                    tmp_path: Path) -> tuple[Any, str]:
    from seedbed.kube import Kube
    from seedbed.output import Output
    from seedbed.steps.base import Options

    cfg = from_mapping({"cluster": {"kubeconfig": str(kubeconfig)}, "longhorn": lh}, base_dir=tmp_path)
    stream = io.StringIO()
    async with await Kube.connect(cfg.cluster, base_dir=tmp_path) as kube:
        ctx = _context(cfg, kube, manifest, options or Options(), Output(stream=stream, color=False))
        try:
            outcome = await _run(ctx)
        finally:
            ctx.out.close()
    return outcome, stream.getvalue()


def simulate_manager(emulator: Any) -> None:
    """Do longhorn-manager's part: create the StorageClass from the longhorn-storageclass ConfigMap.

    The emulator runs no Longhorn controllers, so a hook plays the one this step waits on.
    """

    def create_storage_class(emu: Any, cm: dict[str, Any]) -> None:
        if cm["metadata"]["name"] == "longhorn-storageclass":
            emu.put(yamlutil.load(cm["data"]["storageclass.yaml"]))

    emulator.on_apply("ConfigMap", create_storage_class)


async def test_step_applies_and_waits(emulator: Any, kubeconfig: Path, manifest: str, tmp_path: Path,
                                      monkeypatch: pytest.MonkeyPatch) -> None:
    simulate_manager(emulator)
    monkeypatch.setenv("LH_SECRET", SECRET)
    lh = {"dataPath": "/srv/longhorn", "backupTarget": "s3://b@us-east-1/",
          "backupCredentials": {"fromEnv": {"AWS_SECRET_ACCESS_KEY": "LH_SECRET"}}}
    outcome, output = await _run_step(kubeconfig, manifest, lh, tmp_path=tmp_path)
    assert outcome.changed and "v1.12.1" in outcome.summary
    assert SECRET not in output

    cm = emulator.get("v1", "ConfigMap", "longhorn-default-setting", namespace="longhorn-system")
    assert yamlutil.load(cm["data"]["default-setting.yaml"])["default-data-path"] == "/srv/longhorn"
    secret = emulator.get("v1", "Secret", "longhorn-backup-credentials", namespace="longhorn-system")
    assert base64.b64decode(secret["data"]["AWS_SECRET_ACCESS_KEY"]).decode() == SECRET
    assert emulator.get("apps/v1", "DaemonSet", "longhorn-manager", namespace="longhorn-system")
    assert emulator.get("apiextensions.k8s.io/v1", "CustomResourceDefinition", "nodes.longhorn.io")
    sc = emulator.get("storage.k8s.io/v1", "StorageClass", "longhorn")
    assert sc["metadata"]["annotations"]["storageclass.kubernetes.io/is-default-class"] == "true"

    # A second run over the same cluster is allowed (same version) and verify() sees it in place.
    outcome, _ = await _run_step(kubeconfig, manifest, lh, tmp_path=tmp_path)
    assert "v1.12.1" in outcome.summary


async def test_step_refuses_other_installed_version(emulator: Any, kubeconfig: Path, manifest: str,
                                                    tmp_path: Path) -> None:
    from seedbed.steps.base import Options

    old = find(yamlutil.load_all(manifest), "DaemonSet", "longhorn-manager")
    old["metadata"]["labels"]["app.kubernetes.io/version"] = "v1.11.1"
    emulator.put({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "longhorn-system"}})
    emulator.put(old)
    with pytest.raises(Refused) as e:
        await _run_step(kubeconfig, manifest, {}, tmp_path=tmp_path)
    assert "v1.11.1" in e.value.message and "--allow-upgrade" in (e.value.fix or "")
    # Nothing was applied: the default-setting ConfigMap is still absent.
    assert emulator.get("v1", "ConfigMap", "longhorn-default-setting", namespace="longhorn-system") is None

    simulate_manager(emulator)
    outcome, output = await _run_step(kubeconfig, manifest, {}, options=Options(allow_upgrade=True),
                                      tmp_path=tmp_path)
    assert outcome.summary.startswith("upgraded to v1.12.1")
    assert "v1.11.1 is installed; upgrading to v1.12.1" in output


async def test_step_refuses_second_default_storage_class(emulator: Any, kubeconfig: Path, manifest: str,
                                                         tmp_path: Path) -> None:
    emulator.put({"apiVersion": "storage.k8s.io/v1", "kind": "StorageClass", "provisioner": "rancher.io/local-path",
                  "metadata": {"name": "local-path",
                               "annotations": {"storageclass.kubernetes.io/is-default-class": "true"}}})
    with pytest.raises(Refused) as e:
        await _run_step(kubeconfig, manifest, {}, tmp_path=tmp_path)
    assert "local-path" in e.value.message and e.value.fix

    simulate_manager(emulator)
    outcome, _ = await _run_step(kubeconfig, manifest, {"defaultStorageClass": False}, tmp_path=tmp_path)
    assert outcome.changed


async def test_step_warns_about_disks_at_another_path(emulator: Any, kubeconfig: Path, manifest: str,
                                                      tmp_path: Path) -> None:
    simulate_manager(emulator)
    await _run_step(kubeconfig, manifest, {}, tmp_path=tmp_path)  # installs the CRDs
    emulator.put({"apiVersion": "longhorn.io/v1beta2", "kind": "Node",
                  "metadata": {"name": "node-1", "namespace": "longhorn-system"},
                  "spec": {"disks": {"default-disk-1": {"path": "/var/lib/longhorn/", "allowScheduling": True}}}})
    _, output = await _run_step(kubeconfig, manifest, {"dataPath": "/srv/longhorn"}, tmp_path=tmp_path)
    assert "node-1" in output and "only to nodes without disks" in output


async def test_step_names_the_component_that_is_not_ready(emulator: Any, kubeconfig: Path, manifest: str,
                                                          tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    simulate_manager(emulator)
    emulator.hold_ready("DaemonSet", "longhorn-system", "longhorn-manager")
    with pytest.raises(WaitTimeout) as e:
        await _run_step(kubeconfig, manifest, {"readyTimeout": 2.0}, tmp_path=tmp_path)
    assert "longhorn-manager" in e.value.message
    assert "longhorn-ui" not in e.value.message  # only what is not ready is named
    assert "open-iscsi" in (e.value.fix or "")


async def test_step_says_storage_class_was_never_created(emulator: Any, kubeconfig: Path, manifest: str,
                                                         tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(SeedbedError) as e:
        await _run_step(kubeconfig, manifest, {"readyTimeout": 2.0}, tmp_path=tmp_path)
    assert "StorageClass longhorn" in e.value.message and "longhorn-storageclass" in e.value.message


async def test_verify_notices_rotated_credentials(emulator: Any, kubeconfig: Path, manifest: str,
                                                  tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from seedbed.kube import Kube
    from seedbed.output import Output
    from seedbed.steps.base import Options
    from seedbed.steps.longhorn import LonghornStep

    simulate_manager(emulator)
    monkeypatch.setenv("LH_SECRET", SECRET)
    lh = {"backupTarget": "s3://b@r/", "backupCredentials": {"fromEnv": {"AWS_SECRET_ACCESS_KEY": "LH_SECRET"}}}
    cfg = from_mapping({"cluster": {"kubeconfig": str(kubeconfig)}, "longhorn": lh}, base_dir=tmp_path)
    async with await Kube.connect(cfg.cluster, base_dir=tmp_path) as kube:
        ctx = _context(cfg, kube, manifest, Options(), Output(stream=io.StringIO(), color=False))
        step = LonghornStep()
        planned = step.plan(ctx.cfg, ctx.manifests, ctx.options)
        assert not await step.verify(ctx, planned)  # nothing installed yet
        await _run(ctx)
        before = kube.stats.writes
        assert await step.verify(ctx, planned)
        assert kube.stats.writes == before  # verify is read-only
        monkeypatch.setenv("LH_SECRET", SECRET + "-rotated")
        assert not await step.verify(ctx, planned)


def test_data_path_advice_is_a_bind_mount_never_a_symlink(manifest: str, tmp_path: Path) -> None:
    """Longhorn's best practices: no symlinked disk path (longhorn-manager sees the host under /host,
    where an absolute symlink does not resolve; longhorn/longhorn#1056). Every place seedbed gives the
    advice (plan note, config schema, example config) says bind mount and warns off symlinks."""
    from seedbed.example import EXAMPLE_CONFIG
    from seedbed.steps.base import Options
    from seedbed.steps.longhorn import LonghornStep

    cfg = from_mapping({}, base_dir=tmp_path)
    planned = LonghornStep().plan(cfg, FixedManifests(manifest), Options())  # type: ignore[arg-type]
    schema = json_schema()["$defs"]["LonghornConfig"]["properties"]["dataPath"]["description"]
    data_path_lines = [line for line in EXAMPLE_CONFIG.splitlines()[:20] if "symlink" in line]
    assert data_path_lines
    for advice in [*planned.notes[:1], schema, *data_path_lines]:
        assert "bind mount" in advice and "never a symlink" in advice, advice
