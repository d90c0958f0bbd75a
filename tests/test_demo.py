"""`seedbed demo` (issue 18): the whole journey on the lab, with the real commands, then nothing left behind.

The demo runs through the command line in-process, as a user types it. The lab's class is wrapped
so the test can see each simulated cluster just before the demo stops it.
"""

from __future__ import annotations

import re
import stat
import sys
import tempfile
from pathlib import Path
from typing import Any

import pytest

from conftest import run_cli
from seedbed_lab import lab as lab_module

STAGES = [
    "── 1. Start a simulated cluster",
    "── 2. Make the backup keys",
    "── 3. Bootstrap",
    "── 4. Status",
    "── 5. Reconfigure the Git server by a commit",
    "── 6. Back up",
    "── 7. Tear the cluster down",
    "── 8. Rebuild from the backup",
    "── 9. Status of the rebuilt cluster",
]
README = Path(__file__).resolve().parents[1] / "README.md"


@pytest.fixture
def seen(monkeypatch, tmp_path, upstream) -> list[dict[str, Any]]:
    """Each lab the demo ran, as it was just before it stopped; the demo's temporary folder under tmp_path."""
    upstream("gitea-chart-12.4.0")
    upstream("longhorn-v1.12.1.yaml")
    upstream("flux-gotk-components-v2.9.3.yaml")
    states: list[dict[str, Any]] = []

    class Recorded(lab_module.Lab):
        def stop(self) -> None:
            secret = self.emu.get("v1", "Secret", "app-credentials", "demo")
            keys = self.root.parent / "keys"
            states.append({
                "head": self.gitea.branch_commit("homelab", "gitops", "main"),
                "secret": (secret or {}).get("data"),
                "key_modes": {p.name: stat.S_IMODE(p.stat().st_mode) for p in keys.iterdir()},
                "ingress": self.emu.get("networking.k8s.io/v1", "Ingress", "gitea", "gitea"),
            })
            super().stop()

    monkeypatch.setattr(lab_module, "Lab", Recorded)
    (tmp_path / "tmp").mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "tmp"))
    return states


def readme_excerpt() -> list[str]:
    """The lines of the README's demo excerpt (`...` stands for lines left out)."""
    excerpt = README.read_text().split("<!-- demo excerpt", 1)[1]
    lines = excerpt.split("```console\n", 1)[1].split("```", 1)[0].splitlines()
    return [ln for ln in lines if ln.strip() != "..." and not ln.startswith("$ ")]


def test_the_demo_runs_the_journey_restores_the_repository_and_secrets_and_leaves_nothing_behind(
        seen, tmp_path, capsys):
    code, out, err = run_cli(capsys, "demo")
    assert code == 0, err
    text = out + err
    for line in readme_excerpt():  # the README's first screen shows lines of this real output
        assert line in text.splitlines(), line
    for header in STAGES:
        assert header in out
    for command in ("$ seedbed keygen", "$ seedbed bootstrap", "$ seedbed status", "$ seedbed backup",
                    "$ seedbed bootstrap --manifests"):
        assert command in out
    assert "--restore" in out and "Restore Secrets: secrets: restored 1" in err
    old, new = seen
    assert new["head"] == old["head"]  # the repository came back, with the commit of stage 5 on top
    assert new["secret"] == old["secret"] is not None  # the app's Secret, byte for byte
    assert new["ingress"]["spec"]["rules"][0]["host"] == "git.demo.example"  # Flux re-applied the commit
    assert set(old["key_modes"]) == {"age.key", "signing.key"}
    assert set(old["key_modes"].values()) == {0o600}
    assert list((tmp_path / "tmp").iterdir()) == []  # the folder with the keys and the backup is gone
    assert "What a real cluster adds" in out and "iSCSI" in out and "Let's Encrypt" in out
    assert "Next: `seedbed init`" in out
    assert "✗" not in text and "Traceback" not in text


def test_keep_leaves_the_rebuilt_cluster_running_for_the_printed_commands(seen, tmp_path, capsys, monkeypatch):
    from seedbed.commands import demo

    by_hand: list[tuple[int, str]] = []

    def use_it_then_ctrl_c() -> None:
        printed = capsys.readouterr().out
        command = re.search(r"^  seedbed -c (\S+) status$", printed, re.M)
        kubeconfig = re.search(r"^kubeconfig: (\S+)$", printed, re.M)
        assert command and kubeconfig and Path(kubeconfig.group(1)).is_file()
        code, out, _ = run_cli(capsys, "-c", command.group(1), "status")
        by_hand.append((code, out))
        raise KeyboardInterrupt

    monkeypatch.setattr(demo, "wait_for_interrupt", use_it_then_ctrl_c)
    code, out, err = run_cli(capsys, "demo", "--keep")
    assert code == 0, err
    assert by_hand and by_hand[0][0] == 0 and "flux        synced" in by_hand[0][1]
    assert "stopped the demo cluster" in out
    kept = list((tmp_path / "tmp").iterdir())
    assert len(kept) == 1 and (kept[0] / "backups" / "homelab.age").is_file()  # --keep keeps the folder


def test_without_the_demo_extra_one_error_says_how_to_install_it(monkeypatch, capsys, upstream):
    upstream("gitea-chart-12.4.0")
    lab_modules = [m for m in sys.modules if m.startswith("seedbed_lab.") and m != "seedbed_lab.upstream"]
    for name in [*lab_modules, *(m for m in sys.modules if m.startswith("aiohttp"))]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "aiohttp", None)  # as if it were not installed
    code, out, err = run_cli(capsys, "demo")
    assert code == 2 and "aiohttp is not installed" in err
    assert "pip install 'seedbed[demo]'" in err and "scripts/install" in err
    assert err.count("✗ error") == 1 and "Traceback" not in err and "── 2." not in out


def test_a_folder_without_the_gitea_chart_is_one_clear_error(tmp_path, capsys):
    code, _out, err = run_cli(capsys, "demo", "--manifests", str(tmp_path))
    assert code == 2 and "gitea-chart-12.4.0" in err and "fix: pass --manifests DIR" in err
    assert list(tmp_path.iterdir()) == []


def test_demo_help_has_examples(capsys):
    code, out, _ = run_cli(capsys, "demo", "--help")
    assert code == 0 and "seedbed demo --keep" in out and "seedbed[demo]" in out

