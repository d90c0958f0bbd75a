"""The Kubernetes engine: a small, Pythonic face on the API for plain-dict objects.

Requests go through lightkube's kubeconfig handling and the same httpx2 client lightkube
uses, but seedbed addresses resources through discovery itself: the upstream bundles it applies
are full of kinds no Python package knows, and every call needs the same retries and the same
one-line errors. Objects stay plain dicts from end to end.
"""

from __future__ import annotations

import asyncio
import json
import random
from collections.abc import AsyncIterator, Callable, Iterable
from contextlib import AbstractAsyncContextManager, AsyncExitStack, suppress
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx2 as httpx
import msgspec

from .. import scrub, yamlutil
from ..errors import ClusterError, WaitTimeout
from .connect import Deadlines, ExecAuth, http_client, load_single
from .types import (
    AlreadyExists,
    ApplyResult,
    Conflict,
    Forbidden,
    Invalid,
    NotFound,
    Obj,
    Stats,
    Target,
    WaitProgress,
    WatchExpired,
    ref,
)

if TYPE_CHECKING:
    from ..config import ClusterConfig

FIELD_MANAGER = "seedbed"
RETRY_STATUSES = {429, 500, 502, 503, 504}
# Up to 32 requests in flight, on as many kept-alive connections (kube/connect.py): on a 20 ms link
# a bundle of ~150 objects is then a handful of round trips, not twenty.
APPLY_CONCURRENCY = 32
MAX_WATCH_LINE = 16 * 1024 * 1024  # one watch event; the API server's own request limit is 3 MiB


class Resource(msgspec.Struct, frozen=True):
    """Where a kind lives in the API."""

    api_version: str
    kind: str
    plural: str
    namespaced: bool
    has_status: bool = False

    def path(self, namespace: str | None = None, name: str | None = None, sub: str | None = None) -> str:
        prefix = "/api/v1" if self.api_version == "v1" else f"/apis/{self.api_version}"
        parts = [prefix]
        if self.namespaced and namespace:
            parts.append(f"namespaces/{namespace}")
        parts.append(self.plural)
        if name:
            parts.append(name)
        if sub:
            parts.append(sub)
        return "/".join(parts)


# Secrets and ConfigMaps are where seedbed keeps and backs up what it needs (its state, the Git
# server's credentials, the archive's Secrets). Both are core v1 kinds whose resource name and scope
# every API server has served the same way since Kubernetes 1.0, so they are addressed without a
# discovery request: on a slow link a backup or a re-run then reads them in its first round trip.
# Any other kind, and these again after forget("v1"), goes through discovery.
_CORE_V1 = (("Secret", "secrets"), ("ConfigMap", "configmaps"))
# client-go's metadata client's Accept for a LIST (client-go/metadata/metadata.go, read at
# kubernetes/kubernetes 04791b49) without its protobuf first choice: seedbed reads JSON only.
_PARTIAL_METADATA = "application/json;as=PartialObjectMetadataList;g=meta.k8s.io;v=v1, application/json"

# Reads (GET, LIST) of cert-manager's kinds skip discovery as well: a backup's first round trip
# then carries them. Their resource names and scopes are fixed by cert-manager's CRDs on every
# cluster that serves cert-manager.io/v1 (cert-manager v1.21.1, deploy/crds/cert-manager.io_*.yaml:
# certificates, certificaterequests and issuers Namespaced, clusterissuers Cluster), and on a
# cluster that does not, the read's 404 means what discovery's would: nothing there. Writes still
# go through discovery, so that a missing CRD is named as one (a POST's 404 would read as a
# missing namespace).
_KNOWN_FOR_READS = {
    ("cert-manager.io/v1", kind): Resource("cert-manager.io/v1", kind, plural, namespaced=namespaced)
    for kind, plural, namespaced in (("Certificate", "certificates", True),
                                     ("CertificateRequest", "certificaterequests", True),
                                     ("Issuer", "issuers", True), ("ClusterIssuer", "clusterissuers", False))
}


