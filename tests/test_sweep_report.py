"""The experiment pipeline: protocols, sweeps (local pool and Ray), skip/resume behaviour, atomic results, reports."""

from __future__ import annotations

import itertools
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from conftest import require_extra
from scipy.stats import trim_mean

from drigm.cli import report_main, sweep_main
from drigm.comparisons import versus
from drigm.config import build_config
from drigm.protocol import (
    PROTOCOL_DIR,
    Job,
    Protocol,
    ProtocolError,
    load_protocol,
    protocol_names,
    protocol_presets,
)
from drigm.report import cell, report
from drigm.results_store import read_curve, result_path, train_dir
from drigm.run import CHECKPOINT, TRAIN_DONE, Trainer
from drigm.sweep import sweep
from reference.game import Game, robust_vs_nominal_game, save_game

SMOKE = PROTOCOL_DIR / "tabular-smoke.yaml"
METHODS = ["qmix-none", "qmix-exact-tv", "qmix-paper-tv"]


def shifted_protocol(tmp: Path) -> Path:
    """tabular-smoke plus a test on robust_vs_nominal with the corridor's success probability cut from 0.8 to 0.4."""
    g = robust_vs_nominal_game()
    P = g.P.copy()
    P[3, :, :] = [0.0, 0.4, 0.6, 0.0]
    path = save_game(Game(P=P, R=g.R, gamma=g.gamma, name="shifted"), tmp / "shifted.npz")
    proto = tmp / "smoke-shift.yaml"
    proto.write_text(
        f"base: {SMOKE}\nname: smoke-shift\ntests:\n  - {{name: nominal, env: {{}}}}\n"
        f"  - {{name: shifted, env: {{name: 'tabular:{path}'}}}}\n"
    )
    return proto


def job_of(proto: Protocol, path: Path) -> Job:
    """The job whose results file is `path` (``<method>/seed<k>.json``)."""
    seed = int(path.stem.removeprefix("seed"))
    (job,) = [j for j in proto.jobs(proto.algos, proto.targets, proto.sets, [seed]) if j.method == path.parent.name]
    return job


def temp_files(root: Path) -> list[Path]:
    return [p for p in root.rglob("*") if p.name.endswith(".tmp")]


def run_smoke(proto: Path, out: Path, **kw: object) -> object:
    args = {"algos": ["qmix"], "targets": ["none", "exact", "paper"], "sets": ["tv"], "seeds": 2, "workers": 2}
    args.update(kw)
    return sweep(proto, out_root=out, scale="smoke", progress=False, **args)  # type: ignore[arg-type]


def results_of(proto_name: str, out: Path) -> dict[Path, dict]:
    root = out / proto_name / "smoke"
    return {p: json.loads(p.read_text()) for p in sorted(root.glob("*/seed*.json"))}


def test_protocol_loader_errors_and_names(tmp_path: Path) -> None:
    assert {"building-seasonal", "building-climate", "evcharging-shift", "cogen-renewables"} <= set(protocol_names())
    assert "smax-3s_vs_5z-noise" in protocol_names() and "_building" not in protocol_names()
    with pytest.raises(ProtocolError, match=r"unknown protocol 'nope'.*building-seasonal"):
        load_protocol("nope")
    with pytest.raises(ProtocolError, match="scale='huge'"):
        load_protocol("tabular-smoke", "huge")
    bad = tmp_path / "bad.yaml"
    bad.write_text(f"base: {SMOKE}\nbogus: 1\n")
    with pytest.raises(ProtocolError, match=r"unknown key.*'bogus'"):
        load_protocol(bad)
    bad.write_text(f"base: {SMOKE}\nrun: {{learner: {{lr: -1}}}}\n")
    with pytest.raises(ProtocolError, match=r"learner\.lr=-1"):
        load_protocol(bad)
    p = load_protocol("building-climate", "reduced")
    assert [t.env["name"] for t in p.tests] == [
        f"building:{c}" for c in ("Tampa", "NewYork", "Honolulu", "ElPaso", "Seattle")
    ]
    assert all(t.env["kwargs"]["days"] == "200:365" for t in p.tests) and p.run["env"]["kwargs"]["days"] == "0:200"
    assert p.rho_of("contamination", "qtran") == 0.02 and p.rho_of("tv", "vdn") == 0.5 and p.rho_of("tv", "qmix") == 0.2
    full = load_protocol("building-seasonal")
    assert full.seeds == [0, 1, 10, 16, 42] and full.run["steps"] == 600 * 288 and full.score is not None
    assert full.score(-1500.0) == 0.0 and full.score(0.0) == 1.0  # the paper's units: 6 agents x -1500 = -9000
    # target none ignores the sets: one job per seed; the TV runs get the paper's schedule
    jobs = full.jobs(["qmix"], ["none", "exact"], ["contamination", "tv"], [0, 1])
    assert [j.method for j in jobs] == ["qmix-none"] * 2 + ["qmix-exact-contamination"] * 2 + ["qmix-exact-tv"] * 2
    tv = full.job_config(jobs[-1])
    assert (tv.learner.update_every, tv.learner.q_steps, tv.learner.aux_first, tv.target.aux_steps) == (8, 4, True, 4)
    assert full.job_config(jobs[0]).learner.update_every == 2
    # both building protocols share their training runs (same resolved config, same run directory)
    climate = load_protocol("building-climate")
    assert train_dir(tmp_path, jobs[0], full.job_config(jobs[0])) == train_dir(
        tmp_path, jobs[0], climate.job_config(jobs[0])
    )


