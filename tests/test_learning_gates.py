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
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from drigm.config import build_config, deep_merge, preset
from drigm.run import Trainer, tabular_report
from reference.sets import make_set

SEED = 0
SETS: dict[str, tuple[dict[str, Any], tuple[str, float]]] = {
    # target config, and the reference set it corresponds to (kl-penalty: rho holds beta)
    "contamination": ({"kind": "exact", "set": "contamination", "rho": 0.5}, ("contamination", 0.5)),
    "tv": ({"kind": "exact", "set": "tv", "rho": 0.2}, ("tv", 0.2)),
    "kl-penalty": ({"kind": "exact", "set": "kl-penalty", "beta": 1.0}, ("kl-penalty", 1.0)),
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
