"""The `seedbed` command line.

Only click and seedbed.errors are imported at start-up; everything else is imported inside
the command that needs it, so that `seedbed --help` answers in a fraction of a second.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click

from .errors import ConfigError, SeedbedError

F = TypeVar("F", bound=Callable[..., Any])

CONTEXT_SETTINGS = {"help_option_names": ["-h", "--help"], "max_content_width": 100}


class State:
    def __init__(self, config: str, kubeconfig: str | None, context: str | None, verbose: bool, quiet: bool,
                 color: bool | None) -> None:
        self.config_path = Path(config)
        self.kubeconfig = kubeconfig
        self.context = context
        self.verbose = verbose
        self.quiet = quiet
        self.color = color
        self._out: Any = None

    def config(self) -> Any:
        from . import config

        cfg = config.load(self.config_path)
        overrides: dict[str, Any] = {}
        if self.kubeconfig:
            overrides["kubeconfig"] = self.kubeconfig
        if self.context:
            overrides["context"] = self.context
        if overrides:
            cfg = cfg.model_copy(update={"cluster": cfg.cluster.model_copy(update=overrides)})
        return cfg

    @property
    def out(self) -> Any:
        if self._out is None:
            from .output import Output

            self._out = Output(color=self.color, quiet=self.quiet, verbose=self.verbose)
        return self._out


pass_state = click.make_pass_decorator(State)


def output_option(f: F) -> F:
    return click.option("--output", "-o", "output", type=click.Choice(["text", "json"]), default="text",
                        show_default=True, help="json: machine-readable result on stdout.")(f)


def manifest_options(f: F) -> F:
    f = click.option("--offline", is_flag=True, help="Never download; use the cache or --manifests.")(f)
    f = click.option("--manifests", type=click.Path(path_type=Path), default=None,
                     help="A release manifest file, or a folder of files named like longhorn-v1.12.1.yaml "
                          "(air-gapped installs).")(f)
    return f


@click.group(context_settings=CONTEXT_SETTINGS)
@click.version_option(package_name="seedbed", prog_name="seedbed")
@click.option("--config", "-c", default=lambda: os.environ.get("SEEDBED_CONFIG", "seedbed.yaml"),
              show_default="seedbed.yaml or $SEEDBED_CONFIG", help="The config file.")
@click.option("--kubeconfig", default=None, help="Override cluster.kubeconfig.")
@click.option("--context", default=None, help="Override cluster.context.")
@click.option("--verbose", "-v", is_flag=True, help="Show more detail.")
@click.option("--quiet", "-q", is_flag=True, help="Show only warnings and errors.")
@click.option("--color/--no-color", default=None, help="Force or disable colour.")
@click.pass_context
def cli(ctx: click.Context, config: str, kubeconfig: str | None, context: str | None, verbose: bool, quiet: bool,
        color: bool | None) -> None:
    """Take a fresh Kubernetes cluster to GitOps, with its Git repository hosted on the cluster itself.

    \b
    Start here:
      seedbed init                    write a commented seedbed.yaml
      seedbed plan --out out/         render every step without touching a cluster
      seedbed bootstrap               Longhorn, Git server, repository, Flux
      seedbed status                  is everything healthy?
      seedbed backup -o cluster.age   what only the cluster knows, encrypted
    """
    ctx.obj = State(config, kubeconfig, context, verbose, quiet, color)


# ---------------------------------------------------------------------------- init & config


@cli.command()
@click.option("--force", is_flag=True, help="Overwrite an existing file.")
@pass_state
def init(state: State, force: bool) -> None:
    """Write a commented example seedbed.yaml.

    \b
    Examples:
      seedbed init
      seedbed -c clusters/lab.yaml init
    """
    from . import files
    from .example import EXAMPLE_CONFIG

    path = files.expand(state.config_path)
    files.make_dirs(files.check_output_dir(path.parent, "folder of the config file"), "folder of the config file")
    files.write_file(path, EXAMPLE_CONFIG, "config file", overwrite=force)
    state.out.done(f"wrote {path}; edit it, then run `seedbed plan`")


@cli.group()
def config() -> None:
    """Inspect the configuration."""


@config.command("schema")
def config_schema() -> None:
    """Print the JSON Schema of seedbed.yaml, for editors.

    \b
    Example (yaml-language-server):
      seedbed config schema > seedbed.schema.json
      # then, first line of seedbed.yaml:
      # yaml-language-server: $schema=seedbed.schema.json
    """
    from .config import json_schema
    from .output import print_json

    print_json(json_schema())


@config.command("check")
@pass_state
def config_check(state: State) -> None:
    """Validate seedbed.yaml and say what it would do.

    \b
    Example:
      seedbed config check
    """
    cfg = state.config()
    state.out.done(f"{state.config_path} is valid (cluster {cfg.cluster.name})")


# ---------------------------------------------------------------------------- plan


@cli.command()
@click.option("--out", "out_dir", type=click.Path(path_type=Path), default=None,
              help="Write the rendered bundle to this folder.")
@output_option
@manifest_options
@click.option("--acme", type=click.Choice(["staging", "production"]), default=None,
              help="Override certificates.acme.")
@click.option("--domain", default=None, help="Override certificates.domain.")
@pass_state
def plan(state: State, out_dir: Path | None, output: str, manifests: Path | None, offline: bool,
         acme: str | None, domain: str | None) -> None:
    """Render every bootstrap step without touching a cluster.

    Secrets are shown as <redacted>: their values are generated in the cluster at bootstrap.

    \b
    Examples:
      seedbed plan
      seedbed plan --out out/ --manifests ../shared/fixtures/upstream
      seedbed plan --output json | jq '.steps[].name'
    """
    from . import files
    from .plan import render_plan, write_bundle
    from .steps.base import Options

    cfg = state.config()
    if out_dir is not None:  # before the work: a bad --out is reported before any download
        out_dir = files.check_output_dir(out_dir, "--out")
    if manifests is not None:
        manifests = files.expand(manifests)
    options = Options(manifests=manifests, offline=offline, acme=acme, domain=domain)
    result = render_plan(cfg, options)
    if out_dir is not None:
        write_bundle(result, out_dir)
    if output == "json":
        from .output import print_json

        print_json(result.as_dict(out_dir))
        return
    click.echo(result.as_text(out_dir))


# ---------------------------------------------------------------------------- bootstrap


@cli.command()
@manifest_options
@click.option("--restore", type=click.Path(path_type=Path, dir_okay=False), default=None,
              help="Restore volumes, Secrets and certificates from this backup archive.")
@click.option("--from-other-cluster", is_flag=True, help="Accept an archive made on a differently named cluster.")
@click.option("--allow-upgrade", is_flag=True, help="Upgrade Longhorn if another version is installed.")
@click.option("--rotate-keys", is_flag=True, help="Replace the Flux deploy key.")
@click.option("--force-push", is_flag=True, help="Overwrite the server's branch on a non-fast-forward push.")
@click.option("--force", is_flag=True, help="Overwrite existing objects when restoring.")
@click.option("--acme", type=click.Choice(["staging", "production"]), default=None,
              help="Let's Encrypt environment (overrides certificates.acme).")
@click.option("--domain", default=None, help="Cluster domain (overrides certificates.domain).")
@click.option("--ignore-budget", is_flag=True, help="Go ahead even if Let's Encrypt limits would be exceeded.")
@output_option
@pass_state
def bootstrap(state: State, output: str, **flags: Any) -> None:
    """Bootstrap the cluster: Longhorn, Git server, repository, (restore,) Flux.

    Every step is idempotent: re-running a finished bootstrap changes nothing, and re-running an
    interrupted one resumes where it stopped.

    \b
    Examples:
      seedbed bootstrap
      seedbed bootstrap --restore backups/lab-2026-11-20.age
      seedbed bootstrap --acme staging --domain dev.example.org
    """
    from .bootstrap import run_bootstrap
    from .steps.base import Options

    cfg = state.config()
    options = Options(**flags)
    result = _run(run_bootstrap(cfg, options, state.out))
    if output == "json":
        from .output import print_json

        print_json(result.as_dict())
    else:
        click.echo(result.as_text(), err=True)


# ---------------------------------------------------------------------------- status & doctor


@cli.command()
@output_option
@pass_state
def status(state: State, output: str) -> None:
    """Report each component's state; exit 1 when something is wrong.

    \b
    Examples:
      seedbed status
      seedbed status --output json
    """
    from .status import collect_status

    report = _run(collect_status(state.config()))
    _report(report, output, report.as_text)


@cli.command()
@pass_state
def doctor(state: State) -> None:
    """Explain each problem found, with its fix.

    \b
    Example:
      seedbed doctor
    """
    from .status import collect_status

    report = _run(collect_status(state.config()))
    _report(report, "text", report.as_doctor_text)


@cli.command("check-handoff")
@click.option("--repo", "repo_path", type=click.Path(path_type=Path, file_okay=False), default=None,
              help="The GitOps tree to check (default: repo.path).")
@output_option
@pass_state
def check_handoff(state: State, repo_path: Path | None, output: str) -> None:
    """Check that Flux's re-deploy of the Git server keeps the repository and Flux's access.

    \b
    Examples:
      seedbed check-handoff
      seedbed check-handoff --repo ../gitops --output json
    """
    from .handoff import check_handoff as run_check

    cfg = state.config()
    tree = repo_path or cfg.resolve(cfg.repo.path)
    if not tree.is_dir():
        raise ConfigError(f"the GitOps tree {tree} does not exist", fix="set repo.path or pass --repo DIR")
    report = run_check(tree, cfg)
    _report(report, output, report.as_text)


# ---------------------------------------------------------------------------- backup & restore


@cli.command()
@click.option("--output-file", "-o", "output_file", type=click.Path(path_type=Path, dir_okay=False),
              required=True, help="The archive to write (age-encrypted tar).")
@click.option("--skip-volumes", is_flag=True, help="Do not trigger Longhorn volume backups.")
@pass_state
def backup(state: State, output_file: Path, skip_volumes: bool) -> None:
    """Back up what Git cannot re-create into one encrypted archive.

    Certificates, Issuers, ClusterIssuers and the Secrets they use (ACME account keys!), selected
    Secrets, a git bundle of the in-cluster repository, Longhorn volume backups and the
    certificate issuance ledger. Encrypted to backup.recipients with age.

    \b
    Examples:
      seedbed backup -o backups/lab-$(date +%F).age
      age -d -i ~/.config/seedbed/age.key backups/lab.age | tar -t
    """
    from .backup.run import run_backup

    cfg = state.config()
    summary = _run(run_backup(cfg, output_file, state.out, skip_volumes=skip_volumes))
    state.out.done(summary)


@cli.command()
@click.argument("archive", type=click.Path(path_type=Path, dir_okay=False))
@click.option("--dry-run", is_flag=True, help="List what would be restored or skipped, and why.")
@click.option("--force", is_flag=True, help="Overwrite objects that already exist.")
@click.option("--from-other-cluster", is_flag=True, help="Accept an archive made on a differently named cluster.")
@click.option("--identity", "-i", "identities", multiple=True, type=click.Path(path_type=Path),
              help="age or ssh private key (default: backup.identityFile).")
@output_option
@pass_state
def restore(state: State, archive: Path, dry_run: bool, force: bool, from_other_cluster: bool,
            identities: tuple[Path, ...], output: str) -> None:
    """Restore volumes, Secrets, certificates and the repository from an archive.

    The archive is decrypted and every entry checked before anything is written. Existing objects
    are kept unless --force; the repository is pushed back only where the server's copy is missing
    or behind.

    \b
    Examples:
      seedbed restore backups/lab.age --dry-run
      seedbed restore backups/lab.age
      seedbed restore backups/lab.age --dry-run --output json | jq '.[].items[].name'
    """
    from .backup.restore import dumps_summary
    from .backup.run import restore_text, run_restore

    cfg = state.config()
    summaries = _run(run_restore(cfg, archive, state.out, dry_run=dry_run, force=force,
                                 from_other_cluster=from_other_cluster, identities=list(identities)))
    click.echo(dumps_summary(summaries) if output == "json" else restore_text(summaries, dry_run=dry_run))


@cli.command()
@click.option("--output-file", "-o", "output_file", type=click.Path(path_type=Path, dir_okay=False),
              default=None, help="Where to write the identity (default ~/.config/seedbed/age.key).")
def keygen(output_file: Path | None) -> None:
    """Generate an age identity for backups and print its public recipient.

    \b
    Example:
      seedbed keygen            # then add the printed age1... line to backup.recipients
    """
    from .backup.archive import keygen as make_key
    from .backup.run import default_identity_path

    path = output_file or default_identity_path()
    if path.exists():
        raise ConfigError(f"{path} already exists", fix="choose another path with -o; never overwrite a backup key")
    click.echo(make_key(path))


# ---------------------------------------------------------------------------- certificates


@cli.group()
def certs() -> None:
    """Let's Encrypt safety: issuers, the wildcard certificate, the rate-limit budget."""


