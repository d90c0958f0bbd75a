"""seedbed.yaml: the one file that describes a cluster's bootstrap.

The models are pydantic v2 with unknown keys rejected. YAML keys are camelCase like the
Kubernetes objects they end up in; Python attributes are snake_case. :func:`load` turns any
validation problem into ``seedbed.yaml:LINE: path.to.key: message`` so that the user can jump
straight to it.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic.alias_generators import to_camel

from .errors import ConfigError

DEFAULT_CONFIG_NAME = "seedbed.yaml"

# Current upstream releases. A change here is a change of what a fresh bootstrap installs.
LONGHORN_VERSION = "v1.12.1"
FLUX_VERSION = "v2.9.3"
GITEA_VERSION = "1.27"
FORGEJO_VERSION = "16"

DNS_NAME = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
VERSION = re.compile(r"^v\d+\.\d+\.\d+([-+][0-9A-Za-z.-]+)?$")


class Model(BaseModel):
    """Base for every config section: camelCase keys, unknown keys rejected, immutable."""

    model_config = ConfigDict(
        extra="forbid",
        alias_generator=to_camel,
        populate_by_name=True,
        frozen=True,
        validate_default=True,
        # YAML already gives ints, bools and strings their types: coercing `true` to 1 or "3" to 3
        # would hide mistakes. Infinite timeouts are never what anyone meant.
        strict=True,
        allow_inf_nan=False,
    )


def _dns_label(value: str) -> str:
    if len(value) > 63 or not DNS_NAME.match(value):
        raise ValueError(
            f"{_short(value)!r} is not a valid Kubernetes name (lower-case letters, digits and '-', at most 63)"
        )
    return value


DnsLabel = Annotated[str, AfterValidator(_dns_label)]


def _release_tag(value: str) -> str:
    if not VERSION.fullmatch(value):
        raise ValueError(f"{_short(value)!r} is not a release tag like v1.2.3")
    return value


ReleaseTag = Annotated[str, AfterValidator(_release_tag)]


class ClusterConfig(Model):
    """Which cluster to talk to. seedbed never creates clusters: it starts from a kubeconfig."""

    name: DnsLabel = Field("homelab", description="A short name for this cluster; recorded in backups.")
    kubeconfig: str | None = Field(
        None, description="Path to the kubeconfig; default: $KUBECONFIG, then ~/.kube/config."
    )
    context: str | None = Field(None, description="kubeconfig context; default: the current context.")


class BackupCredentials(Model):
    """Where the backup target's credentials come from. The values never appear in plan output."""

    secret_name: str = Field("longhorn-backup-credentials", description="Secret in longhorn-system.")
    from_file: str | None = Field(
        None, description="A KEY=VALUE file (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_ENDPOINTS...)."
    )
    from_env: dict[str, str] | None = Field(
        None, description="Secret key -> name of the environment variable holding its value."
    )

    @model_validator(mode="after")
    def _one_source(self) -> BackupCredentials:
        if self.from_file and self.from_env:
            raise ValueError("give fromFile or fromEnv, not both")
        return self


class LonghornConfig(Model):
    version: ReleaseTag = Field(LONGHORN_VERSION, description="Longhorn release tag.")
    data_path: str = Field(
        "/var/lib/longhorn",
        description="Node data path. Choose a stable location every node provides by a bind mount "
                    "(never a symlink: Longhorn cannot follow it).",
    )
    backup_target: str | None = Field(
        None, description="s3://bucket@region/path or nfs://host:/path; empty for none."
    )
    backup_credentials: BackupCredentials | None = None
    default_storage_class: bool = Field(True, description="Make the `longhorn` StorageClass the default.")
    replica_count: int = Field(3, ge=1, le=20, description="Default replicas; 1 or 2 for small clusters.")
    ready_timeout: float = Field(600, gt=0, description="Seconds to wait for Longhorn to be ready.")

    @field_validator("data_path")
    @classmethod
    def _absolute(cls, value: str) -> str:
        if not value.startswith("/"):
            raise ValueError(f"must be an absolute path (starting with '/'), not {_short(value)!r}")
        if value.rstrip("/") == "" or ".." in value.split("/"):
            raise ValueError(f"{_short(value)!r} is not a usable data path: give a dedicated folder such as /var/lib/longhorn")
        return value

    @field_validator("backup_target")
    @classmethod
    def _target(cls, value: str | None) -> str | None:
        if value and not re.match(r"^(s3://[^@/]+@[^/]+/.*|nfs://[^:/]+:/.*|cifs://.+|azblob://.+)$", value):
            raise ValueError("must look like s3://bucket@region/ or nfs://host:/path")
        return value or None


