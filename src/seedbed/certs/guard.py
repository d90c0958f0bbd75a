"""The pre-Flux guard: stop a bootstrap that would burn through Let's Encrypt's limits.

Once Flux applies the repository, cert-manager requests a certificate for every Certificate (and
every annotated Ingress) whose Secret does not exist yet. The guard estimates exactly that set
before Flux starts: Certificates in what Flux applies from the GitOps tree (read by
:mod:`seedbed.fluxrepo`, as kustomize-controller builds it), minus those whose Secret a restore
brought back. If that set would exceed a budget, the bootstrap stops with the remedies.

Everything here is pure: :func:`scan_repo` takes the repository :func:`seedbed.fluxrepo.read` read.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import msgspec

from ..envsubst import SubstitutionError, envsubst
from ..errors import Refused
from ..fluxrepo import substitution_disabled
from ..render.certs import PRODUCTION_ISSUER, PRODUCTION_SERVER
from .budget import EXACT_SET_LIMIT, REGISTERED_DOMAIN_LIMIT, Budget, registered_domain
from .ledger import _iso
from .policies import reissue_reason

if TYPE_CHECKING:
    from ..fluxrepo import Repo

_KINDS = {"Certificate", "Ingress", "ClusterIssuer", "Issuer"}  # the kinds the guard reads


class CertificateDoc(msgspec.Struct, frozen=True):
    """A certificate the repository asks for: a Certificate, or an Ingress cert-manager will serve."""

    names: frozenset[str]
    secret_name: str
    namespace: str | None  # as Flux applies it; None when nothing sets it (the Kustomization's namespace)
    issuer_kind: str
    issuer_name: str
    file: str
    line: int
    kind: str = "Certificate"
    unresolved: tuple[str, ...] = ()  # ${VARS} left unsubstituted
    # The Certificate's name and spec as cert-manager will see them (ingress-shim's for an Ingress),
    # for the re-issue decision (policies.py).
    name: str = ""
    spec: Mapping[str, Any] = msgspec.field(default_factory=dict)

    # Equal and hashed by what the repository asks for, not by the spec (a mapping, unhashable).
    def _identity(self) -> tuple[Any, ...]:
        return (self.names, self.secret_name, self.namespace, self.issuer_kind, self.issuer_name, self.file,
                self.line, self.kind, self.unresolved, self.name)

    def __eq__(self, other: object) -> bool:
        return other.__class__ is self.__class__ and self._identity() == other._identity()  # type: ignore[attr-defined]

    def __hash__(self) -> int:
        return hash(self._identity())

    @property
    def where(self) -> str:
        return f"{self.file}:{self.line}"


class RepoScan(msgspec.Struct, frozen=True):
    certificates: list[CertificateDoc]
    production_issuers: frozenset[str]  # "ClusterIssuer/name" (or "Issuer/name") using LE production


class GuardResult(msgspec.Struct, frozen=True):
    ok: bool
    reasons: list[str]  # why it is refused (or would be, when ignored)
    would_issue: list[frozenset[str]]
    notes: list[str] = msgspec.field(default_factory=list)


REMEDIES = (
    "restore the certificates from a backup first: `seedbed bootstrap --restore ARCHIVE`",
    "use Let's Encrypt staging for a throwaway cluster: `--acme staging`",
    "use a separate domain for development: `--domain dev.example.net`",
    "or, knowing that Let's Encrypt then refuses until its limits refill, `--ignore-budget`",
)


def refusal(result: GuardResult) -> Refused:
    message = "Let's Encrypt budget exceeded; stopping before Flux starts:\n" + "\n".join(
        f"  - {r}" for r in result.reasons)
    return Refused(message, fix="; ".join(REMEDIES))


def substitute(text: str, variables: Mapping[str, str]) -> tuple[str, list[str]]:
    """Flux's substitution (:func:`seedbed.envsubst.envsubst`: ``${VAR}``, ``${VAR:=default}``,
    ``${VAR/./-}``...), an unset variable left as written; returns the unresolved names. A value Flux
    could not substitute (its Kustomization fails, and fluxrepo reports it) is left as written."""
    missing: list[str] = []
    try:
        return envsubst(text, variables, keep_unset=True, missing=missing), missing
    except SubstitutionError:
        return text, missing


def _issuer_key(kind: str, name: str) -> str:
    return f"{kind}/{name}"


def _from_object(obj: dict[str, Any], file: str, line: int, unresolved: tuple[str, ...]) -> list[CertificateDoc]:
    kind = obj.get("kind")
    meta = obj.get("metadata") or {}
    ns = meta.get("namespace")
    api = str(obj.get("apiVersion", ""))
    if kind == "Certificate" and api.startswith("cert-manager.io/"):
        spec = obj.get("spec") or {}
        names = list(spec.get("dnsNames") or [])
        if spec.get("commonName"):
            names.append(spec["commonName"])
        ref = spec.get("issuerRef") or {}
        if not names or not spec.get("secretName"):
            return []
        return [CertificateDoc(frozenset(n.lower() for n in names), str(spec["secretName"]), ns,
                               str(ref.get("kind") or "Issuer"), str(ref.get("name") or ""), file, line,
                               "Certificate", unresolved, str(meta.get("name") or ""), spec)]
    if kind == "Ingress":
        ann = meta.get("annotations") or {}
        if "cert-manager.io/cluster-issuer" in ann:
            ikind, iname = "ClusterIssuer", str(ann["cert-manager.io/cluster-issuer"])
        elif "cert-manager.io/issuer" in ann:
            ikind, iname = "Issuer", str(ann["cert-manager.io/issuer"])
        else:
            return []
        out = []
        # cert-manager's ingress-shim makes one Certificate per tls entry, named after its Secret.
        for tls in (obj.get("spec") or {}).get("tls") or []:
            hosts = [h.lower() for h in tls.get("hosts") or []]
            if hosts and tls.get("secretName"):
                spec = _shim_spec(ann, hosts, ikind, iname)
                out.append(CertificateDoc(frozenset(hosts), str(tls["secretName"]), ns, ikind, iname,
                                          file, line, "Ingress", unresolved, str(tls["secretName"]), spec))
        return out
    return []


def _shim_spec(ann: Mapping[str, Any], hosts: list[str], kind: str, name: str) -> dict[str, Any]:
    """The Certificate spec ingress-shim derives from an Ingress's annotations (cert-manager v1.18
    pkg/controller/certificate-shim/helper.go translateAnnotations; the fields the re-issue decision reads)."""
    spec: dict[str, Any] = {"dnsNames": hosts,
                            "issuerRef": {"kind": kind, "name": name,
                                          "group": str(ann.get("cert-manager.io/issuer-group") or "")}}
    for key, field_ in (("common-name", "commonName"), ("duration", "duration"), ("renew-before", "renewBefore")):
        if ann.get(f"cert-manager.io/{key}"):
            spec[field_] = str(ann[f"cert-manager.io/{key}"])
    if str(ann.get("cert-manager.io/renew-before-percentage", "")).isdigit():
        spec["renewBeforePercentage"] = int(ann["cert-manager.io/renew-before-percentage"])
    key_spec: dict[str, Any] = {}
    if ann.get("cert-manager.io/private-key-algorithm"):
        key_spec["algorithm"] = str(ann["cert-manager.io/private-key-algorithm"])
    if str(ann.get("cert-manager.io/private-key-size", "")).isdigit():
        key_spec["size"] = int(ann["cert-manager.io/private-key-size"])
    if key_spec:
        spec["privateKey"] = key_spec
    return spec


def _production_issuer(obj: dict[str, Any]) -> str | None:
    if obj.get("kind") not in ("ClusterIssuer", "Issuer"):
        return None
    acme = (obj.get("spec") or {}).get("acme") or {}
    server = str(acme.get("server", "")) if isinstance(acme, dict) else ""
    if server.rstrip("/") == PRODUCTION_SERVER or "acme-v02.api.letsencrypt.org" in server:
        return _issuer_key(str(obj["kind"]), str((obj.get("metadata") or {}).get("name", "")))
    return None


def scan_repo(repo: Repo, variables: Mapping[str, str] | None = None) -> RepoScan:
    """Every Certificate, annotated Ingress and production issuer Flux applies from ``repo``, with the
    cluster's ``variables`` (``${CLUSTER_DOMAIN}``...) substituted.

    ``repo`` is what kustomize-controller builds (:func:`seedbed.fluxrepo.read`): a file outside every
    Flux path is not there, and an object's namespace is the one its kustomization.yaml (or a parent's)
    or the Flux Kustomization's targetNamespace gives it. The variables are substituted in every object
    that Flux substitutes in (not one marked ``kustomize.toolkit.fluxcd.io/substitute: disabled``):
    seedbed's flux-system Kustomization substitutes them from cluster-vars, and fluxrepo, which cannot
    read that ConfigMap (seedbed applies it; it is not in the repository), leaves them as written.
    """
    certs: list[CertificateDoc] = []
    prod: set[str] = set()
    for obj in repo.objects:
        if obj.kind not in _KINDS:
            continue
        missing: list[str] = []
        data = obj.data if substitution_disabled(obj.data) else _substituted(obj.data, variables or {}, missing)
        if not isinstance(data.get("metadata") or {}, dict):
            continue
        line = repo.positioned(obj).node_line  # the first line of the object as written
        certs += _from_object(data, obj.file, line, tuple(sorted(set(missing))))
        if (key := _production_issuer(data)) is not None:
            prod.add(key)
    return RepoScan(certs, frozenset(prod))


def _substituted(value: Any, variables: Mapping[str, str], missing: list[str]) -> Any:
    """``value`` with :func:`substitute` applied to every string in it; unresolved names go to ``missing``."""
    if isinstance(value, dict):
        return {k: _substituted(v, variables, missing) for k, v in value.items()}
    if isinstance(value, list):
        return [_substituted(v, variables, missing) for v in value]
    if isinstance(value, str) and "${" in value:
        text, unresolved = substitute(value, variables)
        missing += unresolved
        return text
    return value


class Issue(msgspec.Struct, frozen=True):
    """A certificate cert-manager will request from Let's Encrypt production, and why."""

    cert: CertificateDoc
    reason: str


