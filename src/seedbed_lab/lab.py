"""A whole homelab on loopback, for end-to-end tests and benchmarks.

- the Kubernetes API emulator;
- longhorn-manager, simulated: it creates the `longhorn` StorageClass from the
  `longhorn-storageclass` ConfigMap, as the real manager does;
- the Git server: a fake Gitea that serves real git over smart HTTP, reached through the
  emulator's port-forward, and which learns the admin password from the Secret seedbed applies;
- Flux's source- and kustomize-controllers, simulated: on a GitRepository, a real `git clone`
  over SSH with exactly the `identity` and `known_hosts` of the `flux-system` Secret, against an
  SSH git server that presents the host key from the cluster and accepts only the deploy keys
  registered in Gitea. Ready is set at the cloned revision; a failure sets Ready=False with the
  message, as source-controller does. The Kustomization applies the revision's tree (the
  flux-system folder included) as kustomize-controller does: its field manager and its cleanup of
  other managers, and SOPS decryption with the keys of ``spec.decryption``'s Secret, by the real
  ``sops`` binary (emulator/kustomize_controller.py);
- helm-controller, simulated: a HelmRelease renders the pinned chart's objects from the real chart
  files (emulator/helm_controller.py), so the fake Gitea is reached through the Service the chart
  makes.
"""

from __future__ import annotations

import base64
import os
import subprocess
import tempfile
import threading
from pathlib import Path
from typing import Any

import yaml

from seedbed.render import gitserver as gitserver_render
from seedbed_lab.emulator import Emulator, kustomize_controller
from seedbed_lab.emulator.helm_controller import HelmController
from seedbed_lab.fake_gitea import FakeGitea
from seedbed_lab.sshgit import SSHGitServer
from seedbed_lab.upstream import upstream_dir


def _b64(obj: dict[str, Any], key: str) -> str:
    return base64.b64decode((obj.get("data") or {})[key]).decode()


