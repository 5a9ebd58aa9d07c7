"""docs/results/other-protocols.md's tables are generated from the committed summaries: a stale block fails here,
missing markers are refused, and a metric without runs gives a sentence, never an empty table."""

from __future__ import annotations

import importlib.util
import json
import shutil
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
spec = importlib.util.spec_from_file_location("other_protocols_doc", ROOT / "experiments" / "other_protocols_doc.py")
assert spec is not None and spec.loader is not None
doc_cli = importlib.util.module_from_spec(spec)
spec.loader.exec_module(doc_cli)


def _copy_results(dest: Path) -> Path:
    for sub, _ in doc_cli.TABLES.values():
        (dest / sub).mkdir(parents=True, exist_ok=True)
        shutil.copy(doc_cli.RESULTS / sub / "summary.json", dest / sub / "summary.json")
    return dest


def test_the_committed_document_equals_what_the_results_give() -> None:
    assert doc_cli.main(["--check"]) == 0


def test_a_changed_result_makes_the_document_stale(tmp_path: Path) -> None:
    results = _copy_results(tmp_path / "results")
    doc = tmp_path / "doc.md"
    shutil.copy(doc_cli.DOC, doc)
    assert doc_cli.main(["--check"], results=results, doc=doc) == 0
    path = results / "cogen-renewables" / "summary.json"
    s = json.loads(path.read_text())
    s["metrics"]["returns"]["qmix-none"]["average"]["mean"] *= 1.01
    path.write_text(json.dumps(s))
    assert doc_cli.main(["--check"], results=results, doc=doc) == 1
    assert doc_cli.main(["--write"], results=results, doc=doc) == 0
    assert doc_cli.main(["--check"], results=results, doc=doc) == 0
    assert f"{s['metrics']['returns']['qmix-none']['average']['mean']:.3g}" in doc.read_text()


def test_missing_markers_are_refused(tmp_path: Path) -> None:
    doc = tmp_path / "doc.md"
    doc.write_text(doc_cli.DOC.read_text().replace("<!-- protocol-results:cogen:end -->", ""))
    assert doc_cli.main(["--check"], doc=doc) == 2


def test_a_metric_without_runs_renders_a_sentence_not_an_empty_table() -> None:
    text = doc_cli.render(
        {"protocol": "p", "scale": "full", "metrics": {}, "missing": [["qmix-none", 0]]},
        [("won", "greedy win rate", ".2f")],
        "x",
    )
    assert "No run has results for greedy win rate yet." in text
    assert "|" not in text
    assert "qmix-none seed 0 (missing)" in text
