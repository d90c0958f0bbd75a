"""cert-manager's decision to issue a Certificate whose Secret already exists, as a pure function.

A restored Secret stops cert-manager from asking Let's Encrypt again only if cert-manager's trigger
policy chain passes. This module is that chain, read from cert-manager v1.18.0 and v1.21.1:

- ``internal/controller/certificates/policies/policies.go``: ``NewTriggerPolicyChain``, in order;
- ``internal/controller/certificates/policies/checks.go``: each check and its message;
- ``pkg/util/pki/match.go``: ``PrivateKeyMatchesSpec``, ``FuzzyX509AltNamesMatchSpec``;
- ``pkg/util/pki/renewaltime.go``: ``RenewalTime``/``RenewBefore`` (default: 2/3 of the lifetime).

A rebuilt cluster has no CertificateRequests (they are not backed up), so the two checks against
the "current" request do what cert-manager does without one: the public-key check passes and the
spec is compared with the certificate in the Secret (``currentSecretValidForSpec``). Not modelled:
ACME Renewal Information windows (v1.21; known only after talking to the ACME server) and
``spec.renewal`` windows other than ``policy: Disabled``.
"""

from __future__ import annotations

import base64
import binascii
import ipaddress
import re
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

ISSUER_NAME = "cert-manager.io/issuer-name"
ISSUER_KIND = "cert-manager.io/issuer-kind"
ISSUER_GROUP = "cert-manager.io/issuer-group"
CERTIFICATE_NAME = "cert-manager.io/certificate-name"

_GO_DURATION = re.compile(r"(\d+(?:\.\d+)?)(ns|us|µs|ms|s|m|h)")
_UNIT = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}


def go_duration(text: Any) -> timedelta | None:
    """A Go duration string ("2160h", "1h30m"), as metav1.Duration holds it; None if absent or invalid."""
    s = str(text or "").strip()
    if not s or not re.fullmatch(f"(?:{_GO_DURATION.pattern})+", s):
        return None
    return timedelta(seconds=sum(float(n) * _UNIT[u] for n, u in _GO_DURATION.findall(s)))


def _data(secret: Mapping[str, Any], key: str) -> bytes:
    raw = (secret.get("data") or {}).get(key)
    if not raw:
        return b""
    try:
        return base64.b64decode(raw, validate=True)
    except (binascii.Error, ValueError):
        return b"\0invalid-base64"  # decodes to nothing usable: the key/cert checks report it


def _kind_eq(a: str, b: str) -> bool:
    return (a or "Issuer") == (b or "Issuer")


def _group_eq(a: str, b: str) -> bool:
    return (a or "cert-manager.io") == (b or "cert-manager.io")


def _ref(name: str, kind: str, group: str) -> str:
    return f"{kind or 'Issuer'}.{group or 'cert-manager.io'}/{name}"


def _key_violations(key: Any, spec: Mapping[str, Any]) -> list[str]:
    """pki.PrivateKeyMatchesSpec: algorithm, and size (RSA default 2048, ECDSA default P-256)."""
    pk = spec.get("privateKey") or {}
    algorithm, size = pk.get("algorithm") or "RSA", int(pk.get("size") or 0)
    if algorithm == "RSA":
        if not isinstance(key, rsa.RSAPrivateKey):
            return ["spec.privateKey.algorithm"]
        return [] if key.key_size == (size or 2048) else ["spec.privateKey.size"]
    if algorithm == "ECDSA":
        if not isinstance(key, ec.EllipticCurvePrivateKey):
            return ["spec.privateKey.algorithm"]
        return [] if key.curve.key_size == (size or 256) else ["spec.privateKey.size"]
    return [] if isinstance(key, ed25519.Ed25519PrivateKey) else ["spec.privateKey.algorithm"]


def _name_violations(cert: x509.Certificate, spec: Mapping[str, Any]) -> list[str]:
    """pki.FuzzyX509AltNamesMatchSpec: names may move between commonName and dnsNames."""
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        san = x509.SubjectAlternativeName([])
    cns = cert.subject.get_attributes_for_oid(x509.NameOID.COMMON_NAME)
    cert_cn = str(cns[0].value) if cns else ""
    cert_dns = san.get_values_for_type(x509.DNSName)
    spec_cn = str(spec.get("commonName") or "")
    spec_dns = [str(n) for n in spec.get("dnsNames") or []]
    expected = set(spec_dns) | ({spec_cn} if spec_cn else set())
    actual = set(cert_dns) | ({cert_cn} if cert_cn else set())
    out: list[str] = []
    if actual != expected:
        if (spec_cn and spec_cn not in actual) or (cert_cn and cert_cn not in expected):
            out.append("spec.commonName")
        if not set(spec_dns) <= actual or not set(cert_dns) <= expected:
            out.append("spec.dnsNames")
    try:
        spec_ips = sorted(ipaddress.ip_address(str(i)) for i in spec.get("ipAddresses") or [])
    except ValueError:
        spec_ips = []
    if sorted(san.get_values_for_type(x509.IPAddress)) != spec_ips:  # type: ignore[type-var]
        out.append("spec.ipAddresses")
    if sorted(san.get_values_for_type(x509.UniformResourceIdentifier)) != sorted(spec.get("uris") or []):
        out.append("spec.uris")
    if sorted(san.get_values_for_type(x509.RFC822Name)) != sorted(spec.get("emailAddresses") or []):
        out.append("spec.emailAddresses")
    return out


