"""Benchmark of the exact robust Bellman sweep in `reference` (one application of T), in one process.

Run: ``python benchmarks/bench_reference.py [--quick] [--threads N] [--reps N]``. Prints markdown tables:

1. One robust value-iteration sweep (``reference.bellman.bellman_optimality``) on
   ``random_game(200, (4, 4, 4), seed=0)`` (S = 200, 64 joint actions, a 12800 x 200 kernel) for tv,
   contamination and kl (more radii, chi2 and kl-penalty for information), against
   - cvxpy solving every (s, a) row on its own (``reference.sets.primal_support``, extrapolated from a
     timed random sample of rows), target: the sweep is at least 1000x faster;
   - the nominal sweep R + gamma P V (one matrix-vector product on the (S*A, S) kernel), in the natural
     C layout and in the best layout found (the transposed kernel), targets: at most 5x slower for tv and
     contamination, 20x for kl.
2. How the sweep time grows with S = 50 .. 800.

Every timed call gets a fresh Q (a perturbed copy), so nothing is reused across repetitions that value
iteration would not see; the per-game workspace (transposed kernel etc.) is built once, before timing,
and its cost is reported separately. Methods are timed interleaved and medians are reported. The main
measure is the CPU time of this process: BLAS runs single-threaded by default, so CPU time is the compute
time even when other jobs share the machine; wall-clock medians are printed next to it.
"""

from __future__ import annotations

import argparse
import os
import sys


def _parse() -> argparse.Namespace:
    p = argparse.ArgumentParser(description="Benchmark of the exact robust Bellman sweep in reference/.")
    p.add_argument("--quick", action="store_true", help="fewer repetitions, sizes and cvxpy rows (well under a minute)")
    p.add_argument("--threads", type=int, default=1, help="BLAS threads (default 1: a fair single-core comparison)")
    p.add_argument("--reps", type=int, default=None, help="timed repetitions per method (default 25, quick 7)")
    return p.parse_args()


ARGS = _parse() if __name__ == "__main__" else argparse.Namespace(quick=True, threads=1, reps=None)
for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[_var] = str(ARGS.threads)  # before numpy loads its BLAS

import platform  # noqa: E402
import statistics  # noqa: E402
import time  # noqa: E402
from collections.abc import Callable  # noqa: E402

import numpy as np  # noqa: E402

from reference.bellman import bellman_optimality, shared_kernel  # noqa: E402
from reference.game import Game, random_game  # noqa: E402
from reference.sets import UncertaintySet, make_set, primal_support  # noqa: E402

MAIN_SETS = [("tv", 0.2), ("contamination", 0.2), ("kl", 0.1)]
EXTRA_SETS = [("tv", 0.5), ("kl", 0.5), ("chi2", 0.2), ("kl-penalty", 1.0)]
TARGET_NOMINAL = {"tv": 5.0, "contamination": 5.0, "kl": 20.0}
TARGET_CVXPY = 1000.0
NOM_C, NOM_T = "nominal, C layout (P @ V)", "nominal, transposed (V @ PT)"

Sweep = Callable[[np.ndarray], object]


def realistic_q(game: Game, sweeps: int = 40) -> np.ndarray:
    """A Q after a few nominal sweeps, so that V has the spread value iteration sees (not white noise)."""
    Q = np.zeros((game.n_states, game.n_joint))
    Pf = game.P_flat.reshape(-1, game.n_states)
    for _ in range(sweeps):
        Q = game.R_flat + game.gamma * (Pf @ Q.max(axis=1)).reshape(Q.shape)
    return Q


def time_interleaved(Q: np.ndarray, methods: dict[str, Sweep], reps: int, seed: int = 0) -> tuple[dict, dict]:
    """Median CPU and wall seconds per method; every call gets a fresh perturbed copy of Q."""
    rng = np.random.default_rng(seed)
    cpu: dict[str, list[float]] = {n: [] for n in methods}
    wall: dict[str, list[float]] = {n: [] for n in methods}
    for f in methods.values():  # warm-up: lazy layouts, imports, page faults
        f(Q + 1e-3 * rng.standard_normal(Q.shape))
    for _ in range(reps):
        for name, f in methods.items():
            Qi = Q + 1e-3 * rng.standard_normal(Q.shape)
            c0, w0 = time.process_time(), time.perf_counter()
            f(Qi)
            wall[name].append(time.perf_counter() - w0)
            cpu[name].append(time.process_time() - c0)
    med = statistics.median
    return {n: med(v) for n, v in cpu.items()}, {n: med(v) for n, v in wall.items()}


def sweeps(game: Game, sets: list[UncertaintySet]) -> dict[str, Sweep]:
    """The nominal sweep in both layouts, and one robust sweep per set."""
    S, A = game.n_states, game.n_joint
    Pc = game.P_flat.reshape(-1, S)  # a view: the natural layout of the game file
    PT = np.ascontiguousarray(Pc.T)
    R, g = game.R_flat, game.gamma
    out: dict[str, Sweep] = {
        NOM_C: lambda Q: R + g * (Pc @ Q.max(axis=1)).reshape(S, A),
        NOM_T: lambda Q: R + g * (Q.max(axis=1) @ PT).reshape(S, A),
    }
    for uset in sets:
        out[str(uset)] = lambda Q, u=uset: bellman_optimality(game, u, Q)
    return out


def prepare(game: Game) -> float:
    """Build the per-game workspace (all lazy layouts) once; returns the seconds it took."""
    t0 = time.perf_counter()
    kernel = shared_kernel(game)
    _ = kernel.transposed, kernel.log_kernel, kernel.transposed32, kernel.row_sums
    return time.perf_counter() - t0


