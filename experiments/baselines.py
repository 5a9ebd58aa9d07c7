"""Reference returns of untrained policies on a protocol's training and test environments, as a markdown table.

``python experiments/baselines.py PROTOCOL [--episodes 3] [--scale full] [--out FILE.md] [--runs ROOT]``

With ``--runs ROOT`` (a sweep's run root, e.g. ``experiments/runs``) a second table sets every trained method of
the sweep at ``ROOT/PROTOCOL/SCALE`` beside the baselines on exactly the same test episodes (matched by episode
seed): per training seed the mean return over those episodes, then mean +- SE over training seeds.

Policies (both act on the available actions only):

- ``random``: each agent draws uniformly among its available actions, independently per step; the draws of
  episode seed s come from ``numpy.random.default_rng([s, 1])``, so a table is reproducible.
- ``fixed``: a simple hand-written rule. ``evcharging``: every station with a car (remaining demand > 0 in the
  state) at the highest pilot level, the others (and phantom stations) at 0 A: charge as fast as possible.
  ``cogen``: every agent at the middle of its action grid: each level factor (power, steam, cooling bays) at index
  ``(count - 1) // 2`` (the exact middle for odd counts: power midway between its min and max, the middle steam
  level; 4 bays of (1, 4, 8, 12)), the binary evaporative-cooler/power-augmentation switches off.
  ``building``: a proportional thermostat per zone, power u = clip(0.3 (T_target - T_zone), -1, 1) at the nearest
  available power level, with the zone's own target temperature (SustainGym's 22 C by default). It reads the
  agent's own zone temperature (which its local observation holds) and nothing else.
  ``smax``: focus fire, per ally on its own observation: attack the attackable enemy with the lowest observed
  health fraction; with none in range, move one step along the larger axis toward the nearest visible enemy
  (so observation noise on enemy positions reaches it); with none visible, stop.
  Other environments have no fixed rule and are refused.

The episode seeds are the protocol's test-episode seeds (:func:`drigm.protocol.test_episode_seeds` of its
``eval_seed``), the ones the sweep evaluates trained policies on, so the numbers compare directly with the
report's. Environments are built as the sweep builds them at the chosen scale (full: whole episodes). A test
environment identical to the training one is run once and its row says so. The return is the undiscounted
sum of team rewards; the table gives the mean over episodes +- its standard error (std with ddof 1 / sqrt(n)).
An EV solver failure is reported in its row, not averaged over.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from drigm.envs.base import EnvError, MultiAgentEnv, TimeStep
from drigm.evaluation import make_test_env
from drigm.protocol import SCALES, ProtocolError, load_protocol, test_episode_seeds

Policy = Callable[[MultiAgentEnv, TimeStep, np.random.Generator], np.ndarray]
POLICIES = ("random", "fixed")


def random_policy(env: MultiAgentEnv, ts: TimeStep, rng: np.random.Generator) -> np.ndarray:
    """One uniformly drawn available action per agent (every agent has at least one)."""
    avail = ts.avail_actions
    counts = avail.sum(axis=1)
    picks = rng.integers(0, counts)  # the k-th available action of each agent
    return np.array([np.flatnonzero(row)[k] for row, k in zip(avail, picks, strict=True)], dtype=np.int64)


def evcharging_max_pilot(env: MultiAgentEnv, ts: TimeStep, rng: np.random.Generator) -> np.ndarray:
    """The highest pilot level at every station with remaining demand, 0 A elsewhere (phantoms included)."""
    occupied = ts.state[env.demands_slice] > 0  # type: ignore[attr-defined]
    return np.where(occupied, env.n_actions - 1, 0).astype(np.int64)


def cogen_grid_middle_actions(env: MultiAgentEnv) -> np.ndarray:
    """Per agent, the grid index with level factors at (count - 1) // 2 and the binary switches at 0."""
    out = []
    for agent in env.agent_ids:  # type: ignore[attr-defined]
        index = 0
        for key, count in env.action_factors[agent]:  # type: ignore[attr-defined]
            digit = 0 if key.endswith("_FFU") else (count - 1) // 2
            index = index * count + digit
        out.append(index)
    return np.array(out, dtype=np.int64)


THERMOSTAT_GAIN = 0.3  # power fraction per degree C of error; the best of {0.05, 0.1, 0.3, 1} on Tucson days 200-364


