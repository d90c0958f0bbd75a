"""`seedbed demo`: the whole journey on a simulated cluster, with the real commands and their output.

The cluster is the lab of the end-to-end tests (package ``seedbed_lab``, the ``demo`` extra): a
Kubernetes API emulator, simulated Longhorn and Flux controllers, and a Gitea serving real git over
HTTP and SSH, all on 127.0.0.1. Every ``seedbed`` command of the journey goes through the real
command line (``run`` is the CLI's entry point), so what the user reads is what a real cluster prints.
The lab is imported here, lazily, and nowhere else in seedbed (pyproject.toml, import-linter).
"""

from __future__ import annotations

import base64
import secrets
import shutil
import signal
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click
import msgspec

from ..errors import ConfigError, SeedbedError

if TYPE_CHECKING:
    from seedbed_lab.lab import Lab

CLUSTER = "homelab"
APP_NAMESPACE = "demo"
APP_SECRET = "app-credentials"  # a Secret that exists only in the cluster: what a backup is for
GIT_HOST = "git.demo.example"
SERVER_FILE = f"clusters/{CLUSTER}/flux-system/git-server.yaml"
CHART = "gitea-chart-12.4.0"  # the chart the simulated helm-controller renders (seedbed_lab.emulator.helm_controller)
INSTALL_FIX = "pip install 'seedbed[demo]' (in a clone of seedbed: scripts/install)"

# The user's GitOps tree before the bootstrap: one app, applied by Flux from the cluster's own repository.
TREE = {
    f"clusters/{CLUSTER}/apps/demo.yaml": f"""\
apiVersion: v1
kind: Namespace
metadata:
  name: {APP_NAMESPACE}
---
apiVersion: v1
kind: ConfigMap
metadata:
  name: hello
  namespace: {APP_NAMESPACE}
data:
  greeting: hello from the repository the cluster hosts itself
""",
}

REAL_CLUSTER = """\
What a real cluster adds, that the demo cannot show:
  - Longhorn's real volumes: iSCSI on every node (open-iscsi), replicas, the data path on disk,
    and volume backups to your S3 or NFS target (the demo's backup skips volumes)
  - Flux's real controllers and Helm: the demo simulates source-, kustomize- and helm-controller
    (the Gitea chart is rendered from its real files, not installed by Helm)
  - a real Gitea or Forgejo process, with its own database and web UI
  - cert-manager and Let's Encrypt: real certificates, rate limits and `seedbed certs budget`
  - your network: DNS, ingress controller, load balancer, firewalls
Next: `seedbed init`, point cluster.kubeconfig at your cluster, then `seedbed plan` and `seedbed bootstrap`."""


class DemoStopped(SeedbedError):
    """A command of the journey failed: its own error was printed above this one."""


class Journey(msgspec.Struct):
    """What the demo showed, for its closing lines (and for tests that wrap the lab)."""

    root: Path
    head: str = ""
    restored: list[str] = msgspec.field(default_factory=list)


def upstream_files(manifests: Path | None) -> Path:
    """The folder of upstream files the lab serves: the Gitea chart, and the release manifests if there."""
    from seedbed_lab.upstream import ENV, upstream_dir

    folder = manifests or upstream_dir()
    if not (folder / CHART / "values.yaml").is_file():
        raise ConfigError(
            f"the demo's simulated helm-controller renders the Gitea chart 12.4.0 from its files, "
            f"and {folder / CHART} has none",
            fix=f"pass --manifests DIR (or set {ENV}) to a folder holding {CHART}/ with Chart.yaml and "
                f"values.yaml of https://gitea.com/gitea/helm-gitea at v12.4.0 (and, to run offline, "
                f"longhorn-v1.12.1.yaml and flux-v2.9.3.yaml)")
    return folder


