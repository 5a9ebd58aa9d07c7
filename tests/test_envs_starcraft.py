"""StarCraft adapters: SMAX (JaxMARL, runs here) single and batched, its OOD perturbations, and real SMAC.

JAX compiles each SMAX function once per process (a few seconds each); every SMAXEnv / BatchedSMAX of
the same map shares the compiled core (perturbations and the episode limit are traced parameters), so
these tests compile four functions for 3s_vs_5z, one more for a 6-enemy build, and nothing else.
Real-SMAC tests skip unless oxwhirl's smac.env and StarCraft II with SMAC's maps are installed; the
adapter's own logic is also checked against a stand-in of StarCraft2Env's interface.
"""

from __future__ import annotations

import sys
import types

import numpy as np
import pytest
from conftest import require_extra

require_extra("jaxmarl", "starcraft")  # the smax adapter; fails instead of skipping under CI=true
import torch  # noqa: E402

from drigm.envs.base import EnvError, MultiAgentEnv, make_env  # noqa: E402
from drigm.envs.smac import SMACEnv, smac_unavailable_reason  # noqa: E402
from drigm.envs.smax import STOP_ACTION, BatchedSMAX, SMAXEnv, SMAXPerturbation  # noqa: E402

MAP = "3s_vs_5z"
EAST = 1  # SMAX moves: 0 north, 1 east, 2 south, 3 west (allies start west of the enemies)
CHUNK = 3  # batched tests use B = 4: 4 simultaneous resets take a full chunk of 3, then 1 + 2 padding slots


