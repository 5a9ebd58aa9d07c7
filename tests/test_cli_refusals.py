"""No silent acceptance (issue 31 item 5): each flag combination that used to be accepted and then ignored, or
mis-applied, is refused with a message naming the flag and the reason, and the exit status of a user error."""

from __future__ import annotations

from pathlib import Path

import pytest

from drigm.cli import main
from drigm.config import ConfigError, parse_yaml


def _refused(argv: list[str], capsys: pytest.CaptureFixture[str], *needles: str) -> None:
    try:
        rc = main(argv)
    except SystemExit as exc:  # argparse's own refusals exit 2
        rc = exc.code  # type: ignore[assignment]
    err = capsys.readouterr().err
    assert rc == 2, (argv, rc, err)
    assert "Traceback" not in err
    for needle in needles:
        assert needle in err, (argv, needle, err)


@pytest.fixture(scope="module")
def tabular_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("run") / "tr"
    assert (
        main(["train", "--env", "tabular:robust_vs_nominal", "--steps", "40", "--out", str(out), "--no-progress"]) == 0
    )
    return out


def test_train_refuses_a_radius_its_set_never_reads(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    base = ["train", "--env", "tabular:robust_vs_nominal", "--target", "exact", "--out", str(tmp_path / "r")]
    _refused([*base, "--set", "tv", "--beta", "0.5"], capsys, "--beta 0.5", "'tv' does not read target.beta")
    _refused([*base, "--set", "kl-penalty", "--rho", "0.5"], capsys, "'kl-penalty' does not read target.rho")
    _refused([*base, "--set", "tv", "--override", "target.beta=2"], capsys, "--override target.beta=2")
    assert not (tmp_path / "r").exists()  # refused before anything was written


def test_a_duplicate_yaml_key_is_an_error() -> None:
    with pytest.raises(ConfigError, match=r"key 'lr' is given twice"):
        parse_yaml("learner:\n  lr: 0.1\n  lr: 0.2\n", "doc")


@pytest.mark.parametrize(
    ("args", "needles"),
    [
        (["--algos", ""], ["--algos ''", "an empty list"]),
        (["--targets", "none,,exact"], ["--targets 'none,,exact'", "empty item"]),
        (["--rho", "=0.1"], ["--rho '=0.1'", "no set name"]),
        (["--rho", "tv=0.1,,0.2"], ["--rho 'tv=0.1,,0.2'", "empty item"]),
        (["--targets", "none", "--rho", "0.1"], ["--rho with --targets none", "none of them reads rho"]),
        (["--seeds", "0,0"], ["--seeds [0, 0]", "given twice"]),
    ],
)
def test_sweep_refuses_lists_it_would_misread(
    args: list[str], needles: list[str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _refused(["sweep", "tabular-smoke", "--scale", "smoke", "--out-root", str(tmp_path), *args], capsys, *needles)
    assert not any(tmp_path.iterdir())  # no job started


def test_evaluate_refuses_what_it_would_ignore_or_misapply(
    tabular_run: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _refused(["evaluate", str(tabular_run), "--env", ""], capsys, "--env ''", "give an environment spec")
    _refused(
        ["evaluate", str(tabular_run), "--score-from", "building-climate"],
        capsys,
        "'building-climate' scores building returns",
        "'tabular:robust_vs_nominal'",
    )
    _refused(["evaluate", str(tabular_run), "--rho", "0.3"], capsys, "--rho 0.3 needs --set")
    _refused(["evaluate", str(tabular_run), "--beta", "0.3"], capsys, "--beta 0.3 needs --set")
    assert main(["evaluate", str(tabular_run), "--episodes", "2", "--json"]) == 0  # the plain call still works


def test_evaluate_rho_and_beta_mean_what_they_mean_in_train(
    tabular_run: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """--rho is a radius and --beta kl-penalty's temperature, in drigm evaluate as in drigm train (issue 33)."""
    run = ["evaluate", str(tabular_run), "--episodes", "1", "--json"]
    _refused([*run, "--set", "kl-penalty", "--rho", "0.5"], capsys, "--set kl-penalty does not read --rho", "--beta")
    _refused([*run, "--set", "tv", "--beta", "0.5"], capsys, "--set tv does not read --beta", "--rho")
    _refused([*run, "--set", "tv"], capsys, "--set tv needs --rho")
    _refused([*run, "--set", "kl-penalty"], capsys, "--set kl-penalty needs --beta")
    capsys.readouterr()
    assert main([*run, "--set", "kl-penalty", "--beta", "0.5"]) == 0
    assert "kl-penalty" in capsys.readouterr().out
    assert main([*run, "--set", "tv", "--rho", "0.2"]) == 0


def test_report_refuses_flags_that_would_do_nothing(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root = ["report", "tabular-smoke", "--out-root", str(tmp_path), "--results-root", str(tmp_path / "res")]
    _refused([*root, "--exclude-seeds", ""], capsys, "--exclude-seeds ''", "no runs given")
    _refused([*root, "--select-on", "building-validation"], capsys, "--select-on", "needs --overview")
