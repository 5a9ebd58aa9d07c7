"""Training runs, checkpoints, logs, evaluation and the demo.

A run directory holds:

- ``config.yaml``: the resolved config (every default filled in), written before training starts;
- ``checkpoint.pt``: the last checkpoint, replaced atomically. It holds the online and target networks,
  the optimiser, the robust target's state_dict and its optimiser, the replay buffer (unless
  ``checkpoint_buffer`` is off; a resumed run then refills an empty buffer), the step counters, the
  recent training returns, and every random-number generator's state. A resumed run therefore
  continues exactly where the checkpoint was taken, and on CPU reproduces an uninterrupted run;
- ``progress.csv``: tidy log rows ``step,key,value`` (rows after the checkpoint are dropped on resume);
- ``tb/``: TensorBoard scalars.
"""

from __future__ import annotations

import csv
import json
import math
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from scipy import stats as sps
from tqdm import tqdm

from drigm.agents import AgentController, masked_argmax
from drigm.buffer import EpisodeBuffer, TransitionBuffer, marl_scheme
from drigm.checkpoint import CheckpointError, atomic_write_bytes, check_meta, load_checkpoint, save_checkpoint
from drigm.config import CONFIG_FILE, ConfigError, RunConfig, build_config, load_yaml, save_config
from drigm.envs.base import MultiAgentEnv, make_env
from drigm.envs.tabular import TabularEnv
from drigm.learner import Learner, resolve_device
from drigm.reward_model import RewardEstimator, load_estimator
from drigm.runner import BatchedRunner, Episode, EpisodeRunner
from drigm.window_agents import WindowController
from reference.atomic_io import file_lock, remove_stale_temps
from reference.bellman import evaluate_under_kernel, policy_evaluation, value_iteration
from reference.sets import UncertaintySet, make_set

CHECKPOINT = "checkpoint.pt"
TRAIN_DONE = "train_done.json"
"""Written into a run directory by :func:`train_job` once the run has trained to its budget."""
CONFIG = CONFIG_FILE
PROGRESS = "progress.csv"

# seed streams: independent generators derived from the run seed
_TRAIN_EPISODES, _EVAL_EPISODES, _ACTIONS, _SAMPLING = 1, 2, 3, 4


def episode_seed(seed: int, stream: int, k: int) -> int:
    """The environment seed of episode `k` in a stream: a pure function, so resumed runs replay the same seeds."""
    return int(np.random.SeedSequence([seed, stream, k]).generate_state(1)[0])


def make_run_env(cfg: RunConfig) -> MultiAgentEnv:
    """The environment of a run: its registry spec, adapter kwargs, and the episode-length cap."""
    kwargs = dict(cfg.env.kwargs)
    if cfg.env.episode_limit is not None:
        if "episode_limit" in kwargs:
            raise ConfigError("env.episode_limit is set twice: as env.episode_limit and in env.kwargs")
        kwargs["episode_limit"] = cfg.env.episode_limit
    return make_env(cfg.env.name, **kwargs)


SMAX_DEFAULT_N_ENVS = 16
"""Battles collected at once on smax when n_envs is unset."""


def batched_env_count(cfg: RunConfig, env: MultiAgentEnv) -> int | None:
    """B for batched collection (environments with a ``batched(B)`` method: smax), None for the one-env path.

    n_envs unset gives SMAX_DEFAULT_N_ENVS on batched environments; n_envs > 1 on another environment is a
    ConfigError (1 there keeps the one-env path).
    """
    n = cfg.n_envs
    if callable(getattr(env, "batched", None)):
        if cfg.learner.replay == "transitions":
            raise ConfigError(
                f"learner.replay='transitions' runs one environment at a time; {cfg.env.name!r} is collected in "
                "batches of whole episodes: use learner.replay='episodes' there"
            )
        return SMAX_DEFAULT_N_ENVS if n is None else n
    if n is not None and n != 1:
        raise ConfigError(
            f"n_envs={n} needs a batched environment (smax); {cfg.env.name!r} collects one episode at a time"
        )
    return None


