"""The learner regresses on the configured robust target, and on nothing else, for every kind x set x mixer.

For one batch, the test recomputes y from docs/theory.md section 5 directly (its own formulas, not drigm.targets'),
from the learner's bootstrap values V_hat(s'), the batch minimum m_hat and a fixed auxiliary estimate installed
with ``set_aux_override``; then one ``Learner.update`` must log target_mean = the masked mean of that y and
td_loss = the masked mean of (Q_tot(s, a) - y)^2 with Q_tot from the networks before the step. A learner wired
to another kind, set or radius logs a different target mean (checked: every pair of targets differs here).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import torch
from torch import Tensor

from drigm.buffer import EpisodeBuffer, marl_scheme
from drigm.config import build_config
from drigm.learner import Learner

N, A, O, S, LIMIT, GAMMA, RHO, BETA = 2, 3, 4, 5, 6, 0.9, 0.3, 0.7
TARGETS: dict[str, dict[str, Any]] = {
    "none": {"kind": "none"},
    "exact-contamination": {"kind": "exact", "set": "contamination", "rho": RHO},
    "exact-tv": {"kind": "exact", "set": "tv", "rho": RHO},
    "exact-kl-penalty": {"kind": "exact", "set": "kl-penalty", "beta": BETA},
    "paper-contamination": {"kind": "paper", "set": "contamination", "rho": RHO},
    "paper-tv": {"kind": "paper", "set": "tv", "rho": RHO},
}


def batch_of_episodes(B: int = 6, seed: int = 3) -> dict[str, Tensor]:
    """Episodes of random length with rewards of both signs, some terminal, some truncated."""
    rng = np.random.default_rng(seed)
    buf = EpisodeBuffer(marl_scheme(N, A, O, S), capacity=B, max_seq_length=LIMIT + 1)
    for k in range(B):
        n = int(rng.integers(2, LIMIT + 1))
        term = np.zeros(n + 1, dtype=bool)
        term[n - 1] = k % 2 == 0
        buf.insert(
            {
                "obs": rng.normal(size=(n + 1, N, O)).astype(np.float32),
                "state": rng.normal(size=(n + 1, S)).astype(np.float32),
                "avail_actions": np.ones((n + 1, N, A), dtype=bool),
                "actions": rng.integers(0, A, size=(n + 1, N)),
                "reward": rng.normal(size=n + 1).astype(np.float32) * 3.0,
                "terminated": term,
            },
            n,
        )
    return buf.sample(B, np.random.default_rng(seed))


def aux_estimate(state: Tensor, actions_onehot: Tensor) -> Tensor:
    """A fixed auxiliary estimate (eta, log psi or g, by kind) that depends on s and a."""
    w = torch.linspace(-0.5, 0.5, actions_onehot.shape[-1], dtype=state.dtype)
    return 0.4 * state.sum(-1) + actions_onehot @ w - 0.2


def expected_target(target: dict[str, Any], r: Tensor, v: Tensor, done: Tensor, valid: Tensor, aux: Tensor) -> Tensor:
    """y from docs/theory.md section 5 (y = r where terminal, 0 on padding), m_hat = the batch minimum of V_hat(s')."""
    kind, set_name = target["kind"], target.get("set")
    boot = valid & ~done
    v = torch.where(boot, v, torch.zeros_like(v)).double()
    m_hat = v[boot].min()
    if kind == "none":
        cont = v
    elif kind == "paper" and set_name == "contamination":
        cont = (1 - RHO) * v
    elif kind == "paper":
        cont = (1 - RHO) * aux - torch.relu(aux - v)
    elif set_name == "contamination":
        cont = (1 - RHO) * v + RHO * m_hat
    elif set_name == "tv":
        cont = torch.minimum(v, aux) - RHO * (aux - m_hat)
    else:  # kl-penalty: y = r + gamma (c - beta log psi), c = the batch minimum of V_hat(s')
        cont = m_hat - BETA * aux
    y = torch.where(done, r.double(), r.double() + GAMMA * cont)
    return torch.where(valid, y, torch.zeros_like(y))


@pytest.mark.parametrize("algo", ["vdn", "qmix", "qtran"])
@pytest.mark.parametrize("name", list(TARGETS))
def test_learner_regresses_on_the_configured_target(algo: str, name: str) -> None:
    target = TARGETS[name]
    cfg = build_config({"mixer": {"name": algo}, "target": target, "agent": {"hidden": 8}})
    torch.manual_seed(0)
    learner = Learner(cfg, N, A, O, S, gamma=GAMMA, device=torch.device("cpu"))
    learner.robust.set_aux_override(aux_estimate)
    batch = batch_of_episodes()
    with torch.no_grad():  # the same quantities the update sees, from the networks before the step
        inputs = learner.controller.sequence_inputs(batch["obs"], batch["actions"])
        utilities = learner.controller(inputs)
        tin = learner.target_inputs(batch, inputs, utilities)
        chosen = utilities[:, :-1].gather(-1, batch["actions"][:, :-1].unsqueeze(-1)).squeeze(-1)
        q_tot = learner.mixer(chosen, tin.state, tin.actions_onehot).double()
    valid = batch["filled"][:, :-1].bool()
    done = batch["terminated"][:, :-1].bool()
    assert done[valid].any() and (~done[valid]).any()
    aux = aux_estimate(tin.state, tin.actions_onehot).double()
    y = expected_target(target, tin.reward, tin.next_value, done, valid, aux)
    n = valid.sum().double()
    stats = learner.update(batch)
    np.testing.assert_allclose(stats["target_mean"], float(y.sum() / n), rtol=1e-5, atol=1e-5)
    td = ((q_tot - y) ** 2 * valid).sum() / n
    np.testing.assert_allclose(stats["td_loss"], float(td), rtol=1e-4, atol=1e-5)


def test_every_pair_of_targets_logs_a_different_mean() -> None:
    """So the test above cannot pass for a learner wired to another of these targets."""
    batch = batch_of_episodes()
    cfg = build_config({"mixer": {"name": "vdn"}, "agent": {"hidden": 8}})
    torch.manual_seed(0)
    learner = Learner(cfg, N, A, O, S, gamma=GAMMA, device=torch.device("cpu"))
    with torch.no_grad():
        inputs = learner.controller.sequence_inputs(batch["obs"], batch["actions"])
        tin = learner.target_inputs(batch, inputs, learner.controller(inputs))
    valid = batch["filled"][:, :-1].bool()
    done = batch["terminated"][:, :-1].bool()
    aux = aux_estimate(tin.state, tin.actions_onehot).double()
    means = {
        k: float(expected_target(t, tin.reward, tin.next_value, done, valid, aux).sum()) for k, t in TARGETS.items()
    }
    names = list(means)
    for i, a in enumerate(names):
        for b in names[i + 1 :]:
            assert abs(means[a] - means[b]) > 1e-2, f"{a} and {b} give the same target sum {means[a]:.4f}"


@pytest.mark.parametrize("name", ["exact-contamination", "exact-tv"])
def test_an_optional_weight_entry_weights_the_td_loss(name: str) -> None:
    """With a float ``weight`` batch entry the TD loss is the weighted mean sum w (Q_tot - y)^2 / sum w over valid
    entries; the target and its m_hat are unchanged (every valid entry still counts, whatever its weight)."""
    target = TARGETS[name]
    cfg = build_config({"mixer": {"name": "vdn"}, "target": target, "agent": {"hidden": 8}})
    torch.manual_seed(0)
    learner = Learner(cfg, N, A, O, S, gamma=GAMMA, device=torch.device("cpu"))
    learner.robust.set_aux_override(aux_estimate)
    batch = batch_of_episodes()
    w = torch.rand(batch["filled"].shape, generator=torch.Generator().manual_seed(1))
    batch = {**batch, "weight": w}
    with torch.no_grad():
        inputs = learner.controller.sequence_inputs(batch["obs"], batch["actions"])
        utilities = learner.controller(inputs)
        tin = learner.target_inputs(batch, inputs, utilities)
        chosen = utilities[:, :-1].gather(-1, batch["actions"][:, :-1].unsqueeze(-1)).squeeze(-1)
        q_tot = learner.mixer(chosen, tin.state, tin.actions_onehot).double()
    valid = batch["filled"][:, :-1].bool()
    done = batch["terminated"][:, :-1].bool()
    aux = aux_estimate(tin.state, tin.actions_onehot).double()
    y = expected_target(target, tin.reward, tin.next_value, done, valid, aux)
    ww = (w[:, :-1] * valid).double()
    stats = learner.update(batch)
    np.testing.assert_allclose(stats["td_loss"], float((ww * (q_tot - y) ** 2).sum() / ww.sum()), rtol=1e-4)
    np.testing.assert_allclose(stats["target_mean"], float(y.sum() / valid.sum()), rtol=1e-5, atol=1e-5)
