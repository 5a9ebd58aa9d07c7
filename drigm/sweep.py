"""Sweeps over a named protocol: train every (algo, target, set, seed), then evaluate on every test environment.

Layout under ``out_root`` (default ``experiments/runs``):

- ``train/<training env>/<method>-seed<k>-<config key>/``: a training run directory (checkpoint, config,
  progress.csv) plus ``train_done.json`` once training finished. The config key is a digest of the resolved run
  config, so two protocols with the same training (building-seasonal and building-climate) share the runs, and a
  changed config never resumes a foreign checkpoint. Training holds an exclusive ``fcntl`` lock on ``.lock`` in the
  run directory, so concurrent sweeps never train the same run twice (the lock dies with its process).
- ``<protocol>/<scale>/<method>/seed<k>.json``: the results of one run (written atomically: temp file +
  os.replace), holding the resolved config, per-test-environment per-episode returns (plus won flags and
  normalised scores where the protocol/environment defines them) and the training curve. A failed job leaves
  ``seed<k>.error.txt`` beside it instead (removed when the job later succeeds).
- ``<protocol>/<scale>/sweep.json``: the jobs ever requested (the union over sweeps), for the report.

A run is finished when its results file exists and is valid (format, protocol, scale, method, seed, config key
and test environment names all match); finished runs are skipped. A killed run is resumed from its last
checkpoint with ``Trainer.train(resume=True)`` by simply running the sweep again.

Backends: ``local`` runs the jobs in supervised worker processes (spawn context, torch at one thread per worker,
one job at a time each), or in the calling process when there is one worker. The supervisor notices a worker's
death (any signal, any exit): only the job it held fails, and that job is rerun from its last checkpoint in a fresh
worker up to ``retries`` times (default 2, ``--retries``) while the other jobs go on; a job that raises is not
retried. The printed summary lists the jobs that failed, and why, and those that finished after a retry; the exit
status is 1 when any failed. Workers die with the sweep whatever kills it (``PR_SET_PDEATHSIG`` on Linux, plus a
thread polling the parent pid), and SIGTERM or Ctrl-C stop them too.

``ray`` submits the same jobs as Ray tasks (one CPU each, retried by Ray after a worker's death as many times) to
the cluster at ``ray_address`` or to a local instance (an already initialised Ray is used as it is). Ray workers on
other machines need this package installed and ``out_root`` on shared storage.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import fcntl
import json
import math
import os
import signal
import sys
import threading
import time
import traceback
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field, replace
from multiprocessing import connection as mp_connection
from multiprocessing import get_context
from pathlib import Path
from typing import Any

import numpy as np

from drigm.checkpoint import atomic_write_bytes
from drigm.config import ConfigError, RunConfig
from drigm.envs.base import MultiAgentEnv, TimeStep, make_env
from drigm.protocol import (
    DR_TARGETS,
    RHO_TARGETS,
    SCALES,
    Job,
    Protocol,
    ProtocolError,
    TestEnv,
    config_key,
    load_protocol,
    run_dir_name,
    test_episode_seeds,  # noqa: F401  (re-exported: demo, baselines and benchmarks import it from here)
)
from reference.atomic_io import atomic_write_json, describe_os_error, remove_stale_temps

RESULT_FORMAT = "drigm-sweep-result/1"


class IncompatibleTestEnvError(ConfigError):
    """A test environment's agents, actions or observations differ from the training environment's."""


TRAIN_DONE = "train_done.json"
STALE_TEMP_AGE_S = 300.0
"""Temp files of atomic writes under a results directory older than this are a killed writer's, removed at start."""
DEFAULT_OUT = Path("experiments/runs")
BACKENDS = ("local", "ray")


# ===== paths ======================================================================================
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


# ===== the unit of work ===========================================================================
@dataclass(frozen=True)
class JobSpec:
    """Everything a worker needs, as plain data (picklable for process pools and Ray)."""

    protocol: str
    protocol_path: str
    scale: str
    job: Job
    out_root: str
    progress: bool = False
    preset: str | None = None
    also: tuple[str, ...] = ()
    """Paths of further protocols that share this job's training and are evaluated with the same run."""


class _Recorder(MultiAgentEnv):
    """Forwards to `env` and remembers the last TimeStep's info (the runner does not return it)."""

    def __init__(self, env: MultiAgentEnv) -> None:
        self.env = env
        self.last_info: dict[str, Any] = {}

    n_agents = property(lambda self: self.env.n_agents)  # type: ignore[assignment]
    n_actions = property(lambda self: self.env.n_actions)  # type: ignore[assignment]
    obs_dim = property(lambda self: self.env.obs_dim)  # type: ignore[assignment]
    state_dim = property(lambda self: self.env.state_dim)  # type: ignore[assignment]
    episode_limit = property(lambda self: self.env.episode_limit)  # type: ignore[assignment]
    discount = property(lambda self: self.env.discount)  # type: ignore[assignment]

    def reset(self, seed: int | None = None) -> TimeStep:
        ts = self.env.reset(seed)
        self.last_info = dict(ts.info)
        return ts

    def step(self, actions: np.ndarray) -> TimeStep:
        ts = self.env.step(actions)
        self.last_info = dict(ts.info)
        return ts

    def close(self) -> None:
        self.env.close()


