"""Per-episode domain randomisation: a mixture of environments with identical spaces, one member per episode.

:class:`MixtureEnv` holds K member environments (e.g. one building per climate) and plays each episode in one of
them: ``reset(seed)`` picks member :func:`member_of_seed` ``(seed, K)`` (a hash of the seed, so the choice is a
pure function of the seed and independent of the member's own use of the seed, e.g. a building's day
``days[seed % len(days)]``) and resets it with the same seed. Runs are therefore reproducible, and a run's
stream of training seeds visits every member about equally often.

Guarantees: every member has the same n_agents, n_actions, obs_dim, state_dim and episode_limit (checked at
construction; a mismatch raises EnvError naming the member and the differing sizes); ``info["member"]`` (index)
and ``info["climate"]`` (the member's name) are set on every TimeStep of an episode.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from drigm.envs.base import EnvError, MultiAgentEnv, TimeStep

_MEMBER_STREAM = 0xC1A7E
"""The SeedSequence stream that turns an episode seed into a member index (independent of day pools)."""


def member_of_seed(seed: int, n_members: int) -> int:
    """The member index (in [0, n_members)) that ``MixtureEnv.reset(seed)`` plays: a pure function of the seed."""
    return int(np.random.SeedSequence([int(seed), _MEMBER_STREAM]).generate_state(1)[0]) % n_members


def _spaces(env: MultiAgentEnv) -> dict[str, int]:
    return {
        "n_agents": env.n_agents,
        "n_actions": env.n_actions,
        "obs_dim": env.obs_dim,
        "state_dim": env.state_dim,
        "episode_limit": env.episode_limit,
    }


class MixtureEnv(MultiAgentEnv):
    """K environments with identical spaces; each episode is played in the member chosen by its seed."""

    def __init__(self, members: Sequence[MultiAgentEnv], names: Sequence[str]) -> None:
        if len(members) < 1 or len(members) != len(names):
            raise EnvError(
                f"a mixture needs at least one member and one name per member; got {len(members)} "
                f"member(s) and {len(names)} name(s)"
            )
        if len(set(names)) != len(names):
            raise EnvError(f"mixture member names must be unique; got {list(names)}")
        first = _spaces(members[0])
        for name, env in zip(names, members, strict=True):
            mine = _spaces(env)
            diff = {k: (first[k], v) for k, v in mine.items() if v != first[k]}
            if diff:
                shown = ", ".join(f"{k} {a} vs {b}" for k, (a, b) in diff.items())
                raise EnvError(
                    f"mixture member {name!r} does not share the spaces of member {names[0]!r} ({shown}): one policy "
                    "cannot act in every member, so they cannot be randomised over"
                )
        self.members = list(members)
        self.names = tuple(names)
        self._entropy = np.random.default_rng()
        self._current: int | None = None

    n_agents = property(lambda self: self.members[0].n_agents)  # type: ignore[assignment]
    n_actions = property(lambda self: self.members[0].n_actions)  # type: ignore[assignment]
    obs_dim = property(lambda self: self.members[0].obs_dim)  # type: ignore[assignment]
    state_dim = property(lambda self: self.members[0].state_dim)  # type: ignore[assignment]
    episode_limit = property(lambda self: self.members[0].episode_limit)  # type: ignore[assignment]

    @property
    def discount(self) -> float | None:
        """The members' common discount, or None when they define none or disagree."""
        ds = {m.discount for m in self.members}
        return ds.pop() if len(ds) == 1 else None

    def member_of_seed(self, seed: int) -> int:
        """The member index that ``reset(seed)`` plays."""
        return member_of_seed(seed, len(self.members))

    def _tag(self, ts: TimeStep) -> TimeStep:
        assert self._current is not None
        ts.info = {**ts.info, "member": self._current, "climate": self.names[self._current]}
        return ts

    def reset(self, seed: int | None = None) -> TimeStep:
        if seed is None:
            seed = int(self._entropy.integers(0, 2**31))
        if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
            raise EnvError(f"seed={seed!r} must be an integer >= 0")
        self._current = self.member_of_seed(int(seed))
        ts = self.members[self._current].reset(int(seed))
        ts.info.setdefault("seed", int(seed))
        return self._tag(ts)

    def step(self, actions: np.ndarray) -> TimeStep:
        if self._current is None:
            raise EnvError("call reset() before step()")
        return self._tag(self.members[self._current].step(actions))

    def close(self) -> None:
        for m in self.members:
            m.close()
