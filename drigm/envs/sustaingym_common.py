"""Helpers shared by the SustainGym adapters (``building``, ``evcharging``, ``cogen``); imports no SustainGym itself.

Seeds: an adapter's ``reset(seed)`` takes any integer in [0, 2**32) (the runner hands out 32-bit hashes);
``reset(None)`` draws a fresh seed from OS entropy and reports it in ``info["seed"]``, so every episode
can be replayed. Day pools (:func:`parse_days`) turn a seed into a day with ``pool[seed % len(pool)]``.
:class:`SustainGymAdapter` holds the bookkeeping the adapters share: the reset/step guards, seed resolution,
action validation against a fixed available-action mask, and the termination/truncation flags.
"""

from __future__ import annotations

import contextlib
import inspect
import io
import operator
import os
import warnings
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from drigm.envs.base import EnvError, MultiAgentEnv, TimeStep

MAX_SEED = 2**32 - 1
"""Largest seed the adapters accept (SustainGym's GMM traces hand the seed to NumPy's legacy RandomState)."""


@contextlib.contextmanager
def quiet() -> Iterator[None]:
    """Silence stdout and warnings inside the block; the process-wide warning filters are restored after it."""
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")
        yield


def check_int(name: str, value: Any, lo: int, hi: int | None = None) -> int:
    """`value` as an int in [lo, hi] (hi None: unbounded), or EnvError naming `name`; bools are refused."""
    if isinstance(value, bool):
        raise EnvError(f"{name}={value!r} must be an integer, not a bool")
    try:
        v = operator.index(value)
    except TypeError:
        raise EnvError(f"{name}={value!r} must be an integer") from None
    if v < lo or (hi is not None and v > hi):
        bound = f"[{lo}, {hi}]" if hi is not None else f">= {lo}"
        raise EnvError(f"{name}={v} is out of range; expected {bound}")
    return v


def check_float(name: str, value: Any, lo: float | None = None) -> float:
    """`value` as a finite float (>= lo when given), or EnvError naming `name`."""
    if isinstance(value, bool):
        raise EnvError(f"{name}={value!r} must be a number, not a bool")
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise EnvError(f"{name}={value!r} must be a number") from None
    if not np.isfinite(v) or (lo is not None and v < lo):
        raise EnvError(f"{name}={value!r} must be finite" + (f" and >= {lo}" if lo is not None else ""))
    return v


def check_choice(name: str, value: Any, choices: Sequence[str]) -> str:
    """`value` if it is one of `choices`, else EnvError listing them."""
    if value not in choices:
        raise EnvError(f"{name}={value!r} is not valid; choose one of {', '.join(map(repr, choices))}")
    return value


def resolve_seed(seed: Any, entropy: np.random.Generator) -> int:
    """The episode seed: `seed` checked to be an int in [0, MAX_SEED], or a fresh draw from `entropy` when None."""
    if seed is None:
        return int(entropy.integers(0, 2**31))
    return check_int("seed", seed, 0, MAX_SEED)


def parse_days(days: Any, n_days: int, what: str) -> tuple[int, ...]:
    """A day pool: None = all of range(n_days); an int = that day; "START:STOP" = range(START, STOP); or a sequence.

    Every day must lie in [0, n_days); the pool must not be empty. `what` names the unit in errors.
    """
    if days is None:
        return tuple(range(n_days))
    if isinstance(days, str):
        text = days.strip()
        start, sep, stop = text.partition(":")
        try:
            pool: tuple[int, ...] = tuple(range(int(start), int(stop))) if sep else (int(text),)
        except ValueError:
            raise EnvError(f"days={days!r}: a string must be 'DAY' or 'START:STOP' (a Python range)") from None
    elif isinstance(days, Sequence | np.ndarray):
        pool = tuple(check_int("days[]", d, 0) for d in days)
    else:
        pool = (check_int("days", days, 0),)
    if not pool:
        raise EnvError(f"days={days!r} selects no {what}")
    bad = [d for d in pool if not 0 <= d < n_days]
    if bad:
        raise EnvError(f"days={days!r}: {what} {bad[:5]} outside [0, {n_days})")
    return pool


def check_episode_limit(value: Any, longest: int) -> int:
    """`value` (None = `longest`) as an episode limit in [1, longest], or EnvError."""
    return longest if value is None else check_int("episode_limit", value, 1, longest)


