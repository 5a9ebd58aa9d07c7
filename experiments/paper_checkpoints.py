"""Score the seed paper's released agent networks with drigm, beside the paper's reported cells (issue 30 item 3).

``python experiments/paper_checkpoints.py PAPER_REPO [--nets qmix,vdn,...] [--seeds 0,1,10,16,42]
[--day-sets building-paper-seasonal,...] [--out experiments/results/paper-checkpoints] [--report-only]``

PAPER_REPO is a directory of the paper's code (e.g. ``git -C MIRROR archive HEAD | tar -x -C DIR``) holding
``results_seeds_{seed}/robust_{alg}_rho_{rho}_{YYYYmmdd_HHMMSS}/network_parameter/agent_{i}_q_network.pt``. The
networks (:data:`NETS`; the paper's ``_g`` runs are its TV variants, ``robust_{alg}_rho_{rho}`` its contamination
runs, rho 0 = non-robust) are loaded into a drigm WindowController (:mod:`drigm.paper_checkpoint`) and played
greedily by drigm's EpisodeRunner, exactly as ``drigm sweep`` evaluates a trained run
(:func:`drigm.evaluation.evaluate_on`): on each test environment of the day set's protocol (``load_protocol(NAME,
preset="paper")``), with its test-episode env seeds (``proto.test_seeds()``: the paper's 50 listed days for the
``building-paper-*`` sets, duplicates counted as listed; ``eval_episodes`` seeds from ``eval_seed`` on days 200-364
for the held-out sets), scored by the protocol's score (the paper's units: (6 x team return + 9000) / 9000).

One result JSON per (net, seed, day set), written atomically to ``OUT/NET/seed-SEED/DAY_SET.json`` with
per-episode env seeds, team returns, lengths and scores; an existing complete one is skipped, so a killed run
resumes. A missing run directory or network file is recorded in ``OUT/missing.json`` and reported, never
replaced. ``OUT/README.md`` is rewritten from all result files present: per net and test environment, the mean
over seeds +- standard error (np.std(ddof=0) / sqrt(n), the paper's) of the per-seed mean scores, beside the
paper's cell where the paper reports one.
"""

from __future__ import annotations

import argparse
import json
import re
import shlex
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from drigm.evaluation import evaluate_on  # noqa: E402
from drigm.paper_checkpoint import PaperCheckpointError, load_paper_agents  # noqa: E402
from drigm.protocol import Protocol, load_protocol  # noqa: E402
from drigm.stats import t_interval  # noqa: E402
from reference.atomic_io import atomic_write_json, atomic_write_text  # noqa: E402

FORMAT = 1
"""Version of the result files' layout."""


@dataclass(frozen=True)
class Net:
    """A family of the paper's released runs: its label, run-directory key (alg, rho), paper-table row and the
    drigm method it stands beside."""

    label: str
    alg: str
    rho: float
    paper_row: tuple[str, str] | None
    """(method row, algo) of the protocols' ``paper.rows`` that reports this net, or None."""
    method: str
    """The drigm sweep method trained the same way (its name in the building overviews)."""


NETS: dict[str, Net] = {
    "qmix": Net("QMIX (non-robust)", "qmix", 0.0, ("none", "qmix"), "qmix-none"),
    "qmix-tv-0.2": Net("QMIX TV rho 0.2", "qmix_g", 0.2, ("tv", "qmix"), "qmix-paper-tv"),
    "qmix-tv-0.0": Net("QMIX TV rho 0.0", "qmix_g", 0.0, None, "qmix-paper-tv-rho0.0"),
    "vdn": Net("VDN (non-robust)", "vdn", 0.0, ("none", "vdn"), "vdn-none"),
    "vdn-tv-0.5": Net("VDN TV rho 0.5", "vdn_g", 0.5, ("tv", "vdn"), "vdn-paper-tv"),
    "vdn-tv-0.0": Net("VDN TV rho 0.0", "vdn_g", 0.0, None, "vdn-paper-tv-rho0.0"),
    "qmix-cont-0.008": Net(
        "QMIX contamination rho 0.008", "qmix", 0.008, ("contamination", "qmix"), "qmix-paper-contamination"
    ),
    "qtran": Net("QTRAN (non-robust)", "qtran", 0.0, ("none", "qtran"), "qtran-none"),
    "qtran-tv-0.2": Net("QTRAN TV rho 0.2", "qtran_g", 0.2, ("tv", "qtran"), "qtran-paper-tv"),
    "qtran-tv-0.0": Net("QTRAN TV rho 0.0", "qtran_g", 0.0, None, "qtran-paper-tv-rho0.0"),
}
"""The paper's networks scored here (its evaluate_saved_networks.py PLOT_RHO_VALUES: TV rho 0.2 for QMIX and QTRAN,
0.5 for VDN; contamination 0.008 for QMIX; rho 0 of the contamination family is the non-robust run, rho 0 of the TV
family the matched control: the same dual-network loop without robustness). QTRAN's agents (its QNetworkWithPhi)
have the same layout as the others."""

