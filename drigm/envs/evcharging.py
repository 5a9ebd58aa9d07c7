"""``evcharging`` / ``evcharging:SITE``: SustainGym's multi-agent EV charging, one agent per charging station.

The environment is ``MultiAgentEVChargingEnv`` on the ``caltech`` (54 stations) or ``jpl`` (52) garage for a
date period of :data:`PERIODS` (``"Summer 2019"``, ``"Fall 2019"``, ``"Spring 2020"``, ``"Summer 2021"``, or
their aliases), with real ACN-Data traces (``traces="real"``) or traces sampled from SustainGym's 30-component
GMMs (``traces="gmm"``). Both ship with SustainGym, as does the MOER data, so nothing is downloaded; other
periods would download or train and are refused.

Seeds. Real traces replay day ``period_start + seed % n_days`` of the period (SustainGym's sequential
generator; its MOER signal comes from the following day, a SustainGym quirk). GMM traces draw the session
count, sessions, stations and the MOER day from the seed. ``info`` reports the days.

Actions. Agent i picks one of ``n_levels`` (default 5) pilot levels ``j / (n_levels - 1)`` of 32 A for
station ``station_ids[i]`` ({0, 8, 16, 24, 32} A for 5 levels). The adapter builds the env with continuous
actions and maps the levels itself; every level is available (SustainGym's projection enforces the network
and demand limits). The projection is a convex program: MOSEK, SustainGym's first choice, is unusable
without a licence (it raises, and SustainGym then crashes instead of falling back), so the adapter solves it
with ``solver`` (default ``"ECOS"``, SustainGym's fallback); ``solver=None`` keeps SustainGym's own MOSEK-then-ECOS
routine. On an infeasible projection SustainGym calls ``pdb.set_trace()``; every call into SustainGym runs
with ``pdb.set_trace`` and ``breakpoint()`` replaced by a function raising :class:`EVChargingSolverError`,
so a failure never hangs a run. Any solver failure raises that error; the episode must then be reset.

Observations. The global state is SustainGym's flattened observation (2n + 2 + k values, k =
``moer_forecast_steps``: demands, estimated departures, the MOER forecast, the previous MOER, the time of day).
``obs_view="local"`` gives agent i [time of day, its estimated departure, its demand, previous MOER, MOER
forecast] (4 + k values); ``"global"`` gives every agent the state. The team reward is SustainGym's reward
(the sum of the agents' equal shares). The day ends by SustainGym's termination after 288 five-minute steps;
an ``episode_limit`` below 288 truncates earlier.
"""

from __future__ import annotations

import contextlib
import inspect
import pdb
import sys
import warnings
from collections.abc import Iterator
from datetime import timedelta
from typing import Any, NoReturn

import numpy as np