@pytest.mark.parametrize("name", protocol_names())
def test_every_committed_protocol_builds_a_valid_config_for_every_job(name: str) -> None:
    """Each protocol x scale x (algo, target, set) resolves to a validated RunConfig (catches, e.g., a
    td_lambda left on for the TV targets, which are nonlinear in V_hat)."""
    for scale, preset in itertools.product(("full", "reduced", "smoke"), protocol_presets(name) or [None]):
        proto = load_protocol(name, scale, preset=preset)
        assert proto.preset == preset
        sets = [s for s in ("contamination", "tv") if s in proto.rho]
        for job in proto.jobs(proto.algos, ["none", "exact", "paper"], sets, proto.seeds[:1]):
            cfg = proto.job_config(job)
            assert cfg.target.kind == job.target and cfg.mixer.name == job.algo
            if cfg.learner.td_lambda > 0:
                assert job.target == "none" or job.set == "contamination"


def test_read_curve_keeps_the_win_rate_only_where_every_step_has_one(tmp_path: Path) -> None:
    rows = ["step,key,value", "10,train/return_mean,0.5", "10,train/win_rate,0.25", "10,learner/loss,3",
            "20,train/return_mean,0.75", "20,train/win_rate,0.5"]  # fmt: skip
    (tmp_path / "progress.csv").write_text("\n".join(rows) + "\n")
    assert read_curve(tmp_path) == {"step": [10.0, 20.0], "return_mean": [0.5, 0.75], "win_rate": [0.25, 0.5]}
    (tmp_path / "progress.csv").write_text("\n".join(rows[:-1]) + "\n")  # step 20 without a win rate
    assert read_curve(tmp_path) == {"step": [10.0, 20.0], "return_mean": [0.5, 0.75]}
    assert read_curve(tmp_path / "missing") == {"step": [], "return_mean": []}


def test_bootstrap_cell_is_seeded_and_sane() -> None:
    c = cell([1.0, 2.0, 3.0, 4.0])
    assert c.mean == 2.5 and c.se == pytest.approx(np.std([1, 2, 3, 4], ddof=1) / 2)
    assert c.ci is not None and 1.0 <= c.ci[0] < 2.5 < c.ci[1] <= 4.0 and cell([1.0, 2.0, 3.0, 4.0]).ci == c.ci
    one = cell([0.7])
    assert one.se is None and one.ci is None and "n/a" in one.fmt()