SEEDS = (0, 1, 10, 16, 42)
"""The paper's training seeds (its results_seeds_* folders)."""

DAY_SETS = ("building-paper-seasonal", "building-paper-climate", "building-seasonal", "building-climate")
"""drigm's building protocols whose test environments and episodes are played."""

PAPER_TEST = {"building-paper-seasonal": "Tucson (paper days)", "building-paper-climate": "NewYork"}
"""The test environment of each day set that the paper's table reports (its 'seasonal' column: Tucson on its 50
days; its 'climate + season' column: NewYork alone, which the non-robust QMIX networks reproduce to 0.001 while
the five-climate mean does not), unless the protocol's ``paper.test`` names one."""

RUN_DIR = re.compile(r"^robust_(?P<alg>[a-z0-9_]+)_rho_(?P<rho>[0-9.]+)_(?P<ts>\d{8}_\d{6})$")
"""The paper's run-directory names (its evaluate_saved_networks.py RUN_DIR_REGEX)."""


def find_run(repo: Path, seed: int, net: Net) -> Path | None:
    """The run directory of `net` in ``repo/results_seeds_{seed}`` (the latest timestamp if several), or None."""
    folder = repo / f"results_seeds_{seed}"
    if not folder.is_dir():
        return None
    hits = []
    for d in folder.iterdir():
        m = RUN_DIR.match(d.name)
        if m and d.is_dir() and m["alg"] == net.alg and abs(float(m["rho"]) - net.rho) < 1e-9:
            hits.append((m["ts"], d))
    return max(hits)[1] if hits else None


def result_file(out: Path, net: str, seed: int, day_set: str) -> Path:
    return out / net / f"seed-{seed}" / f"{day_set}.json"


def is_complete(path: Path, proto: Protocol, net: str, seed: int) -> bool:
    """A result file of this (net, seed, day set) with every test env played on the protocol's seeds."""
    try:
        r = json.loads(path.read_text())
    except (OSError, ValueError):
        return False
    seeds = proto.test_seeds()
    return (
        isinstance(r, dict)
        and r.get("format") == FORMAT
        and (r.get("net"), r.get("seed"), r.get("day_set")) == (net, seed, proto.name)
        and r.get("test_seeds") == seeds
        and set(r.get("tests", {})) == {t.name for t in proto.tests}
        and all(len(t.get("score", [])) == len(seeds) for t in r["tests"].values())
    )


def score_one(repo: Path, run: Path, net: str, seed: int, proto: Protocol, command: str) -> dict[str, Any]:
    """Greedy episodes of one seed's networks on every test env of `proto`, as drigm's sweep plays them."""
    t0 = time.perf_counter()
    agents = load_paper_agents(run, 6, obs_dim=5, n_actions=200)
    seeds = proto.test_seeds()
    tests: dict[str, Any] = {}
    for t in proto.tests:
        res = evaluate_on(agents, t, seeds, proto.score)
        res["mean_score"] = float(np.mean(res["score"]))
        res["mean_return"] = float(np.mean(res["returns"]))
        tests[t.name] = res
    return {
        "format": FORMAT,
        "net": net,
        "label": NETS[net].label,
        "seed": seed,
        "day_set": proto.name,
        "preset": proto.preset,
        "run_dir": str(run.relative_to(repo)),
        "files": [f.name for f in agents.files],
        "test_seeds": seeds,
        "score_label": proto.score.label if proto.score is not None else None,
        "tests": tests,
        "seconds": time.perf_counter() - t0,
        "finished_at": time.strftime("%Y-%m-%dT%H:%M:%S"),
        "command": command,
    }


def _se(x: list[float]) -> float:
    return float(np.std(x, ddof=0) / np.sqrt(len(x))) if x else float("nan")


