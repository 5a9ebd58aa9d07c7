"""Episode collection: epsilon-greedy (or greedy) rollouts of the agents in one environment or in B at once.

:class:`EpisodeRunner` runs one environment an episode at a time; :class:`BatchedRunner` steps B battles of a
batched environment (SMAX) together and hands back each finished battle as its own episode. The runner steps
the environment with the agents' utilities, masking unavailable actions, and returns
each episode as arrays in the buffer scheme's layout. Each episode's environment seed is given by the
caller, and exploration draws come from the caller's generator, so rollouts are reproducible.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch.nn.functional import one_hot

from drigm.agents import AgentController, epsilon_greedy
from drigm.envs.base import MultiAgentEnv
from drigm.window_agents import WindowController


@dataclass
class Episode:
    """One collected episode: arrays of length `length + 1` (per-step fields) in the buffer scheme, its return."""

    data: dict[str, np.ndarray]
    length: int
    episode_return: float
    truncated: bool


class EpisodeRunner:
    """Runs whole episodes of `env` with the controller's utilities (epsilon-greedy, action masks respected)."""

    def __init__(
        self, env: MultiAgentEnv, controller: AgentController | WindowController, device: torch.device
    ) -> None:
        self.env = env
        self.controller = controller
        self.device = device
        self.joint_explore = False  # explore.joint: one exploration draw per step for the whole team

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
        memory = ctrl.init_memory(1)
        last = torch.full((1, N), -1, dtype=torch.int64, device=self.device)
        total, t, truncated = 0.0, 0, False
        while True:
            obs[t], state[t], avail[t] = ts.obs, ts.state, ts.avail_actions
            if not avail[t].any(axis=-1).all():
                raise RuntimeError(f"the environment offers no available action to some agent at step {t}")
            q, memory = ctrl.act(torch.as_tensor(ts.obs, device=self.device).unsqueeze(0), last, memory)
            acts = epsilon_greedy(q[0].cpu().numpy(), avail[t], epsilon, rng, N if self.joint_explore else 0)
            ts = env.step(acts)
            actions[t], reward[t], terminated[t] = acts, ts.reward, ts.terminated
            total += float(ts.reward)
            t += 1
            last = torch.as_tensor(acts, device=self.device).unsqueeze(0)
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


@dataclass
class BatchedEpisode(Episode):
    """A finished battle of a :class:`BatchedRunner`: an :class:`Episode` plus its index, seed and `won` flag."""

    index: int = 0
    seed: int = 0
    won: bool = False


