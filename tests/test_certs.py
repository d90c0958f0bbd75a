"""Certificates: issuers and wildcard rendering, ledger, Let's Encrypt budget, crt.sh, the pre-Flux guard.

No test contacts crt.sh: the CT tests talk to tests/fake_crtsh.py on 127.0.0.1.
"""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from hypothesis import given, settings
from hypothesis import strategies as st

from fake_crtsh import LE_STAGING, FakeCrtSh
from seedbed import fluxrepo
from seedbed.certs import (
    EXACT_SET_LIMIT,
    REGISTERED_DOMAIN_LIMIT,
    Issuance,
    Ledger,
    assess,
    compute,
    fetch_ct,
    from_cluster,
    registered_domain,
    scan_cluster,
    would_issue,
)
from seedbed.certs.budget import DOMAIN_REFILL, EXACT_SET_REFILL, validate_domain
from seedbed.certs.guard import RepoScan, refusal, scan_repo, substitute
from seedbed.config import CertificatesConfig, Config, Dns01Solver, WildcardConfig
from seedbed.errors import ArchiveError, ConfigError, Refused
from seedbed.render.certs import (
    PRODUCTION_ACCOUNT_KEY,
    PRODUCTION_ISSUER,
    PRODUCTION_SERVER,
    STAGING_ACCOUNT_KEY,
    STAGING_ISSUER,
    STAGING_SERVER,
    cluster_issuers,
    wildcard_certificate,
)

NOW = datetime(2026, 3, 10, 12, 0, tzinfo=UTC)
H = timedelta(hours=1)


def iss(*names: str, ago: timedelta, source: str = "backup", ca: str = "production",
        serial: str | None = None) -> Issuance:
    return Issuance(names=frozenset(names), issued_at=NOW - ago, source=source, ca=ca,  # type: ignore[arg-type]
                    serial=serial)


def check(planned: Any, budget: Any, *, acme: str, ignore_budget: bool = False) -> Any:
    """What the certificate-guard step does with an assessment: refuse with the remedies when it says no."""
    result = assess(planned, budget, acme=acme, ignore_budget=ignore_budget)
    if not result.ok:
        raise refusal(result)
    return result


# --------------------------------------------------------------------------- registered domains


@pytest.mark.parametrize(("name", "expected"), [
    ("a.b.example.co.uk", "example.co.uk"),
    ("new.blog.example.co.uk", "example.co.uk"),
    ("*.example.com", "example.com"),
    ("*.home.example.com", "example.com"),
    ("WWW.Example.COM.", "example.com"),
    # The PSL's private section counts: Let's Encrypt gives each github.io site its own budget.
    ("example.github.io", "example.github.io"),
    ("a.example.github.io", "example.github.io"),
    ("co.uk", None),
    ("*.co.uk", None),
])
def test_registered_domain(name: str, expected: str | None) -> None:
    assert registered_domain(name) == expected


def test_co_uk_domains_are_budgeted_separately() -> None:
    ledger = Ledger([iss("a.example.co.uk", ago=H), iss("b.example.co.uk", ago=2 * H),
                     iss("a.other.co.uk", ago=H)])
    budget = compute(ledger, NOW)
    assert set(budget.domains) == {"example.co.uk", "other.co.uk"}
    assert budget.domains["example.co.uk"].used == 2
    assert budget.domains["other.co.uk"].used == 1
    assert budget.domain("x.y.example.co.uk").used == 2


# --------------------------------------------------------------------------- budget arithmetic


def test_window_edges_167_and_169_hours() -> None:
    ledger = Ledger([iss("a.example.com", ago=167 * H), iss("b.example.com", ago=169 * H)])
    d = compute(ledger, NOW).domain("example.com")
    assert d.used == 1  # counted in the 168 h shown ...
    # ... but its token came back ~202 minutes after it was spent: the bucket is full.
    assert d.remaining == REGISTERED_DOMAIN_LIMIT
    assert d.refills_at is None and d.available_at is None


def test_exactly_168_hours_is_outside_the_window() -> None:
    d = compute(Ledger([iss("a.example.com", ago=168 * H)]), NOW).domain("example.com")
    assert d.used == 0


def test_an_exact_set_refills_one_certificate_every_34_hours_not_after_a_week() -> None:
    """letsencrypt.org/docs/rate-limits (2025): 5 per exact set per 7 days, one back every 34 hours."""
    names = ("*.home.example.com", "home.example.com")
    burst = Ledger([iss(*names, ago=H, serial=f"{k + 1:x}") for k in range(5)] + [iss(*names, ago=169 * H)])
    e = compute(burst, NOW).exact_set(names)
    assert (e.used, e.limit, e.remaining) == (5, EXACT_SET_LIMIT, 0)
    assert e.available_at == NOW - H + EXACT_SET_REFILL  # 33.6 h after the burst, not 168 h
    # Spread out (1, 31, 61, 91, 121 h ago), five re-issues leave room for three more today.
    spread = compute(Ledger([iss(*names, ago=k * 30 * H + H) for k in range(5)]), NOW).exact_set(names)
    assert (spread.used, spread.remaining, spread.available_at) == (5, 3, None)


def test_renewals_are_shown_apart_and_spend_only_the_exact_set_limit() -> None:
    """A certificate for exactly the same names again is a renewal: exempt from the 50 per registered
    domain, not from the 5 per exact set (letsencrypt.org/docs/rate-limits)."""
    names = ("*.home.example.com", "home.example.com")
    ledger = Ledger([iss(*names, ago=169 * H)] + [iss(*names, ago=k * H + H) for k in range(3)]
                    + [iss("new.example.com", ago=H)])
    budget = compute(ledger, NOW)
    d = budget.domain("example.com")
    assert (d.used, d.renewals) == (1, 3)
    assert budget.exact_set(names).used == 3
    assert budget.is_renewal(names) and not budget.is_renewal({"other.example.com"})
    text = "\n".join(budget.render_table())
    assert "example.com: 1 new certificate(s) in 168 h" in text
    assert "renewals: 3 in 168 h (same names again: exempt from the 50 per domain, not from the 5 per set)" in text
    assert budget.to_json()["domains"][0]["renewals"] == 3