def building_thermostat(env: MultiAgentEnv) -> Policy:
    """Per zone: power clip(gain (target - T), -1, 1) at the nearest of the adapter's power levels."""
    levels = env.power_levels  # type: ignore[attr-defined]
    zones = np.asarray(env.zone_ids)  # type: ignore[attr-defined]
    target = np.asarray(env.raw_env.single_env.target, dtype=float)[zones]  # type: ignore[attr-defined]

    def act(env: MultiAgentEnv, ts: TimeStep, rng: np.random.Generator) -> np.ndarray:
        u = np.clip(THERMOSTAT_GAIN * (target - ts.state[zones]), -1.0, 1.0)  # the global obs starts with zone temps
        return np.abs(levels[None, :] - u[:, None]).argmin(axis=1).astype(np.int64)

    return act


def smax_focus_fire(env: MultiAgentEnv) -> Policy:
    """Per ally: attack the weakest attackable enemy, else step toward the nearest visible one, else stop."""
    from drigm.envs.smax import N_MOVE_ACTIONS, STOP_ACTION  # ally actions: 0-3 move N (+y), E (+x), S, W; 4 stop

    pos = env.enemy_position_indices  # type: ignore[attr-defined]  # (E, 2): relative x, y of enemy k
    health = pos[:, 0] - 1  # each enemy block starts with its health fraction (0 when dead or unseen)
    n_enemies = len(pos)

    def act(env: MultiAgentEnv, ts: TimeStep, rng: np.random.Generator) -> np.ndarray:
        out = []
        for obs, avail in zip(ts.obs, ts.avail_actions.astype(bool), strict=True):
            attack = np.flatnonzero(avail[N_MOVE_ACTIONS : N_MOVE_ACTIONS + n_enemies])  # attack k is 5 + k
            if attack.size:
                out.append(N_MOVE_ACTIONS + int(attack[np.argmin(obs[health[attack]])]))
                continue
            seen = np.flatnonzero(obs[health] > 0)
            if seen.size:
                dx, dy = obs[pos[seen, 0]], obs[pos[seen, 1]]
                k = int(np.argmin(dx * dx + dy * dy))
                move = (1 if dx[k] > 0 else 3) if abs(dx[k]) >= abs(dy[k]) else (0 if dy[k] > 0 else 2)
                if avail[move]:
                    out.append(move)
                    continue
            out.append(STOP_ACTION if avail[STOP_ACTION] else int(np.flatnonzero(avail)[0]))
        return np.array(out, dtype=np.int64)

    return act


def fixed_policy(env: MultiAgentEnv) -> Policy:
    """The fixed rule of `env`'s adapter (see the module docstring); EnvError for adapters without one."""
    from drigm.envs.building import BuildingAdapter
    from drigm.envs.cogen import CogenAdapter
    from drigm.envs.evcharging import EVChargingAdapter

    smax = sys.modules.get("drigm.envs.smax")  # loaded whenever env is a SMAX battle; importing it needs jax
    if smax is not None and isinstance(env, smax.SMAXEnv):
        return smax_focus_fire(env)
    if isinstance(env, EVChargingAdapter):
        return evcharging_max_pilot
    if isinstance(env, CogenAdapter):
        middle = cogen_grid_middle_actions(env)
        return lambda env, ts, rng: middle
    if isinstance(env, BuildingAdapter):
        return building_thermostat(env)
    raise EnvError(
        f"no fixed baseline policy for {type(env).__name__}; defined for building, evcharging, cogen and smax"
    )


def play(env: MultiAgentEnv, policy: Policy, seed: int) -> tuple[float, bool | None]:
    """The undiscounted return of one episode of `policy` from ``env.reset(seed)``, and its final ``won``
    flag (None for environments whose info has none)."""
    rng = np.random.default_rng([seed, 1])
    ts = env.reset(seed=seed)
    total = 0.0
    while not ts.done:
        ts = env.step(policy(env, ts, rng))
        total += ts.reward
    won = ts.info.get("won")
    return total, None if won is None else bool(won)


def mean_se(values: list[float]) -> tuple[float, float]:
    """Mean and standard error (std with ddof 1 over sqrt(n); nan for one value)."""
    v = np.asarray(values, dtype=float)
    se = float(v.std(ddof=1) / np.sqrt(len(v))) if len(v) > 1 else float("nan")
    return float(v.mean()), se