class BatchedRunner:
    """Collects episodes from B battles stepped together (a :class:`~drigm.envs.smax.BatchedSMAX`).

    Battle b plays episodes b, b + B, b + 2B, ... of a stream, episode k from env seed ``seed_of(k)``, so
    every episode is a pure function of its seed, the policy and the exploration draws (episode k is the
    battle that ``SMAXEnv.reset(seed_of(k))`` plays). Each battle keeps its own agent hidden state and
    last action, reset when its episode ends. Exploration is epsilon-greedy over the available actions
    with draws from the caller's generator, one (B * N)-row draw per step. The whole collection state
    (the battles, the partial episodes, hidden states) is in :meth:`state_dict`, so a resumed run
    continues exactly.
    """

    def __init__(self, env: Any, controller: AgentController, device: torch.device) -> None:
        self.env = env
        self.controller = controller
        self.device = device
        B, N, A, L = env.batch_size, env.n_agents, env.n_actions, env.episode_limit
        self.obs = np.zeros((B, L + 1, N, env.obs_dim), dtype=np.float32)
        self.state = np.zeros((B, L + 1, env.state_dim), dtype=np.float32)
        self.avail = np.zeros((B, L + 1, N, A), dtype=bool)
        self.actions = np.zeros((B, L + 1, N), dtype=np.int64)
        self.reward = np.zeros((B, L + 1), dtype=np.float32)
        self.terminated = np.zeros((B, L + 1), dtype=bool)
        self.t = np.zeros(B, dtype=np.int64)
        self.index = np.arange(B, dtype=np.int64)
        self.seeds = np.zeros(B, dtype=np.int64)
        self.returns = np.zeros(B, dtype=np.float64)
        self.hidden = controller.init_hidden(B)
        self.last = torch.zeros(B, N, A, device=device)
        self.joint_explore = False  # explore.joint: one exploration draw per battle and step for its team
        self.started = False
        self.seed_of: Callable[[int], int] | None = None

    def start(self, seed_of: Callable[[int], int], first: int = 0) -> None:
        """Reset every battle: battle b starts episode ``first + b`` of the stream `seed_of`."""
        B = self.env.batch_size
        self.seed_of = seed_of
        self.index = np.arange(first, first + B, dtype=np.int64)
        self.seeds = np.array([seed_of(int(k)) for k in self.index], dtype=np.int64)
        ts = self.env.reset(seeds=self.seeds.tolist())
        self.t[:] = 0
        self.returns[:] = 0.0
        self.hidden = self.controller.init_hidden(B)
        self.last.zero_()
        self.obs[:, 0], self.state[:, 0], self.avail[:, 0] = ts.obs.numpy(), ts.state.numpy(), ts.avail_actions.numpy()
        self.started = True

    @torch.no_grad()
    def step(self, epsilon: float, rng: np.random.Generator) -> list[BatchedEpisode]:
        """One step of all B battles; returns the episodes that ended in it, in battle order."""
        if not self.started or self.seed_of is None:
            raise RuntimeError("BatchedRunner.step() before start()")
        seed_of = self.seed_of
        env, ctrl = self.env, self.controller
        B, N, A = env.batch_size, env.n_agents, env.n_actions
        rows = np.arange(B)
        obs, avail = self.obs[rows, self.t], self.avail[rows, self.t]
        if not avail.any(axis=-1).all():
            raise RuntimeError("the environment offers no available action to some agent")
        q, self.hidden = ctrl.step(ctrl.build_inputs(torch.as_tensor(obs, device=self.device), self.last), self.hidden)
        team = N if self.joint_explore else 0
        acts = epsilon_greedy(q.reshape(B * N, A).cpu().numpy(), avail.reshape(B * N, A), epsilon, rng, team)
        acts = acts.reshape(B, N)
        next_seeds = [seed_of(int(k)) for k in self.index + B]
        ts = env.step(acts, reset_seeds=next_seeds)
        reward, term, done = ts.reward.numpy(), ts.terminated.numpy(), ts.done.numpy()
        self.actions[rows, self.t], self.reward[rows, self.t], self.terminated[rows, self.t] = acts, reward, term
        self.returns += reward
        self.t += 1
        final = (ts.final_obs.numpy(), ts.final_state.numpy(), ts.final_avail_actions.numpy())
        self.obs[rows, self.t], self.state[rows, self.t], self.avail[rows, self.t] = final
        if ctrl.cfg.last_action:
            self.last = one_hot(torch.as_tensor(acts, device=self.device), A).float()
        finished: list[BatchedEpisode] = []
        if done.any():
            won = ts.won.numpy()
            for b in np.flatnonzero(done):
                n = int(self.t[b]) + 1
                data = {
                    "obs": self.obs[b, :n].copy(),
                    "state": self.state[b, :n].copy(),
                    "avail_actions": self.avail[b, :n].copy(),
                    "actions": self.actions[b, :n].copy(),
                    "reward": self.reward[b, :n].copy(),
                    "terminated": self.terminated[b, :n].copy(),
                }
                data["actions"][n - 1], data["reward"][n - 1], data["terminated"][n - 1] = 0, 0.0, False
                finished.append(
                    BatchedEpisode(
                        data=data,
                        length=n - 1,
                        episode_return=float(self.returns[b]),
                        truncated=not bool(term[b]),
                        index=int(self.index[b]),
                        seed=int(self.seeds[b]),
                        won=bool(won[b]),
                    )
                )
            d = torch.as_tensor(done, device=self.device)
            self.hidden = self.hidden.masked_fill(d[:, None, None], 0.0)
            self.last = self.last.masked_fill(d[:, None, None], 0.0)
            self.index[done] += B
            self.seeds[done] = np.asarray(next_seeds, dtype=np.int64)[done]
            self.t[done] = 0
            self.returns[done] = 0.0
            fresh = (ts.obs.numpy()[done], ts.state.numpy()[done], ts.avail_actions.numpy()[done])
            self.obs[done, 0], self.state[done, 0], self.avail[done, 0] = fresh
            for arr in (self.actions, self.reward, self.terminated):
                arr[done] = 0
        return finished

    @torch.no_grad()
    def run_episodes(
        self, n: int, seed_of: Callable[[int], int], epsilon: float, rng: np.random.Generator
    ) -> list[BatchedEpisode]:
        """Episodes 0..n-1 of the stream `seed_of` (in index order), from a fresh start of all battles.

        Battles play on past index n until the last wanted episode ends, so `seed_of` must accept any index;
        those surplus episodes are dropped.
        """
        if n < 1:
            raise ValueError(f"n={n} episodes must be >= 1")
        self.start(seed_of, 0)
        got: dict[int, BatchedEpisode] = {}
        while len(got) < n:
            for ep in self.step(epsilon, rng):
                if ep.index < n:
                    got[ep.index] = ep
        return [got[k] for k in range(n)]

    def state_dict(self) -> dict[str, Any]:
        """The collection state: the battles, the partial episodes, per-battle counters and agent memory."""
        if not self.started:
            return {"started": False}
        return {
            "started": True,
            "env": self.env.state_dict(),
            "arrays": {
                k: torch.from_numpy(getattr(self, k).copy())
                for k in ("obs", "state", "avail", "actions", "reward", "terminated", "t", "index", "seeds", "returns")
            },
            "hidden": self.hidden.cpu().clone(),
            "last": self.last.cpu().clone(),
        }

    def load_state_dict(self, state: dict[str, Any], seed_of: Callable[[int], int]) -> None:
        """Restore :meth:`state_dict` (ValueError naming the field when a shape differs); `seed_of` is the stream."""
        self.seed_of = seed_of
        if not state.get("started"):
            self.started = False
            return
        self.env.load_state_dict(state["env"])
        for k, v in state["arrays"].items():
            mine = getattr(self, k)
            if tuple(v.shape) != mine.shape:
                raise ValueError(f"saved runner field {k!r} has shape {tuple(v.shape)}; expected {mine.shape}")
            mine[...] = v.numpy()
        for k in ("hidden", "last"):
            mine = getattr(self, k)
            if tuple(state[k].shape) != tuple(mine.shape):
                raise ValueError(
                    f"saved runner field {k!r} has shape {tuple(state[k].shape)}; expected {tuple(mine.shape)}"
                )
            setattr(self, k, state[k].to(self.device))
        self.started = True