def test_a_registered_domain_refills_one_certificate_every_202_minutes() -> None:
    burst = Ledger([iss(f"h{k}.example.com", ago=H) for k in range(50)])
    d = compute(burst, NOW).domain("example.com")
    assert d.used == 50 and d.remaining == 0
    assert d.available_at == NOW - H + DOMAIN_REFILL == d.refills_at
    assert timedelta(minutes=201.6) == DOMAIN_REFILL
    assert d.fully_refilled_at == NOW - H + 168 * H
    # One an hour for 52 hours: the bucket never ran dry.
    steady = compute(Ledger([iss(f"h{k}.example.com", ago=(k + 1) * H) for k in range(52)]), NOW)
    assert steady.domain("example.com").remaining == 13


def test_staging_and_other_cas_do_not_count_unknown_does() -> None:
    ledger = Ledger([iss("a.example.com", ago=H, ca="staging"), iss("b.example.com", ago=H, ca="other"),
                     iss("c.example.com", ago=H, ca="unknown")])
    budget = compute(ledger, NOW)
    assert budget.domain("example.com").used == 1
    assert any("unidentified CA" in n for n in budget.notes)


def test_certificate_spanning_two_domains_counts_against_each() -> None:
    budget = compute(Ledger([iss("a.example.com", "a.example.org", ago=H)]), NOW)
    assert budget.domain("example.com").used == 1
    assert budget.domain("example.org").used == 1


def test_future_issuances_are_ignored_with_a_note() -> None:
    budget = compute(Ledger([iss("a.example.com", ago=-2 * H)]), NOW)
    assert budget.domain("example.com").used == 0
    assert any("future" in n for n in budget.notes)


def test_budget_json_shape() -> None:
    ledger = Ledger([iss("a.example.com", ago=H, source="ct"), iss("a.example.com", ago=5 * H)])
    doc = json.loads(json.dumps(compute(ledger, NOW).to_json()))
    assert doc["now"] == "2026-03-10T12:00:00Z"
    assert doc["windowHours"] == 168
    assert doc["limits"] == {"registeredDomain": 50, "exactSet": 5}
    assert doc["sources"] == {"backup": 1, "ct": 1}
    [dom] = doc["domains"]
    assert set(dom) == {"domain", "used", "limit", "remaining", "renewals", "refillsAt", "availableAt",
                        "fullyRefilledAt", "exactSets"}
    assert (dom["domain"], dom["used"], dom["remaining"], dom["renewals"]) == ("example.com", 1, 50, 1)
    assert dom["refillsAt"] is None
    assert doc["refillMinutes"] == {"registeredDomain": 201.6, "exactSet": 2016.0}
    [es] = dom["exactSets"]
    assert es["names"] == ["a.example.com"] and es["used"] == 2 and es["remaining"] == 3
    assert es["availableAt"] is None
    lines = compute(ledger, NOW).render_table()
    assert lines[0].startswith("example.com: 1 new certificate(s) in 168 h, 50/50 left")


@settings(max_examples=60, deadline=None)
@given(st.lists(st.integers(min_value=-10, max_value=400), max_size=60))
def test_used_is_the_count_inside_the_window(hours_ago: list[int]) -> None:
    ledger = Ledger()
    for k, h in enumerate(hours_ago):
        ledger.add(iss(f"h{k}.example.com", ago=h * H, serial=f"{k + 1:x}"))
    d = compute(ledger, NOW).domain("example.com")
    inside = sorted(h for h in hours_ago if 0 <= h < 168)
    assert d.used == len(inside)
    # The token bucket always gives at least the room a 168 h sliding window would, never more than 50.
    assert max(0, 50 - len(inside)) <= d.remaining <= 50
    assert (d.available_at is None) == (d.remaining >= 1)
    if d.refills_at is not None:
        assert NOW < d.refills_at <= NOW + DOMAIN_REFILL


# --------------------------------------------------------------------------- ledger


def test_ledger_dedupes_by_serial_across_sources() -> None:
    a = iss("a.example.com", ago=3 * H, source="cluster", serial="0x00AB")
    b = Issuance(names=frozenset({"a.example.com"}), issued_at=NOW - 3 * H + timedelta(minutes=30),
                 source="ct", serial="ab", issuer="C=US, O=Let's Encrypt, CN=R11", ca="production")
    ledger = Ledger.merge([a], [b])
    assert len(ledger) == 1
    [one] = ledger
    assert one.issuer and one.serial == "ab"
    assert one.issued_at == b.issued_at  # the later time: keeps it in the window longer


def test_ledger_dedupes_by_names_and_minute_without_serial() -> None:
    a = iss("a.example.com", ago=3 * H)
    b = iss("a.example.com", ago=3 * H - timedelta(seconds=40), source="cluster")
    c = iss("a.example.com", ago=3 * H - timedelta(minutes=5), source="cluster")  # a rebuild's re-issue
    ledger = Ledger.merge([a], [b, c])
    assert len(ledger) == 2


def test_ledger_json_round_trip_and_errors() -> None:
    ledger = Ledger([iss("b.example.com", "a.example.com", ago=H, serial="1f"),
                     iss("c.example.co.uk", ago=2 * H, ca="unknown", source="ct")])
    text = ledger.to_json()
    data = json.loads(text)
    assert data["version"] == 1 and data["kind"] == "seedbed-certificate-ledger"
    back = Ledger.from_json(text)
    assert {(i.names, i.issued_at, i.serial, i.ca) for i in back} == \
        {(i.names, i.issued_at, i.serial, i.ca) for i in ledger}
    assert {i.source for i in back} == {"backup"}
    for bad in ("{", '{"version": 1}', '{"version": 9, "issuances": []}',
                '{"version": 1, "issuances": [{"names": []}]}'):
        with pytest.raises(ArchiveError) as e:
            Ledger.from_json(bad)
        assert e.value.fix


# --------------------------------------------------------------------------- cluster objects


def _key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _cert(names: list[str], *, issuer_o: str, issuer_cn: str, not_before: datetime, serial: int) -> str:
    ca_key, key = _key(), _key()
    cert = (x509.CertificateBuilder()
            .subject_name(x509.Name([]))
            .issuer_name(x509.Name([x509.NameAttribute(NameOID.COUNTRY_NAME, "US"),
                                    x509.NameAttribute(NameOID.ORGANIZATION_NAME, issuer_o),
                                    x509.NameAttribute(NameOID.COMMON_NAME, issuer_cn)]))
            .public_key(key.public_key()).serial_number(serial)
            .not_valid_before(not_before).not_valid_after(not_before + timedelta(days=90))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName(n) for n in names]), critical=False)
            .sign(ca_key, hashes.SHA256()))
    return base64.b64encode(cert.public_bytes(serialization.Encoding.PEM)).decode()


