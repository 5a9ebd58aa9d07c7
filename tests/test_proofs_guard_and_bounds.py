"""The proofs_check valid-fraction guard, and the reference helpers behind Theorem 1 and C4."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import assume
from hypothesis import strategies as st

from proofs_check.properties import Property
from proofs_check.runner import MIN_VALID_FRACTION, run_property
from reference import factorization as fz
from reference.bellman import value_iteration
from reference.game import Game, random_game
from reference.sets import make_set


def _property(keep_every: int) -> Property:
    def check(x: int) -> None:
        assume(x % keep_every == 0)

    return Property("guard_probe", "theorem", "-", "a probe", st.integers(0, 10_000), check, 60)


def test_a_theorem_that_rejects_most_examples_fails() -> None:
    res = run_property(_property(20), "ci", database=False)
    assert not res.passed and "TOO FEW VALID EXAMPLES" in res.detail
    assert res.valid_fraction < MIN_VALID_FRACTION and res.to_json()["valid_fraction"] == round(res.valid_fraction, 4)


def test_a_theorem_with_enough_valid_examples_holds() -> None:
    res = run_property(_property(1), "ci", database=False)
    assert res.passed and res.valid_fraction == 1.0


@pytest.mark.parametrize("seed", range(5))
def test_random_igm_utilities_are_igm(seed: int) -> None:
    rng = np.random.default_rng(seed)
    Q = rng.integers(0, 3, size=(4, 2, 3)).astype(float)  # many ties
    us = fz.random_igm_utilities(Q, 0.0, rng)
    product = fz.argmax_is_product(Q)
    np.testing.assert_array_equal(fz.is_igm(Q, us)[product], True)


@pytest.mark.parametrize("seed", range(3))
@pytest.mark.parametrize(("set_name", "rho"), [("tv", 0.3), ("contamination", 0.2)])
def test_naive_bounds_hold_for_sampled_kernels(seed: int, set_name: str, rho: float) -> None:
    """lower <= Q_i^P (fixed-point Q^P, VDN weights) for kernels in U, and lower <= upper."""
    game = random_game(3, (2, 2), seed=seed, gamma=0.8)
    uset = make_set(set_name, rho)
    b = fz.naive_fixed_point_bounds(game, uset)
    rng = np.random.default_rng(seed)
    q_rob = value_iteration(game, uset).Q.reshape(game.n_states, -1)
    worst = uset.worst_case(game.P_flat, q_rob.max(axis=1))
    for _ in range(20):  # random mixtures of the nominal and worst-case rows stay in the (convex) set
        w = rng.random((game.n_states, game.n_joint, 1))
        P = w * game.P_flat + (1 - w) * worst
        q = fz.optimal_q_fixed_kernel(game, P)
        for i in range(game.n_agents):
            assert np.all(q @ fz.vdn_weights(game.n_actions, i).T >= b.lower[i] - 1e-8)
    for lo, up in zip(b.lower, b.upper, strict=True):
        assert np.all(lo <= up + 1e-8)


def test_optimal_q_fixed_kernel_matches_value_iteration() -> None:
    game = random_game(4, (2, 3), seed=7, gamma=0.9)
    q = fz.optimal_q_fixed_kernel(game, game.P)
    ref = value_iteration(Game(P=game.P, R=game.R, gamma=game.gamma), make_set("contamination", 0.0)).Q
    np.testing.assert_allclose(q, ref.reshape(4, -1), atol=1e-8)
