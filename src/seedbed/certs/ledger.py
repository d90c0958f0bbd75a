"""The issuance ledger: which certificates were issued for which names, and when.

Issuances come from three sources: the cluster's cert-manager objects, the ledger carried in a
seedbed backup (so history survives a teardown) and Certificate Transparency logs. The same
certificate is often seen through several of them; :class:`Ledger` merges those into one entry,
because counting it twice would refuse a bootstrap that is actually safe.

Everything here is pure: the cluster objects and the clock are passed in.
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Iterable, Iterator
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, Literal

import msgspec
from msgspec.structs import replace

from .. import yamlutil
from ..errors import ArchiveError, SeedbedError

if TYPE_CHECKING:
    from cryptography import x509

Source = Literal["cluster", "backup", "ct"]
# Which CA issued it, as far as Let's Encrypt's production limits are concerned.
CA = Literal["production", "staging", "other", "unknown"]

LEDGER_VERSION = 1
LEDGER_KIND = "seedbed-certificate-ledger"
# Two sightings of the same names closer than this are the same certificate (when no serial).
SAME_CERT_TOLERANCE = timedelta(minutes=1)
# Let's Encrypt backdates notBefore by one hour. When only notBefore is known, adding the hour
# back keeps our window from ending before Let's Encrypt's does (late is safe, early is not).
LE_BACKDATE = timedelta(hours=1)

# Staging intermediates are named "(STAGING) ..." today and were "Fake LE ..." before.
_STAGING_MARKERS = ("staging", "fake le")


def classify_issuer(issuer: str | None) -> CA:
    """Whether an issuer name (a certificate's issuer DN, or crt.sh's issuer_name) is LE production."""
    if not issuer:
        return "unknown"
    low = issuer.lower()
    if any(m in low for m in _STAGING_MARKERS):
        return "staging"
    if "let's encrypt" in low or "lets encrypt" in low:
        return "production"
    return "other"


def normalize_serial(serial: str | int | None) -> str | None:
    """Lower-case hex without separators or leading zeros, so crt.sh and x509 serials compare equal."""
    if serial is None:
        return None
    if isinstance(serial, int):
        return format(serial, "x")
    text = serial.strip().lower().replace(":", "")
    try:
        return format(int(text, 16), "x")
    except ValueError:
        return text or None


def normalize_names(names: Iterable[str]) -> frozenset[str]:
    return frozenset(n.strip().lower().rstrip(".") for n in names if n and n.strip())


def _utc(value: datetime) -> datetime:
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def parse_time(value: Any) -> datetime | None:
    """RFC 3339 / ISO 8601 (with or without zone; no zone means UTC), or None."""
    if not isinstance(value, str) or not value:
        return None
    try:
        return _utc(datetime.fromisoformat(value.replace("Z", "+00:00")))
    except ValueError:
        return None


_ENTRY_FIELDS = frozenset({"names", "issuedAt", "source", "serial", "issuer", "ca", "notBefore"})
# A name as certificates carry it (a DNS name, a wildcard, at worst a common name): no spaces or controls.
_NAME = re.compile(r"[^\s\x00-\x1f\x7f]{1,253}")
_SERIAL = re.compile(r"[0-9a-fA-F:]{1,128}")
_MAX_NAMES = 100  # Let's Encrypt's limit of names per certificate
# Let's Encrypt issued its first certificate in 2015; far-future dates would hold a domain's budget forever.
_YEARS = range(2015, 2101)
MAX_ENTRIES = 100_000


def _shown(value: Any) -> str:
    return repr(value[:40]) if isinstance(value, str) else f"{type(value).__name__} {str(value)[:40]}"


def _stored_time(value: Any, what: str, *, required: bool) -> datetime | None:
    if value is None and not required:
        return None
    parsed = parse_time(value)
    if parsed is None:
        raise ValueError(f"{what} must be an RFC 3339 time such as 2025-03-01T12:00:00Z, not {_shown(value)}")
    if parsed.year not in _YEARS:
        raise ValueError(f"{what} {value!r} is not a time Let's Encrypt issued at (years {_YEARS[0]}-{_YEARS[-1]})")
    return parsed


def _iso(value: datetime | None) -> str | None:
    return None if value is None else _utc(value).isoformat().replace("+00:00", "Z")


class Issuance(msgspec.Struct, frozen=True):
    """One issued certificate."""

    names: frozenset[str]
    issued_at: datetime
    source: Source
    serial: str | None = None
    issuer: str | None = None
    ca: CA = "unknown"
    not_before: datetime | None = None
    where: str | None = None  # e.g. "CertificateRequest apps/web-1", for explanations

    def __post_init__(self) -> None:
        msgspec.structs.force_setattr(self, "names", normalize_names(self.names))
        msgspec.structs.force_setattr(self, "issued_at", _utc(self.issued_at))
        msgspec.structs.force_setattr(self, "serial", normalize_serial(self.serial))
        if self.not_before is not None:
            msgspec.structs.force_setattr(self, "not_before", _utc(self.not_before))

    @property
    def counts(self) -> bool:
        """Counted against Let's Encrypt production limits (unknown CAs are counted, to be safe)."""
        return self.ca in ("production", "unknown")

    def same_certificate(self, other: Issuance) -> bool:
        if self.serial and other.serial:
            return self.serial == other.serial
        if self.names != other.names:
            return False
        if abs(self.issued_at - other.issued_at) <= SAME_CERT_TOLERANCE:
            return True
        return (self.not_before is not None and other.not_before is not None
                and abs(self.not_before - other.not_before) <= SAME_CERT_TOLERANCE)

    def merged(self, other: Issuance) -> Issuance:
        """This issuance completed with what ``other`` knows.

        The later time wins: it keeps the certificate in the window longer, which errs on the side
        of refusing rather than of getting a domain banned for a week.
        """
        ca: CA = self.ca if self.ca != "unknown" else other.ca
        return replace(
            self,
            issued_at=max(self.issued_at, other.issued_at),
            serial=self.serial or other.serial,
            issuer=self.issuer or other.issuer,
            ca=ca,
            not_before=self.not_before or other.not_before,
            where=self.where or other.where,
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "names": sorted(self.names),
            "issuedAt": _iso(self.issued_at),
            "source": self.source,
            "serial": self.serial,
            "issuer": self.issuer,
            "ca": self.ca,
            "notBefore": _iso(self.not_before),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any], *, source: Source | None = None) -> Issuance:
        """One entry of a stored ledger, every field checked (ValueError says which and why).

        Stored ledgers come from archives and from a ConfigMap anyone with access can edit: a
        float serial or a year-1 date must be refused here, not crash the budget arithmetic later.
        """
        unknown = sorted(str(k) for k in data if k not in _ENTRY_FIELDS)
        if unknown:
            raise ValueError(f"unknown field {unknown[0]!r}")
        names = data.get("names")
        if (not isinstance(names, list) or not names or len(names) > _MAX_NAMES
                or not all(isinstance(n, str) and _NAME.fullmatch(n.strip().lower().rstrip(".")) for n in names)):
            raise ValueError(f"names must be a non-empty list of at most {_MAX_NAMES} DNS names")
        issued_at = _stored_time(data.get("issuedAt"), "issuedAt", required=True)
        assert issued_at is not None
        not_before = _stored_time(data.get("notBefore"), "notBefore", required=False)
        ca = data.get("ca", "unknown")
        if ca not in ("production", "staging", "other", "unknown"):
            raise ValueError(f"ca must be production, staging, other or unknown, not {_shown(ca)}")
        src = data.get("source", "backup")
        if src not in ("cluster", "backup", "ct"):
            raise ValueError(f"source must be cluster, backup or ct, not {_shown(src)}")
        serial = data.get("serial")
        if serial is not None and not (isinstance(serial, str) and _SERIAL.fullmatch(serial)):
            raise ValueError(f"serial must be a hexadecimal string, not {_shown(serial)}")
        issuer = data.get("issuer")
        if issuer is not None and not (isinstance(issuer, str) and len(issuer) <= 1024):
            raise ValueError(f"issuer must be a string, not {_shown(issuer)}")
        return cls(names=frozenset(names), issued_at=issued_at, source=source or src,
                   serial=serial, issuer=issuer, ca=ca, not_before=not_before)


