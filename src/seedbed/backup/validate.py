"""The one restore validator: everything an opened archive holds, checked before the first write.

The hashes in index.json prove an entry is what the archive's writer wrote; the signature proves
who that writer was. Neither proves the content is something a restore may create. So every
entry is checked here, when the archive is opened (``restore``, ``restore --dry-run``,
``bootstrap --restore`` and ``certs budget --ledger`` alike), and turned into typed values the
restore phases consume; no phase reads raw JSON again:

- only the entry names seedbed writes, each folder holding only its own kind
  (``secrets/`` v1 Secrets, ``cert-manager/<kind>/`` that kind), anything else refused;
- Secrets only of the allowlisted types: never ServiceAccount or bootstrap tokens, which grant
  access to the cluster that reads them;
- namespaces limited to what seedbed.yaml selects (below);
- every volume record and the issuance ledger in full (types and ranges);
- objects rebuilt from an allowlist of fields: no ownerReferences, managedFields, uid,
  resourceVersion, creationTimestamp, finalizers or status survive.
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

import msgspec

from seedbed import yamlutil
from seedbed.errors import ArchiveError

if TYPE_CHECKING:
    from seedbed.certs.ledger import Ledger
    from seedbed.config import Config

CM_API = "cert-manager.io/v1"
# kind -> (CRD name, archive folder). Orders, Challenges and CertificateRequests are left out on
# purpose: they are one issuance's working state, and cert-manager makes new ones as needed.
CM_KINDS: dict[str, tuple[str, str]] = {
    "Certificate": ("certificates.cert-manager.io", "cert-manager/certificates"),
    "Issuer": ("issuers.cert-manager.io", "cert-manager/issuers"),
    "ClusterIssuer": ("clusterissuers.cert-manager.io", "cert-manager/clusterissuers"),
}

# The Secret types a backup carries and a restore creates. Left out for good:
# kubernetes.io/service-account-token and bootstrap.kubernetes.io/token (credentials *to* the
# cluster that reads them: a forged one is a way in), and any type seedbed does not know.
SECRET_TYPES = frozenset({
    "Opaque", "kubernetes.io/tls", "kubernetes.io/basic-auth", "kubernetes.io/ssh-auth",
    "kubernetes.io/dockerconfigjson", "kubernetes.io/dockercfg",
})

# Namespaces a restore writes into only when seedbed.yaml names them itself (backup.secrets.namespaces).
_SYSTEM_NAMESPACES = frozenset({"kube-system", "kube-public", "kube-node-lease"})

_DNS_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?")
_DNS_SUBDOMAIN = re.compile(r"[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?")
_BUNDLE = re.compile(r"git/[A-Za-z0-9_.-]{1,200}\.bundle")
_QUANTITY = re.compile(r"\d{1,19}(Ki|Mi|Gi|Ti|Pi|Ei|k|M|G|T|P|E)?")
_DATA_KEY = re.compile(r"[-._a-zA-Z0-9]{1,253}")

_WRONG = "the archive was not written by seedbed backup, or was altered; use another backup"


# --------------------------------------------------------------------------- what the config allows


class Policy(msgspec.Struct, frozen=True):
    """What an opened archive must satisfy: signer, cluster and the namespaces seedbed.yaml selects."""

    cluster: str | None = None
    from_other_cluster: bool = False
    trusted: tuple[str, ...] = ()  # ssh-ed25519 public keys
    skip_signature: bool = False
    # Namespaces Secrets may be restored into without a further reason (see secret_allowed).
    secret_namespaces: frozenset[str] = frozenset()
    label_selector: str | None = None
    volume_namespaces: frozenset[str] = frozenset()

    @classmethod
    def from_config(cls, cfg: Config, *, from_other_cluster: bool = False, skip_signature: bool = False,
                    expect_cluster: bool = True) -> Policy:
        from .signing import trusted_signers

        certs = cfg.certificates
        flux_ns = cfg.flux.secret.split("/", 1)[0]
        # flux-system (flux_ns) holds the SOPS decryption keys a backup carries (backup/collect.py).
        namespaces = {*cfg.backup.secrets.namespaces, certs.namespace, cfg.git_server.namespace, flux_ns,
                      "longhorn-system"}
        if certs.wildcard:
            namespaces.add(certs.wildcard.namespace)
        return cls(
            cluster=cfg.cluster.name if expect_cluster else None,
            from_other_cluster=from_other_cluster,
            trusted=tuple(trusted_signers(cfg)),
            skip_signature=skip_signature,
            secret_namespaces=frozenset(namespaces),
            label_selector=cfg.backup.secrets.label_selector,
            volume_namespaces=frozenset({v.namespace for v in cfg.backup.volumes} | {cfg.git_server.namespace}),
        )


# --------------------------------------------------------------------------- typed contents


class KubeObject(msgspec.Struct, frozen=True):
    """One object to create, already cleaned for re-creation."""

    kind: str
    namespace: str  # "" for cluster-scoped
    name: str
    body: dict[str, Any]


class VolumeRecord(msgspec.Struct, frozen=True):
    """One claim of volumes.json, every field checked; ``record`` is what volumes.restore_objects takes."""

    namespace: str
    pvc: str
    record: dict[str, Any]


class Contents(msgspec.Struct):
    """An archive's entries as the restore phases use them."""

    secrets: list[KubeObject] = msgspec.field(default_factory=list)
    cert_manager: list[KubeObject] = msgspec.field(default_factory=list)  # ClusterIssuers, Issuers, then Certificates
    volumes: list[VolumeRecord] = msgspec.field(default_factory=list)
    ledger: Ledger | None = None
    git_bundle: bytes | None = None
    git_repo: str | None = None  # "<owner>-<repo>", from the bundle's entry name