@certs.command("issuers")
@pass_state
def certs_issuers(state: State) -> None:
    """Print ready-to-commit ClusterIssuers for staging and production.

    \b
    Example:
      seedbed certs issuers > gitops/infrastructure/cluster-issuers.yaml
    """
    from .render.certs import cluster_issuers
    from .yamlutil import dump_all

    click.echo(dump_all(cluster_issuers(state.config())), nl=False)


@certs.command("wildcard")
@pass_state
def certs_wildcard(state: State) -> None:
    """Print the wildcard Certificate for certificates.wildcard.domain.

    \b
    Example:
      seedbed certs wildcard > gitops/infrastructure/wildcard.yaml
    """
    from .render.certs import issuer_for, wildcard_certificate
    from .yamlutil import dump_all

    cfg = state.config()
    click.echo(dump_all([wildcard_certificate(cfg, issuer=issuer_for(cfg.certificates.acme))]), nl=False)


@certs.command("budget")
@click.option("--ct", is_flag=True, help="Also ask Certificate Transparency logs (crt.sh): authoritative.")
@click.option("--ledger", "ledger_file", type=click.Path(path_type=Path, dir_okay=False), default=None,
              help="A backup archive whose issuance ledger to include.")
@click.option("--domain", "domains", multiple=True, help="Registered domain(s) to report (default: all seen).")
@output_option
@pass_state
def certs_budget(state: State, ct: bool, ledger_file: Path | None, domains: tuple[str, ...], output: str) -> None:
    """Show the Let's Encrypt budget left per registered domain and per exact set of names.

    \b
    Examples:
      seedbed certs budget
      seedbed certs budget --ct --domain example.org --output json
    """
    from .certs.report import budget_report

    cfg = state.config()
    report = _run(budget_report(cfg, ct=ct, archive=ledger_file, domains=list(domains), out=state.out))
    if output == "json":
        from .output import print_json

        print_json(report.to_json())
    else:
        click.echo(report.render_text())


