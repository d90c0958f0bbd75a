"""Port-forward over the Kubernetes websocket protocol (``v4.channel.k8s.io``).

Neither lightkube nor httpx speak it, so it is written here on top of httpx2's websockets
(the same client, TLS and credentials as every other request). Each local TCP connection gets
its own websocket stream, as with kubectl; a dropped stream ends only that connection. The Pod is
resolved once and kept while streams to it open; a stream that fails to open re-resolves it, so the
forward survives drops and Pod restarts without two reads per connection.

Protocol (kubelet, websocket flavour): one stream per port with channel 0 = data and
1 = error. The server first sends, on each channel, the port as two little-endian bytes; after
that every binary frame is ``[channel] + payload``.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

from httpx2.websockets import WebSocketUpgradeError

from .. import scrub
from ..errors import ClusterError

if TYPE_CHECKING:
    from .client import Kube, Obj

PROTOCOL = "v4.channel.k8s.io"
DATA, ERROR = 0, 1


@contextlib.asynccontextmanager
async def port_forward(kube: Kube, namespace: str, *, port: int, service: str | None = None,
                       pod: str | None = None) -> AsyncIterator[int]:
    """A loopback port relaying to the pod; a refused forward ends the ``async with`` body at once.

    A dropped stream is the client's business (it sees a closed connection and may retry), but when
    the API server refuses to open streams at all (it cannot dial the kubelet, RBAC forbids it), no
    retry of the client's will help: the body, whatever it awaits (a readiness poll, a git push), is
    cancelled and the ``async with`` raises the refusal as a ClusterError, the way ``asyncio.timeout``
    turns its cancellation into TimeoutError.
    """
    if not service and not pod:
        raise ValueError("port_forward needs a service or a pod")
    # Resolve once up front, so that a wrong name fails here with a clear message; connections use
    # this answer until a stream to it fails to open.
    resolved = [await _resolve(kube, namespace, port, service, pod)]
    handlers: set[asyncio.Task[None]] = set()
    body = asyncio.current_task()
    assert body is not None
    refusal: list[ClusterError] = []

    async def on_connect(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        handlers.add(task)
        try:
            await _relay(kube, namespace, port, service, pod, resolved, reader, writer)
        except Refused as e:
            if not refusal:
                refusal.append(e)
                body.cancel()
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
    except asyncio.CancelledError:
        if refusal and body.uncancel() == 0:
            raise refusal[0] from None
        raise
    finally:
        server.close()
        for task in list(handlers):
            task.cancel()
        await asyncio.gather(*handlers, return_exceptions=True)
        with contextlib.suppress(Exception):
            await server.wait_closed()


class Refused(ClusterError):
    """The API server would not open a port-forward stream (an HTTP error instead of the upgrade)."""


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
                 resolved: list[tuple[str, int]], reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Relay one local connection; ``resolved`` holds the forward's last (pod, port), shared by its connections."""
    last: Exception | None = None
    await kube.authenticate()
    known = resolved[0] if resolved else None
    attempt = 0
    while attempt < 4:  # the stream may fail to open while a pod restarts: re-resolve, retry
        fresh = known is None
        try:
            if known is None:
                known = await _resolve(kube, namespace, port, service, pod)
                resolved[:] = [known]
            pod_name, target = known
            path = f"/api/v1/namespaces/{namespace}/pods/{pod_name}/portforward"
            kube.stats.requests += 1
            async with contextlib.AsyncExitStack() as stack:
                try:
                    async with asyncio.timeout(kube.deadlines.request):
                        ws = await stack.enter_async_context(kube.http.websocket(
                            path, subprotocols=[PROTOCOL], params={"ports": str(target)},
                            keepalive_ping_interval_seconds=None,
                            # a data frame is one channel byte plus up to a full read
                            # (kubelet: 32 KiB, but others send more); 64 KiB is too tight
                            max_message_size_bytes=1 << 22))
                except TimeoutError:
                    raise Refused(
                        f"the API server at {kube.target.server} did not open the port-forward to pod "
                        f"{namespace}/{pod_name} within {kube.deadlines.request:g} s",
                        fix="check the API server's health (kubectl get --raw /readyz)") from None
                except WebSocketUpgradeError as e:
                    last = _refused(kube, e.response, namespace, pod_name, target)
                    if e.response.status_code in (401, 403):
                        raise last from None  # RBAC does not change between retries
                    raise
                await _pump(ws, reader, writer)
                return
        except Refused:
            raise
        except WebSocketUpgradeError:
            pass  # recorded in `last`: retried after re-resolving the pod
        except Exception as e:  # no ready pod yet, a stream broken before any data: retry
            last = e
        known = None
        if not fresh:
            continue  # the pod the forward knew failed: look it up again at once (it may have been replaced)
        await asyncio.sleep(0.1 * (2 ** attempt))
        attempt += 1
    if isinstance(last, Refused):
        raise last
    raise ClusterError(f"port-forward to {namespace}/{service or pod}:{port} failed: {last}")


def _refused(kube: Kube, resp: Any, namespace: str, pod: str, port: int) -> Refused:
    """The API server's reason for not upgrading, e.g. ``error dialing backend: ... connection refused``."""
    try:
        body = resp.json()
    except Exception:  # not read, not JSON, or not even text: the status line is all there is
        body = None
    message = body.get("message") if isinstance(body, dict) else None
    if not isinstance(message, str) or not message:
        with contextlib.suppress(Exception):
            message = resp.text[:200]
    reason = scrub.scrub(" ".join(str(message or resp.reason_phrase).split()))[:300]
    what = (f"the API server at {kube.target.server} refused the port-forward to pod {namespace}/{pod} "
            f"port {port} ({resp.status_code}): {reason}")
    if resp.status_code in (401, 403):
        return Refused(what, fix="the kubeconfig's user needs `create` on pods/portforward in namespace "
                                 f"{namespace} (kubectl auth can-i create pods/portforward -n {namespace})")
    if "dial" in reason or "backend" in reason or resp.status_code >= 500:
        return Refused(what, fix="the API server cannot reach the kubelet of the pod's node: check that the "
                                 "node is Ready (kubectl get nodes -o wide) and that the API server can reach "
                                 "port 10250 on it (a firewall there breaks every port-forward, exec and logs)")
    return Refused(what, fix=f"check the pod (kubectl -n {namespace} describe pod {pod}), then re-run")


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


