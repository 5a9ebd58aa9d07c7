"""Wall and CPU time per training episode on building: robust QMIX (exact TV) under two update schedules.

Both schedules make the same number of Q updates and auxiliary (dual eta) steps per episode (144 each per
288-step day):

- per-step: one training phase every 2 env steps, each 1 eta step then 1 Q update (the non-TV paper schedule);
- paper TV: one phase every 8 env steps, 4 eta steps on one batch first, then 4 Q updates (the paper's TV schedule,
  as ``experiments/paper_tv_schedule.yaml`` and the building protocols' ``set_overrides.tv``).

The run config is the building-seasonal protocol's full-scale exact-TV QMIX job (MLP over an 8-step history,
hidden 64, RMSprop), with a smaller batch (``--batch``, default 8 episodes; the paper's 64 is ~8x slower per
update on CPU for both schedules alike) so the benchmark fits in minutes. The replay buffer is filled with
``--warmup`` episodes before timing; each schedule is timed over ``--episodes`` episodes, the two alternating
``--repeats`` times (each timed span also holds one greedy evaluation episode and one checkpoint save,
the same for both). CPU time is the process's (the machine is shared, so wall time is inflated by others' load).
"""

from __future__ import annotations

import argparse
import platform
import shutil
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from drigm.config import RunConfig
from drigm.protocol import Job, load_protocol
from drigm.run import Trainer


def schedules(batch: int, episodes: int) -> dict[str, RunConfig]:
    """The two configs: the protocol's exact-TV QMIX job with the per-step and the paper TV schedule."""
    proto = load_protocol("building-seasonal", "full")
    cfg = proto.job_config(Job("qmix", "exact", "tv", proto.rho_of("tv", "qmix"), 0))
    cfg = replace(
        cfg,
        learner=replace(cfg.learner, batch_size=batch, buffer_size=max(batch, episodes)),
        progress=False,
        tensorboard=False,
        checkpoint_buffer=True,
    )
    per_step = replace(
        cfg,
        learner=replace(cfg.learner, update_every=2, q_steps=1, aux_first=False),
        target=replace(cfg.target, aux_steps=1),
    )
    paper = replace(
        cfg,
        learner=replace(cfg.learner, update_every=8, q_steps=4, aux_first=True),
        target=replace(cfg.target, aux_steps=4),
    )
    return {"per-step (every 2 steps: 1 eta + 1 Q)": per_step, "paper TV (every 8 steps: 4 eta, then 4 Q)": paper}


def time_episodes(cfg: RunConfig, warmup: int, episodes: int, workdir: Path) -> tuple[float, float, int]:
    """(wall s, CPU s, updates) per training episode, measured after `warmup` episodes filled the buffer."""
    run_dir = workdir / "run"
    shutil.rmtree(run_dir, ignore_errors=True)
    warm = replace(cfg, steps=warmup * 288, checkpoint_interval=10**9)
    trainer = Trainer(warm, run_dir)
    trainer.train()
    before = trainer.learner.n_updates
    trainer.cfg = replace(warm, steps=(warmup + episodes) * 288)
    t0, c0 = time.perf_counter(), time.process_time()
    trainer.train(resume=True)
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    return wall / episodes, cpu / episodes, (trainer.learner.n_updates - before) // episodes


def main(argv: list[str] | None = None) -> int:
    """Print a table of per-episode times and the ratio paper TV / per-step."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--episodes", type=int, default=2, help="timed episodes per schedule and repeat")
    p.add_argument("--warmup", type=int, default=8, help="episodes that fill the buffer first (>= --batch)")
    p.add_argument("--batch", type=int, default=8, help="batch size in episodes")
    p.add_argument("--repeats", type=int, default=2)
    args = p.parse_args(argv)
    if args.warmup < args.batch:
        p.error(f"--warmup {args.warmup} must be >= --batch {args.batch} so every timed episode updates")
    torch.set_num_threads(1)
    cfgs = schedules(args.batch, args.warmup + args.episodes)
    times: dict[str, list[tuple[float, float, int]]] = {k: [] for k in cfgs}
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(args.repeats):
            order = list(cfgs) if r % 2 == 0 else list(reversed(cfgs))
            for name in order:
                times[name].append(time_episodes(cfgs[name], args.warmup, args.episodes, Path(tmp)))
    print(
        f"building (OfficeSmall, Tucson), QMIX + exact TV, batch {args.batch} episodes, {args.episodes} timed episodes "
        f"x {args.repeats} repeats, torch {torch.__version__}, {platform.processor() or platform.machine()}\n"
    )
    print("| schedule | Q updates / episode | wall s / episode | CPU s / episode |")
    print("|---|---|---|---|")
    med = {}
    for name, ts in times.items():
        wall, cpu = float(np.median([t[0] for t in ts])), float(np.median([t[1] for t in ts]))
        med[name] = (wall, cpu)
        print(f"| {name} | {ts[0][2]} | {wall:.2f} | {cpu:.2f} |")
    (a, b) = med.values()
    print(f"\nratio paper TV / per-step: wall {b[0] / a[0]:.2f}x, CPU {b[1] / a[1]:.2f}x (medians over repeats)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
