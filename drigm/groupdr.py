"""GroupDR (the seed paper's baseline): behaviour data in each training climate, the fitted reward estimators, and
their audit.

As the seed paper's code builds GroupDR (PAPER_NOTES "GroupDR"): (1) VDN trained with per-episode domain
randomisation over the climates; (2) for each climate c an estimator r_hat_c(s, a, t) of the team reward, fitted
by mean squared error on episodes of a behaviour policy (the domain-randomised VDN, epsilon-greedy) played in that
climate; (3) VDN/QMIX/QTRAN trained with the TD target r_min + gamma V_hat(s'), r_min = min_c r_hat_c(s, a, t)
(``learner.reward_model``; :meth:`drigm.learner.Learner.estimated_rewards`). The network and its file format are
:mod:`drigm.reward_model`; this module sits above :mod:`drigm.run` (it loads stage 1's run).
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from drigm.config import ConfigError, RunConfig
from drigm.protocol import Job
from drigm.results_store import portable, train_dir
from drigm.reward_model import (
    EstimatorConfig,
    RewardEstimator,
    RewardModelError,
    load_estimator,
    save_estimator,
)
from reference.atomic_io import file_lock

_BEHAVIOUR_STREAM = 0x8E7A
"""The SeedSequence stream of the behaviour episodes' env seeds (apart from the training and evaluation streams)."""


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


def groupdr_stages(
    job: Job,
    cfg: RunConfig,
    stage1_job: Job,
    stage1_cfg: RunConfig,
    estimator: EstimatorConfig,
    out_root: Path,
    progress: bool = False,
) -> dict[str, Any]:
    """GroupDR's stages 1 and 2 for `job` (whose config `cfg` trains stage 3 under `out_root`): train (or
    resume, or reuse) the domain-randomised behaviour run `stage1_job` (resolved config `stage1_cfg`; same seed and
    climate set), then fit its reward estimators (settings `estimator`) into the file `cfg.learner.reward_model`
    names (relative to stage 3's run directory) unless a valid one is there. Both are idempotent and file-locked,
    so the algorithms of one seed share them. Returns what the stages did (directories, seconds, the estimator's
    metrics)."""
    if cfg.learner.reward_model is None:
        raise ConfigError(f"GroupDR job {job.method} seed {job.seed}: its config names no learner.reward_model")
    from drigm.run import train_job

    s1job, s1cfg = stage1_job, stage1_cfg
    s1dir = train_dir(out_root, s1job, s1cfg)
    tdir = train_dir(out_root, job, cfg)
    est_path = (tdir / cfg.learner.reward_model).resolve()
    if est_path.parent != s1dir.resolve():
        raise ConfigError(f"GroupDR job {job.method} seed {job.seed}: its estimator {est_path} is not in {s1dir}")
    t0 = time.perf_counter()
    s1 = train_job(replace(s1cfg, out=str(s1dir), progress=progress), s1dir)
    t1 = time.perf_counter()
    with file_lock(s1dir / ".estimator.lock"):
        try:
            meta = load_estimator(est_path)[1]
            built = False
        except RewardModelError:
            if est_path.exists():  # corrupt or foreign: refit (the file is ours to rewrite)
                est_path.unlink()
            meta = {"metrics": build_estimator(s1dir, est_path, estimator, job.seed)}
            built = True
    return {
        "stage1_dir": portable(s1dir, out_root),
        "stage1_t_env": s1.get("t_env"),
        "stage1_seconds": t1 - t0,
        "estimator": portable(est_path, out_root),
        "estimator_built": built,
        "estimator_metrics": meta.get("metrics"),
        "estimator_seconds": time.perf_counter() - t1,
    }