def resolve_gamma(cfg: RunConfig, env: MultiAgentEnv) -> float:
    """learner.gamma, or the environment's own discount; a tabular game's discount may not be contradicted."""
    own, given = env.discount, cfg.learner.gamma
    if given is None:
        if own is None:
            raise ConfigError(f"learner.gamma is not set and environment {cfg.env.name!r} defines no discount")
        return own
    if own is not None and given != own:
        raise ConfigError(
            f"learner.gamma={given!r} differs from the discount {own!r} of {cfg.env.name!r}; "
            "leave learner.gamma unset (null) for tabular games so the exact-solver checks stay meaningful"
        )
    return given


def model_meta(cfg: RunConfig, env: MultiAgentEnv) -> dict[str, Any]:
    """What a checkpoint must agree on to be loaded: algorithm, target, environment and every network shape."""
    return {
        "algo": cfg.mixer.name,
        "mixer_params": cfg.to_dict()["mixer"]["params"],
        "agent": cfg.to_dict()["agent"],
        "target_kind": cfg.target.kind,
        "target_set": cfg.target.set,
        "target_rho": cfg.target.rho,
        "target_beta": cfg.target.beta,
        "env": cfg.env.name,
        "n_agents": env.n_agents,
        "n_actions": env.n_actions,
        "obs_dim": env.obs_dim,
        "state_dim": env.state_dim,
        "episode_limit": env.episode_limit,
    }


def mean_ci95(values: list[float]) -> tuple[float, float | None, float | None]:
    """Mean and Student-t 95% confidence interval of the mean (None bounds when fewer than 2 values)."""
    x = np.asarray(values, dtype=np.float64)
    mean = float(x.mean())
    if x.size < 2:
        return mean, None, None
    half = float(sps.t.ppf(0.975, x.size - 1) * x.std(ddof=1) / math.sqrt(x.size))
    return mean, mean - half, mean + half


class RunLogger:
    """Tidy CSV rows (step,key,value) plus TensorBoard scalars; on resume, rows after `resume_step` are dropped."""

    def __init__(self, run_dir: Path, tensorboard: bool, resume_step: int | None) -> None:
        self.path = run_dir / PROGRESS
        if resume_step is not None and self.path.is_file():
            with self.path.open(newline="") as fh:
                rows = [r for r in csv.reader(fh)][1:]
            kept = [r for r in rows if len(r) == 3 and int(r[0]) <= resume_step]
            text = "step,key,value\n" + "".join(f"{a},{b},{c}\n" for a, b, c in kept)
            atomic_write_bytes(self.path, text.encode())
        elif not self.path.is_file() or resume_step is None:
            self.path.write_text("step,key,value\n")
        self.writer = None
        if tensorboard:
            from torch.utils.tensorboard import SummaryWriter

            self.writer = SummaryWriter(str(run_dir / "tb"), purge_step=resume_step)

    def log(self, step: int, values: dict[str, float]) -> None:
        """Append one row per value and mirror them to TensorBoard."""
        with self.path.open("a") as fh:
            for k, v in values.items():
                fh.write(f"{step},{k},{v!r}\n")
        if self.writer is not None:
            for k, v in values.items():
                self.writer.add_scalar(k, v, step)

    def close(self) -> None:
        """Flush and close TensorBoard."""
        if self.writer is not None:
            self.writer.close()


@dataclass
class Counters:
    """Training progress; all schedules are functions of these, so a resumed run continues them."""

    t_env: int = 0
    episodes: int = 0
    pending_steps: int = 0
    last_log: int = 0
    last_eval: int = 0
    last_checkpoint: int = 0
    recent_returns: list[float] = field(default_factory=list)
    recent_wins: list[float] = field(default_factory=list)