class GitServerConfig(Model):
    """The bootstrap Git server. Its names are a contract with the Flux-managed re-deploy."""

    flavor: Literal["gitea", "forgejo"] = "gitea"
    version: str = Field(GITEA_VERSION, description="Image version; the rootless flavour is always used.")
    image: str | None = Field(None, description="Full image reference, overriding flavor and version.")
    namespace: DnsLabel = "gitea"
    pvc_name: DnsLabel = Field("gitea-shared-storage", description="Data claim (the Gitea Helm chart's name).")
    storage_size: str = "10Gi"
    storage_class: str = "longhorn"
    http_service: DnsLabel = Field("gitea-http", description="HTTP Service, port 3000 (the Helm chart's name).")
    ssh_service: DnsLabel = Field("gitea-ssh", description="SSH Service, port 22 (the Helm chart's name).")
    admin_user: str = "seedbed-admin"
    admin_secret: str = Field("gitea-admin", description="Secret holding the admin credentials.")
    host_key_secret: str = Field("gitea-ssh-host-key", description="Secret holding the pinned SSH host key.")
    ready_timeout: float = Field(600, gt=0, description="Seconds to wait for the Git server to be ready.")

    @model_validator(mode="after")
    def _forgejo_version(self) -> GitServerConfig:
        # Forgejo numbers its releases on its own; a Gitea version would pick a non-existent tag.
        if self.flavor == "forgejo" and self.version == GITEA_VERSION and "version" not in self.model_fields_set:
            object.__setattr__(self, "version", FORGEJO_VERSION)
        return self


class RepoConfig(Model):
    """The one repository Flux syncs from, and the local work tree that seeds it."""

    owner: str = "homelab"
    owner_type: Literal["user", "org"] = "org"
    name: str = "gitops"
    branch: str = "main"
    path: str = Field("./gitops", description="Local git work tree to push (relative to seedbed.yaml).")
    authorized_keys: list[str] = Field(
        default_factory=list, description="Files with the operator's SSH public keys, added to the owner."
    )
    deploy_key_read_only: bool = Field(True, description="Flux's deploy key is read-only unless false.")
    force_push: bool = Field(False, description="Allow a non-fast-forward push (never the default).")

    @field_validator("name", "owner")
    @classmethod
    def _repo_name(cls, value: str) -> str:
        if not re.match(r"^[A-Za-z0-9_.-]{1,100}$", value) or value in {".", ".."}:
            raise ValueError(f"{_short(value)!r} is not a valid Gitea name (letters, digits, '-', '_', '.')")
        return value


class FluxConfig(Model):
    version: ReleaseTag = Field(FLUX_VERSION, description="Flux release tag.")
    path: str | None = Field(None, description="Folder in the repository; default clusters/<cluster name>.")
    secret: str = Field("flux-system/flux-system", description="namespace/name of Flux's Git credentials.")
    interval: str = Field("1m", description="How often Flux polls the repository.")
    ready_timeout: float = Field(600, gt=0, description="Seconds to wait for Flux to be Ready.")

    @field_validator("secret")
    @classmethod
    def _ns_name(cls, value: str) -> str:
        if value.count("/") != 1:
            raise ValueError("must be namespace/name, e.g. flux-system/flux-system")
        return value


class SecretSelection(Model):
    namespaces: list[str] = Field(default_factory=list, description="Back up every Secret in these.")
    label_selector: str | None = Field(None, description="And/or every Secret matching this selector.")