def _csr(names: list[str]) -> str:
    csr = (x509.CertificateSigningRequestBuilder().subject_name(x509.Name([]))
           .add_extension(x509.SubjectAlternativeName([x509.DNSName(n) for n in names]), critical=False)
           .sign(_key(), hashes.SHA256()))
    return base64.b64encode(csr.public_bytes(serialization.Encoding.PEM)).decode()


def _cr(name: str, names: list[str], *, ready: datetime | None, cert: str | None,
        issuer: str = PRODUCTION_ISSUER) -> dict[str, Any]:
    status: dict[str, Any] = {}
    if ready:
        status["conditions"] = [{"type": "Ready", "status": "True",
                                 "lastTransitionTime": ready.isoformat().replace("+00:00", "Z")}]
    if cert:
        status["certificate"] = cert
    return {"apiVersion": "cert-manager.io/v1", "kind": "CertificateRequest",
            "metadata": {"name": name, "namespace": "apps"},
            "spec": {"request": _csr(names), "issuerRef": {"kind": "ClusterIssuer", "name": issuer}},
            "status": status}


def test_from_cluster_reads_certificate_requests_and_certificates() -> None:
    nb = NOW - 10 * H
    prod = _cr("web-1", ["web.example.com"], ready=nb + H,
               cert=_cert(["web.example.com"], issuer_o="Let's Encrypt", issuer_cn="R11", not_before=nb,
                          serial=0xABC))
    staging = _cr("web-2", ["web.example.com"], ready=NOW - 2 * H, issuer=STAGING_ISSUER,
                  cert=_cert(["web.example.com"], issuer_o="(STAGING) Let's Encrypt",
                             issuer_cn="(STAGING) Ersatz Edamame E1", not_before=NOW - 3 * H, serial=0xDEF))
    pending = _cr("api-1", ["api.example.com"], ready=None, cert=None)
    csr_only = _cr("api-2", ["api.example.com"], ready=NOW - 4 * H, cert=None, issuer="mystery")
    certificate = {  # its current certificate is web-1's: not counted twice
        "apiVersion": "cert-manager.io/v1", "kind": "Certificate", "metadata": {"name": "web", "namespace": "apps"},
        "spec": {"dnsNames": ["web.example.com"], "secretName": "web-tls",
                 "issuerRef": {"kind": "ClusterIssuer", "name": PRODUCTION_ISSUER}},
        "status": {"notBefore": nb.isoformat().replace("+00:00", "Z")},
    }
    gc = {  # its CertificateRequest is gone: the Certificate alone is the witness
        "apiVersion": "cert-manager.io/v1", "kind": "Certificate", "metadata": {"name": "old", "namespace": "apps"},
        "spec": {"dnsNames": ["old.example.com"], "secretName": "old-tls",
                 "issuerRef": {"kind": "ClusterIssuer", "name": PRODUCTION_ISSUER}},
        "status": {"notBefore": "2026-03-09T00:00:00Z"},
    }
    issuers = [{"apiVersion": "cert-manager.io/v1", "kind": "ClusterIssuer", "metadata": {"name": PRODUCTION_ISSUER},
                "spec": {"acme": {"server": PRODUCTION_SERVER}}}]
    scan = scan_cluster([certificate, gc], [prod, staging, pending, csr_only], issuers)
    by_where = {i.where: i for i in scan.issuances}
    assert set(by_where) == {"CertificateRequest apps/web-1", "CertificateRequest apps/web-2",
                             "CertificateRequest apps/api-2", "Certificate apps/old"}
    web = by_where["CertificateRequest apps/web-1"]
    assert (web.ca, web.serial, web.issued_at, web.not_before) == ("production", "abc", nb + H, nb)
    assert by_where["CertificateRequest apps/web-2"].ca == "staging"
    assert by_where["CertificateRequest apps/api-2"].ca == "unknown"  # names from the CSR
    assert by_where["CertificateRequest apps/api-2"].names == {"api.example.com"}
    old = by_where["Certificate apps/old"]
    assert old.ca == "production" and old.issued_at == datetime(2026, 3, 9, 1, tzinfo=UTC)
    assert any("could not identify" in n for n in scan.notes)
    assert compute(Ledger.merge(from_cluster([certificate, gc], [prod, staging, pending, csr_only], issuers)),
                   NOW).domain("example.com").used == 3


# --------------------------------------------------------------------------- crt.sh


class Sleeps:
    def __init__(self) -> None:
        self.calls: list[float] = []

    async def __call__(self, seconds: float) -> None:
        self.calls.append(seconds)


async def test_ct_dedupes_precert_and_leaf_and_drops_staging() -> None:
    async with FakeCrtSh() as fake:
        fake.add("web.example.com", issued_at=NOW - 2 * H)
        fake.add("example.com", "*.example.com", issued_at=NOW - 3 * H)
        fake.add("web.example.com", issued_at=NOW - H, issuer=LE_STAGING)
        fake.add("other.example.org", issued_at=NOW - H)
        result = await fetch_ct("example.com", base_url=fake.url, sleep=Sleeps())
        assert [r["q"] for r in fake.requests] == ["%.example.com", "example.com"]
        assert all(r["output"] == "json" for r in fake.requests)
    assert not result.partial and result.warnings == []
    names = sorted(sorted(i.names) for i in result.issuances)
    # The apex query sees the apex certificate again: de-duplicated by serial too.
    assert names == [["*.example.com", "example.com"], ["web.example.com"]]
    web = next(i for i in result.issuances if i.names == {"web.example.com"})
    assert web.issued_at == NOW - 2 * H  # the precertificate's log time
    assert web.not_before == NOW - 3 * H
    assert web.source == "ct" and web.ca == "production"


async def test_ct_retries_429_honouring_retry_after(monkeypatch: pytest.MonkeyPatch) -> None:
    sleeps = Sleeps()
    async with FakeCrtSh() as fake:
        fake.add("web.example.com", issued_at=NOW - H)
        fake.script("%.example.com", [FakeCrtSh.status(429, retry_after="7"), FakeCrtSh.status(503)])
        monkeypatch.setenv("SEEDBED_CRTSH_URL", fake.url)  # the base URL from the environment
        result = await fetch_ct("example.com", sleep=sleeps, max_delay=5)
    assert sleeps.calls == [5, 2.0]  # Retry-After capped at max_delay, then plain backoff
    assert not result.partial
    assert len(result.issuances) == 1