def cvxpy_per_row(game: Game, uset: UncertaintySet, V: np.ndarray, n_rows: int, seed: int = 0) -> float:
    """Mean wall seconds for cvxpy to solve one (s, a) row's primal (a random sample of rows)."""
    rng = np.random.default_rng(seed)
    Pf = game.P_flat.reshape(-1, game.n_states)
    rows = rng.choice(Pf.shape[0], size=n_rows, replace=False)
    primal_support(uset.name, Pf[rows[0]], V, uset.rho)  # warm-up (imports, solver start)
    t0 = time.perf_counter()
    for r in rows:
        primal_support(uset.name, Pf[r], V, uset.rho)
    return (time.perf_counter() - t0) / n_rows


def ms(seconds: float) -> str:
    return f"{seconds * 1e3:.3f}"


def main() -> int:
    quick = ARGS.quick
    reps = ARGS.reps or (7 if quick else 25)
    cvx_rows = 10 if quick else 50
    sizes = [50, 100, 200, 400] if quick else [50, 100, 200, 400, 800]
    print("# reference: robust Bellman sweep benchmark\n")
    print(f"- command: `python {' '.join(sys.argv)}`")
    print(
        f"- machine: {platform.machine()}, {os.cpu_count()} CPUs, BLAS threads {ARGS.threads}, numpy {np.__version__}"
    )
    print(f"- load average at start: {os.getloadavg()[0]:.2f} (other jobs share this machine when it exceeds 0)")
    print(f"- medians of {reps} interleaved repetitions, each on a fresh perturbed Q; CPU time of this process\n")

    game = random_game(200, (4, 4, 4), seed=0)
    K, S = game.n_states * game.n_joint, game.n_states
    build = prepare(game)
    print(f"## S = {S}, 3 agents x 4 actions: kernel {K} x {S}\n")
    print(f"One-time per-game workspace (transposed, log and float32 layouts): {build * 1e3:.0f} ms wall\n")

    sets = [make_set(n, r) for n, r in MAIN_SETS + EXTRA_SETS]
    Q = realistic_q(game)
    cpu, wall = time_interleaved(Q, sweeps(game, sets), reps)
    nc, nt = cpu[NOM_C], cpu[NOM_T]
    best = min(nc, nt)
    wc, wb = wall[NOM_C], min(wall[NOM_C], wall[NOM_T])

    print("| sweep | CPU ms | vs nominal C | vs best nominal | wall ms (vs C, vs best) | cvxpy s/sweep | vs cvxpy |")
    print("|---|---|---|---|---|---|---|")
    for name in (NOM_C, NOM_T):
        print(
            f"| {name} | {ms(cpu[name])} | {cpu[name] / nc:.2f}x | {cpu[name] / best:.2f}x "
            f"| {ms(wall[name])} ({wall[name] / wc:.1f}x, {wall[name] / wb:.1f}x) | | |"
        )
    V = Q.max(axis=1)
    verdicts: list[str] = []
    all_met = True
    for uset in sets:
        t, w = cpu[str(uset)], wall[str(uset)]
        cvx = cvxpy_per_row(game, uset, V, cvx_rows) * K
        print(
            f"| {uset} | {ms(t)} | {t / nc:.2f}x | {t / best:.2f}x | {ms(w)} ({w / wc:.1f}x, {w / wb:.1f}x) "
            f"| {cvx:.0f} | {cvx / t:,.0f}x |"
        )
        if (uset.name, uset.rho) in MAIN_SETS:
            lim = TARGET_NOMINAL[uset.name]
            ok_c, ok_b, ok_x = t / nc <= lim, t / best <= lim, cvx / t >= TARGET_CVXPY
            all_met &= ok_c and ok_x
            verdicts.append(
                f"- {uset}: <= {lim:g}x nominal {'met' if ok_c else 'MISSED'} vs C layout ({t / nc:.2f}x), "
                f"{'met' if ok_b else 'MISSED'} vs best layout ({t / best:.2f}x); >= 1000x cvxpy "
                f"{'met' if ok_x else 'MISSED'} ({cvx / t:,.0f}x)"
            )
    print("\nTargets (CPU time):\n" + "\n".join(verdicts))

    print(
        f"\n## Growth with S (3 agents x 4 actions, K = 64 S rows; CPU ms per sweep, median of {max(3, reps // 2)})\n"
    )
    main_sets = [make_set(n, r) for n, r in MAIN_SETS]
    names = [NOM_C, NOM_T] + [str(u) for u in main_sets]
    print("| S | kernel | " + " | ".join(names) + " |")
    print("|---" * (len(names) + 2) + "|")
    series: dict[str, list[float]] = {n: [] for n in names}
    for size in sizes:
        g = game if size == S else random_game(size, (4, 4, 4), seed=0)
        prepare(g)
        c, _ = time_interleaved(realistic_q(g), sweeps(g, main_sets), max(3, reps // 2), seed=size)
        for n in names:
            series[n].append(c[n])
        print(f"| {size} | {64 * size} x {size} | " + " | ".join(ms(c[n]) for n in names) + " |")
        del g
    print("\nGrowth per doubling of S (the kernel has 4x the entries), geometric mean over the doublings:")
    for n in names:
        s = np.array(series[n])
        print(f"- {n}: {float(np.exp(np.mean(np.log(s[1:] / s[:-1])))):.2f}x")
    print(f"\nload average at end: {os.getloadavg()[0]:.2f}")
    print(
        f"headline targets (vs the natural-layout nominal sweep and cvxpy): {'all met' if all_met else 'NOT all met'}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
