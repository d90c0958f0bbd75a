"""Hostile and careless inputs (issue 17): each ends in one clean message with a fix, never a hang,
a traceback or an echoed secret.

Categories: special files (FIFOs, devices) and huge files as any input; YAML bombs and deep
nesting; output paths seedbed must not write or replace; ``~nosuchuser`` paths; a private key
pasted where a path belongs; credentials in messages; manifest trust on first use.

A FIFO opened for reading blocks until a writer comes, so every FIFO case runs the CLI in a
worker thread with a deadline: a hang fails the test instead of stopping the suite.
"""

from __future__ import annotations

import json
import os
import threading
from pathlib import Path

import pytest
import yaml

from badinput_helpers import Result, assert_clean, run_cli
from seedbed import scrub
from seedbed.example import EXAMPLE_CONFIG

AGE_KEY = "AGE-SECRET-KEY-" "1" + "QYZ8R4WZ7XN2KD5JH9C3LVT6PFM0GA8SE4UWQ7RJDX2NK5ZC3HY9VL"
PEM_KEY = "-----BEGIN OPENSSH " "PRIVATE KEY-----\nb3BlbnNzaC1rZXktdjEAAAAABG5vbmUAAAAEbm9uZQ\n-----END OPENSSH " \
          "PRIVATE KEY-----"
DEADLINE = 30.0  # seconds; only reached if something hangs


@pytest.fixture
def workdir(tmp_path, monkeypatch) -> Path:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "seedbed.yaml").write_text(EXAMPLE_CONFIG)
    return tmp_path


def cli(capsys, *argv: str | Path) -> Result:
    """The CLI in a worker thread with a deadline: a FIFO read that blocks fails the test, not the suite."""
    box: dict[str, Result] = {}
    worker = threading.Thread(target=lambda: box.setdefault("r", run_cli([str(a) for a in argv], capsys)),
                              daemon=True)
    worker.start()
    worker.join(DEADLINE)
    assert not worker.is_alive(), f"seedbed {' '.join(map(str, argv))} hung"
    return box["r"]


def config_with(workdir: Path, **sections: dict) -> None:
    doc = yaml.safe_load(EXAMPLE_CONFIG)
    for key, values in sections.items():
        doc.setdefault(key, {}).update(values)
    (workdir / "seedbed.yaml").write_text(yaml.safe_dump(doc))


def fifo(path: Path) -> Path:
    os.mkfifo(path)
    return path


def sparse(path: Path, size: int) -> Path:
    with open(path, "wb") as f:
        f.truncate(size)
    return path


def no_secrets(r: Result) -> None:
    assert AGE_KEY not in r.text and "QYZ8R4WZ7XN2KD5JH9C3LVT6PFM0GA8" not in r.text
    assert "b3BlbnNzaC1rZXktdjE" not in r.text and "PRIVATE KEY" not in r.text


# --------------------------------------------------------------------------- special and huge files


def test_a_fifo_as_the_config_is_refused_without_waiting_for_a_writer(workdir, capsys):
    r = cli(capsys, "--config", fifo(workdir / "pipe.yaml"), "config", "check")
    assert_clean(r, 2, fix=True, contains=["named pipe", "not a regular file"])


def test_dev_zero_as_the_config_is_refused_without_reading_it(workdir, capsys):
    r = cli(capsys, "--config", "/dev/zero", "config", "check")
    assert_clean(r, 2, fix=True, contains="character device")


def test_a_50_mb_config_is_refused_by_its_size(workdir, capsys):
    r = cli(capsys, "--config", sparse(workdir / "big.yaml", 50 * 1024 * 1024), "config", "check")
    assert_clean(r, 2, fix=True, contains=["50.0 MiB", "at most 1.0 MiB"])


def test_a_config_that_is_not_utf8_is_one_message(workdir, capsys):
    (workdir / "latin1.yaml").write_bytes("cluster:\n  name: caf\xe9\n".encode("latin-1"))
    assert_clean(cli(capsys, "--config", workdir / "latin1.yaml", "config", "check"), 2, fix=True,
                 contains="not UTF-8")


