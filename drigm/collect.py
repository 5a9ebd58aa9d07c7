"""A protocol's results as a report reads them: every requested job found (or classified as missing, failed, stale or
unfinished), rescored in the protocol's units, and the per-seed and per-episode values the tables and plots use.

Every job the sweeps requested (``sweep.json``) is accounted for: finished, failed (an ``.error.txt`` file),
stale/invalid (a results file that does not match the protocol any more), unfinished (a training checkpoint
exists) or missing.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from drigm.config import ConfigError
from drigm.protocol import SCALES, Job, Protocol, load_protocol
from drigm.results_store import DEFAULT_OUT, is_finished, result_dir, result_path, train_dir

__all__ = [
    "AVERAGE",
    "DEFAULT_OUT",
    "Collected",
    "collect",
    "compatible_tests",
    "detect_scale",
    "episode_scores",
    "main_metric",
    "metrics_of",
    "requested_jobs",
    "rescore",
    "seed_average",
    "seed_means",
]

AVERAGE = "average"


@dataclass
class Collected:
    """The results found for a protocol at one scale, and what is missing."""

    proto: Protocol
    requested: list[Job]
    results: dict[str, dict[int, dict[str, Any]]] = field(default_factory=dict)  # method -> seed -> results
    missing: list[Job] = field(default_factory=list)
    failed: list[tuple[Job, str]] = field(default_factory=list)
    stale: list[Job] = field(default_factory=list)
    unfinished: list[Job] = field(default_factory=list)
    excluded: list[Job] = field(default_factory=list)  # requested, but left out on request (--exclude-seeds)

    def methods(self) -> list[str]:
        """Requested methods, in request order."""
        return list(dict.fromkeys(j.method for j in self.requested))

    def seeds_of(self, method: str) -> list[int]:
        """Requested seeds of `method`."""
        return [j.seed for j in self.requested if j.method == method]


def detect_scale(protocol: str, out_root: Path, preset: str | None = None) -> str:
    """The only scale with results for `protocol` (at `preset`) under `out_root`; ConfigError when none or several."""
    proto = load_protocol(protocol, preset=preset)
    name = proto.name
    prefix = "" if proto.preset is None else f"{proto.preset}/"
    found = [s for s in SCALES if (result_dir(out_root, name, prefix + s) / "sweep.json").is_file()]
    if not found:
        raise ConfigError(f"no sweep results for protocol {name!r} under {str(out_root)!r}; run `drigm sweep` first")
    if len(found) > 1:
        raise ConfigError(
            f"protocol {name!r} has results at several scales {found} under {str(out_root)!r}; pass --scale"
        )
    return found[0]


def requested_jobs(protocol: str, out_root: Path, scale: str, preset: str | None = None) -> tuple[Protocol, list[Job]]:
    """The protocol and the jobs its sweeps requested (its sweep.json); ConfigError when that file is absent or
    malformed."""
    proto = load_protocol(protocol, scale, preset=preset)
    manifest = result_dir(out_root, proto.name, proto.label) / "sweep.json"
    if not manifest.is_file():
        raise ConfigError(f"{str(manifest)!r} does not exist: no sweep of {proto.name!r} at scale {scale!r} was run")
    try:
        raw = json.loads(manifest.read_text())["jobs"]
        jobs = [Job(j["algo"], j["target"], j["set"], j["rho"], int(j["seed"]), j.get("tag", "")) for j in raw]
    except (ValueError, KeyError, TypeError, RecursionError) as exc:  # ValueError: bad JSON or not UTF-8
        raise ConfigError(f"{str(manifest)!r} is malformed: {str(exc)[:200]}") from None
    return proto, jobs


def collect(
    protocol: str,
    out_root: Path,
    scale: str,
    preset: str | None = None,
    exclude: frozenset[tuple[str, int]] = frozenset(),
) -> Collected:
    """Load every requested job's results (sweep.json), classifying the rest as missing, failed or stale; the
    (method, seed) pairs in `exclude` are set aside as excluded and enter no statistic."""
    proto, jobs = requested_jobs(protocol, out_root, scale, preset)
    col = Collected(proto, [j for j in jobs if (j.method, j.seed) not in exclude])
    col.excluded = [j for j in jobs if (j.method, j.seed) in exclude]
    for job in col.requested:
        path = result_path(out_root, proto.name, proto.label, job)
        err = path.with_suffix(".error.txt")
        if is_finished(path, proto, job):
            col.results.setdefault(job.method, {})[job.seed] = rescore(json.loads(path.read_text()), proto)
        elif err.is_file():
            lines = err.read_text().strip().splitlines()
            col.failed.append((job, lines[-1] if lines else "unknown error"))
        elif path.is_file():
            col.stale.append(job)
        elif (train_dir(out_root, job, proto.job_config(job)) / "checkpoint.pt").is_file():
            col.unfinished.append(job)
        else:
            col.missing.append(job)
    return col


def rescore(result: dict[str, Any], proto: Protocol) -> dict[str, Any]:
    """`result` with every test's per-episode scores recomputed from its returns by the protocol's score now (so a
    change of units, such as the paper's per-agent sum, rebuilds from the stored returns; no run is retrained)."""
    if proto.score is None:
        return result
    for t in result["tests"].values():
        if "returns" in t:
            t["score"] = [proto.score(float(x)) for x in t["returns"]]
    result["score_label"] = proto.score.label
    return result


def metrics_of(col: Collected) -> list[tuple[str, str]]:
    """(key, label) of the reported metrics: the score (or return), the return, and the win rate when defined."""
    out = []
    if col.proto.score is not None:
        out.append(("score", col.proto.score.label))
    out.append(("returns", "return"))
    any_won = any("won" in t for per in col.results.values() for r in per.values() for t in r["tests"].values())
    if any_won:
        out.insert(0, ("won", "win rate"))
    return out


def main_metric(col: Collected) -> tuple[str, str]:
    """(key, label) of the main metric: the normalised score when the protocol defines one, else the return."""
    return ("score", col.proto.score.label) if col.proto.score is not None else ("returns", "return")


def seed_means(col: Collected, method: str, test: str, key: str) -> list[float]:
    """Per-seed mean of metric `key` on test environment `test` (AVERAGE: the mean over the test environments)."""
    out = []
    for _, r in sorted(col.results.get(method, {}).items()):
        if test == AVERAGE:
            vals = [np.mean(np.asarray(t[key], dtype=np.float64)) for t in r["tests"].values() if key in t]
            if len(vals) < sum("incompatible" not in t for t in r["tests"].values()):
                continue  # a seed lacking the metric on some test env cannot enter the average
            if vals:
                out.append(float(np.mean(vals)))
        elif key in r["tests"].get(test, {}):
            out.append(float(np.mean(np.asarray(r["tests"][test][key], dtype=np.float64))))
    return out


def episode_scores(col: Collected, method: str, key: str, tests: list[str]) -> tuple[list[int], np.ndarray | None]:
    """The seeds of `method` with metric `key` on every test environment in `tests`, and their per-episode values
    as an array (envs, seeds, episodes) with envs in the order of `tests` (None when no seed has them all)."""
    seeds, rows = [], []
    for s, r in sorted(col.results.get(method, {}).items()):
        if all(key in r["tests"].get(t, {}) for t in tests):
            seeds.append(s)
            rows.append([r["tests"][t][key] for t in tests])
    if not seeds:
        return [], None
    return seeds, np.asarray(rows, dtype=np.float64).transpose(1, 0, 2)


def seed_average(result: dict[str, Any], key: str) -> float | None:
    """One run's metric `key` averaged over its test environments' episode means (None if an environment lacks it)."""
    tests = [t for t in result["tests"].values() if "incompatible" not in t]
    if not tests or any(key not in t for t in tests):
        return None
    return float(np.mean([np.mean(t[key]) for t in tests]))


def compatible_tests(col: Collected, method: str) -> list[str]:
    """The protocol's test environments on which no run of `method` was incompatible."""
    return [
        t.name
        for t in col.proto.tests
        if not any("incompatible" in r["tests"].get(t.name, {}) for r in col.results.get(method, {}).values())
    ]
