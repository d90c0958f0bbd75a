"""Pure rendering: config and inputs in, Kubernetes objects (plain dicts) out. No I/O here.

Shared helpers for the render modules live here; each module renders one part of the bootstrap.
"""

from __future__ import annotations

import base64

MANAGED_BY = "seedbed"
# The cluster DNS domain is assumed to be the default cluster.local (config has no field for it).
CLUSTER_DNS_SUFFIX = "svc.cluster.local"


def b64(value: str) -> str:
    """A Secret ``data`` value. seedbed writes ``data`` (not ``stringData``) so that what it renders
    compares byte for byte with what it reads back from the cluster."""
    return base64.b64encode(value.encode()).decode()