def test_a_fifo_as_authorized_keys_is_refused_at_plan(workdir, capsys, upstream):
    fifo(workdir / "keys.pub")
    config_with(workdir, repo={"authorizedKeys": ["keys.pub"]})
    r = cli(capsys, "plan", "--manifests", upstream("longhorn-v1.12.1.yaml").parent)
    assert_clean(r, 2, fix=True, contains=["repo.authorizedKeys", "named pipe"])


def test_dev_zero_as_authorized_keys_is_refused(workdir, capsys, upstream):
    config_with(workdir, repo={"authorizedKeys": ["/dev/zero"]})
    r = cli(capsys, "plan", "--manifests", upstream("longhorn-v1.12.1.yaml").parent)
    assert_clean(r, 2, fix=True, contains=["repo.authorizedKeys", "character device"])


def test_a_fifo_as_backup_credentials_is_refused(workdir):
    """Read at bootstrap (plan shows the Secret redacted): called directly, with a deadline."""
    from seedbed import config as config_mod
    from seedbed.errors import ConfigError
    from seedbed.steps.longhorn import load_backup_credentials

    fifo(workdir / "s3.env")
    config_with(workdir, longhorn={"backupTarget": "s3://bucket@us-east-1/", "backupCredentials": {"fromFile": "s3.env"}})
    cfg = config_mod.load(workdir / "seedbed.yaml")
    box: dict[str, BaseException] = {}

    def read() -> None:
        try:
            load_backup_credentials(cfg.longhorn.backup_credentials, cfg)
        except ConfigError as e:
            box["e"] = e

    worker = threading.Thread(target=read, daemon=True)
    worker.start()
    worker.join(DEADLINE)
    assert not worker.is_alive(), "reading a FIFO as the credentials file hung"
    e = box["e"]
    assert isinstance(e, ConfigError) and e.exit_code == 2 and e.fix
    assert "backupCredentials.fromFile" in e.message and "named pipe" in e.message


def test_a_fifo_in_the_manifests_folder_is_refused(workdir, capsys):
    (workdir / "m").mkdir()
    fifo(workdir / "m" / "longhorn-v1.12.1.yaml")
    r = cli(capsys, "plan", "--manifests", workdir / "m")
    assert_clean(r, 2, fix=True, contains=["release manifest", "named pipe"])


def test_dev_zero_linked_into_the_manifests_folder_is_refused(workdir, capsys):
    (workdir / "m").mkdir()
    (workdir / "m" / "longhorn-v1.12.1.yaml").symlink_to("/dev/zero")
    r = cli(capsys, "plan", "--manifests", workdir / "m")
    assert_clean(r, 2, fix=True, contains="character device")


def test_a_huge_manifest_is_refused_by_its_size(workdir, capsys):
    r = cli(capsys, "plan", "--manifests", sparse(workdir / "longhorn-v1.12.1.yaml", 40 * 1024 * 1024))
    assert_clean(r, 2, fix=True, contains="at most 32.0 MiB")


def test_a_fifo_as_the_lock_file_is_refused(workdir, capsys, upstream):
    fifo(workdir / "seedbed.lock")
    r = cli(capsys, "plan", "--manifests", upstream("longhorn-v1.12.1.yaml").parent)
    assert_clean(r, 2, fix=True, contains="lock file")


# --------------------------------------------------------------------------- YAML bombs


LAUGHS = "a: &a [lol, lol, lol, lol, lol, lol, lol, lol, lol]\n" + "".join(
    f"{chr(98 + i)}: &{chr(98 + i)} [{', '.join(['*' + chr(97 + i)] * 9)}]\n" for i in range(9)
)