def renewal_time(not_before: datetime, not_after: datetime, spec: Mapping[str, Any]) -> datetime:
    """pki.RenewalTime: renewBefore if set and shorter than the lifetime, else renewBeforePercentage
    in (0, 100), else a third of the lifetime before expiry; truncated to the second."""
    lifetime = not_after - not_before
    before = go_duration(spec.get("renewBefore"))
    pct = spec.get("renewBeforePercentage")
    if before is not None and timedelta(0) < before < lifetime:
        ahead = before
    elif isinstance(pct, int) and 0 < pct < 100:
        ahead = lifetime * pct / 100
    else:
        ahead = lifetime / 3
    return (not_after - ahead).replace(microsecond=0)


def reissue_reason(spec: Mapping[str, Any], name: str, secret: Mapping[str, Any] | None,
                   now: datetime) -> str | None:
    """Why cert-manager would issue Certificate ``name`` (with ``spec``) given ``secret``; None if it would not.

    The messages are cert-manager's own, so a user can match them with its events.
    """
    # SecretDoesNotExist, SecretIsMissingData
    if secret is None:
        return "Issuing certificate as Secret does not exist"
    if not secret.get("data"):
        return "Issuing certificate as Secret does not contain any data"
    key_pem, cert_pem = _data(secret, "tls.key"), _data(secret, "tls.crt")
    if not key_pem:
        return "Issuing certificate as Secret does not contain a private key"
    if not cert_pem:
        return "Issuing certificate as Secret does not contain a certificate"
    # SecretPublicKeysDiffer
    try:
        key = serialization.load_pem_private_key(key_pem, password=None)
    except (ValueError, TypeError) as e:
        return f"Issuing certificate as Secret contains invalid private key data: {e}"
    try:
        cert = x509.load_pem_x509_certificate(cert_pem)
    except ValueError as e:
        return f"Issuing certificate as Secret contains an invalid certificate: {e}"
    pub = serialization.PublicFormat.SubjectPublicKeyInfo
    if (cert.public_key().public_bytes(serialization.Encoding.DER, pub)
            != key.public_key().public_bytes(serialization.Encoding.DER, pub)):
        return "Issuing certificate as Secret contains a private key that does not match the certificate"
    # SecretIssuerAnnotationsMismatch. Go's precedence makes it `(present && name differs) || kind
    # differs || group differs`: a Secret without annotations mismatches a ClusterIssuer ref.
    ann = (secret.get("metadata") or {}).get("annotations") or {}
    ref = spec.get("issuerRef") or {}
    a_name, a_kind, a_group = ann.get(ISSUER_NAME, ""), ann.get(ISSUER_KIND, ""), ann.get(ISSUER_GROUP, "")
    present = any(k in ann for k in (ISSUER_NAME, ISSUER_KIND, ISSUER_GROUP))
    if ((present and a_name != ref.get("name", "")) or not _kind_eq(a_kind, ref.get("kind", ""))
            or not _group_eq(a_group, ref.get("group", ""))):
        return f"Issuing certificate as Secret was previously issued by {_ref(a_name, a_kind, a_group)!r}"
    # SecretCertificateNameAnnotationsMismatch
    if CERTIFICATE_NAME in ann and ann[CERTIFICATE_NAME] != name:
        return (f"Secret was issued for {ann[CERTIFICATE_NAME]!r}. If this message is not transient, you might "
                "have two conflicting Certificates pointing to the same secret.")
    # SecretPrivateKeyMismatchesSpec
    if violations := _key_violations(key, spec):
        return f"Existing private key is not up to date for spec: {violations}"
    # CurrentCertificateRequestMismatchesSpec without a request: currentSecretValidForSpec
    if violations := _name_violations(cert, spec):
        return f"Issuing certificate as Existing issued Secret is not up to date for spec: {violations}"
    # CurrentCertificateNearingExpiry (v1.21: renewal policy Disabled never renews)
    if ((spec.get("renewal") or {}).get("policy")) == "Disabled":
        return None
    renew_at = renewal_time(cert.not_valid_before_utc, cert.not_valid_after_utc, spec)
    if renew_at <= now.astimezone(UTC):
        return f"Renewing certificate as renewal was scheduled at {renew_at.strftime('%Y-%m-%dT%H:%M:%SZ')}"
    return None
