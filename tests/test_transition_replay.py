"""Transition replay (the seed paper's building replay) and the window agents that read it.

What must hold: a stored transition's window never reaches into another episode; windows at t < history are
left-padded, and acting and training compute the same utilities from them; the window MLP equals a dense MLP
over concatenated one-hot inputs; the per-slot target cache changes nothing; configs that cannot work refuse.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from torch.nn.functional import one_hot

from drigm.buffer import BufferError, TransitionBuffer
from drigm.config import AgentConfig, ConfigError, build_config
from drigm.learner import Learner
from drigm.run import Trainer
from drigm.window_agents import Window, WindowController, transition_windows

N, A, O, S = 3, 5, 4, 6


def episode(length: int, rng: np.random.Generator, offset: float = 0.0) -> dict[str, np.ndarray]:
    """A random episode whose observations encode (offset, step) so windows can be traced back."""
    obs = rng.normal(size=(length + 1, N, O)).astype(np.float32)
    obs[:, :, 0] = offset + np.arange(length + 1)[:, None]
    return {
        "obs": obs,
        "state": rng.normal(size=(length + 1, S)).astype(np.float32),
        "avail_actions": np.ones((length + 1, N, A), dtype=bool),
        "actions": rng.integers(0, A, size=(length + 1, N)),
        "reward": rng.normal(size=length + 1).astype(np.float32),
        "terminated": np.zeros(length + 1, dtype=bool),
    }


def test_windows_are_left_padded_and_never_cross_episodes() -> None:
    rng = np.random.default_rng(0)
    h = 4
    buf = TransitionBuffer(N, A, O, S, capacity=100, history=h)
    eps = [episode(3, rng, 100.0), episode(7, rng, 200.0), episode(2, rng, 300.0)]
    for ep in eps:
        buf.insert(ep, len(ep["reward"]) - 1)
    assert len(buf) == 3 + 7 + 2
    row = 0
    for ep in eps:
        L = len(ep["reward"]) - 1
        for t in range(L):
            win, act, valid = buf.data["win_obs"][row], buf.data["win_actions"][row], buf.data["win_valid"][row]
            for k in range(h + 1):
                step = t - h + 1 + k
                if step < 0:  # before the episode: padding, never another episode's step
                    assert not valid[k] and torch.all(win[k] == 0) and torch.all(act[k] == -1)
                else:
                    assert valid[k]
                    assert torch.allclose(win[k], torch.as_tensor(ep["obs"][step]))
                    want = torch.full((N,), -1) if step == 0 else torch.as_tensor(ep["actions"][step - 1])
                    assert torch.equal(act[k], want)
            assert torch.equal(buf.data["actions"][row], torch.as_tensor(ep["actions"][t]))
            assert torch.allclose(buf.data["state"][row, 1], torch.as_tensor(ep["state"][t + 1]))
            row += 1


def test_fifo_counts_transitions_and_state_dict_round_trips() -> None:
    rng = np.random.default_rng(1)
    buf = TransitionBuffer(N, A, O, S, capacity=10, history=2)
    for k in range(4):
        buf.insert(episode(4, rng, 100.0 * k), 4)
    assert len(buf) == 10  # 16 inserted, the oldest 6 evicted
    firsts = sorted({int(v) // 100 for v in buf.data["win_obs"][:, -1, 0, 0].tolist()})
    assert firsts == [1, 2, 3]  # episode 0 gone entirely, episode 1 partly
    with pytest.raises(BufferError, match="cannot sample 11"):
        buf.sample(11, rng)
    batch = buf.sample(10, rng)
    assert sorted(batch["slot"].tolist()) == list(range(10))  # without replacement
    assert batch["filled"].tolist() == [[True, False]] * 10
    other = TransitionBuffer(N, A, O, S, capacity=10, history=2)
    other.load_state_dict(buf.state_dict())
    for k, v in buf.data.items():
        assert torch.equal(v, other.data[k]), k
    assert (other.index, other.size, other.writes) == (buf.index, buf.size, buf.writes)
    with pytest.raises(BufferError, match="history"):
        TransitionBuffer(N, A, O, S, capacity=10, history=3).load_state_dict(buf.state_dict())
    bad = episode(4, rng)
    bad["obs"][2, 0, 1] = np.nan
    with pytest.raises(BufferError, match="'obs' holds NaN"):
        buf.insert(bad, 4)


@pytest.mark.parametrize("arch", ["mlp", "lstm"])
@pytest.mark.parametrize("shared", [True, False])
@pytest.mark.parametrize("pad_action", [None, 0, 2])
def test_acting_and_training_see_the_same_padded_windows(arch: str, shared: bool, pad_action: int | None) -> None:
    torch.manual_seed(0)
    h = 4
    cfg = AgentConfig(arch=arch, hidden=16, history=h, shared=shared, last_action=True, pad_action=pad_action)
    ctrl = WindowController(N, A, O, cfg)
    ep = episode(6, np.random.default_rng(2))
    obs, actions = torch.as_tensor(ep["obs"]), torch.as_tensor(ep["actions"])
    # acting: one step at a time from the episode's start, as EpisodeRunner does
    mem = ctrl.init_memory(1)
    last = torch.full((1, N), -1)
    acted = []
    for t in range(7):
        q, mem = ctrl.act(obs[t].unsqueeze(0), last, mem)
        acted.append(q[0])
        last = actions[t].unsqueeze(0)
    # training: the stored windows of s (positions 0..h-1) and s' (positions 1..h)
    w_obs, w_act, w_valid = transition_windows(obs, actions, 6, h)
    q_s = ctrl.q(Window(w_obs[:, :h], w_act[:, :h], w_valid[:, :h]))
    q_next = ctrl.q(Window(w_obs[:, 1:], w_act[:, 1:], w_valid[:, 1:]))
    for t in range(6):
        assert torch.allclose(q_s[t], acted[t], atol=1e-5), t
        assert torch.allclose(q_next[t], acted[t + 1], atol=1e-5), t


def test_window_mlp_equals_a_dense_layer_over_one_hot_inputs() -> None:
    """The embedding lookups are the dense first layer over [obs, one-hot last action, one-hot id] per position."""
    torch.manual_seed(3)
    h = 3
    ctrl = WindowController(N, A, O, AgentConfig(arch="mlp", hidden=8, history=h, shared=True, last_action=True))
    B = 5
    obs = torch.randn(B, h, N, O)
    last = torch.randint(-1, A, (B, h, N))
    valid = torch.tensor([[False, True, True], [True, True, True], [False, False, True], [True] * 3, [True] * 3])
    got = ctrl.q(Window(obs, last, valid))
    # the dense equivalent: inputs per position, zero where invalid, concatenated oldest first
    act_oh = one_hot(last.clamp_min(0), A).float() * (last >= 0).unsqueeze(-1).float()
    ids = torch.eye(N).expand(B, h, N, N)
    x = torch.cat([obs, act_oh, ids], dim=-1) * valid[:, :, None, None].float()  # (B, h, N, d)
    d = O + A + N
    W = torch.zeros(h * d, 8)
    emb = ctrl.act_table.table.weight  # rows (pos * A + a)
    idt = ctrl.id_table.table.weight  # rows (pos * N + agent)
    W_obs = ctrl.fc_obs.weight[0]  # (h * O, 8)
    for k in range(h):
        W[k * d : k * d + O] = W_obs[k * O : (k + 1) * O]
        W[k * d + O : k * d + O + A] = emb[k * A : (k + 1) * A]
        W[k * d + O + A : (k + 1) * d] = idt[k * N : (k + 1) * N]
    flat = x.permute(0, 2, 1, 3).reshape(B * N, h * d)
    pre = flat @ W + ctrl.fc_obs.bias[0]
    hidden = torch.relu(torch.relu(pre) @ ctrl.fc2.weight[0] + ctrl.fc2.bias[0])
    want = (hidden @ ctrl.out.weight[0] + ctrl.out.bias[0]).view(B, N, A)
    assert torch.allclose(got, want, atol=1e-5)


def _transition_cfg(tmp: Path, **learner: object) -> object:
    return build_config(
        {
            "env": {"name": "tabular:robust_vs_nominal", "episode_limit": 8},
            "steps": 400,
            "out": str(tmp),
            "agent": {"arch": "mlp", "hidden": 16, "history": 3, "last_action": True, "shared": False},
            "learner": {"replay": "transitions", "batch_size": 16, "buffer_size": 200, "double_q": False, **learner},
            "target": {"kind": "exact", "set": "tv", "rho": 0.2},
            "progress": False,
            "tensorboard": False,
        }
    )


@pytest.mark.parametrize("double_q", [False, True])
def test_target_cache_gives_the_targets_of_a_fresh_computation(tmp_path: Path, double_q: bool) -> None:
    cfg = _transition_cfg(tmp_path / "a", target_update_interval=1000, double_q=double_q)
    tr = Trainer(cfg)  # type: ignore[arg-type]
    tr.train()
    learner: Learner = tr.learner
    assert learner._tcache is not None  # eligible: no input_norm, hard target updates
    # without double-Q the cache holds V_hat(s') per slot, with it the target utilities at s'
    assert tuple(learner._tcache.shape[1:]) == ((tr.env.n_agents, tr.env.n_actions) if double_q else (1,))
    rng = np.random.default_rng(0)
    for _ in range(3):
        batch = tr.buffer.sample(16, rng)
        inputs = learner.agent_inputs(batch)
        online = learner.utilities(learner.controller, inputs, at_next=double_q)
        cached = learner.target_inputs(batch, inputs, online).next_value
        plain = learner.target_inputs({k: v for k, v in batch.items() if k != "slot"}, inputs, online)
        assert torch.allclose(cached, plain.next_value, atol=1e-6)
    # a hard copy clears the cache: the targets then follow the new target network
    with torch.no_grad():
        for p in learner.controller.parameters():
            p.add_(0.1)
    learner.n_updates = cfg.learner.target_update_interval  # type: ignore[attr-defined]
    learner._update_targets()  # the copy that update() makes every target_update_interval updates
    assert learner._tcache_version is not None and bool((learner._tcache_version == -1).all())
    batch = tr.buffer.sample(16, rng)
    inputs = learner.agent_inputs(batch)
    online = learner.utilities(learner.controller, inputs, at_next=double_q)
    cached = learner.target_inputs(batch, inputs, online).next_value
    plain = learner.target_inputs({k: v for k, v in batch.items() if k != "slot"}, inputs, online).next_value
    assert torch.allclose(cached, plain, atol=1e-6)


def test_input_norm_or_soft_updates_switch_the_cache_off(tmp_path: Path) -> None:
    for extra in ({"input_norm": True}, {"target_update": "soft"}):
        tr = Trainer(_transition_cfg(tmp_path / str(len(extra)), **extra))  # type: ignore[arg-type]
        assert tr.learner._tcache is None, extra


def test_transition_run_resumes_exactly(tmp_path: Path) -> None:
    full = Trainer(_transition_cfg(tmp_path / "full"))  # type: ignore[arg-type]
    full.train()
    half_cfg = _transition_cfg(tmp_path / "half")
    half = Trainer(replace(half_cfg, steps=200))  # type: ignore[type-var]
    half.train()
    resumed = Trainer(half_cfg)  # type: ignore[arg-type]
    resumed.train(resume=True)
    mine, theirs = full.learner.controller.state_dict(), resumed.learner.controller.state_dict()
    assert list(mine) == list(theirs)
    for k, a in mine.items():
        assert torch.allclose(a, theirs[k], atol=1e-6), k


def test_configs_that_cannot_work_are_refused(tmp_path: Path) -> None:
    base = {"learner": {"replay": "transitions"}, "agent": {"arch": "gru"}}
    with pytest.raises(ConfigError, match="arch='gru' needs whole episodes"):
        build_config(base)
    with pytest.raises(ConfigError, match="arch='lstm' is the window agent"):
        build_config({"agent": {"arch": "lstm"}})
    with pytest.raises(ConfigError, match=r"td_lambda=0\.5 needs whole episodes"):
        build_config({"learner": {"replay": "transitions", "td_lambda": 0.5}})
    with pytest.raises(ConfigError, match=r"learner\.replay='replay' is not one of episodes, transitions"):
        build_config({"learner": {"replay": "replay"}})
    cfg = build_config({"learner": {"replay": "transitions", "grad_clip": None}, "agent": {"arch": "lstm"}})
    assert cfg.learner.grad_clip is None and cfg.agent.arch == "lstm"
    with pytest.raises(ConfigError, match=r"learner\.grad_clip=0"):
        build_config({"learner": {"grad_clip": 0}})


@pytest.mark.parametrize("double_q", [False, True])
def test_training_with_the_target_cache_equals_training_without_it(tmp_path: Path, double_q: bool) -> None:
    """The cache is a pure speed-up: the same run with it switched off ends with the same weights (49 updates,
    4 target copies: a cache that outlived a copy moves the weights by ~0.03)."""
    params = []
    for cache in (True, False):
        tr = Trainer(_transition_cfg(tmp_path / str(cache), target_update_interval=10, double_q=double_q))  # type: ignore[arg-type]
        if not cache:
            tr.learner._tcache = tr.learner._tcache_version = None
        tr.train()
        params.append([p.detach().clone() for p in tr.learner.params])
    for a, b in zip(*params, strict=True):
        assert torch.allclose(a, b, atol=1e-5), float((a - b).abs().max())


def test_a_cpu_update_flushes_subnormals_and_nothing_else_does(tmp_path: Path) -> None:
    """Adam's moments of rarely sampled embedding rows decay into subnormals, which x86 computes ~100x slower
    (2.3x per building episode, benchmarks/bench_building_budget.py): a CPU update flushes them to zero, and the
    process's arithmetic outside updates keeps IEEE subnormals (numpy, Hypothesis and the exact solver rely on it)."""
    from drigm.learner import flushing_subnormals

    torch.set_flush_denormal(False)
    tr = Trainer(_transition_cfg(tmp_path / "r"))  # type: ignore[arg-type]
    seen: list[bool] = []
    step = tr.learner.optimizer.step

    def spy(*args: object, **kwargs: object) -> object:
        seen.append(flushing_subnormals())
        return step(*args, **kwargs)

    tr.learner.optimizer.step = spy  # type: ignore[method-assign]
    tr.train()
    assert seen and all(seen)  # every optimiser step ran with subnormals flushed
    assert not flushing_subnormals()  # and the state outside is as it was
    tr.learner.flush_subnormals = False  # the switch the benchmark uses to keep them
    seen.clear()
    tr.learner.update(tr.buffer.sample(16, np.random.default_rng(0)))
    assert seen == [False]
