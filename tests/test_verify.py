"""``drigm verify`` and sets from outside the tree (issue 35).

- every built-in set passes the quick checks, and the command's exit status and JSON say so;
- the example package ``examples/cvar_set`` installed from outside the tree (pip --target, offline) is found through
  its ``drigm.sets`` entry point and passes; its wrong variant fails, naming the checks that catch it, and writes a
  counterexample game that the solver reads back;
- ``--set module:ATTRIBUTE`` works in ``python -m reference solve`` and ``drigm train``; bad references and name
  clashes are refused in one line.
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from drigm.cli import main as drigm_main
from drigm.verify import MODES, run_checks
from reference import set_checks as sc
from reference.game import additive_control_game, load_game, save_game
from reference.sets import (
    SPECS,
    Radius,
    UncertaintySetError,
    get_spec,
    load_set,
    make_set,
    register_set,
    resolve_set,
    unregister_set,
)
from reference.sets import tv as tv_module

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "examples" / "cvar_set"
BUILTIN = ("contamination", "tv", "kl", "kl-penalty", "chi2")


@pytest.fixture
def example_on_path(monkeypatch: pytest.MonkeyPatch) -> None:
    """The example importable in this process (not installed); every set it registers is removed afterwards."""
    monkeypatch.syspath_prepend(str(EXAMPLE))
    before = set(SPECS)
    yield
    for name in set(SPECS) - before:
        unregister_set(name)
    for mod in [m for m in sys.modules if m.startswith("drigm_cvar_set")]:
        del sys.modules[mod]


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The example installed by pip into a fresh --target directory, offline, from a copy outside the tree."""
    tmp = tmp_path_factory.mktemp("example")
    src = tmp / "src"
    shutil.copytree(EXAMPLE, src)
    target = tmp / "site"
    cmd = [sys.executable, "-m", "pip", "install", "-q", "--no-build-isolation", "--no-deps", "--no-index"]
    subprocess.run([*cmd, "--target", str(target), str(src)], check=True, capture_output=True, timeout=300)
    assert (target / "drigm_cvar_set").is_dir()
    return target


def _drigm(args: list[str], site: Path, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(site), str(ROOT)]), "MPLBACKEND": "Agg"}
    return subprocess.run(
        [sys.executable, "-m", "drigm", *args], capture_output=True, text=True, env=env, cwd=cwd, timeout=600
    )


@pytest.mark.parametrize("name", BUILTIN)
def test_every_builtin_set_passes_the_quick_checks(name: str) -> None:
    results = list(run_checks(get_spec(name), MODES["quick"]))
    failed = [f"{r.name}: {r.detail}" for r in results if r.verdict == sc.FAILED]
    assert not failed, failed
    verdicts = {r.name: r.verdict for r in results}
    assert verdicts["closed form = cvxpy primal"] == sc.PASSED
    assert verdicts["sigma translation-equivariant"] == sc.PASSED
    assert all(r.verdict == sc.SKIPPED for r in results if r.name.startswith("neural fixed point"))
    if get_spec(name).rules:
        assert verdicts["exact rule: numpy = torch"] == sc.PASSED
    else:  # kl: no neural target, and that is not applicable, never passed
        assert verdicts["sample rule"] == sc.NOT_APPLICABLE


