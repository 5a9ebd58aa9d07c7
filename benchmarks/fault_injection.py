"""Fault injection: a corpus of bad inputs and kills run through the real command lines, each outcome classified.

Every case builds its inputs in a fresh temporary directory and runs one of the CLIs as a subprocess, as an unlucky
user would: ``python -m reference``, ``python -m drigm.cli train|evaluate|sweep|report``, ``python -m
proofs_check``. The corpus: bad game files (each through ``reference solve`` and ``drigm train --env tabular:``),
bad solver flags, bad configs and training flags, bad or corrupted run directories and checkpoints, bad sweep and
report arguments, a full and a read-only disk (simulated by a ``sitecustomize`` that makes ``os.fsync`` fail with
ENOSPC or EROFS). Every case is bad input, so the right outcome is a refusal. Each outcome is one of:

- ``clear refusal``: a non-zero exit, no traceback, and the output names the case's tokens (the file, key or value);
- ``vague message``: a non-zero exit without a traceback, but the output does not name them;
- ``traceback``: a Python traceback reached the user (whatever the exit status);
- ``silent acceptance``: exit status 0 for bad input.

Kill scenarios are reported separately, as handled or not: SIGKILL of one sweep worker (every job must finish,
the dead one retried), SIGKILL of the sweep itself (no worker may outlive it by more than 5 s; survivors are then
killed by this script), ``kill -9`` of ``drigm train`` then ``--resume``, and a temp file left by a killed write.

Run: ``python benchmarks/fault_injection.py [--root REPO] [--only SUBSTRING] [--no-kills] [--verbose]
[--json OUT.json]``. ``--root`` is the checkout whose code is exercised (default: this one), so the same corpus
runs on an older checkout for a before/after comparison. Prints the counts as a markdown table.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import struct
import subprocess
import sys
import tempfile
import time
import zipfile
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

CLASSES = ("clear refusal", "vague message", "traceback", "silent acceptance")
TIMEOUT_S = 120
HERE = Path(__file__).resolve().parents[1]


@dataclass
class Case:
    """One bad input: `setup(d)` builds files in d and returns the argv after the interpreter."""

    name: str
    group: str
    setup: Callable[[Path], list[str]]
    tokens: tuple[str, ...]
    env: dict[str, str] = field(default_factory=dict)


@dataclass
class Ctx:
    """Where the code under test lives and the interpreter that runs it."""

    root: Path
    python: str
    cache: Path

    def run(self, argv: list[str], cwd: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
        full_env = {**os.environ, "PYTHONPATH": str(self.root), "PYTHONWARNINGS": "ignore", **(env or {})}
        if env and "PYTHONPATH" in env:
            full_env["PYTHONPATH"] = f"{env['PYTHONPATH']}{os.pathsep}{self.root}"
        return subprocess.run(
            [self.python, *argv], cwd=cwd, env=full_env, capture_output=True, text=True, timeout=TIMEOUT_S
        )


def classify(proc: subprocess.CompletedProcess[str] | None, tokens: tuple[str, ...]) -> str:
    """The outcome class of one bad-input run (None: it hung past the timeout, counted as a vague outcome)."""
    if proc is None:
        return "vague message"
    text = proc.stdout + proc.stderr
    if "Traceback (most recent call last)" in text:
        return "traceback"
    if proc.returncode == 0:
        return "silent acceptance"
    low = text.lower()
    return "clear refusal" if all(t.lower() in low for t in tokens) else "vague message"


# ===== building blocks ==================================================================================
REF = ["-m", "reference"]
DRIGM = ["-m", "drigm.cli"]
TRAIN = [*DRIGM, "train", "--episode-limit", "6", "--steps", "30", "--no-progress", "--override", "agent.hidden=8",
         "--override", "learner.batch_size=4", "--override", "learner.buffer_size=8", "--override",
         "tensorboard=false"]  # fmt: skip
ROBUST = ["--target", "exact", "--set", "tv", "--rho", "0.2"]


def train_for(steps: int) -> list[str]:
    """TRAIN with another step budget."""
    i = TRAIN.index("--steps")
    return [*TRAIN[: i + 1], str(steps), *TRAIN[i + 2 :]]


def _rvn() -> dict[str, np.ndarray]:
    """The robust_vs_nominal game's arrays (built here so a case never depends on the code under test)."""
    S = 4
    P = np.zeros((S, 2, 2, S))
    R = np.zeros((S, 2, 2))
    P[0, :, :, 0] = 1.0
    R[0] = -1.0
    R[0, 0, 0] = 0.5
    P[0, 1, 1] = [0.0, 0.0, 0.0, 1.0]
    R[0, 1, 1] = 0.0
    P[3, :, :] = [0.0, 0.8, 0.2, 0.0]
    P[1, :, :, 0] = 1.0
    R[1] = 4.0
    P[2, :, :, 0] = 1.0
    R[2] = -4.0
    return {"P": P, "R": R, "gamma": np.asarray(0.8)}


def _game(d: Path, name: str = "g.npz", **change: object) -> Path:
    arrays: dict[str, object] = dict(_rvn())
    for k, v in change.items():
        if v is None:
            arrays.pop(k)
        else:
            arrays[k] = v
    path = d / name
    np.savez(path, **arrays)  # type: ignore[arg-type]
    return path


def _flip_member(path: Path, member_part: str, largest: bool = False) -> None:
    """Invert 4 bytes in the middle of a stored zip member's data (first whose name contains member_part)."""
    data = bytearray(path.read_bytes())
    with zipfile.ZipFile(path) as z:
        infos = [i for i in z.infolist() if member_part in i.filename]
        info = max(infos, key=lambda i: i.file_size) if largest else infos[0]
    name_len, extra_len = struct.unpack("<HH", data[info.header_offset + 26 : info.header_offset + 30])
    start = info.header_offset + 30 + name_len + extra_len + info.file_size // 2
    for k in range(4):
        data[start + k] ^= 0xFF
    path.write_bytes(bytes(data))


# ----- bad game files: each returns the path given as the game ----------------------------------------
def g_missing(d: Path) -> Path:
    return d / "missing.npz"


def g_directory(d: Path) -> Path:
    (d / "dir.npz").mkdir()
    return d / "dir.npz"


def g_symlink_loop(d: Path) -> Path:
    os.symlink(d / "cyc.npz", d / "cyc.npz")
    return d / "cyc.npz"


def g_dangling_link(d: Path) -> Path:
    os.symlink(d / "gone.npz", d / "dangling.npz")
    return d / "dangling.npz"


def g_fifo(d: Path) -> Path:
    os.mkfifo(d / "special.npz")
    return d / "special.npz"


