"""Audit GroupDR runs: does each stage-3 policy's reward estimator still describe the transitions it visits?

``python experiments/groupdr_audit.py [RUN_DIR ...] [--root experiments/runs/train] [--episodes 5]
[--out experiments/results/groupdr-audit]``

With no RUN_DIR, every GroupDR stage-3 run under ``--root`` (directories named ``*-groupdr*-seed*``) is audited.
For each, :func:`drigm.reward_estimator.audit_estimator` replays its greedy policy in every climate of its
training environment and compares the true reward with the estimators' minimum, the reward its TD target used.
Writes ``OUT.md`` (a table per run) and ``OUT.json`` (every figure), both atomically. Run directories are not
committed, so the audit runs where the runs were trained; the result files are what is committed.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from drigm.config import ConfigError  # noqa: E402
from drigm.reward_estimator import audit_estimator  # noqa: E402
from reference.atomic_io import atomic_write_json, atomic_write_text, describe_os_error  # noqa: E402


def find_runs(root: Path) -> list[Path]:
    """The GroupDR stage-3 run directories under `root` (finished or not), sorted by name."""
    return sorted(p for p in root.glob("*/*-groupdr*-seed*") if (p / "config.yaml").is_file())


def markdown(audits: list[dict[str, Any]], episodes: int) -> str:
    """One table per audited run: per climate the true and estimated reward per step, the gap and its RMS."""
    lines = [
        "# GroupDR estimator audit",
        "",
        f"Each stage-3 run's greedy policy, {episodes} episodes per climate of its training environment. "
        "r: the true team reward per step; min r_hat: the minimum over the estimators' climates (the reward in "
        "the run's TD target); gap = min r_hat - r on the policy's own transitions (positive: the TD target is "
        "more optimistic than the truth). Compare the gap's RMS with the estimator's held-out error on the "
        "behaviour data (in the run's results file, `train.groupdr.estimator_metrics`).",
        "",
        "Rebuild: `python experiments/groupdr_audit.py`",
        "",
    ]
    for a in audits:
        lines += [f"## {a['run']} (t_env {a['t_env']})", ""]
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
    args = p.parse_args(argv)
    runs = args.runs or find_runs(args.root)
    if not runs:
        print(f"groupdr_audit: no GroupDR run directories under {args.root}", file=sys.stderr)
        return 2
    audits, status = [], 0
    for i, run in enumerate(runs, 1):
        print(f"[{i}/{len(runs)}] {run.name}", file=sys.stderr, flush=True)
        try:
            audits.append(audit_estimator(run, args.episodes))
        except (ConfigError, RuntimeError) as exc:  # RewardModelError, CheckpointError: named, the rest go on
            print(f"groupdr_audit: {run}: {exc}", file=sys.stderr)
            status = 1
    if audits:
        try:
            atomic_write_json(args.out.with_suffix(".json"), {"episodes": args.episodes, "runs": audits})
            atomic_write_text(args.out.with_suffix(".md"), markdown(audits, args.episodes))
        except OSError as exc:
            print(f"groupdr_audit: error: {describe_os_error(exc)}", file=sys.stderr)
            return 2
        print(f"wrote {args.out.with_suffix('.md')} and .json ({len(audits)} run(s))")
    return status


if __name__ == "__main__":
    raise SystemExit(main())
