"""Relabel the building results of the old `paper-mlp` loop as preset `paper-mlp-v1` (issue 30).

Before issue 30 the `paper-mlp` preset lacked four settings of the seed paper's training loop (the TD reward added
once per agent, action 0 as the previous action before the first step, no stored final transition, one day sequence
for every run). Those settings are now part of `paper` and so of `paper-mlp`; the old loop is the preset
`paper-mlp-v1`. This script moves every results file under ``experiments/runs/<protocol>/paper-mlp/`` to
``.../paper-mlp-v1/``, after checking that its recorded config is exactly what `paper-mlp-v1` resolves for its job
(apart from the preset's name, the run directory and the GroupDR estimator's path, which contain the config key),
and rewrites its preset and config key, so that sweeps and reports find them under the old loop's name and never
mix them with runs of the new one. A file whose config does not match is left in place and named.

    python experiments/migrate_paper_mlp_v1.py [--runs-root experiments/runs] [--dry-run]
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path
from typing import Any

from drigm.protocol import Job, config_key, load_protocol
from reference.atomic_io import atomic_write_json

OLD, NEW = "paper-mlp", "paper-mlp-v1"


def _comparable(cfg: dict[str, Any]) -> dict[str, Any]:
    """The config without the fields that name the preset or the config key, or that config_key ignores."""
    d = json.loads(json.dumps(cfg))
    for k in ("out", "progress", "tensorboard", "preset"):  # config_key leaves the first three out too
        d.pop(k, None)
    if "reward_model" in d.get("learner", {}):
        # ../<stage-1 run>-seedK-<config key>/reward_estimator-<key>.pt: the keys name the preset's config
        d["learner"]["reward_model"] = re.sub(r"[0-9a-f]{12}", "<key>", d["learner"]["reward_model"])
    return d


def migrate_file(path: Path, new_path: Path, dry_run: bool) -> str | None:
    """Move one results file to the new preset; returns an error message instead when its config does not match."""
    r = json.loads(path.read_text())
    proto = load_protocol(r["protocol"], r["scale"], preset=NEW)
    j = r["job"]
    job = Job(j["algo"], j["target"], j["set"], j["rho"], j["seed"], j.get("tag", ""))
    cfg = proto.job_config(job)
    new = cfg.to_dict()
    if _comparable(new) != _comparable(r["config"]):
        return f"{path}: its config differs from what preset {NEW!r} resolves for job {job.method} seed {job.seed}"
    r["preset"] = NEW
    r["config"]["preset"] = NEW
    if "reward_model" in new["learner"]:
        r["config"]["learner"]["reward_model"] = new["learner"]["reward_model"]
    r["config_key"] = config_key(cfg)
    if not dry_run:
        atomic_write_json(new_path, r, indent=1, make_parents=True)
        path.unlink()
    return None


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs-root", type=Path, default=Path("experiments/runs"))
    ap.add_argument("--dry-run", action="store_true")
    a = ap.parse_args(argv)
    moved, errors = 0, []
    for old_dir in sorted(a.runs_root.glob(f"*/{OLD}")):
        new_dir = old_dir.with_name(NEW)
        for path in sorted(old_dir.rglob("seed*.json")):
            err = migrate_file(path, new_dir / path.relative_to(old_dir), a.dry_run)
            if err:
                errors.append(err)
            else:
                moved += 1
        for manifest in sorted(old_dir.rglob("sweep.json")):
            m = json.loads(manifest.read_text())
            m["preset"] = NEW
            if not a.dry_run:
                atomic_write_json(new_dir / manifest.relative_to(old_dir), m, indent=1, make_parents=True)
                manifest.unlink()
    print(f"{'would move' if a.dry_run else 'moved'} {moved} results file(s) from {OLD!r} to {NEW!r}")
    for e in errors:
        print("NOT MOVED:", e, file=sys.stderr)
    return 1 if errors else 0


if __name__ == "__main__":
    raise SystemExit(main())
