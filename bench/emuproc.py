"""The Kubernetes API emulator (or the whole Lab) in a child process, driven over a pipe.

Why a child process: the emulator is Python. Run in the benchmark's own process it would share
the GIL with in-process seedbed (and with nothing when kubectl, a separate process, is measured),
which would tilt every comparison against seedbed. In its own process it is a separate server
for both tools, as a real API server is.

Protocol: one JSON object per line on stdin (``{"op": ..., ...}``), one JSON reply per line on
the original stdout. Anything the emulator prints goes to stderr.

Client side: ``EmuProc`` (used by bench/run.py).
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
TESTS = ROOT / "tests"
UPSTREAM = ROOT.parent / "shared" / "fixtures" / "upstream"
WRITE_METHODS = ("POST", "PUT", "PATCH", "DELETE")


# --------------------------------------------------------------------------- client (benchmark side)


class EmuProc:
    """A child process holding at most one emulator (or Lab) at a time."""

    def __init__(self, latency_ms: float = 0.0) -> None:
        """latency_ms: the ROUND-TRIP time of the simulated link for every emulator this process starts
        (src/seedbed_lab/emulator/server.py, Emulator(latency=...): half on the way in, half on the way out,
        watch events one way, one more round trip per new connection)."""
        self.latency_ms = latency_ms
        self.proc = subprocess.Popen([sys.executable, str(Path(__file__).resolve()), "--serve",
                                      "--latency-ms", str(latency_ms)],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, bufsize=1,
                                     cwd=str(ROOT))

    def call(self, op: str, **kw: Any) -> dict[str, Any]:
        assert self.proc.stdin and self.proc.stdout
        self.proc.stdin.write(json.dumps({"op": op, **kw}) + "\n")
        self.proc.stdin.flush()
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError(f"the emulator process died during {op!r} (see stderr above)")
        reply = json.loads(line)
        if "error" in reply:
            raise RuntimeError(f"emulator process: {op}: {reply['error']}")
        return reply

    def fresh(self, root: Path) -> Path:
        """Stop the current emulator, start a new empty one; return its kubeconfig."""
        return Path(self.call("fresh", root=str(root))["kubeconfig"])

    def lab(self, root: Path) -> tuple[Path, Path]:
        """Start a Lab (emulator + fake Gitea + simulated controllers); return (kubeconfig, seedbed.yaml)."""
        r = self.call("lab", root=str(root))
        return Path(r["kubeconfig"]), Path(r["config"])

    def reset(self) -> None:
        self.call("reset")

    def stats(self) -> dict[str, Any]:
        """Requests since the last reset: total, writes that changed state, write-method requests, by method,
        and the sequential round trips on the critical path (Emulator.sequential_round_trips)."""
        return self.call("stats")

    def close(self) -> None:
        if self.proc.poll() is None:
            with contextlib.suppress(Exception):
                self.call("stop")
            assert self.proc.stdin
            self.proc.stdin.close()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def __enter__(self) -> EmuProc:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# --------------------------------------------------------------------------- server (child side)


def _label(method: str, path: str, query: dict[str, str]) -> str:
    """What a request was, for reading a critical path: discovery, or VERB resource[/subresource]."""
    parts = [p for p in path.split("/") if p]
    if not parts or parts[0] in ("version", "openapi", "healthz", "readyz", "livez") \
            or (parts[0] == "api" and len(parts) <= 2) or (parts[0] == "apis" and len(parts) <= 3):
        return "discovery"
    rest = parts[2:] if parts[0] == "api" else parts[3:]
    if len(rest) >= 3 and rest[0] == "namespaces":
        rest = rest[2:]
    resource = rest[0] + (f"/{rest[2]}" if len(rest) > 2 else "")
    if method == "GET":
        verb = "WATCH" if query.get("watch") in ("1", "true") else "GET" if len(rest) > 1 else "LIST"
    else:
        verb = method
    return f"{verb} {resource}"


def _runs(labels: list[str]) -> str:
    """Consecutive equal labels folded: 'discovery x3 > PATCH secrets > GET pods x2'."""
    out: list[list[Any]] = []
    for label in labels:
        if out and out[-1][0] == label:
            out[-1][1] += 1
        else:
            out.append([label, 1])
    return " > ".join(f"{lab} x{n}" if n > 1 else lab for lab, n in out)


def _populate_backup(emu: Any, secrets: int, certificates: int, namespaces: int) -> dict[str, Any]:
    """cert-manager CRDs (v1.21.1), then Secrets and Certificates spread over namespaces.

    Every Certificate names a TLS Secret that carries the cert-manager.io/* annotations cert-manager
    writes; the remaining Secrets are plain Opaque ones (app credentials) in the same namespaces.
    """
    import base64

    import yaml

    crd_dir = UPSTREAM / "cert-manager-v1.21.1-crds"
    for path in sorted(crd_dir.glob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            if doc:
                emu.put(doc)
    emu.settle()
    names = [f"team-{i:02d}" for i in range(namespaces)]
    for ns in names:
        emu.put({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}})
    # ~2 KB of PEM-ish data per TLS Secret, like a real certificate + key.
    crt = base64.b64encode(os.urandom(1400)).decode()
    key = base64.b64encode(os.urandom(900)).decode()
    for i in range(certificates):
        ns = names[i % namespaces]
        name = f"site-{i:04d}"
        secret = f"{name}-tls"
        emu.put({
            "apiVersion": "cert-manager.io/v1", "kind": "Certificate",
            "metadata": {"name": name, "namespace": ns, "labels": {"app": name}},
            "spec": {"secretName": secret, "dnsNames": [f"{name}.{ns}.example.org"],
                     "issuerRef": {"name": "letsencrypt-staging", "kind": "ClusterIssuer", "group": "cert-manager.io"},
                     "privateKey": {"algorithm": "ECDSA", "size": 256, "rotationPolicy": "Always"}},
            "status": {"conditions": [{"type": "Ready", "status": "True", "reason": "Ready",
                                       "message": "Certificate is up to date and has not expired",
                                       "lastTransitionTime": "2026-01-01T00:00:00Z"}],
                       "notAfter": "2026-04-01T00:00:00Z", "notBefore": "2026-01-01T00:00:00Z",
                       "renewalTime": "2026-03-02T00:00:00Z", "revision": 1},
        })
        emu.put({
            "apiVersion": "v1", "kind": "Secret", "type": "kubernetes.io/tls",
            "metadata": {"name": secret, "namespace": ns, "annotations": {
                "cert-manager.io/alt-names": f"{name}.{ns}.example.org",
                "cert-manager.io/certificate-name": name,
                "cert-manager.io/common-name": f"{name}.{ns}.example.org",
                "cert-manager.io/ip-sans": "", "cert-manager.io/uri-sans": "",
                "cert-manager.io/issuer-group": "cert-manager.io",
                "cert-manager.io/issuer-kind": "ClusterIssuer",
                "cert-manager.io/issuer-name": "letsencrypt-staging"}},
            "data": {"tls.crt": crt, "tls.key": key, "ca.crt": ""},
        })
    for i in range(secrets - certificates):
        ns = names[i % namespaces]
        emu.put({"apiVersion": "v1", "kind": "Secret", "type": "Opaque",
                 "metadata": {"name": f"app-{i:04d}", "namespace": ns, "labels": {"app": f"app-{i % 50}"}},
                 "data": {"username": base64.b64encode(f"user{i}".encode()).decode(),
                          "password": base64.b64encode(os.urandom(24)).decode(),
                          "config.json": base64.b64encode(os.urandom(300)).decode()}})
    emu.settle()
    return {"namespaces": names}


def _serve(latency: float) -> None:
    out = os.fdopen(os.dup(sys.stdout.fileno()), "w", buffering=1)
    os.dup2(sys.stderr.fileno(), sys.stdout.fileno())  # stray prints must not corrupt the protocol
    sys.path.insert(0, str(TESTS))
    import logging

    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    from seedbed_lab.emulator import Emulator

    emu: Any = None
    lab: Any = None
    cpu0 = 0.0  # this process's CPU time at the last fresh/lab/reset: the server's work since then

    def stop() -> None:
        nonlocal emu, lab
        if lab is not None:
            lab.stop()
        elif emu is not None:
            emu.stop()
        emu = lab = None

    for line in sys.stdin:
        if not line.strip():
            continue
        cmd = json.loads(line)
        op = cmd.pop("op")
        reply: dict[str, Any]
        try:
            if op == "fresh":
                stop()
                emu = Emulator(latency=latency).start()
                root = Path(cmd["root"])
                root.mkdir(parents=True, exist_ok=True)
                kc = emu.write_kubeconfig(root / "kubeconfig")
                cpu0 = time.process_time()
                reply = {"kubeconfig": str(kc)}
            elif op == "lab":
                stop()
                from seedbed_lab.lab import Lab, make_worktree

                root = Path(cmd["root"])
                root.mkdir(parents=True, exist_ok=True)
                lab = Lab(root).start()
                emu = lab.emu
                emu.latency = latency
                tree = make_worktree(root / "gitops")
                config = lab.write_config(tree)
                reply = {"kubeconfig": str(lab.kubeconfig), "config": str(config)}
            elif op == "reset":
                emu.settle()
                emu.reset_requests()
                cpu0 = time.process_time()
                reply = {}
            elif op == "stats":
                emu.settle()
                reqs = list(emu.requests)
                by_method: dict[str, int] = {}
                for r in reqs:
                    by_method[r.method] = by_method.get(r.method, 0) + 1
                path = emu.critical_path()
                reply = {"requests": len(reqs), "writes": emu.writes(), "sequential": len(path),
                         "critical_path": _runs([_label(r.method, r.path, r.query) for r in path]),
                         "write_requests": sum(1 for r in reqs if r.method in WRITE_METHODS),
                         "by_method": by_method,
                         "errors": sum(1 for r in reqs if r.status >= 400 and r.status != 404),
                         "server_cpu": time.process_time() - cpu0,
                         "write_paths": sorted({f"{r.method} {r.path}" for r in reqs if r.method in WRITE_METHODS})}
            elif op == "populate_backup":
                reply = _populate_backup(emu, int(cmd["secrets"]), int(cmd["certificates"]),
                                         int(cmd["namespaces"]))
            elif op == "stop":
                stop()
                reply = {}
            else:
                reply = {"error": f"unknown op {op!r}"}
        except Exception as e:  # reported to the benchmark, which stops
            import traceback

            traceback.print_exc()
            reply = {"error": f"{type(e).__name__}: {e}"}
        out.write(json.dumps(reply) + "\n")
    stop()


if __name__ == "__main__":
    if sys.argv[1:2] == ["--serve"] and sys.argv[2:3] == ["--latency-ms"] and len(sys.argv) == 4:
        _serve(float(sys.argv[3]) / 1000)
    else:
        sys.exit("bench/emuproc.py is started by bench/run.py (with --serve)")
