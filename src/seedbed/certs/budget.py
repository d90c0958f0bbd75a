"""Let's Encrypt production budget: how many certificates are left, per domain and per name set.

Two limits matter for rebuilds (https://letsencrypt.org/docs/rate-limits/):

- 50 new certificates per registered domain per 7 days, counting every account;
- 5 new certificates for the same exact set of names per 7 days, with no override.

Let's Encrypt refills both continuously (a token bucket). seedbed uses the stricter sliding
window of 168 hours instead: an issuance counts until 168 hours after it happened. That never
says "there is room" when Let's Encrypt would say no, and it is easy to explain.

Renewals (a certificate for a set of names issued before) are exempt from the 50/domain limit
at Let's Encrypt. seedbed still counts them, because it cannot know whether Let's Encrypt
treats a rebuild's re-issue as a renewal; they are reported separately so the user can see it.

Registered domains come from the Public Suffix List, *including its private section*
(``example.github.io`` is its own registered domain), as Let's Encrypt's Boulder does.

Pure: the ledger and ``now`` go in.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from ..domains import registered_domain
from .ledger import Issuance, Ledger, _iso, _utc

REGISTERED_DOMAIN_LIMIT = 50
EXACT_SET_LIMIT = 5
WINDOW = timedelta(hours=168)


def _group_key(name: str) -> str:
    # Names without a registered domain are still shown (under themselves) rather than dropped.
    return registered_domain(name) or name


@dataclass(frozen=True)
class ExactSetBudget:
    names: tuple[str, ...]
    used: int
    limit: int
    refills_at: datetime | None  # when the oldest counted issuance leaves the window
    available_at: datetime | None  # when one more may be issued (None: now)
    issuances: tuple[Issuance, ...] = ()

    @property
    def remaining(self) -> int:
        return max(0, self.limit - self.used)

    def to_dict(self) -> dict[str, Any]:
        return {"names": list(self.names), "used": self.used, "limit": self.limit, "remaining": self.remaining,
                "refillsAt": _iso(self.refills_at), "availableAt": _iso(self.available_at),
                "issuedAt": [_iso(i.issued_at) for i in self.issuances]}


@dataclass(frozen=True)
class DomainBudget:
    domain: str
    used: int
    limit: int
    refills_at: datetime | None
    available_at: datetime | None
    fully_refilled_at: datetime | None  # when the newest counted issuance leaves the window
    renewals: int  # of ``used``, how many repeat an earlier name set (exempt at LE; counted here)
    exact_sets: tuple[ExactSetBudget, ...] = ()

    @property
    def remaining(self) -> int:
        return max(0, self.limit - self.used)

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


@dataclass(frozen=True)
class Budget:
    now: datetime
    domains: dict[str, DomainBudget]
    notes: list[str] = field(default_factory=list)
    sources: dict[str, int] = field(default_factory=dict)

    def domain(self, name: str) -> DomainBudget:
        """The budget of ``name``'s registered domain (an empty one when nothing was issued)."""
        key = _group_key(name)
        return self.domains.get(key) or DomainBudget(key, 0, REGISTERED_DOMAIN_LIMIT, None, None, None, 0)

    def exact_set(self, names: Iterable[str]) -> ExactSetBudget:
        names = list(names)
        return self.domain(min(names)).exact_set(names) if names else ExactSetBudget((), 0, EXACT_SET_LIMIT,
                                                                                    None, None)

    def to_json(self) -> dict[str, Any]:
        """The ``--output json`` document (a dict; the caller serialises it)."""
        return {
            "now": _iso(self.now),
            "windowHours": int(WINDOW.total_seconds() // 3600),
            "limits": {"registeredDomain": REGISTERED_DOMAIN_LIMIT, "exactSet": EXACT_SET_LIMIT},
            "sources": dict(self.sources),
            "domains": [d.to_dict() for d in sorted(self.domains.values(), key=lambda d: d.domain)],
            "notes": list(self.notes),
        }

    def dumps(self) -> str:
        return json.dumps(self.to_json(), indent=2)

    def render_table(self) -> list[str]:
        """Plain text lines for the terminal (no colour: it is also pasted into issues)."""
        lines: list[str] = []
        if not self.domains:
            lines.append("No Let's Encrypt production certificates in the last 168 hours.")
        for d in sorted(self.domains.values(), key=lambda d: d.domain):
            refill = f", next refill {_when(d.refills_at, self.now)}" if d.refills_at else ""
            renew = f" ({d.renewals} look like renewals)" if d.renewals else ""
            lines.append(f"{d.domain}: {d.used}/{d.limit} certificates in 168 h{renew}, "
                         f"{d.remaining} left{refill}")
            for s in d.exact_sets:
                state = f"{s.used}/{s.limit}"
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


def _available(times: list[datetime], limit: int, now: datetime) -> datetime | None:
    """When one more fits, for counted issuance times within the window (sorted ascending)."""
    if len(times) < limit:
        return None
    # The (used - limit + 1) oldest must leave the window before there is room for one more.
    return times[len(times) - limit] + WINDOW


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
    for i in sorted((i for i in all_items if i.counts), key=lambda i: i.issued_at):
        first_seen.setdefault(i.names, i.issued_at)

    by_domain: dict[str, list[Issuance]] = {}
    for i in counted:
        # A certificate naming several registered domains counts once against each of them.
        for key in sorted({_group_key(n) for n in i.names}):
            by_domain.setdefault(key, []).append(i)

    domains: dict[str, DomainBudget] = {}
    for key, items in by_domain.items():
        times = [i.issued_at for i in items]
        sets: dict[tuple[str, ...], list[Issuance]] = {}
        for i in items:
            sets.setdefault(tuple(sorted(i.names)), []).append(i)
        exact = tuple(
            ExactSetBudget(names, len(its), EXACT_SET_LIMIT, its[0].issued_at + WINDOW,
                           _available([i.issued_at for i in its], EXACT_SET_LIMIT, now), tuple(its))
            for names, its in sorted(sets.items(), key=lambda kv: (-len(kv[1]), kv[0]))
        )
        domains[key] = DomainBudget(
            domain=key, used=len(items), limit=REGISTERED_DOMAIN_LIMIT,
            refills_at=times[0] + WINDOW,
            available_at=_available(times, REGISTERED_DOMAIN_LIMIT, now),
            fully_refilled_at=times[-1] + WINDOW,
            renewals=sum(1 for i in items if first_seen[i.names] < i.issued_at),
            exact_sets=exact,
        )
    return Budget(now=now, domains=domains, notes=out_notes, sources=sources)
