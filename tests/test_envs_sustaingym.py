"""The SustainGym adapters (building, evcharging, cogen) through the MultiAgentEnv interface.

PettingZoo-style API checks (shapes, dtypes, masks, flags, episode limits), reset determinism, the building
action ordering, the EV solver-failure path (must raise, never hang in pdb) and cogen's team-reward sum.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
import warnings

import numpy as np
import pytest
from conftest import require_extra

require_extra("sustaingym", "sustaingym")  # the SustainGym adapters; fails instead of skipping under CI=true

from drigm.envs import EnvError, MultiAgentEnv, TimeStep, make_env  # noqa: E402


def check_timestep(env: MultiAgentEnv, ts: TimeStep) -> None:
    assert isinstance(ts, TimeStep)
    assert ts.obs.shape == (env.n_agents, env.obs_dim) and ts.obs.dtype == np.float32
    assert ts.state.shape == (env.state_dim,) and ts.state.dtype == np.float32
    assert ts.avail_actions.shape == (env.n_agents, env.n_actions) and ts.avail_actions.dtype == bool
    assert ts.avail_actions.any(axis=1).all()
    assert np.isfinite(ts.obs).all() and np.isfinite(ts.state).all()
    assert isinstance(ts.reward, float) and np.isfinite(ts.reward)
    assert isinstance(ts.terminated, bool) and isinstance(ts.truncated, bool)


def rollout(env: MultiAgentEnv, seed: int, actions: np.ndarray) -> tuple[list[TimeStep], TimeStep]:
    """Reset with `seed` and play the rows of `actions` (stops early if the episode ends)."""
    first = env.reset(seed=seed)
    steps = []
    for a in actions:
        ts = env.step(a)
        steps.append(ts)
        if ts.done:
            break
    return steps, first


def random_actions(env: MultiAgentEnv, n: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.integers(0, env.n_actions, size=(n, env.n_agents))


def flat_block(space, key: str) -> slice:
    """Where `key` of a gymnasium Dict space lies in its flattened vector."""
    from gymnasium import spaces

    pos = 0
    for k, sub in space.spaces.items():
        size = spaces.flatdim(sub)
        if k == key:
            return slice(pos, pos + size)
        pos += size
    raise KeyError(key)


def assert_same(a: list[TimeStep], b: list[TimeStep]) -> None:
    assert len(a) == len(b)
    for x, y in zip(a, b, strict=True):
        np.testing.assert_array_equal(x.obs, y.obs)
        np.testing.assert_array_equal(x.state, y.state)
        assert x.reward == y.reward and x.done == y.done


# ----------------------------------------------------------------------------------------------------
# building
# ----------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def building() -> MultiAgentEnv:
    return make_env("building")


def test_building_paper_shapes_and_partial_view(building):
    env = building
    assert (env.n_agents, env.n_actions, env.obs_dim, env.state_dim, env.episode_limit) == (6, 200, 5, 10, 288)
    assert env.zone_ids == (0, 1, 2, 3, 4, 5) and env.discount is None
    ts = env.reset(seed=0)
    check_timestep(env, ts)
    assert ts.reward == 0.0 and not ts.done and ts.avail_actions.all()
    ts = env.step(random_actions(env, 1)[0])
    check_timestep(env, ts)
    for i, zone in enumerate(env.zone_ids):  # own zone temperature, then the last 4 global entries
        np.testing.assert_array_equal(ts.obs[i], np.concatenate(([ts.state[zone]], ts.state[-4:])))
    levels = env.power_levels  # SustainGym's native grid: (j - 100) / 100
    assert levels[0] == -1.0 and levels[100] == 0.0 and levels[-1] == pytest.approx(0.99)


def test_building_full_day_matches_raw_sustaingym(building):
    """288 steps, truncated (not terminated) on the last one, identical to the raw env given the same actions."""
    from sustaingym.envs.building import MultiAgentBuildingEnv, ParameterGenerator

    env = building
    acts = random_actions(env, 300, seed=1)
    steps, first = rollout(env, 3, acts)
    assert len(steps) == 288 and steps[-1].truncated and not steps[-1].terminated
    assert not any(ts.done for ts in steps[:-1]) and not any(ts.terminated for ts in steps)
    assert first.info["day"] == 3
    with pytest.raises(EnvError, match="episode ended"):
        env.step(acts[0])

    params = ParameterGenerator(
        building="OfficeSmall", weather="Hot_Dry", location="Tucson", ac_map=1, is_continuous_action=False
    )
    raw = MultiAgentBuildingEnv(params)
    obs, _ = raw.reset(seed=3)
    np.testing.assert_array_equal(first.state, obs[0])
    for a, ts in zip(acts, steps, strict=False):
        obs, rewards, _, _, _ = raw.step({i: int(a[i]) for i in range(6)})
        np.testing.assert_array_equal(ts.state, obs[0])
        assert ts.reward == rewards[0]


def test_building_reset_determinism_and_days(building):
    env = building
    acts = random_actions(env, 20, seed=2)
    a, first_a = rollout(env, 42, acts)
    b, first_b = rollout(env, 42, acts)
    np.testing.assert_array_equal(first_a.obs, first_b.obs)
    assert_same(a, b)
    _, first_c = rollout(env, 180, acts)  # another day: other weather
    assert first_c.info["day"] == 180 and first_c.state[-4] != first_a.state[-4]
    # the default pool is every day: seed s < 365 is SustainGym's seed s, larger seeds wrap
    assert [env.day_of_seed(s) for s in (0, 199, 364, 365, 2**32 - 1)] == [0, 199, 364, 0, (2**32 - 1) % 365]
    n_steps = len(env.raw_env.single_env.out_temp)
    assert first_c.info["start_step"] == int(180 / 365 * n_steps)
    test = make_env("building", days="200:365", episode_limit=3)
    assert test.days == tuple(range(200, 365))
    assert [test.reset(seed=s).info["day"] for s in (0, 1, 165)] == [200, 201, 200]
    fixed = make_env("building", days=17, episode_limit=3)
    assert {fixed.reset(seed=s).info["day"] for s in (0, 5, 99)} == {17}
    assert make_env("building", days=[3, 9], episode_limit=3).day_of_seed(3) == 9
    ts = fixed.reset()  # seed None draws one and reports it
    assert isinstance(ts.info["seed"], int)


@pytest.mark.parametrize(
    ("ac_map", "n_levels", "off", "heat"),
    [(1, 200, 100, 199), ([1, 0, 1, 1, 0, 1], 5, 2, 4)],
    ids=["all-zones-native-levels", "partial-ac-5-levels"],
)
def test_building_action_reaches_the_agents_own_zone(ac_map, n_levels, off, heat):
    """Heating with one agent only must warm that agent's zone most (SustainGym indexes actions by position)."""
    env = make_env("building", ac_map=ac_map, n_levels=n_levels, episode_limit=12)
    assert env.power_levels[off] == 0.0 and env.power_levels[heat] > 0.5
    n = env.n_agents
    base_steps, _ = rollout(env, 10, np.full((12, n), off))
    base = base_steps[-1].state[:-4]
    for j in range(n):
        acts = np.full((12, n), off)
        acts[:, j] = heat
        steps, _ = rollout(env, 10, acts)
        delta = steps[-1].state[:-4] - base
        zone = env.zone_ids[j]
        assert np.argmax(delta) == zone, (j, zone, delta)
        assert delta[zone] > 0.5
        # the agent's own (local) observation is its zone's temperature
        assert steps[-1].obs[j, 0] == steps[-1].state[zone]
    if n < 6:
        assert env.zone_ids == (0, 2, 3, 5)