def env_label(env_data: dict[str, Any]) -> str:
    """A short spec of an EnvConfig dict: ``name`` plus its kwargs and episode limit when set."""
    parts = [f"{k}={v}" for k, v in sorted((env_data.get("kwargs") or {}).items())]
    if env_data.get("episode_limit") is not None:
        parts.append(f"episode_limit={env_data['episode_limit']}")
    return f"`{env_data['name']}`" + (f" ({', '.join(parts)})" if parts else "")


def versus_trained(
    runs: Path, tests: list[str], seeds: list[int], base: dict[tuple[str, str], list[float]]
) -> list[str]:
    """Markdown rows: baselines and every trained method under `runs` on the same test episodes (by seed)."""
    files = sorted(runs.glob("*/seed*.json"))
    if not files:
        raise EnvError(f"no sweep results (METHOD/seedN.json) under {str(runs)!r}")
    per_method: dict[str, list[list[float]]] = {}
    for f in files:
        data = json.loads(f.read_text())
        row = []
        for t in tests:
            res = data["tests"].get(t)
            if res is None:
                raise EnvError(f"{f}: no results for test environment {t!r}")
            by_seed = dict(zip(res["seeds"], res["returns"], strict=True))
            missing = [s for s in seeds if s not in by_seed]
            if missing:
                raise EnvError(f"{f}: test {t!r} lacks the baseline episode seeds {missing}")
            row.append(float(np.mean([by_seed[s] for s in seeds])))
        per_method.setdefault(str(data["method"]), []).append(row)
    out = ["| policy | " + " | ".join(tests) + " | average |", "|---|" + "---|" * (len(tests) + 1)]
    for pname in POLICIES:
        vals = [float(np.mean(base[(t, pname)])) if base.get((t, pname)) else float("nan") for t in tests]
        out.append(f"| {pname} (baseline) | " + " | ".join(f"{v:.4g}" for v in vals) + f" | {np.mean(vals):.4g} |")
    for method, rows in sorted(per_method.items()):
        arr = np.asarray(rows)  # (training seeds, tests)
        cols = [*arr.T, arr.mean(axis=1)]
        cells = []
        for c in cols:
            m, se = mean_se(list(c))
            cells.append(f"{m:.4g} +- {se:.2g}" if len(c) > 1 else f"{m:.4g}")
        out.append(f"| {method} (n={len(rows)}) | " + " | ".join(cells) + " |")
    return out