def load_lab() -> tuple[type[Lab], Callable[..., Path]]:
    """The lab's classes, or one clear error when the ``demo`` extra is not installed."""
    try:
        from seedbed_lab.lab import Lab, make_worktree
    except ImportError as e:  # aiohttp or asyncssh: the lab's own dependencies
        raise ConfigError(f"`seedbed demo` needs the packages of the demo extra ({e.name} is not installed)",
                          fix=INSTALL_FIX) from None
    return Lab, make_worktree


class Demo:
    def __init__(self, run: Callable[[list[str]], None], *, manifests: Path | None, keep: bool) -> None:
        self._run = run
        self.keep = keep
        self.upstream = upstream_files(manifests)
        self.Lab, self.make_worktree = load_lab()
        has_releases = any(self.upstream.glob("longhorn-v*.yaml"))
        # With the release manifests at hand, bootstrap reads them (as an air-gapped install does);
        # otherwise it downloads them from the official release addresses and checks their sha256.
        self.manifest_args = ["--manifests", str(self.upstream)] if has_releases else []

    # ------------------------------------------------------------------ narration

    @staticmethod
    def stage(number: int, title: str, why: str) -> None:
        click.echo("")
        click.secho(f"── {number}. {title}", bold=True)
        click.echo(f"   {why}")

    def seedbed(self, config: Path | None, *args: str) -> None:
        """Run `seedbed ARGS` through the command line's entry point; stop the journey if it fails."""
        click.secho(f"$ seedbed {' '.join(args)}", fg="cyan")
        try:
            self._run([*(["-c", str(config)] if config else []), *args])
        except SystemExit as e:
            if e.code not in (0, None):
                raise DemoStopped(f"the demo stopped: `seedbed {args[0]}` exited with {e.code} (its error is above)",
                                  fix="re-run `seedbed demo`; if it fails again, please report it with this output"
                                  ) from None

    # ------------------------------------------------------------------ the journey

    def run(self) -> None:
        root = Path(tempfile.mkdtemp(prefix="seedbed-demo-"))  # mode 0700: the keys and backup live here
        journey = Journey(root)
        # `kill` stops the demo as Ctrl-C does: through the cleanup below, so no key stays behind.
        previous = signal.signal(signal.SIGTERM, _interrupt)
        try:
            with self._journey(journey) as lab:
                if self.keep:
                    click.echo(f"\n{REAL_CLUSTER}")
                    self._keep(lab, journey)
        finally:
            signal.signal(signal.SIGTERM, previous)
            if not self.keep:
                shutil.rmtree(root, ignore_errors=True)
        if not self.keep:
            click.echo(f"\nRemoved {root}: the demo's keys, backup and clusters are gone.")
            click.echo(f"\n{REAL_CLUSTER}")

    @contextmanager
    def _journey(self, journey: Journey) -> Iterator[Lab]:
        root = journey.root
        self.stage(1, "Start a simulated cluster",
                   f"A Kubernetes API emulator, simulated Longhorn and Flux controllers and a Gitea serving "
                   f"real git, on 127.0.0.1, in {root}. No real cluster is touched.")
        (root / "old").mkdir()
        tree = self.make_worktree(root / "gitops", TREE)
        old = self.Lab(root / "old", cluster=CLUSTER, upstream=self.upstream).start()
        try:
            keys = root / "keys"
            keys.mkdir(mode=0o700)
            self.stage(2, "Make the backup keys",
                       "An age identity (to decrypt backups) and a signing key, kept in the demo's folder (mode 0600).")
            self.seedbed(None, "keygen", "-o", str(keys / "age.key"))
            backup = {"recipients": [_recipient(keys / "age.key")], "identityFile": str(keys / "age.key"),
                      "secrets": {"namespaces": [APP_NAMESPACE]}}
            config = old.write_config(tree, backup=backup)
            click.echo(f"   config: {config}; GitOps tree: {tree}")

            self.stage(3, "Bootstrap",
                       "Longhorn, the Git server (a HelmRelease of the Gitea chart), the repository and its keys, "
                       "the push of your tree, Flux: the cluster then syncs from a repository it hosts itself.")
            self.seedbed(config, "bootstrap", *self.manifest_args)
            old.settle()
            old.emu.put(_app_secret())  # what an app or an operator creates in the cluster, never in Git

            self.stage(4, "Status", "Every component checked against the cluster; exit 1 when something is wrong.")
            self.seedbed(config, "status")

            self.stage(5, "Reconfigure the Git server by a commit",
                       f"From now on the server is Flux's: a commit to {SERVER_FILE} adds an ingress for "
                       f"{GIT_HOST}; Flux applies it and helm-controller upgrades the release in place.")
            commit = old.commit_to_server({SERVER_FILE: _with_ingress(_server_file(old))},
                                          f"Serve the Git server at {GIT_HOST}")
            click.echo(f"   pushed {commit[:12]} \"Serve the Git server at {GIT_HOST}\"")
            old.flux_reconcile()
            self._show_reconfigured(old)
            self.seedbed(config, "status")

            self.stage(6, "Back up",
                       "What only the cluster knows, encrypted to your age key and signed: the repository on the "
                       f"Git server (a git bundle) and the Secrets of namespace {APP_NAMESPACE} (an app's password, "
                       "in no repository).")
            archive = root / "backups" / f"{CLUSTER}.age"
            archive.parent.mkdir(mode=0o700)
            self.seedbed(config, "backup", "-o", str(archive), "--skip-volumes")
            journey.head = old.gitea.branch_commit(CLUSTER, "gitops", "main")
            before = _secret_data(old)
        finally:
            old.stop()
        self.stage(7, "Tear the cluster down",
                   "The cluster is gone, with its Git server and the repository on it. What is left: your "
                   "GitOps tree, your keys and the backup archive.")
        shutil.rmtree(root / "old", ignore_errors=True)
        click.echo(f"   removed the cluster; left: {tree.name}/, {keys.name}/, backups/{archive.name}")

        (root / "new").mkdir()
        new = self.Lab(root / "new", cluster=CLUSTER, upstream=self.upstream).start()
        try:
            self.stage(8, "Rebuild from the backup",
                       "A fresh, empty cluster: bootstrap --restore puts the repository back on the new Git "
                       "server, and the Secrets back before Flux starts the apps that need them.")
            config = new.write_config(tree, backup=backup)
            self.seedbed(config, "bootstrap", *self.manifest_args, "--restore", str(archive))
            new.settle()
            journey.restored = self._check_restored(new, journey.head, before)

            self.stage(9, "Status of the rebuilt cluster", "The same checks, on the new cluster.")
            self.seedbed(config, "status")
            yield new
        finally:
            new.stop()

    def _show_reconfigured(self, lab: Lab) -> None:
        ingress = lab.emu.get("networking.k8s.io/v1", "Ingress", "gitea", "gitea")
        hr = lab.emu.get("helm.toolkit.fluxcd.io/v2", "HelmRelease", "gitea", "gitea") or {}
        ready = next((c for c in (hr.get("status") or {}).get("conditions") or [] if c.get("type") == "Ready"), {})
        if ingress is None or ready.get("status") != "True":
            raise DemoStopped(f"Flux did not apply the commit: HelmRelease gitea/gitea is "
                              f"{ready.get('message') or 'not ready'}",
                              fix="this is a bug of the demo's simulated controllers; please report it")
        host = ingress["spec"]["rules"][0]["host"]
        click.echo(f"   Flux applied it: HelmRelease gitea/gitea Ready, Ingress gitea/gitea serves {host}; "
                   f"the data claim and the SSH host key are untouched")

    def _check_restored(self, lab: Lab, head: str, before: dict[str, Any]) -> list[str]:
        shown: list[str] = []
        now = lab.gitea.branch_commit(CLUSTER, "gitops", "main")
        if now != head:
            raise DemoStopped(f"the rebuilt repository is at {now[:12]}, the backup's at {head[:12]}",
                              fix="this is a bug; please report it with the output above")
        shown.append(f"the repository is back at {head[:12]}, with the commit of step 5")
        for (namespace, name), data in before.items():
            obj = lab.emu.get("v1", "Secret", name, namespace)
            if obj is None or obj.get("data") != data:
                raise DemoStopped(f"Secret {namespace}/{name} did not come back as it was",
                                  fix="this is a bug; please report it with the output above")
            shown.append(f"Secret {namespace}/{name} is back, byte for byte")
        ingress = lab.emu.get("networking.k8s.io/v1", "Ingress", "gitea", "gitea")
        if ingress is not None:
            shown.append(f"Flux re-applied the restored repository: Ingress gitea/gitea serves "
                         f"{ingress['spec']['rules'][0]['host']} again")
        for line in shown:
            click.secho(f"   ✔ {line}", fg="green")
        return shown

    def _keep(self, lab: Lab, journey: Journey) -> None:
        kubeconfig = lab.kubeconfig
        config = lab.root / "seedbed.yaml"
        click.echo("")
        click.secho("The rebuilt cluster keeps running (--keep). Try it by hand:", bold=True)
        click.echo(f"  kubectl --kubeconfig {kubeconfig} get helmreleases,ingresses,pods -A")
        click.echo(f"  seedbed -c {config} status")
        click.echo(f"  seedbed -c {config} doctor")
        click.echo(f"kubeconfig: {kubeconfig}")
        click.echo(f"Press Ctrl-C to stop it. Its folder stays: rm -rf {journey.root} when you are done.")
        try:
            wait_for_interrupt()
        except KeyboardInterrupt:
            click.echo("\nstopped the demo cluster")


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def wait_for_interrupt() -> None:
    """Until Ctrl-C: the lab serves from its own threads meanwhile."""
    import time

    while True:
        time.sleep(3600)


