"""Where a sweep's runs and results live on disk, and the results files themselves (written atomically, read
checked).

Layout under ``out_root`` (default ``experiments/runs``):

- ``train/<training env>/<method>-seed<k>-<config key>/``: a training run directory (checkpoint, config,
  progress.csv) plus ``train_done.json`` once training finished. The config key is a digest of the resolved run
  config, so two protocols with the same training (building-seasonal and building-climate) share the runs, and a
  changed config never resumes a foreign checkpoint. Training holds an exclusive ``fcntl`` lock on ``.lock`` in the
  run directory, so concurrent sweeps never train the same run twice (the lock dies with its process).
- ``<protocol>/<label>/<method>/seed<k>.json``: the results of one run (written atomically: temp file +
  os.replace), holding the resolved config, per-test-environment per-episode returns (plus won flags and
  normalised scores where the protocol/environment defines them) and the training curve. A failed job leaves
  ``seed<k>.error.txt`` beside it instead (removed when the job later succeeds).
- ``<protocol>/<label>/sweep.json``: the jobs ever requested (the union over sweeps), for the report.

A run is finished when its results file exists and is valid (format, protocol, scale, method, seed, config key
and test environment names all match).
"""

from __future__ import annotations

import contextlib
import csv
import json
import math
import sys
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np

from drigm.config import ConfigError, RunConfig
from drigm.protocol import Job, Protocol, config_key, run_dir_name
from reference.atomic_io import atomic_write_json, file_lock

RESULT_FORMAT = "drigm-sweep-result/1"
STALE_TEMP_AGE_S = 300.0
"""Temp files of atomic writes under a results directory older than this are a killed writer's, removed at start."""
DEFAULT_OUT = Path("experiments/runs")


def _slug(text: str) -> str:
    return "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in text)


def result_dir(out_root: Path, protocol: str, label: str) -> Path:
    """Where a protocol's results at one scale live: ``out_root/<protocol>/<label>``, the label being the scale
    or ``preset/scale`` (:attr:`drigm.protocol.Protocol.label`)."""
    return Path(out_root) / _slug(protocol) / label


def result_path(out_root: Path, protocol: str, label: str, job: Job) -> Path:
    """The results file of one job."""
    return result_dir(out_root, protocol, label) / job.method / f"seed{job.seed}.json"


def train_dir(out_root: Path, job: Job, cfg: RunConfig) -> Path:
    """The training run directory of one job (shared by every protocol with the same resolved config)."""
    return Path(out_root) / "train" / _slug(cfg.env.name) / run_dir_name(job, cfg)


def portable(path: Path, root: Path) -> str:
    """`path` relative to the sweep's output root `root` when it lies below it, else absolute: results files are
    committed and moved, and are read from any working directory (``train_dir`` = ``--out-root`` / that)."""
    resolved = Path(path).resolve()
    try:
        return str(resolved.relative_to(Path(root).resolve()))
    except ValueError:
        return str(resolved)


def write_json(path: Path, obj: Any) -> None:
    """Atomically write `obj` as indented JSON plus a newline (parents created); a torn file is never visible."""
    atomic_write_json(path, obj, indent=1, default=_json_default, make_parents=True)


def _json_default(o: Any) -> Any:
    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


def read_curve(run_dir: Path) -> dict[str, list[float]]:
    """The training curve of a run from progress.csv: env steps and the mean of the recent training returns,
    plus ``win_rate`` (the recent battles' win fraction at the same steps) for environments that log one."""
    path = Path(run_dir) / "progress.csv"
    returns: dict[float, float] = {}
    wins: dict[float, float] = {}
    if path.is_file():
        with path.open(newline="") as fh:
            for row in csv.DictReader(fh):
                key = row.get("key")
                if key == "train/return_mean":
                    returns[float(row["step"])] = float(row["value"])
                elif key == "train/win_rate":
                    wins[float(row["step"])] = float(row["value"])
    steps = sorted(returns)
    curve = {"step": steps, "return_mean": [returns[s] for s in steps]}
    if wins and all(s in wins for s in steps):
        curve["win_rate"] = [wins[s] for s in steps]
    return curve


def result_record(
    proto: Protocol,
    job: Job,
    cfg: RunConfig,
    tdir: Path,
    summary: dict[str, Any],
    info: dict[str, Any],
    tests: dict[str, Any],
    eval_seconds: float,
    out_root: Path,
) -> dict[str, Any]:
    """The results record of one job on one protocol (the format that :func:`is_finished` validates); its run
    directories are relative to the sweep's output root `out_root`."""
    return {
        "format": RESULT_FORMAT,
        "protocol": proto.name,
        "scale": proto.scale,
        "preset": proto.preset,
        "method": job.method,
        "job": asdict(job),
        "config_key": config_key(cfg),
        "config": cfg.to_dict(),
        "train_dir": portable(tdir, out_root),
        "train": {**summary, "run_dir": portable(tdir, out_root), "t_env": info["t_env"], "updates": info["updates"]},
        "curve": read_curve(tdir),
        "eval_episodes": proto.eval_episodes,
        "eval_seed": proto.eval_seed,
        "test_seeds": proto.test_seeds(),
        "score_label": proto.score.label if proto.score is not None else None,
        "tests": tests,
        "eval_seconds": eval_seconds,
        "finished_at": time.strftime("%Y-%m-%dT%H:%M:%S"),
    }


class CorruptResultsError(ConfigError):
    """A results file that is not what a sweep writes (binary, not JSON, wrongly typed or non-finite numbers);
    the message names the file and the field."""


