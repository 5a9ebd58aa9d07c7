"""The seed paper's training loop (issue 30): its four settings in the `paper` preset, and its units.

What must hold: the TD reward is the team reward added once per agent; before the first step the previous action is
action 0 and padded window positions are real inputs, when acting and in a sampled training window; an episode's
last transition is never stored; every run seed trains on the same day sequence; the building score counts the sum
of the 6 agents' rewards, which SustainGym's own env gives as 6 x drigm's team return; and `paper-mlp-v1` is the old
loop, with none of the four settings.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from drigm.buffer import TransitionBuffer
from drigm.config import AgentConfig, ConfigError, build_config
from drigm.learner import Learner
from drigm.protocol import PROTOCOL_DIR, Job, ProtocolError, load_protocol
from drigm.report import AVERAGE, paper_scope, rescore
from drigm.run import Trainer
from drigm.window_agents import Window, WindowController

N, A, O, S = 3, 5, 4, 6
PAPER_SETTINGS = {"td_reward": "agent_sum", "store_final": False, "pad_action": 0, "train_seed_draw": [42, 200]}


def _settings(cfg) -> dict:
    return {
        "td_reward": cfg.learner.td_reward,
        "store_final": cfg.learner.store_final,
        "pad_action": cfg.agent.pad_action,
        "train_seed_draw": cfg.train_seed_draw,
    }


def test_the_paper_presets_carry_the_four_settings_and_v1_none() -> None:
    job = Job("qmix", "none", None, None, 0)
    paper = load_protocol("building-paper-seasonal", preset="paper").job_config(job)
    mlp = load_protocol("building-paper-seasonal", preset="paper-mlp").job_config(job)
    v1 = load_protocol("building-paper-seasonal", preset="paper-mlp-v1").job_config(job)
    assert _settings(paper) == PAPER_SETTINGS and paper.agent.arch == "lstm"
    # paper-mlp = paper with the MLP window, nothing else
    assert mlp.to_dict() | {"agent": None, "preset": None} == paper.to_dict() | {"agent": None, "preset": None}
    assert {k: v for k, v in mlp.to_dict()["agent"].items() if k != "arch"} == {
        k: v for k, v in paper.to_dict()["agent"].items() if k != "arch"
    }
    assert mlp.agent.arch == "mlp"
    assert _settings(v1) == {"td_reward": "team", "store_final": True, "pad_action": None, "train_seed_draw": None}
    # defaults are left out of the saved config, so configs (and config keys) of the old runs are unchanged
    d = v1.to_dict()
    assert "train_seed_draw" not in d and "pad_action" not in d["agent"]
    assert "td_reward" not in d["learner"] and "store_final" not in d["learner"]


def _window_cfg(**kw) -> dict:
    return {
        "env": {"name": "tabular:robust_vs_nominal"},
        "learner": {"replay": "transitions", "batch_size": 4, "buffer_size": 64},
        "agent": {"arch": "mlp", "history": 3, "last_action": True, "shared": False, "agent_id": False},
        **kw,
    }


def test_td_reward_agent_sum_is_n_times_the_team_reward() -> None:
    rng = np.random.default_rng(0)
    buf = TransitionBuffer(N, A, O, S, capacity=50, history=3)
    L = 6
    ep = {
        "obs": rng.normal(size=(L + 1, N, O)).astype(np.float32),
        "state": rng.normal(size=(L + 1, S)).astype(np.float32),
        "avail_actions": np.ones((L + 1, N, A), dtype=bool),
        "actions": rng.integers(0, A, size=(L + 1, N)),
        "reward": rng.normal(size=L + 1).astype(np.float32),
        "terminated": np.zeros(L + 1, dtype=bool),
    }
    buf.insert(ep, L)
    batch = buf.sample(4, rng)
    rewards = {}
    for td in ("team", "agent_sum"):
        cfg = build_config(_window_cfg(learner={"replay": "transitions", "td_reward": td}))
        learner = Learner(cfg, N, A, O, S, 0.9, torch.device("cpu"))
        inputs = learner.agent_inputs(batch)
        rewards[td] = learner.target_inputs(batch, inputs, learner.utilities(learner.controller, inputs)).reward
    assert torch.allclose(rewards["team"], batch["reward"][:, :1])
    assert torch.allclose(rewards["agent_sum"], N * batch["reward"][:, :1])
    with pytest.raises(ConfigError, match="td_reward"):
        build_config({"learner": {"td_reward": "sum"}})


@pytest.mark.parametrize("arch", ["mlp", "lstm"])
def test_pad_action_feeds_action_p_before_the_first_step_and_runs_over_padding(arch: str) -> None:
    """pad_action p = the same network fed, explicitly, previous action p at the first step and (zero obs,
    previous action p) at every padded position, all of them inside the episode."""
    torch.manual_seed(0)
    h, p = 4, 2
    padded = WindowController(N, A, O, AgentConfig(arch=arch, hidden=8, history=h, last_action=True, pad_action=p))
    plain = WindowController(N, A, O, AgentConfig(arch=arch, hidden=8, history=h, last_action=True))
    plain.load_state_dict(padded.state_dict())
    B = 3
    obs = torch.randn(B, h, N, O)
    last = torch.randint(0, A, (B, h, N))
    valid = torch.tensor([[False, False, True, True], [False, False, False, True], [True] * 4])
    first = valid.float().argmax(dim=1)  # the episode's first step in each window
    for b in range(B):
        last[b, : first[b] + 1] = -1  # no previous action at or before the first step
    obs = obs * valid[:, :, None, None]
    got = padded.q(Window(obs, last, valid))
    explicit = plain.q(Window(obs, torch.where(last >= 0, last, p), torch.ones_like(valid)))
    assert torch.allclose(got, explicit, atol=1e-6)
    # and it is not what the unpadded network computes (the setting changes the function)
    assert not torch.allclose(got[:2], plain.q(Window(obs, last, valid))[:2], atol=1e-4)
    # acting from an episode's start: the first window is all padding but the current step
    q0, _ = padded.act(obs[1, -1].unsqueeze(0), torch.full((1, N), -1), padded.init_memory(1))
    assert torch.allclose(q0[0], got[1], atol=1e-6)


def test_pad_action_is_checked() -> None:
    with pytest.raises(ConfigError, match=r"agent\.pad_action=0 applies to window agents"):
        build_config({"agent": {"pad_action": 0}})
    with pytest.raises(ConfigError, match=r"agent\.pad_action=-1 is out of range"):
        build_config(_window_cfg(agent={"arch": "mlp", "last_action": True, "pad_action": -1}))
    with pytest.raises(ValueError, match=r"agent\.pad_action=5 is out of range: allowed \[0, 4\]"):
        WindowController(N, A, O, AgentConfig(arch="mlp", history=2, last_action=True, pad_action=5))


@pytest.mark.parametrize("store_final", [True, False])
def test_store_final_false_never_stores_an_episodes_last_transition(tmp_path: Path, store_final: bool) -> None:
    cfg = build_config(
        _window_cfg(
            steps=40,
            learner={"replay": "transitions", "batch_size": 4, "buffer_size": 64, "store_final": store_final},
            out=str(tmp_path / "run"),
            progress=False,
            tensorboard=False,
        )
    )
    tr = Trainer(cfg)
    lengths: list[int] = []
    real_insert = tr.buffer.insert

    def spy(episode: dict, length: int) -> None:
        lengths.append(length)
        real_insert(episode, length)

    tr.buffer.insert = spy  # type: ignore[method-assign]
    played: list[int] = []
    real_run = tr.runner.run

    def run(*args, **kw):
        ep = real_run(*args, **kw)
        played.append(ep.length)
        return ep

    tr.runner.run = run  # type: ignore[method-assign]
    tr.train()
    assert played and len(tr.buffer) == sum(lengths)
    assert lengths == [n if store_final else n - 1 for n in played if store_final or n > 1]


def test_train_seed_draw_gives_every_run_seed_the_same_day_sequence(tmp_path: Path) -> None:
    paper = np.random.default_rng(42).integers(0, 200, 600).tolist()  # the paper's training days
    seqs = {}
    for seed in (0, 1):
        cfg = build_config(_window_cfg(seed=seed, train_seed_draw=[42, 200], out=str(tmp_path / f"s{seed}")))
        tr = Trainer(cfg)
        seqs[seed] = [tr._train_seed(k) for k in range(600)]
        assert tr._train_seed(5000) == int(np.random.default_rng(42).integers(0, 200, 5001)[-1])  # a prefix
    assert seqs[0] == seqs[1] == paper
    own = [Trainer(build_config(_window_cfg(seed=s, out=str(tmp_path / f"o{s}"))))._train_seed(0) for s in (0, 1)]
    assert own[0] != own[1]  # without it, each run seed draws its own
    for bad in ([42], [42, 0], "42,200"):
        with pytest.raises(ConfigError, match="train_seed_draw"):
            build_config(_window_cfg(train_seed_draw=bad))


def test_the_paper_score_counts_every_agents_reward() -> None:
    """SustainGym's multi-agent building gives each agent the team reward; the paper's return sums them all."""
    from drigm.envs.building import BuildingAdapter

    ours = BuildingAdapter("Tucson", episode_limit=12)
    raw = BuildingAdapter("Tucson", episode_limit=12).raw_env  # the unwrapped SustainGym env, stepped by hand
    rng = np.random.default_rng(3)
    ours.reset(seed=26)
    raw.reset(seed=26)
    team, summed = 0.0, 0.0
    for _ in range(12):
        acts = rng.integers(0, ours.n_actions, size=ours.n_agents)
        team += ours.step(acts).reward
        _, rewards, _, _, _ = raw.step([int(a) for a in acts])
        assert len(rewards) == 6
        summed += float(sum(rewards.values()))
    assert summed == pytest.approx(6 * team, rel=1e-9)
    proto = load_protocol("building-paper-seasonal", preset="paper")
    assert proto.score is not None and proto.score.agents == 6
    assert proto.score(team) == pytest.approx((summed + 9000) / 9000, rel=1e-12)
    # reports rebuild every score from the stored team returns in these units, whatever the file says
    result = {"tests": {"Tucson (paper days)": {"returns": [team, -900.0], "score": [0.0, 0.0]}}}
    got = rescore(result, proto)["tests"]["Tucson (paper days)"]["score"]
    assert got == pytest.approx([(summed + 9000) / 9000, (6 * -900.0 + 9000) / 9000])


def test_the_paper_climate_column_is_new_york_alone(tmp_path: Path) -> None:
    assert paper_scope(load_protocol("building-paper-climate", preset="paper")) == "NewYork"
    assert paper_scope(load_protocol("building-paper-seasonal", preset="paper")) == AVERAGE  # its one test env
    src = PROTOCOL_DIR / "building-paper-climate.yaml"
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        src.read_text()
        .replace("base: _building.yaml", f"base: {PROTOCOL_DIR / '_building.yaml'}")
        .replace("test: NewYork", "test: Chicago")
    )
    with pytest.raises(ProtocolError, match=r"paper\.test='Chicago' is not one of its tests"):
        load_protocol(bad)


def test_joint_exploration_draws_once_for_the_whole_team() -> None:
    """explore.joint (the seed paper's _select_actions): every agent of a team explores, or none does."""
    from drigm.agents import epsilon_greedy

    rng = np.random.default_rng(0)
    teams, n, acts = 400, 6, 9
    q = np.tile(np.arange(acts, dtype=float), (teams * n, 1))  # greedy: the last action, for every agent
    avail = np.ones_like(q, dtype=bool)
    greedy = epsilon_greedy(q, avail, 0.5, rng, team=n).reshape(teams, n) == acts - 1
    explored = ~greedy
    # a team that explores draws uniform actions (1/9 of them greedy by chance); one that does not is all greedy
    all_greedy = greedy.all(axis=1)
    assert 0.45 < all_greedy.mean() < 0.62  # 0.5 + 0.5 * (1/9)^6, not 0.5^6 * ... as with per-agent draws
    per_agent = epsilon_greedy(q, avail, 0.5, rng).reshape(teams, n) == acts - 1
    assert per_agent.all(axis=1).mean() < 0.1  # (0.5 + 0.5/9)^6 = 0.03
    assert explored.any()
    with pytest.raises(ValueError, match="not whole teams of 6"):
        epsilon_greedy(q[:5], avail[:5], 0.5, rng, team=n)


def test_the_joint_exploration_preset_is_paper_mlp_plus_one_setting(tmp_path: Path) -> None:
    job = Job("qmix", "none", None, None, 0)
    mlp = load_protocol("building-paper-seasonal", preset="paper-mlp").job_config(job).to_dict()
    joint = load_protocol("building-paper-seasonal", preset="paper-mlp-joint").job_config(job)
    assert joint.explore.joint is True
    d = joint.to_dict()
    assert d | {"explore": None, "preset": None} == mlp | {"explore": None, "preset": None}
    assert d["explore"] == {**mlp["explore"], "joint": True} and "joint" not in mlp["explore"]  # default left out
    tr = Trainer(build_config(_window_cfg(explore={"joint": True}, out=str(tmp_path / "r"))))
    assert tr.runner.joint_explore is True
    with pytest.raises(ConfigError, match=r"explore\.joint"):
        build_config(_window_cfg(explore={"joint": "yes"}))
