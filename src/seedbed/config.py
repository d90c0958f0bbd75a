"""seedbed.yaml: the one file that describes a cluster's bootstrap.

The sections are msgspec Structs: immutable, strictly typed (YAML's ``true`` is not 1, ``"3"`` is not 3),
unknown keys rejected. YAML keys are camelCase like the Kubernetes objects they end up in; Python
attributes are snake_case. :func:`load` turns every problem into ``seedbed.yaml:LINE: path.to.key:
message`` so that the user can jump straight to it.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from decimal import Decimal
from pathlib import Path
from typing import Annotated, Any, Literal

import msgspec
import yaml
from msgspec import Meta

from . import files, yamlutil
from .errors import ConfigError

DEFAULT_CONFIG_NAME = "seedbed.yaml"

# Current upstream releases. A change here is a change of what a fresh bootstrap installs.
LONGHORN_VERSION = "v1.12.1"
FLUX_VERSION = "v2.9.3"
GITEA_VERSION = "1.27"
FORGEJO_VERSION = "16"

DNS_NAME = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
VERSION = re.compile(r"^v\d+\.\d+\.\d+([-+][0-9A-Za-z.-]+)?$")


class Check:
    """A check of one field's value, put in its ``Annotated[...]`` beside msgspec's ``Meta`` (msgspec
    ignores it): it returns the value (perhaps normalised) or raises ValueError saying what is wrong."""

    __slots__ = ("func",)

    def __init__(self, func: Callable[[Any], Any]) -> None:
        self.func = func


class Model(msgspec.Struct, rename="camel", forbid_unknown_fields=True, frozen=True, kw_only=True):
    """Base for every config section: camelCase keys, unknown keys rejected, immutable.

    Whether a section is made from YAML (``msgspec.convert(..., strict=True)``: YAML already gives
    ints, bools and strings their types, and coercing `true` to 1 or "3" to 3 would hide mistakes) or
    by a constructor, ``__post_init__`` runs its fields' checks, then the section's own (``_check``).
    """

    def __post_init__(self) -> None:
        for name, key, checks in _checks_of(type(self)):
            value = before = getattr(self, name)
            try:
                for check in checks:
                    value = check(value)
            except ValueError as e:
                raise ValueError(f"{key}: {e}") from None
            if value is not before:
                msgspec.structs.force_setattr(self, name, value)
        self._check()

    def _check(self) -> None:
        """The checks of the section as a whole: a ValueError names what is wrong."""


_CHECKS: dict[type, tuple[tuple[str, str, tuple[Callable[[Any], Any], ...]], ...]] = {}


def _checks_of(cls: type) -> tuple[tuple[str, str, tuple[Callable[[Any], Any], ...]], ...]:
    """(attribute, YAML key, checks) of each field of ``cls`` with a :class:`Check`; worked out once."""
    found = _CHECKS.get(cls)
    if found is None:
        found = _CHECKS[cls] = tuple(
            (f.name, f.encode_name, checks) for f in msgspec.structs.fields(cls) if (checks := _field_checks(f.type)))
    return found


def _field_checks(tp: Any) -> tuple[Callable[[Any], Any], ...]:
    return tuple(m.func for m in getattr(tp, "__metadata__", ()) if isinstance(m, Check))


def _dns_label(value: str) -> str:
    if len(value) > 63 or not DNS_NAME.match(value):
        raise ValueError(
            f"{_short(value)!r} is not a valid Kubernetes name (lower-case letters, digits and '-', at most 63)"
        )
    return value


DnsLabel = Annotated[str, Check(_dns_label)]


def _release_tag(value: str) -> str:
    if not VERSION.fullmatch(value):
        raise ValueError(f"{_short(value)!r} is not a release tag like v1.2.3")
    return value


ReleaseTag = Annotated[str, Check(_release_tag)]


def _finite(value: float) -> float:
    if not math.isfinite(value):
        raise ValueError("must be a finite number")
    return value


# Seconds to wait; an int is fine (600), infinity is never what anyone meant.
Timeout = Annotated[float, Meta(gt=0), Check(_finite)]


class ClusterConfig(Model):
    """Which cluster to talk to. seedbed never creates clusters: it starts from a kubeconfig."""

    name: Annotated[DnsLabel, Meta(description="A short name for this cluster; recorded in backups.")] = "homelab"
    kubeconfig: Annotated[str | None, Meta(
        description="Path to the kubeconfig; default: $KUBECONFIG, then ~/.kube/config.")] = None
    context: Annotated[str | None, Meta(description="kubeconfig context; default: the current context.")] = None


class BackupCredentials(Model):
    """Where the backup target's credentials come from. The values never appear in plan output."""

    secret_name: Annotated[str, Meta(description="Secret in longhorn-system.")] = "longhorn-backup-credentials"
    from_file: Annotated[str | None, Meta(
        description="A KEY=VALUE file (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_ENDPOINTS...).")] = None
    from_env: Annotated[dict[str, str] | None, Meta(
        description="Secret key -> name of the environment variable holding its value.")] = None

    def _check(self) -> None:
        if self.from_file and self.from_env:
            raise ValueError("give fromFile or fromEnv, not both")


def _data_path(value: str) -> str:
    if not value.startswith("/"):
        raise ValueError(f"must be an absolute path (starting with '/'), not {_short(value)!r}")
    if value.rstrip("/") == "" or ".." in value.split("/"):
        raise ValueError(f"{_short(value)!r} is not a usable data path: give a dedicated folder such as /var/lib/longhorn")
    return value


def _backup_target(value: str | None) -> str | None:
    if value and not re.match(r"^(s3://[^@/]+@[^/]+/.*|nfs://[^:/]+:/.*|cifs://.+|azblob://.+)$", value):
        raise ValueError("must look like s3://bucket@region/ or nfs://host:/path")
    return value or None


