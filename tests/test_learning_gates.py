"""Learning gates: robust VDN, QMIX and QTRAN must learn decentralised greedy policies that the exact solver
confirms robust-optimal, and their non-robust versions must miss that on the game built to separate them.

Criterion (every state s): V^pi_rob(s) >= V*_rob(s) - 0.01 max(1, max_s |V*_rob(s)|), with pi the joint
action made of each agent's argmax of its own utility given its observation of s, V^pi_rob from
``reference.policy_evaluation`` and V*_rob from ``reference.value_iteration`` under the run's set.

Which (game, mixer) pairs are gated, and why:

- ``robust_vs_nominal`` (4 states; state 0 chooses safe (0,0) or risky (1,1), mis-coordination pays -1)
  x VDN, QMIX, QTRAN x {contamination rho=0.5, TV rho=0.2, KL-penalty beta=1}. In state 0 the robust
  Q* is a 2x2 coordination payoff: the robust optimum (0,0) is the better diagonal entry, both beat the
  mis-coordinated ones. VDN (additive) and QMIX (monotone) cannot fit that payoff exactly, but their
  greedy argmax reaches the better diagonal entry when its margin exceeds their fitting bias, so all
  three mixers are gated where the margin Q*(0,(0,0)) - Q*(0,(1,1)) is large enough: 0.40 for
  contamination at rho=0.5, 0.21 for TV at 0.2, 2.75 for KL-penalty at beta=1. At contamination
  rho=0.2 the margin is 0.04 and at 0.3-0.4 it is 0.18-0.30: there QMIX and VDN sometimes lock in to
  (1,1) (the fitted value of the greedy (0,0) self-loop is biased low), so those radii are not gated.
- The non-robust versions of all three mixers on ``robust_vs_nominal`` must learn the nominal optimum
  (1,1) and so miss robust optimality under every one of those sets (it loses 0.42-5.6 there).
- ``climbing`` and ``penalty`` (one state, 2 agents x 3 actions) x QTRAN only. Their optima (0,0) = 11
  next to -30, and (0,0)/(2,2) = 10 next to -100, are not greedy for any additive or monotone fit of
  exploratory data (relative overgeneralisation), so VDN and QMIX are not gated there; QTRAN's
  unrestricted joint Q_jt plus L_opt/L_nopt handles them. With one state and gamma = 0 the robust
  optimum equals the nominal one, so these gate the factorisation, with the robust target code path on.

All runs use the built-in "tabular" preset (drigm.config.PRESETS), one fixed seed, and QTRAN with
nopt_coef=1.0; each setting passed on seeds 0-4 when the gates were tuned.

These gates test one greedy bit (in ``robust_vs_nominal`` the paper contamination target and a doubled radius
pass them too). The value gates at the end of this module test values on ``three_horizons``, whose robust
optimum is a middle option, and pass on K of the fixed seeds GATE_SEEDS (see there).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from drigm.config import build_config, deep_merge, preset
from drigm.exact_harness import tabular_q_tot
from drigm.run import Trainer, tabular_report
from reference.bellman import value_iteration
from reference.game import three_horizons_game
from reference.sets import make_set
from reference.shortcuts import shortcut_gap

SEED = 0
SETS: dict[str, tuple[dict[str, Any], tuple[str, float]]] = {
    # target config, and the reference set it corresponds to (kl-penalty: rho holds beta)
    "contamination": ({"kind": "exact", "set": "contamination", "rho": 0.5}, ("contamination", 0.5)),
    "tv": ({"kind": "exact", "set": "tv", "rho": 0.2}, ("tv", 0.2)),
    "kl-penalty": ({"kind": "exact", "set": "kl-penalty", "beta": 1.0}, ("kl-penalty", 1.0)),
    "chi2": ({"kind": "exact", "set": "chi2", "rho": 1.0}, ("chi2", 1.0)),
}
# one state and gamma = 0: an episode of 10 steps is 10 independent plays of the matrix game
SINGLE_STATE = {"env": {"episode_limit": 10}}


def train(tmp_path: Path, game: str, algo: str, target: dict[str, Any], extra: dict[str, Any] | None = None) -> Trainer:
    data = deep_merge(
        preset("tabular"),
        {
            "env": {"name": f"tabular:{game}"},
            "mixer": {"name": algo, "params": {"nopt_coef": 1.0} if algo == "qtran" else {}},
            "target": target,
            "seed": SEED,
            "out": str(tmp_path / "run"),
            "tensorboard": False,
            "progress": False,
            "checkpoint_buffer": False,
            "eval": {"episodes": 1},
        },
    )
    trainer = Trainer(build_config(deep_merge(data, extra or {})))
    trainer.train()
    return trainer


def describe(report: dict[str, Any]) -> str:
    v_pi, v_star = np.array(report["robust_value"]), np.array(report["optimal_robust_value"])
    return (
        f"policy {report['policy']}, V^pi_rob {np.round(v_pi, 3).tolist()}, V*_rob {np.round(v_star, 3).tolist()}, "
        f"tolerance {report['robust_optimality_tolerance']:.3g}"
    )


@pytest.mark.parametrize("set_name", list(SETS))
@pytest.mark.parametrize("algo", ["vdn", "qmix", "qtran"])
def test_robust_learner_is_robust_optimal_on_robust_vs_nominal(tmp_path: Path, algo: str, set_name: str) -> None:
    target, uset = SETS[set_name]
    trainer = train(tmp_path, "robust_vs_nominal", algo, target)
    report = tabular_report(trainer.learner.controller, trainer.env, make_set(*uset))
    assert report["robust_optimal"], f"robust {algo} with exact {set_name} is not robust-optimal: {describe(report)}"


@pytest.mark.parametrize("algo", ["vdn", "qmix", "qtran"])
def test_non_robust_learner_misses_robust_optimality(tmp_path: Path, algo: str) -> None:
    trainer = train(tmp_path, "robust_vs_nominal", algo, {"kind": "none"})
    nominal = tabular_report(trainer.learner.controller, trainer.env, make_set("contamination", 0.0))
    assert nominal["robust_optimal"], f"non-robust {algo} did not even learn the nominal optimum: {describe(nominal)}"
    for set_name, (_, uset) in SETS.items():
        report = tabular_report(trainer.learner.controller, trainer.env, make_set(*uset))
        assert not report["robust_optimal"], f"non-robust {algo} is robust-optimal under {set_name}: {describe(report)}"


@pytest.mark.parametrize(("game", "set_name"), [("climbing", "tv"), ("penalty", "contamination")])
def test_qtran_is_robust_optimal_on_the_classic_matrix_games(tmp_path: Path, game: str, set_name: str) -> None:
    target, uset = SETS[set_name]
    trainer = train(tmp_path, game, "qtran", target, SINGLE_STATE)
    report = tabular_report(trainer.learner.controller, trainer.env, make_set(*uset))
    assert report["robust_optimal"], f"robust QTRAN on {game} is not robust-optimal: {describe(report)}"


# ===== value gates on three_horizons: a wrong radius or the paper shortcut fails ==================
# In state 0 of ``three_horizons`` the robust optimum at rho = 0.3 is the middle option (option 1); nominal play
# (and rho <= 0.12) picks option 2, rho >= 0.48 (so the doubled 0.6) picks option 0; the paper contamination
# shortcut keeps option 1 but its values are 5.8 above Q*_rob. Q*_rob is additive, so every mixer can represent
# it. A run passes when its decentralised greedy policy is robust-optimal (the criterion above) AND its learned
# value of that policy is within VALUE_TOL * max_s |V*_rob(s)| of V*_rob in every state:
# |Q_tot(s, pi(s)) - V*_rob(s)| <= 0.15 * 10.6 = 1.6. A gate passes when at least K of the seeds in GATE_SEEDS pass
# (tuned on seed 100 only; seeds 1-3 were not used for tuning).
GATE_RHO = 0.3
VALUE_TOL = 0.15
GATE_SEEDS = (1, 2, 3)
K = 2


def value_gate(trainer: Trainer, set_name: str, rho: float) -> tuple[bool, str]:
    """(passed, description) of one trained run against Q*_rob of (set_name, rho) on its tabular game."""
    game = trainer.env.game
    uset = make_set(set_name, rho)
    report = tabular_report(trainer.learner.controller, trainer.env, uset)
    v_star = value_iteration(game, uset).V
    policy = np.array(report["policy"])
    flat = [game.joint_index(p) for p in policy]
    learned = tabular_q_tot(trainer.learner, game)[np.arange(game.n_states), flat]
    err = learned - v_star
    tol = VALUE_TOL * max(1.0, float(np.max(np.abs(v_star))))
    ok = bool(report["robust_optimal"]) and bool(np.all(np.abs(err) <= tol))
    return ok, f"{describe(report)}, Q_tot(s, pi(s)) - V*_rob {np.round(err, 3).tolist()} (tolerance {tol:.3g})"


def k_of_n(tmp_path: Path, algo: str, target: dict[str, Any], set_name: str) -> list[str]:
    """Train on GATE_SEEDS in turn until the K-of-n verdict is settled (K passes, or more than n - K failures);
    return the per-seed descriptions, each starting "seed N: pass" or "seed N: FAIL"."""
    lines: list[str] = []
    passed = failed = 0
    for seed in GATE_SEEDS:
        trainer = train(tmp_path / f"seed{seed}", "three_horizons", algo, target, {"seed": seed})
        ok, text = value_gate(trainer, set_name, GATE_RHO)
        passed, failed = passed + ok, failed + (not ok)
        lines.append(f"seed {seed}: {'pass' if ok else 'FAIL'}: {text}")
        if passed >= K or failed > len(GATE_SEEDS) - K:
            break
    return lines


@pytest.mark.slow
@pytest.mark.parametrize("set_name", ["contamination", "tv"])
@pytest.mark.parametrize("algo", ["vdn", "qmix", "qtran"])
def test_robust_values_match_on_three_horizons(tmp_path: Path, algo: str, set_name: str) -> None:
    target = {"kind": "exact", "set": set_name, "rho": GATE_RHO}
    lines = k_of_n(tmp_path, algo, target, set_name)
    print("\n".join(lines))  # the per-seed verdicts, shown by pytest -rP
    passes = sum(line.split(": ")[1] == "pass" for line in lines)
    assert passes >= K, f"{algo} exact {set_name}: {passes} of {len(GATE_SEEDS)} seeds pass, need {K}\n" + "\n".join(
        lines
    )


@pytest.mark.slow
@pytest.mark.parametrize(
    "wrong",
    [
        {"kind": "paper", "set": "contamination", "rho": GATE_RHO},
        {"kind": "exact", "set": "contamination", "rho": 2 * GATE_RHO},
    ],
    ids=["paper-contamination", "rho-doubled"],
)
def test_the_value_gate_fails_a_wrong_target(tmp_path: Path, wrong: dict[str, Any]) -> None:
    """The gate above, for exact contamination at rho = 0.3, rejects the paper shortcut and the doubled radius."""
    lines = k_of_n(tmp_path, "vdn", wrong, "contamination")
    print("\n".join(lines))
    passes = sum(line.split(": ")[1] == "pass" for line in lines)
    assert passes < K, f"the gate passed a learner trained on {wrong}:\n" + "\n".join(lines)


def test_three_horizons_has_a_middle_robust_optimum() -> None:
    """The game's claims, exactly: option 1 at rho = 0.3, option 2 nominally, option 0 at 0.6 (margins ~0.9),
    the same under tv, and the paper shortcut's values far off."""
    game = three_horizons_game()
    for set_name in ("contamination", "tv"):
        for rho, best in ((0.0, 2), (GATE_RHO, 1), (2 * GATE_RHO, 0)):
            q0 = value_iteration(game, make_set(set_name, rho)).Q[0].max(axis=1)  # best over agent 1
            assert int(np.argmax(q0)) == best
            assert np.sort(q0)[-1] - np.sort(q0)[-2] > 0.85
    gap = shortcut_gap(game, "contamination", GATE_RHO)
    v_star = value_iteration(game, make_set("contamination", GATE_RHO)).V
    assert gap["greedy_differs"] == 0.0 and gap["max_abs"] > 3 * VALUE_TOL * np.max(np.abs(v_star))
