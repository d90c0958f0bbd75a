"""seedbed.yamlutil: bounded loading of YAML and JSON from outside."""

from __future__ import annotations

import json

import pytest

from seedbed import yamlutil
from seedbed.errors import ArchiveError, ConfigError


def laughs(levels: int) -> str:
    text = "a0: &a0 [x, x, x, x, x, x, x, x, x, x]\n"
    for i in range(1, levels):
        text += f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 10)}]\n"
    return text


def test_ordinary_yaml_with_aliases_loads():
    assert yamlutil.safe_load("a: &x {b: 1}\nc: *x\n", what="f") == {"a": {"b": 1}, "c": {"b": 1}}
    assert yamlutil.safe_load_all("a: 1\n---\n---\nb: 2\n", what="f") == [{"a": 1}, {"b": 2}]


def test_billion_laughs_is_refused_before_any_object_is_built():
    with pytest.raises(ConfigError, match="expands to more than 2,000,000 nodes") as e:
        yamlutil.safe_load(laughs(9), what="seedbed.yaml")
    assert e.value.fix


def test_a_few_repeated_aliases_are_fine():
    assert len(yamlutil.safe_load(laughs(3), what="f")) == 3


def test_a_recursive_alias_is_refused_with_its_line():
    with pytest.raises(ConfigError, match=r"f:3: the alias \*c refers to a value that contains it"):
        yamlutil.safe_load("c: &c\n  name: lab\n  self: *c\n", what="f")


def test_deep_nesting_is_refused():
    with pytest.raises(ConfigError, match="nested more than 64 levels"):
        yamlutil.safe_load("[" * 65 + "]" * 65, what="f")
    assert yamlutil.safe_load("[" * 64 + "]" * 64, what="f") is not None


def test_depth_added_by_aliases_counts():
    text = "x: &x " + "[" * 40 + "]" * 40 + "\ny: " + "[" * 30 + "*x" + "]" * 30 + "\n"
    with pytest.raises(ConfigError, match="nested more than"):
        yamlutil.safe_load(text, what="f")


def test_syntax_errors_name_the_line_and_the_problem():
    with pytest.raises(ConfigError, match=r"^f:2: not valid YAML: .*mapping values") as e:
        yamlutil.safe_load("a: 1\nb: c: d\n", what="f")
    assert e.value.fix == "fix the YAML syntax"


def test_a_bad_character_names_its_line():
    with pytest.raises(ConfigError, match=r"^f:2: not valid YAML: character"):
        yamlutil.safe_load("a: 1\nb: \x07\n", what="f")


def test_an_integer_too_long_to_convert_is_a_clear_error():
    with pytest.raises(ConfigError, match="a value cannot be read"):
        yamlutil.safe_load("a: " + "9" * 5000, what="f")


def test_the_error_class_is_the_callers():
    with pytest.raises(ArchiveError):
        yamlutil.safe_load("[" * 100 + "]" * 100, what="index", error=ArchiveError)


def test_json_is_bounded_too():
    assert yamlutil.safe_json('{"a": [1, 2]}', what="index.json") == {"a": [1, 2]}
    with pytest.raises(ConfigError, match="nested more than 64"):
        yamlutil.safe_json("[" * 100 + "]" * 100, what="index.json")
    with pytest.raises(ConfigError, match=r"nested too deeply|nested more than"):
        yamlutil.safe_json("[" * 100_000 + "]" * 100_000, what="index.json")
    with pytest.raises(ConfigError, match="not valid JSON"):
        yamlutil.safe_json(b"\xff{", what="index.json")
    with pytest.raises(ConfigError, match="not valid JSON"):
        yamlutil.safe_json("1" * 5000, what="index.json")


def test_trusted_loading_gives_fresh_objects_each_time():
    text = "\n---\n".join(json.dumps({"apiVersion": "v1", "kind": "ConfigMap", "data": {"k": "v" * 100}})
                          for _ in range(1000))
    first = yamlutil.load_all(text)
    first[0]["kind"] = "changed"
    assert yamlutil.load_all(text)[0]["kind"] == "ConfigMap"
