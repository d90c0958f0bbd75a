"""Port-forward over the Kubernetes websocket protocol (``v4.channel.k8s.io``).

Neither lightkube nor httpx speak it, so it is written here on top of httpx2's websockets
(the same client, TLS and credentials as every other request). Each local TCP connection gets
its own websocket stream, as with kubectl; a dropped stream ends only that connection, and the
next connection re-resolves the Pod, so the forward survives drops and Pod restarts.

Protocol (kubelet, websocket flavour): one stream per port with channel 0 = data and
1 = error. The server first sends, on each channel, the port as two little-endian bytes; after
that every binary frame is ``[channel] + payload``.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

import httpx2 as httpx

from ..errors import ClusterError

if TYPE_CHECKING:
    from .client import Kube, Obj

PROTOCOL = "v4.channel.k8s.io"
DATA, ERROR = 0, 1


@contextlib.asynccontextmanager
async def port_forward(kube: Kube, namespace: str, *, port: int, service: str | None = None,
                       pod: str | None = None) -> AsyncIterator[int]:
    if not service and not pod:
        raise ValueError("port_forward needs a service or a pod")
    # Resolve once up front, so that a wrong name fails here with a clear message.
    await _resolve(kube, namespace, port, service, pod)
    handlers: set[asyncio.Task[None]] = set()

    async def on_connect(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        handlers.add(task)
        try:
            await _relay(kube, namespace, port, service, pod, reader, writer)
        except Exception:
            pass  # the client sees a closed connection; the forward itself lives on
        except asyncio.CancelledError:
            # The forward is closing. Ending normally matters: asyncio (3.11) logs a traceback for a
            # connection handler task that ends cancelled.
            pass
        finally:
            handlers.discard(task)
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    server = await asyncio.start_server(on_connect, "127.0.0.1", 0)
    local_port = server.sockets[0].getsockname()[1]
    try:
        yield local_port
    finally:
        server.close()
        for task in list(handlers):
            task.cancel()
        await asyncio.gather(*handlers, return_exceptions=True)
        with contextlib.suppress(Exception):
            await server.wait_closed()


async def _resolve(kube: Kube, namespace: str, port: int, service: str | None,
                   pod: str | None) -> tuple[str, int]:
    """The Pod and container port that ``service:port`` (or ``pod:port``) leads to."""
    if pod:
        obj = await kube.get("v1", "Pod", pod, namespace=namespace)
        if obj is None:
            raise ClusterError(f"cannot port-forward: pod {namespace}/{pod} does not exist")
        return pod, port
    svc = await kube.get("v1", "Service", service or "", namespace=namespace)
    if svc is None:
        raise ClusterError(f"cannot port-forward: service {namespace}/{service} does not exist",
                           fix="check that the Git server step finished (seedbed status)")
    spec = svc.get("spec") or {}
    sport = next((p for p in spec.get("ports") or [] if p.get("port") == port), None)
    if sport is None:
        raise ClusterError(f"service {namespace}/{service} has no port {port}")
    selector = spec.get("selector") or {}
    if not selector:
        raise ClusterError(f"service {namespace}/{service} has no selector, so no pod to forward to")
    sel = ",".join(f"{k}={v}" for k, v in sorted(selector.items()))
    pods = await kube.list("v1", "Pod", namespace, label_selector=sel)
    ready = [p for p in pods if _ready(p)]
    if not ready:
        raise ClusterError(f"cannot port-forward to service {namespace}/{service}: no ready pod matches {sel}",
                           fix=f"check the pods: kubectl -n {namespace} get pods -l {sel}")
    chosen = sorted(ready, key=lambda p: p["metadata"]["name"])[0]
    target: Any = sport.get("targetPort", port)
    if isinstance(target, str):  # a named port: look it up in the pod's containers
        named = [cp.get("containerPort") for c in (chosen.get("spec") or {}).get("containers", [])
                 for cp in c.get("ports") or [] if cp.get("name") == target]
        if not named:
            raise ClusterError(f"pod {chosen['metadata']['name']} has no port named {target!r}")
        target = named[0]
    return chosen["metadata"]["name"], int(target)


def _ready(pod: Obj) -> bool:
    st = pod.get("status") or {}
    if st.get("phase") != "Running" or (pod.get("metadata") or {}).get("deletionTimestamp"):
        return False
    return any(c.get("type") == "Ready" and c.get("status") == "True" for c in st.get("conditions") or [])


async def _relay(kube: Kube, namespace: str, port: int, service: str | None, pod: str | None,
                 reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    last: Exception | None = None
    for attempt in range(4):  # the stream may fail to open while a pod restarts: re-resolve, retry
        try:
            pod_name, target = await _resolve(kube, namespace, port, service, pod)
            path = f"/api/v1/namespaces/{namespace}/pods/{pod_name}/portforward"
            kube.stats.requests += 1
            async with kube.http.websocket(path, subprotocols=[PROTOCOL], params={"ports": str(target)},
                                           keepalive_ping_interval_seconds=None,
                                           # a data frame is one channel byte plus up to a full read
                                           # (kubelet: 32 KiB, but others send more); 64 KiB is too tight
                                           max_message_size_bytes=1 << 22) as ws:
                await _pump(ws, reader, writer)
                return
        except (httpx.TransportError, ClusterError) as e:
            last = e
        except Exception as e:  # websocket upgrade refused or stream broken before any data
            last = e
        await asyncio.sleep(0.1 * (2 ** attempt))
    raise ClusterError(f"port-forward to {namespace}/{service or pod}:{port} failed: {last}")


async def _pump(ws: Any, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    # The first frame on each channel is the port number; read both before relaying data.
    seen: set[int] = set()
    while len(seen) < 2:
        frame = await ws.receive_bytes()
        if frame:
            seen.add(frame[0])

    async def upstream() -> None:
        while True:
            chunk = await reader.read(65536)
            if not chunk:
                return
            await ws.send_bytes(bytes([DATA]) + chunk)

    async def downstream() -> None:
        while True:
            frame = await ws.receive_bytes()
            if not frame:
                continue
            if frame[0] == DATA:
                writer.write(frame[1:])
                await writer.drain()
            elif frame[0] == ERROR and len(frame) > 1:
                raise ClusterError(f"port-forward error from the kubelet: {frame[1:].decode(errors='replace')}")

    up = asyncio.create_task(upstream())
    down = asyncio.create_task(downstream())
    try:
        done, _ = await asyncio.wait({up, down}, return_when=asyncio.FIRST_COMPLETED)
        if up in done and not up.exception():
            # The local side finished sending; keep relaying the answer until the stream ends.
            with contextlib.suppress(Exception):
                await down
    finally:
        for t in (up, down):
            t.cancel()
        await asyncio.gather(up, down, return_exceptions=True)