def make_test_env(env_data: dict[str, Any]) -> MultiAgentEnv:
    """The environment of a test entry (EnvConfig data: name, episode_limit, kwargs)."""
    kwargs = dict(env_data.get("kwargs") or {})
    if env_data.get("episode_limit") is not None:
        if "episode_limit" in kwargs:
            raise ConfigError("test env episode_limit is set twice: as env.episode_limit and in env.kwargs")
        kwargs["episode_limit"] = env_data["episode_limit"]
    return make_env(env_data["name"], **kwargs)


def evaluate_on(trainer: Any, test: TestEnv, seeds: list[int], score: Any) -> dict[str, Any]:
    """Greedy episodes of a loaded run on one test environment: per-episode returns, won flags, scores."""
    from drigm.runner import EpisodeRunner

    env = make_test_env(test.env)
    try:
        mine, train_env = (env.n_agents, env.n_actions, env.obs_dim), trainer.env
        theirs = (train_env.n_agents, train_env.n_actions, train_env.obs_dim)
        if mine != theirs:
            raise IncompatibleTestEnvError(
                f"test environment {test.name!r} ({test.env['name']}) has (agents, actions, obs_dim) = {mine}, "
                f"the training environment {theirs}: a trained policy cannot act in it"
            )
        rec = _Recorder(env)
        runner = EpisodeRunner(rec, trainer.learner.controller, trainer.device)
        rng = np.random.default_rng(0)
        returns: list[float] = []
        won: list[bool] = []
        lengths: list[int] = []
        played: dict[int, tuple[float, int, bool | None]] = {}
        for s in seeds:
            # a greedy episode is a pure function of its env seed: a repeated seed (the paper's test days repeat
            # some days) is played once and counted as often as it is listed
            if s not in played:
                ep = runner.run(s, 0.0, rng)
                played[s] = (float(ep.episode_return), int(ep.length), rec.last_info.get("won"))
            ret, length, w = played[s]
            returns.append(ret)
            lengths.append(length)
            if w is not None:
                won.append(bool(w))
    finally:
        env.close()
    out: dict[str, Any] = {"env": test.env, "seeds": seeds, "returns": returns, "lengths": lengths}
    if won and len(won) == len(returns):
        out["won"] = won
    if score is not None:
        out["score"] = [score(r) for r in returns]
    return out


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


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    """Hold an exclusive ``flock`` on the file `path` (created with its parents) for the ``with`` block."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+") as fh:
        fcntl.flock(fh.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh.fileno(), fcntl.LOCK_UN)


def _write_json(path: Path, obj: Any) -> None:
    """Atomically write `obj` as indented JSON plus a newline (parents created); a torn file is never visible."""
    atomic_write_json(path, obj, indent=1, default=_json_default, make_parents=True)


def _json_default(o: Any) -> Any:
    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


def train_job(cfg: RunConfig, run_dir: Path) -> dict[str, Any]:
    """Train `cfg` in `run_dir` to completion (resuming a checkpoint left by a killed run); idempotent."""
    from drigm.run import CHECKPOINT, Trainer

    run_dir.mkdir(parents=True, exist_ok=True)
    with _locked(run_dir / ".lock"):
        done = run_dir / TRAIN_DONE
        if done.is_file():
            try:
                summary = json.loads(done.read_text())
                if summary.get("t_env", -1) >= cfg.steps:
                    return summary
            except (json.JSONDecodeError, AttributeError):
                pass
        resume = (run_dir / CHECKPOINT).is_file()
        summary = Trainer(cfg, run_dir).train(resume=resume)
        summary["resumed"] = resume
        _write_json(done, summary)
        return summary


def groupdr_stages(proto: Protocol, job: Job, cfg: RunConfig, out_root: Path, progress: bool = False) -> dict[str, Any]:
    """GroupDR's stages 1 and 2 for `job` (whose config `cfg` trains stage 3 under `out_root`): train (or
    resume, or reuse) the domain-randomised ``behaviour_algo`` run of the same seed and climate set, then fit its
    reward estimators into the file `cfg.learner.reward_model` names (relative to stage 3's run directory) unless
    a valid one is there. Both are idempotent and file-locked, so the algorithms of one seed share them. Returns
    what the stages did (directories, seconds, the estimator's metrics)."""
    from drigm.groupdr import build_estimator
    from drigm.reward_model import RewardModelError, load_estimator

    dr = proto.domain_randomisation
    assert dr is not None and cfg.learner.reward_model is not None
    s1job = proto.stage1_job(job)
    s1cfg = proto.job_config(s1job)
    s1dir = train_dir(out_root, s1job, s1cfg)
    tdir = train_dir(out_root, job, cfg)
    est_path = (tdir / cfg.learner.reward_model).resolve()
    if est_path.parent != s1dir.resolve():
        raise ProtocolError(f"GroupDR job {job.method} seed {job.seed}: its estimator {est_path} is not in {s1dir}")
    t0 = time.perf_counter()
    s1 = train_job(replace(s1cfg, out=str(s1dir), progress=progress), s1dir)
    t1 = time.perf_counter()
    with _locked(s1dir / ".estimator.lock"):
        try:
            meta = load_estimator(est_path)[1]
            built = False
        except RewardModelError:
            if est_path.exists():  # corrupt or foreign: refit (the file is ours to rewrite)
                est_path.unlink()
            meta = {"metrics": build_estimator(s1dir, est_path, dr.estimator, job.seed)}
            built = True
    return {
        "stage1_dir": _portable(s1dir, out_root),
        "stage1_t_env": s1.get("t_env"),
        "stage1_seconds": t1 - t0,
        "estimator": _portable(est_path, out_root),
        "estimator_built": built,
        "estimator_metrics": meta.get("metrics"),
        "estimator_seconds": time.perf_counter() - t1,
    }


def _protocols_of(spec: JobSpec) -> list[Protocol]:
    """The spec's protocol and the ones evaluated beside it (``also``), loaded at the spec's scale and preset."""
    return [load_protocol(p, spec.scale, preset=spec.preset) for p in (spec.protocol_path, *spec.also)]


def run_job(spec: JobSpec) -> dict[str, Any]:
    """Train (or resume, or reuse) one job once, evaluate it on the test environments of its protocol and of every
    protocol in ``spec.also`` (which share its training config), and write each protocol's results atomically."""
    from drigm.run import load_run

    protos = _protocols_of(spec)
    job = spec.job
    cfg = protos[0].job_config(job)
    key = config_key(cfg)
    for other in protos[1:]:
        if config_key(other.job_config(job)) != key:
            raise ProtocolError(
                f"protocols {protos[0].name!r} and {other.name!r} train {job.method} seed {job.seed} differently "
                "(their resolved run configs differ), so one run cannot serve both"
            )
    tdir = train_dir(Path(spec.out_root), job, cfg)
    cfg = replace(cfg, out=str(tdir), progress=spec.progress)
    paths = [result_path(Path(spec.out_root), p.name, p.label, job) for p in protos]
    err_paths = [p.with_suffix(".error.txt") for p in paths]
    start = time.perf_counter()
    results: list[dict[str, Any]] = []
    try:
        stages = None
        if job.target in DR_TARGETS and DR_TARGETS[job.target][1]:
            stages = groupdr_stages(protos[0], job, cfg, Path(spec.out_root), spec.progress)
        summary = train_job(cfg, tdir)
        if stages is not None:
            summary = {**summary, "groupdr": stages}
        trainer, info = load_run(tdir, device="cpu")
        try:
            for proto in protos:
                t0 = time.perf_counter()
                seeds = proto.test_seeds()
                tests = {}
                for t in proto.tests:
                    try:
                        tests[t.name] = evaluate_on(trainer, t, seeds, proto.score)
                    except IncompatibleTestEnvError as exc:  # recorded and reported; the other test envs still count
                        tests[t.name] = {"env": t.env, "incompatible": str(exc)}
                results.append(
                    _result(proto, job, cfg, tdir, summary, info, tests, time.perf_counter() - t0, Path(spec.out_root))
                )
        finally:
            trainer.env.close()
            trainer.eval_env.close()
    except Exception:
        for err in err_paths:
            atomic_write_bytes(err, traceback.format_exc().encode())
        raise
    seconds = time.perf_counter() - start
    for path, err, result in zip(paths, err_paths, results, strict=True):
        result["seconds"] = seconds
        _write_json(path, result)
        err.unlink(missing_ok=True)
    return {"path": str(paths[0]), "method": job.method, "seed": job.seed, "resumed": summary.get("resumed", False)}


def _result(
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
        "train_dir": _portable(tdir, out_root),
        "train": {**summary, "run_dir": _portable(tdir, out_root), "t_env": info["t_env"], "updates": info["updates"]},
        "curve": read_curve(tdir),
        "eval_episodes": proto.eval_episodes,
        "eval_seed": proto.eval_seed,
        "test_seeds": proto.test_seeds(),
        "score_label": proto.score.label if proto.score is not None else None,
        "tests": tests,
        "eval_seconds": eval_seconds,
        "finished_at": time.strftime("%Y-%m-%dT%H:%M:%S"),
    }


def _portable(path: Path, root: Path) -> str:
    """`path` relative to the sweep's output root `root` when it lies below it, else absolute: results files are
    committed and moved, and are read from any working directory (``train_dir`` = ``--out-root`` / that)."""
    resolved = Path(path).resolve()
    try:
        return str(resolved.relative_to(Path(root).resolve()))
    except ValueError:
        return str(resolved)


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


def is_finished(path: Path, proto: Protocol, job: Job, corrupt: str = "raise") -> bool:
    """True when `path` holds a valid results file for exactly this protocol, scale, job, config and test set.

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
            and r["config_key"] == config_key(proto.job_config(job))
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


# ===== backends ===================================================================================
def _init_worker() -> None:
    import torch

    torch.set_num_threads(1)
    os.environ.setdefault("OMP_NUM_THREADS", "1")


def _run_in_worker(spec: JobSpec) -> dict[str, Any]:
    _init_worker()
    return run_job(spec)


def _run_inline(specs: list[JobSpec], bar: Any) -> list[tuple[JobSpec, str]]:
    """One worker: run the jobs in this process, one after another (no process start-up cost)."""
    failures: list[tuple[JobSpec, str]] = []
    _init_worker()
    for spec in specs:
        try:
            run_job(spec)
        except Exception as exc:  # recorded like a worker's failure; the error file holds the traceback
            failures.append((spec, f"{type(exc).__name__}: {exc}"))
            bar.write(f"FAILED {spec.job.method} seed {spec.job.seed}: {type(exc).__name__}: {exc}")
        bar.update(1)
    return failures


DEFAULT_RETRIES = 2
"""How many times the local backend restarts a job whose worker process died (from its last checkpoint)."""

_PR_SET_PDEATHSIG = 1


def _watch_parent(parent_pid: int, interval: float) -> None:
    """Exit this process as soon as its parent is no longer `parent_pid` (the parent died; we were reparented)."""
    while True:
        time.sleep(interval)
        if os.getppid() != parent_pid:
            os._exit(128 + signal.SIGKILL)


def die_with_parent(parent_pid: int, interval: float = 1.0) -> None:
    """Make this process exit when its parent `parent_pid` dies, whatever signal killed the parent.

    On Linux the kernel delivers SIGKILL at the parent's death (``prctl(PR_SET_PDEATHSIG)``); everywhere a daemon
    thread also polls ``os.getppid()`` every `interval` seconds. A parent already gone exits at once.
    """
    if sys.platform.startswith("linux"):
        import ctypes

        with contextlib.suppress(OSError, AttributeError):
            ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0)
    if os.getppid() != parent_pid:
        os._exit(128 + signal.SIGKILL)
    threading.Thread(target=_watch_parent, args=(parent_pid, interval), name="drigm-parent-watch", daemon=True).start()


def _worker_main(conn: Any, parent_pid: int) -> None:
    """A supervised worker: run the JobSpecs the supervisor sends, one at a time, answering each with
    ("ok", result) or ("error", message); a None (or a closed pipe) ends it. It dies with its parent."""
    die_with_parent(parent_pid)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the supervisor's to handle: it stops the workers
    _init_worker()
    while True:
        try:
            spec = conn.recv()
        except (EOFError, OSError):
            return
        if spec is None:
            return
        try:
            result = run_job(spec)
        except Exception as exc:  # the job failed (its error file holds the traceback); the worker goes on
            conn.send(("error", f"{type(exc).__name__}: {exc}"))
        else:
            conn.send(("ok", result))


def _death_reason(proc: Any) -> str:
    """Why a worker process ended: the signal that killed it, or its exit status."""
    proc.join(timeout=5)
    code = proc.exitcode
    if code is None:
        return f"its worker process (pid {proc.pid}) stopped answering"
    if code < 0:
        try:
            name = signal.Signals(-code).name
        except ValueError:
            name = f"signal {-code}"
        return f"its worker process (pid {proc.pid}) was killed by {name}"
    return f"its worker process (pid {proc.pid}) exited with status {code}"


@dataclass
class _Slot:
    proc: Any
    conn: Any
    spec: JobSpec | None = None


def _stop_workers(slots: list[_Slot]) -> None:
    """Terminate (then kill, after 5 s) every worker of `slots` and reap it."""
    for slot in slots:
        if slot.proc.is_alive():
            slot.proc.terminate()
    deadline = time.monotonic() + 5
    for slot in slots:
        slot.proc.join(timeout=max(0.0, deadline - time.monotonic()))
        if slot.proc.is_alive():
            slot.proc.kill()
            slot.proc.join(timeout=5)
        slot.conn.close()


def _run_local(
    specs: list[JobSpec], workers: int, bar: Any, retries: int = DEFAULT_RETRIES
) -> tuple[list[tuple[JobSpec, str]], list[tuple[JobSpec, str]]]:
    """Supervise `workers` spawned processes running `specs`; returns (failed jobs, retried jobs) with reasons.

    Guarantees: a job whose worker dies (any signal, any exit) fails alone; it is run again, resuming its last
    checkpoint, up to `retries` times in a fresh worker, and the other jobs go on. A job that raises fails
    without retry (the error is deterministic). Workers die with this process; on an exception here (Ctrl-C,
    SIGTERM turned into SystemExit) they are terminated before it propagates.
    """
    ctx = get_context("spawn")
    queue = deque(specs)
    deaths: dict[int, list[str]] = {}  # id(spec) -> why its workers died (JobSpec need not be hashable)
    failures: list[tuple[JobSpec, str]] = []
    slots: list[_Slot] = []

    def start() -> _Slot:
        parent_conn, child_conn = ctx.Pipe(duplex=True)
        proc = ctx.Process(target=_worker_main, args=(child_conn, os.getpid()), name="drigm-sweep-worker")
        proc.start()
        child_conn.close()
        slot = _Slot(proc, parent_conn)
        slots.append(slot)
        return slot

    def assign(slot: _Slot) -> None:
        """Give `slot` the next job, or release its worker when none is left."""
        if queue:
            slot.spec = queue.popleft()
            with contextlib.suppress(OSError):  # a worker that just died: its sentinel reports it with this job
                slot.conn.send(slot.spec)
        else:
            slot.spec = None
            with contextlib.suppress(OSError):
                slot.conn.send(None)

    def failed(spec: JobSpec, msg: str) -> None:
        failures.append((spec, msg))
        bar.write(f"FAILED {spec.job.method} seed {spec.job.seed}: {msg}")
        bar.update(1)

    try:
        for _ in range(min(workers, len(queue))):
            assign(start())
        while any(slot.spec is not None for slot in slots):
            busy = [slot for slot in slots if slot.spec is not None]
            mp_connection.wait([slot.conn for slot in busy] + [slot.proc.sentinel for slot in busy])
            for slot in busy:
                spec = slot.spec
                assert spec is not None
                message: tuple[str, Any] | None = None
                try:
                    if slot.conn.poll():
                        message = slot.conn.recv()
                    elif slot.proc.is_alive():
                        continue
                except (EOFError, OSError):
                    message = None
                if message is not None:
                    kind, payload = message
                    if kind == "ok":
                        bar.update(1)
                    else:
                        failed(spec, payload)
                    assign(slot)
                    continue
                # the worker died holding `spec`: only that job is affected
                reason = _death_reason(slot.proc)
                slot.conn.close()
                slots.remove(slot)
                history = deaths.setdefault(id(spec), [])
                history.append(reason)
                if len(history) <= retries:
                    bar.write(
                        f"RETRY {spec.job.method} seed {spec.job.seed} ({len(history)}/{retries}): {reason}; "
                        "resuming from its last checkpoint in a new worker"
                    )
                    queue.appendleft(spec)
                else:
                    msg = f"WorkerDied: {reason} ({len(history)} times; retried {retries} times)"
                    with contextlib.suppress(OSError, ConfigError):
                        for proto in _protocols_of(spec):
                            out = result_path(Path(spec.out_root), proto.name, proto.label, spec.job)
                            atomic_write_bytes(out.with_suffix(".error.txt"), (msg + "\n").encode())
                    failed(spec, msg)
                if queue:
                    assign(start())
    except BaseException:  # interrupted or terminated: stop the workers too (their runs resume next time)
        _stop_workers(slots)
        raise
    for slot in slots:  # every worker was sent None: let them exit, then reap
        slot.proc.join(timeout=10)
    _stop_workers(slots)
    failed_ids = {id(spec) for spec, _ in failures}
    retried = [(s, "; ".join(deaths[id(s)])) for s in specs if id(s) in deaths and id(s) not in failed_ids]
    return failures, retried


def _exit_on_sigterm() -> None:
    """In the main thread, turn SIGTERM into SystemExit, so ``kill`` of a sweep stops its workers as Ctrl-C does
    (orphaned workers would otherwise keep training and hold their run directories' locks)."""
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))


def _run_ray(
    specs: list[JobSpec], workers: int | None, bar: Any, address: str | None, retries: int = DEFAULT_RETRIES
) -> list[tuple[JobSpec, str]]:
    try:
        import ray
    except ImportError as exc:
        raise RuntimeError("--backend ray needs the 'ray' package (pip install 'ray>=2.40')") from exc
    if not ray.is_initialized():
        if address:
            ray.init(address=address)
        else:
            ray.init(num_cpus=workers, include_dashboard=False)
    remote = ray.remote(num_cpus=1, max_retries=retries)(_run_in_worker)  # retries: worker deaths only
    refs = {remote.remote(s): s for s in specs}
    failures: list[tuple[JobSpec, str]] = []
    while refs:
        ready, _ = ray.wait(list(refs), num_returns=1)
        for ref in ready:
            spec = refs.pop(ref)
            try:
                ray.get(ref)
            except Exception as exc:  # a RayTaskError wraps the worker's exception
                cause = getattr(exc, "cause", None) or exc
                failures.append((spec, f"{type(cause).__name__}: {cause}"))
                bar.write(f"FAILED {spec.job.method} seed {spec.job.seed}: {type(cause).__name__}: {cause}")
            bar.update(1)
    return failures


# ===== the sweep ==================================================================================
@dataclass
class SweepSummary:
    """What a sweep did: jobs in total, skipped as finished, run, failed (with messages), and the results dir."""

    total: int
    skipped: int
    ran: int
    failed: list[tuple[str, int, str]]
    results_dir: Path
    seconds: float
    retried: list[tuple[str, int, str]] = field(default_factory=list)
    """Jobs that finished after their worker died (method, seed, why the worker died), local backend."""


def _seed_list(proto: Protocol, seeds: int | Sequence[int] | None) -> list[int]:
    if seeds is None:
        return list(proto.seeds)
    if isinstance(seeds, int):
        if not 1 <= seeds <= len(proto.seeds):
            raise ProtocolError(
                f"--seeds {seeds}: protocol {proto.name!r} ({proto.scale}) lists {len(proto.seeds)} seeds "
                f"{proto.seeds}; give 1..{len(proto.seeds)} or an explicit comma-separated list"
            )
        return list(proto.seeds[:seeds])
    out = [int(s) for s in seeds]
    if not out or any(s < 0 for s in out):
        raise ProtocolError(f"--seeds {out}: give a non-empty list of seeds >= 0")
    twice = sorted({s for s in out if out.count(s) > 1})
    if twice:
        raise ProtocolError(f"--seeds {out}: seed(s) {twice} given twice (a seed is one run; list each once)")
    return out


def _update_manifest(path: Path, proto: Protocol, jobs: list[Job]) -> None:
    """Add `jobs` to the manifest at `path` (the union over sweeps); guarantees no entry is lost to a concurrent
    sweep of the same protocol: the read-merge-write holds an exclusive lock (``.sweep.json.lock`` beside it)."""
    with _locked(path.with_name(f".{path.name}.lock")):
        old: list[dict[str, Any]] = []
        if path.is_file():
            with contextlib.suppress(OSError, json.JSONDecodeError, KeyError, TypeError):
                old = json.loads(path.read_text())["jobs"]
        seen = {(j["method"], j["seed"]) for j in old}
        new = old + [{"method": j.method, **asdict(j)} for j in jobs if (j.method, j.seed) not in seen]
        _write_json(
            path,
            {
                "protocol": proto.name,
                "scale": proto.scale,
                "preset": proto.preset,
                "tests": [t.name for t in proto.tests],
                "jobs": new,
            },
        )


def resolve_jobs(
    protocol: str | Path | Sequence[str | Path],
    algos: Sequence[str] | None = None,
    targets: Sequence[str] | None = None,
    sets: Sequence[str] | None = None,
    seeds: int | Sequence[int] | None = None,
    scale: str = "full",
    preset: str | None = None,
    rhos: str | Sequence[float] | dict[str, Sequence[float]] | None = None,
) -> tuple[list[Protocol], list[Job]]:
    """The protocols and the jobs that :func:`sweep` would train for these arguments, running nothing.

    Guarantees every protocol trains each job with the same config (ProtocolError naming the first that does not).
    """
    names = _csv(protocol) if isinstance(protocol, str) else [protocol] if isinstance(protocol, Path) else protocol
    if not names:
        raise ProtocolError("no protocol given")
    protos = [load_protocol(p, scale, preset=preset) for p in names]
    proto = protos[0]
    chosen_sets = list(sets or proto.sets)
    jobs = proto.jobs(
        list(algos or proto.algos),
        list(targets or proto.targets),
        chosen_sets,
        _seed_list(proto, seeds),
        rhos=_rho_axis(proto, chosen_sets, rhos),
    )
    # every job's config is built here, so that a refused job (a control that would repeat 'none') stops the
    # sweep before anything is written to its manifest
    keys = [config_key(proto.job_config(j)) for j in jobs]
    for other in protos[1:]:
        for j, key in zip(jobs, keys, strict=True):
            if config_key(other.job_config(j)) != key:
                raise ProtocolError(
                    f"protocols {proto.name!r} and {other.name!r} train {j.method} seed {j.seed} differently "
                    f"(scale {scale}, preset {proto.preset}); sweep them separately"
                )
    return protos, jobs


def sweep(
    protocol: str | Path | Sequence[str | Path],
    algos: Sequence[str] | None = None,
    targets: Sequence[str] | None = None,
    sets: Sequence[str] | None = None,
    seeds: int | Sequence[int] | None = None,
    backend: str = "local",
    workers: int | None = None,
    out_root: Path = DEFAULT_OUT,
    scale: str = "full",
    ray_address: str | None = None,
    progress: bool = True,
    preset: str | None = None,
    retries: int = DEFAULT_RETRIES,
    rhos: str | Sequence[float] | dict[str, Sequence[float]] | None = None,
) -> SweepSummary:
    """Run every unfinished job of the protocol (None = the protocol's defaults); finished ones are skipped.

    Several protocols (a list, or names joined by commas) must share their training configs: each job then
    trains once and is evaluated on every protocol's tests; its jobs (algos, sets, seeds) are the first one's.
    A job is finished when every protocol's results file for it is.

    With several local workers the sweep supervises them: a job whose worker process dies is rerun from its last
    checkpoint up to `retries` times while the other jobs go on (Ray: its own task retries, the same count); with
    one worker the jobs run in this process.

    `rhos` trains a rho axis: ``"grid"`` (the protocol's ``rho_grid`` for each chosen set), a list of radii for
    every chosen set, or ``{set: radii}``; None trains each (set, algo)'s protocol rho.
    """
    if backend not in BACKENDS:
        raise ProtocolError(f"backend={backend!r} is not one of {', '.join(BACKENDS)}")
    if workers is not None and (isinstance(workers, bool) or not isinstance(workers, int) or workers < 1):
        raise ProtocolError(f"workers={workers!r} must be an integer >= 1")
    if isinstance(retries, bool) or not isinstance(retries, int) or retries < 0:
        raise ProtocolError(f"retries={retries!r} must be an integer >= 0")
    protos, jobs = resolve_jobs(protocol, algos, targets, sets, seeds, scale, preset, rhos)
    proto = protos[0]
    out_root = Path(out_root).resolve()
    for p in protos:
        rdir = result_dir(out_root, p.name, p.label)
        rdir.mkdir(parents=True, exist_ok=True)
        remove_stale_temps(rdir, recursive=True, min_age_s=STALE_TEMP_AGE_S)  # left by a killed sweep's writes
        _update_manifest(rdir / "sweep.json", p, jobs)
    rdir = result_dir(out_root, proto.name, proto.label)
    todo = [
        j
        for j in jobs
        if not all(is_finished(result_path(out_root, p.name, p.label, j), p, j, corrupt="set-aside") for p in protos)
    ]
    # seed-major order: every method's first seed before any method's second, so a sweep stopped part-way
    # leaves comparable methods (the sort is stable: methods keep their order within a seed)
    seed_rank = {seed: i for i, seed in enumerate(dict.fromkeys(j.seed for j in jobs))}
    todo.sort(key=lambda j: seed_rank[j.seed])
    also = tuple(str(p.path.resolve()) for p in protos[1:])
    specs = [
        JobSpec(proto.name, str(proto.path.resolve()), proto.scale, j, str(out_root), preset=proto.preset, also=also)
        for j in todo
    ]
    from tqdm import tqdm

    start = time.perf_counter()
    n_workers = max(1, min(workers or (os.cpu_count() or 1), len(specs) or 1))
    print(
        f"sweep {', '.join(p.name for p in protos)} ({proto.label}): {len(jobs)} jobs, {len(jobs) - len(todo)} "
        f"finished, {len(todo)} to run on {backend} with {n_workers} worker(s); results under "
        f"{', '.join(str(result_dir(out_root, p.name, p.label)) for p in protos)}",
        flush=True,
    )
    failures: list[tuple[JobSpec, str]] = []
    retried: list[tuple[JobSpec, str]] = []
    if specs:
        with tqdm(total=len(specs), unit="run", disable=not progress, file=sys.stderr) as bar:
            if backend == "local" and n_workers == 1:
                failures = _run_inline(specs, bar)
            elif backend == "local":
                failures, retried = _run_local(specs, n_workers, bar, retries)
            else:
                failures = _run_ray(specs, workers, bar, ray_address, retries)
    return SweepSummary(
        total=len(jobs),
        skipped=len(jobs) - len(todo),
        ran=len(specs) - len(failures),
        failed=[(s.job.method, s.job.seed, msg) for s, msg in failures],
        results_dir=rdir,
        seconds=time.perf_counter() - start,
        retried=[(s.job.method, s.job.seed, msg) for s, msg in retried],
    )


def _rho_axis(
    proto: Protocol, sets: list[str], rhos: str | Sequence[float] | dict[str, Sequence[float]] | None
) -> dict[str, list[float]] | None:
    """The radii per set that a sweep trains (see :func:`sweep`); ProtocolError naming what is missing."""
    if rhos is None:
        return None
    if isinstance(rhos, str):
        if rhos != "grid":
            raise ProtocolError(f"rhos={rhos!r}: give 'grid', a list of radii or {{set: radii}}")
        missing = [s for s in sets if s not in proto.rho_grid]
        if missing:
            raise ProtocolError(
                f"protocol {proto.name!r} has no rho_grid for set(s) {missing} (it has {sorted(proto.rho_grid)})"
            )
        return {s: list(proto.rho_grid[s]) for s in sets}
    if isinstance(rhos, dict):
        return {s: [float(r) for r in v] for s, v in rhos.items()}
    return {s: [float(r) for r in rhos] for s in sets}


def _rho_arg(text: str) -> tuple[str | None, list[float] | str]:
    """One ``--rho`` value: ``grid``, ``0,0.004,0.008`` (every chosen set) or ``SET=0,0.1`` (one set)."""
    set_name, sep, values = text.partition("=")
    if not sep:
        set_name, values = "", text
    elif not set_name.strip():
        raise argparse.ArgumentTypeError(f"--rho {text!r}: no set name before '=' (e.g. tv=0,0.1)")
    if values.strip() == "grid" and not sep:
        return None, "grid"
    try:
        radii = [float(v) for v in _strict_csv(f"--rho {text!r}: radii", "0,0.004,0.008")(values)]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"--rho {text!r}: give 'grid', radii like 0,0.004,0.008, or SET=radii like tv=0,0.1"
        ) from None
    if not radii:
        raise argparse.ArgumentTypeError(f"--rho {text!r}: no radii given")
    return (set_name.strip() or None), radii