class LonghornConfig(Model):
    version: Annotated[ReleaseTag, Meta(description="Longhorn release tag.")] = LONGHORN_VERSION
    data_path: Annotated[str, Check(_data_path), Meta(
        description="Node data path. Choose a stable location every node provides by a bind mount "
                    "(never a symlink: Longhorn cannot follow it).")] = "/var/lib/longhorn"
    backup_target: Annotated[str | None, Check(_backup_target), Meta(
        description="s3://bucket@region/path or nfs://host:/path; empty for none.")] = None
    backup_credentials: BackupCredentials | None = None
    default_storage_class: Annotated[bool, Meta(description="Make the `longhorn` StorageClass the default.")] = True
    replica_count: Annotated[int, Meta(
        ge=1, le=20, description="Default replicas; 1 or 2 for small clusters.")] = 3
    ready_timeout: Annotated[Timeout, Meta(description="Seconds to wait for Longhorn to be ready.")] = 600.0


CHART_VERSION = re.compile(r"^\d+\.\d+\.\d+([-+][0-9A-Za-z.-]+)?$")


def _chart_version(value: str | None) -> str | None:
    if value is not None and not CHART_VERSION.fullmatch(value):
        raise ValueError(f"{_short(value)!r} is not an exact chart version like 12.4.0 (no ranges)")
    return value


class GitServerChartConfig(Model):
    """The official chart the Git server's HelmRelease uses."""

    version: Annotated[str | None, Check(_chart_version), Meta(
        description="Exact chart version; default: the one seedbed pins for the flavour.")] = None


# gitServer.version when the file does not give it: the flavour's own (a sentinel YAML cannot write).
_FLAVOR_VERSION: Any = msgspec.UNSET


class GitServerConfig(Model):
    """The bootstrap Git server. Its names are a contract with the Flux-managed re-deploy."""

    flavor: Literal["gitea", "forgejo"] = "gitea"
    version: Annotated[str, Meta(
        description="Image version; the rootless flavour is always used.")] = _FLAVOR_VERSION
    image: Annotated[str | None, Meta(description="Full image reference, overriding flavor and version.")] = None
    namespace: DnsLabel = "gitea"
    pvc_name: Annotated[DnsLabel, Meta(
        description="Data claim (the Gitea Helm chart's name).")] = "gitea-shared-storage"
    storage_size: str = "10Gi"
    storage_class: str = "longhorn"
    http_service: Annotated[DnsLabel, Meta(
        description="HTTP Service, port 3000 (the Helm chart's name).")] = "gitea-http"
    ssh_service: Annotated[DnsLabel, Meta(description="SSH Service, port 22 (the Helm chart's name).")] = "gitea-ssh"
    admin_user: str = "seedbed-admin"
    admin_secret: Annotated[str, Meta(description="Secret holding the admin credentials.")] = "gitea-admin"
    host_key_secret: Annotated[str, Meta(
        description="Secret holding the pinned SSH host key.")] = "gitea-ssh-host-key"
    ready_timeout: Annotated[Timeout, Meta(description="Seconds to wait for the Git server to be ready.")] = 600.0
    chart: GitServerChartConfig = msgspec.field(default_factory=GitServerChartConfig)

    def _check(self) -> None:
        if self.version is _FLAVOR_VERSION:
            # Forgejo numbers its releases on its own; a Gitea version would pick a non-existent tag.
            msgspec.structs.force_setattr(
                self, "version", FORGEJO_VERSION if self.flavor == "forgejo" else GITEA_VERSION)

    @property
    def fullname(self) -> str:
        """The chart's ``fullname`` (its ``fullnameOverride``): the Gitea and Forgejo charts name their
        Services ``<fullname>-http`` and ``<fullname>-ssh`` (gitea-chart 12.4.0 templates/gitea/
        http-svc.yaml and ssh-svc.yaml), so httpService and sshService are such a pair
        (:func:`check_git_server`)."""
        return self.http_service.removesuffix("-http")


def _repo_name(value: str) -> str:
    if not re.match(r"^[A-Za-z0-9_.-]{1,100}$", value) or value in {".", ".."}:
        raise ValueError(f"{_short(value)!r} is not a valid Gitea name (letters, digits, '-', '_', '.')")
    return value


RepoName = Annotated[str, Check(_repo_name)]


class RepoConfig(Model):
    """The one repository Flux syncs from, and the local work tree that seeds it."""

    owner: RepoName = "homelab"
    owner_type: Literal["user", "org"] = "org"
    name: RepoName = "gitops"
    branch: str = "main"
    path: Annotated[str, Meta(description="Local git work tree to push (relative to seedbed.yaml).")] = "./gitops"
    authorized_keys: Annotated[list[str], Meta(
        description="Files with the operator's SSH public keys, added to the owner.")] = msgspec.field(default_factory=list)
    deploy_key_read_only: Annotated[bool, Meta(description="Flux's deploy key is read-only unless false.")] = True
    force_push: Annotated[bool, Meta(description="Allow a non-fast-forward push (never the default).")] = False


class SopsConfig(Model):
    """The SOPS keys kustomize-controller decrypts the repository's Secrets with. seedbed puts them in
    Secrets of flux-system before Flux's first sync; the private keys are never written anywhere else."""

    age_key_files: Annotated[list[str], Meta(
        description="age identity files (lines AGE-SECRET-KEY-" "1...), e.g. ~/.config/sops/age/keys.txt.",
    )] = msgspec.field(default_factory=list)
    gpg_key_files: Annotated[list[str], Meta(
        description="Armored GPG private keys (gpg --export-secret-keys --armor FINGERPRINT).",
    )] = msgspec.field(default_factory=list)
    age_secret: Annotated[DnsLabel, Meta(description="Secret in flux-system for the age identities.")] = "sops-age"
    gpg_secret: Annotated[DnsLabel, Meta(
        description="Secret in flux-system for the GPG keys (may equal ageSecret).")] = "sops-gpg"
    decrypt_root: Annotated[bool, Meta(
        description="Give the flux-system Kustomization spec.decryption (the age Secret, else the GPG one).",
    )] = True

    def _check(self) -> None:
        if not self.age_key_files and not self.gpg_key_files:
            raise ValueError("give ageKeyFiles or gpgKeyFiles (or remove the sops section)")


