"""Cost of one robust-target step (update_aux + forward) per kind/set, against kind "none".

Run: ``python benchmarks/bench_targets.py [--device cuda] [--threads N]``. Prints a markdown table.

Batch: 32 episodes x 50 steps, 6 agents x 10 actions (the issue's QMIX setting), with padding (episode lengths
30..50) and terminal steps. Kinds are timed in interleaved rounds in one process; each cell is the median over
rounds. The ratio here is of the target step alone; the learner update's end-to-end ratio (budget: 1.10x for
contamination, 1.35x for tv) is measured by the learner's benchmark, and is roughly
1 + (added ms here) / (non-robust learner update ms).
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

import torch

from drigm.targets import RobustTarget, TargetConfig, TargetInputs, build_target

CASES: list[tuple[str, dict[str, object]]] = [
    ("none", {"kind": "none"}),
    ("exact contamination (batch m_hat)", {"kind": "exact", "set": "contamination", "rho": 0.1}),
    ("exact contamination (running m_hat)", {"kind": "exact", "set": "contamination", "rho": 0.1, "m_hat": "running"}),
    ("exact tv", {"kind": "exact", "set": "tv", "rho": 0.2}),
    ("exact kl-penalty", {"kind": "exact", "set": "kl-penalty", "beta": 1.0}),
    ("paper contamination", {"kind": "paper", "set": "contamination", "rho": 0.1}),
    ("paper tv", {"kind": "paper", "set": "tv", "rho": 0.2}),
]


def make_batch(B: int, T: int, state_dim: int, n_agents: int, n_actions: int, device: torch.device) -> TargetInputs:
    """A learner-shaped batch: (B, T) leading shape, padded episodes, some ending in termination."""
    gen = torch.Generator().manual_seed(0)
    lengths = torch.randint(T - 20, T + 1, (B,), generator=gen)
    steps = torch.arange(T)[None, :]
    mask = steps < lengths[:, None]
    ends = torch.rand(B, generator=gen) < 0.5
    terminated = (steps == lengths[:, None] - 1) & ends[:, None]
    acts = torch.randint(n_actions, (B, T, n_agents), generator=gen)
    onehot = torch.nn.functional.one_hot(acts, n_actions).reshape(B, T, n_agents * n_actions).float()
    batch = TargetInputs(
        reward=torch.randn(B, T, generator=gen),
        next_value=torch.randn(B, T, generator=gen) * 5.0 - 20.0,
        terminated=terminated,
        mask=mask.float(),
        state=torch.randn(B, T, state_dim, generator=gen),
        actions_onehot=onehot,
    )
    return TargetInputs(*(getattr(batch, f).to(device) for f in TargetInputs.__dataclass_fields__))


def step(target: RobustTarget, batch: TargetInputs) -> torch.Tensor:
    """What the learner does per update: train the auxiliaries (no-op for aux-free kinds), then compute y."""
    target.update_aux(batch)
    return target(batch)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=0, help="torch intra-op threads (0: torch default)")
    ap.add_argument("--state-dim", type=int, default=48)
    ap.add_argument("--rounds", type=int, default=30)
    ap.add_argument("--iters", type=int, default=20, help="steps per timed block")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    torch.manual_seed(0)
    B, T, N, A = 32, 50, 6, 10
    batch = make_batch(B, T, args.state_dim, N, A, device)
    targets = {
        name: build_target(TargetConfig(**kw), args.state_dim, N, A, 0.99).to(device)  # type: ignore[arg-type]
        for name, kw in CASES
    }

    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize()

    for target in targets.values():  # warm-up
        for _ in range(10):
            step(target, batch)
    sync()
    times: dict[str, list[float]] = {name: [] for name in targets}
    for _ in range(args.rounds):
        for name, target in targets.items():
            sync()
            t0 = time.perf_counter()
            for _ in range(args.iters):
                step(target, batch)
            sync()
            times[name].append((time.perf_counter() - t0) / args.iters * 1e3)
    med = {name: statistics.median(ts) for name, ts in times.items()}
    base = med["none"]
    print(
        f"Target step (update_aux + forward), batch {B}x{T}, {N} agents x {A} actions, state_dim {args.state_dim}, "
        f"device {device}, torch {torch.__version__}, {torch.get_num_threads()} threads; "
        f"median of {args.rounds} rounds x {args.iters} steps; load average {os.getloadavg()[0]:.1f} "
        f"on {os.cpu_count()} CPUs (a load above the CPU count inflates the aux-net rows, most with >1 thread)\n"
    )
    print("| kind / set | ms per step | added ms vs none | ratio vs none |")
    print("|---|---:|---:|---:|")
    for name in targets:
        print(f"| {name} | {med[name]:.3f} | {med[name] - base:+.3f} | {med[name] / base:.2f}x |")


if __name__ == "__main__":
    main()