class Trainer:
    """Builds everything a run needs from its config, trains, checkpoints, logs, and resumes.

    With ``training=False`` (evaluation) no replay buffer is allocated and a checkpoint's buffer is not loaded.
    """

    def __init__(self, cfg: RunConfig, run_dir: Path | None = None, training: bool = True) -> None:
        self.cfg = cfg
        self.run_dir = Path(run_dir if run_dir is not None else cfg.out)
        self.device = resolve_device(cfg.learner.device)
        if cfg.learner.cpu_threads:
            torch.set_num_threads(cfg.learner.cpu_threads)
        self.env = make_run_env(cfg)
        self.eval_env = make_run_env(cfg)
        self.gamma = resolve_gamma(cfg, self.env)
        env = self.env
        torch.manual_seed(cfg.seed)
        # GroupDR: the reward estimator replaces the TD reward while training (evaluation needs no reward model)
        reward_model = self.reward_model_of(env) if training and cfg.learner.reward_model is not None else None
        self.learner = Learner(
            cfg, env.n_agents, env.n_actions, env.obs_dim, env.state_dim, self.gamma, self.device, reward_model
        )
        self.training = training
        self.buffer: EpisodeBuffer | TransitionBuffer
        if cfg.learner.replay == "transitions":
            self.buffer = TransitionBuffer(
                env.n_agents,
                env.n_actions,
                env.obs_dim,
                env.state_dim,
                capacity=cfg.learner.buffer_size if training else 1,
                history=cfg.agent.history,
                time_index=cfg.learner.reward_model is not None,
            )
        else:
            self.buffer = EpisodeBuffer(
                marl_scheme(env.n_agents, env.n_actions, env.obs_dim, env.state_dim),
                capacity=cfg.learner.buffer_size if training else 1,
                max_seq_length=env.episode_limit + 1,
            )
        if isinstance(self.buffer, TransitionBuffer):
            self.learner.attach_target_cache(self.buffer.capacity)
        self.runner = EpisodeRunner(env, self.learner.controller, self.device)
        self.runner.joint_explore = cfg.explore.joint
        self.eval_runner = EpisodeRunner(self.eval_env, self.learner.controller, self.device)
        # batched environments (smax): B battles per step for training and evaluation, one compiled step for both
        self.n_envs = batched_env_count(cfg, env)
        self.batch_runner: BatchedRunner | None = None
        self.eval_batch_runner: BatchedRunner | None = None
        if self.n_envs is not None:
            ctrl = self.learner.controller
            self.batch_runner = BatchedRunner(env.batched(self.n_envs), ctrl, self.device)  # type: ignore[attr-defined]
            self.batch_runner.joint_explore = cfg.explore.joint
            self.eval_batch_runner = BatchedRunner(self.eval_env.batched(self.n_envs), ctrl, self.device)  # type: ignore[attr-defined]
        self.act_rng = np.random.default_rng([cfg.seed, _ACTIONS])
        self.sample_rng = np.random.default_rng([cfg.seed, _SAMPLING])
        self.counters = Counters()
        self.meta = model_meta(cfg, env)
        self._drawn_seeds: list[int] = []

    def reward_model_of(self, env: MultiAgentEnv) -> RewardEstimator:
        """The estimator of ``learner.reward_model`` (a relative path is taken from the run directory), checked
        against the env's shapes; RewardModelError naming the file otherwise."""
        assert self.cfg.learner.reward_model is not None
        path = Path(self.cfg.learner.reward_model)
        if not path.is_absolute():
            path = self.run_dir / path
        expect = {"state_dim": env.state_dim, "n_agents": env.n_agents, "n_actions": env.n_actions}
        return load_estimator(path, expect)[0]

    # ----- checkpoints ----------------------------------------------------------------------------
    def checkpoint_path(self) -> Path:
        return self.run_dir / CHECKPOINT

    def save(self) -> None:
        """Write the checkpoint atomically (its counters already record this checkpoint)."""
        c = self.counters
        c.last_checkpoint = c.t_env
        save_checkpoint(
            {
                "meta": self.meta,
                "config": self.cfg.to_dict(),
                "learner": self.learner.state_dict(),
                "buffer": self.buffer.state_dict() if self.cfg.checkpoint_buffer else None,
                "counters": {
                    **c.__dict__,
                    "recent_returns": list(c.recent_returns),
                    "recent_wins": list(c.recent_wins),
                },
                "runner": self.batch_runner.state_dict() if self.batch_runner is not None else None,
                "rng": {
                    "torch": torch.get_rng_state(),
                    "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
                    "actions": json.dumps(self.act_rng.bit_generator.state),
                    "sampling": json.dumps(self.sample_rng.bit_generator.state),
                },
            },
            self.checkpoint_path(),
        )

    def load(self, path: Path | None = None) -> None:
        """Restore everything from a checkpoint; raises CheckpointError on corruption or mismatch."""
        path = Path(path) if path is not None else self.checkpoint_path()
        ck = load_checkpoint(path, map_location=self.device)
        check_meta(ck["meta"], self.meta, path)
        self.learner.load_state_dict(ck["learner"])
        if ck["buffer"] is not None and self.training:
            try:
                self.buffer.load_state_dict(ck["buffer"])
            except (ValueError, KeyError) as exc:
                raise CheckpointError(f"checkpoint {str(path)!r}: the replay buffer does not fit: {exc}") from exc
        try:
            self.counters = Counters(**ck["counters"])
            rng = ck["rng"]
            torch.set_rng_state(rng["torch"].cpu())
            if rng["cuda"] and torch.cuda.is_available():
                torch.cuda.set_rng_state_all(rng["cuda"])
            self.act_rng.bit_generator.state = json.loads(rng["actions"])
            self.sample_rng.bit_generator.state = json.loads(rng["sampling"])
        except (TypeError, KeyError, ValueError) as exc:
            raise CheckpointError(f"checkpoint {str(path)!r} has malformed counters or RNG state: {exc}") from exc
        if self.batch_runner is not None and self.training:
            state = ck.get("runner")
            if state is None:
                raise CheckpointError(f"checkpoint {str(path)!r} holds no batched-collection state to resume from")
            try:
                self.batch_runner.load_state_dict(state, self._train_seed)
            except (ValueError, KeyError) as exc:
                raise CheckpointError(f"checkpoint {str(path)!r}: the batched collection does not fit: {exc}") from exc

    # ----- training -------------------------------------------------------------------------------
    def _train_seed(self, k: int) -> int:
        """The env seed of training episode k: drawn per run seed, or the fixed ``train_seed_draw`` sequence."""
        draw = self.cfg.train_seed_draw
        if draw is None:
            return episode_seed(self.cfg.seed, _TRAIN_EPISODES, k)
        if k >= len(self._drawn_seeds):  # a longer draw from the same generator keeps the earlier draws (a prefix)
            S, high = draw
            self._drawn_seeds = np.random.default_rng(S).integers(0, high, size=max(2 * k, 1024)).tolist()
        return int(self._drawn_seeds[k])

    def _eval_seed(self, k: int) -> int:
        return episode_seed(self.cfg.seed, _EVAL_EPISODES, k)

    def evaluate(self, episodes: int) -> tuple[list[float], list[bool] | None]:
        """Greedy returns of `episodes` evaluation episodes, and their won flags on batched envs (smax; else None).

        Episode k always uses the env seed of eval-stream index k, on the batched and the one-env path alike.
        """
        if self.eval_batch_runner is not None:
            eps = self.eval_batch_runner.run_episodes(episodes, self._eval_seed, 0.0, self.act_rng)
            return [e.episode_return for e in eps], [e.won for e in eps]
        return [
            self.eval_runner.run(self._eval_seed(k), 0.0, self.act_rng).episode_return for k in range(episodes)
        ], None

    def evaluate_returns(self, episodes: int) -> list[float]:
        """Greedy returns of `episodes` evaluation episodes (the same seeds every time)."""
        return self.evaluate(episodes)[0]

    def _collect(self, eps: float) -> tuple[list[Episode], int, list[bool]]:
        """One collection step: (finished episodes, env steps taken, won flags of batched episodes)."""
        if self.batch_runner is None:
            ep = self.runner.run(self._train_seed(self.counters.episodes), eps, self.act_rng)
            return [ep], ep.length, []
        if not self.batch_runner.started:
            self.batch_runner.start(self._train_seed, 0)
        done = self.batch_runner.step(eps, self.act_rng)
        return list(done), self.batch_runner.env.batch_size, [e.won for e in done]

    def _train_phase(self) -> dict[str, float]:
        lc = self.cfg.learner
        stats: dict[str, float] = {}
        for j in range(lc.q_steps):
            batch = self.buffer.sample(lc.batch_size, self.sample_rng, self.device)
            stats = self.learner.update(batch, run_aux=(j == 0 or not lc.aux_first))
        return stats

    def train(self, resume: bool = False) -> dict[str, Any]:
        """Train until cfg.steps environment steps (continuing from the checkpoint when `resume`); return a summary.

        Resuming a run that is already trained to cfg.steps and evaluated logs nothing and returns its logged final
        evaluation (``already_finished``: True)."""
        cfg, c = self.cfg, self.counters
        if not self.training:
            raise RuntimeError("this Trainer was built with training=False (evaluation only)")
        self.run_dir.mkdir(parents=True, exist_ok=True)
        remove_stale_temps(self.run_dir)  # temp files of writes killed mid-way (the run directory is this run's)
        if resume:
            self.load()
            c = self.counters
            final = self._logged_final_eval() if c.t_env >= cfg.steps else None
            if final is not None:  # already trained and evaluated: nothing to add (no second final row)
                summary = {
                    "run_dir": str(self.run_dir),
                    "t_env": c.t_env,
                    "episodes": c.episodes,
                    "updates": self.learner.n_updates,
                    "eval_return_mean": final["eval/return_mean"],
                    "seconds": 0.0,
                    "already_finished": True,
                }
                if "eval/win_rate" in final:
                    summary["eval_win_rate"] = final["eval/win_rate"]
                return summary
        elif self.checkpoint_path().exists():
            raise CheckpointError(
                f"run directory {str(self.run_dir)!r} already holds a checkpoint; pass --resume to continue it "
                "or choose another --out"
            )
        save_config(cfg, self.run_dir / CONFIG)
        logger = RunLogger(self.run_dir, cfg.tensorboard, c.t_env if resume else None)
        recent = deque(c.recent_returns, maxlen=100)
        recent_wins = deque(c.recent_wins, maxlen=100)
        stats: dict[str, float] = {}
        bar = tqdm(total=cfg.steps, initial=min(c.t_env, cfg.steps), unit="step", disable=not cfg.progress)
        start = time.perf_counter()
        try:
            while c.t_env < cfg.steps:
                eps = cfg.explore.epsilon(c.t_env)
                finished, n_steps, won = self._collect(eps)
                for ep in finished:
                    # store_final false: the episode's last transition is not stored (the seed paper's loop)
                    stored = ep.length if cfg.learner.store_final else ep.length - 1
                    if stored >= 1:
                        self.buffer.insert(ep.data, stored)
                    recent.append(ep.episode_return)
                recent_wins.extend(float(w) for w in won)
                c.t_env += n_steps
                c.episodes += len(finished)
                bar.update(min(n_steps, cfg.steps - bar.n))
                phases, c.pending_steps = divmod(c.pending_steps + n_steps, cfg.learner.update_every)
                if self.buffer.can_sample(cfg.learner.batch_size):
                    for _ in range(phases):
                        stats = self._train_phase()
                c.recent_returns, c.recent_wins = list(recent), list(recent_wins)
                if c.t_env - c.last_log >= cfg.log_interval and recent:
                    row = {"train/return_mean": float(np.mean(recent)), "train/epsilon": eps, "episodes": c.episodes}
                    if recent_wins:
                        row["train/win_rate"] = float(np.mean(recent_wins))
                    row.update({f"learner/{k}": v for k, v in stats.items()})
                    row["learner/updates"] = self.learner.n_updates
                    logger.log(c.t_env, row)
                    bar.set_postfix(ret=f"{row['train/return_mean']:.3g}", eps=f"{eps:.2f}")
                    c.last_log = c.t_env
                if cfg.eval.interval and c.t_env - c.last_eval >= cfg.eval.interval:
                    logger.log(c.t_env, self._eval_row(cfg.eval.episodes)[0])
                    c.last_eval = c.t_env
                if c.t_env - c.last_checkpoint >= cfg.checkpoint_interval:
                    self.save()
            row, returns = self._eval_row(cfg.eval.episodes)
            logger.log(c.t_env, row)
            self.save()
        finally:
            bar.close()
            logger.close()
        summary = {
            "run_dir": str(self.run_dir),
            "t_env": c.t_env,
            "episodes": c.episodes,
            "updates": self.learner.n_updates,
            "eval_return_mean": float(np.mean(returns)),
            "seconds": time.perf_counter() - start,
        }
        if "eval/win_rate" in row:
            summary["eval_win_rate"] = row["eval/win_rate"]
        return summary

    def _logged_final_eval(self) -> dict[str, float] | None:
        """The eval row that progress.csv holds at the checkpoint's step (the run's final evaluation), or None."""
        path = self.run_dir / PROGRESS
        if not path.is_file():
            return None
        step = str(self.counters.t_env)
        row: dict[str, float] = {}
        with path.open(newline="") as fh:
            for r in csv.reader(fh):
                if len(r) == 3 and r[0] == step and r[1].startswith("eval/"):
                    row[r[1]] = float(r[2])
        return row if "eval/return_mean" in row else None

    def _eval_row(self, episodes: int) -> tuple[dict[str, float], list[float]]:
        """The log row of a greedy evaluation (mean return, and win rate where defined) and its returns."""
        returns, won = self.evaluate(episodes)
        row = {"eval/return_mean": float(np.mean(returns))}
        if won is not None:
            row["eval/win_rate"] = float(np.mean(won))
        return row, returns


