"""``cogen`` / ``cogen:RENEWABLES_MW``: SustainGym's multi-agent cogeneration plant (agents GT1, GT2, GT3, ST).

The environment is ``MultiAgentCogenEnv(renewables_magnitude, ramp_penalty, supply_imbalance_penalty,
constraint_violation_penalty, forecast_horizon, forecast_noise_std)`` with SustainGym's multi-agent defaults
(0 MW of wind, horizon 12, noise std 0.1). ``renewables_magnitude`` (MW of wind capacity subtracted from the
target net power) and ``forecast_noise_std`` (Gaussian noise on the forecast steps after the first) are the
shift knobs: the protocol trains at 0 MW and tests at 100, 200 and 300 MW, with and without noise.

Days. SustainGym holds 253 days of 96 fifteen-minute steps; its last day cannot be played (its forecasts read
past the data), so 252 days are usable. ``reset(seed)`` plays day ``days[seed % len(days)]`` of a day pool
(``days``: None = all 252, an int, ``"START:STOP"`` or a list) and hands SustainGym a seed congruent to that
day, distinct per episode seed, which also fixes the forecast noise and the random initial "previous action".

Actions: each agent's Dict action becomes one index into a grid, mixed radix with the first factor slowest.
    GTg (g = 1, 2, 3): GTg_PWR (``power_levels`` points from its min to its max) x GTg_PAC_FFU {0, 1}
        x GTg_EVC_FFU {0, 1} x HRg_HPIP_M_PROC (``steam_levels`` points) -> 5 * 2 * 2 * 3 = 60 by default
    ST: ST_PWR (``power_levels`` points) x IPPROC_M (``steam_levels`` points) x CT_NrBays (``bays``)
        -> 5 * 3 * 4 = 60 by default (bays 1, 4, 8, 12)
``n_actions`` is the largest grid; when the grids differ, the indices past an agent's own grid are masked.

Observations: every agent and the global state get SustainGym's flattened observation, its Dict keys in
alphabetical order (the seven forecasts of forecast_horizon + 1 steps each, the previous action with its
switches and bay count one-hot, the time of day: 33 + 7 * (forecast_horizon + 1) values). The team
reward is the sum of the four agents' rewards (``info["agent_rewards"]``). The day ends by SustainGym's
termination after 96 steps; an ``episode_limit`` below 96 truncates earlier.

Data: SustainGym rebuilds its ambient tables from spreadsheets (about 40 s) and caches them inside
site-packages. This adapter instead caches the 0 MW tables once under :func:`cache_dir` (atomic write) and
derives the others with SustainGym's own wind curve, ``max(target - wind, 0)`` as SustainGym does, handing
them to the env through a patch scoped to its constructor; site-packages is never written.
"""

from __future__ import annotations

import contextlib
import importlib.metadata
import itertools
import os
import pickle
import tempfile
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np

from drigm.envs.base import EnvError, TimeStep
from drigm.envs.sustaingym_common import (
    SustainGymAdapter,
    cache_dir,
    check_episode_limit,
    check_factory_kwargs,
    check_float,
    check_int,
    no_warnings,
    parse_days,
    quiet,
)

with quiet():
    import pandas as pd
    from gymnasium import spaces
    from sustaingym.data.cogen import load_ambients
    from sustaingym.envs.cogen import MultiAgentCogenEnv

AGENTS = ("GT1", "GT2", "GT3", "ST")
STEPS_PER_DAY = 96
DEFAULT_BAYS = (1, 4, 8, 12)
_AMBIENTS: dict[float, list[pd.DataFrame]] = {}


def _base_cache_path() -> str:
    version = importlib.metadata.version("sustaingym")
    return os.fspath(cache_dir() / f"cogen_ambients_wind0_sustaingym-{version}.pkl")


def _base_days() -> list[pd.DataFrame]:
    if 0.0 in _AMBIENTS:
        return _AMBIENTS[0.0]
    path = _base_cache_path()
    days: list[pd.DataFrame] | None = None
    with (
        contextlib.suppress(OSError, pickle.UnpicklingError, EOFError, AttributeError, ImportError),
        open(path, "rb") as f,
    ):
        days = pickle.load(f)
    if not isinstance(days, list) or not days:
        saved = load_ambients.save_pickle
        load_ambients.save_pickle = lambda obj, path: None  # SustainGym would write into site-packages
        try:
            with quiet():
                days = load_ambients.construct_df(renewables_magnitude=0.0)
        finally:
            load_ambients.save_pickle = saved
        os.makedirs(os.path.dirname(path), exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=os.path.dirname(path), suffix=".tmp")
        try:
            with os.fdopen(fd, "wb") as f:
                pickle.dump(days, f, protocol=pickle.HIGHEST_PROTOCOL)
            os.chmod(tmp, 0o644)
            os.replace(tmp, path)
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.remove(tmp)
    _AMBIENTS[0.0] = days
    return days