# --------------------------------------------------------------------------- the validator


class _Refuse(ArchiveError):
    """Internal: one problem with one entry; turned into an ArchiveError naming the entry."""


def validate(entries: dict[str, bytes], policy: Policy, *, name: str = "archive") -> Contents:
    """Every entry checked and typed, or one ArchiveError naming the archive, the entry and the cause."""
    contents = Contents()
    bundles = sorted(n for n in entries if n.startswith("git/"))
    if len(bundles) > 1:
        raise ArchiveError(f"{name} holds {len(bundles)} repository bundles ({', '.join(bundles[:3])}); "
                           "seedbed writes one", fix=_WRONG)
    order = sorted(entries, key=lambda n: (_rank(n), n))
    cm: list[KubeObject] = []
    for entry in order:
        try:
            if entry.startswith("secrets/"):
                contents.secrets.append(_secret(entry, _json(entries[entry], entry, name)))
            elif entry.startswith("cert-manager/"):
                cm.append(_cert_manager(entry, _json(entries[entry], entry, name)))
            elif entry == "volumes.json":
                contents.volumes = _volumes(_json(entries[entry], entry, name), policy)
            elif entry == "ledger.json":
                contents.ledger = _ledger(entries[entry])
            elif _BUNDLE.fullmatch(entry):
                contents.git_bundle = entries[entry]
                contents.git_repo = entry.removeprefix("git/").removesuffix(".bundle")
            else:
                raise _Refuse("is not an entry seedbed writes (secrets/, cert-manager/, git/, volumes.json, "
                              "ledger.json)")
        except _Refuse as e:
            raise ArchiveError(f"{name}: entry {entry} {e}", fix=_WRONG) from None
    kinds = ["ClusterIssuer", "Issuer", "Certificate"]
    contents.cert_manager = sorted(cm, key=lambda o: (kinds.index(o.kind), o.namespace, o.name))
    _check_references(contents, policy, name)
    return contents


def _rank(entry: str) -> int:
    # Objects first, then records: the first problem reported is the one in the most telling entry.
    for i, prefix in enumerate(("secrets/", "cert-manager/", "volumes.json", "ledger.json")):
        if entry.startswith(prefix):
            return i
    return 4


def _json(data: bytes, entry: str, name: str) -> Any:
    try:
        return yamlutil.safe_json(data, what=f"{name}: entry {entry}", error=ArchiveError)
    except ArchiveError as e:
        raise ArchiveError(e.message, fix=_WRONG) from None


