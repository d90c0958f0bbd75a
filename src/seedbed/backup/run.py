"""`seedbed backup` and `seedbed restore`: the cluster-facing sequence around the archive format."""

from __future__ import annotations

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
                     identities: list[Path] | None = None, skip_signature: bool = False) -> Archive:
    """Decrypt, verify, check the signature and validate every entry; an ArchiveError here means
    nothing was written."""
    from .archive import open_archive
    from .validate import Policy

    policy = Policy.from_config(cfg, from_other_cluster=from_other_cluster, skip_signature=skip_signature)
    return open_archive(path, identity_paths(cfg, identities), policy=policy)


def verified_text(path: Path, archive: Archive) -> str:
    """What the user is told once an archive opened: how many entries, and who signed it."""
    from .signing import SKIP_FLAG

    who = f"signed by {archive.signer}" if archive.signer else f"signature NOT checked ({SKIP_FLAG})"
    return f"{path}: decrypted and verified ({len(archive.entries)} entries, {who})"


async def stored_ledger(kube: Any) -> list[Any]:
    """The ledger a previous restore put in the cluster, so that history survives many rebuilds.

    Anyone who can edit ConfigMaps in kube-system can change it: it is validated like an archive's.
    """
    from ..certs.ledger import Ledger
    from ..errors import ClusterError

    where = f"ConfigMap {LEDGER_NAMESPACE}/{LEDGER_CONFIGMAP}"
    fix = (f"delete it (kubectl -n {LEDGER_NAMESPACE} delete configmap {LEDGER_CONFIGMAP}): the next backup "
           "takes the history from the cluster's certificates, and a restore writes it again")
    cm = await kube.get("v1", "ConfigMap", LEDGER_CONFIGMAP, namespace=LEDGER_NAMESPACE)
    data = (cm or {}).get("data")
    text = data.get("ledger.json") if isinstance(data, dict) else None
    if cm is not None and not isinstance(text, str):
        raise ClusterError(f"{where} has no ledger.json text", fix=fix)
    return list(Ledger.from_json(text, what=where, error=ClusterError, fix=fix)) if text else []


async def store_ledger(kube: Any, text: str) -> None:
    await kube.set_configmap_data(LEDGER_NAMESPACE, LEDGER_CONFIGMAP, {"ledger.json": text})


async def run_backup(cfg: Config, output_file: Path, out: Output, *, skip_volumes: bool = False,
                     kube: Any = None) -> str:
    from .. import files
    from ..certs.ledger import Ledger
    from ..certs.report import cluster_issuances
    from ..errors import ConfigError
    from ..kube import Kube
    from . import archive as fmt
    from . import make_backup

    # The output first: a missing folder, a folder, or a device seedbed must not replace is found
    # before a single Longhorn backup is taken.
    target = files.check_output(output_file, "backup archive")
    if not cfg.backup.recipients:
        raise ConfigError("backup.recipients is empty: the archive would have no one to decrypt it",
                          fix="run `seedbed keygen` and add the printed age1... key to backup.recipients")
    for recipient in cfg.backup.recipients:
        fmt.parse_recipient(recipient)  # a bad key fails before any cluster work
    own = kube is None
    if own:
        kube = await Kube.connect(cfg.cluster, base_dir=cfg.base_dir)
    try:
        # Connected, nothing read yet: the key that signs the archive must be there before any backup work.
        signing_key = _signing_key(cfg)
        out.begin("Backup")
        out.activity("bundling the in-cluster repository")
        bundle = await _git_bundle(cfg, kube, out)
        issuances, _ = await cluster_issuances(kube)
        ledger = Ledger.merge(issuances, await stored_ledger(kube))
        out.activity("reading certificates and Secrets" + ("" if skip_volumes else ", backing up volumes"))
        if skip_volumes:
            cfg = cfg.model_copy(update={"backup": cfg.backup.model_copy(
                update={"volumes": [], "include_git_server_volume": False})})
        result = await make_backup(kube, cfg, git_bundle=bundle, ledger=ledger, signing_key=signing_key)
        fmt.write(target, result.ciphertext)
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


def _signing_key(cfg: Config) -> Any:
    from ..errors import ConfigError
    from .signing import default_signing_key_path, load_signing_key

    path = default_signing_key_path(cfg)
    if not path.exists():
        raise ConfigError(f"no signing key at {path}: backups are signed, so that restore can tell yours "
                          "from one forged with your public key",
                          fix="run `seedbed keygen` (it adds the signing key beside an existing age identity), "
                              "or set backup.signingKey")
    return load_signing_key(path)


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
                      from_other_cluster: bool, identities: list[Path], kube: Any = None,
                      skip_signature: bool = False) -> list[Any]:
    """Volumes, Secrets, cert-manager objects, then the repository if the server's copy is missing or
    behind; returns one Summary per phase (names and reasons only, never a value)."""
    from ..kube import Kube
    from .restore import PlanItem, Summary, git_bundle, git_bundle_name, ledger, restore_all

    archive = open_for_restore(cfg, archive_path, from_other_cluster=from_other_cluster, identities=identities,
                               skip_signature=skip_signature)
    out.done(verified_text(archive_path, archive))
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
            stored = ledger(archive)
            if stored is not None:
                await store_ledger(kube, stored.to_json())
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
