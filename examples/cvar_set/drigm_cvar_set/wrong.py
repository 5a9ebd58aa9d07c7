"""A deliberately wrong CVaR set for the docs and tests: its support function is off by a factor, 1 / (1 - rho)
applied to the whole expectation instead of to each state's cap, so ``drigm verify cvar-wrong`` must fail, naming
the checks that catch it (the closed form against the cvxpy primal, translation equivariance, ...)."""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

from drigm_cvar_set import SPEC as RIGHT
from drigm_cvar_set import cvar_support
from reference.sets import Radius


def wrong_support(P0: Any, V: Any, rho: float, validate: bool = True) -> np.ndarray:
    """The slip: the right sigma(V) divided by 1 - rho (equal to it only at rho = 0)."""
    return cvar_support(P0, V, rho, validate) / (1.0 - RIGHT.radius.check(rho))


SPEC = dataclasses.replace(
    RIGHT,
    name="cvar-wrong",
    radius=Radius("cvar-wrong", RIGHT.radius.lo, RIGHT.radius.hi, meaning=RIGHT.radius.meaning),
    support=wrong_support,
)
