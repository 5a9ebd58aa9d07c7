"""The rho axis and the matched controls of sweeps, and ``drigm evaluate --env`` (issue 15 items 1, 2 and 5)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import require_extra

from drigm.cli import _rho_arg, _rhos_of, sweep_main
from drigm.cli import main as cli_main
from drigm.config import ConfigError
from drigm.protocol import (
    PROTOCOL_DIR,
    Job,
    ProtocolError,
    config_key,
    load_protocol,
    matched_controls,
    parse_method,
    protocol_presets,
    rho_tag,
)
from drigm.report import overview, paper_row, report
from drigm.results_store import is_finished, result_dir, result_path
from drigm.sweep import sweep

REPO = Path(__file__).resolve().parent.parent
BUILDING = ["building-paper-seasonal", "building-paper-climate", "building-seasonal", "building-climate"]


def test_rho_axis_jobs_tags_and_the_two_points_that_are_other_jobs() -> None:
    p = load_protocol("building-paper-seasonal", preset="paper-mlp")
    jobs = p.jobs(
        ["qmix"],
        ["paper", "exact", "discount"],
        ["contamination", "tv"],
        [0],
        rhos={"contamination": [0.0, 0.008, 0.02], "tv": [0.0, 0.2, 0.5]},
    )
    methods = [j.method for j in jobs]
    # the protocol's own rho keeps the untagged label of earlier sweeps; other radii are tagged
    assert "qmix-paper-tv" in methods and "qmix-paper-tv-rho0.0" in methods and "qmix-exact-tv-rho0.5" in methods
    assert "qmix-paper-contamination" in methods and "qmix-paper-contamination-rho0.02" in methods
    # contamination at rho 0 (and the discount control at rho 0) is the non-robust run: trained as qmix-none
    assert "qmix-paper-contamination-rho0.0" not in methods and "qmix-exact-contamination-rho0.0" not in methods
    assert "qmix-discount-contamination-rho0.0" not in methods and methods.count("qmix-none") == 1
    assert len(methods) == len(set(methods))
    # the discount control trains the non-robust target at gamma (1 - rho); nothing else differs from none
    disc = p.job_config(next(j for j in jobs if j.method == "qmix-discount-contamination"))
    none = p.job_config(next(j for j in jobs if j.method == "qmix-none"))
    assert disc.target.kind == "none" and disc.learner.gamma == pytest.approx(0.997 * (1 - 0.008))
    d, n = disc.to_dict(), none.to_dict()
    d["learner"].pop("gamma"), n["learner"].pop("gamma")
    assert d == n
    # TV at rho 0 keeps the TV schedule and its dual network: the matched control differs from none
    tv0 = p.job_config(next(j for j in jobs if j.method == "qmix-paper-tv-rho0.0"))
    assert tv0.target.kind == "paper" and tv0.target.rho == 0.0 and tv0.learner.update_every == 8
    assert tv0.learner.q_steps == 4 and none.learner.update_every == 2


def test_existing_results_keep_their_labels_and_config_keys() -> None:
    """Every committed full-budget results file is still a finished job, so later sweeps skip it."""
    checked: dict[str, int] = {}
    for name in BUILDING:
        for preset in protocol_presets(name):  # every preset's runs, the old loop's (paper-mlp-v1) included
            proto = load_protocol(name, preset=preset)
            rdir = result_dir(REPO / "experiments" / "runs", proto.name, proto.label)
            for path in sorted(rdir.glob("*/seed*.json")):
                r = json.loads(path.read_text())
                job = Job(**r["job"])
                assert job.method == r["method"] == path.parent.name
                assert r["preset"] == r["config"]["preset"] == preset, path
                assert config_key(proto.job_config(job)) == r["config_key"]
                assert is_finished(path, proto, job), path
                checked[preset] = checked.get(preset, 0) + 1
    if not checked:
        pytest.skip("no committed building results in this checkout")
    assert checked.get("paper-mlp-v1", 0) >= 500, checked  # the ~130 runs of the old loop, on four day sets


def test_rho_axis_errors_name_the_value_and_range() -> None:
    p = load_protocol("building-paper-seasonal", preset="paper-mlp")
    with pytest.raises(ProtocolError, match=r"rho 1.5 for set 'tv'.*\[0, 1\]"):
        p.jobs(["qmix"], ["paper"], ["tv"], [0], rhos={"tv": [0.0, 1.5]})
    with pytest.raises(ProtocolError, match="not among the sets"):
        p.jobs(["qmix"], ["paper"], ["tv"], [0], rhos={"contamination": [0.1]})
    with pytest.raises(ProtocolError, match="matched control of contamination only"):
        p.jobs(["qmix"], ["discount"], ["tv"], [0])
    assert p.rho_grid == {
        "contamination": [0.0, 0.004, 0.008, 0.012, 0.016, 0.02],
        "tv": [0.0, 0.1, 0.2, 0.3, 0.4, 0.5],
    }


def test_protocol_rho_grid_is_validated(tmp_path: Path) -> None:
    base = PROTOCOL_DIR / "tabular-smoke.yaml"
    for grid, msg in (
        ("{tv: [0.1, 2.0]}", r"rho_grid.tv.*\[0, 1\]"),
        ("{tv: []}", "non-empty list"),
        ("{tv: [a]}", "non-empty list of numbers"),
        ("{nope: [0.1]}", "unknown uncertainty set"),
    ):
        path = tmp_path / "g.yaml"
        path.write_text(f"base: {base}\nname: g\nrho_grid: {grid}\n")
        with pytest.raises(ProtocolError, match=msg):
            load_protocol(path)


def test_rho_cli_arguments() -> None:
    assert _rhos_of([_rho_arg("grid")]) == "grid"
    assert _rhos_of([_rho_arg("0,0.004")]) == [0.0, 0.004]
    assert _rhos_of([_rho_arg("tv=0,0.1"), _rho_arg("contamination=0.008")]) == {
        "tv": [0.0, 0.1],
        "contamination": [0.008],
    }
    with pytest.raises(ProtocolError, match="given twice"):
        _rhos_of([_rho_arg("tv=0"), _rho_arg("tv=0.1")])
    with pytest.raises(ProtocolError, match="either one"):
        _rhos_of([_rho_arg("0.1"), _rho_arg("tv=0.1")])
    with pytest.raises(Exception, match="--rho 'x,1'"):
        _rho_arg("x,1")


def test_method_labels_parse_and_name_their_matched_controls() -> None:
    for job in (
        Job("qmix", "none", None, None, 0),
        Job("vdn", "paper", "tv", 0.2, 0),
        Job("qtran", "exact", "kl-penalty", 0.5, 0, rho_tag(0.5)),
        Job("qmix", "discount", "contamination", 0.02, 0, rho_tag(0.02)),
    ):
        algo, target, set_name, rho = parse_method(job.method)
        assert (algo, target, set_name) == (job.algo, job.target, job.set)
        assert rho == (job.rho if job.tag else None)
    assert matched_controls("qmix-paper-tv", 0.2) == [
        "qmix-paper-tv-rho0.0",
        "qmix-schedule-tv",
        "qmix-none",
        "qmix-doubleq",
    ]
    assert matched_controls("qmix-exact-tv-rho0.4") == [
        "qmix-exact-tv-rho0.0",
        "qmix-schedule-tv",
        "qmix-none",
        "qmix-doubleq",
    ]
    assert matched_controls("qmix-paper-contamination", 0.008) == [
        "qmix-discount-contamination",
        "qmix-schedule-contamination",  # listed for every set; reports use it only where it ran
        "qmix-none",
        "qmix-doubleq",
    ]
    assert matched_controls("vdn-exact-contamination-rho0.02") == [
        "vdn-discount-contamination-rho0.02",
        "vdn-schedule-contamination",
        "vdn-none",
        "vdn-doubleq",
    ]
    assert matched_controls("qmix-paper-tv-rho0.0") == ["qmix-schedule-tv", "qmix-none", "qmix-doubleq"]
    assert matched_controls("qmix-schedule-tv") == ["qmix-none"]
    assert parse_method("qmix-schedule-tv") == ("qmix", "schedule", "tv", None)
    assert (
        matched_controls("qmix-discount-contamination", 0.008) == ["qmix-none"] and matched_controls("qmix-none") == []
    )
    assert matched_controls("qmix-doubleq") == ["qmix-none"] and parse_method("qmix-doubleq") == (
        "qmix",
        "doubleq",
        None,
        None,
    )
    assert paper_row("qmix-doubleq") == ("qmix", None)
    with pytest.raises(ProtocolError, match="malformed rho tag"):
        parse_method("qmix-paper-tv-rhoX")
    # only runs at the protocol's rho sit beside the paper's rows; controls and other radii have no paper number
    assert paper_row("qmix-paper-tv") == ("qmix", "tv") and paper_row("vdn-none") == ("vdn", "none")
    assert paper_row("qmix-exact-contamination") == ("qmix", "contamination")
    assert paper_row("qmix-paper-tv-rho0.0") == ("qmix", None) and paper_row("qmix-discount-contamination")[1] is None
    assert paper_row("vdn-groupdr-paper") == ("vdn", "groupdr") and paper_row("vdn-groupdr") == ("vdn", None)
    assert paper_row("qmix-dr-paper")[1] is None


def test_the_double_q_control_changes_only_double_q_and_refuses_to_repeat_none() -> None:
    p = load_protocol("building-seasonal", preset="paper-mlp")  # the paper's learner: no double-Q
    (job,) = p.jobs(["qmix"], ["doubleq"], ["tv"], [3])
    assert (job.method, job.set, job.rho) == ("qmix-doubleq", None, None)
    on, off = p.job_config(job).to_dict(), p.job_config(Job("qmix", "none", None, None, 3)).to_dict()
    assert on["learner"].pop("double_q") is True and off["learner"].pop("double_q") is False
    assert on == off
    q = load_protocol("building-seasonal", preset="drigm")  # already double-Q: a doubleq run would repeat none
    with pytest.raises(ProtocolError, match="would repeat 'none'"):
        q.job_config(Job("qmix", "doubleq", None, None, 0))


def test_the_schedule_control_changes_only_the_learner_schedule() -> None:
    p = load_protocol("building-seasonal", preset="paper-mlp")
    jobs = p.jobs(["qmix"], ["schedule"], ["contamination", "tv"], [3], rhos={"tv": [0.0, 0.5]})
    # one job per seed and set with its own schedule: no radius (a rho axis does not multiply it), no contamination
    assert [(j.method, j.set, j.rho) for j in jobs] == [("qmix-schedule-tv", "tv", None)]
    sched = p.job_config(jobs[0]).to_dict()
    none = p.job_config(Job("qmix", "none", None, None, 3)).to_dict()
    tv0 = p.job_config(Job("qmix", "paper", "tv", 0.0, 3, rho_tag(0.0))).to_dict()
    # the schedule is TV's (rho 0's) ...
    for k in ("update_every", "q_steps", "aux_first"):
        assert sched["learner"][k] == tv0["learner"][k]
    assert (sched["learner"]["update_every"], sched["learner"]["q_steps"]) == (8, 4)
    assert (none["learner"]["update_every"], none["learner"]["q_steps"]) == (2, 1)
    # ... and nothing else differs from none: the non-robust target, no dual network steps
    for k in ("update_every", "q_steps", "aux_first"):
        sched["learner"].pop(k), none["learner"].pop(k)
    assert sched == none and sched["target"]["kind"] == "none"
    with pytest.raises(ProtocolError, match="needs a set whose set_overrides change the learner"):
        p.jobs(["qmix"], ["schedule"], ["contamination"], [0])
    smoke = load_protocol("tabular-smoke")  # no set overrides at all
    with pytest.raises(ProtocolError, match=r"tabular-smoke.*none among the sets asked: tv"):
        smoke.jobs(["qmix"], ["schedule"], ["tv"], [0])


def test_the_schedule_control_refuses_to_repeat_none(tmp_path: Path) -> None:
    proto = tmp_path / "same.yaml"  # TV's schedule override equal to the base schedule: a schedule run is none
    proto.write_text(
        f"base: {PROTOCOL_DIR / 'tabular-smoke.yaml'}\nname: same\nset_overrides:\n  tv:\n    learner:\n"
        "      update_every: 4\n"
    )
    p = load_protocol(proto)
    (job,) = p.jobs(["qmix"], ["schedule"], ["tv"], [0])
    refused = r"'schedule' sets \{'learner': \{'update_every': 4\}\}.*repeat 'none'"
    with pytest.raises(ProtocolError, match=refused):
        p.job_config(job)
    # a sweep refuses it before writing its manifest, so no report meets a job that can never run
    out = tmp_path / "runs"
    kw = {"algos": ["qmix"], "sets": ["tv"], "seeds": 1, "workers": 1, "progress": False}
    with pytest.raises(ProtocolError, match=refused):
        sweep(str(proto), out_root=out, scale="smoke", targets=["none", "schedule"], **kw)  # type: ignore[arg-type]
    assert not out.exists() or not list(out.rglob("sweep.json"))
    # a protocol naming no targets keeps the old default: no schedule job appears unasked
    bare = tmp_path / "bare.yaml"
    text = (PROTOCOL_DIR / "tabular-smoke.yaml").read_text().replace("targets: [none, exact, paper]\n", "")
    text = text.replace("    optimizer: adam\n", "    optimizer: adam\n    gamma: 0.8\n")  # the game's own discount
    bare.write_text(text.replace("name: tabular-smoke", "name: bare"))
    assert load_protocol(bare).targets == ["none", "exact", "paper", "discount"]


def test_the_report_compares_robust_runs_with_the_double_q_control(tmp_path: Path) -> None:
    proto = tmp_path / "nodq.yaml"  # tabular-smoke with the paper's learner (no double-Q), so doubleq is a change
    proto.write_text(  # and a TV schedule of its own, so that the schedule control is a change too
        f"base: {PROTOCOL_DIR / 'tabular-smoke.yaml'}\nname: nodq\nrun:\n  learner:\n    double_q: false\n"
        "set_overrides:\n  tv:\n    learner:\n      update_every: 8\n      q_steps: 2\n"
    )
    out = tmp_path / "runs"
    kw = {"algos": ["qmix"], "sets": ["tv"], "seeds": 1, "workers": 1, "progress": False}
    targets = ["none", "paper", "doubleq", "schedule"]
    s = sweep(str(proto), out_root=out, scale="smoke", targets=targets, **kw)  # type: ignore[arg-type]
    assert (s.total, s.ran, s.failed) == (4, 4, [])
    r = json.loads((out / "nodq" / "smoke" / "qmix-doubleq" / "seed0.json").read_text())
    assert r["config"]["learner"]["double_q"] is True and r["config"]["target"]["kind"] == "none"
    r = json.loads((out / "nodq" / "smoke" / "qmix-schedule-tv" / "seed0.json").read_text())
    assert (r["config"]["learner"]["update_every"], r["config"]["learner"]["q_steps"]) == (8, 2)
    assert r["config"]["target"]["kind"] == "none" and r["config"]["learner"]["double_q"] is False
    overview([str(proto)], out, tmp_path / "results", "ov", "smoke")
    versus = json.loads((tmp_path / "results" / "ov.json").read_text())["versus_control"]["nodq"]
    assert list(versus["qmix-paper-tv"]) == ["qmix-schedule-tv", "qmix-none", "qmix-doubleq"]  # closest first
    assert set(versus["qmix-doubleq"]) == {"qmix-none"} and set(versus["qmix-schedule-tv"]) == {"qmix-none"}


def test_sweep_trains_a_rho_axis_and_skips_it_after(tmp_path: Path) -> None:
    out = tmp_path / "runs"
    kw = {"algos": ["qmix"], "targets": ["paper"], "sets": ["tv"], "seeds": 1, "workers": 1, "progress": False}
    s = sweep("tabular-smoke", out_root=out, scale="smoke", rhos={"tv": [0.0, 0.2, 0.4]}, **kw)  # type: ignore[arg-type]
    assert (s.total, s.ran, s.failed) == (3, 3, [])
    proto = load_protocol("tabular-smoke", "smoke")
    seen = {}
    for job in proto.jobs(["qmix"], ["paper"], ["tv"], [0], rhos={"tv": [0.0, 0.2, 0.4]}):
        r = json.loads(result_path(out.resolve(), proto.name, proto.label, job).read_text())
        seen[r["method"]] = r["config"]["target"]["rho"]
    assert seen == {"qmix-paper-tv-rho0.0": 0.0, "qmix-paper-tv": 0.2, "qmix-paper-tv-rho0.4": 0.4}
    manifest = json.loads((out / "tabular-smoke" / "smoke" / "sweep.json").read_text())
    assert sorted(j["tag"] for j in manifest["jobs"]) == ["", "rho0.0", "rho0.4"]
    argv = ["tabular-smoke", "--algos", "qmix", "--targets", "paper", "--sets", "tv", "--seeds", "1"]
    assert (
        sweep_main(
            [
                *argv,
                "--scale",
                "smoke",
                "--rho",
                "tv=0,0.2,0.4",
                "--workers",
                "1",
                "--no-progress",
                "--out-root",
                str(out),
            ]
        )
        == 0
    )
    again = sweep("tabular-smoke", out_root=out, scale="smoke", rhos={"tv": [0.0, 0.2, 0.4]}, **kw)  # type: ignore[arg-type]
    assert (again.skipped, again.ran) == (3, 0)
    # the report draws the rho curve and compares each rho with its rho = 0 control
    summary = report("tabular-smoke", out, tmp_path / "results", "smoke")
    curve = summary["rho_curves"]["nominal"]["qmix-paper-tv"]
    assert [p[0] for p in curve] == [0.0, 0.2, 0.4]
    assert (tmp_path / "results" / "tabular-smoke" / "rho.png").read_bytes()[:4] == b"\x89PNG"
    page = overview(["tabular-smoke"], out, tmp_path / "results", "ov", "smoke").read_text()
    assert "| qmix-paper-tv | qmix-paper-tv-rho0.0 | tabular-smoke | 1 |" in page and "P(improvement)" in page
    assert "| qmix-paper-tv-rho0.4 | qmix-paper-tv-rho0.0 | tabular-smoke | 1 |" in page
    data = json.loads((tmp_path / "results" / "ov.json").read_text())
    assert set(data["versus_control"]["tabular-smoke"]) == {"qmix-paper-tv", "qmix-paper-tv-rho0.4"}
    vs = data["versus_control"]["tabular-smoke"]["qmix-paper-tv"]["qmix-paper-tv-rho0.0"]
    assert vs["paired_improvement"]["n_pairs"] == 1 and 0.0 <= vs["paired_improvement"]["p"] <= 1.0
    assert vs["improvement"]["n_x"] == vs["improvement"]["n_y"] == 1 and vs["improvement"]["ci"] is None  # one run
    assert (tmp_path / "results" / "ov-rho.png").is_file()
    # the protocol has no rho_grid: 'grid' says so
    assert sweep_main([*argv, "--scale", "smoke", "--rho", "grid", "--out-root", str(out)]) == 2


def test_evaluate_scores_a_run_on_another_environment(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "runs"
    sweep(
        "tabular-smoke",
        algos=["qmix"],
        targets=["none"],
        seeds=1,
        workers=1,
        out_root=out,
        scale="smoke",
        progress=False,
    )
    (run,) = [p for p in (out / "train").rglob("config.yaml")]
    run_dir = run.parent
    capsys.readouterr()
    assert cli_main(["evaluate", str(run_dir), "--env", "tabular:robust_vs_nominal", "--episodes", "4", "--json"]) == 0
    res = json.loads(capsys.readouterr().out)
    assert res["episodes"] == 4 and res["seeds"] == [0, 1, 2, 3] and len(res["returns"]) == 4
    assert res["env"]["name"] == "tabular:robust_vs_nominal"
    # python -m drigm is the same command; a wrong environment or day pool is a one-line error, exit 2
    cmd = [sys.executable, "-m", "drigm", "evaluate", str(run_dir), "--env", "tabular:nope", "--episodes", "2"]
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO, timeout=120)
    assert proc.returncode == 2 and "drigm evaluate: error:" in proc.stderr and "Traceback" not in proc.stderr
    assert cli_main(["evaluate", str(run_dir), "--env", "tabular:robust_vs_nominal", "--episodes", "0"]) == 2
    assert "--episodes=0" in capsys.readouterr().err
    assert cli_main(["evaluate", str(run_dir), "--days", "0:3", "--set", "tv", "--rho", "0.1"]) == 2


def test_evaluate_plays_each_day_of_a_building_pool_once(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    require_extra("sustaingym", "sustaingym")
    out = tmp_path / "runs"
    s = sweep(
        "building-paper-seasonal",
        algos=["qmix"],
        targets=["discount"],
        sets=["contamination"],
        seeds=1,
        workers=1,
        out_root=out,
        scale="smoke",
        preset="paper-mlp",
        progress=False,
    )
    assert s.failed == [] and s.ran == 1
    (run,) = [p for p in (out / "train").rglob("config.yaml")]
    capsys.readouterr()
    assert "qmix-discount-contamination-seed0" in run.parent.name
    assert (
        cli_main(
            [
                "evaluate",
                str(run.parent),
                "--env",
                "building:Seattle",
                "--days",
                "200:203",
                "--json",
                "--score-from",
                "building-climate",
            ]
        )
        == 0
    )
    res = json.loads(capsys.readouterr().out)
    assert res["episodes"] == 3 and res["env"]["kwargs"]["days"] == "200:203" and len(res["score"]) == 3
    import yaml

    trained = yaml.safe_load(run.read_text())["env"]["kwargs"]  # the run's adapter settings carry over
    assert {k: v for k, v in res["env"]["kwargs"].items() if k != "days"} == {
        k: v for k, v in trained.items() if k != "days"
    }
    assert res["mean_score"] == pytest.approx(sum(res["score"]) / 3)


@pytest.mark.parametrize("algo", ["vdn", "qmix"])
def test_the_discount_control_is_the_paper_contamination_update(algo: str) -> None:
    """Paper contamination at rho and non-robust training at gamma (1 - rho) make the same updates (to rounding):
    what the paper's contamination gains over `none`, its discount control gains too."""
    import torch
    from test_learner_target import A, N, O, S, batch_of_episodes

    from drigm.config import build_config
    from drigm.learner import Learner

    gamma, rho = 0.97, 0.02
    learners = []
    for target, g in (
        ({"kind": "paper", "set": "contamination", "rho": rho}, gamma),
        ({"kind": "none"}, gamma * (1 - rho)),
    ):
        cfg = build_config({"mixer": {"name": algo}, "target": target, "agent": {"hidden": 8}})
        torch.manual_seed(0)
        learners.append(Learner(cfg, N, A, O, S, gamma=g, device=torch.device("cpu")))
    paper, discount = learners
    for k in range(4):
        batch = batch_of_episodes(seed=k)
        a, b = paper.update(batch), discount.update(batch)
        assert a["target_mean"] == pytest.approx(b["target_mean"], rel=1e-5, abs=1e-6)
        assert a["td_loss"] == pytest.approx(b["td_loss"], rel=1e-5, abs=1e-6)
    for pa, pb in zip(paper.controller.parameters(), discount.controller.parameters(), strict=True):
        torch.testing.assert_close(pa, pb, rtol=1e-5, atol=1e-6)
    # and a learner at the plain gamma does not: the test can tell the two apart
    cfg = build_config({"mixer": {"name": algo}, "target": {"kind": "none"}, "agent": {"hidden": 8}})
    torch.manual_seed(0)
    plain = Learner(cfg, N, A, O, S, gamma=gamma, device=torch.device("cpu"))
    first = plain.update(batch_of_episodes(seed=0))
    torch.manual_seed(0)
    again = Learner(
        build_config(
            {
                "mixer": {"name": algo},
                "target": {"kind": "paper", "set": "contamination", "rho": rho},
                "agent": {"hidden": 8},
            }
        ),
        N,
        A,
        O,
        S,
        gamma=gamma,
        device=torch.device("cpu"),
    )
    assert abs(first["target_mean"] - again.update(batch_of_episodes(seed=0))["target_mean"]) > 1e-4