# ===== evaluation =================================================================================
def robust_optimality_tolerance(v_star: np.ndarray) -> float:
    """The tolerance of the robust-optimality check: 0.01 * max(1, max_s |V*_rob(s)|)."""
    return 0.01 * max(1.0, float(np.max(np.abs(v_star))))


@torch.no_grad()
def decentralised_greedy_policy(controller: AgentController | WindowController, env: TabularEnv) -> np.ndarray:
    """(S, N) int array: in each state, each agent's argmax of its own utility given its observation there.

    Agents with memory (GRU, last action, MLP history) are queried at the start of an episode: zero
    hidden state and no previous action.
    """
    S = env.game.n_states
    device = next(controller.parameters()).device
    obs = torch.as_tensor(np.stack([env.observations_of(s) for s in range(S)]), device=device)
    last = torch.full((S, env.n_agents), -1, dtype=torch.int64, device=device)
    q, _ = controller.act(obs, last, controller.init_memory(S))
    avail = torch.as_tensor(np.stack([env.avail_actions_of(s) for s in range(S)]), device=device)
    return masked_argmax(q, avail).cpu().numpy().astype(np.int64)


def value_set(cfg: RunConfig, set_name: str | None = None, rho: float | None = None) -> tuple[UncertaintySet, str]:
    """The uncertainty set for exact values: explicit > eval config > the run's target > nominal (with a note)."""
    if set_name is not None:
        if rho is None:
            raise ConfigError(f"--set {set_name} needs --rho")
        return make_set(set_name, rho), f"values under the requested set {set_name}(rho={rho:g})"
    if cfg.eval.set is not None:
        assert cfg.eval.rho is not None
        return make_set(cfg.eval.set, cfg.eval.rho), f"values under the run's eval set {cfg.eval.set}({cfg.eval.rho:g})"
    t = cfg.target
    if t.kind != "none":
        uset = make_set(t.set, t.radius)
        return uset, f"values under the run's target set {uset}"
    return make_set("contamination", 0.0), (
        "target kind 'none' and no eval set configured: "
        "robust_value and optimal_robust_value are NOMINAL values (rho=0)"
    )