def test_building_partial_ac_continuous_matches_raw():
    """Levels other than 200 run SustainGym's continuous model with the power fractions linspace(-1, 1, k)."""
    from sustaingym.envs.building import MultiAgentBuildingEnv, ParameterGenerator

    env = make_env("building:tampa", ac_map=[1, 0, 1, 1, 0, 1], n_levels=5, obs_view="global", episode_limit=30)
    np.testing.assert_array_equal(env.power_levels, np.float32([-1, -0.5, 0, 0.5, 1]))
    assert (env.n_agents, env.obs_dim) == (4, 10) and env.config["weather"] == "Hot_Humid"
    acts = random_actions(env, 30, seed=3)
    steps, _ = rollout(env, 7, acts)
    params = ParameterGenerator(
        building="OfficeSmall",
        weather="Hot_Humid",
        location="Tampa",
        ac_map=np.array([1, 0, 1, 1, 0, 1]),
        is_continuous_action=True,
    )
    raw = MultiAgentBuildingEnv(params)
    raw.reset(seed=7)
    for a, ts in zip(acts, steps, strict=True):
        # SustainGym reads positions 0..3 and writes zones 0, 2, 3, 5
        obs, rewards, _, _, _ = raw.step([env.power_levels[x] for x in a])
        np.testing.assert_array_equal(ts.state, obs[0])
        np.testing.assert_array_equal(ts.obs, np.tile(obs[0], (4, 1)))
        assert ts.reward == rewards[0]


