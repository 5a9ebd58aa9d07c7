"""``evcharging`` / ``evcharging:SITE``: SustainGym's multi-agent EV charging, one agent per charging station.

The environment is ``MultiAgentEVChargingEnv`` on the ``caltech`` (54 stations) or ``jpl`` (52) garage for a
date period of :data:`PERIODS` (``"Summer 2019"``, ``"Fall 2019"``, ``"Spring 2020"``, ``"Summer 2021"``, or
their aliases), with real ACN-Data traces (``traces="real"``) or traces sampled from SustainGym's 30-component
GMMs (``traces="gmm"``). Both ship with SustainGym, as does the MOER data, so nothing is downloaded; other
periods would download or train and are refused.

Seeds. Real traces replay day ``period_start + seed % n_days`` of the period (SustainGym's sequential
generator; its MOER signal comes from the following day, a SustainGym quirk). GMM traces draw the session
count, sessions, stations and the MOER day from the seed. ``info`` reports the days.

Actions. Agent i picks one of ``n_levels`` (default 5) pilot levels ``j / (n_levels - 1)`` of 32 A for station
``station_ids[i]`` ({0, 8, 16, 24, 32} A for 5 levels). The adapter builds the env with continuous actions and maps
the levels itself; every level is available to a real station (SustainGym's projection enforces the network and
demand limits; phantom stations, see Padding, have only level 0). The projection is a convex program: MOSEK,
SustainGym's first choice, is unusable without a licence (it raises, and SustainGym then crashes instead of falling
back), so the adapter solves it with ``solver`` (default ``"ECOS"``, SustainGym's fallback); ``solver=None`` keeps
SustainGym's own MOSEK-then-ECOS routine. On an infeasible projection SustainGym calls ``pdb.set_trace()``; every
call into SustainGym runs with ``pdb.set_trace`` and ``breakpoint()`` replaced by a function raising
:class:`EVChargingSolverError`, so a failure never hangs a run. Any solver failure raises that error; the episode
must then be reset.

Observations. The global state is SustainGym's flattened observation, padded as below (2n + 2 + k values, n =
``n_agents``, k = ``moer_forecast_steps``: demands, estimated departures, the MOER forecast, the previous MOER, the
time of day). ``obs_view="local"`` gives agent i [time of day, its estimated departure, its demand, previous MOER,
MOER forecast] (4 + k values); ``"global"`` gives every agent the state. The team reward is SustainGym's reward
(the sum of the agents' equal shares). The day ends by SustainGym's termination after 288 five-minute steps; an
``episode_limit`` below 288 truncates earlier.

Padding (cross-site evaluation). The agent count is the site's station count (caltech 54, jpl 52), so networks
trained on one site cannot act on the other. ``pad_agents=N`` (N >= the site's stations, else EnvError) appends
N - n_stations phantom stations after the real ones: agents ``n_stations .. N-1``. A phantom never has a car and
is never handed to SustainGym, so it changes neither the dynamics nor the reward (identical to the unpadded env
for the same seed and real actions); its only available action is index 0, the zero pilot (any other action is
refused, not clipped). What it observes is exactly what an empty real station observes: SustainGym zero-fills
both per-station entries of a station without a car (:data:`EMPTY_STATION_VALUE`), so a phantom's local
observation is [time of day, 0, 0, previous MOER, MOER forecast], shared entries included. The global state keeps
the training site's layout: each per-station block (``demands``, ``est_departures``) gets the phantoms' zeros
after the real stations, so state entry ``block + i`` still belongs to agent i and ``state_dim`` is 2N + 2 + k
(with ``obs_view="global"`` every agent sees this padded state). The mapping is positional: agent i is the
i-th station of whichever site runs, not a physically matching station, and the real sites differ in network
limits; padding makes shapes agree, it does not make the sites alike.
"""

from __future__ import annotations

import contextlib
import pdb
import sys
from collections.abc import Iterator
from datetime import timedelta
from typing import Any, NoReturn

import numpy as np