def tabular_report(controller: AgentController, env: TabularEnv, uset: UncertaintySet) -> dict[str, Any]:
    """The decentralised greedy policy and its exact robust / nominal values next to V*_rob (reference solver)."""
    game = env.game
    policy = decentralised_greedy_policy(controller, env)
    v_pi = policy_evaluation(game, uset, policy).V
    v_star = value_iteration(game, uset).V
    tol = robust_optimality_tolerance(v_star)
    return {
        "policy": policy.tolist(),
        "robust_value": v_pi.tolist(),
        "optimal_robust_value": v_star.tolist(),
        "nominal_value": evaluate_under_kernel(game, policy).tolist(),
        "robust_optimal": bool(np.all(v_pi >= v_star - tol)),
        "robust_optimality_tolerance": tol,
        "value_set": {"set": uset.name, "rho": uset.rho},
    }


def load_run(run_dir: Path, device: str | None = None) -> tuple[Trainer, dict[str, Any]]:
    """A Trainer for a finished or killed run, with its last checkpoint loaded; also returns the raw checkpoint."""
    run_dir = Path(run_dir)
    if not (run_dir / CONFIG).is_file():
        raise CheckpointError(f"{str(run_dir)!r} is not a run directory: it has no {CONFIG}")
    data = load_yaml(run_dir / CONFIG)
    if device is not None:
        data.setdefault("learner", {})["device"] = device
    cfg = build_config(data)
    trainer = Trainer(cfg, run_dir, training=False)
    trainer.load()
    return trainer, {"t_env": trainer.counters.t_env, "updates": trainer.learner.n_updates}