class Lab:
    def __init__(self, root: Path, *, cluster: str = "homelab", flavor: str = "gitea", nodes: int = 1,
                 upstream: Path | None = None) -> None:
        self.root = root
        self.cluster = cluster
        self.emu = Emulator(nodes=nodes)
        self.gitea = FakeGitea(flavor=flavor, root=root / "gitea-data")
        self.ssh: SSHGitServer | None = None
        self.flux_clones: list[str] = []  # revisions the simulated source-controller fetched
        self.flux_errors: list[str] = []
        self._trees: dict[str, Path] = {}  # revision -> files of that revision, for kustomize-controller
        self.helm = HelmController(self.emu, upstream or upstream_dir())
        self.kustomize_errors: list[str] = []
        self._lock = threading.Lock()
        self._fetch_lock = threading.Lock()

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> Lab:
        self.emu.start()
        self.gitea.start()
        self.kubeconfig = self.root / "kubeconfig"
        self.emu.write_kubeconfig(self.kubeconfig)
        self.emu.route_port("gitea", 3000, "127.0.0.1", self.gitea.port)
        self.emu.on_apply("ConfigMap", self._longhorn_manager)
        self.emu.on_apply("Secret", self._gitea_admin)
        self.emu.on_apply("GitRepository", self._source_controller)
        self.emu.on_apply("Kustomization", self._kustomize_controller)
        self.helm.attach()
        return self

    def stop(self) -> None:
        if self.ssh:
            self.ssh.stop()
        self.gitea.stop()
        self.emu.stop()

    def __enter__(self) -> Lab:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ------------------------------------------------------------------ the user's side

    def write_config(self, worktree: Path, **sections: Any) -> Path:
        doc: dict[str, Any] = {
            "cluster": {"name": self.cluster, "kubeconfig": str(self.kubeconfig)},
            "longhorn": {"replicaCount": 1},
            "repo": {"owner": "homelab", "ownerType": "org", "name": "gitops", "path": str(worktree)},
            "certificates": {"acme": "staging", "email": "admin@example.org", "domain": "example.org"},
        }
        for k, v in sections.items():
            doc[k] = {**doc.get(k, {}), **v}
        path = self.root / "seedbed.yaml"
        path.write_text(yaml.safe_dump(doc, sort_keys=False))
        return path

    def commit_to_server(self, files: dict[str, str | None], message: str, *, owner: str = "homelab",
                         repo: str = "gitops", branch: str = "main") -> str:
        """A user's commit pushed straight to the server's repository (None deletes a file); its id."""
        env = {**os.environ, "GIT_AUTHOR_NAME": "Op", "GIT_AUTHOR_EMAIL": "op@example.org",
               "GIT_COMMITTER_NAME": "Op", "GIT_COMMITTER_EMAIL": "op@example.org"}
        with tempfile.TemporaryDirectory(prefix="lab-user-") as tmp:
            work = Path(tmp) / "w"
            subprocess.run(["git", "clone", "-q", "-b", branch, str(self.gitea.bare_path(owner, repo)), str(work)],
                           check=True, env=env)
            for rel, text in files.items():
                if text is None:
                    (work / rel).unlink()
                else:
                    (work / rel).parent.mkdir(parents=True, exist_ok=True)
                    (work / rel).write_text(text)
            subprocess.run(["git", "-C", str(work), "commit", "-q", "-am", message], check=True, env=env)
            subprocess.run(["git", "-C", str(work), "push", "-q", "origin", branch], check=True, env=env)
            return subprocess.run(["git", "-C", str(work), "rev-parse", "HEAD"], capture_output=True, text=True,
                                  check=True, env=env).stdout.strip()

    def flux_reconcile(self, namespace: str = "flux-system", name: str = "flux-system") -> None:
        """What Flux's next interval does: fetch the branch, apply its tree, let helm-controller act."""
        repo = self.emu.get("source.toolkit.fluxcd.io/v1", "GitRepository", name, namespace)
        assert repo is not None
        self._fetch_one(namespace, name, repo)
        repo = self.emu.get("source.toolkit.fluxcd.io/v1", "GitRepository", name, namespace)
        revision = (((repo or {}).get("status") or {}).get("artifact") or {}).get("revision")
        assert revision, (repo or {}).get("status")
        self.reconcile_kustomization(namespace, name, revision)
        self.settle()

    def settle(self) -> None:
        """Wait until helm-controller has acted on every HelmRelease's current generation."""
        import time

        for _ in range(1200):
            self.emu.settle()
            pending = [hr for hr in self.emu.list("helm.toolkit.fluxcd.io/v2", "HelmRelease")
                       if (hr.get("status") or {}).get("observedGeneration") != hr["metadata"].get("generation")]
            if not pending and self.helm.idle():
                return
            time.sleep(0.05)
        raise AssertionError("helm-controller never caught up")

    # ------------------------------------------------------------------ simulated controllers

    def _longhorn_manager(self, emu: Emulator, obj: dict[str, Any]) -> None:
        md = obj.get("metadata") or {}
        if md.get("name") != "longhorn-storageclass" or md.get("namespace") != "longhorn-system":
            return
        sc = yaml.safe_load((obj.get("data") or {}).get("storageclass.yaml", "")) or {}
        if sc.get("kind") == "StorageClass" and emu.get("storage.k8s.io/v1", "StorageClass", sc["metadata"]["name"]) is None:
            threading.Thread(target=emu.put, args=(sc,), daemon=True).start()

    def _gitea_admin(self, emu: Emulator, obj: dict[str, Any]) -> None:
        md = obj.get("metadata") or {}
        if md.get("name") != "gitea-admin" or md.get("namespace") != "gitea":
            return
        password = _b64(obj, gitserver_render.ADMIN_PASSWORD_KEY)
        user = self.gitea.users[self.gitea.admin_user.lower()]
        user["password"] = password

    def _source_controller(self, emu: Emulator, obj: dict[str, Any]) -> None:
        md = obj["metadata"]
        kustomize_controller.in_background(emu, self._fetch_one, md["namespace"], md["name"], obj)

    def _kustomize_controller(self, emu: Emulator, obj: dict[str, Any]) -> None:
        md = obj["metadata"]
        kustomize_controller.in_background(emu, self._reconcile, md["namespace"], md["name"])

    def _fetch_one(self, namespace: str, name: str, repo: dict[str, Any]) -> None:
        # One fetch at a time, as the controller's work queue does for one object: each fetch
        # restarts the SSH server, which would cut a concurrent clone.
        with self._fetch_lock:
            self._fetch(namespace, name, repo)

    def _fetch(self, namespace: str, name: str, repo: dict[str, Any]) -> None:
        spec = repo.get("spec") or {}
        secret = self.emu.get("v1", "Secret", (spec.get("secretRef") or {}).get("name", ""), namespace)
        host = self.emu.get("v1", "Secret", "gitea-ssh-host-key", "gitea")
        branch = (spec.get("ref") or {}).get("branch", "main")
        try:
            if secret is None or host is None:
                raise RuntimeError(f"secret {namespace}/{(spec.get('secretRef') or {}).get('name')} not found")
            revision = self._clone(spec["url"], branch, secret, _b64(host, gitserver_render.HOST_KEY_FILE))
        except Exception as e:  # reported as source-controller would: Ready=False with the message
            self.flux_errors.append(str(e))
            self.emu.set_status("source.toolkit.fluxcd.io/v1", "GitRepository", name, namespace, {
                "conditions": [{"type": "Ready", "status": "False", "reason": "GitOperationFailed",
                                "message": str(e), "lastTransitionTime": "2026-01-01T00:00:00Z"}]})
            return
        self.flux_clones.append(revision)
        before = ((repo.get("status") or {}).get("artifact") or {}).get("revision")
        self.emu.set_status("source.toolkit.fluxcd.io/v1", "GitRepository", name, namespace, {
            "observedGeneration": repo["metadata"].get("generation", 1),
            "artifact": {"revision": f"{branch}@sha1:{revision}"},
            "conditions": [{"type": "Ready", "status": "True", "reason": "Succeeded",
                            "message": f"stored artifact for revision '{branch}@sha1:{revision}'",
                            "lastTransitionTime": "2026-01-01T00:00:00Z"}]})
        # kustomize-controller watches its source and reconciles on a new artifact revision
        # (kustomize-controller v1.9.x internal/controller/kustomization_controller.go SetupWithManager:
        # the GitRepository watch with SourceRevisionChangePredicate).
        if before and before != f"{branch}@sha1:{revision}":
            for ks in self.emu.list("kustomize.toolkit.fluxcd.io/v1", "Kustomization", namespace):
                ref = (ks.get("spec") or {}).get("sourceRef") or {}
                if ref.get("kind") == "GitRepository" and ref.get("name") == name:
                    self.reconcile_kustomization(namespace, ks["metadata"]["name"], f"{branch}@sha1:{revision}")

    def _clone(self, url: str, branch: str, secret: dict[str, Any], host_private: str) -> str:
        # ssh://git@gitea-ssh.gitea.svc.cluster.local/owner/repo.git -> host alias + path
        rest = url.removeprefix("ssh://git@")
        alias, _, path = rest.partition("/")
        deploy_keys = [k["key"] for k in self.gitea.deploy_keys]
        with self._lock:
            if self.ssh is not None:
                self.ssh.stop()
            self.ssh = SSHGitServer(host_private, deploy_keys, self.gitea.root).start()
            # The pod's SSH port (SSH_LISTEN_PORT), for port-forwards to the SSH Service.
            self.emu.route_port("gitea", gitserver_render.SSH_LISTEN_PORT, "127.0.0.1", self.ssh.port)
        # Inside the lab's folder: a clone still running in the background when a run ends (Flux's
        # next fetch) must not leave a folder beside it in the user's TMPDIR.
        with tempfile.TemporaryDirectory(prefix="lab-flux-", dir=self.root) as tmp:
            identity = Path(tmp) / "identity"
            fd = os.open(identity, os.O_WRONLY | os.O_CREAT, 0o600)
            with os.fdopen(fd, "w") as f:
                f.write(_b64(secret, "identity"))
            known = Path(tmp) / "known_hosts"
            known.write_text(_b64(secret, "known_hosts"))
            ssh = (f"ssh -i {identity} -o UserKnownHostsFile={known} -o StrictHostKeyChecking=yes "
                   f"-o IdentitiesOnly=yes -o BatchMode=yes -o HostKeyAlias={alias.split(':')[0]} "
                   f"-p {self.ssh.port}")
            dest = Path(tmp) / "clone"
            run = subprocess.run(["git", "clone", "--quiet", "--branch", branch,
                                  f"ssh://git@127.0.0.1/{path}", str(dest)],
                                 env={**os.environ, "GIT_SSH_COMMAND": ssh, "GIT_TERMINAL_PROMPT": "0"},
                                 capture_output=True, text=True, timeout=60)
            if run.returncode != 0:
                raise RuntimeError(f"failed to checkout and determine revision: {run.stderr.strip()}")
            revision = subprocess.run(["git", "-C", str(dest), "rev-parse", "HEAD"], capture_output=True,
                                      text=True, check=True).stdout.strip()
            keep = self.root / "flux-artifacts" / revision
            if not keep.exists():
                subprocess.run(["git", "-C", str(dest), "checkout-index", "-a", f"--prefix={keep}/"], check=True)
            self._trees[revision] = keep
            return revision

    def _reconcile(self, namespace: str, name: str) -> None:
        import time

        for _ in range(600):
            repo = self.emu.get("source.toolkit.fluxcd.io/v1", "GitRepository", "flux-system", namespace)
            revision = (((repo or {}).get("status") or {}).get("artifact") or {}).get("revision")
            if revision:
                self.reconcile_kustomization(namespace, name, revision)
                return
            time.sleep(0.05)

    def reconcile_kustomization(self, namespace: str, name: str, revision: str) -> None:
        """Apply the tree of ``revision`` and set the Kustomization's status, as kustomize-controller does."""
        ks = self.emu.get("kustomize.toolkit.fluxcd.io/v1", "Kustomization", name, namespace)
        try:
            self._apply_tree(revision.rpartition(":")[2], ks or {"metadata": {"name": name, "namespace": namespace}},
                             namespace, name)
        except (kustomize_controller.ArtifactFailed, kustomize_controller.BuildFailed,
                kustomize_controller.ApplyFailed) as e:
            self.kustomize_errors.append(str(e))
            self.emu.set_status("kustomize.toolkit.fluxcd.io/v1", "Kustomization", name, namespace, {
                "observedGeneration": (ks or {}).get("metadata", {}).get("generation", 1),
                "conditions": [{"type": "Ready", "status": "False", "reason": e.reason,
                                "message": str(e), "lastTransitionTime": "2026-01-01T00:00:00Z"}]})
            return
        self.emu.set_status("kustomize.toolkit.fluxcd.io/v1", "Kustomization", name, namespace, {
            "observedGeneration": (ks or {}).get("metadata", {}).get("generation", 1),
            "lastAppliedRevision": revision,
            "conditions": [{"type": "Ready", "status": "True", "reason": "ReconciliationSucceeded",
                            "message": f"Applied revision: {revision}",
                            "lastTransitionTime": "2026-01-01T00:00:00Z"}]})

    def _apply_tree(self, revision: str, kustomization: dict[str, Any], namespace: str, name: str) -> None:
        """What kustomize-controller does: import the decryption keys, build spec.path with the real
        kustomize as it does (seedbed.fluxrepo.build: the generated kustomization for a path without
        one, targetNamespace, patches, images, components), decrypt, substitute the postBuild
        variables, refuse a Secret still encrypted, apply each object (emulator/kustomize_controller.py)."""
        from seedbed import fluxrepo

        tree = self._trees.get(revision)
        if tree is None:
            return
        spec = kustomization.get("spec") or {}
        decrypting = bool(spec.get("decryption"))
        keys = kustomize_controller.import_keys(self.emu, kustomization) if decrypting else None
        variables = kustomize_controller.load_variables(self.emu, kustomization)
        try:
            text = fluxrepo.build(tree, spec)
        except fluxrepo.PathNotFound as e:  # checked before the build, as kustomize-controller does
            raise kustomize_controller.ArtifactFailed(str(e)) from None
        except fluxrepo.BuildFailed as e:
            raise kustomize_controller.BuildFailed(f"kustomize build failed: {e}") from None
        built: list[dict[str, Any]] = []
        for doc in yaml.safe_load_all(text):
            if not isinstance(doc, dict):
                continue
            if decrypting:
                doc = kustomize_controller.decrypt_resource(doc, keys)
            built.append(kustomize_controller.substitute(doc, kustomization, variables))
        kustomize_controller.refuse_encrypted(built)
        # ssa ApplyAllStaged (fluxcd/pkg): CRDs and Namespaces first, then the rest in build order.
        built.sort(key=lambda d: d.get("kind") not in ("CustomResourceDefinition", "Namespace"))
        for doc in built:
            kustomize_controller.apply(self.emu, doc, name, namespace)


def make_worktree(path: Path, files: dict[str, str] | None = None, *, branch: str = "main") -> Path:
    """A user's GitOps work tree with one commit."""
    path.mkdir(parents=True, exist_ok=True)
    files = files or {"apps/README.md": "# apps\n"}
    for rel, text in files.items():
        (path / rel).parent.mkdir(parents=True, exist_ok=True)
        (path / rel).write_text(text)
    env = {**os.environ, "GIT_AUTHOR_NAME": "Op", "GIT_AUTHOR_EMAIL": "op@example.org",
           "GIT_COMMITTER_NAME": "Op", "GIT_COMMITTER_EMAIL": "op@example.org"}
    subprocess.run(["git", "init", "-q", "-b", branch, str(path)], check=True, env=env)
    subprocess.run(["git", "-C", str(path), "add", "-A"], check=True, env=env)
    subprocess.run(["git", "-C", str(path), "commit", "-q", "-m", "initial tree"], check=True, env=env)
    return path