def _recipient(identity: Path) -> str:
    from ..backup.archive import load_identities

    return str(load_identities([identity])[0].to_public())  # the age1... line keygen printed


def _app_secret() -> dict[str, Any]:
    value = base64.b64encode(secrets.token_urlsafe(24).encode()).decode()
    return {"apiVersion": "v1", "kind": "Secret", "type": "Opaque",
            "metadata": {"name": APP_SECRET, "namespace": APP_NAMESPACE}, "data": {"password": value}}


def _secret_data(lab: Lab) -> dict[tuple[str, str], Any]:
    """The Secrets the backup selects (backup.secrets), that a rebuild must bring back unchanged."""
    return {(APP_NAMESPACE, APP_SECRET): (lab.emu.get("v1", "Secret", APP_SECRET, APP_NAMESPACE) or {}).get("data")}


def _server_file(lab: Lab) -> list[dict[str, Any]]:
    import subprocess

    from ..yamlutil import load_all

    show = subprocess.run(["git", "--git-dir", str(lab.gitea.bare_path(CLUSTER, "gitops")), "show",
                           f"main:{SERVER_FILE}"], capture_output=True, text=True, check=True)
    return [d for d in load_all(show.stdout) if isinstance(d, dict)]  # our own render, committed by bootstrap


def _with_ingress(docs: list[dict[str, Any]]) -> str:
    import yaml

    for doc in docs:
        if doc.get("kind") == "HelmRelease":
            values = doc["spec"]["values"]
            values["ingress"] = {"enabled": True, "hosts": [
                {"host": GIT_HOST, "paths": [{"path": "/", "pathType": "Prefix"}]}]}
            values["gitea"]["config"]["server"].update({"DOMAIN": GIT_HOST, "ROOT_URL": f"https://{GIT_HOST}/"})
    return yaml.safe_dump_all(docs, sort_keys=False)
