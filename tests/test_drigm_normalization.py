"""Input normalisation (learner.input_norm) and reward scaling (learner.reward_scale)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from test_drigm_learner import A, N, O, S, random_batch

from drigm.checkpoint import CheckpointError
from drigm.config import ConfigError, build_config
from drigm.learner import Learner
from drigm.normalization import RunningNorm


def test_running_norm_matches_the_pooled_moments_and_never_amplifies() -> None:
    rng = np.random.default_rng(0)
    chunks = [rng.normal(loc=[5.0, -3.0, 0.0], scale=[20.0, 0.1, 2.0], size=(n, 3)) for n in (7, 50, 1, 300)]
    norm = RunningNorm(3)
    assert torch.equal(norm(torch.ones(2, 3)), torch.ones(2, 3))  # identity before any update
    for c in chunks:
        norm.update(torch.as_tensor(c, dtype=torch.float32))
    pooled = np.concatenate(chunks).astype(np.float32).astype(np.float64)
    assert np.allclose(norm.mean.numpy(), pooled.mean(0), rtol=1e-10, atol=1e-10)
    assert np.allclose(norm.std().numpy(), pooled.std(0), rtol=1e-10)
    out = norm(torch.as_tensor(pooled, dtype=torch.float32)).numpy()
    assert np.allclose(out.mean(0), 0.0, atol=1e-5)
    # wide features are scaled to unit spread; the narrow one (std 0.1) is only centred, never blown up
    assert np.allclose(out.std(0)[[0, 2]], 1.0, rtol=1e-4)
    assert np.isclose(out.std(0)[1], pooled.std(0)[1], rtol=1e-4)


def test_running_norm_mask_and_bad_input() -> None:
    norm = RunningNorm(2)
    x = torch.tensor([[1.0, 2.0], [1e6, 1e6], [3.0, 4.0]])
    norm.update(x, mask=torch.tensor([True, False, True]))
    assert torch.allclose(norm.mean.float(), torch.tensor([2.0, 3.0]))
    with pytest.raises(ValueError, match="expects 2 features"):
        norm.update(torch.zeros(3, 4))
    with pytest.raises(ValueError, match="NaN or inf"):
        norm.update(torch.tensor([[float("nan"), 0.0]]))


def make(**learner: object) -> Learner:
    cfg = build_config({"mixer": {"name": "qmix"}, "agent": {"hidden": 8}, "learner": learner})
    torch.manual_seed(0)
    return Learner(cfg, N, A, O, S, gamma=0.9, device=torch.device("cpu"))


def test_input_norm_learns_the_batch_statistics_and_feeds_normalised_inputs() -> None:
    learner = make(input_norm=True)
    batch = random_batch()
    batch = {**batch, "state": batch["state"] * 50.0 + 7.0, "obs": batch["obs"] * 30.0 - 4.0}
    learner.update(batch)
    filled = batch["filled"].bool()
    valid = filled | torch.cat([torch.zeros_like(filled[:, :1]), filled[:, :-1]], dim=1)
    s = batch["state"][valid].double()
    assert learner.state_norm is not None and learner.controller.obs_norm is not None
    assert torch.allclose(learner.state_norm.mean, s.mean(0), atol=1e-4)
    o = batch["obs"][valid].reshape(-1, O).double()
    assert torch.allclose(learner.controller.obs_norm.mean, o.mean(0), atol=1e-4)
    # the controller's inputs carry the normalised observations
    inputs = learner.controller.build_inputs(batch["obs"][:, 0], None)
    assert inputs[..., :O].abs().max() < batch["obs"][:, 0].abs().max() / 5
    # the target agents see the same observation statistics
    assert torch.equal(learner.target_controller.obs_norm.mean, learner.controller.obs_norm.mean)


def test_input_norm_round_trips_through_the_learner_state_and_is_checked() -> None:
    a = make(input_norm=True)
    a.update(random_batch())
    b = make(input_norm=True)
    b.load_state_dict(a.state_dict())
    assert torch.equal(a.state_norm.m2, b.state_norm.m2)
    assert torch.equal(a.controller.obs_norm.mean, b.controller.obs_norm.mean)
    with pytest.raises(CheckpointError, match="input_norm off"):
        make().load_state_dict(a.state_dict())


def test_reward_scale_scales_the_targets_exactly() -> None:
    batch = random_batch()
    targets = {}
    for scale in (1.0, 0.01):
        learner = make(reward_scale=scale)
        inputs = learner.controller.sequence_inputs(batch["obs"], batch["actions"])
        tin = learner.target_inputs(batch, inputs, learner.controller(inputs))
        targets[scale] = tin.reward
    assert torch.allclose(targets[0.01], 0.01 * targets[1.0])


@pytest.mark.parametrize("bad", [0.0, -1.0, float("nan")])
def test_reward_scale_out_of_range_is_refused(bad: float) -> None:
    with pytest.raises(ConfigError, match=r"learner\.reward_scale"):
        build_config({"learner": {"reward_scale": bad}})


def test_reward_scale_with_kl_penalty_is_refused() -> None:
    with pytest.raises(ConfigError, match="kl-penalty"):
        build_config({"learner": {"reward_scale": 0.5}, "target": {"kind": "exact", "set": "kl-penalty"}})


def test_checkpoint_with_a_robust_optimizer_reloads_without_input_norm() -> None:
    cfg = {"mixer": {"name": "qmix"}, "agent": {"hidden": 8}, "target": {"kind": "exact", "set": "tv", "rho": 0.2}}
    a = Learner(build_config(cfg), N, A, O, S, gamma=0.9, device=torch.device("cpu"))
    a.update(random_batch())
    b = Learner(build_config(cfg), N, A, O, S, gamma=0.9, device=torch.device("cpu"))
    b.load_state_dict(a.state_dict())
    assert b.n_updates == 1