def _check_references(contents: Contents, policy: Policy, name: str) -> None:
    """Secrets outside the selected namespaces must be named by an archived cert-manager object."""
    referenced = {(o.namespace, ref) for o in contents.cert_manager if o.kind != "ClusterIssuer"
                  for ref in secret_refs(o.body.get("spec"))}
    for s in contents.secrets:
        if s.namespace in _SYSTEM_NAMESPACES and s.namespace not in policy.secret_namespaces:
            raise ArchiveError(f"{name}: Secret {s.namespace}/{s.name} is in the system namespace {s.namespace}, "
                               "which seedbed.yaml does not select", fix=_namespace_fix(s.namespace))
        if (s.namespace in policy.secret_namespaces or (s.namespace, s.name) in referenced
                or _is_certificate_secret(s.body)
                or (policy.label_selector and selector_matches(policy.label_selector, _labels(s.body)))):
            continue
        raise ArchiveError(f"{name}: Secret {s.namespace}/{s.name} is in namespace {s.namespace}, which "
                           "seedbed.yaml does not select, and no archived Certificate or Issuer uses it",
                           fix=_namespace_fix(s.namespace))
    for o in contents.cert_manager:
        if o.namespace in _SYSTEM_NAMESPACES and o.namespace not in policy.secret_namespaces:
            raise ArchiveError(f"{name}: {o.kind} {o.namespace}/{o.name} is in the system namespace {o.namespace}",
                               fix=_namespace_fix(o.namespace))


def _namespace_fix(ns: str) -> str:
    return (f"if you mean to restore into {ns}, add it to backup.secrets.namespaces in seedbed.yaml; "
            "otherwise the archive was not written by seedbed backup: use another backup")


def _labels(body: dict[str, Any]) -> dict[str, str]:
    return body["metadata"].get("labels") or {}


def _is_certificate_secret(body: dict[str, Any]) -> bool:
    # A certificate's Secret (cert-manager's annotations, type kubernetes.io/tls) is kept even when its
    # Certificate was not archived (ingress-shim makes that one again): see collect.py.
    annotations = body["metadata"].get("annotations") or {}
    return body.get("type") == "kubernetes.io/tls" and "cert-manager.io/certificate-name" in annotations


# --------------------------------------------------------------------------- objects


def _str(value: Any, what: str, pattern: re.Pattern[str] | None = None, *, limit: int = 253) -> str:
    if not isinstance(value, str) or not value or len(value) > limit:
        raise _Refuse(f"has a bad {what}: expected a non-empty string of at most {limit} characters")
    if pattern is not None and not pattern.fullmatch(value):
        raise _Refuse(f"has a bad {what} {value[:80]!r}: not a valid Kubernetes name")
    return value


def _string_map(value: Any, what: str) -> dict[str, str]:
    if value is None:
        return {}
    if not isinstance(value, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in value.items()):
        raise _Refuse(f"has bad {what}: expected a map of strings to strings")
    return dict(value)


def clean_metadata(md: dict[str, Any]) -> dict[str, Any]:
    """The metadata fit for creating in a new cluster: name, namespace, labels and annotations, exactly.

    Everything else is set by one API server for one object (uid, resourceVersion, generation,
    creationTimestamp, managedFields, selfLink, deletion fields) or points at objects of the old
    cluster by uid (ownerReferences: the garbage collector would delete an object whose owner uid
    does not exist), or would hold the object forever (finalizers). cert-manager compares its
    ``cert-manager.io/*`` annotations with the Certificate and re-issues when they differ, so labels
    and annotations are kept as they are.
    """
    out = {k: md[k] for k in ("name", "namespace") if k in md}
    for k in ("labels", "annotations"):
        if md.get(k):
            out[k] = md[k]
    return out


def clean(obj: dict[str, Any]) -> dict[str, Any]:
    """A copy fit for creating in a new cluster: no status, metadata as :func:`clean_metadata`."""
    out = {k: v for k, v in obj.items() if k != "status"}
    out["metadata"] = clean_metadata(obj.get("metadata") or {})
    return out