def test_local_sweep_skip_rerun_resume_and_report(tmp_path: Path) -> None:
    proto_path = shifted_protocol(tmp_path)
    out = tmp_path / "runs"
    s = run_smoke(proto_path, out)
    assert (s.total, s.skipped, s.ran, s.failed) == (6, 0, 6, [])
    res = results_of("smoke-shift", out)
    assert len(res) == 6 and not temp_files(out)
    for r in res.values():
        assert r["method"] in METHODS and set(r["tests"]) == {"nominal", "shifted"}
        assert all(len(t["returns"]) == 3 and len(t["seeds"]) == 3 for t in r["tests"].values())
        assert r["config"]["steps"] == 240 and r["train"]["t_env"] == 240 and r["curve"]["step"]
        assert r["config"]["target"]["kind"] == r["job"]["target"]
    # the robust targets got the protocol's rho; kind none ignores the set
    tv = next(r for r in res.values() if r["method"] == "qmix-exact-tv")
    assert tv["config"]["target"]["rho"] == 0.2 and tv["config"]["target"]["set"] == "tv"
    # the shifted game is harsher on the risky action, so no policy earns more there than nominally on average
    ckpts = {p: p.stat().st_mtime_ns for p in (out / "train").rglob(CHECKPOINT)}
    stamps = {p: p.stat().st_mtime_ns for p in res}
    assert len(ckpts) == 6

    # run again: nothing is retrained or re-evaluated
    s2 = run_smoke(proto_path, out)
    assert (s2.skipped, s2.ran) == (6, 0)
    assert {p: p.stat().st_mtime_ns for p in res} == stamps
    assert {p: p.stat().st_mtime_ns for p in (out / "train").rglob(CHECKPOINT)} == ckpts

    # delete one results file: only that run is re-evaluated, and its training is reused, not redone
    victim = sorted(res)[0]
    victim.unlink()
    s3 = run_smoke(proto_path, out)
    assert (s3.skipped, s3.ran) == (5, 1) and victim.is_file()
    assert {p: p.stat().st_mtime_ns for p in res if p != victim} == {k: v for k, v in stamps.items() if k != victim}
    assert {p: p.stat().st_mtime_ns for p in (out / "train").rglob(CHECKPOINT)} == ckpts
    assert json.loads(victim.read_text())["tests"] == res[victim]["tests"]  # same checkpoint, same test episodes

    # a killed run: a checkpoint half way, no train_done marker, no results -> the sweep resumes it to the end
    proto = load_protocol(proto_path, "smoke")
    job = next(j for j in proto.jobs(["qmix"], ["exact"], ["tv"], [1]))
    cfg = proto.job_config(job)
    tdir = train_dir(out.resolve(), job, cfg)
    for p in (tdir / TRAIN_DONE, result_path(out.resolve(), proto.name, "smoke", job)):
        p.unlink()
    (tdir / CHECKPOINT).unlink()
    half = build_config({**cfg.to_dict(), "steps": 120, "out": str(tdir)})
    Trainer(half, tdir).train()
    s4 = run_smoke(proto_path, out)
    assert (s4.skipped, s4.ran) == (5, 1)
    done = json.loads((tdir / TRAIN_DONE).read_text())
    assert done["resumed"] is True and done["t_env"] == 240
    again = json.loads(result_path(out.resolve(), proto.name, "smoke", job).read_text())
    assert again["train"]["t_env"] == 240 and again["curve"]["step"][-1] == 240
    assert not temp_files(out)

    # the report: rows per method, columns per test env plus the average, plots, and no temp files
    rroot = tmp_path / "results"
    summary = report(proto_path, out, rroot)
    md = (rroot / "smoke-shift" / "results.md").read_text()
    for m in METHODS:
        assert f"| {m} | " in md
    assert "| method | nominal | shifted | average |" in md and "6 of 6 requested runs have valid results." in md
    assert "Exact targets against the paper's targets" in md and summary["complete"]
    for png in ("ood.png", "learning_curves.png"):
        assert (rroot / "smoke-shift" / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not temp_files(rroot)
    # a missing run is reported, not dropped; report_main signals it
    victim.unlink()
    assert report_main([str(proto_path), "--out-root", str(out), "--results-root", str(rroot)]) == 1
    md = (rroot / "smoke-shift" / "results.md").read_text()
    missing = json.loads((rroot / "smoke-shift" / "summary.json").read_text())["missing"]
    assert len(missing) == 1 and "(n=1/2)" in md
    assert (
        f"unfinished (a training checkpoint exists; re-run the sweep to resume): {missing[0][0]} seed {missing[0][1]}"
        in md
    )
    # without its training run too, the job is plainly missing
    shutil.rmtree(train_dir(out.resolve(), job_of(proto, victim), proto.job_config(job_of(proto, victim))))
    assert report_main([str(proto_path), "--out-root", str(out), "--results-root", str(rroot)]) == 1
    assert f"- missing: {missing[0][0]} seed {missing[0][1]}" in (rroot / "smoke-shift" / "results.md").read_text()


def test_sweep_main_cli_and_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert sweep_main(["nope", "--out-root", str(tmp_path)]) == 2
    assert "unknown protocol 'nope'" in capsys.readouterr().err
    assert sweep_main(["tabular-smoke", "--seeds", "9", "--scale", "smoke", "--out-root", str(tmp_path)]) == 2
    assert "--seeds 9" in capsys.readouterr().err
    argv = ["tabular-smoke", "--algos", "vdn", "--targets", "none", "--seeds", "1", "--scale", "smoke"]
    assert sweep_main([*argv, "--workers", "1", "--no-progress", "--out-root", str(tmp_path)]) == 0
    result = json.loads((tmp_path / "tabular-smoke" / "smoke" / "vdn-none" / "seed0.json").read_text())
    # the run directory is recorded relative to --out-root, so it resolves from any working directory
    assert not Path(result["train_dir"]).is_absolute() and result["train_dir"].startswith("train/")
    assert (tmp_path / result["train_dir"] / "checkpoint.pt").is_file()


def test_ray_backend(tmp_path: Path) -> None:
    ray = require_extra("ray", "ray")
    ray.init(num_cpus=2, include_dashboard=False)
    try:
        proto_path = shifted_protocol(tmp_path)
        s = run_smoke(proto_path, tmp_path / "runs", backend="ray", targets=["none", "exact"])
        assert (s.total, s.ran, s.failed) == (4, 4, [])
        res = results_of("smoke-shift", tmp_path / "runs")
        assert sorted({r["method"] for r in res.values()}) == ["qmix-exact-tv", "qmix-none"] and len(res) == 4
        s2 = run_smoke(proto_path, tmp_path / "runs", backend="ray", targets=["none", "exact"])
        assert (s2.skipped, s2.ran) == (4, 0)
    finally:
        ray.shutdown()


@pytest.mark.parametrize(
    "protocol", ["building-climate", "evcharging-shift", "cogen-renewables", "smax-3s_vs_5z-noise"]
)
def test_protocol_smoke_scale_trains_and_evaluates(protocol: str, tmp_path: Path) -> None:
    """Two short episodes of robust QMIX (exact TV) through the protocol machinery, evaluated on every test env."""
    if protocol.startswith("smax"):
        require_extra("jaxmarl", "starcraft")
    s = sweep(protocol, ["qmix"], ["exact"], ["tv"], 1, workers=1, out_root=tmp_path, scale="smoke", progress=False)
    assert s.failed == [] and s.ran == 1
    proto = load_protocol(protocol, "smoke")
    (r,) = [json.loads(p.read_text()) for p in (tmp_path / proto.name / proto.label).glob("*/seed*.json")]
    assert r["train"]["episodes"] == 2 and list(r["tests"]) == [t.name for t in proto.tests]
    evaluated = [t for t in r["tests"].values() if "returns" in t]
    assert evaluated and all(len(t["returns"]) == 1 and np.isfinite(t["returns"]).all() for t in evaluated)
    for t in r["tests"].values():
        assert "returns" in t or "incompatible" in t["incompatible"] or "agents" in t["incompatible"]
    if protocol.startswith("building"):
        assert all(len(t["score"]) == 1 for t in evaluated)
    if protocol.startswith("smax"):
        assert all(len(t["won"]) == 1 for t in evaluated)
        assert len(r["curve"]["win_rate"]) == len(r["curve"]["step"]) > 0
        report(protocol, tmp_path, tmp_path / "results", "smoke")  # learning curves with a win-rate panel
        assert (tmp_path / "results" / proto.name / "learning_curves.png").stat().st_size > 0
    if protocol == "evcharging-shift":
        assert "returns" in r["tests"]["caltech Fall 2019"]


def test_smax_trains_and_evaluates_every_mixer_robust_and_not(tmp_path: Path) -> None:
    """VDN and QTRAN (QMIX: the protocol smoke test) through the smax protocol, nominal with TD(lambda) and
    robust (exact contamination with TD(lambda), paper TV with one-step targets)."""
    require_extra("jaxmarl", "starcraft")
    s = sweep("smax-3s_vs_5z-noise", ["vdn", "qtran"], ["none", "exact"], ["contamination"], 1, workers=1,
              out_root=tmp_path, scale="smoke", progress=False)  # fmt: skip
    s2 = sweep("smax-3s_vs_5z-noise", ["vdn"], ["paper"], ["tv"], 1, workers=1, out_root=tmp_path, scale="smoke",
               progress=False)  # fmt: skip
    assert s.failed == [] and s.ran == 4 and s2.failed == [] and s2.ran == 1
    proto = load_protocol("smax-3s_vs_5z-noise", "smoke")
    results = [json.loads(p.read_text()) for p in (tmp_path / proto.name / "smoke").glob("*/seed*.json")]
    assert sorted(r["method"] for r in results) == [
        "qtran-exact-contamination", "qtran-none", "vdn-exact-contamination", "vdn-none", "vdn-paper-tv"
    ]  # fmt: skip
    for r in results:
        assert r["config"]["learner"]["td_lambda"] == (0.0 if r["method"].endswith("tv") else 0.6)
        assert all(len(t["won"]) == 1 and np.isfinite(t["returns"]).all() for t in r["tests"].values())


def _children(pid: int) -> list[int]:
    path = Path(f"/proc/{pid}/task/{pid}/children")
    return [int(c) for c in path.read_text().split()] if path.is_file() else []


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return False
    return state not in ("Z", "X")


@pytest.mark.skipif(not Path("/proc/self/task").is_dir(), reason="needs Linux /proc to find the worker processes")
def test_terminated_sweep_stops_its_workers(tmp_path: Path) -> None:
    """SIGTERM to `drigm sweep` ends its pool workers too (no orphan keeps training or holds a run's lock)."""
    import os
    import signal
    import subprocess
    import sys
    import time

    proto = tmp_path / "long.yaml"
    proto.write_text(f"base: {SMOKE}\nname: long\nscales:\n  smoke:\n    run:\n      steps: 100000000\n")
    cmd = [sys.executable, "-m", "drigm", "sweep", str(proto), "--scale", "smoke", "--algos", "qmix", "--targets",
           "none", "--seeds", "2", "--workers", "2", "--out-root", str(tmp_path / "runs"), "--no-progress"]  # fmt: skip
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 120
        while len(list((tmp_path / "runs" / "train").glob("*/*/progress.csv"))) < 2:
            assert proc.poll() is None, proc.stderr.read().decode() if proc.stderr else ""
            assert time.monotonic() < deadline, "the workers never started training"
            time.sleep(0.5)
        workers = _children(proc.pid)
        assert len(workers) >= 2
        os.kill(proc.pid, signal.SIGTERM)
        assert proc.wait(timeout=60) != 0
        deadline = time.monotonic() + 30
        while any(_alive(w) for w in workers) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert not any(_alive(w) for w in workers), "sweep workers outlived the terminated sweep"
    finally:
        if proc.poll() is None:
            proc.kill()


def _variant(tmp: Path, name: str, extra: str) -> Path:
    path = tmp / f"{name}.yaml"
    path.write_text(f"base: {SMOKE}\nname: {name}\n{extra}")
    return path


def test_one_sweep_trains_once_for_several_protocols_and_skips_them_all_after(tmp_path: Path) -> None:
    """Protocols with the same training share each job's run; each gets its own results; explicit test seeds
    (duplicates kept) are scored as listed; a protocol that trains differently is refused."""
    shifted = shifted_protocol(tmp_path)
    days = _variant(tmp_path, "smoke-days", "test_seeds: [5, 3, 5, 5]\n")
    out = tmp_path / "runs"
    s = sweep(f"{SMOKE},{shifted},{days}", ["qmix"], ["none"], ["tv"], 2, workers=1, out_root=out, progress=False)
    assert (s.total, s.ran, s.failed) == (2, 2, [])
    assert len(list((out / "train").glob("*/*"))) == 2  # one training run per job, not one per protocol
    for name in ("tabular-smoke", "smoke-shift", "smoke-days"):
        assert sorted(p.name for p in (out / name / "full" / "qmix-none").glob("*.json")) == [
            "seed0.json",
            "seed1.json",
        ]
    r = json.loads((out / "smoke-days" / "full" / "qmix-none" / "seed0.json").read_text())
    assert r["test_seeds"] == [5, 3, 5, 5] and r["eval_episodes"] == 4
    ret = r["tests"]["nominal"]["returns"]
    assert len(ret) == 4 and ret[0] == ret[2] == ret[3]  # a repeated seed is the same greedy episode, counted 3x
    again = sweep(f"{SMOKE},{shifted},{days}", ["qmix"], ["none"], ["tv"], 2, workers=1, out_root=out, progress=False)
    assert (again.skipped, again.ran) == (2, 0)
    other = _variant(tmp_path, "smoke-other", "run: {learner: {lr: 0.01}}\n")
    with pytest.raises(ProtocolError, match="train qmix-none seed 0 differently"):
        sweep(f"{SMOKE},{other}", ["qmix"], ["none"], ["tv"], 1, workers=1, out_root=out, progress=False)
    bad = _variant(tmp_path, "smoke-bad", "test_seeds: [1, -2]\n")
    with pytest.raises(ProtocolError, match=r"test_seeds=\[1, -2\]"):
        load_protocol(bad)


def test_presets_extend_each_other_are_recorded_and_file_results_apart(tmp_path: Path) -> None:
    path = _variant(
        tmp_path,
        "smoke-presets",
        "preset: a\npresets:\n  a: {run: {learner: {lr: 0.002}}}\n  b: {extends: a, run: {agent: {hidden: 6}}}\n"
        "  loop1: {extends: loop2}\n  loop2: {extends: loop1}\n",
    )
    a, b = load_protocol(path), load_protocol(path, preset="b")
    job = Job("vdn", "none", None, None, 0)
    ca, cb = a.job_config(job), b.job_config(job)
    assert (ca.preset, ca.learner.lr, ca.agent.hidden) == ("a", 0.002, 8)
    assert (cb.preset, cb.learner.lr, cb.agent.hidden) == ("b", 0.002, 6)  # b starts from a
    assert (a.label, b.label) == ("a/full", "b/full") and protocol_presets(path) == ["a", "b", "loop1", "loop2"]
    with pytest.raises(ProtocolError, match="preset='c' is not one of its presets"):
        load_protocol(path, preset="c")
    with pytest.raises(ProtocolError, match="cycle"):
        load_protocol(path, preset="loop1")
    with pytest.raises(ProtocolError, match="preset='a' is not one of its presets"):
        load_protocol(SMOKE, preset="a")
    s = sweep(path, ["vdn"], ["none"], ["tv"], 1, workers=1, out_root=tmp_path / "runs", progress=False, preset="b")
    assert s.ran == 1 and (tmp_path / "runs" / "smoke-presets" / "b" / "full" / "vdn-none" / "seed0.json").is_file()


def test_the_paper_building_protocols_score_the_papers_days() -> None:
    seasonal, climate = load_protocol("building-paper-seasonal"), load_protocol("building-paper-climate")
    days = np.random.default_rng(11).integers(0, 200, 50).tolist()
    assert seasonal.test_seeds() == days == climate.test_seeds() and seasonal.eval_episodes == 50
    assert all(t.env["kwargs"]["days"] is None for t in seasonal.tests + climate.tests)  # seed = day of the year
    assert seasonal.paper is not None and seasonal.paper["se_ddof"] == 0
    held_out = load_protocol("building-seasonal")
    assert held_out.paper is None and held_out.tests[0].env["kwargs"]["days"] == "200:365"
    job = Job("qmix", "paper", "tv", 0.2, 0)
    keys = {p.job_config(job).preset for p in (seasonal, climate, held_out)}
    assert keys == {"paper"}  # the default preset, shared: one run serves all building protocols
    cfg = seasonal.job_config(job)
    assert (cfg.learner.replay, cfg.learner.buffer_size, cfg.learner.batch_size) == ("transitions", 10000, 64)
    assert (cfg.agent.arch, cfg.agent.shared, cfg.learner.double_q, cfg.learner.input_norm) == (
        "lstm",
        False,
        False,
        False,
    )
    assert (cfg.learner.optimizer, cfg.learner.lr, cfg.mixer.params["hypernet_layers"]) == ("adam", 5e-4, 1)
    vdn = seasonal.job_config(Job("vdn", "none", None, None, 0))
    assert (vdn.learner.optimizer, vdn.learner.grad_clip) == ("rmsprop", None)
    assert load_protocol("building-paper-seasonal", preset="paper-mlp").job_config(job).agent.arch == "mlp"


def write_fake_results(out: Path, proto: Protocol, jobs: list[Job], scores: dict[str, np.ndarray]) -> None:
    """A sweep.json requesting `jobs` and a valid results file for every job of a method in `scores`, whose
    array (seeds, tests, episodes) gives the test returns of the method's k-th requested seed (no training)."""
    from dataclasses import asdict

    from drigm.protocol import config_key
    from drigm.results_store import RESULT_FORMAT, result_dir

    root = result_dir(out, proto.name, proto.label)
    root.mkdir(parents=True, exist_ok=True)
    manifest = {"protocol": proto.name, "scale": proto.scale, "jobs": [{"method": j.method, **asdict(j)} for j in jobs]}
    (root / "sweep.json").write_text(json.dumps(manifest))
    for m, arr in scores.items():
        for k, job in enumerate(j for j in jobs if j.method == m):
            if k >= len(arr):
                continue
            cfg = proto.job_config(job)
            tests = {}
            for t, ret in zip(proto.tests, arr[k], strict=True):
                rets = [float(v) for v in ret]
                sc = [proto.score(v) for v in rets] if proto.score is not None else None
                tests[t.name] = {"env": t.env, "seeds": proto.test_seeds(), "returns": rets, "lengths": [6] * len(rets)}
                if sc is not None:
                    tests[t.name]["score"] = sc
            r = {
                "format": RESULT_FORMAT, "protocol": proto.name, "scale": proto.scale, "preset": proto.preset,
                "method": job.method, "job": asdict(job), "config_key": config_key(cfg), "config": cfg.to_dict(),
                "train_dir": "", "train": {"t_env": cfg.steps}, "curve": {"step": [30.0, 240.0],
                "return_mean": [0.1, 0.5]}, "eval_episodes": proto.eval_episodes, "eval_seed": proto.eval_seed,
                "test_seeds": proto.test_seeds(), "score_label": None, "tests": tests,
            }  # fmt: skip
            path = result_path(out, proto.name, proto.label, job)
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps(r))


