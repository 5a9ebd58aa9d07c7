"""Corrupt results files (issue 31 item 4): a report refuses them naming the file and the field; a sweep keeps
them aside as ``*.corrupt``, says so, and runs the job again."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from drigm.cli import report_main, sweep_main

SWEEP = ["tabular-smoke", "--scale", "smoke", "--seeds", "1", "--algos", "vdn", "--targets", "none", "--workers", "1"]


@pytest.fixture()
def swept(tmp_path: Path) -> tuple[Path, Path]:
    out = tmp_path / "runs"
    assert sweep_main([*SWEEP, "--out-root", str(out), "--no-progress"]) == 0
    path = out / "tabular-smoke" / "smoke" / "vdn-none" / "seed0.json"
    assert path.is_file()
    return out, path


def _edit(path: Path, change: Callable[[dict[str, Any]], None]) -> None:
    r = json.loads(path.read_text())
    change(r)
    path.write_text(json.dumps(r))


def _first_test(r: dict[str, Any]) -> dict[str, Any]:
    return next(iter(r["tests"].values()))


CORRUPTIONS: list[tuple[str, Callable[[Path], None], str]] = [
    ("binary", lambda p: p.write_bytes(b"\x89PNG\r\n\x1a\n\xff\xfe"), "is not UTF-8 text"),
    ("not json", lambda p: p.write_text("{'returns': [1, 2"), "is not valid JSON"),
    ("a list", lambda p: p.write_text("[1, 2]"), "holds a list, not a JSON object"),
    ("string return", lambda p: _edit(p, lambda r: _first_test(r)["returns"].__setitem__(0, "abc")), ".returns[0]"),
    ("nan return", lambda p: _edit(p, lambda r: _first_test(r)["returns"].__setitem__(0, float("nan"))), "finite"),
    ("inf score", lambda p: _edit(p, lambda r: _first_test(r)["returns"].__setitem__(0, float("inf"))), "finite"),
    ("text curve", lambda p: _edit(p, lambda r: r["curve"].__setitem__("step", ["a"])), "curve['step'][0]"),
]


@pytest.mark.parametrize(("name", "corrupt", "needle"), CORRUPTIONS, ids=[c[0] for c in CORRUPTIONS])
def test_a_report_names_the_corrupt_file_and_field(
    name: str,
    corrupt: Callable[[Path], None],
    needle: str,
    swept: tuple[Path, Path],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    out, path = swept
    corrupt(path)
    capsys.readouterr()
    rc = report_main(["tabular-smoke", "--scale", "smoke", "--out-root", str(out), "--results-root", str(tmp_path)])
    err = capsys.readouterr().err
    assert rc == 2 and "Traceback" not in err
    assert str(path) in err and needle in err, err


def test_a_sweep_sets_a_corrupt_file_aside_and_reruns(
    swept: tuple[Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    out, path = swept
    good = json.loads(path.read_text())
    _edit(path, lambda r: _first_test(r)["returns"].__setitem__(0, "abc"))
    bad_text = path.read_text()
    capsys.readouterr()
    assert sweep_main([*SWEEP, "--out-root", str(out), "--no-progress"]) == 0
    captured = capsys.readouterr()
    assert "seed0.json.corrupt" in captured.err and ".returns[0]" in captured.err
    kept = path.with_name("seed0.json.corrupt")
    assert kept.read_text() == bad_text  # nothing lost
    rerun = json.loads(path.read_text())  # the job ran again (resumed from its finished checkpoint)
    assert _first_test(rerun)["returns"] == _first_test(good)["returns"]
    assert "1 run" in captured.out
