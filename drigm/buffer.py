"""A scheme-driven episode replay buffer (epymarl style): whole episodes in preallocated tensors.

A scheme maps field names to :class:`Field` (per-step shape and dtype). Every field is stored for
``max_seq_length = episode_limit + 1`` steps, so the observation, state and action mask after the
last transition sit at index ``len``; transition fields (actions, reward, terminated) use indices
``0..len-1`` and ``filled`` marks them. Capacity counts episodes; the oldest is overwritten first.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor

from reference.memory import check_fits


class BufferError(ValueError):
    """An episode does not match the buffer's scheme, or a sample cannot be drawn."""


@dataclass(frozen=True)
class Field:
    """One field of the scheme: its per-step shape and torch dtype."""

    shape: tuple[int, ...]
    dtype: torch.dtype


def marl_scheme(n_agents: int, n_actions: int, obs_dim: int, state_dim: int) -> dict[str, Field]:
    """The standard cooperative-MARL scheme: obs, state, avail_actions, actions, reward, terminated, filled."""
    return {
        "obs": Field((n_agents, obs_dim), torch.float32),
        "state": Field((state_dim,), torch.float32),
        "avail_actions": Field((n_agents, n_actions), torch.bool),
        "actions": Field((n_agents,), torch.int64),
        "reward": Field((), torch.float32),
        "terminated": Field((), torch.bool),
        "filled": Field((), torch.bool),
    }