def test_building_paper_climates_build():
    from drigm.envs.building import CLIMATES

    outdoor = {}
    for name in CLIMATES:
        env = make_env(f"building:{name}", episode_limit=1)
        assert env.n_agents == 6 and env.state_dim == 10
        outdoor[name] = tuple(env.reset(seed=180).state[-4:-2])  # outdoor and ground temperature
    assert len(set(outdoor.values())) == len(CLIMATES)  # six different weather files and ground tables
    same = make_env("building", weather="Very_Hot_Humid", location="Honolulu", episode_limit=1)
    assert tuple(same.reset(seed=180).state[-4:-2]) == outdoor["Honolulu"]


@pytest.mark.parametrize(
    ("spec", "kwargs", "match"),
    [
        ("building", {"building": "Igloo"}, "building="),
        ("building", {"weather": "Hot_Dry", "location": "Atlantis"}, "location="),
        ("building", {"weather": "Sunny", "location": "Tucson"}, "weather="),
        ("building", {"weather": "Hot_Humid"}, "go together"),
        ("building:Mars", {}, "unknown climate"),
        ("building:Tampa", {"weather": "Hot_Humid", "location": "Tampa"}, "not both"),
        ("building", {"n_levels": 1}, "n_levels"),
        ("building", {"obs_view": "partial"}, "obs_view"),
        ("building", {"episode_limit": 289}, "episode_limit"),
        ("building", {"episode_limit": 0}, "episode_limit"),
        ("building", {"days": 365}, "outside"),
        ("building", {"days": "9:3"}, "no days"),
        ("building", {"ac_map": 0}, "ac_map"),
        ("building", {"ac_map": [1, 2, 1, 1, 1, 1]}, "ac_map"),
        ("building", {"ac_map": [1, 1, 1]}, "ParameterGenerator rejected"),
        ("building", {"generator_kwargs": {"episode_len": 576}}, "not allowed"),
        ("building", {"colour": "red"}, "unknown building kwargs"),
    ],
)
def test_building_bad_arguments(spec, kwargs, match):
    with pytest.raises(EnvError, match=match):
        make_env(spec, **kwargs)


def test_building_bad_calls():
    env = make_env("building", episode_limit=2)
    with pytest.raises(EnvError, match="reset"):
        env.step(np.zeros(6, dtype=int))
    env.reset(seed=0)
    for bad_seed in (-1, 2**32, 1.5, True):
        with pytest.raises(EnvError, match="seed"):
            env.reset(seed=bad_seed)
    with pytest.raises(EnvError, match="outside the range"):
        env.step(np.array([0, 0, 0, 0, 0, 200]))
    with pytest.raises(EnvError, match="shape"):
        env.step(np.zeros(5, dtype=int))
    with pytest.raises(EnvError, match="integers"):
        env.step(np.zeros(6))


