"""The lab: a whole homelab on loopback, for the tests, the benchmarks and `seedbed demo`.

A Kubernetes API server emulator (``emulator``), simulated Longhorn and Flux controllers, a fake
Gitea serving real git (``fake_gitea``), and an SSH git server (``sshgit``), put together by
``lab.Lab``. Shipped with the ``demo`` extra; the normal commands never import it (the
import-linter contract in pyproject.toml).
"""
