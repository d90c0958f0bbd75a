"""Let's Encrypt production budget: how many certificates are left, per domain and per name set.

Two limits matter for rebuilds (https://letsencrypt.org/docs/rate-limits/, as published in 2025):

- New Certificates per Registered Domain: 50 per 7 days, counting every account, refilling at one
  certificate every 202 minutes (168 h / 50);
- New Certificates per Exact Set of Identifiers: 5 per 7 days, refilling at one every 34 hours
  (168 h / 5), with no override.

Let's Encrypt computes both with a token bucket (Boulder's GCRA): capacity = the limit, one token
back every ``168 h / limit``. seedbed replays the known issuances through the same bucket, so "left"
and "room again at" are what Let's Encrypt would answer: one certificate comes back at a time, there
is no week-long block. ``used`` is the count of the last 168 hours, for display.

A **renewal** (a certificate for exactly the same set of names as one issued before) is exempt from
the per-domain limit but not from the per-set limit. Renewals are counted and shown separately and
never spend the domain's budget.

Registered domains come from the Public Suffix List, *including its private section*
(``example.github.io`` is its own registered domain), as Let's Encrypt's Boulder does.

Pure: the ledger and ``now`` go in.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable
from datetime import datetime, timedelta
from typing import Any

import msgspec

from ..domains import registered_domain
from ..errors import ConfigError
from .ledger import Issuance, Ledger, _iso, _utc

REGISTERED_DOMAIN_LIMIT = 50
EXACT_SET_LIMIT = 5
WINDOW = timedelta(hours=168)
# Let's Encrypt refills one certificate per window/limit: ~202 minutes per domain, 33.6 hours per set.
DOMAIN_REFILL = WINDOW / REGISTERED_DOMAIN_LIMIT
EXACT_SET_REFILL = WINDOW / EXACT_SET_LIMIT
_DOMAIN_LABEL = re.compile(r"^(?!-)[a-z0-9-]{1,63}(?<!-)$")


def validate_domain(name: str) -> str:
    """A DNS name as Let's Encrypt would accept it (``*.`` allowed), lower-cased; else a ConfigError."""
    n = name.strip().lower().rstrip(".")
    labels = n.removeprefix("*.").split(".")
    if (not n or len(n) > 253 or len(labels) < 2 or not all(_DOMAIN_LABEL.match(lb) for lb in labels)
            or labels[-1].isdigit()):
        raise ConfigError(f"{name!r} is not a domain name",
                          fix="give a DNS name like example.org or home.example.org: letters, digits and "
                              "hyphens in dot-separated labels, no spaces")
    if registered_domain(n) is None:
        raise ConfigError(f"{name!r} is a public suffix: no one can get a certificate for it",
                          fix="give a domain registered under it, e.g. example." + n)
    return n


def _group_key(name: str) -> str:
    # Names without a registered domain are still shown (under themselves) rather than dropped.
    return registered_domain(name) or name


class Bucket(msgspec.Struct, frozen=True):
    """A Let's Encrypt token bucket at ``now``: what is left and when it grows."""

    remaining: int
    refills_at: datetime | None  # when one more token is back (None: the bucket is full)
    available_at: datetime | None  # when at least one may be issued (None: now)
    fully_refilled_at: datetime | None  # when the bucket is full again (None: it is)

    @staticmethod
    def replay(times: Iterable[datetime], limit: int, refill: timedelta, now: datetime) -> Bucket:
        """Spend one token per issuance (sorted), refilling ``1/refill`` per unit of time, up to ``limit``."""
        tokens, last = float(limit), None
        for t in sorted(times):
            if last is not None:
                tokens = min(limit, tokens + (t - last) / refill)
            # Below one token Let's Encrypt refuses; a log that shows more anyway (clock skew, merged
            # sources) must not push the bucket below empty.
            tokens = max(0.0, tokens - 1)
            last = t
        if last is not None:
            tokens = min(limit, tokens + (now - last) / refill)
        if tokens >= limit:
            return Bucket(limit, None, None, None)
        remaining = max(0, math.floor(tokens))
        # Rounded up to the second: "room again at" must never be a moment too early.
        def at(level: float) -> datetime:
            return now + timedelta(seconds=math.ceil(((level - tokens) * refill).total_seconds() - 1e-6))
        return Bucket(remaining, at(math.floor(tokens) + 1), None if tokens >= 1 else at(1), at(limit))


