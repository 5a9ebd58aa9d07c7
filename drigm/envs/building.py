"""``building`` / ``building:CLIMATE``: SustainGym's multi-agent building HVAC control, one agent per zone with AC.

The environment is ``MultiAgentBuildingEnv(ParameterGenerator(building, weather, location, ac_map,
is_continuous_action=False))``, defaulting to the paper's OfficeSmall in Tucson (``Hot_Dry``) with AC in
every zone: 6 agents, 288 five-minute steps (one day) per episode. ``CLIMATE`` names one of the paper's six
test climates in :data:`CLIMATES` (``building:Tampa``) or one of the further SustainGym climates in
:data:`EXTRA_CLIMATES` (``building:Atlanta``); ``weather``/``location`` may be given instead.

Domain randomisation. ``building`` with ``climates=[...]`` (climate names) is a
:class:`~drigm.envs.mixture.MixtureEnv` of one building per climate (every other kwarg shared): ``reset(seed)``
plays climate :func:`~drigm.envs.mixture.member_of_seed` ``(seed, K)`` on day ``days[seed % len(days)]``, a
deterministic function of the seed (``info["climate"]`` names it).

Days. SustainGym's ``reset(seed=d)`` starts the episode at 5-minute step ``floor(d * L / 365)`` of its
weather year (L = 105108 steps), i.e. on day d of the year (0 = 1 January; the start drifts earlier than
step d * 288 by one 5-minute step per 30 days, an hour at day 364); the dynamics have no other randomness. This
adapter plays day ``days[seed % len(days)]`` of a day pool (``days``: None = all 365 days, an int,
``"START:STOP"`` or a list), so with the default pool seed s in 0..364 is exactly SustainGym's seed s. The
paper trains on days 0..199 (``days="0:200"``) and tests the seasonal shift on other days (``"200:365"``).

Actions. Agent i picks one of ``n_levels`` (k) HVAC power levels for zone ``zone_ids[i]``, as a fraction of
the unit's maximum power (negative cools, positive heats): for k = 200, SustainGym's native levels
``(j - 100) / 100`` (-1.00 .. 0.99; index 100 is off); for any other k, ``linspace(-1, 1, k)``. SustainGym's
discrete space exists only with k = 200 and AC in every zone (it rejects zones without AC); otherwise the
adapter builds the continuous variant of the same model and applies the levels itself. Every action is
available. SustainGym's multi-agent step reads ``actions[i]`` by position i in its agent list, not by agent
(zone) id, so the adapter passes a positional array ordered as ``zone_ids``.

Observations. The global state is SustainGym's observation (n + 4 values: the zone temperatures, outdoor
temperature, ground temperature, normalised irradiance, occupancy heat in kW). ``obs_view="local"`` (the
paper's) gives agent i its own zone temperature plus those last 4 entries (5 values); ``"global"`` gives
every agent the whole state. The team reward is SustainGym's shared reward. The day's end is a time limit:
the step reaching ``episode_limit`` (default and maximum 288) returns ``truncated=True``, never
``terminated``, so learners bootstrap as the paper's PyMARL setup does.
"""

from __future__ import annotations

import inspect
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from drigm.envs.base import EnvError, TimeStep
from drigm.envs.mixture import MixtureEnv
from drigm.envs.sustaingym_common import (
    SustainGymAdapter,
    check_choice,
    check_episode_limit,
    check_factory_kwargs,
    check_int,
    parse_days,
    quiet,
)

with quiet():
    from sustaingym.envs.building import MultiAgentBuildingEnv, ParameterGenerator
    from sustaingym.envs.building.env import BuildingEnv
    from sustaingym.envs.building.utils import BUILDINGS, GROUND_TEMP, WEATHER

CLIMATES: dict[str, tuple[str, str]] = {
    "Tucson": ("Hot_Dry", "Tucson"),
    "Tampa": ("Hot_Humid", "Tampa"),
    "NewYork": ("Mixed_Humid", "NewYork"),
    "Honolulu": ("Very_Hot_Humid", "Honolulu"),
    "ElPaso": ("Warm_Dry", "ElPaso"),
    "Seattle": ("Cool_Marine", "Seattle"),
}
"""The paper's six test climates: name -> (SustainGym weather, SustainGym location); Tucson is the training one.

SustainGym's ``Cool_Marine`` weather file is Port Angeles, WA (its Seattle-Tacoma file is ``Mixed_Marine``);
the paper pairs ``Cool_Marine`` with Seattle's ground temperatures, and so does this table.
"""

