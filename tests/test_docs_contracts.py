"""docs/game-format.md and docs/theory.md stay true: their tables are parsed and checked against the code.

The key tables of docs/game-format.md follow a line ``<!-- contract-table: NAME -->``; docs/theory.md lists every
proofs_check property after ``<!-- property-table -->``. A key, set or property that changes in the code without
its doc (or the other way round) fails here, and so does a README link that leads nowhere.
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import numpy as np
import pytest

from proofs_check.properties import REGISTRY, ConfirmationError, FalsifiedError, get_property
from proofs_check.report import format_table, write_json
from proofs_check.runner import PropertyResult, run_property
from proofs_check.strategies import GameCase
from reference.__main__ import build_parser
from reference.__main__ import main as reference_main
from reference.game import Game, GameError, load_game, random_game, save_game
from reference.sets import SET_NAMES, UncertaintySetError, get_spec, make_set, sets_with_rule

REPO = Path(__file__).resolve().parent.parent
FORMAT_DOC = REPO / "docs" / "game-format.md"
THEORY_DOC = REPO / "docs" / "theory.md"

# The keys of the original contract (the specification this project was built to): a doc row marked "yes" must be
# one of them and each of them must stay documented as "yes"; everything else is an addition ("added").
CONTRACT_NPZ = {"P", "R", "gamma", "obs", "initial"}
CONTRACT_SOLVE = {"set", "rho", "gamma", "Q", "V", "greedy", "residual", "error_bound", "iterations"}
CONTRACT_EVALUATE = {"robust_value", "nominal_value", "worst_case_kernel_rows_sum_to_one"}
CONTRACT_PROOFS = {"name", "kind", "examples", "passed", "counterexample"}
CONTRACT_SETS = {"contamination": (0.0, 1.0), "tv": (0.0, 1.0), "kl": (0.0, math.inf), "chi2": (0.0, math.inf)}


# ===== parsing the docs ===========================================================================
def _cells(line: str) -> list[str]:
    """The cells of one Markdown table row; ``\\|`` inside a cell is not a separator."""
    body = line.strip()
    body = body[1:] if body.startswith("|") else body
    body = body[:-1] if body.endswith("|") and not body.endswith("\\|") else body
    return [c.strip() for c in re.split(r"(?<!\\)\|", body)]


def table_after(path: Path, marker: str) -> list[dict[str, str]]:
    """The rows of the first Markdown table after the line `marker`, as dicts keyed by the header cells."""
    lines = path.read_text().splitlines()
    try:
        start = next(i for i, line in enumerate(lines) if line.strip() == marker)
    except StopIteration:
        raise AssertionError(f"{path.name} has no line {marker!r}") from None
    rows = []
    i = start + 1
    while i < len(lines) and not lines[i].strip():
        i += 1
    while i < len(lines) and lines[i].strip().startswith("|"):
        rows.append(_cells(lines[i]))
        i += 1
    assert len(rows) >= 3, f"{path.name}: no table with rows after {marker!r}"
    header, sep, body = rows[0], rows[1], rows[2:]
    assert all(set(c) <= set("-: ") for c in sep), f"{path.name}: malformed table after {marker!r}"
    for row in body:
        assert len(row) == len(header), f"{path.name}: row {row} does not match header {header}"
    return [dict(zip(header, row, strict=True)) for row in body]


def contract_table(name: str) -> list[dict[str, str]]:
    return table_after(FORMAT_DOC, f"<!-- contract-table: {name} -->")


def keys(rows: list[dict[str, str]], column: str = "key") -> list[str]:
    """The first column's names without their backticks."""
    return [row[column].strip("`") for row in rows]


def marked(rows: list[dict[str, str]], value: str, column: str = "contract") -> set[str]:
    first = next(iter(rows[0]))
    return {row[first].strip("`") for row in rows if row[column] == value}


def expected_shape(text: str, n_states: int, n_actions: tuple[int, ...]) -> tuple[int, ...]:
    """A documented shape such as "(S, n_1, ..., n_N, S)" for a concrete game."""
    inner = text.strip().strip("()").replace("n_1, ..., n_N", ",".join(map(str, n_actions)))
    dims = {"S": n_states, "N": len(n_actions)}
    return tuple(dims[t.strip()] if t.strip() in dims else int(t) for t in inner.split(",") if t.strip())


