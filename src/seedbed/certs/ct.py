"""Certificate Transparency through crt.sh's JSON API: the authoritative issuance count.

Let's Encrypt logs every certificate it issues, for any account, so CT sees what neither the
cluster nor a backup can (a laptop's certbot, another cluster). crt.sh is a free service that is
often slow or overloaded: every failure here becomes a warning and ``partial=True``, never a crash,
because the budget is still useful from the other sources.
"""

from __future__ import annotations

import asyncio
import email.utils
import json
import os
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx2
import msgspec
from msgspec.structs import replace

from .ledger import LE_BACKDATE, Issuance, classify_issuer, normalize_serial, parse_time

DEFAULT_BASE_URL = "https://crt.sh"
ENV_BASE_URL = "SEEDBED_CRTSH_URL"

Sleep = Callable[[float], Awaitable[None]]


class CTResult(msgspec.Struct):
    issuances: list[Issuance] = msgspec.field(default_factory=list)
    partial: bool = False
    warnings: list[str] = msgspec.field(default_factory=list)


def _retry_after(value: str | None) -> float | None:
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - datetime.now(UTC)).total_seconds())


def _salvage(text: str) -> tuple[list[Any], bool]:
    """The entries of a JSON array, and whether it was complete.

    crt.sh sometimes stops mid-answer (a proxy timeout after the headers were sent). Every entry
    before the cut is still a real certificate, so keep them and report the answer as partial.
    """
    try:
        data = json.loads(text)
        if isinstance(data, list):
            return data, True
        return [], False
    except ValueError:
        pass
    decoder = json.JSONDecoder()
    items: list[Any] = []
    pos = text.find("[")
    if pos < 0:
        return [], False
    pos += 1
    while True:
        while pos < len(text) and text[pos] in " \t\r\n,":
            pos += 1
        if pos >= len(text) or text[pos] == "]":
            return items, False
        try:
            item, pos = decoder.raw_decode(text, pos)
        except ValueError:
            return items, False
        items.append(item)


def _issuance(entry: dict[str, Any]) -> Issuance | None:
    names = str(entry.get("name_value") or "").split("\n")
    if entry.get("common_name"):
        names.append(str(entry["common_name"]))
    names = [n for n in (x.strip() for x in names) if n and "@" not in n]  # e-mail SANs are not DNS names
    not_before = parse_time(entry.get("not_before"))
    # entry_timestamp is when the log saw it, minutes after issuance at most; notBefore is
    # backdated by Let's Encrypt, so it needs the hour added back.
    issued_at = parse_time(entry.get("entry_timestamp")) or (not_before + LE_BACKDATE if not_before else None)
    if not names or issued_at is None:
        return None
    issuer = str(entry.get("issuer_name") or "") or None
    return Issuance(names=frozenset(names), issued_at=issued_at, source="ct",
                    serial=normalize_serial(entry.get("serial_number")), issuer=issuer,
                    ca=classify_issuer(issuer), not_before=not_before, where=f"crt.sh id {entry.get('id')}")


async def _query(client: httpx2.AsyncClient, url: str, q: str, *, attempts: int, max_delay: float,
                 sleep: Sleep, result: CTResult) -> list[Any]:
    delay = 1.0
    for attempt in range(1, attempts + 1):
        last = attempt == attempts
        try:
            resp = await client.get(url, params={"q": q, "output": "json"})
        except httpx2.TimeoutException:
            result.partial = True
            result.warnings.append(f"crt.sh did not answer for {q!r} in time; counts from CT are incomplete")
            return []
        except httpx2.TransportError as e:
            if last:
                result.partial = True
                result.warnings.append(f"crt.sh could not be reached for {q!r} ({type(e).__name__})")
                return []
            await sleep(min(delay, max_delay))
            delay *= 2
            continue
        if resp.status_code == 429 or resp.status_code >= 500:
            if last:
                result.partial = True
                what = "rate-limited us" if resp.status_code == 429 else f"failed (HTTP {resp.status_code})"
                result.warnings.append(f"crt.sh {what} for {q!r} after {attempts} attempts; "
                                       "counts from CT are incomplete")
                return []
            wait = _retry_after(resp.headers.get("retry-after"))
            await sleep(min(wait if wait is not None else delay, max_delay))
            delay *= 2
            continue
        if resp.status_code == 404:
            return []  # crt.sh answers 404 for "no certificates" on some paths
        if resp.status_code != 200:
            result.partial = True
            result.warnings.append(f"crt.sh answered HTTP {resp.status_code} for {q!r}; skipped")
            return []
        try:
            text = resp.text
        except (UnicodeDecodeError, httpx2.HTTPError):
            text = ""
        if not text.strip():
            return []
        items, complete = _salvage(text)
        if not complete:
            result.partial = True
            result.warnings.append(f"crt.sh's answer for {q!r} was cut short or not JSON; "
                                   f"kept the {len(items)} complete entries before the cut")
        return items
    return []  # pragma: no cover - the loop always returns


async def fetch_ct(domain: str, *, base_url: str | None = None, timeout: float = 20, client: httpx2.AsyncClient
                   | None = None, attempts: int = 3, max_delay: float = 10.0, sleep: Sleep = asyncio.sleep,
                   since: datetime | None = None) -> CTResult:
    """Let's Encrypt production certificates for ``domain`` and its subdomains, from crt.sh.

    ``base_url`` defaults to $SEEDBED_CRTSH_URL, then https://crt.sh. Retries 429 and 5xx answers
    (honouring Retry-After, capped at ``max_delay`` seconds) at most ``attempts`` times. ``since``
    drops older certificates (default: keep all).
    """
    base = (base_url or os.environ.get(ENV_BASE_URL) or DEFAULT_BASE_URL).rstrip("/")
    domain = domain.strip().lower().rstrip(".").removeprefix("*.")
    result = CTResult()
    own = client is None
    c = client or httpx2.AsyncClient(timeout=timeout, headers={"user-agent": "seedbed (certs budget)"})
    entries: list[Any] = []
    try:
        for q in (f"%.{domain}", domain):
            entries += await _query(c, base + "/", q, attempts=attempts, max_delay=max_delay, sleep=sleep,
                                    result=result)
    finally:
        if own:
            await c.aclose()

    by_serial: dict[str, Issuance] = {}
    no_serial: list[Issuance] = []
    skipped = 0
    for entry in entries:
        if not isinstance(entry, dict):
            skipped += 1
            continue
        iss = _issuance(entry)
        if iss is None:
            skipped += 1
            continue
        if not iss.counts:
            continue  # staging or another CA: not in Let's Encrypt production's limits
        if since is not None and iss.issued_at < since:
            continue
        if iss.serial is None:
            no_serial.append(iss)
            continue
        # The precertificate and the final certificate share a serial: one issuance. Keep the
        # earliest log time, which is the closer one to the moment of issuance.
        known = by_serial.get(iss.serial)
        if known is None:
            by_serial[iss.serial] = iss
        elif iss.issued_at < known.issued_at:
            by_serial[iss.serial] = replace(iss, names=iss.names | known.names)
    if skipped:
        result.partial = True
        result.warnings.append(f"{skipped} crt.sh entr{'y' if skipped == 1 else 'ies'} could not be read")
    result.issuances = sorted([*by_serial.values(), *no_serial], key=lambda i: i.issued_at)
    return result


def window_start(now: datetime, hours: int = 168) -> datetime:
    """The start of the budget window, for ``since=`` (a little earlier, to be safe)."""
    return now - timedelta(hours=hours + 1)