EXTRA_CLIMATES: dict[str, tuple[str, str]] = {
    "Atlanta": ("Warm_Humid", "Atlanta"),
    "SanDiego": ("Warm_Marine", "SanDiego"),
    "Albuquerque": ("Mixed_Dry", "Albuquerque"),
    "SeattleTacoma": ("Mixed_Marine", "Seattle"),
    "Buffalo": ("Cool_Humid", "Buffalo"),
    "Denver": ("Cool_Dry", "Denver"),
    "Rochester": ("Cold_Humid", "Rochester"),
    "GreatFalls": ("Cold_Dry", "GreatFalls"),
    "InternationalFalls": ("Very_Cold", "InternationalFalls"),
    "Fairbanks": ("Subarctic/Arctic", "Fairbanks"),
}
"""SustainGym's other climates (name -> (weather, location)), for domain randomisation away from the test climates.

SustainGym maps ``weather`` (an ASHRAE climate-zone name in its ``WEATHER`` table) to one bundled TMY3 ``.epw``
file and ``location`` (a key of ``GROUND_TEMP``) to 12 monthly ground temperatures; each entry pairs a weather
file with its own city's ground temperatures. Not available: the bundled Chicago O'Hare file (no ``WEATHER`` entry
and no ground temperatures; the adapter does not take file paths). ``SeattleTacoma`` shares its ground
temperatures with the test climate ``Seattle`` (whose weather is Port Angeles'), so it is no leak-free choice.
"""

ALL_CLIMATES: dict[str, tuple[str, str]] = {**CLIMATES, **EXTRA_CLIMATES}
"""Every named climate: the paper's six (:data:`CLIMATES`) and the others (:data:`EXTRA_CLIMATES`)."""

DAYS_PER_YEAR = 365
STEPS_PER_DAY = 288
NATIVE_LEVELS = 2 * BuildingEnv.DISCRETE_LENGTH
"""SustainGym's own discrete action count per zone (200)."""
PAPER_TRAIN_DAYS = "0:200"
PAPER_SEASONAL_TEST_DAYS = "200:365"
OBS_VIEWS = ("local", "global")
_MANAGED = ("building", "weather", "location", "ac_map", "is_continuous_action", "time_res", "episode_len", "root")


def _climate_key(name: str) -> str:
    return "".join(ch for ch in name.lower() if ch.isalnum())


def resolve_climate(name: str) -> tuple[str, str]:
    """(weather, location) of a climate in :data:`ALL_CLIMATES`; case, spaces and underscores are ignored."""
    table = {_climate_key(k): v for k, v in ALL_CLIMATES.items()}
    if not isinstance(name, str) or _climate_key(name) not in table:
        raise EnvError(f"unknown climate {name!r}; choose one of {', '.join(ALL_CLIMATES)}")
    return table[_climate_key(name)]


def canonical_climate(name: str) -> str:
    """The :data:`ALL_CLIMATES` key of a climate name (case, spaces and underscores ignored); EnvError if unknown."""
    resolve_climate(name)
    return next(k for k in ALL_CLIMATES if _climate_key(k) == _climate_key(name))


def power_levels(n_levels: int) -> np.ndarray:
    """The k power fractions of the action indices: SustainGym's native grid for k = 200, else linspace(-1, 1, k)."""
    k = check_int("n_levels", n_levels, 2)
    if k == NATIVE_LEVELS:
        # the same float32 arithmetic as BuildingEnv.step: (a + Qlow * 100) / 100 with Qlow = -1
        return (np.arange(k, dtype=np.float32) - np.float32(BuildingEnv.DISCRETE_LENGTH)) / np.float32(
            BuildingEnv.DISCRETE_LENGTH
        )
    return np.linspace(-1.0, 1.0, k).astype(np.float32)


