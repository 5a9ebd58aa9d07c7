"""Per-agent utility networks Q_i(tau_i, a_i): MLP or GRU bodies, shared or per-agent parameters.

The :class:`AgentController` builds each agent's input from its observation, optionally its last
action (one-hot) and, with shared parameters, its agent-id one-hot. It runs step by step (the
runner, carrying a hidden state) or over whole episodes (the learner). An MLP body can see a
window of its last ``history`` inputs; that window is its "hidden state", so both bodies share
one stepping interface and the sequence and step paths give the same utilities.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import Tensor, nn
from torch.nn.functional import one_hot, pad, relu

from drigm.normalization import RunningNorm

if TYPE_CHECKING:
    from drigm.config import AgentConfig


class AgentBody(nn.Module):
    """One agent network: ``forward(x (M, in_dim), h (M, hidden_size)) -> (q (M, n_actions), h')``."""

    hidden_size: int

    def forward_sequence(self, x: Tensor) -> Tensor:
        """Utilities for a whole sequence x (M, T, in_dim) from a zero hidden state; shape (M, T, n_actions)."""
        h = x.new_zeros(x.shape[0], self.hidden_size)
        out = []
        for t in range(x.shape[1]):
            q, h = self(x[:, t], h)
            out.append(q)
        return torch.stack(out, dim=1)


class MLPAgent(AgentBody):
    """fc -> ReLU -> fc -> ReLU -> fc over the concatenation of the last `history` inputs (oldest first)."""

    def __init__(self, in_dim: int, n_actions: int, hidden: int, history: int = 1) -> None:
        super().__init__()
        self.in_dim = in_dim
        self.history = history
        self.hidden_size = (history - 1) * in_dim
        self.net = nn.Sequential(
            nn.Linear(in_dim * history, hidden),
            nn.ReLU(),
            nn.Linear(hidden, hidden),
            nn.ReLU(),
            nn.Linear(hidden, n_actions),
        )

    def forward(self, x: Tensor, h: Tensor) -> tuple[Tensor, Tensor]:
        window = torch.cat([h, x], dim=-1)
        return self.net(window), window[:, self.in_dim :]

    def forward_sequence(self, x: Tensor) -> Tensor:
        if self.history == 1:
            return self.net(x)
        T = x.shape[1]
        padded = pad(x, (0, 0, self.history - 1, 0))  # zeros before t = 0, like the zero initial window
        window = torch.cat([padded[:, j : j + T] for j in range(self.history)], dim=-1)
        return self.net(window)


class GRUAgent(AgentBody):
    """fc -> ReLU -> GRU -> fc (the epymarl RNN agent): the hidden state carries the history.

    Whole sequences run through one fused ``nn.GRU`` call; single steps use the same weights.
    """

    def __init__(self, in_dim: int, n_actions: int, hidden: int) -> None:
        super().__init__()
        self.hidden_size = hidden
        self.fc1 = nn.Linear(in_dim, hidden)
        self.rnn = nn.GRU(hidden, hidden, batch_first=True)
        self.fc2 = nn.Linear(hidden, n_actions)

    def forward(self, x: Tensor, h: Tensor) -> tuple[Tensor, Tensor]:
        out, h_next = self.rnn(relu(self.fc1(x)).unsqueeze(1), h.unsqueeze(0).contiguous())
        return self.fc2(out.squeeze(1)), h_next.squeeze(0)

    def forward_sequence(self, x: Tensor) -> Tensor:
        out, _ = self.rnn(relu(self.fc1(x)))
        return self.fc2(out)


def make_body(arch: str, in_dim: int, n_actions: int, hidden: int, history: int) -> AgentBody:
    """Build one agent body by architecture name ("mlp" or "gru")."""
    if arch == "mlp":
        return MLPAgent(in_dim, n_actions, hidden, history)
    if arch == "gru":
        return GRUAgent(in_dim, n_actions, hidden)
    raise ValueError(f"agent.arch={arch!r} is not one of 'mlp', 'gru'")


class AgentController(nn.Module):
    """All N agents' utility networks plus their input construction and (masked) action selection."""

    def __init__(self, n_agents: int, n_actions: int, obs_dim: int, cfg: AgentConfig, obs_norm: bool = False) -> None:
        super().__init__()
        self.n_agents = n_agents
        self.n_actions = n_actions
        self.obs_dim = obs_dim
        self.cfg = cfg
        self.use_agent_id = cfg.shared and cfg.agent_id
        self.input_dim = obs_dim + (n_actions if cfg.last_action else 0) + (n_agents if self.use_agent_id else 0)
        n_bodies = 1 if cfg.shared else n_agents
        self.bodies = nn.ModuleList(
            make_body(cfg.arch, self.input_dim, n_actions, cfg.hidden, cfg.history) for _ in range(n_bodies)
        )
        self.register_buffer("agent_ids", torch.eye(n_agents), persistent=False)
        # observation normaliser (learner.input_norm): applied in build_inputs, so the runner and learner agree
        self.obs_norm: RunningNorm | None = RunningNorm(obs_dim) if obs_norm else None

    @property
    def hidden_size(self) -> int:
        return self.bodies[0].hidden_size

    def build_inputs(self, obs: Tensor, last_actions_onehot: Tensor | None) -> Tensor:
        """Inputs (..., N, input_dim) from obs (..., N, obs_dim) and last actions (..., N, n_actions).

        With an observation normaliser the obs part is normalised with its current statistics.
        """
        parts = [obs if self.obs_norm is None else self.obs_norm(obs)]
        if self.cfg.last_action:
            if last_actions_onehot is None:
                raise ValueError("agent.last_action is on, so build_inputs needs last_actions_onehot")
            parts.append(last_actions_onehot)
        if self.use_agent_id:
            parts.append(self.agent_ids.expand(*obs.shape[:-2], -1, -1))
        return torch.cat(parts, dim=-1)

    def sequence_inputs(self, obs: Tensor, actions: Tensor) -> Tensor:
        """Inputs (B, T, N, d) for whole episodes: obs (B, T, N, obs_dim), actions (B, T, N) int (a_t at t)."""
        last = None
        if self.cfg.last_action:
            onehot = one_hot(actions.long(), self.n_actions).to(obs.dtype)
            last = torch.cat([torch.zeros_like(onehot[:, :1]), onehot[:, :-1]], dim=1)
        return self.build_inputs(obs, last)

    def init_hidden(self, batch: int) -> Tensor:
        """A zero hidden state of shape (batch, N, hidden_size)."""
        return self.agent_ids.new_zeros(batch, self.n_agents, self.hidden_size)

    def init_memory(self, batch: int) -> Tensor:
        """The acting memory at an episode's start (the zero hidden state); see :meth:`act`."""
        return self.init_hidden(batch)

    def act(self, obs: Tensor, last_actions: Tensor, memory: Tensor) -> tuple[Tensor, Tensor]:
        """One acting step: obs (B, N, obs_dim), previous actions (B, N) int (-1: none) -> utilities, memory.

        The same interface as :meth:`drigm.window_agents.WindowController.act`, so one runner serves both.
        """
        last = None
        if self.cfg.last_action:
            last = one_hot(last_actions.clamp_min(0), self.n_actions).to(obs.dtype)
            last = last * (last_actions >= 0).unsqueeze(-1).to(obs.dtype)
        return self.step(self.build_inputs(obs, last), memory)

    def step(self, inputs: Tensor, hidden: Tensor) -> tuple[Tensor, Tensor]:
        """One step for all agents: inputs (B, N, d), hidden (B, N, H) -> utilities (B, N, n_actions), hidden."""
        B, N = inputs.shape[:2]
        if self.cfg.shared:
            q, h = self.bodies[0](inputs.reshape(B * N, -1), hidden.reshape(B * N, -1))
            return q.view(B, N, -1), h.view(B, N, -1)
        outs = [body(inputs[:, i], hidden[:, i]) for i, body in enumerate(self.bodies)]
        return torch.stack([o[0] for o in outs], dim=1), torch.stack([o[1] for o in outs], dim=1)

    def forward(self, inputs: Tensor) -> Tensor:
        """Utilities for whole episodes from a zero hidden state: inputs (B, T, N, d) -> (B, T, N, n_actions)."""
        B, T, N, d = inputs.shape
        if self.cfg.shared:
            x = inputs.permute(0, 2, 1, 3).reshape(B * N, T, d)
            q = self.bodies[0].forward_sequence(x)
            return q.view(B, N, T, -1).permute(0, 2, 1, 3)
        qs = [body.forward_sequence(inputs[:, :, i]) for i, body in enumerate(self.bodies)]
        return torch.stack(qs, dim=2)


def masked_argmax(q: Tensor, avail: Tensor) -> Tensor:
    """argmax over the last axis among available actions (the first maximiser on ties)."""
    return q.masked_fill(~avail.bool(), float("-inf")).argmax(dim=-1)


def epsilon_greedy(
    q: np.ndarray, avail: np.ndarray, epsilon: float, rng: np.random.Generator, team: int = 0
) -> np.ndarray:
    """Per agent: with probability epsilon a uniform available action, else the greedy available one.

    `team` > 0: one draw per `team` consecutive rows (one team's agents) decides for all of them together, so
    the whole team explores or the whole team acts greedily (the seed paper's ``_select_actions``).
    """
    q = np.where(avail, q, -np.inf)
    greedy = q.argmax(axis=-1)
    if epsilon <= 0.0:
        return greedy.astype(np.int64)
    if team > 0:
        if q.shape[0] % team:
            raise ValueError(f"epsilon_greedy: {q.shape[0]} rows are not whole teams of {team} agents")
        explore = np.repeat(rng.random(q.shape[0] // team) < epsilon, team)
    else:
        explore = rng.random(q.shape[0]) < epsilon
    counts = avail.sum(axis=-1)
    picks = np.floor(rng.random(q.shape[0]) * counts).astype(np.int64)
    random_actions = np.array([np.flatnonzero(avail[i])[picks[i]] for i in range(q.shape[0])], dtype=np.int64)
    return np.where(explore, random_actions, greedy).astype(np.int64)
