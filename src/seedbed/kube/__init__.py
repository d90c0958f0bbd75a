"""The Kubernetes engine. See docs/ARCHITECTURE.md for the API in one screen."""

from ..errors import WaitTimeout
from .client import AlreadyExists, ApplyResult, Conflict, Forbidden, Invalid, Kube, NotFound, ref

__all__ = ["AlreadyExists", "ApplyResult", "Conflict", "Forbidden", "Invalid", "Kube", "NotFound", "WaitTimeout",
           "ref"]