def _check_ac_map(ac_map: Any) -> tuple[np.ndarray | int, bool]:
    if np.ndim(ac_map) == 0:
        if isinstance(ac_map, bool) or ac_map != 1:
            raise EnvError(f"ac_map={ac_map!r}: a scalar ac_map must be 1 (AC in every zone); give a 0/1 list per zone")
        return 1, True
    arr = np.asarray(ac_map)
    if arr.ndim != 1 or not np.isin(arr, (0, 1)).all() or not arr.any():
        raise EnvError(f"ac_map={ac_map!r} must be a list of 0/1 per zone with at least one 1")
    return arr.astype(np.float64), bool(arr.all())


class BuildingAdapter(SustainGymAdapter):
    """SustainGym's multi-agent building env as a MultiAgentEnv; deterministic given the seed (the day)."""

    def __init__(
        self,
        climate: str | None = None,
        *,
        building: str = "OfficeSmall",
        weather: str | None = None,
        location: str | None = None,
        ac_map: int | Sequence[int] = 1,
        days: int | str | Sequence[int] | None = None,
        n_levels: int = NATIVE_LEVELS,
        obs_view: str = "local",
        episode_limit: int | None = None,
        generator_kwargs: Mapping[str, Any] | None = None,
    ) -> None:
        if climate is not None and (weather is not None or location is not None):
            raise EnvError("give a climate name or weather+location, not both")
        if (weather is None) != (location is None):
            raise EnvError("weather and location go together (e.g. weather='Hot_Humid', location='Tampa')")
        if climate is not None:
            weather, location = resolve_climate(climate)
        elif weather is None:
            weather, location = CLIMATES["Tucson"]
        check_choice("building", building, tuple(BUILDINGS))
        check_choice("weather", weather, tuple(WEATHER))
        check_choice("location", location, tuple(GROUND_TEMP))
        self._levels = power_levels(n_levels)
        self._obs_view = check_choice("obs_view", obs_view, OBS_VIEWS)
        limit = check_episode_limit(episode_limit, STEPS_PER_DAY)
        self._days = parse_days(days, DAYS_PER_YEAR, "days of the year")
        ac, all_ac = _check_ac_map(ac_map)
        extra = dict(generator_kwargs or {})
        allowed = set(inspect.signature(ParameterGenerator).parameters) - set(_MANAGED) - {"U_Wall", "ground_temp"}
        unknown = sorted(set(extra) - allowed)
        if unknown:
            raise EnvError(f"generator_kwargs {unknown} are not allowed; allowed: {', '.join(sorted(allowed))}")
        # SustainGym's discrete space is the paper's setup; it exists only for 200 levels and AC in every zone
        self._native = len(self._levels) == NATIVE_LEVELS and all_ac
        try:
            with quiet():  # ParameterGenerator prints the zone list
                params = ParameterGenerator(
                    building=building,
                    weather=weather,
                    location=location,
                    ac_map=ac,
                    is_continuous_action=not self._native,
                    **extra,
                )
        except ValueError as exc:
            raise EnvError(f"ParameterGenerator rejected building={building!r} ac_map={ac_map!r}: {exc}") from exc
        self._env = MultiAgentBuildingEnv(params)
        n = int(params["n"])
        self._zone_ids = tuple(int(z) for z in self._env.possible_agents)
        self._zone_names = tuple(params["zones"][z].name for z in self._zone_ids)
        self._n_zones = n
        self.config = {"building": building, "weather": weather, "location": location, "ac_map": ac_map}
        # what the env consumes per action index: native indices (discrete env) or power fractions
        self._action_values = np.arange(NATIVE_LEVELS, dtype=np.float32) if self._native else self._levels
        tail = np.arange(n, n + 4)
        if self._obs_view == "local":
            self._obs_idx = np.stack([np.concatenate(([z], tail)) for z in self._zone_ids])
        else:
            self._obs_idx = np.tile(np.arange(n + 4), (len(self._zone_ids), 1))
        self._day = -1
        super().__init__(limit, np.ones((len(self._zone_ids), len(self._levels)), dtype=bool))

    # ----- shapes and facts -----------------------------------------------------------------------
    @property
    def obs_dim(self) -> int:
        return self._obs_idx.shape[1]

    @property
    def state_dim(self) -> int:
        return self._n_zones + 4

    @property
    def zone_ids(self) -> tuple[int, ...]:
        """The SustainGym zone index controlled by each agent, in agent order."""
        return self._zone_ids

    @property
    def zone_names(self) -> tuple[str, ...]:
        """The building's name of each agent's zone, in agent order."""
        return self._zone_names

    @property
    def power_levels(self) -> np.ndarray:
        """(n_actions,) power fraction in [-1, 1] of each action index (a copy)."""
        return self._levels.copy()

    @property
    def days(self) -> tuple[int, ...]:
        """The day pool; reset(seed) plays ``days[seed % len(days)]``."""
        return self._days

    @property
    def raw_env(self) -> MultiAgentBuildingEnv:
        """The wrapped SustainGym environment (for benchmarks and checks; stepping it desynchronises the adapter)."""
        return self._env

    def day_of_seed(self, seed: int) -> int:
        """The day of the year (0 = 1 January) that ``reset(seed)`` plays."""
        return self._days[check_int("seed", seed, 0) % len(self._days)]

    # ----- dynamics -------------------------------------------------------------------------------
    def _state_timestep(self, reward: float, truncated: bool, info: dict[str, Any]) -> TimeStep:
        # SustainGym reuses its state array in the next step: hand out a copy
        g = self._env.state().astype(np.float32)
        return self._timestep(g[self._obs_idx], g, reward, False, truncated, info)

    def reset(self, seed: int | None = None) -> TimeStep:
        s = self._begin_reset(seed)
        self._day = self._days[s % len(self._days)]
        self._env.reset(seed=self._day)
        self._end_reset()
        info = {"seed": s, "day": self._day, "start_step": int(self._env.single_env.epoch)}
        return self._state_timestep(0.0, False, info)

    def step(self, actions: np.ndarray) -> TimeStep:
        t, a = self._begin_step(actions)
        # MultiAgentBuildingEnv.step reads actions[i] by POSITION i of its agent list (then writes zone
        # agents[i]), not by agent id: a positional list in zone_ids order is what it consumes correctly.
        _, rewards, _, _, infos = self._env.step(self._action_values[a].tolist())
        truncated = self._end_step(t, terminated=False)  # the day's end is a time limit, never a termination
        first = self._zone_ids[0]
        info = {"day": self._day, "t": t + 1, "reward_breakdown": dict(infos[first]["reward_breakdown"])}
        return self._state_timestep(float(rewards[first]), truncated, info)