def _rhos_of(given: list[tuple[str | None, list[float] | str]] | None) -> Any:
    """The `rhos` argument of :func:`sweep` from the ``--rho`` options (ProtocolError when they conflict)."""
    if not given:
        return None
    if len(given) == 1 and given[0][0] is None:
        return given[0][1]
    if any(s is None for s, _ in given):
        raise ProtocolError("--rho: give either one 'grid' or radii list for every set, or SET=radii per set")
    out: dict[str, list[float]] = {}
    for s, radii in given:
        assert s is not None and not isinstance(radii, str)
        if s in out:
            raise ProtocolError(f"--rho: set {s!r} given twice")
        out[s] = radii
    return out


def _csv(text: str) -> list[str]:
    return [s.strip() for s in text.split(",") if s.strip()]


def _strict_csv(flag: str, example: str) -> Callable[[str], list[str]]:
    """An argparse type: a comma-separated list with no empty item (``''`` or ``a,,b`` refused, naming `flag`)."""

    def parse(text: str) -> list[str]:
        items = [s.strip() for s in text.split(",")]
        if not any(items):
            raise argparse.ArgumentTypeError(f"{flag} {text!r}: an empty list; give e.g. {example}")
        if not all(items):
            raise argparse.ArgumentTypeError(f"{flag} {text!r}: an empty item between commas; give e.g. {example}")
        return items

    return parse