def _object(entry: str, obj: Any, *, api: str, kind: str, namespace: str | None, name: str,
            fields: Iterable[str]) -> dict[str, Any]:
    if not isinstance(obj, dict):
        raise _Refuse("is not a Kubernetes object (a JSON object with apiVersion, kind and metadata)")
    if obj.get("kind") != kind or obj.get("apiVersion") != api:
        raise _Refuse(f"is a {_shown(obj.get('apiVersion'))} {_shown(obj.get('kind'))}, but its folder holds "
                      f"only {api} {kind}")
    md = obj.get("metadata")
    if not isinstance(md, dict):
        raise _Refuse("has no metadata")
    if md.get("name") != name:
        raise _Refuse(f"holds metadata.name {_shown(md.get('name'))}, not {name!r} as its entry name says")
    if md.get("namespace", None) != namespace:
        want = f"namespace {namespace!r}" if namespace else "no namespace (it is cluster-scoped)"
        raise _Refuse(f"holds metadata.namespace {_shown(md.get('namespace'))}; its entry name says {want}")
    _string_map(md.get("labels"), "metadata.labels")
    _string_map(md.get("annotations"), "metadata.annotations")
    allowed = {"apiVersion", "kind", "metadata", "status", *fields}
    extra = sorted(k for k in obj if k not in allowed)
    if extra:
        raise _Refuse(f"has fields a {kind} does not have: {', '.join(map(str, extra[:5]))}")
    return clean(obj)


def _shown(value: Any) -> str:
    return repr(value[:80]) if isinstance(value, str) else ("nothing" if value is None else type(value).__name__)


def _path_parts(entry: str, folder: str, namespaced: bool) -> tuple[str, str]:
    rest = entry.removeprefix(folder + "/")
    parts = rest.split("/")
    if not rest.endswith(".json") or len(parts) != (2 if namespaced else 1):
        layout = f"{folder}/<namespace>/<name>.json" if namespaced else f"{folder}/<name>.json"
        raise _Refuse(f"is not named {layout}")
    name = parts[-1].removesuffix(".json")
    ns = parts[0] if namespaced else ""
    if namespaced:
        _str(ns, "namespace", _DNS_LABEL, limit=63)
    _str(name, "name", _DNS_SUBDOMAIN)
    return ns, name


def _secret(entry: str, obj: Any) -> KubeObject:
    # Namespaces are checked once every object is known (_check_references).
    ns, name = _path_parts(entry, "secrets", namespaced=True)
    body = _object(entry, obj, api="v1", kind="Secret", namespace=ns, name=name,
                   fields=("type", "data", "stringData", "immutable"))
    type_ = body.get("type", "Opaque")
    if type_ not in SECRET_TYPES:
        raise _Refuse(f"is a Secret of type {_shown(type_)}, which seedbed never restores "
                      f"(allowed: {', '.join(sorted(SECRET_TYPES))})")
    data = _string_map(body.get("data"), "data")
    for key, value in data.items():
        if not _DATA_KEY.fullmatch(key):
            raise _Refuse(f"has a bad data key {key[:40]!r}")
        try:
            base64.b64decode(value, validate=True)
        except (binascii.Error, ValueError):
            raise _Refuse(f"has data {key!r} that is not base64") from None
    _string_map(body.get("stringData"), "stringData")
    if "immutable" in body and not isinstance(body["immutable"], bool):
        raise _Refuse("has a non-boolean immutable")
    return KubeObject("Secret", ns, name, body)


def _cert_manager(entry: str, obj: Any) -> KubeObject:
    for kind, (_, folder) in CM_KINDS.items():
        if entry.startswith(folder + "/"):
            namespaced = kind != "ClusterIssuer"
            ns, name = _path_parts(entry, folder, namespaced=namespaced)
            body = _object(entry, obj, api=CM_API, kind=kind, namespace=ns or None, name=name, fields=("spec",))
            if not isinstance(body.get("spec"), dict):
                raise _Refuse(f"is a {kind} without a spec")
            return KubeObject(kind, ns, name, body)
    raise _Refuse("is in no folder seedbed writes (cert-manager/certificates, issuers or clusterissuers)")


