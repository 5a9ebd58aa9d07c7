"""The one environment interface for cooperative multi-agent tasks, and the name -> adapter registry.

Every environment the learners see is a :class:`MultiAgentEnv`: ``reset(seed)`` and ``step(actions)``
both return a :class:`TimeStep` holding per-agent observations, the global state, the available-action
masks, the shared team reward, and separate ``terminated`` / ``truncated`` flags (a truncated episode
is cut by a time limit and still bootstraps; a terminated one does not).

Adapters are looked up by name with :func:`make_env`. An environment spec is ``"name"`` or
``"name:arg"`` (for example ``"tabular:robust_vs_nominal"`` or ``"tabular:games/g.npz"``); the part
after the first colon is handed to the adapter factory as ``arg``. A new adapter is one file in
``drigm/envs/`` plus one line in :data:`ENV_ADAPTERS` (lazy ``"module:attribute"`` strings, so an
adapter's heavy dependencies are imported only when it is used), or a :func:`register_env` decorator.
"""

from __future__ import annotations

import importlib
import inspect
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

EnvFactory = Callable[..., "MultiAgentEnv"]

ENV_ADAPTERS: dict[str, str | EnvFactory] = {
    "tabular": "drigm.envs.tabular:make_tabular_env",
    "smax": "drigm.envs.smax:make_smax_env",
    "smac": "drigm.envs.smac:make_smac_env",
    "building": "drigm.envs.building:make_building_env",
    "evcharging": "drigm.envs.evcharging:make_evcharging_env",
    "cogen": "drigm.envs.cogen:make_cogen_env",
}
"""The registry: adapter name -> factory ``f(arg: str | None, **kwargs) -> MultiAgentEnv`` or its lazy path."""


class EnvError(ValueError):
    """An environment spec, argument or action is invalid."""


@dataclass
class TimeStep:
    """What an environment returns from ``reset`` and ``step``.

    Shapes: obs (n_agents, obs_dim) float32, state (state_dim,) float32, avail_actions
    (n_agents, n_actions) bool with at least one True per agent. reward is the team reward of the
    step that led here (0.0 after ``reset``).
    """

    obs: np.ndarray
    state: np.ndarray
    avail_actions: np.ndarray
    reward: float = 0.0
    terminated: bool = False
    truncated: bool = False
    info: dict[str, Any] = field(default_factory=dict)

    @property
    def done(self) -> bool:
        """True when the episode is over, by termination or by truncation."""
        return self.terminated or self.truncated


class MultiAgentEnv(ABC):
    """A cooperative multi-agent environment with a shared team reward and discrete actions.

    Guarantees for implementations: every agent has ``n_actions`` actions (unavailable ones are
    masked in ``avail_actions``); an episode never runs longer than ``episode_limit`` steps (the
    step that reaches the limit returns ``truncated=True`` unless it terminated); ``reset(seed)``
    with the same seed replays the same episode for the same actions.
    """

    @property
    @abstractmethod
    def n_agents(self) -> int:
        """Number of agents N."""

    @property
    @abstractmethod
    def n_actions(self) -> int:
        """Actions per agent (the largest count when agents differ; the rest are masked)."""

    @property
    @abstractmethod
    def obs_dim(self) -> int:
        """Length of one agent's observation vector."""

    @property
    @abstractmethod
    def state_dim(self) -> int:
        """Length of the global state vector."""

    @property
    @abstractmethod
    def episode_limit(self) -> int:
        """Maximum number of steps in an episode."""

    @property
    def discount(self) -> float | None:
        """The task's own discount factor when it defines one (tabular games do), else None."""
        return None

    @abstractmethod
    def reset(self, seed: int | None = None) -> TimeStep:
        """Start an episode; a given seed fixes all of the episode's randomness."""

    @abstractmethod
    def step(self, actions: np.ndarray) -> TimeStep:
        """Apply one joint action (int array of shape (n_agents,)) and return the next time step."""

    def close(self) -> None:  # noqa: B027 - optional hook with a do-nothing default
        """Release resources (simulators, subprocesses); a no-op by default."""

    def check_actions(self, actions: np.ndarray, avail_actions: np.ndarray) -> np.ndarray:
        """Return `actions` as an int64 (n_agents,) array, or raise EnvError naming the bad agent/action."""
        a = np.asarray(actions)
        if a.shape != (self.n_agents,):
            raise EnvError(f"actions have shape {a.shape}; expected (n_agents,) = ({self.n_agents},)")
        if not np.issubdtype(a.dtype, np.integer):
            raise EnvError(f"actions must be integers; got dtype {a.dtype}")
        for i, ai in enumerate(a.tolist()):
            if not 0 <= ai < self.n_actions:
                raise EnvError(f"action {ai} of agent {i} is outside the range [0, {self.n_actions})")
            if not avail_actions[i, ai]:
                raise EnvError(f"action {ai} of agent {i} is not available in this state")
        return a.astype(np.int64)