# ----------------------------------------------------------------------------------------------------
# EV charging
# ----------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def evcharging() -> MultiAgentEnv:
    filters = list(warnings.filters)
    env = make_env("evcharging", episode_limit=100)
    assert warnings.filters == filters  # SustainGym's process-wide filterwarnings('ignore') was contained
    return env


def test_evcharging_shapes_and_local_view(evcharging):
    from gymnasium import spaces

    env = evcharging
    assert (env.n_agents, env.n_actions, env.obs_dim, env.state_dim) == (54, 5, 40, 146)
    np.testing.assert_array_equal(env.pilot_levels, np.float32([0, 0.25, 0.5, 0.75, 1]))
    steps, first = rollout(env, 0, np.zeros((20, env.n_agents), dtype=int))
    check_timestep(env, first)
    assert first.avail_actions.all() and first.info["events_day"] == "2019-05-01"
    ts = steps[-1]
    check_timestep(env, ts)
    d = spaces.unflatten(env.raw_env.single_env.observation_space, ts.state)
    np.testing.assert_allclose(d["timestep"], 20 / 288, rtol=1e-6)
    assert (d["demands"] > 0).sum() == 1  # the day's first EV arrives at step 15
    for i in range(env.n_agents):
        want = [d["timestep"][0], d["est_departures"][i], d["demands"][i], d["prev_moer"][0], *d["forecasted_moer"]]
        np.testing.assert_array_equal(ts.obs[i], np.float32(want))


def test_evcharging_levels_reach_the_right_station(evcharging):
    """Level 2 at the one occupied station gives it a 16 A pilot; the others get 0 A."""
    env = evcharging
    steps, _ = rollout(env, 0, np.zeros((17, env.n_agents), dtype=int))
    busy = np.flatnonzero(steps[-1].obs[:, 2] > 0)
    assert len(busy) == 1
    a = np.zeros(env.n_agents, dtype=int)
    a[busy[0]] = 2
    ts = env.step(a)
    sim = env.raw_env.single_env._simulator
    pilots = sim.pilot_signals[:, 17]
    assert pilots[busy[0]] == 16 and np.count_nonzero(pilots) == 1
    assert ts.reward > 0 and ts.info["reward_breakdown"]["profit"] > 0


@pytest.mark.parametrize("traces", ["real", "gmm"])
def test_evcharging_reset_determinism(evcharging, traces):
    env = evcharging if traces == "real" else make_env("evcharging", traces="gmm", obs_view="global", episode_limit=100)
    acts = random_actions(env, 100, seed=4)
    a, first_a = rollout(env, 0, acts)
    b, first_b = rollout(env, 0, acts)
    np.testing.assert_array_equal(first_a.state, first_b.state)
    assert_same(a, b)
    assert len(a) == 100 and a[-1].truncated and not a[-1].terminated
    assert sum(abs(ts.reward) for ts in a) > 0  # EVs charged, so equality above is not vacuous
    c, _ = rollout(env, 1, acts)
    assert any(not np.array_equal(x.state, y.state) for x, y in zip(a, c, strict=True))


def test_debugger_guard_raises_and_restores():
    import pdb

    from drigm.envs.evcharging import EVChargingSolverError, debugger_raises

    saved = pdb.set_trace, sys.breakpointhook
    with debugger_raises():
        with pytest.raises(EVChargingSolverError):
            pdb.set_trace()
        with pytest.raises(EVChargingSolverError):
            breakpoint()
    assert (pdb.set_trace, sys.breakpointhook) == saved


