"""Episode collection: epsilon-greedy (or greedy) rollouts of the agents in one environment.

The runner steps the environment with the agents' utilities, masking unavailable actions, and returns
each episode as arrays in the buffer scheme's layout. Each episode's environment seed is given by the
caller, and exploration draws come from the caller's generator, so rollouts are reproducible.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch.nn.functional import one_hot

from drigm.agents import AgentController, epsilon_greedy
from drigm.envs.base import MultiAgentEnv


@dataclass
class Episode:
    """One collected episode: arrays of length `length + 1` (per-step fields) in the buffer scheme, its return."""

    data: dict[str, np.ndarray]
    length: int
    episode_return: float
    truncated: bool


class EpisodeRunner:
    """Runs whole episodes of `env` with the controller's utilities (epsilon-greedy, action masks respected)."""

    def __init__(self, env: MultiAgentEnv, controller: AgentController, device: torch.device) -> None:
        self.env = env
        self.controller = controller
        self.device = device

    @torch.no_grad()
    def run(self, seed: int, epsilon: float, rng: np.random.Generator) -> Episode:
        """Collect one episode with `env.reset(seed)`; epsilon = 0 gives the greedy (test-mode) policy."""
        env, ctrl = self.env, self.controller
        N, A, limit = env.n_agents, env.n_actions, env.episode_limit
        obs = np.zeros((limit + 1, N, env.obs_dim), dtype=np.float32)
        state = np.zeros((limit + 1, env.state_dim), dtype=np.float32)
        avail = np.zeros((limit + 1, N, A), dtype=bool)
        actions = np.zeros((limit + 1, N), dtype=np.int64)
        reward = np.zeros(limit + 1, dtype=np.float32)
        terminated = np.zeros(limit + 1, dtype=bool)
        ts = env.reset(seed=seed)
        hidden = ctrl.init_hidden(1)
        last = torch.zeros(1, N, A, device=self.device)
        total, t, truncated = 0.0, 0, False
        while True:
            obs[t], state[t], avail[t] = ts.obs, ts.state, ts.avail_actions
            if not avail[t].any(axis=-1).all():
                raise RuntimeError(f"the environment offers no available action to some agent at step {t}")
            inputs = ctrl.build_inputs(torch.as_tensor(ts.obs, device=self.device).unsqueeze(0), last)
            q, hidden = ctrl.step(inputs, hidden)
            acts = epsilon_greedy(q[0].cpu().numpy(), avail[t], epsilon, rng)
            ts = env.step(acts)
            actions[t], reward[t], terminated[t] = acts, ts.reward, ts.terminated
            total += float(ts.reward)
            t += 1
            if ctrl.cfg.last_action:
                last = one_hot(torch.as_tensor(acts, device=self.device), A).float().unsqueeze(0)
            if ts.terminated or ts.truncated or t >= limit:
                truncated = not ts.terminated
                break
        obs[t], state[t], avail[t] = ts.obs, ts.state, ts.avail_actions
        n = t + 1
        data = {
            "obs": obs[:n],
            "state": state[:n],
            "avail_actions": avail[:n],
            "actions": actions[:n],
            "reward": reward[:n],
            "terminated": terminated[:n],
        }
        return Episode(data=data, length=t, episode_return=total, truncated=truncated)
