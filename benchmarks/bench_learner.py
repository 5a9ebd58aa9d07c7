"""Time one learner update (QMIX) with and without the robust targets; print a markdown table.

Setting: a synthetic batch of 32 episodes x 50 steps, 6 agents with 10 actions, GRU agents (the paper's
recurrent setting) and MLP agents, hidden width 64, QMIX (mixing width 32), RMSprop, one CPU thread (the
trainer's default). Every kind runs in this one process, timed by process CPU time (so other jobs on a
shared machine do not count) in interleaved rounds (so what load remains, e.g. cache contention, affects
them alike); the ratio is the median update time of the kind over that of the non-robust update.
Required: exact contamination <= 1.10 and exact TV (including its quantile network's update) <= 1.35.

Usage: python benchmarks/bench_learner.py [--rounds R] [--updates U] [--arch gru mlp] [--readme FILE]
(--readme replaces only the "## Learner update" section of FILE, or appends it.)
"""

from __future__ import annotations

import argparse
import platform
import re
import statistics
import time
from pathlib import Path

import numpy as np
import torch

from drigm.buffer import EpisodeBuffer, marl_scheme
from drigm.config import build_config
from drigm.learner import Learner

B, T, N, A, OBS, STATE = 32, 50, 6, 10, 16, 32
KINDS = {
    "none": {"kind": "none"},
    "exact contamination": {"kind": "exact", "set": "contamination", "rho": 0.1},
    "exact tv": {"kind": "exact", "set": "tv", "rho": 0.2},
    "exact kl-penalty": {"kind": "exact", "set": "kl-penalty", "beta": 1.0},
    "paper tv": {"kind": "paper", "set": "tv", "rho": 0.2},
}
LIMITS = {"exact contamination": 1.10, "exact tv": 1.35}


def synthetic_batch(seed: int = 0) -> dict[str, torch.Tensor]:
    """A full batch of B episodes of T steps in the buffer layout (random observations, states, rewards)."""
    rng = np.random.default_rng(seed)
    buf = EpisodeBuffer(marl_scheme(N, A, OBS, STATE), capacity=B, max_seq_length=T + 1)
    for _ in range(B):
        buf.insert(
            {
                "obs": rng.normal(size=(T + 1, N, OBS)).astype(np.float32),
                "state": rng.normal(size=(T + 1, STATE)).astype(np.float32),
                "avail_actions": np.ones((T + 1, N, A), dtype=bool),
                "actions": rng.integers(0, A, size=(T + 1, N)),
                "reward": rng.normal(size=T + 1).astype(np.float32),
                "terminated": np.zeros(T + 1, dtype=bool),
            },
            T,
        )
    return buf.sample(B, rng)


def make_learner(target: dict, arch: str = "gru") -> Learner:
    cfg = build_config(
        {
            "mixer": {"name": "qmix", "params": {"embed_dim": 32}},
            "agent": {"arch": arch, "hidden": 64},
            "learner": {"optimizer": "rmsprop", "lr": 5e-4, "batch_size": B},
            "target": target,
        }
    )
    torch.manual_seed(0)
    return Learner(cfg, N, A, OBS, STATE, gamma=0.99, device=torch.device("cpu"))


def time_updates(learner: Learner, batch: dict[str, torch.Tensor], n: int) -> float:
    """CPU seconds per update (process time, one thread), averaged over n updates."""
    start = time.process_time()
    for _ in range(n):
        learner.update(batch)
    return (time.process_time() - start) / n


def measure(arch: str, rounds: int, updates: int, batch: dict[str, torch.Tensor]) -> dict[str, float]:
    """Median CPU seconds per update of every target kind, for one agent body, in interleaved rounds."""
    learners = {name: make_learner(t, arch) for name, t in KINDS.items()}
    for learner in learners.values():  # warm-up: allocator, autograd graph caches
        time_updates(learner, batch, 2)
    times: dict[str, list[float]] = {name: [] for name in KINDS}
    for _ in range(rounds):
        for name, learner in learners.items():
            times[name].append(time_updates(learner, batch, updates))
    return {name: statistics.median(ts) for name, ts in times.items()}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rounds", type=int, default=7, help="interleaved timing rounds")
    p.add_argument("--updates", type=int, default=5, help="updates per kind per round")
    p.add_argument("--arch", nargs="+", default=["gru", "mlp"], choices=["gru", "mlp"], help="agent bodies to time")
    p.add_argument("--readme", type=Path, help="write the table into this README's 'Learner update' section")
    args = p.parse_args()
    torch.set_num_threads(1)
    batch = synthetic_batch()
    lines = [
        f"QMIX (mixing width 32), agents with hidden width 64, {N} agents x {A} actions, batch {B} episodes x {T} "
        f"steps, synthetic data, RMSprop; CPU, 1 thread ({platform.processor() or platform.machine()}), torch "
        f"{torch.__version__}; process CPU time, median of {args.rounds} interleaved rounds of {args.updates} updates.",
        "",
        "| agents | target | CPU ms / update | updates / CPU s | ratio to non-robust | required |",
        "|---|---|---|---|---|---|",
    ]
    failed = []
    for arch in args.arch:
        med = measure(arch, args.rounds, args.updates, batch)
        for name in KINDS:
            ratio = med[name] / med["none"]
            limit = LIMITS.get(name)
            if limit and ratio > limit:
                failed.append(f"{arch}/{name}")
            req = f"<= {limit:.2f}" if limit else ""
            lines.append(
                f"| {arch.upper()} | {name} | {1e3 * med[name]:.1f} | {1 / med[name]:.1f} | {ratio:.3f} | {req} |"
            )
    table = "\n".join(lines)
    print(table)
    if args.readme is not None:
        write_section(args.readme, "Learner update", table)
    if failed:
        raise SystemExit(f"ratio above the requirement for: {', '.join(failed)}")


def write_section(readme: Path, heading: str, body: str) -> None:
    """Replace the '## heading' section of `readme` (up to the next '## ') with `body`, or append it."""
    text = readme.read_text() if readme.exists() else "# Benchmarks\n"
    section = f"## {heading}\n\nCommand: `python benchmarks/bench_learner.py`\n\n{body}\n"
    pattern = re.compile(rf"^## {re.escape(heading)}\n.*?(?=^## |\Z)", re.S | re.M)
    if pattern.search(text):
        text = pattern.sub(lambda _: section + "\n", text, count=1).rstrip("\n") + "\n"
    else:
        text = text.rstrip("\n") + "\n\n" + section
    readme.write_text(text)


if __name__ == "__main__":
    main()
