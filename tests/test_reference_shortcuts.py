"""reference.shortcuts: the paper's target shortcuts as exact operators, and their fixed points."""

from __future__ import annotations

import numpy as np
import pytest

from reference.bellman import value_iteration
from reference.game import additive_control_game, random_game, three_horizons_game
from reference.sets import make_set
from reference.shortcuts import (
    paper_fixed_point,
    paper_tv_backup,
    paper_tv_dual_loss,
    paper_tv_dual_minimiser,
    shortcut_gap,
)


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("rho", [0.0, 0.1, 0.3, 0.7, 1.0])
def test_dual_minimiser_beats_a_fine_grid(seed: int, rho: float) -> None:
    rng = np.random.default_rng(seed)
    S = 5
    P = rng.dirichlet(np.ones(S), size=4) * (rng.random((4, S)) < 0.7)
    P[:, 0] += 1e-3
    P /= P.sum(axis=1, keepdims=True)
    V = rng.normal(size=S) * 3 + (seed - 3)
    g = paper_tv_dual_minimiser(P, V, rho)
    grid = np.linspace(V.min() - 20, V.max() + 20, 40001)
    brute = paper_tv_dual_loss(P[:, None, :], V, grid[None, :], rho).min(axis=1)
    assert np.all(paper_tv_dual_loss(P, V, g, rho) <= brute + 1e-9)


def test_dual_minimiser_is_zero_for_positive_values_and_v_for_a_negative_point_mass() -> None:
    V = np.array([1.0, 2.0, 5.0])
    P = np.array([[0.2, 0.3, 0.5], [0.0, 0.0, 1.0]])
    np.testing.assert_allclose(paper_tv_dual_minimiser(P, V, 0.3), 0.0, atol=1e-12)
    np.testing.assert_allclose(paper_tv_dual_minimiser(np.array([1.0, 0.0]), np.array([-2.0, 4.0]), 0.3), -2.0)


def test_paper_tv_drives_the_continuation_to_zero_when_values_are_positive() -> None:
    game = additive_control_game()
    V = np.array([1.0, 2.0, 3.0])
    np.testing.assert_allclose(paper_tv_backup(game, 0.3, V), game.R_flat, atol=1e-12)


@pytest.mark.parametrize("seed", range(4))
def test_paper_contamination_is_exact_contamination_shifted(seed: int) -> None:
    """Q*_rob = Q_p + gamma rho min V_p / (1 - gamma): same greedy actions, values off by a constant."""
    game = random_game(4, (2, 2), seed=seed, gamma=0.85)
    rho = 0.3
    qp = paper_fixed_point(game, "contamination", rho, tol=1e-12)
    qr = value_iteration(game, make_set("contamination", rho), tol=1e-12)
    shift = game.gamma * rho * qp.V.min() / (1 - game.gamma)
    np.testing.assert_allclose(qr.Q, qp.Q + shift, atol=1e-8)
    np.testing.assert_array_equal(qr.greedy, qp.greedy)
    # and it is a fixed point of its own operator
    q = qp.Q.reshape(game.n_states, -1)
    back = game.R_flat + game.gamma * (1 - rho) * game.P_flat @ q.max(axis=1)
    np.testing.assert_allclose(back, q, atol=1e-10)


def test_shortcut_gaps_are_reported() -> None:
    gap = shortcut_gap(three_horizons_game(), "contamination", 0.3)
    assert gap["max_abs"] == pytest.approx(5.776, abs=1e-2) and gap["greedy_differs"] == 0.0
    tv = shortcut_gap(additive_control_game(), "tv", 0.3)
    assert tv["relative"] > 0.5  # the paper tv fixed point is Q = R here (every value is positive)
    with pytest.raises(ValueError, match="no paper shortcut"):
        paper_fixed_point(additive_control_game(), "kl", 0.3)