async def test_ct_gives_up_on_persistent_429_with_a_partial_result() -> None:
    async with FakeCrtSh() as fake:
        fake.add("web.example.com", issued_at=NOW - H)
        fake.script("%.example.com", [FakeCrtSh.status(429, retry_after="0")] * 3)
        result = await fetch_ct("example.com", base_url=fake.url, sleep=Sleeps(), attempts=3)
    assert result.partial
    assert any("rate-limited" in w for w in result.warnings)


async def test_ct_truncated_answer_keeps_complete_entries() -> None:
    async with FakeCrtSh() as fake:
        for k in range(4):
            fake.add(f"h{k}.example.com", issued_at=NOW - (k + 1) * H, precert=False)
        fake.script("%.example.com", [FakeCrtSh.TRUNCATE])
        fake.script("example.com", [FakeCrtSh.GARBAGE])
        result = await fetch_ct("example.com", base_url=fake.url, sleep=Sleeps())
    assert result.partial
    assert len(result.warnings) == 2 and "cut short" in result.warnings[0]
    assert 1 <= len(result.issuances) < 4


async def test_ct_timeout_is_a_warning_not_a_crash() -> None:
    async with FakeCrtSh() as fake:
        fake.add("example.com", issued_at=NOW - H)
        fake.script("%.example.com", [FakeCrtSh.slow(0.6)])
        result = await fetch_ct("example.com", base_url=fake.url, timeout=0.2, sleep=Sleeps())
    assert result.partial
    assert any("in time" in w for w in result.warnings)
    assert len(result.issuances) == 1  # the apex query still answered


async def test_ct_unreachable_is_partial() -> None:
    result = await fetch_ct("example.com", base_url="http://127.0.0.1:9", timeout=1, sleep=Sleeps(),
                            attempts=2)
    assert result.partial and result.issuances == []


# --------------------------------------------------------------------------- guard


def test_guard_refuses_the_sixth_identical_certificate_and_names_it() -> None:
    names = {"*.home.example.com", "home.example.com"}
    budget = compute(Ledger([iss(*names, ago=H + k * timedelta(minutes=10)) for k in range(5)]), NOW)
    result = assess([names], budget, acme="production", ignore_budget=False)
    assert not result.ok
    [reason] = result.reasons
    assert "*.home.example.com, home.example.com" in reason and "same set of names" in reason
    assert "no override" in reason
    with pytest.raises(Refused) as e:
        check([names], budget, acme="production")
    msg, fix = str(e.value), e.value.fix or ""
    assert "*.home.example.com" in msg and "5 certificates" in msg
    for remedy in ("--restore", "--acme staging", "--domain", "--ignore-budget"):
        assert remedy in fix


def test_guard_overrides_staging_and_ignore_budget() -> None:
    names = {"web.example.com"}
    budget = compute(Ledger([iss(*names, ago=k * H + H) for k in range(5)]), NOW)
    staging = assess([names], budget, acme="staging", ignore_budget=False)
    assert staging.ok and "staging" in staging.notes[0]
    ignored = check([names], budget, acme="production", ignore_budget=True)
    assert ignored.ok and ignored.reasons  # still explains what is being risked
    assert "--ignore-budget" in ignored.notes[-1]


def test_guard_registered_domain_limit_and_last_slot_note() -> None:
    budget = compute(Ledger([iss(f"h{k}.example.co.uk", ago=H) for k in range(48)]), NOW)
    planned = [{"a.example.co.uk"}, {"b.example.co.uk"}, {"c.example.co.uk"}]
    result = assess(planned, budget, acme="production")
    assert not result.ok and "example.co.uk: 2 of 50 left (48 new in the last 168 h)" in result.reasons[0]
    assert "50 certificates per registered domain" in result.reasons[0]
    assert assess(planned[:2], budget, acme="production").ok
    four = compute(Ledger([iss("x.example.com", ago=k * H + H) for k in range(4)]), NOW)
    last = assess([{"x.example.com"}], four, acme="production")
    assert last.ok and "last of 5" in last.notes[0]


REPO_FILES = {
    "infra/certs.yaml": """\
# the wildcard
apiVersion: cert-manager.io/v1
kind: Certificate
metadata:
  name: wildcard
  namespace: cert-manager
spec:
  secretName: wildcard-tls
  dnsNames: ["*.${CLUSTER_DOMAIN}", "${CLUSTER_DOMAIN}"]
  issuerRef: {kind: ClusterIssuer, name: "${CLUSTER_ISSUER}"}
---
apiVersion: cert-manager.io/v1
kind: Certificate
metadata: {name: internal}
spec:
  secretName: internal-tls
  dnsNames: ["internal.${CLUSTER_DOMAIN}"]
  issuerRef: {kind: ClusterIssuer, name: my-ca}
""",
    "apps/web.yml": """\
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata:
  name: web
  namespace: apps
  annotations:
    cert-manager.io/cluster-issuer: ${CLUSTER_ISSUER:=letsencrypt-staging}
spec:
  tls:
    - hosts: ["web.${CLUSTER_DOMAIN}", "WWW.${CLUSTER_DOMAIN}"]
      secretName: web-tls
---
apiVersion: cert-manager.io/v1
kind: ClusterIssuer
metadata: {name: zerossl}
spec: {acme: {server: "https://acme.zerossl.com/v2/DV90", privateKeySecretRef: {name: z}, solvers: []}}
""",
    ".git/ignored.yaml": "kind: Certificate\n",
}


def _repo(tmp_path: Path) -> Path:
    for rel, text in REPO_FILES.items():
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text(text)
    return tmp_path


def _scan(tree: Path, variables: dict[str, str], flux_path: str = ".") -> RepoScan:
    """The guard's view of a tree whose Flux path is ``flux_path``: read as kustomize-controller does."""
    return scan_repo(fluxrepo.read(tree, flux_path), variables)


