"""Mixers (VDN sum, QMIX monotonicity, QTRAN losses), the mixer registry, and the agent networks."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch

from drigm.agents import AgentController, epsilon_greedy, masked_argmax
from drigm.config import AgentConfig
from drigm.mixers import MIXERS, Mixer, MixerContext, MixerError, QMixParams, QTranParams, build_mixer, get_mixer

B, T, N, A, S = 4, 5, 3, 4, 6


def test_vdn_is_the_sum() -> None:
    mixer = build_mixer("vdn", get_mixer("vdn").Params(), S, N, A)
    qs = torch.randn(B, T, N)
    assert torch.allclose(mixer(qs, torch.randn(B, T, S), torch.zeros(B, T, N * A)), qs.sum(-1))


@pytest.mark.parametrize("layers", [1, 2])
def test_qmix_is_monotone_in_every_utility(layers: int) -> None:
    torch.manual_seed(0)
    mixer = build_mixer("qmix", QMixParams(embed_dim=8, hypernet_layers=layers), S, N, A)
    qs = (torch.randn(256, N) * 5).requires_grad_(True)
    states = torch.randn(256, S) * 3
    out = mixer(qs, states, torch.zeros(256, N * A))
    assert out.shape == (256,)
    (grad,) = torch.autograd.grad(out.sum(), qs)
    assert (grad >= 0).all()
    assert (grad > 0).float().mean() > 0.5  # monotone, not constant
    # and along a path: raising one utility never lowers Q_tot
    with torch.no_grad():
        bumped = qs.detach().clone()
        bumped[:, 1] += 2.0
        assert (mixer(bumped, states, torch.zeros(256, N * A)) >= out.detach() - 1e-6).all()


def test_qtran_losses_match_their_definitions() -> None:
    torch.manual_seed(0)
    mixer = build_mixer("qtran", QTranParams(hidden=16, opt_coef=1.0, nopt_coef=1.0), S, N, A)
    utilities = torch.randn(B, T, N, A, requires_grad=True)
    avail = torch.ones(B, T, N, A, dtype=torch.bool)
    avail[..., 0] = False  # action 0 never available: the greedy choice must skip it
    actions = torch.randint(1, A, (B, T, N))
    onehot = torch.nn.functional.one_hot(actions, A).float().flatten(-2)
    states = torch.randn(B, T, S)
    chosen = utilities.gather(-1, actions.unsqueeze(-1)).squeeze(-1)
    q_jt = mixer(chosen, states, onehot)
    assert q_jt.shape == (B, T)
    mask = torch.ones(B, T)
    mask[:, -1] = 0
    ctx = MixerContext(utilities, avail, chosen, onehot, states, q_jt, mask)
    losses = mixer.extra_losses(ctx)
    assert set(losses) == {"opt_loss", "nopt_loss"} and all(v.shape == () for v in losses.values())
    # by hand
    greedy = masked_argmax(utilities.detach(), avail)
    assert (greedy > 0).all()
    g_onehot = torch.nn.functional.one_hot(greedy, A).float().flatten(-2)
    opt = (
        utilities.gather(-1, greedy.unsqueeze(-1)).sum((-1, -2))
        - mixer(None, states, g_onehot)
        + mixer.v(states)[..., 0]
    )
    nopt = (chosen.sum(-1) - q_jt + mixer.v(states)[..., 0]).clamp(max=0)
    assert torch.allclose(losses["opt_loss"], (opt.pow(2) * mask).sum() / mask.sum(), atol=1e-6)
    assert torch.allclose(losses["nopt_loss"], (nopt.pow(2) * mask).sum() / mask.sum(), atol=1e-6)
    # Q_jt is detached in both losses: gradients reach the utilities and V, not Q_jt
    sum(losses.values()).backward()
    assert utilities.grad is not None and utilities.grad.abs().sum() > 0
    assert all(p.grad is None or p.grad.abs().sum() == 0 for p in mixer.q_jt.parameters())
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in mixer.v.parameters())


def test_mixer_registry_errors_and_params_validation() -> None:
    with pytest.raises(MixerError, match=r"unknown mixer \(algo\) 'nope'.*qmix.*qtran.*vdn"):
        get_mixer("nope")
    with pytest.raises(MixerError, match="hypernet_layers=3"):
        build_mixer("qmix", QMixParams(hypernet_layers=3), S, N, A)
    with pytest.raises(MixerError, match="nopt_coef"):
        build_mixer("qtran", QTranParams(nopt_coef=-1.0), S, N, A)
    with pytest.raises(MixerError, match="takes QMixParams"):
        build_mixer("qmix", QTranParams(), S, N, A)
    assert {"vdn", "qmix", "qtran"} <= set(MIXERS)
    assert all(issubclass(cls, Mixer) for cls in MIXERS.values())


# ===== agents =====================================================================================
@pytest.mark.parametrize(
    "cfg",
    [
        AgentConfig(arch="mlp", hidden=16),
        AgentConfig(arch="mlp", hidden=16, history=3, last_action=True),
        AgentConfig(arch="gru", hidden=16, last_action=True),
        AgentConfig(arch="gru", hidden=16, shared=False),
        AgentConfig(arch="mlp", hidden=16, shared=False, history=2),
    ],
    ids=["mlp", "mlp-history-lastaction", "gru-lastaction", "gru-nonshared", "mlp-nonshared-history"],
)
def test_sequence_and_step_paths_agree(cfg: AgentConfig) -> None:
    torch.manual_seed(0)
    ctrl = AgentController(N, A, 5, cfg)
    obs = torch.randn(B, T, N, 5)
    actions = torch.randint(0, A, (B, T, N))
    inputs = ctrl.sequence_inputs(obs, actions)
    seq = ctrl(inputs)
    assert seq.shape == (B, T, N, A)
    h = ctrl.init_hidden(B)
    last = torch.zeros(B, N, A)
    for t in range(T):
        q, h = ctrl.step(ctrl.build_inputs(obs[:, t], last), h)
        assert torch.allclose(q, seq[:, t], atol=1e-5), f"step {t} differs"
        last = torch.nn.functional.one_hot(actions[:, t], A).float()


def test_agent_inputs_and_sharing() -> None:
    cfg = AgentConfig(hidden=8, last_action=True)
    ctrl = AgentController(N, A, 5, cfg)
    assert ctrl.input_dim == 5 + A + N and len(ctrl.bodies) == 1
    inputs = ctrl.build_inputs(torch.zeros(2, N, 5), torch.zeros(2, N, A))
    assert torch.equal(inputs[0, :, -N:], torch.eye(N))  # agent-id one-hots
    separate = AgentController(N, A, 5, replace(cfg, shared=False))
    assert separate.input_dim == 5 + A and len(separate.bodies) == N


def test_action_selection_respects_masks() -> None:
    import numpy as np

    rng = np.random.default_rng(0)
    q = np.array([[5.0, 1.0, 0.0], [0.0, 1.0, 9.0]])
    avail = np.array([[False, True, True], [True, True, False]])
    assert epsilon_greedy(q, avail, 0.0, rng).tolist() == [1, 1]
    draws = np.array([epsilon_greedy(q, avail, 1.0, rng) for _ in range(400)])
    assert set(draws[:, 0]) == {1, 2} and set(draws[:, 1]) == {0, 1}