_SOLVER_FAILURE_SCRIPT = textwrap.dedent(
    """
    import cvxpy as cp
    import numpy as np
    from drigm.envs import EnvError, make_env
    from drigm.envs.evcharging import EVChargingSolverError

    def infeasible(env):
        single = env.raw_env.single_env
        x = single._projected_action
        single.prob = cp.Problem(cp.Minimize(0), [x >= 1, x <= 0])

    for solver in ("ECOS", None):
        env = make_env("evcharging", episode_limit=5, solver=solver)
        env.reset(seed=0)
        if solver is None:
            cp.MOSEK = "NO_SUCH_SOLVER"  # SustainGym's MOSEK attempt fails, it falls back to ECOS, then pdb
        infeasible(env)
        try:
            env.step(np.zeros(env.n_agents, dtype=int))
        except EVChargingSolverError as exc:
            print("RAISED", solver, exc)
        try:
            env.step(np.zeros(env.n_agents, dtype=int))
        except EnvError:
            print("NEEDS RESET", solver)
    """
)


def test_evcharging_solver_failure_raises_instead_of_hanging():
    """An infeasible projection raises EVChargingSolverError; SustainGym's pdb.set_trace() must not wait on stdin."""
    import os

    read_end, write_end = os.pipe()  # a stdin that never reaches EOF: a real pdb prompt would block on it
    try:
        proc = subprocess.run(
            [sys.executable, "-c", _SOLVER_FAILURE_SCRIPT],
            stdin=read_end,
            capture_output=True,
            text=True,
            timeout=240,
        )
    finally:
        os.close(read_end)
        os.close(write_end)
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = proc.stdout.splitlines()
    assert any(line.startswith("RAISED ECOS the action projection is infeasible") for line in lines), proc.stdout
    assert any(line.startswith("RAISED None SustainGym's EV charging env called the debugger") for line in lines)
    assert "NEEDS RESET ECOS" in lines and "NEEDS RESET None" in lines
    assert "(Pdb)" not in proc.stdout


@pytest.fixture(scope="module")
def jpl_pair() -> tuple[MultiAgentEnv, MultiAgentEnv]:
    """JPL Summer 2019 (52 stations) unpadded and padded to caltech's 54 agents."""
    return make_env("evcharging:jpl", episode_limit=90), make_env("evcharging:jpl", episode_limit=90, pad_agents=54)


def test_evcharging_padding_shapes_masks_and_empty_station_view(jpl_pair):
    from gymnasium import spaces

    plain, env = jpl_pair
    assert (plain.n_agents, plain.obs_dim, plain.state_dim) == (52, 40, 142)
    assert (env.n_agents, env.n_actions, env.obs_dim, env.state_dim) == (54, 5, 40, 146)
    assert env.n_stations == len(env.station_ids) == 52 and env.station_ids == plain.station_ids
    acts = np.zeros((70, 54), dtype=int)
    acts[:, :52] = 4
    steps, first = rollout(env, 0, acts)
    for ts in (first, steps[-1]):
        check_timestep(env, ts)
        assert ts.avail_actions[:52].all()
        np.testing.assert_array_equal(ts.avail_actions[52:], [[True, False, False, False, False]] * 2)
    ts = steps[-1]
    busy = ts.state[env.demands_slice] > 0
    assert busy[:52].any() and not busy[:52].all() and not busy[52:].any()
    # a phantom sees exactly what an empty real station sees: [time, 0, 0, prev MOER, MOER forecast]
    empty = int(np.flatnonzero((ts.obs[:52, 1] == 0) & (ts.obs[:52, 2] == 0))[0])
    np.testing.assert_array_equal(ts.obs[52], ts.obs[empty])
    np.testing.assert_array_equal(ts.obs[53], ts.obs[empty])
    assert (ts.obs[52, 1:3] == 0).all()
    # the state keeps SustainGym's layout, each per-station block padded by empty stations after the real ones
    layout = env.raw_env.single_env.observation_space
    raw = spaces.unflatten(layout, np.delete(ts.state, [52, 53, 106, 107]))
    assert env.demands_slice == slice(0, 54) and list(layout.spaces)[:2] == ["demands", "est_departures"]
    np.testing.assert_array_equal(ts.state[:52], raw["demands"])
    np.testing.assert_array_equal(ts.state[54:106], raw["est_departures"])
    assert (ts.state[[52, 53, 106, 107]] == 0).all() and (raw["est_departures"] != 0).any()
    for i in range(52):  # the local view of real agents reads their own (unshifted) entries
        assert ts.obs[i, 1] == raw["est_departures"][i] and ts.obs[i, 2] == raw["demands"][i]
    with pytest.raises(EnvError, match="action 1 of agent 53 is not available"):
        env.reset(seed=0)
        env.step(np.array([0] * 53 + [1]))