def test_verify_command_exit_status_and_json(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "v.json"
    assert drigm_main(["verify", "contamination", "--quick", "--json", str(out)]) == 0
    text = capsys.readouterr().out
    assert "closed form = cvxpy primal" in text and "PASSED" in text
    record = json.loads(out.read_text())
    assert record["set"] == "contamination" and record["passed"] is True and record["mode"] == "quick"
    assert {c["verdict"] for c in record["checks"]} <= {"passed", "not applicable", "skipped"}


def test_the_installed_example_passes_and_its_wrong_variant_fails_by_name(installed: Path, tmp_path: Path) -> None:
    good = _drigm(["verify", "cvar", "--quick", "--json", str(tmp_path / "good.json")], installed, tmp_path)
    assert good.returncode == 0, good.stdout + good.stderr
    assert "drigm verify cvar (entry point 'cvar' (drigm_cvar_set:SPEC)), quick mode" in good.stdout
    record = json.loads((tmp_path / "good.json").read_text())
    assert record["passed"] and any(c["check"] == "exact rule: numpy = torch" for c in record["checks"])

    bad = _drigm(["verify", "cvar-wrong", "--quick", "--counterexamples", "cx"], installed, tmp_path)
    assert bad.returncode == 1, bad.stdout + bad.stderr
    assert "FAILED closed form = cvxpy primal:" in bad.stdout
    assert "FAILED sigma translation-equivariant:" in bad.stdout
    game = load_game(tmp_path / "cx" / "cvar-wrong-sigma-translation-equivariant.npz")
    info = json.loads((tmp_path / "cx" / "cvar-wrong-sigma-translation-equivariant.json").read_text())
    np.testing.assert_allclose(game.P[0, 0], info["inputs"]["p0"])
    assert info["replay"].startswith("python -m reference solve")


def test_bad_set_references_are_refused_in_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    for ref, message in (
        ("no_such_module_xyz:SPEC", "cannot import module 'no_such_module_xyz'"),
        ("reference.sets:NOPE", "module 'reference.sets' has no attribute 'NOPE'"),
        ("reference.sets:SET_NAMES", "reference.sets:SET_NAMES is a tuple, not a reference.sets.SetSpec"),
        ("reference.sets.tv:SPEC", "clashes with the built-in set 'tv'"),
        ("wasserstein", "unknown uncertainty set 'wasserstein'"),
    ):
        assert drigm_main(["verify", ref]) == 2
        err = capsys.readouterr().err
        assert message in err and "Traceback" not in err and len(err.strip().splitlines()) == 1, (ref, err)


def test_a_loaded_set_works_where_a_builtin_one_does(example_on_path: None, tmp_path: Path) -> None:
    from drigm.cli import _parser, _resolve_set_flags, train_config
    from reference.__main__ import main as reference_main
    from reference.bellman import value_iteration

    game_file = save_game(additive_control_game(), tmp_path / "g.npz")
    argv = ["solve", str(game_file), "--set", "drigm_cvar_set:SPEC", "--rho", "0.3", "--json"]
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        assert reference_main(argv) == 0
    out = json.loads(buf.getvalue())
    want = value_iteration(additive_control_game(), make_set("cvar", 0.3), tol=1e-10)
    assert out["set"] == "cvar" and np.allclose(out["V"], want.V, atol=1e-8)
    # robust means lower: the set is not {p0}
    nominal = value_iteration(additive_control_game(), make_set("tv", 0.0), tol=1e-10)
    assert np.all(want.V < nominal.V - 1e-3)

    args = _parser().parse_args(
        [
            *("train", "--target", "exact", "--set", "drigm_cvar_set:SPEC", "--rho", "0.3"),
            *("--out", str(tmp_path / "r"), "--env", "tabular:robust_vs_nominal"),
        ]
    )
    _resolve_set_flags(args)
    cfg = train_config(args)
    assert cfg.target.set == "cvar" and cfg.target.rho == 0.3


def test_name_clashes_are_refused_by_name(example_on_path: None) -> None:
    spec = load_set("drigm_cvar_set:SPEC")
    assert resolve_set("drigm_cvar_set:SPEC") == "cvar" and get_spec("cvar") is spec  # idempotent
    other = dataclasses.replace(spec, summary="another cvar")
    with pytest.raises(
        UncertaintySetError, match="clashes with the set 'cvar' already loaded from drigm_cvar_set:SPEC"
    ):
        register_set(other, "elsewhere:SPEC")
    renamed_tv = dataclasses.replace(tv_module.SPEC, summary="my tv")
    with pytest.raises(UncertaintySetError, match="clashes with the built-in set 'tv'"):
        register_set(renamed_tv, "mine:TV")
    with pytest.raises(UncertaintySetError, match=r"is a int, not a reference\.sets\.SetSpec"):
        register_set(3, "mine:X")


def test_a_property_failure_is_shrunk_and_written_as_a_game(tmp_path: Path) -> None:
    """A support function off by a factor breaks translation equivariance; the shrunk draw is tiny and replays."""

    def scaled(P0: np.ndarray, V: np.ndarray, rho: float, validate: bool = True) -> np.ndarray:
        return 1.1 * tv_module.tv_support(P0, V, rho, validate)

    spec = dataclasses.replace(tv_module.SPEC, name="tv-scaled", radius=Radius("tv-scaled", 0.0, 1.0), support=scaled)
    prop = next(p for p in sc.PROPERTIES if p.name == "sigma translation-equivariant")
    res = sc.check_property(spec, prop, 50, tmp_path, "mine:SPEC")
    assert res.verdict == sc.FAILED and res.worst_error > 0.01
    ex = res.counterexample
    assert ex is not None and len(ex["p0"]) <= 2  # shrunk
    game = load_game(res.files[0])
    np.testing.assert_allclose(game.P[:, 0], np.broadcast_to(ex["p0"], game.P[:, 0].shape))
    np.testing.assert_allclose(game.R[:, 0], ex["V"])
    assert "--set mine:SPEC" in json.loads(Path(res.files[1]).read_text())["replay"]
    # the right support passes the same property
    assert sc.check_property(tv_module.SPEC, prop, 50).verdict == sc.PASSED


def test_a_check_the_set_cannot_take_is_not_applicable() -> None:
    spec = dataclasses.replace(tv_module.SPEC, name="tv-bare", primal=None, support_shared=None, rules={})
    assert sc.check_primal(spec).verdict == sc.NOT_APPLICABLE
    assert sc.check_fast_path(spec).verdict == sc.NOT_APPLICABLE
    results = {r.name: r for r in run_checks(spec, MODES["quick"])}
    assert results["sample rule"].verdict == sc.NOT_APPLICABLE and results["sample rule"].ok


def test_a_set_wrong_consistently_with_itself_still_fails_against_the_primal() -> None:
    """Support and worst case at radius 2 rho, divergence halved: the set agrees with itself, not with cvxpy."""
    from reference.sets import kl as kl_module

    base = kl_module.SPEC
    spec = dataclasses.replace(
        base,
        name="kl-double",
        radius=dataclasses.replace(base.radius, set_name="kl-double"),
        support=lambda p0, V, rho, *a, **k: base.support(p0, V, 2 * rho, *a, **k),
        worst_case=lambda p0, V, rho, *a, **k: base.worst_case(p0, V, 2 * rho, *a, **k),
        divergence=lambda p, p0: base.divergence(p, p0) / 2,
        support_shared=None,
        rules={},
    )
    assert sc.check_worst_case(spec).verdict == sc.PASSED  # it is consistent with its own divergence
    res = sc.check_primal(spec, n_rows=6)
    assert res.verdict == sc.FAILED and "closed form" in res.detail, res


def test_a_set_whose_code_raises_fails_the_check_instead_of_passing_or_crashing() -> None:
    def support(p0: np.ndarray, V: np.ndarray, rho: float, *a: object, **k: object) -> np.ndarray:
        raise AssertionError("the user's own assertion")  # on every draw: no property may pass around it

    spec = dataclasses.replace(tv_module.SPEC, name="tv-asserting", support=support)
    for prop in sc.PROPERTIES:
        res = sc.check_property(spec, prop, 50)
        assert res.verdict == sc.FAILED and "raised AssertionError" in res.detail, (prop.name, res)
    for check in (sc.check_primal, sc.check_worst_case, sc.check_members):
        res = check(spec)
        assert res.verdict == sc.FAILED and "raised AssertionError" in res.detail, (check.__name__, res)


def test_non_finite_numbers_inside_arrays_reach_the_json_as_text() -> None:
    res = sc.CheckResult("x", sc.FAILED, float("inf"), 1e-9, 1, "d", {"p_star": np.array([np.nan, 1.0])})
    text = json.dumps(res.as_json(), allow_nan=False)
    assert json.loads(text)["counterexample"]["p_star"] == ["nan", 1.0]


@pytest.mark.slow
def test_the_example_reaches_q_rob_with_vdn(example_on_path: None) -> None:
    from drigm.verify import check_fixed_point

    res = check_fixed_point(load_set("drigm_cvar_set:SPEC"), "vdn")
    assert res.verdict == sc.PASSED and res.worst_error is not None and res.worst_error <= 1e-3, res.detail


def test_an_installed_set_sweeps_and_reports_at_explicit_radii(installed: Path, tmp_path: Path) -> None:
    """A sweep trains an outside set at the radii given (each run tagged, the protocol having no rho for it) and the
    report covers it; without radii the sweep refuses, naming the missing rho."""
    common = ["tabular-smoke", "--scale", "smoke", "--out-root", str(tmp_path / "runs")]
    sweep = [
        "sweep",
        *common,
        "--algos",
        "vdn",
        "--targets",
        "exact",
        "--sets",
        "cvar",
        "--seeds",
        "1",
        "--no-progress",
    ]
    refused = _drigm(sweep, installed, tmp_path)
    assert refused.returncode == 2 and "defines no rho for set 'cvar'" in refused.stderr, refused.stderr
    done = _drigm([*sweep, "--rho", "cvar=0.2"], installed, tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    rep = _drigm(["report", *common, "--results-root", str(tmp_path / "res")], installed, tmp_path)
    assert rep.returncode == 0, rep.stdout + rep.stderr
    assert "| vdn-exact-cvar-rho0.2 |" in (tmp_path / "res" / "tabular-smoke" / "results.md").read_text()
