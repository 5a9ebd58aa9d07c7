"""The building answer in README.md and docs/results/building.md is generated from the committed results: a stale
or hand-edited block fails here, and so does a table emitted without data rows."""

from __future__ import annotations

import importlib.util
import json
import re
import shutil
from pathlib import Path

import pytest

from drigm import building_answer as ba

ROOT = Path(__file__).resolve().parent.parent
spec = importlib.util.spec_from_file_location("building_answer_cli", ROOT / "experiments" / "building_answer.py")
assert spec is not None and spec.loader is not None
cli = importlib.util.module_from_spec(spec)
spec.loader.exec_module(cli)


def test_both_documents_equal_what_the_committed_results_give() -> None:
    assert cli.main(["--check"]) == 0


def test_check_fails_when_the_results_and_either_document_disagree(tmp_path: Path) -> None:
    results = tmp_path / "results"
    shutil.copytree(ba.RESULTS / "paper-checkpoints", results / "paper-checkpoints")
    for p in ba.RESULTS.glob("building-overview-*.json"):
        shutil.copy(p, results / p.name)
    docs = {"readme": tmp_path / "README.md", "doc": tmp_path / "building.md"}
    shutil.copy(ba.README, docs["readme"])
    shutil.copy(ba.DOC, docs["doc"])
    assert cli.main(["--check"], results=results, docs=docs) == 0
    # one seed of the best loop's non-robust QMIX on the paper's Tucson days changes: both documents are stale
    path = results / f"building-overview-{ba.BEST_LOOP}.json"
    ov = json.loads(path.read_text())
    cell = ov["scores"][ba.SEASONAL]["qmix-none"]
    cell["mean"] += 0.01
    path.write_text(json.dumps(ov))
    res = ba.Results.load(results)
    for key in ("readme", "doc"):
        assert ba.stale(docs[key].read_text(), ba.blocks(res, key)), key
    assert cli.main(["--check"], results=results, docs=docs) == 1
    assert cli.main(["--write"], results=results, docs=docs) == 0
    assert cli.main(["--check"], results=results, docs=docs) == 0
    # a hand edit of one figure in the README is caught too
    text = docs["readme"].read_text()
    figure = re.search(r"\d\.\d{3} \+- \d\.\d{3}", text.split(ba.markers("readme")[0], 1)[1])
    assert figure is not None
    edited = f"{float(figure.group().split()[0]) + 0.1:.3f}" + figure.group()[5:]
    docs["readme"].write_text(text.replace(figure.group(), edited, 1))
    assert cli.main(["--check"], results=results, docs=docs) == 1


def test_a_document_without_its_markers_is_refused(tmp_path: Path) -> None:
    readme = tmp_path / "README.md"
    readme.write_text("# no markers\n")
    assert cli.main(["--check"], docs={"readme": readme}) == 2


def test_no_table_is_emitted_without_data_rows() -> None:
    assert ba.md_table(["a", "b"], [], "nothing yet.") == "nothing yet."
    assert ba.md_table(["a", "b"], [["1", "2"]], "nothing yet.") == "| a | b |\n|---|---|\n| 1 | 2 |"
    with pytest.raises(ValueError, match="cells"):
        ba.md_table(["a", "b"], [["1"]], "")
    empty = ba.Results(checkpoints=None, overviews={})
    for doc in ("readme", "doc"):
        for name, block in ba.blocks(empty, doc).items():
            assert "|---" not in block, f"{doc}:{name} emitted a table without rows"
    # and no committed document holds a table whose header is not followed by a data row
    for path in (ba.README, ba.DOC):
        lines = path.read_text().splitlines()
        for i, line in enumerate(lines):
            if re.match(r"^\s*\|(---\|)+\s*$", line):
                assert i + 1 < len(lines) and lines[i + 1].lstrip().startswith("|"), f"{path.name}:{i + 1}: empty table"


def test_the_table_reads_the_overview_cells_in_the_papers_units() -> None:
    ov = json.loads((ba.RESULTS / "building-overview-paper-mlp-v1.json").read_text())
    assert ov["metric"] == "score" and ov["preset"] == "paper-mlp-v1"
    tucson = ov["scores"]["building-paper-seasonal"]["qmix-none"]
    newyork = ov["paper_scope_scores"]["building-paper-climate"]["qmix-none"]
    table = ba.render_table(ba.Results.load())
    row = next(r for r in table.splitlines() if r.startswith("| QMIX | drigm `paper-mlp-v1`"))
    assert f"{tucson['mean']:.3f} +- {tucson['se']:.3f} (n=5)" in row
    assert f"{newyork['mean']:.3f} +- {newyork['se']:.3f} (n=5)" in row
    # the old loop's non-robust QMIX in the paper's units, as issue 30 measured it: 0.610 / 0.550, not 0.935 / 0.930
    assert abs(tucson["mean"] - 0.6095) < 1e-3 and abs(newyork["mean"] - 0.5499) < 1e-3


def test_the_readme_table_is_the_best_loop_with_paired_t_intervals() -> None:
    res = ba.Results.load()
    block = ba.render_readme(res)
    vs = res.versus(ba.BEST_LOOP, ba.HELD_SEASON, ba.README_ROBUST, ba.README_NONE)
    assert vs is not None
    lo, hi = vs["t_ci"]
    assert f"{vs['mean']:+.3f} [{lo:+.3f}, {hi:+.3f}]" in block
    assert f"drigm `{ba.BEST_LOOP}`" in block and f"]({ba.DOC_LINK})" in block


def test_the_results_document_quotes_no_result_outside_its_generated_blocks() -> None:
    """Outside the markers, docs/results/building.md names no score (a number with three decimals; a radius such as
    contamination 0.008 is a setting, not a result)."""
    text = ba.DOC.read_text()
    for name in ba.RENDERERS["doc"]:
        start, end = ba.markers(name)
        text = text.split(start)[0] + text.split(end)[1]
    scores = re.findall(r"(?<!contamination\s)(?<![\d.])[+-]?\d\.\d{3}\b", text)
    assert not scores, f"result figures outside the generated blocks: {scores}"


def test_the_versus_table_counts_each_methods_own_seeds() -> None:
    """The seeds column gives each method's seed count (TV / non-robust / control), not the largest of them."""
    res = ba.Results.load(ba.RESULTS)
    ov = res.overviews[ba.BEST_LOOP]
    want = " / ".join(
        str(len(ov["scores"][ba.HELD_SEASON][m]["values"])) if m in ov["scores"][ba.HELD_SEASON] else "0"
        for m in (ba.README_ROBUST, ba.README_NONE, ba.README_CONTROL)
    )
    row = next(line for line in ba.render_versus(res).splitlines() if line.startswith("| held-out Tucson days"))
    assert row.rstrip(" |").endswith(want), (row, want)