def parse_range(text: str) -> tuple[float, float, bool]:
    """(lo, hi, open_low) of a documented range: "[0, 1]", ">= 0" or "> 0"."""
    text = text.strip()
    if m := re.fullmatch(r"([\[(])\s*([-\d.]+)\s*,\s*([-\d.]+)\s*\]", text):
        return float(m.group(2)), float(m.group(3)), m.group(1) == "("
    if m := re.fullmatch(r"(>=|>)\s*([-\d.]+)", text):
        return float(m.group(2)), math.inf, m.group(1) == ">"
    raise AssertionError(f"cannot read the range {text!r}")


# ===== fixtures ===================================================================================
def _game(with_optional: bool) -> Game:
    base = random_game(3, (2, 4), seed=7, gamma=0.8)
    if not with_optional:
        return base
    obs = np.array([[0, 1, 1], [2, 2, 0]], dtype=np.int64)
    initial = np.array([0.5, 0.25, 0.25])
    return Game(P=base.P, R=base.R, gamma=base.gamma, obs=obs, initial=initial)


# ===== (a) the game file ==========================================================================
@pytest.mark.parametrize("with_optional", [False, True])
def test_saved_game_has_exactly_the_documented_keys_dtypes_and_shapes(tmp_path: Path, with_optional: bool) -> None:
    rows = contract_table("npz")
    required = marked(rows, "required", "required")
    optional = marked(rows, "optional", "required")
    assert required | optional == set(keys(rows)), "every npz key must be marked required or optional"
    game = _game(with_optional)
    path = save_game(game, tmp_path / "g.npz")
    with np.load(path) as data:
        stored = {k: data[k] for k in data.files}
    assert set(stored) == (required | optional if with_optional else required)
    for row in rows:
        key = row["key"].strip("`")
        if key not in stored:
            continue
        arr = stored[key]
        assert arr.dtype == np.dtype(row["dtype"]), f"{key}: stored {arr.dtype}, documented {row['dtype']}"
        assert arr.shape == expected_shape(row["shape"], game.n_states, game.n_actions), f"{key}: shape {arr.shape}"


def test_documented_required_keys_are_the_ones_the_loader_requires(tmp_path: Path) -> None:
    rows = contract_table("npz")
    game = _game(with_optional=True)
    full = {
        "P": game.P,
        "R": game.R,
        "gamma": np.float64(game.gamma),
        "obs": game.obs,
        "initial": game.initial,
        "extra_key_that_readers_ignore": np.zeros(2),
    }
    np.savez(tmp_path / "full.npz", **full)
    loaded = load_game(tmp_path / "full.npz")
    assert loaded.obs is not None and loaded.initial is not None
    for key in keys(rows):
        path = tmp_path / f"without_{key}.npz"
        np.savez(path, **{k: v for k, v in full.items() if k != key})
        if key in marked(rows, "required", "required"):
            with pytest.raises(GameError, match=key):
                load_game(path)
        else:
            load_game(path)  # an optional key may be left out


def test_npz_contract_keys_are_all_documented() -> None:
    rows = contract_table("npz")
    assert marked(rows, "yes") == CONTRACT_NPZ
    assert set(keys(rows)) >= CONTRACT_NPZ


# ===== (b) the JSON of python -m reference ========================================================
@pytest.fixture
def game_file(tmp_path: Path) -> Path:
    return save_game(random_game(3, (2, 2), seed=1, gamma=0.7), tmp_path / "game.npz")


