"""Environment steps per second: the SustainGym adapters vs the raw SustainGym multi-agent envs they wrap.

Both sides are built with the same configuration (the adapters' defaults) in one process, reset with the
same seeds and stepped in lockstep with the same uniformly random joint actions: int arrays for the adapter,
the equivalent SustainGym actions (pre-built outside the timed loop) for the raw env. Each step of each side
is timed in process CPU time (so other processes' load on a shared machine does not count), alternating
which side goes first. The overhead is the adapter's total step time / the raw env's (also shown: the median
of the per-step ratios); the requirement is <= 1.2. The adapter's episode time (reset + all steps) is shown
in CPU time and in wall-clock time; only the latter includes the machine's load.

The raw EV env gets the adapter's ECOS projection (SustainGym's own first tries MOSEK, which without a
licence raises instead of falling back); the raw cogen env gets the adapter's cached ambient tables
(identical to SustainGym's, which it would otherwise rebuild in about 40 s).

Run: ``python benchmarks/bench_envs.py [--episodes-scale 1.0]``; prints a markdown table.
"""

from __future__ import annotations

import argparse
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from drigm.envs import MultiAgentEnv, make_env


@dataclass
class Case:
    name: str
    adapter: MultiAgentEnv
    raw: Any
    to_raw: Callable[[np.ndarray], Any]
    episodes: int


def building_case(episodes: int) -> Case:
    from sustaingym.envs.building import MultiAgentBuildingEnv, ParameterGenerator

    from drigm.envs.sustaingym_common import quiet

    env = make_env("building")
    with quiet():
        params = ParameterGenerator(
            building="OfficeSmall", weather="Hot_Dry", location="Tucson", ac_map=1, is_continuous_action=False
        )
    raw = MultiAgentBuildingEnv(params)
    return Case("building (OfficeSmall, Tucson)", env, raw, lambda a: {i: int(x) for i, x in enumerate(a)}, episodes)


def evcharging_case(episodes: int) -> Case:
    import cvxpy as cp
    from sustaingym.envs.evcharging import MultiAgentEVChargingEnv, RealTraceGenerator

    from drigm.envs.sustaingym_common import quiet

    env = make_env("evcharging")
    with quiet():
        gen = RealTraceGenerator("caltech", "Summer 2019", sequential=True, seed=0)
        raw = MultiAgentEVChargingEnv(gen, moer_forecast_steps=36, project_action_in_env=True, discrete=False)
    single = raw.single_env

    def project(action: np.ndarray) -> np.ndarray:  # SustainGym's projection with its ECOS fallback as the solver
        single._projected_action.value = action
        single._agent_action.value = action
        single._demands_cvx.value = single._demands
        single.prob.solve(solver=cp.ECOS, warm_start=True)
        return single._projected_action.value

    single._project_action = project
    stations = list(raw.possible_agents)
    levels = np.arange(5, dtype=np.float32) / 4
    return Case(
        "evcharging (caltech, Summer 2019, real)",
        env,
        raw,
        lambda a: {s: float(levels[x]) for s, x in zip(stations, a, strict=True)},
        episodes,
    )


def cogen_case(episodes: int) -> Case:
    from sustaingym.envs.cogen import MultiAgentCogenEnv

    from drigm.envs.cogen import _ambients_patched, ambient_days
    from drigm.envs.sustaingym_common import quiet

    env = make_env("cogen")
    with _ambients_patched(ambient_days(0.0)), quiet():
        raw = MultiAgentCogenEnv()
    agents = env.agent_ids

    def to_raw(a: np.ndarray) -> dict[str, dict[str, Any]]:
        return {agent: env.action_dict(i, int(a[i])) for i, agent in enumerate(agents)}

    return Case("cogen (0 MW, noise 0.1)", env, raw, to_raw, episodes)


def timed(step: Callable[[Any], Any], action: Any) -> tuple[Any, int, float]:
    """(result, process CPU ns, wall seconds) of one step; other processes' load is excluded from the CPU time."""
    w0, c0 = time.perf_counter(), time.process_time_ns()
    out = step(action)
    return out, time.process_time_ns() - c0, time.perf_counter() - w0


def run_case(case: Case) -> dict[str, Any]:
    """Step the adapter and the raw env in lockstep (same seed, same actions), timing each step of each side."""
    env, raw = case.adapter, case.raw
    rng = np.random.default_rng(0)
    raw_ns, ada_ns, episode_s = [], [], []
    for episode in range(case.episodes):
        acts = rng.integers(0, env.n_actions, size=(env.episode_limit, env.n_agents))
        raw_acts = [case.to_raw(a) for a in acts]
        raw.reset(seed=episode)
        _, cpu, wall = timed(env.reset, episode)
        cpu_s = cpu / 1e9
        for t, (a, raw_a) in enumerate(zip(acts, raw_acts, strict=True)):
            if t % 2 == 0:  # alternate which side goes first
                _, raw_cpu, _ = timed(raw.step, raw_a)
                ts, ada_cpu, ada_wall = timed(env.step, a)
            else:
                ts, ada_cpu, ada_wall = timed(env.step, a)
                _, raw_cpu, _ = timed(raw.step, raw_a)
            raw_ns.append(raw_cpu)
            ada_ns.append(ada_cpu)
            wall += ada_wall
            cpu_s += ada_cpu / 1e9
            if ts.done:
                assert not raw.agents, "the raw env should end its day on the same step"
                break
        episode_s.append((cpu_s, wall))
    r, a = np.array(raw_ns, dtype=float), np.array(ada_ns, dtype=float)
    return {
        "name": case.name,
        "shape": f"{env.n_agents} x {env.n_actions}",
        "steps": env.episode_limit,
        "raw_sps": len(r) / r.sum() * 1e9,
        "ada_sps": len(a) / a.sum() * 1e9,
        "ratio": a.sum() / r.sum(),
        "median_ratio": float(np.median(a / np.maximum(r, 1.0))),
        "episode_cpu_s": float(np.median([e[0] for e in episode_s])),
        "episode_wall_s": float(np.median([e[1] for e in episode_s])),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--episodes-scale", type=float, default=1.0, help="multiply every case's episode count")
    args = parser.parse_args()
    # SustainGym's EV env silences warnings process-wide when built; the adapters contain that, so mirror it here
    warnings.simplefilter("ignore")
    rows = []
    for build, episodes in ((building_case, 16), (evcharging_case, 1), (cogen_case, 2)):
        rows.append(run_case(build(max(1, round(episodes * args.episodes_scale)))))
    print(
        "| environment | agents x actions | steps/episode | raw steps/s | adapter steps/s "
        "| overhead (total) | overhead (median step) | adapter episode CPU s | adapter episode wall s |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        flag = "ok" if r["ratio"] <= 1.2 else "OVER 1.2"
        print(
            f"| {r['name']} | {r['shape']} | {r['steps']} | {r['raw_sps']:.0f} | {r['ada_sps']:.0f} "
            f"| {r['ratio']:.3f}x ({flag}) | {r['median_ratio']:.3f}x | {r['episode_cpu_s']:.2f} "
            f"| {r['episode_wall_s']:.2f} |"
        )


if __name__ == "__main__":
    main()
