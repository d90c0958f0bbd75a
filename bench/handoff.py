"""check-handoff on the largest real GitOps tree, next to `kubectl kustomize` of the same paths.

    .venv/bin/python bench/handoff.py [--runs 3] [--tree Tomyail-talos-cluster]

check-handoff reads the repository as kustomize-controller applies it: one kustomize build per Flux
Kustomization path, then parsing, substitution and the checks. The baseline is what no reader of
the repository can avoid: `kubectl kustomize` of exactly the paths check-handoff built, run
serially and with the same number of concurrent builds check-handoff uses. Goal (issue 12):
check-handoff within 2x of the kustomize builds it needs (the concurrent baseline). The process is
measured with an empty build cache (seedbed.buildcache), and again on an unchanged tree with the
outputs kept from an earlier run, as a re-run of `bootstrap` or `plan` reads the work tree.

Printed: wall seconds (median) and CPU seconds (user+sys, children included) of each side.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
UPSTREAM = Path(os.environ.get("SEEDBED_UPSTREAM_FIXTURES", ROOT.parent / "shared" / "fixtures" / "upstream"))
TREES = {  # tree -> (Flux path, gitServer.namespace)
    "Tomyail-talos-cluster": ("kubernetes/flux/cluster", "default"),
    "marcolongol-homelab-cluster": ("kubernetes/flux/cluster", "default"),
    "lordmathis-dev-cluster": ("clusters/prod", "forgejo"),
}


def _cpu() -> float:
    own = resource.getrusage(resource.RUSAGE_SELF)
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


def measure(fn, runs: int) -> tuple[float, float]:
    walls, cpus = [], []
    for _ in range(runs):
        c0, t0 = _cpu(), time.perf_counter()
        fn()
        walls.append(time.perf_counter() - t0)
        cpus.append(_cpu() - c0)
    return statistics.median(walls), statistics.median(cpus)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--tree", default="Tomyail-talos-cluster", choices=sorted(TREES))
    args = parser.parse_args()

    sys.path.insert(0, str(ROOT / "src"))
    from seedbed import fluxrepo
    from seedbed.config import Config, FluxConfig, GitServerConfig
    from seedbed.handoff import check_handoff

    tree = UPSTREAM / "gitops-trees" / args.tree
    if not tree.is_dir():
        print(f"missing fixture {tree} (../shared/fixtures/upstream/gitops-trees/)", file=sys.stderr)
        return 2
    flux_path, namespace = TREES[args.tree]
    cfg = Config(flux=FluxConfig(path=flux_path), git_server=GitServerConfig(namespace=namespace))
    kustomize = fluxrepo.find_kustomize()
    files = sum(1 for p in tree.rglob("*") if p.is_file())

    report = check_handoff(tree, cfg, kustomize=kustomize)  # warm-up; and which paths it builds
    paths = sorted(set(fluxrepo.read(tree, flux_path, kustomize=kustomize).builds))

    def build(path: str) -> None:
        subprocess.run([*kustomize.argv, "--load-restrictor", "LoadRestrictionsNone", str(tree / path)],
                       capture_output=True, check=False, timeout=fluxrepo.BUILD_TIMEOUT)

    def serial() -> None:
        for p in paths:
            build(p)

    def concurrent() -> None:
        with ThreadPoolExecutor(fluxrepo.MAX_JOBS) as pool:
            list(pool.map(build, paths))

    with tempfile.TemporaryDirectory() as tmp:
        config = Path(tmp) / "seedbed.yaml"
        config.write_text(json.dumps({"repo": {"path": str(tree)}, "flux": {"path": flux_path},
                                      "gitServer": {"namespace": namespace}}))
        seedbed = shutil.which("seedbed", path=str(ROOT / ".venv" / "bin")) or "seedbed"
        runs = iter(range(10**6))
        kept = Path(tmp) / "kept-cache"

        def cli(cache: Path | None = None) -> None:
            # XDG_CACHE_HOME: a fresh build cache (seedbed.buildcache) for every cold run, one kept
            # cache for the warm runs (a re-run on an unchanged tree).
            env = {**os.environ, "XDG_CACHE_HOME": str(cache or Path(tmp) / f"cold-{next(runs)}")}
            subprocess.run([seedbed, "--config", str(config), "check-handoff"], capture_output=True, check=False,
                           env=env)

        cli(kept)  # fills the kept cache
        rows = [
            ("check-handoff (in-process)", measure(lambda: check_handoff(tree, cfg, kustomize=kustomize), args.runs)),
            ("seedbed check-handoff (fresh process)", measure(cli, args.runs)),
            ("seedbed check-handoff, unchanged tree (kept builds)", measure(lambda: cli(kept), args.runs)),
            (f"{kustomize.name}, {len(paths)} paths, {fluxrepo.MAX_JOBS} at a time", measure(concurrent, args.runs)),
            (f"{kustomize.name}, {len(paths)} paths, one at a time", measure(serial, args.runs)),
        ]
    print(f"tree {args.tree}: {files} files, {len(paths)} kustomize builds, "
          f"{len(report.findings)} findings; median of {args.runs} runs, {os.cpu_count()} CPUs")
    print(f"{'':44} {'wall s':>8} {'CPU s':>8}")
    for name, (wall, cpu) in rows:
        print(f"{name:54} {wall:8.2f} {cpu:8.2f}")
    concurrent_wall = next(m[0] for name, m in rows if name.endswith(f"{fluxrepo.MAX_JOBS} at a time"))
    ratio = rows[0][1][0] / concurrent_wall
    print(f"goal: check-handoff <= 2x the concurrent kustomize builds: {ratio:.2f}x "
          f"{'PASS' if ratio <= 2 else 'FAIL'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