def secret_refs(spec: Any) -> Iterable[str]:
    """Names of Secrets a cert-manager spec refers to, wherever they are.

    Walking the whole spec, rather than listing paths, covers every DNS-01 provider
    (cloudflare.apiTokenSecretRef, route53.secretAccessKeySecretRef, ...), the ACME account key
    (privateKeySecretRef), EAB keys, CA/Vault/Venafi issuers and keystore passwords alike.
    """
    if isinstance(spec, dict):
        for key, value in spec.items():
            if key == "secretName" and isinstance(value, str) and value:
                yield value
            elif key.lower().endswith("secretref") and isinstance(value, dict) and isinstance(value.get("name"), str):
                yield value["name"]
                yield from secret_refs({k: v for k, v in value.items() if k != "name"})
            else:
                yield from secret_refs(value)
    elif isinstance(spec, list):
        for item in spec:
            yield from secret_refs(item)


# --------------------------------------------------------------------------- label selectors


_REQ = re.compile(r"\s*(!?)\s*([A-Za-z0-9./_-]+)\s*(?:(==|=|!=)\s*([A-Za-z0-9._-]*)|\s+(in|notin)\s*\(([^)]*)\))?\s*")


def selector_matches(selector: str, labels: dict[str, str]) -> bool:
    """Whether ``labels`` match a Kubernetes label selector (equality- and set-based requirements).

    The grammar of k8s.io/apimachinery/pkg/labels/selector.go: requirements separated by commas,
    each ``k``, ``!k``, ``k=v``, ``k==v``, ``k!=v``, ``k in (a,b)`` or ``k notin (a,b)``. A selector
    this cannot read matches nothing (the Secret then needs another reason to be restored).
    """
    parts: list[str] = []
    depth, start = 0, 0
    for i, ch in enumerate(selector):
        depth += ch == "("
        depth -= ch == ")"
        if ch == "," and depth == 0:
            parts.append(selector[start:i])
            start = i + 1
    parts.append(selector[start:])
    tests: list[Callable[[dict[str, str]], bool]] = []
    for part in parts:
        m = _REQ.fullmatch(part)
        if not m or (m.group(1) and (m.group(3) or m.group(5))):
            return False
        neg, key, op, value, setop, values = m.groups()
        if op in ("=", "=="):
            tests.append(lambda ls, k=key, v=value: ls.get(k) == v)
        elif op == "!=":
            tests.append(lambda ls, k=key, v=value: ls.get(k) != v)
        elif setop:
            options = {v.strip() for v in values.split(",")}
            if setop == "in":
                tests.append(lambda ls, k=key, o=options: ls.get(k) in o)
            else:
                tests.append(lambda ls, k=key, o=options: ls.get(k) not in o)
        else:
            tests.append(lambda ls, k=key, n=bool(neg): (k in ls) != n)
    return all(t(labels) for t in tests)


# --------------------------------------------------------------------------- volume records


_ACCESS_MODES = frozenset({"ReadWriteOnce", "ReadOnlyMany", "ReadWriteMany", "ReadWriteOncePod"})
_URL_SCHEMES = ("s3://", "nfs://", "cifs://", "azblob://")
_VOLUME_FIELDS = frozenset({
    "namespace", "pvc", "pvName", "volume", "backup", "url", "sizeBytes", "backupSize", "request", "storageClass",
    "accessModes", "volumeMode", "fsType", "volumeAttributes", "numberOfReplicas", "accessMode", "frontend",
    "dataEngine", "pvcLabels",
})
# Longhorn v1.12 Volume CRD enums (longhorn.io/v1beta2): spec.accessMode, spec.frontend, spec.dataEngine.
_ENUMS: dict[str, frozenset[str]] = {
    "volumeMode": frozenset({"Filesystem", "Block"}),
    "fsType": frozenset({"ext4", "xfs"}),
    "accessMode": frozenset({"rwo", "rwx", "rwop"}),
    "frontend": frozenset({"blockdev", "iscsi", "nvmf", "ublk", ""}),
    "dataEngine": frozenset({"v1", "v2"}),
}
_MAX_BYTES = 2**63 - 1  # Longhorn's spec.size is an int64 string


def _int(value: Any, what: str, low: int, high: int) -> int:
    # bool is an int in Python; JSON true is never a size.
    if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
        raise _Refuse(f"has a bad {what} {value!r}: expected a whole number from {low} to {high}")
    return value


