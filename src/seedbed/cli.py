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

SCHEMA_FILE = "seedbed.schema.json"  # the name the example config's yaml-language-server line points at
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
        from msgspec.structs import replace

        from . import config

        cfg = config.load(self.config_path)
        overrides: dict[str, Any] = {}
        # `--kubeconfig ''` is passed on (and refused where the kubeconfig is read), never dropped.
        if self.kubeconfig is not None:
            overrides["kubeconfig"] = self.kubeconfig
        if self.context is not None:
            overrides["context"] = self.context
        if overrides:
            cfg = replace(cfg, cluster=replace(cfg.cluster, **overrides))
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


def skip_signature_option(f: F) -> F:
    return click.option("--insecure-skip-signature", is_flag=True,
                        help="Accept an archive no trusted key signed (older or forged archives: check where "
                             "it came from).")(f)


def manifest_options(f: F) -> F:
    f = click.option("--offline", is_flag=True, help="Never download; use the cache or --manifests.")(f)
    f = click.option("--manifests", type=click.Path(path_type=Path), default=None,
                     help="A release manifest file, or a folder of files named like longhorn-v1.12.1.yaml "
                          "(air-gapped installs).")(f)
    return f


def _not_empty(ctx: click.Context, param: click.Parameter, value: Any) -> Any:
    # kubectl refuses `--kubeconfig ''` too: an empty value would silently fall back to another cluster.
    if value == "":
        raise ConfigError(f"--{param.name} was given an empty value",
                          fix=f"name a value, or leave --{param.name} out to use the config's")
    return value


@click.group(context_settings=CONTEXT_SETTINGS)
@click.version_option(package_name="seedbed", prog_name="seedbed")
@click.option("--config", "-c", default=lambda: os.environ.get("SEEDBED_CONFIG", "seedbed.yaml"),
              show_default="seedbed.yaml or $SEEDBED_CONFIG", help="The config file.", callback=_not_empty)
