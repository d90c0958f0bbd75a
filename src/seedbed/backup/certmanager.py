"""cert-manager's validating webhook, before Certificates, Issuers and ClusterIssuers are restored.

cert-manager's ValidatingWebhookConfiguration (v1.18.0 and v1.21.1 release manifests,
``cert-manager-webhook``) covers every ``cert-manager.io`` and ``acme.cert-manager.io`` resource
with ``failurePolicy: Fail``. Until the webhook's Deployment has a Ready pod and cainjector has
copied the webhook's CA into ``clientConfig.caBundle`` (annotation
``cert-manager.io/inject-ca-from-secret``), the API server refuses every such write with 500
``failed calling webhook "webhook.cert-manager.io"``. Established CRDs say nothing about that, so the
restore waits for both, then still retries that one error until its deadline (the API server's
endpoints and caches lag the objects by a moment).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from seedbed.errors import ClusterError, WaitTimeout

if TYPE_CHECKING:
    from ..kube import KubeClient

WEBHOOK_API = "admissionregistration.k8s.io/v1"
GROUPS = ("cert-manager.io", "acme.cert-manager.io")
_RETRY_PAUSE = 1.0


def _covers(hook: dict[str, Any]) -> bool:
    return any(set(GROUPS) & set(rule.get("apiGroups") or []) for rule in hook.get("rules") or [])


def _injected(config: dict[str, Any] | None) -> bool:
    hooks = [h for h in (config or {}).get("webhooks") or [] if _covers(h)]
    return config is not None and all((h.get("clientConfig") or {}).get("caBundle") for h in hooks)


def _fix(config: str) -> str:
    return ("check cert-manager: `kubectl -n cert-manager get pods` (the webhook and cainjector must be Running "
            f"and Ready) and `kubectl get validatingwebhookconfiguration {config} -o yaml` (caBundle must be set); "
            "then re-run")


async def wait_for_webhook(kube: KubeClient, *, timeout: float, log: Callable[[str], None] | None = None) -> None:
    """Wait until every webhook validating cert-manager's resources can be called."""
    say = log or (lambda _: None)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    for config in await kube.list(WEBHOOK_API, "ValidatingWebhookConfiguration"):
        name = config["metadata"]["name"]
        hooks = [h for h in config.get("webhooks") or [] if _covers(h)]
        if not hooks:
            continue
        try:
            for svc in {(s.get("namespace", ""), s.get("name", ""))
                        for s in ((h.get("clientConfig") or {}).get("service") for h in hooks) if s}:
                # The upstream manifests name the Deployment after its Service (cert-manager-webhook).
                if await kube.get("apps/v1", "Deployment", svc[1], namespace=svc[0]) is not None:
                    say(f"waiting for Deployment {svc[0]}/{svc[1]} (cert-manager's webhook) to be ready")
                    await kube.wait_rollout("Deployment", svc[1], svc[0], timeout=max(0.0, deadline - loop.time()))
            say(f"waiting for cainjector to inject the CA bundle into ValidatingWebhookConfiguration {name}")
            await kube.wait_for(WEBHOOK_API, "ValidatingWebhookConfiguration", name, None, _injected,
                                timeout=max(0.0, deadline - loop.time()),
                                what=f"the CA bundle of ValidatingWebhookConfiguration {name}",
                                describe=lambda o: "caBundle is empty" if o is not None else "it was deleted")
        except WaitTimeout as e:
            raise ClusterError(f"cert-manager's webhook is not ready, so its objects cannot be restored: {e.message}",
                               fix=_fix(name)) from None


class WebhookRetry:
    """The Kube client, with writes that retry cert-manager's "failed calling webhook" until a deadline."""

    def __init__(self, kube: KubeClient, *, timeout: float, log: Callable[[str], None] | None = None) -> None:
        self._kube, self._timeout, self._log = kube, timeout, log
        self._deadline = asyncio.get_running_loop().time() + timeout

    def __getattr__(self, name: str) -> Any:
        return getattr(self._kube, name)

    async def _retry(self, fn: Callable[..., Any], obj: dict[str, Any], **kw: Any) -> Any:
        loop = asyncio.get_running_loop()
        while True:
            try:
                return await fn(obj, **kw)
            except ClusterError as e:
                if "failed calling webhook" not in e.message:
                    raise
                if loop.time() + _RETRY_PAUSE > self._deadline:
                    raise ClusterError(f"cert-manager's webhook still refuses {obj.get('kind')} writes after "
                                       f"{self._timeout:g}s: {e.message}",
                                       fix=_fix("cert-manager-webhook")) from None
                if self._log:
                    self._log(f"cert-manager's webhook is not answering yet; retrying {obj.get('kind')} "
                              f"{(obj.get('metadata') or {}).get('name')}")
                await asyncio.sleep(_RETRY_PAUSE)

    async def create(self, obj: dict[str, Any], **kw: Any) -> Any:
        return await self._retry(self._kube.create, obj, **kw)

    async def apply_one(self, obj: dict[str, Any], **kw: Any) -> Any:
        return await self._retry(self._kube.apply_one, obj, **kw)
