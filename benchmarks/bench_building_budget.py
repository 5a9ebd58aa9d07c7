"""What a full-budget building run costs on one CPU core: the paper preset with the LSTM- and the MLP-window agent.

A full-budget run of the building protocols is 600 episodes of 288 steps (172,800 env steps) with one update
every 2 env steps (86,400 updates of 64 transitions; TV runs: every 8 steps 4 dual steps then 4 Q updates).
For each agent network this script trains the protocol's own job config (``building-paper-seasonal``, preset
``paper`` = LSTM window, ``paper-mlp`` = MLP window) for ``--warmup`` episodes, then times ``--episodes`` more
(collection + all their updates), and extrapolates to 600 episodes. It prints wall and process CPU time per
episode, updates per second and the full-run estimate beside the targets of the full-budget issue (MLP <= 10
min, LSTM <= 30 min on one core), as ratios. It also times a few updates of the earlier episode replay at
the same batch size (64 *episodes*, the old reading of the paper) to show the ratio per update.

Run: ``python benchmarks/bench_building_budget.py`` (about 5 minutes on a quiet 2-core machine; torch at one
thread). CPU time is the process's; on a shared machine wall time is inflated by others' load.
"""

from __future__ import annotations

import argparse
import platform
import shutil
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import torch

from drigm.config import RunConfig
from drigm.protocol import Job, load_protocol
from drigm.run import Trainer

FULL_EPISODES = 600
TARGET_MINUTES = {"mlp": 10.0, "lstm": 30.0}


def job_config(preset: str, job: Job) -> RunConfig:
    """The full-scale config of `job` in building-paper-seasonal at `preset` (no progress bar, no checkpoints)."""
    proto = load_protocol("building-paper-seasonal", "full", preset=preset)
    cfg = proto.job_config(job)
    return replace(cfg, progress=False, tensorboard=False, checkpoint_interval=10**9)


def time_run(cfg: RunConfig, warmup: int, episodes: int, workdir: Path) -> dict[str, float]:
    """Train `warmup` episodes, then time `episodes` more; per-episode wall/CPU seconds and updates per second."""
    run_dir = workdir / "run"
    shutil.rmtree(run_dir, ignore_errors=True)
    tr = Trainer(replace(cfg, steps=288 * warmup, out=str(run_dir)), run_dir)
    tr.train()
    tr.save()
    c0 = time.process_time()
    tr.load()  # what train(resume=True) does first: timed alone and subtracted
    load_cpu = time.process_time() - c0
    tr.cfg = replace(tr.cfg, steps=288 * (warmup + episodes))
    u0 = tr.learner.n_updates
    w0, c0 = time.perf_counter(), time.process_time()
    tr.train(resume=True)
    wall, cpu = time.perf_counter() - w0 - load_cpu, time.process_time() - c0 - load_cpu
    updates = tr.learner.n_updates - u0
    return {
        "wall_ep": wall / episodes,
        "cpu_ep": cpu / episodes,
        "updates_ep": updates / episodes,
        "ups": updates / cpu,
    }


def profile_updates(cfg: RunConfig, warmup: int, updates: int, workdir: Path) -> str:
    """torch.profiler's table (top ops by self CPU time) over `updates` updates after `warmup` episodes."""
    from torch.profiler import ProfilerActivity, profile

    run_dir = workdir / "profile"
    shutil.rmtree(run_dir, ignore_errors=True)
    tr = Trainer(replace(cfg, steps=288 * warmup, out=str(run_dir)), run_dir)
    tr.train()
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(updates):
            tr._train_phase()
    return prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=15)


def time_episode_updates(batch: int, updates: int, workdir: Path) -> float:
    """CPU seconds per update of the earlier episode replay (MLP over 8 steps, `batch` whole episodes)."""
    cfg = job_config("drigm", Job("qmix", "none", None, None, 0))
    cfg = replace(
        cfg,
        learner=replace(cfg.learner, replay="episodes", batch_size=batch, buffer_size=batch),
        steps=288 * batch,
        explore=replace(cfg.explore, eps_anneal_steps=1),
    )
    run_dir = workdir / "episodes"
    shutil.rmtree(run_dir, ignore_errors=True)
    tr = Trainer(replace(cfg, out=str(run_dir), learner=replace(cfg.learner, update_every=10**9)), run_dir)
    tr.train()  # fills the buffer, no updates
    tr._train_phase()  # warm-up
    c0 = time.process_time()
    for _ in range(updates):
        tr._train_phase()
    return (time.process_time() - c0) / updates


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--warmup", type=int, default=2, help="episodes trained before timing")
    p.add_argument("--episodes", type=int, default=3, help="timed episodes per configuration")
    p.add_argument("--episode-batch-updates", type=int, default=3, help="timed updates of the 64-episode replay")
    p.add_argument("--profile", action="store_true", help="only print where an update's time goes (50 updates each)")
    args = p.parse_args()
    torch.set_num_threads(1)
    if args.profile:
        with tempfile.TemporaryDirectory() as tmp:
            for preset in ("paper-mlp", "paper"):
                cfg = job_config(preset, Job("qmix", "none", None, None, 0))
                print(f"\n## {preset} ({cfg.agent.arch} agent), QMIX, 50 updates\n")
                print(profile_updates(cfg, args.warmup, 50, Path(tmp)))
        return
    print(f"torch {torch.__version__}, 1 thread, {platform.processor() or platform.machine()}")
    cases = [
        ("mlp", "paper-mlp", Job("qmix", "none", None, None, 0)),
        ("mlp", "paper-mlp", Job("qmix", "paper", "tv", 0.2, 0)),
        ("lstm", "paper", Job("qmix", "none", None, None, 0)),
        ("lstm", "paper", Job("qmix", "paper", "tv", 0.2, 0)),
    ]
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for arch, preset, job in cases:
            r = time_run(job_config(preset, job), args.warmup, args.episodes, Path(tmp))
            full_min = r["cpu_ep"] * FULL_EPISODES / 60
            rows.append((arch, preset, job.method, r, full_min))
            print(f"  {arch} {job.method}: {r['cpu_ep']:.2f} CPU s/episode", flush=True)
        t_transition = min(r["cpu_ep"] / r["updates_ep"] for a, _, m, r, _ in rows if a == "mlp" and m == "qmix-none")
        t_episode = time_episode_updates(64, args.episode_batch_updates, Path(tmp))
    print(
        "\n| agent | preset | method | wall s / episode | CPU s / episode | updates / episode | updates / CPU s "
        "| full run (600 episodes), CPU min | target | ratio to target |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|")
    for arch, preset, method, r, full_min in rows:
        tgt = TARGET_MINUTES[arch]
        print(
            f"| {arch} | {preset} | {method} | {r['wall_ep']:.2f} | {r['cpu_ep']:.2f} | {r['updates_ep']:.0f} | "
            f"{r['ups']:.0f} | {full_min:.1f} | {tgt:.0f} | {full_min / tgt:.2f} |"
        )
    print(
        f"\nOne update of 64 transitions (MLP window, incl. its share of collection): {1e3 * t_transition:.1f} ms CPU; "
        f"one update of 64 whole episodes (the earlier replay): {1e3 * t_episode:.0f} ms CPU; "
        f"ratio {t_episode / t_transition:.0f}x."
    )


if __name__ == "__main__":
    main()