class VolumeRef(Model):
    namespace: str
    pvc: str


class BackupConfig(Model):
    recipients: list[str] = Field(
        default_factory=list, description="age X25519 (age1...) or ssh-ed25519 public keys."
    )
    identity_file: str | None = Field(
        None, description="age or ssh private key used by restore; default ~/.config/seedbed/age.key."
    )
    secrets: SecretSelection = Field(default_factory=SecretSelection)
    volumes: list[VolumeRef] = Field(default_factory=list, description="PVCs backed up through Longhorn.")
    include_git_server_volume: bool = Field(True, description="Also back up the Git server's data claim.")

    @field_validator("recipients")
    @classmethod
    def _recipients(cls, values: list[str]) -> list[str]:
        for value in values:
            if not (value.startswith("age1") or value.startswith("ssh-ed25519 ")):
                raise ValueError(f"{value[:20]!r}... is not an age1... or ssh-ed25519 public key")
        return values


class Dns01Solver(Model):
    provider: str = Field("cloudflare", description="cert-manager DNS-01 provider key, e.g. cloudflare.")
    secret_name: str = Field("cloudflare-api-token", description="Credential Secret in cert-manager's namespace.")
    secret_key: str = "api-token"


class Http01Solver(Model):
    ingress_class: str = "nginx"


class WildcardConfig(Model):
    domain: str
    namespace: str = "cert-manager"
    secret_name: str | None = Field(None, description="Default: wildcard-<domain with dots as dashes>-tls.")


class CertificatesConfig(Model):
    acme: Literal["staging", "production"] = Field(
        "staging", description="Let's Encrypt environment; staging is safe for throwaway clusters."
    )
    email: str | None = Field(None, description="ACME account e-mail.")
    domain: str | None = Field(None, description="The cluster's base domain (CLUSTER_DOMAIN).")
    solver: Literal["http01", "dns01"] = "http01"
    http01: Http01Solver = Field(default_factory=Http01Solver)
    dns01: Dns01Solver = Field(default_factory=Dns01Solver)
    namespace: str = Field("cert-manager", description="cert-manager's namespace.")
    wildcard: WildcardConfig | None = None
    ignore_budget: bool = False


class Config(Model):
    """The whole of seedbed.yaml."""

    cluster: ClusterConfig = Field(default_factory=ClusterConfig)
    longhorn: LonghornConfig = Field(default_factory=LonghornConfig)
    git_server: GitServerConfig = Field(default_factory=GitServerConfig)
    repo: RepoConfig = Field(default_factory=RepoConfig)
    flux: FluxConfig = Field(default_factory=FluxConfig)
    backup: BackupConfig = Field(default_factory=BackupConfig)
    certificates: CertificatesConfig = Field(default_factory=CertificatesConfig)

    # Where the file was read from: relative paths in it are relative to this folder.
    base_dir: Path = Field(default_factory=Path.cwd, exclude=True)
    source: Path | None = Field(None, exclude=True)

    @property
    def flux_path(self) -> str:
        return self.flux.path or f"clusters/{self.cluster.name}"

    def resolve(self, path: str) -> Path:
        """A path from the config, with ``~`` expanded and relative paths taken from the config's folder."""
        p = Path(path).expanduser()
        return p if p.is_absolute() else self.base_dir / p

    @property
    def lock_file(self) -> Path:
        """The manifest lock file beside the config (like go.sum)."""
        return self.base_dir / "seedbed.lock"


def json_schema() -> dict[str, Any]:
    """The JSON Schema of seedbed.yaml, for editors (yaml-language-server)."""
    schema = Config.model_json_schema(by_alias=True, mode="validation")
    schema["$schema"] = "http://json-schema.org/draft-07/schema#"
    schema["title"] = "seedbed.yaml"
    props = schema.get("properties", {})
    props.pop("baseDir", None)
    props.pop("source", None)
    return schema


# --------------------------------------------------------------------------- loading


