"""The Kubernetes API emulator, over real HTTP on loopback."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable
from typing import Any

import aiohttp
import pytest

from seedbed_lab.emulator import Emulator

APPLY = {"Content-Type": "application/apply-patch+yaml"}
Obj = dict[str, Any]


@pytest.fixture
async def api(emulator: Emulator) -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(base_url=emulator.url) as session:
        yield session


async def call(api: aiohttp.ClientSession, method: str, path: str, body: Any = None,
               headers: dict[str, str] | None = None, **params: str) -> tuple[int, Obj]:
    data = None if body is None else json.dumps(body)
    hdrs = {"Content-Type": "application/json", **(headers or {})}
    async with api.request(method, path, data=data, headers=hdrs, params=params) as r:
        return r.status, await r.json(content_type=None)


async def eventually(check: Callable[[], Any], what: str) -> Any:
    """Poll until check() is truthy; the bound only guards against a hang, it is not asserted on."""
    for _ in range(2000):
        value = check()
        if value:
            return value
        await asyncio.sleep(0.005)
    raise AssertionError(f"never happened: {what}")


async def watch_events(api: aiohttp.ClientSession, path: str, count: int, **params: str) -> list[Obj]:
    events: list[Obj] = []
    async with api.get(path, params={"watch": "1", **params}) as r:
        assert r.status == 200
        async for line in r.content:
            if line.strip():
                events.append(json.loads(line))
            if len(events) == count:
                break
    return events


def cm(name: str, ns: str = "default", **data: str) -> Obj:
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name, "namespace": ns}, "data": data}


def deployment(name: str, ns: str = "default", replicas: int = 2, image: str = "nginx:1") -> Obj:
    return {
        "apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": name, "namespace": ns},
        "spec": {"replicas": replicas, "selector": {"matchLabels": {"app": name}},
                 "template": {"metadata": {"labels": {"app": name}},
                              "spec": {"containers": [{"name": "main", "image": image}]}}},
    }


CRD = {
    "apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
    "metadata": {"name": "widgets.example.com"},
    "spec": {
        "group": "example.com", "scope": "Namespaced",
        "names": {"plural": "widgets", "singular": "widget", "kind": "Widget", "shortNames": ["wd"]},
        "versions": [{"name": "v1", "served": True, "storage": True, "subresources": {"status": {}},
                      "schema": {"openAPIV3Schema": {"type": "object", "x-kubernetes-preserve-unknown-fields": True}}}],
    },
}


# ---- discovery ------------------------------------------------------------------------------


async def test_discovery(api: aiohttp.ClientSession) -> None:
    status, version = await call(api, "GET", "/version")
    assert (status, version["gitVersion"], version["major"], version["minor"]) == (200, "v1.37.0", "1", "37")
    _, core = await call(api, "GET", "/api")
    assert core["kind"] == "APIVersions" and core["versions"] == ["v1"]
    _, groups = await call(api, "GET", "/apis")
    names = {g["name"] for g in groups["groups"]}
    assert {"apps", "batch", "rbac.authorization.k8s.io", "apiextensions.k8s.io", "storage.k8s.io",
            "authorization.k8s.io", "coordination.k8s.io", "apiregistration.k8s.io"} <= names
    _, v1 = await call(api, "GET", "/api/v1")
    by_name = {r["name"]: r for r in v1["resources"]}
    assert by_name["pods/portforward"]["verbs"] == ["create", "get"]
    assert by_name["services"]["shortNames"] == ["svc"] and by_name["namespaces"]["namespaced"] is False
    _, apps = await call(api, "GET", "/apis/apps/v1")
    by_name = {r["name"]: r for r in apps["resources"]}
    assert by_name["deployments"]["kind"] == "Deployment" and by_name["deployments"]["singularName"] == "deployment"
    assert "deployments/status" in by_name and "watch" in by_name["deployments"]["verbs"]
    _, authz = await call(api, "GET", "/apis/authorization.k8s.io/v1")
    assert authz["resources"][0]["verbs"] == ["create"]
    status, _ = await call(api, "GET", "/apis/example.com/v1")
    assert status == 404


async def test_openapi_v3_advertises_field_validation(api: aiohttp.ClientSession) -> None:
    _, index = await call(api, "GET", "/openapi/v3")
    url = index["paths"]["apis/apps/v1"]["serverRelativeURL"]
    _, doc = await call(api, "GET", url)
    op = doc["paths"]["/apis/apps/v1/namespaces/{namespace}/deployments/{name}"]["patch"]
    assert op["x-kubernetes-group-version-kind"] == {"group": "apps", "version": "v1", "kind": "Deployment"}
    assert "fieldValidation" in {p["name"] for p in op["parameters"]}


async def test_crd_discovery_and_established(emulator: Emulator, api: aiohttp.ClientSession) -> None:
    status, _ = await call(api, "POST", "/apis/apiextensions.k8s.io/v1/customresourcedefinitions", CRD)
    assert status == 201
    crd = await eventually(lambda: (c := emulator.get("apiextensions.k8s.io/v1", "CustomResourceDefinition",
                                                       "widgets.example.com")) and c.get("status") and c, "established")
    conds = {c["type"]: c["status"] for c in crd["status"]["conditions"]}
    assert conds == {"NamesAccepted": "True", "Established": "True"}
    assert crd["status"]["acceptedNames"]["kind"] == "Widget" and crd["status"]["acceptedNames"]["listKind"] == "WidgetList"
    _, groups = await call(api, "GET", "/apis")
    assert "example.com" in {g["name"] for g in groups["groups"]}
    _, res = await call(api, "GET", "/apis/example.com/v1")
    assert {r["name"] for r in res["resources"]} == {"widgets", "widgets/status"}
    widget = {"apiVersion": "example.com/v1", "kind": "Widget", "metadata": {"name": "w"}, "spec": {"size": 1}}
    status, created = await call(api, "POST", "/apis/example.com/v1/namespaces/default/widgets", widget)
    assert status == 201 and created["metadata"]["generation"] == 1
    status, _ = await call(api, "DELETE", "/apis/apiextensions.k8s.io/v1/customresourcedefinitions/widgets.example.com")
    assert status == 200
    _, groups = await call(api, "GET", "/apis")
    assert "example.com" not in {g["name"] for g in groups["groups"]}
    status, _ = await call(api, "GET", "/apis/example.com/v1/namespaces/default/widgets/w")
    assert status == 404


# ---- CRUD -----------------------------------------------------------------------------------


async def test_crud(api: aiohttp.ClientSession) -> None:
    base = "/api/v1/namespaces/default/configmaps"
    status, obj = await call(api, "POST", base, cm("a", x="1"))
    assert status == 201
    md = obj["metadata"]
    assert md["uid"] and md["creationTimestamp"] and md["generation"] == 1 and int(md["resourceVersion"]) > 0
    status, err = await call(api, "POST", base, cm("a"))
    assert (status, err["kind"], err["status"], err["reason"], err["code"]) == (409, "Status", "Failure", "AlreadyExists", 409)
    assert err["details"] == {"name": "a", "group": "", "kind": "configmaps"}
    _, listed = await call(api, "GET", base)
    assert listed["kind"] == "ConfigMapList"
    assert [i["metadata"]["name"] for i in listed["items"]] == ["a", "kube-root-ca.crt"]  # as in a real cluster
    assert int(listed["metadata"]["resourceVersion"]) >= int(md["resourceVersion"])

    stale = {**obj, "data": {"x": "2"}}
    status, updated = await call(api, "PUT", f"{base}/a", stale)
    assert status == 200 and int(updated["metadata"]["resourceVersion"]) > int(md["resourceVersion"])
    assert updated["metadata"]["generation"] == 2
    status, err = await call(api, "PUT", f"{base}/a", stale)
    assert (status, err["reason"]) == (409, "Conflict")
    labelled = {**updated, "metadata": {**updated["metadata"], "labels": {"k": "v"}}}
    _, relabelled = await call(api, "PUT", f"{base}/a", labelled)
    assert relabelled["metadata"]["generation"] == 2  # metadata changes do not bump generation

    status, _ = await call(api, "DELETE", f"{base}/a")
    assert status == 200
    status, err = await call(api, "GET", f"{base}/a")
    assert (status, err["reason"], err["message"]) == (404, "NotFound", 'configmaps "a" not found')
    status, err = await call(api, "POST", "/api/v1/namespaces/nope/configmaps", cm("b", ns="nope"))
    assert (status, err["reason"]) == (404, "NotFound")
    status, err = await call(api, "POST", base, {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "Bad_Name"}})
    assert (status, err["reason"]) == (422, "Invalid")
    status, err = await call(api, "PUT", "/api/v1/namespaces/default/configmaps", cm("c"))
    assert (status, err["reason"]) == (405, "MethodNotAllowed")

    role = {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole", "metadata": {"name": "system:x"},
            "rules": []}
    status, created = await call(api, "POST", "/apis/rbac.authorization.k8s.io/v1/clusterroles", role)
    assert status == 201 and "namespace" not in created["metadata"]


async def test_list_selectors_paging_and_deletecollection(emulator: Emulator, api: aiohttp.ClientSession) -> None:
    for name, labels in (("a", {"app": "x", "tier": "web"}), ("b", {"app": "y"}), ("c", {"app": "x"})):
        emulator.put({**cm(name), "metadata": {"name": name, "namespace": "default", "labels": labels}})
    base = "/api/v1/namespaces/default/configmaps"

    async def names(**params: str) -> list[str]:
        _, body = await call(api, "GET", base, **params)
        return [i["metadata"]["name"] for i in body["items"] if i["metadata"]["name"] != "kube-root-ca.crt"]

    assert await names(labelSelector="app=x") == ["a", "c"]
    assert await names(labelSelector="app==x,tier") == ["a"]
    assert await names(labelSelector="app!=x") == ["b"]
    assert await names(labelSelector="app in (y, z)") == ["b"]
    assert await names(labelSelector="app notin (y),!tier") == ["c"]
    assert await names(fieldSelector="metadata.name=b") == ["b"]
    assert await names(fieldSelector="metadata.namespace!=default") == []
    _, page = await call(api, "GET", base, limit="2")
    assert len(page["items"]) == 2 and page["metadata"]["continue"]
    _, rest = await call(api, "GET", base, limit="2", **{"continue": page["metadata"]["continue"]})
    assert len(rest["items"]) == 2 and "continue" not in rest["metadata"]
    status, _ = await call(api, "GET", base, labelSelector="app in (x")
    assert status == 400
    status, _ = await call(api, "DELETE", base, labelSelector="app=x")
    assert status == 200
    assert await names() == ["b"]


# ---- server-side apply ----------------------------------------------------------------------


async def test_field_selectors_are_refused_where_the_api_server_refuses_them(
        emulator: Emulator, api: aiohttp.ClientSession) -> None:
    """Each kind accepts only its own field labels, with kube-apiserver's 400 and wording: core/v1 kinds
    their list in kubernetes pkg/apis/core/v1/conversion.go, custom resources metadata.name and
    metadata.namespace (apiextensions-apiserver crConverter.ConvertFieldLabel), every other kind
    apimachinery's DefaultMetaV1FieldSelectorConversion. A Secret's `type` is one of its labels, and
    a Secret created without one is Opaque (pkg/apis/core/v1/defaults.go SetDefaults_Secret)."""
    secrets = "/api/v1/namespaces/default/secrets"
    for name, type_ in (("plain", None), ("tls", "kubernetes.io/tls"), ("sh.helm.release.v1.app.v1", "helm.sh/release.v1")):
        body: Obj = {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": name, "namespace": "default"}}
        if type_:
            body["type"] = type_
        assert (await call(api, "POST", secrets, body))[0] == 201

    async def names(path: str, **params: str) -> list[str]:
        status, body = await call(api, "GET", path, **params)
        assert status == 200, body
        return sorted(i["metadata"]["name"] for i in body["items"])

    assert await names(secrets, fieldSelector="type=Opaque") == ["plain"]
    assert await names(secrets, fieldSelector="type!=helm.sh/release.v1,type!=kubernetes.io/service-account-token") \
        == ["plain", "tls"]
    assert await names("/api/v1/pods", fieldSelector="spec.host=node-1") == []  # spec.nodeName's old name

    async def refused(path: str, selector: str, **params: str) -> str:
        status, body = await call(api, "GET", path, fieldSelector=selector, **params)
        assert (status, body["reason"]) == (400, "BadRequest")
        return body["message"]

    assert await refused(secrets, "data.password=x") == "field label not supported: data.password"
    assert await refused("/api/v1/namespaces/default/configmaps", "type=Opaque") == \
        '"type" is not a known field selector: only "metadata.name", "metadata.namespace"'
    assert (await call(api, "POST", "/apis/apiextensions.k8s.io/v1/customresourcedefinitions", CRD))[0] == 201
    await eventually(lambda: emulator.get("apiextensions.k8s.io/v1", "CustomResourceDefinition",
                                          "widgets.example.com").get("status"), "established")
    assert await refused("/apis/example.com/v1/widgets", "spec.size=1") == "field label not supported: spec.size"
    assert await names("/apis/example.com/v1/widgets", fieldSelector="metadata.namespace=default") == []
    status, _ = await call(api, "GET", secrets, fieldSelector="type=Opaque", watch="1", timeoutSeconds="1")
    assert status == 200
    assert await refused(secrets, "data.x=y", watch="1") == "field label not supported: data.x"


async def test_apply_create_update_noop(emulator: Emulator, api: aiohttp.ClientSession) -> None:
    path = "/api/v1/namespaces/default/configmaps/a"
    status, created = await call(api, "PATCH", path, cm("a", x="1"), APPLY, fieldManager="seedbed")
    assert status == 201
    mf = created["metadata"]["managedFields"]
    assert [(m["manager"], m["operation"], m["fieldsType"]) for m in mf] == [("seedbed", "Apply", "FieldsV1")]
    assert mf[0]["fieldsV1"] == {"f:data": {"f:x": {}}}
    rv = created["metadata"]["resourceVersion"]
    writes = emulator.writes()

    status, again = await call(api, "PATCH", path, cm("a", x="1"), APPLY, fieldManager="seedbed")
    assert status == 200 and again["metadata"]["resourceVersion"] == rv and again["metadata"]["generation"] == 1
    assert emulator.writes() == writes
    # No event for the no-op: the first event after rv is the next real change.
    await call(api, "PATCH", path, cm("a", x="2"), APPLY, fieldManager="seedbed")
    events = await watch_events(api, "/api/v1/namespaces/default/configmaps", 1, resourceVersion=rv)
    assert events[0]["type"] == "MODIFIED" and events[0]["object"]["data"] == {"x": "2"}
    assert events[0]["object"]["metadata"]["generation"] == 2
    assert emulator.writes() == writes + 1

    # YAML bodies are accepted too, and fields the manager stops applying are removed.
    yaml_body = "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: a\n  labels: {keep: 'yes'}\ndata: {y: '3'}\n"
    async with api.patch(path, data=yaml_body, headers=APPLY, params={"fieldManager": "seedbed"}) as r:
        body = await r.json()
    assert r.status == 200 and body["data"] == {"y": "3"} and body["metadata"]["labels"] == {"keep": "yes"}


async def test_apply_requires_field_manager_and_dry_run(emulator: Emulator, api: aiohttp.ClientSession) -> None:
    path = "/api/v1/namespaces/default/configmaps/a"
    status, err = await call(api, "PATCH", path, cm("a"), APPLY)
    assert (status, err["reason"]) == (400, "BadRequest")
    status, obj = await call(api, "PATCH", path, cm("a", x="1"), APPLY, fieldManager="m", dryRun="All")
    assert status == 201 and obj["data"] == {"x": "1"}
    assert emulator.get("v1", "ConfigMap", "a", "default") is None
    status, err = await call(api, "PATCH", path, {**cm("b")}, APPLY, fieldManager="m")
    assert status == 400  # the name in the body must match the URL


async def test_apply_conflicts_and_force(api: aiohttp.ClientSession) -> None:
    path = "/api/v1/namespaces/default/configmaps/a"
    await call(api, "PATCH", path, cm("a", x="1", y="1"), APPLY, fieldManager="alice")
    status, _ = await call(api, "PATCH", path, cm("a", x="1"), APPLY, fieldManager="bob")
    assert status == 200  # same value: shared ownership, no conflict
    status, err = await call(api, "PATCH", path, cm("a", x="2"), APPLY, fieldManager="bob")
    assert (status, err["reason"]) == (409, "Conflict")
    assert err["details"]["causes"] == [{"type": "FieldManagerConflict", "field": ".data.x",
                                         "message": 'conflict with "alice": .data.x'}]
    assert 'conflict with "alice"' in err["message"]
    status, forced = await call(api, "PATCH", path, cm("a", x="2"), APPLY, fieldManager="bob", force="true")
    assert status == 200 and forced["data"] == {"x": "2", "y": "1"}
    owners = {m["manager"]: m["fieldsV1"] for m in forced["metadata"]["managedFields"]}
    assert owners == {"alice": {"f:data": {"f:y": {}}}, "bob": {"f:data": {"f:x": {}}}}


async def test_apply_merges_lists_by_key(emulator: Emulator, api: aiohttp.ClientSession) -> None:
    path = "/apis/apps/v1/namespaces/default/deployments/web"
    dep = deployment("web")
    dep["spec"]["template"]["spec"]["containers"][0]["ports"] = [{"containerPort": 80}]
    await call(api, "PATCH", path, dep, APPLY, fieldManager="a")
    sidecar = {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web"},
               "spec": {"template": {"spec": {"containers": [
                   {"name": "main", "ports": [{"containerPort": 9090, "name": "metrics"}]},
                   {"name": "sidecar", "image": "envoy"}]}}}}
    status, merged = await call(api, "PATCH", path, sidecar, APPLY, fieldManager="b")
    assert status == 200
    containers = merged["spec"]["template"]["spec"]["containers"]
    assert [c["name"] for c in containers] == ["main", "sidecar"]
    assert containers[0]["image"] == "nginx:1"
    assert sorted(p["containerPort"] for p in containers[0]["ports"]) == [80, 9090]
    assert merged["metadata"]["generation"] == 2
    # status in an apply to the main resource is ignored for kinds with a status subresource
    status, obj = await call(api, "PATCH", path, {**deployment("web"), "status": {"replicas": 99}}, APPLY,
                             fieldManager="a")
    assert obj.get("status", {}).get("replicas") != 99


async def test_patch_types(api: aiohttp.ClientSession) -> None:
    await call(api, "POST", "/apis/apps/v1/namespaces/default/deployments", deployment("web"))
    path = "/apis/apps/v1/namespaces/default/deployments/web"
    status, obj = await call(api, "PATCH", path, {"metadata": {"labels": {"a": "1"}}, "spec": {"replicas": 3}},
                             {"Content-Type": "application/merge-patch+json"})
    assert status == 200 and obj["spec"]["replicas"] == 3 and obj["metadata"]["labels"] == {"a": "1"}
    smp = {"spec": {"template": {"spec": {"containers": [{"name": "side", "image": "busybox"}]}}}}
    _, obj = await call(api, "PATCH", path, smp, {"Content-Type": "application/strategic-merge-patch+json"})
    assert [c["name"] for c in obj["spec"]["template"]["spec"]["containers"]] == ["main", "side"]
    ops = [{"op": "replace", "path": "/spec/replicas", "value": 1}, {"op": "remove", "path": "/metadata/labels/a"}]
    _, obj = await call(api, "PATCH", path, ops, {"Content-Type": "application/json-patch+json"})
    assert obj["spec"]["replicas"] == 1 and obj["metadata"]["labels"] == {}
    status, err = await call(api, "PATCH", path, [{"op": "test", "path": "/spec/replicas", "value": 7}],
                             {"Content-Type": "application/json-patch+json"})
    assert (status, err["reason"]) == (422, "Invalid")
    status, _ = await call(api, "PATCH", f"{path}-missing", {"spec": {}}, {"Content-Type": "application/merge-patch+json"})
    assert status == 404


# ---- watch ----------------------------------------------------------------------------------


async def test_watch_from_resource_version_with_selectors(emulator: Emulator, api: aiohttp.ClientSession) -> None:
    emulator.put({**cm("before"), "metadata": {"name": "before", "namespace": "default", "labels": {"w": "1"}}})
    _, listed = await call(api, "GET", "/api/v1/namespaces/default/configmaps")
    rv = listed["metadata"]["resourceVersion"]
    emulator.put({**cm("other"), "metadata": {"name": "other", "namespace": "default"}})
    emulator.put({**cm("after", x="1"), "metadata": {"name": "after", "namespace": "default", "labels": {"w": "1"}}})
    emulator.put({**cm("after", x="2"), "metadata": {"name": "after", "namespace": "default", "labels": {"w": "1"}}})
    emulator.delete("v1", "ConfigMap", "after", "default")
    events = await watch_events(api, "/api/v1/namespaces/default/configmaps", 3, resourceVersion=rv,
                                labelSelector="w=1")
    assert [(e["type"], e["object"]["metadata"]["name"]) for e in events] == [
        ("ADDED", "after"), ("MODIFIED", "after"), ("DELETED", "after")]
    rvs = [int(e["object"]["metadata"]["resourceVersion"]) for e in events]
    assert rvs == sorted(rvs) and rvs[0] > int(rv)

    # resourceVersion 0: the current state as ADDED events, then live events (one connection, read in step)
    params = {"watch": "1", "resourceVersion": "0", "fieldSelector": "metadata.name=before"}
    async with api.get("/api/v1/namespaces/default/configmaps", params=params) as r:
        first = json.loads(await r.content.readline())
        assert first["type"] == "ADDED" and first["object"]["data"] == {}
        emulator.put({**cm("before", x="9"), "metadata": {"name": "before", "namespace": "default", "labels": {"w": "1"}}})
        second = json.loads(await r.content.readline())
        assert second["type"] == "MODIFIED" and second["object"]["data"] == {"x": "9"}


async def test_watch_timeout_and_label_transition(emulator: Emulator, api: aiohttp.ClientSession) -> None:
    async with api.get("/api/v1/namespaces/default/configmaps",
                       params={"watch": "true", "timeoutSeconds": "0", "labelSelector": "x"}) as r:
        assert r.status == 200 and await r.read() == b""
    emulator.put({**cm("t"), "metadata": {"name": "t", "namespace": "default", "labels": {"sel": "1"}}})
    _, listed = await call(api, "GET", "/api/v1/namespaces/default/configmaps")
    emulator.put({**cm("t"), "metadata": {"name": "t", "namespace": "default", "labels": {"sel": "2"}}})
    events = await watch_events(api, "/api/v1/namespaces/default/configmaps", 1,
                                resourceVersion=listed["metadata"]["resourceVersion"], labelSelector="sel=1")
    assert events[0]["type"] == "DELETED"  # it stopped matching the selector


async def test_watch_too_old_resource_version() -> None:
    with Emulator(history=5) as emu:
        for i in range(10):
            emu.put(cm(f"c{i}"))
        async with aiohttp.ClientSession(base_url=emu.url) as api:
            events = await watch_events(api, "/api/v1/configmaps", 1, resourceVersion="2")
    assert events[0]["type"] == "ERROR"
    assert (events[0]["object"]["code"], events[0]["object"]["reason"]) == (410, "Expired")


# ---- status, namespaces, controllers --------------------------------------------------------


async def test_status_subresource(emulator: Emulator, api: aiohttp.ClientSession) -> None:
    emulator.hold_ready("Deployment", "default", "web")
    _, dep = await call(api, "POST", "/apis/apps/v1/namespaces/default/deployments",
                        {**deployment("web"), "status": {"replicas": 42}})
    assert "status" not in dep
    path = "/apis/apps/v1/namespaces/default/deployments/web"
    await eventually(lambda: (emulator.get("apps/v1", "Deployment", "web", "default") or {}).get("status"), "status")
    _, cur = await call(api, "GET", path)
    _, after = await call(api, "PUT", f"{path}/status", {**cur, "spec": {**cur["spec"], "replicas": 9},
                                                           "status": {"replicas": 7}})
    assert after["status"] == {"replicas": 7} and after["spec"]["replicas"] == 2
    assert after["metadata"]["generation"] == cur["metadata"]["generation"]
    _, after = await call(api, "PATCH", f"{path}/status", {"status": {"observedGeneration": 5}},
                          {"Content-Type": "application/merge-patch+json"})
    assert after["status"] == {"replicas": 7, "observedGeneration": 5}
    _, main = await call(api, "PUT", path, {**after, "status": {"replicas": 1}})
    assert main["status"]["replicas"] == 7
    body = {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web"}, "status": {"readyReplicas": 2}}
    _, applied = await call(api, "PATCH", f"{path}/status", body, APPLY, fieldManager="ctl")
    assert applied["status"]["readyReplicas"] == 2 and applied["spec"]["replicas"] == 2
    status, _ = await call(api, "GET", "/api/v1/namespaces/default/configmaps/x/status")
    assert status == 404


async def test_namespace_deletion(emulator: Emulator, api: aiohttp.ClientSession) -> None:
    await call(api, "POST", "/api/v1/namespaces", {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "tmp"}})
    await call(api, "POST", "/api/v1/namespaces/tmp/configmaps", cm("a", ns="tmp"))
    await call(api, "POST", "/apis/apps/v1/namespaces/tmp/deployments", deployment("d", ns="tmp"))
    _, ns = await call(api, "GET", "/api/v1/namespaces/tmp")
    assert ns["status"]["phase"] == "Active" and ns["metadata"]["labels"]["kubernetes.io/metadata.name"] == "tmp"
    watch = asyncio.create_task(watch_events(api, "/api/v1/namespaces", 2, resourceVersion=ns["metadata"]["resourceVersion"],
                                             fieldSelector="metadata.name=tmp"))
    status, deleting = await call(api, "DELETE", "/api/v1/namespaces/tmp")
    assert status == 200 and deleting["status"]["phase"] == "Terminating" and deleting["metadata"]["deletionTimestamp"]
    events = await watch
    assert [e["type"] for e in events] == ["MODIFIED", "DELETED"]
    assert emulator.list("v1", "ConfigMap", "tmp") == [] and emulator.list("v1", "Pod", "tmp") == []
    assert emulator.list("apps/v1", "Deployment", "tmp") == []


async def test_create_in_terminating_namespace_is_forbidden(emulator: Emulator, api: aiohttp.ClientSession) -> None:
    emulator.put({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "stuck", "finalizers": ["x/y"]}})
    # Hold the teardown back by serving the delete through the store directly and checking at once.
    def delete_and_create() -> int:
        info = emulator.registry.by_gk[("", "Namespace")]
        emulator.store.delete(info, "", "stuck")
        try:
            emulator.store.create(emulator.registry.by_gk[("", "ConfigMap")], "stuck", cm("a", ns="stuck"), None)
        except Exception as e:  # the ApiError
            return e.code  # type: ignore[attr-defined, no-any-return]
        return 0
    assert emulator._call(delete_and_create) == 403


async def test_deployment_rollout_and_pods(emulator: Emulator, api: aiohttp.ClientSession) -> None:
    path = "/apis/apps/v1/namespaces/default/deployments"
    watch = asyncio.create_task(watch_events(api, path, 2, resourceVersion=str(emulator.store.rv)))
    await call(api, "POST", path, deployment("web", replicas=2))
    events = await watch
    assert [e["type"] for e in events] == ["ADDED", "MODIFIED"]
    status = events[1]["object"]["status"]
    assert {k: status[k] for k in ("observedGeneration", "replicas", "updatedReplicas", "readyReplicas",
                                   "availableReplicas")} == {"observedGeneration": 1, "replicas": 2,
                                                             "updatedReplicas": 2, "readyReplicas": 2,
                                                             "availableReplicas": 2}
    conds = {c["type"]: (c["status"], c["reason"]) for c in status["conditions"]}
    assert conds == {"Available": ("True", "MinimumReplicasAvailable"),
                     "Progressing": ("True", "NewReplicaSetAvailable")}
    pods = emulator.list("v1", "Pod", "default")
    assert len(pods) == 2
    for pod in pods:
        assert pod["metadata"]["labels"]["app"] == "web" and pod["spec"]["nodeName"] == "node-1"
        assert pod["metadata"]["ownerReferences"][0]["kind"] == "ReplicaSet"
        assert pod["status"]["phase"] == "Running"
        assert {c["type"]: c["status"] for c in pod["status"]["conditions"]}["Ready"] == "True"
    old = {p["metadata"]["name"] for p in pods}
    await call(api, "PATCH", f"{path}/web", {"spec": {"template": {"spec": {"containers": [{"name": "main", "image": "nginx:2"}]}}}},
               {"Content-Type": "application/merge-patch+json"})
    new = await eventually(lambda: (ps := emulator.list("v1", "Pod", "default")) and not old & {p["metadata"]["name"] for p in ps}
                           and ps, "pods replaced")
    assert {p["spec"]["containers"][0]["image"] for p in new} == {"nginx:2"}
    dep = await eventually(lambda: (d := emulator.get("apps/v1", "Deployment", "web", "default"))
                           and d["status"].get("observedGeneration") == 2 and d, "observed")
    assert dep["status"]["readyReplicas"] == 2
    await call(api, "DELETE", f"{path}/web")
    await eventually(lambda: emulator.list("v1", "Pod", "default") == [], "pods deleted with the owner")
    assert emulator.list("apps/v1", "ReplicaSet", "default") == []


async def test_hold_ready(emulator: Emulator, api: aiohttp.ClientSession) -> None:
    emulator.hold_ready("Deployment", "default", "slow")
    await call(api, "POST", "/apis/apps/v1/namespaces/default/deployments", deployment("slow"))
    dep = await eventually(lambda: (d := emulator.get("apps/v1", "Deployment", "slow", "default")) and d.get("status") and d,
                           "status")
    conds = {c["type"]: (c["status"], c["reason"]) for c in dep["status"]["conditions"]}
    assert conds == {"Available": ("False", "MinimumReplicasUnavailable"), "Progressing": ("True", "ReplicaSetUpdated")}
    assert "readyReplicas" not in dep["status"] and dep["status"]["unavailableReplicas"] == 2
    emulator.release_ready("Deployment", "default", "slow")
    await eventually(lambda: (emulator.get("apps/v1", "Deployment", "slow", "default") or {})["status"].get("readyReplicas") == 2,
                     "ready after release")


async def test_daemonset_and_statefulset() -> None:
    with Emulator(nodes=3) as emu:
        emu.put({"apiVersion": "apps/v1", "kind": "DaemonSet", "metadata": {"name": "agent", "namespace": "kube-system"},
                 "spec": {"selector": {"matchLabels": {"app": "agent"}},
                          "template": {"metadata": {"labels": {"app": "agent"}}, "spec": {"containers": [{"name": "a"}]}}}})
        ds = await eventually(lambda: (d := emu.get("apps/v1", "DaemonSet", "agent", "kube-system")) and d.get("status") and d,
                              "ds status")
        assert {k: ds["status"][k] for k in ("desiredNumberScheduled", "currentNumberScheduled", "updatedNumberScheduled",
                                             "numberReady", "numberAvailable", "observedGeneration")} == {
            "desiredNumberScheduled": 3, "currentNumberScheduled": 3, "updatedNumberScheduled": 3, "numberReady": 3,
            "numberAvailable": 3, "observedGeneration": 1}
        assert sorted(p["spec"]["nodeName"] for p in emu.list("v1", "Pod", "kube-system")) == ["node-1", "node-2", "node-3"]
        emu.put({"apiVersion": "apps/v1", "kind": "StatefulSet", "metadata": {"name": "db", "namespace": "default"},
                 "spec": {"replicas": 2, "selector": {"matchLabels": {"app": "db"}}, "serviceName": "db",
                          "template": {"metadata": {"labels": {"app": "db"}}, "spec": {"containers": [{"name": "db"}]}}}})
        sts = await eventually(lambda: (s := emu.get("apps/v1", "StatefulSet", "db", "default")) and s.get("status") and s,
                               "sts status")
        st = sts["status"]
        assert (st["readyReplicas"], st["currentReplicas"], st["updatedReplicas"], st["observedGeneration"]) == (2, 2, 2, 1)
        assert st["currentRevision"] == st["updateRevision"]
        assert sorted(p["metadata"]["name"] for p in emu.list("v1", "Pod", "default")) == ["db-0", "db-1"]


async def test_pvc_binding_when_storage_class_appears(emulator: Emulator, api: aiohttp.ClientSession) -> None:
    pvc = {"apiVersion": "v1", "kind": "PersistentVolumeClaim", "metadata": {"name": "data", "namespace": "default"},
           "spec": {"storageClassName": "longhorn", "accessModes": ["ReadWriteOnce"],
                    "resources": {"requests": {"storage": "2Gi"}}}}
    await call(api, "POST", "/api/v1/namespaces/default/persistentvolumeclaims", pvc)
    emulator.settle()
    assert emulator.get("v1", "PersistentVolumeClaim", "data", "default")["status"]["phase"] == "Pending"
    sc = {"apiVersion": "storage.k8s.io/v1", "kind": "StorageClass", "metadata": {"name": "longhorn"},
          "provisioner": "driver.longhorn.io", "reclaimPolicy": "Delete"}
    await call(api, "POST", "/apis/storage.k8s.io/v1/storageclasses", sc)
    bound = await eventually(lambda: (p := emulator.get("v1", "PersistentVolumeClaim", "data", "default"))
                             and p["status"]["phase"] == "Bound" and p, "bound")
    pv = emulator.get("v1", "PersistentVolume", bound["spec"]["volumeName"])
    assert pv is not None
    assert pv["spec"]["csi"] == {"driver": "driver.longhorn.io", "volumeHandle": pv["metadata"]["name"], "fsType": "ext4"}
    assert pv["spec"]["claimRef"]["name"] == "data" and pv["spec"]["capacity"] == {"storage": "2Gi"}
    assert bound["status"]["capacity"] == {"storage": "2Gi"}


async def test_a_claim_naming_its_volume_binds_to_that_volume_once_it_exists(
        emulator: Emulator, api: aiohttp.ClientSession) -> None:
    """A restore pre-binds the claim (spec.volumeName): the binder uses that PV, never a new one
    (kubernetes v1.32 pv_controller.go syncUnboundClaim), even when a StorageClass could provision one."""
    sc = {"apiVersion": "storage.k8s.io/v1", "kind": "StorageClass", "metadata": {"name": "longhorn"},
          "provisioner": "driver.longhorn.io", "reclaimPolicy": "Delete"}
    await call(api, "POST", "/apis/storage.k8s.io/v1/storageclasses", sc)
    pvc = {"apiVersion": "v1", "kind": "PersistentVolumeClaim", "metadata": {"name": "data", "namespace": "default"},
           "spec": {"storageClassName": "longhorn", "accessModes": ["ReadWriteOnce"], "volumeName": "restored",
                    "resources": {"requests": {"storage": "2Gi"}}}}
    await call(api, "POST", "/api/v1/namespaces/default/persistentvolumeclaims", pvc)
    emulator.settle()
    assert emulator.get("v1", "PersistentVolumeClaim", "data", "default")["status"]["phase"] == "Pending"
    assert emulator.list("v1", "PersistentVolume") == []
    pv = {"apiVersion": "v1", "kind": "PersistentVolume", "metadata": {"name": "restored"},
          "spec": {"capacity": {"storage": "2Gi"}, "accessModes": ["ReadWriteOnce"], "storageClassName": "longhorn",
                   "persistentVolumeReclaimPolicy": "Retain",
                   "csi": {"driver": "driver.longhorn.io", "volumeHandle": "restored"},
                   "claimRef": {"namespace": "default", "name": "data"}}}
    await call(api, "POST", "/api/v1/persistentvolumes", pv)
    bound = await eventually(lambda: (p := emulator.get("v1", "PersistentVolumeClaim", "data", "default"))
                             and p["status"]["phase"] == "Bound" and p, "bound")
    assert bound["spec"]["volumeName"] == "restored" and bound["status"]["capacity"] == {"storage": "2Gi"}
    stored = emulator.get("v1", "PersistentVolume", "restored")
    assert stored["spec"]["claimRef"]["uid"] == bound["metadata"]["uid"] and stored["status"]["phase"] == "Bound"
    assert [p["metadata"]["name"] for p in emulator.list("v1", "PersistentVolume")] == ["restored"]


async def test_services_get_cluster_ip(api: aiohttp.ClientSession) -> None:
    svc = {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "s"},
           "spec": {"selector": {"app": "x"}, "ports": [{"port": 80}]}}
    _, obj = await call(api, "POST", "/api/v1/namespaces/default/services", svc)
    ip = obj["spec"]["clusterIP"]
    assert ip.startswith("10.96.")
    _, replaced = await call(api, "PUT", "/api/v1/namespaces/default/services/s", svc)
    assert replaced["spec"]["clusterIP"] == ip


# ---- hooks, access reviews, requests --------------------------------------------------------


async def test_on_apply_hook_sets_status(emulator: Emulator, api: aiohttp.ClientSession) -> None:
    seen: list[str] = []

    def ready(emu: Emulator, obj: Obj) -> None:
        seen.append(obj["metadata"]["name"])
        emu.set_status("example.com/v1", "Widget", obj["metadata"]["name"], obj["metadata"]["namespace"],
                       {"conditions": [{"type": "Ready", "status": "True"}]})

    emulator.on_apply("Widget", ready)
    emulator.put(CRD)
    widget = {"apiVersion": "example.com/v1", "kind": "Widget", "metadata": {"name": "w", "namespace": "default"},
              "spec": {"size": 1}}
    await call(api, "PATCH", "/apis/example.com/v1/namespaces/default/widgets/w", widget, APPLY, fieldManager="m")
    got = await eventually(lambda: (w := emulator.get("example.com/v1", "Widget", "w", "default")) and w.get("status") and w,
                           "hook ran")
    assert got["status"]["conditions"][0]["type"] == "Ready" and seen == ["w"]


async def test_access_reviews_and_denials(emulator: Emulator, api: aiohttp.ClientSession) -> None:
    review = {"apiVersion": "authorization.k8s.io/v1", "kind": "SelfSubjectAccessReview",
              "spec": {"resourceAttributes": {"verb": "create", "resource": "secrets", "namespace": "default"}}}
    path = "/apis/authorization.k8s.io/v1/selfsubjectaccessreviews"
    status, body = await call(api, "POST", path, review)
    assert status == 201 and body["status"]["allowed"] is True
    emulator.deny("create", "secrets", namespace="default")
    _, body = await call(api, "POST", path, review)
    assert body["status"]["allowed"] is False
    status, err = await call(api, "POST", "/api/v1/namespaces/default/secrets",
                             {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "s"}})
    assert (status, err["reason"]) == (403, "Forbidden")
    status, _ = await call(api, "GET", path)
    assert status == 405


async def test_request_log(emulator: Emulator, api: aiohttp.ClientSession) -> None:
    emulator.reset_requests()
    await call(api, "POST", "/api/v1/namespaces/default/configmaps", cm("a"), headers={"User-Agent": "tester/1"})
    await call(api, "GET", "/api/v1/namespaces/default/configmaps", labelSelector="a=b")
    await call(api, "POST", "/api/v1/namespaces/default/configmaps", cm("a"))  # 409: not a write
    recs = [(r.method, r.path, r.status) for r in emulator.requests]
    assert recs == [("POST", "/api/v1/namespaces/default/configmaps", 201),
                    ("GET", "/api/v1/namespaces/default/configmaps", 200),
                    ("POST", "/api/v1/namespaces/default/configmaps", 409)]
    assert emulator.requests[0].user_agent == "tester/1" and emulator.requests[1].query == {"labelSelector": "a=b"}
    assert emulator.writes() == 1


# ---- faults ---------------------------------------------------------------------------------


async def test_faults(emulator: Emulator, api: aiohttp.ClientSession) -> None:
    emulator.inject(method="GET", path=r"/configmaps$", status=429, times=2, retry_after=3)
    for _ in range(2):
        async with api.get("/api/v1/namespaces/default/configmaps") as r:
            body = await r.json()
            assert (r.status, r.headers["Retry-After"], body["reason"]) == (429, "3", "TooManyRequests")
    async with api.get("/api/v1/namespaces/default/configmaps") as r:
        assert r.status == 200
    emulator.inject(path=r"/version", status=503)
    status, body = await call(api, "GET", "/version")
    assert (status, body["reason"]) == (503, "ServiceUnavailable")
    emulator.inject(path=r"/version", latency=0.01)
    status, _ = await call(api, "GET", "/version")
    assert status == 200
    emulator.inject(path=r"/configmaps", status=500, times=5)
    emulator.clear_faults()
    status, _ = await call(api, "GET", "/api/v1/namespaces/default/configmaps")
    assert status == 200

    emulator.put(cm("one"))
    emulator.inject(path=r"/configmaps", drop_watch=True)
    events = []
    with pytest.raises(aiohttp.ClientPayloadError):
        async with api.get("/api/v1/namespaces/default/configmaps", params={"watch": "1"}) as r:
            async for line in r.content:
                events.append(json.loads(line))
    assert len(events) == 1


async def test_round_trips_are_counted_one_after_another_and_concurrent_ones_once(
        emulator: Emulator, api: aiohttp.ClientSession) -> None:
    """sequential_round_trips() is the longest chain of requests each sent after the previous was
    answered; with a link latency, requests sent together overlap and count once."""
    emulator.latency = 0.05
    emulator.reset_requests()
    for _ in range(3):
        assert (await call(api, "GET", "/api/v1/namespaces/default"))[0] == 200
    await asyncio.gather(*(call(api, "GET", "/api/v1/namespaces/default") for _ in range(4)))
    assert (len(emulator.requests), emulator.sequential_round_trips()) == (7, 4)
    emulator.latency = 0.0


async def test_bearer_token_and_tls(tmp_path: Any) -> None:
    import ssl

    with Emulator(tls=True, token="s3cret") as emu:
        assert emu.url.startswith("https://")
        ctx = ssl.create_default_context(cadata=emu.ca_pem)
        async with aiohttp.ClientSession(base_url=emu.url, connector=aiohttp.TCPConnector(ssl=ctx)) as api:
            async with api.get("/api/v1/namespaces") as r:
                assert r.status == 401 and (await r.json())["reason"] == "Unauthorized"
            async with api.get("/api/v1/namespaces", headers={"Authorization": "Bearer s3cret"}) as r:
                assert r.status == 200
        kubeconfig = emu.write_kubeconfig(tmp_path / "kc", context="ctx", namespace="kube-system")
        import yaml

        doc = yaml.safe_load(kubeconfig.read_text())
        assert doc["users"][0]["user"]["token"] == "s3cret"
        assert doc["clusters"][0]["cluster"]["certificate-authority-data"]
        assert doc["contexts"][0]["context"]["namespace"] == "kube-system" and doc["current-context"] == "ctx"


async def test_lightkube_client(emulator: Emulator, kubeconfig: Any) -> None:
    from lightkube import AsyncClient, KubeConfig
    from lightkube.resources.core_v1 import ConfigMap

    client = AsyncClient(KubeConfig.from_file(kubeconfig))
    try:
        obj = ConfigMap.from_dict(cm("lk", x="1")) if hasattr(ConfigMap, "from_dict") else None
        from lightkube.models.meta_v1 import ObjectMeta

        obj = ConfigMap(metadata=ObjectMeta(name="lk", namespace="default"), data={"x": "1"})
        applied = await client.apply(obj, field_manager="seedbed")
        assert applied.metadata.managedFields[0].manager == "seedbed"
        again = await client.apply(obj, field_manager="seedbed")
        assert again.metadata.resourceVersion == applied.metadata.resourceVersion
        names = [c.metadata.name async for c in client.list(ConfigMap, namespace="default")]
        assert "lk" in names
        async for event, got in client.watch(ConfigMap, namespace="default", fields={"metadata.name": "lk"}):
            assert (event, got.data) == ("ADDED", {"x": "1"})
            break
        await client.delete(ConfigMap, "lk", namespace="default")
        assert emulator.get("v1", "ConfigMap", "lk", "default") is None
    finally:
        await client.close()


# ---- port-forward ---------------------------------------------------------------------------

PF_PROTOCOL = ("v4.channel.k8s.io",)


@pytest.fixture
async def echo_port() -> AsyncIterator[int]:
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while data := await reader.read(65536):
            if data == b"quit":
                break
            writer.write(data)
            await writer.drain()
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    yield server.sockets[0].getsockname()[1]
    server.close()
    await server.wait_closed()


def running_pod(emulator: Emulator, name: str = "p", phase: str = "Running") -> None:
    emulator.put({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "namespace": "default"},
                  "spec": {"containers": [{"name": "c"}]}, "status": {"phase": phase}})


async def test_port_forward_relays_to_routed_target(emulator: Emulator, api: aiohttp.ClientSession,
                                                    echo_port: int) -> None:
    running_pod(emulator)
    emulator.route_port("default", 3000, "127.0.0.1", echo_port)
    url = "/api/v1/namespaces/default/pods/p/portforward"
    async with api.ws_connect(url, params={"ports": "3000"}, protocols=PF_PROTOCOL) as ws:
        assert ws.protocol == "v4.channel.k8s.io"
        port = (3000).to_bytes(2, "little")
        assert await ws.receive_bytes() == b"\x00" + port
        assert await ws.receive_bytes() == b"\x01" + port
        await ws.send_bytes(b"\x00hello")
        assert await ws.receive_bytes() == b"\x00hello"
        await ws.send_bytes(b"\x00quit")  # the target closes: the stream ends
        msg = await ws.receive()
        assert msg.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED)
    assert emulator.port_forward_streams == 1


async def test_port_forward_refusals(emulator: Emulator, api: aiohttp.ClientSession) -> None:
    running_pod(emulator)
    running_pod(emulator, "pending", phase="Pending")
    url = "/api/v1/namespaces/default/pods/{}/portforward"
    async with api.ws_connect(url.format("p"), params={"ports": "4000"}, protocols=PF_PROTOCOL) as ws:
        await ws.receive_bytes()
        await ws.receive_bytes()
        error = await ws.receive_bytes()
        assert error[0] == 1 and b"4000" in error[1:]
        assert (await ws.receive()).type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED)
    for name, protocols, code in (("p", ("v5.channel.k8s.io",), 400), ("missing", PF_PROTOCOL, 404),
                                  ("pending", PF_PROTOCOL, 404)):
        with pytest.raises(aiohttp.WSServerHandshakeError) as exc:
            await api.ws_connect(url.format(name), params={"ports": "4000"}, protocols=protocols)
        assert exc.value.status == code
    status, err = await call(api, "GET", url.format("p"), ports="4000")  # no upgrade
    assert (status, err["reason"]) == (400, "BadRequest")


async def test_port_forward_fault_drops_stream(emulator: Emulator, api: aiohttp.ClientSession, echo_port: int) -> None:
    running_pod(emulator)
    emulator.route_port("default", 3000, "127.0.0.1", echo_port)
    emulator.inject(path=r"/portforward$", drop_port_forward=True)
    url = "/api/v1/namespaces/default/pods/p/portforward"
    async with api.ws_connect(url, params={"ports": "3000"}, protocols=PF_PROTOCOL) as ws:
        await ws.receive_bytes()
        await ws.receive_bytes()
        await ws.send_bytes(b"\x00hello")
        msg = await ws.receive()
        assert msg.type in (aiohttp.WSMsgType.CLOSED, aiohttp.WSMsgType.ERROR, aiohttp.WSMsgType.CLOSE)
        assert msg.type != aiohttp.WSMsgType.BINARY
    # the next stream works again
    async with api.ws_connect(url, params={"ports": "3000"}, protocols=PF_PROTOCOL) as ws:
        await ws.receive_bytes()
        await ws.receive_bytes()
        await ws.send_bytes(b"\x00again")
        assert await ws.receive_bytes() == b"\x00again"
    assert emulator.port_forward_streams == 2
