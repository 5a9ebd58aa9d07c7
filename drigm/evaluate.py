"""Score a trained run on any environment, without a protocol: ``drigm evaluate RUN --env SPEC [--days A:B]``.

The test environment starts from the run's own training environment config (so adapter settings that shape the
policy's inputs and actions, such as the building's ``n_levels``, carry over), with its registry name replaced by
``--env`` and its day pool by ``--days``; an environment of another family (``tabular:`` for a ``building:``
run) starts from its own defaults instead. Greedy episodes are played with env seeds 0..N-1; for the SustainGym
adapters seed k plays ``days[k % len(days)]``, so the default N (the pool's size) plays every day of the pool once.
A policy whose agents, actions or observations do not fit the environment is refused by name, not run.
``--days`` also takes a comma-separated list of days (``26,25,159``; duplicates kept, each played as listed).

``drigm evaluate --paper-agents DIR [--env SPEC] [--days ...] [--score-from PROTOCOL]``: the seed paper's released
agent networks (a run directory of its code, or its ``network_parameter`` folder; :mod:`drigm.paper_checkpoint`)
scored the same way, on ``--env`` (default ``building:Tucson``, the paper's training climate) with its defaults.
"""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path
from typing import Any

from drigm.config import ConfigError
from drigm.protocol import Score, TestEnv, load_protocol

PAPER_AGENTS_ENV = "building:Tucson"
"""The environment ``--paper-agents`` plays when no ``--env`` is given (the paper's training climate)."""


def _check_episodes(episodes: int | None) -> None:
    if episodes is not None and (isinstance(episodes, bool) or not isinstance(episodes, int) or episodes < 1):
        raise ConfigError(f"--episodes={episodes!r} must be an integer >= 1")


def _check_env(env: str | None) -> None:
    if env is not None and not env.strip():
        raise ConfigError(f"--env {env!r}: give an environment spec, e.g. building:Seattle or tabular:matrix_game")


def _score_of(score_protocol: str | None, env_name: str | None = None) -> Score | None:
    """The normalised score of `score_protocol`; ConfigError when it defines none, or when `env_name` is of
    another environment family than the protocol's (a building score of a tabular return means nothing)."""
    if score_protocol is None:
        return None
    proto = load_protocol(score_protocol)
    score = proto.score
    if score is None:
        raise ConfigError(f"--score-from {score_protocol!r}: that protocol defines no normalised score")
    family = str((proto.run.get("env") or {}).get("name", "")).split(":")[0]
    if env_name is not None and family and env_name.split(":")[0] != family:
        raise ConfigError(
            f"--score-from {score_protocol!r} scores {family} returns; this evaluation plays {env_name!r}"
        )
    return score


def days_arg(days: str) -> str | list[int]:
    """A ``--days`` value: ``A:B`` or ``D`` as given (the env parses it), or a comma-separated list of days."""
    if "," not in days:
        return days
    try:
        return [int(d) for d in days.split(",") if d.strip()]
    except ValueError:
        raise ConfigError(f"--days={days!r}: a list must be comma-separated integer days, e.g. 26,25,159") from None


def _with_scores(out: dict[str, Any], result: dict[str, Any], score: Score | None) -> dict[str, Any]:
    from drigm.run import mean_ci95

    if "score" in result:
        s_mean, s_lo, s_hi = mean_ci95(result["score"])
        out.update(mean_score=s_mean, score_ci95=[s_lo, s_hi], score_label=score.label if score else None)
    return out


def evaluate_anywhere(
    run_dir: Path,
    env: str | None = None,
    days: str | None = None,
    episodes: int | None = None,
    device: str | None = None,
    score_protocol: str | None = None,
    env_kwargs: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Greedy returns of a run's last checkpoint on `env` (default: its training env) and `days`.

    Returns the test env config, the env seeds played, per-episode returns (and normalised scores with
    `score_protocol`'s score, won flags where the env reports them) and the mean with a 95% t-interval.
    `episodes` None plays every day of the pool once (or 20 episodes when the env has no day pool).
    """
    from drigm.evaluation import evaluate_on, make_test_env
    from drigm.run import load_run, returns_summary

    _check_episodes(episodes)
    _check_env(env)
    trainer, info = load_run(Path(run_dir), device)
    try:
        score = _score_of(score_protocol, env or trainer.cfg.env.name)
        base = asdict(trainer.cfg.env)
        name = env or base["name"]
        same_family = name.split(":")[0] == base["name"].split(":")[0]
        kwargs = dict(base.get("kwargs") or {}) if same_family else {}
        kwargs.update(env_kwargs or {})
        if days is not None:
            kwargs["days"] = days_arg(days)
        env_data = {"name": name, "episode_limit": base.get("episode_limit"), "kwargs": kwargs}
        if episodes is None:
            probe = make_test_env(env_data)
            try:
                pool = getattr(probe, "days", None)
                episodes = len(pool) if pool else 20
            finally:
                probe.close()
        seeds = list(range(episodes))
        result = evaluate_on(trainer, TestEnv(env_data["name"], env_data), seeds, score)
    finally:
        trainer.env.close()
        trainer.eval_env.close()
    out = {**result, **returns_summary(run_dir, info, result["returns"], result.get("won"))}
    return _with_scores(out, result, score)


def evaluate_paper_agents(
    directory: Path,
    env: str | None = None,
    days: str | None = None,
    episodes: int | None = None,
    device: str | None = None,
    score_protocol: str | None = None,
    env_kwargs: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Greedy returns of the seed paper's released agent networks in `directory` on `env` and `days`.

    The networks are loaded into a drigm WindowController (:func:`drigm.paper_checkpoint.load_paper_agents`, as
    many agents as the env has, their sizes checked against it) and played by drigm's EpisodeRunner exactly as
    :func:`evaluate_anywhere` plays a run: env seeds 0..N-1, N defaulting to one episode per day of the pool.
    The result has the keys of :func:`evaluate_anywhere` (``t_env``/``updates`` None) plus ``paper_agents``.
    """
    import torch

    from drigm.evaluation import evaluate_on, make_test_env
    from drigm.learner import resolve_device
    from drigm.paper_checkpoint import load_paper_agents, paper_agents_summary
    from drigm.run import returns_summary

    _check_episodes(episodes)
    _check_env(env)
    name = env or PAPER_AGENTS_ENV
    score = _score_of(score_protocol, name)
    kwargs = dict(env_kwargs or {})
    if days is not None:
        kwargs["days"] = days_arg(days)
    env_data: dict[str, Any] = {"name": name, "episode_limit": None, "kwargs": kwargs}
    probe = make_test_env(env_data)
    try:
        n_agents, n_actions, obs_dim = probe.n_agents, probe.n_actions, probe.obs_dim
        pool = getattr(probe, "days", None)
    finally:
        probe.close()
    if episodes is None:
        episodes = len(pool) if pool else 20
    agents = load_paper_agents(
        directory, n_agents, obs_dim=obs_dim, n_actions=n_actions, device=resolve_device(device or "cpu")
    )
    threads = torch.get_num_threads()
    try:
        # one small forward pass per step: extra intra-op threads only contend (7x slower on a busy 2-core box)
        torch.set_num_threads(1)
        result = evaluate_on(agents, TestEnv(name, env_data), list(range(episodes)), score)
    finally:
        torch.set_num_threads(threads)
    info = {"t_env": None, "updates": None}
    out = {**result, **returns_summary(directory, info, result["returns"], result.get("won"))}
    out["paper_agents"] = paper_agents_summary(agents)
    return _with_scores(out, result, score)
