"""Flux's postBuild substitution, as kustomize-controller evaluates it (seedbed.envsubst).

Each expected value is what fluxcd/pkg envsubst v1.7.0 gives (parse/parse.go, parse/scan.go,
template.go, funcs.go, path/match.go), with kustomize/kustomize_varsub.go's non-strict lookup: an unset
variable reads as "". The last tests take the expressions from the real public GitOps trees in the
fixtures, where the earlier regular expression left ``${SECRET_DOMAIN/./-}`` as written.
"""

from __future__ import annotations

import pytest

from seedbed import fluxrepo
from seedbed.certs.guard import scan_repo, would_issue
from seedbed.envsubst import SubstitutionError, envsubst

VARS = {"D": "sub.example.com", "A": "app", "U": "APP", "E": "", "N": "é"}


@pytest.mark.parametrize(("text", "want"), [
    ("${A}", "app"), ("x-${A}-${A}", "x-app-app"), ("${UNSET}", ""),
    # Defaults: upstream cannot tell unset from empty (its lookup answers "" for both), so every
    # default operator takes the default for either, `=` as well as `:=`.
    ("${UNSET:=d}", "d"), ("${UNSET:-d}", "d"), ("${E:=d}", "d"), ("${E=d}", "d"), ("${A:=d}", "app"),
    ("${E:+alt}", "alt"), ("${A:+alt}", "app"), ("${E:?msg}", "msg"),
    ("${UNSET:=${A}}", "app"), ("${UNSET:=${E:=in}-x}", "in-x"),  # defaults nest
    # `$$` is `$` everywhere in a substituted object; a bare $VAR is text.
    ("$${A}", "${A}"), ("pa$$word", "pa$word"), ("$HOME and $A", "$HOME and $A"), ("100$", "100$"),
    # Replacement: the first match, every match, a prefix, a suffix; an empty replacement removes.
    ("${D/./-}", "sub-example.com"), ("${D//./-}", "sub-example-com"), ("${D/#sub/www}", "www.example.com"),
    ("${D/%com/org}", "sub.example.org"), ("${D/./}", "subexample.com"), ("${D/\\//x}", "sub.example.com"),
    # Case, length (Go counts bytes), substrings; `:-3` is a default, not a negative offset.
    ("${A^}", "App"), ("${A^^}", "APP"), ("${U,}", "aPP"), ("${U,,}", "app"),
    ("${#D}", "15"), ("${#N}", "2"), ("${D:4}", "example.com"), ("${D:4:7}", "example"), ("${D:x}", "sub.example.com"),
    ("${D:-3}", "sub.example.com"),
    # Trims with path.Match patterns (upstream's `*` also crosses `/`).
    ("${D#*.}", "example.com"), ("${D##*.}", "com"), ("${D%.*}", "sub.example"), ("${D%%.*}", "sub"),
    ("${D#[a-s]ub.}", "example.com"), ("${D#[^s]ub.}", "sub.example.com"),
])
def test_every_expression_flux_knows(text, want):
    assert envsubst(text, VARS) == want


@pytest.mark.parametrize(("text", "error"), [
    ("${a.b}", "missing closing brace"),  # a dot is not part of a name: Flux fails the Kustomization
    ("${A-x}", "missing closing brace"),  # bash's `-` without `:` is not in Flux's grammar
    ("${A", "missing closing brace"),
    ("${}", "unable to parse variable name"),
    ("${UNSET:=${A}", "unable to parse substitution within function"),
    ("${#}", "bad substitution"),
    ("${D/.}", "bad substitution"),  # the second `/` is required
])
def test_what_flux_refuses_is_refused_with_its_message(text, error):
    with pytest.raises(SubstitutionError, match=f"^{error}$"):
        envsubst(text, VARS)


def test_defaults_nested_without_end_are_refused_not_a_crash():
    text = "${A:=" * 5000 + "x" + "}" * 5000
    with pytest.raises(SubstitutionError, match="nested too deeply"):
        envsubst(text, {})
    assert envsubst("${A:=" * 50 + "x" + "}" * 50, {}) == "x"


def test_a_variable_from_a_source_seedbed_cannot_read_stays_as_written():
    """keep_unset: the values come from an encrypted Secret, so ${X} may well be set on the cluster."""
    missing: list[str] = []
    out = envsubst("${X/./-} ${Y:=d} ${Z} ${A}", VARS, keep_unset=True, missing=missing)
    assert out == "${X/./-} d ${Z} app"
    assert missing == ["X", "Z"]  # a default makes the name not missing


def test_a_real_certificate_named_by_a_replacement_is_saved_by_its_restored_secret(upstream):
    """Tomyail-talos-cluster names its wildcard Certificate and Secret ``${SECRET_DOMAIN/./-}-production``
    (kubernetes/apps/kube-system/cilium/gateway/certificate.yaml). With SECRET_DOMAIN known, the
    Secret is example-com-production-tls, so restoring that Secret saves the issuance."""
    tree = upstream("gitops-trees/Tomyail-talos-cluster")
    certs = scan_repo(fluxrepo.read(tree, "kubernetes/flux/cluster"), {"SECRET_DOMAIN": "example.com"}).certificates
    (wildcard,) = [c for c in certs if "*.example.com" in c.names]
    assert wildcard.secret_name == "example-com-production-tls"
    assert wildcard.names == frozenset({"example.com", "*.example.com"}) and not wildcard.unresolved
    assert wildcard in would_issue(certs, [])
    assert wildcard not in would_issue(certs, [(wildcard.namespace, "example-com-production-tls")])


def test_a_nested_default_in_a_real_tree_takes_the_inner_variable():
    """Tomyail-talos-cluster's gatus components write ``${GATUS_SUBDOMAIN:=${APP}}.${SECRET_DOMAIN}``."""
    text = 'url: "https://${GATUS_SUBDOMAIN:=${APP}}.${SECRET_DOMAIN}${GATUS_PATH:=/}"'
    assert envsubst(text, {"APP": "echo", "SECRET_DOMAIN": "example.com"}) == 'url: "https://echo.example.com/"'
