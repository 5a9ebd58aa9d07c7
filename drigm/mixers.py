"""Mixers: the joint value Q_tot(s, a) built from per-agent utilities, and a name -> class registry.

Each mixer is one class with its own typed hyperparameter dataclass (``Params``), registered with
:func:`register_mixer`; the built-in mixers' Params live in :mod:`drigm.mixer_params` (torch-free, so that a
config can be checked without torch) and are importable from here too. The learner treats them all alike:
``forward`` gives the joint value of the taken joint action (the quantity fitted to the robust TD target, and,
from the target copy, the bootstrap value V_hat(s') at the double-Q greedy action), and ``extra_losses`` adds any
mixer-specific terms. A new mixer therefore touches this file alone (a new built-in one also lists its Params in
:mod:`drigm.mixer_params`), and every robust target works with it at once.

- ``vdn``: Q_tot = sum_i Q_i (Sunehag et al. 2018).
- ``qmix``: Q_tot = f_s(Q_1..Q_N), a two-layer network whose weights come from hypernetworks of the
  state and pass through abs, so dQ_tot/dQ_i >= 0 (Rashid et al. 2018).
- ``qtran``: QTRAN-base (Son et al. 2019). A joint network Q_jt(s, a) on the state and the joint
  one-hot action is fitted by TD; a state network V(s) and the utilities are tied to it by
  L_opt = (sum_i Q_i(s, a_bar_i) - Q_jt(s, a_bar) + V(s))^2 at the greedy joint action a_bar and
  L_nopt = min(sum_i Q_i(s, a_i) - Q_jt(s, a) + V(s), 0)^2 at the taken one, with Q_jt detached in
  both (as in the paper's implementation).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import Tensor, nn
from torch.nn.functional import elu, one_hot

from drigm.mixer_params import (  # the Params classes live there, torch-free, for drigm.config
    MixerError,
    NoParams,
    QMixParams,
    QTranParams,
    register_params,
    unregister_params,
)


@dataclass
class MixerContext:
    """What a mixer's extra losses may use; shapes for a batch L = (B, T).

    utilities (L, N, A) online utilities (with grad); avail (L, N, A) bool; chosen (L, N) utilities of
    the taken actions (with grad); actions_onehot (L, N*A); state (L, state_dim); q_tot (L,) the
    mixer output at the taken actions (with grad); mask (L,) float, 1 on real transitions.
    """

    utilities: Tensor
    avail: Tensor
    chosen: Tensor
    actions_onehot: Tensor
    state: Tensor
    q_tot: Tensor
    mask: Tensor


class Mixer(nn.Module):
    """Base class: ``forward(chosen (L, N), state (L, S), actions_onehot (L, N*A)) -> Q_tot (L,)``."""

    name: ClassVar[str] = ""
    Params: ClassVar[type] = NoParams

    def __init__(self, state_dim: int, n_agents: int, n_actions: int, params: object) -> None:
        super().__init__()
        self.state_dim = state_dim
        self.n_agents = n_agents
        self.n_actions = n_actions
        self.params = params

    def forward(self, chosen: Tensor, state: Tensor, actions_onehot: Tensor) -> Tensor:
        raise NotImplementedError

    def extra_losses(self, ctx: MixerContext) -> dict[str, Tensor]:
        """Weighted mixer-specific loss terms added to the TD loss (none by default)."""
        return {}


MIXERS: dict[str, type[Mixer]] = {}
"""The registry: mixer name -> class."""


def register_mixer(name: str) -> Callable[[type[Mixer]], type[Mixer]]:
    """Class decorator: register a Mixer subclass under `name` here and its Params in
    :data:`drigm.mixer_params.MIXER_PARAMS` (refuses duplicates and a Params class other than the one listed there)."""

    def deco(cls: type[Mixer]) -> type[Mixer]:
        if name in MIXERS and MIXERS[name] is not cls:
            raise MixerError(f"mixer name {name!r} is already registered")
        register_params(name, cls.Params)  # refuses a Params class other than drigm.mixer_params lists
        cls.name = name
        MIXERS[name] = cls
        return cls

    return deco


def unregister_mixer(name: str) -> None:
    """Remove mixer `name` from both registries (this one and :data:`drigm.mixer_params.MIXER_PARAMS`)."""
    MIXERS.pop(name, None)
    unregister_params(name)


def get_mixer(name: str) -> type[Mixer]:
    """The mixer class registered under `name`; raises naming the registered names."""
    if name not in MIXERS:
        raise MixerError(f"unknown mixer (algo) {name!r}; registered mixers: {', '.join(sorted(MIXERS))}")
    return MIXERS[name]


def _masked_mean(x: Tensor, mask: Tensor) -> Tensor:
    return (x * mask).sum() / mask.sum().clamp_min(1.0)


# ===== VDN ========================================================================================
@register_mixer("vdn")
class VDNMixer(Mixer):
    """Q_tot = sum_i Q_i: IGM by construction."""

    def forward(self, chosen: Tensor, state: Tensor, actions_onehot: Tensor) -> Tensor:
        return chosen.sum(dim=-1)


# ===== QMIX =======================================================================================
def _hypernet(in_dim: int, out_dim: int, layers: int, hidden: int) -> nn.Module:
    if layers == 1:
        return nn.Linear(in_dim, out_dim)
    return nn.Sequential(nn.Linear(in_dim, hidden), nn.ReLU(), nn.Linear(hidden, out_dim))


@register_mixer("qmix")
class QMixer(Mixer):
    """Monotone mixing: abs hypernetwork weights of the state and an ELU give dQ_tot/dQ_i >= 0."""

    Params = QMixParams

    def __init__(self, state_dim: int, n_agents: int, n_actions: int, params: QMixParams) -> None:
        super().__init__(state_dim, n_agents, n_actions, params)
        E, L, H = params.embed_dim, params.hypernet_layers, params.hypernet_embed
        self.hyper_w1 = _hypernet(state_dim, E * n_agents, L, H)
        self.hyper_b1 = nn.Linear(state_dim, E)
        self.hyper_w2 = _hypernet(state_dim, E, L, H)
        self.hyper_b2 = nn.Sequential(nn.Linear(state_dim, E), nn.ReLU(), nn.Linear(E, 1))
        if params.hypernet_gain is not None:
            for net in (self.hyper_w1, self.hyper_w2):
                for m in net.modules():
                    if isinstance(m, nn.Linear):
                        nn.init.xavier_uniform_(m.weight, gain=params.hypernet_gain)

    def forward(self, chosen: Tensor, state: Tensor, actions_onehot: Tensor) -> Tensor:
        lead = chosen.shape[:-1]
        E, N = self.params.embed_dim, self.n_agents
        s = state.reshape(-1, self.state_dim)
        q = chosen.reshape(-1, 1, N)
        w1 = self.hyper_w1(s).abs().view(-1, N, E)
        b1 = self.hyper_b1(s).view(-1, 1, E)
        hidden = elu(torch.bmm(q, w1) + b1)
        w2 = self.hyper_w2(s).abs().view(-1, E, 1)
        b2 = self.hyper_b2(s).view(-1, 1, 1)
        return (torch.bmm(hidden, w2) + b2).view(lead)


# ===== QTRAN-base =================================================================================
@register_mixer("qtran")
class QTranBase(Mixer):
    """QTRAN-base: forward is Q_jt(s, a); extra_losses returns the weighted L_opt and L_nopt."""

    Params = QTranParams

    def __init__(self, state_dim: int, n_agents: int, n_actions: int, params: QTranParams) -> None:
        super().__init__(state_dim, n_agents, n_actions, params)
        H = params.hidden
        self.q_jt = nn.Sequential(
            nn.Linear(state_dim + n_agents * n_actions, H),
            nn.ReLU(),
            nn.Linear(H, H),
            nn.ReLU(),
            nn.Linear(H, 1),
        )
        self.v = nn.Sequential(nn.Linear(state_dim, H), nn.ReLU(), nn.Linear(H, 1))

    def forward(self, chosen: Tensor, state: Tensor, actions_onehot: Tensor) -> Tensor:
        return self.q_jt(torch.cat([state, actions_onehot], dim=-1)).squeeze(-1)

    def state_value(self, state: Tensor) -> Tensor:
        """V(s), shape state.shape[:-1]."""
        return self.v(state).squeeze(-1)

    def opt_nopt_errors(self, ctx: MixerContext) -> tuple[Tensor, Tensor]:
        """The raw L_opt residual at the greedy joint action and the clamped L_nopt residual; shape L each."""
        greedy = ctx.utilities.detach().masked_fill(~ctx.avail.bool(), float("-inf")).argmax(dim=-1)
        greedy_utils = ctx.utilities.gather(-1, greedy.unsqueeze(-1)).squeeze(-1).sum(dim=-1)
        greedy_onehot = one_hot(greedy, self.n_actions).to(ctx.state.dtype).flatten(-2)
        with torch.no_grad():
            q_jt_greedy = self(greedy_utils, ctx.state, greedy_onehot)
        v = self.state_value(ctx.state)
        opt = greedy_utils - q_jt_greedy + v
        nopt = (ctx.chosen.sum(dim=-1) - ctx.q_tot.detach() + v).clamp(max=0.0)
        return opt, nopt

    def extra_losses(self, ctx: MixerContext) -> dict[str, Tensor]:
        opt, nopt = self.opt_nopt_errors(ctx)
        return {
            "opt_loss": self.params.opt_coef * _masked_mean(opt.pow(2), ctx.mask),
            "nopt_loss": self.params.nopt_coef * _masked_mean(nopt.pow(2), ctx.mask),
        }


def build_mixer(name: str, params: object, state_dim: int, n_agents: int, n_actions: int) -> Mixer:
    """Instantiate the registered mixer `name` with its validated Params instance."""
    cls = get_mixer(name)
    if not isinstance(params, cls.Params):
        raise MixerError(f"mixer {name!r} takes {cls.Params.__name__}; got {type(params).__name__}")
    params.validate()
    return cls(state_dim, n_agents, n_actions, params)