@pytest.mark.parametrize("set_name", SET_NAMES)
def test_solve_json_prints_exactly_the_documented_keys(
    game_file: Path, set_name: str, capsys: pytest.CaptureFixture[str]
) -> None:
    rows = contract_table("solve")
    assert marked(rows, "yes") == CONTRACT_SOLVE
    assert reference_main(["solve", str(game_file), "--set", set_name, "--rho", "0.2", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert set(out) == set(keys(rows)), f"printed {sorted(out)}, documented {sorted(keys(rows))}"
    assert out["set"] == set_name
    assert np.asarray(out["Q"]).shape == (3, 2, 2)
    assert np.asarray(out["V"]).shape == (3,)
    assert np.asarray(out["greedy"]).shape == (3, 2)


def test_evaluate_json_prints_exactly_the_documented_keys(
    game_file: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rows = contract_table("evaluate")
    assert marked(rows, "yes") == CONTRACT_EVALUATE
    policy = tmp_path / "pol.json"
    policy.write_text(json.dumps({"policy": [[0, 1], [1, 0], [0, 0]]}))
    argv = ["evaluate", str(game_file), "--set", "tv", "--rho", "0.2", "--policy", str(policy), "--json"]
    assert reference_main(argv) == 0
    out = json.loads(capsys.readouterr().out)
    assert set(out) == set(keys(rows)), f"printed {sorted(out)}, documented {sorted(keys(rows))}"
    assert out["worst_case_kernel_rows_sum_to_one"] is True
    assert len(out["robust_value"]) == len(out["nominal_value"]) == 3


# ===== (c) the JSON of python -m proofs_check =====================================================
def _confirmed_c1_record() -> dict:
    """A real counterexample record: C1's confirmation on the first small random game that shows C1."""
    prop = get_property("c1_nominal_greedy_not_robust")
    assert prop.confirm is not None
    for seed in range(30):
        case = GameCase(random_game(3, (2, 2), seed=seed, gamma=0.9), "tv", 0.5)
        try:
            return prop.confirm(FalsifiedError("search hit", case))
        except ConfirmationError:
            continue
    raise AssertionError("no small random game shows C1; pick other games for this test")


def test_proofs_check_json_keys_are_documented(tmp_path: Path) -> None:
    rows = contract_table("proofs_check")
    assert marked(rows, "yes") == CONTRACT_PROOFS
    documented = set(keys(rows))
    always = {row["key"].strip("`") for row in rows if row["present"] == "always"}

    theorem = run_property("sigma_below_nominal", max_examples=3, database=False)
    found = PropertyResult(
        name="c1_nominal_greedy_not_robust",
        kind="counterexample",
        section="4",
        claim="C1",
        examples=1,
        passed=True,
        seconds=0.1,
        detail="found",
        counterexample=_confirmed_c1_record(),
    )
    missed = PropertyResult(
        name="shortcut_tv_gap",
        kind="counterexample",
        section="5",
        claim="TV shortcut",
        examples=4,
        passed=False,
        seconds=0.1,
        detail="found but not confirmed",
        falsifying={"state": 0},
        worst_gap={"gap": 0.5},
        error="found but not confirmed",
    )
    path = write_json([theorem, found, missed], tmp_path / "out.json")
    objects = json.loads(path.read_text())
    assert isinstance(objects, list) and len(objects) == 3
    for obj in objects:
        assert always <= set(obj), f"{obj['name']} lacks {sorted(always - set(obj))}"
        assert set(obj) <= documented, f"{obj['name']} writes undocumented keys {sorted(set(obj) - documented)}"
        assert obj["kind"] in ("theorem", "counterexample")
        assert isinstance(obj["passed"], bool) and isinstance(obj["examples"], int)
        assert ("counterexample" in obj) == (obj["kind"] == "counterexample")
    assert objects[0]["passed"] is True and objects[0]["examples"] == 3
    assert objects[2]["counterexample"] is None
    assert {"falsifying", "worst_gap", "error"} <= set(objects[2])

    record = objects[1]["counterexample"]
    assert set(record) == set(keys(contract_table("counterexample")))
    game = Game(P=np.asarray(record["P"]), R=np.asarray(record["R"]), gamma=record["gamma"])
    assert game.n_states == record["S"] and list(game.n_actions) == record["n_actions"]


# ===== (d) links and references ===================================================================
_LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)")


def _relative_links(path: Path) -> list[str]:
    text = re.sub(r"```.*?```", "", path.read_text(), flags=re.S)  # links inside code blocks are not links
    return [t for t in _LINK.findall(text) if not re.match(r"^[a-z][a-z0-9+.-]*:", t) and not t.startswith("#")]


@pytest.mark.parametrize(
    "doc", ["README.md", *sorted(str(p.relative_to(REPO)) for p in (REPO / "docs").rglob("*.md"))], ids=str
)
def test_relative_links_resolve_inside_the_repository(doc: str) -> None:
    path = REPO / doc
    for target in _relative_links(path):
        resolved = (path.parent / target.split("#", 1)[0]).resolve()
        assert resolved.is_relative_to(REPO), f"{doc}: link {target!r} leaves the repository"
        assert resolved.exists(), f"{doc}: link {target!r} points at nothing"


def test_readme_links_both_docs() -> None:
    links = set(_relative_links(REPO / "README.md"))
    assert {"docs/game-format.md", "docs/theory.md"} <= links


def test_no_reference_to_the_old_spec_files_remains() -> None:
    """The specification lives in docs/; the old file names (outside the repository) must not come back."""
    stale = re.compile("GAME_" + "FORMAT|THEORY" + r"\.md")
    roots = ["reference", "proofs_check", "drigm", "tests", "benchmarks", "docs", "experiments"]
    files = [REPO / "README.md", REPO / "Makefile"]
    for root in roots:
        for p in (REPO / root).rglob("*"):
            if p.suffix in (".py", ".md", ".yaml", ".yml") and "runs" not in p.relative_to(REPO).parts:
                files.append(p)
    hits = [
        f"{p.relative_to(REPO)}:{n}"
        for p in files
        if p.is_file()
        for n, line in enumerate(p.read_text(errors="replace").splitlines(), 1)
        if stale.search(line)
    ]
    assert not hits, f"references to the old spec file names: {hits}"


def test_proofs_check_report_header_names_an_existing_doc() -> None:
    header = format_table([], "ci").splitlines()[0]
    m = re.search(r"(\S+\.md) sections 2-5", header)
    assert m is not None, header
    assert (REPO / m.group(1)).resolve() == THEORY_DOC.resolve()


# ===== (e) sets and their ranges ==================================================================
def test_documented_sets_and_ranges_match_the_registry() -> None:
    rows = contract_table("sets")
    names = keys(rows, "set")
    assert names == list(SET_NAMES), f"documented {names}, registered {list(SET_NAMES)}"
    for row in rows:
        name = row["set"].strip("`")
        r = get_spec(name).radius
        assert parse_range(row["rho range"]) == (r.lo, r.hi, r.open_low), f"{name}: range {row['rho range']!r}"
    in_contract = marked(rows, "yes")
    documented = {n: parse_range(row["rho range"])[:2] for n, row in zip(names, rows, strict=True) if n in in_contract}
    assert documented == CONTRACT_SETS


@pytest.mark.parametrize("set_name", SET_NAMES)
def test_documented_range_is_what_the_command_line_accepts(set_name: str) -> None:
    row = next(r for r in contract_table("sets") if r["set"].strip("`") == set_name)
    lo, hi, open_low = parse_range(row["rho range"])
    args = build_parser().parse_args(["solve", "g.npz", "--set", set_name, "--rho", "0.5"])
    assert args.set_name == set_name
    inside = [lo + 1e-3] + ([hi] if math.isfinite(hi) else [1e6]) + ([] if open_low else [lo])
    outside = [lo - 1e-3] + ([hi + 1e-3] if math.isfinite(hi) else []) + ([lo] if open_low else [])
    for rho in inside:
        assert make_set(set_name, rho).rho == rho
    for rho in outside:
        with pytest.raises(UncertaintySetError, match="allowed"):
            make_set(set_name, rho)


def test_undocumented_set_name_is_refused_by_the_command_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A name that is neither registered nor an installed drigm.sets entry point (nor module:ATTRIBUTE): exit 2."""
    from reference.__main__ import main as reference_main
    from reference.game import additive_control_game, save_game

    game = save_game(additive_control_game(), tmp_path / "g.npz")
    assert reference_main(["solve", str(game), "--set", "wasserstein", "--rho", "0.1"]) == 2
    assert "unknown uncertainty set 'wasserstein'" in capsys.readouterr().err


# ===== docs/theory.md =============================================================================
def _theory_sections() -> dict[str, str]:
    """Section number -> its text, for the numbered ``## N.`` headings of docs/theory.md."""
    parts = re.split(r"^## (\d+)\. .*$", THEORY_DOC.read_text(), flags=re.M)
    return {parts[i]: parts[i + 1] for i in range(1, len(parts) - 1, 2)}


def test_theory_property_table_matches_the_registry() -> None:
    rows = table_after(THEORY_DOC, "<!-- property-table -->")
    documented = {row["property"].strip("`"): (row["kind"], row["section"]) for row in rows}
    registered = {p.name: (p.kind, p.section) for p in REGISTRY}
    assert documented == registered
    assert [row["property"].strip("`") for row in rows] == [p.name for p in REGISTRY]


def test_theory_sections_name_the_properties_that_check_them() -> None:
    sections = _theory_sections()
    assert [str(n) for n in range(1, 7)] == list(sections), f"sections {list(sections)}"
    for prop in REGISTRY:
        assert prop.section in sections, f"{prop.name}: docs/theory.md has no section {prop.section}"
        assert f"`{prop.name}`" in sections[prop.section], f"section {prop.section} does not name {prop.name}"


def test_theory_exact_target_table_lists_the_sets_with_exact_rules() -> None:
    rows = table_after(THEORY_DOC, "<!-- contract-table: exact-targets -->")
    documented = [re.sub(r"\(.*\)$", "", row["set"]).strip() for row in rows]
    assert sorted(documented) == sorted(sets_with_rule("exact"))
    section5 = _theory_sections()["5"]
    for name in sets_with_rule("paper"):
        assert re.search(rf"\*\*{re.escape(name)}\*\*", section5, flags=re.I), f"no paper shortcut entry for {name}"
