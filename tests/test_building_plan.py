"""experiments/building_plan.sh: every stage's sweep parses and resolves to jobs, and the plan covers every
committed building run (so rerunning it continues the experiment rather than missing a method)."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from drigm.cli import _rhos_of, sweep_parser
from drigm.sweep import resolve_jobs

ROOT = Path(__file__).resolve().parent.parent
PLAN = ROOT / "experiments" / "building_plan.sh"
STAGES = ["main", "controls", "groupdr", "grid", "grid5", "vdn", "qtran", "report"]


def _recorded_commands(tmp_path: Path, *stages: str) -> tuple[int, list[list[str]]]:
    """Run the plan with a stand-in ``drigm`` on PATH that records its arguments; (exit code, commands)."""
    log = tmp_path / "calls.txt"
    fake = tmp_path / "bin" / "drigm"
    fake.parent.mkdir()
    fake.write_text(f'#!/usr/bin/env bash\nprintf "%s\\t" "$@" >> {log}\necho >> {log}\n')
    fake.chmod(0o755)
    env = {**os.environ, "PATH": f"{fake.parent}{os.pathsep}{os.environ['PATH']}"}
    rc = subprocess.run(["bash", str(PLAN), *stages], env=env, capture_output=True, text=True).returncode
    lines = log.read_text().splitlines() if log.exists() else []
    return rc, [line.rstrip("\t").split("\t") for line in lines]


@pytest.mark.skipif(shutil.which("bash") is None, reason="needs bash")
def test_plan_sweeps_resolve_and_cover_every_committed_building_run(tmp_path: Path) -> None:
    rc, calls = _recorded_commands(tmp_path, *STAGES)
    assert rc == 0
    sweeps = [c[1:] for c in calls if c[0] == "sweep"]
    reports = [c[1:] for c in calls if c[0] == "report"]
    assert len(sweeps) == 12 and len(reports) == 2
    planned: set[tuple[str, int]] = set()
    for argv in sweeps:
        args = sweep_parser().parse_args(argv)
        names = args.protocol.split(",")
        assert "building-validation" in names and args.preset == "paper-mlp"
        _, jobs = resolve_jobs(
            args.protocol, args.algos, args.targets, args.sets, args.seeds, "full", args.preset, _rhos_of(args.rho)
        )
        assert jobs, argv
        planned |= {(j.method, j.seed) for j in jobs}
    # the grid's radii off the protocol's rho carry a tag (contamination's rho 0 is qmix-none), on all five seeds
    tagged = {"tv": {"0.0", "0.1", "0.3", "0.4", "0.5"}, "contamination": {"0.004", "0.012", "0.016", "0.02"}}
    for target in ("paper", "exact"):
        for set_name, radii in tagged.items():
            fam = f"qmix-{target}-{set_name}-rho"
            assert {m.removeprefix(fam) for m, _ in planned if m.startswith(fam)} == radii, fam
            assert {s for m, s in planned if m.startswith(fam)} == {0, 1, 10, 16, 42}, fam
    assert {s for m, s in planned if m == "qmix-doubleq"} == {0, 1, 10, 16, 42}  # the double-Q control
    assert {s for m, s in planned if m == "qmix-schedule-tv"} == {0, 1, 10, 16, 42}  # TV's schedule, no dual network
    assert not any(m.startswith("qmix-schedule-contamination") for m, _ in planned)  # contamination has no own schedule
    # the old loop's runs (paper-mlp-v1) were planned by the same stages
    committed = ROOT / "experiments" / "runs" / "building-paper-seasonal" / "paper-mlp-v1" / "full"
    done = {
        (d.name, int(f.stem.removeprefix("seed")))
        for d in committed.iterdir()
        if d.is_dir()
        for f in d.glob("seed*.json")
    }
    assert done, "no committed building runs to check against"
    assert done <= planned, sorted(done - planned)


def test_plan_refuses_an_unknown_stage(tmp_path: Path) -> None:
    rc, calls = _recorded_commands(tmp_path, "main", "bogus")
    assert rc == 2 and len(calls) == 1