def g_empty(d: Path) -> Path:
    (d / "empty.npz").write_bytes(b"")
    return d / "empty.npz"


def g_random_bytes(d: Path) -> Path:
    (d / "junk.npz").write_bytes(np.random.default_rng(0).bytes(512))
    return d / "junk.npz"


def g_text(d: Path) -> Path:
    (d / "text.npz").write_text("P: [[1]]\n")
    return d / "text.npz"


def g_npy(d: Path) -> Path:
    np.save(d / "P.npy", _rvn()["P"])
    return d / "P.npy"


def g_bad_crc(d: Path) -> Path:
    path = _game(d, "crc.npz")
    _flip_member(path, "P.npy")
    return path


def g_truncated(d: Path) -> Path:
    path = _game(d, "trunc.npz")
    path.write_bytes(path.read_bytes()[:300])
    return path


def g_pickled(d: Path) -> Path:
    return _game(d, "pickled.npz", R=np.array(list(_rvn()["R"]), dtype=object))


def g_missing_key(d: Path) -> Path:
    return _game(d, "nokey.npz", P=None)


def g_nan(d: Path) -> Path:
    P = _rvn()["P"].copy()
    P[0, 0, 0, 0] = np.nan
    return _game(d, "nan.npz", P=P)


def g_not_stochastic(d: Path) -> Path:
    P = _rvn()["P"].copy()
    P[1, 0, 0, 0] = 0.9
    return _game(d, "rows.npz", P=P)


def g_negative(d: Path) -> Path:
    P = _rvn()["P"].copy()
    P[3, 0, 0] = [0.0, 1.2, -0.2, 0.0]
    return _game(d, "neg.npz", P=P)


def g_r_shape(d: Path) -> Path:
    return _game(d, "rshape.npz", R=np.zeros((4, 2)))


def g_gamma_one(d: Path) -> Path:
    return _game(d, "gamma1.npz", gamma=np.asarray(1.0))


def g_gamma_vector(d: Path) -> Path:
    return _game(d, "gammavec.npz", gamma=np.asarray([0.9, 0.9]))


def g_obs_range(d: Path) -> Path:
    return _game(d, "obs.npz", obs=np.full((2, 4), 7, dtype=np.int64))


def g_initial(d: Path) -> Path:
    return _game(d, "init.npz", initial=np.asarray([0.5, 0.5, 0.5, 0.0]))


def g_string_dtype(d: Path) -> Path:
    return _game(d, "strp.npz", P=np.asarray(["a", "b"]))


def g_scalar_p(d: Path) -> Path:
    return _game(d, "scalarp.npz", P=np.asarray(1.0))


GAMES: list[tuple[str, Callable[[Path], Path], tuple[str, ...]]] = [
    ("missing file", g_missing, ("missing.npz",)),
    ("a directory", g_directory, ("dir.npz", "directory")),
    ("a symlink loop", g_symlink_loop, ("cyc.npz", "loop")),
    ("a dangling symlink", g_dangling_link, ("dangling.npz",)),
    ("a FIFO", g_fifo, ("special.npz", "fifo")),
    ("an empty file", g_empty, ("empty.npz",)),
    ("random bytes", g_random_bytes, ("junk.npz",)),
    ("a text file", g_text, ("text.npz",)),
    ("a .npy array", g_npy, ("P.npy", "npz")),
    ("a bad zip CRC in P", g_bad_crc, ("crc.npz", "'P'")),
    ("a truncated archive", g_truncated, ("trunc.npz",)),
    ("a pickled (object) array R", g_pickled, ("pickled.npz", "'R'")),
    ("no key P", g_missing_key, ("nokey.npz", "'P'")),
    ("NaN in P", g_nan, ("P",)),
    ("P rows not summing to 1", g_not_stochastic, ("P", "sums")),
    ("a negative entry in P", g_negative, ("P", "negative")),
    ("R of the wrong shape", g_r_shape, ("R", "shape")),
    ("gamma = 1", g_gamma_one, ("gamma",)),
    ("gamma a vector", g_gamma_vector, ("gamma",)),
    ("obs out of range", g_obs_range, ("obs",)),
    ("initial not a distribution", g_initial, ("initial",)),
    ("P of strings", g_string_dtype, ("P",)),
    ("P a scalar", g_scalar_p, ("P",)),
]


def game_cases() -> list[Case]:
    cases = []
    for label, make, tokens in GAMES:
        cases.append(
            Case(
                f"reference solve: {label}",
                "game file",
                lambda d, make=make: [*REF, "solve", str(make(d)), "--set", "tv", "--rho", "0.2"],
                tokens,
            )
        )
        cases.append(
            Case(
                f"drigm train --env tabular: {label}",
                "game file",
                lambda d, make=make: [*TRAIN, "--env", f"tabular:{make(d)}", "--out", str(d / "run")],
                tokens,
            )
        )
    return cases


# ----- reference flags ----------------------------------------------------------------------------------
def _solve(*flags: str) -> Callable[[Path], list[str]]:
    return lambda d: [*REF, "solve", str(_game(d)), *flags]


def _policy(text: str) -> Callable[[Path], list[str]]:
    def setup(d: Path) -> list[str]:
        (d / "pol.json").write_text(text)
        return [*REF, "evaluate", str(_game(d)), "--set", "tv", "--rho", "0.2", "--policy", str(d / "pol.json")]

    return setup


def _blocked_output(d: Path) -> list[str]:
    (d / "file").write_text("x")
    return [*REF, "random", "--states", "2", "--actions", "2", "-o", str(d / "file" / "sub" / "g.npz")]


def _dir_output(d: Path) -> list[str]:
    (d / "out.npz").mkdir()
    return [*REF, "classic", "climbing", "-o", str(d / "out.npz")]


