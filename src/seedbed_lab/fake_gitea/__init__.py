"""A fake Gitea for tests: the REST endpoints seedbed uses, and real bare repositories over smart HTTP."""

from .server import FakeGitea, default_spec_paths

__all__ = ["FakeGitea", "default_spec_paths"]