@pytest.mark.parametrize(("name", "text", "words"), [
    ("billion-laughs", LAUGHS, "aliases repeated"),
    ("recursive-alias", "cluster: &c\n  name: lab\n  self: *c\n", "refers to a value that contains it"),
    ("deep-nesting", "cluster:\n  name: " + "[" * 500 + "]" * 500 + "\n", "nested more than"),
    ("deeper-than-libyaml-allows", "cluster:\n  name: " + "[" * 5000 + "]" * 5000 + "\n", "nesting depth"),
    ("deep-through-aliases", "x: &x " + "[" * 40 + "]" * 40 + "\ny: &y " + "[" * 40 + "*x" + "]" * 40 + "\n",
     "nested more than"),
    ("huge-integer", "longhorn:\n  replicaCount: " + "9" * 5000 + "\n", "cannot be read"),
])
def test_yaml_bombs_in_the_config_are_clean_errors(workdir, capsys, name, text, words):
    (workdir / "seedbed.yaml").write_text(text)
    assert_clean(cli(capsys, "config", "check"), 2, fix=True, contains=words)


def test_a_10000_key_config_reports_a_bounded_list_of_problems(workdir, capsys):
    (workdir / "seedbed.yaml").write_text("cluster:\n" + "".join(f"  key{i}: {i}\n" for i in range(10_000)))
    r = cli(capsys, "config", "check")
    assert_clean(r, 2, fix=True, contains=["seedbed.yaml:2: cluster.key0: unknown key", "more problems like these"])


def test_an_alias_bomb_in_a_manifest_is_refused_before_it_is_trusted(workdir, capsys, upstream):
    (workdir / "m").mkdir()
    (workdir / "m" / "flux-v2.9.2.yaml").write_text("apiVersion: v1\nkind: Namespace\nmetadata:\n  name: x\n"
                                                    "  labels: {}\nx:\n" + "\n".join(
                                                        "  " + line for line in LAUGHS.splitlines()))
    (workdir / "m" / "longhorn-v1.12.1.yaml").symlink_to(upstream("longhorn-v1.12.1.yaml"))
    config_with(workdir, flux={"version": "v2.9.2"})
    r = cli(capsys, "plan", "--manifests", workdir / "m")
    assert_clean(r, 1, fix=True, contains="aliases repeated")
    assert not (workdir / "seedbed.lock").exists()


# --------------------------------------------------------------------------- output paths


def test_init_under_a_file_is_refused_before_writing(workdir, capsys):
    (workdir / "afile").write_text("x")
    assert_clean(cli(capsys, "--config", workdir / "afile" / "seedbed.yaml", "init"), 2, fix=True,
                 contains="is a file, not a folder")


def test_init_onto_a_folder_is_refused(workdir, capsys):
    (workdir / "cfgdir").mkdir()
    assert_clean(cli(capsys, "--config", workdir / "cfgdir", "init", "--force"), 2, fix=True, contains="is a folder")


def test_init_onto_a_fifo_is_not_replaced_nor_hangs(workdir, capsys):
    pipe = fifo(workdir / "pipe.yaml")
    r = cli(capsys, "--config", pipe, "init", "--force")
    assert_clean(r, 2, fix=True, contains="no program is reading")
    assert Path(pipe).is_fifo()


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
def test_init_in_a_read_only_folder_is_refused(workdir, capsys):
    ro = workdir / "ro"
    ro.mkdir(mode=0o555)
    assert_clean(cli(capsys, "--config", ro / "seedbed.yaml", "init"), 2, fix=True, contains="not writable")


def test_plan_out_that_is_a_file_is_refused_before_rendering(workdir, capsys):
    (workdir / "out").write_text("x")
    # No --manifests and no network needed: the output is checked before any manifest is fetched.
    assert_clean(cli(capsys, "plan", "--offline", "--out", workdir / "out"), 2, fix=True,
                 contains="is a file, not a folder")


def test_plan_out_under_a_file_is_refused(workdir, capsys):
    (workdir / "afile").write_text("x")
    assert_clean(cli(capsys, "plan", "--offline", "--out", workdir / "afile" / "out"), 2, fix=True,
                 contains="is a file, not a folder")


