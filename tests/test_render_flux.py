"""render/flux: the files of the Flux commit, the sync objects, cluster variables and Git credentials."""

from __future__ import annotations

import base64
import json
import shutil
import subprocess
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import jsonschema
import kubernetes_validate
import pytest

from seedbed import yamlutil
from seedbed.config import Config, from_mapping, go_duration
from seedbed.errors import ConfigError, ManifestError
from seedbed.render import flux, gitserver
from seedbed.sshkeys import KeyPair, generate_ed25519

COMPONENTS = "flux-gotk-components-v2.9.3.yaml"
SYNC_EXAMPLE = "flux-gotk-sync-example.yaml"
DEPLOY_KEY = generate_ed25519("flux@homelab")
HOST_KEY = generate_ed25519("gitea-ssh.gitea")


@pytest.fixture
def components(upstream) -> str:
    # Decoded from bytes: read_text() would translate newlines (Python 3.11 has no newline= there).
    return upstream(COMPONENTS).read_bytes().decode("utf-8")


def files(cfg: Config, text: str, **kw: Any) -> dict[str, str]:
    return flux.repo_files(cfg, text, acme=kw.get("acme", "staging"), domain=kw.get("domain"))


# --------------------------------------------------------------------------- the commit


def test_repo_files_paths(components: str) -> None:
    assert sorted(files(Config(), components)) == [
        "clusters/homelab/flux-system/gotk-components.yaml",
        "clusters/homelab/flux-system/gotk-sync.yaml",
        "clusters/homelab/flux-system/kustomization.yaml",
    ]
    cfg = from_mapping({"cluster": {"name": "lab"}, "flux": {"path": "./fleet/lab/"}})
    assert all(p.startswith("fleet/lab/flux-system/") for p in files(cfg, components))
    assert flux.sync_objects(cfg)[1]["spec"]["path"] == "./fleet/lab"


def test_components_byte_for_byte(upstream, components: str) -> None:
    committed = files(Config(), components)["clusters/homelab/flux-system/gotk-components.yaml"]
    assert committed.encode("utf-8") == upstream(COMPONENTS).read_bytes()


def test_kustomization_yaml(components: str) -> None:
    text = files(Config(), components)["clusters/homelab/flux-system/kustomization.yaml"]
    assert text == (
        "apiVersion: kustomize.config.k8s.io/v1beta1\n"
        "kind: Kustomization\n"
        "resources:\n"
        "- gotk-components.yaml\n"
        "- gotk-sync.yaml\n"
    )


def test_gotk_sync_matches_flux_bootstrap(upstream, components: str) -> None:
    """Same objects, keys and key order as `flux bootstrap` writes, apart from URL, path, branch and
    the added postBuild."""
    example = yamlutil.load_all(upstream(SYNC_EXAMPLE).read_text())
    text = files(Config(), components)["clusters/homelab/flux-system/gotk-sync.yaml"]
    ours = yamlutil.load_all(text)
    assert ours == flux.sync_objects(Config())  # the file holds exactly the sync objects
    assert text.startswith("# ") and "\n---\n" in text

    ours = json.loads(json.dumps(ours))
    repo, ks = ours
    assert repo["spec"]["url"] == "ssh://git@gitea-ssh.gitea.svc.cluster.local/homelab/gitops.git"
    assert repo["spec"]["ref"] == {"branch": "main"}
    assert ks["spec"]["path"] == "./clusters/homelab"
    assert ks["spec"].pop("postBuild") == {
        "substituteFrom": [{"kind": "ConfigMap", "name": "cluster-vars", "optional": False}]}
    repo["spec"]["url"] = example[0]["spec"]["url"]
    repo["spec"]["ref"] = example[0]["spec"]["ref"]
    ks["spec"]["path"] = example[1]["spec"]["path"]
    assert ours == example

    def key_order(obj: Any) -> Any:
        if isinstance(obj, dict):
            return [(k, key_order(v)) for k, v in obj.items()]
        return None

    assert [key_order(o) for o in ours] == [key_order(o) for o in example]


