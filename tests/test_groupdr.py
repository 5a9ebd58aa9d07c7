"""Domain randomisation and GroupDR (issue 15 item 3): the randomised env, the reward estimators, the TD target
with min over climates, the sweep's stages, and the leak-free climate set."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from torch import Tensor

from drigm.buffer import EpisodeBuffer, TransitionBuffer, marl_scheme
from drigm.config import ConfigError, RunConfig, build_config
from drigm.envs.base import EnvError, make_env
from drigm.envs.mixture import MixtureEnv
from drigm.groupdr import RewardData, audit_estimator, fit_estimators
from drigm.learner import Learner
from drigm.protocol import DR_TARGETS, Job, config_key, load_protocol, matched_controls, parse_method
from drigm.reward_model import (
    EstimatorConfig,
    RewardEstimator,
    RewardModelError,
    estimator_config,
    load_estimator,
    save_estimator,
)

ROOT = Path(__file__).resolve().parent.parent
BUILDING = ("building-paper-seasonal", "building-paper-climate", "building-seasonal", "building-climate")


# ===== the randomised environment ==================================================================
def test_mixture_refuses_members_whose_spaces_differ() -> None:
    a, b = make_env("tabular:robust_vs_nominal"), make_env("tabular:three_horizons")
    with pytest.raises(EnvError, match=r"member 'b'.*n_actions 2 vs 3"):
        MixtureEnv([a, b], ["a", "b"])
    with pytest.raises(EnvError, match="unique"):
        MixtureEnv([a, a], ["a", "a"])


def test_mixture_picks_the_member_from_the_seed_and_replays_it() -> None:
    envs = [make_env("tabular:robust_vs_nominal") for _ in range(3)]
    mix = MixtureEnv(envs, ["x", "y", "z"])
    picks = [mix.reset(s).info["climate"] for s in range(60)]
    assert set(picks) == {"x", "y", "z"}
    assert picks == [mix.reset(s).info["climate"] for s in range(60)]
    with pytest.raises(EnvError, match="reset"):
        MixtureEnv(envs, ["x", "y", "z"]).step(np.zeros(2, dtype=np.int64))


def test_building_climates_randomise_per_episode_deterministically() -> None:
    from conftest import require_extra

    require_extra("sustaingym", "sustaingym")
    climates = ["Tucson", "Atlanta", "SanDiego", "Albuquerque", "Denver"]
    env = make_env("building", climates=climates, days="0:200", episode_limit=2)
    assert isinstance(env, MixtureEnv) and env.names == tuple(climates)
    seen: dict[str, np.ndarray] = {}
    for s in range(40):
        ts = env.reset(s)
        assert ts.info["day"] == s % 200
        seen.setdefault(ts.info["climate"], ts.state[-4])  # outdoor temperature
        again = env.reset(s)
        assert again.info["climate"] == ts.info["climate"] and np.array_equal(again.state, ts.state)
    assert set(seen) == set(climates)
    # a member plays its own climate: the same day in the single-climate env gives the same state
    s = next(s for s in range(40) if env.reset(s).info["climate"] == "Atlanta")
    assert np.array_equal(
        env.reset(s).state, make_env("building:Atlanta", days="0:200", episode_limit=2).reset(s).state
    )
    for bad, msg in (
        ({"climates": ["Tucson", "tucson"]}, "twice"),
        ({"climates": ["Nowhere"]}, "unknown climate 'Nowhere'"),
        ({"climates": "Tucson"}, "non-empty list"),
        ({"climates": ["Tucson"], "weather": "Hot_Dry"}, "no climate/weather/location"),
    ):
        with pytest.raises(EnvError, match=msg):
            make_env("building", **bad)
    with pytest.raises(EnvError, match="give no climate in the spec"):
        make_env("building:Tampa", climates=["Tucson"])


# ===== estimators ===================================================================================
S, N, A, H = 3, 2, 4, 10


def _synthetic(c: int, episodes: int, rng: np.random.Generator) -> RewardData:
    """Episodes of H steps with r = 1.5 s_0 - s_1 + a_0 weight + 2 t/H + c (a known function per climate c)."""
    M = episodes * H
    state = rng.normal(size=(M, S)).astype(np.float32)
    actions = rng.integers(0, A, size=(M, N))
    t = np.tile(np.arange(H), episodes)
    w = np.array([0.0, 1.0, -1.0, 0.5])
    reward = 1.5 * state[:, 0] - state[:, 1] + w[actions[:, 0]] + 2 * t / H + c
    return RewardData(state, actions, t, reward.astype(np.float32), np.repeat(np.arange(episodes), H))


def test_estimator_fits_a_known_reward_and_round_trips(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    data = [_synthetic(c, 60, rng) for c in range(2)]
    cfg = EstimatorConfig(hidden=32, epochs=10, batch_size=32, lr=3e-3, holdout=0.2)
    est, metrics = fit_estimators(data, ["hot", "cold"], A, H, cfg, seed=0)
    for name in ("hot", "cold"):
        m = metrics[name]
        assert m["n_holdout"] == 12 * H and m["n_train"] == 48 * H  # whole episodes held out
        assert m["holdout_mse"] < 0.05 * m["holdout_reward_var"], m  # R^2 > 0.95 on unseen episodes
    path = tmp_path / "est.pt"
    save_estimator(est, path, cfg, metrics)
    loaded, meta = load_estimator(path, {"state_dim": S, "n_agents": N, "n_actions": A})
    assert meta["climates"] == ["hot", "cold"] and meta["metrics"] == metrics and meta["horizon"] == H
    s, a, t = torch.from_numpy(data[0].state), torch.from_numpy(data[0].actions), torch.from_numpy(data[0].t)
    assert torch.equal(loaded(s, a, t), est(s, a, t))
    assert torch.equal(loaded.min_reward(s, a, t), est(s, a, t).min(-1).values)
    # climate offsets: "cold" (c = 1) pays 1 more, so the minimum is mostly "hot"
    assert (est(s, a, t)[:, 1] - est(s, a, t)[:, 0]).mean() == pytest.approx(1.0, abs=0.2)


def test_bad_estimator_files_give_errors_naming_the_file(tmp_path: Path) -> None:
    bad = tmp_path / "corrupt.pt"
    bad.write_bytes(b"not a torch file")
    with pytest.raises(RewardModelError, match=r"corrupt\.pt.*corrupt or unreadable"):
        load_estimator(bad)
    with pytest.raises(RewardModelError, match=r"missing\.pt"):
        load_estimator(tmp_path / "missing.pt")
    torch.save({"format": "something-else"}, tmp_path / "foreign.pt")
    with pytest.raises(RewardModelError, match=r"foreign\.pt.*format 'something-else'"):
        load_estimator(tmp_path / "foreign.pt")
    est = RewardEstimator(["a"], S, N, A, H, 4)
    save_estimator(est, tmp_path / "ok.pt", EstimatorConfig(), {})
    with pytest.raises(RewardModelError, match=r"ok\.pt.*n_actions=4.*n_actions=5"):
        load_estimator(tmp_path / "ok.pt", {"n_actions": 5})
    with pytest.raises(ConfigError, match=r"reward_estimator.holdout=1.0 is out of range: allowed \[0, 1\)"):
        estimator_config({"holdout": 1.0})
    with pytest.raises(ConfigError, match=r"unknown config key reward_estimator\.'epoch'"):
        estimator_config({"epoch": 3})


# ===== the GroupDR TD target ========================================================================
class HandEstimator(RewardEstimator):
    """Known per-climate rewards: r_c(s, a, t) = (c - 1) s_0 + 0.3 c a_0 - 0.1 (c + 1) t."""

    def forward(self, state: Tensor, actions: Tensor, t: Tensor) -> Tensor:
        return torch.stack(
            [(c - 1) * state[..., 0] + 0.3 * c * actions[..., 0] - 0.1 * (c + 1) * t for c in range(3)], dim=-1
        )


def _learner(replay: str, reward_model: RewardEstimator | None) -> Learner:
    cfg = build_config(
        {
            "env": {"name": "tabular:robust_vs_nominal"},
            "learner": {"gamma": 0.9, "replay": replay, "reward_model": "est.pt", "device": "cpu", "batch_size": 4},
            "agent": {"history": 2} if replay == "transitions" else {},
            "mixer": {"name": "vdn"},
        }
    )
    torch.manual_seed(0)
    return Learner(cfg, N, A, 4, S, 0.9, torch.device("cpu"), reward_model)


def _episodes(B: int = 4, limit: int = 5) -> dict[str, Tensor]:
    rng = np.random.default_rng(1)
    buf = EpisodeBuffer(marl_scheme(N, A, 4, S), capacity=B, max_seq_length=limit + 1)
    for k in range(B):
        n = int(rng.integers(2, limit + 1))
        term = np.zeros(n + 1, dtype=bool)
        term[n - 1] = k % 2 == 0
        buf.insert(
            {
                "obs": rng.normal(size=(n + 1, N, 4)).astype(np.float32),
                "state": rng.normal(size=(n + 1, S)).astype(np.float32),
                "avail_actions": np.ones((n + 1, N, A), dtype=bool),
                "actions": rng.integers(0, A, size=(n + 1, N)),
                "reward": rng.normal(size=n + 1).astype(np.float32) * 50,
                "terminated": term,
            },
            n,
        )
    return buf.sample(B, np.random.default_rng(1))


def _expected_target_mean(learner: Learner, batch: dict[str, Tensor], t: Tensor) -> float:
    """The masked mean of y = r_min + gamma (1 - done) V_hat(s'), r_min computed here from HandEstimator's formula."""
    s, a = batch["state"][:, :-1], batch["actions"][:, :-1]
    r = torch.stack([(c - 1) * s[..., 0] + 0.3 * c * a[..., 0] - 0.1 * (c + 1) * t for c in range(3)], -1)
    r_min = r.min(-1).values
    inputs = learner.agent_inputs(batch)
    tin = learner.target_inputs(batch, inputs, learner.utilities(learner.controller, inputs))
    y = r_min.double() + 0.9 * (1 - tin.terminated.double()) * tin.next_value.double()
    return float((y * tin.mask).sum() / tin.mask.sum())


def test_the_td_target_uses_the_minimum_estimated_reward_over_climates() -> None:
    learner = _learner("episodes", HandEstimator(["a", "b", "c"], S, N, A, H, 4))
    batch = _episodes()
    T = batch["state"].shape[1] - 1
    want = _expected_target_mean(learner, batch, torch.arange(T).expand(batch["state"].shape[0], T).float())
    stats = learner.update(batch)
    assert stats["target_mean"] == pytest.approx(want, rel=1e-5, abs=1e-5)
    # the batch reward (~50x larger) would give a different target
    assert abs(want - float((batch["reward"] * batch["filled"]).sum() / batch["filled"].sum())) > 1.0


def test_transition_replay_carries_the_step_index_for_the_estimator() -> None:
    rng = np.random.default_rng(2)
    buf = TransitionBuffer(N, A, 4, S, capacity=32, history=2, time_index=True)
    for n in (7, 5):
        buf.insert(
            {
                "obs": rng.normal(size=(n + 1, N, 4)).astype(np.float32),
                "state": rng.normal(size=(n + 1, S)).astype(np.float32),
                "avail_actions": np.ones((n + 1, N, A), dtype=bool),
                "actions": rng.integers(0, A, size=(n, N)),
                "reward": np.arange(n, dtype=np.float32),  # reward = t, to check the index
                "terminated": np.zeros(n, dtype=bool),
            },
            n,
        )
    batch = buf.sample(12, np.random.default_rng(0))
    assert torch.equal(batch["t"][:, 0].float(), batch["reward"][:, 0])
    assert torch.equal(batch["t"][:, 1], batch["t"][:, 0] + 1)
    assert "t" not in TransitionBuffer(N, A, 4, S, capacity=4, history=2).data  # the default format is unchanged
    learner = _learner("transitions", HandEstimator(["a", "b", "c"], S, N, A, H, 4))
    want = _expected_target_mean(learner, batch, batch["t"][:, :-1].float())
    assert learner.update(batch)["target_mean"] == pytest.approx(want, rel=1e-5, abs=1e-5)
    no_t = {k: v for k, v in batch.items() if k != "t"}
    with pytest.raises(ConfigError, match="time_index"):
        learner.update(no_t)
    with pytest.raises(ConfigError, match="given no estimator"):
        _learner("episodes", None).update(_episodes())


def test_reward_model_is_left_out_of_configs_that_do_not_set_it() -> None:
    assert "reward_model" not in RunConfig().to_dict()["learner"]
    cfg = build_config({"learner": {"reward_model": "x.pt"}})
    assert cfg.to_dict()["learner"]["reward_model"] == "x.pt"
    with pytest.raises(ConfigError, match=r"learner\.reward_model"):
        build_config({"learner": {"reward_model": " "}})
    p = load_protocol("building-climate", preset="paper-mlp")
    for job in p.jobs(["vdn", "qmix"], ["none", "paper"], ["contamination", "tv"], [0]):
        assert "reward_model" not in p.job_config(job).to_dict()["learner"]


# ===== protocol and sweep ===========================================================================
def test_dr_labels_parse_and_are_matched_with_algo_none() -> None:
    for kind in DR_TARGETS:
        job = Job("qmix", kind, None, None, 3)
        assert job.method == f"qmix-{kind}"
        assert parse_method(job.method) == ("qmix", kind, None, None)
        assert matched_controls(job.method) == ["qmix-none"]
    assert parse_method("qmix-paper-tv") == ("qmix", "paper", "tv", None)


def _test_climates(proto: Any) -> set[str]:
    """The (weather, location) names of every test env of `proto` whose climate differs from the training one."""
    from drigm.envs.building import resolve_climate

    def climate(env: dict[str, Any]) -> tuple[str, str]:
        name, _, arg = env["name"].partition(":")
        assert name == "building"
        kw = env.get("kwargs") or {}
        if "weather" in kw:
            return kw["weather"], kw["location"]
        return resolve_climate(arg or kw.get("climate") or "Tucson")

    train = climate(proto.run["env"])
    return {part for t in proto.tests if climate(t.env) != train for part in climate(t.env)}


def test_leak_free_climate_set_is_disjoint_from_every_test_climate() -> None:
    from conftest import require_extra

    require_extra("sustaingym", "sustaingym")
    from drigm.envs.building import resolve_climate

    tested: set[str] = set()
    for name in BUILDING:
        p = load_protocol(name)
        tested |= _test_climates(p)
    assert {"Hot_Humid", "Tampa", "Cool_Marine", "Seattle"} <= tested  # the climate protocols' test climates
    sets = load_protocol("building-climate").domain_randomisation.climate_sets  # type: ignore[union-attr]
    for set_name, cs in sets.items():
        parts = {x for c in cs.env["kwargs"]["climates"] for x in resolve_climate(c)}
        assert len(cs.env["kwargs"]["climates"]) == 5
        assert cs.leaks == bool(parts & tested), set_name  # the flag tells the truth
    leakfree = {x for c in sets["leakfree"].env["kwargs"]["climates"] for x in resolve_climate(c)}
    assert not leakfree & tested, leakfree & tested


def _audit_script() -> Any:
    """experiments/groupdr_audit.py as a module (experiments/ is not a package)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("groupdr_audit", ROOT / "experiments" / "groupdr_audit.py")
    assert spec is not None and spec.loader is not None
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    return script


def test_audit_file_merges_runs_and_refuses_files_it_did_not_write(tmp_path: Path, capsys: Any) -> None:
    script = _audit_script()
    entry = {"run": "qmix-groupdr-seed0-a", "t_env": 5, "climates": {}}
    old = tmp_path / "old.json"  # the format before per-run episodes: one top-level count
    old.write_text(json.dumps({"episodes": 3, "runs": [entry, {**entry, "run": "qmix-groupdr-seed1-b"}]}))
    prev = script.load_previous(old)
    assert [(r["run"], r["episodes"]) for r in prev] == [("qmix-groupdr-seed0-a", 3), ("qmix-groupdr-seed1-b", 3)]
    new = [{**entry, "run": "qmix-groupdr-seed1-b", "t_env": 9, "episodes": 5}, {**entry, "run": "a-first"}]
    merged = script.merge_audits(prev, new)
    assert [(r["run"], r["t_env"]) for r in merged] == [
        ("a-first", 5),
        ("qmix-groupdr-seed0-a", 5),
        ("qmix-groupdr-seed1-b", 9),
    ]
    assert script.load_previous(tmp_path / "missing.json") == []
    bad = {
        "not json": "{",
        "runs not a list": json.dumps({"runs": {}}),
        "entry without a name": json.dumps({"runs": [{"t_env": 1}]}),
        "no episodes anywhere": json.dumps({"runs": [entry]}),
        "entry without climates": json.dumps({"episodes": 2, "runs": [{"run": "x", "t_env": 1}]}),
    }
    for why, text in bad.items():
        f = tmp_path / "bad.json"
        f.write_text(text)
        with pytest.raises(script.AuditFileError, match=r"bad\.json") as info:
            script.load_previous(f)
        assert "--fresh" in str(info.value) or "episodes" in str(info.value), why
        # the script stops before auditing anything and names the file; --fresh would go on past it
        assert script.main([str(tmp_path / "no-such-run"), "--out", str(f.with_suffix(""))]) == 2, why
        assert "bad.json" in capsys.readouterr().err and f.read_text() == text, why


def test_smoke_sweep_trains_groupdr_stages_and_writes_results(tmp_path: Path) -> None:
    from conftest import require_extra

    require_extra("sustaingym", "sustaingym")
    from drigm.results_store import result_path
    from drigm.sweep import sweep

    s = sweep(
        "building-climate",
        algos=["qmix"],
        targets=["groupdr-paper"],
        scale="smoke",
        out_root=tmp_path,
        workers=1,
        progress=False,
    )
    assert s.failed == [] and s.ran == 1
    p = load_protocol("building-climate", scale="smoke")
    job = Job("qmix", "groupdr-paper", None, None, 0)
    r = json.loads(result_path(tmp_path, p.name, p.label, job).read_text())
    assert r["method"] == "qmix-groupdr-paper" and r["config_key"] == config_key(p.job_config(job))
    assert r["config"]["env"]["kwargs"]["climates"] == ["Tucson", "Tampa", "Honolulu", "ElPaso", "Seattle"]
    g = r["train"]["groupdr"]
    assert g["estimator_built"] and set(g["estimator_metrics"]["climates"]) == {
        "Tucson",
        "Tampa",
        "Honolulu",
        "ElPaso",
        "Seattle",
    }
    s1 = tmp_path / "train" / "building" / Path(g["stage1_dir"]).name
    assert (s1 / "train_done.json").is_file() and Path(s1.name).name.startswith("vdn-dr-paper-seed0-")
    est, meta = load_estimator(s1 / p.estimator_file(job))
    assert est.climates == ("Tucson", "Tampa", "Honolulu", "ElPaso", "Seattle") and meta["horizon"] == 12
    assert set(r["tests"]) == {"Tampa", "NewYork", "Honolulu", "ElPaso", "Seattle"}  # the tests stay as they are
    # the audit replays stage 3's greedy policy in each climate and scores it with the estimator it trained on
    from drigm.results_store import train_dir

    a = audit_estimator(train_dir(tmp_path, job, p.job_config(job)), episodes_per_climate=2)
    assert a["estimator_climates"] == list(est.climates) and set(a["climates"]) == set(est.climates)
    for name, c in a["climates"].items():
        assert c["steps"] == 2 * 12, name
        assert c["gap_mean"] == pytest.approx(c["min_estimate_mean"] - c["true_reward_mean"], abs=1e-9)
        assert c["min_estimate_mean"] <= min(c["estimate_mean"].values()) + 1e-9  # the mean of a minimum
        assert c["estimated_return_mean"] == pytest.approx(c["min_estimate_mean"] * 12, rel=1e-6)
        assert c["gap_rms"] >= abs(c["gap_mean"]) - 1e-9 and 0.0 <= c["overestimated_share"] <= 1.0
    with pytest.raises(RewardModelError, match="only GroupDR's stage-3 runs"):
        audit_estimator(s1, episodes_per_climate=1)  # the stage-1 run trains on the true reward
    # the audit script: a table per run, every climate a row; a run it cannot audit is named and marks it failed
    script = _audit_script()
    stage3 = train_dir(tmp_path, job, p.job_config(job))
    assert script.find_runs(tmp_path / "train") == [stage3]
    out = tmp_path / "audit"
    assert script.main([str(stage3), str(s1), "--episodes", "1", "--out", str(out)]) == 1
    page = out.with_suffix(".md").read_text()
    assert f"## {stage3.name}" in page and s1.name not in page
    assert all(f"| {c} | 12 |" in page for c in est.climates)
    assert json.loads(out.with_suffix(".json").read_text())["runs"][0]["run"] == stage3.name
    # a second audit elsewhere keeps the runs this machine does not hold and replaces the one it re-audits
    data = json.loads(out.with_suffix(".json").read_text())
    other = {**data["runs"][0], "run": "qmix-groupdr-seed99-elsewhere", "t_env": 7}
    out.with_suffix(".json").write_text(json.dumps({"runs": [*data["runs"], other]}))
    assert script.main([str(stage3), "--episodes", "2", "--out", str(out)]) == 0
    runs = {r["run"]: r for r in json.loads(out.with_suffix(".json").read_text())["runs"]}
    assert set(runs) == {stage3.name, other["run"]} and runs[stage3.name]["episodes"] == 2
    assert runs[other["run"]]["t_env"] == 7 and "qmix-groupdr-seed99-elsewhere (t_env 7, 1 episodes" in (
        out.with_suffix(".md").read_text()
    )
    with pytest.raises(ConfigError, match="episodes_per_climate"):
        audit_estimator(s1, episodes_per_climate=0)
    # a second algo of the same seed reuses stage 1 and the estimator
    s = sweep(
        "building-climate",
        algos=["vdn"],
        targets=["groupdr-paper"],
        scale="smoke",
        out_root=tmp_path,
        workers=1,
        progress=False,
    )
    assert s.failed == []
    r2 = json.loads(result_path(tmp_path, p.name, p.label, Job("vdn", "groupdr-paper", None, None, 0)).read_text())
    assert not r2["train"]["groupdr"]["estimator_built"]