def register_env(name: str) -> Callable[[EnvFactory], EnvFactory]:
    """Decorator: register `factory(arg, **kwargs)` under `name`; refuses names with ':' or duplicates."""
    if not name or ":" in name:
        raise EnvError(f"environment name {name!r} must be non-empty and contain no ':'")

    def deco(factory: EnvFactory) -> EnvFactory:
        existing = ENV_ADAPTERS.get(name)
        if existing is not None and existing is not factory:
            raise EnvError(f"environment name {name!r} is already registered ({existing!r})")
        ENV_ADAPTERS[name] = factory
        return factory

    return deco


def registered_envs() -> list[str]:
    """The registered adapter names, sorted."""
    return sorted(ENV_ADAPTERS)


def parse_env_spec(spec: str) -> tuple[str, str | None]:
    """Split ``"name:arg"`` at the first colon into (name, arg); ``"name"`` gives (name, None)."""
    if not isinstance(spec, str) or not spec.strip():
        raise EnvError(f"environment spec {spec!r} must be a non-empty string like 'tabular:robust_vs_nominal'")
    name, sep, arg = spec.partition(":")
    return name.strip(), (arg if sep else None)


def _resolve(name: str) -> EnvFactory:
    if name not in ENV_ADAPTERS:
        raise EnvError(f"unknown environment {name!r}; registered environments: {', '.join(registered_envs())}")
    entry = ENV_ADAPTERS[name]
    if isinstance(entry, str):
        module, _, attr = entry.partition(":")
        try:
            entry = getattr(importlib.import_module(module), attr)
        except ImportError as exc:
            raise EnvError(f"environment {name!r} needs a package that is not installed: {exc}") from exc
        ENV_ADAPTERS[name] = entry
    return entry


def _check_kwargs(name: str, factory: EnvFactory, kwargs: dict[str, Any]) -> None:
    """Raise EnvError naming every keyword `factory` does not take, and the ones it does (env.kwargs)."""
    try:
        sig = inspect.signature(factory)
    except (TypeError, ValueError):  # a builtin or C factory: nothing to check against
        return
    params = list(sig.parameters.values())[1:]  # the first one is the spec's `arg`
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params):
        return
    allowed = [p.name for p in params if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]
    unknown = [k for k in kwargs if k not in allowed]
    if unknown:
        raise EnvError(
            f"environment {name!r} takes no keyword {', '.join(map(repr, unknown))} (env.kwargs); allowed: "
            f"{', '.join(allowed) if allowed else 'none'}"
        )


def make_env(spec: str, **kwargs: Any) -> MultiAgentEnv:
    """Build the environment named by `spec` (``"name"`` or ``"name:arg"``) with adapter keyword arguments."""
    name, arg = parse_env_spec(spec)
    factory = _resolve(name)
    _check_kwargs(name, factory, kwargs)
    env = factory(arg, **kwargs)
    if not isinstance(env, MultiAgentEnv):
        raise EnvError(f"adapter {name!r} returned {type(env).__name__}, not a MultiAgentEnv")
    return env
