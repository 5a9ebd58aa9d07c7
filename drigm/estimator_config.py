"""GroupDR's estimator settings (:class:`EstimatorConfig`), without torch: what a protocol needs to check them.

:mod:`drigm.reward_model` (the network and its file format, torch) re-exports both names.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from drigm.config import ConfigError, _build


@dataclass
class EstimatorConfig:
    """How behaviour data are collected and the estimators fitted.

    ``episodes_per_climate`` behaviour episodes per climate (the paper's code: 1,000 episodes in all, i.e. 200 for
    each of its five climates), played epsilon-greedily with ``behaviour_epsilon``; an MLP of width ``hidden``
    per climate, trained by Adam (``lr``) for ``epochs`` passes in minibatches of ``batch_size`` transitions; the
    last ``holdout`` fraction of each climate's episodes (at least one when there are two or more) is held out
    for the reported MSE.
    """

    episodes_per_climate: int = 200
    behaviour_epsilon: float = 0.1
    hidden: int = 64
    epochs: int = 20
    batch_size: int = 256
    lr: float = 1e-3
    holdout: float = 0.1

    def validate(self) -> None:
        """Raise ConfigError naming the key, its value and the allowed range for the first invalid entry."""
        for key, lo in (("episodes_per_climate", 1), ("hidden", 1), ("epochs", 1), ("batch_size", 1)):
            v = getattr(self, key)
            if isinstance(v, bool) or not isinstance(v, int) or v < lo:
                raise ConfigError(f"reward_estimator.{key}={v!r} is out of range: allowed integers >= {lo}")
        for key, lo, hi, lo_open, hi_open in (
            ("behaviour_epsilon", 0.0, 1.0, False, False),
            ("lr", 0.0, math.inf, True, True),
            ("holdout", 0.0, 1.0, False, True),
        ):
            v = getattr(self, key)
            bad = isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v)
            bad = bad or (v <= lo if lo_open else v < lo) or (v >= hi if hi_open else v > hi)
            if bad:
                rng = f"{'(' if lo_open else '['}{lo:g}, {hi:g}{')' if hi_open else ']'}"
                raise ConfigError(f"reward_estimator.{key}={v!r} is out of range: allowed {rng}")


def estimator_config(data: Mapping[str, Any] | None) -> EstimatorConfig:
    """A validated EstimatorConfig from plain data (unknown keys and bad values raise ConfigError by name)."""
    cfg = _build(EstimatorConfig, dict(data or {}), "reward_estimator.")
    cfg.validate()
    return cfg