def _ns_name(value: str) -> str:
    if value.count("/") != 1:
        raise ValueError("must be namespace/name, e.g. flux-system/flux-system")
    return value


class FluxConfig(Model):
    version: Annotated[ReleaseTag, Meta(description="Flux release tag.")] = FLUX_VERSION
    path: Annotated[str | None, Meta(
        description="Folder in the repository; default clusters/<cluster name>.")] = None
    secret: Annotated[str, Check(_ns_name), Meta(
        description="namespace/name of Flux's Git credentials.")] = "flux-system/flux-system"
    interval: Annotated[str, Meta(description="How often Flux polls the repository.")] = "1m"
    ready_timeout: Annotated[Timeout, Meta(description="Seconds to wait for Flux to be Ready.")] = 600.0
    sops: Annotated[SopsConfig | None, Meta(
        description="SOPS decryption keys Flux needs for the repository's Secrets.")] = None

    @property
    def secret_ref(self) -> tuple[str, str]:
        """flux.secret as (namespace, name)."""
        namespace, name = self.secret.split("/")
        return namespace, name


class SecretSelection(Model):
    namespaces: Annotated[list[str], Meta(description="Back up every Secret in these.")] = msgspec.field(default_factory=list)
    label_selector: Annotated[str | None, Meta(description="And/or every Secret matching this selector.")] = None


class VolumeRef(Model):
    namespace: str
    pvc: str


def _signers(values: list[str]) -> list[str]:
    for value in values:
        if not value.startswith("ssh-ed25519 "):
            raise ValueError(f"{value[:20]!r}... is not an ssh-ed25519 public key (the line `seedbed keygen` "
                             "printed for the signing key)")
    return values


def _recipients(values: list[str]) -> list[str]:
    for value in values:
        if not (value.startswith("age1") or value.startswith("ssh-ed25519 ")):
            raise ValueError(f"{value[:20]!r}... is not an age1... or ssh-ed25519 public key")
    return values


class BackupConfig(Model):
    recipients: Annotated[list[str], Check(_recipients), Meta(
        description="age X25519 (age1...) or ssh-ed25519 public keys.")] = msgspec.field(default_factory=list)
    identity_file: Annotated[str | None, Meta(
        description="age or ssh private key used by restore; default ~/.config/seedbed/age.key.")] = None
    secrets: SecretSelection = msgspec.field(default_factory=SecretSelection)
    volumes: Annotated[list[VolumeRef], Meta(
        description="PVCs backed up through Longhorn.")] = msgspec.field(default_factory=list)
    include_git_server_volume: Annotated[bool, Meta(description="Also back up the Git server's data claim.")] = True
    signing_key: Annotated[str | None, Meta(
        description="ed25519 private key that signs backups (OpenSSH or PKCS#8); default signing.key "
                    "beside identityFile (~/.config/seedbed/signing.key).")] = None
    trusted_signers: Annotated[list[str], Check(_signers), Meta(
        description="ssh-ed25519 public keys whose signed archives restore accepts; "
                    "default: the public half of signingKey.")] = msgspec.field(default_factory=list)


class Dns01Solver(Model):
    provider: Annotated[str, Meta(
        description="cert-manager DNS-01 provider key, e.g. cloudflare.")] = "cloudflare"
    secret_name: Annotated[str, Meta(
        description="Credential Secret in cert-manager's namespace.")] = "cloudflare-api-token"
    secret_key: str = "api-token"


class Http01Solver(Model):
    ingress_class: str = "nginx"


class WildcardConfig(Model):
    domain: str
    namespace: str = "cert-manager"
    secret_name: Annotated[str | None, Meta(
        description="Default: wildcard-<domain with dots as dashes>-tls.")] = None


class CertificatesConfig(Model):
    acme: Annotated[Literal["staging", "production"], Meta(
        description="Let's Encrypt environment; staging is safe for throwaway clusters.")] = "staging"
    email: Annotated[str | None, Meta(description="ACME account e-mail.")] = None
    domain: Annotated[str | None, Meta(description="The cluster's base domain (CLUSTER_DOMAIN).")] = None
    solver: Literal["http01", "dns01"] = "http01"
    http01: Http01Solver = msgspec.field(default_factory=Http01Solver)
    dns01: Dns01Solver = msgspec.field(default_factory=Dns01Solver)
    namespace: Annotated[str, Meta(description="cert-manager's namespace.")] = "cert-manager"
    wildcard: WildcardConfig | None = None
    ignore_budget: bool = False


