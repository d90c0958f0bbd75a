"""The Kubernetes engine. See docs/ARCHITECTURE.md for the API in one screen.

Outside this package, type a connection as :class:`KubeClient`; :class:`Kube` implements it.
"""

from ..errors import WaitTimeout
from .client import Kube
from .connect import Deadlines
from .types import AlreadyExists, ApplyResult, Conflict, Forbidden, Invalid, KubeClient, NotFound, ref

__all__ = ["AlreadyExists", "ApplyResult", "Conflict", "Deadlines", "Forbidden", "Invalid", "Kube", "KubeClient",
           "NotFound", "WaitTimeout", "ref"]