# ---------------------------------------------------------------------------- plumbing


def _report(report: Any, output: str, text: Callable[[], str]) -> None:
    """Print a report (JSON on stdout, or text) and exit 1 when it found something wrong."""
    if output == "json":
        from .output import print_json

        print_json(report.as_dict())
    else:
        click.echo(text())
    sys.exit(0 if report.ok else 1)


def _run(coro: Any) -> Any:
    import asyncio

    return asyncio.run(coro)


def main(argv: list[str] | None = None) -> None:
    try:
        cli.main(args=argv, prog_name="seedbed", standalone_mode=False)
    except click.exceptions.Abort:
        click.echo("aborted", err=True)
        sys.exit(130)
    except click.ClickException as e:
        import io

        from .scrub import scrub

        shown = io.StringIO()  # click repeats the offending argument: it may be a pasted key
        e.show(file=shown)
        click.echo(scrub(shown.getvalue()), err=True, nl=False)
        sys.exit(e.exit_code)
    except SeedbedError as e:
        _print_error(e)
        sys.exit(e.exit_code)
    except KeyboardInterrupt:
        click.echo("\ninterrupted: re-run the same command to resume (every step is idempotent)", err=True)
        sys.exit(130)


def _print_error(e: SeedbedError) -> None:
    from .scrub import scrub

    color = sys.stderr.isatty() and not os.environ.get("NO_COLOR")
    lines = scrub(e.message).splitlines() or [""]
    click.echo(click.style("✗ error: ", fg="red", bold=True) if color else "✗ error: ", err=True, nl=False)
    click.echo(lines[0], err=True)
    for line in lines[1:]:
        click.echo(f"  {line}", err=True)
    if e.fix:
        click.echo(("  " + click.style("fix:", bold=True) if color else "  fix:") + f" {scrub(e.fix)}", err=True)


if __name__ == "__main__":  # pragma: no cover
    main()
