"""The unit of work of a sweep: one job resolved once (its config, config key, protocols and GroupDR stages), and
what a worker does with it (train or resume once, evaluate on every protocol's tests, write the results files).

A :class:`JobSpec` is built by :func:`drigm.sweep.job_spec` in the sweep's process; workers, local or Ray,
read nothing but it: no protocol file is loaded again and no config is rebuilt.
"""

from __future__ import annotations

import time
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from drigm.config import RunConfig
from drigm.evaluation import IncompatibleTestEnvError, evaluate_on
from drigm.protocol import Job, Protocol
from drigm.results_store import result_path, result_record, write_json
from drigm.reward_model import EstimatorConfig
from reference.atomic_io import atomic_write_bytes


@dataclass(frozen=True)
class Stage1:
    """GroupDR's stages 1-2 of one job, resolved by its protocol: the domain-randomised behaviour run (its job and
    config) whose data fits the reward estimators, and the estimators' settings."""

    job: Job
    config: RunConfig
    estimator: EstimatorConfig


@dataclass(frozen=True)
class JobSpec:
    """One job, resolved once, as plain data for a worker (picklable for process pools and Ray).

    ``config`` is the resolved run config (its ``out`` the training directory), ``config_key`` its digest, and
    ``protocols`` the protocols whose test environments the run is evaluated on (the first is the sweep's; all
    train the job with this config)."""

    job: Job
    config: RunConfig
    config_key: str
    protocols: tuple[Protocol, ...]
    out_root: str
    stage1: Stage1 | None = None

    @property
    def train_dir(self) -> Path:
        """The run's training directory."""
        return Path(self.config.out)

    def result_paths(self) -> list[Path]:
        """The results file of this job for each of its protocols, in order."""
        return [result_path(Path(self.out_root), p.name, p.label, self.job) for p in self.protocols]


def run_job(spec: JobSpec) -> dict[str, Any]:
    """Train (or resume, or reuse) one job once, evaluate it on the test environments of every protocol of the
    spec, and write each protocol's results file atomically; on an exception every protocol's ``.error.txt``
    holds the traceback, and no results file is written."""
    from drigm.run import load_run, train_job

    job, cfg, tdir, out_root = spec.job, spec.config, spec.train_dir, Path(spec.out_root)
    paths = spec.result_paths()
    err_paths = [p.with_suffix(".error.txt") for p in paths]
    start = time.perf_counter()
    results: list[dict[str, Any]] = []
    try:
        stages = None
        if spec.stage1 is not None:
            from drigm.groupdr import groupdr_stages

            s1 = spec.stage1
            stages = groupdr_stages(job, cfg, s1.job, s1.config, s1.estimator, out_root, cfg.progress)
        summary = train_job(cfg, tdir)
        if stages is not None:
            summary = {**summary, "groupdr": stages}
        trainer, info = load_run(tdir, device="cpu")
        try:
            for proto in spec.protocols:
                t0 = time.perf_counter()
                seeds = proto.test_seeds()
                tests = {}
                for t in proto.tests:
                    try:
                        tests[t.name] = evaluate_on(trainer, t, seeds, proto.score)
                    except IncompatibleTestEnvError as exc:  # recorded and reported; the other test envs still count
                        tests[t.name] = {"env": t.env, "incompatible": str(exc)}
                results.append(
                    result_record(proto, job, cfg, tdir, summary, info, tests, time.perf_counter() - t0, out_root)
                )
        finally:
            trainer.env.close()
            trainer.eval_env.close()
    except Exception:
        for err in err_paths:
            atomic_write_bytes(err, traceback.format_exc().encode(), make_parents=True)
        raise
    seconds = time.perf_counter() - start
    for path, err, result in zip(paths, err_paths, results, strict=True):
        result["seconds"] = seconds
        write_json(path, result)
        err.unlink(missing_ok=True)
    return {"path": str(paths[0]), "method": job.method, "seed": job.seed, "resumed": summary.get("resumed", False)}