def _volumes(data: Any, policy: Policy) -> list[VolumeRecord]:
    records = data.get("volumes") if isinstance(data, dict) and set(data) == {"volumes"} else None
    if not isinstance(records, list):
        raise _Refuse('is not {"volumes": [...]}')
    out: list[VolumeRecord] = []
    seen: set[tuple[str, str]] = set()
    for i, r in enumerate(records):
        try:
            out.append(_volume(r, policy))
        except _Refuse as e:
            raise _Refuse(f"record {i}: {e}") from None
        key = (out[-1].namespace, out[-1].pvc)
        if key in seen:
            raise _Refuse(f"record {i}: claim {key[0]}/{key[1]} is listed twice")
        seen.add(key)
    return out


def _volume(r: Any, policy: Policy) -> VolumeRecord:
    if not isinstance(r, dict):
        raise _Refuse("is not an object")
    extra = sorted(str(k) for k in r if k not in _VOLUME_FIELDS)
    if extra:
        raise _Refuse(f"has unknown fields: {', '.join(extra[:5])}")
    missing = [k for k in ("namespace", "pvc", "volume", "url", "sizeBytes") if k not in r]
    if missing:
        raise _Refuse(f"lacks {', '.join(missing)}")
    ns = _str(r["namespace"], "namespace", _DNS_LABEL, limit=63)
    if ns not in policy.volume_namespaces:
        raise _Refuse(f"restores a claim into namespace {ns}, which seedbed.yaml does not select "
                      "(backup.volumes, gitServer.namespace)")
    pvc = _str(r["pvc"], "pvc", _DNS_SUBDOMAIN)
    _str(r["volume"], "volume", _DNS_LABEL, limit=63)
    if r.get("pvName") is not None:
        _str(r["pvName"], "pvName", _DNS_SUBDOMAIN)
    url = _str(r["url"], "url", limit=2048)
    if not url.startswith(_URL_SCHEMES) or any(ord(c) < 32 for c in url):
        raise _Refuse(f"has a url that is not a Longhorn backup URL ({', '.join(_URL_SCHEMES)})")
    if r.get("backup") is not None:
        _str(r["backup"], "backup", limit=253)
    _int(r["sizeBytes"], "sizeBytes", 1, _MAX_BYTES)
    if r.get("backupSize") is not None:
        _int(r["backupSize"], "backupSize", 0, _MAX_BYTES)
    if r.get("numberOfReplicas") is not None:
        _int(r["numberOfReplicas"], "numberOfReplicas", 1, 20)
    if r.get("request") is not None and not (isinstance(r["request"], str) and _QUANTITY.fullmatch(r["request"])):
        raise _Refuse(f"has a bad request {_shown(r['request'])}: expected a quantity such as 10Gi")
    if r.get("storageClass") is not None:
        _str(r["storageClass"], "storageClass", _DNS_SUBDOMAIN)
    modes = r.get("accessModes")
    if modes is not None and (not isinstance(modes, list) or not modes
                              or not all(isinstance(m, str) and m in _ACCESS_MODES for m in modes)):
        raise _Refuse(f"has bad accessModes: expected a list of {', '.join(sorted(_ACCESS_MODES))}")
    for key, allowed in _ENUMS.items():
        if r.get(key) is not None and r[key] not in allowed:
            choices = ", ".join(sorted(repr(a) for a in allowed))
            raise _Refuse(f"has a bad {key} {_shown(r[key])} (one of {choices})")
    _string_map(r.get("volumeAttributes"), "volumeAttributes")
    _string_map(r.get("pvcLabels"), "pvcLabels")
    return VolumeRecord(namespace=ns, pvc=pvc, record=dict(r))


# --------------------------------------------------------------------------- ledger


def _ledger(data: bytes) -> Ledger:
    from seedbed.certs.ledger import Ledger

    try:
        return Ledger.from_json(data, what="certificate ledger")
    except ArchiveError as e:
        raise _Refuse(f"is not a valid certificate ledger: {e.message.removeprefix('certificate ledger: ')}") from None