class Config(Model):
    """The whole of seedbed.yaml."""

    cluster: ClusterConfig = msgspec.field(default_factory=ClusterConfig)
    longhorn: LonghornConfig = msgspec.field(default_factory=LonghornConfig)
    git_server: GitServerConfig = msgspec.field(default_factory=GitServerConfig)
    repo: RepoConfig = msgspec.field(default_factory=RepoConfig)
    flux: FluxConfig = msgspec.field(default_factory=FluxConfig)
    backup: BackupConfig = msgspec.field(default_factory=BackupConfig)
    certificates: CertificatesConfig = msgspec.field(default_factory=CertificatesConfig)

    # Not keys of the file (parse() refuses them there, and sets them): where the file was read from;
    # relative paths in it are relative to base_dir.
    base_dir: Path = msgspec.field(default_factory=Path.cwd)
    source: Path | None = None

    def _check(self) -> None:
        # A ConfigError is not a ValueError: msgspec lets it through, and parse() adds the line.
        check_values(self)

    @property
    def flux_path(self) -> str:
        """The cluster folder in the repository (flux.path, default clusters/<cluster name>), without
        ``./`` or a trailing ``/``: the ``flux-system`` Kustomization's ``spec.path``."""
        return check_flux_path(self.flux.path or f"clusters/{self.cluster.name}")

    def resolve(self, path: str) -> Path:
        """A path from the config, with ``~`` expanded and relative paths taken from the config's folder."""
        p = files.expand(path)
        return p if p.is_absolute() else self.base_dir / p

    @property
    def lock_file(self) -> Path:
        """The manifest lock file beside the config (like go.sum)."""
        return self.base_dir / "seedbed.lock"


# Config's fields that are not keys of seedbed.yaml (their names as keys would be).
_NOT_KEYS = ("baseDir", "source")

# --------------------------------------------------------------------------- value checks
# Every check on a value of seedbed.yaml lives here, so `seedbed config check` and `seedbed plan`
# agree. Each raises a ConfigError naming the key (``parse`` adds the file and line) and the fix.
# They run whenever a Config is made; the render modules trust its values, and call the checks that
# also normalise a value (a domain, a duration) for the normal form, or for a value from a flag.

HOSTNAME = re.compile(r"^(?=.{1,253}$)([a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?\.)+[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")
EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
OBJECT_NAME = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
IMAGE_TAG = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$")
QUANTITY = re.compile(r"^[0-9]+(\.[0-9]+)?(Ki|Mi|Gi|Ti|Pi|Ei|k|M|G|T|P|E)?$")
# Gitea's reserved user names (models/user/user.go reservedUsernames) and its name rules.
RESERVED_USERNAMES = frozenset({
    ".", "..", ".well-known", "admin", "api", "assets", "attachments", "avatar", "avatars", "captcha",
    "commits", "debug", "error", "explore", "favicon.ico", "ghost", "issues", "login", "manifest.json",
    "metrics", "milestones", "new", "notifications", "org", "pulls", "raw", "repo", "repo-avatars",
    "robots.txt", "search", "serviceworker.js", "ssh_info", "swagger.v1.json", "user", "v2", "gitea-actions",
})
_USERNAME = re.compile(r"^[0-9A-Za-z][-.\w]*$")
_USERNAME_BAD = re.compile(r"[-._]{2,}|[-._]$")
# DNS-01 providers whose whole configuration fits Dns01Solver (one Secret, one key), with the
# cert-manager field name of the credential reference for each.
DNS01_SECRET_FIELD = {
    "cloudflare": "apiTokenSecretRef",
    "digitalocean": "tokenSecretRef",
}


def check_data_path(path: str) -> str:
    """The Longhorn data path, or a ConfigError."""
    fix = "set longhorn.dataPath to an absolute path such as /var/lib/longhorn"
    if not path.startswith("/"):
        raise ConfigError(f"longhorn.dataPath: must be an absolute path (starting with '/'), not {path!r}", fix=fix)
    if path.rstrip("/") == "":
        # Longhorn would write replicas/ and its disk config straight into the node's root.
        raise ConfigError("longhorn.dataPath: '/' is the node's root filesystem, not a data folder", fix=fix)
    if ".." in path.split("/"):
        raise ConfigError(f"longhorn.dataPath: {path!r} contains '..'; give the path it resolves to", fix=fix)
    if any(ord(c) < 32 for c in path):
        raise ConfigError(f"longhorn.dataPath: {path!r} contains control characters", fix=fix)
    return path


SECRET_KEY = re.compile(r"^[-._a-zA-Z0-9]+$")  # a key of a Secret's data


def check_backup_credentials(longhorn: LonghornConfig) -> None:
    creds = longhorn.backup_credentials
    if creds is None:
        return
    if not longhorn.backup_target:
        raise ConfigError("longhorn.backupCredentials is set but longhorn.backupTarget is not",
                          fix="set longhorn.backupTarget (s3://bucket@region/ or nfs://host:/path), "
                              "or remove backupCredentials")
    for key in creds.from_env or {}:
        if not SECRET_KEY.match(key):
            raise ConfigError(
                f"longhorn.backupCredentials.fromEnv: {key!r} is not a valid Secret key (letters, digits, '-', '_', '.')",
                fix="rename the key in fromEnv",
            )


def check_domain(domain: str, *, key: str) -> str:
    """A lower-cased DNS name, or a ConfigError naming ``key``."""
    d = domain.strip().lower().rstrip(".")
    if d.startswith("*."):
        raise ConfigError(f"{key}: give the base domain, not {domain!r}",
                          fix=f"set {key} to {d[2:]!r}; seedbed adds the '*.' itself")
    if not HOSTNAME.match(d):
        raise ConfigError(f"{key}: {domain!r} is not a DNS name", fix=f"set {key} to a name like home.example.com")
    return d


def check_email(email: str) -> str:
    email = email.strip()
    if not EMAIL.match(email):
        raise ConfigError(f"certificates.email: {email!r} is not an e-mail address",
                          fix="set certificates.email to an address like you@example.com")
    return email


def check_dns01_provider(provider: str) -> str:
    if provider not in DNS01_SECRET_FIELD:
        raise ConfigError(
            f"certificates.dns01.provider: {provider!r} needs settings seedbed.yaml cannot express yet",
            fix=f"use one of {', '.join(sorted(DNS01_SECRET_FIELD))}, or commit your own ClusterIssuers "
            "named letsencrypt-staging and letsencrypt-production (with privateKeySecretRef "
            "letsencrypt-staging-account-key / letsencrypt-production-account-key) instead of "
            "`seedbed certs issuers`",
        )
    return provider