def _check_numbers(values: Any, where: str, finite: bool) -> None:
    if not isinstance(values, list):
        raise CorruptResultsError(f"{where} is a {type(values).__name__}, not a list of numbers")
    for i, v in enumerate(values):
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            raise CorruptResultsError(f"{where}[{i}] = {v!r:.60} is not a number")
        if finite and not math.isfinite(v):
            raise CorruptResultsError(f"{where}[{i}] = {v!r} is not a finite number")


def read_results(path: Path) -> dict[str, Any]:
    """The results file at `path`, checked: a JSON object whose tests hold lists of finite numbers (returns,
    scores, lengths), booleans (won) and whose learning curve holds numbers. CorruptResultsError names the file
    and the first bad field; OSError (a missing file) passes through."""
    path = Path(path)
    where = f"results file {str(path)!r}"
    try:
        r = json.loads(path.read_text())
    except UnicodeDecodeError:
        raise CorruptResultsError(f"{where} is not UTF-8 text (a binary file?)") from None
    except (json.JSONDecodeError, RecursionError) as exc:
        raise CorruptResultsError(f"{where} is not valid JSON: {str(exc)[:200]}") from None
    if not isinstance(r, dict):
        raise CorruptResultsError(f"{where} holds a {type(r).__name__}, not a JSON object")
    tests = r.get("tests", {})
    if not isinstance(tests, dict):
        raise CorruptResultsError(f"{where}: 'tests' is a {type(tests).__name__}, not an object")
    for name, t in tests.items():
        if not isinstance(t, dict):
            raise CorruptResultsError(f"{where}: tests[{name!r}] is a {type(t).__name__}, not an object")
        for key in ("returns", "score", "lengths"):
            if key in t:
                _check_numbers(t[key], f"{where}: tests[{name!r}].{key}", finite=True)
        if "won" in t and not (isinstance(t["won"], list) and all(isinstance(w, bool) for w in t["won"])):
            raise CorruptResultsError(f"{where}: tests[{name!r}].won is not a list of true/false")
    curve = r.get("curve", {})
    if not isinstance(curve, dict):
        raise CorruptResultsError(f"{where}: 'curve' is a {type(curve).__name__}, not an object")
    for key, values in curve.items():
        _check_numbers(values, f"{where}: curve[{key!r}]", finite=False)  # a curve may hold nan where unlogged
    return r


def set_aside(path: Path) -> Path:
    """Rename a corrupt results file to ``NAME.corrupt`` (``NAME.corrupt.N`` if taken), so it is kept, not
    overwritten; returns the new path."""
    path = Path(path)
    dest = path.with_name(path.name + ".corrupt")
    k = 1
    while dest.exists():
        dest = path.with_name(f"{path.name}.corrupt.{k}")
        k += 1
    path.rename(dest)
    return dest


def is_finished(path: Path, proto: Protocol, job: Job, corrupt: str = "raise", key: str | None = None) -> bool:
    """True when `path` holds a valid results file for exactly this protocol, scale, job, config and test set.

    `key` is the job's config key when the caller has resolved it already (the protocol then builds no config).

    A corrupt file (:func:`read_results`) raises CorruptResultsError (`corrupt` 'raise', what a report wants) or
    is set aside as ``*.corrupt`` with a warning on stderr and counts as unfinished (`corrupt` 'set-aside', what a
    sweep wants: the job reruns, the file is kept)."""
    try:
        r = read_results(Path(path))
    except OSError:
        return False
    except CorruptResultsError as exc:
        if corrupt != "set-aside":
            raise
        moved = set_aside(Path(path))
        print(f"drigm sweep: warning: {exc}; moved to {str(moved)!r}, the job runs again", file=sys.stderr)
        return False
    try:
        return (
            r["format"] == RESULT_FORMAT
            and r["protocol"] == proto.name
            and r["scale"] == proto.scale
            and r["method"] == job.method
            and r["job"]["seed"] == job.seed
            and r["config_key"] == (key if key is not None else config_key(proto.job_config(job)))
            and r["eval_episodes"] == proto.eval_episodes
            and r.get("test_seeds", proto.test_seeds()) == proto.test_seeds()
            and r.get("preset") == proto.preset
            and list(r["tests"]) == [t.name for t in proto.tests]
            and all(r["tests"][t.name]["env"] == t.env for t in proto.tests)
            and all(
                "incompatible" in r["tests"][t.name] or len(r["tests"][t.name]["returns"]) == proto.eval_episodes
                for t in proto.tests
            )
        )
    except (KeyError, TypeError):
        return False


def update_manifest(path: Path, proto: Protocol, jobs: list[Job]) -> None:
    """Add `jobs` to the manifest at `path` (the union over sweeps); guarantees no entry is lost to a concurrent
    sweep of the same protocol: the read-merge-write holds an exclusive lock (``.sweep.json.lock`` beside it)."""
    with file_lock(path.with_name(f".{path.name}.lock")):
        old: list[dict[str, Any]] = []
        if path.is_file():
            with contextlib.suppress(OSError, json.JSONDecodeError, KeyError, TypeError):
                old = json.loads(path.read_text())["jobs"]
        seen = {(j["method"], j["seed"]) for j in old}
        new = old + [{"method": j.method, **asdict(j)} for j in jobs if (j.method, j.seed) not in seen]
        write_json(
            path,
            {
                "protocol": proto.name,
                "scale": proto.scale,
                "preset": proto.preset,
                "tests": [t.name for t in proto.tests],
                "jobs": new,
            },
        )