class Ledger(msgspec.Struct, dict=True):  # dict: room for the lookup index, kept out of eq and repr
    """Issuances from every source, one entry per certificate."""

    issuances: list[Issuance] = msgspec.field(default_factory=list)

    def __iter__(self) -> Iterator[Issuance]:
        return iter(self.issuances)

    def __len__(self) -> int:
        return len(self.issuances)

    def add(self, issuance: Issuance) -> bool:
        """Add one; False when it is a certificate already in the ledger (then its details are merged)."""
        # Only entries with the same serial or the same names can be the same certificate: look
        # those up instead of comparing with every entry (a cluster has hundreds of certificates).
        by_serial, by_names = self._index()
        candidates = set(by_names.get(issuance.names, ()))
        if issuance.serial and issuance.serial in by_serial:
            candidates.add(by_serial[issuance.serial])
        for i in sorted(candidates):
            known = self.issuances[i]
            if known.same_certificate(issuance):
                self.issuances[i] = merged = known.merged(issuance)
                self._remember(i, merged)
                return False
        self.issuances.append(issuance)
        self._remember(len(self.issuances) - 1, issuance)
        return True

    def _index(self) -> tuple[dict[str, int], dict[frozenset[str], list[int]]]:
        if getattr(self, "_indexed", -1) != len(self.issuances):
            self._by_serial: dict[str, int] = {}
            self._by_names: dict[frozenset[str], list[int]] = {}
            self._indexed = 0
            for i, known in enumerate(self.issuances):
                self._remember(i, known)
        return self._by_serial, self._by_names

    def _remember(self, i: int, issuance: Issuance) -> None:
        if issuance.serial:
            self._by_serial.setdefault(issuance.serial, i)
        slots = self._by_names.setdefault(issuance.names, [])
        if i not in slots:
            slots.append(i)
        self._indexed = max(self._indexed, i + 1)

    def extend(self, issuances: Iterable[Issuance]) -> int:
        """Add many; returns how many were new certificates."""
        return sum(self.add(i) for i in issuances)

    @classmethod
    def merge(cls, *sources: Iterable[Issuance]) -> Ledger:
        ledger = cls()
        for source in sources:
            ledger.extend(source)
        return ledger

    def to_json(self) -> str:
        """The versioned JSON the backup archive carries."""
        items = sorted(self.issuances, key=lambda i: (i.issued_at, sorted(i.names)))
        data = {"version": LEDGER_VERSION, "kind": LEDGER_KIND, "issuances": [i.to_dict() for i in items]}
        # msgspec, as for every large JSON (a ledger of 500 certificates is 17,000 values); the
        # standard library's indent=1 layout, with UTF-8 where it wrote \u escapes.
        return msgspec.json.format(msgspec.json.encode(data), indent=1).decode()

    @classmethod
    def from_json(cls, text: str | bytes | dict[str, Any], *, what: str = "certificate ledger",
                  error: type[SeedbedError] = ArchiveError,
                  fix: str = "the archive's certificate ledger is damaged; use another backup") -> Ledger:
        """A stored ledger (its text, or the already-parsed JSON), validated in full; entries become
        source "backup". Any problem is one ``error`` naming ``what``, the entry and the field."""
        data: Any = text if isinstance(text, dict) else yamlutil.safe_json(text, what=what, error=error)
        if not isinstance(data, dict) or not isinstance(data.get("issuances"), list):
            raise error(f"{what}: expected an object with an 'issuances' list", fix=fix)
        version = data.get("version")
        if version != LEDGER_VERSION or isinstance(version, bool):
            raise error(f"{what}: version {version!r} is not supported (this seedbed reads version "
                        f"{LEDGER_VERSION})", fix=fix)
        if data.get("kind", LEDGER_KIND) != LEDGER_KIND or set(data) - {"version", "kind", "issuances"}:
            raise error(f"{what}: not a seedbed certificate ledger (kind {LEDGER_KIND})", fix=fix)
        if len(data["issuances"]) > MAX_ENTRIES:
            raise error(f"{what}: more than {MAX_ENTRIES} entries", fix=fix)
        ledger = cls()
        for n, item in enumerate(data["issuances"]):
            try:
                if not isinstance(item, dict):
                    raise ValueError("not an object")
                ledger.add(Issuance.from_dict(item, source="backup"))
            except (ValueError, TypeError) as e:
                raise error(f"{what}: entry {n}: {e}", fix=fix) from None
        return ledger