class Kube:
    """An async connection to one cluster. Use ``async with await Kube.connect(...) as kube``."""

    def __init__(self, http: httpx.AsyncClient, target: Target, *, retries: int = 6,
                 backoff: float = 0.2, deadlines: Deadlines | None = None) -> None:
        self.http = http
        self.target = target
        self.retries = retries
        self.backoff = backoff
        self.deadlines = deadlines or Deadlines()
        self.stats = Stats()
        # Where long waits report progress unless the caller passes on_wait (the CLI sets its display).
        self.on_wait: WaitProgress | None = None
        self._resources: dict[tuple[str, str], Resource] = {
            ("v1", kind): Resource("v1", kind, plural, namespaced=True) for kind, plural in _CORE_V1}
        # Group-versions read this run, and one lock per group-version, so that different ones are
        # discovered concurrently. A 404 is not remembered: a CRD applied by someone else (Flux
        # installing cert-manager) makes its group appear mid-run, and nothing would forget() it.
        self._discovered: set[str] = set()
        self._discovery_locks: dict[str, asyncio.Lock] = {}
        self._discoveries: dict[str, int] = {}  # discovery requests answered, per group-version

    @classmethod
    async def connect(cls, cluster: ClusterConfig, *, base_dir: Path | None = None,
                      kubeconfig: str | None = None, context: str | None = None,
                      deadlines: Deadlines | None = None) -> Kube:
        # None means "not given"; an empty string was given, and is refused by load_single.
        loaded = load_single(kubeconfig if kubeconfig is not None else cluster.kubeconfig,
                             context if context is not None else cluster.context, base_dir or Path.cwd())
        deadlines = deadlines or Deadlines()
        return cls(http_client(loaded, deadlines),
                   Target(loaded.single.cluster.server, loaded.single.context_name, loaded.source),
                   deadlines=deadlines)

    async def __aenter__(self) -> Kube:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        await self.http.aclose()

    # ------------------------------------------------------------------ transport

    async def authenticate(self) -> None:
        """Run the exec credential plugin now if one is due, under its own deadline, not a request's."""
        auth = self.http.auth
        if isinstance(auth, ExecAuth):
            await auth.ensure()

    async def request(self, method: str, path: str, *, params: dict[str, Any] | None = None,
                      body: Any = None, content_type: str = "application/json",
                      retry_conflicts: bool = False, accept: str = "application/json") -> httpx.Response:
        """One API call with retries on 429, 5xx, dropped connections (and conflicts if asked).

        Returns the response for 2xx (whose body is then a JSON object) and 404; raises a
        ClusterError for everything else. Each attempt has an overall deadline, connect to last byte.
        """
        content = None
        headers = {"Accept": accept}
        if body is not None:
            content = body if isinstance(body, bytes) else json.dumps(body).encode()
            headers["Content-Type"] = content_type
        write = method not in ("GET", "HEAD")
        attempt = 0
        await self.authenticate()
        while True:
            self.stats.requests += 1
            try:
                # Connecting (and the TLS handshake) has its own budget, then the answer has its own.
                async with asyncio.timeout(self.deadlines.connect + self.deadlines.request):
                    resp = await self.http.request(method, path, params=params, content=content, headers=headers)
            except (TimeoutError, httpx.TimeoutException) as e:
                # A server that accepts and never answers (or drips bytes) will not answer a retry
                # either; nor will a silent TLS handshake: report it now, not after the backoff.
                raise self._timed_out(e, method, path) from None
            except httpx.TransportError as e:
                # A refused connection or a failed TLS handshake is rarely fixed by waiting: give up
                # after one quick retry, so that a wrong or stopped cluster is reported at once.
                # Dropped connections get the full backoff.
                fatal = isinstance(e, (httpx.ConnectError, httpx.UnsupportedProtocol, httpx.ProxyError)) \
                    and attempt >= 1
                if attempt >= self.retries or fatal:
                    raise self._unreachable(e) from None
                await self._sleep(attempt, None)
                attempt += 1
                self.stats.retries += 1
                continue
            status = resp.status_code
            retry = status in RETRY_STATUSES or (retry_conflicts and status == 409
                                                  and _reason(resp) == "Conflict")
            if retry and attempt < self.retries:
                await self._sleep(attempt, resp.headers.get("Retry-After"))
                attempt += 1
                self.stats.retries += 1
                continue
            if write and status < 300:
                self.stats.writes += 1
            if status < 300:
                self._json(resp, method, path)  # refuse an HTML page or a list where an object belongs
                return resp
            if status == 404:
                return resp
            raise self._error(resp, method, path)

    def _json(self, resp: httpx.Response, method: str, path: str) -> Obj:
        """The body of a successful answer: always a JSON object in the Kubernetes API."""
        cached = resp.extensions.get("seedbed.json")
        if cached is not None:
            return cached
        what = f"the API server's answer to {method} {path}"
        ctype = resp.headers.get("content-type", "").split(";")[0].strip().lower()
        fix = (f"check that {self.target.server} (context {self.target.context!r}) is the Kubernetes API server "
               "and not a web page, proxy or load balancer in front of something else")
        if ctype and not ctype.endswith("json"):
            preview = scrub.scrub(resp.text[:80]).replace("\n", " ").strip()
            raise ClusterError(f"{what} is {ctype}, not JSON: {preview!r}", fix=fix)
        data = yamlutil.safe_json(resp.content, what=what, error=ClusterError)
        if not isinstance(data, dict):
            raise ClusterError(f"{what} is a JSON {type(data).__name__}, not an object", fix=fix)
        resp.extensions = {**resp.extensions, "seedbed.json": data}
        return data

    async def _sleep(self, attempt: int, retry_after: str | None) -> None:
        delay = self.backoff * (2 ** attempt) * (0.5 + random.random())
        if retry_after:
            with suppress(ValueError):
                delay = max(delay, min(float(retry_after), 30.0))
        await asyncio.sleep(min(delay, 10.0))

    def _unreachable(self, e: Exception) -> ClusterError:
        detail = scrub.scrub(str(e) or type(e).__name__)
        if "CERTIFICATE_VERIFY_FAILED" in detail or "certificate verify failed" in detail:
            return ClusterError(
                f"TLS verification of {self.target.server} failed: {detail}",
                fix=f"the CA in {self.target.source} (context {self.target.context!r}) does not match the "
                    "server (or set clusters[].cluster.tls-server-name to the name in its certificate); "
                    "re-export the kubeconfig")
        return ClusterError(
            f"cannot reach the Kubernetes API at {self.target.server} (context {self.target.context!r}): {detail}",
            fix="check that the cluster is running and that the kubeconfig context points at it "
                f"(kubectl --context {self.target.context} get nodes)")

    def _timed_out(self, e: Exception, method: str, path: str) -> ClusterError:
        if isinstance(e, httpx.ConnectTimeout):
            what = f"did not complete the connection and TLS handshake within {self.deadlines.connect:g} s"
        else:
            what = f"did not answer {method} {path} within {self.deadlines.request:g} s"
        return ClusterError(
            f"the Kubernetes API at {self.target.server} (context {self.target.context!r}) {what}",
            fix="check that the kubeconfig's server address is the API server and that it is healthy "
                f"(kubectl --context {self.target.context} get --raw /readyz); a firewall or a load balancer "
                "without a backend accepts connections and never answers")

    def _error(self, resp: httpx.Response, method: str, path: str) -> ClusterError:
        status = resp.status_code
        try:
            body = resp.json()
        except ValueError:
            body = None
        if not isinstance(body, dict):
            body = {}
        message = body.get("message")
        if not isinstance(message, str) or not message:
            message = resp.text[:200] or resp.reason_phrase
        # Server text may repeat what we sent (a 403 body quoting the token): scrub it.
        message = scrub.scrub(" ".join(message.split()))
        reason = body.get("reason", "")
        reason = scrub.scrub(reason) if isinstance(reason, str) else ""
        if status == 401:
            return ClusterError(
                f"the API server at {self.target.server} rejected the credentials of context "
                f"{self.target.context!r} (401 Unauthorized): they are expired, revoked or wrong",
                fix="refresh your kubeconfig (log in again, or re-export it from the cluster)")
        if status == 403:
            return Forbidden(f"permission denied: {message}",
                             fix="use a kubeconfig context with cluster-admin rights for the bootstrap")
        if status == 409 and reason == "AlreadyExists":
            return AlreadyExists(message)
        if status == 409:
            return Conflict(f"conflict on {method} {path}: {message}",
                            fix="another client changed the object; re-run seedbed")
        if status == 422:
            return Invalid(f"the API server refused an object: {message}",
                           fix="check the manifest named above")
        return ClusterError(f"{method} {path} failed with {status} {reason}: {message}",
                            fix="re-run; if it persists, check the API server's health")

    # ------------------------------------------------------------------ discovery

    async def resource(self, api_version: str, kind: str) -> Resource:
        key = (api_version, kind)
        found = self._resources.get(key)
        if found is None:
            # A kind missing from a group-version read earlier is looked up again: a CRD may have
            # added it since. One request however many callers ask at once: a discovery that
            # finished while this caller waited for the lock is its answer too (a 404 included).
            asked = self._discoveries.get(api_version, 0)
            async with self._discovery_lock(api_version):
                if key not in self._resources and self._discoveries.get(api_version, 0) == asked:
                    await self._discover(api_version)
            found = self._resources.get(key)
        if found is None:
            raise NotFound(
                f"the cluster does not serve {kind} in {api_version}",
                fix="install the CRD that defines it first (or check the apiVersion)")
        return found

    async def discover(self, *api_versions: str) -> None:
        """Read these group-versions all at once (the ones not read yet this run): a bundle's or a
        plan's apiVersions then cost one round trip together, not one each."""

        async def once(api_version: str) -> None:
            async with self._discovery_lock(api_version):
                if api_version not in self._discovered:
                    await self._discover(api_version)

        await asyncio.gather(*(once(v) for v in dict.fromkeys(api_versions) if v not in self._discovered))

    def _discovery_lock(self, api_version: str) -> asyncio.Lock:
        return self._discovery_locks.setdefault(api_version, asyncio.Lock())

    async def _discover(self, api_version: str) -> None:
        path = "/api/v1" if api_version == "v1" else f"/apis/{api_version}"
        resp = await self.request("GET", path)
        self._discoveries[api_version] = self._discoveries.get(api_version, 0) + 1
        if resp.status_code == 404:
            return
        items = self._json(resp, "GET", path).get("resources", [])
        fix = f"the API server (or an aggregated API behind {path}) serves broken discovery; check its health"
        if not isinstance(items, list):
            raise ClusterError(f"discovery at {path}: `resources` is not a list", fix=fix)
        for r in items:
            if not isinstance(r, dict) or not isinstance(r.get("name"), str) or not r["name"]:
                raise ClusterError(f"discovery at {path}: an entry has no name", fix=fix)
        subs = {r["name"] for r in items if "/" in r["name"]}
        for r in items:
            if "/" in r["name"]:
                continue
            if not isinstance(r.get("kind"), str) or not r["kind"]:
                raise ClusterError(f"discovery at {path}: resource {r['name'][:100]!r} has no kind", fix=fix)
            res = Resource(api_version, r["kind"], r["name"], bool(r.get("namespaced")),
                           f"{r['name']}/status" in subs)
            self._resources[(api_version, r["kind"])] = res
        self._discovered.add(api_version)

    async def _for_read(self, api_version: str, kind: str) -> Resource | None:
        """Where to read a kind: the discovered resource, else a well-known one, else discovery's
        answer; None when the cluster does not serve it."""
        found = self._resources.get((api_version, kind)) or _KNOWN_FOR_READS.get((api_version, kind))
        if found is not None:
            return found
        try:
            return await self.resource(api_version, kind)
        except NotFound:
            return None

    def forget(self, api_version: str) -> None:
        """Drop cached discovery for a group version (after a CRD for it was created)."""
        self._discovered.discard(api_version)
        for key in [k for k in self._resources if k[0] == api_version]:
            del self._resources[key]

    async def serves(self, api_version: str, kind: str) -> bool:
        try:
            await self.resource(api_version, kind)
            return True
        except NotFound:
            return False

    # ------------------------------------------------------------------ CRUD

    async def get(self, api_version: str, kind: str, name: str, namespace: str | None = None) -> Obj | None:
        """The object, or None when it (or its kind) does not exist."""
        res = await self._for_read(api_version, kind)
        if res is None:
            return None
        path = res.path(namespace, name)
        resp = await self.request("GET", path)
        return None if resp.status_code == 404 else self._json(resp, "GET", path)

    async def list(self, api_version: str, kind: str, namespace: str | None = None, *,
                   label_selector: str | None = None, field_selector: str | None = None) -> list[Obj]:
        """Every matching object (empty when the kind is not served), following pagination."""
        items, _ = await self.list_with_version(api_version, kind, namespace, label_selector=label_selector,
                                                field_selector=field_selector)
        return items

    async def list_with_version(self, api_version: str, kind: str, namespace: str | None = None, *,
                                label_selector: str | None = None,
                                field_selector: str | None = None) -> tuple[list[Obj], str]:
        return await self._list_pages(api_version, kind, namespace, label_selector=label_selector,
                                      field_selector=field_selector)

    async def list_metadata(self, api_version: str, kind: str, namespace: str | None = None) -> list[Obj]:
        """Every object with its ``metadata`` only (kind PartialObjectMetadata): for a caller that needs
        names (which Secrets exist), the API server leaves the values out of its answer, as client-go's
        metadata client asks it to (staging/src/k8s.io/client-go/metadata/metadata.go ``List``;
        apiserver pkg/endpoints/handlers/response.go ``asPartialObjectMetadataList``). A server that
        cannot answer so sends the whole objects, the next type in the Accept list."""
        items, _ = await self._list_pages(api_version, kind, namespace, accept=_PARTIAL_METADATA)
        return items

    async def _list_pages(self, api_version: str, kind: str, namespace: str | None, *,
                          label_selector: str | None = None, field_selector: str | None = None,
                          accept: str = "application/json") -> tuple[list[Obj], str]:
        res = await self._for_read(api_version, kind)
        if res is None:
            return [], "0"
        params: dict[str, Any] = {"limit": 500}
        if label_selector:
            params["labelSelector"] = label_selector
        if field_selector:
            params["fieldSelector"] = field_selector
        items: list[Obj] = []
        path = res.path(namespace)
        while True:
            resp = await self.request("GET", path, params=params, accept=accept)
            if resp.status_code == 404:
                return [], "0"
            data = self._json(resp, "GET", path)
            page, meta = data.get("items") or [], data.get("metadata") or {}
            if not isinstance(page, list) or not isinstance(meta, dict) \
                    or not all(isinstance(i, dict) and isinstance(i.get("metadata"), dict)
                               and isinstance(i["metadata"].get("name"), str) for i in page):
                raise ClusterError(f"the API server's answer to GET {path} is not a {kind} list",
                                   fix="check the API server's health (or the aggregated API serving "
                                       f"{api_version})")
            for item in page:
                # List items carry no apiVersion/kind; restore them so objects are self-describing.
                item.setdefault("apiVersion", api_version)
                item.setdefault("kind", kind)
                items.append(item)
            cont = meta.get("continue")
            if not cont or not isinstance(cont, str):
                return items, str(meta.get("resourceVersion") or "0")
            params["continue"] = cont

    async def create(self, obj: Obj) -> Obj:
        res = await self.resource(obj["apiVersion"], obj["kind"])
        ns = (obj.get("metadata") or {}).get("namespace")
        resp = await self.request("POST", res.path(ns), body=obj)
        if resp.status_code == 404:
            raise NotFound(f"cannot create {ref(obj)}: namespace {ns!r} does not exist",
                           fix="create the namespace first")
        return self._json(resp, "POST", res.path(ns))

    async def delete(self, api_version: str, kind: str, name: str, namespace: str | None = None, *,
                     propagation: str | None = None) -> bool:
        """Delete; False when it was already gone. ``propagation``: the API's propagationPolicy
        ("Foreground": the object stays until its dependents, e.g. a Deployment's pods, are gone)."""
        try:
            res = await self.resource(api_version, kind)
        except NotFound:
            return False
        params = {"propagationPolicy": propagation} if propagation else None
        resp = await self.request("DELETE", res.path(namespace, name), params=params)
        return resp.status_code != 404

    async def patch(self, api_version: str, kind: str, name: str, patch: Any, namespace: str | None = None,
                    *, patch_type: str = "merge", subresource: str | None = None) -> Obj:
        res = await self.resource(api_version, kind)
        ctype = {"merge": "application/merge-patch+json", "json": "application/json-patch+json",
                 "strategic": "application/strategic-merge-patch+json"}[patch_type]
        path = res.path(namespace, name, subresource)
        resp = await self.request("PATCH", path, body=patch, content_type=ctype, retry_conflicts=True)
        if resp.status_code == 404:
            raise NotFound(f"{kind}/{name} not found")
        return self._json(resp, "PATCH", path)

    async def apply_one(self, obj: Obj, *, force: bool = True, subresource: str | None = None,
                        field_manager: str = FIELD_MANAGER) -> tuple[Obj, bool]:
        """Server-side apply one object as ``field_manager``; returns (object, created)."""
        res = await self.resource(obj["apiVersion"], obj["kind"])
        md = obj.get("metadata") or {}
        ns = md.get("namespace") if res.namespaced else None
        if res.namespaced and not ns:
            raise Invalid(f"{ref(obj)} is namespaced but has no metadata.namespace",
                          fix="set metadata.namespace in the manifest")
        params = {"fieldManager": field_manager, "force": "true" if force else "false"}
        path = res.path(ns, md["name"], subresource)
        resp = await self.request("PATCH", path, params=params, body=obj,
                                  content_type="application/apply-patch+yaml", retry_conflicts=True)
        if resp.status_code == 404:
            raise NotFound(f"cannot apply {ref(obj)}: namespace {ns!r} does not exist",
                           fix="create the namespace first (seedbed applies Namespaces first in a bundle)")
        return self._json(resp, "PATCH", path), resp.status_code == 201

    async def set_configmap_data(self, namespace: str, name: str, data: dict[str, str]) -> None:
        """Set some keys of a ConfigMap, creating it if needed, leaving its other keys alone.

        A merge patch rather than server-side apply: with apply, keys this field manager set
        earlier but omits now would be removed.
        """
        try:
            await self.patch("v1", "ConfigMap", name, {"data": data}, namespace=namespace)
        except NotFound:
            try:
                await self.create({"apiVersion": "v1", "kind": "ConfigMap",
                                   "metadata": {"name": name, "namespace": namespace,
                                                "labels": {"app.kubernetes.io/managed-by": FIELD_MANAGER}},
                                   "data": data})
            except AlreadyExists:  # created by a concurrent run in between: patch it after all
                await self.patch("v1", "ConfigMap", name, {"data": data}, namespace=namespace)

    async def apply(self, objs: Iterable[Obj], *, force: bool = True, on_progress: Callable[[int, int], None] | None = None,
                    concurrency: int = APPLY_CONCURRENCY, crd_timeout: float = 120.0,
                    field_manager: str = FIELD_MANAGER) -> ApplyResult:
        """Apply a bundle: Namespaces and CRDs first, wait for the CRDs, then the rest concurrently.

        ``field_manager``: seedbed's own by default; objects Flux will own are applied under the
        manager kustomize-controller takes over (render/helmrelease.py HANDOVER_FIELD_MANAGER).

        Webhook configurations go last: applied earlier, they would route the rest of the bundle's
        objects through a webhook whose Pods are not running yet.
        """
        from .apply import apply_bundle

        return await apply_bundle(self, list(objs), force=force, on_progress=on_progress,
                                  concurrency=concurrency, crd_timeout=crd_timeout, field_manager=field_manager)

    # ------------------------------------------------------------------ watch & wait

    async def watch(self, api_version: str, kind: str, namespace: str | None = None, *,
                    name: str | None = None, label_selector: str | None = None,
                    resource_version: str | None = None, timeout: float = 60,
                    on_retry: Callable[[str], None] | None = None) -> AsyncIterator[tuple[str, Obj]]:
        """Events ``(type, object)`` from ``resource_version`` on, for at most ``timeout`` seconds.

        A watch has no overall deadline (the caller's wait is its deadline), but the answer's headers
        must come within the request deadline, and a watch that sends nothing for
        ``deadlines.watch_idle`` seconds past the server's own ``timeoutSeconds`` is dropped. Opening
        it is retried on 429 and 5xx with the backoff of every request (``on_retry`` hears why), as
        client-go's reflector re-sends a refused watch after a backoff (client-go
        tools/cache/reflector.go, ListAndWatch: ``apierrors.IsTooManyRequests`` -> backoff, continue).
        """
        res = await self.resource(api_version, kind)
        params: dict[str, Any] = {"watch": "true", "timeoutSeconds": max(1, int(timeout)),
                                  "allowWatchBookmarks": "false"}
        if name:
            params["fieldSelector"] = f"metadata.name={name}"
        if label_selector:
            params["labelSelector"] = label_selector
        if resource_version:
            params["resourceVersion"] = resource_version
        path = res.path(namespace)
        await self.authenticate()
        async with AsyncExitStack() as stack:
            attempt = 0
            while True:
                self.stats.requests += 1
                try:
                    async with asyncio.timeout(self.deadlines.request):
                        resp = await stack.enter_async_context(self.http.stream(
                            "GET", path, params=params,
                            timeout=httpx.Timeout(self.deadlines.request, connect=self.deadlines.connect,
                                                  read=timeout + self.deadlines.watch_idle)))
                        if resp.status_code >= 300:
                            await resp.aread()
                except (TimeoutError, httpx.TimeoutException) as e:
                    raise self._timed_out(e, "GET", path) from None
                if resp.status_code not in RETRY_STATUSES or attempt >= self.retries:
                    break
                # Throttled (API priority and fairness answers 429) or a proxy's hiccup: as
                # transient for a watch as for any request.
                if on_retry is not None:
                    on_retry(f"the API server refused the watch ({scrub.scrub(str(self._error(resp, 'GET', path)))})"
                             "; trying again")
                await resp.aclose()  # its connection back to the pool before the next try
                await self._sleep(attempt, resp.headers.get("Retry-After"))
                attempt += 1
                self.stats.retries += 1
            if resp.status_code == 410:
                raise WatchExpired()
            if resp.status_code >= 300:
                raise self._error(resp, "GET", path)
            buf = bytearray()
            async for chunk in resp.aiter_bytes():
                buf += chunk
                while (end := buf.find(b"\n")) >= 0:
                    line = bytes(buf[:end])
                    del buf[:end + 1]
                    if line.strip():
                        event = self._event(line, path)
                        if event is not None:
                            yield event
                if len(buf) > MAX_WATCH_LINE:
                    raise ClusterError(f"the watch of {path} sent more than {MAX_WATCH_LINE >> 20} MiB without "
                                       "ending an event", fix="check the API server's health, then re-run")

    def _event(self, line: bytes, path: str) -> tuple[str, Obj] | None:
        event = yamlutil.safe_json(line, what=f"an event of the watch of {path}", error=ClusterError)
        etype = event.get("type") if isinstance(event, dict) else None
        obj = event.get("object") if isinstance(event, dict) else None
        if etype not in ("ADDED", "MODIFIED", "DELETED", "ERROR", "BOOKMARK") or not isinstance(obj, dict):
            raise ClusterError(f"the watch of {path} sent something that is not a watch event",
                               fix="check that the kubeconfig's server is the Kubernetes API server")
        if etype == "ERROR":
            if obj.get("code") == 410:
                raise WatchExpired()
            return None
        if etype == "BOOKMARK":
            return None
        return etype, obj

    async def wait_for(self, api_version: str, kind: str, name: str, namespace: str | None,
                       check: Callable[[Obj | None], bool], *, timeout: float, what: str,
                       describe: Callable[[Obj | None], str] | None = None,
                       on_wait: WaitProgress | None = None) -> Obj | None:
        """Wait until ``check(obj)`` holds, using a watch; survives dropped watches by re-listing.

        ``on_wait`` (else :attr:`on_wait`) hears what is awaited and the last state or error seen.
        """
        from .wait import wait_for

        return await wait_for(self, api_version, kind, name, namespace, check, timeout=timeout, what=what,
                              describe=describe, on_wait=on_wait or self.on_wait)

    async def wait_until_none(self, api_version: str, kind: str, namespace: str | None, label_selector: str, *,
                              timeout: float, what: str, fix: str) -> None:
        """Wait, with a watch, until nothing matches ``label_selector``; WaitTimeout carries ``fix``."""
        from .wait import wait_until_none

        await wait_until_none(self, api_version, kind, namespace, label_selector, timeout=timeout, what=what,
                              fix=fix, on_wait=self.on_wait)

    async def wait_rollout(self, kind: str, name: str, namespace: str, *, timeout: float = 300,
                           on_wait: WaitProgress | None = None) -> Obj:
        from .wait import describe_workload, rollout_complete

        obj = await self.wait_for("apps/v1", kind, name, namespace, rollout_complete, timeout=timeout,
                                  what=f"the rollout of {kind} {namespace}/{name}", describe=describe_workload,
                                  on_wait=on_wait)
        assert obj is not None
        return obj

    async def wait_condition(self, api_version: str, kind: str, name: str, namespace: str | None = None, *,
                             condition: str = "Ready", status: str = "True", timeout: float = 300,
                             check: Callable[[Obj], bool] | None = None,
                             on_wait: WaitProgress | None = None) -> Obj:
        from .wait import condition_is, describe_conditions

        def ok(obj: Obj | None) -> bool:
            return obj is not None and condition_is(obj, condition, status) and (check is None or check(obj))

        where = f"{namespace}/{name}" if namespace else name
        obj = await self.wait_for(api_version, kind, name, namespace, ok, timeout=timeout,
                                  what=f"{kind} {where} to be {condition}", describe=describe_conditions,
                                  on_wait=on_wait)
        assert obj is not None
        return obj

    async def wait_exists(self, api_version: str, kind: str, name: str, namespace: str | None = None, *,
                          timeout: float = 300, on_wait: WaitProgress | None = None) -> Obj:
        where = f"{namespace}/{name}" if namespace else name
        obj = await self.wait_for(api_version, kind, name, namespace, lambda o: o is not None, timeout=timeout,
                                  what=f"{kind} {where} to exist", describe=lambda o: "it does not exist yet",
                                  on_wait=on_wait)
        assert obj is not None
        return obj

    # ------------------------------------------------------------------ port-forward

    def port_forward(self, namespace: str, *, port: int, service: str | None = None,
                     pod: str | None = None) -> AbstractAsyncContextManager[int]:
        """A loopback port that reaches ``port`` of a Service (or Pod), like `kubectl port-forward`."""
        from .portforward import port_forward

        return port_forward(self, namespace, port=port, service=service, pod=pod)


def _reason(resp: httpx.Response) -> str:
    try:
        body = resp.json()
    except ValueError:
        return ""
    reason = body.get("reason") if isinstance(body, dict) else None
    return reason if isinstance(reason, str) else ""


__all__ = ["AlreadyExists", "ApplyResult", "Conflict", "Forbidden", "Invalid", "Kube", "NotFound", "Resource",
           "WaitTimeout", "ref"]