def random_valid(avail: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A uniformly random available action for every row of `avail` (..., n_actions)."""
    return np.argmax(rng.random(avail.shape) * avail, axis=-1)


def attack_or_east(avail: np.ndarray) -> np.ndarray:
    """Each agent attacks its first attackable enemy, else moves east, else stops."""
    acts = []
    for row in avail:
        attacks = np.flatnonzero(row[5:])
        acts.append(5 + attacks[0] if attacks.size else (EAST if row[EAST] else STOP_ACTION))
    return np.array(acts)


@pytest.fixture(scope="module")
def env() -> SMAXEnv:
    return SMAXEnv(MAP)


@pytest.fixture(scope="module")
def core_state(env: SMAXEnv):
    """A callable giving the underlying SMAX state of an env (to check layout facts against the simulator)."""
    return lambda e: e._carry["env"].state


# ----- API ----------------------------------------------------------------------------------------
def test_registry_builds_smax_and_validates_arguments() -> None:
    e = make_env(f"smax:{MAP}", enemy_pos_noise_std=0.1)
    assert isinstance(e, SMAXEnv) and isinstance(e, MultiAgentEnv)
    assert e.perturbation.enemy_pos_noise_std == 0.1
    with pytest.raises(EnvError, match="unknown smax argument"):
        make_env(f"smax:{MAP}", enemy_noise=0.1)
    with pytest.raises(EnvError, match="unknown SMAX map 'nope'"):
        make_env("smax:nope")
    with pytest.raises(EnvError, match="needs a map"):
        make_env("smax")
    bad = [
        ({"enemy_pos_noise_std": -0.1}, "enemy_pos_noise_std"),
        ({"enemy_health_scale": 0.0}, "enemy_health_scale"),
        ({"enemy_damage_scale": float("nan")}, "enemy_damage_scale"),
        ({"action_fail_prob": 1.5}, "action_fail_prob"),
        ({"n_enemies": 0}, "n_enemies"),
        ({"episode_limit": 0}, "episode_limit"),
        ({"smax_kwargs": {"max_steps": 5}}, "max_steps"),
        ({"smax_kwargs": {"attack_mode": "nearest"}}, "attack_mode"),
    ]
    for kwargs, name in bad:
        with pytest.raises(EnvError, match=name):
            make_env(f"smax:{MAP}", **kwargs)


def test_more_enemies_than_a_mixed_map_has_is_refused() -> None:
    with pytest.raises(EnvError, match="mixed unit types"):
        make_env("smax:2s3z", n_enemies=6)


def test_shapes_dtypes_masks_and_layout(env: SMAXEnv) -> None:
    assert (env.n_agents, env.n_enemies, env.n_actions) == (3, 5, 10)
    assert (env.obs_dim, env.state_dim, env.episode_limit) == (101, 96, 250)
    assert env.enemy_position_indices.ravel().tolist() == [27, 28, 40, 41, 53, 54, 66, 67, 79, 80]
    ts = env.reset(seed=0)
    assert ts.obs.shape == (3, 101) and ts.obs.dtype == np.float32
    assert ts.state.shape == (96,) and ts.state.dtype == np.float32
    assert ts.avail_actions.shape == (3, 10) and ts.avail_actions.dtype == bool
    assert ts.avail_actions.any(axis=1).all() and ts.avail_actions[:, STOP_ACTION].all()
    assert (ts.reward, ts.terminated, ts.truncated) == (0.0, False, False)
    assert ts.info["won"] is False


def test_enemy_position_features_are_relative_positions_over_sight_range(env: SMAXEnv, core_state) -> None:
    ts = env.reset(seed=3)
    seen = 0
    for _ in range(6):
        ts = env.step(np.full(3, EAST))
        s = core_state(env)
        pos, alive = np.asarray(s.unit_positions), np.asarray(s.unit_alive)
        sight = float(env._core.env.unit_type_sight_ranges[2])  # stalker
        for i in range(3):
            for k in range(5):
                rel = (pos[3 + k] - pos[i]) / sight
                feats = ts.obs[i, env.enemy_position_indices[k]]
                if alive[i] and alive[3 + k] and np.linalg.norm(rel) < 1.0:
                    np.testing.assert_allclose(feats, rel, atol=1e-5)
                    seen += 1
                else:
                    assert (feats == 0).all()
    assert seen > 0, "no enemy came into sight; the layout check checked nothing"


def test_reset_is_deterministic_under_a_seed(env: SMAXEnv) -> None:
    def rollout(seed: int) -> list[np.ndarray]:
        ts, rng, out = env.reset(seed=seed), np.random.default_rng(1), []
        for _ in range(8):
            out += [ts.obs, ts.state, ts.avail_actions, np.float32(ts.reward)]
            ts = env.step(random_valid(ts.avail_actions, rng))
        return out

    a, b, c = rollout(5), rollout(5), rollout(6)
    assert all(np.array_equal(x, y) for x, y in zip(a, b, strict=True))
    assert not all(np.array_equal(x, y) for x, y in zip(a, c, strict=True))


def test_short_episode_reports_won_and_truncation(env: SMAXEnv) -> None:
    ts, rng, steps = env.reset(seed=2), np.random.default_rng(2), 0
    while not ts.done:
        ts = env.step(random_valid(ts.avail_actions, rng))
        steps += 1
        assert "won" in ts.info and isinstance(ts.info["won"], bool)
    assert steps <= env.episode_limit and (ts.terminated != ts.truncated)
    assert ts.info["won"] == (ts.terminated and ts.reward >= 1.0)
    with pytest.raises(EnvError, match="after the episode ended"):
        env.step(np.full(3, STOP_ACTION))
    short = SMAXEnv(MAP, episode_limit=3)
    ts = short.reset(seed=0)
    flags = [(t.terminated, t.truncated) for t in (short.step(np.full(3, STOP_ACTION)) for _ in range(3))]
    assert flags == [(False, False), (False, False), (False, True)]


def test_unavailable_action_is_rejected(env: SMAXEnv) -> None:
    ts = env.reset(seed=0)
    agent, action = np.argwhere(~ts.avail_actions)[0]
    acts = np.full(3, STOP_ACTION)
    acts[agent] = action
    with pytest.raises(EnvError, match=f"action {action} of agent {agent} is not available"):
        env.step(acts)


def test_fewer_enemies_keep_layout_and_a_won_battle_pays_a_full_kill_plus_bonus(core_state) -> None:
    e = make_env(f"smax:{MAP}", n_enemies=1)
    assert (e.obs_dim, e.n_actions) == (101, 10)
    ts, total = e.reset(seed=4), 0.0
    assert not np.asarray(core_state(e).unit_alive)[4:].any()
    while not ts.done:
        assert not ts.avail_actions[:, 6:].any()  # removed enemies 1..4 can never be attacked
        assert (ts.obs[:, 39:91] == 0).all()  # and are never seen
        ts = e.step(attack_or_east(ts.avail_actions))
        total += ts.reward
    assert ts.terminated and ts.info["won"]
    np.testing.assert_allclose(total, 2.0, atol=1e-4)  # all of the (one-unit) enemy team's health + win bonus 1


def test_more_enemies_rebuild_the_scenario_with_the_maps_enemy_type() -> None:
    e = make_env(f"smax:{MAP}", n_enemies=6)
    assert (e.n_enemies, e.n_actions, e.obs_dim, e.state_dim) == (6, 11, 13 * 8 + 10, 12 * 9)
    ts = e.reset(seed=0)
    assert ts.obs.shape == (3, 114) and ts.avail_actions.shape == (3, 11)
    assert ts.state[-9:].tolist() == [2, 2, 2, 3, 3, 3, 3, 3, 3]  # unit types: 3 stalkers, 6 zealots


# ----- perturbations ------------------------------------------------------------------------------
def test_enemy_position_noise_changes_only_visible_enemy_positions(env: SMAXEnv) -> None:
    sigma = 0.5
    noisy = SMAXEnv(MAP, perturbation=SMAXPerturbation(enemy_pos_noise_std=sigma))
    idx = env.enemy_position_indices
    other = np.setdiff1d(np.arange(env.obs_dim), idx.ravel())
    a, b = env.reset(seed=9), noisy.reset(seed=9)
    diffs = []
    for _ in range(8):
        a, b = env.step(np.full(3, EAST)), noisy.step(np.full(3, EAST))
        assert np.array_equal(a.obs[:, other], b.obs[:, other])
        assert np.array_equal(a.state, b.state) and np.array_equal(a.avail_actions, b.avail_actions)
        assert a.reward == b.reward
        visible = a.obs[:, idx[:, 0] - 1] > 0  # enemy health feature: alive and in sight
        d = b.obs[:, idx] - a.obs[:, idx]  # (agents, enemies, 2)
        assert (d[~visible] == 0).all()
        diffs.append(d[visible].ravel())
    d = np.concatenate(diffs)
    assert d.size >= 100, "too few visible enemies to estimate the noise"
    assert (d != 0).all() and 0.7 * sigma < d.std() < 1.3 * sigma and abs(d.mean()) < 4 * sigma / np.sqrt(d.size)


def test_action_failure_rate_and_noop_replacement() -> None:
    p, B, T = 0.3, 4, 100
    b = BatchedSMAX(MAP, B, perturbation=SMAXPerturbation(action_fail_prob=p), reset_chunk=CHUNK)
    bt, rng, failed, n = b.reset(seed=1), np.random.default_rng(3), 0, 0
    for _ in range(T):
        acts = random_valid(bt.avail_actions.numpy(), rng)
        bt = b.step(acts)
        f, ex = bt.action_failed.numpy(), bt.executed_actions.numpy()
        assert (ex[f] == STOP_ACTION).all() and (ex[~f] == acts[~f]).all()
        failed, n = failed + int(f.sum()), n + f.size
    sd = np.sqrt(n * p * (1 - p))
    assert abs(failed - n * p) < 4.5 * sd, (failed, n * p, sd)


def test_certain_action_failure_equals_always_stopping(env: SMAXEnv) -> None:
    always_fail = SMAXEnv(MAP, perturbation=SMAXPerturbation(action_fail_prob=1.0))
    a, b = env.reset(seed=12), always_fail.reset(seed=12)
    rng = np.random.default_rng(0)
    for _ in range(12):
        a = env.step(np.full(3, STOP_ACTION))
        b = always_fail.step(random_valid(b.avail_actions, rng))
        assert b.info["action_failed"].all() and (b.info["executed_actions"] == STOP_ACTION).all()
        assert np.array_equal(a.obs, b.obs) and np.array_equal(a.state, b.state) and a.reward == b.reward


def test_health_and_damage_scaling_change_the_dynamics_as_stated(env: SMAXEnv, core_state) -> None:
    s = 2.0
    tough = SMAXEnv(MAP, perturbation=SMAXPerturbation(enemy_health_scale=s))
    harsh = SMAXEnv(MAP, perturbation=SMAXPerturbation(enemy_damage_scale=s))
    envs = (env, tough, harsh)
    ts = [e.reset(seed=21) for e in envs]
    raw0 = [np.asarray(core_state(e).unit_health) for e in envs]
    np.testing.assert_allclose(raw0[1][3:], s * raw0[0][3:])  # enemies start with s x their health
    np.testing.assert_allclose(raw0[2][:3], raw0[0][:3] / s)  # damage x s == ally health / s
    assert all(np.array_equal(ts[0].state, t.state) for t in ts)  # health fractions all start at 1
    enemy_h = 10 * np.arange(3, 8)  # health-fraction entries of the enemies in the world state
    ally_h = 10 * np.arange(3)
    hit_enemy = hit_ally = 0
    for _ in range(40):
        acts = attack_or_east(ts[0].avail_actions)
        ts = [e.step(acts) for e in envs]
        alive = np.asarray(core_state(env).unit_alive)
        if any(t.done for t in ts) or not alive.all() or not np.asarray(core_state(harsh).unit_alive).all():
            break  # a death makes the trajectories diverge; the scaling law holds up to the first one
        base, tgh, hrs = (t.state for t in ts)
        np.testing.assert_allclose(1 - tgh[enemy_h], (1 - base[enemy_h]) / s, atol=1e-5)
        np.testing.assert_allclose(tgh[ally_h], base[ally_h], atol=1e-6)
        np.testing.assert_allclose(ts[1].reward, ts[0].reward / s, atol=1e-6)
        np.testing.assert_allclose(1 - hrs[ally_h], (1 - base[ally_h]) * s, atol=1e-5)
        np.testing.assert_allclose(hrs[enemy_h], base[enemy_h], atol=1e-6)
        hit_enemy += (base[enemy_h] < 1).any()
        hit_ally += (base[ally_h] < 1).any()
    assert hit_enemy and hit_ally, "no damage was dealt before the first death; the check checked nothing"


# ----- batched ------------------------------------------------------------------------------------
def close(batched: torch.Tensor, single: np.ndarray | float) -> None:
    np.testing.assert_allclose(batched.numpy(), single, rtol=1e-6, atol=1e-6)


def run_batched_against_singles(pert: SMAXPerturbation, limit: int, steps: int, attackers: tuple = ()) -> list:
    """Step a BatchedSMAX and one SMAXEnv per battle with the same seeds and actions; assert equal results.

    Discrete results must match exactly; floats up to rounding (XLA compiles the vmapped and the single
    program separately, and a division may differ in the last bit). Battles in `attackers` play
    attack_or_east, the others random valid actions. Returns, per step, the battles that ended (and reset).
    """
    seeds = [11, 12, 13, 14]
    b = BatchedSMAX(MAP, len(seeds), episode_limit=limit, perturbation=pert, reset_chunk=CHUNK)
    singles = [SMAXEnv(MAP, episode_limit=limit, perturbation=pert) for _ in seeds]
    bt = b.reset(seeds=seeds)
    ts = [e.reset(seed=s) for e, s in zip(singles, seeds, strict=True)]
    assert isinstance(bt.obs, torch.Tensor) and bt.obs.dtype == torch.float32 and bt.avail_actions.dtype == torch.bool
    assert bt.obs.shape == (4, 3, 101) and bt.state.shape == (4, 96) and bt.avail_actions.shape == (4, 3, 10)
    rng, ended = np.random.default_rng(7), []
    for _ in range(steps):
        for i, t in enumerate(ts):
            close(bt.obs[i], t.obs)
            close(bt.state[i], t.state)
            assert np.array_equal(bt.avail_actions[i].numpy(), t.avail_actions)
        acts = random_valid(bt.avail_actions.numpy(), rng)
        for i in attackers:
            acts[i] = attack_or_east(bt.avail_actions[i].numpy())
        bt = b.step(torch.as_tensor(acts))
        ended.append([])
        for i, e in enumerate(singles):
            t = e.step(acts[i])
            close(bt.final_obs[i], t.obs)
            close(bt.final_state[i], t.state)
            assert np.array_equal(bt.final_avail_actions[i].numpy(), t.avail_actions)
            close(bt.reward[i], t.reward)
            flags = (bool(bt.terminated[i]), bool(bt.truncated[i]), bool(bt.won[i]))
            assert flags == (t.terminated, t.truncated, t.info["won"])
            assert np.array_equal(bt.action_failed[i].numpy(), t.info["action_failed"])
            assert np.array_equal(bt.executed_actions[i].numpy(), t.info["executed_actions"])
            if t.done:
                t = e.reset()  # unseeded: continues the key stream exactly as the batched auto-reset
                ended[-1].append(i)
            ts[i] = t
    return ended


def test_batched_matches_single_env_when_all_battles_end_together() -> None:
    pert = SMAXPerturbation(enemy_pos_noise_std=0.2, action_fail_prob=0.25)
    ended = run_batched_against_singles(pert, limit=5, steps=12)
    assert ended[4] == ended[9] == [0, 1, 2, 3]  # 4 resets in one step: a full chunk of 3, then 1 + padding


def test_batched_matches_single_env_when_battles_end_apart() -> None:
    pert = SMAXPerturbation(enemy_pos_noise_std=0.2, action_fail_prob=0.25, n_enemies=1)
    ended = run_batched_against_singles(pert, limit=30, steps=40, attackers=(0, 2))
    assert any(e and 3 not in e for e in ended), "no step reset some battles while the last one played on"


def test_batched_reset_seed_and_action_checks() -> None:
    b = BatchedSMAX(MAP, 4, reset_chunk=CHUNK)
    x, y, z = b.reset(seed=3), b.reset(seed=3), b.reset(seed=4)
    assert torch.equal(x.obs, y.obs) and torch.equal(x.state, y.state)
    assert not torch.equal(x.state, z.state)
    assert not torch.equal(x.state[0], x.state[1])  # battles of one batch differ
    bad = np.full((4, 3), STOP_ACTION)
    bad[2, 1] = 10
    with pytest.raises(EnvError, match="action 10 of agent 1 in battle 2 is outside"):
        b.step(bad)
    agent_action = np.argwhere(~z.avail_actions[3].numpy())[0]
    bad = np.full((4, 3), STOP_ACTION)
    bad[3, agent_action[0]] = agent_action[1]
    with pytest.raises(EnvError, match=f"agent {agent_action[0]} in battle 3 is not available"):
        b.step(bad)
    with pytest.raises(EnvError, match="expected"):
        b.step(np.full((3, 3), STOP_ACTION))
    twin = BatchedSMAX(
        MAP, 4, reset_chunk=CHUNK
    )  # rejected steps were discarded: b continues exactly like an untouched twin
    twin.reset(seed=4)
    stop = np.full((4, 3), STOP_ACTION)
    assert torch.equal(b.step(stop).state, twin.step(stop).state)


# ----- batched collection in training and evaluation ----------------------------------------------
# One BatchedSMAX step variant (B = 4, reset_chunk 1 as the Trainer builds it, explicit reset seeds) is compiled
# once per process and shared by the runner and Trainer tests below.
RUN_B, RUN_LIMIT = 4, 12


def run_seed(k: int) -> int:
    return 1000 + 7 * k


@pytest.fixture(scope="module")
def controller():
    from drigm.agents import AgentController
    from drigm.config import AgentConfig

    torch.manual_seed(0)
    return AgentController(3, 10, 101, AgentConfig(arch="gru", hidden=8, last_action=True))


def make_runner(controller, limit: int = RUN_LIMIT):
    from drigm.runner import BatchedRunner

    return BatchedRunner(SMAXEnv(MAP, episode_limit=limit).batched(RUN_B), controller, torch.device("cpu"))


def test_batched_collection_equals_single_env_episodes_in_the_buffer_scheme(controller) -> None:
    from drigm.buffer import EpisodeBuffer, marl_scheme
    from drigm.runner import EpisodeRunner

    n = 6  # more episodes than battles: battles 0 and 1 play a second episode from their own seeds
    got = make_runner(controller).run_episodes(n, run_seed, 0.0, np.random.default_rng(0))
    single = EpisodeRunner(SMAXEnv(MAP, episode_limit=RUN_LIMIT), controller, torch.device("cpu"))
    buf = EpisodeBuffer(marl_scheme(3, 10, 101, 96), capacity=n, max_seq_length=RUN_LIMIT + 1)
    for k, ep in enumerate(got):
        ref = single.run(run_seed(k), 0.0, np.random.default_rng(0))
        assert (ep.index, ep.seed, ep.length, ep.truncated) == (k, run_seed(k), ref.length, ref.truncated)
        assert sorted(ep.data) == sorted(ref.data)
        for key, x in ref.data.items():
            assert ep.data[key].shape == x.shape and ep.data[key].dtype == x.dtype, key
            if x.dtype == np.float32:
                np.testing.assert_allclose(ep.data[key], x, rtol=1e-5, atol=1e-5, err_msg=key)
            else:
                assert np.array_equal(ep.data[key], x), key
        assert ep.episode_return == pytest.approx(ref.episode_return, abs=1e-5)
        buf.insert(ep.data, ep.length)  # the buffer accepts every battle as its own episode
        slot = k % n
        assert int(buf.lengths[slot]) == ep.length and bool(buf.data["filled"][slot, ep.length - 1])
        assert not bool(buf.data["filled"][slot, ep.length])
    assert len(buf) == n


def test_batched_collection_is_deterministic_and_its_state_resumes_exactly(controller) -> None:
    def collect(runner, rng, steps: int) -> list:
        return [
            (e.index, e.length, e.won, e.data["actions"].tolist()) for _ in range(steps) for e in runner.step(0.5, rng)
        ]

    a, b = make_runner(controller, limit=6), make_runner(controller, limit=6)
    rng_a, rng_b = np.random.default_rng(3), np.random.default_rng(3)
    a.start(run_seed)
    b.start(run_seed)
    assert collect(a, rng_a, 8) == collect(b, rng_b, 8)  # same seeds and exploration stream: same episodes
    state, rng_state = a.state_dict(), rng_a.bit_generator.state
    tail = collect(a, rng_a, 9)
    assert {i for i, *_ in tail} >= {4, 5, 6, 7}, "battles should have finished second episodes"
    c = make_runner(controller, limit=6)
    c.load_state_dict(state, run_seed)
    rng_c = np.random.default_rng()
    rng_c.bit_generator.state = rng_state
    assert collect(c, rng_c, 9) == tail
    with pytest.raises(ValueError, match="obs"):
        make_runner(controller, limit=5).load_state_dict(state, run_seed)


def smax_cfg(tmp_path, name: str, steps: int, **extra):
    from drigm.config import build_config, deep_merge

    data = {
        "env": {"name": f"smax:{MAP}", "episode_limit": 10},
        "n_envs": RUN_B,
        "steps": steps,
        "agent": {"arch": "gru", "hidden": 8, "last_action": True},
        "mixer": {"name": "qmix", "params": {"embed_dim": 8}},
        "target": {"kind": "exact", "set": "contamination", "rho": 0.008},
        "learner": {"gamma": 0.99, "batch_size": 2, "buffer_size": 8, "update_every": 8, "target_update_interval": 4},
        "explore": {"eps_anneal_steps": 40},
        "eval": {"episodes": 3},
        "log_interval": 8,
        "checkpoint_interval": 24,
        "out": str(tmp_path / name),
        "tensorboard": False,
        "progress": False,
    }
    return build_config(deep_merge(data, extra))


def test_trainer_collects_batched_smax_and_a_killed_run_resumes_exactly(tmp_path) -> None:
    from drigm.run import Trainer, evaluate_run

    whole = Trainer(smax_cfg(tmp_path, "whole", 88))
    assert whole.batch_runner is not None and whole.batch_runner.env.batch_size == RUN_B
    s = whole.train()
    assert s["t_env"] == 88  # every battle's steps count: 22 batched steps of 4 battles
    assert s["episodes"] >= 2 * RUN_B and len(whole.buffer) == min(8, s["episodes"]) and s["updates"] >= 4
    assert 0.0 <= s["eval_win_rate"] <= 1.0
    part = Trainer(smax_cfg(tmp_path, "part", 48))  # "killed" after its checkpoint at 48 steps ...
    assert part.train()["t_env"] == 48
    resumed = Trainer(smax_cfg(tmp_path, "part", 88))  # ... and resumed to the same budget
    r = resumed.train(resume=True)
    assert (r["t_env"], r["episodes"], r["updates"]) == (s["t_env"], s["episodes"], s["updates"])
    for k, v in whole.learner.controller.state_dict().items():
        assert torch.equal(v, resumed.learner.controller.state_dict()[k]), k
    for k, v in whole.buffer.data.items():
        assert torch.equal(v, resumed.buffer.data[k]), k
    ev = evaluate_run(tmp_path / "whole", 3)
    assert len(ev["returns"]) == len(ev["won"]) == 3 and ev["win_rate"] == pytest.approx(np.mean(ev["won"]))
    rows = (tmp_path / "whole" / "progress.csv").read_text()
    assert "train/win_rate" in rows and "eval/win_rate" in rows


def test_n_envs_is_validated_and_refused_on_one_episode_environments(tmp_path) -> None:
    from drigm.config import ConfigError, build_config
    from drigm.run import Trainer

    with pytest.raises(ConfigError, match="n_envs=0"):
        build_config({"env": {"name": f"smax:{MAP}"}, "n_envs": 0})
    cfg = build_config({"env": {"name": "tabular:robust_vs_nominal"}, "n_envs": 2, "out": str(tmp_path / "t")})
    with pytest.raises(ConfigError, match="n_envs=2 needs a batched environment"):
        Trainer(cfg)
    assert "n_envs" not in build_config({}).to_dict()  # unset: left out of saved configs and sweep config keys
    assert build_config({"n_envs": 1}).to_dict()["n_envs"] == 1


# ----- SMAC ---------------------------------------------------------------------------------------
def test_smac_without_the_package_raises_install_guidance(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "smac", None)
    monkeypatch.setitem(sys.modules, "smac.env", None)
    with pytest.raises(EnvError) as err:
        make_env(f"smac:{MAP}")
    msg = str(err.value)
    assert "git+https://github.com/oxwhirl/smac.git" in msg and "SMAC3" in msg and "StarCraft II" in msg


def test_smac3_is_recognised_as_the_wrong_package(monkeypatch: pytest.MonkeyPatch) -> None:
    smac3 = types.ModuleType("smac")
    smac3.__path__ = []  # a package without an 'env' submodule, like SMAC3
    monkeypatch.setitem(sys.modules, "smac", smac3)
    monkeypatch.delitem(sys.modules, "smac.env", raising=False)
    with pytest.raises(EnvError, match="is not oxwhirl's SMAC"):
        make_env(f"smac:{MAP}")


class FakeStarCraft2Env:
    """A stand-in with StarCraft2Env's interface and 3s_vs_5z's obs layout: 4 move feats, enemy blocks of 6."""

    n_agents, n_enemies, n_actions = 3, 5, 11

    def __init__(self, map_name: str, **kwargs) -> None:
        self.map_name, self.kwargs, self.episode_limit, self._t = map_name, kwargs, 250, 0
        self.outcome: dict = {}

    def get_obs_move_feats_size(self) -> int:
        return 4

    def get_obs_enemy_feats_size(self) -> tuple[int, int]:
        return 5, 6  # available, distance, dx, dy, health, shield

    def get_obs_size(self) -> int:
        return 4 + 5 * 6 + 2 * 6 + 2

    def get_state_size(self) -> int:
        return 3 * 5 + 5 * 4 + 3 * 11

    def get_total_actions(self) -> int:
        return 11

    def reset(self):
        self._t = 0

    def get_obs(self):
        rng = np.random.default_rng(self._t)
        obs = rng.uniform(0.1, 0.9, size=(3, self.get_obs_size())).astype(np.float32)
        blocks = obs[:, 4:34].reshape(3, 5, 6)
        blocks[:, 3:] = 0.0  # enemies 3 and 4 out of sight
        blocks[:, :3, 1] = np.hypot(blocks[:, :3, 2], blocks[:, :3, 3])
        obs[:, 4:34] = blocks.reshape(3, 30)
        return list(obs)

    def get_state(self):
        return np.zeros(self.get_state_size(), dtype=np.float32)

    def get_avail_actions(self):
        return [[0, 1, 1, 1, 1, 1, 1, 0, 0, 0, 0]] * 3

    def step(self, actions):
        self._t += 1
        if self._t >= self.episode_limit:
            return 0.1, True, {"battle_won": False, "dead_allies": 0, "dead_enemies": 0, **self.outcome}
        return 0.1, bool(self.outcome), {"battle_won": False, "dead_allies": 0, "dead_enemies": 0, **self.outcome}

    def close(self) -> None:
        pass


@pytest.fixture
def fake_smac(monkeypatch: pytest.MonkeyPatch, tmp_path) -> type:
    pkg, sub = types.ModuleType("smac"), types.ModuleType("smac.env")
    sub.StarCraft2Env = FakeStarCraft2Env
    pkg.env = sub
    monkeypatch.setitem(sys.modules, "smac", pkg)
    monkeypatch.setitem(sys.modules, "smac.env", sub)
    monkeypatch.setenv("SC2PATH", str(tmp_path))
    return FakeStarCraft2Env


def test_smac_without_starcraft2_raises(fake_smac, tmp_path) -> None:
    with pytest.raises(EnvError, match="StarCraft II was not found"):
        make_env(f"smac:{MAP}")
    (tmp_path / "Versions").mkdir()
    with pytest.raises(EnvError, match=r"SMAC map file .*3s_vs_5z\.SC2Map is missing"):
        make_env(f"smac:{MAP}")


def test_smac_adapter_logic_against_a_stand_in(fake_smac, tmp_path) -> None:
    (tmp_path / "Versions").mkdir()
    (tmp_path / "Maps" / "SMAC_Maps").mkdir(parents=True)
    (tmp_path / "Maps" / "SMAC_Maps" / f"{MAP}.SC2Map").write_bytes(b"")
    with pytest.raises(EnvError, match="unknown smac argument"):
        make_env(f"smac:{MAP}", enemy_noise=0.1)
    clean = make_env(f"smac:{MAP}", episode_limit=3)
    noisy = make_env(f"smac:{MAP}", episode_limit=3, enemy_pos_noise_std=0.3)
    assert isinstance(noisy, SMACEnv) and noisy._env.episode_limit == 3
    assert noisy.enemy_position_indices.ravel().tolist() == [6, 7, 12, 13, 18, 19, 24, 25, 30, 31]
    a, b = clean.reset(seed=0), noisy.reset(seed=0)
    assert (b.obs.shape, b.state.shape, b.avail_actions.shape) == ((3, 48), (68,), (3, 11))
    changed = np.flatnonzero((a.obs != b.obs).any(axis=0))
    assert changed.tolist() == [5, 6, 7, 11, 12, 13, 17, 18, 19]  # dist, dx, dy of the visible enemies 0-2
    blocks = b.obs[:, 4:34].reshape(3, 5, 6)
    np.testing.assert_allclose(blocks[:, :3, 1], np.hypot(blocks[:, :3, 2], blocks[:, :3, 3]), rtol=1e-6)
    with pytest.raises(EnvError, match="action 0 of agent 0 is not available"):
        noisy.step(np.array([0, 1, 1]))
    flags = [(t.terminated, t.truncated, t.info["won"]) for t in (noisy.step(np.ones(3, int)) for _ in range(3))]
    assert flags == [(False, False, False), (False, False, False), (False, True, False)]
    clean.reset()
    clean._env.outcome = {"battle_won": True, "dead_enemies": 5}
    t = clean.step(np.ones(3, int))
    assert (t.terminated, t.truncated, t.info["won"]) == (True, False, True)


@pytest.mark.skipif(
    smac_unavailable_reason() is not None, reason=f"needs the StarCraft II binary: {smac_unavailable_reason()}"
)
def test_real_smac_episode() -> None:  # pragma: no cover - needs StarCraft II
    e = make_env(f"smac:{MAP}", enemy_pos_noise_std=0.1)
    try:
        ts, rng = e.reset(seed=0), np.random.default_rng(0)
        assert ts.obs.shape == (e.n_agents, e.obs_dim) and ts.state.shape == (e.state_dim,)
        assert ts.avail_actions.shape == (e.n_agents, e.n_actions) and ts.avail_actions.any(axis=1).all()
        while not ts.done:
            ts = e.step(random_valid(ts.avail_actions, rng))
            assert "won" in ts.info
    finally:
        e.close()