def test_overview_chooses_rho_on_a_validation_protocol_only(tmp_path: Path) -> None:
    val = tmp_path / "smoke-val.yaml"
    val.write_text(f"base: {PROTOCOL_DIR / 'tabular-smoke.yaml'}\nname: smoke-val\n")
    out, res = tmp_path / "runs", tmp_path / "results"
    s = sweep(f"tabular-smoke,{val}", algos=["qmix"], targets=["paper"], sets=["tv"], seeds=1, workers=1,
              out_root=out, scale="smoke", rhos={"tv": [0.0, 0.2, 0.4]}, progress=False)  # fmt: skip
    assert s.failed == [] and s.ran == 3
    # a second seed at rho 0.2 only: radii are compared on the seeds they share, so it does not count
    s2 = sweep(f"tabular-smoke,{val}", algos=["qmix"], targets=["paper"], sets=["tv"], seeds=2, workers=1,
               out_root=out, scale="smoke", rhos={"tv": [0.2]}, progress=False)  # fmt: skip
    assert s2.ran == 1
    page = overview(["tabular-smoke"], out, res, "ov", "smoke", select_on=str(val), min_select_seeds=1).read_text()
    assert "## Rho chosen on validation (smoke-val)" in page
    data = json.loads((res / "ov.json").read_text())["rho_selected"]
    fam = data["families"]["qmix-paper-tv"]
    means = {float(r): v["mean"] for r, v in fam["validation"].items()}
    assert set(means) == {0.0, 0.2, 0.4} and {v["n"] for v in fam["validation"].values()} == {1}
    best = max(means.values())
    assert fam["chosen_rho"] == min(r for r, v in means.items() if v == best)
    assert fam["tests"]["tabular-smoke"]["score"] is not None and fam["excluded"] == {}
    # radii with fewer seeds than the minimum do not compete: with 2, only rho 0.2 qualifies, so none is chosen
    page = overview(["tabular-smoke"], out, res, "ov", "smoke", select_on=str(val), min_select_seeds=2).read_text()
    fam = json.loads((res / "ov.json").read_text())["rho_selected"]["families"]["qmix-paper-tv"]
    assert fam["chosen_rho"] is None and fam["chosen"] is None and fam["tests"] == {}
    assert set(fam["validation"]) == {"0.2"} and fam["excluded"] == {"0.0": 1, "0.4": 1}
    assert "at two or more radii with 2+ seeds" in page
    assert "| qmix-paper-tv |" in page and "none: fewer than 2 radii with 2+ seeds" in page
    assert "too few seeds: 0 (n=1), 0.4 (n=1)" in page
    # a third seed at rho 0: now 0 and 0.2 compete on seeds 0 and 1, and 0.4 (one seed) is listed as excluded
    s3 = sweep(f"tabular-smoke,{val}", algos=["qmix"], targets=["paper"], sets=["tv"], seeds=2, workers=1,
               out_root=out, scale="smoke", rhos={"tv": [0.0]}, progress=False)  # fmt: skip
    assert s3.ran == 1
    page = overview(["tabular-smoke"], out, res, "ov", "smoke", select_on=str(val), min_select_seeds=2).read_text()
    fam = json.loads((res / "ov.json").read_text())["rho_selected"]["families"]["qmix-paper-tv"]
    assert set(fam["validation"]) == {"0.0", "0.2"} and {v["n"] for v in fam["validation"].values()} == {2}
    assert fam["excluded"] == {"0.4": 1} and "too few seeds: 0.4 (n=1)" in page
    with pytest.raises(ConfigError, match="min-select-seeds"):
        overview(["tabular-smoke"], out, res, "ov", "smoke", select_on=str(val), min_select_seeds=0)
    # choosing on a reported day set is refused
    with pytest.raises(ConfigError, match="validation must differ"):
        overview(["tabular-smoke"], out, res, "ov", "smoke", select_on="tabular-smoke")


