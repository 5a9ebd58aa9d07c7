"""The scheme-driven episode buffer: shapes, filled masks, sampling, capacity, validation, state round trip."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from drigm.buffer import BufferError, EpisodeBuffer, marl_scheme

N, A, O, S, LIMIT = 3, 4, 5, 6, 7


def episode(length: int, tag: float) -> dict[str, np.ndarray]:
    """An episode whose obs/reward entries carry `tag` so stored slots can be identified."""
    n = length + 1
    return {
        "obs": np.full((n, N, O), tag, dtype=np.float32),
        "state": np.full((n, S), tag, dtype=np.float32),
        "avail_actions": np.ones((n, N, A), dtype=bool),
        "actions": np.full((n, N), int(tag) % A, dtype=np.int64),
        "reward": np.full(n, tag, dtype=np.float32),
        "terminated": np.zeros(n, dtype=bool),
    }


def make_buffer(capacity: int = 4) -> EpisodeBuffer:
    return EpisodeBuffer(marl_scheme(N, A, O, S), capacity=capacity, max_seq_length=LIMIT + 1)


def test_sample_shapes_filled_mask_and_truncation() -> None:
    buf = make_buffer()
    buf.insert(episode(2, 1.0), 2)
    buf.insert(episode(5, 2.0), 5)
    assert not buf.can_sample(3) and buf.can_sample(2)
    batch = buf.sample(2, np.random.default_rng(0))
    T = 5 + 1  # the longest episode plus its final observation
    assert batch["obs"].shape == (2, T, N, O) and batch["obs"].dtype == torch.float32
    assert batch["state"].shape == (2, T, S)
    assert batch["avail_actions"].shape == (2, T, N, A) and batch["avail_actions"].dtype == torch.bool
    assert batch["actions"].shape == (2, T, N) and batch["actions"].dtype == torch.int64
    assert batch["reward"].shape == (2, T) and batch["terminated"].shape == (2, T)
    lengths = sorted(int(f.sum()) for f in batch["filled"])
    assert lengths == [2, 5]
    short = int(torch.argmin(batch["filled"].sum(dim=1)))
    # the short episode's final observation (index 2) is stored; later steps are zero padding
    assert batch["obs"][short, 2].eq(1.0).all() and batch["obs"][short, 3:].eq(0.0).all()


def test_sampling_is_without_replacement_and_seeded() -> None:
    buf = make_buffer(capacity=8)
    for k in range(8):
        buf.insert(episode(3, float(k)), 3)
    a = buf.sample(8, np.random.default_rng(5))
    tags = sorted(a["reward"][:, 0].tolist())
    assert tags == [float(k) for k in range(8)]
    b = buf.sample(8, np.random.default_rng(5))
    assert torch.equal(a["reward"], b["reward"])


def test_capacity_overwrites_the_oldest_episode() -> None:
    buf = make_buffer(capacity=3)
    for k in range(5):
        buf.insert(episode(2, float(k)), 2)
    assert len(buf) == 3
    stored = sorted(buf.sample(3, np.random.default_rng(0))["reward"][:, 0].tolist())
    assert stored == [2.0, 3.0, 4.0]


def test_bad_episodes_are_refused_naming_the_field() -> None:
    buf = make_buffer()
    ep = episode(3, 1.0)
    ep["obs"] = ep["obs"][:, :, :2]
    with pytest.raises(BufferError, match="field 'obs' has shape"):
        buf.insert(ep, 3)
    ep = episode(3, 1.0)
    ep["reward"][1] = np.nan
    with pytest.raises(BufferError, match="field 'reward' holds NaN"):
        buf.insert(ep, 3)
    ep = episode(3, 1.0)
    del ep["state"]
    with pytest.raises(BufferError, match=r"lacks scheme fields \['state'\]"):
        buf.insert(ep, 3)
    with pytest.raises(BufferError, match="outside"):
        buf.insert(episode(LIMIT + 1, 1.0), LIMIT + 1)
    with pytest.raises(BufferError, match="cannot sample 1"):
        buf.sample(1, np.random.default_rng(0))


def test_state_dict_round_trip_and_mismatch() -> None:
    buf = make_buffer(capacity=4)
    for k in range(6):
        buf.insert(episode(1 + k % 3, float(k)), 1 + k % 3)
    clone = make_buffer(capacity=4)
    clone.load_state_dict(buf.state_dict())
    assert (clone.index, clone.size) == (buf.index, buf.size)
    for k in buf.data:
        assert torch.equal(clone.data[k], buf.data[k])
    with pytest.raises(BufferError, match="capacity=4"):
        make_buffer(capacity=5).load_state_dict(buf.state_dict())