def ambient_days(renewables_magnitude: float) -> list[pd.DataFrame]:
    """SustainGym's per-day ambient tables for a wind capacity (MW), equal to its ``construct_df`` output."""
    m = float(renewables_magnitude)
    if m not in _AMBIENTS:
        base = _base_days()
        # construct_df subtracts the wind power row by row from the whole table, then splits it into days (the
        # day tables keep the row labels); max(max(x, 0) - w, 0) == max(x - w, 0) for w >= 0, so 0 MW is a base
        with quiet():
            wind = np.asarray(load_ambients.load_wind_data(m))
        days = []
        for day in base:
            d = day.copy()
            d["Target Net Power"] = np.maximum(d["Target Net Power"].to_numpy() - wind[d.index.to_numpy()], 0)
            days.append(d)
        _AMBIENTS[m] = days
    return _AMBIENTS[m]


@contextlib.contextmanager
def _ambients_patched(days: list[pd.DataFrame]) -> Iterator[None]:
    saved = load_ambients.construct_df
    load_ambients.construct_df = lambda renewables_magnitude=0.0: days
    try:
        yield
    finally:
        load_ambients.construct_df = saved


def _grid_values(space: spaces.Space, n: int | Sequence[int]) -> list[Any]:
    if isinstance(space, spaces.Box):
        lo, hi = float(space.low[0]), float(space.high[0])
        return [np.array([v], dtype=np.float32) for v in np.linspace(lo, hi, int(n)).astype(np.float32)]
    assert isinstance(space, spaces.Discrete)
    values = range(int(space.start), int(space.start + space.n)) if isinstance(n, int) else n
    return [np.int64(v) for v in values]