from drigm.envs.base import EnvError, TimeStep
from drigm.envs.sustaingym_common import (
    SustainGymAdapter,
    check_choice,
    check_episode_limit,
    check_factory_kwargs,
    check_float,
    check_int,
    no_warnings,
    quiet,
)

with quiet():
    import cvxpy as cp
    from sustaingym.envs.evcharging import GMMsTraceGenerator, MultiAgentEVChargingEnv, RealTraceGenerator
    from sustaingym.envs.evcharging.env import EVChargingEnv
    from sustaingym.envs.evcharging.utils import DEFAULT_PERIOD_TO_RANGE

SITES = ("caltech", "jpl")
PERIODS = tuple(DEFAULT_PERIOD_TO_RANGE)
"""SustainGym's bundled date periods (names and aliases); each maps to a (first, last) date range."""
TRACES = ("real", "gmm")
OBS_VIEWS = ("local", "global")
STEPS_PER_DAY = 288
GMM_COMPONENTS = 30
"""The component count of the GMMs SustainGym ships (others would be trained at run time)."""
PER_STATION_KEYS = ("est_departures", "demands")
"""SustainGym's observation entries with one value per station (padded for phantom stations)."""
EMPTY_STATION_VALUE = 0.0
"""What SustainGym observes at a station without a car: ``_get_observation`` zero-fills both per-station entries."""


class EVChargingSolverError(RuntimeError):
    """The EV charging env's action projection failed (solver error or infeasible problem); reset the episode."""


def _refuse_debugger(*args: Any, **kwargs: Any) -> NoReturn:
    raise EVChargingSolverError(
        "SustainGym's EV charging env called the debugger after its action-projection solver failed "
        "(the projection problem is infeasible or the solver errored); reset the episode"
    )


@contextlib.contextmanager
def debugger_raises() -> Iterator[None]:
    """Inside the block, ``pdb.set_trace()`` and ``breakpoint()`` raise EVChargingSolverError; restored after it."""
    saved_trace, saved_hook = pdb.set_trace, sys.breakpointhook
    pdb.set_trace = _refuse_debugger
    sys.breakpointhook = _refuse_debugger
    try:
        yield
    finally:
        pdb.set_trace = saved_trace
        sys.breakpointhook = saved_hook