def check_wildcard(c: CertificatesConfig) -> str | None:
    """The wildcard's base domain (lower-cased), None without a wildcard, or a ConfigError."""
    from .domains import registered_domain

    w = c.wildcard
    if w is None:
        return None
    if c.solver != "dns01":
        # ACME only validates wildcard names through DNS-01 (RFC 8555 section 7.1.3).
        raise ConfigError(
            "certificates.wildcard: wildcards need DNS-01, but certificates.solver is http01",
            fix="set certificates.solver: dns01 and certificates.dns01 (provider, secretName), "
            "or remove certificates.wildcard",
        )
    domain = check_domain(w.domain, key="certificates.wildcard.domain")
    if registered_domain(domain) is None:
        raise ConfigError(f"certificates.wildcard.domain: {domain!r} is a public suffix, not a domain you own",
                          fix="use a domain you registered (or a name under it), e.g. home.example.com")
    return domain


def check_git_server(gs: GitServerConfig) -> None:
    """The names Gitea and Kubernetes must accept (the admin password is checked where it is made)."""
    user = gs.admin_user
    if (len(user) > 40 or not _USERNAME.match(user) or _USERNAME_BAD.search(user)
            or user.lower() in RESERVED_USERNAMES):
        raise ConfigError(
            f"gitServer.adminUser: {user!r} is not a user name Gitea accepts",
            fix="use letters, digits and single '-', '_' or '.' (not at the end), at most 40, "
                "and not a reserved name such as 'admin'",
        )
    for field, value in (("adminSecret", gs.admin_secret), ("hostKeySecret", gs.host_key_secret)):
        if len(value) > 253 or not OBJECT_NAME.match(value):
            raise ConfigError(f"gitServer.{field}: {value!r} is not a valid Secret name",
                              fix="use lower-case letters, digits, '-' and '.'")
    if gs.admin_secret == gs.host_key_secret:
        raise ConfigError("gitServer.adminSecret and gitServer.hostKeySecret name the same Secret",
                          fix="give them different names")
    if gs.http_service == gs.ssh_service:
        raise ConfigError("gitServer.httpService and gitServer.sshService name the same Service",
                          fix="give them different names (the chart uses gitea-http and gitea-ssh)")
    if gs.http_service != f"{gs.fullname}-http" or gs.ssh_service != f"{gs.fullname}-ssh":
        raise ConfigError(
            f"gitServer.httpService: {gs.http_service!r} and sshService {gs.ssh_service!r} are not a pair "
            "<name>-http and <name>-ssh, the only Service names the Gitea and Forgejo charts give",
            fix="use a pair such as gitea-http and gitea-ssh")
    version = gs.version.removesuffix("-rootless")
    if gs.image is None and (version.startswith("v") or not IMAGE_TAG.match(version)):
        raise ConfigError(
            f"gitServer.version: {gs.version!r} is not an image tag like 1.27 or 1.27.1",
            fix="write the version without a leading 'v' (the rootless image tag is added by seedbed)",
        )
    if not OBJECT_NAME.match(gs.storage_class):
        raise ConfigError(f"gitServer.storageClass: {gs.storage_class!r} is not a valid name",
                          fix="name a StorageClass, normally longhorn")
    if not QUANTITY.match(gs.storage_size):
        raise ConfigError(f"gitServer.storageSize: {gs.storage_size!r} is not a size like 10Gi",
                          fix="write a Kubernetes quantity such as 10Gi")


FLUX_NAMESPACE = "flux-system"  # where gotk-components puts the controllers and the sync objects
_DURATION_PART = re.compile(r"([0-9]+(?:\.[0-9]+)?)(ms|s|m|h)")
_UNIT_NS = {"ms": 10**6, "s": 10**9, "m": 60 * 10**9, "h": 3600 * 10**9}
_BRANCH_BAD = re.compile(r"(^[-/.])|(\.\.)|([\s~^:?*\[\\])|(@\{)|(/$)|(\.lock$)|(\.$)|(//)")


def go_duration(text: str, *, key: str = "duration") -> str:
    """A duration as Go's ``time.Duration.String()`` prints it ("1m" → "1m0s"), as flux writes it,
    or a ConfigError naming ``key``. Only the units Flux's CRDs accept (ms, s, m, h); at least one second.
    """
    value = text.strip()
    pos, total = 0, 0
    for m in _DURATION_PART.finditer(value):
        if m.start() != pos:
            break
        total += int(Decimal(m.group(1)) * _UNIT_NS[m.group(2)])
        pos = m.end()
    if not value or pos != len(value):
        raise ConfigError(f"{key}: {text!r} is not a duration like 1m or 30s",
                          fix="write a number with a unit: ms, s, m or h (e.g. 1m, 1m30s)")
    if total < 10**9:
        raise ConfigError(f"{key}: {text!r} is shorter than a second", fix="use at least 1s (1m is usual)")
    seconds, minutes = total % (60 * 10**9), total // (60 * 10**9)
    out = _frac(seconds, 9) + "s"
    if minutes:
        out = f"{minutes % 60}m" + out
        if minutes >= 60:
            out = f"{minutes // 60}h" + out
    return out


def _frac(ns: int, digits: int) -> str:
    whole, frac = divmod(ns, 10**digits)
    frac_text = f"{frac:0{digits}d}".rstrip("0")
    return f"{whole}.{frac_text}" if frac_text else str(whole)


