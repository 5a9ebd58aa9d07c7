"""GroupDR's reward estimators: one reward model per training climate, fitted on a behaviour policy's episodes.

As the seed paper's code builds GroupDR (PAPER_NOTES "GroupDR"): (1) VDN trained with per-episode domain
randomisation over the climates; (2) for each climate c an estimator r_hat_c(s, a, t) of the team reward, fitted
by mean squared error on episodes of a behaviour policy (the domain-randomised VDN, epsilon-greedy) played in that
climate; (3) VDN/QMIX/QTRAN trained with the TD target r_min + gamma V_hat(s'), r_min = min_c r_hat_c(s, a, t)
(``learner.reward_model``; :meth:`drigm.learner.Learner.estimated_rewards`).

The estimator of climate c is an MLP on [standardised global state, per-agent one-hot actions, t / horizon]
-> hidden -> hidden -> 1, predicting the standardised reward (the state and reward statistics of that climate's
data are stored as buffers), so its output is in env reward units. Files are written atomically (temp file +
rename) and hold the format tag, the climates, the shapes, the horizon, the fitting settings and metrics.
"""

from __future__ import annotations

import io
import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from drigm.config import ConfigError
from reference.atomic_io import atomic_write_bytes, describe_not_a_file

FORMAT = "drigm-reward-estimator/1"
_BEHAVIOUR_STREAM = 0x8E7A
"""The SeedSequence stream of the behaviour episodes' env seeds (apart from the training and evaluation streams)."""


class RewardModelError(ConfigError):
    """A reward-estimator file is missing, corrupt, or does not fit the run; the message names the file."""


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
    from drigm.config import _build

    cfg = _build(EstimatorConfig, dict(data or {}), "reward_estimator.")
    cfg.validate()
    return cfg


@dataclass
class RewardData:
    """One climate's behaviour transitions: global state s_t, joint action a_t, step index t, reward r_t, and the
    behaviour episode each came from."""

    state: np.ndarray  # (M, S) float32
    actions: np.ndarray  # (M, N) int64
    t: np.ndarray  # (M,) int64
    reward: np.ndarray  # (M,) float32
    episode: np.ndarray  # (M,) int64

    def __len__(self) -> int:
        return int(self.reward.shape[0])


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


# ===== behaviour data =============================================================================
def behaviour_seed(seed: int, climate_index: int, k: int, stream: int = _BEHAVIOUR_STREAM) -> int:
    """The env seed of behaviour episode k in climate `climate_index`: a pure function (so data are reproducible)."""
    return int(np.random.SeedSequence([seed, stream, climate_index, k]).generate_state(1)[0])


def collect_behaviour_data(
    members: Sequence[Any],
    controller: Any,
    episodes_per_climate: int,
    epsilon: float,
    seed: int,
    device: torch.device | str = "cpu",
    stream: int = _BEHAVIOUR_STREAM,
) -> list[RewardData]:
    """`episodes_per_climate` epsilon-greedy episodes of `controller` in each member env (one per climate, in
    order), recorded as (s_t, a_t, t, r_t) per climate. Deterministic given the seed, the stream of env seeds
    and the controller."""
    from drigm.runner import EpisodeRunner

    out: list[RewardData] = []
    for c, env in enumerate(members):
        runner = EpisodeRunner(env, controller, torch.device(device))
        rng = np.random.default_rng([seed, stream, c])
        parts: dict[str, list[np.ndarray]] = {k: [] for k in ("state", "actions", "t", "reward", "episode")}
        for k in range(episodes_per_climate):
            ep = runner.run(behaviour_seed(seed, c, k, stream), epsilon, rng)
            n = ep.length
            parts["state"].append(ep.data["state"][:n])
            parts["actions"].append(ep.data["actions"][:n])
            parts["t"].append(np.arange(n, dtype=np.int64))
            parts["reward"].append(ep.data["reward"][:n])
            parts["episode"].append(np.full(n, k, dtype=np.int64))
        cat = {k: np.concatenate(v) for k, v in parts.items()}
        out.append(
            RewardData(
                state=cat["state"].astype(np.float32),
                actions=cat["actions"].astype(np.int64),
                t=cat["t"],
                reward=cat["reward"].astype(np.float32),
                episode=cat["episode"],
            )
        )
    return out


