"""Fault tolerance (issue 13): supervised sweeps, checksummed checkpoints, clear refusals of bad input.

Each test here fails on the code before issue 13: a dead worker aborted the whole sweep, orphaned workers outlived a
SIGKILLed sweep, flipped checkpoint bytes loaded silently, and the bad inputs below ended in raw tracebacks or were
silently accepted.
"""

from __future__ import annotations

import errno
import json
import os
import signal
import struct
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch

from drigm.checkpoint import CheckpointError, CheckpointWarning, load_checkpoint
from drigm.cli import main
from drigm.config import build_config
from drigm.protocol import PROTOCOL_DIR
from drigm.run import Trainer
from drigm.sweep import sweep
from reference.atomic_io import remove_stale_temps

SMOKE = PROTOCOL_DIR / "tabular-smoke.yaml"
ROOT = Path(__file__).resolve().parents[1]
LINUX_PROC = pytest.mark.skipif(not Path("/proc/self/task").is_dir(), reason="needs Linux /proc")


def tiny(out: Path, **extra: object) -> dict:
    """A seconds-long robust QMIX run on robust_vs_nominal."""
    data = {
        "env": {"name": "tabular:robust_vs_nominal", "episode_limit": 6},
        "steps": 60,
        "seed": 3,
        "out": str(out),
        "agent": {"hidden": 8},
        "learner": {"batch_size": 4, "buffer_size": 40, "update_every": 4},
        "explore": {"eps_anneal_steps": 30},
        "checkpoint_interval": 30,
        "log_interval": 30,
        "progress": False,
        "tensorboard": False,
        "target": {"kind": "exact", "set": "tv", "rho": 0.2},
    }
    data.update(extra)
    return data


def flip_tensor_bytes(path: Path, n: int = 4) -> str:
    """Invert `n` bytes in the middle of the largest tensor record of a torch zip checkpoint; returns its name."""
    data = bytearray(path.read_bytes())
    with zipfile.ZipFile(path) as z:
        info = max((i for i in z.infolist() if "/data/" in i.filename), key=lambda i: i.file_size)
    name_len, extra_len = struct.unpack("<HH", data[info.header_offset + 26 : info.header_offset + 30])
    start = info.header_offset + 30 + name_len + extra_len + info.file_size // 2
    for k in range(n):
        data[start + k] ^= 0xFF
    path.write_bytes(bytes(data))
    return info.filename