def check_flux_path(raw: str) -> str:
    """flux.path as a folder of the repository (no ``./``, no trailing ``/``; ``.`` for the root, where
    ``flux bootstrap`` puts flux-system/ without --path), or a ConfigError."""
    path = raw.strip()
    bad = path.startswith("/") or "\\" in path
    while path.startswith("./"):
        path = path[2:]
    path = path.rstrip("/") or "."
    if bad or (path != "." and any(p in ("", ".", "..") for p in path.split("/"))):
        raise ConfigError(
            f"flux.path: {raw!r} is not a folder inside the repository",
            fix="write a relative path such as clusters/homelab (no '..', no leading '/')",
        )
    return path


def check_flux(cfg: Config) -> None:
    """flux.interval, flux.path, flux.secret and repo.branch: what the Flux sync objects are made of."""
    go_duration(cfg.flux.interval, key="flux.interval")
    cfg.flux_path  # noqa: B018 - normalising it is the check
    namespace, name = cfg.flux.secret_ref
    if namespace != FLUX_NAMESPACE:
        # The GitRepository lives in flux-system (where gotk-components puts the controllers),
        # and a secretRef can only name a Secret in the object's own namespace.
        raise ConfigError(
            f"flux.secret: {cfg.flux.secret!r} is not in namespace {FLUX_NAMESPACE}",
            fix=f"use {FLUX_NAMESPACE}/<name>, e.g. {FLUX_NAMESPACE}/{FLUX_NAMESPACE}",
        )
    if len(name) > 253 or not OBJECT_NAME.match(name):
        raise ConfigError(f"flux.secret: {name!r} is not a valid Secret name",
                          fix="use lower-case letters, digits, '-' and '.'")
    branch = cfg.repo.branch
    if not branch or _BRANCH_BAD.search(branch) or any(ord(c) < 32 or ord(c) == 127 for c in branch):
        raise ConfigError(f"repo.branch: {branch!r} is not a valid branch name", fix="use a name like main")


def check_values(cfg: Config) -> None:
    """Every value check that needs more than a type. Run whenever a :class:`Config` is made (so by
    :func:`parse`, hence by `config check`): the render modules trust a Config's values."""
    check_data_path(cfg.longhorn.data_path)
    check_backup_credentials(cfg.longhorn)
    check_git_server(cfg.git_server)
    check_flux(cfg)
    c = cfg.certificates
    if c.email:
        check_email(c.email)
    if c.domain:
        check_domain(c.domain, key="certificates.domain")
    if c.solver == "dns01" and c.dns01 is not None:
        check_dns01_provider(c.dns01.provider)
    check_wildcard(c)


def json_schema() -> dict[str, Any]:
    """The JSON Schema of seedbed.yaml, for editors (yaml-language-server)."""
    defs = msgspec.json.schema(Config, schema_hook=_path_schema)["$defs"]
    schema: dict[str, Any] = {"$schema": "http://json-schema.org/draft-07/schema#", **defs.pop("Config"),
                              "title": "seedbed.yaml", "$defs": defs}
    for key in _NOT_KEYS:
        del schema["properties"][key]
    # gitServer.version's default depends on the flavor (hence no default in the Struct): gitea's.
    defs["GitServerConfig"]["properties"]["version"]["default"] = GITEA_VERSION
    for d in (schema, *defs.values()):
        if not d.get("required", True):
            del d["required"]
    return schema


def _path_schema(tp: Any) -> dict[str, Any]:
    if tp is Path:  # Config.base_dir and Config.source, which json_schema() drops: no keys of the file
        return {"type": "string"}
    raise NotImplementedError


# --------------------------------------------------------------------------- loading


def load(path: str | Path) -> Config:
    """Read and validate seedbed.yaml; every problem becomes a ConfigError with file and line."""
    path = files.expand(path)
    text = files.read_text(path, files.CONFIG)
    return parse(text, name=str(path), base_dir=path.resolve().parent, source=path.resolve())


# A 10,000-key file must not print 10,000 lines: the first problems say what kind of mistake it is.
MAX_REPORTED = 20

UNKNOWN_KEY = "unknown key (check the spelling; `seedbed config schema` lists the keys)"
KEY_NOT_A_NAME = "keys must be names (a bare yes/no/on/off or number is read as something else)"
FIX_KEY = "edit the key named above; `seedbed config schema` describes every key"


def parse(text: str, *, name: str = DEFAULT_CONFIG_NAME, base_dir: Path | None = None,
          source: Path | None = None) -> Config:
    # Bounded first (aliases, depth), so the node tree composed next is known to be small and finite.
    data = yamlutil.safe_load(text, what=name)
    node = yamlutil.compose(text)
    duplicate = _duplicate_key(node)
    if duplicate is not None:
        key, line = duplicate
        raise ConfigError(f"{name}:{line}: {key}: the key appears twice (YAML would keep only the last one)",
                          fix="remove one of the two")
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{name}:1: the top level must be a mapping of sections (cluster, longhorn, ...)",
                          fix="start from `seedbed init`, which writes a commented example")
    try:
        return from_mapping(data, base_dir=base_dir, source=source)
    except ConfigProblems as e:
        lines = []
        index = _LineIndex(node)
        for loc, msg in e.problems[:MAX_REPORTED]:
            line, path = index.find(loc)
            lines.append(f"{name}:{line}: {'.'.join(path)}: {msg}")
        if len(e.problems) > MAX_REPORTED:
            lines.append(f"... and {len(e.problems) - MAX_REPORTED} more problems like these")
        raise ConfigError("\n".join(lines), fix=e.fix) from None
    except ConfigError as e:  # check_values, once every key has its type
        # The message starts with the key's path (gitServer.adminUser: ...): point at its line.
        key = e.message.split(":", 1)[0].split(" ", 1)[0]
        line, _ = _LineIndex(node).find(tuple(key.split(".")))
        raise ConfigError(f"{name}:{line}: {e.message}", fix=e.fix) from None