RestoredSecret = Mapping[str, Any] | tuple[str, str] | str


def issues(certs: Iterable[CertificateDoc], restored_secrets: Iterable[RestoredSecret],
           now: datetime | None = None, *, production_issuers: Iterable[str] = (f"ClusterIssuer/{PRODUCTION_ISSUER}",)) -> list[Issue]:
    """Every production Certificate cert-manager will issue once it runs, with cert-manager's reason (:func:`decide`)."""
    return decide(certs, restored_secrets, now, production_issuers=production_issuers)[0]


def decide(certs: Iterable[CertificateDoc], restored_secrets: Iterable[RestoredSecret],
           now: datetime | None = None, *, production_issuers: Iterable[str] = (f"ClusterIssuer/{PRODUCTION_ISSUER}",)
           ) -> tuple[list[Issue], list[CertificateDoc]]:
    """The production Certificates cert-manager will issue once it runs, with cert-manager's reason, and
    those whose restored Secret it will keep (so the user sees both halves of the decision).

    ``restored_secrets`` are the Secret objects the restore wrote (data and annotations as in the
    archive). A restored Secret prevents an issuance only if cert-manager's trigger policies pass
    (:func:`seedbed.certs.policies.reissue_reason`): a certificate inside its renewal window, issued
    by another issuer (a staging certificate after switching to production), for other names, or
    with another key type or size is issued again, and spends one of the five per set of names.
    A Certificate whose namespace a Kustomization sets (none in the manifest) matches by Secret name.

    A restored Secret given only by name ("namespace/name" or a pair), not as the object, cannot be
    checked and is taken as sufficient, as seedbed did before it read the objects.
    """
    now = now or datetime.now(UTC)
    by_key: dict[tuple[str, str], Mapping[str, Any] | None] = {}
    by_name: dict[str, Mapping[str, Any] | None] = {}
    for s in restored_secrets:
        if isinstance(s, Mapping):
            md = s.get("metadata") or {}
            ns, name, obj = str(md.get("namespace") or ""), str(md.get("name") or ""), s
        else:
            ns, _, name = s.partition("/") if isinstance(s, str) else (s[0], "/", s[1])
            obj = None
        by_key[(ns, name)] = obj
        by_name.setdefault(name, obj)
    prod = set(production_issuers)
    out: list[Issue] = []
    kept: list[CertificateDoc] = []
    seen: set[tuple[str | None, str]] = set()
    for c in certs:
        key = (c.namespace, c.secret_name)
        if _issuer_key(c.issuer_kind, c.issuer_name) not in prod or key in seen:
            continue  # the same Secret in two overlays is one certificate
        seen.add(key)
        found = (c.namespace, c.secret_name) in by_key if c.namespace is not None else c.secret_name in by_name
        secret = by_key.get((c.namespace or "", c.secret_name)) if c.namespace is not None \
            else by_name.get(c.secret_name)
        if found and secret is None:
            kept.append(c)  # restored, known by name only
            continue
        reason = reissue_reason(c.spec, c.name or c.secret_name, secret, now)
        if reason is not None:
            out.append(Issue(c, reason))
        else:
            kept.append(c)
    return out, kept


