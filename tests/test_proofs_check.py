"""proofs_check: the ci profile passes through the package API, the JSON contract of docs/game-format.md holds,
and the command line's exit status follows the results."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from proofs_check import PROFILES, REGISTRY, PropertyResult, format_report, run_all, write_json
from proofs_check import properties as props
from proofs_check.__main__ import main
from proofs_check.runner import get_profile
from reference import Game
from reference.sets import UncertaintySet

REPO = Path(__file__).resolve().parent.parent

THEOREMS = {
    "sigma_monotone",
    "sigma_translation_equivariant",
    "sigma_superadditive",
    "sigma_below_nominal",
    "sigma_monotone_in_rho",
    "bellman_contraction",
    "vi_certified_bound",
    "q_rob_below_q_nominal",
    "v_pi_rob_is_min_over_kernels",
    "theorem_a_decentralised_guarantee",
    "theorem_b_approximate_bound",
    "proposition_c_max_marginals_unique",
    "theorem_1_worst_case_kernel_utilities",
    "robust_vdn_projected_iteration",
    "monotone_mixing_projected_iteration",
}
COUNTEREXAMPLES = {
    "c1_nominal_greedy_not_robust",
    "c2_max_marginals_tied_optima",
    "c3_per_agent_robustification",
    "c4_naive_worst_case_utilities",
    "shortcut_contamination_gap",
    "shortcut_tv_gap",
}


@pytest.fixture(scope="module")
def ci_results() -> list[PropertyResult]:
    """The whole ci profile, once (fixed seeds, no example database)."""
    return run_all("ci", progress=False, database=False)


def test_registry_names_every_statement_once() -> None:
    names = [p.name for p in REGISTRY]
    assert len(names) == len(set(names))
    kinds = {p.name: p.kind for p in REGISTRY}
    assert {n for n, k in kinds.items() if k == "theorem"} >= THEOREMS
    assert {n for n, k in kinds.items() if k == "counterexample"} >= COUNTEREXAMPLES
    assert all(p.confirm is not None for p in REGISTRY if p.kind == "counterexample")


def test_ci_profile_passes(ci_results: list[PropertyResult]) -> None:
    failed = [f"{r.name}: {r.detail}" for r in ci_results if not r.passed]
    assert not failed, "\n".join(failed)
    assert [r.name for r in ci_results] == [p.name for p in REGISTRY]
    assert all(r.examples >= 1 for r in ci_results)


def test_counterexamples_are_small_confirmed_games(ci_results: list[PropertyResult]) -> None:
    for r in ci_results:
        if r.kind != "counterexample":
            continue
        ce = r.counterexample
        assert ce is not None, r.name
        game = Game(P=np.asarray(ce["P"]), R=np.asarray(ce["R"]), gamma=ce["gamma"])  # validates the game
        assert game.n_states == ce["S"] and list(game.n_actions) == ce["n_actions"]
        UncertaintySet(ce["set"], ce["rho"])  # a valid set and radius
        assert game.n_states <= 8 and game.n_joint <= 64
        assert ce["values"], r.name
    shortcuts = [r for r in ci_results if r.name.startswith("shortcut_")]
    assert all(r.worst_gap is not None and abs(r.worst_gap["gap"]) > 0 for r in shortcuts)


def test_json_contract(ci_results: list[PropertyResult], tmp_path: Path) -> None:
    out = write_json(ci_results, tmp_path / "sub" / "out.json")
    data = json.loads(out.read_text())
    assert isinstance(data, list) and len(data) == len(REGISTRY)
    for obj, prop in zip(data, REGISTRY, strict=True):
        assert obj["name"] == prop.name
        assert obj["kind"] in ("theorem", "counterexample") and obj["kind"] == prop.kind
        assert isinstance(obj["examples"], int) and not isinstance(obj["examples"], bool) and obj["examples"] >= 1
        assert isinstance(obj["passed"], bool)
        if obj["kind"] == "counterexample":
            assert "counterexample" in obj
            if obj["passed"]:
                assert {"P", "R", "gamma", "set", "rho"} <= set(obj["counterexample"])
    assert not list(tmp_path.glob("sub/.*.tmp")), "the temporary file of the atomic write was left behind"


def test_report_has_a_row_per_property_and_the_games(ci_results: list[PropertyResult]) -> None:
    text = format_report(ci_results)
    for r in ci_results:
        assert r.name in text
    assert "found" in text and "holds" in text
    assert "P = " in text and "R = " in text  # the counterexample games are printed
    assert "worst gap" in text


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "proofs_check", *args], cwd=REPO, capture_output=True, text=True, timeout=600
    )


def test_cli_exits_zero_and_writes_json(tmp_path: Path) -> None:
    out = tmp_path / "pc.json"
    proc = _cli("--only", "sigma_monotone", "--only", "c2_max_marginals_tied_optima", "--no-progress", "--no-database",
                "--json", str(out))  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "sigma_monotone" in proc.stdout and "c2_max_marginals_tied_optima" in proc.stdout
    data = json.loads(out.read_text())
    assert [d["name"] for d in data] == ["sigma_monotone", "c2_max_marginals_tied_optima"]
    assert all(d["passed"] for d in data)


@pytest.mark.parametrize(
    ("args", "needle"),
    [(("--profile", "bogus"), "invalid choice"), (("--only", "no_such_property"), "unknown property")],
)
def test_cli_refuses_bad_arguments(args: tuple[str, ...], needle: str) -> None:
    proc = _cli(*args)
    assert proc.returncode == 2
    assert needle in proc.stderr


def test_cli_lists_properties() -> None:
    proc = _cli("--list")
    assert proc.returncode == 0
    assert all(p.name in proc.stdout for p in REGISTRY)


def test_cli_exit_status_is_nonzero_when_a_theorem_fails(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    original = UncertaintySet.support

    def broken(self: UncertaintySet, P0: np.ndarray, V: np.ndarray, validate: bool = True) -> np.ndarray:
        if self.name != "contamination":
            return original(self, P0, V, validate)
        return (1 - self.rho) * (np.asarray(P0) @ np.asarray(V)) + self.rho * np.max(V)

    monkeypatch.setattr(UncertaintySet, "support", broken)
    out = tmp_path / "fail.json"
    status = main(["--only", "sigma_below_nominal", "--no-progress", "--no-database", "--json", str(out)])
    assert status == 1
    (entry,) = json.loads(out.read_text())
    assert entry["passed"] is False and entry["kind"] == "theorem"
    assert "falsifying" in entry


def test_cli_exit_status_is_nonzero_when_a_counterexample_is_not_found(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setattr(props, "_c2_values", lambda case, sol: None)  # the search can no longer see C2
    out = tmp_path / "missing.json"
    status = main(["--only", "c2_max_marginals_tied_optima", "--no-progress", "--no-database", "--json", str(out)])
    assert status == 1
    (entry,) = json.loads(out.read_text())
    assert entry["passed"] is False and entry["counterexample"] is None


def test_profiles() -> None:
    assert PROFILES["ci"].fixed_seed and not PROFILES["thorough"].fixed_seed
    assert PROFILES["thorough"].factor > PROFILES["ci"].factor
    with pytest.raises(ValueError, match="unknown profile"):
        get_profile("fast")


def test_certified_iteration_converges_on_a_contraction_and_refuses_an_expansion() -> None:
    from proofs_check import exact
    from reference.game import random_game

    game = random_game(2, [2], seed=0, gamma=0.5)
    x, res, bound, sweeps = exact._iterate(lambda v: 0.5 * v + 1.0, np.zeros(3), game, 1e-12, "toy")
    assert np.allclose(x, 2.0, atol=1e-11) and bound == pytest.approx(res) and bound <= 1e-12
    assert sweeps <= exact.contraction_sweeps(0.5, 1.0, 1e-12)
    with pytest.raises(exact.ContractionError, match=r"toy needed more than the \d+ sweeps a 0.5-contraction"):
        exact._iterate(lambda v: 2.0 * v + 1.0, np.zeros(3), game, 1e-12, "toy")


def test_c3_search_and_confirmation_judge_one_definition() -> None:
    """Issue 31: the search flagged games where only VDN's additivity loses (the two placements agree, so sum_i
    sigma(V_i) = sigma(sum_i V_i) everywhere) and the confirmation refused them, so the README's theory command
    failed whenever Hypothesis's database replayed one. Both now judge the placement cost alone."""
    from hypothesis import HealthCheck, given, settings

    from proofs_check.strategies import GameCase

    # one state: every support function is additive, so the two placements coincide; yet VDN's additive fit of
    # the payoff [[2, -5], [0, 0]] prefers (1, 0) (worth 0) to the optimum (0, 0) (worth 2)
    game = Game(P=np.ones((1, 2, 2, 1)), R=np.array([[[2.0, -5.0], [0.0, 0.0]]]), gamma=0.8)
    case = GameCase(game, "tv", 0.05)
    vals = props._c3_values(case)
    assert vals is not None and vals["gap"] > props._margin(game)  # the old search's test: it flagged this game
    assert vals["placement_cost"] == 0.0 and not props._c3_holds(vals, props._margin(game))
    props.c3_per_agent_robustification(case)  # no counterexample: nothing to blame on the placement
    with pytest.raises(props.ConfirmationError, match="no state where the per-agent placement"):
        props._confirm_c3(props.FalsifiedError("forced", case, vals))

    prop = props.get_property("c3_per_agent_robustification")
    margin_hits = []

    @settings(max_examples=25, derandomize=True, database=None, deadline=None, suppress_health_check=list(HealthCheck))
    @given(prop.strategy)
    def draw(case: GameCase) -> None:
        vals = props._c3_values(case)
        if props._c3_holds(vals, props._margin(case.game)):
            margin_hits.append(case)
            props._confirm_c3(props.FalsifiedError("hit", case, vals))  # ConfirmationError if they disagree

    draw()


def test_c3_passes_consecutive_runs_with_a_database_and_with_random_seeds(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Issue 31: the README's theory command failed C3 on every run once its database held a stale example.
    benchmarks/proofs_check_stability.py runs 20 rounds; CI runs two (the database persists between them)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("stab", REPO / "benchmarks" / "proofs_check_stability.py")
    assert spec is not None and spec.loader is not None
    stab = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(stab)
    monkeypatch.setenv("PROOFS_CHECK_DB", str(tmp_path))
    result = stab.stability(["c3_per_agent_robustification"], 2, tmp_path)
    assert result == {("c3_per_agent_robustification", "ci"): [True, True],
                      ("c3_per_agent_robustification", "random"): [True, True]}  # fmt: skip