REFERENCE_CASES = [
    Case("reference solve --rho 2 (tv)", "solver flag", _solve("--set", "tv", "--rho", "2"), ("rho",)),
    Case("reference solve --rho nan", "solver flag", _solve("--set", "tv", "--rho", "nan"), ("rho",)),
    Case("reference solve --rho -0.1", "solver flag", _solve("--set", "tv", "--rho", "-0.1"), ("rho",)),
    Case("reference solve --set bogus", "solver flag", _solve("--set", "bogus", "--rho", "0.1"), ("--set",)),
    Case("reference solve --tol inf", "solver flag", _solve("--set", "tv", "--rho", "0.2", "--tol", "inf"), ("tol",)),
    Case("reference solve --tol 0", "solver flag", _solve("--set", "tv", "--rho", "0.2", "--tol", "0"), ("tol",)),
    Case("reference solve --tol -1", "solver flag", _solve("--set", "tv", "--rho", "0.2", "--tol", "-1"), ("tol",)),
    Case("reference solve --tol nan", "solver flag", _solve("--set", "tv", "--rho", "0.2", "--tol", "nan"), ("tol",)),
    Case("reference solve kl-penalty --rho 0", "solver flag", _solve("--set", "kl-penalty", "--rho", "0"), ("rho",)),
    Case("reference random --states 0", "solver flag",
         lambda d: [*REF, "random", "--states", "0", "--actions", "2", "-o", str(d / "g.npz")], ("states",)),
    Case("reference random --actions 0", "solver flag",
         lambda d: [*REF, "random", "--states", "2", "--actions", "0", "-o", str(d / "g.npz")], ("actions",)),
    Case("reference random --actions a,b", "solver flag",
         lambda d: [*REF, "random", "--states", "2", "--actions", "a,b", "-o", str(d / "g.npz")], ("actions",)),
    Case("reference random --sparsity 1.5", "solver flag",
         lambda d: [*REF, "random", "--states", "2", "--actions", "2", "--sparsity", "1.5", "-o", str(d / "g.npz")],
         ("sparsity",)),
    Case("reference random --gamma 1", "solver flag",
         lambda d: [*REF, "random", "--states", "2", "--actions", "2", "--gamma", "1", "-o", str(d / "g.npz")],
         ("gamma",)),
    Case("reference random --gamma nan", "solver flag",
         lambda d: [*REF, "random", "--states", "2", "--actions", "2", "--gamma", "nan", "-o", str(d / "g.npz")],
         ("gamma",)),
    Case("reference classic -o a directory", "output path", _dir_output, ("out.npz", "directory")),
    Case("reference random -o under a file", "output path", _blocked_output, ("file",)),
    Case("reference random -o in /proc", "output path",
         lambda d: [*REF, "random", "--states", "2", "--actions", "2", "-o", "/proc/drigm-fault.npz"], ("/proc",)),
    Case("reference evaluate: missing policy", "solver flag",
         lambda d: [*REF, "evaluate", str(_game(d)), "--set", "tv", "--rho", "0.2", "--policy", str(d / "no.json")],
         ("no.json",)),
    Case("reference evaluate: policy not JSON", "solver flag", _policy("{"), ("pol.json",)),
    Case("reference evaluate: policy wrong shape", "solver flag", _policy('{"policy": [[0, 0]]}'), ("policy",)),
    Case("reference evaluate: action out of range", "solver flag",
         _policy('{"policy": [[5, 0], [0, 0], [0, 0], [0, 0]]}'), ("5",)),
    Case("reference evaluate: policy not a mapping", "solver flag", _policy("[1, 2]"), ("policy",)),
]  # fmt: skip


# ----- drigm train: configs and flags ------------------------------------------------------------------
def _yaml(text: str, *flags: str) -> Callable[[Path], list[str]]:
    def setup(d: Path) -> list[str]:
        (d / "c.yaml").write_text(text)
        return [*TRAIN, "--config", str(d / "c.yaml"), *flags, "--out", str(d / "run")]

    return setup


def _train(*flags: str) -> Callable[[Path], list[str]]:
    return lambda d: [*TRAIN, "--env", "tabular:climbing", *flags, "--out", str(d / "run")]


def _out_is_file(d: Path) -> list[str]:
    (d / "afile").write_text("x")
    return [*TRAIN, "--env", "tabular:climbing", "--out", str(d / "afile")]


def _out_under_file(d: Path) -> list[str]:
    (d / "afile").write_text("x")
    return [*TRAIN, "--env", "tabular:climbing", "--out", str(d / "afile" / "run")]


def _resume_config_only(d: Path) -> list[str]:
    (d / "run").mkdir()
    (d / "run" / "config.yaml").write_text(f"out: {d / 'run'}\nenv: {{name: 'tabular:climbing'}}\n")
    return [*DRIGM, "train", "--out", str(d / "run"), "--resume", "--no-progress"]


def _cycle(d: Path) -> list[str]:
    (d / "a.yaml").write_text("base: b.yaml\n")
    (d / "b.yaml").write_text("base: a.yaml\n")
    return [*TRAIN, "--config", str(d / "a.yaml"), "--out", str(d / "run")]


def _config_dir(d: Path) -> list[str]:
    (d / "conf.yaml").mkdir()
    return [*TRAIN, "--config", str(d / "conf.yaml"), "--out", str(d / "run")]


SITE_FAULT = """
import errno, os
_code = int(os.environ["DRIGM_FAULT_ERRNO"])
def _fail(fd):
    raise OSError(_code, os.strerror(_code))
os.fsync = _fail
"""


def _disk_fault(code: int) -> Callable[[Path], list[str]]:
    def setup(d: Path) -> list[str]:
        (d / "site").mkdir()
        (d / "site" / "sitecustomize.py").write_text(SITE_FAULT)
        return [*TRAIN, "--env", "tabular:climbing", "--out", str(d / "run")]

    return setup


def _ref_disk_fault(d: Path) -> list[str]:
    (d / "site").mkdir()
    (d / "site" / "sitecustomize.py").write_text(SITE_FAULT)
    return [*REF, "classic", "climbing", "-o", str(d / "g.npz")]


def _fault_env(code: int) -> dict[str, str]:
    return {"DRIGM_FAULT_ERRNO": str(code), "PYTHONPATH": "site"}