def test_plan_out_over_a_folder_where_a_file_goes_writes_nothing(workdir, capsys, upstream):
    (workdir / "out" / "02-longhorn.yaml").mkdir(parents=True)
    r = cli(capsys, "plan", "--manifests", upstream("longhorn-v1.12.1.yaml").parent, "--out", workdir / "out")
    assert_clean(r, 2, fix=True, contains="is a folder")
    assert [p.name for p in (workdir / "out").iterdir()] == ["02-longhorn.yaml"]


# --------------------------------------------------------------------------- ~nosuchuser


@pytest.mark.parametrize("argv", [
    ["--config", "~nosuchuser/seedbed.yaml", "config", "check"],
    ["--config", "~nosuchuser/seedbed.yaml", "init"],
    ["plan", "--manifests", "~nosuchuser/manifests"],
    ["plan", "--offline", "--out", "~nosuchuser/out"],
])
def test_an_unknown_user_in_a_path_flag_is_a_clean_error(workdir, capsys, argv):
    assert_clean(cli(capsys, *argv), 2, fix=True, contains="no user 'nosuchuser'")


def test_an_unknown_user_in_a_config_path_is_a_clean_error(workdir, capsys, upstream):
    config_with(workdir, repo={"authorizedKeys": ["~nosuchuser/.ssh/id_ed25519.pub"]})
    r = cli(capsys, "plan", "--manifests", upstream("longhorn-v1.12.1.yaml").parent)
    assert_clean(r, 2, fix=True, contains="no user 'nosuchuser'")


# --------------------------------------------------------------------------- keys pasted as paths


@pytest.mark.parametrize("argv", [
    ["--config", AGE_KEY, "config", "check"],
    ["--config", PEM_KEY, "config", "check"],
    ["plan", "--manifests", AGE_KEY],
    ["plan", "--offline", "--out", f"{AGE_KEY}/x"],
    ["--config", AGE_KEY, "plan", "--output", "json"],
])
def test_a_private_key_pasted_as_a_path_is_never_echoed(workdir, capsys, argv):
    r = cli(capsys, *argv)
    assert r.code in (1, 2) and "Traceback" not in r.text and "error" in r.err.lower()
    no_secrets(r)


def test_a_private_key_pasted_into_authorized_keys_is_never_echoed(workdir, capsys, upstream):
    config_with(workdir, repo={"authorizedKeys": [AGE_KEY]})
    r = cli(capsys, "plan", "--manifests", upstream("longhorn-v1.12.1.yaml").parent)
    assert_clean(r, 2, fix=True, contains="no such file")
    no_secrets(r)


def test_a_key_in_an_unknown_option_is_never_echoed(workdir, capsys):
    r = cli(capsys, "plan", f"--{AGE_KEY}")
    assert r.code == 2 and "Traceback" not in r.text
    no_secrets(r)


# --------------------------------------------------------------------------- credentials in messages


def test_a_registered_credential_is_scrubbed_from_errors_and_json(workdir, capsys):
    token = "tok-" + "Zq81" * 6  # a token this run holds (e.g. from a kubeconfig)
    scrub.secret(token + "\n")  # a trailing newline, as a token file has
    (workdir / "seedbed.yaml").write_text(f"cluster:\n  name: {token}\n")  # not a DNS name: echoed back
    r = cli(capsys, "config", "check")
    assert_clean(r, 2, fix=True, contains=["cluster.name", "<redacted>"])
    assert token not in r.text
    from seedbed.output import print_json

    capsys.readouterr()
    print_json({"message": f"Illegal header value b'Bearer {token}\\n'", "list": [token]})
    out = capsys.readouterr().out
    assert token not in out and json.loads(out)["list"] == ["<redacted>"]


# --------------------------------------------------------------------------- manifest trust


