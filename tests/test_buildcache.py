"""kustomize's outputs kept between runs (seedbed.buildcache, used by seedbed.fluxrepo.read): a re-run on
an unchanged work tree builds nothing, any change builds again, and nothing is kept that could change
without the tree changing or that would copy a Secret in clear onto disk."""

from __future__ import annotations

import os
import stat
import textwrap
from pathlib import Path

import msgspec
import pytest

from conftest import APPS_KUSTOMIZATION
from seedbed import fluxrepo

FLUX_PATH = "clusters/homelab"


class Counting(fluxrepo.Kustomize, frozen=True):
    """The real kustomize, counting the builds it runs."""

    runs: list[Path] = msgspec.field(default_factory=list)

    def build(self, folder: Path, timeout: float = fluxrepo.BUILD_TIMEOUT) -> str:
        self.runs.append(folder)
        return super().build(folder, timeout)


def tree(root: Path, files: dict[str, str]) -> Path:
    for name, text in {"clusters/homelab/apps.yaml": APPS_KUSTOMIZATION, **files}.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(textwrap.dedent(text))
    return root


def cm(name: str, value: str = "x") -> str:
    return f"apiVersion: v1\nkind: ConfigMap\nmetadata: {{name: {name}, namespace: default}}\ndata: {{a: {value}}}\n"


@pytest.fixture
def kustomize() -> Counting:
    return Counting(fluxrepo.find_kustomize().argv)


def read(work: Path, cache: Path, kustomize: Counting) -> fluxrepo.Repo:
    return fluxrepo.read(work, FLUX_PATH, kustomize=kustomize, cache=cache)


def test_an_unchanged_tree_is_read_again_without_building(tmp_path, kustomize):
    work = tree(tmp_path / "work", {"apps/web.yaml": cm("web")})
    first = read(work, tmp_path / "cache", kustomize)
    assert len(kustomize.runs) == 2  # the Flux path, then ./apps
    again = read(work, tmp_path / "cache", kustomize)
    assert len(kustomize.runs) == 2
    assert [(o.file, o.data) for o in again.objects] == [(o.file, o.data) for o in first.objects]
    assert again.problems == first.problems == []


def test_any_change_to_the_tree_builds_again(tmp_path, kustomize):
    work = tree(tmp_path / "work", {"apps/web.yaml": cm("web")})
    read(work, tmp_path / "cache", kustomize)
    (work / "apps/web.yaml").write_text(cm("web", "y"))
    repo = read(work, tmp_path / "cache", kustomize)
    assert len(kustomize.runs) == 4
    assert repo.find("ConfigMap", "web", "default").data["data"] == {"a": "y"}
    (work / "apps/new.yaml").write_text(cm("new"))  # a file the generated kustomization now lists
    repo = read(work, tmp_path / "cache", kustomize)
    assert repo.find("ConfigMap", "new", "default") is not None


def test_a_secret_in_clear_is_not_copied_into_the_cache_but_an_encrypted_one_is(tmp_path, kustomize):
    plain = tree(tmp_path / "plain", {"apps/s.yaml": "apiVersion: v1\nkind: Secret\nmetadata: {name: s, namespace: "
                                                     "default}\nstringData: {password: hunter2-in-clear}\n"})
    read(plain, tmp_path / "cache", kustomize)
    kept = [p.read_text() for p in (tmp_path / "cache/builds").iterdir()]
    assert not any("hunter2-in-clear" in text for text in kept)
    assert len(kept) == 1  # the Flux path's build only
    sops = tree(tmp_path / "sops", {"apps/s.yaml": "apiVersion: v1\nkind: Secret\nmetadata: {name: s, namespace: "
                                                   "default}\nstringData: {password: 'ENC[AES256_GCM,data:x=,type:str]'}\n"
                                                   "sops: {mac: 'ENC[AES256_GCM,data:y=,type:str]', version: 3.9.0}\n"})
    read(sops, tmp_path / "cache", kustomize)
    assert len(list((tmp_path / "cache/builds").iterdir())) == 3


def test_a_failed_build_is_not_kept_and_the_cache_is_private(tmp_path, kustomize):
    work = tree(tmp_path / "work", {"apps/kustomization.yaml": "resources: [missing.yaml]\n"})
    repo = read(work, tmp_path / "cache", kustomize)
    assert "cannot be built" in repo.problems[0].message
    read(work, tmp_path / "cache", kustomize)
    assert len(kustomize.runs) == 3  # the failing path was built again; the Flux path was not
    # Only the user reaches it: the folder is 0700, every kept output 0600.
    assert stat.S_IMODE((tmp_path / "cache").stat().st_mode) == 0o700
    kept = list((tmp_path / "cache/builds").iterdir())
    assert kept and all(stat.S_IMODE(p.stat().st_mode) == 0o600 for p in kept)


def test_an_entry_that_is_not_a_regular_file_is_built_again_not_read(tmp_path, kustomize):
    work = tree(tmp_path / "work", {"apps/web.yaml": cm("web")})
    read(work, tmp_path / "cache", kustomize)
    for entry in (tmp_path / "cache/builds").iterdir():
        entry.unlink()
        os.mkfifo(entry)  # a read would block forever
    repo = read(work, tmp_path / "cache", kustomize)
    assert len(kustomize.runs) == 4 and repo.find("ConfigMap", "web", "default") is not None
