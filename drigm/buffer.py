"""A scheme-driven episode replay buffer (epymarl style): whole episodes in preallocated tensors.

A scheme maps field names to :class:`Field` (per-step shape and dtype). Every field is stored for
``max_seq_length = episode_limit + 1`` steps, so the observation, state and action mask after the
last transition sit at index ``len``; transition fields (actions, reward, terminated) use indices
``0..len-1`` and ``filled`` marks them. Capacity counts episodes; the oldest is overwritten first.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor


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
        for key in ("capacity", "max_seq_length"):
            if state[key] != getattr(self, key):
                raise BufferError(f"saved buffer has {key}={state[key]}, this buffer has {getattr(self, key)}")
        if sorted(state["data"]) != sorted(self.data):
            raise BufferError(f"saved buffer fields {sorted(state['data'])} differ from the scheme {sorted(self.data)}")
        size = int(state["size"])
        for k, v in state["data"].items():
            if tuple(v.shape[1:]) != tuple(self.data[k].shape[1:]) or v.shape[0] != size:
                raise BufferError(
                    f"saved buffer field {k!r} has shape {tuple(v.shape)}; expected ({size}, "
                    f"{', '.join(map(str, self.data[k].shape[1:]))})"
                )
            self.data[k].zero_()
            self.data[k][:size] = v
        self.lengths.zero_()
        self.lengths[:size] = state["lengths"]
        self.index, self.size = int(state["index"]), size