class EpisodeBuffer:
    """Stores up to `capacity` episodes of at most `max_seq_length` steps; samples whole episodes uniformly."""

    def __init__(self, scheme: dict[str, Field], capacity: int, max_seq_length: int) -> None:
        if "filled" not in scheme:
            raise BufferError("the scheme needs a 'filled' field marking real transitions")
        if capacity < 1 or max_seq_length < 2:
            raise BufferError(f"capacity={capacity} must be >= 1 and max_seq_length={max_seq_length} >= 2")
        per_step = sum(math.prod(f.shape) * torch.empty((), dtype=f.dtype).element_size() for f in scheme.values())
        check_fits(
            f"learner.buffer_size={capacity} episodes of {max_seq_length} steps (the replay)",
            capacity * (max_seq_length * per_step + 8),
        )
        self.scheme = dict(scheme)
        self.capacity = capacity
        self.max_seq_length = max_seq_length
        self.data = {k: torch.zeros((capacity, max_seq_length, *f.shape), dtype=f.dtype) for k, f in scheme.items()}
        self.lengths = torch.zeros(capacity, dtype=torch.int64)
        self.index = 0
        self.size = 0

    def __len__(self) -> int:
        return self.size

    def can_sample(self, batch_size: int) -> bool:
        """True once at least `batch_size` episodes are stored."""
        return self.size >= batch_size

    def insert(self, episode: dict[str, np.ndarray | Tensor], length: int) -> None:
        """Store one episode: every scheme field as an array of shape (length + 1, *field.shape).

        Transition fields may be given for the first `length` steps; `filled` is set here (1 on 0..length-1).
        Shapes, dtypes and NaN/inf values are checked and refused with the field name.
        """
        if not 1 <= length < self.max_seq_length:
            raise BufferError(f"episode length {length} is outside [1, {self.max_seq_length - 1}]")
        missing = [k for k in self.scheme if k != "filled" and k not in episode]
        if missing:
            raise BufferError(f"episode lacks scheme fields {missing}")
        extra = [k for k in episode if k not in self.scheme]
        if extra:
            raise BufferError(f"episode has fields {extra} that are not in the scheme {sorted(self.scheme)}")
        slot = self.index
        for k, f in self.scheme.items():
            if k == "filled":
                continue
            x = torch.as_tensor(np.asarray(episode[k]) if not isinstance(episode[k], Tensor) else episode[k])
            if x.shape[1:] != f.shape or x.shape[0] not in (length, length + 1):
                raise BufferError(
                    f"field {k!r} has shape {tuple(x.shape)}; expected ({length} or {length + 1}, *{f.shape})"
                )
            if x.is_floating_point() and not torch.isfinite(x).all():
                raise BufferError(f"field {k!r} holds NaN or inf")
            if f.dtype == torch.bool and x.dtype != torch.bool:
                raise BufferError(f"field {k!r} must be boolean; got {x.dtype}")
            self.data[k][slot].zero_()
            self.data[k][slot, : x.shape[0]] = x.to(f.dtype)
        self.data["filled"][slot].zero_()
        self.data["filled"][slot, :length] = True
        self.lengths[slot] = length
        self.index = (self.index + 1) % self.capacity
        self.size = min(self.size + 1, self.capacity)

    def sample(
        self, batch_size: int, rng: np.random.Generator, device: torch.device | str = "cpu"
    ) -> dict[str, Tensor]:
        """`batch_size` distinct stored episodes, uniformly, truncated to the longest one plus its final step."""
        if not self.can_sample(batch_size):
            raise BufferError(f"cannot sample {batch_size} episodes from a buffer holding {self.size}")
        idx = torch.from_numpy(rng.choice(self.size, size=batch_size, replace=False))
        T = int(self.lengths[idx].max()) + 1
        return {k: v[idx, :T].to(device) for k, v in self.data.items()}

    def state_dict(self) -> dict[str, Any]:
        """The stored episodes and counters (only the filled slots' contents matter)."""
        return {
            "data": {k: v[: self.size].clone() for k, v in self.data.items()},
            "lengths": self.lengths[: self.size].clone(),
            "index": self.index,
            "size": self.size,
            "capacity": self.capacity,
            "max_seq_length": self.max_seq_length,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore from `state_dict`; raises BufferError when capacity, length or field shapes differ."""
        size = _restore(self, state, ("capacity", "max_seq_length"))
        self.lengths.zero_()
        self.lengths[:size] = state["lengths"]
        self.index, self.size = int(state["index"]), size


def _restore(buf: EpisodeBuffer | TransitionBuffer, state: dict[str, Any], same: tuple[str, ...]) -> int:
    """Copy a saved buffer's fields into `buf.data` (the rest zeroed) and return the saved size; BufferError when an
    attribute in `same`, the field names or a field's shape differ."""
    for key in same:
        if state.get(key) != getattr(buf, key):
            raise BufferError(f"saved buffer has {key}={state.get(key)}, this buffer has {getattr(buf, key)}")
    if sorted(state["data"]) != sorted(buf.data):
        raise BufferError(f"saved buffer fields {sorted(state['data'])} differ from the scheme {sorted(buf.data)}")
    size = int(state["size"])
    for k, v in state["data"].items():
        if tuple(v.shape[1:]) != tuple(buf.data[k].shape[1:]) or v.shape[0] != size:
            raise BufferError(
                f"saved buffer field {k!r} has shape {tuple(v.shape)}; expected ({size}, "
                f"{', '.join(map(str, buf.data[k].shape[1:]))})"
            )
        buf.data[k].zero_()
        buf.data[k][:size] = v
    return size


class TransitionBuffer:
    """A FIFO of up to `capacity` transitions (the seed paper's replay); samples transitions uniformly.

    Each transition carries its own window (:func:`drigm.window_agents.transition_windows`): the observations
    and previous actions of the last `history` steps up to s' (h + 1 positions, left-padded before the
    episode's first step), so a window never crosses into another episode and survives the eviction of the
    steps it looks back on. It also holds s and s' (global state), the action masks at s and s', the joint
    action, the reward and the termination flag. :meth:`sample` returns a batch in the episode layout with
    T = 1 (index 0 = s, index 1 = s'; ``filled`` = [1, 0]) plus the window fields ``win_obs``,
    ``win_actions`` and ``win_valid``, so the learner's target code serves both replay modes.

    With ``time_index`` the buffer also keeps each transition's step index t within its episode and
    :meth:`sample` returns ``t`` = [t, t + 1] (int64, (B, 2)); without it (the default) neither the stored fields
    nor the batches change, so saved buffers of earlier runs still load.
    """

    def __init__(
        self,
        n_agents: int,
        n_actions: int,
        obs_dim: int,
        state_dim: int,
        capacity: int,
        history: int,
        time_index: bool = False,
    ) -> None:
        if capacity < 1 or history < 1:
            raise BufferError(f"capacity={capacity} and history={history} must be >= 1")
        self.capacity, self.history = capacity, history
        self.shapes = (n_agents, n_actions, obs_dim, state_dim)
        N, A, O, S, C, h = n_agents, n_actions, obs_dim, state_dim, capacity, history
        # bytes per transition of the tensors below (windows, state pair, masks, actions, reward, flags, version)
        per = (h + 1) * (N * O * 4 + N * 8 + 1) + 2 * S * 4 + 2 * N * A + N * 8 + 4 + 1 + 8 + (8 if time_index else 0)
        check_fits(f"learner.buffer_size={C} transitions with {h}-step windows (the replay)", C * per)
        self.data: dict[str, Tensor] = {
            "win_obs": torch.zeros(C, h + 1, N, O),
            "win_actions": torch.full((C, h + 1, N), -1, dtype=torch.int64),
            "win_valid": torch.zeros(C, h + 1, dtype=torch.bool),
            "state": torch.zeros(C, 2, S),
            "avail_actions": torch.zeros(C, 2, N, A, dtype=torch.bool),
            "actions": torch.zeros(C, N, dtype=torch.int64),
            "reward": torch.zeros(C),
            "terminated": torch.zeros(C, dtype=torch.bool),
        }
        if time_index:
            self.data["t"] = torch.zeros(C, dtype=torch.int64)
        self.version = torch.full((C,), -1, dtype=torch.int64)  # the write count at which each slot was filled
        self.writes = 0
        self.index = 0
        self.size = 0

    def __len__(self) -> int:
        return self.size

    def can_sample(self, batch_size: int) -> bool:
        """True once at least `batch_size` transitions are stored."""
        return self.size >= batch_size

    def insert(self, episode: dict[str, np.ndarray | Tensor], length: int) -> None:
        """Store the `length` transitions of one episode (fields as for :meth:`EpisodeBuffer.insert`), oldest first.

        Shapes and non-finite values are refused with the field name; the oldest transitions are overwritten.
        """
        from drigm.window_agents import transition_windows

        N, A, O, S = self.shapes
        want = {
            "obs": (N, O),
            "state": (S,),
            "avail_actions": (N, A),
            "actions": (N,),
            "reward": (),
            "terminated": (),
        }
        if length < 1:
            raise BufferError(f"episode length {length} must be >= 1")
        x: dict[str, Tensor] = {}
        for k, shape in want.items():
            if k not in episode:
                raise BufferError(f"episode lacks the field {k!r}")
            v = episode[k]
            t = v if isinstance(v, Tensor) else torch.as_tensor(np.asarray(v))
            need = length + 1 if k in ("obs", "state", "avail_actions") else length
            if tuple(t.shape[1:]) != shape or t.shape[0] < need:
                raise BufferError(f"field {k!r} has shape {tuple(t.shape)}; expected (>= {need}, *{shape})")
            if t.is_floating_point() and not torch.isfinite(t[:need]).all():
                raise BufferError(f"field {k!r} holds NaN or inf")
            x[k] = t[:need]
        w_obs, w_act, w_valid = transition_windows(x["obs"].float(), x["actions"].long(), length, self.history)
        rows = {
            "win_obs": w_obs,
            "win_actions": w_act,
            "win_valid": w_valid,
            "state": torch.stack([x["state"][:-1], x["state"][1:]], dim=1).float(),
            "avail_actions": torch.stack([x["avail_actions"][:-1], x["avail_actions"][1:]], dim=1).bool(),
            "actions": x["actions"].long(),
            "reward": x["reward"].float(),
            "terminated": x["terminated"].bool(),
        }
        if "t" in self.data:
            rows["t"] = torch.arange(length, dtype=torch.int64)
        if length > self.capacity:  # only the newest `capacity` transitions survive
            rows = {k: v[-self.capacity :] for k, v in rows.items()}
        n = next(iter(rows.values())).shape[0]
        slots = (self.index + torch.arange(n)) % self.capacity
        for k, v in rows.items():
            self.data[k][slots] = v
        self.version[slots] = self.writes + torch.arange(n)
        self.writes += n
        self.index = int((self.index + n) % self.capacity)
        self.size = min(self.size + n, self.capacity)

    def sample(
        self, batch_size: int, rng: np.random.Generator, device: torch.device | str = "cpu"
    ) -> dict[str, Tensor]:
        """`batch_size` distinct stored transitions, uniformly, in the T = 1 layout (index 0 = s, 1 = s')."""
        if not self.can_sample(batch_size):
            raise BufferError(f"cannot sample {batch_size} transitions from a buffer holding {self.size}")
        idx = torch.from_numpy(rng.choice(self.size, size=batch_size, replace=False))
        d = {k: v[idx] for k, v in self.data.items()}
        B = batch_size
        zeros_b = torch.zeros(B, 1)
        out = {
            "win_obs": d["win_obs"],
            "win_actions": d["win_actions"],
            "win_valid": d["win_valid"],
            "state": d["state"],
            "avail_actions": d["avail_actions"],
            "actions": torch.stack([d["actions"], torch.zeros_like(d["actions"])], dim=1),
            "reward": torch.cat([d["reward"].unsqueeze(1), zeros_b], dim=1),
            "terminated": torch.stack([d["terminated"], torch.zeros_like(d["terminated"])], dim=1),
            "filled": torch.tensor([True, False]).expand(B, 2).clone(),
            "slot": idx,  # where each transition sits, and which write filled it (a key for per-slot caches)
            "version": self.version[idx],
        }
        if "t" in d:
            out["t"] = torch.stack([d["t"], d["t"] + 1], dim=1)
        return {k: v.to(device) for k, v in out.items()}

    def state_dict(self) -> dict[str, Any]:
        """The stored transitions and counters."""
        return {
            "data": {k: v[: self.size].clone() for k, v in self.data.items()},
            "version": self.version[: self.size].clone(),
            "writes": self.writes,
            "index": self.index,
            "size": self.size,
            "capacity": self.capacity,
            "history": self.history,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore from `state_dict`; raises BufferError when capacity, history or field shapes differ."""
        size = _restore(self, state, ("capacity", "history"))
        self.version[:size] = state["version"]
        self.writes = int(state["writes"])
        self.index, self.size = int(state["index"]), size