def test_evcharging_padding_keeps_the_unpadded_reward_and_dynamics(jpl_pair):
    plain, env = jpl_pair
    real = random_actions(plain, 90, seed=11)
    padded = np.concatenate([real, np.zeros((90, 2), dtype=int)], axis=1)
    a, first_a = rollout(plain, 0, real)
    b, first_b = rollout(env, 0, padded)
    assert first_a.info == first_b.info and len(a) == len(b) == 90 and b[-1].truncated
    drop = [52, 53, 106, 107]  # the phantoms' entries of the padded state
    np.testing.assert_array_equal(np.delete(first_b.state, drop), first_a.state)
    for x, y in zip(a, b, strict=True):
        assert x.reward == y.reward and x.info["reward_breakdown"] == y.info["reward_breakdown"]
        np.testing.assert_array_equal(np.delete(y.state, drop), x.state)
        np.testing.assert_array_equal(y.obs[:52], x.obs)
    assert sum(abs(ts.reward) for ts in a) > 0  # EVs charged, so the equality is not vacuous


def test_evcharging_padding_global_view():
    env = make_env("evcharging:jpl", pad_agents=55, obs_view="global", episode_limit=2)
    ts = env.reset(seed=1)
    assert (env.n_agents, env.obs_dim, env.state_dim) == (55, 2 * 55 + 2 + 36, 2 * 55 + 2 + 36)
    np.testing.assert_array_equal(ts.obs, np.tile(ts.state, (55, 1)))
    assert env.reset(seed=1).avail_actions[52:, 1:].sum() == 0


def test_evcharging_shift_protocol_test_envs_match_training_shapes():
    """Every test env of the evcharging-shift protocol (the JPL one padded) has the training env's shapes."""
    from drigm.evaluation import make_test_env
    from drigm.protocol import load_protocol

    proto = load_protocol("evcharging-shift", "smoke")
    train = make_test_env({"episode_limit": None, "kwargs": {}, **proto.run["env"]})

    def shapes(e: MultiAgentEnv) -> tuple[int, ...]:
        return (e.n_agents, e.n_actions, e.obs_dim, e.state_dim)

    assert shapes(train) == (54, 5, 40, 146)
    jpl = [t for t in proto.tests if t.env["name"] == "evcharging:jpl"]
    assert len(jpl) == 1 and jpl[0].env["kwargs"]["pad_agents"] == 54
    for test in proto.tests:
        env = make_test_env(test.env)
        assert shapes(env) == shapes(train), test.name
        check_timestep(env, env.reset(seed=0))
        env.close()


@pytest.mark.parametrize(
    ("spec", "kwargs", "match"),
    [
        ("evcharging:mars", {}, "site="),
        ("evcharging", {"period": "Winter 2030"}, "period="),
        ("evcharging", {"traces": "fake"}, "traces="),
        ("evcharging", {"n_levels": 1}, "n_levels"),
        ("evcharging", {"obs_view": "mine"}, "obs_view"),
        ("evcharging", {"moer_forecast_steps": 37}, "moer_forecast_steps"),
        ("evcharging", {"episode_limit": 289}, "episode_limit"),
        ("evcharging", {"solver": "NOT_A_SOLVER"}, "solver="),
        ("evcharging", {"requested_energy_cap": -1}, "requested_energy_cap"),
        ("evcharging", {"requested_energy_cap": 0}, "requested_energy_cap"),
        ("evcharging", {"traces": "gmm", "use_unclaimed": True}, "real traces only"),
        ("evcharging:jpl", {"site": "jpl"}, "twice"),
        ("evcharging", {"speed": 3}, "unknown evcharging kwargs"),
        ("evcharging:jpl", {"pad_agents": 50}, "pad_agents=50 is smaller than the 52 stations"),
        ("evcharging", {"pad_agents": 0}, "pad_agents"),
        ("evcharging", {"pad_agents": True}, "pad_agents"),
    ],
)
def test_evcharging_bad_arguments(spec, kwargs, match):
    with pytest.raises(EnvError, match=match):
        make_env(spec, **kwargs)