def test_sync_objects_valid_against_the_flux_crds(components: str) -> None:
    """The GitRepository and Kustomization validate against the v1 schemas of the pinned CRDs."""
    crds = {o["metadata"]["name"]: o for o in flux.component_objects(components)
            if o["kind"] == "CustomResourceDefinition"}

    def schema(crd: str) -> dict[str, Any]:
        version = next(v for v in crds[crd]["spec"]["versions"] if v["name"] == "v1")
        return version["schema"]["openAPIV3Schema"]

    repo, ks = flux.sync_objects(Config(), acme="production", domain="example.com")
    jsonschema.validate(repo, schema("gitrepositories.source.toolkit.fluxcd.io"))
    jsonschema.validate(ks, schema("kustomizations.kustomize.toolkit.fluxcd.io"))
    bad = json.loads(json.dumps(ks))
    bad["spec"]["postBuild"]["substituteFrom"][0]["kind"] = "ConfigMapp"
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(bad, schema("kustomizations.kustomize.toolkit.fluxcd.io"))


def test_intervals_written_like_go() -> None:
    repo, ks = flux.sync_objects(from_mapping({"flux": {"interval": "90s"}}))
    assert repo["spec"]["interval"] == "1m30s"
    assert ks["spec"]["interval"] == "10m0s"
    assert flux.sync_objects(Config())[0]["spec"]["interval"] == "1m0s"


@pytest.mark.parametrize(("given", "written"), [
    ("1m", "1m0s"), ("10m", "10m0s"), ("1h", "1h0m0s"), ("90s", "1m30s"), ("1.5s", "1.5s"),
    ("1h30m", "1h30m0s"), ("2h0m5.25s", "2h0m5.25s"), ("1500ms", "1.5s"), ("61m", "1h1m0s"),
])
def test_go_duration(given: str, written: str) -> None:
    assert go_duration(given) == written


@pytest.mark.parametrize("bad", ["", "1", "m", "1d", "1m1", "-1m", "500ms", "1 m"])
def test_go_duration_bad(bad: str) -> None:
    with pytest.raises(ConfigError, match=r"flux\.interval"):
        go_duration(bad, key="flux.interval")
    with pytest.raises(ConfigError, match=r"flux\.interval"):
        from_mapping({"flux": {"interval": bad}})


def test_acme_and_domain_stay_out_of_git(components: str) -> None:
    staging = files(Config(), components, acme="staging")
    production = files(Config(), components, acme="production", domain="home.example.com")
    assert staging == production
    assert "acme" not in json.dumps(flux.sync_objects(Config(), acme="production"))


# --------------------------------------------------------------------------- cluster variables


def test_cluster_vars_staging() -> None:
    cm = flux.cluster_vars(Config(), acme="staging", domain=None)
    assert kubernetes_validate.validate(cm, "1.37", strict=True) == "1.37"
    assert (cm["metadata"]["namespace"], cm["metadata"]["name"]) == ("flux-system", flux.CLUSTER_VARS)
    assert cm["data"] == {
        "CLUSTER_NAME": "homelab",
        "ACME_ENV": "staging",
        "ACME_SERVER": "https://acme-staging-v02.api.letsencrypt.org/directory",
        "CLUSTER_ISSUER": "letsencrypt-staging",
    }


def test_cluster_vars_production_with_domain() -> None:
    cm = flux.cluster_vars(from_mapping({"cluster": {"name": "lab"}}), acme="production", domain="Home.Example.com")
    assert cm["data"] == {
        "CLUSTER_NAME": "lab",
        "ACME_ENV": "production",
        "ACME_SERVER": "https://acme-v02.api.letsencrypt.org/directory",
        "CLUSTER_ISSUER": "letsencrypt-production",
        "CLUSTER_DOMAIN": "home.example.com",
    }


