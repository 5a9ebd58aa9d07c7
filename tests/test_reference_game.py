"""The game model and its `.npz` contract (docs/game-format.md): validation, files, generators, named games.

Every refusal is checked for a message that names the key (and the index or range where there is one).
Nothing may be renormalised: a row that is off by more than the 1e-8 tolerance is refused, and a row
within it is kept exactly as given.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from reference import game as game_module
from reference.game import (
    CLASSIC_GAMES,
    Game,
    GameError,
    climbing_game,
    load_game,
    penalty_game,
    random_game,
    robust_vs_nominal_game,
    save_game,
)


def _valid(S: int = 3, acts: tuple[int, ...] = (2, 2), seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return rng.dirichlet(np.ones(S), size=(S, *acts)), rng.normal(size=(S, *acts))


# ----- construction and validation ----------------------------------------------------------------
def test_a_valid_game_and_its_shapes() -> None:
    P, R = _valid(3, (2, 4))
    g = Game(P=P, R=R, gamma=0.5)
    assert (g.n_states, g.n_actions, g.n_agents, g.n_joint) == (3, (2, 4), 2, 8)
    assert g.P_flat.shape == (3, 8, 3) and g.R_flat.shape == (3, 8)
    assert not g.P.flags.writeable and not g.R.flags.writeable
    np.testing.assert_array_equal(g.observations, np.tile(np.arange(3), (2, 1)))
    np.testing.assert_allclose(g.initial_distribution, np.full(3, 1 / 3))
    for flat in range(8):
        assert g.joint_index(g.joint_action(flat)) == flat
    assert g.joint_index((1, 2)) == 6  # C order: 1 * 4 + 2


def test_negative_entry_is_refused_with_its_index() -> None:
    P, R = _valid()
    P[1, 0, 1, 2] = -0.25
    P[1, 0, 1, 0] += 0.25
    with pytest.raises(GameError, match=r"P has a negative entry .*-0\.25.* at index \(1, 0, 1, 2\)"):
        Game(P=P, R=R, gamma=0.9)


@pytest.mark.parametrize("excess", [1e-6, -1e-3, 0.5])
def test_row_not_summing_to_one_is_refused_not_renormalised(excess: float) -> None:
    P, R = _valid()
    P[2, 1, 0, 0] += excess
    with pytest.raises(GameError, match=r"P row at index \(2, 1, 0\) sums to .*not 1 .*never renormalised"):
        Game(P=P, R=R, gamma=0.9)


def test_row_within_tolerance_is_kept_exactly() -> None:
    P, R = _valid()
    P[0, 0, 0, 0] += 5e-9
    g = Game(P=P.copy(), R=R, gamma=0.9)
    np.testing.assert_array_equal(g.P, P)  # bit for bit: nothing renormalised


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_values_are_refused(bad: float) -> None:
    P, R = _valid()
    P2 = P.copy()
    P2[0, 1, 1, 1] = bad
    with pytest.raises(GameError, match=r"P has a non-finite value .* at index \(0, 1, 1, 1\)"):
        Game(P=P2, R=R, gamma=0.9)
    R2 = R.copy()
    R2[2, 0, 1] = bad
    with pytest.raises(GameError, match=r"R has a non-finite value .* at index \(2, 0, 1\)"):
        Game(P=P, R=R2, gamma=0.9)
    with pytest.raises(GameError, match="gamma has a non-finite value"):
        Game(P=P, R=R, gamma=bad)


def test_shape_mismatches_are_refused() -> None:
    P, R = _valid()
    with pytest.raises(GameError, match=r"R has shape \(3, 2\); expected \(3, 2, 2\)"):
        Game(P=P, R=R[..., 0], gamma=0.9)
    with pytest.raises(GameError, match=r"first and last axes must both be S=3"):
        Game(P=np.full((3, 2, 2, 4), 0.25), R=R, gamma=0.9)
    with pytest.raises(GameError, match=r"P must have shape \(S, n_1, \.\.\., n_N, S\)"):
        Game(P=np.full((3, 3), 1 / 3), R=np.zeros(3), gamma=0.9)
    with pytest.raises(GameError, match="empty axis"):
        Game(P=np.zeros((2, 0, 2)), R=np.zeros((2, 0)), gamma=0.9)
    with pytest.raises(GameError, match=r"obs has shape \(2, 2\); expected \(N, S\) = \(2, 3\)"):
        Game(P=P, R=R, gamma=0.9, obs=np.zeros((2, 2), dtype=np.int64))
    with pytest.raises(GameError, match=r"initial has shape \(2,\); expected \(S,\)"):
        Game(P=P, R=R, gamma=0.9, initial=np.array([0.5, 0.5]))
    with pytest.raises(GameError, match="gamma must be a scalar"):
        Game(P=P, R=R, gamma=np.array([0.5, 0.5]))


@pytest.mark.parametrize("gamma", [1.0, 1.5, -0.1, -1e-12])
def test_gamma_outside_the_unit_interval_is_refused(gamma: float) -> None:
    P, R = _valid()
    with pytest.raises(GameError, match=r"gamma=.* is outside the allowed range \[0, 1\)"):
        Game(P=P, R=R, gamma=gamma)


def test_gamma_zero_and_just_below_one_are_allowed() -> None:
    P, R = _valid()
    assert Game(P=P, R=R, gamma=0.0).gamma == 0.0
    assert Game(P=P, R=R, gamma=np.nextafter(1.0, 0.0)).gamma < 1.0


@pytest.mark.parametrize("value", [3, -1, 100])
def test_obs_out_of_range_is_refused(value: int) -> None:
    P, R = _valid()
    obs = np.zeros((2, 3), dtype=np.int64)
    obs[1, 2] = value
    with pytest.raises(GameError, match=rf"obs has value {value} at index \(1, 2\), outside the range \[0, 3\)"):
        Game(P=P, R=R, gamma=0.9, obs=obs)


def test_obs_must_be_integers() -> None:
    P, R = _valid()
    with pytest.raises(GameError, match="obs must hold integers"):
        Game(P=P, R=R, gamma=0.9, obs=np.zeros((2, 3)))


@pytest.mark.parametrize("initial", [[0.5, 0.5, 0.5], [1.2, -0.2, 0.0], [np.nan, 0.5, 0.5]])
def test_initial_distribution_must_be_stochastic(initial: list[float]) -> None:
    P, R = _valid()
    with pytest.raises(GameError, match="initial"):
        Game(P=P, R=R, gamma=0.9, initial=np.array(initial))


def test_joint_index_range_checks() -> None:
    g = Game(*_valid(), gamma=0.9)
    with pytest.raises(GameError, match=r"action 2 of agent 1 is outside the range \[0, 2\)"):
        g.joint_index((0, 2))
    with pytest.raises(GameError, match="has 3 entries; the game has 2 agents"):
        g.joint_index((0, 1, 0))


# ----- files -------------------------------------------------------------------------------------------
def test_save_load_round_trip_with_obs_and_initial(tmp_path: Path) -> None:
    P, R = _valid(3, (2, 3))
    obs = np.array([[0, 0, 1], [2, 1, 0]], dtype=np.int64)
    initial = np.array([0.2, 0.3, 0.5])
    g = Game(P=P, R=R, gamma=0.75, obs=obs, initial=initial)
    path = save_game(g, tmp_path / "sub" / "g.npz")
    h = load_game(path)
    np.testing.assert_array_equal(h.P, g.P)
    np.testing.assert_array_equal(h.R, g.R)
    np.testing.assert_array_equal(h.obs, obs)
    np.testing.assert_array_equal(h.initial, initial)
    assert h.gamma == 0.75 and h.name == "g"
    with np.load(path) as data:  # the file contract: keys and dtypes
        assert set(data.files) == {"P", "R", "gamma", "obs", "initial"}
        assert data["P"].dtype == np.float64 and data["obs"].dtype == np.int64 and data["gamma"].shape == ()


def test_save_without_optional_keys_and_suffix(tmp_path: Path) -> None:
    g = Game(*_valid(), gamma=0.5)
    path = save_game(g, tmp_path / "plain")
    assert path.name == "plain.npz" and path.is_file()
    with np.load(path) as data:
        assert set(data.files) == {"P", "R", "gamma"}
    h = load_game(path)
    assert h.obs is None and h.initial is None


def test_save_is_atomic(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    g = Game(*_valid(), gamma=0.5)
    target = tmp_path / "g.npz"
    save_game(g, target)
    assert sorted(os.listdir(tmp_path)) == ["g.npz"], "a temporary file was left behind"
    before = target.read_bytes()

    def broken_savez(*args: object, **kwargs: object) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(game_module.np, "savez", broken_savez)
    with pytest.raises(OSError, match="disk full"):
        save_game(Game(*_valid(seed=1), gamma=0.5), target)
    assert sorted(os.listdir(tmp_path)) == ["g.npz"], "a failed save left a partial or temporary file"
    assert target.read_bytes() == before, "a failed save damaged the existing file"


def test_load_missing_file(tmp_path: Path) -> None:
    with pytest.raises(GameError, match=r"game file .*nope\.npz.* does not exist"):
        load_game(tmp_path / "nope.npz")


def test_load_corrupt_file(tmp_path: Path) -> None:
    path = tmp_path / "junk.npz"
    path.write_bytes(np.random.default_rng(0).bytes(512))
    with pytest.raises(GameError, match=r"junk\.npz.* is not a readable \.npz archive"):
        load_game(path)


@pytest.mark.parametrize("missing", ["P", "R", "gamma"])
def test_load_file_missing_a_key(tmp_path: Path, missing: str) -> None:
    P, R = _valid()
    arrays = {"P": P, "R": R, "gamma": np.float64(0.9)}
    del arrays[missing]
    path = tmp_path / "partial.npz"
    np.savez(path, **arrays)
    with pytest.raises(GameError, match=rf"lacks the required key '{missing}'"):
        load_game(path)


def test_load_validates_the_contents(tmp_path: Path) -> None:
    P, R = _valid()
    P[0, 0, 0] = [0.5, 0.5, 0.5]
    path = tmp_path / "bad.npz"
    np.savez(path, P=P, R=R, gamma=np.float64(0.9))
    with pytest.raises(GameError, match=r"P row at index \(0, 0, 0\) sums to"):
        load_game(path)
    np.savez(path, P=_valid()[0], R=R, gamma=np.float64(1.0))
    with pytest.raises(GameError, match=r"outside the allowed range \[0, 1\)"):
        load_game(path)
    np.savez(path, P=_valid()[0], R=R.astype(str), gamma=np.float64(0.5))
    with pytest.raises(GameError, match="key 'R' must be numeric"):
        load_game(path)
    np.savez(path, P=_valid()[0], R=R, gamma=np.float64(0.5), obs=np.full((2, 3), 7, dtype=np.int64))
    with pytest.raises(GameError, match=r"obs has value 7 at index \(0, 0\)"):
        load_game(path)


# ----- generators and named games -------------------------------------------------------------------
def test_random_game_is_deterministic_and_sparse() -> None:
    a = random_game(6, (2, 3), seed=5, sparsity=0.6)
    b = random_game(6, (2, 3), seed=5, sparsity=0.6)
    np.testing.assert_array_equal(a.P, b.P)
    np.testing.assert_array_equal(a.R, b.R)
    assert not np.array_equal(a.P, random_game(6, (2, 3), seed=6, sparsity=0.6).P)
    zeros = np.mean(a.P == 0)
    assert 0.3 < zeros < 0.8
    assert np.all((a.P > 0).sum(axis=-1) >= 1)
    assert np.all(random_game(6, (2, 3), seed=5).P > 0)
    assert np.all((a.R >= -1) & (a.R <= 1))


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"n_states": 0, "n_actions": (2,)}, "--states must be >= 1"),
        ({"n_states": 2, "n_actions": ()}, "--actions must be a non-empty list"),
        ({"n_states": 2, "n_actions": (2, 0)}, "--actions must be a non-empty list"),
        ({"n_states": 2, "n_actions": (2,), "sparsity": 1.0}, r"--sparsity=1.0 is outside the allowed range \[0, 1\)"),
        ({"n_states": 2, "n_actions": (2,), "sparsity": -0.1}, "--sparsity"),
        ({"n_states": 2, "n_actions": (2,), "reward_range": (1.0, -1.0)}, "low <= high"),
    ],
)
def test_random_game_refuses_bad_arguments(kwargs: dict, message: str) -> None:
    with pytest.raises(GameError, match=message):
        random_game(**kwargs)


def test_named_games() -> None:
    climb = climbing_game()
    assert climb.n_states == 1 and climb.n_actions == (3, 3) and climb.gamma == 0.0
    assert climb.R[0].max() == 11.0 and climb.R[0, 0, 0] == 11.0
    pen = penalty_game(-50.0)
    assert pen.R[0, 0, 2] == -50.0 and pen.R[0, 2, 2] == 10.0
    with pytest.raises(GameError, match=r"penalty k=1\.0 must be <= 0"):
        penalty_game(1.0)
    rvn = robust_vs_nominal_game()
    assert rvn.n_states == 4 and rvn.n_actions == (2, 2) and rvn.gamma == 0.8
    assert set(CLASSIC_GAMES) == {"additive_control", "climbing", "penalty", "robust_vs_nominal", "three_horizons"}
    for make in CLASSIC_GAMES.values():
        g = make()
        np.testing.assert_allclose(g.P.sum(axis=-1), 1.0)


@pytest.mark.parametrize("name", ["additive_control", "three_horizons"])
@pytest.mark.parametrize(("set_name", "rho"), [("contamination", 0.3), ("tv", 0.3), ("kl-penalty", 1.0), ("kl", 0.5)])
def test_additive_classics_have_an_additive_robust_q(name: str, set_name: str, rho: float) -> None:
    """Q*_rob(s, a_0, a_1) = f(s, a_0) + g(s, a_1), so VDN (and QMIX, QTRAN) can represent it exactly."""
    from reference.bellman import value_iteration
    from reference.factorization import additive_fit
    from reference.sets import make_set

    game = CLASSIC_GAMES[name]()
    q = value_iteration(game, make_set(set_name, rho)).Q
    _, fitted = additive_fit(q)
    np.testing.assert_allclose(fitted, q, atol=1e-8)