def would_issue(certs: Iterable[CertificateDoc], restored_secrets: Iterable[RestoredSecret],
                now: datetime | None = None, *,
                production_issuers: Iterable[str] = (f"ClusterIssuer/{PRODUCTION_ISSUER}",)
                ) -> list[CertificateDoc]:
    """The Certificates of :func:`issues`, without the reasons."""
    return [i.cert for i in issues(certs, restored_secrets, now, production_issuers=production_issuers)]


def assess(planned: Iterable[Iterable[str]], budget: Budget, *, acme: str, ignore_budget: bool = False
           ) -> GuardResult:
    """Would issuing ``planned`` (one name set per certificate) exceed a budget at ``budget.now``?"""
    sets = [frozenset(n.lower() for n in names) for names in planned]
    sets = [s for s in sets if s]
    if acme != "production":
        return GuardResult(True, [], sets, [f"--acme {acme}: Let's Encrypt staging has far higher limits; "
                                            "the production budget is not checked"])
    reasons: list[str] = []
    notes: list[str] = []
    per_domain: dict[str, list[frozenset[str]]] = {}
    per_set: dict[frozenset[str], int] = {}
    for s in sets:
        # A renewal (this exact set issued before) is exempt from the per-domain limit, not the per-set one.
        if not budget.is_renewal(s):
            for d in sorted({registered_domain(n) or n for n in s}):
                per_domain.setdefault(d, []).append(s)
        per_set[s] = per_set.get(s, 0) + 1
    for d, items in sorted(per_domain.items()):
        b = budget.domain(d)
        if len(items) > b.remaining:
            when = f"; one more every ~202 min, the first at {_iso(b.available_at or b.refills_at)}" \
                if b.refills_at else ""
            listed = "; ".join(", ".join(sorted(s)) for s in items[:5]) + (" ..." if len(items) > 5 else "")
            reasons.append(f"{d}: {b.remaining} of {REGISTERED_DOMAIN_LIMIT} left ({b.used} new in the last 168 h), "
                           f"{len(items)} new ({listed}) would exceed {REGISTERED_DOMAIN_LIMIT} certificates per "
                           f"registered domain per 7 days{when}")
    for s, count in sorted(per_set.items(), key=lambda kv: sorted(kv[0])):
        e = budget.exact_set(s)
        names = ", ".join(sorted(s))
        if count > e.remaining:
            when = f"; one more every 34 h, the first at {_iso(e.available_at or e.refills_at)}" \
                if e.refills_at else ""
            reasons.append(f"{names}: {e.remaining} of {EXACT_SET_LIMIT} left ({e.used} issued in the last 168 h), "
                           f"{count} new would exceed {EXACT_SET_LIMIT} certificates for the same set of names "
                           f"per 7 days (renewals included, no override exists){when}")
        elif count == e.remaining:
            notes.append(f"{names}: this uses the last of {EXACT_SET_LIMIT} certificates for this set of names "
                         "(one comes back every 34 h); the next rebuild without a restore may be refused")
    notes += budget.notes
    if reasons and ignore_budget:
        return GuardResult(True, reasons, sets, [*notes, "--ignore-budget: going ahead anyway"])
    return GuardResult(not reasons, reasons, sets, notes)