def make_building_env(arg: str | None = None, **kwargs: Any) -> BuildingAdapter | MixtureEnv:
    """Registry factory: ``building`` (Tucson) or ``building:CLIMATE``; kwargs as :class:`BuildingAdapter`.

    ``building`` with ``climates=[NAME, ...]`` is the per-episode domain randomisation over those climates (a
    :class:`~drigm.envs.mixture.MixtureEnv`, members in the given order); it refuses a climate in the spec, a
    ``climate``/``weather``/``location`` kwarg and repeated climates.
    """
    climates = kwargs.pop("climates", None)
    if climates is not None:
        return make_climate_mixture(climates, arg, **kwargs)
    check_factory_kwargs("building", BuildingAdapter, arg, "climate", kwargs)
    climate = kwargs.pop("climate", arg or None)
    return BuildingAdapter(climate, **kwargs)


def make_climate_mixture(climates: Any, arg: str | None = None, **kwargs: Any) -> MixtureEnv:
    """The domain-randomised building: one :class:`BuildingAdapter` per climate (other kwargs shared), one climate
    per episode chosen from the reset seed; EnvError naming the problem for a bad ``climates`` value."""
    if arg is not None or any(k in kwargs for k in ("climate", "weather", "location")):
        raise EnvError(
            "climates=[...] randomises over climates: give no climate in the spec ('building', not "
            f"'building:{arg}') and no climate/weather/location kwarg"
        )
    if isinstance(climates, str) or not isinstance(climates, Sequence) or not climates:
        raise EnvError(f"climates={climates!r} must be a non-empty list of climate names ({', '.join(ALL_CLIMATES)})")
    names = [canonical_climate(c) for c in climates]
    if len(set(names)) != len(names):
        raise EnvError(f"climates={list(climates)!r} names a climate twice")
    check_factory_kwargs("building", BuildingAdapter, None, "climate", kwargs)
    return MixtureEnv([BuildingAdapter(n, **kwargs) for n in names], names)
