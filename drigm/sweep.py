"""Sweeps over named protocols: train every (algo, target, set, seed) once, then evaluate it on every test
environment of every protocol given.

The jobs are resolved once here (:func:`resolve`: each protocol file read once, each job's config and config key
built once) into :class:`drigm.jobs.JobSpec` values that the workers (:mod:`drigm.workers`) run as they are. Where
runs and results live on disk, and when a job counts as finished, is :mod:`drigm.results_store`; finished jobs are
skipped, and a killed run resumes from its last checkpoint by simply running the sweep again.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

from drigm.config import RunConfig
from drigm.jobs import JobSpec, Stage1
from drigm.protocol import DR_TARGETS, Job, Protocol, ProtocolError, config_key, load_protocol
from drigm.results_store import (
    DEFAULT_OUT,
    STALE_TEMP_AGE_S,
    is_finished,
    result_dir,
    result_path,
    train_dir,
    update_manifest,
)
from drigm.workers import DEFAULT_RETRIES, run_inline, run_local, run_ray
from reference.atomic_io import remove_stale_temps

BACKENDS = ("local", "ray")


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


@dataclass(frozen=True)
class Resolved:
    """A sweep's protocols and jobs, each job's run config and config key built once."""

    protocols: list[Protocol]
    jobs: list[Job]
    configs: list[RunConfig]
    keys: list[str]


def resolve(
    protocol: str | Path | Sequence[str | Path],
    algos: Sequence[str] | None = None,
    targets: Sequence[str] | None = None,
    sets: Sequence[str] | None = None,
    seeds: int | Sequence[int] | None = None,
    scale: str = "full",
    preset: str | None = None,
    rhos: str | Sequence[float] | dict[str, Sequence[float]] | None = None,
) -> Resolved:
    """The protocols, jobs, configs and config keys that :func:`sweep` would train for these arguments, running
    nothing: each protocol file is read once and each job's config built once per protocol.

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
    configs = [proto.job_config(j) for j in jobs]
    keys = [config_key(c) for c in configs]
    for other in protos[1:]:
        for j, key in zip(jobs, keys, strict=True):
            if config_key(other.job_config(j)) != key:
                raise ProtocolError(
                    f"protocols {proto.name!r} and {other.name!r} train {j.method} seed {j.seed} differently "
                    f"(scale {scale}, preset {proto.preset}); sweep them separately"
                )
    return Resolved(protos, jobs, configs, keys)


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
    """The protocols and the jobs of :func:`resolve` (the same checks)."""
    r = resolve(protocol, algos, targets, sets, seeds, scale, preset, rhos)
    return r.protocols, r.jobs


def job_spec(r: Resolved, i: int, out_root: Path, progress: bool) -> JobSpec:
    """The worker's view of job `i` of `r`: its config pointed at its training directory under `out_root`, and
    GroupDR's stage-1 run resolved when the job needs one."""
    proto, job, cfg = r.protocols[0], r.jobs[i], r.configs[i]
    stage1 = None
    if job.target in DR_TARGETS and DR_TARGETS[job.target][1]:
        dr = proto.domain_randomisation
        if dr is None:
            raise ProtocolError(f"protocol {proto.name!r} defines no domain_randomisation for {job.method}")
        s1job = proto.stage1_job(job)
        stage1 = Stage1(s1job, proto.job_config(s1job), dr.estimator)
    return JobSpec(
        job=job,
        config=replace(cfg, out=str(train_dir(out_root, job, cfg)), progress=progress),
        config_key=r.keys[i],
        protocols=tuple(r.protocols),
        out_root=str(out_root),
        stage1=stage1,
    )


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
    r = resolve(protocol, algos, targets, sets, seeds, scale, preset, rhos)
    protos, jobs = r.protocols, r.jobs
    proto = protos[0]
    out_root = Path(out_root).resolve()
    for p in protos:
        rdir = result_dir(out_root, p.name, p.label)
        rdir.mkdir(parents=True, exist_ok=True)
        remove_stale_temps(rdir, recursive=True, min_age_s=STALE_TEMP_AGE_S)  # left by a killed sweep's writes
        update_manifest(rdir / "sweep.json", p, jobs)
    rdir = result_dir(out_root, proto.name, proto.label)
    todo = [
        i
        for i, j in enumerate(jobs)
        if not all(
            is_finished(result_path(out_root, p.name, p.label, j), p, j, corrupt="set-aside", key=r.keys[i])
            for p in protos
        )
    ]
    # seed-major order: every method's first seed before any method's second, so a sweep stopped part-way
    # leaves comparable methods (the sort is stable: methods keep their order within a seed)
    seed_rank = {seed: i for i, seed in enumerate(dict.fromkeys(j.seed for j in jobs))}
    todo.sort(key=lambda i: seed_rank[jobs[i].seed])
    specs = [job_spec(r, i, out_root, progress=False) for i in todo]
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
                failures = run_inline(specs, bar)
            elif backend == "local":
                failures, retried = run_local(specs, n_workers, bar, retries)
            else:
                failures = run_ray(specs, workers, bar, ray_address, retries)
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


def _csv(text: str) -> list[str]:
    return [s.strip() for s in text.split(",") if s.strip()]


if __name__ == "__main__":
    raise SystemExit("drigm.sweep is a library module: run `drigm sweep ...` (or `python -m drigm sweep ...`)")