class ExactSetBudget(msgspec.Struct, frozen=True):
    names: tuple[str, ...]
    used: int  # issued in the last 168 hours (renewals included: this limit has no renewal exemption)
    limit: int
    refills_at: datetime | None  # when one more comes back (None: nothing spent)
    available_at: datetime | None  # when one more may be issued (None: now)
    issuances: tuple[Issuance, ...] = ()
    remaining: int = EXACT_SET_LIMIT

    def to_dict(self) -> dict[str, Any]:
        return {"names": list(self.names), "used": self.used, "limit": self.limit, "remaining": self.remaining,
                "refillsAt": _iso(self.refills_at), "availableAt": _iso(self.available_at),
                "issuedAt": [_iso(i.issued_at) for i in self.issuances]}


class DomainBudget(msgspec.Struct, frozen=True):
    domain: str
    used: int  # new certificates in the last 168 hours (renewals are exempt from this limit)
    limit: int
    refills_at: datetime | None
    available_at: datetime | None
    fully_refilled_at: datetime | None
    renewals: int  # renewals in the last 168 hours: shown, never spent from this limit
    exact_sets: tuple[ExactSetBudget, ...] = ()
    remaining: int = REGISTERED_DOMAIN_LIMIT

    def exact_set(self, names: Iterable[str]) -> ExactSetBudget:
        key = tuple(sorted({n.lower() for n in names}))
        for s in self.exact_sets:
            if s.names == key:
                return s
        return ExactSetBudget(key, 0, EXACT_SET_LIMIT, None, None)

    def to_dict(self) -> dict[str, Any]:
        return {"domain": self.domain, "used": self.used, "limit": self.limit, "remaining": self.remaining,
                "renewals": self.renewals, "refillsAt": _iso(self.refills_at),
                "availableAt": _iso(self.available_at), "fullyRefilledAt": _iso(self.fully_refilled_at),
                "exactSets": [s.to_dict() for s in self.exact_sets]}