def validate_actions(env: MultiAgentEnv, actions: Any, avail: np.ndarray, all_available: bool) -> np.ndarray:
    """`actions` as an integer (n_agents,) array of available actions; else EnvError from ``env.check_actions``."""
    if type(actions) is np.ndarray and actions.dtype.kind in "iu" and actions.shape == avail.shape[:1]:
        values = actions.tolist()
        in_range = min(values) >= 0 and max(values) < avail.shape[1]
        if in_range and (all_available or avail[np.arange(len(values)), actions].all()):
            return actions
    return env.check_actions(np.asarray(actions), avail)


def cache_dir() -> Path:
    """Where adapters keep derived data: $DRIGM_CACHE_DIR, else $XDG_CACHE_HOME/drigm, else ~/.cache/drigm."""
    if os.environ.get("DRIGM_CACHE_DIR"):
        return Path(os.environ["DRIGM_CACHE_DIR"])
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "drigm"


def check_factory_kwargs(name: str, adapter: type, arg: str | None, arg_key: str, kwargs: Mapping[str, Any]) -> None:
    """For registry factory `name`: EnvError if both the spec's ``name:ARG`` and the kwarg `arg_key` are given,
    or if a kwarg is not a parameter of `adapter` (the message lists the valid ones)."""
    if arg is not None and arg_key in kwargs:
        raise EnvError(f"{arg_key} is given twice: in the spec '{name}:{arg}' and as {arg_key}=")
    allowed = set(inspect.signature(adapter).parameters)
    unknown = sorted(set(kwargs) - allowed)
    if unknown:
        raise EnvError(f"unknown {name} kwargs {unknown}; valid: {', '.join(sorted(allowed))}")


@contextlib.contextmanager
def no_warnings() -> Iterator[None]:
    """Ignore warnings inside the block (SustainGym's per-step chatter); the process-wide filters are restored."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield


class SustainGymAdapter(MultiAgentEnv):
    """Episode bookkeeping shared by the SustainGym adapters; subclasses provide the dynamics.

    Guarantees: ``n_agents`` and ``n_actions`` are the shape of the fixed available-action mask given to
    ``__init__`` (every TimeStep gets a fresh copy of it); ``step`` before the first ``reset``, after the
    episode ended, or after SustainGym raised inside a reset or step raises EnvError; actions are validated
    against the mask before SustainGym sees them; seeds are resolved by :func:`resolve_seed`.
    """

    _env: Any
    """The wrapped SustainGym environment (set by the subclass; ``close`` closes it)."""
    _NOT_STARTED = "call reset() before step()"
    """The EnvError message of a step with no running episode (subclasses may add why)."""

    def __init__(self, episode_limit: int, avail_actions: np.ndarray) -> None:
        avail = np.asarray(avail_actions)
        if avail.dtype != bool or avail.ndim != 2 or not avail.any(axis=1).all():
            raise EnvError(
                f"avail_actions must be a 2-D bool mask with an available action per agent; got dtype {avail.dtype}, "
                f"shape {avail.shape}"
            )
        self._limit = check_int("episode_limit", episode_limit, 1)
        self._avail = avail
        self._all_available = bool(avail.all())
        self._entropy = np.random.default_rng()
        self._t: int | None = None

    @property
    def n_agents(self) -> int:
        return self._avail.shape[0]

    @property
    def n_actions(self) -> int:
        return self._avail.shape[1]

    @property
    def episode_limit(self) -> int:
        return self._limit

    def _begin_reset(self, seed: Any) -> int:
        """The episode seed (see :func:`resolve_seed`); no episode runs until :meth:`_end_reset`."""
        s = resolve_seed(seed, self._entropy)
        self._t = None
        return s

    def _end_reset(self) -> None:
        """Mark the episode started at step 0 (call once SustainGym's reset has returned)."""
        self._t = 0

    def _begin_step(self, actions: Any) -> tuple[int, np.ndarray]:
        """(t, validated actions) of the step from t; no episode runs until :meth:`_end_step` (SustainGym may raise)."""
        if self._t is None:
            raise EnvError(self._NOT_STARTED)
        if self._t >= self._limit:
            raise EnvError(f"step() called after the episode ended at episode_limit={self._limit}; call reset()")
        a = validate_actions(self, actions, self._avail, self._all_available)
        t, self._t = self._t, None
        return t, a

    def _end_step(self, t: int, terminated: bool) -> bool:
        """Record the step from `t`; returns ``truncated``: True when it reached the limit without terminating."""
        self._t = self._limit if terminated else t + 1
        return not terminated and self._t >= self._limit

    def _timestep(
        self, obs: np.ndarray, state: np.ndarray, reward: float, terminated: bool, truncated: bool, info: dict
    ) -> TimeStep:
        """A TimeStep with a copy of the available-action mask."""
        return TimeStep(obs, state, self._avail.copy(), reward, terminated, truncated, info)

    def close(self) -> None:
        self._env.close()