@click.option("--kubeconfig", default=None, help="Override cluster.kubeconfig.", callback=_not_empty)
@click.option("--context", default=None, help="Override cluster.context.", callback=_not_empty)
@click.option("--verbose", "-v", is_flag=True, help="Show more detail.")
@click.option("--quiet", "-q", is_flag=True, help="Show only warnings and errors.")
@click.option("--color/--no-color", default=None, help="Force or disable colour.")
@click.pass_context
def cli(ctx: click.Context, config: str, kubeconfig: str | None, context: str | None, verbose: bool, quiet: bool,
        color: bool | None) -> None:
    """Take a fresh Kubernetes cluster to GitOps, with its Git repository hosted on the cluster itself.

    \b
    Start here:
      seedbed demo                    the whole journey on a simulated cluster, no cluster needed
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
    """Write a commented example seedbed.yaml, and seedbed.schema.json beside it for editors.

    The example's first lines point yaml-language-server (VS Code, Neovim, Helix...) at the
    schema, so an editor completes and checks every key.

    \b
    Examples:
      seedbed init
      seedbed init -c clusters/lab.yaml
    """
    import json

    from . import files
    from .config import json_schema
    from .example import EXAMPLE_CONFIG

    path = files.expand(state.config_path)
    folder = files.check_output_dir(path.parent, "folder of the config file")
    # Both outputs are checked before either is written.
    if path.exists():
        files.check_output(path, "config file", overwrite=force)
    schema_path = path.with_name(SCHEMA_FILE)
    if schema_path.exists():
        files.check_output(schema_path, "JSON schema")
    files.make_dirs(folder, "folder of the config file")
    files.write_file(path, EXAMPLE_CONFIG, "config file", overwrite=force)
    files.write_file(schema_path, json.dumps(json_schema(), indent=2) + "\n", "JSON schema")
    state.out.done(f"wrote {path} and {SCHEMA_FILE}; edit it, then run `seedbed plan`")


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
    from .commands.clients import manifest_store
    from .commands.plan import render_plan, write_bundle
    from .steps.base import Options

    cfg = state.config()
    if out_dir is not None:  # before the work: a bad --out is reported before any download
        out_dir = files.check_output_dir(out_dir, "--out")
    if manifests is not None:
        manifests = files.expand(manifests)
    options = Options(manifests=manifests, offline=offline, acme=acme, domain=domain)
    result = render_plan(cfg, options, manifest_store(cfg, manifests=manifests, offline=offline))
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
@skip_signature_option
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
    from .commands.bootstrap import run_bootstrap
    from .commands.clients import manifest_store
    from .steps.base import Options

    cfg = state.config()
    options = Options(**flags)
    manifests = manifest_store(cfg, manifests=options.manifests, offline=options.offline)
    result = _connected(state, cfg, lambda clients: run_bootstrap(cfg, options, manifests, clients))
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
    report = _status(state)
    _report(report, output, report.as_text)


@cli.command()
@pass_state
def doctor(state: State) -> None:
    """Explain each problem found, with its fix.

    \b
    Example:
      seedbed doctor
    """
    report = _status(state)
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
    from .buildcache import default_root
    from .handoff import check_handoff as run_check

    cfg = state.config()
    tree = repo_path or cfg.resolve(cfg.repo.path)
    if not tree.is_dir():
        raise ConfigError(f"the GitOps tree {tree} does not exist", fix="set repo.path or pass --repo DIR")
    report = run_check(tree, cfg, cache=default_root())
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
    from .commands.backup import check_backup, run_backup

    cfg = state.config()
    target = check_backup(cfg, output_file)
    summary = _connected(state, cfg, lambda clients: run_backup(cfg, target, clients, skip_volumes=skip_volumes))
    state.out.done(summary)


@cli.command()
@click.argument("archive", type=click.Path(path_type=Path, dir_okay=False))
@click.option("--dry-run", is_flag=True, help="List what would be restored or skipped, and why.")
@click.option("--force", is_flag=True, help="Overwrite objects that already exist.")
@click.option("--from-other-cluster", is_flag=True, help="Accept an archive made on a differently named cluster.")
@click.option("--identity", "-i", "identities", multiple=True, type=click.Path(path_type=Path),
              help="age or ssh private key (default: backup.identityFile).")
@skip_signature_option
@output_option
@pass_state
def restore(state: State, archive: Path, dry_run: bool, force: bool, from_other_cluster: bool,
            identities: tuple[Path, ...], insecure_skip_signature: bool, output: str) -> None:
    """Restore volumes, Secrets, certificates and the repository from an archive.

    The archive is decrypted, its signature checked against backup.trustedSigners, and every entry
    validated before anything is written (in --dry-run too). Existing objects
    are kept unless --force; the repository is pushed back only where the server's copy is missing
    or behind.

    \b
    Examples:
      seedbed restore backups/lab.age --dry-run
      seedbed restore backups/lab.age
      seedbed restore backups/lab.age --dry-run --output json | jq '.[].items[].name'
    """
    from .backup.restore import dumps_summary
    from .commands.backup import open_verified, restore_text, run_restore

    cfg = state.config()
    opened = open_verified(cfg, archive, state.out, from_other_cluster=from_other_cluster,
                           identities=list(identities), skip_signature=insecure_skip_signature)
    summaries = _connected(state, cfg, lambda clients: run_restore(opened, clients, dry_run=dry_run, force=force))
    click.echo(dumps_summary(summaries) if output == "json" else restore_text(summaries, dry_run=dry_run))


@cli.command()
@click.option("--output-file", "-o", "output_file", type=click.Path(path_type=Path, dir_okay=False),
              default=None, help="Where to write the identity (default ~/.config/seedbed/age.key).")
@click.option("--signing-key", "signing_file", type=click.Path(path_type=Path, dir_okay=False), default=None,
              help="Where to write the signing key (default signing.key beside the identity).")
def keygen(output_file: Path | None, signing_file: Path | None) -> None:
    """Generate the backup keys: an age identity and an ed25519 signing key; print their public keys.

    Neither key is ever overwritten: with an age identity already there, only the signing key is
    made (and the other way round). The age1... line goes in backup.recipients; the ssh-ed25519
    line in backup.trustedSigners wherever archives are restored on another machine (here, your own
    signing key is trusted without it).

    \b
    Example:
      seedbed keygen            # then add the printed age1... line to backup.recipients
    """
    from .commands.backup import make_keys

    made = make_keys(output_file, signing_file)
    if made.kept_identity:
        click.echo(f"{made.identity} exists and is kept", err=True)
    if made.signer_public:
        click.echo(f"signing key written to {made.signing_key}; its public key (backup.trustedSigners where "
                   "archives are restored on another machine):", err=True)
        click.echo(made.signer_public)
    if made.recipient:
        click.echo(f"age identity written to {made.identity}; its public key (backup.recipients):", err=True)
        click.echo(made.recipient)


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
@skip_signature_option
@output_option
@pass_state
def certs_budget(state: State, ct: bool, ledger_file: Path | None, domains: tuple[str, ...],
                 insecure_skip_signature: bool, output: str) -> None:
    """Show the Let's Encrypt budget left per registered domain and per exact set of names.

    \b
    Examples:
      seedbed certs budget
      seedbed certs budget --ct --domain example.org --output json
    """
    from .certs.budget import validate_domain
    from .commands.backup import open_for_restore
    from .commands.certs import budget_report

    cfg = state.config()
    domains = tuple(validate_domain(d) for d in domains)  # a typo is an error before anything is read
    # The ledger counts for the domain whatever cluster wrote the archive: accept other clusters'.
    archive = (open_for_restore(cfg, ledger_file, from_other_cluster=True, skip_signature=insecure_skip_signature)
               if ledger_file is not None else None)

    async def report_from(clients: Any) -> Any:
        return await budget_report(cfg, clients, ct=ct, archive=archive, domains=list(domains), out=state.out)

    report = _connected(state, cfg, report_from, optional="budget from the other sources only")
    if output == "json":
        from .output import print_json

        print_json(report.to_json())
    else:
        click.echo(report.render_text())


# ---------------------------------------------------------------------------- demo


@cli.command()
@click.option("--keep", is_flag=True, help="Leave the rebuilt cluster running (until Ctrl-C) to try it by hand.")
@click.option("--manifests", type=click.Path(path_type=Path, file_okay=False), default=None,
              help="Folder of upstream files: the Gitea chart (gitea-chart-12.4.0/) and, for an offline run, "
                   "the release manifests (default $SEEDBED_UPSTREAM_FIXTURES or ../shared/fixtures/upstream).")
def demo(keep: bool, manifests: Path | None) -> None:
    """Try the whole journey on a simulated cluster, with the real commands and their real output.

    A Kubernetes API emulator, simulated Longhorn and Flux controllers and a Gitea serving real git
    start on 127.0.0.1 in a temporary folder. Then: keygen, bootstrap, status, a commit that
    reconfigures the Git server through Flux, backup, teardown, bootstrap --restore on a fresh
    cluster, status. The folder (keys, backup, clusters) is removed at the end, unless --keep.
    Needs the demo extra: pip install 'seedbed[demo]' (scripts/install installs it).

    \b
    Examples:
      seedbed demo
      seedbed demo --keep        # then kubectl --kubeconfig <printed path> get pods -A
    """
    from . import files
    from .commands.demo import Demo

    # The journey runs each command through `main`, as the console script would.
    Demo(main, manifests=files.expand(manifests) if manifests else None, keep=keep).run()


# ---------------------------------------------------------------------------- completion


@cli.command()
@click.argument("shell", type=click.Choice(["bash", "zsh", "fish"]))
def completion(shell: str) -> None:
    """Print the shell completion script, as `kubectl completion` and `flux completion` do.

    \b
    Examples:
      source <(seedbed completion bash)                           # this shell
      seedbed completion bash > /etc/bash_completion.d/seedbed    # every shell
      seedbed completion zsh > "${fpath[1]}/_seedbed"
      seedbed completion fish > ~/.config/fish/completions/seedbed.fish
    """
    from click.shell_completion import get_completion_class

    cls = get_completion_class(shell)
    assert cls is not None  # the Choice above lists only shells click supports
    click.echo(cls(cli, {}, "seedbed", "_SEEDBED_COMPLETE").source())


# ---------------------------------------------------------------------------- global flags anywhere


def _global(attr: str, *decls: str, **kw: Any) -> click.Option:
    """A global flag repeated on a sub-command, so it works after the verb too (kubectl, flux)."""

    def remember(ctx: click.Context, param: click.Parameter, value: Any) -> None:
        value = _not_empty(ctx, param, value)
        if value is None or value is False:
            return  # not given here: the value before the verb (or the default) stands
        state = ctx.find_object(State)
        if state is not None:
            setattr(state, attr, Path(value) if attr == "config_path" else value)

    return click.Option(list(decls), expose_value=False, callback=remember, **kw)


def _add_global_flags(group: click.Group) -> None:
    for command in group.commands.values():
        command.params += [
            _global("config_path", "--config", "-c", default=None, help="The config file."),
            _global("kubeconfig", "--kubeconfig", default=None, help="Override cluster.kubeconfig."),
            _global("context", "--context", default=None, help="Override cluster.context."),
            _global("verbose", "--verbose", "-v", is_flag=True, default=False, help="Show more detail."),
            _global("quiet", "--quiet", "-q", is_flag=True, default=False, help="Show only warnings and errors."),
            _global("color", "--color/--no-color", default=None, help="Force or disable colour."),
        ]
        if isinstance(command, click.Group):
            _add_global_flags(command)


_add_global_flags(cli)


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


def _connected(state: State, cfg: Any, command: Callable[[Any], Any], *, optional: str = "") -> Any:
    """Run ``command(clients)`` with the clients built once, here (the composition root).

    With ``optional``, an unreachable cluster is a warning and the command gets None instead.
    """
    from .commands.clients import connect

    async def main() -> Any:
        try:
            clients = await connect(cfg, state.out)
        except SeedbedError as e:
            if not optional:
                raise
            state.out.warn(f"cluster not reachable ({e.message}); {optional}")
            return await command(None)
        try:
            return await command(clients)
        finally:
            await clients.aclose()

    return _run(main())


def _status(state: State) -> Any:
    from .commands.status import Check, StatusReport, collect_status

    cfg = state.config()
    try:
        return _connected(state, cfg, lambda clients: collect_status(cfg, clients))
    except ConfigError:
        raise  # a broken kubeconfig is a config error: exit 2 with its fix
    except SeedbedError as e:  # an unreachable cluster is a failed check, exit 1
        return StatusReport(cfg.cluster.name, [Check("cluster", "fail", e.message, e.message, e.fix or "")])


def run() -> None:
    """The `seedbed` process (console script and ``python -m seedbed``): :func:`main` in a process
    set up for a command that lives seconds to minutes and then exits (:func:`_tune_process`)."""
    _tune_process()
    main()


def _tune_process() -> None:
    """What a short-lived process does not need. Measured on a backup of 2,500 objects at 20 ms,
    these were a third of its time; in-process callers (the tests) keep CPython's defaults.

    - The cyclic garbage collector: with the defaults it made 188 passes over the API answers
      (~65 ms) and one more at exit (~140 ms), for no garbage (those dicts are freed by reference
      counting). A first-generation threshold of 100,000 container allocations (default 700) leaves
      a backup without a pass, while a long bootstrap still collects the reference cycles asyncio
      leaves (exceptions and their tracebacks); at exit everything still alive is frozen
      (gc.freeze: out of the collector's view) so the interpreter's final pass has nothing to scan.
      Files are flushed and closed by then, and the operating system takes back the memory.
    - HTTP/2: seedbed speaks HTTP/1.1 to the API server (its port-forwards are HTTP/1.1 websocket
      upgrades), but httpcore2 loads its HTTP/2 connection classes, and with them h2 and hpack
      (~10 ms), whenever h2 is installed, and lightkube's dependency on httpx2[http2] installs it.
      A None in sys.modules makes that optional import fail as if h2 were absent (httpcore2's own
      fallback: ``try: from .http2 import ... except ImportError``), so it is never loaded.
    """
    import atexit
    import gc

    gc.set_threshold(100_000, *gc.get_threshold()[1:])
    atexit.register(gc.freeze)
    sys.modules.setdefault("h2", None)  # type: ignore[arg-type]


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