class ConfigProblems(ConfigError):
    """Keys of seedbed.yaml with the wrong name, type or value: ``problems`` holds each one's
    (path of keys, message), in the order of the fields; the message lists them (without lines)."""

    def __init__(self, problems: list[tuple[tuple[Any, ...], str]]) -> None:
        self.problems = problems
        text = "\n".join(f"{'.'.join(map(str, loc))}: {msg}" for loc, msg in problems[:MAX_REPORTED])
        if len(problems) > MAX_REPORTED:
            text += f"\n... and {len(problems) - MAX_REPORTED} more problems like these"
        super().__init__(text, fix=FIX_KEY)


def from_mapping(data: dict[Any, Any], *, base_dir: Path | None = None, source: Path | None = None) -> Config:
    """A Config from the mapping of seedbed.yaml's keys (camelCase, as YAML reads them).

    Raises :class:`ConfigProblems` naming every key with a wrong name, type or value, or, once all are
    right, the ConfigError of :func:`check_values`.
    """
    cfg: Config | None = None
    if not any(key in data for key in _NOT_KEYS):
        try:
            cfg = msgspec.convert(data, Config, strict=True)
        except msgspec.ValidationError:
            cfg = None  # look again key by key, for every problem at its key
    if cfg is None:
        problems: list[tuple[tuple[Any, ...], str]] = []
        cfg = _Walk(problems).struct(data, Config, ())
        if problems:
            raise ConfigProblems(problems)
    # A Config that was just made, and no one else has seen: set where it comes from.
    msgspec.structs.force_setattr(cfg, "base_dir", Path.cwd() if base_dir is None else Path(base_dir))
    msgspec.structs.force_setattr(cfg, "source", source)
    return cfg


_BAD: Any = object()  # what _Walk gives for a value with a problem


class _Walk:
    """The whole mapping checked key by key against the Structs, as msgspec would (which stops at the
    first problem), noting every problem: unknown keys, wrong types, values the checks refuse."""

    def __init__(self, problems: list[tuple[tuple[Any, ...], str]]) -> None:
        self.problems = problems

    def problem(self, loc: tuple[Any, ...], message: str) -> Any:
        self.problems.append((loc, message))
        return _BAD

    def struct(self, value: Any, cls: type[Model], loc: tuple[Any, ...]) -> Any:
        """The section made from ``value``, or _BAD."""
        if not isinstance(value, dict):
            return self.problem(loc, f"expected a mapping of keys, got {_what(value)}")
        before = len(self.problems)
        made: dict[str, Any] = {}
        used: set[Any] = set()
        for f in msgspec.structs.fields(cls):
            if cls is Config and f.encode_name in _NOT_KEYS:
                continue
            key = f.encode_name
            if key not in value:
                if f.required:
                    self.problem((*loc, key), "this key is required (it has no default)")
                continue
            used.add(key)
            item = self.value(value[key], f.type, (*loc, key))
            if item is _BAD:
                continue
            try:
                for check in _field_checks(f.type):
                    check(item)
            except ValueError as e:
                self.problem((*loc, key), str(e))
                continue
            made[f.encode_name] = item
        spelled = {f.name: f.encode_name for f in msgspec.structs.fields(cls) if f.name != f.encode_name}
        for key in value:
            if key in used:
                continue
            if key in spelled:  # the Python attribute's name: one spelling per key, the schema's
                self.problem((*loc, key), f"unknown key: seedbed.yaml keys are camelCase, write {spelled[key]}")
            else:
                self.problem((*loc, key), UNKNOWN_KEY if isinstance(key, str) else KEY_NOT_A_NAME)
        if len(self.problems) > before:
            return _BAD
        try:  # every field is right: the section's own checks (a ConfigError of check_values goes through)
            return msgspec.convert(made, cls, strict=True)
        except msgspec.ValidationError as e:
            message, at = _split(str(e))
            return self.problem((*loc, *at), message)

    def value(self, value: Any, tp: Any, loc: tuple[Any, ...]) -> Any:
        """``value`` as a field of type ``tp`` holds it, or _BAD."""
        base = getattr(tp, "__origin__", tp) if hasattr(tp, "__metadata__") else tp  # Annotated[X, ...]: X
        args = getattr(base, "__args__", ())
        if type(None) in args:  # X | None
            if value is None:
                return None
            (base,) = (a for a in args if a is not type(None))
            tp = base  # constraints (Meta) are only ever on fields that cannot be null
            args = getattr(base, "__args__", ())
        origin = getattr(base, "__origin__", None)
        if isinstance(base, type) and issubclass(base, Model):
            return self.struct(value, base, loc)
        if origin is list:
            if not isinstance(value, list):
                return self.problem(loc, f"expected a list, got {_what(value)}")
            items = [self.value(item, args[0], (*loc, i)) for i, item in enumerate(value)]
            return _BAD if any(item is _BAD for item in items) else items
        if origin is dict:
            if not isinstance(value, dict):
                return self.problem(loc, f"expected a mapping, got {_what(value)}")
            items = {}
            for k, v in value.items():
                if not isinstance(k, str):
                    items[k] = self.problem((*loc, k), KEY_NOT_A_NAME)
                else:
                    items[k] = self.value(v, args[1], (*loc, k))
            return _BAD if any(item is _BAD for item in items.values()) else items
        if origin is Literal:
            if isinstance(value, str) and value in args:
                return value
            return self.problem(loc, "must be " + " or ".join(repr(a) for a in args))
        if base is float and isinstance(value, float) and not math.isfinite(value):
            return self.problem(loc, "must be a finite number")
        try:  # a scalar: msgspec's own strict conversion, with the field's constraints
            return msgspec.convert(value, tp, strict=True)
        except msgspec.ValidationError as e:
            return self.problem(loc, _type_message(str(e), value))


