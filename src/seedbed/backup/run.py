"""`seedbed backup` and `seedbed restore`: the cluster-facing sequence around the archive format."""

from __future__ import annotations

import asyncio
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

import platformdirs

if TYPE_CHECKING:
    from ..config import Config
    from ..output import Output
    from .archive import Archive

LEDGER_CONFIGMAP = "seedbed-ledger"
LEDGER_NAMESPACE = "kube-system"


def default_identity_path() -> Path:
    return Path(platformdirs.user_config_dir("seedbed")) / "age.key"


def identity_paths(cfg: Config, extra: list[Path] | None = None) -> list[Path]:
    if extra:
        return list(extra)
    return [cfg.resolve(cfg.backup.identity_file) if cfg.backup.identity_file else default_identity_path()]


def open_for_restore(cfg: Config, path: Path, *, from_other_cluster: bool = False,
                     identities: list[Path] | None = None) -> Archive:
    """Decrypt and verify every entry; an ArchiveError here means nothing was written."""
    from .archive import open_archive

    return open_archive(path, identity_paths(cfg, identities), expect_cluster=cfg.cluster.name,
                        from_other_cluster=from_other_cluster)


async def stored_ledger(kube: Any) -> list[Any]:
    """The ledger a previous restore put in the cluster, so that history survives many rebuilds."""
    from ..certs.ledger import Ledger

    cm = await kube.get("v1", "ConfigMap", LEDGER_CONFIGMAP, namespace=LEDGER_NAMESPACE)
    text = ((cm or {}).get("data") or {}).get("ledger.json")
    return list(Ledger.from_json(text)) if text else []


async def store_ledger(kube: Any, text: str) -> None:
    await kube.set_configmap_data(LEDGER_NAMESPACE, LEDGER_CONFIGMAP, {"ledger.json": text})


async def run_backup(cfg: Config, output_file: Path, out: Output, *, skip_volumes: bool = False,
                     kube: Any = None) -> str:
    from ..certs.ledger import Ledger
    from ..certs.report import cluster_issuances
    from ..errors import ConfigError
    from ..kube import Kube
    from . import archive as fmt
    from . import make_backup
    from .collect import collect

    if not cfg.backup.recipients:
        raise ConfigError("backup.recipients is empty: the archive would have no one to decrypt it",
                          fix="run `seedbed keygen` and add the printed age1... key to backup.recipients")
    for recipient in cfg.backup.recipients:
        fmt.parse_recipient(recipient)  # a bad key fails before any cluster work
    own = kube is None
    if own:
        kube = await Kube.connect(cfg.cluster, base_dir=cfg.base_dir)
    try:
        out.begin("Backup")
        out.activity("bundling the in-cluster repository, reading certificates and Secrets")
        # Independent reads, concurrently: on a slow link each one after another costs its round trips
        # (and the bundle, through a port-forward, costs many).
        bundle, (issuances, _), stored, collected = await asyncio.gather(
            _git_bundle(cfg, kube, out), cluster_issuances(kube), stored_ledger(kube), collect(kube, cfg))
        ledger = Ledger.merge(issuances, stored)
        if skip_volumes:
            cfg = cfg.model_copy(update={"backup": cfg.backup.model_copy(
                update={"volumes": [], "include_git_server_volume": False})})
        else:
            out.activity("backing up volumes")
        result = await make_backup(kube, cfg, git_bundle=bundle, ledger=ledger, collected=collected)
        fmt.write(output_file, result.ciphertext)
        entries = list(result.index.get("entries", {}))
        from ..status import record_backup

        await record_backup(kube, output_file.name, len(entries))
    finally:
        out.close()
        if own:
            await kube.close()
    counts: dict[str, int] = {}
    for name in entries:
        kind = fmt.entry_kind(name)
        counts[kind] = counts.get(kind, 0) + 1
    parts = ", ".join(f"{n} {k}" for k, n in sorted(counts.items()))
    return f"wrote {output_file} ({parts}), encrypted to {len(cfg.backup.recipients)} recipient(s)"


