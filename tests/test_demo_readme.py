"""`make demo` prints what the README says: the demo's deterministic parts (the exact solver's values and the
building answer) appear in README.md to the digits printed; the training parts are not run here."""

from __future__ import annotations

from pathlib import Path

import pytest

from drigm import building_answer as ba
from drigm import demo as demo_mod
from drigm.cli import main as cli_main

README = Path(__file__).resolve().parent.parent / "README.md"


def test_the_solver_part_prints_what_the_readme_shows() -> None:
    rows, v_star, text = demo_mod.solver_demo()
    nominal, robust = rows
    assert nominal.action_s0 == (1, 1) and not nominal.robust_optimal
    assert robust.action_s0 == (0, 0) and robust.robust_optimal
    assert nominal.robust_value < v_star - 0.01 and robust.nominal_value < nominal.nominal_value
    readme = README.read_text()
    printed = [
        line for line in text.splitlines() if line.startswith(("policy ", "nominal greedy", "robust greedy", "V*"))
    ]
    assert len(printed) == 4
    for line in printed:
        assert line in readme, f"the demo prints {line!r}, the README does not show it"


def test_the_answer_part_prints_the_readmes_table() -> None:
    printed = demo_mod.answer_demo()
    start, end = ba.markers("readme")
    block = README.read_text().split(start)[1].split(end)[0]
    assert printed.strip() == block.strip()


def test_drigm_demo_runs_chosen_parts_under_headers(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    assert cli_main(["demo", "--part", "answer", "--part", "solver", "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    # the parts run in the demo's order, whatever the order of the flags
    assert out.index("[1/2] solver") < out.index("[2/2] answer")
    assert "V*_rob(s0) = -1.100" in out and "drigm `paper`" in out


def test_the_demo_fails_when_the_solver_does_not_certify_the_robust_policy(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import drigm.run

    monkeypatch.setattr(drigm.run, "demo", lambda *a, **k: False)
    assert cli_main(["demo", "--tabular", "--out", str(tmp_path)]) == 1
    assert "FAILED" in capsys.readouterr().out


def test_an_unknown_part_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown demo part"):
        demo_mod.run_demo(("solver", "nope"))
