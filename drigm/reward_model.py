"""GroupDR's reward model: the network r_hat_c(s, a, t) of every training climate and its file format.

The estimator of climate c is an MLP on [standardised global state, per-agent one-hot actions, t / horizon]
-> hidden -> hidden -> 1, predicting the standardised reward (the state and reward statistics of that climate's
data are stored as buffers), so its output is in env reward units. Files are written atomically (temp file +
rename) and hold the format tag, the climates, the shapes, the horizon, the fitting settings and metrics.

This module is what training needs (:class:`drigm.learner.Learner` takes the minimum over climates as its TD
reward); collecting behaviour data and fitting the estimators is :mod:`drigm.groupdr`, above :mod:`drigm.run`.
"""

from __future__ import annotations

import io
from collections.abc import Mapping, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from drigm.config import ConfigError
from drigm.estimator_config import EstimatorConfig, estimator_config  # noqa: F401  (re-exported: defined here before)
from reference.atomic_io import atomic_write_bytes, describe_not_a_file

FORMAT = "drigm-reward-estimator/1"


class RewardModelError(ConfigError):
    """A reward-estimator file is missing, corrupt, or does not fit the run; the message names the file."""


class RewardEstimator(nn.Module):
    """r_hat_c(s, a, t) for every climate c; ``forward`` gives all of them, ``min_reward`` their minimum."""

    def __init__(
        self, climates: Sequence[str], state_dim: int, n_agents: int, n_actions: int, horizon: int, hidden: int
    ) -> None:
        super().__init__()
        if not climates or horizon < 1:
            raise ValueError(f"a reward estimator needs climates (got {list(climates)}) and horizon >= 1")
        self.climates = tuple(climates)
        self.state_dim, self.n_agents, self.n_actions = state_dim, n_agents, n_actions
        self.horizon, self.hidden = horizon, hidden
        C, in_dim = len(self.climates), state_dim + n_agents * n_actions + 1
        self.nets = nn.ModuleList(
            nn.Sequential(
                nn.Linear(in_dim, hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU(), nn.Linear(hidden, 1)
            )
            for _ in range(C)
        )
        self.register_buffer("state_loc", torch.zeros(C, state_dim))
        self.register_buffer("state_scale", torch.ones(C, state_dim))
        self.register_buffer("reward_loc", torch.zeros(C))
        self.register_buffer("reward_scale", torch.ones(C))

    def _inputs(self, c: int, state: Tensor, actions: Tensor, t: Tensor) -> Tensor:
        s = (state - self.state_loc[c]) / self.state_scale[c]
        a = nn.functional.one_hot(actions.long(), self.n_actions).to(s.dtype).flatten(-2)
        tt = (t.to(s.dtype) / self.horizon).unsqueeze(-1)
        return torch.cat([s, a, tt], dim=-1)

    def climate_output(self, c: int, state: Tensor, actions: Tensor, t: Tensor) -> Tensor:
        """Climate c's standardised prediction, shape L for inputs state L + (S,), actions L + (N,), t L."""
        return self.nets[c](self._inputs(c, state, actions, t)).squeeze(-1)

    def forward(self, state: Tensor, actions: Tensor, t: Tensor) -> Tensor:
        """Predicted rewards L + (C,) in env units, for state L + (S,), actions L + (N,) (ints), t L (step index)."""
        outs = [
            self.reward_loc[c] + self.reward_scale[c] * self.climate_output(c, state, actions, t)
            for c in range(len(self.climates))
        ]
        return torch.stack(outs, dim=-1)

    def min_reward(self, state: Tensor, actions: Tensor, t: Tensor) -> Tensor:
        """min over climates of r_hat_c(s, a, t), shape L (GroupDR's reward in the TD target)."""
        return self.forward(state, actions, t).min(dim=-1).values


# ===== files ======================================================================================
def save_estimator(est: RewardEstimator, path: Path, cfg: EstimatorConfig, metrics: Mapping[str, Any]) -> None:
    """Write the estimator, its climates, shapes, horizon, fitting settings and metrics atomically to `path`."""
    payload = {
        "format": FORMAT,
        "climates": list(est.climates),
        "state_dim": est.state_dim,
        "n_agents": est.n_agents,
        "n_actions": est.n_actions,
        "horizon": est.horizon,
        "hidden": est.hidden,
        "config": asdict(cfg),
        "metrics": dict(metrics),
        "state_dict": est.state_dict(),
    }
    buf = io.BytesIO()
    torch.save(payload, buf)
    atomic_write_bytes(Path(path), buf.getvalue(), make_parents=True)


def load_estimator(path: Path, expect: Mapping[str, int] | None = None) -> tuple[RewardEstimator, dict[str, Any]]:
    """The estimator in `path` and its file's metadata; RewardModelError naming the file when it is missing,
    corrupt, of another format, or its shapes differ from `expect` (keys state_dim, n_agents, n_actions)."""
    path = Path(path)
    problem = describe_not_a_file(path, "reward-estimator file")
    if problem is not None:
        raise RewardModelError(problem)
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # truncated zip, bad magic, foreign pickle
        raise RewardModelError(
            f"reward-estimator file {str(path)!r} is corrupt or unreadable: {type(exc).__name__}: {exc}"
        ) from exc
    if not isinstance(obj, dict) or obj.get("format") != FORMAT:
        got = obj.get("format") if isinstance(obj, dict) else type(obj).__name__
        raise RewardModelError(f"reward-estimator file {str(path)!r} has format {got!r}; expected {FORMAT!r}")
    for key, want in (expect or {}).items():
        if obj.get(key) != want:
            raise RewardModelError(
                f"reward-estimator file {str(path)!r} was fitted for {key}={obj.get(key)!r}, but this run has "
                f"{key}={want!r}: it belongs to another environment"
            )
    try:
        est = RewardEstimator(
            obj["climates"], obj["state_dim"], obj["n_agents"], obj["n_actions"], obj["horizon"], obj["hidden"]
        )
        est.load_state_dict(obj["state_dict"])
    except (KeyError, TypeError, ValueError, RuntimeError) as exc:
        raise RewardModelError(f"reward-estimator file {str(path)!r} does not hold a valid estimator: {exc}") from exc
    meta = {k: v for k, v in obj.items() if k != "state_dict"}
    return est.requires_grad_(False), meta