def load(path: str | Path) -> Config:
    """Read and validate seedbed.yaml; every problem becomes a ConfigError with file and line."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(
            f"{path}: no such file", fix="run `seedbed init` to write an example, or pass --config PATH"
        ) from None
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: not a text file (seedbed.yaml must be UTF-8)",
                          fix="check --config points at seedbed.yaml; re-save it as UTF-8") from None
    except IsADirectoryError:
        raise ConfigError(f"{path} is a folder, not a config file",
                          fix=f"pass the file itself, e.g. --config {path / DEFAULT_CONFIG_NAME}") from None
    except OSError as e:
        raise ConfigError(f"{path}: cannot read: {e.strerror}",
                          fix="check the file's permissions and that --config names the right file") from None
    return parse(text, name=str(path), base_dir=path.resolve().parent, source=path.resolve())


def parse(text: str, *, name: str = DEFAULT_CONFIG_NAME, base_dir: Path | None = None,
          source: Path | None = None) -> Config:
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
        data = yaml.safe_load(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None) or getattr(e, "context_mark", None)
        line = mark.line + 1 if mark else 1
        if isinstance(e, yaml.reader.ReaderError):  # a bad character: only its offset is known
            line = text.count("\n", 0, e.position) + 1
            e = yaml.YAMLError(f"character {e.character!r} is not allowed in YAML")
        problem = " ".join(filter(None, [getattr(e, "context", None), getattr(e, "problem", None)]))
        problem = _short(problem or str(e).splitlines()[0], 200)
        raise ConfigError(f"{name}:{line}: not valid YAML: {problem}", fix="fix the YAML syntax") from None
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
        return Config.model_validate({**data, "baseDir": base_dir or Path.cwd(), "source": source})
    except ValidationError as e:
        lines = []
        for err in e.errors():
            line, loc = _line_of(node, err["loc"])
            msg = err["msg"].removeprefix("Value error, ")
            if err["type"] == "extra_forbidden":
                msg = "unknown key (check the spelling; `seedbed config schema` lists the keys)"
            elif err["type"] == "invalid_key":
                msg = "keys must be names (a bare yes/no/on/off or number is read as something else)"
            lines.append(f"{name}:{line}: {'.'.join(loc)}: {msg}")
        first, *rest = lines
        message = first if not rest else first + "\n" + "\n".join(rest)
        raise ConfigError(message, fix="edit the key named above; `seedbed config schema` describes every key") from None


def _short(text: str, limit: int = 80) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _duplicate_key(node: yaml.Node | None, path: str = "") -> tuple[str, int] | None:
    """The first key given twice in one mapping, with its line: YAML itself silently keeps the last."""
    if isinstance(node, yaml.MappingNode):
        seen: set[Any] = set()
        for key, value in node.value:
            dotted = f"{path}.{key.value}" if path else str(key.value)
            if key.value in seen:
                return dotted, key.start_mark.line + 1
            seen.add(key.value)
            found = _duplicate_key(value, dotted)
            if found:
                return found
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            found = _duplicate_key(item, f"{path}[{i}]")
            if found:
                return found
    return None


def _scalar(node: yaml.Node) -> Any:
    """A key as YAML reads it (`yes` is True, `42` is 42): what pydantic names in an error."""
    try:
        return yaml.SafeLoader("").construct_object(node)
    except yaml.YAMLError:
        return None


def _line_of(node: yaml.Node | None, loc: tuple[Any, ...]) -> tuple[int, list[str]]:
    """The 1-based line of the deepest YAML node that ``loc`` reaches, and the path as the file spells it."""
    line = node.start_mark.line + 1 if node is not None else 1
    path = [str(p) for p in loc]
    for i, part in enumerate(loc):
        if isinstance(node, yaml.MappingNode):
            for key, value in node.value:
                if key.value == part or (not isinstance(part, str) and _scalar(key) == part):
                    line = key.start_mark.line + 1
                    path[i] = str(key.value)
                    node = value
                    break
            else:
                return line, path
        elif isinstance(node, yaml.SequenceNode) and isinstance(part, int) and part < len(node.value):
            node = node.value[part]
            line = node.start_mark.line + 1
        else:
            return line, path
    return line, path
