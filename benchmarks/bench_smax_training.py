"""SMAX training throughput: env steps per second with and without learner updates, in one process.

The job is the ``smax-3s_vs_5z-noise`` protocol's QMIX run with the exact contamination target (rho from the
protocol) at the chosen scale (default ``reduced``: B = 16 battles through BatchedSMAX, GRU hidden 64, QMIX embed
32, one update of 32 episodes every 64 env steps). Three loops share one Trainer and alternate in short rounds
(a burst of load from other processes then hits all of them); each round runs the same number of batched steps:

* ``env``: ``BatchedSMAX.step`` with uniformly random available actions (no agents, no buffer);
* ``collect``: the trainer's batched collection (agent GRU forward, epsilon-greedy with masks, buffer inserts
  of finished battles), no updates;
* ``train``: the same collection plus the learner updates that the run's schedule (``learner.update_every``)
  calls for, i.e. what ``Trainer.train`` does per step (minus logging and checkpoints).

Steps/s come from each loop's best round (least disturbed by other jobs); the ratios are medians of the per-round
time ratios. The replay buffer is first filled with epsilon = 1 episodes (at least one batch); the timed rounds use
epsilon = ``--epsilon`` (default 0.05, the value for most of a run). It also measures the win rate and return of
the uniformly random policy on the protocol's test-episode seeds (the baseline a trained policy must beat).

Run: ``python benchmarks/bench_smax_training.py [--scale reduced] [--rounds 8] [--steps-per-round 64]
[--random-episodes 256]``.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from dataclasses import replace

import numpy as np
import torch

from drigm.protocol import Job, load_protocol, test_episode_seeds
from drigm.run import Trainer


def build_trainer(scale: str, out: str) -> Trainer:
    """The protocol's QMIX + exact contamination job at `scale`, seed 0, writing nothing outside `out`."""
    proto = load_protocol("smax-3s_vs_5z-noise", scale)
    rho = proto.rho["contamination"]["qmix"]
    cfg = proto.job_config(Job(algo="qmix", target="exact", set="contamination", rho=rho, seed=0))
    return Trainer(replace(cfg, out=out, progress=False, tensorboard=False), out)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--scale", default="reduced", choices=("full", "reduced"))
    p.add_argument("--rounds", type=int, default=8)
    p.add_argument("--steps-per-round", type=int, default=64, help="batched steps (of B battles) per round")
    p.add_argument("--epsilon", type=float, default=0.05)
    p.add_argument("--random-episodes", type=int, default=256)
    args = p.parse_args()
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as tmp:
        tr = build_trainer(args.scale, tmp)
        runner, lc = tr.batch_runner, tr.cfg.learner
        assert runner is not None and tr.eval_batch_runner is not None, "smax trains through BatchedSMAX"
        B = runner.env.batch_size
        print(
            f"smax:3s_vs_5z, {args.scale} scale: B={B} battles, QMIX exact contamination rho={tr.cfg.target.rho}, "
            f"GRU {tr.cfg.agent.hidden}, batch {lc.batch_size} episodes, one update per {lc.update_every} env steps; "
            f"torch threads {torch.get_num_threads()}, XLA_FLAGS={os.environ.get('XLA_FLAGS', '')!r}"
        )
        raw = tr.env.batched(B)  # the env-only loop's own battles (same compiled reset and step as the runner's)
        t0 = time.perf_counter()
        runner.start(tr._train_seed, 0)
        runner.step(1.0, tr.act_rng)
        ts = raw.reset(seed=1)
        raw_seeds = np.arange(B) + 10**6  # the env loop restarts ended battles from fixed seeds (same program)
        env_rng = np.random.default_rng(0)
        print(f"compile (reset + step with per-battle seeds): {time.perf_counter() - t0:.1f} s")
        warm_eps = 0
        while not tr.buffer.can_sample(lc.batch_size):
            for ep in runner.step(1.0, tr.act_rng):
                tr.buffer.insert(ep.data, ep.length)
                warm_eps += 1
        t0 = time.perf_counter()
        tr._train_phase()
        print(f"buffer warmed with {warm_eps} random episodes; first update {time.perf_counter() - t0:.2f} s")
        pending = updates = 0

        def run_env(n: int) -> None:
            nonlocal ts
            for _ in range(n):
                avail = ts.avail_actions.numpy()
                ts = raw.step(np.argmax(env_rng.random(avail.shape) * avail, axis=-1), reset_seeds=raw_seeds)

        def run_collect(n: int, train: bool) -> None:
            nonlocal pending, updates
            for _ in range(n):
                for ep in runner.step(args.epsilon, tr.act_rng):
                    tr.buffer.insert(ep.data, ep.length)
                if train:
                    phases, pending = divmod(pending + B, lc.update_every)
                    for _ in range(phases):
                        tr._train_phase()
                        updates += 1

        times: dict[str, list[float]] = {"env": [], "collect": [], "train": []}
        n = args.steps_per_round
        for _ in range(args.rounds):
            for name in times:
                t = time.perf_counter()
                if name == "env":
                    run_env(n)
                else:
                    run_collect(n, train=name == "train")
                times[name].append(time.perf_counter() - t)
        rate = {k: B * n / min(v) for k, v in times.items()}
        rows = [
            ("env: BatchedSMAX.step, random actions", "env"),
            ("collect: batched collection, no updates", "collect"),
            ("train: collection + updates (QMIX, exact contamination)", "train"),
        ]
        print(f"\n{args.rounds} interleaved rounds of {n} batched steps ({B * n} env steps); {updates} updates timed")
        print(f"{'loop':58s} {'env steps/s':>12s} {'time vs train':>14s}")
        for label, k in rows:
            ratio = statistics.median(a / b for a, b in zip(times["train"], times[k], strict=True))
            print(f"{label:58s} {rate[k]:12,.0f} {ratio:13.2f}x")
        mean_len = float(tr.buffer.lengths[: len(tr.buffer)].float().mean())
        print(f"mean episode length in the buffer: {mean_len:.1f} steps")

        if args.random_episodes:
            proto = load_protocol("smax-3s_vs_5z-noise", args.scale)
            seeds = test_episode_seeds(proto.eval_seed, args.random_episodes)
            # battles play on past episode n while the last ones finish: those episodes are dropped, any seed does
            eps = tr.eval_batch_runner.run_episodes(
                len(seeds), lambda k: seeds[k] if k < len(seeds) else k, 1.0, np.random.default_rng(0)
            )
            won = np.array([e.won for e in eps], dtype=float)
            ret = np.array([e.episode_return for e in eps])
            w_half, r_half = (1.96 * x.std(ddof=1) / np.sqrt(x.size) for x in (won, ret))
            print(
                f"\nuniform random policy on {len(seeds)} test-episode seeds (sigma 0): win rate {won.mean():.3f} "
                f"+- {w_half:.3f}, return {ret.mean():.3f} +- {r_half:.3f} (normal 95% CIs), "
                f"mean length {np.mean([e.length for e in eps]):.1f}"
            )


if __name__ == "__main__":
    main()
