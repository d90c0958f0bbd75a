"""Where the lab finds the real upstream files it serves (release manifests, the Gitea chart, API specs)."""

from __future__ import annotations

import os
from pathlib import Path

ENV = "SEEDBED_UPSTREAM_FIXTURES"


def upstream_dir() -> Path:
    """``$SEEDBED_UPSTREAM_FIXTURES``, else ``../shared/fixtures/upstream`` beside the checkout."""
    checkout = Path(__file__).resolve().parents[2]  # src/seedbed_lab/upstream.py -> the checkout
    return Path(os.environ.get(ENV) or checkout.parent / "shared" / "fixtures" / "upstream")
