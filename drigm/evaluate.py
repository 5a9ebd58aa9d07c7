"""Score a trained run on any environment, without a protocol: ``drigm evaluate RUN --env SPEC [--days A:B]``.

The test environment starts from the run's own training environment config (so adapter settings that shape the
policy's inputs and actions, such as the building's ``n_levels``, carry over), with its registry name replaced by
``--env`` and its day pool by ``--days``; an environment of another family (``tabular:`` for a ``building:``
run) starts from its own defaults instead. Greedy episodes are played with env seeds 0..N-1; for the SustainGym
adapters seed k plays ``days[k % len(days)]``, so the default N (the pool's size) plays every day of the pool once.
A policy whose agents, actions or observations do not fit the environment is refused by name, not run.
"""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path
from typing import Any

from drigm.config import ConfigError
from drigm.protocol import Score, TestEnv, load_protocol


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
    from drigm.run import load_run, mean_ci95, returns_summary
    from drigm.sweep import evaluate_on, make_test_env

    if episodes is not None and (isinstance(episodes, bool) or not isinstance(episodes, int) or episodes < 1):
        raise ConfigError(f"--episodes={episodes!r} must be an integer >= 1")
    score: Score | None = None
    if score_protocol is not None:
        score = load_protocol(score_protocol).score
        if score is None:
            raise ConfigError(f"--score-from {score_protocol!r}: that protocol defines no normalised score")
    trainer, info = load_run(Path(run_dir), device)
    try:
        base = asdict(trainer.cfg.env)
        name = env or base["name"]
        same_family = name.split(":")[0] == base["name"].split(":")[0]
        kwargs = dict(base.get("kwargs") or {}) if same_family else {}
        kwargs.update(env_kwargs or {})
        if days is not None:
            kwargs["days"] = days
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
    if "score" in result:
        s_mean, s_lo, s_hi = mean_ci95(result["score"])
        out.update(mean_score=s_mean, score_ci95=[s_lo, s_hi], score_label=score.label if score else None)
    return out