def returns_summary(
    run_dir: Path, info: dict[str, Any], returns: list[float], won: list[bool] | None
) -> dict[str, Any]:
    """What ``drigm evaluate`` reports of greedy episodes: the run, its counters, the returns with their mean and
    95% t-interval, and where the env reports wins the win rate with its interval."""
    mean, lo, hi = mean_ci95(returns)
    out: dict[str, Any] = {
        "run": str(run_dir),
        "t_env": info["t_env"],
        "updates": info["updates"],
        "episodes": len(returns),
        "mean_return": mean,
        "ci95": [lo, hi],
        "returns": returns,
    }
    if won is not None:
        w_mean, w_lo, w_hi = mean_ci95([float(w) for w in won])
        out.update(win_rate=w_mean, win_rate_ci95=[w_lo, w_hi], won=won)
    return out


def evaluate_run(
    run_dir: Path,
    episodes: int,
    set_name: str | None = None,
    rho: float | None = None,
    device: str | None = None,
) -> dict[str, Any]:
    """Greedy evaluation of a run's last checkpoint: returns, their 95% CI and, on tabular games, exact values."""
    if episodes < 1:
        raise ConfigError(f"--episodes={episodes} must be >= 1")
    trainer, info = load_run(Path(run_dir), device)
    returns, won = trainer.evaluate(episodes)
    out = returns_summary(run_dir, info, returns, won)
    if isinstance(trainer.env, TabularEnv):
        uset, note = value_set(trainer.cfg, set_name, rho)
        out.update(tabular_report(trainer.learner.controller, trainer.env, uset))
        out["value_note"] = note
    elif set_name is not None:
        raise ConfigError(f"--set/--rho need a tabular environment; {trainer.cfg.env.name!r} is not one")
    return out