def cli(*args: str, cwd: Path | None = None, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """Run ``python -m drigm.cli`` (this checkout's code) as a user would."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run(
        [sys.executable, "-m", "drigm.cli", *args], capture_output=True, text=True, timeout=timeout, env=env, cwd=cwd
    )


# ===== checkpoints carry a checksum ===================================================================
@pytest.fixture(scope="module")
def trained_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("ck") / "run"
    Trainer(build_config(tiny(out))).train()
    return out


def test_flipped_checkpoint_bytes_are_refused_in_evaluate_and_resume(
    trained_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import shutil

    run = tmp_path / "run"
    shutil.copytree(trained_run, run)
    path = run / "checkpoint.pt"
    load_checkpoint(path)  # intact: loads
    flip_tensor_bytes(path)
    with pytest.raises(CheckpointError, match=r"checkpoint\.pt' fails its SHA-256 check: content differs in learner\."):
        load_checkpoint(path)
    assert main(["evaluate", str(run)]) == 2
    err = capsys.readouterr().err
    assert "checkpoint.pt' fails its SHA-256 check" in err and "learner." in err
    assert main(["train", "--out", str(run), "--resume", "--steps", "90", "--no-progress"]) == 2
    assert "fails its SHA-256 check" in capsys.readouterr().err


def test_checkpoint_without_its_checksum_section_is_refused_and_legacy_ones_warn(
    trained_run: Path, tmp_path: Path
) -> None:
    ck = torch.load(trained_run / "checkpoint.pt", weights_only=True)
    assert ck["format"] == "drigm-checkpoint/2" and ck["checksum"]["algorithm"] == "sha256"
    stripped = {k: v for k, v in ck.items() if k != "checksum"}
    torch.save(stripped, tmp_path / "stripped.pt")
    with pytest.raises(CheckpointError, match="lacks a valid 'checksum' section"):
        load_checkpoint(tmp_path / "stripped.pt")
    # a value changed and saved again without recomputing the digest: named by its entry
    ck["counters"]["t_env"] += 1
    torch.save(ck, tmp_path / "edited.pt")
    with pytest.raises(CheckpointError, match=r"content differs in counters\.t_env"):
        load_checkpoint(tmp_path / "edited.pt")
    # checkpoints written before checksums (format /1): loaded, with a warning that nothing was verified
    torch.save({**stripped, "format": "drigm-checkpoint/1"}, tmp_path / "legacy.pt")
    with pytest.warns(CheckpointWarning, match="without an integrity check"):
        assert load_checkpoint(tmp_path / "legacy.pt")["counters"]["t_env"] == ck["counters"]["t_env"]


def test_sweep_refuses_a_corrupted_checkpoint_by_name(tmp_path: Path) -> None:
    kw = {"algos": ["vdn"], "targets": ["none"], "seeds": 1, "workers": 1, "scale": "smoke", "progress": False}
    assert not sweep(SMOKE, out_root=tmp_path, **kw).failed  # type: ignore[arg-type]
    (result,) = (tmp_path / "tabular-smoke" / "smoke").glob("*/seed0.json")
    ckpt = tmp_path / json.loads(result.read_text())["train_dir"] / "checkpoint.pt"  # relative to --out-root
    result.unlink()  # the job is redone: its finished training is reloaded for evaluation
    flip_tensor_bytes(ckpt)
    s = sweep(SMOKE, out_root=tmp_path, **kw)  # type: ignore[arg-type]
    ((method, seed, msg),) = s.failed
    assert (method, seed) == ("vdn-none", 0)
    assert f"{str(ckpt)!r} fails its SHA-256 check" in msg


# ===== the sweep supervises its workers ===============================================================
def _sweep_workers(pid: int) -> list[int]:
    path = Path(f"/proc/{pid}/task/{pid}/children")
    kids = [int(c) for c in path.read_text().split()] if path.is_file() else []
    out = []
    for k in kids:
        try:
            if b"spawn_main" in Path(f"/proc/{k}/cmdline").read_bytes():
                out.append(k)
        except OSError:
            continue
    return out


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return False
    return state not in ("Z", "X")


def _holder_of(lock: Path, pids: list[int]) -> int | None:
    """The process among `pids` that has `lock` open (a training run holds its run directory's .lock)."""
    for pid in pids:
        try:
            fds = list(Path(f"/proc/{pid}/fd").iterdir())
        except OSError:
            continue
        for fd in fds:
            try:
                if os.readlink(fd) == str(lock):
                    return pid
            except OSError:
                continue
    return None


def _start_sweep(tmp_path: Path, steps: int, seeds: int, *extra: str) -> subprocess.Popen[str]:
    proto = tmp_path / "kill.yaml"
    proto.write_text(f"base: {SMOKE}\nname: kill\nscales:\n  smoke:\n    run:\n      steps: {steps}\n")
    cmd = [sys.executable, "-m", "drigm", "sweep", str(proto), "--scale", "smoke", "--algos", "qmix", "--targets",
           "none", "--seeds", str(seeds), "--workers", "2", "--out-root", str(tmp_path / "runs"), "--no-progress",
           *extra]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)


@LINUX_PROC
def test_a_sigkilled_worker_fails_only_its_job_which_is_retried_from_its_checkpoint(tmp_path: Path) -> None:
    proc = _start_sweep(tmp_path, 900, 2)
    try:
        deadline = time.monotonic() + 120
        victim = None
        while victim is None:
            assert proc.poll() is None, proc.communicate()
            assert time.monotonic() < deadline, "no run reached its first checkpoint"
            for ck in (tmp_path / "runs" / "train").glob("*/*/checkpoint.pt"):
                victim = _holder_of(ck.parent / ".lock", _sweep_workers(proc.pid))
                if victim is not None:
                    killed_run = ck.parent
                    break
            time.sleep(0.1)
        os.kill(victim, signal.SIGKILL)
        out, err = proc.communicate(timeout=180)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, out + err
    assert "RETRY qmix-none seed" in out and "was killed by SIGKILL" in out  # the progress bar's stream
    assert "2 run, 0 failed, 1 finished after a worker died" in out and "RETRIED qmix-none seed" in out
    results = sorted((tmp_path / "runs" / "kill" / "smoke" / "qmix-none").glob("seed*.json"))
    assert [p.name for p in results] == ["seed0.json", "seed1.json"]
    done = json.loads((killed_run / "train_done.json").read_text())
    assert done["resumed"] is True and done["t_env"] >= 900  # it continued from its checkpoint


@LINUX_PROC
def test_a_job_whose_workers_keep_dying_fails_alone_after_the_retries(tmp_path: Path) -> None:
    proc = _start_sweep(tmp_path, 900, 2, "--retries", "0")
    try:
        deadline = time.monotonic() + 120
        while not (workers := _sweep_workers(proc.pid)) or not list((tmp_path / "runs" / "train").glob("*/*/.lock")):
            assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
            time.sleep(0.1)
        lock = next((tmp_path / "runs" / "train").glob("*/*/.lock"))
        while (victim := _holder_of(lock, workers)) is None:
            assert time.monotonic() < deadline
            time.sleep(0.05)
            workers = _sweep_workers(proc.pid)
        os.kill(victim, signal.SIGKILL)
        out, err = proc.communicate(timeout=180)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 1, out + err
    assert "1 run, 1 failed" in out
    assert "FAILED qmix-none seed" in err and "WorkerDied" in err and "killed by SIGKILL" in err  # the summary
    (errfile,) = (tmp_path / "runs" / "kill" / "smoke" / "qmix-none").glob("seed*.error.txt")
    assert "killed by SIGKILL" in errfile.read_text()
    assert len(list((tmp_path / "runs" / "kill" / "smoke" / "qmix-none").glob("seed?.json"))) == 1


@LINUX_PROC
def test_workers_die_with_a_sigkilled_sweep(tmp_path: Path) -> None:
    proc = _start_sweep(tmp_path, 100_000_000, 2)
    try:
        deadline = time.monotonic() + 120
        while len(list((tmp_path / "runs" / "train").glob("*/*/progress.csv"))) < 2:
            assert proc.poll() is None, proc.communicate()
            assert time.monotonic() < deadline, "the workers never started training"
            time.sleep(0.2)
        workers = _sweep_workers(proc.pid)
        assert len(workers) == 2
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
        deadline = time.monotonic() + 5
        while any(_alive(w) for w in workers) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not any(_alive(w) for w in workers), "sweep workers outlived the SIGKILLed sweep"
    finally:
        if proc.poll() is None:
            proc.kill()


# ===== stale temp files ===============================================================================
def test_stale_temp_files_of_a_killed_write_are_removed_at_the_next_start(tmp_path: Path) -> None:
    run = tmp_path / "run"
    run.mkdir()
    stale = [run / ".checkpoint.pt.0123456789ab.tmp", run / ".config.yaml.abcdef012345.tmp"]
    for p in stale:
        p.write_bytes(b"half a write")
    keep = run / ".notes.tmp"  # not an atomic-write temp name: left alone
    keep.write_text("mine")
    Trainer(build_config(tiny(run, steps=30))).train()
    assert not any(p.exists() for p in stale) and keep.exists()
    other = tmp_path / "results"
    other.mkdir()
    young = other / ".seed0.json.0123456789ab.tmp"
    young.write_text("{")
    assert remove_stale_temps(other, min_age_s=300) == []  # may be a live writer's
    os.utime(young, (time.time() - 600, time.time() - 600))
    assert remove_stale_temps(other, recursive=True, min_age_s=300) == [young]


# ===== bad input: a message naming the file, key or value, never a traceback ==========================
TRAIN = ["train", "--episode-limit", "6", "--steps", "30", "--no-progress", "--override", "agent.hidden=8",
         "--override", "learner.batch_size=4", "--override", "learner.buffer_size=8", "--override",
         "tensorboard=false"]  # fmt: skip


def ref_main(argv: list[str]) -> int:
    from reference.__main__ import main as reference_main

    return reference_main(argv)


def game_file(tmp_path: Path) -> Path:
    from reference.game import robust_vs_nominal_game, save_game

    return save_game(robust_vs_nominal_game(), tmp_path / "g.npz")


def corrupt_zip_member(path: Path, member: str) -> None:
    """Flip one byte of a stored zip member's data (its CRC no longer matches)."""
    data = bytearray(path.read_bytes())
    with zipfile.ZipFile(path) as z:
        info = z.getinfo(member)
    name_len, extra_len = struct.unpack("<HH", data[info.header_offset + 26 : info.header_offset + 30])
    data[info.header_offset + 30 + name_len + extra_len + info.file_size - 3] ^= 0xFF
    path.write_bytes(bytes(data))


def test_game_with_a_bad_zip_checksum_is_refused_naming_file_and_key(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = game_file(tmp_path)
    corrupt_zip_member(path, "P.npy")
    assert ref_main(["solve", str(path), "--set", "tv", "--rho", "0.1"]) == 2
    err = capsys.readouterr().err
    assert "key 'P' of game file" in err and "g.npz" in err and "corrupt" in err
    assert main([*TRAIN, "--env", f"tabular:{path}", "--out", str(tmp_path / "r")]) == 2
    assert "key 'P' of game file" in capsys.readouterr().err


def test_npy_given_as_a_game_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "P.npy"
    np.save(path, np.ones((2, 2, 2)))
    assert ref_main(["solve", str(path), "--set", "tv", "--rho", "0.1"]) == 2
    err = capsys.readouterr().err
    assert "P.npy' holds a single ndarray (a .npy file?), not a .npz archive with the keys P, R, gamma" in err
    assert main([*TRAIN, "--env", f"tabular:{path}", "--out", str(tmp_path / "r")]) == 2
    assert "not a .npz archive" in capsys.readouterr().err


def test_pickled_array_in_a_game_is_refused_naming_file_and_key(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from reference.game import robust_vs_nominal_game

    g = robust_vs_nominal_game()
    path = tmp_path / "pickled.npz"
    np.savez(path, P=g.P, R=np.array(list(g.R), dtype=object), gamma=g.gamma)
    assert main([*TRAIN, "--env", f"tabular:{path}", "--out", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err
    assert "key 'R' of game file" in err and "pickled.npz" in err and "pickled object array" in err
    assert ref_main(["solve", str(path), "--set", "tv", "--rho", "0.1"]) == 2
    assert "key 'R' of game file" in capsys.readouterr().err


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message on a machine without CUDA")
def test_device_cuda_without_a_gpu_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main([*TRAIN, "--env", "tabular:climbing", "--device", "cuda", "--out", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err
    assert "learner.device='cuda' but CUDA is not available" in err and "--device cpu" in err


def test_unknown_env_kwargs_key_is_refused_with_the_allowed_ones(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = [*TRAIN, "--env", "tabular:climbing", "--override", "env.kwargs.horizon=3", "--out", str(tmp_path / "r")]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "environment 'tabular' takes no keyword 'horizon' (env.kwargs); allowed: episode_limit, game_kwargs" in err


def test_base_that_is_not_a_path_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cfg = tmp_path / "c.yaml"
    cfg.write_text("base: 5\nsteps: 30\n")
    assert main([*TRAIN, "--config", str(cfg), "--out", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err
    assert f"'base' in {str(cfg)!r} must be a path, 'preset:NAME' or a list of them; got 5 (int)" in err


def test_output_on_a_directory_or_unwritable_path_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "d.npz").mkdir()
    assert ref_main(["classic", "climbing", "-o", str(tmp_path / "d.npz")]) == 2
    assert "d.npz' is a directory; give a file path such as" in capsys.readouterr().err
    blocker = tmp_path / "file"
    blocker.write_text("x")
    assert ref_main(["random", "--states", "2", "--actions", "2", "-o", str(blocker / "sub" / "g.npz")]) == 2
    err = capsys.readouterr().err
    assert "error:" in err and str(blocker) in err
    assert main([*TRAIN, "--env", "tabular:climbing", "--out", str(blocker)]) == 2
    assert f"--out {str(blocker)!r} exists and is not a directory" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("code", "hint"), [(errno.ENOSPC, "the disk is full"), (errno.EROFS, "the file system is read-only")]
)
def test_full_or_read_only_disk_gives_a_message_naming_the_file(
    code: int, hint: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import reference.atomic_io as atomic_io

    def failing_fsync(fd: int) -> None:
        raise OSError(code, os.strerror(code))

    monkeypatch.setattr(atomic_io.os, "fsync", failing_fsync)
    out = tmp_path / "r"
    assert main([*TRAIN, "--env", "tabular:climbing", "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("drigm train: error: ") and hint in err and str(out / "config.yaml") in err
    assert ref_main(["classic", "climbing", "-o", str(tmp_path / "g.npz")]) == 2
    assert hint in capsys.readouterr().err and not list(tmp_path.glob(".*.tmp"))


# ===== no silent acceptance ===========================================================================
def test_robust_flags_without_a_robust_target_are_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main([*TRAIN, "--env", "tabular:climbing", "--set", "tv", "--rho", "0.2", "--out", str(tmp_path / "a")]) == 2
    err = capsys.readouterr().err
    assert "--set tv, --rho 0.2 configure the robust target, but target.kind is 'none'" in err and "NON-robust" in err
    argv = [*TRAIN, "--env", "tabular:climbing", "--override", "target.rho=0.1", "--out", str(tmp_path / "b")]
    assert main(argv) == 2 and "--override target.rho=0.1" in capsys.readouterr().err
    assert not (tmp_path / "a").exists()
    ok = [*TRAIN, "--env", "tabular:climbing", "--target", "exact", "--set", "tv", "--rho", "0.2"]
    assert main([*ok, "--out", str(tmp_path / "c")]) == 0


@pytest.mark.parametrize("tol", ["inf", "nan", "0", "-0.001"])
def test_reference_tol_must_be_finite_and_positive(
    tol: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = game_file(tmp_path)
    with pytest.raises(SystemExit) as info:
        ref_main(["solve", str(path), "--set", "tv", "--rho", "0.2", "--tol", tol])
    assert info.value.code == 2
    assert "--tol must be" in capsys.readouterr().err


def test_config_numbers_must_have_the_right_type() -> None:
    from drigm.config import ConfigError

    with pytest.raises(ConfigError, match=r"learner\.batch_size='8' is a string, not an integer: write the number"):
        build_config({"learner": {"batch_size": "8"}})
    with pytest.raises(ConfigError, match=r"learner\.lr='0\.001' is a string, not a number"):
        build_config({"learner": {"lr": "0.001"}})
    with pytest.raises(ConfigError, match=r"steps='many' must be an integer"):
        build_config({"steps": "many"})
    # YAML 1.1 reads 5e-4 (no decimal point) as a string: that spelling of a number is accepted
    import yaml

    data = yaml.safe_load("learner: {lr: 5e-4}\nsteps: 2e4\n")
    assert data["learner"]["lr"] == "5e-4"
    cfg = build_config(data)
    assert cfg.learner.lr == 5e-4 and cfg.steps == 20000 and isinstance(cfg.steps, int)
    with pytest.raises(ConfigError, match=r"learner\.batch_size='2\.5e0' must be an integer"):
        build_config({"learner": {"batch_size": "2.5e0"}})


# ===== smaller ========================================================================================
@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs FIFOs")
def test_directory_symlink_loop_and_fifo_given_as_a_game_are_named_as_such(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "dir.npz").mkdir()
    os.symlink(tmp_path / "loop.npz", tmp_path / "loop.npz")
    os.mkfifo(tmp_path / "fifo.npz")
    os.symlink(tmp_path / "gone.npz", tmp_path / "dangling.npz")
    expected = {
        "dir.npz": "is a directory; expected a regular file",
        "loop.npz": "is a symbolic link loop, not a file",
        "fifo.npz": "is a FIFO (named pipe); expected a regular file",
        "dangling.npz": "which does not exist",
    }
    for name, text in expected.items():
        assert ref_main(["solve", str(tmp_path / name), "--set", "tv", "--rho", "0.1"]) == 2
        err = capsys.readouterr().err
        assert f"game file {str(tmp_path / name)!r} " in err and text in err
        assert main([*TRAIN, "--env", f"tabular:{tmp_path / name}", "--out", str(tmp_path / "r")]) == 2
        assert text in capsys.readouterr().err


def test_resume_before_the_first_checkpoint_says_run_without_resume(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main([*TRAIN, "--env", "tabular:climbing", "--out", str(tmp_path / "new"), "--resume"]) == 2
    assert "run without --resume to start it" in capsys.readouterr().err
    run = tmp_path / "started"
    run.mkdir()
    (run / "config.yaml").write_text(f"out: {run}\nenv: {{name: 'tabular:climbing'}}\n")  # killed before checkpoint 1
    assert main(["train", "--out", str(run), "--resume", "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "has no checkpoint yet" in err and "run without --resume to start it afresh" in err


def test_report_labels_a_zero_difference_as_a_tie() -> None:
    from types import SimpleNamespace

    from drigm.report import _exact_vs_paper

    def res(x: float) -> dict:
        return {"tests": {"t": {"returns": [x, x]}}}

    col = SimpleNamespace(
        methods=lambda: ["qmix-exact-tv", "qmix-paper-tv"],
        results={"qmix-exact-tv": {0: res(1.0), 1: res(2.0)}, "qmix-paper-tv": {0: res(1.0), 1: res(2.0)}},
    )
    (row,) = [r for r in "\n".join(_exact_vs_paper(col, "returns")).splitlines() if r.startswith("| qmix-tv")]  # type: ignore[arg-type]
    assert "0.000" in row and row.rstrip(" |").endswith("tie")
    col.results["qmix-paper-tv"] = {0: res(0.5), 1: res(1.5)}
    (row,) = [r for r in "\n".join(_exact_vs_paper(col, "returns")).splitlines() if r.startswith("| qmix-tv")]  # type: ignore[arg-type]
    assert "exact higher" in row


def _add_manifest_jobs(path: str, seeds: list[int]) -> None:
    from drigm.protocol import Job, load_protocol
    from drigm.results_store import update_manifest as _update_manifest

    proto = load_protocol("tabular-smoke", "smoke")
    for s in seeds:
        _update_manifest(Path(path), proto, [Job("qmix", "paper", "tv", 0.2, s)])


def test_concurrent_sweeps_of_one_protocol_lose_no_manifest_entry(tmp_path: Path) -> None:
    """Two sweeps of one protocol at once (one per core) both read-merge-write its sweep.json: unlocked, one
    overwrote the other's jobs and the report then silently left finished runs out."""
    import multiprocessing as mp

    path = tmp_path / "tabular-smoke" / "smoke" / "sweep.json"
    n_proc, per = 6, 25
    ctx = mp.get_context("spawn")  # not fork: JAX, loaded by other tests, is multithreaded
    procs = [
        ctx.Process(target=_add_manifest_jobs, args=(str(path), list(range(i * per, (i + 1) * per))))
        for i in range(n_proc)
    ]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
        assert p.exitcode == 0
    seeds = sorted(j["seed"] for j in json.loads(path.read_text())["jobs"])
    assert seeds == list(range(n_proc * per))
