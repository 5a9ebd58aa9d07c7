"""THE robust TD target of the neural learners: plumbing over the registered sample rules, for every mixer.

Every mixer (VDN, QMIX, QTRAN) produces the joint next value ``V_hat(s') = Q_tot^-(s', a_bar')``; this
module turns it into the regression target ``y = r + gamma * continuation`` (terminal transitions: y = r). The
continuation of each (kind, set) is a :class:`reference.sets.SampleRule` registered in that set's module
(``reference/sets/tv.py`` holds the TV formula, its auxiliary loss and what it needs); this module owns only
what is neural: the auxiliary network and its optimiser, m_hat and the shift c, and the batch bookkeeping.
Nothing here dispatches on a set name: it reads the rule's capabilities (``needs_m_hat``, ``needs_shift``,
``aux_outputs``, ``affine``). The rules are written once over :class:`reference.sets.Ops`; :data:`TORCH_OPS`
provides them for tensors, and the tests check the same formulas against the exact support functions.

Registered rules (``reference.sets.sample_rule(kind, set)``), continuation given V = V_hat(s'):

=========================  ============================================================================
kind / set                 continuation
=========================  ============================================================================
none (any set)             V
exact / contamination      (1-rho) V + rho m_hat
exact / tv                 min(V, eta) - rho (eta - m_hat)           eta: the (1-rho)-quantile (pinball loss)
exact / chi2               eta - sqrt(1+rho) ((eta - V)_+^2 + s^2) / (2 s)   (eta, s) maximise its mean
exact / kl-penalty         c - beta log psi                           psi = E exp(-(V - c)/beta) (squared loss)
paper / contamination      (1-rho) V                                  (paper shortcut)
paper / tv                 (1-rho) g - relu(g - V)                    (paper shortcut, its own g loss)
=========================  ============================================================================

With ``learner.td_lambda`` > 0 the learner regresses on :func:`lambda_returns` of the targets whose rule is
affine in V_hat(s') instead (:meth:`RobustTarget.lambda_target`); the others refuse it.

:class:`RobustTarget` learns the auxiliary outputs with one small MLP on ``[state, joint one-hot action]``. Each
output is in value units, ``loc + scale * head`` ("value") or ``scale * exp(head)`` ("spread", >= 0), with
(loc, scale) tracking V_hat's mean/std and every rescale preserving outputs exactly (PopArt-style), so it follows
returns of any magnitude. The MLP runs once per call on the valid nonterminal rows only. For kl-penalty it
outputs the soft-min u = c - beta log psi, so psi > 0 always and a new shift c leaves the target unchanged; the
shift c (buffer ``kl_shift``) is the batch minimum of V_hat at each update_aux, so regression targets lie in (0, 1].
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

import contextlib
import math
import numbers
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from reference.sets import (
    SampleRule,
    UncertaintySetError,
    get_spec,
    sample_rule,
    sets_with_rule,
)

__all__ = [
    "KINDS",
    "M_HAT_MODES",
    "PAPER_SETS",
    "SETS",
    "TORCH_OPS",
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
SETS: tuple[str, ...] = sets_with_rule("exact")  # the sets a learner can target (registry order)
PAPER_SETS: tuple[str, ...] = sets_with_rule("paper")
M_HAT_MODES: tuple[str, ...] = ("batch", "running", "bound", "ema")

# Output normalisation of the auxiliary nets (PopArt-style, outputs preserved exactly on every change):
# the EMA rate of the batch mean/std of V_hat, and the smallest scale allowed.
_NORM_MOMENTUM = 0.01
_MIN_SCALE = 1e-3
_SPREAD_LOG_CLAMP = 30.0  # "spread" outputs are scale * exp(head), head clamped to +-30

Scalar = float | Tensor
AuxOverride = Callable[[Tensor, Tensor], Tensor]


class _TorchOps:
    """:class:`reference.sets.Ops` over torch tensors."""

    def minimum(self, a: Tensor, b: Tensor) -> Tensor:
        return torch.minimum(a, b)

    def relu(self, x: Tensor) -> Tensor:
        return torch.relu(x)

    def exp(self, x: Tensor) -> Tensor:
        return torch.exp(x)

    def sqrt(self, x: Tensor) -> Tensor:
        return torch.sqrt(x)

    def where(self, cond: Tensor, a: Tensor, b: Tensor) -> Tensor:
        return torch.where(cond, a, b)

    def clamp_max(self, x: Tensor, hi: float) -> Tensor:
        return torch.clamp(x, max=hi)

    def indicator(self, cond: Tensor, like: Tensor) -> Tensor:
        return cond.to(like.dtype)


TORCH_OPS = _TorchOps()


# ===== helpers and plain-function forms of the rules =============================================
def _as_bool(x: Tensor) -> Tensor:
    return x if x.dtype == torch.bool else x != 0


def _bootstrap(reward: Tensor, terminated: Tensor, gamma: float, continuation: Tensor) -> Tensor:
    """r + gamma * continuation where nonterminal, exactly r where terminal (NaN there cannot leak)."""
    return torch.where(_as_bool(terminated), reward, reward + gamma * continuation)


def _like(x: Scalar, ref: Tensor) -> Tensor:
    return torch.as_tensor(x, dtype=ref.dtype, device=ref.device)


def _cont(
    kind: str, set_name: str, v: Tensor, aux: Any = None, m_hat: Any = None, rho: float = 0.0, shift: Any = None
) -> Tensor:
    return sample_rule(kind, set_name).continuation(TORCH_OPS, v, aux, m_hat, rho, shift)


def nominal_target(reward: Tensor, next_value: Tensor, terminated: Tensor, gamma: float) -> Tensor:
    """y = r + gamma V_hat(s') (nonterminal), y = r (terminal): the non-robust target."""
    return _bootstrap(reward, terminated, gamma, next_value)


def contamination_target(
    reward: Tensor, next_value: Tensor, terminated: Tensor, gamma: float, rho: float, m_hat: Scalar
) -> Tensor:
    """The registered exact contamination rule: y = r + gamma [(1-rho) V_hat(s') + rho m_hat]."""
    m = _like(m_hat, next_value)
    return _bootstrap(reward, terminated, gamma, _cont("exact", "contamination", next_value, None, m, rho))


def tv_target(
    reward: Tensor, next_value: Tensor, terminated: Tensor, gamma: float, rho: float, eta: Scalar, m_hat: Scalar
) -> Tensor:
    """The registered exact TV rule: y = r + gamma [min(V_hat(s'), eta) - rho (eta - m_hat)]."""
    eta_t, m = _like(eta, next_value), _like(m_hat, next_value)
    return _bootstrap(reward, terminated, gamma, _cont("exact", "tv", next_value, eta_t, m, rho))


def kl_penalty_target(
    reward: Tensor, terminated: Tensor, gamma: float, beta: float, log_psi: Tensor, shift: Scalar
) -> Tensor:
    """The registered exact kl-penalty rule: y = r + gamma [c - beta log psi]."""
    c = _like(shift, log_psi)
    return _bootstrap(reward, terminated, gamma, _cont("exact", "kl-penalty", log_psi, log_psi, None, beta, c))


def paper_contamination_target(
    reward: Tensor, next_value: Tensor, terminated: Tensor, gamma: float, rho: float
) -> Tensor:
    """The paper's contamination shortcut: y = r + gamma (1-rho) V_hat(s') (optimistic when V < 0)."""
    return _bootstrap(reward, terminated, gamma, _cont("paper", "contamination", next_value, rho=rho))


def paper_tv_target(
    reward: Tensor, next_value: Tensor, terminated: Tensor, gamma: float, rho: float, g: Scalar
) -> Tensor:
    """The paper's TV shortcut: y = r + gamma [(1-rho) g - relu(g - V_hat(s'))] with its dual estimate g(s,a)."""
    return _bootstrap(reward, terminated, gamma, _cont("paper", "tv", next_value, _like(g, next_value), rho=rho))


def pinball_loss(next_value: Tensor, eta: Tensor, rho: float) -> Tensor:
    """The exact TV rule's aux loss: u ((1-rho) - 1[u<0]), u = V_hat - eta; minimised by the (1-rho)-quantile."""
    loss = sample_rule("exact", "tv").aux_loss
    assert loss is not None
    return loss(TORCH_OPS, next_value, eta, rho, None)


def psi_regression_loss(next_value: Tensor, log_psi: Tensor, beta: float, shift: Scalar) -> Tensor:
    """The exact kl-penalty rule's aux loss: (psi - exp(-(V_hat - c)/beta))^2, psi = exp(log_psi) (linear above 0)."""
    loss = sample_rule("exact", "kl-penalty").aux_loss
    assert loss is not None
    return loss(TORCH_OPS, next_value, log_psi, beta, _like(shift, next_value))


def paper_tv_dual_loss(next_value: Tensor, g: Tensor, rho: float) -> Tensor:
    """The paper TV rule's aux loss (relu(g - V_hat) - (1-rho) g)^2; its minimiser is NOT the TV dual optimum."""
    loss = sample_rule("paper", "tv").aux_loss
    assert loss is not None
    return loss(TORCH_OPS, next_value, g, rho, None)


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
    set: str = "contamination"  # a set with a sample rule of this kind (SETS; paper: PAPER_SETS)
    rho: float = 0.0  # the set's radius where its radius is rho (contamination, tv: [0, 1]; chi2: >= 0)
    beta: float = 1.0  # kl-penalty temperature, > 0
    # "batch" | "running" (min over the last m_hat_window batches) | "bound" (m_hat_bound) | "ema" (EMA of the batch
    # minima, rate 1 / m_hat_window); docs/m_hat.md has the measured bias of each
    m_hat: str = "batch"
    m_hat_bound: float | None = None
    m_hat_window: int = 50
    aux_hidden: int = 64
    aux_lr: float = 5e-4
    aux_steps: int = 1  # auxiliary gradient steps per update_aux call

    @property
    def rule(self) -> SampleRule:
        """The registered sample rule of (kind, set); raises ValueError naming the options if there is none."""
        try:
            return sample_rule(self.kind, self.set)
        except UncertaintySetError as exc:
            raise ValueError(str(exc)) from exc

    @property
    def radius(self) -> float:
        """The parameter the set's formulas take: ``rho``, or the field the set names (kl-penalty: ``beta``)."""
        return float(getattr(self, get_spec(self.set).radius.symbol))

    def validate(self) -> None:
        """Raise ValueError naming the key, its value and the allowed range on the first invalid field."""
        _check_choice("kind", self.kind, KINDS)
        if isinstance(self.set, str) and self.set not in SETS:
            with contextlib.suppress(UncertaintySetError):
                get_spec(self.set)  # an installed set (drigm.sets entry point) is loaded on first use
        _check_choice("set", self.set, sets_with_rule("exact"))
        if self.kind != "none" and self.kind not in get_spec(self.set).rules:
            with_kind = sets_with_rule(self.kind)
            raise ValueError(
                f"TargetConfig.set={self.set!r} is invalid with kind={self.kind!r}: allowed one of "
                + ", ".join(repr(s) for s in with_kind)
                + f" (the {self.kind} targets have no {self.set} rule; use kind='exact')"
            )
        radius = get_spec(self.set).radius
        if radius.symbol == "rho":
            _check_real("rho", self.rho, radius.lo, radius.hi, lo_open=radius.open_low)
        else:
            _check_real("rho", self.rho, 0.0, 1.0)  # unused by this set; kept in the ball sets' range
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
    """MLP [state, joint one-hot] -> hidden -> hidden -> one output per rule output, in V_hat's units.

    A "value" output is ``loc + scale * head``, a "spread" output (>= 0) is ``scale * exp(head)``. (loc, scale)
    are buffers tracking the mean/std of V_hat (PopArt-style): each change rescales the head so that every
    output is preserved exactly, which lets a net with O(1) weights follow values of any scale.
    """

    def __init__(self, in_dim: int, hidden: int, outputs: tuple[str, ...] = ("value",)) -> None:
        super().__init__()
        unknown = [o for o in outputs if o not in ("value", "spread")]
        if not outputs or unknown:
            raise ValueError(f"auxiliary outputs {outputs!r}: each must be 'value' or 'spread'")
        self.body = nn.Sequential(nn.Linear(in_dim, hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU())
        self.head = nn.Linear(hidden, len(outputs))
        nn.init.zeros_(self.head.weight)
        nn.init.zeros_(self.head.bias)
        self.register_buffer("loc", torch.zeros(()))
        self.register_buffer("scale", torch.ones(()))
        self.register_buffer("initialised", torch.zeros((), dtype=torch.bool))
        self._spread: list[bool] = [o == "spread" for o in outputs]  # not state: the rule fixes it

    def _spread_mask(self) -> Tensor:
        return torch.tensor(self._spread, device=self.head.weight.device)

    def forward(self, x: Tensor) -> Tensor:
        """Outputs of shape (..., n_outputs)."""
        h = self.head(self.body(x))
        value = self.loc + self.scale * h
        if not any(self._spread):
            return value
        spread = self.scale * torch.exp(torch.clamp(h, -_SPREAD_LOG_CLAMP, _SPREAD_LOG_CLAMP))
        return torch.where(self._spread_mask(), spread, value)

    @torch.no_grad()
    def track(self, mean: Tensor, std: Tensor) -> None:
        """Move (loc, scale) towards a batch's (mean, std) of V_hat; every output is preserved once initialised."""
        loc, scale, init = self.loc, self.scale, self.initialised
        mean, std = mean.to(loc.dtype), std.to(loc.dtype)
        m = _NORM_MOMENTUM
        new_loc = torch.where(init, (1 - m) * loc + m * mean, mean)
        new_scale = torch.where(init, (1 - m) * scale + m * std, std).clamp_min(_MIN_SCALE)
        w, b = self.head.weight, self.head.bias
        ratio = torch.where(init, scale / new_scale, torch.ones_like(scale))
        b_value = torch.where(init, (scale * b + loc - new_loc) / new_scale, b)
        if any(self._spread):
            spread = self._spread_mask()
            w.mul_(torch.where(spread, torch.ones_like(ratio), ratio)[:, None])
            b.copy_(torch.where(spread, b + torch.log(ratio), b_value))
        else:
            w.mul_(ratio)
            b.copy_(b_value)
        loc.copy_(new_loc)
        scale.copy_(new_scale)
        init.fill_(True)


# ===== the module =================================================================================
class RobustTarget(nn.Module):
    """Computes y for one TargetConfig from :class:`TargetInputs`; owns the auxiliary net, its optimizer, m_hat state.

    The formula is the registered rule of (kind, set) (``self.rule``); this module supplies what it needs.
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
        self.rule: SampleRule = cfg.rule
        self.radius = cfg.radius
        self.state_dim = state_dim
        self.n_agents = n_agents
        self.n_actions = n_actions
        self.gamma = float(gamma)
        self.register_buffer("m_hat_window", torch.full((cfg.m_hat_window,), math.inf, dtype=torch.float64))
        self.register_buffer("kl_shift", torch.zeros((), dtype=torch.float64))
        if cfg.m_hat == "ema":  # only in this mode, so the state_dict of the other modes is unchanged
            self.register_buffer("m_hat_ema", torch.full((), math.nan, dtype=torch.float64))
        self.aux: _AuxNet | None = (
            _AuxNet(state_dim + n_agents * n_actions, cfg.aux_hidden, self.rule.aux_outputs)
            if self.rule.needs_aux
            else None
        )
        self.optimizer: torch.optim.Optimizer | None = (
            torch.optim.Adam(self.aux.parameters(), lr=cfg.aux_lr, fused=True) if self.aux is not None else None
        )
        self._aux_override: AuxOverride | None = None

    @property
    def needs_aux(self) -> bool:
        """True when the rule needs an auxiliary net trained by update_aux (exact tv, chi2, kl-penalty; paper tv)."""
        return self.aux is not None

    @property
    def uses_m_hat(self) -> bool:
        """True when the rule uses m_hat (exact contamination and exact tv)."""
        return self.rule.needs_m_hat

    def extra_repr(self) -> str:
        c = self.cfg
        return (
            f"kind={c.kind!r}, set={c.set!r}, rho={c.rho:g}, beta={c.beta:g}, m_hat={c.m_hat!r}, gamma={self.gamma:g}"
        )

    def set_aux_override(self, fn: AuxOverride | None) -> None:
        """Test hook: ``fn(state, actions_onehot)`` replaces the aux net in :meth:`aux_value` (None restores it).

        ``fn`` maps inputs of any leading shape K (forward passes the (n, dim) rows of the valid nonterminal
        entries) to what :meth:`aux_value` returns: the rule's view of the aux outputs (eta for exact tv, log psi
        under the buffer ``kl_shift`` for exact kl-penalty, g for paper tv: shape K; (eta, s) for chi2: K + (2,)).
        update_aux still trains the net; only the target uses ``fn``.
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
        """The aux net's outputs in value units, shape (..., n_outputs)."""
        assert self.aux is not None
        p = self.aux.head.weight
        if state.device != p.device:
            raise ValueError(f"TargetInputs are on {state.device} but the target's aux net is on {p.device}; move it")
        return self.aux(torch.cat([state.to(p.dtype), actions_onehot.to(p.dtype)], dim=-1))

    def _view(self, raw: Tensor) -> Tensor:
        return self.rule.aux_view(TORCH_OPS, raw, self.radius, self.kl_shift.to(raw.dtype))

    @torch.no_grad()
    def aux_value(self, state: Tensor, actions_onehot: Tensor) -> Tensor:
        """The auxiliary estimate entering the formula (the rule's view), any leading shape."""
        if self._aux_override is not None:
            return self._aux_override(state, actions_onehot)
        if self.aux is None:
            raise RuntimeError(f"target {self.cfg.kind}/{self.cfg.set} has no auxiliary estimate")
        return self._view(self._raw_aux(state, actions_onehot))

    def _aux_full(self, inputs: TargetInputs, boot: Tensor, dtype: torch.dtype) -> Tensor:
        """aux_value on the bootstrapped rows only (one fused pass), scattered to shape L (0 elsewhere, unused)."""
        idx, state, actions = self._rows(inputs, boot)
        rows = self.aux_value(state, actions).to(dtype)
        full = torch.zeros((boot.numel(), *rows.shape[1:]), dtype=dtype, device=boot.device)
        return full.index_copy_(0, idx, rows).view(*boot.shape, *rows.shape[1:])

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
        rule = self.rule
        aux = self._aux_full(inputs, boot, dtype) if rule.needs_aux else None
        m = self.m_hat(v, boot) if rule.needs_m_hat else None
        shift = self.kl_shift.to(dtype) if rule.needs_shift else None
        y = _bootstrap(r, done, self.gamma, rule.continuation(TORCH_OPS, v, aux, m, self.radius, shift))
        return torch.where(valid, y, torch.zeros_like(y))

    @torch.no_grad()
    def lambda_target(self, inputs: TargetInputs, lam: float) -> Tensor:
        """Lambda-returns (:func:`lambda_returns`) of (B, T) episode rows; equals ``forward`` at lam = 0.

        Only for rules affine in V_hat(s') (``rule.affine``: none, paper and exact contamination, whose offset
        rho m_hat takes m_hat from the one-step V_hat as in forward). Raises ValueError for the others (tv, chi2,
        kl-penalty), whose targets are nonlinear in V_hat(s').
        """
        v, _, _, boot = self._check(inputs)
        cfg, rule = self.cfg, self.rule
        if rule.affine is None:
            raise ValueError(
                f"a lambda-return needs a target affine in V_hat(s'); {cfg.kind}/{cfg.set} is not (use lambda 0)"
            )
        dtype = torch.promote_types(inputs.reward.dtype, v.dtype)
        v = v.to(dtype)
        slope, offset = rule.affine(self.radius, self.m_hat(v, boot) if rule.needs_m_hat else 0.0)
        return lambda_returns(
            inputs.reward.to(dtype), v, inputs.terminated, inputs.mask, self.gamma, lam, slope, offset
        )

    def update_aux(self, inputs: TargetInputs, weight: Tensor | None = None) -> dict[str, float]:
        """Push the batch minimum into the running m_hat window (or the ema); take aux_steps steps on the aux loss.

        Only valid nonterminal entries enter the losses (their plain mean, or with `weight` (float >= 0, the shape
        of ``inputs.reward``) their weighted mean; padding never reaches the net). Exact-expectation batches
        (:mod:`drigm.exact_harness`) weight each (s, a, s') by P0(s'|s,a); m_hat and the kl shift still take every
        valid entry, whatever its weight.
        Returns floats: "aux_loss" (last step), "aux_mean" (mean of the first aux output in value units: eta, the
        soft-min c - beta log psi, or g), "aux_spread" (mean of a "spread" output: chi2's s), plus "m_hat" (rules
        that use it) or "kl_shift" (rules learned relative to a shift); {"m_hat"} for exact contamination; {} for
        the other aux-free rules. A batch without a valid nonterminal entry trains nothing.
        """
        v, _, _, boot = self._check(inputs)
        if weight is not None and weight.shape != inputs.reward.shape:
            raise ValueError(f"update_aux weight has shape {tuple(weight.shape)}; expected that of inputs.reward")
        cfg, rule = self.cfg, self.rule
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
        assert self.optimizer is not None and rule.aux_loss is not None
        idx, state, actions = self._rows(inputs, boot)
        if idx.numel() == 0:  # nothing valid to learn from (the nonzero() above already synchronised)
            return {"aux_loss": 0.0, "aux_mean": 0.0}
        dtype = self.aux.head.weight.dtype
        vn = v.reshape(-1).index_select(0, idx).to(dtype)
        with torch.no_grad():
            self.aux.track(vn.mean(), vn.std(correction=0))
            if rule.needs_shift:  # c = batch minimum keeps every regression target in (0, 1]
                self.kl_shift.copy_(batch_min)
        shift = self.kl_shift.to(dtype)
        wn = None if weight is None else weight.reshape(-1).index_select(0, idx).to(dtype)

        def reduce(elementwise: Tensor) -> Tensor:  # the plain mean, or the weighted mean with weights
            return elementwise.mean() if wn is None else (wn * elementwise).sum() / wn.sum().clamp_min(1e-30)

        loss, raw = vn, vn[:, None]
        for _ in range(cfg.aux_steps):
            raw = self._raw_aux(state, actions)
            view = rule.aux_view(TORCH_OPS, raw, self.radius, shift)
            loss = reduce(rule.aux_loss(TORCH_OPS, vn, view, self.radius, shift))
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            self.optimizer.step()
        with torch.no_grad():
            stats = {"aux_loss": loss.detach(), "aux_mean": raw[..., 0].detach().mean()}
            if "spread" in rule.aux_outputs:
                stats["aux_spread"] = raw[..., rule.aux_outputs.index("spread")].detach().mean()
            if self.uses_m_hat:
                stats["m_hat"] = self.m_hat(v, boot).to(dtype)
            if rule.needs_shift:
                stats["kl_shift"] = shift
        return dict(zip(stats, torch.stack(list(stats.values())).tolist(), strict=True))


def build_target(cfg: TargetConfig, state_dim: int, n_agents: int, n_actions: int, gamma: float) -> RobustTarget:
    """Validate ``cfg`` and build the RobustTarget for it (raises ValueError naming any invalid key)."""
    return RobustTarget(cfg, state_dim, n_agents, n_actions, gamma)