from drigm.envs.base import EnvError, MultiAgentEnv, TimeStep
from drigm.envs.sustaingym_common import (
    check_choice,
    check_episode_limit,
    check_float,
    check_int,
    quiet,
    resolve_seed,
    validate_actions,
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


class EVChargingAdapter(MultiAgentEnv):
    """SustainGym's multi-agent EV charging env as a MultiAgentEnv; deterministic given the seed."""

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
    ) -> None:
        self._site = check_choice("site", site, SITES)
        self._period = check_choice("period", period, PERIODS)
        self._traces = check_choice("traces", traces, TRACES)
        k = check_int("n_levels", n_levels, 2)
        self._obs_view = check_choice("obs_view", obs_view, OBS_VIEWS)
        m = check_int("moer_forecast_steps", moer_forecast_steps, 1, 36)
        self._limit = check_episode_limit(episode_limit, STEPS_PER_DAY)
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
        n = len(self._station_ids)
        self._levels = (np.arange(k, dtype=np.float32) / np.float32(k - 1)).astype(np.float32)
        offsets: dict[str, slice] = {}
        pos = 0
        for key, space in self._single.observation_space.spaces.items():
            size = int(np.prod(space.shape))
            offsets[key] = slice(pos, pos + size)
            pos += size
        self._state_dim = pos
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
            self._obs_idx = np.tile(np.arange(pos), (n, 1))
        self._avail = np.ones((n, k), dtype=bool)
        self._entropy = np.random.default_rng()
        self._t: int | None = None
        self._days: dict[str, str] = {}

    # ----- shapes and facts -----------------------------------------------------------------------
    @property
    def n_agents(self) -> int:
        return len(self._station_ids)

    @property
    def n_actions(self) -> int:
        return len(self._levels)

    @property
    def obs_dim(self) -> int:
        return self._obs_idx.shape[1]

    @property
    def state_dim(self) -> int:
        return self._state_dim

    @property
    def episode_limit(self) -> int:
        return self._limit

    @property
    def station_ids(self) -> tuple[str, ...]:
        """The charging station of each agent, in agent order."""
        return self._station_ids

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
    def _timestep(
        self, obss: dict[str, np.ndarray], reward: float, terminated: bool, truncated: bool, info: dict
    ) -> TimeStep:
        g = np.asarray(obss[self._station_ids[0]], dtype=np.float32)
        return TimeStep(
            obs=g[self._obs_idx],
            state=g,
            avail_actions=self._avail.copy(),
            reward=reward,
            terminated=terminated,
            truncated=truncated,
            info=info,
        )

    def reset(self, seed: int | None = None) -> TimeStep:
        s = resolve_seed(seed, self._entropy)
        self._t = None
        with debugger_raises(), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            obss, _ = self._env.reset(seed=s)
        self._days = {"moer_day": self._gen.day.strftime("%Y-%m-%d")}
        if self._traces == "real":
            first = self._gen.date_range[0]
            self._days["events_day"] = (first + timedelta(days=s % self.n_days)).strftime("%Y-%m-%d")
        self._t = 0
        return self._timestep(obss, 0.0, False, False, {"seed": s, **self._days})

    def step(self, actions: np.ndarray) -> TimeStep:
        if self._t is None:
            raise EnvError("call reset() before step() (a solver failure also ends the episode)")
        if self._t >= self._limit:
            raise EnvError(f"step() called after the episode ended at episode_limit={self._limit}; call reset()")
        a = validate_actions(self, actions, self._avail, all_available=True)
        pilots = dict(zip(self._station_ids, self._levels[a].tolist(), strict=True))
        t, self._t = self._t, None  # stays None if SustainGym raises mid-step
        with debugger_raises(), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            obss, rewards, terminateds, _, infos = self._env.step(pilots)
        self._t = t + 1
        first = self._station_ids[0]
        terminated = bool(terminateds[first])
        if terminated:
            self._t = self._limit
        info = {
            "t": t + 1,
            **self._days,
            "reward_breakdown": {k: float(v) for k, v in infos[first]["reward_breakdown"].items()},
        }
        team = float(sum(rewards.values()))
        return self._timestep(obss, team, terminated, not terminated and self._t >= self._limit, info)

    def close(self) -> None:
        with contextlib.suppress(AttributeError):  # SustainGym's close() fails before the first reset
            self._env.close()


def make_evcharging_env(arg: str | None = None, **kwargs: Any) -> EVChargingAdapter:
    """Registry factory: ``evcharging`` (caltech) or ``evcharging:SITE``; kwargs as :class:`EVChargingAdapter`."""
    if arg is not None and "site" in kwargs:
        raise EnvError("the site is given twice: in the spec 'evcharging:SITE' and as site=")
    allowed = set(inspect.signature(EVChargingAdapter).parameters)
    unknown = sorted(set(kwargs) - allowed)
    if unknown:
        raise EnvError(f"unknown evcharging kwargs {unknown}; valid: {', '.join(sorted(allowed))}")
    site = kwargs.pop("site", arg or "caltech")
    return EVChargingAdapter(site, **kwargs)