TRAIN_CASES = [
    Case("train --set tv --rho 0.2 without --target", "train flag", _train("--set", "tv", "--rho", "0.2"),
         ("--set", "target")),
    Case("train --override target.rho=0.3 without --target", "train flag", _train("--override", "target.rho=0.3"),
         ("target",)),
    Case("train --beta 2 without --target", "train flag", _train("--beta", "2"), ("beta", "target")),
    Case("train --device cuda (no GPU)", "train flag", _train("--device", "cuda"), ("cuda",)),
    Case("train --device tpu", "train flag", _train("--device", "tpu"), ("device",)),
    Case("train --device cuda:abc", "train flag", _train("--device", "cuda:abc"), ("cuda:abc",)),
    Case("train --steps 0", "train flag", _train("--steps", "0"), ("steps",)),
    Case("train --rho 1.5 (tv)", "train flag", _train(*ROBUST[:4], "--rho", "1.5"), ("rho",)),
    Case("train --algo bogus", "train flag", _train("--algo", "bogus"), ("bogus",)),
    Case("train --target bogus", "train flag", _train("--target", "bogus"), ("bogus",)),
    Case("train --env bogus:x", "train flag", lambda d: [*TRAIN, "--env", "bogus:x", "--out", str(d / "r")],
         ("bogus",)),
    Case("train --env tabular:nosuchgame", "train flag",
         lambda d: [*TRAIN, "--env", "tabular:nosuchgame", "--out", str(d / "r")], ("nosuchgame",)),
    Case("train --episode-limit 0", "train flag",
         lambda d: [*DRIGM, "train", "--env", "tabular:climbing", "--episode-limit", "0", "--out", str(d / "r")],
         ("episode_limit",)),
    Case("train --seed -1", "train flag", _train("--seed", "-1"), ("seed",)),
    Case("train --override learner.lr=nan", "train flag", _train("--override", "learner.lr=nan"), ("lr",)),
    Case("train --override learner.lr=true", "train flag", _train("--override", "learner.lr=true"), ("lr",)),
    Case("train --override learner.batch_size='8'", "train flag",
         _train("--override", "learner.batch_size='8'"), ("batch_size",)),
    Case("train --override without '='", "train flag", _train("--override", "learner.lr"), ("learner.lr",)),
    Case("train --override env.kwargs.horizon=3", "train flag", _train("--override", "env.kwargs.horizon=3"),
         ("horizon",)),
    Case("train --override learner.nope=1", "train flag", _train("--override", "learner.nope=1"), ("nope",)),
    Case("train buffer_size < batch_size", "train flag",
         _train("--override", "learner.buffer_size=2"), ("buffer_size",)),
    Case("train td_lambda with a tv target", "train flag",
         _train(*ROBUST, "--override", "learner.td_lambda=0.5"), ("td_lambda",)),
    Case("train eval.set without eval.rho", "train flag", _train("--override", "eval.set=tv"), ("eval",)),
    Case("train --out is a file", "output path", _out_is_file, ("afile",)),
    Case("train --out under a file", "output path", _out_under_file, ("afile",)),
    Case("train --out in /proc", "output path",
         lambda d: [*TRAIN, "--env", "tabular:climbing", "--out", "/proc/drigm-fault-run"], ("/proc",)),
    Case("train with a full disk", "full/read-only disk", _disk_fault(28), ("run", "space"), _fault_env(28)),
    Case("train on a read-only disk", "full/read-only disk", _disk_fault(30), ("run", "read-only"), _fault_env(30)),
    Case("reference classic with a full disk", "full/read-only disk", _ref_disk_fault, ("g.npz", "space"),
         _fault_env(28)),
    Case("reference classic on a read-only disk", "full/read-only disk", _ref_disk_fault, ("g.npz", "read-only"),
         _fault_env(30)),
    Case("train --resume without --out", "train flag", lambda d: [*DRIGM, "train", "--resume"], ("--out",)),
    Case("train --resume of no run", "resume", lambda d: [*TRAIN, "--resume", "--out", str(d / "none")],
         ("without --resume",)),
    Case("train --resume before the first checkpoint", "resume", _resume_config_only, ("without --resume",)),
    Case("train --resume with --config", "resume",
         lambda d: [*TRAIN, "--resume", "--config", "x.yaml", "--out", str(d / "r")], ("--config",)),
    Case("config: base: 5", "config file", _yaml("base: 5\n"), ("base",)),
    Case("config: base: [1, 2]", "config file", _yaml("base: [1, 2]\n"), ("base",)),
    Case("config: base missing file", "config file", _yaml("base: nothere.yaml\n"), ("nothere.yaml",)),
    Case("config: base: preset:nope", "config file", _yaml("base: preset:nope\n"), ("nope",)),
    Case("config: inheritance cycle", "config file", _cycle, ("cycle",)),
    Case("config: update_every: '8'", "config file", _yaml("learner: {update_every: '8'}\n"), ("update_every",)),
    Case("config: lr: '0.001'", "config file", _yaml("learner: {lr: '0.001'}\n"), ("lr",)),
    Case("config: eps_anneal_steps: 1.5", "config file", _yaml("explore: {eps_anneal_steps: 1.5}\n"),
         ("eps_anneal_steps",)),
    Case("config: shared: 'yes please'", "config file", _yaml("agent: {shared: 'yes please'}\n"), ("shared",)),
    Case("config: unknown top-level key", "config file", _yaml("stepz: 10\n"), ("stepz",)),
    Case("config: learner is a list", "config file", _yaml("learner: [1, 2]\n"), ("learner",)),
    Case("config: invalid YAML", "config file", _yaml("learner: {lr: [\n"), ("c.yaml",)),
    Case("config: top level a list", "config file", _yaml("- 1\n- 2\n"), ("c.yaml",)),
    Case("config: a python tag", "config file", _yaml("steps: !!python/object/apply:os.getpid []\n"), ("c.yaml",)),
    Case("config: not UTF-8", "config file", lambda d: [*TRAIN, "--config", str(_latin1(d)), "--out", str(d / "r")],
         ("c.yaml",)),
    Case("config: missing file", "config file", lambda d: [*TRAIN, "--config", str(d / "no.yaml"), "--out", "r"],
         ("no.yaml",)),
    Case("config: a directory", "config file", _config_dir, ("conf.yaml",)),
]  # fmt: skip


def _latin1(d: Path) -> Path:
    (d / "c.yaml").write_bytes("steps: 10 # d\xe9j\xe0\n".encode("latin-1"))
    return d / "c.yaml"


# ----- evaluate / resume with bad run directories and checkpoints --------------------------------------
def trained_run(ctx: Ctx) -> Path:
    """A finished 60-step robust run (trained once, with the code under test; copied by each case)."""
    run = ctx.cache / "trained"
    if not (run / "checkpoint.pt").is_file():
        argv = [*train_for(60), *ROBUST, "--env", "tabular:robust_vs_nominal", "--out", str(run)]
        proc = ctx.run(argv, ctx.cache)
        if proc.returncode != 0:
            raise RuntimeError(f"training the shared run failed:\n{proc.stderr}")
    return run


def _copy_run(ctx: Ctx, d: Path) -> Path:
    dst = d / "run"
    shutil.copytree(trained_run(ctx), dst)
    return dst


