"""The Emulator: an aiohttp server on loopback, in its own thread, speaking the Kubernetes API."""

from __future__ import annotations

import asyncio
import base64
import concurrent.futures
import contextvars
import copy
import json
import logging
import re
import ssl
import threading
import time
import weakref
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from aiohttp import WSMsgType, web

from .controllers import Controllers
from .merge import (
    PatchError,
    SelectorError,
    json_patch,
    match_fields,
    match_labels,
    merge_patch,
    parse_field_selector,
    parse_label_selector,
    strategic_merge_patch,
)
from .resources import Registry, ResourceInfo
from .store import CURRENT_REQUEST, REASONS, ApiError, Obj, Store, Watcher, now, status_body

log = logging.getLogger(__name__)

VERSION = {
    "major": "1", "minor": "37", "gitVersion": "v1.37.0", "gitCommit": "0000000000000000000000000000000000000000",
    "gitTreeState": "clean", "buildDate": "2026-01-01T00:00:00Z", "goVersion": "go1.25.0", "compiler": "gc",
    "platform": "linux/amd64",
}
PORT_FORWARD_PROTOCOL = "v4.channel.k8s.io"
_YAML_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
_PLACEHOLDER_CA = "-----BEGIN CERTIFICATE-----\nZW11bGF0b3I=\n-----END CERTIFICATE-----\n"


@dataclass
class RequestRecord:
    method: str
    path: str
    query: dict[str, str]
    user_agent: str
    status: int = 0
    size: int = 0  # bytes of the answer's body (0 for a streamed watch or port-forward)
    changed: bool = False  # the request changed stored state (a no-op apply did not)
    # When the client sent it and when the client had the whole answer (time.monotonic(), link
    # latency included; a watch ends at its last event): what sequential_round_trips() chains.
    start: float = 0.0
    end: float | None = None


@dataclass
class Fault:
    method: str | None
    path: re.Pattern[str]
    status: int | None
    times: int
    latency: float
    drop_watch: bool
    drop_port_forward: bool
    retry_after: int | float | None
    message: str | None = None
    watches_only: bool = False


@dataclass
class _Denial:
    verb: str
    resource: str
    group: str
    namespace: str | None


@dataclass
class _Route:
    host: str
    port: int


@dataclass
class _Target:
    info: ResourceInfo
    namespace: str | None
    name: str | None
    sub: str | None
    extra: list[str] = field(default_factory=list)


def _dumps(obj: Any) -> bytes:
    return json.dumps(obj, separators=(",", ":")).encode()


