"""Greedy evaluation of a trained run on a test environment: per-episode returns, won flags and normalised scores.

The sweep evaluates each run on its protocols' test environments with :func:`evaluate_on`; ``drigm evaluate``
uses the same function for any run on any environment, and for the seed paper's released networks.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from drigm.config import ConfigError
from drigm.envs.base import MultiAgentEnv, TimeStep, make_env
from drigm.protocol import TestEnv


class IncompatibleTestEnvError(ConfigError):
    """A test environment's agents, actions or observations differ from the training environment's."""


class _Recorder(MultiAgentEnv):
    """Forwards to `env` and remembers the last TimeStep's info (the runner does not return it)."""

    def __init__(self, env: MultiAgentEnv) -> None:
        self.env = env
        self.last_info: dict[str, Any] = {}

    n_agents = property(lambda self: self.env.n_agents)  # type: ignore[assignment]
    n_actions = property(lambda self: self.env.n_actions)  # type: ignore[assignment]
    obs_dim = property(lambda self: self.env.obs_dim)  # type: ignore[assignment]
    state_dim = property(lambda self: self.env.state_dim)  # type: ignore[assignment]
    episode_limit = property(lambda self: self.env.episode_limit)  # type: ignore[assignment]
    discount = property(lambda self: self.env.discount)  # type: ignore[assignment]

    def reset(self, seed: int | None = None) -> TimeStep:
        ts = self.env.reset(seed)
        self.last_info = dict(ts.info)
        return ts

    def step(self, actions: np.ndarray) -> TimeStep:
        ts = self.env.step(actions)
        self.last_info = dict(ts.info)
        return ts

    def close(self) -> None:
        self.env.close()


def make_test_env(env_data: dict[str, Any]) -> MultiAgentEnv:
    """The environment of a test entry (EnvConfig data: name, episode_limit, kwargs)."""
    kwargs = dict(env_data.get("kwargs") or {})
    if env_data.get("episode_limit") is not None:
        if "episode_limit" in kwargs:
            raise ConfigError("test env episode_limit is set twice: as env.episode_limit and in env.kwargs")
        kwargs["episode_limit"] = env_data["episode_limit"]
    return make_env(env_data["name"], **kwargs)


def evaluate_on(trainer: Any, test: TestEnv, seeds: list[int], score: Any) -> dict[str, Any]:
    """Greedy episodes of a loaded run on one test environment: per-episode returns, won flags, scores."""
    from drigm.runner import EpisodeRunner

    env = make_test_env(test.env)
    try:
        mine, train_env = (env.n_agents, env.n_actions, env.obs_dim), trainer.env
        theirs = (train_env.n_agents, train_env.n_actions, train_env.obs_dim)
        if mine != theirs:
            raise IncompatibleTestEnvError(
                f"test environment {test.name!r} ({test.env['name']}) has (agents, actions, obs_dim) = {mine}, "
                f"the training environment {theirs}: a trained policy cannot act in it"
            )
        rec = _Recorder(env)
        runner = EpisodeRunner(rec, trainer.learner.controller, trainer.device)
        rng = np.random.default_rng(0)
        returns: list[float] = []
        won: list[bool] = []
        lengths: list[int] = []
        played: dict[int, tuple[float, int, bool | None]] = {}
        for s in seeds:
            # a greedy episode is a pure function of its env seed: a repeated seed (the paper's test days repeat
            # some days) is played once and counted as often as it is listed
            if s not in played:
                ep = runner.run(s, 0.0, rng)
                played[s] = (float(ep.episode_return), int(ep.length), rec.last_info.get("won"))
            ret, length, w = played[s]
            returns.append(ret)
            lengths.append(length)
            if w is not None:
                won.append(bool(w))
    finally:
        env.close()
    out: dict[str, Any] = {"env": test.env, "seeds": seeds, "returns": returns, "lengths": lengths}
    if won and len(won) == len(returns):
        out["won"] = won
    if score is not None:
        out["score"] = [score(r) for r in returns]
    return out
