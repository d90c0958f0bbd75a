"""The run-scoped Git-server service: one port-forward per run, hints that name the real namespace."""

from __future__ import annotations

import base64
import socket
from contextlib import asynccontextmanager
from typing import Any

import pytest

from seedbed.config import Config, from_mapping
from seedbed.errors import ClusterError, GitServerError
from seedbed.gitserver import GitServer, secret_value
from seedbed.output import Output
from seedbed.sshkeys import generate_ed25519


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class FakeKube:
    """Just enough of the Kubernetes client: the two Secrets and a port-forward to a closed port."""

    def __init__(self, namespace: str) -> None:
        host = generate_ed25519("host")
        enc = base64.b64encode
        self.secrets = {
            "gitea-admin": {"data": {"password": enc(b"pw-" + b"x" * 20).decode()}},
            "gitea-ssh-host-key": {"data": {"ssh_host_ed25519_key": enc(host.private_openssh.encode()).decode()}},
        }
        self.namespace = namespace
        self.forwards: list[tuple[str, str | None]] = []

    async def get(self, api: str, kind: str, name: str, namespace: str | None = None) -> Any:
        assert namespace == self.namespace, "the Secrets are read from the configured namespace"
        return self.secrets.get(name)

    def port_forward(self, namespace: str, *, port: int, service: str | None = None, pod: str | None = None) -> Any:
        @asynccontextmanager
        async def forward() -> Any:
            self.forwards.append((namespace, service))
            yield _closed_port()
        return forward()


async def test_a_git_server_that_never_answers_names_its_own_namespace_in_the_fix() -> None:
    cfg = from_mapping({"gitServer": {"namespace": "git", "readyTimeout": 0.5}})
    kube = FakeKube("git")
    server = GitServer(cfg, kube, Output(quiet=True))  # type: ignore[arg-type]
    with pytest.raises(GitServerError) as e:
        await server.client()
    assert "kubectl -n git " in (e.value.fix or "") and "-n gitea" not in (e.value.fix or "")
    assert kube.forwards == [("git", "gitea-http")]
    await server.close()


async def test_the_secrets_are_read_once_per_run() -> None:
    cfg = Config()
    kube = FakeKube("gitea")
    server = GitServer(cfg, kube, Output(quiet=True))  # type: ignore[arg-type]
    password, key = await server.secrets()
    kube.secrets.clear()
    assert await server.secrets() == (password, key)


@pytest.mark.parametrize("data", [{"password": "%%%"}, {"password": base64.b64encode(b"\xff\xfe").decode()}])
def test_damaged_secret_data_names_the_secret_and_the_fix(data: dict[str, str]) -> None:
    with pytest.raises(ClusterError) as e:
        secret_value({"data": data}, "password", what="Secret gitea/gitea-admin")
    assert "Secret gitea/gitea-admin" in e.value.message and "re-run `seedbed bootstrap`" in (e.value.fix or "")