async def _on_repo(cfg: Config, kube: Any, out: Output, action: Any, failed: str) -> Any:
    """``await action(url, token)`` on the in-cluster repository through a port-forward; without a
    reachable Git server, a warning starting with ``failed`` and None (the rest of the work goes on)."""
    from ..errors import SeedbedError
    from ..steps.base import Context, Options
    from ..steps.gitserver import repo_remote

    ctx = Context(cfg=cfg, kube=kube, options=Options(), manifests=None, out=out)  # type: ignore[arg-type]
    try:
        async with repo_remote(ctx) as (url, token):
            return await action(url, token)
    except SeedbedError as e:
        out.warn(f"{failed}: {e.message}")
        return None


async def _git_bundle(cfg: Config, kube: Any, out: Output) -> bytes | None:
    """The repository as a git bundle, through a port-forward; None when there is no Git server."""
    from .. import git

    async def bundle(url: str, token: str) -> bytes | None:
        with tempfile.TemporaryDirectory(prefix="seedbed-bundle-") as tmp:
            # The bundle holds the GitOps tree, which is in Git anyway (and holds no Secrets);
            # it is read back into memory and the temporary copy removed at once.
            dest = Path(tmp) / "repo.bundle"
            made = await git.retrying(lambda: git.bundle_create(url, dest, username=cfg.git_server.admin_user,
                                                                token=token))
            return dest.read_bytes() if made else None

    return await _on_repo(cfg, kube, out, bundle, "repository not backed up")


async def run_restore(cfg: Config, archive_path: Path, out: Output, *, dry_run: bool, force: bool,
                      from_other_cluster: bool, identities: list[Path], kube: Any = None) -> list[Any]:
    """Volumes, Secrets, cert-manager objects, then the repository if the server's copy is missing or
    behind; returns one Summary per phase (names and reasons only, never a value)."""
    from ..kube import Kube
    from .restore import PlanItem, Summary, git_bundle, git_bundle_name, ledger_text, restore_all

    archive = open_for_restore(cfg, archive_path, from_other_cluster=from_other_cluster, identities=identities)
    out.done(f"{archive_path}: decrypted and verified ({len(archive.entries)} entries)")
    own = kube is None
    if own:
        kube = await Kube.connect(cfg.cluster, base_dir=cfg.base_dir)
    try:
        summaries = await restore_all(kube, archive, force=force, dry_run=dry_run)
        bundle, repo = git_bundle(archive), git_bundle_name(archive)
        if bundle is not None and repo:
            git = Summary("git", dry_run=dry_run)
            if dry_run:
                git.items.append(PlanItem("git", "Repository", "", repo, "restore",
                                          "pushed back if the server's copy is missing or behind"))
            else:
                pushed = await _push_bundle(cfg, kube, out, bundle)
                git.items.append(PlanItem("git", "Repository", "", repo, "restore" if pushed else "skip",
                                          "" if pushed else "the server's copy is up to date, or no Git server "
                                          "runs yet (`seedbed bootstrap --restore` pushes it then)"))
            summaries.append(git)
        if not dry_run:
            text = ledger_text(archive)
            if text:
                await store_ledger(kube, text)
    finally:
        out.close()
        if own:
            await kube.close()
    return summaries


async def _push_bundle(cfg: Config, kube: Any, out: Output, bundle: bytes) -> int:
    """Push the archived branches that the server is missing or behind on; 0 when there is no server."""
    from .. import git

    async def push(url: str, token: str) -> int:
        return await git.retrying(lambda: git.push_bundle(bundle, url, username=cfg.git_server.admin_user,
                                                          token=token))

    return await _on_repo(cfg, kube, out, push, "repository not restored") or 0


def restore_text(summaries: list[Any], *, dry_run: bool) -> str:
    lines = []
    for s in summaries:
        lines.append(str(s))
        if dry_run or s.skipped:
            lines += [f"  {line}" for line in s.lines() if dry_run or line.startswith("skip")]
    return "\n".join(lines)