# --------------------------------------------------------------------------- cluster objects


class ClusterScan(msgspec.Struct, frozen=True):
    issuances: list[Issuance]
    notes: list[str]


def _ready_time(obj: dict[str, Any]) -> datetime | None:
    for cond in (obj.get("status") or {}).get("conditions") or []:
        if cond.get("type") == "Ready" and cond.get("status") == "True":
            return parse_time(cond.get("lastTransitionTime"))
    return None


def _b64(value: Any) -> bytes | None:
    if not isinstance(value, str) or not value:
        return None
    try:
        return base64.b64decode(value, validate=False)
    except (binascii.Error, ValueError):
        return None


def _san_names(ext_owner: x509.Certificate | x509.CertificateSigningRequest) -> list[str]:
    from cryptography import x509
    from cryptography.x509.oid import NameOID

    names: list[str] = []
    try:
        san = ext_owner.extensions.get_extension_for_class(x509.SubjectAlternativeName)
        names += san.value.get_values_for_type(x509.DNSName)
    except x509.ExtensionNotFound:
        pass
    for attr in ext_owner.subject.get_attributes_for_oid(NameOID.COMMON_NAME):
        if isinstance(attr.value, str):
            names.append(attr.value)
    return names


def _parse_certificate(pem: bytes) -> x509.Certificate | None:
    # cryptography's x509 is imported when a certificate is there to read: a backup of Secrets and
    # Certificates without CertificateRequests, and every restore, never needs it.
    from cryptography import x509

    try:
        return x509.load_pem_x509_certificate(pem)
    except ValueError:
        return None


