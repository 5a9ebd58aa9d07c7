"""experiments/baselines.py: the building thermostat rule and the trained-vs-baseline table."""

from __future__ import annotations

import importlib.util
import json
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from conftest import require_extra

from drigm.envs.base import EnvError

ROOT = Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location("baselines", ROOT / "experiments" / "baselines.py")
assert _spec is not None and _spec.loader is not None
baselines = importlib.util.module_from_spec(_spec)
sys.modules["baselines"] = baselines
_spec.loader.exec_module(baselines)


def test_building_thermostat_heats_cold_zones_and_cools_hot_ones() -> None:
    require_extra("sustaingym", "sustaingym")
    from drigm.envs.base import make_env

    env = make_env("building:Tucson", n_levels=21, episode_limit=4)
    ts = env.reset(seed=3)
    policy = baselines.fixed_policy(env)
    state = ts.state.copy()
    zones = np.asarray(env.zone_ids)
    state[zones] = [15.0, 22.0, 29.0, 22.4, 21.0, 60.0]
    acts = policy(env, replace(ts, state=state), np.random.default_rng(0))
    power = env.power_levels[acts]
    assert power[0] == pytest.approx(1.0)  # 7 C too cold: saturated heating
    assert power[1] == pytest.approx(0.0)
    assert power[2] == pytest.approx(-1.0)  # 7 C too hot: saturated cooling
    assert power[3] == pytest.approx(-0.1) and power[4] == pytest.approx(0.3)  # nearest of 21 levels to -0.12, 0.3
    assert power[5] == pytest.approx(-1.0)
    env.close()


def _write_result(root: Path, method: str, seed: int, returns: dict[str, dict[int, float]]) -> None:
    tests = {t: {"seeds": list(r), "returns": list(r.values())} for t, r in returns.items()}
    (root / method).mkdir(parents=True, exist_ok=True)
    (root / method / f"seed{seed}.json").write_text(json.dumps({"method": method, "tests": tests}))


def test_versus_trained_matches_episodes_by_seed_and_averages_over_training_seeds(tmp_path: Path) -> None:
    # training seed 0 and 1 of one method; episode seeds listed in another order and with an extra episode
    _write_result(tmp_path, "qmix-none", 0, {"A": {7: -1.0, 5: -3.0, 9: -100.0}, "B": {5: -2.0, 7: -2.0}})
    _write_result(tmp_path, "qmix-none", 1, {"A": {5: -5.0, 7: -7.0}, "B": {7: -4.0, 5: -6.0}})
    base = {("A", "random"): [-10.0, -20.0], ("B", "random"): [-30.0, -30.0], ("A", "fixed"): [-1.0, -1.0]}
    rows = baselines.versus_trained(tmp_path, ["A", "B"], [5, 7], base)
    assert rows[0] == "| policy | A | B | average |"
    assert rows[2].startswith("| random (baseline) | -15 | -30 | -22.5 |")
    assert "nan" in rows[3]  # no fixed returns for B: shown, never silently dropped
    trained = rows[4]
    # seed 0: A -2, B -2; seed 1: A -6, B -5 -> A -4 +- 2, B -3.5 +- 1.5, average (-2, -5.5) -> -3.75 +- 1.75
    # (1.75 computed as std / sqrt(2) is 1.7499... in floating point, so it prints as 1.7)
    assert trained == "| qmix-none (n=2) | -4 +- 2 | -3.5 +- 1.5 | -3.75 +- 1.7 |"


def test_versus_trained_refuses_missing_episodes_and_empty_roots(tmp_path: Path) -> None:
    with pytest.raises(EnvError, match="no sweep results"):
        baselines.versus_trained(tmp_path, ["A"], [5], {})
    _write_result(tmp_path, "vdn-none", 0, {"A": {5: -1.0}})
    with pytest.raises(EnvError, match=r"lacks the baseline episode seeds \[6\]"):
        baselines.versus_trained(tmp_path, ["A"], [5, 6], {})
    with pytest.raises(EnvError, match="no results for test environment 'B'"):
        baselines.versus_trained(tmp_path, ["B"], [5], {})


def test_smax_focus_fire_attacks_the_weakest_then_approaches_then_stops() -> None:
    require_extra("jaxmarl", "starcraft")
    from drigm.envs.base import make_env

    env = make_env("smax:3s_vs_5z", episode_limit=3)
    ts = env.reset(seed=0)
    policy = baselines.fixed_policy(env)
    pos = env.enemy_position_indices
    obs = np.zeros_like(ts.obs)
    avail = np.zeros_like(ts.avail_actions)
    avail[:, :5] = True
    # agent 0: enemies 1 (health 0.9) and 3 (health 0.2) in range -> attack 3
    obs[0, pos[[1, 3], 0] - 1] = [0.9, 0.2]
    avail[0, [5 + 1, 5 + 3]] = True
    # agent 1: none in range; enemy 2 seen at (0.5, -0.1), enemy 4 farther at (-0.1, 0.9) -> east (1)
    obs[1, pos[[2, 4], 0] - 1] = 1.0
    obs[1, pos[2]] = [0.5, -0.1]
    obs[1, pos[4]] = [-0.1, 0.9]
    # agent 2: nothing seen -> stop (4)
    acts = policy(env, replace(ts, obs=obs, avail_actions=avail), np.random.default_rng(0))
    assert acts.tolist() == [5 + 3, 1, 4]
    obs[1, pos[2]] = [0.05, -0.4]  # now mostly south
    assert policy(env, replace(ts, obs=obs, avail_actions=avail), np.random.default_rng(0))[1] == 2
    ret, won = baselines.play(env, policy, seed=1)
    assert np.isfinite(ret) and won is False  # 3 steps cannot win 3s_vs_5z
    env.close()
