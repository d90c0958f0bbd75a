"""A fake crt.sh on loopback: the JSON API (``/?q=...&output=json``) with scripted misbehaviour.

    async with FakeCrtSh() as fake:
        fake.add("web.example.com", issued_at=datetime(...))
        fake.script("%.example.com", [FakeCrtSh.status(429, retry_after="0"), FakeCrtSh.OK])
        result = await fetch_ct("example.com", base_url=fake.url, sleep=no_sleep)

Each query pops its next scripted action; when the script is empty it answers normally.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from aiohttp import web

LE_PROD = "C=US, O=Let's Encrypt, CN=R11"
LE_STAGING = "C=US, O=(STAGING) Let's Encrypt, CN=(STAGING) Ersatz Edamame E1"


@dataclass(frozen=True)
class Action:
    kind: str  # ok | status | truncate | slow | garbage
    status: int = 200
    retry_after: str | None = None
    delay: float = 0.0


class FakeCrtSh:
    OK = Action("ok")
    TRUNCATE = Action("truncate")
    GARBAGE = Action("garbage")

    @staticmethod
    def status(code: int, retry_after: str | None = None) -> Action:
        return Action("status", status=code, retry_after=retry_after)

    @staticmethod
    def slow(delay: float) -> Action:
        return Action("slow", delay=delay)

    def __init__(self) -> None:
        self.entries: list[dict[str, Any]] = []
        self.scripts: dict[str, list[Action]] = {}
        self.requests: list[dict[str, str]] = []
        self._runner: web.AppRunner | None = None
        self.url = ""
        self._next_id = 1000

    # ------------------------------------------------------------------ data

    def add(self, *names: str, issued_at: datetime, issuer: str = LE_PROD, serial: str | None = None,
            precert: bool = True) -> str:
        """One certificate; logged twice (precertificate and leaf, same serial) like real CT."""
        serial = serial or f"{0x03AB0000 + self._next_id:036x}"
        for n in range(2 if precert else 1):
            self._next_id += 1
            not_before = issued_at - timedelta(hours=1)
            self.entries.append({
                "issuer_ca_id": 295815,
                "issuer_name": issuer,
                "common_name": names[0],
                "name_value": "\n".join(names),
                "id": self._next_id,
                "entry_timestamp": (issued_at + timedelta(seconds=n * 5)).astimezone(UTC)
                .replace(tzinfo=None).isoformat(timespec="milliseconds"),
                "not_before": not_before.astimezone(UTC).replace(tzinfo=None).isoformat(timespec="seconds"),
                "not_after": (not_before + timedelta(days=90)).astimezone(UTC).replace(tzinfo=None)
                .isoformat(timespec="seconds"),
                "serial_number": serial,
                "result_count": 2,
            })
        return serial

    def script(self, q: str, actions: list[Action]) -> None:
        self.scripts.setdefault(q, []).extend(actions)

    def _matching(self, q: str) -> list[dict[str, Any]]:
        q = q.lower()
        out = []
        for e in self.entries:
            names = [n.lower() for n in e["name_value"].split("\n")]
            if q.startswith("%."):
                if any(n.endswith(q[1:]) for n in names):
                    out.append(e)
            elif q in names:
                out.append(e)
        return out

    # ------------------------------------------------------------------ server

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        q = request.query.get("q", "")
        self.requests.append(dict(request.query))
        script = self.scripts.get(q) or []
        action = script.pop(0) if script else self.OK
        if action.kind == "status":
            headers = {"Retry-After": action.retry_after} if action.retry_after is not None else {}
            return web.Response(status=action.status, text="slow down", headers=headers)
        if action.kind == "slow":
            await asyncio.sleep(action.delay)
        if action.kind == "garbage":
            return web.Response(text="<html>502 Bad Gateway</html>", content_type="text/html")
        body = json.dumps(self._matching(q))
        if action.kind == "truncate":
            # Cut in the middle of the second-to-last entry, as a proxy timeout does.
            body = body[: max(1, int(len(body) * 0.75))]
        return web.Response(text=body, content_type="application/json")

    async def start(self) -> FakeCrtSh:
        app = web.Application()
        app.router.add_get("/", self._handle)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self.url = f"http://127.0.0.1:{port}"
        return self

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    async def __aenter__(self) -> FakeCrtSh:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()