def _paper_cell(proto: Protocol, net: Net, test: str) -> tuple[float, float] | None:
    paper = proto.paper or {}
    wanted = paper.get("test") or PAPER_TEST.get(proto.name)
    if net.paper_row is None or test != wanted:
        return None
    row, algo = net.paper_row
    cell = paper.get("rows", {}).get(row, {}).get(algo)
    return (float(cell[0]), float(cell[1])) if cell else None


COMPARISONS = (
    ("qmix-tv-0.2", "qmix-tv-0.0", "QMIX TV 0.2 - its matched control TV 0.0 (same dual-network loop, rho 0)"),
    ("qmix-tv-0.2", "qmix", "QMIX TV 0.2 - non-robust QMIX"),
    ("qmix-tv-0.0", "qmix", "QMIX TV 0.0 (control) - non-robust QMIX"),
    ("vdn-tv-0.5", "vdn-tv-0.0", "VDN TV 0.5 - its matched control TV 0.0"),
    ("vdn-tv-0.5", "vdn", "VDN TV 0.5 - non-robust VDN"),
    ("qmix-cont-0.008", "qmix", "QMIX contamination 0.008 - non-robust QMIX"),
    ("qtran-tv-0.2", "qtran-tv-0.0", "QTRAN TV 0.2 - its matched control TV 0.0"),
    ("qtran-tv-0.2", "qtran", "QTRAN TV 0.2 - non-robust QTRAN"),
)
"""(robust net, reference net, label): paired per-seed differences (the paper trains every net of a seed on the
same day sequence, so seed k of one is paired with seed k of the other)."""

SUMMARY_CELLS = {
    "paper-tucson": ("building-paper-seasonal", "Tucson (paper days)"),
    "paper-newyork": ("building-paper-climate", "NewYork"),
    "held-out-tucson": ("building-seasonal", None),
    "held-out-climates": ("building-climate", None),
}
"""summary.json's cells: (day set, test env); None = the mean over the day set's test envs, per seed."""


def _complete_results(out: Path, proto: Protocol) -> dict[str, dict[int, dict[str, Any]]]:
    results: dict[str, dict[int, dict[str, Any]]] = {}
    for net in NETS:
        for seed in SEEDS:
            path = result_file(out, net, seed, proto.name)
            if path.is_file() and is_complete(path, proto, net, seed):
                results.setdefault(net, {})[seed] = json.loads(path.read_text())
    return results


def write_summary(out: Path, protos: dict[str, Protocol]) -> Path:
    """OUT/summary.json: per net, the README's four cells beside the paper (experiments/building_answer.py reads
    it) as drigm's report cells over seeds (values, mean, SE, bootstrap CI), the same statistics as the building
    overviews of drigm's own runs: SE with ddof 0 (the paper's) in the paper's columns, ddof 1 in the held-out ones."""
    from drigm.report import cell

    collected = {name: _complete_results(out, proto) for name, proto in protos.items()}
    methods: dict[str, dict[str, Any]] = {}
    for net, spec in NETS.items():
        cells: dict[str, Any] = {}
        for key, (day_set, test) in SUMMARY_CELLS.items():
            by_seed = collected.get(day_set, {}).get(net, {})
            if not by_seed:
                continue
            tests = [test] if test is not None else [t.name for t in protos[day_set].tests]
            values = [float(np.mean([r["tests"][t]["mean_score"] for t in tests])) for _, r in sorted(by_seed.items())]
            c = cell(values, ddof=0 if key.startswith("paper-") else 1)  # as the overviews: the paper's SE beside it
            cells[key] = {"values": c.values, "mean": c.mean, "se": c.se, "ci": c.ci, "seeds": sorted(by_seed)}
        if cells:
            methods[spec.method] = {"net": net, "label": spec.label, **cells}
    comparisons = []
    for a, b, label in COMPARISONS:
        row: dict[str, Any] = {"robust": a, "reference": b, "label": label}
        for key in SUMMARY_CELLS:
            ca, cb = methods.get(NETS[a].method, {}).get(key), methods.get(NETS[b].method, {}).get(key)
            if not ca or not cb:
                continue
            common = sorted(set(ca["seeds"]) & set(cb["seeds"]))
            va = dict(zip(ca["seeds"], ca["values"], strict=True))
            vb = dict(zip(cb["seeds"], cb["values"], strict=True))
            diffs = [va[k] - vb[k] for k in common]
            ci = t_interval(diffs) if len(diffs) >= 2 else None
            row[key] = {"diffs": diffs, "seeds": common, "mean": float(np.mean(diffs)) if diffs else None, "t_ci": ci}
        comparisons.append(row)
    path = out / "summary.json"
    data = {"format": FORMAT, "score": "the paper's units", "methods": methods, "comparisons": comparisons}
    atomic_write_json(path, data, make_parents=True)
    return path


