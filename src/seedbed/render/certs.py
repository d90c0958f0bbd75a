"""cert-manager objects for Let's Encrypt: the two ClusterIssuers and the wildcard Certificate.

Pure: the config goes in, plain dicts come out. Both issuers are always rendered, so that a
cluster can switch between staging and production by changing one variable (CLUSTER_ISSUER)
without a new commit of issuer manifests.
"""

from __future__ import annotations

from typing import Any

from ..config import (
    DNS01_SECRET_FIELD,
    CertificatesConfig,
    Config,
    check_dns01_provider,
    check_email,
    check_wildcard,
)
from ..errors import ConfigError

STAGING_SERVER = "https://acme-staging-v02.api.letsencrypt.org/directory"
PRODUCTION_SERVER = "https://acme-v02.api.letsencrypt.org/directory"

STAGING_ISSUER = "letsencrypt-staging"
PRODUCTION_ISSUER = "letsencrypt-production"

# The ACME account keys. They are a contract with the backup: restoring them keeps the same
# ACME accounts across rebuilds (10 new accounts per IP per 3 hours is a limit too).
STAGING_ACCOUNT_KEY = "letsencrypt-staging-account-key"
PRODUCTION_ACCOUNT_KEY = "letsencrypt-production-account-key"
ACCOUNT_KEY_SECRETS = (STAGING_ACCOUNT_KEY, PRODUCTION_ACCOUNT_KEY)

ISSUERS = {"staging": STAGING_ISSUER, "production": PRODUCTION_ISSUER}
SERVERS = {"staging": STAGING_SERVER, "production": PRODUCTION_SERVER}



def _certs(cfg: Config | CertificatesConfig) -> CertificatesConfig:
    return cfg.certificates if isinstance(cfg, Config) else cfg


def issuer_for(acme: str) -> str:
    """The ClusterIssuer name for ``staging`` or ``production`` (the value of CLUSTER_ISSUER)."""
    try:
        return ISSUERS[acme]
    except KeyError:
        raise ConfigError(f"--acme {acme!r}: must be staging or production",
                          fix="use --acme staging (throwaway clusters) or --acme production") from None


def acme_server(acme: str) -> str:
    """The ACME directory URL for ``staging`` or ``production`` (the value of ACME_SERVER)."""
    issuer_for(acme)
    return SERVERS[acme]


def _solver(c: CertificatesConfig) -> dict[str, Any]:
    if c.solver == "http01":
        return {"http01": {"ingress": {"ingressClassName": c.http01.ingress_class}}}
    provider = check_dns01_provider(c.dns01.provider)
    field = DNS01_SECRET_FIELD[provider]
    ref = {"name": c.dns01.secret_name, "key": c.dns01.secret_key}
    return {"dns01": {provider: {field: ref}}}


def _cluster_issuer(name: str, server: str, key_secret: str, email: str,
                    solver: dict[str, Any]) -> dict[str, Any]:
    return {
        "apiVersion": "cert-manager.io/v1",
        "kind": "ClusterIssuer",
        "metadata": {"name": name, "labels": {"app.kubernetes.io/managed-by": "seedbed"}},
        "spec": {
            "acme": {
                "server": server,
                "email": email,
                "privateKeySecretRef": {"name": key_secret},
                "solvers": [solver],
            }
        },
    }


def cluster_issuers(cfg: Config | CertificatesConfig) -> list[dict[str, Any]]:
    """The letsencrypt-staging and letsencrypt-production ClusterIssuers, ready to commit."""
    c = _certs(cfg)
    email = (c.email or "").strip()
    if not email:
        raise ConfigError(
            "certificates.email: an ACME account e-mail is required to render the ClusterIssuers",
            fix="set certificates.email in seedbed.yaml (the ACME account's contact; Let's Encrypt ended expiry emails in 2025)",
        )
    email = check_email(email)
    solver = _solver(c)
    return [
        _cluster_issuer(STAGING_ISSUER, STAGING_SERVER, STAGING_ACCOUNT_KEY, email, solver),
        _cluster_issuer(PRODUCTION_ISSUER, PRODUCTION_SERVER, PRODUCTION_ACCOUNT_KEY, email, solver),
    ]


def wildcard_secret_name(domain: str) -> str:
    return f"wildcard-{domain.replace('.', '-')}-tls"


def wildcard_certificate(cfg: Config | CertificatesConfig, *, issuer: str) -> dict[str, Any]:
    """A Certificate for ``*.domain`` and ``domain`` from the ClusterIssuer ``issuer`` (DNS-01 only)."""
    c = _certs(cfg)
    w = c.wildcard
    if w is None:
        raise ConfigError("certificates.wildcard is not set",
                          fix="add certificates.wildcard.domain to seedbed.yaml, e.g. home.example.com")
    domain = check_wildcard(c)
    assert domain is not None  # w is set
    if not issuer:
        raise ConfigError("no ClusterIssuer given for the wildcard Certificate",
                          fix=f"pass {STAGING_ISSUER} or {PRODUCTION_ISSUER}")
    secret = w.secret_name or wildcard_secret_name(domain)
    return {
        "apiVersion": "cert-manager.io/v1",
        "kind": "Certificate",
        "metadata": {
            "name": secret.removesuffix("-tls") if secret.endswith("-tls") else secret,
            "namespace": w.namespace,
            "labels": {"app.kubernetes.io/managed-by": "seedbed"},
        },
        "spec": {
            "secretName": secret,
            "dnsNames": [f"*.{domain}", domain],
            "issuerRef": {"group": "cert-manager.io", "kind": "ClusterIssuer", "name": issuer},
            # A label on the Secret lets backup.secrets.labelSelector pick it up: restoring it on a
            # rebuild is what saves an issuance.
            "secretTemplate": {"labels": {"app.kubernetes.io/managed-by": "seedbed"}},
        },
    }
