"""The real Learner (agents, mixer, RobustTarget) under exact expectations must reach the reference fixed points.

:mod:`drigm.exact_harness` feeds every (s, a, s') of ``additive_control`` (3 states, 2 agents x 2 actions,
stochastic transitions set by agent 0, additive rewards, so Q*_rob is additive and every mixer can represent it)
in one batch weighted by P0. Repeated updates are a deterministic operator; its fixed point must match, to
REL_TOL relative on Q_tot for every (s, a):

- kind none: the nominal Q*; kind exact: Q*_rob of the same set and radius (reference.value_iteration);
- kind paper: the shortcut's own fixed point (reference.shortcuts.paper_fixed_point), which is far from Q*_rob.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import torch

from drigm.exact_harness import ExactHarness, exact_batch, harness_config, reference_q
from reference.game import additive_control_game
from reference.shortcuts import shortcut_gap

REL_TOL = 1e-3
RHO = 0.3
UPDATES = {"vdn": 1200, "qmix": 4800, "qtran": 2400}  # QMIX's curvature (ELU) leaves an additive target slowly
TARGETS: dict[str, dict[str, Any]] = {
    "none": {"kind": "none"},
    "exact-contamination": {"kind": "exact", "set": "contamination", "rho": RHO},
    "exact-tv": {"kind": "exact", "set": "tv", "rho": RHO},
    "exact-kl-penalty": {"kind": "exact", "set": "kl-penalty", "beta": 1.0},
    "exact-chi2": {"kind": "exact", "set": "chi2", "rho": RHO},
    "paper-contamination": {"kind": "paper", "set": "contamination", "rho": RHO},
    "paper-tv": {"kind": "paper", "set": "tv", "rho": RHO},
}
MIXERS = ["vdn", "qmix", "qtran"]


def run_harness(mixer: str, target: dict[str, Any], seed: int = 0, updates: int | None = None) -> float:
    """The relative error ||Q_tot - Q_ref||_inf / max(1, ||Q_ref||_inf) after `updates` exact updates
    (the learning rates decay over the last fifth)."""
    torch.set_num_threads(1)
    game = additive_control_game()
    harness = ExactHarness(game, harness_config(game, mixer, target), seed=seed)
    harness.run(UPDATES[mixer] if updates is None else updates, lr_decay_from=0.8)
    return harness.result(target).rel_error


@pytest.mark.parametrize("mixer", MIXERS)
@pytest.mark.parametrize("name", list(TARGETS))
def test_fixed_point_matches_the_reference(mixer: str, name: str) -> None:
    rel = run_harness(mixer, TARGETS[name])
    assert rel <= REL_TOL, f"{mixer} with {name}: ||Q_tot - Q_ref|| / ||Q_ref|| = {rel:.2e} > {REL_TOL:g}"


def test_another_seed_reaches_the_same_fixed_point() -> None:
    assert run_harness("qmix", TARGETS["exact-tv"], seed=1) <= REL_TOL


def test_the_targets_are_told_apart_at_this_tolerance() -> None:
    """Every pair of reference fixed points used above differs by far more than REL_TOL, so a learner that
    regressed on the wrong one (another set, a shortcut, no robustness) cannot pass."""
    game = additive_control_game()
    refs = {name: reference_q(game, t) for name, t in TARGETS.items()}
    names = list(refs)
    for i, a in enumerate(names):
        for b in names[i + 1 :]:
            gap = np.max(np.abs(refs[a] - refs[b])) / max(1.0, np.max(np.abs(refs[a])))
            assert gap > 10 * REL_TOL, f"{a} and {b} are only {gap:.2e} apart"
    for set_name in ("contamination", "tv"):
        assert shortcut_gap(game, set_name, RHO)["relative"] > 0.1


def test_exact_batch_holds_every_transition_weighted_by_p0() -> None:
    game = additive_control_game()
    batch = exact_batch(game)
    S, A = game.n_states, game.n_joint
    assert batch["reward"].shape == (S * A * S, 2)
    w = batch["weight"][:, 0].double().numpy().reshape(S, A, S)
    np.testing.assert_allclose(w, game.P_flat / (S * A), rtol=1e-6)
    assert batch["filled"][:, 0].all() and not batch["filled"][:, 1].any()
    # every state is some row's next state, so the batch minimum of V_hat(s') is the minimum over all states
    assert set(batch["state"][:, 1].argmax(-1).tolist()) == set(range(S))
    with pytest.raises(ValueError, match="sa_weight"):
        exact_batch(game, np.zeros((S, A)))
