"""``tabular:PATH.npz`` or ``tabular:NAME``: a game file (docs/game-format.md) or a named classic game, run as an
environment.

The episode starts in s0 ~ ``initial`` (uniform when the game gives none), the team reward of joint
action a in s is R(s, a), and the next state is drawn from P(.|s, a). Agent i observes the one-hot
of its observation index ``obs[i, s]`` (the state itself when the game has no ``obs`` map); the
global state is the one-hot of s. Every action is available (when agents have different action
counts, n_actions is the largest and each agent's extra actions are masked). Episodes end only by truncation at
``episode_limit`` steps: a tabular game never terminates, so learners keep bootstrapping.
"""

from __future__ import annotations

import math
import os
from typing import Any

import numpy as np

from drigm.envs.base import EnvError, MultiAgentEnv, TimeStep
from reference.game import CLASSIC_GAMES, Game, GameError, load_game


def default_episode_limit(gamma: float) -> int:
    """1 for a bandit (gamma = 0), else ceil(3 / (1 - gamma)): about three effective horizons."""
    return 1 if gamma == 0.0 else math.ceil(round(3.0 / (1.0 - gamma), 9))


def load_tabular_game(arg: str | None, game_kwargs: dict[str, Any] | None = None) -> Game:
    """The game named by `arg`: a classic game name (with `game_kwargs`) or a path to a game .npz.

    The file format is docs/game-format.md.
    """
    names = ", ".join(sorted(CLASSIC_GAMES))
    if not arg:
        raise EnvError(f"'tabular' needs a game: 'tabular:PATH.npz' or 'tabular:NAME' with NAME one of {names}")
    kwargs = dict(game_kwargs or {})
    if arg in CLASSIC_GAMES:
        try:
            return CLASSIC_GAMES[arg](**kwargs)
        except TypeError as exc:
            from drigm.config import brief

            raise EnvError(f"bad game_kwargs {brief(kwargs)} for classic game {arg!r}: {brief(str(exc))}") from exc
    if kwargs:
        from drigm.config import brief

        raise EnvError(f"game_kwargs {brief(kwargs)} apply to classic games only ({names}), not to the file {arg!r}")
    if not arg.endswith(".npz") and not os.path.lexists(arg):  # an existing path is reported by load_game as is
        raise EnvError(f"unknown tabular game {arg!r}: give a path to a .npz game file or one of {names}")
    try:
        return load_game(arg)
    except GameError as exc:
        raise EnvError(str(exc)) from exc


class TabularEnv(MultiAgentEnv):
    """A validated :class:`reference.game.Game` as a :class:`MultiAgentEnv`."""

    def __init__(self, game: Game, episode_limit: int | None = None) -> None:
        limit = default_episode_limit(game.gamma) if episode_limit is None else episode_limit
        if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
            raise EnvError(f"episode_limit={limit!r} must be an integer >= 1")
        self.game = game
        self._limit = int(limit)
        self._n_actions = max(game.n_actions)
        S = game.n_states
        self._eye = np.eye(S, dtype=np.float32)
        self._obs_map = game.observations  # (N, S)
        self._P = game.P_flat  # (S, A, S)
        self._R = game.R_flat  # (S, A)
        self._cum_P = np.cumsum(self._P, axis=-1)
        self._cum_init = np.cumsum(game.initial_distribution)
        self._avail = np.arange(self._n_actions)[None, :] < np.array(game.n_actions)[:, None]
        self._rng = np.random.default_rng()
        self._state: int | None = None
        self._t = 0

    # ----- shapes ---------------------------------------------------------------------------------
    @property
    def n_agents(self) -> int:
        return self.game.n_agents

    @property
    def n_actions(self) -> int:
        return self._n_actions

    @property
    def obs_dim(self) -> int:
        return self.game.n_states

    @property
    def state_dim(self) -> int:
        return self.game.n_states

    @property
    def episode_limit(self) -> int:
        return self._limit

    @property
    def discount(self) -> float:
        return self.game.gamma

    @property
    def current_state(self) -> int:
        """The index of the current state (after reset)."""
        if self._state is None:
            raise EnvError("the environment has not been reset")
        return self._state

    # ----- observations ---------------------------------------------------------------------------
    def observations_of(self, s: int) -> np.ndarray:
        """The (n_agents, obs_dim) one-hot observations that the agents receive in state `s`."""
        return self._eye[self._obs_map[:, s]]

    def avail_actions_of(self, s: int) -> np.ndarray:
        """The (n_agents, n_actions) availability mask in state `s` (the same in every state of a game)."""
        return self._avail.copy()

    def state_of(self, s: int) -> np.ndarray:
        """The global state vector (one-hot) of state `s`."""
        return self._eye[s]

    def _sample(self, cum: np.ndarray) -> int:
        # inverse-CDF draw; searchsorted on the cumulative row is exact for rows that sum to 1
        idx = int(np.searchsorted(cum, self._rng.random() * cum[-1], side="right"))
        return min(idx, cum.shape[0] - 1)

    def _timestep(self, reward: float, truncated: bool) -> TimeStep:
        s = self.current_state
        return TimeStep(
            obs=self.observations_of(s),
            state=self.state_of(s),
            avail_actions=self._avail.copy(),
            reward=reward,
            terminated=False,
            truncated=truncated,
            info={"state_index": s},
        )

    # ----- dynamics -------------------------------------------------------------------------------
    def reset(self, seed: int | None = None) -> TimeStep:
        if seed is not None:
            self._rng = np.random.default_rng(seed)
        self._state = self._sample(self._cum_init)
        self._t = 0
        return self._timestep(0.0, truncated=False)

    def step(self, actions: np.ndarray) -> TimeStep:
        s = self.current_state
        if self._t >= self._limit:
            raise EnvError(f"step() called after the episode ended at episode_limit={self._limit}; call reset()")
        a = self.check_actions(actions, self._avail)
        flat = int(np.ravel_multi_index(tuple(a), self.game.n_actions))
        reward = float(self._R[s, flat])
        self._state = self._sample(self._cum_P[s, flat])
        self._t += 1
        return self._timestep(reward, truncated=self._t >= self._limit)


def make_tabular_env(
    arg: str | None, episode_limit: int | None = None, game_kwargs: dict[str, Any] | None = None
) -> TabularEnv:
    """Registry factory for ``tabular:PATH.npz`` and ``tabular:NAME`` (NAME from reference.game.CLASSIC_GAMES)."""
    return TabularEnv(load_tabular_game(arg, game_kwargs), episode_limit=episode_limit)