# ===== fitting ====================================================================================
def _split(data: RewardData, holdout: float) -> tuple[np.ndarray, np.ndarray]:
    """(train, held-out) row indices: the last episodes are held out; with one episode, its last transitions."""
    episodes = np.unique(data.episode)
    if holdout == 0.0:
        return np.arange(len(data)), np.zeros(0, dtype=np.int64)
    if len(episodes) >= 2:
        n_out = min(len(episodes) - 1, max(1, math.ceil(holdout * len(episodes))))
        held = np.isin(data.episode, episodes[-n_out:])
    else:
        n_out = min(len(data) - 1, max(1, math.ceil(holdout * len(data))))
        held = np.arange(len(data)) >= len(data) - n_out
    return np.flatnonzero(~held), np.flatnonzero(held)


def fit_estimators(
    data: Sequence[RewardData],
    climates: Sequence[str],
    n_actions: int,
    horizon: int,
    cfg: EstimatorConfig,
    seed: int = 0,
) -> tuple[RewardEstimator, dict[str, Any]]:
    """Fit one estimator per climate by MSE (Adam, minibatches); returns the estimator and per-climate metrics:
    train and held-out MSE in reward units, held-out reward variance (so 1 - mse / var is the R^2), counts."""
    if len(data) != len(climates):
        raise ValueError(f"{len(data)} data sets for {len(climates)} climates")
    if any(len(d) < 2 for d in data):
        raise ValueError("every climate needs at least 2 transitions to fit and hold out")
    S, N = data[0].state.shape[1], data[0].actions.shape[1]
    torch.manual_seed(seed)
    est = RewardEstimator(climates, S, N, n_actions, horizon, cfg.hidden)
    metrics: dict[str, Any] = {}
    for c, (name, d) in enumerate(zip(climates, data, strict=True)):
        tr, ho = _split(d, cfg.holdout)
        s = torch.from_numpy(d.state)
        a = torch.from_numpy(d.actions)
        t = torch.from_numpy(d.t)
        r = torch.from_numpy(d.reward).float()
        with torch.no_grad():
            est.state_loc[c] = s[tr].mean(0)
            est.state_scale[c] = s[tr].std(0, unbiased=False).clamp_min(1e-3)
            est.reward_loc[c] = r[tr].mean()
            est.reward_scale[c] = r[tr].std(unbiased=False).clamp_min(1e-3)
        z = (r - est.reward_loc[c]) / est.reward_scale[c]
        opt = torch.optim.Adam(est.nets[c].parameters(), lr=cfg.lr)
        gen = torch.Generator().manual_seed(seed * 1000 + c)
        for _ in range(cfg.epochs):
            perm = tr[torch.randperm(len(tr), generator=gen).numpy()]
            for i in range(0, len(perm), cfg.batch_size):
                idx = torch.from_numpy(perm[i : i + cfg.batch_size])
                loss = (est.climate_output(c, s[idx], a[idx], t[idx]) - z[idx]).pow(2).mean()
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
        with torch.no_grad():
            pred = est.forward(s, a, t)[:, c]
            err = (pred - r).pow(2)
            m = {"n_train": len(tr), "n_holdout": len(ho), "train_mse": float(err[tr].mean())}
            if len(ho):
                m["holdout_mse"] = float(err[ho].mean())
                m["holdout_reward_var"] = float(r[ho].var(unbiased=False))
            metrics[name] = m
    return est.requires_grad_(False), metrics


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