def comparison_lines(summary: dict[str, Any]) -> list[str]:
    """Markdown: the paired differences of summary.json, mean [95% Student-t CI] per cell."""
    heads = {
        "paper-tucson": "paper's Tucson days",
        "paper-newyork": "paper's New York days",
        "held-out-tucson": "held-out Tucson days",
        "held-out-climates": "held-out days, 5 other climates",
    }
    lines = [
        "## Robust against its references, paired by seed",
        "",
        "Per-seed differences of the mean score (seed k of one net minus seed k of the other: the paper trains every"
        " net of a seed on the same day sequence); mean [95% Student-t CI over seeds]. An interval that contains 0 is"
        " no evidence of a difference.",
        "",
        "| comparison | " + " | ".join(heads.values()) + " |",
        "|---" * (len(heads) + 1) + "|",
    ]
    for row in summary.get("comparisons", []):
        cells = []
        for key in heads:
            c = row.get(key)
            if not c or c["mean"] is None:
                cells.append("")
                continue
            ci = f" [{c['t_ci'][0]:+.3f}, {c['t_ci'][1]:+.3f}]" if c["t_ci"] else ""
            cells.append(f"{c['mean']:+.3f}{ci} (n={len(c['diffs'])})")
        lines.append(f"| {row['label']} | " + " | ".join(cells) + " |")
    return [*lines, ""]


def write_report(
    out: Path, repo: Path, protos: dict[str, Protocol], missing: list[str], command: str, summary: dict[str, Any]
) -> Path:
    """OUT/README.md from every result file present (not only this invocation's) and the paired comparisons."""
    lines = [
        "# The seed paper's released networks, scored by drigm",
        "",
        "Generated by `experiments/paper_checkpoints.py` (issue 30 item 3). Command of the last run:",
        "",
        f"    {command}",
        "",
        "Paper code: a clone of iclr2026-anonymous/robust-coMARL "
        "(results_seeds_*/robust_*/network_parameter/agent_{i}_q_network.pt). The networks "
        "are loaded into a drigm `WindowController` (`drigm/paper_checkpoint.py`) and played greedily by drigm's "
        "`EpisodeRunner` on drigm's building environment, on each protocol's test episodes (`proto.test_seeds()`), "
        "exactly as `drigm sweep` evaluates a run. Score: the paper's units, (6 x team return + 9000) / 9000.",
        "",
        "Cells: mean over seeds +- standard error (np.std(ddof=0) / sqrt(n), the paper's) of each seed's mean score "
        "over the listed episodes (duplicate days count as often as listed); `(n)` where fewer than 5 seeds are in. "
        "*paper*: the paper's table cell (mean +- SE) where it reports this net on this test environment.",
        "",
    ]
    for name, proto in protos.items():
        results = _complete_results(out, proto)
        if not results:
            continue
        tests = [t.name for t in proto.tests]
        multi = len(tests) > 1
        cols = tests + (["mean of the test envs"] if multi else [])
        lines += [
            f"## {name}",
            "",
            f"{proto.description} {len(proto.test_seeds())} episodes per test environment.",
            "",
            "| net | " + " | ".join(cols) + " |",
            "|---" * (len(cols) + 1) + "|",
        ]
        for net, by_seed in results.items():
            cells = []
            per_env: dict[str, list[float]] = {
                t: [r["tests"][t]["mean_score"] for r in by_seed.values()] for t in tests
            }
            if multi:
                per_env[cols[-1]] = [
                    float(np.mean([r["tests"][t]["mean_score"] for t in tests])) for r in by_seed.values()
                ]
            for c in cols:
                x = per_env[c]
                cell = f"{np.mean(x):.3f} +- {_se(x):.3f}" + ("" if len(x) == len(SEEDS) else f" ({len(x)})")
                paper = _paper_cell(proto, NETS[net], c)
                if paper is not None:
                    cell += f" (*paper* {paper[0]:.3f} +- {paper[1]:.3f})"
                cells.append(cell)
            lines.append(f"| {NETS[net].label} | " + " | ".join(cells) + " |")
        lines += ["", "Per seed (mean score per test environment):", ""]
        lines += ["| net | seed | " + " | ".join(tests) + " |", "|---" * (len(tests) + 2) + "|"]
        for net, by_seed in results.items():
            for seed, r in sorted(by_seed.items()):
                vals = " | ".join(f"{r['tests'][t]['mean_score']:.4f}" for t in tests)
                lines.append(f"| {NETS[net].label} | {seed} | {vals} |")
        lines.append("")
    lines += comparison_lines(summary)
    lines += ["## Missing", ""]
    lines += [f"- {m}" for m in missing] if missing else ["None: every requested network file was found."]
    path = out / "README.md"
    atomic_write_text(path, "\n".join(lines) + "\n")
    return path


