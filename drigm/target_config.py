"""Which robust target a learner regresses on (:class:`TargetConfig`) and its checks, without torch.

:mod:`drigm.targets` builds the target itself (torch) and re-exports everything here, so ``from drigm.targets
import TargetConfig`` keeps working; :mod:`drigm.config` imports it from here so that a config can be built and
checked without torch.
"""

from __future__ import annotations

import contextlib
import math
import numbers
from dataclasses import dataclass

from reference.sets import SampleRule, UncertaintySetError, get_spec, sample_rule, sets_with_rule

__all__ = ["KINDS", "M_HAT_MODES", "PAPER_SETS", "SETS", "TargetConfig"]

KINDS: tuple[str, ...] = ("none", "exact", "paper")
SETS: tuple[str, ...] = sets_with_rule("exact")  # the sets a learner can target (registry order)
PAPER_SETS: tuple[str, ...] = sets_with_rule("paper")
M_HAT_MODES: tuple[str, ...] = ("batch", "running", "bound", "ema")


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