def _scan_text(text: str, file: str, variables: dict[str, str] | None = None) -> RepoScan:
    """The guard's view of objects Flux applies, without building (for the re-issue decision)."""
    root = fluxrepo.FluxKustomization("flux-system", "flux-system", ".", "", 0)
    repo = fluxrepo.Repo(Path("/nonexistent"))
    repo.objects = [fluxrepo.Obj(d, file, None, root) for d in yaml.safe_load_all(text) if d]
    return scan_repo(repo, variables)


def test_certificates_in_repo_with_lines_and_variables(tmp_path: Path) -> None:
    scan = _scan(_repo(tmp_path), {"CLUSTER_DOMAIN": "home.example.com", "CLUSTER_ISSUER": PRODUCTION_ISSUER})
    got = {(c.kind, c.where, c.secret_name, c.namespace, c.issuer_name, tuple(sorted(c.names)))
           for c in scan.certificates}
    assert got == {
        ("Ingress", "apps/web.yml:1", "web-tls", "apps", PRODUCTION_ISSUER,
         ("web.home.example.com", "www.home.example.com")),
        ("Certificate", "infra/certs.yaml:2", "wildcard-tls", "cert-manager", PRODUCTION_ISSUER,
         ("*.home.example.com", "home.example.com")),
        ("Certificate", "infra/certs.yaml:12", "internal-tls", None, "my-ca", ("internal.home.example.com",)),
    }
    assert scan.production_issuers == frozenset()  # zerossl is not Let's Encrypt


def test_would_issue_skips_restored_and_non_production(tmp_path: Path) -> None:
    certs = _scan(_repo(tmp_path), {"CLUSTER_DOMAIN": "home.example.com",
                                        "CLUSTER_ISSUER": PRODUCTION_ISSUER}).certificates
    all_prod = would_issue(certs, [])
    assert sorted(c.secret_name for c in all_prod) == ["web-tls", "wildcard-tls"]
    restored = would_issue(certs, [("cert-manager", "wildcard-tls"), "apps/other-tls"])
    assert [c.secret_name for c in restored] == ["web-tls"]
    # The Ingress defaults to staging when CLUSTER_ISSUER is not set.
    staging = _scan(tmp_path, {"CLUSTER_DOMAIN": "home.example.com"}).certificates
    assert [c.secret_name for c in would_issue(staging, [])] == []


def test_unresolved_variables_are_reported() -> None:
    text, missing = substitute("a: ${X}\nb: ${Y:-d}\nc: ${Z}", {"Z": "z"})
    assert text == "a: ${X}\nb: d\nc: z" and missing == ["X"]
    scan = _scan_text(REPO_FILES["infra/certs.yaml"], "f.yaml", {})
    assert scan.certificates[0].unresolved == ("CLUSTER_DOMAIN", "CLUSTER_ISSUER")


def test_guard_end_to_end_refuses_a_rebuild_without_restore(tmp_path: Path) -> None:
    variables = {"CLUSTER_DOMAIN": "home.example.com", "CLUSTER_ISSUER": PRODUCTION_ISSUER}
    wildcard = {"*.home.example.com", "home.example.com"}
    # Five earlier rebuilds, each issuing the wildcard again.
    budget = compute(Ledger([iss(*wildcard, ago=k * 2 * H + H, source="ct") for k in range(5)]), NOW)
    planned = [c.names for c in would_issue(_scan(_repo(tmp_path), variables).certificates, [])]
    with pytest.raises(Refused, match=r"\*\.home\.example\.com, home\.example\.com"):
        check(planned, budget, acme="production")
    restored = would_issue(_scan(tmp_path, variables).certificates, [("cert-manager", "wildcard-tls")])
    assert check([c.names for c in restored], budget, acme="production").ok


# --------------------------------------------------------------------------- rendering


def _cfg(**kw: Any) -> CertificatesConfig:
    return CertificatesConfig(email="ops@example.com", **kw)


def _crd_schema(upstream: Any, name: str) -> dict[str, Any]:
    crd = yaml.safe_load(Path(upstream(f"cert-manager-v1.21.1-crds/{name}")).read_text())
    [v1] = [v for v in crd["spec"]["versions"] if v["name"] == "v1"]
    return v1["schema"]["openAPIV3Schema"]


def _unknown_fields(obj: Any, schema: dict[str, Any], path: str = "") -> list[str]:
    """Keys the schema does not declare (the API server would prune them silently)."""
    out: list[str] = []
    if isinstance(obj, dict) and "properties" in schema:
        for k, v in obj.items():
            if k not in schema["properties"]:
                out.append(f"{path}.{k}")
            else:
                out += _unknown_fields(v, schema["properties"][k], f"{path}.{k}")
    elif isinstance(obj, list) and "items" in schema:
        for n, v in enumerate(obj):
            out += _unknown_fields(v, schema["items"], f"{path}[{n}]")
    return out


def _validate(obj: dict[str, Any], schema: dict[str, Any]) -> None:
    jsonschema = pytest.importorskip("jsonschema")
    jsonschema.Draft7Validator(schema).validate(obj)
    assert _unknown_fields({k: v for k, v in obj.items() if k != "metadata"}, schema) == []


def test_cluster_issuers_http01(upstream: Any) -> None:
    staging, production = cluster_issuers(Config(certificates=_cfg()))
    assert (staging["metadata"]["name"], production["metadata"]["name"]) == (STAGING_ISSUER, PRODUCTION_ISSUER)
    assert staging["spec"]["acme"]["server"] == STAGING_SERVER
    assert production["spec"]["acme"]["server"] == PRODUCTION_SERVER
    assert staging["spec"]["acme"]["privateKeySecretRef"] == {"name": STAGING_ACCOUNT_KEY}
    assert production["spec"]["acme"]["privateKeySecretRef"] == {"name": PRODUCTION_ACCOUNT_KEY}
    assert production["spec"]["acme"]["solvers"] == [{"http01": {"ingress": {"ingressClassName": "nginx"}}}]
    schema = _crd_schema(upstream, "cert-manager.io_clusterissuers.yaml")
    for obj in (staging, production):
        _validate(obj, schema)
    assert [i["spec"]["acme"]["privateKeySecretRef"]["name"] for i in (staging, production)] == [
        STAGING_ACCOUNT_KEY, PRODUCTION_ACCOUNT_KEY]