def _csv(text: str) -> list[str]:
    return [x.strip() for x in text.split(",") if x.strip()]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("paper_repo", type=Path, help="a directory of the paper's code with its results_seeds_* folders")
    p.add_argument("--nets", type=_csv, default=list(NETS), help=f"comma-separated, of {', '.join(NETS)}")
    p.add_argument("--seeds", type=_csv, default=[str(s) for s in SEEDS], help="comma-separated training seeds")
    p.add_argument("--day-sets", type=_csv, default=list(DAY_SETS), help=f"comma-separated, of {', '.join(DAY_SETS)}")
    p.add_argument("--out", type=Path, default=ROOT / "experiments" / "results" / "paper-checkpoints")
    p.add_argument("--report-only", action="store_true", help="only rewrite README.md from the result files")
    args = p.parse_args(argv)
    command = "python experiments/paper_checkpoints.py " + " ".join(shlex.quote(a) for a in (argv or sys.argv[1:]))
    bad = [n for n in args.nets if n not in NETS] + [d for d in args.day_sets if d not in DAY_SETS]
    if bad:
        p.error(f"unknown net(s) or day set(s): {bad}")
    try:
        seeds = [int(s) for s in args.seeds]
    except ValueError:
        p.error(f"--seeds {args.seeds}: integers expected")
    repo: Path = args.paper_repo
    if not repo.is_dir():
        p.error(f"{str(repo)!r} is not a directory (the paper's code, with results_seeds_* folders)")
    torch.set_num_threads(1)  # one small forward pass per step: extra threads only contend
    out: Path = args.out
    protos = {name: load_protocol(name, preset="paper") for name in DAY_SETS}
    missing: list[str] = []
    runs: dict[tuple[str, int], Path] = {}
    for net in NETS:
        for seed in SEEDS:
            run = find_run(repo, seed, NETS[net])
            if run is None:
                missing.append(
                    f"{net} seed {seed}: no results_seeds_{seed}/robust_{NETS[net].alg}_rho_{NETS[net].rho}_*"
                )
                continue
            absent = [
                f"agent_{i}_q_network.pt"
                for i in range(6)
                if not (run / "network_parameter" / f"agent_{i}_q_network.pt").is_file()
            ]
            if absent:
                missing.append(
                    f"{net} seed {seed}: {run.relative_to(repo)}/network_parameter lacks {', '.join(absent)}"
                )
                continue
            runs[(net, seed)] = run
    atomic_write_json(out / "missing.json", missing, make_parents=True)
    if not args.report_only:
        todo = [(n, s, d) for n in args.nets for s in seeds for d in args.day_sets]
        start = time.perf_counter()
        for k, (net, seed, day_set) in enumerate(todo, 1):
            path = result_file(out, net, seed, day_set)
            where = f"[{k}/{len(todo)}] {net} seed {seed} {day_set}"
            if (net, seed) not in runs:
                print(f"{where}: missing, skipped", flush=True)
                continue
            if is_complete(path, protos[day_set], net, seed):
                print(f"{where}: done before, skipped", flush=True)
                continue
            try:
                result = score_one(repo, runs[(net, seed)], net, seed, protos[day_set], command)
            except PaperCheckpointError as exc:
                missing.append(f"{net} seed {seed}: {exc}")
                print(f"{where}: refused: {exc}", flush=True)
                continue
            atomic_write_json(path, result, make_parents=True)
            means = ", ".join(f"{t} {r['mean_score']:.3f}" for t, r in result["tests"].items())
            print(f"{where}: {means} ({result['seconds']:.0f}s; {time.perf_counter() - start:.0f}s in all)", flush=True)
        atomic_write_json(out / "missing.json", missing, make_parents=True)
    summary = write_summary(out, protos)
    report = write_report(out, repo, protos, missing, command, json.loads(summary.read_text()))
    print(f"wrote {report} and {summary}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
