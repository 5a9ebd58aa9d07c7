"""Drive the real :class:`~drigm.learner.Learner` with exact expectations on a tabular game.

:func:`exact_batch` puts every transition (s, a, s') of a :class:`reference.game.Game` into one batch of length-1
episodes (s at t = 0, s' at t = 1), weighted by w(s, a) P0(s'|s, a) through the batch entry ``weight``. Every
state appears as some s' (rows with P0 = 0 enter with weight 0), so the batch minimum m_hat of V_hat(s') is the
exact min_s V_hat(s), and the weighted TD loss and auxiliary losses are their exact expectations over s' ~ P0.
Each :meth:`Learner.update` on that batch is then a deterministic map of the parameters, with no sampling
noise; :class:`ExactHarness` iterates it and reads Q_tot(s, a) for every (s, a), so its fixed point can be
compared with :mod:`reference` (Q*_rob for the exact targets, :func:`reference.shortcuts.paper_fixed_point` for
the paper shortcuts). Agents must be memoryless (MLP, history 1, no last action): their utility at s is then a
function of their observation of s alone.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import numpy as np
import torch
from torch import Tensor
from torch.nn.functional import one_hot

from drigm.config import RunConfig, build_config, deep_merge
from drigm.learner import Learner
from drigm.targets import TargetConfig
from reference.bellman import value_iteration
from reference.game import Game
from reference.sets import make_set, sample_rule
from reference.shortcuts import paper_fixed_point

__all__ = ["ExactHarness", "HarnessResult", "exact_batch", "harness_config", "reference_q", "tabular_q_tot"]


def exact_batch(
    game: Game, sa_weight: np.ndarray | None = None, device: torch.device | None = None
) -> dict[str, Tensor]:
    """A batch of S * A * S length-1 episodes, one per (s, a, s') in C order, for :meth:`Learner.update`.

    Keys as :func:`drigm.buffer.marl_scheme` plus ``weight`` (B, 2) float: w(s, a) P0(s'|s, a) at t = 0 and 0 at
    t = 1. ``filled`` is 1 at t = 0 only, so every row (zero weight included) is a valid nonterminal transition
    and enters m_hat. `sa_weight` (S, A) >= 0 defaults to uniform 1 / (S A); it is normalised to sum 1.
    Observations are one-hots of ``game.observations``, the state is the one-hot of s; agents with fewer actions
    than the largest count have the extra ones unavailable (as in :class:`drigm.envs.tabular.TabularEnv`).
    """
    S, A, N = game.n_states, game.n_joint, game.n_agents
    n_act = max(game.n_actions)
    w = np.full((S, A), 1.0 / (S * A)) if sa_weight is None else np.asarray(sa_weight, dtype=float)
    if w.shape != (S, A) or not np.all(np.isfinite(w)) or np.any(w < 0) or w.sum() <= 0:
        raise ValueError(f"sa_weight must be a finite (S, A) = {(S, A)} array >= 0 with a positive sum")
    w = w / w.sum()
    s, a, s2 = (x.reshape(-1) for x in np.meshgrid(np.arange(S), np.arange(A), np.arange(S), indexing="ij"))
    joint = np.stack(np.unravel_index(a, game.n_actions), axis=-1)  # (B, N)
    eye = np.eye(S, dtype=np.float32)
    obs_map = game.observations  # (N, S)
    B = s.size
    states = np.stack([s, s2], axis=1)  # (B, 2)
    obs = eye[obs_map.T[states]]  # (B, 2, N, S)
    avail = np.broadcast_to(np.arange(n_act)[None, :] < np.array(game.n_actions)[:, None], (B, 2, N, n_act))
    actions = np.zeros((B, 2, N), dtype=np.int64)
    actions[:, 0] = joint
    reward = np.zeros((B, 2), dtype=np.float32)
    reward[:, 0] = game.R_flat[s, a]
    weight = np.zeros((B, 2), dtype=np.float32)
    weight[:, 0] = w[s, a] * game.P_flat[s, a, s2]
    filled = np.zeros((B, 2), dtype=bool)
    filled[:, 0] = True
    batch = {
        "obs": torch.as_tensor(obs),
        "state": torch.as_tensor(eye[states]),
        "avail_actions": torch.as_tensor(np.ascontiguousarray(avail)),
        "actions": torch.as_tensor(actions),
        "reward": torch.as_tensor(reward),
        "terminated": torch.zeros((B, 2), dtype=torch.bool),
        "filled": torch.as_tensor(filled),
        "weight": torch.as_tensor(weight),
    }
    return {k: v.to(device) for k, v in batch.items()} if device is not None else batch


def harness_config(
    game: Game, mixer: str, target: dict[str, object], overrides: dict[str, object] | None = None
) -> RunConfig:
    """The RunConfig the harness tests use: memoryless MLP agents, Adam, hard target updates every 10 updates.

    `overrides` are deep-merged last (nested dicts, e.g. ``{"learner": {"lr": 1e-3}}``).
    """
    kind, set_name = str(target.get("kind", "none")), str(target.get("set", "contamination"))
    n_aux = max(1, len(sample_rule(kind, set_name).aux_outputs)) if kind in ("none", "exact", "paper") else 1
    data: dict[str, object] = {
        "env": {"name": "tabular:robust_vs_nominal"},  # unused: the harness builds its own batches
        "agent": {"arch": "mlp", "hidden": 32, "history": 1, "last_action": False},
        "mixer": {"name": mixer, "params": {"nopt_coef": 1.0} if mixer == "qtran" else {}},
        "learner": {
            "gamma": game.gamma,
            "lr": 1e-3 if mixer == "qtran" else 3e-3,  # QTRAN's L_opt/L_nopt coupling oscillates at 3e-3
            "grad_clip": 100.0,
            "double_q": True,
            "target_update": "hard",
            "target_update_interval": 10,
            "device": "cpu",
        },
        # two aux steps per update and per auxiliary output keep the aux net (eta, psi, g; chi2's eta and s) close to
        # its exact optimum for the current V_hat; QTRAN's joint Q moves more abruptly, and its kl psi net overshoots
        # at 3e-3
        "target": {"aux_lr": 1e-3 if mixer == "qtran" else 3e-3, "aux_steps": 2 * n_aux, **target},
    }
    return build_config(deep_merge(data, overrides or {}))


@torch.no_grad()
def tabular_q_tot(learner: Learner, game: Game, target_network: bool = False) -> np.ndarray:
    """Q_tot(s, a) (QTRAN: Q_jt) of a learner's online (or target) networks on a tabular game; shape (S, A) float64.

    Agents see the one-hot observations of ``game.observations`` with a zero history (the start of an episode), the
    mixer sees the one-hot state; every joint action is evaluated, available or not.
    """
    S, A, N = game.n_states, game.n_joint, game.n_agents
    controller = learner.target_controller if target_network else learner.controller
    mixer = learner.target_mixer if target_network else learner.mixer
    device = next(controller.parameters()).device
    eye = torch.eye(S, device=device)
    obs = eye[torch.as_tensor(game.observations.T, device=device)]  # (S, N, S)
    last = torch.zeros(S, N, learner.n_actions, device=device)
    q, _ = controller.step(controller.build_inputs(obs, last), controller.init_hidden(S))  # (S, N, n_act)
    joint = torch.as_tensor(np.stack(np.unravel_index(np.arange(A), game.n_actions), axis=-1), device=device)
    chosen = q[:, None].expand(S, A, N, -1).gather(-1, joint[None, :, :, None].expand(S, A, N, 1))[..., 0]
    state = eye[:, None].expand(S, A, S)
    if learner.state_norm is not None:
        state = learner.state_norm(state)
    onehot = one_hot(joint, learner.n_actions).to(state.dtype).flatten(-2)[None].expand(S, A, -1)
    return mixer(chosen, state, onehot).double().cpu().numpy()


@dataclass(frozen=True)
class HarnessResult:
    """Q_tot (S, A) after the run, the reference Q (S, A), and ||Q_tot - Q_ref||_inf / max(1, ||Q_ref||_inf)."""

    q_tot: np.ndarray
    q_ref: np.ndarray
    rel_error: float
    updates: int
    last_stats: dict[str, float]


def reference_q(game: Game, target: dict[str, object]) -> np.ndarray:
    """The (S, A) fixed point the learner's operator must reach for `target` (a TargetConfig mapping).

    none: nominal Q*; exact: Q*_rob of (set, rho) (kl-penalty: beta); paper: the shortcut's own fixed point.
    """
    kind = target.get("kind", "none")
    set_name = str(target.get("set", "contamination"))
    rho = float(target.get("rho", 0.0))  # type: ignore[arg-type]
    if kind == "none":
        q = value_iteration(game, make_set("contamination", 0.0)).Q
    elif kind == "paper":
        q = paper_fixed_point(game, set_name, rho).Q
    else:
        known = {k: v for k, v in target.items() if k in TargetConfig.__dataclass_fields__}
        q = value_iteration(game, make_set(set_name, TargetConfig(**known).radius)).Q  # type: ignore[arg-type]
    return q.reshape(game.n_states, game.n_joint)


class ExactHarness:
    """A real Learner (agents, mixer, RobustTarget) updated on :func:`exact_batch` of one game, on the CPU."""

    def __init__(self, game: Game, cfg: RunConfig, seed: int = 0, sa_weight: np.ndarray | None = None) -> None:
        ac = cfg.agent
        if ac.arch != "mlp" or ac.history != 1 or ac.last_action:
            raise ValueError("the exact harness needs memoryless agents: agent.arch=mlp, history=1, last_action=off")
        if cfg.learner.gamma is not None and not math.isclose(cfg.learner.gamma, game.gamma):
            raise ValueError(f"learner.gamma={cfg.learner.gamma} differs from the game's gamma={game.gamma}")
        self.game = game
        self.cfg = replace(cfg, seed=seed)
        torch.manual_seed(seed)
        S = game.n_states
        self.learner = Learner(cfg, game.n_agents, max(game.n_actions), S, S, game.gamma, torch.device("cpu"))
        self.batch = exact_batch(game, sa_weight)
        self.last_stats: dict[str, float] = {}

    def set_lr(self, lr: float, aux_lr: float | None = None) -> None:
        """Set the learning rate of the learner's optimiser (and of the aux optimiser, when given and present)."""
        for group in self.learner.optimizer.param_groups:
            group["lr"] = lr
        if aux_lr is not None and self.learner.robust.optimizer is not None:
            for group in self.learner.robust.optimizer.param_groups:
                group["lr"] = aux_lr

    def run(self, updates: int, lr_decay_from: float = 0.5, final_lr_factor: float = 0.01) -> dict[str, float]:
        """`updates` learner updates on the exact batch; returns the last stats.

        Both learning rates stay at their configured values for the first `lr_decay_from` fraction of the updates,
        then decay geometrically to `final_lr_factor` times that, so Adam's steps (of the size of the learning
        rate) shrink and the iterate settles on the fixed point instead of circling it.
        """
        lr0, aux0 = self.cfg.learner.lr, self.cfg.target.aux_lr
        start = int(updates * lr_decay_from)
        for k in range(updates):
            if k >= start:
                f = final_lr_factor ** ((k - start) / max(1, updates - start))
                self.set_lr(lr0 * f, aux0 * f)
            self.last_stats = self.learner.update(self.batch)
        return self.last_stats

    def q_tot(self, target_network: bool = False) -> np.ndarray:
        """Q_tot(s, a) of the online (or target) networks for every state and joint action; shape (S, A)."""
        return tabular_q_tot(self.learner, self.game, target_network)

    def result(self, target: dict[str, object]) -> HarnessResult:
        """Compare the current online Q_tot with :func:`reference_q` for `target`."""
        q = self.q_tot()
        ref = reference_q(self.game, target)
        rel = float(np.max(np.abs(q - ref))) / max(1.0, float(np.max(np.abs(ref))))
        return HarnessResult(q, ref, rel, self.learner.n_updates, dict(self.last_stats))
