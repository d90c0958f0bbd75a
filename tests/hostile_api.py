"""A hostile "API server" on loopback: it answers each request with whatever a test scripts.

The emulator is a faithful API server; this is the opposite, for what a broken or hostile one does
at the HTTP level (never answer, drip bytes, stall a TLS handshake, send HTML or a JSON list where
an object belongs, echo the credentials). It runs on the test's own event loop.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import yaml

# (method, path, headers) -> None to stall forever, or the raw bytes of the whole answer
Script = Callable[[str, str, dict[str, str]], Awaitable[bytes | None]]


def answer(status: int, body: Any, content_type: str = "application/json") -> bytes:
    data = body if isinstance(body, bytes) else (json.dumps(body) if not isinstance(body, str) else body).encode()
    return (f"HTTP/1.1 {status} X\r\nContent-Type: {content_type}\r\nContent-Length: {len(data)}\r\n"
            "Connection: close\r\n\r\n").encode() + data


class HostileServer:
    def __init__(self, script: Script | None = None, *, drip: bytes | None = None, drip_every: float = 0.05,
                 silent: bool = False) -> None:
        self.script = script
        self.drip = drip  # send these bytes one at a time, forever slower than any deadline allows
        self.drip_every = drip_every
        self.silent = silent  # accept and read, never send a byte (also: a TLS handshake that stalls)
        self.requests: list[tuple[str, str, dict[str, str]]] = []
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self.port = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def __aenter__(self) -> HostileServer:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.close()
        for t in list(self._tasks):
            t.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        try:
            if self.silent:
                await asyncio.sleep(3600)
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                line, *rest = head.decode("latin-1").split("\r\n")
                method, path, _ = line.split(" ", 2)
                headers = {k.strip().lower(): v.strip() for k, _, v in (h.partition(":") for h in rest if h)}
                if int(headers.get("content-length", "0")):
                    await reader.readexactly(int(headers["content-length"]))
                self.requests.append((method, path, headers))
                if self.drip is not None:
                    writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 100000\r\n\r\n")
                    for i in range(100000):
                        writer.write(self.drip[i % len(self.drip):][:1])
                        await writer.drain()
                        await asyncio.sleep(self.drip_every)
                assert self.script is not None
                out = await self.script(method, path, headers)
                if out is None:
                    await asyncio.sleep(3600)
                    return
                writer.write(out)
                await writer.drain()
                if b"Connection: close" in out.split(b"\r\n\r\n", 1)[0]:
                    return
        except (asyncio.IncompleteReadError, ConnectionError, asyncio.CancelledError):
            pass
        finally:
            self._tasks.discard(task)
            writer.close()


def kubeconfig(path: Path, server: str, *, user: dict[str, Any] | None = None,
               cluster: dict[str, Any] | None = None, context: str = "hostile") -> Path:
    path.write_text(yaml.safe_dump({
        "apiVersion": "v1", "kind": "Config", "current-context": context,
        "clusters": [{"name": "c", "cluster": {"server": server, **(cluster or {})}}],
        "contexts": [{"name": context, "context": {"cluster": "c", "user": "u"}}],
        "users": [{"name": "u", "user": user or {}}],
    }))
    return path