def checkpoint_cases(ctx: Ctx) -> list[Case]:
    def evaluate_after(change: Callable[[Path], None]) -> Callable[[Path], list[str]]:
        def setup(d: Path) -> list[str]:
            run = _copy_run(ctx, d)
            change(run)
            return [*DRIGM, "evaluate", str(run), "--episodes", "2"]

        return setup

    def resume_after(change: Callable[[Path], None]) -> Callable[[Path], list[str]]:
        def setup(d: Path) -> list[str]:
            run = _copy_run(ctx, d)
            change(run)
            return [*DRIGM, "train", "--out", str(run), "--resume", "--steps", "90", "--no-progress"]

        return setup

    def flip(run: Path) -> None:
        _flip_member(run / "checkpoint.pt", "/data/", largest=True)

    def truncate(run: Path) -> None:
        ck = run / "checkpoint.pt"
        ck.write_bytes(ck.read_bytes()[: ck.stat().st_size // 2])

    def garbage(run: Path) -> None:
        (run / "checkpoint.pt").write_bytes(b"not a checkpoint")

    def remove(run: Path) -> None:
        (run / "checkpoint.pt").unlink()

    def as_dir(run: Path) -> None:
        (run / "checkpoint.pt").unlink()
        (run / "checkpoint.pt").mkdir()

    def wider(run: Path) -> None:
        cfg = run / "config.yaml"
        cfg.write_text(cfg.read_text().replace("hidden: 8", "hidden: 16"))

    def no_config(run: Path) -> None:
        (run / "config.yaml").unlink()

    def pickle_with_code(run: Path) -> None:
        import pickle

        class Evil:
            def __reduce__(self) -> tuple:
                return (os.system, ("touch PWNED",))

        (run / "checkpoint.pt").write_bytes(pickle.dumps({"format": "x", "evil": Evil()}))

    def flip_data_pkl(run: Path) -> None:
        _flip_member(run / "checkpoint.pt", "data.pkl")

    def bad_yaml(run: Path) -> None:
        (run / "config.yaml").write_text("learner: {lr: [\n")

    cases = [
        Case("evaluate: flipped tensor bytes", "checkpoint", evaluate_after(flip), ("checkpoint.pt",)),
        Case("resume: flipped tensor bytes", "checkpoint", resume_after(flip), ("checkpoint.pt",)),
        Case("evaluate: flipped pickle bytes", "checkpoint", evaluate_after(flip_data_pkl), ("checkpoint.pt",)),
        Case("evaluate: truncated checkpoint", "checkpoint", evaluate_after(truncate), ("checkpoint.pt",)),
        Case("resume: truncated checkpoint", "checkpoint", resume_after(truncate), ("checkpoint.pt",)),
        Case("evaluate: garbage checkpoint", "checkpoint", evaluate_after(garbage), ("checkpoint.pt",)),
        Case("evaluate: a pickle that runs code", "checkpoint", evaluate_after(pickle_with_code), ("checkpoint.pt",)),
        Case("evaluate: no checkpoint", "checkpoint", evaluate_after(remove), ("checkpoint.pt",)),
        Case("evaluate: checkpoint is a directory", "checkpoint", evaluate_after(as_dir), ("checkpoint.pt",)),
        Case("evaluate: checkpoint of another model", "checkpoint", evaluate_after(wider), ("agent",)),
        Case("resume: --override agent.hidden=16", "checkpoint",
             lambda d: [*DRIGM, "train", "--out", str(_copy_run(ctx, d)), "--resume", "--override", "agent.hidden=16",
                        "--no-progress"], ("agent",)),
        Case("evaluate: run without config.yaml", "checkpoint", evaluate_after(no_config), ("config.yaml",)),
        Case("evaluate: config.yaml not YAML", "checkpoint", evaluate_after(bad_yaml), ("config.yaml",)),
        Case("evaluate: missing run directory", "checkpoint",
             lambda d: [*DRIGM, "evaluate", str(d / "nowhere")], ("nowhere",)),
        Case("evaluate --episodes 0", "checkpoint",
             lambda d: [*DRIGM, "evaluate", str(_copy_run(ctx, d)), "--episodes", "0"], ("episodes",)),
        Case("evaluate --set tv without --rho", "checkpoint",
             lambda d: [*DRIGM, "evaluate", str(_copy_run(ctx, d)), "--set", "tv"], ("--rho",)),
        Case("evaluate --device cuda (no GPU)", "checkpoint",
             lambda d: [*DRIGM, "evaluate", str(_copy_run(ctx, d)), "--device", "cuda"], ("cuda",)),
    ]  # fmt: skip
    return cases


# ----- sweep, report, proofs_check -----------------------------------------------------------------------
SWEEP = [*DRIGM, "sweep"]
SMOKE_ARGS = ["--scale", "smoke", "--algos", "vdn", "--targets", "none", "--seeds", "1", "--workers", "1",
              "--no-progress"]  # fmt: skip


def _sweep_corrupt(ctx: Ctx) -> Callable[[Path], list[str]]:
    def setup(d: Path) -> list[str]:
        argv = [*SWEEP, "tabular-smoke", *SMOKE_ARGS, "--out-root", str(d / "runs")]
        proc = ctx.run(argv, d)
        if proc.returncode != 0:
            raise RuntimeError(f"the sweep to corrupt failed:\n{proc.stderr}")
        (result,) = (d / "runs" / "tabular-smoke" / "smoke").glob("*/seed0.json")
        ck = d / "runs" / json.loads(result.read_text())["train_dir"] / "checkpoint.pt"  # relative to --out-root
        result.unlink()
        _flip_member(ck, "/data/", largest=True)
        return argv

    return setup


def _bad_protocol(ctx: Ctx) -> Callable[[Path], list[str]]:
    def setup(d: Path) -> list[str]:
        (d / "p.yaml").write_text(f"base: {ctx.root / 'experiments/protocols/tabular-smoke.yaml'}\nbogus: 1\n")
        return [*SWEEP, str(d / "p.yaml"), "--scale", "smoke", "--out-root", str(d / "runs")]

    return setup


def _root_is_file(d: Path) -> list[str]:
    (d / "afile").write_text("x")
    return [*SWEEP, "tabular-smoke", *SMOKE_ARGS, "--out-root", str(d / "afile")]


def other_cases(ctx: Ctx) -> list[Case]:
    return [
        Case("sweep: unknown protocol", "sweep/report", lambda d: [*SWEEP, "nope"], ("nope",)),
        Case("sweep: --seeds 99", "sweep/report",
             lambda d: [*SWEEP, "tabular-smoke", "--scale", "smoke", "--seeds", "99", "--out-root", str(d)],
             ("seeds",)),
        Case("sweep: --seeds a,b", "sweep/report", lambda d: [*SWEEP, "tabular-smoke", "--seeds", "a,b"], ("seeds",)),
        Case("sweep: --workers 0", "sweep/report",
             lambda d: [*SWEEP, "tabular-smoke", "--scale", "smoke", "--workers", "0", "--out-root", str(d)],
             ("workers",)),
        Case("sweep: --algos bogus", "sweep/report",
             lambda d: [*SWEEP, "tabular-smoke", "--scale", "smoke", "--algos", "bogus", "--out-root", str(d)],
             ("bogus",)),
        Case("sweep: --scale huge", "sweep/report", lambda d: [*SWEEP, "tabular-smoke", "--scale", "huge"],
             ("huge",)),
        Case("sweep: protocol with an unknown key", "sweep/report", _bad_protocol(ctx), ("bogus",)),
        Case("sweep: --out-root is a file", "sweep/report", _root_is_file, ("afile",)),
        Case("sweep: a corrupted checkpoint", "checkpoint", _sweep_corrupt(ctx), ("checkpoint.pt",)),
        Case("report: unknown protocol", "sweep/report", lambda d: [*DRIGM, "report", "nope"], ("nope",)),
        Case("proofs_check --only nope", "sweep/report", lambda d: ["-m", "proofs_check", "--only", "nope"],
             ("nope",)),
    ]  # fmt: skip


# ----- hostile inputs (the hangs, tracebacks and silent acceptances of issue 31) ---------------------------
def _bomb(levels: int, path: str) -> str:
    """YAML whose key `path` (dotted) holds an alias bomb of `levels` levels of 10 aliases (10^levels values)."""
    lines = ["l0: &l0 [x, x, x, x, x, x, x, x, x, x]"]
    lines += [f"l{k}: &l{k} [" + ", ".join([f"*l{k - 1}"] * 10) + "]" for k in range(1, levels)]
    *parents, leaf = path.split(".")
    for depth, key in enumerate(parents):
        lines.append("  " * depth + f"{key}:")
    lines.append("  " * len(parents) + f"{leaf}: *l{levels - 1}")
    return "\n".join(lines) + "\n"


def _config(text: str) -> Callable[[Path], list[str]]:
    def setup(d: Path) -> list[str]:
        (d / "c.yaml").write_text(text)
        return [*TRAIN, "--config", str(d / "c.yaml"), "--out", str(d / "run")]

    return setup


def _protocol_bomb(ctx: Ctx) -> Callable[[Path], list[str]]:
    def setup(d: Path) -> list[str]:
        base = ctx.root / "experiments/protocols/tabular-smoke.yaml"
        (d / "p.yaml").write_text(f"base: {base}\n" + _bomb(9, "run.env.kwargs"))
        return [*SWEEP, str(d / "p.yaml"), *SMOKE_ARGS, "--out-root", str(d / "runs")]

    return setup


def _base_chain(d: Path) -> list[str]:
    for k in range(1200):
        (d / f"c{k}.yaml").write_text((f"base: c{k + 1}.yaml\n" if k + 1 < 1200 else "") + "seed: 1\n")
    return [*TRAIN, "--config", str(d / "c0.yaml"), "--out", str(d / "run")]


def _policy(body: bytes) -> Callable[[Path], list[str]]:
    def setup(d: Path) -> list[str]:
        (d / "pi.json").write_bytes(body)
        return [*REF, "evaluate", str(_game(d)), "--set", "tv", "--rho", "0.1", "--policy", str(d / "pi.json")]

    return setup


def _smoke_results(ctx: Ctx) -> Path:
    """A finished tabular-smoke sweep (run once with the code under test; copied by each case)."""
    root = ctx.cache / "smoke-runs"
    if not list((root / "tabular-smoke" / "smoke").glob("*/seed0.json")):
        proc = ctx.run([*SWEEP, "tabular-smoke", *SMOKE_ARGS, "--out-root", str(root)], ctx.cache)
        if proc.returncode != 0:
            raise RuntimeError(f"the smoke sweep failed:\n{proc.stderr}")
    return root


def _corrupt_results(ctx: Ctx, change: Callable[[dict[str, Any]], object]) -> Callable[[Path], list[str]]:
    """`drigm report` over a copy of the smoke sweep whose results file `change` has edited (or replaced)."""

    def setup(d: Path) -> list[str]:
        root = d / "runs"
        shutil.copytree(_smoke_results(ctx), root)
        (result,) = (root / "tabular-smoke" / "smoke").glob("*/seed0.json")
        new = change(json.loads(result.read_text()))
        if isinstance(new, bytes):
            result.write_bytes(new)
        else:
            result.write_text(json.dumps(new, allow_nan=True))
        return [*DRIGM, "report", "tabular-smoke", "--scale", "smoke", "--out-root", str(root), "--results-root",
                str(d / "res")]  # fmt: skip

    return setup


def _first_test(r: dict[str, Any], key: str, value: object) -> dict[str, Any]:
    next(iter(r["tests"].values()))[key] = value
    return r


def _report(*flags: str) -> Callable[[Path], list[str]]:
    return lambda d: [*DRIGM, "report", "tabular-smoke", "--out-root", str(d), "--results-root", str(d / "r"), *flags]


def _sweep_smoke(*flags: str) -> Callable[[Path], list[str]]:
    return lambda d: [*SWEEP, "tabular-smoke", "--scale", "smoke", "--out-root", str(d), *flags]


def _evaluate(ctx: Ctx, *flags: str) -> Callable[[Path], list[str]]:
    return lambda d: [*DRIGM, "evaluate", str(_copy_run(ctx, d)), "--episodes", "2", *flags]


def hostile_cases(ctx: Ctx) -> list[Case]:
    row = "[" + ", ".join(["*a"] * 100) + "]"
    override_bomb = "steps=[&a [x, x, x, x, x, x, x, x, x, x], " + ", ".join([row] * 200) + "]"
    G = "hostile input"
    return [
        Case("hostile: alias bomb in steps", G, _config(_bomb(9, "steps")), ("c.yaml", "100000 values")),
        Case("hostile: alias bomb in env.kwargs.game_kwargs", G, _config(_bomb(9, "env.kwargs.game_kwargs")),
             ("c.yaml", "100000 values")),
        Case("hostile: alias bomb in mixer.params.embed_dim", G, _config(_bomb(9, "mixer.params.embed_dim")),
             ("c.yaml", "100000 values")),
        Case("hostile: alias bomb in an --override value", G, _train("--override", override_bomb),
             ("override", "100000 values")),
        Case("hostile: alias bomb in a protocol's run.env.kwargs", G, _protocol_bomb(ctx), ("p.yaml", "100000 values")),
        Case("hostile: a recursive alias", G, _config("a: &a [*a]\n"), ("recursive alias",)),
        Case("hostile: a config nested 5000 deep", G, _config("a: " + "[" * 5000 + "]" * 5000 + "\n"),
             ("nests deeper",)),
        Case("hostile: a chain of 1200 base: files", G, _base_chain, ("chain of 'base:' files",)),
        Case("hostile: a YAML key given twice", G, _config("seed: 1\nsteps: 5\nseed: 2\n"), ("'seed'", "twice")),
        Case("hostile: reference random --states 1000000000", G,
             lambda d: [*REF, "random", "--states", "1000000000", "--actions", "2", "-o", str(d / "g")],
             ("1000000000 states", "needs about")),
        Case("hostile: reference random --actions 100000,100000", G,
             lambda d: [*REF, "random", "--states", "10", "--actions", "100000,100000", "-o", str(d / "g")],
             ("joint actions", "needs about")),
        Case("hostile: learner.buffer_size=1e12", G, _train("--override", "learner.buffer_size=1000000000000"),
             ("learner.buffer_size", "needs about")),
        Case("hostile: agent.hidden=1e12", G, _train("--override", "agent.hidden=1000000000000"),
             ("agent.hidden", "too large")),
        Case("hostile: a 401-digit learning rate", G, _train("--override", "learner.lr=1" + "0" * 400),
             ("learner.lr", "too large for a float")),
        Case("hostile: a JSON policy nested 200000 deep", G,
             _policy(b'{"policy": ' + b"[" * 200_000 + b"]" * 200_000 + b"}"), ("pi.json", "nests too deeply")),
        Case("hostile: a policy file that is not UTF-8", G, _policy('{"policy": [[0, 1]]}'.encode("utf-16")),
             ("pi.json", "UTF-8")),
        Case("hostile: a policy path that is a directory", G,
             lambda d: (d / "pi.json").mkdir() or [*REF, "evaluate", str(_game(d)), "--set", "tv", "--rho", "0.1",
                                                    "--policy", str(d / "pi.json")], ("pi.json", "directory")),
        Case("hostile: a non-UTF-8 --out", G,
             lambda d: [*TRAIN, "--env", "tabular:climbing", "--out", os.fsdecode(os.fsencode(str(d)) + b"/x\xffy")],
             ("--out", "UTF-8")),
        Case("hostile: report on a binary results file", G, _corrupt_results(ctx, lambda r: b"\x80\x00\xff"),
             ("seed0.json",)),
        Case("hostile: report on string returns", G,
             _corrupt_results(ctx, lambda r: _first_test(r, "returns", ["a"])), ("seed0.json", "returns")),
        Case("hostile: report on NaN returns", G,
             _corrupt_results(ctx, lambda r: _first_test(r, "returns", [float("nan")])), ("seed0.json", "returns")),
        Case("hostile: report on inf returns", G,
             _corrupt_results(ctx, lambda r: _first_test(r, "returns", [float("inf")])), ("seed0.json", "returns")),
        Case("hostile: report on a non-numeric curve", G,
             _corrupt_results(ctx, lambda r: {**r, "curve": {"t_env": ["x"], "return": ["y"]}}),
             ("seed0.json", "curve")),
        Case("hostile: train --beta with a tv target", G, _train(*ROBUST, "--beta", "0.5"), ("--beta", "target.beta")),
        Case("hostile: sweep --algos ''", G, _sweep_smoke("--algos", ""), ("--algos", "empty")),
        Case("hostile: sweep --rho =0.1", G, _sweep_smoke("--rho", "=0.1"), ("--rho", "no set name")),
        Case("hostile: sweep --rho tv=0.1,,0.2", G, _sweep_smoke("--rho", "tv=0.1,,0.2"), ("--rho", "empty item")),
        Case("hostile: sweep --targets none --rho 0.1", G, _sweep_smoke("--targets", "none", "--rho", "0.1"),
             ("--rho", "none of them reads rho")),
        Case("hostile: sweep --seeds 0,0", G, _sweep_smoke("--seeds", "0,0"), ("--seeds", "twice")),
        Case("hostile: evaluate --env ''", G, _evaluate(ctx, "--env", ""), ("--env",)),
        Case("hostile: evaluate --score-from building-climate on a tabular run", G,
             _evaluate(ctx, "--score-from", "building-climate"), ("building-climate", "tabular")),
        Case("hostile: evaluate --rho 0.3 without --set", G, _evaluate(ctx, "--rho", "0.3"), ("--rho", "--set")),
        Case("hostile: report --exclude-seeds ''", G, _report("--exclude-seeds", ""), ("--exclude-seeds",)),
        Case("hostile: report --select-on without --overview", G, _report("--select-on", "building-validation"),
             ("--select-on", "--overview")),
    ]  # fmt: skip


# ===== kill scenarios ======================================================================================
def _children(pid: int) -> list[int]:
    path = Path(f"/proc/{pid}/task/{pid}/children")
    out = []
    for k in path.read_text().split() if path.is_file() else []:
        try:
            if b"spawn_main" in Path(f"/proc/{k}/cmdline").read_bytes():
                out.append(int(k))
        except OSError:
            pass
    return out


def _alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] not in ("Z", "X")
    except OSError:
        return False


def _holder(lock: Path, pids: list[int]) -> int | None:
    for pid in pids:
        try:
            if any(os.readlink(fd) == str(lock) for fd in Path(f"/proc/{pid}/fd").iterdir()):
                return pid
        except OSError:
            continue
    return None


def _popen_sweep(ctx: Ctx, d: Path, steps: int) -> subprocess.Popen[str]:
    (d / "p.yaml").write_text(
        f"base: {ctx.root / 'experiments/protocols/tabular-smoke.yaml'}\nname: kill\n"
        f"scales:\n  smoke:\n    run:\n      steps: {steps}\n"
    )
    argv = [ctx.python, "-m", "drigm", "sweep", str(d / "p.yaml"), "--scale", "smoke", "--algos", "qmix", "--targets",
            "none", "--seeds", "2", "--workers", "2", "--out-root", str(d / "runs"), "--no-progress"]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": str(ctx.root)}
    return subprocess.Popen(argv, cwd=d, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def kill_worker(ctx: Ctx, d: Path) -> tuple[bool, str]:
    proc = _popen_sweep(ctx, d, 900)
    try:
        deadline = time.monotonic() + 120
        victim = None
        while victim is None:
            if proc.poll() is not None or time.monotonic() > deadline:
                return False, "no worker reached a checkpoint"
            for ck in (d / "runs" / "train").glob("*/*/checkpoint.pt"):
                victim = _holder(ck.parent / ".lock", _children(proc.pid))
                if victim:
                    break
            time.sleep(0.1)
        os.kill(victim, signal.SIGKILL)
        out, err = proc.communicate(timeout=300)
    finally:
        if proc.poll() is None:
            proc.kill()
    n = len(list((d / "runs" / "kill" / "smoke").glob("*/seed?.json")))
    ok = proc.returncode == 0 and n == 2
    return ok, f"exit {proc.returncode}, {n}/2 results; last line: {(out + err).strip().splitlines()[-1][:160]}"


def kill_sweep(ctx: Ctx, d: Path) -> tuple[bool, str]:
    proc = _popen_sweep(ctx, d, 100_000_000)
    workers: list[int] = []
    try:
        deadline = time.monotonic() + 120
        while len(list((d / "runs" / "train").glob("*/*/progress.csv"))) < 2:
            if proc.poll() is not None or time.monotonic() > deadline:
                return False, "the workers never started"
            time.sleep(0.2)
        workers = _children(proc.pid)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
        deadline = time.monotonic() + 5
        while any(_alive(w) for w in workers) and time.monotonic() < deadline:
            time.sleep(0.1)
        left = [w for w in workers if _alive(w)]
        return not left, f"{len(workers)} workers, {len(left)} alive 5 s after the sweep was SIGKILLed"
    finally:
        for w in workers:  # orphans would train forever
            if _alive(w):
                os.kill(w, signal.SIGKILL)
        if proc.poll() is None:
            proc.kill()


def kill_train_resume(ctx: Ctx, d: Path) -> tuple[bool, str]:
    argv = [ctx.python, *train_for(3000), "--override", "checkpoint_interval=60", "--env",
            "tabular:robust_vs_nominal", "--out", str(d / "run")]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": str(ctx.root)}
    proc = subprocess.Popen(argv, cwd=d, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while not (d / "run" / "checkpoint.pt").is_file() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.1)
    proc.kill()
    proc.wait()
    stale = d / "run" / ".checkpoint.pt.0123456789ab.tmp"  # what a write killed mid-way leaves
    stale.write_bytes(b"half")
    res = ctx.run([*DRIGM, "train", "--out", str(d / "run"), "--resume", "--no-progress", "--steps", "300"], d)
    ok = res.returncode == 0 and "Traceback" not in res.stderr
    return ok, f"resume exit {res.returncode}; stale temp file {'left' if stale.exists() else 'removed'}"


def stale_temp(ctx: Ctx, d: Path) -> tuple[bool, str]:
    argv = [*TRAIN, "--env", "tabular:climbing", "--out", str(d / "run")]
    (d / "run").mkdir()
    stale = d / "run" / ".checkpoint.pt.0123456789ab.tmp"
    stale.write_bytes(b"half a checkpoint")
    res = ctx.run(argv, d)
    return (
        res.returncode == 0 and not stale.exists(),
        f"exit {res.returncode}, temp {'left' if stale.exists() else 'removed'}",
    )


KILLS: list[tuple[str, Callable[[Ctx, Path], tuple[bool, str]]]] = [
    ("SIGKILL one of 2 sweep workers mid-job", kill_worker),
    ("SIGKILL the sweep's main process", kill_sweep),
    ("kill -9 drigm train, then --resume", kill_train_resume),
    ("a stale temp file is removed at the next start", stale_temp),
]


# ===== driver ==============================================================================================
def main(argv: list[str] | None = None) -> int:
    """Run the corpus and print the outcome counts; exit status 0 (this is a measurement, not a test)."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--root", type=Path, default=HERE, help="checkout whose code runs (default: this one)")
    p.add_argument("--python", default=sys.executable)
    p.add_argument("--only", action="append", help="only cases whose name contains this (repeatable)")
    p.add_argument("--no-kills", action="store_true", help="skip the kill scenarios")
    p.add_argument("--verbose", action="store_true", help="print each case's outcome and last output line")
    p.add_argument("--json", type=Path, help="write every case's outcome here")
    args = p.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="drigm-faults-") as tmp:
        ctx = Ctx(args.root.resolve(), args.python, Path(tmp) / "cache")
        ctx.cache.mkdir()
        cases = game_cases() + REFERENCE_CASES + TRAIN_CASES + checkpoint_cases(ctx) + other_cases(ctx)
        cases += hostile_cases(ctx)
        if args.only:
            cases = [c for c in cases if any(o in c.name for o in args.only)]
        rows = []
        start = time.perf_counter()
        for i, case in enumerate(cases):
            d = Path(tmp) / f"case{i:03d}"
            d.mkdir()
            try:
                argv_case = case.setup(d)
                proc: subprocess.CompletedProcess[str] | None = ctx.run(argv_case, d, case.env)
            except subprocess.TimeoutExpired:
                proc = None
            outcome = classify(proc, case.tokens)
            last = "(timed out)" if proc is None else ((proc.stderr or proc.stdout).strip().splitlines() or [""])[-1]
            rows.append({"case": case.name, "group": case.group, "outcome": outcome, "last_line": last[:300]})
            if args.verbose:
                print(f"[{outcome:17s}] {case.name}: {last[:160]}", flush=True)
            if Path(d / "PWNED").exists():
                rows[-1]["outcome"] = "traceback"
                rows[-1]["last_line"] = "CODE FROM A PICKLE RAN"
        kills = []
        if not args.no_kills and Path("/proc/self/task").is_dir():
            for name, fn in KILLS:
                d = Path(tmp) / f"kill-{len(kills)}"
                d.mkdir()
                ok, detail = fn(ctx, d)
                kills.append({"scenario": name, "handled": ok, "detail": detail})
                if args.verbose:
                    print(f"[{'handled' if ok else 'NOT handled':17s}] {name}: {detail}", flush=True)
    counts = Counter(r["outcome"] for r in rows)
    groups = sorted({r["group"] for r in rows})
    print(f"\nfault injection on {args.root.resolve()}: {len(rows)} bad inputs ({time.perf_counter() - start:.0f} s)\n")
    print("| group | cases | " + " | ".join(CLASSES) + " |")
    print("|---|---:|" + "---:|" * len(CLASSES))
    for g in groups:
        sub = Counter(r["outcome"] for r in rows if r["group"] == g)
        print(f"| {g} | {sum(sub.values())} | " + " | ".join(str(sub[c]) for c in CLASSES) + " |")
    print(f"| **all** | **{len(rows)}** | " + " | ".join(f"**{counts[c]}**" for c in CLASSES) + " |")
    bad = [r for r in rows if r["outcome"] != "clear refusal"]
    if bad:
        print("\nnot clear refusals:")
        for r in bad:
            print(f"- [{r['outcome']}] {r['case']}: {r['last_line'][:200]}")
    if kills:
        print("\n| kill scenario | handled | detail |\n|---|---|---|")
        for k in kills:
            print(f"| {k['scenario']} | {'yes' if k['handled'] else 'NO'} | {k['detail']} |")
    if args.json:
        args.json.write_text(json.dumps({"cases": rows, "kills": kills}, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