# ===== demo =======================================================================================
DEMO_GAME = "robust_vs_nominal"
DEMO_SET = ("tv", 0.2)
DEMO_RUNS: tuple[tuple[str, str, dict[str, Any]], ...] = (
    ("nominal", "non-robust QMIX", {"target": {"kind": "none"}}),
    ("robust_tv", "robust QMIX, exact TV rho=0.2", {"target": {"kind": "exact", "set": "tv", "rho": 0.2}}),
)


def demo(out: Path = Path("runs/demo"), seed: int = 0, progress: bool = True) -> bool:
    """Train non-robust and robust QMIX on robust_vs_nominal and print their exact values next to V*_rob.

    Returns True when the demonstration holds: the robust policy is robust-optimal and the nominal one is not.
    """
    import shutil

    from drigm.config import deep_merge, preset
    from reference.bellman import nominal_value_iteration

    start = time.perf_counter()
    uset = make_set(*DEMO_SET)
    print(
        f"drigm demo: QMIX on tabular:{DEMO_GAME} (2 agents x 2 actions, 4 states). In state s0 the joint action "
        "(0,0) is safe and (1,1) risky:\nnominally (1,1) is optimal, under TV(rho=0.2) model uncertainty (0,0) is."
    )
    rows = []
    for tag, label, extra in DEMO_RUNS:
        run_dir = Path(out) / tag
        if (run_dir / CONFIG).is_file():
            shutil.rmtree(run_dir)  # a previous demo's run: start afresh
        data = deep_merge(
            preset("tabular"),
            {
                **extra,
                "env": {"name": f"tabular:{DEMO_GAME}"},
                "mixer": {"name": "qmix"},
                "eval": {"set": DEMO_SET[0], "rho": DEMO_SET[1]},
                "seed": seed,
                "out": str(run_dir),
                "progress": progress,
            },
        )
        cfg = build_config(data)
        print(f"\n[{label}] training for {cfg.steps} environment steps -> {run_dir}", flush=True)
        trainer = Trainer(cfg, run_dir)
        trainer.train()
        assert isinstance(trainer.env, TabularEnv)
        rows.append({"label": label, **tabular_report(trainer.learner.controller, trainer.env, uset)})
        game = trainer.env.game
    nominal = nominal_value_iteration(game)
    print(f"\nExact values from the reference solver under {uset}; robust-optimal = within 1% of V*_rob in every state")
    header = (
        f"{'policy':32s} {'a(s0)':6s} {'V^pi_rob(s0)':>12s} {'V*_rob(s0)':>11s} {'V^pi_nom(s0)':>12s}  robust-optimal"
    )
    print(header)
    print("-" * len(header))
    for r in rows:
        a0 = "(" + ",".join(map(str, r["policy"][0])) + ")"
        print(
            f"{r['label']:32s} {a0:6s} {r['robust_value'][0]:12.3f} {r['optimal_robust_value'][0]:11.3f} "
            f"{r['nominal_value'][0]:12.3f}  {'yes' if r['robust_optimal'] else 'no'}"
        )
    a_nom = "(" + ",".join(map(str, nominal.greedy[0])) + ")"
    print(f"(nominal optimum: V*_nom(s0) = {nominal.V[0]:.3f} with {a_nom})")
    holds = rows[1]["robust_optimal"] and not rows[0]["robust_optimal"]
    verdict = (
        "as expected: the robust policy is robust-optimal, the nominal one is not"
        if holds
        else "UNEXPECTED: the demonstration did not hold on this seed"
    )
    print(f"\n{verdict} ({time.perf_counter() - start:.0f} s; run dirs under {out})")
    return holds


def train_job(cfg: RunConfig, run_dir: Path) -> dict[str, Any]:
    """Train `cfg` in `run_dir` to completion (resuming a checkpoint left by a killed run) and write TRAIN_DONE;
    idempotent, and file-locked so that concurrent sweeps never train the same run twice."""
    from drigm.results_store import write_json

    run_dir.mkdir(parents=True, exist_ok=True)
    with file_lock(run_dir / ".lock"):
        done = run_dir / TRAIN_DONE
        if done.is_file():
            try:
                summary = json.loads(done.read_text())
                if summary.get("t_env", -1) >= cfg.steps:
                    return summary
            except (json.JSONDecodeError, AttributeError):
                pass
        resume = (run_dir / CHECKPOINT).is_file()
        summary = Trainer(cfg, run_dir).train(resume=resume)
        summary["resumed"] = resume
        write_json(done, summary)
        return summary