def test_report_robust_statistics_iqm_worst_case_improvement_profiles(tmp_path: Path) -> None:
    """A robust method beside its matched controls (discount control, non-robust run) on two test environments:
    IQM/mean tables with CIs, worst-case columns, P(improvement) paired by seed, performance profiles."""
    path = _variant(
        tmp_path,
        "smoke-stats",
        "run: {learner: {gamma: 0.9}}\nscore: {offset: 10, scale: 10}\ntest_seeds: [3, 1, 3, 2, 5, 4, 6, 7, 8, 9]\n"
        "tests:\n  - {name: nominal, env: {}}\n  - {name: long, env: {episode_limit: 8}}\n",
    )
    proto = load_protocol(path, "smoke")
    jobs = proto.jobs(["qmix"], ["none", "exact", "discount"], ["contamination"], [0, 1, 2])
    rng = np.random.default_rng(0)
    base = rng.normal(size=(3, 2, 10))
    base[:, 1] -= 3.0  # the "long" environment is the harder one for everyone
    write_fake_results(
        tmp_path / "runs",
        proto,
        jobs,
        {"qmix-none": base, "qmix-discount-contamination": base[:2] + 0.5, "qmix-exact-contamination": base + 100},
    )
    rroot = tmp_path / "results"
    summary = report(path, tmp_path / "runs", rroot, "smoke")
    dest = rroot / "smoke-stats"
    md = (dest / "results.md").read_text()
    for heading in ("## Robust statistics of the normalised score", "### IQM of run scores", "### Mean of run scores",
                    "### Worst case", "### Probability of improvement over matched controls: P(X > Y) over runs",
                    "### Seed-paired comparison with matched controls"):  # fmt: skip
        assert heading in md
    assert "their `rliable` package define them" in md and "CVaR10%" in md
    assert "- missing: qmix-discount-contamination seed 2" in md  # the control's third seed never ran
    assert (dest / "profiles.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    on_disk = json.loads((dest / "summary.json").read_text())
    assert {"metrics", "missing", "failed", "stats"} <= set(on_disk)
    st = on_disk["stats"]
    assert st["metric"] == "score" and st["bootstrap"] == {"resamples": 10_000, "seed": 12345, "level": 0.95}
    scores = base / 10 + 1  # (return + 10) / 10
    m = st["mean"]["qmix-none"]
    assert m["average"]["point"] == pytest.approx(scores.mean()) and m["nominal"]["seeds"] == [0, 1, 2]
    assert m["long"]["point"] == pytest.approx(scores[:, 1].mean())
    lo, hi = m["average"]["ci"]
    assert lo < m["average"]["point"] < hi
    run_scores = scores.mean(axis=2)  # (seeds, envs): each run's mean over its test episodes
    assert st["iqm"]["qmix-none"]["nominal"]["point"] == pytest.approx(trim_mean(run_scores[:, 0], 0.25))
    assert st["iqm"]["qmix-none"]["average"]["point"] == pytest.approx(trim_mean(run_scores.ravel(), 0.25))
    w = st["worst_case"]["qmix-none"]
    assert w["worst_env"] == "long" and w["worst_env_mean"]["point"] == pytest.approx(scores[:, 1].mean())
    for s in range(3):  # each seed's own worst environment and its mean over that seed's test episodes
        env = int(np.argmin(scores[s].mean(axis=1)))
        assert w["per_seed_worst"][str(s)] == {
            "env": ["nominal", "long"][env],
            "mean": pytest.approx(scores[s, env].mean()),
        }
    per_seed = [np.mean([np.sort(scores[s, e])[0] for e in range(2)]) for s in range(3)]  # 10% of 10: the worst
    assert w["cvar"]["alpha"] == 0.1 and w["cvar"]["mean"] == pytest.approx(np.mean(per_seed))
    runs = {(e["method"], e["control"], e["test"]): e for e in st["improvement"]}  # rliable: over runs, unpaired
    r = runs[("qmix-exact-contamination", "qmix-none", "average")]
    assert r["p"] == 1.0 and (r["n_x"], r["n_y"], r["tasks"]) == (3, 3, 2)
    r = runs[("qmix-discount-contamination", "qmix-none", "nominal")]
    xs, ys = run_scores[:2, 0] + 0.05, run_scores[:, 0]  # the discount control's 2 runs against all 3
    assert r["p"] == pytest.approx(np.mean([(x > y) + 0.5 * (x == y) for x in xs for y in ys]))
    imp = {(e["method"], e["control"], e["test"]): e for e in st["paired_improvement"]}
    assert (
        set(imp)
        == set(runs)
        == {
            ("qmix-exact-contamination", c, t)
            for c in ("qmix-discount-contamination", "qmix-none")
            for t in ("nominal", "long", "average")
        }
        | {("qmix-discount-contamination", "qmix-none", t) for t in ("nominal", "long", "average")}
    )
    e = imp[("qmix-exact-contamination", "qmix-none", "average")]
    assert e["p"] == 1.0 and e["n_pairs"] == 3 and e["mean_diff"] == pytest.approx(10.0)
    d = imp[("qmix-exact-contamination", "qmix-discount-contamination", "long")]
    assert d["n_pairs"] == 2 and d["seeds"] == [0, 1] and d["p"] == 1.0  # paired by seed: seed 2 is dropped
    c = imp[("qmix-discount-contamination", "qmix-none", "average")]
    assert 0.5 < c["p"] < 1.0 and c["mean_diff"] == pytest.approx(0.05) and c["n_pairs"] == 2
    prof = st["profiles"]["qmix-exact-contamination"]
    assert len(prof["taus"]) == 101 and prof["fraction"][0] == 1.0 and prof["fraction"][-1] == 0.0
    assert st["profiles"]["qmix-none"]["fraction"][-1] == 0.0 and json.loads(json.dumps(summary["stats"])) == st
    row = "| qmix-exact-contamination | qmix-none | average | 3 | 1.000 [1.000, 1.000] t [1.000, 1.000] | +10.000"
    assert row in md
    assert e["t_ci"] == pytest.approx([1.0, 1.0]) and e["mean_diff_t_ci"] is not None  # the small-sample check


def test_versus_counts_a_difference_only_where_bootstrap_and_t_intervals_both_exclude_zero() -> None:
    cases = {
        (0.010, 0.011, 0.012, 0.0105, 0.0115): "robust higher (both CIs exclude 0)",
        (-0.010, -0.011, -0.012, -0.0105, -0.0115): "robust LOWER (both CIs exclude 0)",
        # 3 seeds all ahead: the bootstrap interval is [0.01, 0.03]-ish, the t interval reaches below 0
        (0.01, 0.02, 0.03): "robust higher by the bootstrap CI only",
        (-0.01, -0.02, -0.03): "robust LOWER by the bootstrap CI only",
        (-0.01, 0.01, 0.02): "no clear difference",
        (0.02,): "n/a (needs 2+ paired seeds)",
    }
    for diffs, verdict in cases.items():
        c, t_ci, v = versus(list(diffs))
        assert v.startswith(verdict), (diffs, v)
        assert c.mean == pytest.approx(np.mean(diffs))
        if len(diffs) > 1:
            assert t_ci is not None and t_ci[0] < c.mean < t_ci[1]


def test_report_exclude_seeds_leaves_a_run_out_of_every_figure_and_says_so(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`--exclude-seeds METHOD:SEED` drops that run from the report's and the overview's statistics (a diverged
    seed), lists it as excluded in the page and the JSON, and rejects specs that match no requested run."""
    path = _variant(
        tmp_path, "smoke-excl", "run: {learner: {gamma: 0.9}}\nscore: {offset: 10, scale: 10}\n"
    )  # fmt: skip
    proto = load_protocol(path, "smoke")
    jobs = proto.jobs(["qmix"], ["none", "exact"], ["contamination"], [0, 1, 2])
    base = np.random.default_rng(1).normal(size=(3, len(proto.tests), proto.eval_episodes))
    robust = base + 1.0
    robust[2] -= 1000.0  # seed 2 diverged
    out, res = tmp_path / "runs", tmp_path / "res"
    write_fake_results(out, proto, jobs, {"qmix-none": base, "qmix-exact-contamination": robust})
    common = [str(path), "--scale", "smoke", "--out-root", str(out), "--results-root", str(res)]
    assert report_main([*common, "--overview", "ov", "--exclude-seeds", "qmix-exact-contamination:2"]) == 0
    summary = json.loads((res / "smoke-excl" / "summary.json").read_text())
    assert summary["excluded"] == [["qmix-exact-contamination", 2]] and summary["missing"] == []
    first = proto.tests[0].name
    cellv = summary["metrics"]["score"]["qmix-exact-contamination"][first]
    assert cellv["values"] == pytest.approx([np.mean(robust[s, 0]) / 10 + 1 for s in (0, 1)])  # seeds 0, 1 only
    assert summary["metrics"]["score"]["qmix-none"][first]["values"] == pytest.approx(
        [np.mean(base[s, 0]) / 10 + 1 for s in range(3)]
    )  # the other method keeps all its seeds
    page = (res / "ov.md").read_text()
    assert "## Excluded on request (--exclude-seeds)" in page and "- qmix-exact-contamination: seed 2" in page
    ov = json.loads((res / "ov.json").read_text())
    assert ov["excluded"] == [["qmix-exact-contamination", 2]]
    vs = ov["versus_none"]["smoke-excl"]["qmix-exact-contamination"]
    assert vs["n_pairs"] == 2 and vs["mean"] == pytest.approx(0.1)  # +1 return per step / scale 10, seed 2 out
    assert "Excluded on request" in (res / "smoke-excl" / "results.md").read_text()
    # --overview-only writes the overview and leaves the protocol's report alone
    (res / "smoke-excl" / "results.md").unlink()
    assert report_main([*common, "--overview", "ov2", "--overview-only"]) == 0
    assert (res / "ov2.md").is_file() and not (res / "smoke-excl" / "results.md").exists()
    ov2 = json.loads((res / "ov2.json").read_text())
    assert ov2["excluded"] == [] and ov2["versus_none"]["smoke-excl"]["qmix-exact-contamination"]["n_pairs"] == 3
    capsys.readouterr()
    for bad, needle in [
        (["--exclude-seeds", "qmix-exact-contamination:7"], "qmix-exact-contamination:7: no such run was requested"),
        (["--exclude-seeds", "qmix-exact:0"], "qmix-exact:0: no such run"),
        (["--exclude-seeds", "qmix-none"], "'qmix-none' is not METHOD:SEED"),
        (["--exclude-seeds", "qmix-none:x"], "'qmix-none:x' is not METHOD:SEED"),
        (["--overview-only"], "--overview-only needs --overview NAME"),
    ]:
        assert report_main([*common, *bad]) == 2, bad
        assert needle in capsys.readouterr().err, bad