def test_the_default_flux_version_is_not_trusted_on_first_download(workdir, capsys, upstream):
    """No sha256 of Flux v2.9.3's official install.yaml could be established, so without --manifests
    seedbed refuses to download it instead of trusting whatever arrives first."""
    r = cli(capsys, "plan", "--manifests", upstream("longhorn-v1.12.1.yaml"))
    assert_clean(r, 1, fix=True, contains=["will not trust a download", "--manifests"])
    assert not (workdir / "seedbed.lock").exists()


def test_a_manifest_that_plan_refuses_is_not_recorded_in_the_lock(workdir, capsys, upstream):
    # The Flux v2.9.3 file under a v2.9.2 name: its header names another version, plan refuses it.
    (workdir / "m").mkdir()
    (workdir / "m" / "flux-v2.9.2.yaml").write_bytes(upstream("flux-gotk-components-v2.9.3.yaml").read_bytes())
    (workdir / "m" / "longhorn-v1.12.1.yaml").symlink_to(upstream("longhorn-v1.12.1.yaml"))
    config_with(workdir, flux={"version": "v2.9.2"})
    r = cli(capsys, "plan", "--manifests", workdir / "m")
    assert_clean(r, 1, fix=True, contains="v2.9.3")
    assert not (workdir / "seedbed.lock").exists()


def test_a_manifest_that_plan_accepts_is_recorded_in_the_lock(workdir, capsys, upstream):
    r = cli(capsys, "plan", "--manifests", upstream("longhorn-v1.12.1.yaml").parent)
    assert r.code == 0, r.text
    assert "flux v2.9.3 sha256:" in (workdir / "seedbed.lock").read_text()


# --------------------------------------------------------------------------- the GitOps tree (certificate guard)


def test_a_fifo_and_a_yaml_bomb_in_the_gitops_tree_do_not_hang_the_guard(tmp_path):
    """The certificate guard reads the tree as Flux does (fluxrepo): a FIFO must not hang it (Git cannot
    hold one, so Flux never sees it), an alias bomb costs at most the build deadline and fails only its
    own Flux Kustomization (as it fails Flux's), and real Certificates elsewhere still count."""
    from seedbed import fluxrepo
    from seedbed.certs.guard import scan_repo

    tree = tmp_path / "gitops"
    (tree / "apps").mkdir(parents=True)
    (tree / "bad").mkdir()
    fifo(tree / "apps" / "pipe.yaml")
    bomb = "a: &a [x, x, x, x, x, x, x, x, x]\n" + "".join(
        f"{chr(98 + i)}: &{chr(98 + i)} [{', '.join([f'*{chr(97 + i)}'] * 9)}]\n" for i in range(9))
    (tree / "bad" / "bomb.yaml").write_text("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: bomb}\n" + bomb)
    (tree / "apps" / "cert.yaml").write_text(
        "apiVersion: cert-manager.io/v1\nkind: Certificate\nmetadata: {name: web, namespace: apps}\n"
        "spec: {secretName: web-tls, dnsNames: [web.example.org], issuerRef: {kind: ClusterIssuer, name: x}}\n")
    (tree / "clusters" / "lab").mkdir(parents=True)
    (tree / "clusters" / "lab" / "sync.yaml").write_text("".join(
        f"---\napiVersion: kustomize.toolkit.fluxcd.io/v1\nkind: Kustomization\nmetadata: {{name: {name}, "
        f"namespace: flux-system}}\nspec: {{path: ./{name}, sourceRef: {{kind: GitRepository, name: flux-system}}}}\n"
        for name in ("apps", "bad")))
    done: list[object] = []
    worker = threading.Thread(target=lambda: done.append(fluxrepo.read(tree, "clusters/lab", timeout=5)), daemon=True)
    worker.start()
    worker.join(timeout=30)
    assert done, "reading the tree hung on the FIFO or the bomb"
    repo = done[0]
    assert [c.names for c in scan_repo(repo).certificates] == [frozenset({"web.example.org"})]  # type: ignore[arg-type]
    problems = "\n".join(p.message for p in repo.problems)  # type: ignore[attr-defined]
    assert "flux-system/bad cannot be built" in problems and "apps" not in problems