def _parse_csr(pem: bytes) -> x509.CertificateSigningRequest | None:
    from cryptography import x509

    try:
        return x509.load_pem_x509_csr(pem)
    except ValueError:
        return None


def _issuer_ca(issuer_ref: dict[str, Any], issuers: dict[str, CA]) -> CA:
    kind = issuer_ref.get("kind") or "Issuer"
    return issuers.get(f"{kind}/{issuer_ref.get('name')}", "unknown")


def issuer_kinds(issuers: Iterable[dict[str, Any]]) -> dict[str, CA]:
    """``"ClusterIssuer/name"`` → CA, from (Cluster)Issuer objects and their ACME server."""
    out: dict[str, CA] = {}
    for obj in issuers:
        spec = obj.get("spec") or {}
        acme = spec.get("acme")
        if isinstance(acme, dict):
            server = str(acme.get("server", ""))
            if "acme-staging" in server:
                ca: CA = "staging"
            elif "api.letsencrypt.org" in server:
                ca = "production"
            else:
                ca = "other"
        else:
            ca = "other"  # CA, selfSigned, Vault...: never Let's Encrypt
        key = f"{obj.get('kind', 'Issuer')}/{(obj.get('metadata') or {}).get('name')}"
        if obj.get("kind") == "Issuer":
            # Namespaced issuers are referred to by name within the namespace; the name is enough
            # here because a clash between namespaces only makes the result less precise.
            key = f"Issuer/{(obj.get('metadata') or {}).get('name')}"
        out[key] = ca
    return out


