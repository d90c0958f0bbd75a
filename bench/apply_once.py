"""One cold seedbed apply in a fresh interpreter: what a one-shot `seedbed ...` process would pay.

seedbed has no generic "apply this bundle" command, so this is the nearest honest stand-in for a
process a user starts: interpreter start-up + imports (seedbed.kube, yamlutil, config) + YAML parse
+ connect + Kube.apply + close. Prints one JSON line: {"objects", "requests", "writes"}.

    python bench/apply_once.py KUBECONFIG BUNDLE.yaml [BUNDLE.yaml ...]
"""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path


async def main(kubeconfig: str, bundles: list[str]) -> dict[str, int]:
    from seedbed import yamlutil
    from seedbed.config import ClusterConfig
    from seedbed.kube import Kube

    objs = []
    for b in bundles:
        objs += yamlutil.load_all(Path(b).read_text())
    async with await Kube.connect(ClusterConfig(kubeconfig=kubeconfig)) as kube:
        await kube.apply(objs)
        return {"objects": len(objs), "requests": kube.stats.requests, "writes": kube.stats.writes}


if __name__ == "__main__":
    print(json.dumps(asyncio.run(main(sys.argv[1], sys.argv[2:]))))
