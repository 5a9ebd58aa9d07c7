"""Runs end to end: CLI train/evaluate, checkpoints (atomic, corrupt, mismatched), and resume continuity."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch

from drigm import run as run_module
from drigm.checkpoint import CheckpointError, load_checkpoint
from drigm.cli import main
from drigm.config import build_config
from drigm.run import Trainer, evaluate_run
from drigm.runner import EpisodeRunner

TINY = [
    "--env",
    "tabular:robust_vs_nominal",
    "--episode-limit",
    "6",
    "--steps",
    "240",
    "--seed",
    "3",
    "--no-progress",
    "--override",
    "learner.batch_size=4",
    "--override",
    "learner.buffer_size=40",
    "--override",
    "learner.update_every=4",
    "--override",
    "agent.hidden=8",
    "--override",
    "explore.eps_anneal_steps=120",
    "--override",
    "checkpoint_interval=60",
    "--override",
    "log_interval=30",
]


def tiny_config(out: Path, **extra: object) -> dict:
    data = {
        "env": {"name": "tabular:robust_vs_nominal", "episode_limit": 6},
        "steps": 240,
        "seed": 3,
        "out": str(out),
        "agent": {"hidden": 8},
        "learner": {"batch_size": 4, "buffer_size": 40, "update_every": 4},
        "explore": {"eps_anneal_steps": 120},
        "checkpoint_interval": 60,
        "log_interval": 30,
        "progress": False,
        "tensorboard": False,
        "target": {"kind": "exact", "set": "tv", "rho": 0.2},
    }
    data.update(extra)
    return data


def test_cli_train_then_evaluate_json(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "x"
    args = ["train", *TINY, "--algo", "qmix", "--target", "exact", "--set", "tv", "--rho", "0.2", "--out", str(out)]
    assert main(args) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["t_env"] >= 240 and summary["updates"] > 0
    assert {p.name for p in out.iterdir()} >= {"config.yaml", "checkpoint.pt", "progress.csv", "tb"}
    assert any((out / "tb").iterdir())
    saved = build_config(__import__("yaml").safe_load((out / "config.yaml").read_text()))
    assert (saved.mixer.name, saved.target.set, saved.target.rho, saved.steps) == ("qmix", "tv", 0.2, 240)
    assert main(["evaluate", str(out), "--episodes", "5", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert len(result["returns"]) == 5
    lo, hi = result["ci95"]
    assert lo <= result["mean_return"] <= hi
    assert len(result["policy"]) == 4 and all(len(a) == 2 for a in result["policy"])
    assert len(result["robust_value"]) == len(result["optimal_robust_value"]) == 4
    assert all(v <= s + 1e-6 for v, s in zip(result["robust_value"], result["optimal_robust_value"], strict=True))
    assert result["value_set"] == {"set": "tv", "rho": 0.2}
    assert isinstance(result["robust_optimal"], bool)


def test_nominal_run_reports_nominal_values_and_says_so(tmp_path: Path) -> None:
    cfg = build_config(tiny_config(tmp_path / "n", steps=60, target={"kind": "none"}))
    Trainer(cfg).train()
    result = evaluate_run(tmp_path / "n", episodes=2)
    assert result["value_set"] == {"set": "contamination", "rho": 0.0}
    assert "NOMINAL" in result["value_note"]
    assert result["robust_value"] == pytest.approx(result["nominal_value"])
    explicit = evaluate_run(tmp_path / "n", episodes=2, set_name="tv", rho=0.2)
    assert explicit["value_set"] == {"set": "tv", "rho": 0.2}


def test_cli_reports_user_errors_with_status_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["train", "--out", str(tmp_path / "y"), "--set", "tv", "--target", "exact", "--rho", "7"]) == 2
    assert "TargetConfig.rho=7.0 is invalid" in capsys.readouterr().err
    assert main(["train", "--out", str(tmp_path / "y"), "--env", "atari:pong"]) == 2
    assert "unknown environment 'atari'" in capsys.readouterr().err
    assert main(["evaluate", str(tmp_path / "nothing")]) == 2
    assert "not a run directory" in capsys.readouterr().err


class KilledError(Exception):
    """Stands in for the process being killed."""


def test_resume_after_a_kill_reproduces_the_uninterrupted_run(tmp_path: Path, monkeypatch) -> None:
    Trainer(build_config(tiny_config(tmp_path / "full"))).train()

    # the same run, killed three episodes after its second checkpoint
    saves, episodes_after = [0], [0]
    real_save, real_run = Trainer.save, EpisodeRunner.run

    def counting_save(self: Trainer) -> None:
        real_save(self)
        saves[0] += 1

    def dying_run(self: EpisodeRunner, *args, **kwargs):
        if saves[0] >= 2:
            episodes_after[0] += 1
            if episodes_after[0] > 3:
                raise KilledError
        return real_run(self, *args, **kwargs)

    monkeypatch.setattr(Trainer, "save", counting_save)
    monkeypatch.setattr(EpisodeRunner, "run", dying_run)
    with pytest.raises(KilledError):
        Trainer(build_config(tiny_config(tmp_path / "killed"))).train()
    monkeypatch.undo()
    ck = load_checkpoint(tmp_path / "killed" / "checkpoint.pt")
    assert 0 < ck["counters"]["t_env"] < 240

    assert main(["train", "--out", str(tmp_path / "killed"), "--resume", "--no-progress"]) == 0

    full = load_checkpoint(tmp_path / "full" / "checkpoint.pt")
    resumed = load_checkpoint(tmp_path / "killed" / "checkpoint.pt")
    assert full["counters"] == resumed["counters"]
    for part in ("controller", "mixer", "target_controller", "target_mixer", "robust"):
        for key, value in full["learner"][part].items():
            assert torch.equal(value, resumed["learner"][part][key]), f"{part}.{key} differs after resume"
    assert full["learner"]["n_updates"] == resumed["learner"]["n_updates"]
    # the log is continued, with the killed run's rows after the checkpoint dropped
    assert (tmp_path / "full" / "progress.csv").read_text() == (tmp_path / "killed" / "progress.csv").read_text()


def test_checkpoint_holds_everything_and_is_written_atomically(tmp_path: Path, monkeypatch) -> None:
    trainer = Trainer(build_config(tiny_config(tmp_path / "a", steps=60)))
    trainer.train()
    path = tmp_path / "a" / "checkpoint.pt"
    ck = load_checkpoint(path)
    learner = ck["learner"]
    assert {"controller", "mixer", "target_controller", "target_mixer", "optimizer", "robust"} <= set(learner)
    assert learner["robust_optimizer"] is not None  # exact TV learns its quantile network
    assert ck["buffer"]["size"] > 0 and set(ck["rng"]) >= {"torch", "actions", "sampling"}
    before = path.read_bytes()

    def failing_replace(src: str, dst: str) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", failing_replace)
    with pytest.raises(OSError, match="disk full"):
        trainer.save()
    monkeypatch.undo()
    assert path.read_bytes() == before  # the old checkpoint is intact
    assert [p.name for p in path.parent.iterdir() if p.name.endswith(".tmp")] == []


def test_corrupt_checkpoint_is_refused_clearly(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    Trainer(build_config(tiny_config(tmp_path / "c", steps=60))).train()
    path = tmp_path / "c" / "checkpoint.pt"
    path.write_bytes(path.read_bytes()[: len(path.read_bytes()) // 2])
    with pytest.raises(CheckpointError, match=r"checkpoint\.pt' is corrupt or unreadable"):
        evaluate_run(tmp_path / "c", episodes=1)
    path.write_bytes(b"not a checkpoint at all")
    assert main(["evaluate", str(tmp_path / "c")]) == 2
    assert "corrupt or unreadable" in capsys.readouterr().err
    torch.save({"format": "something-else/9"}, path)
    with pytest.raises(CheckpointError, match="has format 'something-else/9'"):
        evaluate_run(tmp_path / "c", episodes=1)


def test_mismatched_checkpoint_is_refused_naming_the_difference(tmp_path: Path) -> None:
    Trainer(build_config(tiny_config(tmp_path / "m", steps=60, mixer={"name": "qmix"}))).train()
    other = build_config(tiny_config(tmp_path / "m", steps=120, mixer={"name": "vdn"}))
    with pytest.raises(CheckpointError, match="algo: checkpoint has 'qmix', this run has 'vdn'"):
        Trainer(other).train(resume=True)
    wider = build_config(tiny_config(tmp_path / "m", steps=120, agent={"hidden": 16}))
    with pytest.raises(CheckpointError, match="agent: checkpoint has"):
        Trainer(wider).train(resume=True)
    # shapes that the metadata does not describe are still caught when the weights are loaded
    trainer = Trainer(build_config(tiny_config(tmp_path / "m", steps=120)))
    state = load_checkpoint(tmp_path / "m" / "checkpoint.pt")["learner"]
    state["mixer"]["hyper_b1.weight"] = torch.zeros(3, 3)
    with pytest.raises(CheckpointError, match="'mixer' does not fit this run's model"):
        trainer.learner.load_state_dict(state)


def test_existing_run_needs_resume(tmp_path: Path) -> None:
    cfg = build_config(tiny_config(tmp_path / "e", steps=30))
    Trainer(cfg).train()
    with pytest.raises(CheckpointError, match="already holds a checkpoint; pass --resume"):
        Trainer(cfg).train()


def test_resume_extends_a_finished_run(tmp_path: Path) -> None:
    Trainer(build_config(tiny_config(tmp_path / "r", steps=60))).train()
    assert main(["train", "--out", str(tmp_path / "r"), "--resume", "--steps", "120", "--no-progress"]) == 0
    ck = load_checkpoint(tmp_path / "r" / "checkpoint.pt")
    assert ck["counters"]["t_env"] >= 120 and ck["config"]["steps"] == 120
    assert run_module.CONFIG == "config.yaml"
