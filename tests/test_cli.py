"""The command line as a new user meets it: init, config, plan, --help."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from conftest import run_cli as run
from seedbed import config
from seedbed.cli import cli
from seedbed.errors import ConfigError
from seedbed.example import EXAMPLE_CONFIG


@pytest.fixture
def workdir(tmp_path, monkeypatch) -> Path:
    monkeypatch.chdir(tmp_path)
    return tmp_path


def test_init_writes_a_commented_example_that_validates(workdir, capsys):
    assert run(capsys, "init")[0] == 0
    text = (workdir / "seedbed.yaml").read_text()
    assert text == EXAMPLE_CONFIG and text.count("#") > 20
    # The schema the example's first lines point editors at is written beside it.
    assert "$schema=seedbed.schema.json" in text
    assert json.loads((workdir / "seedbed.schema.json").read_text()) == config.json_schema()
    code, _, err = run(capsys, "config", "check")
    assert code == 0 and "is valid" in err
    code, _, err = run(capsys, "init")
    assert code == 2 and "already exists" in err and "--force" in err


def test_config_schema_is_json_schema_with_the_yaml_keys(capsys):
    code, out, _ = run(capsys, "config", "schema")
    schema = json.loads(out)
    assert code == 0 and schema["$schema"].startswith("http://json-schema.org/")
    assert {"cluster", "longhorn", "gitServer", "repo", "flux", "backup", "certificates"} <= set(schema["properties"])
    assert "baseDir" not in schema["properties"]


def test_the_schema_checks_what_seedbed_checks():
    """What an editor (yaml-language-server) gets from the schema: the example is valid, typical mistakes
    are not, and the keys carry their descriptions and defaults."""
    import jsonschema

    schema = config.json_schema()
    jsonschema.Draft7Validator.check_schema(schema)
    validator = jsonschema.Draft7Validator(schema)
    assert list(validator.iter_errors(yaml.safe_load(EXAMPLE_CONFIG))) == []
    assert validator.is_valid({}) and validator.is_valid({"flux": {"sops": {"ageKeyFiles": ["k.txt"]}}})
    for bad in ({"clustr": {}}, {"cluster": {"nmae": "x"}}, {"baseDir": "/etc"}, {"source": "x"},
                {"longhorn": {"replicaCount": 0}}, {"longhorn": {"replicaCount": "3"}},
                {"longhorn": {"replicaCount": True}}, {"longhorn": None}, {"flux": {"readyTimeout": 0}},
                {"gitServer": {"flavor": "github"}}, {"backup": {"volumes": [{"namespace": "a"}]}},
                {"repo": {"authorizedKeys": "a"}}, {"certificates": {"wildcard": {"namespace": "x"}}}):
        assert not validator.is_valid(bad), bad

    def section(name: str) -> dict:
        return schema["$defs"][schema["properties"][name]["$ref"].rsplit("/", 1)[1]]

    longhorn = section("longhorn")["properties"]
    assert "bind mount" in longhorn["dataPath"]["description"]
    assert longhorn["replicaCount"]["default"] == 3 and longhorn["replicaCount"]["maximum"] == 20
    assert section("gitServer")["properties"]["version"]["default"] == config.GITEA_VERSION
    assert section("cluster")["properties"]["name"]["description"].startswith("A short name")


@pytest.mark.parametrize(("text", "line", "key"), [
    ("cluster:\n  name: lab\nlonghorn:\n  dataPath: data\n", 4, "longhorn.dataPath"),
    ("repo:\n  owner: homelab\n  nmae: gitops\n", 3, "repo.nmae"),
    ("backup:\n  volumes:\n    - namespace: a\n      claim: b\n", 4, "backup.volumes.0.claim"),
    ("flux:\n  version: 2.9.3\n", 2, "flux.version"),
])
def test_config_errors_name_the_file_line_and_key(workdir, capsys, text, line, key):
    (workdir / "seedbed.yaml").write_text(text)
    code, _, err = run(capsys, "config", "check")
    assert code == 2
    assert err.startswith("✗ error: seedbed.yaml:") and f"seedbed.yaml:{line}: {key}: " in err, err
    assert "fix:" in err and "Traceback" not in err


def test_plan_matches_the_config_and_writes_the_bundle(workdir, capsys, upstream):
    manifests = upstream("longhorn-v1.12.1.yaml").parent
    upstream("flux-gotk-components-v2.9.3.yaml")
    doc = yaml.safe_load(EXAMPLE_CONFIG)
    doc["cluster"]["name"] = "lab"
    doc["longhorn"]["dataPath"] = "/srv/longhorn"
    doc["gitServer"]["namespace"] = "git"
    doc["repo"]["owner"] = "ops"
    (workdir / "seedbed.yaml").write_text(yaml.safe_dump(doc))
    code, out, err = run(capsys, "plan", "--manifests", str(manifests), "--out", "out", "--output", "json")
    assert code == 0, err
    plan = json.loads(out)
    assert plan["cluster"] == "lab"
    # Flux's controllers first, then the Git server as a HelmRelease, then the sync (issue 11).
    assert [s["name"] for s in plan["steps"]] == ["preflight", "longhorn", "flux-components", "git-server",
                                                  "repository", "push", "cert-guard", "flux", "check-handoff"]
    assert "clusters/lab/flux-system/gotk-sync.yaml" in plan["repoFiles"]
    assert "clusters/lab/flux-system/git-server.yaml" in plan["repoFiles"]
    bundle = {p.name for p in (workdir / "out").iterdir()}
    assert {"02-longhorn.yaml", "03-flux-components.yaml", "04-git-server.yaml", "08-flux.yaml", "repo"} <= bundle
    longhorn = yaml.safe_load_all((workdir / "out" / "02-longhorn.yaml").read_text())
    settings = next(d for d in longhorn if d and d["metadata"]["name"] == "longhorn-default-setting")
    assert "default-data-path: /srv/longhorn" in settings["data"]["default-setting.yaml"]
    gitserver = list(yaml.safe_load_all((workdir / "out" / "04-git-server.yaml").read_text()))
    assert {d["metadata"].get("namespace") for d in gitserver if d["kind"] != "Namespace"} == {"git"}
    assert [d["kind"] for d in gitserver if d["kind"].startswith("Helm")] == ["HelmRepository", "HelmRelease"]
    committed = list(yaml.safe_load_all(
        (workdir / "out" / "repo" / "clusters/lab/flux-system/git-server.yaml").read_text()))
    assert committed == [d for d in gitserver if d["kind"].startswith("Helm")]
    for secret in (d for d in gitserver if d["kind"] == "Secret"):
        assert set(secret["data"].values()) == {"<redacted>"}
    sync = (workdir / "out" / "repo" / "clusters/lab/flux-system/gotk-sync.yaml").read_text()
    assert "ssh://git@gitea-ssh.git.svc.cluster.local/ops/gitops.git" in sync


def test_plan_text_lists_every_step(workdir, capsys, upstream):
    manifests = upstream("longhorn-v1.12.1.yaml").parent
    upstream("flux-gotk-components-v2.9.3.yaml")
    (workdir / "seedbed.yaml").write_text(EXAMPLE_CONFIG)
    code, out, _ = run(capsys, "plan", "--manifests", str(manifests))
    assert code == 0
    assert "Longhorn: 51 objects" in out and "Git server: 7 objects" in out and "Flux sync:" in out
    assert out.index("Flux components:") < out.index("Git server:") < out.index("Flux sync:")
    assert "git-server.yaml" in out


README = Path(__file__).resolve().parents[1] / "README.md"


def test_the_readmes_plan_excerpt_is_lines_of_a_real_plan(workdir, capsys, upstream):
    """The plan the README shows a newcomer is what `seedbed init` then `seedbed plan` print today
    (`...` stands for lines left out)."""
    manifests = upstream("longhorn-v1.12.1.yaml").parent
    upstream("flux-gotk-components-v2.9.3.yaml")
    excerpt = README.read_text().split("<!-- plan excerpt", 1)[1].split("```console\n", 1)[1].split("```", 1)[0]
    code, out, err = run(capsys, "init")
    assert code == 0, err
    printed = (out + err).splitlines()
    code, out, err = run(capsys, "plan", "--manifests", str(manifests), "--out", "out/")
    assert code == 0, err
    printed += (out + err).splitlines()
    for line in excerpt.splitlines():
        if line.strip() != "..." and not line.startswith("$ "):
            assert line in printed, line


def _commands(group=cli, prefix=()):
    import click

    for name, cmd in group.commands.items():
        if isinstance(cmd, click.Group):
            yield from _commands(cmd, (*prefix, name))
        else:
            yield (*prefix, name)


@pytest.mark.parametrize("command", list(_commands()), ids=" ".join)
def test_every_command_has_help_with_an_example(capsys, command):
    code, out, _ = run(capsys, *command, "--help")
    assert code == 0
    assert "Example" in out, f"`seedbed {' '.join(command)} --help` shows no example"


def test_every_problem_of_a_config_is_reported_at_its_line():
    """One run names every wrong key: in several sections, several in one section, unknown keys and
    wrong types and values alike (fields in their order, then the unknown keys)."""
    text = ("cluster:\n  nmae: lab\n  name: Lab\n"                      # 2, 3
            "longhorn:\n  replicaCount: '3'\n  defaultStorageClass: 1\n"  # 5, 6
            "  readyTimeout: .inf\n  dataPath: var/lib\n"                 # 7, 8
            "repo:\n  authorizedKeys: [a, 1, b, null]\n"                  # 10
            "backup:\n  volumes:\n    - namespace: a\n      claim: b\n"    # 13, 14
            "bogus: 1\n")                                                 # 15
    with pytest.raises(ConfigError) as e:
        config.parse(text)
    assert e.value.message.splitlines() == [
        "seedbed.yaml:3: cluster.name: 'Lab' is not a valid Kubernetes name (lower-case letters, digits and '-', "
        "at most 63)",
        "seedbed.yaml:2: cluster.nmae: unknown key (check the spelling; `seedbed config schema` lists the keys)",
        "seedbed.yaml:8: longhorn.dataPath: must be an absolute path (starting with '/'), not 'var/lib'",
        "seedbed.yaml:6: longhorn.defaultStorageClass: expected true or false, got an integer",
        "seedbed.yaml:5: longhorn.replicaCount: expected an integer, got a string",
        "seedbed.yaml:7: longhorn.readyTimeout: must be a finite number",
        "seedbed.yaml:10: repo.authorizedKeys.1: expected a string, got an integer (write it in quotes)",
        "seedbed.yaml:10: repo.authorizedKeys.3: expected a string, got null (an empty value)",
        "seedbed.yaml:13: backup.volumes.0.pvc: this key is required (it has no default)",
        "seedbed.yaml:14: backup.volumes.0.claim: unknown key (check the spelling; `seedbed config schema` lists "
        "the keys)",
        "seedbed.yaml:15: bogus: unknown key (check the spelling; `seedbed config schema` lists the keys)",
    ]
    assert e.value.fix and e.value.exit_code == 2


@pytest.mark.parametrize(("text", "line", "message"), [
    ("baseDir: /etc\n", 1, "baseDir: unknown key"),  # set by seedbed (the file's folder), never by the file
    ("cluster: {}\nsource: x\n", 2, "source: unknown key"),
    ("longhorn:\n  dataPath: /a\n  data_path: /b\n", 3, "longhorn.data_path: unknown key"),
    ("longhorn:\n  replicaCount: true\n", 2, "longhorn.replicaCount: expected an integer, got a boolean (true)"),
    ("longhorn:\n  replicaCount: 2.0\n", 2, "longhorn.replicaCount: expected an integer, got a number"),
    ("longhorn:\n  replicaCount: 21\n", 2, "longhorn.replicaCount: must be at most 20"),
    ("flux:\n  readyTimeout: 0\n", 2, "flux.readyTimeout: must be greater than 0"),
    ("flux:\n  readyTimeout: .nan\n", 2, "flux.readyTimeout: must be a finite number"),
    ("flux:\n  readyTimeout: 10m\n", 2, "flux.readyTimeout: expected a number, got a string"),
    ("gitServer:\n  version: 1.27\n", 2, "gitServer.version: expected a string, got a number (write it in quotes)"),
    ("gitServer:\n  flavor: github\n", 2, "gitServer.flavor: must be 'gitea' or 'forgejo'"),
    ("cluster:\n  name: lab\nlonghorn:\n", 3, "longhorn: expected a mapping of keys, got null"),
    ("longhorn:\n  backupTarget: s3://b@r/\n  backupCredentials:\n    fromFile: a\n    fromEnv: {A: B}\n", 3,
     "longhorn.backupCredentials: give fromFile or fromEnv, not both"),
    ("longhorn:\n  backupTarget: s3://b@r/\n  backupCredentials:\n    fromEnv:\n      1: B\n", 5,
     "longhorn.backupCredentials.fromEnv.1: keys must be names"),
    ("flux:\n  sops: {}\n", 2, "flux.sops: give ageKeyFiles or gpgKeyFiles"),
    ("cluster:\n  null: x\n", 2, "cluster.null: keys must be names"),
])
def test_config_problem_messages(text, line, message):
    with pytest.raises(ConfigError) as e:
        config.parse(text)
    assert e.value.message.startswith(f"seedbed.yaml:{line}: {message}"), e.value.message


def test_config_values_as_given_or_defaulted():
    assert config.parse("gitServer:\n  flavor: forgejo\n").git_server.version == config.FORGEJO_VERSION
    given = config.parse(f"gitServer:\n  flavor: forgejo\n  version: '{config.GITEA_VERSION}'\n")
    assert given.git_server.version == config.GITEA_VERSION  # written out: kept, even if it is gitea's default
    assert config.parse("").git_server.version == config.GITEA_VERSION
    timeout = config.parse("flux:\n  readyTimeout: 90\n").flux.ready_timeout
    assert timeout == 90 and isinstance(timeout, float)
    assert config.parse("longhorn:\n  backupTarget: ''\n").longhorn.backup_target is None
    # One spelling per key, the schema's: the Python attribute's name is refused, naming the key.
    with pytest.raises(ConfigError, match=r"longhorn\.data_path: unknown key: seedbed\.yaml keys are camelCase, "
                                          r"write dataPath"):
        config.parse("longhorn:\n  data_path: /srv/lh\n")
    cfg = config.parse("cluster:\n  name: lab\n", base_dir=Path("/srv"), source=Path("/srv/seedbed.yaml"))
    assert cfg.base_dir == Path("/srv") and cfg.source == Path("/srv/seedbed.yaml") and cfg.lock_file.parent == cfg.base_dir
    assert config.from_mapping({"cluster": {"name": "lab"}}) == config.Config(cluster=config.ClusterConfig(name="lab"))


def test_a_missing_config_says_how_to_make_one(workdir, capsys):
    code, _, err = run(capsys, "plan")
    assert code == 2 and "seedbed.yaml: no such file" in err and "seedbed init" in err


def test_example_config_parses_to_its_documented_defaults():
    cfg = config.parse(EXAMPLE_CONFIG)
    assert cfg.longhorn.version == "v1.12.1" and cfg.flux.version == "v2.9.3" and cfg.git_server.version == "1.27"
    assert cfg.flux_path == "clusters/homelab"


def test_the_readme_shows_the_values_check_handoff_checks():
    from seedbed.config import Config
    from seedbed.handoff import recommended_values

    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    assert recommended_values(Config()).rstrip() in readme


def test_global_flags_work_after_the_verb_as_with_kubectl(workdir, capsys):
    assert run(capsys, "init", "-c", "lab.yaml")[0] == 0
    assert (workdir / "lab.yaml").exists() and not (workdir / "seedbed.yaml").exists()
    code, _, err = run(capsys, "config", "check", "--config", "lab.yaml")
    assert code == 0 and "lab.yaml is valid" in err


@pytest.mark.parametrize("flag", ["--kubeconfig", "--context", "--config"])
@pytest.mark.parametrize("where", ["before", "after"])
def test_an_empty_flag_is_an_error_not_a_silent_fallback_to_another_cluster(workdir, capsys, flag, where):
    argv = [flag, "", "status"] if where == "before" else ["status", flag, ""]
    code, _, err = run(capsys, *argv)
    assert code == 2 and f"{flag} was given an empty value" in err and "fix:" in err and "Traceback" not in err


@pytest.mark.parametrize("shell", ["bash", "zsh", "fish"])
def test_completion_prints_a_script_for_the_shell(capsys, shell):
    code, out, _ = run(capsys, "completion", shell)
    assert code == 0 and "_SEEDBED_COMPLETE" in out


@pytest.mark.parametrize(("section", "key", "line"), [
    ("gitServer:\n  httpService: git-web\n  sshService: git-ssh\n", "gitServer.httpService", 2),
    ("gitServer:\n  adminUser: admin\n", "gitServer.adminUser", 2),
    ("gitServer:\n  storageSize: ten\n", "gitServer.storageSize", 2),
    ("certificates:\n  domain: '*.example.org'\n", "certificates.domain", 2),
    ("certificates:\n  email: not-an-address\n", "certificates.email", 2),
    ("certificates:\n  solver: dns01\n  dns01: {provider: route53, secretName: aws}\n  wildcard: {domain: co.uk}\n",
     "certificates.dns01.provider", 3),
    ("cluster:\n  name: lab\nflux:\n  interval: 1d\n", "flux.interval", 4),
    ("flux:\n  interval: 500ms\n", "flux.interval", 2),
    ("flux:\n  version: v2.9.3\n  path: ../clusters/lab\n", "flux.path", 3),
    ("flux:\n  path: /clusters/lab\n", "flux.path", 2),
    ("flux:\n  secret: default/flux-system\n", "flux.secret", 2),
    ("flux:\n  secret: flux-system/Flux_Creds\n", "flux.secret", 2),
    ("repo:\n  name: gitops\n  branch: main..old\n", "repo.branch", 3),
    ("repo:\n  branch: release.lock\n", "repo.branch", 2),
    ("gitServer:\n  version: v1.27\n", "gitServer.version", 2),
    ("longhorn:\n  backupCredentials: {fromEnv: {AWS_ACCESS_KEY_ID: KEY_ID}}\n", "longhorn.backupCredentials", 2),
    ("longhorn:\n  backupTarget: s3://b@r/\n  backupCredentials: {fromEnv: {'bad key': KEY_ID}}\n",
     "longhorn.backupCredentials.fromEnv", 3),
])
def test_config_check_refuses_what_plan_would_refuse(workdir, capsys, section, key, line):
    """All value checks live in config.py: `config check` and `plan` give the same error, with the line."""
    (workdir / "seedbed.yaml").write_text(section)
    for argv in (["config", "check"], ["plan", "--offline"]):
        code, _, err = run(capsys, *argv)
        assert code == 2 and f"seedbed.yaml:{line}: {key}" in err, (argv, err)
        assert err.count("error:") == 1 and err.count("fix:") == 1 and "Traceback" not in err, (argv, err)


def test_progress_lines_in_a_pipe_are_plain_text_and_on_a_terminal_styled():
    """Piped or redirected (CI logs, `2> log`), the ► ✔ ! lines are the text as written, markup and
    :emoji: codes included, and printing them does not load the terminal library; with --color
    they are styled."""
    code = ("import io, sys; from seedbed.output import Output; o = Output(); "
            "o.done('took [bold]x[/] :smile:'); o.activity('busy'); o.warn('w'); o.close(); "
            "print('rich' in sys.modules, file=sys.stdout)")
    env = {k: v for k, v in os.environ.items() if k not in ("FORCE_COLOR", "TTY_COMPATIBLE")}
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True)
    assert run.stderr == "✔ took [bold]x[/] :smile:\n! w\n"
    assert run.stdout.strip() == "False"

    from seedbed.output import Output

    styled = io.StringIO()
    Output(stream=styled, color=True).done("ok")
    assert "\x1b[" in styled.getvalue() and "ok" in styled.getvalue()


def test_the_seedbed_process_loads_no_http2_stack_and_still_talks_to_the_api_server(tmp_path, emulator, kubeconfig):
    """The console script's process (cli.run) never loads h2 (seedbed speaks HTTP/1.1), and its HTTP
    client still reads the cluster: `seedbed status` in a fresh process reaches the API server."""
    code = ("import sys; from seedbed import cli; cli._tune_process(); "
            "import httpx2, httpcore2; t = httpx2.AsyncHTTPTransport(); "
            "print('h2' in sys.modules and sys.modules['h2'] is not None)")
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert run.stdout.strip() == "False"
    (tmp_path / "seedbed.yaml").write_text(f"cluster:\n  kubeconfig: {kubeconfig}\n")
    status = subprocess.run([sys.executable, "-m", "seedbed", "-c", str(tmp_path / "seedbed.yaml"), "status",
                             "-o", "json"], capture_output=True, text=True, timeout=120)
    assert "Traceback" not in status.stderr
    checks = {c["component"]: c for c in json.loads(status.stdout)["components"]}
    assert checks["cluster"]["state"] == "ok", checks["cluster"]