# ----------------------------------------------------------------------------------------------------
# cogeneration
# ----------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def cogen() -> MultiAgentEnv:
    return make_env("cogen")


def test_cogen_shapes_grid_and_team_reward(cogen):
    env = cogen
    assert (env.n_agents, env.n_actions, env.obs_dim, env.state_dim, env.episode_limit) == (4, 60, 124, 124, 96)
    assert env.agent_ids == ("GT1", "GT2", "GT3", "ST")
    ts = env.reset(seed=5)
    check_timestep(env, ts)
    assert ts.avail_actions.all()
    np.testing.assert_array_equal(ts.obs, np.tile(ts.state, (4, 1)))
    # the grid: mixed radix, first factor slowest
    space = env.raw_env.action_spaces["GT1"]
    lo = env.action_dict(0, 0)
    hi = env.action_dict(0, 59)
    assert lo["GT1_PWR"][0] == space["GT1_PWR"].low[0] and hi["GT1_PWR"][0] == space["GT1_PWR"].high[0]
    assert (lo["GT1_PAC_FFU"], lo["GT1_EVC_FFU"], hi["GT1_PAC_FFU"], hi["GT1_EVC_FFU"]) == (0, 0, 1, 1)
    mid = env.action_dict(0, ((2 * 2 + 1) * 2 + 0) * 3 + 1)  # power level 2, PAC on, EVC off, steam level 1
    assert mid["GT1_PWR"][0] == pytest.approx((space["GT1_PWR"].low[0] + space["GT1_PWR"].high[0]) / 2)
    assert (mid["GT1_PAC_FFU"], mid["GT1_EVC_FFU"]) == (1, 0)
    assert [env.action_dict(3, i)["CT_NrBays"] for i in range(4)] == [1, 4, 8, 12]
    for agent in range(4):
        assert env.raw_env.action_spaces[env.agent_ids[agent]].contains(env.action_dict(agent, 37))
    # team reward = sum of the agents' rewards, each recomputed from SustainGym's cost breakdown
    single = env.raw_env.single_env
    for a in random_actions(env, 5, seed=6):
        ts = env.step(a)
        check_timestep(env, ts)
        costs = single.current_info
        want = [
            -(
                costs["fuel_costs"][g]
                + costs["ramp_costs"][g]
                + costs["dyn_cv_costs"][g]
                + costs["non_delivery_cost"] / 4
            )
            for g in env.agent_ids
        ]
        np.testing.assert_allclose(ts.info["agent_rewards"], want, rtol=1e-12)
        assert ts.reward == pytest.approx(sum(want), rel=1e-12)
        assert ts.reward < 0


def test_cogen_determinism_noise_and_days(cogen):
    env = cogen  # forecast noise std 0.1 (SustainGym's multi-agent default)
    acts = random_actions(env, 6, seed=7)
    a, first_a = rollout(env, 9, acts)
    b, first_b = rollout(env, 9, acts)
    np.testing.assert_array_equal(first_a.state, first_b.state)
    assert_same(a, b)
    _, first_c = rollout(env, 9 + 252, acts)  # same day, other noise and initial previous action
    assert first_c.info["day"] == first_a.info["day"] == 9
    assert not np.array_equal(first_a.state, first_c.state)
    assert env.day_of_seed(251) == 251 and env.day_of_seed(252) == 0
    pool = make_env("cogen", days="100:110", episode_limit=2)
    assert {pool.reset(seed=s).info["day"] for s in range(25)} == set(range(100, 110))