def from_cluster(certificates: list[dict[str, Any]], certificate_requests: list[dict[str, Any]],
                 issuers: list[dict[str, Any]] | None = None) -> list[Issuance]:
    """Issuances seen in cert-manager objects (see :func:`scan_cluster` for the notes too)."""
    return scan_cluster(certificates, certificate_requests, issuers).issuances


def scan_cluster(certificates: list[dict[str, Any]], certificate_requests: list[dict[str, Any]],
                 issuers: list[dict[str, Any]] | None = None) -> ClusterScan:
    """Issuances from Certificates and CertificateRequests, plus notes on what was assumed.

    A CertificateRequest is the best witness: its signed certificate says who issued it, when,
    and its serial. A Certificate only adds its current certificate (status.notBefore), which
    covers requests cert-manager has already garbage-collected.
    """
    kinds = issuer_kinds(issuers or [])
    out: list[Issuance] = []
    notes: list[str] = []
    unknown = 0
    for cr in certificate_requests:
        meta = cr.get("metadata") or {}
        where = f"CertificateRequest {meta.get('namespace', '')}/{meta.get('name', '')}"
        spec, status = cr.get("spec") or {}, cr.get("status") or {}
        ready = _ready_time(cr)
        cert_pem = _b64(status.get("certificate"))
        cert = _parse_certificate(cert_pem) if cert_pem else None
        if cert is None and ready is None:
            continue  # not issued (pending, failed or denied): nothing was counted by the CA
        names: list[str] = []
        serial: int | None = None
        issuer_dn: str | None = None
        not_before: datetime | None = None
        if cert is not None:
            names = _san_names(cert)
            serial = cert.serial_number
            issuer_dn = cert.issuer.rfc4514_string()
            not_before = cert.not_valid_before_utc
        if not names:
            csr_pem = _b64(spec.get("request"))
            csr = _parse_csr(csr_pem) if csr_pem else None
            if csr is not None:
                names = _san_names(csr)
        if not names:
            notes.append(f"{where}: no names could be read; not counted")
            continue
        ca = classify_issuer(issuer_dn) if issuer_dn else _issuer_ca(spec.get("issuerRef") or {}, kinds)
        issued_at = ready or (not_before + LE_BACKDATE if not_before else None)
        if issued_at is None:
            continue
        unknown += ca == "unknown"
        out.append(Issuance(names=frozenset(names), issued_at=issued_at, source="cluster",
                            serial=format(serial, "x") if serial is not None else None,
                            issuer=issuer_dn, ca=ca, not_before=not_before, where=where))
    seen_names: dict[frozenset[str], list[Issuance]] = {}
    for known in out:
        seen_names.setdefault(known.names, []).append(known)
    for cert_obj in certificates:
        meta = cert_obj.get("metadata") or {}
        where = f"Certificate {meta.get('namespace', '')}/{meta.get('name', '')}"
        spec, status = cert_obj.get("spec") or {}, cert_obj.get("status") or {}
        not_before = parse_time(status.get("notBefore"))
        if not_before is None:
            continue  # never issued
        names = list(spec.get("dnsNames") or [])
        if spec.get("commonName"):
            names.append(spec["commonName"])
        if not names:
            continue
        ca = _issuer_ca(spec.get("issuerRef") or {}, kinds)
        candidate = Issuance(names=frozenset(names), issued_at=not_before + LE_BACKDATE, source="cluster",
                             ca=ca, not_before=not_before, where=where)
        if any(candidate.same_certificate(i) for i in seen_names.get(candidate.names, ())):
            continue  # its CertificateRequest already told us more
        seen_names.setdefault(candidate.names, []).append(candidate)
        unknown += ca == "unknown"
        out.append(candidate)
    if unknown:
        notes.append(f"{unknown} certificate(s) in the cluster came from an issuer seedbed could not identify; "
                     "counted as Let's Encrypt production to be safe")
    return ClusterScan(out, notes)
