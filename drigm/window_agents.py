"""Agents over a window of the last ``history`` steps, for transition replay (the seed paper's building agents).

A *window* holds, for positions k = 0..h-1 (oldest first, the current step last), each agent's observation,
its previous action (-1: none, at an episode's first step) and whether the position lies inside the episode
(windows are left-padded before the episode's first step). The runner (acting, :meth:`WindowController.act`)
and the learner (sampled transitions, :meth:`WindowController.q`) both evaluate utilities on such windows, so
padding is the same in acting and in training by construction.

Bodies (``agent.arch``):

- ``mlp``: fc over the concatenated window -> ReLU -> fc -> ReLU -> fc; padded positions are zero inputs (the
  same function as :class:`drigm.agents.MLPAgent` over a zero-initialised window);
- ``lstm``: fc -> ReLU -> LSTM over the window's positions inside the episode (from a zero state at the first
  of them; padded positions leave the state untouched) -> ReLU -> fc on the last output (the paper's fc-LSTM-fc
  agent over its 8-step window, its ``networks.QNetwork``).

``agent.pad_action`` = p (the paper's 0) pads as the paper's code does: the previous action before an episode's
first step is p, and the positions before it are real inputs (zero observation, previous action p) that the
MLP reads and the LSTM runs over, from a zero state at the window's first position.

The one-hot last action and agent id enter the first layer as embedding lookups: the same function as a
dense layer over one-hots (each embedding row is the dense weight column of that one-hot entry, initialised
like it), without a matmul over a 200-wide one-hot. Per-agent networks (``agent.shared: false``) keep their
weights stacked on a leading agent axis and run as one batched matmul, not a Python loop over agents.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
from torch import Tensor, nn

from drigm.normalization import RunningNorm

if TYPE_CHECKING:
    from drigm.config import AgentConfig

WINDOW_ARCHS = ("mlp", "lstm")
"""Agent bodies that run over a fixed window (``learner.replay: transitions``)."""


@dataclass
class Window:
    """A batch of windows: obs (B, h, N, obs_dim) float, last actions (B, h, N) int64 (-1 none), valid (B, h) bool."""

    obs: Tensor
    last_actions: Tensor
    valid: Tensor

    def __post_init__(self) -> None:
        B, h, N = self.obs.shape[:3]
        if tuple(self.last_actions.shape) != (B, h, N) or tuple(self.valid.shape) != (B, h):
            raise ValueError(
                f"window shapes disagree: obs {tuple(self.obs.shape)}, last_actions {tuple(self.last_actions.shape)}"
                f" (expected {(B, h, N)}), valid {tuple(self.valid.shape)} (expected {(B, h)})"
            )


class StackedLinear(nn.Module):
    """G independent linear maps applied at once: ``x (G, M, in) -> (G, M, out)``; nn.Linear's initialisation."""

    def __init__(self, groups: int, in_dim: int, out_dim: int, fan_in: int | None = None) -> None:
        super().__init__()
        bound = 1.0 / math.sqrt(fan_in or in_dim)
        self.weight = nn.Parameter(torch.empty(groups, in_dim, out_dim).uniform_(-bound, bound))
        self.bias = nn.Parameter(torch.empty(groups, 1, out_dim).uniform_(-bound, bound))

    def forward(self, x: Tensor) -> Tensor:
        return torch.baddbmm(self.bias, x, self.weight)


class _Lookup(nn.Module):
    """Rows of G x K weight columns of one-hot inputs, plus a fixed zero row (index ``pad``) for 'no input'."""

    def __init__(self, rows: int, dim: int, fan_in: int) -> None:
        super().__init__()
        bound = 1.0 / math.sqrt(fan_in)
        self.pad = rows
        self.table = nn.Embedding(rows + 1, dim, padding_idx=rows)
        with torch.no_grad():
            self.table.weight.uniform_(-bound, bound)
            self.table.weight[rows].zero_()

    def forward(self, idx: Tensor) -> Tensor:
        return self.table(idx)