def test_cluster_vars_default_from_config() -> None:
    cfg = from_mapping({"certificates": {"acme": "production", "domain": "lab.example.org"}})
    data = flux.cluster_vars(cfg)["data"]
    assert (data["ACME_ENV"], data["CLUSTER_DOMAIN"]) == ("production", "lab.example.org")


def test_substitution_variables_reach_the_sync() -> None:
    """The Kustomization substitutes from the ConfigMap, and the ConfigMap has every variable the
    user's manifests may reference."""
    cm = flux.cluster_vars(Config(), acme="staging", domain="example.com")
    ks = flux.sync_objects(Config(), acme="staging", domain="example.com")[1]
    (ref,) = ks["spec"]["postBuild"]["substituteFrom"]
    assert (ref["kind"], ref["name"]) == (cm["kind"], cm["metadata"]["name"])
    assert cm["metadata"]["namespace"] == ks["metadata"]["namespace"]
    assert ref["optional"] is False
    assert {"ACME_SERVER", "CLUSTER_ISSUER", "CLUSTER_DOMAIN", "CLUSTER_NAME", "ACME_ENV"} <= set(cm["data"])


def test_components_protect_their_own_dollar_braces(components: str) -> None:
    """Substitution on flux-system also runs over gotk-components.yaml: every object whose text
    holds ${...} must opt out, or Flux would rewrite its own CRDs."""
    with_vars = [o for o in flux.component_objects(components) if "${" in json.dumps(o)]
    assert with_vars  # the pinned release does contain some (CRD docs)
    for obj in with_vars:
        annotations = obj["metadata"].get("annotations", {})
        labels = obj["metadata"].get("labels", {})
        assert "disabled" in (annotations.get("kustomize.toolkit.fluxcd.io/substitute"),
                              labels.get("kustomize.toolkit.fluxcd.io/substitute")), obj["metadata"]["name"]


@pytest.mark.parametrize(("acme", "domain", "needle"), [
    ("prod", None, "staging or production"),
    ("staging", "*.example.com", "base domain"),
    ("staging", "not a domain", "DNS name"),
])
def test_bad_acme_or_domain(components: str, acme: str, domain: str | None, needle: str) -> None:
    for call in (lambda: flux.cluster_vars(Config(), acme=acme, domain=domain),
                 lambda: flux.sync_objects(Config(), acme=acme, domain=domain),
                 lambda: files(Config(), components, acme=acme, domain=domain)):
        with pytest.raises(ConfigError, match=needle) as e:
            call()
        assert e.value.fix


# --------------------------------------------------------------------------- credentials


def _secret_values(secret: dict[str, Any]) -> dict[str, str]:
    return {k: base64.b64decode(v).decode() for k, v in secret["data"].items()}


def test_credentials_secret() -> None:
    secret = flux.credentials_secret(Config(), DEPLOY_KEY, HOST_KEY.public_openssh)
    assert kubernetes_validate.validate(secret, "1.37", strict=True) == "1.37"
    assert (secret["metadata"]["namespace"], secret["metadata"]["name"]) == ("flux-system", "flux-system")
    assert "stringData" not in secret
    values = _secret_values(secret)
    assert set(values) == {"identity", "identity.pub", "known_hosts"}
    assert KeyPair.from_private(values["identity"], public=values["identity.pub"]) == DEPLOY_KEY
    assert values["identity.pub"] == DEPLOY_KEY.public_openssh + "\n"
    # The GitRepository names this Secret.
    assert flux.sync_objects(Config())[0]["spec"]["secretRef"] == {"name": "flux-system"}


def test_known_hosts_holds_exactly_the_pinned_key() -> None:
    secret = flux.credentials_secret(Config(), DEPLOY_KEY, HOST_KEY.public_openssh)
    lines = [line for line in _secret_values(secret)["known_hosts"].splitlines() if line.strip()]
    assert len(lines) == 1
    hosts, kind, b64 = lines[0].split(" ")
    assert f"{kind} {b64}" == " ".join(HOST_KEY.public_openssh.split()[:2])
    url_host = urlparse(flux.sync_objects(Config())[0]["spec"]["url"]).hostname
    assert url_host in hosts.split(",")
    assert lines[0] + "\n" == gitserver.known_hosts(Config(), HOST_KEY.public_openssh)
    assert DEPLOY_KEY.public_openssh.split()[1] not in lines[0]


