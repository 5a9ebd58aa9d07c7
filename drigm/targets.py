"""THE robust TD target of the neural learners: uncertainty sets x {exact, paper, none}, for every mixer.

Every mixer (VDN, QMIX, QTRAN) produces the joint next value ``V_hat(s') = Q_tot^-(s', a_bar')``; this
module turns it into the regression target ``y``. The formulas are THEORY.md section 5, one pure function
each (tensors in, tensor out, no networks), so tests can check them against :mod:`reference` exactly:

=========================  ============================================================================
kind / set                 target y (nonterminal; terminal transitions give y = r)
=========================  ============================================================================
none                       :func:`nominal_target`             r + gamma V_hat(s')
exact / contamination      :func:`contamination_target`       r + gamma [(1-rho) V_hat(s') + rho m_hat]
exact / tv                 :func:`tv_target`                  r + gamma [min(V_hat(s'), eta) - rho (eta - m_hat)]
exact / kl-penalty         :func:`kl_penalty_target`          r + gamma [c - beta log psi]
paper / contamination      :func:`paper_contamination_target` r + gamma (1-rho) V_hat(s')      (paper shortcut)
paper / tv                 :func:`paper_tv_target`            r + gamma [(1-rho) g - relu(g - V_hat(s'))]  (shortcut)
=========================  ============================================================================

With ``learner.td_lambda`` > 0 the learner regresses on :func:`lambda_returns` of the targets affine in V_hat(s')
(none, both contamination kinds) instead (:meth:`RobustTarget.lambda_target`); tv and kl-penalty refuse it.

Auxiliary estimates and their elementwise losses: eta(s,a), the (1-rho)-quantile of V_hat(s') given (s,a),
by :func:`pinball_loss`; psi(s,a) = E[exp(-(V_hat(s') - c)/beta) | s,a] by :func:`psi_regression_loss`
(squared loss); the paper's g(s,a) by :func:`paper_tv_dual_loss`. m_hat estimates min_s V_hat(s)
(:func:`masked_min` of a batch, a running minimum, or a configured bound).

:class:`RobustTarget` composes these with one small MLP on ``[state, joint one-hot action]`` where the
kind/set needs one (exact tv: eta; exact kl-penalty: the soft-min u = c - beta log psi, so log psi = (c - u)/beta,
psi > 0 always and a new shift c leaves the target unchanged; paper tv: g). The MLP runs once per call on the
valid nonterminal rows only; its output is ``loc + scale * head`` with (loc, scale) tracking V_hat's mean/std and
every rescale preserving outputs exactly (PopArt-style), so it follows returns of any magnitude. The shift c
(buffer ``kl_shift``) is the batch minimum of V_hat at each update_aux, so regression targets lie in (0, 1].
Conventions it guarantees:

- Entries with ``mask == 0`` (padding) get ``y = 0`` and never reach m_hat, the shift c or an auxiliary loss,
  whatever values (even NaN) they hold in reward / next_value.
- Terminal entries (``terminated == 1``) get ``y = r``. Their ``V_hat(s')`` is not the value of a state of
  the game (the episode has ended), so they are excluded from m_hat, c and the auxiliary losses as well.
  Truncated (time-limit) transitions are not terminal and bootstrap normally.
- ``m_hat`` (mode "batch") is the minimum of ``V_hat(s')`` over the batch's valid nonterminal entries; no
  other values enter it. Mode "running" takes the minimum of that and of the last ``m_hat_window`` batch
  minima pushed by :meth:`RobustTarget.update_aux`; so call ``update_aux`` once per learner update for every
  kind (it is a cheap no-op where nothing is learned). Mode "bound" uses ``m_hat_bound``. Mode "ema" is an
  exponential moving average of the batch minima, rate 1 / ``m_hat_window``, updated by ``update_aux`` and started
  at the first batch minimum (before any update_aux it is the batch minimum). See docs/m_hat.md for the measured
  bias of each mode.
- The output has the dtype of ``reward``/``next_value`` (promoted) and their device, and carries no grad.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor, nn

__all__ = [
    "KINDS",
    "M_HAT_MODES",
    "PAPER_SETS",
    "SETS",
    "RobustTarget",
    "TargetConfig",
    "TargetInputs",
    "build_target",
    "contamination_target",
    "kl_penalty_target",
    "lambda_returns",
    "masked_min",
    "nominal_target",
    "paper_contamination_target",
    "paper_tv_dual_loss",
    "paper_tv_target",
    "pinball_loss",
    "psi_regression_loss",
    "tv_target",
]

KINDS: tuple[str, ...] = ("none", "exact", "paper")
SETS: tuple[str, ...] = ("contamination", "tv", "kl-penalty")
PAPER_SETS: tuple[str, ...] = ("contamination", "tv")
M_HAT_MODES: tuple[str, ...] = ("batch", "running", "bound", "ema")

# Output normalisation of the auxiliary nets (PopArt-style, outputs preserved exactly on every change):
# the EMA rate of the batch mean/std of V_hat, and the smallest scale allowed.
_NORM_MOMENTUM = 0.01
_MIN_SCALE = 1e-3

Scalar = float | Tensor
AuxOverride = Callable[[Tensor, Tensor], Tensor]


# ===== pure formulas (THEORY.md section 5) =======================================================
def _as_bool(x: Tensor) -> Tensor:
    return x if x.dtype == torch.bool else x != 0


def _bootstrap(reward: Tensor, terminated: Tensor, gamma: float, continuation: Tensor) -> Tensor:
    """r + gamma * continuation where nonterminal, exactly r where terminal (NaN there cannot leak)."""
    return torch.where(_as_bool(terminated), reward, reward + gamma * continuation)


def _like(x: Scalar, ref: Tensor) -> Tensor:
    return torch.as_tensor(x, dtype=ref.dtype, device=ref.device)


def nominal_target(reward: Tensor, next_value: Tensor, terminated: Tensor, gamma: float) -> Tensor:
    """y = r + gamma V_hat(s') (nonterminal), y = r (terminal): the non-robust target."""
    return _bootstrap(reward, terminated, gamma, next_value)


def contamination_target(
    reward: Tensor, next_value: Tensor, terminated: Tensor, gamma: float, rho: float, m_hat: Scalar
) -> Tensor:
    """y = r + gamma [(1-rho) V_hat(s') + rho m_hat]; P0-mean R + gamma sigma(V) when m_hat = min_S V."""
    return _bootstrap(reward, terminated, gamma, (1.0 - rho) * next_value + rho * _like(m_hat, next_value))


def tv_target(
    reward: Tensor, next_value: Tensor, terminated: Tensor, gamma: float, rho: float, eta: Scalar, m_hat: Scalar
) -> Tensor:
    """y = r + gamma [min(V_hat(s'), eta) - rho (eta - m_hat)]; P0-mean R + gamma sigma(V) at eta = (1-rho)-quantile."""
    eta_t = _like(eta, next_value)
    return _bootstrap(
        reward, terminated, gamma, torch.minimum(next_value, eta_t) - rho * (eta_t - _like(m_hat, next_value))
    )


def kl_penalty_target(
    reward: Tensor, terminated: Tensor, gamma: float, beta: float, log_psi: Tensor, shift: Scalar
) -> Tensor:
    """y = r + gamma [c - beta log psi]; equals R + gamma (-beta log E_P0 exp(-V/beta)) at psi = E[exp(-(V-c)/beta)]."""
    return _bootstrap(reward, terminated, gamma, _like(shift, log_psi) - beta * log_psi)


def paper_contamination_target(
    reward: Tensor, next_value: Tensor, terminated: Tensor, gamma: float, rho: float
) -> Tensor:
    """Paper shortcut y = r + gamma (1-rho) V_hat(s'): exact only if min V = 0, optimistic when V < 0."""
    return _bootstrap(reward, terminated, gamma, (1.0 - rho) * next_value)


def paper_tv_target(
    reward: Tensor, next_value: Tensor, terminated: Tensor, gamma: float, rho: float, g: Scalar
) -> Tensor:
    """Paper shortcut y = r + gamma [(1-rho) g - relu(g - V_hat(s'))] with the paper's dual estimate g(s,a)."""
    g_t = _like(g, next_value)
    return _bootstrap(reward, terminated, gamma, (1.0 - rho) * g_t - torch.relu(g_t - next_value))


def lambda_returns(
    reward: Tensor,
    next_value: Tensor,
    terminated: Tensor,
    mask: Tensor,
    gamma: float,
    lam: float,
    slope: Scalar = 1.0,
    offset: Scalar = 0.0,
) -> Tensor:
    """Lambda-returns of (B, T) episode rows for a target affine in V_hat(s'): y = r + gamma (slope V + offset).

    G_t = r_t + gamma [slope ((1-lam) V_hat(s_t+1) + lam G_t+1) + offset] while step t+1 is a valid step of
    the same row, with V_hat(s_t+1) alone at the row's last valid step (truncation) or at T-1; G_t = r_t where
    terminal, 0 on padding (NaN there never leaks). lam = 0 gives the one-step targets; lam = 1 with
    slope 1, offset 0 gives Monte-Carlo returns (bootstrapped once at truncation).
    """
    if reward.dim() != 2:
        raise ValueError(f"lambda_returns needs (batch, time) tensors; reward has shape {tuple(reward.shape)}")
    for name, x in (("next_value", next_value), ("terminated", terminated), ("mask", mask)):
        if x.shape != reward.shape:
            raise ValueError(f"lambda_returns: {name} has shape {tuple(x.shape)}; expected {tuple(reward.shape)}")
    if not 0.0 <= lam <= 1.0:
        raise ValueError(f"lambda_returns: lam={lam!r} is out of range: allowed [0, 1]")
    done, valid = _as_bool(terminated), _as_bool(mask)
    v = torch.where(valid & ~done, next_value, torch.zeros_like(next_value))
    r = torch.where(valid, reward, torch.zeros_like(reward))
    a, b = _like(slope, v), _like(offset, v)
    out = torch.zeros_like(v)
    G = torch.zeros_like(v[:, 0])
    T = v.shape[1]
    for t in range(T - 1, -1, -1):
        blend = v[:, t]
        if t + 1 < T:
            more = valid[:, t + 1] & ~done[:, t]
            blend = torch.where(more, (1.0 - lam) * v[:, t] + lam * G, v[:, t])
        G = torch.where(valid[:, t], _bootstrap(r[:, t], done[:, t], gamma, a * blend + b), torch.zeros_like(G))
        out[:, t] = G
    return out


def pinball_loss(next_value: Tensor, eta: Tensor, rho: float) -> Tensor:
    """Elementwise l(u) = u ((1-rho) - 1[u<0]), u = V_hat - eta; its conditional minimiser is the (1-rho)-quantile."""
    u = next_value - eta
    return u * ((1.0 - rho) - (u < 0).to(u.dtype))


def psi_regression_loss(next_value: Tensor, log_psi: Tensor, beta: float, shift: Scalar) -> Tensor:
    """Elementwise (psi - exp(-(V_hat - c)/beta))^2 with psi = exp(log_psi); minimised by the conditional mean.

    ``exp(log_psi)`` is continued linearly above log_psi = 0 (value and slope 1 there) so it cannot overflow.
    With c <= V_hat (targets <= 1, as :class:`RobustTarget` ensures by taking c = batch minimum) the loss is
    increasing in log_psi above 0, so the minimiser, psi = E[exp(-(V_hat - c)/beta) | s,a], is unchanged.
    """
    psi = torch.where(log_psi <= 0, torch.exp(torch.clamp(log_psi, max=0.0)), 1.0 + log_psi)
    target = torch.exp(-(next_value - _like(shift, next_value)) / beta)
    return (psi - target) ** 2


def paper_tv_dual_loss(next_value: Tensor, g: Tensor, rho: float) -> Tensor:
    """Elementwise paper loss (relu(g - V_hat) - (1-rho) g)^2; its minimiser is NOT the TV dual optimum."""
    return (torch.relu(g - next_value) - (1.0 - rho) * g) ** 2


def masked_min(values: Tensor, valid: Tensor) -> Tensor:
    """The minimum of ``values`` over entries where ``valid`` holds, as a 0-d tensor; +inf if there is none."""
    inf = torch.full((), math.inf, dtype=values.dtype, device=values.device)
    if values.numel() == 0:
        return inf
    return torch.where(_as_bool(valid), values, inf).amin()


# ===== configuration ==============================================================================
def _fail(key: str, value: object, allowed: str) -> ValueError:
    return ValueError(f"TargetConfig.{key}={value!r} is invalid: allowed {allowed}")


def _check_choice(key: str, value: object, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise _fail(key, value, "one of " + ", ".join(repr(c) for c in choices))


def _check_real(key: str, value: object, lo: float, hi: float, lo_open: bool = False) -> None:
    if not math.isfinite(lo):
        rng = "a finite number"
    elif math.isfinite(hi):
        rng = f"a finite number in {'(' if lo_open else '['}{lo:g}, {hi:g}]"
    else:
        rng = f"a finite number {'>' if lo_open else '>='} {lo:g}"
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise _fail(key, value, rng)
    v = float(value)
    if not math.isfinite(v) or v < lo or v > hi or (lo_open and v == lo):
        raise _fail(key, value, rng)


def _check_int(key: str, value: object, lo: int) -> None:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < lo:
        raise _fail(key, value, f"an integer >= {lo}")


@dataclass(frozen=True)
class TargetConfig:
    """Which robust target the learner regresses on; call :meth:`validate` (RobustTarget does) before use."""

    kind: str = "none"  # "none" | "exact" | "paper"
    set: str = "contamination"  # "contamination" | "tv" | "kl-penalty" (paper: contamination and tv only)
    rho: float = 0.0  # radius for contamination/tv, in [0, 1]
    beta: float = 1.0  # kl-penalty temperature, > 0
    # "batch" | "running" (min over the last m_hat_window batches) | "bound" (m_hat_bound) | "ema" (EMA of the batch
    # minima, rate 1 / m_hat_window); docs/m_hat.md has the measured bias of each
    m_hat: str = "batch"
    m_hat_bound: float | None = None
    m_hat_window: int = 50
    aux_hidden: int = 64
    aux_lr: float = 5e-4
    aux_steps: int = 1  # auxiliary (eta / psi / paper g) gradient steps per update_aux call

    def validate(self) -> None:
        """Raise ValueError naming the key, its value and the allowed range on the first invalid field."""
        _check_choice("kind", self.kind, KINDS)
        _check_choice("set", self.set, SETS)
        if self.kind == "paper" and self.set not in PAPER_SETS:
            raise ValueError(
                f"TargetConfig.set={self.set!r} is invalid with kind='paper': allowed one of "
                + ", ".join(repr(s) for s in PAPER_SETS)
                + " (the paper has no kl-penalty target; use kind='exact')"
            )
        _check_real("rho", self.rho, 0.0, 1.0)
        _check_real("beta", self.beta, 0.0, math.inf, lo_open=True)
        _check_choice("m_hat", self.m_hat, M_HAT_MODES)
        if self.m_hat == "bound" and self.m_hat_bound is None:
            raise _fail("m_hat_bound", None, "a finite number (required when m_hat='bound')")
        if self.m_hat_bound is not None:
            _check_real("m_hat_bound", self.m_hat_bound, -math.inf, math.inf)
        _check_int("m_hat_window", self.m_hat_window, 1)
        _check_int("aux_hidden", self.aux_hidden, 1)
        _check_real("aux_lr", self.aux_lr, 0.0, math.inf, lo_open=True)
        _check_int("aux_steps", self.aux_steps, 1)


@dataclass
class TargetInputs:
    """One batch for the target; every field has the same leading shape L (e.g. (B, T))."""

    reward: Tensor  # L
    next_value: Tensor  # L: V_hat(s') from the target network with double-Q selection; treated as detached
    terminated: Tensor  # L, bool or 0/1: y = r there (truncation is NOT termination)
    mask: Tensor  # L, bool or 0/1: 1 for valid transitions
    state: Tensor  # L + (state_dim,): the CURRENT global state s
    actions_onehot: Tensor  # L + (n_agents * n_actions,): the current joint action, per-agent one-hots


# ===== auxiliary network ==========================================================================
class _AuxNet(nn.Module):
    """MLP [state, joint one-hot] -> hidden -> hidden -> 1, output ``loc + scale * head`` in V_hat's units.

    (loc, scale) are buffers tracking the mean/std of V_hat (PopArt-style): each change rescales the head so
    that every output is preserved exactly, which lets a net with O(1) weights follow values of any scale.
    """

    def __init__(self, in_dim: int, hidden: int) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Linear(in_dim, hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU())
        self.head = nn.Linear(hidden, 1)
        nn.init.zeros_(self.head.weight)
        nn.init.zeros_(self.head.bias)
        self.register_buffer("loc", torch.zeros(()))
        self.register_buffer("scale", torch.ones(()))
        self.register_buffer("initialised", torch.zeros((), dtype=torch.bool))

    def forward(self, x: Tensor) -> Tensor:
        return self.loc + self.scale * self.head(self.body(x)).squeeze(-1)

    @torch.no_grad()
    def track(self, mean: Tensor, std: Tensor) -> None:
        """Move (loc, scale) towards a batch's (mean, std) of V_hat; every output is preserved once initialised."""
        loc, scale, init = self.loc, self.scale, self.initialised
        mean, std = mean.to(loc.dtype), std.to(loc.dtype)
        m = _NORM_MOMENTUM
        new_loc = torch.where(init, (1 - m) * loc + m * mean, mean)
        new_scale = torch.where(init, (1 - m) * scale + m * std, std).clamp_min(_MIN_SCALE)
        w, b = self.head.weight, self.head.bias
        w.mul_(torch.where(init, scale / new_scale, torch.ones_like(scale)))
        b.copy_(torch.where(init, (scale * b + loc - new_loc) / new_scale, b))
        loc.copy_(new_loc)
        scale.copy_(new_scale)
        init.fill_(True)


# ===== the module =================================================================================
class RobustTarget(nn.Module):
    """Computes y for one TargetConfig from :class:`TargetInputs`; owns the auxiliary net, its optimizer, m_hat state.

    State (aux net, its output normalisation, the running m_hat window, the kl shift c) is in ``state_dict()``;
    the auxiliary optimizer is ``self.optimizer`` (None when nothing is learned). For tests, see
    :meth:`set_aux_override`.
    """

    def __init__(self, cfg: TargetConfig, state_dim: int, n_agents: int, n_actions: int, gamma: float) -> None:
        super().__init__()
        cfg.validate()
        for key, value, lo in (("state_dim", state_dim, 0), ("n_agents", n_agents, 1), ("n_actions", n_actions, 1)):
            if isinstance(value, bool) or not isinstance(value, int) or value < lo:
                raise ValueError(f"RobustTarget {key}={value!r} is invalid: allowed an integer >= {lo}")
        if isinstance(gamma, bool) or not isinstance(gamma, (int, float)) or not 0.0 <= float(gamma) <= 1.0:
            raise ValueError(f"RobustTarget gamma={gamma!r} is invalid: allowed a number in [0, 1]")
        self.cfg = cfg
        self.state_dim = state_dim
        self.n_agents = n_agents
        self.n_actions = n_actions
        self.gamma = float(gamma)
        self.register_buffer("m_hat_window", torch.full((cfg.m_hat_window,), math.inf, dtype=torch.float64))
        self.register_buffer("kl_shift", torch.zeros((), dtype=torch.float64))
        if cfg.m_hat == "ema":  # only in this mode, so the state_dict of the other modes is unchanged
            self.register_buffer("m_hat_ema", torch.full((), math.nan, dtype=torch.float64))
        self.aux: _AuxNet | None = (
            _AuxNet(state_dim + n_agents * n_actions, cfg.aux_hidden) if self._learns_aux(cfg) else None
        )
        self.optimizer: torch.optim.Optimizer | None = (
            torch.optim.Adam(self.aux.parameters(), lr=cfg.aux_lr, fused=True) if self.aux is not None else None
        )
        self._aux_override: AuxOverride | None = None

    @staticmethod
    def _learns_aux(cfg: TargetConfig) -> bool:
        return (cfg.kind == "exact" and cfg.set in ("tv", "kl-penalty")) or (cfg.kind == "paper" and cfg.set == "tv")

    @property
    def needs_aux(self) -> bool:
        """True when an auxiliary net is trained by update_aux (exact tv, exact kl-penalty, paper tv)."""
        return self.aux is not None

    @property
    def uses_m_hat(self) -> bool:
        """True when the target uses m_hat (exact contamination and exact tv)."""
        return self.cfg.kind == "exact" and self.cfg.set in ("contamination", "tv")

    def extra_repr(self) -> str:
        c = self.cfg
        return (
            f"kind={c.kind!r}, set={c.set!r}, rho={c.rho:g}, beta={c.beta:g}, m_hat={c.m_hat!r}, gamma={self.gamma:g}"
        )

    def set_aux_override(self, fn: AuxOverride | None) -> None:
        """Test hook: ``fn(state, actions_onehot)`` replaces the aux net in :meth:`aux_value` (None restores it).

        ``fn`` maps inputs of any leading shape K (forward passes the (n, dim) rows of the valid nonterminal
        entries) to shape K,
        returning what :meth:`aux_value` returns: eta (exact tv), log psi under the buffer ``kl_shift``
        (exact kl-penalty) or g (paper tv). update_aux still trains the net; only the target uses ``fn``.
        """
        self._aux_override = fn

    # ----- pieces ---------------------------------------------------------------------------------
    def _check(self, inputs: TargetInputs) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """Validate shapes; return (next_value made finite, terminal, valid, bootstrapped = valid & ~terminal)."""
        L = tuple(inputs.reward.shape)
        for name in ("next_value", "terminated", "mask"):
            shape = tuple(getattr(inputs, name).shape)
            if shape != L:
                raise ValueError(f"TargetInputs.{name} has shape {shape}; expected {L} like TargetInputs.reward")
        for name, width in (("state", self.state_dim), ("actions_onehot", self.n_agents * self.n_actions)):
            shape = tuple(getattr(inputs, name).shape)
            if shape != (*L, width):
                raise ValueError(f"TargetInputs.{name} has shape {shape}; expected {(*L, width)}")
        for name in ("reward", "next_value"):
            if not getattr(inputs, name).is_floating_point():
                raise ValueError(f"TargetInputs.{name} has dtype {getattr(inputs, name).dtype}; expected a float dtype")
        done = _as_bool(inputs.terminated)
        valid = _as_bool(inputs.mask)
        boot = valid & ~done
        v = inputs.next_value.detach()
        v = torch.where(boot, v, torch.zeros_like(v))
        return v, done, valid, boot

    def _rows(self, inputs: TargetInputs, boot: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Flat indices of the bootstrapped entries, and their states and joint one-hots (rows, no padding)."""
        idx = boot.reshape(-1).nonzero().squeeze(1)
        state = inputs.state.reshape(-1, self.state_dim).index_select(0, idx)
        actions = inputs.actions_onehot.reshape(-1, self.n_agents * self.n_actions).index_select(0, idx)
        return idx, state, actions

    def _raw_aux(self, state: Tensor, actions_onehot: Tensor) -> Tensor:
        """The aux net's output in value units: eta (exact tv), the soft-min u = c - beta log psi (kl), g (paper tv)."""
        assert self.aux is not None
        p = self.aux.head.weight
        if state.device != p.device:
            raise ValueError(f"TargetInputs are on {state.device} but the target's aux net is on {p.device}; move it")
        return self.aux(torch.cat([state.to(p.dtype), actions_onehot.to(p.dtype)], dim=-1))

    @torch.no_grad()
    def aux_value(self, state: Tensor, actions_onehot: Tensor) -> Tensor:
        """The auxiliary estimate entering the formula, any leading shape: eta, log psi under ``kl_shift``, or g."""
        if self._aux_override is not None:
            return self._aux_override(state, actions_onehot)
        if self.aux is None:
            raise RuntimeError(f"target {self.cfg.kind}/{self.cfg.set} has no auxiliary estimate")
        out = self._raw_aux(state, actions_onehot)
        if self.cfg.set == "kl-penalty":
            return (self.kl_shift.to(out.dtype) - out) / self.cfg.beta  # psi = exp(.) > 0 by construction
        return out

    def _aux_full(self, inputs: TargetInputs, boot: Tensor, dtype: torch.dtype) -> Tensor:
        """aux_value on the bootstrapped rows only (one fused pass), scattered to shape L (0 elsewhere, unused)."""
        idx, state, actions = self._rows(inputs, boot)
        full = torch.zeros(boot.numel(), dtype=dtype, device=boot.device)
        return full.index_copy_(0, idx, self.aux_value(state, actions).to(dtype)).view(boot.shape)

    def m_hat(self, next_value: Tensor, bootstrapped: Tensor) -> Tensor:
        """The m_hat estimate for this batch (0-d, next_value's dtype/device); 0 if no valid nonterminal entry."""
        if self.cfg.m_hat == "bound":
            assert self.cfg.m_hat_bound is not None
            return _like(float(self.cfg.m_hat_bound), next_value)
        m = masked_min(next_value, bootstrapped)
        if self.cfg.m_hat == "running":
            m = torch.minimum(m, self.m_hat_window.amin().to(m))
        elif self.cfg.m_hat == "ema":
            ema = self.m_hat_ema.to(m)
            m = torch.where(torch.isnan(ema), m, ema)
        return torch.where(torch.isfinite(m), m, torch.zeros_like(m))

    # ----- public API -----------------------------------------------------------------------------
    @torch.no_grad()
    def forward(self, inputs: TargetInputs) -> Tensor:
        """y with the leading shape L, dtype/device of reward/next_value, no grad; 0 on padding, r on terminal."""
        v, done, valid, boot = self._check(inputs)
        dtype = torch.promote_types(inputs.reward.dtype, v.dtype)
        r = inputs.reward.to(dtype)
        v = v.to(dtype)
        cfg, g = self.cfg, self.gamma
        if cfg.kind == "none":
            y = nominal_target(r, v, done, g)
        elif cfg.kind == "paper" and cfg.set == "contamination":
            y = paper_contamination_target(r, v, done, g, cfg.rho)
        elif cfg.kind == "paper":
            y = paper_tv_target(r, v, done, g, cfg.rho, self._aux_full(inputs, boot, dtype))
        elif cfg.set == "contamination":
            y = contamination_target(r, v, done, g, cfg.rho, self.m_hat(v, boot))
        elif cfg.set == "tv":
            y = tv_target(r, v, done, g, cfg.rho, self._aux_full(inputs, boot, dtype), self.m_hat(v, boot))
        else:
            y = kl_penalty_target(r, done, g, cfg.beta, self._aux_full(inputs, boot, dtype), self.kl_shift.to(dtype))
        return torch.where(valid, y, torch.zeros_like(y))

    @torch.no_grad()
    def lambda_target(self, inputs: TargetInputs, lam: float) -> Tensor:
        """Lambda-returns (:func:`lambda_returns`) of (B, T) episode rows; equals ``forward`` at lam = 0.

        Only for targets affine in V_hat(s'): none (slope 1), paper contamination (slope 1-rho) and exact
        contamination (slope 1-rho, offset rho m_hat with m_hat from the one-step V_hat as in forward).
        Raises ValueError for tv and kl-penalty, whose targets are nonlinear in V_hat(s').
        """
        v, _, _, boot = self._check(inputs)
        cfg = self.cfg
        if cfg.kind != "none" and cfg.set != "contamination":
            raise ValueError(
                f"a lambda-return needs a target affine in V_hat(s'); {cfg.kind}/{cfg.set} is not (use lambda 0)"
            )
        dtype = torch.promote_types(inputs.reward.dtype, v.dtype)
        v = v.to(dtype)
        slope: Scalar = 1.0 if cfg.kind == "none" else 1.0 - cfg.rho
        offset: Scalar = cfg.rho * self.m_hat(v, boot) if cfg.kind == "exact" else 0.0
        return lambda_returns(
            inputs.reward.to(dtype), v, inputs.terminated, inputs.mask, self.gamma, lam, slope, offset
        )

    def update_aux(self, inputs: TargetInputs, weight: Tensor | None = None) -> dict[str, float]:
        """Push the batch minimum into the running m_hat window (or the ema); take aux_steps steps on the aux loss.

        Only valid nonterminal entries enter the losses (their plain mean, or with `weight` (float >= 0, the shape
        of ``inputs.reward``) their weighted mean; padding never reaches the net). Exact-expectation batches
        (:mod:`drigm.exact_harness`) weight each (s, a, s') by P0(s'|s,a); m_hat and the kl shift still take every
        valid entry, whatever its weight.
        Returns floats: "aux_loss" (last step), "aux_mean" (mean aux output in value units: eta, the soft-min
        c - beta log psi, or g), plus "m_hat" (exact tv) or "kl_shift" (kl-penalty); {"m_hat"} for exact
        contamination; {} for the other aux-free kinds. A batch without a valid nonterminal entry trains nothing.
        """
        v, _, _, boot = self._check(inputs)
        if weight is not None and weight.shape != inputs.reward.shape:
            raise ValueError(f"update_aux weight has shape {tuple(weight.shape)}; expected that of inputs.reward")
        cfg = self.cfg
        with torch.no_grad():
            batch_min = masked_min(v, boot)
            if cfg.m_hat == "running":
                w = self.m_hat_window
                w.copy_(torch.cat([w[1:], batch_min.to(w)[None]]))
            elif cfg.m_hat == "ema" and torch.isfinite(batch_min):
                ema, b = self.m_hat_ema, batch_min.to(self.m_hat_ema)
                ema.copy_(torch.where(torch.isnan(ema), b, ema + (b - ema) / cfg.m_hat_window))
        if self.aux is None:
            return {"m_hat": float(self.m_hat(v, boot))} if self.uses_m_hat else {}
        assert self.optimizer is not None
        idx, state, actions = self._rows(inputs, boot)
        if idx.numel() == 0:  # nothing valid to learn from (the nonzero() above already synchronised)
            return {"aux_loss": 0.0, "aux_mean": 0.0}
        dtype = self.aux.head.weight.dtype
        vn = v.reshape(-1).index_select(0, idx).to(dtype)
        with torch.no_grad():
            self.aux.track(vn.mean(), vn.std(correction=0))
            if cfg.set == "kl-penalty":  # c = batch minimum keeps every regression target in (0, 1]
                self.kl_shift.copy_(batch_min)
        shift = self.kl_shift.to(dtype)
        wn = None if weight is None else weight.reshape(-1).index_select(0, idx).to(dtype)

        def reduce(elementwise: Tensor) -> Tensor:  # the plain mean, or the weighted mean with weights
            return elementwise.mean() if wn is None else (wn * elementwise).sum() / wn.sum().clamp_min(1e-30)

        loss = out = vn
        for _ in range(cfg.aux_steps):
            out = self._raw_aux(state, actions)
            if cfg.kind == "paper":
                loss = reduce(paper_tv_dual_loss(vn, out, cfg.rho))
            elif cfg.set == "tv":
                loss = reduce(pinball_loss(vn, out, cfg.rho))
            else:
                loss = reduce(psi_regression_loss(vn, (shift - out) / cfg.beta, cfg.beta, shift))
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            self.optimizer.step()
        with torch.no_grad():
            stats = {"aux_loss": loss.detach(), "aux_mean": out.detach().mean()}
            if self.uses_m_hat:
                stats["m_hat"] = self.m_hat(v, boot).to(dtype)
            if cfg.set == "kl-penalty":
                stats["kl_shift"] = shift
        return dict(zip(stats, torch.stack(list(stats.values())).tolist(), strict=True))


def build_target(cfg: TargetConfig, state_dim: int, n_agents: int, n_actions: int, gamma: float) -> RobustTarget:
    """Validate ``cfg`` and build the RobustTarget for it (raises ValueError naming any invalid key)."""
    return RobustTarget(cfg, state_dim, n_agents, n_actions, gamma)
