"""Bounded parsing (issue 31 item 2): hostile YAML is refused by name before anything walks or prints it."""

from __future__ import annotations

from pathlib import Path

import pytest

from drigm.config import (
    MAX_BASE_CHAIN,
    MAX_YAML_DEPTH,
    ConfigError,
    brief,
    build_config,
    load_yaml,
    parse_override,
    parse_yaml,
)


def _bomb(levels: int, key: str = "steps") -> str:
    """An alias bomb: `levels` levels of 10 aliases each (10^levels scalars once expanded)."""
    lines = ["l0: &l0 [x, x, x, x, x, x, x, x, x, x]"]
    for k in range(1, levels):
        lines.append(f"l{k}: &l{k} [" + ", ".join([f"*l{k - 1}"] * 10) + "]")
    lines.append(f"{key}: *l{levels - 1}")
    return "\n".join(lines) + "\n"


def test_an_alias_bomb_is_refused_before_it_is_expanded(tmp_path: Path) -> None:
    path = tmp_path / "bomb.yaml"
    path.write_text(_bomb(9))  # 10^9 values expanded: would hang and take gigabytes when walked or printed
    with pytest.raises(ConfigError, match=r"bomb.yaml' holds more than 100000 values once its aliases are expanded"):
        load_yaml(path)
    row = "[" + ", ".join(["*a"] * 100) + "]"
    with pytest.raises(ConfigError, match=r"override 'steps=.*more than 100000 values"):
        parse_override("steps=[&a [x, x, x, x, x, x, x, x, x, x], " + ", ".join([row] * 200) + "]")
    # aliases themselves are fine: a small document that reuses a value loads as YAML says
    assert parse_yaml("a: &x {lr: 0.1}\nb: *x\n", "doc") == {"a": {"lr": 0.1}, "b": {"lr": 0.1}}


def test_a_recursive_alias_and_deep_nesting_are_refused() -> None:
    with pytest.raises(ConfigError, match="doc holds a recursive alias"):
        parse_yaml("&a [*a]", "doc")
    with pytest.raises(ConfigError, match=f"doc nests deeper than {MAX_YAML_DEPTH} levels"):
        parse_yaml("a: " + "[" * (MAX_YAML_DEPTH + 1) + "]" * (MAX_YAML_DEPTH + 1), "doc")
    with pytest.raises(ConfigError, match=f"doc nests deeper than {MAX_YAML_DEPTH} levels"):
        parse_yaml("a: " + "[" * 5000 + "]" * 5000, "doc")  # deeper than Python's recursion limit
    assert parse_yaml("a: " + "[" * 10 + "1" + "]" * 10, "doc") is not None


def test_a_key_given_twice_is_an_error_with_its_line() -> None:
    with pytest.raises(ConfigError, match=r"key 'steps' is given twice in one mapping \(line 3\)"):
        parse_yaml("steps: 5\nseed: 1\nsteps: 6\n", "doc")
    # the same key in two different mappings, and YAML merge keys, are fine
    assert parse_yaml("a: {x: 1}\nb: {x: 2}\n", "doc") == {"a": {"x": 1}, "b": {"x": 2}}
    assert parse_yaml("base: &b {x: 1, y: 2}\nc:\n  <<: *b\n  x: 3\n", "doc")["c"] == {"x": 3, "y": 2}


def test_a_long_chain_of_base_files_is_refused(tmp_path: Path) -> None:
    n = MAX_BASE_CHAIN + 2
    for k in range(n):
        body = f"base: c{k + 1}.yaml\n" if k + 1 < n else ""
        (tmp_path / f"c{k}.yaml").write_text(body + f"k{k}: {k}\n")
    with pytest.raises(ConfigError, match=f"chain of 'base:' files is longer than {MAX_BASE_CHAIN}"):
        load_yaml(tmp_path / "c0.yaml")
    assert load_yaml(tmp_path / f"c{n - 5}.yaml") == {f"k{k}": k for k in range(n - 5, n)}


def test_error_messages_show_a_bounded_value() -> None:
    huge = list(range(100_000))
    with pytest.raises(ConfigError) as info:
        build_config({"steps": huge})
    assert len(str(info.value)) < 400 and str(info.value).startswith("steps=")
    assert len(brief("x" * 10_000)) <= 250 and "..." in brief("x" * 10_000)
    assert brief({"a": 1}) == "{'a': 1}"


def test_a_json_policy_nested_too_deeply_is_refused(tmp_path: Path) -> None:
    from reference.__main__ import _load_policy
    from reference.game import GameError

    path = tmp_path / "deep.json"
    path.write_text('{"policy": ' + "[" * 200_000 + "]" * 200_000 + "}")
    with pytest.raises(GameError, match="nests too deeply"):
        _load_policy(str(path), 3, 2)
    path.write_bytes(b'{"policy": [[0, 1]]}\xff')
    with pytest.raises(GameError, match="not UTF-8 text"):
        _load_policy(str(path), 1, 2)