def _json(obj: Any, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(body=_dumps(obj), status=status, content_type="application/json", headers=headers)


def _wants_partial_metadata(accept: str) -> bool:
    """The client's first choice is a PartialObjectMetadataList of meta.k8s.io/v1, as client-go's
    metadata client asks (``application/json;as=PartialObjectMetadataList;g=meta.k8s.io;v=v1``);
    the v1beta1 form and protobuf are not modelled (plain JSON is served instead, as a server does
    for the next type in the Accept list)."""
    first = accept.split(",")[0]
    params = dict(p.strip().split("=", 1) for p in first.split(";")[1:] if "=" in p)
    return (first.split(";")[0].strip() == "application/json" and params.get("as") == "PartialObjectMetadataList"
            and params.get("g") == "meta.k8s.io" and params.get("v") == "v1")


def _with_version(obj: Obj, api_version: str) -> Obj:
    # CRDs serving several versions share one stored object; no conversion, only the apiVersion.
    return obj if obj.get("apiVersion") == api_version else {**obj, "apiVersion": api_version}


class Emulator:
    """A Kubernetes API server emulator. See src/seedbed_lab/emulator/SIMPLIFICATIONS.md for what it leaves out."""

    def __init__(self, nodes: int = 1, tls: bool = False, token: str | None = None, host: str = "127.0.0.1",
                 history: int = 10_000, latency: float = 0.0) -> None:
        """nodes: Ready Nodes node-1..N; tls: HTTPS with a trustme CA; token: required bearer token;
        history: how many watch events are kept for watches from a resourceVersion (older: 410);
        latency: ROUND-TRIP time in seconds of a simulated network link between client and server.

        The link is modelled as a real one adds delay (loopback itself adds ~0):
        - every request: latency/2 before the server handles it (the request travelling in) and
          latency/2 after (the response travelling out), so a write takes effect mid-way, as it would;
        - every watch event reaches the client latency/2 after the server emitted it; events
          travel concurrently (a burst of 100 events costs latency/2 once, not 100 times);
        - a new TCP connection costs one extra round trip before its first request (the handshake),
          two with TLS (TLS 1.3 adds one): clients that reuse connections are rewarded, as on a link.
        Port-forward data frames are not delayed. `emu.latency` may be changed at any time."""
        self.host = host
        self.tls = tls
        self.token = token
        self.node_count = nodes
        self.registry = Registry.builtin()
        self.store = Store(self.registry, history)
        self.loop: asyncio.AbstractEventLoop | None = None
        self.port = 0
        self.latency = latency
        self._connections: weakref.WeakSet[asyncio.BaseTransport] = weakref.WeakSet()
        self.requests: list[RequestRecord] = []
        self.port_forward_streams = 0
        self._faults: list[Fault] = []
        self._denials: list[_Denial] = []
        self._routes: dict[tuple[str, int], _Route] = {}
        self._hooks: dict[str, list[Callable[[Emulator, Obj], None]]] = {}
        self._held: set[tuple[str, str, str]] = set()
        self._thread: threading.Thread | None = None
        self._thread_id: int | None = None
        self._runner: web.AppRunner | None = None
        self._sockets: set[web.WebSocketResponse] = set()
        self._ssl: ssl.SSLContext | None = None
        self.ca_pem = _PLACEHOLDER_CA
        if tls:
            import trustme

            ca = trustme.CA()
            cert = ca.issue_cert("127.0.0.1", "localhost")
            self._ssl = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            cert.configure_cert(self._ssl)
            self.ca_pem = ca.cert_pem.bytes().decode()
        self.controllers = Controllers(self)

    # ---- lifecycle ----------------------------------------------------------------------

    @property
    def url(self) -> str:
        return f"{'https' if self.tls else 'http'}://{self.host}:{self.port}"

    def start(self) -> Emulator:
        if self._thread is not None:
            return self
        ready = threading.Event()
        errors: list[BaseException] = []

        def main() -> None:
            loop = asyncio.new_event_loop()
            asyncio.set_event_loop(loop)
            self.loop = loop
            self._thread_id = threading.get_ident()
            try:
                loop.run_until_complete(self._serve())
            except BaseException as e:
                errors.append(e)
                ready.set()
                return
            ready.set()
            loop.run_forever()
            loop.close()

        self._thread = threading.Thread(target=main, name="k8s-emulator", daemon=True)
        self._thread.start()
        ready.wait()
        if errors:
            raise errors[0]
        return self

    async def _serve(self) -> None:
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.5, handle_signals=False)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, 0, ssl_context=self._ssl)
        await site.start()
        server = site._server
        assert server is not None and server.sockets  # type: ignore[union-attr]
        self.port = server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        for ns in ("default", "kube-system", "kube-public", "kube-node-lease"):
            self.store.create(self.registry.by_gk[("", "Namespace")], "", {"metadata": {"name": ns}}, None,
                              internal=True)
        node_info = self.registry.by_gk[("", "Node")]
        for i in range(1, self.node_count + 1):
            self.store.create(node_info, "", _node(i), None, internal=True)

    def stop(self) -> None:
        if self._thread is None or self.loop is None:
            return

        async def shutdown() -> None:
            for w in list(self.store.watchers):
                w.queue.put_nowait(None)
            for ws in list(self._sockets):
                req = getattr(ws, "_req", None)  # open port-forwards would hold the shutdown up
                tr = req.transport if req is not None else None
                if tr is not None:
                    tr.abort()
            if self._runner is not None:
                await self._runner.cleanup()

        try:
            asyncio.run_coroutine_threadsafe(shutdown(), self.loop).result(10)
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self._thread.join(10)
            self._thread = None

    def __enter__(self) -> Emulator:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def write_kubeconfig(self, path: str | Path, context: str = "emulator", namespace: str | None = None) -> Path:
        cluster: dict[str, Any] = {"server": self.url}
        if self.tls:
            cluster["certificate-authority-data"] = base64.b64encode(self.ca_pem.encode()).decode()
        user: dict[str, Any] = {"token": self.token} if self.token else {}
        ctx: dict[str, Any] = {"cluster": "emulator", "user": "emulator"}
        if namespace:
            ctx["namespace"] = namespace
        doc = {"apiVersion": "v1", "kind": "Config", "preferences": {},
               "clusters": [{"name": "emulator", "cluster": cluster}],
               "users": [{"name": "emulator", "user": user}],
               "contexts": [{"name": context, "context": ctx}], "current-context": context}
        p = Path(path)
        p.write_text(yaml.safe_dump(doc, sort_keys=False))
        p.chmod(0o600)
        return p

    # ---- test controls ------------------------------------------------------------------

    def inject(self, method: str | None = None, path: str = r".*", status: int | None = None, times: int = 1,
               latency: float = 0.0, drop_watch: bool = False, drop_port_forward: bool = False,
               retry_after: int | float | None = None, message: str | None = None,
               watches_only: bool = False) -> None:
        """The next `times` requests matching method and path (a regex searched in the URL path) fail
        with `status` (and Status `message`, e.g. the API server's "error dialing backend: ..." when it
        cannot reach a kubelet), are delayed by `latency`, have their watch cut after the first event,
        or their port-forward websocket closed abruptly after the first data frame. ``watches_only``:
        only requests that open a watch (``?watch=true``) match."""
        self._faults.append(Fault(method.upper() if method else None, re.compile(path), status, times, latency,
                                  drop_watch, drop_port_forward, retry_after, message, watches_only))

    def clear_faults(self) -> None:
        self._faults = []

    def deny(self, verb: str, resource: str, group: str = "", namespace: str | None = None) -> None:
        """Deny verb on resource: SelfSubjectAccessReviews say no and matching requests get 403."""
        self._denials.append(_Denial(verb, resource, group, namespace))

    def route_port(self, namespace: str, port: int, host: str, target_port: int) -> None:
        """Port-forwards to `port` of any pod in `namespace` reach host:target_port."""
        self._routes[(namespace, int(port))] = _Route(host, int(target_port))

    def hold_ready(self, kind: str, namespace: str, name: str) -> None:
        self._held.add((kind, namespace, name))
        self._call(self._kick, kind, namespace, name)

    def release_ready(self, kind: str, namespace: str, name: str) -> None:
        self._held.discard((kind, namespace, name))
        self._call(self._kick, kind, namespace, name)

    def _kick(self, kind: str, namespace: str, name: str) -> None:
        self.controllers.schedule(("workload", kind, namespace, name),
                                  lambda: self.controllers.reconcile_workload(kind, namespace, name))

    def on_apply(self, kind: str, fn: Callable[[Emulator, Obj], None]) -> None:
        """Call fn(emu, obj) in the server thread after every main-resource write (create, update, patch,
        apply, put) of `kind` that changed it. Status writes do not trigger hooks, so a hook may call
        set_status without re-triggering itself; calls are deferred, never nested."""
        self._hooks.setdefault(kind, []).append(fn)

    def _run_hooks(self, info: ResourceInfo, ns: str, name: str) -> None:
        obj = self.store.get(info, ns, name)
        if obj is None:
            return
        for fn in list(self._hooks.get(info.kind, [])):
            fn(self, copy.deepcopy(obj))

    def settle(self) -> None:
        """Return once no simulated controller or hook work is pending (they may schedule more work,
        so this asks the server thread until it is idle)."""
        for _ in range(10_000):
            if self._call(lambda: not self.controllers._pending):
                return
        raise RuntimeError("the emulator's controllers never settled (a hook re-triggering itself?)")

    def writes(self) -> int:
        return sum(1 for r in list(self.requests)
                   if r.changed and r.method in ("POST", "PUT", "PATCH", "DELETE"))

    def reset_requests(self) -> None:
        self.requests = []

    def sequential_round_trips(self) -> int:
        """How many requests (since the last reset) had to happen one after another: len(critical_path())."""
        return len(self.critical_path())

    def critical_path(self) -> list[RequestRecord]:
        """The longest chain of requests (since the last reset) in which each one was sent only after
        the previous one had been answered: the round trips on the client's critical path, in order.

        Requests that overlap in time were in flight together (concurrency), so they count once;
        a chain of requests that never overlap had to happen one after another. Intervals are
        [sent, answered] as the client sees them (link latency included; a watch is answered at its
        last event, a request still open never ends). With latency L the run lasts at least
        len(chain) x L, so the length shows a regression without a stopwatch. At latency 0 almost
        every request is answered before the next is sent, so the chain is nearly every request:
        the count is meaningful with a latency. CPU time counts too: requests the (one-threaded)
        emulator or a busy client handles one after another stop overlapping. One sweep over the sorted ends and starts:
        chain(r) = 1 + the longest chain among requests that ended before r started.
        """
        reqs = list(self.requests)
        points: list[tuple[float, int, int]] = []  # (time, 0 = an end / 1 = a start, index); ends first on ties
        for i, r in enumerate(reqs):
            points.append((r.start, 1, i))
            if r.end is not None:
                points.append((r.end, 0, i))
        chain: dict[int, tuple[int, int | None]] = {}  # index -> (chain length, previous request on it)
        best: tuple[int, int | None] = (0, None)  # the longest chain among requests answered so far
        for _, kind, i in sorted(points):
            if kind == 1:
                chain[i] = (best[0] + 1, best[1])
            elif chain[i][0] > best[0]:
                best = (chain[i][0], i)
        if not chain:
            return []
        last: int | None = max(chain, key=lambda i: chain[i][0])
        path = []
        while last is not None:
            path.append(reqs[last])
            last = chain[last][1]
        return path[::-1]

    # ---- synchronous object access (any thread) -----------------------------------------

    def _call(self, fn: Callable[..., Any], *args: Any) -> Any:
        if self.loop is None or threading.get_ident() == self._thread_id:
            return fn(*args)
        fut: concurrent.futures.Future[Any] = concurrent.futures.Future()

        def run() -> None:
            try:
                fut.set_result(fn(*args))
            except BaseException as e:
                fut.set_exception(e)

        self.loop.call_soon_threadsafe(run, context=contextvars.Context())
        return fut.result(timeout=60)

    def _info(self, api_version: str, kind: str) -> ResourceInfo:
        info = self.registry.resolve(api_version, kind)
        if info is None:
            raise LookupError(f"the emulator does not serve {kind} in {api_version}")
        return info

    def get(self, api_version: str, kind: str, name: str, namespace: str | None = None) -> Obj | None:
        def run() -> Obj | None:
            info = self.registry.resolve(api_version, kind)
            obj = self.store.get(info, namespace, name) if info else None
            return copy.deepcopy(obj) if obj is not None else None
        return self._call(run)  # type: ignore[no-any-return]

    def list(self, api_version: str, kind: str, namespace: str | None = None) -> list[Obj]:
        def run() -> list[Obj]:
            info = self.registry.resolve(api_version, kind)
            return copy.deepcopy(self.store.list(info, namespace)) if info else []
        return self._call(run)  # type: ignore[no-any-return]

    def put(self, obj: Obj) -> Obj:
        """Create or replace obj as is (status included), running controllers and hooks."""
        def run() -> Obj:
            info = self._info(obj["apiVersion"], obj["kind"])
            body = copy.deepcopy(obj)
            md = body.setdefault("metadata", {})
            ns = md.get("namespace", "default") if info.namespaced else ""
            md.pop("resourceVersion", None)
            if self.store.get(info, ns, md["name"]) is None:
                return copy.deepcopy(self.store.create(info, ns, body, None, internal=True))
            return copy.deepcopy(self.store.update(info, ns, md["name"], body, None, internal=True)[0])
        return self._call(run)  # type: ignore[no-any-return]

    def delete(self, api_version: str, kind: str, name: str, namespace: str | None = None) -> bool:
        def run() -> bool:
            info = self._info(api_version, kind)
            if self.store.get(info, namespace, name) is None:
                return False
            self.store.delete(info, namespace or "", name)
            return True
        return self._call(run)  # type: ignore[no-any-return]

    def set_status(self, api_version: str, kind: str, name: str, namespace: str | None, status: Obj) -> Obj:
        def run() -> Obj:
            info = self._info(api_version, kind)
            cur = self.store.get(info, namespace, name)
            if cur is None:
                raise LookupError(f"{kind} {namespace}/{name} not found")
            return copy.deepcopy(self.store.update(info, namespace or "", name, {**cur, "status": status}, None,
                                                   part="status")[0])
        return self._call(run)  # type: ignore[no-any-return]

    # ---- HTTP ---------------------------------------------------------------------------

    def _match_fault(self, request: web.Request) -> Fault | None:
        for f in self._faults:
            if f.watches_only and request.query.get("watch") not in ("true", "1"):
                continue
            if (f.method is None or f.method == request.method) and f.path.search(request.path):
                f.times -= 1
                if f.times <= 0:
                    self._faults.remove(f)
                return f
        return None

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        rec = RequestRecord(request.method, request.path, dict(request.query),
                            request.headers.get("User-Agent", ""), start=time.monotonic())
        self.requests.append(rec)
        CURRENT_REQUEST.set(rec)
        resp: web.StreamResponse
        one_way = self.latency / 2
        try:
            if self.token is not None and request.headers.get("Authorization") != f"Bearer {self.token}":
                raise ApiError(401, "Unauthorized", "Unauthorized")
            fault = self._match_fault(request)
            delay = one_way + (fault.latency if fault else 0.0)
            transport = request.transport
            if self.latency and transport is not None and transport not in self._connections:
                self._connections.add(transport)
                delay += self.latency * (2 if self.tls else 1)  # TCP handshake (+ TLS 1.3) on a new connection
            if delay:
                await asyncio.sleep(delay)
            if fault is not None and fault.status:
                headers = {"Retry-After": str(fault.retry_after)} if fault.retry_after is not None else None
                raise ApiError(fault.status, fault.message or f"injected fault: {REASONS.get(fault.status, 'error')}",
                               headers=headers)
            resp = await self._dispatch(request, fault)
        except ApiError as e:
            resp = _json(e.body, e.code, e.headers)
        except Exception as e:
            log.exception("emulator: %s %s failed", request.method, request.path)
            resp = _json(status_body(500, f"emulator error: {e!r}"), 500)
        rec.status = resp.status
        if isinstance(resp, web.Response) and isinstance(resp.body, bytes):
            rec.size = len(resp.body)
        if not resp.prepared:  # a watch or port-forward has streamed already; its end is set there
            if one_way:
                await asyncio.sleep(one_way)  # the response travelling back
            rec.end = time.monotonic()
        return resp

    async def _dispatch(self, request: web.Request, fault: Fault | None) -> web.StreamResponse:
        path = request.path
        parts = [p for p in path.split("/") if p]
        if path == "/version":
            return _json(VERSION)
        if not parts or parts[0] in ("healthz", "readyz", "livez"):
            return web.Response(text="ok")
        head = parts[0]
        if head == "openapi":
            return self._openapi(request, parts)
        if head == "api":
            if len(parts) == 1:
                return _json({"kind": "APIVersions", "versions": ["v1"], "serverAddressByClientCIDRs": [
                    {"clientCIDR": "0.0.0.0/0", "serverAddress": f"{self.host}:{self.port}"}]})
            if len(parts) == 2:
                if parts[1] not in self.registry.groups.get("", []):
                    raise ApiError(404, "the server could not find the requested resource")
                return _json(self.registry.api_resource_list("", parts[1]))
            return await self._resource(request, "", parts[1], parts[2:], fault)
        if head == "apis":
            if len(parts) == 1:
                return _json(self.registry.api_group_list())
            group = parts[1]
            if group not in self.registry.groups or not group:
                raise ApiError(404, "the server could not find the requested resource")
            if len(parts) == 2:
                return _json(self.registry.api_group(group))
            if parts[2] not in self.registry.groups[group]:
                raise ApiError(404, "the server could not find the requested resource")
            if len(parts) == 3:
                return _json(self.registry.api_resource_list(group, parts[2]))
            return await self._resource(request, group, parts[2], parts[3:], fault)
        raise ApiError(404, "the server could not find the requested resource")

    def _openapi(self, request: web.Request, parts: list[str]) -> web.Response:
        if parts[1:] == ["v3"]:
            return _json(self.registry.openapi_v3_index())
        if len(parts) >= 4 and parts[1] == "v3":
            if parts[2] == "api" and len(parts) == 4:
                body = self.registry.openapi_v3_doc("", parts[3])
            elif parts[2] == "apis" and len(parts) == 5:
                body = self.registry.openapi_v3_doc(parts[3], parts[4])
            else:
                body = None
            if body is not None:
                # The hash in the URL names the content: clients may cache it forever.
                return web.Response(body=body, content_type="application/json",
                                    headers={"Cache-Control": "public, immutable"} if "hash" in request.query else None)
        raise ApiError(404, "the server could not find the requested resource")

    def _parse_target(self, group: str, version: str, rest: list[str]) -> _Target:
        ns: str | None = None
        if len(rest) >= 3 and rest[0] == "namespaces":
            cand = self.registry.by_gvr.get((group, version, rest[2]))
            if cand is not None and cand.namespaced:
                ns, rest = rest[1], rest[2:]
        info = self.registry.by_gvr.get((group, version, rest[0])) if rest else None
        if info is None or len(rest) > 3 or (info.namespaced and ns is None and len(rest) > 1):
            raise ApiError(404, "the server could not find the requested resource")
        return _Target(info, ns, rest[1] if len(rest) > 1 else None, rest[2] if len(rest) > 2 else None)

    def _check_denied(self, verb: str, info: ResourceInfo, ns: str | None, sub: str | None = None) -> None:
        resource = f"{info.plural}/{sub}" if sub else info.plural
        if self._is_denied(verb, resource, info.group, ns):
            scope = f' in the namespace "{ns}"' if ns else " at the cluster scope"
            raise ApiError(403, f'{info.group_resource} is forbidden: User "emulator" cannot {verb} resource '
                                f'"{info.plural}" in API group "{info.group}"{scope}', "Forbidden",
                           {"group": info.group, "kind": info.plural})

    def _is_denied(self, verb: str, resource: str, group: str, ns: str | None) -> bool:
        return any(d.verb in (verb, "*") and d.resource in (resource, "*") and d.group in (group, "*")
                   and (d.namespace is None or d.namespace == ns) for d in self._denials)

    async def _body(self, request: web.Request) -> Any:
        raw = await request.read()
        if "protobuf" in request.headers.get("Content-Type", ""):
            # Decoding Kubernetes protobuf needs the generated schemas; JSON clients are what we serve.
            raise ApiError(415, "the emulator accepts JSON and YAML bodies only, not protobuf (kubectl's typed "
                                "'create <kind>' commands send protobuf; use 'kubectl create -f' or apply)",
                           "UnsupportedMediaType")
        if not raw:
            raise ApiError(400, "the request body is empty", "BadRequest")
        try:
            return json.loads(raw)
        except ValueError:
            pass
        try:
            return yaml.load(raw, Loader=_YAML_LOADER)
        except yaml.YAMLError as e:
            raise ApiError(400, f"the body of the request could not be decoded: {e}", "BadRequest") from e

    async def _resource(self, request: web.Request, group: str, version: str, rest: list[str],
                        fault: Fault | None) -> web.StreamResponse:
        t = self._parse_target(group, version, rest)
        info, ns, name, sub = t.info, t.namespace, t.name, t.sub
        q = request.query
        method = request.method
        dry_run = q.get("dryRun") == "All"
        manager = q.get("fieldManager") or request.headers.get("User-Agent", "unknown").split("/")[0] or "unknown"

        if sub is not None and sub not in ("status", "finalize", "portforward", "log", "scale"):
            raise ApiError(404, "the server could not find the requested resource")
        if sub == "status" and not info.status:
            raise ApiError(404, "the server could not find the requested resource")

        if sub == "portforward":
            self._check_denied("create", info, ns, sub)
            return await self._port_forward(request, info, ns or "", name or "", fault)
        if sub == "log":
            self._check_denied("get", info, ns, sub)
            if self.store.get(info, ns, name or "") is None:
                raise ApiError(404, f'pods "{name}" not found', "NotFound")
            return web.Response(text="")

        if info.kind == "SelfSubjectAccessReview":
            if method != "POST" or name is not None:
                raise ApiError(405, "the server does not allow this method on the requested resource", "MethodNotAllowed")
            return await self._access_review(request, info)

        part = "status" if sub in ("status", "finalize") and sub == "status" else "main"
        if method == "GET":
            if name is None:
                watch = q.get("watch") in ("1", "true", "True")
                self._check_denied("watch" if watch else "list", info, ns)
                if watch:
                    return await self._watch(request, info, ns, fault)
                return self._list(request, info, ns)
            self._check_denied("get", info, ns, sub)
            obj = self.store.get(info, ns, name)
            if obj is None:
                raise _not_found(info, name)
            return _json(_with_version(obj, info.api_version))
        verb = {"POST": "create", "PUT": "update", "PATCH": "patch", "DELETE": "delete"}.get(method)
        if verb == "delete" and name is None:
            verb = "deletecollection"
        if verb is None or verb not in info.verbs or (verb == "create" and name is not None) or (
                verb in ("update", "patch") and name is None):
            raise ApiError(405, "the server does not allow this method on the requested resource", "MethodNotAllowed")
        self._check_denied(verb, info, ns, sub)
        ns_ = ns or ""
        if verb == "create":
            body = await self._body(request)
            obj = self.store.create(info, ns_, body, manager, dry_run=dry_run)
            return _json(_with_version(obj, info.api_version), 201)
        if verb == "update":
            body = await self._body(request)
            obj, _ = self.store.update(info, ns_, name or "", body, manager, part=part, dry_run=dry_run)
            return _json(_with_version(obj, info.api_version))
        if verb == "patch":
            return await self._patch(request, info, ns_, name or "", part, manager, dry_run)
        if verb == "delete":
            obj, _removed = self.store.delete(info, ns_, name or "", dry_run=dry_run)
            if info.kind in ("Pod", "Namespace") and not info.group:
                return _json(obj)
            return _json({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success",
                          "details": {"name": name, "group": info.group, "kind": info.plural,
                                      "uid": obj["metadata"].get("uid")}})
        # deletecollection
        items = self._select(request, info, ns)
        deleted = [self.store.delete(info, o["metadata"].get("namespace", ""), o["metadata"]["name"],
                                     dry_run=dry_run)[0] for o in items]
        return _json({"kind": f"{info.kind}List", "apiVersion": info.api_version,
                      "metadata": {"resourceVersion": str(self.store.rv)}, "items": deleted})

    async def _patch(self, request: web.Request, info: ResourceInfo, ns: str, name: str, part: str,
                     manager: str, dry_run: bool) -> web.Response:
        ctype = request.headers.get("Content-Type", "").split(";")[0].strip()
        body = await self._body(request)
        if ctype == "application/apply-patch+yaml":
            field_manager = request.query.get("fieldManager")
            if not field_manager:
                raise ApiError(400, "PATCH /apply requires a non-empty fieldManager query parameter", "BadRequest")
            force = request.query.get("force") in ("true", "1", "True")
            obj, created, _ = self.store.apply(info, ns, name, body, field_manager, force, part=part, dry_run=dry_run)
            return _json(_with_version(obj, info.api_version), 201 if created else 200)
        old = self.store.get(info, ns, name)
        if old is None:
            raise _not_found(info, name)
        try:
            if ctype == "application/merge-patch+json":
                new = merge_patch(old, body)
            elif ctype == "application/strategic-merge-patch+json":
                if info.crd is not None:
                    raise ApiError(415, "strategic merge patch is not supported for custom resources; use a merge "
                                        "patch or server-side apply", "UnsupportedMediaType")
                new = strategic_merge_patch(old, body)
            elif ctype == "application/json-patch+json":
                if not isinstance(body, list):
                    raise ApiError(400, "a JSON patch must be a list of operations", "BadRequest")
                new = json_patch(old, body)
            else:
                raise ApiError(415, f"the media type {ctype!r} is not supported for PATCH", "UnsupportedMediaType")
        except PatchError as e:
            raise ApiError(422, f"the patch could not be applied: {e}", "Invalid") from e
        obj, _ = self.store.update(info, ns, name, new, manager, part=part, dry_run=dry_run)
        return _json(_with_version(obj, info.api_version))

    def _selectors(self, request: web.Request, info: ResourceInfo) -> tuple[list[Any], list[Any]]:
        try:
            return (parse_label_selector(request.query.get("labelSelector")),
                    parse_field_selector(request.query.get("fieldSelector"), info))
        except SelectorError as e:
            raise ApiError(400, str(e), "BadRequest") from e

    def _select(self, request: web.Request, info: ResourceInfo, ns: str | None) -> list[Obj]:
        labels, fields = self._selectors(request, info)
        items = self.store.list(info, ns)
        if labels:
            items = [o for o in items if match_labels(labels, o["metadata"].get("labels"))]
        if fields:
            items = [o for o in items if match_fields(fields, o)]
        return items

    def _list(self, request: web.Request, info: ResourceInfo, ns: str | None) -> web.Response:
        items = self._select(request, info, ns)
        meta: Obj = {"resourceVersion": str(self.store.rv)}
        cont = request.query.get("continue")
        if cont:
            try:
                after = json.loads(base64.urlsafe_b64decode(cont.encode()))
            except ValueError as e:
                raise ApiError(400, "invalid continue token", "BadRequest") from e
            items = [o for o in items if [o["metadata"].get("namespace", ""), o["metadata"]["name"]] > after]
        limit = int(request.query.get("limit") or 0)
        if limit > 0 and len(items) > limit:
            last = items[limit - 1]["metadata"]
            items = items[:limit]
            meta["continue"] = base64.urlsafe_b64encode(
                json.dumps([last.get("namespace", ""), last["name"]]).encode()).decode()
        if _wants_partial_metadata(request.headers.get("Accept", "")):
            # apiserver pkg/endpoints/handlers/response.go asPartialObjectMetadataList (meta.k8s.io/v1,
            # read at kubernetes/kubernetes 001a2d0f):
            # each item is its whole ObjectMeta under kind PartialObjectMetadata; nothing else of it.
            partial = [{"kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1", "metadata": o["metadata"]}
                       for o in items]
            return _json({"kind": "PartialObjectMetadataList", "apiVersion": "meta.k8s.io/v1", "metadata": meta,
                          "items": partial})
        api_version = info.api_version
        items = [_with_version(o, api_version) for o in items]
        return _json({"kind": f"{info.kind}List", "apiVersion": api_version, "metadata": meta, "items": items})

    async def _watch(self, request: web.Request, info: ResourceInfo, ns: str | None,
                     fault: Fault | None) -> web.StreamResponse:
        labels, fields = self._selectors(request, info)
        w = Watcher(info.store_key, ns, labels, fields, info.api_version)
        rv_param = request.query.get("resourceVersion")
        initial: list[bytes] = []
        expired: bytes | None = None
        # Snapshot and registration happen with no await in between, so no event is lost or doubled.
        if rv_param in (None, "", "0"):
            for obj in self.store.list(info, ns):
                if w.matches(obj):
                    initial.append(_dumps({"type": "ADDED", "object": _with_version(obj, info.api_version)}) + b"\n")
        else:
            try:
                since = int(rv_param)
            except ValueError as e:
                raise ApiError(400, f"invalid resourceVersion {rv_param!r}", "BadRequest") from e
            hist = self.store.history
            if hist and hist[0].rv > since + 1:
                status = status_body(410, f"too old resource version: {since} ({hist[0].rv - 1})", "Expired")
                expired = _dumps({"type": "ERROR", "object": status}) + b"\n"
            else:
                for ev in hist:
                    if ev.rv > since and ev.key == w.key:
                        w.offer(ev)
        if expired is None:
            self.store.watchers.add(w)
        rec = CURRENT_REQUEST.get()
        loop = asyncio.get_running_loop()
        one_way = self.latency / 2
        # With a link, each event is stamped when the server emits it and written one way later; a
        # separate task stamps them so that waiting for one event's delay never delays the next one.
        events: asyncio.Queue[tuple[float, tuple[Any, str] | None]] = asyncio.Queue()

        async def stamp() -> None:
            while True:
                item = await w.queue.get()
                events.put_nowait((loop.time(), item))
                if item is None:
                    return

        stamper = asyncio.create_task(stamp()) if one_way else None
        resp = web.StreamResponse(status=200, headers={"Content-Type": "application/json",
                                                       "Cache-Control": "no-cache, private"})
        resp.enable_chunked_encoding()
        try:
            if one_way:
                await asyncio.sleep(one_way)  # the headers and the initial events travelling back
            await resp.prepare(request)
            rec.end = time.monotonic()
            if expired is not None:
                await resp.write(expired)
                await resp.write_eof()
                return resp
            timeout = float(request.query.get("timeoutSeconds") or 1800)
            deadline = loop.time() + timeout
            sent = 0
            pending = list(initial)
            while True:
                if pending:
                    await resp.write(pending.pop(0))
                else:
                    remaining = deadline - loop.time()
                    if remaining <= 0:
                        break
                    try:
                        if stamper is None:
                            item = await asyncio.wait_for(w.queue.get(), remaining)
                        else:
                            at, item = await asyncio.wait_for(events.get(), remaining)
                            if item is not None and at + one_way > loop.time():
                                await asyncio.sleep(at + one_way - loop.time())
                    except TimeoutError:
                        break
                    if item is None:
                        break
                    ev, type_ = item
                    await resp.write(ev.line(type_, info.api_version))
                rec.end = time.monotonic()
                sent += 1
                if fault is not None and fault.drop_watch and sent == 1:
                    # Cut the stream mid-response, as a dropped connection would.
                    if request.transport is not None:
                        request.transport.abort()
                    return resp
            await resp.write_eof()
        except (ConnectionError, asyncio.CancelledError):
            pass
        finally:
            self.store.watchers.discard(w)
            if stamper is not None:
                stamper.cancel()
        return resp

    async def _access_review(self, request: web.Request, info: ResourceInfo) -> web.Response:
        body = await self._body(request)
        spec = (body or {}).get("spec") or {}
        attrs = spec.get("resourceAttributes")
        allowed = True
        if attrs:
            resource = attrs.get("resource", "")
            if attrs.get("subresource"):
                resource = f"{resource}/{attrs['subresource']}"
            allowed = not self._is_denied(attrs.get("verb", ""), resource, attrs.get("group", ""),
                                          attrs.get("namespace") or None)
        status: Obj = {"allowed": allowed}
        if not allowed:
            status["denied"] = True
            status["reason"] = "denied by the emulator (emu.deny)"
        out = {"kind": "SelfSubjectAccessReview", "apiVersion": info.api_version,
               "metadata": {"creationTimestamp": None}, "spec": spec, "status": status}
        return _json(out, 201)

    # ---- port-forward -------------------------------------------------------------------

    async def _port_forward(self, request: web.Request, info: ResourceInfo, ns: str, name: str,
                            fault: Fault | None) -> web.StreamResponse:
        if request.method not in ("GET", "POST"):
            raise ApiError(405, "the server does not allow this method on the requested resource", "MethodNotAllowed")
        pod = self.store.get(info, ns, name)
        if pod is None:
            raise _not_found(info, name)
        if (pod.get("status") or {}).get("phase") != "Running":
            raise ApiError(404, f'pods "{name}" is not running (phase {(pod.get("status") or {}).get("phase")})',
                           "NotFound", {"name": name, "kind": "pods"})
        ports_raw = request.query.getall("ports", [])
        try:
            ports = [int(p) for raw in ports_raw for p in raw.split(",") if p]
        except ValueError as e:
            raise ApiError(400, f"invalid port in {ports_raw}", "BadRequest") from e
        if not ports:
            raise ApiError(400, "query parameter \"port\" is required", "BadRequest")
        if request.headers.get("Upgrade", "").lower() != "websocket":
            raise ApiError(400, "Upgrade request required", "BadRequest")
        offered = [p.strip() for p in request.headers.get("Sec-WebSocket-Protocol", "").split(",") if p.strip()]
        if PORT_FORWARD_PROTOCOL not in offered:
            raise ApiError(400, f"unable to upgrade connection: requested protocol(s) are not supported: {offered}; "
                                f"supports [{PORT_FORWARD_PROTOCOL}]", "BadRequest")
        ws = web.WebSocketResponse(protocols=(PORT_FORWARD_PROTOCOL,), max_msg_size=0, autoping=True)
        await ws.prepare(request)
        CURRENT_REQUEST.get().end = time.monotonic()  # the upgrade is answered; the stream itself is not timed
        self.port_forward_streams += 1
        self._sockets.add(ws)
        try:
            await self._relay(ws, request, ns, ports, fault)
        finally:
            self._sockets.discard(ws)
            if not ws.closed:
                await ws.close()
        return ws

    async def _relay(self, ws: web.WebSocketResponse, request: web.Request, ns: str, ports: list[int],
                     fault: Fault | None) -> None:
        # The kubelet's protocol: per port a data channel (2i) and an error channel (2i+1); each
        # channel first announces its port as two little-endian bytes.
        for i, port in enumerate(ports):
            for ch in (2 * i, 2 * i + 1):
                await ws.send_bytes(bytes([ch]) + port.to_bytes(2, "little"))
        writers: dict[int, asyncio.StreamWriter] = {}
        tasks: list[asyncio.Task[None]] = []
        frames = 0

        def count_frame() -> bool:
            nonlocal frames
            frames += 1
            if fault is not None and fault.drop_port_forward and frames == 1:
                if request.transport is not None:
                    request.transport.abort()  # no close frame: an abrupt drop
                return False
            return True

        async def pump(ch: int, reader: asyncio.StreamReader) -> None:
            try:
                while data := await reader.read(65536):
                    if ws.closed:
                        return
                    await ws.send_bytes(bytes([ch]) + data)
                    if not count_frame():
                        return
            except (ConnectionError, RuntimeError):
                pass
            if not ws.closed:
                await ws.close()  # target EOF ends the stream

        for i, port in enumerate(ports):
            route = self._routes.get((ns, port))
            if route is None:
                await ws.send_bytes(bytes([2 * i + 1]) + f"error forwarding port {port} to pod: no route to "
                                    f"port {port} in namespace {ns} (emulator: use emu.route_port)".encode())
                await ws.close()
                return
            try:
                reader, writer = await asyncio.open_connection(route.host, route.port)
            except OSError as e:
                await ws.send_bytes(bytes([2 * i + 1]) + f"error forwarding port {port}: {e}".encode())
                await ws.close()
                return
            writers[2 * i] = writer
            tasks.append(asyncio.create_task(pump(2 * i, reader)))
        try:
            async for msg in ws:
                if msg.type != WSMsgType.BINARY or not msg.data:
                    continue
                ch, payload = msg.data[0], msg.data[1:]
                writer = writers.get(ch)
                if writer is None or not payload:
                    continue
                writer.write(payload)
                await writer.drain()
                if not count_frame():
                    break
        except (ConnectionError, RuntimeError):
            pass
        finally:
            for writer in writers.values():
                writer.close()
            for task in tasks:
                task.cancel()