class WindowController(nn.Module):
    """All N agents' window networks: utilities from windows, for acting and for training on transitions."""

    def __init__(self, n_agents: int, n_actions: int, obs_dim: int, cfg: AgentConfig, obs_norm: bool = False) -> None:
        super().__init__()
        if cfg.arch not in WINDOW_ARCHS:
            raise ValueError(f"agent.arch={cfg.arch!r} has no window form; choose one of {', '.join(WINDOW_ARCHS)}")
        if cfg.pad_action is not None and not 0 <= cfg.pad_action < n_actions:
            raise ValueError(f"agent.pad_action={cfg.pad_action} is out of range: allowed [0, {n_actions - 1}]")
        self.n_agents, self.n_actions, self.obs_dim = n_agents, n_actions, obs_dim
        self.cfg = cfg
        self.history = h = cfg.history
        self.use_agent_id = cfg.shared and cfg.agent_id
        G = self.groups = 1 if cfg.shared else n_agents
        H = cfg.hidden
        step_in = obs_dim + (n_actions if cfg.last_action else 0) + (n_agents if self.use_agent_id else 0)
        # the first layer's fan-in is that of the dense layer over concatenated one-hot inputs
        fan_in = step_in * h if cfg.arch == "mlp" else step_in
        positions = h if cfg.arch == "mlp" else 1  # the MLP has separate first-layer weights per window position
        self.fc_obs = StackedLinear(G, obs_dim * positions, H, fan_in=fan_in)
        self.act_table = _Lookup(G * positions * n_actions, H, fan_in) if cfg.last_action else None
        self.id_table = _Lookup(positions * n_agents, H, fan_in) if self.use_agent_id else None
        if cfg.arch == "mlp":
            self.fc2 = StackedLinear(G, H, H)
            self.rnn_ih = self.rnn_hh = None
        else:
            self.rnn_ih = StackedLinear(G, H, 4 * H)
            self.rnn_hh = StackedLinear(G, H, 4 * H)
        self.out = StackedLinear(G, H, n_actions)
        self.obs_norm: RunningNorm | None = RunningNorm(obs_dim) if obs_norm else None
        self.register_buffer("agent_index", torch.arange(n_agents), persistent=False)

    # ----- memory for acting ----------------------------------------------------------------------
    def init_memory(self, batch: int) -> Window:
        """The window before an episode's first step: nothing inside the episode yet."""
        dev = self.agent_index.device
        h, N = self.history, self.n_agents
        return Window(
            torch.zeros(batch, h, N, self.obs_dim, device=dev),
            torch.full((batch, h, N), -1, dtype=torch.int64, device=dev),
            torch.zeros(batch, h, dtype=torch.bool, device=dev),
        )

    def act(self, obs: Tensor, last_actions: Tensor, memory: Window) -> tuple[Tensor, Window]:
        """One step: obs (B, N, obs_dim), previous actions (B, N) (-1 none) -> utilities (B, N, A), new memory."""
        B = obs.shape[0]
        mem = Window(
            torch.cat([memory.obs[:, 1:], obs.unsqueeze(1)], dim=1),
            torch.cat([memory.last_actions[:, 1:], last_actions.view(B, 1, -1)], dim=1),
            torch.cat([memory.valid[:, 1:], memory.valid.new_ones(B, 1)], dim=1),
        )
        return self.q(mem), mem

    # ----- utilities ------------------------------------------------------------------------------
    def q(self, w: Window) -> Tensor:
        """Utilities (B, N, A) of the windows' last position (each must be inside its episode)."""
        B, h, N, O = w.obs.shape
        if (h, N, O) != (self.history, self.n_agents, self.obs_dim):
            raise ValueError(f"window obs shape {tuple(w.obs.shape)}; expected (B, {self.history}, {N}, {O})")
        G, A = self.groups, self.n_actions
        obs = w.obs if self.obs_norm is None else self.obs_norm(w.obs)
        valid = w.valid
        obs = obs * valid[:, :, None, None].to(obs.dtype)  # padded positions are zero inputs
        # rows m of group g: per-agent networks (G = N) take m = batch index; a shared one (G = 1) m = (b, agent)
        obs_g = obs.permute(2, 0, 1, 3) if G > 1 else obs.permute(0, 2, 1, 3).reshape(1, B * N, h, O)  # (G, M, h, O)
        M = obs_g.shape[1]
        agent = self.agent_index.view(1, 1, N).expand(B, h, N)

        def to_g(x: Tensor) -> Tensor:  # (B, h, N) -> (G, M, h)
            return x.permute(2, 0, 1) if G > 1 else x.permute(0, 2, 1).reshape(1, B * N, h)

        la_g, ag_g = to_g(w.last_actions), to_g(agent)
        valid_g = to_g(valid.unsqueeze(-1).expand(B, h, N))
        pad = self.cfg.pad_action
        if pad is not None:
            # the seed paper's padding: previous action `pad` where there is none, and padded positions are inputs
            la_g = torch.where(valid_g & (la_g >= 0), la_g, pad)
            valid_g = torch.ones_like(valid_g)
        group = torch.arange(G, device=obs.device).view(G, 1, 1)
        pos = torch.arange(h, device=obs.device).view(1, 1, h)
        if self.cfg.arch == "mlp":
            pre = self.fc_obs(obs_g.reshape(G, M, h * O))
            if self.act_table is not None:
                idx = (group * h + pos) * A + la_g
                idx = torch.where(valid_g & (la_g >= 0), idx, self.act_table.pad)
                pre = pre + self.act_table(idx).sum(dim=2)
            if self.id_table is not None:
                idx = torch.where(valid_g, pos * N + ag_g, self.id_table.pad)
                pre = pre + self.id_table(idx).sum(dim=2)
            x = torch.relu(self.fc2(torch.relu(pre)))
        else:
            assert self.rnn_ih is not None and self.rnn_hh is not None
            pre = self.fc_obs(obs_g.reshape(G, M * h, O)).view(G, M, h, -1)
            if self.act_table is not None:
                idx = torch.where(la_g >= 0, group * A + la_g, self.act_table.pad)
                pre = pre + self.act_table(idx)
            if self.id_table is not None:
                pre = pre + self.id_table(ag_g)
            # input projections of all positions at once; unbind (not xs[:, :, k]) so that the backward pass
            # stacks h slices once instead of allocating a full-size zero gradient per position
            xs = self.rnn_ih(torch.relu(pre).reshape(G, M * h, -1)).view(G, M, h, -1).unbind(dim=2)
            vs = valid_g.unsqueeze(-1).unbind(dim=2)
            H = self.cfg.hidden
            hid = obs.new_zeros(G, M, H)
            cell = obs.new_zeros(G, M, H)
            for k in range(h):
                gates = xs[k] + self.rnn_hh(hid)
                i, f, g, o = gates.chunk(4, dim=-1)
                c_new = torch.sigmoid(f) * cell + torch.sigmoid(i) * torch.tanh(g)
                h_new = torch.sigmoid(o) * torch.tanh(c_new)
                cell, hid = torch.where(vs[k], c_new, cell), torch.where(vs[k], h_new, hid)
            x = torch.relu(hid)
        q = self.out(x)  # (G, M, A)
        return q.permute(1, 0, 2) if G > 1 else q.view(B, N, A)


def transition_windows(obs: Tensor, actions: Tensor, length: int, history: int) -> tuple[Tensor, Tensor, Tensor]:
    """The windows of every transition of one episode, for s and s' together.

    `obs` (length + 1, N, O) and `actions` (>= length, N) of one episode. Returns, for t = 0..length-1, the
    h + 1 positions t-h+1 .. t+1: obs (length, h+1, N, O), previous actions (length, h+1, N) (-1 at the
    episode's first step and before it) and valid (length, h+1). Positions 0..h-1 are the window of s_t,
    positions 1..h the window of s_{t+1}; a window never reaches into another episode.
    """
    h = history
    t = torch.arange(length).view(-1, 1)
    steps = t - h + 1 + torch.arange(h + 1).view(1, -1)  # (length, h+1)
    valid = steps >= 0
    idx = steps.clamp_min(0)
    w_obs = obs[idx] * valid[..., None, None].to(obs.dtype)
    prev = (steps - 1).clamp_min(0)
    w_act = torch.where((steps >= 1)[..., None], actions[prev], torch.full_like(actions[prev], -1))
    return w_obs, w_act, valid