def _seeds_arg(text: str) -> int | list[int]:
    parts = _csv(text)
    try:
        if len(parts) == 1 and "," not in text:
            return int(parts[0])
        return [int(p) for p in parts]
    except ValueError:
        raise argparse.ArgumentTypeError(f"--seeds {text!r}: give a count (5) or a list (0,1,10)") from None


def sweep_parser(prog: str = "drigm sweep") -> argparse.ArgumentParser:
    """The argument parser of ``drigm sweep``."""
    p = argparse.ArgumentParser(prog=prog, description="Train and evaluate every combination of a named protocol.")
    p.add_argument(
        "protocol",
        help="a protocol name (experiments/protocols/NAME.yaml) or a path to a protocol YAML; several joined by "
        "commas share each job's training run (their training configs must agree)",
    )
    p.add_argument(
        "--algos",
        type=_strict_csv("--algos", "vdn,qmix"),
        default=None,
        help="comma-separated, e.g. vdn,qmix,qtran (default: protocol)",
    )
    p.add_argument(
        "--targets",
        type=_strict_csv("--targets", "none,exact"),
        default=None,
        help="comma-separated among none,exact,paper,discount,schedule,doubleq,dr,dr-paper,groupdr,groupdr-paper "
        "(discount: the matched control of contamination, non-robust at gamma (1 - rho); schedule: non-robust with "
        "a set's update schedule (its set_overrides' learner part), the control of TV's schedule; doubleq: "
        "non-robust with double Q-learning, the control of the pessimism of TV's min(V_hat, aux); dr: per-episode "
        "domain randomisation over the protocol's leak-free climate set, dr-paper over the paper's; "
        "groupdr(-paper): the paper's GroupDR, its stage-1 VDN dr run and reward estimators built inside the job)",
    )
    p.add_argument(
        "--sets",
        type=_strict_csv("--sets", "contamination,tv"),
        default=None,
        help="comma-separated among contamination,tv",
    )
    p.add_argument(
        "--rho",
        type=_rho_arg,
        action="append",
        default=None,
        help="a rho axis: 'grid' (the protocol's rho_grid), radii for every chosen set (0,0.004,0.008), or "
        "SET=radii, repeatable (--rho contamination=0,0.008 --rho tv=0,0.2); default: the protocol's rho",
    )
    p.add_argument("--seeds", type=_seeds_arg, default=None, help="N (the protocol's first N seeds) or a list 0,1,10")
    p.add_argument("--backend", choices=BACKENDS, default="local")
    p.add_argument("--workers", type=int, default=None, help="parallel runs (default: CPU count)")
    p.add_argument(
        "--retries",
        type=int,
        default=DEFAULT_RETRIES,
        help=f"reruns of a job whose worker process died, from its last checkpoint (default {DEFAULT_RETRIES})",
    )
    p.add_argument("--ray-address", default=None, help="an existing Ray cluster (default: start a local instance)")
    p.add_argument("--scale", choices=SCALES, default="full")
    p.add_argument("--preset", default=None, help="a named training preset of the protocol (default: its own)")
    p.add_argument("--out-root", type=Path, default=DEFAULT_OUT, help="run and results root (default experiments/runs)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    return p


def sweep_main(argv: list[str]) -> int:
    """``drigm sweep PROTOCOL ...``: 0 when every job finished, 1 when some failed, 2 on a configuration error."""
    args = sweep_parser().parse_args(argv)
    _exit_on_sigterm()
    try:
        if args.rho and args.targets is not None and not set(args.targets) & set(RHO_TARGETS):
            raise ProtocolError(
                f"--rho with --targets {','.join(args.targets)}: none of them reads rho (only "
                f"{', '.join(sorted(RHO_TARGETS))} do); the radii would be ignored"
            )
        s = sweep(
            args.protocol,
            algos=args.algos,
            targets=args.targets,
            sets=args.sets,
            seeds=args.seeds,
            backend=args.backend,
            workers=args.workers,
            out_root=args.out_root,
            scale=args.scale,
            ray_address=args.ray_address,
            progress=not args.no_progress,
            preset=args.preset,
            retries=args.retries,
            rhos=_rhos_of(args.rho),
        )
    except (ConfigError, RuntimeError) as exc:
        print(f"drigm sweep: error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        print(f"drigm sweep: error: {describe_os_error(exc)}", file=sys.stderr)
        return 2
    print(
        f"done in {s.seconds:.0f} s: {s.total} jobs, {s.skipped} already finished, {s.ran} run, "
        f"{len(s.failed)} failed, {len(s.retried)} finished after a worker died; results in {s.results_dir}"
    )
    for method, seed, msg in s.retried:
        print(f"  RETRIED {method} seed {seed} (finished): {msg}")
    for method, seed, msg in s.failed:
        print(f"  FAILED {method} seed {seed}: {msg}", file=sys.stderr)
    return 1 if s.failed else 0


if __name__ == "__main__":
    raise SystemExit(sweep_main(sys.argv[1:]))