def _not_found(info: ResourceInfo, name: str) -> ApiError:
    return ApiError(404, f'{info.group_resource} "{name}" not found', "NotFound",
                    {"name": name, "group": info.group, "kind": info.plural})


def _node(i: int) -> Obj:
    t = now()
    name = f"node-{i}"
    return {
        "apiVersion": "v1", "kind": "Node",
        "metadata": {"name": name, "labels": {"kubernetes.io/hostname": name, "kubernetes.io/os": "linux",
                                              "kubernetes.io/arch": "amd64"}},
        "spec": {"podCIDR": f"10.244.{i}.0/24"},
        "status": {
            "addresses": [{"type": "InternalIP", "address": f"10.0.0.{i}"}, {"type": "Hostname", "address": name}],
            "capacity": {"cpu": "4", "memory": "16Gi", "pods": "110"},
            "allocatable": {"cpu": "4", "memory": "16Gi", "pods": "110"},
            "conditions": [{"type": "Ready", "status": "True", "reason": "KubeletReady",
                            "message": "kubelet is posting ready status", "lastHeartbeatTime": t,
                            "lastTransitionTime": t}],
            "nodeInfo": {"kubeletVersion": "v1.37.0", "architecture": "amd64", "operatingSystem": "linux"},
        },
    }