def test_rho_plot_gives_each_uncertainty_set_its_own_row_of_panels(tmp_path: Path) -> None:
    """Contamination radii (<= 0.02) and TV radii (<= 0.5) on one axis squeezed the contamination curves to rho 0."""
    import struct

    from drigm.rho_curves import plot_rho_curves, rho_set_of

    assert rho_set_of("qmix-exact-tv") == "tv" and rho_set_of("qmix-discount-contamination") == "contamination"
    assert rho_set_of("qtran-exact-kl-penalty") == "kl-penalty"  # a set whose name has a hyphen
    tv = {"qmix-exact-tv": {"a": [(0.0, 0.9, 0.01), (0.5, 0.95, 0.01)], "b": [(0.0, 0.8, 0.0), (0.5, 0.9, 0.0)]}}
    cont = {"qmix-exact-contamination": {"a": [(0.0, 0.9, 0.0), (0.02, 0.92, 0.0)], "b": [(0.0, 0.8, 0.0)]}}

    def size(curves: dict, name: str) -> tuple[int, int]:
        path = tmp_path / name
        plot_rho_curves(curves, ["a", "b"], "score", path)
        return struct.unpack(">II", path.read_bytes()[16:24])  # PNG IHDR: width, height

    w1, h1 = size(tv, "one.png")
    w2, h2 = size({**tv, **cont}, "two.png")
    assert abs(w1 - w2) <= 0.05 * w1 and h2 > 1.6 * h1  # same columns, one more row