def test_cluster_issuers_dns01(upstream: Any) -> None:
    cfg = _cfg(solver="dns01", dns01=Dns01Solver(provider="digitalocean", secret_name="do", secret_key="token"))
    [_, production] = cluster_issuers(cfg)
    assert production["spec"]["acme"]["solvers"] == [
        {"dns01": {"digitalocean": {"tokenSecretRef": {"name": "do", "key": "token"}}}}]
    _validate(production, _crd_schema(upstream, "cert-manager.io_clusterissuers.yaml"))
    [_, cf] = cluster_issuers(_cfg(solver="dns01"))
    assert cf["spec"]["acme"]["solvers"][0]["dns01"]["cloudflare"]["apiTokenSecretRef"] == \
        {"name": "cloudflare-api-token", "key": "api-token"}


@pytest.mark.parametrize("cfg", [CertificatesConfig(), CertificatesConfig(email="nope"),
                                 _cfg(solver="dns01", dns01=Dns01Solver(provider="route53"))])
def test_cluster_issuers_refuse_bad_config(cfg: CertificatesConfig) -> None:
    with pytest.raises(ConfigError) as e:
        cluster_issuers(cfg)
    assert e.value.fix


def test_wildcard_certificate(upstream: Any) -> None:
    cfg = _cfg(solver="dns01", wildcard=WildcardConfig(domain="Home.Example.co.uk", namespace="ingress"))
    cert = wildcard_certificate(cfg, issuer=PRODUCTION_ISSUER)
    assert cert["metadata"] == {"name": "wildcard-home-example-co-uk", "namespace": "ingress",
                                "labels": {"app.kubernetes.io/managed-by": "seedbed"}}
    assert cert["spec"]["secretName"] == "wildcard-home-example-co-uk-tls"
    assert cert["spec"]["dnsNames"] == ["*.home.example.co.uk", "home.example.co.uk"]
    assert cert["spec"]["issuerRef"] == {"group": "cert-manager.io", "kind": "ClusterIssuer",
                                         "name": PRODUCTION_ISSUER}
    _validate(cert, _crd_schema(upstream, "cert-manager.io_certificates.yaml"))
    named = _cfg(solver="dns01", wildcard=WildcardConfig(domain="example.com", secret_name="star"))
    assert wildcard_certificate(named, issuer=STAGING_ISSUER)["spec"]["secretName"] == "star"


@pytest.mark.parametrize(("cfg", "needle"), [
    (_cfg(wildcard=WildcardConfig(domain="example.com")), "DNS-01"),
    (_cfg(solver="dns01"), "not set"),
    (_cfg(solver="dns01", wildcard=WildcardConfig(domain="*.example.com")), "base domain"),
    (_cfg(solver="dns01", wildcard=WildcardConfig(domain="co.uk")), "public suffix"),
    (_cfg(solver="dns01", wildcard=WildcardConfig(domain="bad_name.com")), "not a DNS name"),
])
def test_wildcard_refusals(cfg: CertificatesConfig, needle: str) -> None:
    with pytest.raises(ConfigError, match=needle) as e:
        wildcard_certificate(cfg, issuer=PRODUCTION_ISSUER)
    assert e.value.fix


# --------------------------------------------------------------------------- gathering (fake Kube)


class FakeKube:
    """Just Kube.list, over cert-manager objects (the emulator covers the real client elsewhere)."""

    def __init__(self, objects: list[dict[str, Any]]) -> None:
        self.objects = objects
        self.calls: list[tuple[str, str]] = []

    async def list(self, api_version: str, kind: str, namespace: str | None = None,
                   label_selector: str | None = None) -> list[dict[str, Any]]:
        self.calls.append((api_version, kind))
        return [o for o in self.objects if o["kind"] == kind]


class FakeArchive:
    def __init__(self, data: Any) -> None:
        self.data = data

    def checked(self) -> Any:
        """What an opened archive's validated contents hold: the typed ledger (or none)."""
        from types import SimpleNamespace

        return SimpleNamespace(ledger=None if self.data is None else Ledger.from_json(self.data))


async def test_budget_report_merges_cluster_backup_and_ct(monkeypatch: pytest.MonkeyPatch) -> None:
    from types import SimpleNamespace

    from seedbed.certs.history import archive_ledger
    from seedbed.commands.certs import budget_report

    nb = NOW - 10 * H
    kube = FakeKube([_cr("web-1", ["web.example.com"], ready=nb + H,
                         cert=_cert(["web.example.com"], issuer_o="Let's Encrypt", issuer_cn="R11", not_before=nb,
                                    serial=0xABC))])
    backup = Ledger([iss("web.example.com", ago=10 * H, serial="abc"),  # the same certificate as web-1
                     iss("old.example.com", ago=100 * H)])
    cfg = Config(certificates=_cfg(domain="home.example.com"))
    assert archive_ledger(FakeArchive(json.loads(backup.to_json()))) is not None
    assert archive_ledger(FakeArchive(None)) is None
    async with FakeCrtSh() as fake:
        fake.add("web.example.com", issued_at=nb + H - timedelta(seconds=20), serial="0abc")
        fake.add("laptop.example.com", issued_at=NOW - 2 * H)
        monkeypatch.setenv("SEEDBED_CRTSH_URL", fake.url)
        report = await budget_report(cfg, SimpleNamespace(kube=kube), ct=True,  # type: ignore[arg-type]
                                     archive=FakeArchive(json.loads(backup.to_json())), now=NOW)
        assert {r["q"] for r in fake.requests} == {"%.example.com", "example.com"}
    doc = report.to_json()
    [dom] = doc["domains"]
    assert (dom["domain"], dom["used"]) == ("example.com", 3)  # web (3 sightings), old, laptop
    assert "example.com: 3 new certificate(s) in 168 h" in report.render_text()
    assert ("cert-manager.io/v1", "CertificateRequest") in kube.calls
    only = await budget_report(cfg, SimpleNamespace(kube=FakeKube([])), domains=["x.example.org"],  # type: ignore[arg-type]
                               now=NOW)
    assert [d["domain"] for d in only.to_json()["domains"]] == ["example.org"]


