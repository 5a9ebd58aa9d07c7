"""Small command-line contracts (issue 31's smaller findings): each was a silent surprise for a user."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from drigm.cli import main
from reference.__main__ import main as reference_main
from reference.sets import SPECS

ROOT = Path(__file__).resolve().parents[1]


def _train(out: Path, *extra: str) -> list[str]:
    return ["train", "--env", "tabular:robust_vs_nominal", "--out", str(out), "--no-progress", *extra]


def test_train_help_lists_every_set_it_can_train(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["train", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    trainable = [name for name, spec in SPECS.items() if spec.rules]
    assert "chi2" in trainable
    for name in trainable:
        assert name in text, name
    assert "first boundary at or past STEPS" in text  # --steps says that whole episodes are collected


def test_resuming_a_finished_run_adds_nothing(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "r"
    assert main(_train(out, "--steps", "60")) == 0
    before = (out / "progress.csv").read_text()
    assert main(["train", "--out", str(out), "--resume", "--no-progress"]) == 0
    assert '"already_finished": true' in capsys.readouterr().out
    assert (out / "progress.csv").read_text() == before  # no second final evaluation row
    assert main(["train", "--out", str(out), "--resume", "--steps", "120", "--no-progress"]) == 0
    assert (out / "progress.csv").read_text().count("eval/return_mean") == 2  # extending still evaluates


def test_report_overview_stays_inside_the_results_root(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    for name in ("../x", "a/b", ".."):
        argv = ["report", "tabular-smoke", "--out-root", str(tmp_path), "--results-root", str(tmp_path / "res")]
        assert main([*argv, "--overview", name]) == 2
        assert "must be a plain file name" in capsys.readouterr().err
    assert not (tmp_path / "x.md").exists()


def test_reference_refuses_a_directory_as_the_output_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "d").mkdir()
    assert reference_main(["random", "--states", "3", "--actions", "2,2", "-o", str(tmp_path / "d")]) == 2
    assert "is a directory" in capsys.readouterr().err
    assert not (tmp_path / "d.npz").exists()


def test_a_run_on_a_relative_game_path_is_evaluated_from_elsewhere(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    assert reference_main(["classic", "climbing", "-o", "g.npz"]) == 0
    assert main(["train", "--env", "tabular:g.npz", "--out", "run", "--steps", "30", "--no-progress"]) == 0
    monkeypatch.chdir(ROOT)
    assert f"tabular:{tmp_path / 'g.npz'}" in (tmp_path / "run" / "config.yaml").read_text()
    assert main(["evaluate", str(tmp_path / "run"), "--episodes", "1"]) == 0


@pytest.mark.parametrize("module", ["proofs_check", "reference", "drigm"])
def test_a_closed_stdout_ends_a_command_without_a_traceback(module: str) -> None:
    args = {"proofs_check": ["--list"], "reference": ["classic", "--help"], "drigm": ["train", "--help"]}[module]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen(
        [sys.executable, "-m", module, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, cwd=ROOT
    )
    assert proc.stdout is not None and proc.stderr is not None
    proc.stdout.close()  # the reader goes away before the command prints (it takes ~1 s to start)
    err = proc.stderr.read().decode()
    assert proc.wait(timeout=120) in (0, 1, 2), err
    assert "Traceback" not in err and "BrokenPipeError" not in err, err