def test_cogen_renewables_and_full_last_day():
    """300 MW of wind lowers the target net power fed to the env; the last playable day runs all 96 steps."""
    from drigm.envs.cogen import ambient_days

    calm = make_env("cogen", forecast_noise_std=0.0, days=251)
    windy = make_env("cogen:300", forecast_noise_std=0.0, days=251)
    assert windy.config["renewables_magnitude"] == 300.0
    base = ambient_days(0.0)[251]["Target Net Power"].to_numpy()
    wind = ambient_days(300.0)[251]["Target Net Power"].to_numpy()
    assert (wind <= base).all() and (wind < base).any()
    acts = np.zeros((100, 4), dtype=int)
    steps_calm, _ = rollout(calm, 0, acts)
    steps_windy, _ = rollout(windy, 0, acts)
    assert len(steps_windy) == 96 and steps_windy[-1].terminated and not steps_windy[-1].truncated
    target = flat_block(windy.raw_env.single_env.observation_space, "Target_Power")
    assert target.stop - target.start == 13
    for t in (0, 40, 80):
        np.testing.assert_allclose(steps_windy[t].state[target], np.float32(wind[t + 1 : t + 14]), rtol=1e-6)
        np.testing.assert_allclose(steps_calm[t].state[target], np.float32(base[t + 1 : t + 14]), rtol=1e-6)
    with pytest.raises(EnvError, match="episode ended"):
        windy.step(acts[0])


def test_cogen_masks_smaller_grids():
    env = make_env("cogen", bays=(1, 12), episode_limit=2)
    ts = env.reset(seed=0)
    assert env.n_actions == 60 and ts.avail_actions[:3].all()
    assert ts.avail_actions[3].sum() == 30 and not ts.avail_actions[3, 30:].any()
    with pytest.raises(EnvError, match="not available"):
        env.step(np.array([0, 0, 0, 45]))
    ts = env.step(np.array([59, 59, 59, 29]))
    assert env.raw_env.single_env.current_action["CT_NrBays"] == 12
    ts = env.step(np.array([0, 0, 0, 0]))
    assert ts.truncated and not ts.terminated


@pytest.mark.parametrize(
    ("spec", "kwargs", "match"),
    [
        ("cogen", {"renewables_magnitude": -5}, "renewables_magnitude"),
        ("cogen:lots", {}, "wind capacity"),
        ("cogen:100", {"renewables_magnitude": 100}, "twice"),
        ("cogen", {"forecast_noise_std": -0.1}, "forecast_noise_std"),
        ("cogen", {"forecast_horizon": 95}, "forecast_horizon"),
        ("cogen", {"power_levels": 1}, "power_levels"),
        ("cogen", {"bays": []}, "bays"),
        ("cogen", {"bays": [0, 4]}, "bays"),
        ("cogen", {"days": 252}, "outside"),
        ("cogen", {"episode_limit": 97}, "episode_limit"),
        ("cogen", {"noise": 1.0}, "unknown cogen kwargs"),
    ],
)
def test_cogen_bad_arguments(spec, kwargs, match):
    with pytest.raises(EnvError, match=match):
        make_env(spec, **kwargs)


# ----------------------------------------------------------------------------------------------------
# all adapters
# ----------------------------------------------------------------------------------------------------
def test_adapters_run_offline(monkeypatch):
    """Everything the adapters use ships with SustainGym: building, stepping and resetting open no connection."""
    import socket

    def refuse(*args, **kwargs):
        raise OSError("an adapter tried to use the network")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(socket, "getaddrinfo", refuse)
    cases = [
        ("building:Seattle", {}),
        ("evcharging:jpl", {"period": "Fall 2019", "traces": "gmm"}),
        ("evcharging", {"period": "Summer 2021"}),
        ("cogen:100", {}),
    ]
    for spec, kwargs in cases:
        env = make_env(spec, episode_limit=2, **kwargs)
        env.reset(seed=1)
        ts = env.step(np.zeros(env.n_agents, dtype=np.int64))
        check_timestep(env, ts)
        env.close()