def test_certs_budget_finds_the_identity_where_keygen_put_it(tmp_path, monkeypatch, capsys):
    """`seedbed keygen` and `certs budget --ledger` agree on the default identity path (platformdirs:
    ~/Library/Application Support on macOS), so a budget from a backup works without identityFile."""
    from datetime import UTC, datetime

    from conftest import run_cli
    from seedbed.backup.archive import build, encrypt, write
    from seedbed.backup.signing import load_signing_key

    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg"))
    monkeypatch.chdir(tmp_path)
    code, printed, _ = run_cli(capsys, "keygen")
    assert code == 0
    recipient = next(line for line in printed.splitlines() if line.startswith("age1"))
    signer = load_signing_key(tmp_path / "xdg" / "seedbed" / "signing.key")
    now = datetime.now(UTC)
    ledger = Ledger([Issuance(frozenset({"web.example.com"}), now - 10 * H, "cluster", ca="production")])
    write(tmp_path / "old.age", encrypt(build({"ledger.json": ledger.to_json().encode()}, cluster="homelab",
                                               created=now, signing_key=signer), [recipient]))
    (tmp_path / "seedbed.yaml").write_text("cluster:\n  kubeconfig: nowhere\n")
    code, out, err = run_cli(capsys, "certs", "budget", "--ledger", "old.age")
    assert code == 0, err
    assert "example.com" in out and "cluster not reachable" in err


@pytest.mark.parametrize("bad", ["exa mple.org", "example", "-x.example.org", "exa_mple.org", "co.uk", "1.2.3.4"])
def test_budget_for_a_malformed_domain_is_an_error_not_fifty_left(bad: str, capsys: Any, tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    from conftest import run_cli

    monkeypatch.chdir(tmp_path)
    (tmp_path / "seedbed.yaml").write_text("cluster: {name: homelab}\n")
    code, out, err = run_cli(capsys, "certs", "budget", "--domain", bad)
    assert code == 2 and "50" not in out
    assert repr(bad) in err and "fix:" in err and "Traceback" not in err
    assert validate_domain("*.Home.Example.org.") == "*.home.example.org"


# --------------------------------------------------------------------------- cert-manager's re-issue decision
# cert-manager v1.18.0 / v1.21.1 internal/controller/certificates/policies (NewTriggerPolicyChain, checks.go)


def tls_secret(names: list[str], *, age: timedelta, lifetime: timedelta = timedelta(days=90),
               key: Any = None, issuer: str = PRODUCTION_ISSUER, cert_name: str = "web",
               namespace: str = "apps", secret_name: str = "web-tls", now: datetime = NOW) -> dict[str, Any]:
    """A Secret exactly as cert-manager writes one: a real key pair and certificate, and its annotations."""
    from cryptography.hazmat.primitives.asymmetric import rsa

    key = key or rsa.generate_private_key(public_exponent=65537, key_size=2048)
    start = now - age
    cert = (x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, names[0])]))
            .issuer_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "R11")]))
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(start).not_valid_after(start + lifetime)
            .add_extension(x509.SubjectAlternativeName([x509.DNSName(n) for n in names]), critical=False)
            .sign(key, hashes.SHA256()))
    pem_key = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())
    pem_cert = cert.public_bytes(serialization.Encoding.PEM)
    return {"apiVersion": "v1", "kind": "Secret", "type": "kubernetes.io/tls",
            "metadata": {"name": secret_name, "namespace": namespace, "annotations": {
                "cert-manager.io/issuer-name": issuer, "cert-manager.io/issuer-kind": "ClusterIssuer",
                "cert-manager.io/issuer-group": "cert-manager.io", "cert-manager.io/certificate-name": cert_name,
                "cert-manager.io/alt-names": ",".join(names), "cert-manager.io/common-name": names[0]}},
            "data": {"tls.crt": base64.b64encode(pem_cert).decode(), "tls.key": base64.b64encode(pem_key).decode()}}


def web_certificate(**spec: Any) -> str:
    body = {"secretName": "web-tls", "dnsNames": ["web.example.org"],
            "issuerRef": {"kind": "ClusterIssuer", "name": PRODUCTION_ISSUER}, **spec}
    return yaml.safe_dump({"apiVersion": "cert-manager.io/v1", "kind": "Certificate",
                           "metadata": {"name": "web", "namespace": "apps"}, "spec": body})


def reissued(manifest: str, secret: dict[str, Any] | None) -> list[str]:
    from seedbed.certs.guard import issues

    certs = _scan_text(manifest, "apps/web.yaml").certificates
    return [i.reason for i in issues(certs, [secret] if secret else [], NOW)]


def test_a_valid_restored_certificate_is_not_issued_again() -> None:
    assert reissued(web_certificate(), tls_secret(["web.example.org"], age=timedelta(days=10))) == []


def test_the_guard_names_the_restored_certificates_it_keeps_as_well_as_those_it_issues() -> None:
    from seedbed.certs.guard import decide

    certs = _scan_text(web_certificate() + "---\n" + web_certificate().replace("web", "blog"),
                       "apps/web.yaml").certificates
    secrets = [tls_secret(["web.example.org"], age=timedelta(days=10)),
               tls_secret(["blog.example.org"], age=timedelta(days=61), cert_name="blog", secret_name="blog-tls")]
    issued, kept = decide(certs, secrets, NOW)
    assert [(sorted(i.cert.names), i.reason.split(" at ")[0]) for i in issued] == [
        (["blog.example.org"], "Renewing certificate as renewal was scheduled")]
    assert [c.secret_name for c in kept] == ["web-tls"]


def test_a_restored_certificate_inside_its_renewal_window_is_issued_again() -> None:
    """Default renewal at 2/3 of the lifetime (pki.RenewalTime): a 90-day certificate renews at day 60."""
    old = tls_secret(["web.example.org"], age=timedelta(days=61))
    [reason] = reissued(web_certificate(), old)
    assert reason.startswith("Renewing certificate as renewal was scheduled at")
    # renewBefore and renewBeforePercentage move the window.
    young = tls_secret(["web.example.org"], age=timedelta(days=30))
    assert reissued(web_certificate(renewBefore="1440h"), young) != []  # 60 days before expiry = day 30
    assert reissued(web_certificate(renewBeforePercentage=50), young) == []
    assert reissued(web_certificate(renewal={"policy": "Disabled"}), old) == []  # v1.21


def test_a_staging_certificate_restored_after_switching_to_production_is_issued_again() -> None:
    staging = tls_secret(["web.example.org"], age=timedelta(days=1), issuer=STAGING_ISSUER)
    [reason] = reissued(web_certificate(), staging)
    assert f"previously issued by 'ClusterIssuer.cert-manager.io/{STAGING_ISSUER}'" in reason