class Budget(msgspec.Struct, frozen=True):
    now: datetime
    domains: dict[str, DomainBudget]
    notes: list[str] = msgspec.field(default_factory=list)
    sources: dict[str, int] = msgspec.field(default_factory=dict)
    issued_sets: frozenset[frozenset[str]] = frozenset()  # every name set issued before (renewal test)

    def domain(self, name: str) -> DomainBudget:
        """The budget of ``name``'s registered domain (an empty one when nothing was issued)."""
        key = _group_key(name)
        return self.domains.get(key) or DomainBudget(key, 0, REGISTERED_DOMAIN_LIMIT, None, None, None, 0)

    def exact_set(self, names: Iterable[str]) -> ExactSetBudget:
        names = list(names)
        return self.domain(min(names)).exact_set(names) if names else ExactSetBudget((), 0, EXACT_SET_LIMIT,
                                                                                    None, None)

    def is_renewal(self, names: Iterable[str]) -> bool:
        """Would a certificate for ``names`` be a renewal (the exact set was issued before)?"""
        return frozenset(n.lower() for n in names) in self.issued_sets

    def to_json(self) -> dict[str, Any]:
        """The ``--output json`` document (a dict; the caller serialises it)."""
        return {
            "now": _iso(self.now),
            "windowHours": int(WINDOW.total_seconds() // 3600),
            "limits": {"registeredDomain": REGISTERED_DOMAIN_LIMIT, "exactSet": EXACT_SET_LIMIT},
            "refillMinutes": {"registeredDomain": round(DOMAIN_REFILL.total_seconds() / 60, 1),
                              "exactSet": round(EXACT_SET_REFILL.total_seconds() / 60, 1)},
            "sources": dict(self.sources),
            "domains": [d.to_dict() for d in sorted(self.domains.values(), key=lambda d: d.domain)],
            "notes": list(self.notes),
        }

    def render_table(self) -> list[str]:
        """Plain text lines for the terminal (no colour: it is also pasted into issues)."""
        lines: list[str] = []
        if not self.domains:
            lines.append("No Let's Encrypt production certificates in the last 168 hours.")
        for d in sorted(self.domains.values(), key=lambda d: d.domain):
            refill = f", next refill {_when(d.refills_at, self.now)}" if d.refills_at else ""
            lines.append(f"{d.domain}: {d.used} new certificate(s) in 168 h, {d.remaining}/{d.limit} left{refill}")
            if d.renewals:
                lines.append(f"  renewals: {d.renewals} in 168 h (same names again: exempt from the {d.limit} "
                             "per domain, not from the 5 per set)")
            for s in d.exact_sets:
                state = f"{s.used} in 168 h, {s.remaining}/{s.limit} left"
                if s.available_at:
                    state += f", FULL until {_when(s.available_at, self.now)}"
                elif s.refills_at:
                    state += f", next refill {_when(s.refills_at, self.now)}"
                lines.append(f"  {', '.join(s.names)}: {state}")
        lines += [f"note: {n}" for n in self.notes]
        return lines


def _when(at: datetime, now: datetime) -> str:
    delta = at - now
    hours = delta.total_seconds() / 3600
    rel = f"in {hours:.0f} h" if hours >= 1 else f"in {max(0, delta.total_seconds()) / 60:.0f} min"
    return f"{_iso(at)} ({rel})"


def compute(ledger: Ledger | Iterable[Issuance], now: datetime, *, notes: Iterable[str] = ()) -> Budget:
    """The budget at ``now`` from every counted issuance in the last 168 hours."""
    now = _utc(now)
    start = now - WINDOW
    all_items = list(ledger)
    counted = sorted((i for i in all_items if i.counts and start < i.issued_at <= now),
                     key=lambda i: i.issued_at)
    sources: dict[str, int] = {}
    for i in counted:
        sources[i.source] = sources.get(i.source, 0) + 1
    out_notes = list(notes)
    unknown = sum(1 for i in counted if i.ca == "unknown")
    if unknown:
        out_notes.append(f"{unknown} issuance(s) from an unidentified CA are counted as Let's Encrypt production")
    future = sum(1 for i in all_items if i.counts and i.issued_at > now)
    if future:
        out_notes.append(f"{future} issuance(s) dated in the future were ignored (is this machine's clock right?)")

    # A renewal repeats a name set issued before (any time before, any source).
    first_seen: dict[frozenset[str], datetime] = {}
    for i in sorted((i for i in all_items if i.counts and i.issued_at <= now), key=lambda i: i.issued_at):
        first_seen.setdefault(i.names, i.issued_at)

    by_domain: dict[str, list[Issuance]] = {}
    for i in counted:
        # A certificate naming several registered domains counts once against each of them.
        for key in sorted({_group_key(n) for n in i.names}):
            by_domain.setdefault(key, []).append(i)

    # The buckets replay the whole known history: a burst just before the window still limits now.
    history: dict[str, list[Issuance]] = {}
    for i in sorted((i for i in all_items if i.counts and i.issued_at <= now), key=lambda i: i.issued_at):
        for key in sorted({_group_key(n) for n in i.names}):
            history.setdefault(key, []).append(i)

    domains: dict[str, DomainBudget] = {}
    for key, items in by_domain.items():
        past = history[key]
        new = [i for i in items if first_seen[i.names] >= i.issued_at]
        sets: dict[tuple[str, ...], list[Issuance]] = {}
        for i in items:
            sets.setdefault(tuple(sorted(i.names)), []).append(i)
        exact = []
        for names, its in sorted(sets.items(), key=lambda kv: (-len(kv[1]), kv[0])):
            b = Bucket.replay((i.issued_at for i in past if tuple(sorted(i.names)) == names),
                              EXACT_SET_LIMIT, EXACT_SET_REFILL, now)
            exact.append(ExactSetBudget(names, len(its), EXACT_SET_LIMIT, b.refills_at, b.available_at,
                                        tuple(its), b.remaining))
        b = Bucket.replay((i.issued_at for i in past if first_seen[i.names] >= i.issued_at),
                          REGISTERED_DOMAIN_LIMIT, DOMAIN_REFILL, now)
        domains[key] = DomainBudget(
            domain=key, used=len(new), limit=REGISTERED_DOMAIN_LIMIT,
            refills_at=b.refills_at, available_at=b.available_at, fully_refilled_at=b.fully_refilled_at,
            renewals=len(items) - len(new), exact_sets=tuple(exact), remaining=b.remaining,
        )
    return Budget(now=now, domains=domains, notes=out_notes, sources=sources, issued_sets=frozenset(first_seen))
