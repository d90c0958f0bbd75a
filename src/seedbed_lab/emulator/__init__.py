"""A Kubernetes API server emulator for tests: real HTTP on loopback, see SIMPLIFICATIONS.md."""

from .server import Emulator, RequestRecord
from .store import ApiError

__all__ = ["ApiError", "Emulator", "RequestRecord"]