def test_a_certificate_whose_names_changed_since_the_backup_is_issued_again() -> None:
    secret = tls_secret(["web.example.org"], age=timedelta(days=1))
    [reason] = reissued(web_certificate(dnsNames=["web.example.org", "www.example.org"]), secret)
    assert "not up to date for spec: ['spec.dnsNames']" in reason
    [ips] = reissued(web_certificate(ipAddresses=["192.0.2.1"]), secret)
    assert "spec.ipAddresses" in ips


def test_a_certificate_whose_key_type_or_size_changed_is_issued_again() -> None:
    secret = tls_secret(["web.example.org"], age=timedelta(days=1))
    assert "['spec.privateKey.algorithm']" in reissued(web_certificate(privateKey={"algorithm": "ECDSA"}), secret)[0]
    assert "['spec.privateKey.size']" in reissued(web_certificate(privateKey={"size": 4096}), secret)[0]
    p384 = tls_secret(["web.example.org"], age=timedelta(days=1), key=ec.generate_private_key(ec.SECP384R1()))
    assert reissued(web_certificate(privateKey={"algorithm": "ECDSA", "size": 384}), p384) == []


def test_a_missing_or_damaged_secret_means_a_new_certificate() -> None:
    good = tls_secret(["web.example.org"], age=timedelta(days=1))
    assert reissued(web_certificate(), None) == ["Issuing certificate as Secret does not exist"]
    no_key = {**good, "data": {"tls.crt": good["data"]["tls.crt"]}}
    assert reissued(web_certificate(), no_key) == ["Issuing certificate as Secret does not contain a private key"]
    other_key = tls_secret(["web.example.org"], age=timedelta(days=1))
    mixed = {**good, "data": {"tls.crt": good["data"]["tls.crt"], "tls.key": other_key["data"]["tls.key"]}}
    assert "does not match the certificate" in reissued(web_certificate(), mixed)[0]
    junk = {**good, "data": {**good["data"], "tls.crt": base64.b64encode(b"not a certificate").decode()}}
    assert "invalid certificate" in reissued(web_certificate(), junk)[0]


def test_the_guard_counts_restored_certificates_cert_manager_will_renew() -> None:
    """A restore of certificates near expiry is no protection: each spends one of the 5 per set."""
    names = {"web.example.org"}
    certs = _scan_text(web_certificate(), "apps/web.yaml").certificates
    budget = compute(Ledger([iss(*names, ago=H + k * timedelta(minutes=5)) for k in range(5)]), NOW)
    fresh = tls_secret(["web.example.org"], age=timedelta(days=1))
    assert check([c.names for c in would_issue(certs, [fresh], NOW)], budget, acme="production").ok
    due = tls_secret(["web.example.org"], age=timedelta(days=75))
    with pytest.raises(Refused, match=r"web\.example\.org"):
        check([c.names for c in would_issue(certs, [due], NOW)], budget, acme="production")


# --------------------------------------------------------------------------- the guard reads the tree as Flux does


def _write(tree: Path, files: dict[str, str]) -> Path:
    for rel, text in files.items():
        (tree / rel).parent.mkdir(parents=True, exist_ok=True)
        (tree / rel).write_text(text)
    return tree


def test_the_guard_counts_a_certificate_whose_namespace_comes_from_a_parent_kustomization_yaml(tmp_path: Path) -> None:
    tree = _write(tmp_path, {
        "clusters/lab/kustomization.yaml": "namespace: web\nresources: [../../apps/web]\n",
        "apps/web/kustomization.yaml": "resources: [certificate.yaml]\n",
        "apps/web/certificate.yaml": "# no namespace: the parent kustomization gives it\n" + yaml.safe_dump(
            {"apiVersion": "cert-manager.io/v1", "kind": "Certificate", "metadata": {"name": "web"},
             "spec": {"secretName": "web-tls", "dnsNames": ["web.example.org"],
                      "issuerRef": {"kind": "ClusterIssuer", "name": PRODUCTION_ISSUER}}}),
    })
    [cert] = _scan(tree, {}, "clusters/lab").certificates
    assert (cert.namespace, cert.where) == ("web", "apps/web/certificate.yaml:2")
    # A Secret of that name restored in another namespace does not keep it; one in its namespace does.
    assert [c.secret_name for c in would_issue([cert], [("other", "web-tls")])] == ["web-tls"]
    assert would_issue([cert], [("web", "web-tls")]) == []


def test_the_guard_ignores_certificates_outside_the_flux_path_as_flux_does(tmp_path: Path) -> None:
    tree = _write(tmp_path, {
        "clusters/lab/web.yaml": web_certificate(),
        "apps/stray/blog.yaml": web_certificate().replace("web", "blog"),  # no Flux Kustomization reaches it
    })
    assert [sorted(c.names) for c in _scan(tree, {}, "clusters/lab").certificates] == [["web.example.org"]]


def test_the_guard_counts_nothing_from_a_tree_without_the_flux_path(tmp_path: Path) -> None:
    """Flux then applies only the flux-system/ files seedbed commits: no Certificate is requested."""
    from seedbed.config import Config
    from seedbed.steps.base import WorkTree

    _write(tmp_path / "gitops", {"apps/web.yaml": web_certificate()})
    assert WorkTree().read(Config(base_dir=tmp_path)) is None


def test_the_guard_reuses_the_tree_the_flux_step_read_instead_of_building_it_again(tmp_path, monkeypatch) -> None:
    from seedbed.config import Config
    from seedbed.steps import bootstrap_steps
    from seedbed.steps.base import Options
    from seedbed.steps.checks import CertGuardStep
    from seedbed.steps.flux import FluxStep

    steps = bootstrap_steps(Options())
    [guard] = [s for s in steps if isinstance(s, CertGuardStep)]
    [flux] = [s for s in steps if isinstance(s, FluxStep)]
    assert guard.worktree is flux.worktree
    reads: list[str] = []
    real = fluxrepo.read
    monkeypatch.setattr(fluxrepo, "read", lambda tree, path, **kw: reads.append(path) or real(tree, path, **kw))
    _write(tmp_path / "gitops", {"clusters/homelab/web.yaml": web_certificate()})
    cfg = Config(base_dir=tmp_path)
    first = flux.worktree.read(cfg)
    assert guard.worktree.read(cfg) is first and reads == ["clusters/homelab"]
    assert [c.secret_name for c in scan_repo(first, {}).certificates] == ["web-tls"]