def baselines(
    protocol: str,
    episodes: int | None = None,
    scale: str = "full",
    runs_root: Path | None = None,
    preset: str | None = None,
) -> str:
    """The markdown report: one row per (environment, policy), training environment first, then the tests;
    with `runs_root`, a second table of the sweep's trained methods beside the baselines on the same episodes.

    `episodes` None: the protocol's explicit test seeds where it lists them (the paper's building days), else 3.
    """
    if episodes is not None and episodes < 1:
        raise EnvError(f"episodes={episodes} must be >= 1")
    from drigm.envs.evcharging import EVChargingSolverError

    proto = load_protocol(protocol, scale, preset=preset)
    if episodes is None and proto.explicit_test_seeds is not None:
        seeds = proto.test_seeds()
    else:
        seeds = test_episode_seeds(proto.eval_seed, 3 if episodes is None else episodes)
    episodes = len(seeds)
    train = {"episode_limit": None, "kwargs": {}, **proto.run["env"]}
    envs = [("train", train)] + [(t.name, t.env) for t in proto.tests]
    rows = [
        "| env | spec | policy | mean return +- SE | won | episodes | seconds |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    done: dict[str, tuple[str, list[str]]] = {}
    returns_of: dict[str, dict[str, list[float]]] = {}  # env key -> policy -> returns (empty on a failure)
    base: dict[tuple[str, str], list[float]] = {}
    started = time.perf_counter()
    for name, data in envs:
        key = json.dumps(data, sort_keys=True, default=str)
        if key in done:
            first, cells = done[key]
            rows += [f"| {name} (same env as {first}) | {c}" for c in cells]
            base.update({(name, pname): r for pname, r in returns_of[key].items()})
            continue
        env = make_test_env(data)
        cells = []
        returns_of[key] = {}
        try:
            for pname in POLICIES:
                policy = random_policy if pname == "random" else fixed_policy(env)
                t0 = time.perf_counter()
                returns: list[float] = []
                wins: list[bool | None] = []
                failure = ""
                for s in seeds:
                    try:
                        ret, won = play(env, policy, s)
                        returns.append(ret)
                        wins.append(won)
                    except EVChargingSolverError as exc:  # say so in the row, never average around it
                        failure = f"failed on seed {s}: {type(exc).__name__}: {exc}"
                        break
                returns_of[key][pname] = [] if failure else returns
                base[(name, pname)] = returns_of[key][pname]
                if failure:
                    result = f"n/a ({failure})"
                else:
                    m, se = mean_se(returns)
                    result = f"{m:.4g} +- {se:.2g}"
                secs = time.perf_counter() - t0
                won_cell = "-" if failure or None in wins else f"{sum(map(bool, wins))}/{len(wins)}"
                cells.append(f"{env_label(data)} | {pname} | {result} | {won_cell} | {len(returns)} | {secs:.0f} |")
        finally:
            env.close()
        done[key] = (name, cells)
        rows += [f"| {name} | {c}" for c in cells]
        print(f"[baselines] {name}: done", file=sys.stderr, flush=True)
    total = time.perf_counter() - started
    head = [
        f"# Baselines: {proto.name} ({scale} scale)",
        "",
        f"Untrained reference policies, {episodes} episode(s) per row, episode seeds {seeds} (the protocol's "
        f"test-episode seeds, eval_seed {proto.eval_seed}). Return = undiscounted sum of team rewards over the "
        "whole episode; +- is the standard error over episodes. `random`: uniform over available actions; "
        "`fixed`: evcharging, highest pilot at every station with a car (0 A elsewhere); cogen, the middle of "
        "each action grid (level factors at index (count - 1) // 2, switches off); building, a proportional "
        "thermostat per zone (power clip(0.3 (22 C - T_zone), -1, 1) at the nearest level); smax, focus fire "
        "(attack the weakest enemy in range, else step toward the nearest visible one). `won`: battles won (smax "
        "only). Generated by "
        f"`python experiments/baselines.py {proto.name} --scale {scale} --episodes {episodes}"
        + (f" --preset {proto.preset}" if proto.preset is not None else "")
        + (f" --runs {runs_root}" if runs_root is not None else "")
        + f"` in {total:.0f} s (baselines only). "
        "Except the building thermostat (own zone temperature) and smax focus fire, no policy reads its "
        "observations, so environments that differ only in what is observed (cogen's forecast noise, smax's "
        "enemy-position noise for `random`) give identical rows.",
        "",
    ]
    if runs_root is not None:
        runs = Path(runs_root) / proto.name / proto.label
        rows += [
            "",
            f"## Trained policies on the same episodes (`{runs}`)",
            "",
            f"Mean return over the episode seeds above; trained rows: per training seed the mean over those "
            f"episodes, then mean +- SE over training seeds. Made with `--runs {runs_root}`.",
            "",
            *versus_trained(runs, [t.name for t in proto.tests], seeds, base),
        ]
    return "\n".join(head + rows) + "\n"


def main(argv: list[str] | None = None) -> int:
    """Command line entry point; 0 on success, 2 on a bad protocol or argument."""
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("protocol", help="a protocol name (experiments/protocols/NAME.yaml) or a path")
    p.add_argument(
        "--episodes",
        type=int,
        default=None,
        help="episodes per environment and policy (default: the protocol's explicit test seeds, else 3)",
    )
    p.add_argument("--preset", default=None, help="the protocol preset whose runs --runs reads (default: its own)")
    p.add_argument("--scale", choices=SCALES, default="full", help="protocol scale of the envs (default full)")
    p.add_argument("--out", type=Path, default=None, help="also write the table to this file")
    p.add_argument("--runs", type=Path, default=None, help="a sweep's run root: add the trained methods' table")
    args = p.parse_args(argv)
    try:
        text = baselines(args.protocol, args.episodes, args.scale, args.runs, args.preset)
    except (ProtocolError, EnvError) as exc:
        print(f"baselines: error: {exc}", file=sys.stderr)
        return 2
    print(text, end="")
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
