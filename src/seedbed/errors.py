"""The errors a user can do something about: the one exceptions module, as in httpx.

Every problem caused by input (config, kubeconfig, flags, cluster state, a backup archive)
is raised as a :class:`SeedbedError`: one line naming the cause, and a ``fix`` naming what
to do. The CLI prints both (through the scrubber) and exits non-zero; it never shows a
traceback for these. Anything else is a bug and keeps its traceback.

The hierarchy (exit code in brackets)::

    SeedbedError [1]
    ├── ConfigError [2]       seedbed.yaml, a flag, or a file the config names
    ├── ManifestError         a release manifest cannot be had or does not match its pin
    ├── ClusterError          the cluster cannot be reached, refuses, or is in a state we will not touch
    │   └── WaitTimeout       something waited for did not become ready in time
    │   (seedbed.kube adds NotFound, AlreadyExists, Conflict, Forbidden, Invalid below ClusterError)
    ├── GitServerError        the in-cluster Git server refused or failed a request
    ├── GitError              a git command failed (``transient``: worth retrying)
    ├── ArchiveError          a backup archive cannot be read, decrypted or trusted
    ├── Refused               seedbed stopped on purpose to protect something
    └── (steps) StepFailed, Interrupted [130]: a step failed or was interrupted; re-run to resume
"""

from __future__ import annotations


class SeedbedError(Exception):
    """A user-facing error: ``message`` says what is wrong, ``fix`` says what to do about it."""

    exit_code = 1

    def __init__(self, message: str, *, fix: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.fix = fix

    def __str__(self) -> str:
        return self.message


class ConfigError(SeedbedError):
    """seedbed.yaml, a flag, or a file the config names is wrong."""

    exit_code = 2


class ManifestError(SeedbedError):
    """An upstream release manifest cannot be had, or does not match its pinned hash."""


class ClusterError(SeedbedError):
    """The cluster cannot be reached, refuses us, or is in a state seedbed will not touch."""


class WaitTimeout(ClusterError):
    """Something seedbed waited for did not become ready in time."""


class GitServerError(SeedbedError):
    """The in-cluster Git server refused or failed a request."""


class GitError(SeedbedError):
    """A git command failed (for example a rejected push)."""

    def __init__(self, message: str, *, fix: str | None = None, transient: bool = False) -> None:
        super().__init__(message, fix=fix)
        # The connection broke (a dropped port-forward stream, say): the same command may well work.
        self.transient = transient


class ArchiveError(SeedbedError):
    """A backup archive cannot be read, decrypted or trusted."""


class Refused(SeedbedError):
    """seedbed stopped on purpose to protect something (two default StorageClasses, a rate limit...)."""
