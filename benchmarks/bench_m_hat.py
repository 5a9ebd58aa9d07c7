"""m_hat, measured: each mode's estimate of min_s V against min_s V*_rob, and its effect on the learned Q_tot.

Run: ``python benchmarks/bench_m_hat.py [--steps 10000] [--seeds 0 1] [--algo vdn]``. Prints a markdown table.

Each run trains the real learner (the "tabular" preset, exact contamination at rho = 0.3, sampled episodes) on a
tabular game for every m_hat mode: ``batch`` (the minibatch minimum of V_hat(s')), ``running`` (the minimum of
that and the last 50 batch minima), ``ema`` (an exponential moving average of the batch minima, rate 1/50) and
``bound`` (the oracle: the configured bound set to the exact min_s V*_rob). Every update logs m_hat; every
``--probe`` updates the benchmark also computes min_s V_hat(s), the target network's value at its double-Q greedy
action in every state (exact, over all states). Columns (averages over the last half of training and the seeds):

- ``m_hat - min V*``: the estimate's total bias against the exact robust minimum;
- ``m_hat - min V_hat``: its bias against the minimum of the network's own current values (estimator bias);
- ``min V_hat - min V*``: how far the network's own minimum is off;
- ``dQ (mean, max)``: Q_tot(s, pi(s)) - V*_rob(s) at the end of training, averaged over states and its largest
  magnitude (pi = the decentralised greedy policy); ``opt``: runs whose policy is robust-optimal.

Games: ``three_horizons`` and ``robust_vs_nominal`` as given, and ``three_horizons+50`` with every reward raised by
50 (returns about 5x larger), to see whether an estimate drifts below the true minimum as returns grow.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from drigm.config import build_config, deep_merge, preset
from drigm.exact_harness import tabular_q_tot
from drigm.run import Trainer, tabular_report
from reference.bellman import value_iteration
from reference.game import Game, robust_vs_nominal_game, save_game, three_horizons_game
from reference.sets import make_set

RHO = 0.3
MODES = ("batch", "running", "ema", "bound")


def shifted(game: Game, offset: float) -> Game:
    """The same game with every reward raised by `offset`."""
    return Game(P=game.P, R=game.R + offset, gamma=game.gamma, name=f"{game.name}+{offset:g}")


GAMES: dict[str, Callable[[], Game]] = {
    "three_horizons": three_horizons_game,
    "robust_vs_nominal": robust_vs_nominal_game,
    "three_horizons+50": lambda: shifted(three_horizons_game(), 50.0),
}


def greedy_values(trainer: Trainer, game: Game, target_network: bool) -> np.ndarray:
    """Q_tot(s, a_bar(s)) with a_bar the online utilities' greedy joint action (double-Q, as in the learner)."""
    policy = np.array(tabular_report(trainer.learner.controller, trainer.env, make_set("contamination", 0.0))["policy"])
    flat = [game.joint_index(p) for p in policy]
    return tabular_q_tot(trainer.learner, game, target_network)[np.arange(game.n_states), flat]


def run(game: Game, mode: str, seed: int, steps: int, algo: str, probe: int, workdir: Path) -> dict[str, Any]:
    """Train once; return the m_hat trace statistics and the final value error."""
    uset = make_set("contamination", RHO)
    sol = value_iteration(game, uset)
    v_min = float(sol.V.min())
    path = save_game(game, workdir / f"{game.name}.npz")
    target: dict[str, Any] = {"kind": "exact", "set": "contamination", "rho": RHO, "m_hat": mode}
    if mode == "bound":
        target["m_hat_bound"] = v_min
    data = deep_merge(
        preset("tabular"),
        {
            "env": {"name": f"tabular:{path}"},
            "steps": steps,
            "mixer": {"name": algo, "params": {"nopt_coef": 1.0} if algo == "qtran" else {}},
            "target": target,
            "seed": seed,
            "out": str(workdir / f"{game.name}-{mode}-{seed}"),
            "tensorboard": False,
            "progress": False,
            "checkpoint_buffer": False,
            "eval": {"episodes": 1},
        },
    )
    trainer = Trainer(build_config(data))
    robust = trainer.learner.robust
    trace: list[tuple[int, float, float]] = []  # (update, m_hat, min_s V_hat(s)) at probe points
    original = robust.update_aux
    calls = {"n": 0}

    def update_aux(inputs: Any) -> dict[str, float]:
        out = original(inputs)
        calls["n"] += 1
        if calls["n"] % probe == 0:
            v_hat = greedy_values(trainer, game, target_network=True)
            trace.append((calls["n"], out["m_hat"], float(v_hat.min())))
        return out

    robust.update_aux = update_aux  # type: ignore[method-assign]
    trainer.train()
    late = [t for t in trace if t[0] > calls["n"] // 2] or trace
    m = np.array([t[1] for t in late])
    vh = np.array([t[2] for t in late])
    report = tabular_report(trainer.learner.controller, trainer.env, uset)
    dq = greedy_values(trainer, game, target_network=False) - sol.V
    return {
        "bias_total": float(np.mean(m - v_min)),
        "bias_estimator": float(np.mean(m - vh)),
        "net_min_off": float(np.mean(vh - v_min)),
        "dq_mean": float(dq.mean()),
        "dq_max": float(np.max(np.abs(dq))),
        "optimal": bool(report["robust_optimal"]),
        "v_min": v_min,
        "updates": calls["n"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=10_000)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--algo", default="vdn", choices=["vdn", "qmix", "qtran"])
    parser.add_argument("--probe", type=int, default=20, help="compute min_s V_hat(s) every this many updates")
    parser.add_argument("--games", nargs="+", default=list(GAMES), choices=list(GAMES))
    parser.add_argument("--modes", nargs="+", default=list(MODES), choices=list(MODES))
    args = parser.parse_args()
    torch.set_num_threads(1)
    print(f"exact contamination rho={RHO}, {args.algo}, {args.steps} env steps, seeds {args.seeds}\n")
    cols = ["game", "min V*", "m_hat mode", "m_hat - min V*", "m_hat - min V_hat", "min V_hat - min V*"]
    print("| " + " | ".join([*cols, "dQ mean", "dQ max", "opt"]) + " |")
    print("|---|---|---|---|---|---|---|---|---|")
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.games:
            game = GAMES[name]()
            for mode in args.modes:
                rs = [run(game, mode, s, args.steps, args.algo, args.probe, Path(tmp)) for s in args.seeds]
                avg = {k: float(np.mean([r[k] for r in rs])) for k in rs[0] if k not in ("optimal",)}
                print(
                    f"| {name} | {avg['v_min']:.3f} | {mode} | {avg['bias_total']:+.3f} | {avg['bias_estimator']:+.3f} "
                    f"| {avg['net_min_off']:+.3f} | {avg['dq_mean']:+.3f} | {avg['dq_max']:.3f} "
                    f"| {sum(r['optimal'] for r in rs)}/{len(rs)} |",
                    flush=True,
                )
    print(f"\n{time.perf_counter() - start:.0f}s")


if __name__ == "__main__":
    main()