_EXPECTED = {"int": "an integer", "float": "a number", "str": "a string", "bool": "true or false",
             "null": "null", "object": "a mapping", "array": "a list"}
_BOUND = {">=": "at least", "<=": "at most", ">": "greater than", "<": "less than"}


def _type_message(text: str, value: Any) -> str:
    """msgspec's ``Expected `int`, got `str``` or ``Expected `int` >= 1`` in words for a YAML file."""
    message, _ = _split(text)
    m = re.fullmatch(r"Expected `([^`]+)`, got `[^`]+`", message)
    if m:
        expected = " or ".join(_EXPECTED.get(t, f"`{t}`") for t in m.group(1).split(" | "))
        scalar = isinstance(value, (int, float)) or type(value).__name__ in ("date", "datetime")  # or a bool
        hint = " (write it in quotes)" if m.group(1) == "str" and scalar else ""
        return f"expected {expected}, got {_what(value)}{hint}"
    m = re.fullmatch(r"Expected `[^`]+` (>=|<=|>|<) (\S+)", message)
    if m:
        bound = m.group(2).removesuffix(".0")
        return f"must be {_BOUND[m.group(1)]} {bound}"
    return message[:1].lower() + message[1:]


def _what(value: Any) -> str:
    """What YAML made of a value, in words: `true` is a boolean, `2024-01-01` a date."""
    if value is None:
        return "null (an empty value)"
    if isinstance(value, bool):
        return f"a boolean ({str(value).lower()})"
    for kind, words in ((int, "an integer"), (float, "a number"), (str, "a string"), (list, "a list"),
                        (dict, "a mapping"), (set, "a set"), (bytes, "binary data")):
        if isinstance(value, kind):
            return words
    return {"date": "a date", "datetime": "a date and time"}.get(type(value).__name__, type(value).__name__)


def _split(text: str) -> tuple[str, tuple[Any, ...]]:
    """msgspec's ``message - at `$.longhorn.backupCredentials[0].x``` as (message, path of keys)."""
    m = re.fullmatch(r"(.*?)(?: - at (?:`key` in )?`\$([^`]*)`)?", text, re.DOTALL)
    assert m is not None  # the pattern matches every text
    loc: list[Any] = []
    for name, index in re.findall(r"\.([^.\[]+)|\[(\d+|\.\.\.)\]", m.group(2) or ""):
        if index == "...":  # a value of a dict, whose key msgspec does not say
            break
        loc.append(int(index) if index else name)
    return m.group(1), tuple(loc)


def _short(text: str, limit: int = 80) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _duplicate_key(root: yaml.Node | None) -> tuple[str, int] | None:
    """The first key given twice in one mapping, with its line: YAML itself silently keeps the last.

    Each node is visited once, even when aliases make it appear in several places.
    """
    seen_nodes: set[int] = set()
    todo: list[tuple[yaml.Node | None, str]] = [(root, "")]
    while todo:
        node, path = todo.pop()
        if node is None or id(node) in seen_nodes:
            continue
        seen_nodes.add(id(node))
        children: list[tuple[yaml.Node, str]] = []
        if isinstance(node, yaml.MappingNode):
            keys: set[Any] = set()
            for key, value in node.value:
                dotted = f"{path}.{key.value}" if path else str(key.value)
                if key.value in keys:
                    return dotted, key.start_mark.line + 1
                keys.add(key.value)
                children.append((value, dotted))
        elif isinstance(node, yaml.SequenceNode):
            children = [(item, f"{path}[{i}]") for i, item in enumerate(node.value)]
        todo += reversed(children)  # depth first, in file order: the first duplicate is reported
    return None


class _LineIndex:
    """Where a problem's path of keys is in the file: each mapping is indexed once, on first use."""

    def __init__(self, root: yaml.Node | None) -> None:
        self.root = root
        self._keys: dict[int, dict[Any, tuple[yaml.Node, yaml.Node]]] = {}
        self._values: dict[int, dict[Any, tuple[yaml.Node, yaml.Node]]] = {}
        self._loader = yaml.SafeLoader("")

    def _by_key(self, node: yaml.MappingNode) -> dict[Any, tuple[yaml.Node, yaml.Node]]:
        table = self._keys.get(id(node))
        if table is None:
            table = {}
            for key, value in node.value:
                table.setdefault(key.value, (key, value))
            self._keys[id(node)] = table
        return table

    def _by_value(self, node: yaml.MappingNode) -> dict[Any, tuple[yaml.Node, yaml.Node]]:
        # A key as YAML reads it (`yes` is True, `42` is 42): what a problem's path holds.
        table = self._values.get(id(node))
        if table is None:
            table = {}
            for key, value in node.value:
                try:
                    constructed = self._loader.construct_object(key)
                    table.setdefault(constructed, (key, value))
                except (yaml.YAMLError, TypeError):  # an unhashable key (a list) is never in a loc
                    pass
            self._values[id(node)] = table
        return table

    def find(self, loc: tuple[Any, ...]) -> tuple[int, list[str]]:
        """The 1-based line of the deepest node ``loc`` reaches, and the path as the file spells it."""
        node = self.root
        line = node.start_mark.line + 1 if node is not None else 1
        path = [str(p) for p in loc]
        for i, part in enumerate(loc):
            if isinstance(node, yaml.MappingNode):
                found = self._by_key(node).get(part) if isinstance(part, str) else None
                if found is None and not isinstance(part, str):
                    found = self._by_value(node).get(part)
                if found is None:
                    return line, path
                key, node = found
                line = key.start_mark.line + 1
                path[i] = str(key.value)
            elif isinstance(node, yaml.SequenceNode) and isinstance(part, int) and part < len(node.value):
                node = node.value[part]
                line = node.start_mark.line + 1
            else:
                return line, path
        return line, path
