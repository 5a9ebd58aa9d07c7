"""Sizes checked before allocation (issue 31 item 3): sizes that cannot fit are refused with the figure, and
numbers too large for a float, or paths that are not UTF-8, are refused by name; nothing is created."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from drigm.cli import main
from reference.__main__ import main as reference_main
from reference.memory import MemoryBudgetError, available_bytes, check_fits, human


def test_check_fits_compares_with_the_available_memory() -> None:
    check_fits("a small thing", 1000, available=10_000)
    with pytest.raises(MemoryBudgetError, match=r"a big thing needs about 9.77 KiB; this machine has 1.95 KiB"):
        check_fits("a big thing", 10_000, available=2000)
    assert available_bytes() > 0 and human(3 * 2**30) == "3 GiB"


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--states", "1000000000", "--actions", "2"], "a random game of 1000000000 states"),
        (["--states", "10", "--actions", "100000,100000"], "10000000000 joint actions"),
    ],
)
def test_reference_refuses_a_game_too_large_to_build(
    args: list[str], needle: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert reference_main(["random", *args, "-o", str(tmp_path / "g")]) == 2
    err = capsys.readouterr().err
    assert needle in err and "needs about" in err and "available" in err
    assert not list(tmp_path.iterdir())


@pytest.mark.parametrize(
    ("override", "needles"),
    [
        ("learner.buffer_size=1000000000000", ["learner.buffer_size=1000000000000", "needs about"]),
        ("agent.hidden=1000000000000", ["agent.hidden=1000000000000", "too large to build"]),
        ("agent.hidden=3000000", ["agent.hidden=3000000", "needs about"]),
        ("mixer.params.embed_dim=1000000000", ["embed_dim=1000000000", "needs about"]),
        ("learner.lr=1" + "0" * 400, ["learner.lr=1000", "too large for a float"]),
    ],
)
def test_train_refuses_sizes_and_numbers_before_anything_is_written(
    override: str, needles: list[str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "run"
    rc = main(["train", "--env", "tabular:robust_vs_nominal", "--override", override, "--out", str(out)])
    err = capsys.readouterr().err
    assert rc == 2 and "Traceback" not in err
    for needle in needles:
        assert needle in err, err
    assert not out.exists()


def test_a_non_utf8_out_path_is_refused_before_a_run_directory_exists(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = os.fsdecode(os.fsencode(str(tmp_path)) + b"/bad\xffout")
    assert main(["train", "--env", "tabular:robust_vs_nominal", "--steps", "10", "--out", out]) == 2
    assert "is not valid UTF-8" in capsys.readouterr().err
    assert not list(tmp_path.iterdir())
