"""The environment interface, the registry, and the tabular adapter (shapes, dynamics, determinism)."""

from __future__ import annotations

import numpy as np
import pytest

from drigm.envs import ENV_ADAPTERS, EnvError, MultiAgentEnv, TimeStep, make_env, register_env, registered_envs
from drigm.envs.tabular import TabularEnv, default_episode_limit
from reference.game import Game, random_game, robust_vs_nominal_game, save_game


def rollout(env: MultiAgentEnv, seed: int, n_episodes: int = 3) -> list[tuple]:
    """States visited and rewards under seeded random actions, over a few episodes."""
    rng = np.random.default_rng(1234)
    out = []
    for k in range(n_episodes):
        ts = env.reset(seed=seed + k)
        while True:
            acts = np.array([rng.choice(np.flatnonzero(row)) for row in ts.avail_actions])
            ts = env.step(acts)
            out.append((ts.info["state_index"], ts.reward, ts.terminated, ts.truncated))
            if ts.done:
                break
    return out


def test_registry_builds_tabular_classic_game() -> None:
    env = make_env("tabular:robust_vs_nominal")
    assert isinstance(env, TabularEnv)
    assert (env.n_agents, env.n_actions, env.obs_dim, env.state_dim) == (2, 2, 4, 4)
    assert env.discount == pytest.approx(0.8)
    assert env.episode_limit == default_episode_limit(0.8) == 15
    assert "tabular" in registered_envs()


def test_unknown_env_lists_registered_names() -> None:
    with pytest.raises(EnvError, match=r"unknown environment 'nope'.*tabular"):
        make_env("nope:x")


def test_unknown_tabular_game_lists_classic_names() -> None:
    with pytest.raises(EnvError, match=r"climbing.*penalty.*robust_vs_nominal"):
        make_env("tabular:not_a_game")
    with pytest.raises(EnvError, match="does not exist"):
        make_env("tabular:/nonexistent/game.npz")


def test_register_env_decorator_and_duplicates() -> None:
    @register_env("dummy-test-env")
    def factory(arg: str | None, **kwargs: object) -> MultiAgentEnv:
        return TabularEnv(robust_vs_nominal_game(), episode_limit=int(arg or 3))

    try:
        env = make_env("dummy-test-env:4")
        assert env.episode_limit == 4
        with pytest.raises(EnvError, match="already registered"):
            register_env("dummy-test-env")(lambda arg: env)
        with pytest.raises(EnvError, match="contain no ':'"):
            register_env("a:b")
    finally:
        ENV_ADAPTERS.pop("dummy-test-env", None)


def test_timestep_shapes_and_truncation() -> None:
    env = make_env("tabular:robust_vs_nominal", episode_limit=5)
    ts = env.reset(seed=0)
    assert isinstance(ts, TimeStep)
    assert ts.obs.shape == (2, 4) and ts.obs.dtype == np.float32
    assert ts.state.shape == (4,) and ts.state.dtype == np.float32
    assert ts.avail_actions.shape == (2, 2) and ts.avail_actions.dtype == bool and ts.avail_actions.all()
    assert np.array_equal(ts.obs.sum(axis=1), [1.0, 1.0]) and ts.state.sum() == 1.0
    for t in range(5):
        ts = env.step(np.array([0, 0]))
        assert not ts.terminated
        assert ts.truncated == (t == 4)
    with pytest.raises(EnvError, match="after the episode ended"):
        env.step(np.array([0, 0]))


def test_invalid_actions_are_refused_naming_the_agent() -> None:
    env = make_env("tabular:climbing")
    env.reset(seed=0)
    with pytest.raises(EnvError, match="action 3 of agent 1"):
        env.step(np.array([0, 3]))
    with pytest.raises(EnvError, match=r"shape \(3,\)"):
        env.step(np.array([0, 0, 0]))
    with pytest.raises(EnvError, match="integers"):
        env.step(np.array([0.0, 1.0]))


def test_unequal_action_counts_are_masked() -> None:
    env = TabularEnv(random_game(3, (2, 3), seed=0), episode_limit=4)
    ts = env.reset(seed=0)
    assert env.n_actions == 3
    assert ts.avail_actions.tolist() == [[True, True, False], [True, True, True]]
    with pytest.raises(EnvError, match="action 2 of agent 0 is not available"):
        env.step(np.array([2, 0]))


def test_same_seed_same_episodes_different_seed_differs() -> None:
    env = TabularEnv(random_game(6, (2, 3), seed=3), episode_limit=20)
    a, b = rollout(env, seed=7), rollout(env, seed=7)
    assert a == b
    assert rollout(env, seed=8) != a


def test_rewards_and_transition_frequencies_follow_the_game() -> None:
    game = robust_vs_nominal_game()
    env = TabularEnv(game, episode_limit=1)
    # from the corridor (state 3) the good state 1 follows with probability 0.8
    counts = np.zeros(4)
    for k in range(4000):
        env.reset(seed=k)
        env._state = 3  # start in the corridor
        counts[env.step(np.array([0, 1])).info["state_index"]] += 1
    assert counts[[0, 3]].sum() == 0
    assert counts[1] / counts.sum() == pytest.approx(0.8, abs=0.03)
    env.reset(seed=0)
    env._state = 0
    ts = env.step(np.array([0, 0]))
    assert ts.reward == game.R[0, 0, 0] == 0.5 and ts.info["state_index"] == 0


def test_initial_distribution_and_obs_map_from_file(tmp_path) -> None:
    base = random_game(3, (2, 2), seed=0)
    obs = np.array([[0, 0, 1], [2, 1, 0]], dtype=np.int64)
    initial = np.array([0.0, 0.0, 1.0])
    game = Game(P=base.P, R=base.R, gamma=0.5, obs=obs, initial=initial)
    path = save_game(game, tmp_path / "g.npz")
    env = make_env(f"tabular:{path}", episode_limit=2)
    for seed in range(5):
        ts = env.reset(seed=seed)
        assert ts.info["state_index"] == 2
        # agent i sees the one-hot of obs[i, s], the global state is the one-hot of s
        assert np.array_equal(ts.obs.argmax(axis=1), obs[:, 2])
        assert ts.state.argmax() == 2
    assert env.discount == 0.5


def test_game_kwargs_and_bad_episode_limit() -> None:
    env = make_env("tabular:penalty", game_kwargs={"k": -10.0})
    assert env.game.R[0, 0, 2] == -10.0
    with pytest.raises(EnvError, match="bad game_kwargs"):
        make_env("tabular:penalty", game_kwargs={"nope": 1})
    with pytest.raises(EnvError, match="episode_limit=0"):
        make_env("tabular:climbing", episode_limit=0)