def build_estimator(stage1_dir: Path, path: Path, cfg: EstimatorConfig, seed: int) -> dict[str, Any]:
    """GroupDR stage 2: load the domain-randomised run in `stage1_dir` (its env must be a
    :class:`~drigm.envs.mixture.MixtureEnv`), collect behaviour episodes in each of its climates, fit the
    estimators, and save them to `path`. Returns the metrics (per climate, plus collect/fit seconds)."""
    from drigm.envs.mixture import MixtureEnv
    from drigm.run import load_run

    trainer, _ = load_run(stage1_dir, device="cpu")
    try:
        env = trainer.env
        if not isinstance(env, MixtureEnv):
            raise RewardModelError(
                f"run {str(stage1_dir)!r} was not trained with domain randomisation (env {trainer.cfg.env.name!r} is "
                "not a climate mixture): GroupDR's behaviour policy is the domain-randomised run"
            )
        t0 = time.perf_counter()
        data = collect_behaviour_data(
            env.members, trainer.learner.controller, cfg.episodes_per_climate, cfg.behaviour_epsilon, seed
        )
        t1 = time.perf_counter()
        est, metrics = fit_estimators(data, env.names, env.n_actions, env.episode_limit, cfg, seed)
        t2 = time.perf_counter()
    finally:
        trainer.env.close()
        trainer.eval_env.close()
    metrics = {
        "climates": metrics,
        "collect_seconds": t1 - t0,
        "fit_seconds": t2 - t1,
        "behaviour_run": Path(stage1_dir).name,  # the run directory holding this file: no machine path in results
    }
    save_estimator(est, path, cfg, metrics)
    return metrics


# ===== auditing a GroupDR run =====================================================================
_AUDIT_STREAM = 0xA0D1
"""The SeedSequence stream of the audit's env seeds (apart from the behaviour, training and evaluation streams)."""


def audit_estimator(run_dir: Path, episodes_per_climate: int = 5, device: str = "cpu") -> dict[str, Any]:
    """How a GroupDR stage-3 run's own greedy policy is scored by its reward estimator, climate by climate.

    Plays `episodes_per_climate` greedy episodes in each climate of the run's training environment (each member
    of a climate mixture) and compares, on those transitions, the true reward r with every climate's estimate
    r_hat_c(s, a, t) and with their minimum (the reward its TD target used). A policy that exploits its estimator
    shows as a large positive gap ``min_hat - r`` on its own transitions, far above the estimator's held-out error.
    Returns per climate: steps, mean true and estimated rewards per step, the gap's mean and RMS, the largest
    |estimate|, the share of steps where the minimum over-estimates r, and the true and estimated episode returns.
    """
    from drigm.envs.mixture import MixtureEnv
    from drigm.run import load_run

    if isinstance(episodes_per_climate, bool) or not isinstance(episodes_per_climate, int) or episodes_per_climate < 1:
        raise ConfigError(f"episodes_per_climate={episodes_per_climate!r} must be an integer >= 1")
    trainer, info = load_run(Path(run_dir), device=device)
    try:
        if trainer.cfg.learner.reward_model is None:
            raise RewardModelError(
                f"run {str(run_dir)!r} trains without a reward estimator (learner.reward_model is not set): only "
                "GroupDR's stage-3 runs can be audited"
            )
        env = trainer.env
        est = trainer.reward_model_of(env)
        members, names = (env.members, env.names) if isinstance(env, MixtureEnv) else ([env], [trainer.cfg.env.name])
        data = collect_behaviour_data(
            members, trainer.learner.controller, episodes_per_climate, 0.0, trainer.cfg.seed, trainer.device,
            stream=_AUDIT_STREAM,
        )  # fmt: skip
        climates: dict[str, Any] = {}
        for name, d in zip(names, data, strict=True):
            with torch.no_grad():
                p = est(torch.as_tensor(d.state), torch.as_tensor(d.actions), torch.as_tensor(d.t)).double().numpy()
            r = d.reward.astype(np.float64)
            gap = p.min(axis=-1) - r
            climates[name] = {
                "steps": int(r.size),
                "true_reward_mean": float(r.mean()),
                "min_estimate_mean": float(p.min(axis=-1).mean()),
                "estimate_mean": {e: float(p[:, j].mean()) for j, e in enumerate(est.climates)},
                "gap_mean": float(gap.mean()),
                "gap_rms": float(np.sqrt(np.mean(gap**2))),
                "max_abs_estimate": float(np.abs(p).max()),
                "overestimated_share": float(np.mean(gap > 0)),
                "true_return_mean": float(r.sum() / episodes_per_climate),
                "estimated_return_mean": float(p.min(axis=-1).sum() / episodes_per_climate),
            }
    finally:
        trainer.env.close()
        trainer.eval_env.close()
    return {
        "run": Path(run_dir).name,
        "t_env": info["t_env"],
        "estimator_climates": list(est.climates),
        "episodes_per_climate": episodes_per_climate,
        "climates": climates,
    }
