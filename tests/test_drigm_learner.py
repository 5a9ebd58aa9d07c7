"""The learner update: double-Q bootstrap values, every mixer x every target, schedules, a new mixer plugged in."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pytest
import torch
from torch import Tensor, nn

from drigm.buffer import EpisodeBuffer, marl_scheme
from drigm.config import build_config
from drigm.learner import Learner
from drigm.mixers import Mixer, register_mixer, unregister_mixer
from drigm.run import Trainer

N, A, O, S, LIMIT = 2, 3, 4, 5, 6


def random_batch(B: int = 4, seed: int = 0) -> dict[str, Tensor]:
    rng = np.random.default_rng(seed)
    buf = EpisodeBuffer(marl_scheme(N, A, O, S), capacity=B, max_seq_length=LIMIT + 1)
    for _ in range(B):
        n = int(rng.integers(2, LIMIT + 1))
        avail = rng.random((n + 1, N, A)) < 0.7
        avail[..., 0] = True
        term = np.zeros(n + 1, dtype=bool)
        term[n - 1] = rng.random() < 0.5
        buf.insert(
            {
                "obs": rng.normal(size=(n + 1, N, O)).astype(np.float32),
                "state": rng.normal(size=(n + 1, S)).astype(np.float32),
                "avail_actions": avail,
                "actions": np.zeros((n + 1, N), dtype=np.int64),
                "reward": rng.normal(size=n + 1).astype(np.float32),
                "terminated": term,
            },
            n,
        )
    return buf.sample(B, np.random.default_rng(seed))


def make_learner(algo: str, target: dict, **learner: object) -> Learner:
    cfg = build_config({"mixer": {"name": algo}, "target": target, "agent": {"hidden": 8}, "learner": learner})
    torch.manual_seed(0)
    return Learner(cfg, N, A, O, S, gamma=0.9, device=torch.device("cpu"))


TARGETS = [
    {"kind": "none"},
    {"kind": "exact", "set": "contamination", "rho": 0.2},
    {"kind": "exact", "set": "tv", "rho": 0.2},
    {"kind": "exact", "set": "kl-penalty", "beta": 1.0},
    {"kind": "paper", "set": "contamination", "rho": 0.2},
    {"kind": "paper", "set": "tv", "rho": 0.2},
]


@pytest.mark.parametrize("algo", ["vdn", "qmix", "qtran"])
@pytest.mark.parametrize("target", TARGETS, ids=lambda t: f"{t['kind']}-{t.get('set', '')}")
def test_every_mixer_with_every_target_updates(algo: str, target: dict) -> None:
    learner = make_learner(algo, target)
    before = [p.detach().clone() for p in learner.params]
    stats = learner.update(random_batch())
    assert all(np.isfinite(v) for v in stats.values())
    assert {"loss", "td_loss", "grad_norm", "q_tot_mean", "target_mean"} <= set(stats)
    if algo == "qtran":
        assert {"opt_loss", "nopt_loss"} <= set(stats)
    if learner.robust.needs_aux:
        assert "aux/aux_loss" in stats
    assert any(not torch.equal(b, p) for b, p in zip(before, learner.params, strict=True))
    assert learner.n_updates == 1


def test_bootstrap_value_is_double_q_on_the_target_networks() -> None:
    learner = make_learner("vdn", {"kind": "none"}, double_q=True)
    batch = random_batch()
    with torch.no_grad():  # make online and target agents differ
        for p in learner.target_controller.parameters():
            p.add_(torch.randn_like(p))
    inputs = learner.controller.sequence_inputs(batch["obs"], batch["actions"])
    online = learner.controller(inputs)
    tin = learner.target_inputs(batch, inputs, online)
    target = learner.target_controller(inputs)
    avail = batch["avail_actions"][:, 1:]
    a_bar = online[:, 1:].masked_fill(~avail, -np.inf).argmax(-1)  # selected by the ONLINE utilities
    expected = target[:, 1:].gather(-1, a_bar.unsqueeze(-1)).squeeze(-1).sum(-1)  # evaluated by the TARGET ones
    valid = tin.mask.bool()  # padding has no available action; its value never reaches a loss
    assert torch.allclose(tin.next_value[valid], expected[valid])
    assert tin.state.shape == (*tin.reward.shape, S) and tin.actions_onehot.shape == (*tin.reward.shape, N * A)
    # without double-Q the target utilities select
    learner.cfg.learner.double_q = False
    plain = learner.target_inputs(batch, inputs, online)
    greedy_target = target[:, 1:].masked_fill(~avail, -np.inf).amax(-1).sum(-1)
    assert torch.allclose(plain.next_value[valid], greedy_target[valid])
    assert not torch.allclose(plain.next_value[valid], tin.next_value[valid])


def test_hard_and_soft_target_updates() -> None:
    hard = make_learner("qmix", {"kind": "none"}, target_update="hard", target_update_interval=2)
    w0 = [p.clone() for p in hard.target_mixer.parameters()]
    hard.update(random_batch())
    assert all(torch.equal(a, b) for a, b in zip(w0, hard.target_mixer.parameters(), strict=True))
    hard.update(random_batch(seed=1))
    assert all(torch.equal(a, b) for a, b in zip(hard.mixer.parameters(), hard.target_mixer.parameters(), strict=True))
    soft = make_learner("qmix", {"kind": "none"}, target_update="soft", tau=0.5)
    t0 = [p.clone() for p in soft.target_mixer.parameters()]
    soft.update(random_batch())
    for old, online, new in zip(t0, soft.mixer.parameters(), soft.target_mixer.parameters(), strict=True):
        assert torch.allclose(new, 0.5 * old + 0.5 * online.detach())


@pytest.mark.parametrize(("aux_first", "expected_aux_calls"), [(True, 1), (False, 4)])
def test_paper_tv_schedule_runs_aux_first(aux_first: bool, expected_aux_calls: int, tmp_path) -> None:
    cfg = build_config(
        {
            "env": {"name": "tabular:robust_vs_nominal", "episode_limit": 4},
            "target": {"kind": "exact", "set": "tv", "rho": 0.2, "aux_steps": 4},
            "learner": {"batch_size": 2, "buffer_size": 10, "q_steps": 4, "aux_first": aux_first},
            "out": str(tmp_path),
            "tensorboard": False,
            "progress": False,
        }
    )
    trainer = Trainer(cfg)
    for k in range(3):
        ep = trainer.runner.run(k, 1.0, np.random.default_rng(k))
        trainer.buffer.insert(ep.data, ep.length)
    calls = []
    real = trainer.learner.robust.update_aux
    trainer.learner.robust.update_aux = lambda inputs: calls.append(1) or real(inputs)
    trainer._train_phase()
    assert len(calls) == expected_aux_calls
    assert trainer.learner.n_updates == 4


def test_a_new_mixer_needs_only_a_registration() -> None:
    @dataclass(frozen=True)
    class ScaledParams:
        scale: float = 2.0

        def validate(self) -> None:
            if self.scale <= 0:
                raise ValueError("scale must be > 0")

    @register_mixer("scaled-sum-test")
    class ScaledSum(Mixer):
        Params = ScaledParams

        def __init__(self, state_dim: int, n_agents: int, n_actions: int, params: ScaledParams) -> None:
            super().__init__(state_dim, n_agents, n_actions, params)
            self.bias = nn.Linear(state_dim, 1)

        def forward(self, chosen: Tensor, state: Tensor, actions_onehot: Tensor) -> Tensor:
            return self.params.scale * chosen.sum(-1) + self.bias(state).squeeze(-1)

    try:
        cfg = build_config({"mixer": {"name": "scaled-sum-test", "params": {"scale": 3.0}}})
        assert cfg.mixer.params == {"scale": 3.0}
        learner = make_learner("scaled-sum-test", {"kind": "exact", "set": "tv", "rho": 0.1})
        assert np.isfinite(learner.update(random_batch())["loss"])
    finally:
        unregister_mixer("scaled-sum-test")
