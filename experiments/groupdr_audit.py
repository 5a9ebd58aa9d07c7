"""Audit GroupDR runs: does each stage-3 policy's reward estimator still describe the transitions it visits?

``python experiments/groupdr_audit.py [RUN_DIR ...] [--root experiments/runs/train] [--episodes 5]
[--out experiments/results/groupdr-audit] [--fresh]``

With no RUN_DIR, every GroupDR stage-3 run under ``--root`` (directories named ``*-groupdr*-seed*``) is audited.
For each, :func:`drigm.groupdr.audit_estimator` replays its greedy policy in every climate of its
training environment and compares the true reward with the estimators' minimum, the reward its TD target used.
Writes ``OUT.md`` (a table per run) and ``OUT.json`` (every figure), both atomically. Run directories are not
committed, so the audit runs where the runs were trained and the result files are what is committed: a run
audited here replaces its entry in ``OUT.json``, and every other run already there is kept (``--fresh`` drops
them), so machines that each hold some of the runs add up to one audit.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from drigm.config import ConfigError  # noqa: E402
from drigm.groupdr import audit_estimator  # noqa: E402
from reference.atomic_io import atomic_write_json, atomic_write_text, describe_os_error  # noqa: E402


def find_runs(root: Path) -> list[Path]:
    """The GroupDR stage-3 run directories under `root` (finished or not), sorted by name."""
    return sorted(p for p in root.glob("*/*-groupdr*-seed*") if (p / "config.yaml").is_file())


class AuditFileError(ValueError):
    """An existing audit file cannot be read or is not one this script wrote; the message names the file."""


def load_previous(path: Path) -> list[dict[str, Any]]:
    """The run entries of the audit file `path` (none when it does not exist), each with its ``episodes``.

    Raises AuditFileError naming the file and the problem when it is unreadable, not JSON, or not an audit."""
    if not path.exists():
        return []
    try:
        data = json.loads(path.read_text())
    except OSError as exc:  # the project's description: the path, the reason and what to do about it
        raise AuditFileError(f"{path}: cannot read the previous audit: {describe_os_error(exc)}") from exc
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise AuditFileError(f"{path}: cannot read the previous audit ({exc}); pass --fresh to replace it") from exc
    runs = data.get("runs") if isinstance(data, dict) else None
    if not isinstance(runs, list) or not all(isinstance(r, dict) and isinstance(r.get("run"), str) for r in runs):
        raise AuditFileError(
            f"{path}: not a GroupDR audit (expected an object whose 'runs' is a list of objects each with a 'run' "
            "name); pass --fresh to replace it"
        )
    out = []
    for r in runs:  # files written before per-run episodes carry one top-level count
        if not isinstance(r.get("climates"), dict) or "t_env" not in r:
            raise AuditFileError(f"{path}: run {r['run']!r} lacks 't_env' or 'climates'; pass --fresh to replace it")
        episodes = r.get("episodes", data.get("episodes"))
        if isinstance(episodes, bool) or not isinstance(episodes, int) or episodes < 1:
            raise AuditFileError(f"{path}: run {r['run']!r} has episodes={episodes!r}, expected an integer >= 1")
        out.append({**r, "episodes": episodes})
    return out


def merge_audits(previous: list[dict[str, Any]], new: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Every run of `previous` and `new`, one entry per run name (the new one where both have it), sorted by name."""
    merged = {r["run"]: r for r in previous}
    merged.update({r["run"]: r for r in new})
    return [merged[name] for name in sorted(merged)]


def markdown(audits: list[dict[str, Any]]) -> str:
    """One table per audited run: per climate the true and estimated reward per step, the gap and its RMS."""
    lines = [
        "# GroupDR estimator audit",
        "",
        "Each stage-3 run's greedy policy, played in every climate of its training environment (episodes per "
        "climate in the run's heading). "
        "r: the true team reward per step; min r_hat: the minimum over the estimators' climates (the reward in "
        "the run's TD target); gap = min r_hat - r on the policy's own transitions (positive: the TD target is "
        "more optimistic than the truth). Compare the gap's RMS with the estimator's held-out error on the "
        "behaviour data (in the run's results file, `train.groupdr.estimator_metrics`).",
        "",
        "Rebuild: `python experiments/groupdr_audit.py`",
        "",
    ]
    for a in audits:
        lines += [f"## {a['run']} (t_env {a['t_env']}, {a['episodes']} episodes per climate)", ""]
        lines += [
            "| climate | steps | r per step | min r_hat per step | gap mean | gap RMS | share over-estimated "
            "| max abs r_hat | true return | estimated return |",
            "|---|---|---|---|---|---|---|---|---|---|",
        ]
        for name, c in a["climates"].items():
            lines.append(
                f"| {name} | {c['steps']} | {c['true_reward_mean']:.3f} | {c['min_estimate_mean']:.3f} | "
                f"{c['gap_mean']:+.3f} | {c['gap_rms']:.3f} | {c['overestimated_share']:.2f} | "
                f"{c['max_abs_estimate']:.2f} | {c['true_return_mean']:.1f} | {c['estimated_return_mean']:.1f} |"
            )
        lines.append("")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """0 when every run was audited, 1 when some could not be (each named on stderr), 2 on bad arguments."""
    p = argparse.ArgumentParser(prog="groupdr_audit", description=__doc__.split("\n\n")[0])
    p.add_argument("runs", nargs="*", type=Path, help="stage-3 run directories (default: every one under --root)")
    p.add_argument("--root", type=Path, default=ROOT / "experiments" / "runs" / "train")
    p.add_argument("--episodes", type=int, default=5, help="greedy episodes per climate (default 5)")
    p.add_argument("--out", type=Path, default=ROOT / "experiments" / "results" / "groupdr-audit")
    p.add_argument("--fresh", action="store_true", help="drop the runs of an existing OUT.json instead of keeping them")
    args = p.parse_args(argv)
    try:
        previous = [] if args.fresh else load_previous(args.out.with_suffix(".json"))
    except AuditFileError as exc:
        print(f"groupdr_audit: error: {exc}", file=sys.stderr)
        return 2
    runs = args.runs or find_runs(args.root)
    if not runs:
        print(f"groupdr_audit: no GroupDR run directories under {args.root}", file=sys.stderr)
        return 2
    audits, status = [], 0
    for i, run in enumerate(runs, 1):
        print(f"[{i}/{len(runs)}] {run.name}", file=sys.stderr, flush=True)
        try:
            audits.append({**audit_estimator(run, args.episodes), "episodes": args.episodes})
        except (ConfigError, RuntimeError) as exc:  # RewardModelError, CheckpointError: named, the rest go on
            print(f"groupdr_audit: {run}: {exc}", file=sys.stderr)
            status = 1
    if audits:
        merged = merge_audits(previous, audits)
        try:
            atomic_write_json(args.out.with_suffix(".json"), {"runs": merged})
            atomic_write_text(args.out.with_suffix(".md"), markdown(merged))
        except OSError as exc:
            print(f"groupdr_audit: error: {describe_os_error(exc)}", file=sys.stderr)
            return 2
        kept = len(merged) - len(audits)
        print(f"wrote {args.out.with_suffix('.md')} and .json ({len(audits)} run(s) audited, {kept} kept from before)")
    return status


if __name__ == "__main__":
    raise SystemExit(main())