class EVChargingAdapter(SustainGymAdapter):
    """SustainGym's multi-agent EV charging env as a MultiAgentEnv; deterministic given the seed.

    With ``pad_agents`` the agents past ``n_stations`` are phantom stations: always empty, only the zero
    pilot available, never passed to SustainGym (the reward is the unpadded env's).
    """

    _NOT_STARTED = "call reset() before step() (a solver failure also ends the episode)"

    def __init__(
        self,
        site: str = "caltech",
        *,
        period: str = "Summer 2019",
        traces: str = "real",
        n_levels: int = 5,
        obs_view: str = "local",
        moer_forecast_steps: int = 36,
        episode_limit: int | None = None,
        solver: str | None = "ECOS",
        requested_energy_cap: float = 100.0,
        use_unclaimed: bool = False,
        pad_agents: int | None = None,
    ) -> None:
        self._site = check_choice("site", site, SITES)
        self._period = check_choice("period", period, PERIODS)
        self._traces = check_choice("traces", traces, TRACES)
        k = check_int("n_levels", n_levels, 2)
        self._obs_view = check_choice("obs_view", obs_view, OBS_VIEWS)
        m = check_int("moer_forecast_steps", moer_forecast_steps, 1, 36)
        limit = check_episode_limit(episode_limit, STEPS_PER_DAY)
        pad = None if pad_agents is None else check_int("pad_agents", pad_agents, 1)
        if solver is not None:
            check_choice("solver", solver, tuple(cp.installed_solvers()))
        self._solver = solver
        cap = check_float("requested_energy_cap", requested_energy_cap, 0.0)
        if cap <= 0:
            raise EnvError(f"requested_energy_cap={requested_energy_cap!r} must be positive (kWh)")
        if not isinstance(use_unclaimed, bool):
            raise EnvError(f"use_unclaimed={use_unclaimed!r} must be a bool")
        if use_unclaimed and self._traces == "gmm":
            raise EnvError("use_unclaimed applies to real traces only")
        with quiet():  # SustainGym's constructor silences warnings process-wide; quiet() restores the filters
            if self._traces == "real":
                gen: Any = RealTraceGenerator(
                    site, period, sequential=True, use_unclaimed=use_unclaimed, requested_energy_cap=cap, seed=0
                )
            else:
                gen = GMMsTraceGenerator(site, period, n_components=GMM_COMPONENTS, requested_energy_cap=cap, seed=0)
            self._env = MultiAgentEVChargingEnv(
                gen, periods_delay=0, moer_forecast_steps=m, project_action_in_env=True, discrete=False, verbose=0
            )
        self._gen = gen
        self._single: EVChargingEnv = self._env.single_env
        # the projection runs through this adapter: an explicit solver, and failures raise
        self._single._project_action = self._project  # type: ignore[method-assign]
        self._station_ids = tuple(self._env.possible_agents)
        n_real = len(self._station_ids)
        if pad is not None and pad < n_real:
            raise EnvError(
                f"pad_agents={pad} is smaller than the {n_real} stations of site {site!r} ({period}); "
                f"it must be >= {n_real} (padding only adds phantom stations, it never drops real ones)"
            )
        n = n_real if pad is None else pad
        self._levels = (np.arange(k, dtype=np.float32) / np.float32(k - 1)).astype(np.float32)
        # The padded state: SustainGym's flat observation with EMPTY_STATION_VALUE appended at index `empty`,
        # gathered through `src` so each per-station block has n entries, the phantoms after the real stations.
        sizes = {key: int(np.prod(space.shape)) for key, space in self._single.observation_space.spaces.items()}
        empty = sum(sizes.values())
        offsets: dict[str, slice] = {}
        src: list[int] = []
        raw = 0
        for key, size in sizes.items():
            offsets[key] = slice(len(src), len(src) + (n if key in PER_STATION_KEYS else size))
            src += range(raw, raw + size)
            raw += size
            if key in PER_STATION_KEYS:
                src += [empty] * (n - n_real)
        self._state_src = None if n == n_real else np.array(src)
        self._state_dim = len(src)
        self._offsets = offsets
        if self._obs_view == "local":
            shared_head = [offsets["timestep"].start]
            shared_tail = [
                offsets["prev_moer"].start,
                *range(offsets["forecasted_moer"].start, offsets["forecasted_moer"].stop),
            ]
            self._obs_idx = np.array(
                [
                    [*shared_head, offsets["est_departures"].start + i, offsets["demands"].start + i, *shared_tail]
                    for i in range(n)
                ]
            )
        else:
            self._obs_idx = np.tile(np.arange(self._state_dim), (n, 1))
        avail = np.ones((n, k), dtype=bool)
        avail[n_real:, 1:] = False  # a phantom station can only be left at the zero pilot
        self._days: dict[str, str] = {}
        super().__init__(limit, avail)

    # ----- shapes and facts -----------------------------------------------------------------------
    @property
    def obs_dim(self) -> int:
        return self._obs_idx.shape[1]

    @property
    def state_dim(self) -> int:
        return self._state_dim

    @property
    def station_ids(self) -> tuple[str, ...]:
        """The real charging stations: agent i < n_stations controls ``station_ids[i]``; later agents are phantoms."""
        return self._station_ids

    @property
    def n_stations(self) -> int:
        """Real charging stations of the site (``n_agents`` minus the phantom stations of ``pad_agents``)."""
        return len(self._station_ids)

    @property
    def demands_slice(self) -> slice:
        """Where the state holds each agent's remaining demand in kWh (0 at a station without a car), agent order."""
        return self._offsets["demands"]

    @property
    def pilot_levels(self) -> np.ndarray:
        """(n_actions,) normalised pilot signal (fraction of 32 A) of each action index (a copy)."""
        return self._levels.copy()

    @property
    def raw_env(self) -> MultiAgentEVChargingEnv:
        """The wrapped SustainGym environment (its projection already routed through this adapter)."""
        return self._env

    @property
    def n_days(self) -> int:
        """Days in the date period."""
        return int(self._gen.num_days_in_date_range)

    # ----- the projection ---------------------------------------------------------------------------
    def _project(self, action: np.ndarray) -> np.ndarray:
        env = self._single
        if self._solver is None:
            try:
                return EVChargingEnv._project_action(env, action)
            except EVChargingSolverError:
                raise
            except Exception as exc:
                raise EVChargingSolverError(
                    f"SustainGym's own projection (MOSEK, then ECOS) failed: {type(exc).__name__}: {exc}. "
                    "Without a MOSEK licence pass solver='ECOS'"
                ) from exc
        env._projected_action.value = action
        env._agent_action.value = action
        env._demands_cvx.value = env._demands
        try:
            env.prob.solve(solver=self._solver, warm_start=True)
        except Exception as exc:
            raise EVChargingSolverError(
                f"the action projection failed with solver {self._solver} at step {env.t}: {type(exc).__name__}: {exc}"
            ) from exc
        value = env._projected_action.value
        if env.prob.status not in (cp.OPTIMAL, cp.OPTIMAL_INACCURATE) or value is None:
            raise EVChargingSolverError(
                f"the action projection is {env.prob.status} (solver {self._solver}, step {env.t}); reset the episode"
            )
        return value

    # ----- dynamics -------------------------------------------------------------------------------
    def _padded_timestep(
        self, obss: dict[str, np.ndarray], reward: float, terminated: bool, truncated: bool, info: dict
    ) -> TimeStep:
        g = np.asarray(obss[self._station_ids[0]], dtype=np.float32)
        if self._state_src is not None:
            g = np.append(g, np.float32(EMPTY_STATION_VALUE))[self._state_src]
        return self._timestep(g[self._obs_idx], g, reward, terminated, truncated, info)

    def reset(self, seed: int | None = None) -> TimeStep:
        s = self._begin_reset(seed)
        with debugger_raises(), no_warnings():
            obss, _ = self._env.reset(seed=s)
        self._days = {"moer_day": self._gen.day.strftime("%Y-%m-%d")}
        if self._traces == "real":
            first = self._gen.date_range[0]
            self._days["events_day"] = (first + timedelta(days=s % self.n_days)).strftime("%Y-%m-%d")
        self._end_reset()
        return self._padded_timestep(obss, 0.0, False, False, {"seed": s, **self._days})

    def step(self, actions: np.ndarray) -> TimeStep:
        t, a = self._begin_step(actions)
        # phantom agents (past n_stations) are at the zero pilot (their only available action): not passed on
        pilots = dict(zip(self._station_ids, self._levels[a[: self.n_stations]].tolist(), strict=True))
        with debugger_raises(), no_warnings():
            obss, rewards, terminateds, _, infos = self._env.step(pilots)
        first = self._station_ids[0]
        terminated = bool(terminateds[first])
        truncated = self._end_step(t, terminated)
        info = {
            "t": t + 1,
            **self._days,
            "reward_breakdown": {k: float(v) for k, v in infos[first]["reward_breakdown"].items()},
        }
        team = float(sum(rewards.values()))
        return self._padded_timestep(obss, team, terminated, truncated, info)

    def close(self) -> None:
        with contextlib.suppress(AttributeError):  # SustainGym's close() fails before the first reset
            self._env.close()


def make_evcharging_env(arg: str | None = None, **kwargs: Any) -> EVChargingAdapter:
    """Registry factory: ``evcharging`` (caltech) or ``evcharging:SITE``; kwargs as :class:`EVChargingAdapter`."""
    check_factory_kwargs("evcharging", EVChargingAdapter, arg, "site", kwargs)
    site = kwargs.pop("site", arg or "caltech")
    return EVChargingAdapter(site, **kwargs)