class CogenAdapter(SustainGymAdapter):
    """SustainGym's multi-agent cogeneration env as a MultiAgentEnv; deterministic given the seed."""

    def __init__(
        self,
        renewables_magnitude: float = 0.0,
        *,
        forecast_noise_std: float = 0.1,
        forecast_horizon: int = 12,
        ramp_penalty: float = 2.0,
        supply_imbalance_penalty: float = 1000.0,
        constraint_violation_penalty: float = 1000.0,
        power_levels: int = 5,
        steam_levels: int = 3,
        bays: Sequence[int] = DEFAULT_BAYS,
        days: int | str | Sequence[int] | None = None,
        episode_limit: int | None = None,
    ) -> None:
        mag = check_float("renewables_magnitude", renewables_magnitude, 0.0)
        noise = check_float("forecast_noise_std", forecast_noise_std, 0.0)
        horizon = check_int("forecast_horizon", forecast_horizon, 0, STEPS_PER_DAY - 2)
        penalties = {
            name: check_float(name, value, 0.0)
            for name, value in (
                ("ramp_penalty", ramp_penalty),
                ("supply_imbalance_penalty", supply_imbalance_penalty),
                ("constraint_violation_penalty", constraint_violation_penalty),
            )
        }
        p_levels = check_int("power_levels", power_levels, 2)
        s_levels = check_int("steam_levels", steam_levels, 2)
        if isinstance(bays, str | bytes) or not isinstance(bays, Sequence) or not bays:
            raise EnvError(f"bays={bays!r} must be a non-empty list of cooling-bay counts in 1..12")
        bay_list = tuple(check_int("bays[]", b, 1, 12) for b in bays)
        if len(set(bay_list)) != len(bay_list):
            raise EnvError(f"bays={bays!r} has duplicates")
        limit = check_episode_limit(episode_limit, STEPS_PER_DAY)
        ambients = ambient_days(mag)
        with _ambients_patched(ambients), quiet():
            self._env = MultiAgentCogenEnv(
                renewables_magnitude=mag,
                forecast_horizon=horizon,
                forecast_noise_std=noise,
                **penalties,
            )
        self._single = self._env.single_env
        self._n_days = int(self._single.n_days)
        self._days = parse_days(days, self._n_days - 1, "playable days")
        self.config = {
            "renewables_magnitude": mag,
            "forecast_noise_std": noise,
            "forecast_horizon": horizon,
            **penalties,
        }
        # the action grids, one list of Dict actions per agent (first factor slowest)
        self._grids: list[list[dict[str, Any]]] = []
        self._factors: dict[str, list[tuple[str, int]]] = {}
        for agent in AGENTS:
            keys = self._env.agents_to_action_keys[agent]
            space = self._env.action_spaces[agent]
            order = [k for k in keys if k.endswith("_PWR")]
            order += [k for k in keys if k.endswith("_PAC_FFU")] + [k for k in keys if k.endswith("_EVC_FFU")]
            order += [k for k in keys if k.startswith("HR") or k == "IPPROC_M"] + [k for k in keys if k == "CT_NrBays"]
            assert sorted(order) == sorted(keys), (agent, keys)
            counts: dict[str, int | Sequence[int]] = {}
            for key in order:
                if key.endswith("_PWR"):
                    counts[key] = p_levels
                elif key.startswith("HR") or key == "IPPROC_M":
                    counts[key] = s_levels
                elif key == "CT_NrBays":
                    counts[key] = bay_list
                else:
                    counts[key] = 2  # the binary switches, both values
            values = [_grid_values(space[key], counts[key]) for key in order]
            self._grids.append([dict(zip(order, combo, strict=True)) for combo in itertools.product(*values)])
            self._factors[agent] = [(key, len(v)) for key, v in zip(order, values, strict=True)]
        avail = np.zeros((len(AGENTS), max(len(g) for g in self._grids)), dtype=bool)
        for i, grid in enumerate(self._grids):
            avail[i, : len(grid)] = True
        self._obs_space = self._single.observation_space
        self._state_dim = int(spaces.flatdim(self._obs_space))
        self._day = -1
        super().__init__(limit, avail)

    # ----- shapes and facts -----------------------------------------------------------------------
    @property
    def obs_dim(self) -> int:
        return self._state_dim

    @property
    def state_dim(self) -> int:
        return self._state_dim

    @property
    def agent_ids(self) -> tuple[str, ...]:
        """SustainGym's agent names, in agent order."""
        return AGENTS

    @property
    def action_factors(self) -> dict[str, list[tuple[str, int]]]:
        """Per agent, the grid's factors (action key, number of values), slowest first."""
        return {k: list(v) for k, v in self._factors.items()}

    @property
    def days(self) -> tuple[int, ...]:
        """The day pool; reset(seed) plays ``days[seed % len(days)]``."""
        return self._days

    @property
    def raw_env(self) -> MultiAgentCogenEnv:
        """The wrapped SustainGym environment."""
        return self._env

    def action_dict(self, agent: int, action: int) -> dict[str, Any]:
        """The SustainGym Dict action of grid index `action` for agent index `agent` (a fresh dict)."""
        grid = self._grids[check_int("agent", agent, 0, len(AGENTS) - 1)]
        return dict(grid[check_int("action", action, 0, len(grid) - 1)])

    def day_of_seed(self, seed: int) -> int:
        """The SustainGym day index that ``reset(seed)`` plays."""
        return self._days[check_int("seed", seed, 0) % len(self._days)]

    # ----- dynamics -------------------------------------------------------------------------------
    def _flat_timestep(
        self, flat: np.ndarray, reward: float, terminated: bool, truncated: bool, info: dict
    ) -> TimeStep:
        g = np.asarray(flat, dtype=np.float32)
        return self._timestep(np.tile(g, (len(AGENTS), 1)), g, reward, terminated, truncated, info)

    def reset(self, seed: int | None = None) -> TimeStep:
        s = self._begin_reset(seed)
        L = len(self._days)
        self._day = self._days[s % L]
        sg_seed = self._day + self._n_days * (s // L)  # SustainGym plays day sg_seed % n_days
        with no_warnings():
            obss, _ = self._env.reset(seed=sg_seed)
        assert self._single.current_day == self._day
        self._end_reset()
        return self._flat_timestep(obss[AGENTS[0]], 0.0, False, False, {"seed": s, "day": self._day})

    def step(self, actions: np.ndarray) -> TimeStep:
        t, a = self._begin_step(actions)
        acts = {agent: dict(self._grids[i][int(a[i])]) for i, agent in enumerate(AGENTS)}
        with no_warnings():
            obss, rewards, terminateds, _, _ = self._env.step(acts)
        terminated = bool(terminateds[AGENTS[0]])
        truncated = self._end_step(t, terminated)
        agent_rewards = np.array([float(rewards[agent]) for agent in AGENTS])
        info = {"day": self._day, "t": t + 1, "agent_rewards": agent_rewards}
        return self._flat_timestep(obss[AGENTS[0]], float(agent_rewards.sum()), terminated, truncated, info)


def make_cogen_env(arg: str | None = None, **kwargs: Any) -> CogenAdapter:
    """Registry factory: ``cogen`` (0 MW of wind) or ``cogen:MW``; kwargs as :class:`CogenAdapter`."""
    check_factory_kwargs("cogen", CogenAdapter, arg, "renewables_magnitude", kwargs)
    if arg is not None:
        try:
            kwargs["renewables_magnitude"] = float(arg)
        except ValueError:
            raise EnvError(f"'cogen:{arg}': the argument is the wind capacity in MW, a number like 100") from None
    return CogenAdapter(**kwargs)