@pytest.mark.skipif(shutil.which("ssh-keygen") is None, reason="ssh-keygen not installed")
def test_known_hosts_matches_the_url_for_ssh(tmp_path: Path) -> None:
    secret = flux.credentials_secret(Config(), DEPLOY_KEY, HOST_KEY.public_openssh)
    path = tmp_path / "known_hosts"
    path.write_text(_secret_values(secret)["known_hosts"])
    url = urlparse(flux.sync_objects(Config())[0]["spec"]["url"])
    host = url.hostname if (url.port or 22) == 22 else f"[{url.hostname}]:{url.port}"
    out = subprocess.run(["ssh-keygen", "-F", host, "-f", str(path)], capture_output=True, text=True, check=True)
    assert HOST_KEY.public_openssh.split()[1] in out.stdout


def test_secret_outside_flux_system_refused() -> None:
    with pytest.raises(ConfigError, match=r"flux\.secret") as e:
        flux.credentials_secret(from_mapping({"flux": {"secret": "other/flux-system"}}), DEPLOY_KEY, HOST_KEY.public_openssh)
    assert "flux-system/" in (e.value.fix or "")


# --------------------------------------------------------------------------- bad inputs


def test_component_objects(components: str) -> None:
    objs = flux.component_objects(components)
    assert len(objs) == 39
    assert ("Namespace", "flux-system") in {(o["kind"], o["metadata"]["name"]) for o in objs}


@pytest.mark.parametrize(("text", "needle"), [
    ("key: [unclosed", "not valid YAML"),
    ("- a list\n", "not a Kubernetes object"),
    ("apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: x\n", "lacks"),
])
def test_component_objects_bad(text: str, needle: str) -> None:
    with pytest.raises(ManifestError, match=needle) as e:
        flux.component_objects(text)
    assert e.value.fix


def test_repo_files_refuses_other_version(components: str) -> None:
    with pytest.raises(ManifestError, match=r"v2\.9\.3") as e:
        files(from_mapping({"flux": {"version": "v2.10.0"}}), components)
    assert "flux.version" in (e.value.fix or "")


@pytest.mark.parametrize("text", ["", "  \n", "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: flux-system\n"])
def test_repo_files_refuses_non_flux(text: str) -> None:
    with pytest.raises(ManifestError):
        files(Config(), text)


@pytest.mark.parametrize("path", ["/abs", "/", "../up", "a/../b", "a/./b", "a//b", "a\\b"])
def test_bad_path(path: str) -> None:
    with pytest.raises(ConfigError, match=r"flux\.path"):  # refused when the Config is made
        from_mapping({"flux": {"path": path}})


@pytest.mark.parametrize("path", [".", "./", " ./ "])
def test_the_repository_root_as_flux_path_is_laid_out_as_flux_bootstrap_does(components: str, path: str) -> None:
    cfg = from_mapping({"flux": {"path": path}})
    assert cfg.flux_path == "."
    written = files(cfg, components)
    assert sorted(written) == ["flux-system/gotk-components.yaml", "flux-system/gotk-sync.yaml",
                               "flux-system/kustomization.yaml"]
    kustomization = flux.committed_sync_objects(written, cfg)[1]
    assert kustomization["kind"] == "Kustomization" and kustomization["spec"]["path"] == "./"


@pytest.mark.parametrize("branch", ["", "-x", "a..b", "a b", "a~1", "x.lock", "a/"])
def test_bad_branch(branch: str) -> None:
    with pytest.raises(ConfigError, match=r"repo\.branch"):
        from_mapping({"repo": {"branch": branch}})
