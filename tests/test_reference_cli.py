"""The command line `python -m reference` and its JSON contracts (docs/game-format.md).

1. Done-when: `python -m reference solve` matches an independent robust value iteration to 1e-6 on random
   games for every set. The independent solver below shares no code with `reference.sets`: linear
   programs (scipy linprog) for contamination and tv, a scalar search over the dual (scipy
   minimize_scalar) for kl and chi2, and a log-sum-exp for kl-penalty.
2. JSON shapes and keys of `solve` and `evaluate`; `random` (with --sparsity) and `classic`.
3. Bad inputs exit with status 2 and a message on stderr that names the problem.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from scipy.optimize import linprog, minimize_scalar
from scipy.special import logsumexp

from reference.__main__ import main
from reference.game import load_game, random_game, save_game

SET_RHOS = [("contamination", 0.3), ("tv", 0.35), ("tv", 0.8), ("kl", 0.4), ("chi2", 0.6), ("kl-penalty", 0.7)]


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "reference", *args], capture_output=True, text=True, timeout=120)


# ----- the independent robust value iteration ------------------------------------------------------------
def _worst_expectation(name: str, p0: np.ndarray, V: np.ndarray, rho: float) -> float:
    """inf_{p in U(p0)} p.V (or the kl-penalty value), computed without reference.sets."""
    S = p0.size
    supp = p0 > 0
    if name == "contamination":  # p = (1 - rho) p0 + rho q with q in the simplex: p >= (1 - rho) p0, sum p = 1
        res = linprog(V, A_eq=np.ones((1, S)), b_eq=[1.0], bounds=[(lo, None) for lo in (1 - rho) * p0])
        assert res.status == 0
        return float(res.fun)
    if name == "tv":  # variables (p, u) with u >= |p - p0| and sum u <= 2 rho
        eye = np.eye(S)
        A_ub = np.block([[eye, -eye], [-eye, -eye], [np.zeros((1, S)), np.ones((1, S))]])
        b_ub = np.concatenate([p0, -p0, [2 * rho]])
        A_eq = np.concatenate([np.ones(S), np.zeros(S)])[None]
        res = linprog(np.concatenate([V, np.zeros(S)]), A_ub=A_ub, b_ub=b_ub, A_eq=A_eq, b_eq=[1.0], bounds=(0, None))
        assert res.status == 0
        return float(res.fun)
    v, p = V[supp], p0[supp]
    if name == "kl-penalty":
        return float(-rho * logsumexp(-v / rho, b=p))
    if name == "kl":  # sup_{beta > 0} -beta log E exp(-V / beta) - beta rho, over u = log beta; beta -> 0 gives min

        def neg_dual(u: float) -> float:
            beta = math.exp(u)
            return float(beta * logsumexp(-v / beta, b=p) + beta * rho)

        res = minimize_scalar(neg_dual, bounds=(-25.0, 25.0), method="bounded", options={"xatol": 1e-10})
        return max(-float(res.fun), float(v.min()))
    if name == "chi2":  # sup_eta eta - sqrt(1 + rho) sqrt(E (eta - V)_+^2)

        def neg(eta: float) -> float:
            return -(eta - math.sqrt(1 + rho) * math.sqrt(float(p @ np.maximum(eta - v, 0.0) ** 2)))

        mean = float(p @ v)
        hi = float(v.max()) + math.sqrt(float(p @ (v - mean) ** 2) / rho) + 1.0
        res = minimize_scalar(neg, bounds=(float(v.min()), hi), method="bounded", options={"xatol": 1e-12})
        return -float(res.fun)
    raise AssertionError(name)


def independent_robust_vi(path: Path, name: str, rho: float, tol: float = 1e-9) -> np.ndarray:
    """Q*_rob of the game file, to a certified error <= tol, by plain value iteration with the solvers above."""
    with np.load(path) as data:
        P, R, gamma = data["P"], data["R"], float(data["gamma"])
    S = P.shape[0]
    Pf, Rf = P.reshape(S, -1, S), R.reshape(S, -1)
    Q = np.zeros_like(Rf)
    while True:
        V = Q.max(axis=1)
        TQ = np.array(
            [
                [Rf[s, a] + gamma * _worst_expectation(name, Pf[s, a], V, rho) for a in range(Rf.shape[1])]
                for s in range(S)
            ]
        )
        res = float(np.max(np.abs(TQ - Q)))
        Q = TQ
        if gamma * res / (1 - gamma) <= tol:
            return Q.reshape(R.shape)


@pytest.fixture(scope="module")
def games(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    root = tmp_path_factory.mktemp("games")
    specs = [("3", "0.0", "0.6", "1"), ("4", "0.4", "0.5", "2")]
    paths = []
    for states, sparsity, gamma, seed in specs:
        path = root / f"g{states}.npz"
        out = run_cli(
            "random", "--states", states, "--actions", "2,2", "--seed", seed, "--sparsity", sparsity, "--gamma", gamma,
            "-o", str(path),
        )  # fmt: skip
        assert out.returncode == 0, out.stderr
        paths.append(path)
    return paths


@pytest.mark.parametrize(("name", "rho"), SET_RHOS)
def test_solve_matches_an_independent_robust_value_iteration(games: list[Path], name: str, rho: float) -> None:
    for path in games:
        out = run_cli("solve", str(path), "--set", name, "--rho", str(rho), "--json")
        assert out.returncode == 0, out.stderr
        got = json.loads(out.stdout)
        Q = np.array(got["Q"])
        expected = independent_robust_vi(path, name, rho)
        assert Q.shape == expected.shape
        np.testing.assert_allclose(Q, expected, rtol=0, atol=1e-6)
        assert got["error_bound"] <= 1e-10


# ----- JSON contracts --------------------------------------------------------------------------------------
def test_solve_json_contract(tmp_path: Path) -> None:
    path = tmp_path / "g.npz"
    assert run_cli("random", "--states", "5", "--actions", "2,3,2", "--seed", "4", "-o", str(path)).returncode == 0
    out = run_cli("solve", str(path), "--set", "tv", "--rho", "0.2", "--json")
    assert out.returncode == 0, out.stderr
    got = json.loads(out.stdout)
    assert set(got) == {"set", "rho", "gamma", "Q", "V", "greedy", "residual", "error_bound", "iterations"}
    assert got["set"] == "tv" and got["rho"] == 0.2 and got["gamma"] == 0.9
    Q = np.array(got["Q"])
    assert Q.shape == (5, 2, 3, 2)
    np.testing.assert_allclose(got["V"], Q.reshape(5, -1).max(axis=1), rtol=0, atol=0)
    assert len(got["greedy"]) == 5 and all(len(a) == 3 and all(isinstance(x, int) for x in a) for a in got["greedy"])
    for s, a in enumerate(got["greedy"]):  # the joint argmax with the smallest flat C-order index (no ties here)
        assert tuple(a) == np.unravel_index(int(np.argmax(Q[s].reshape(-1))), (2, 3, 2))
    assert isinstance(got["iterations"], int) and got["iterations"] > 1
    assert got["residual"] > 0 and got["error_bound"] == pytest.approx(0.9 * got["residual"] / 0.1)
    assert got["error_bound"] <= 1e-10


def test_solve_greedy_breaks_ties_by_the_smallest_flat_index(tmp_path: Path) -> None:
    path = tmp_path / "penalty.npz"
    assert run_cli("classic", "penalty", "-o", str(path)).returncode == 0
    got = json.loads(run_cli("solve", str(path), "--set", "kl", "--rho", "0.5", "--json").stdout)
    assert got["greedy"] == [[0, 0]]  # (0,0) and (2,2) both pay 10
    assert got["V"] == [10.0]


def test_evaluate_json_contract(tmp_path: Path) -> None:
    path = tmp_path / "rvn.npz"
    assert run_cli("classic", "robust_vs_nominal", "-o", str(path)).returncode == 0
    policy = tmp_path / "policy.json"
    policy.write_text(json.dumps({"policy": [[1, 1], [0, 0], [0, 0], [0, 0]]}))  # the nominal greedy policy
    out = run_cli("evaluate", str(path), "--set", "tv", "--rho", "0.2", "--policy", str(policy), "--json")
    assert out.returncode == 0, out.stderr
    got = json.loads(out.stdout)
    assert {"robust_value", "nominal_value", "worst_case_kernel_rows_sum_to_one"} <= set(got)
    assert len(got["robust_value"]) == 4 and len(got["nominal_value"]) == 4
    assert got["worst_case_kernel_rows_sum_to_one"] is True
    robust, nominal = np.array(got["robust_value"]), np.array(got["nominal_value"])
    assert np.all(robust <= nominal + 1e-9) and robust[0] < nominal[0] - 0.1
    solved = json.loads(run_cli("solve", str(path), "--set", "tv", "--rho", "0.2", "--json").stdout)
    assert robust[0] < solved["V"][0] - 0.01 * abs(solved["V"][0])  # the nominal policy is not robust-optimal


def test_random_with_sparsity_and_classic(tmp_path: Path) -> None:
    path = tmp_path / "sparse.npz"
    out = run_cli("random", "--states", "6", "--actions", "2,2", "--sparsity", "0.7", "--seed", "3", "-o", str(path))
    assert out.returncode == 0 and "wrote" in out.stdout
    g = load_game(path)
    assert g.n_states == 6 and g.n_actions == (2, 2) and g.gamma == 0.9
    assert 0.4 < np.mean(g.P == 0) < 0.9 and np.all((g.P > 0).sum(axis=-1) >= 1)
    dense = tmp_path / "dense.npz"
    assert run_cli("random", "--states", "6", "--actions", "2,2", "--seed", "3", "-o", str(dense)).returncode == 0
    assert np.all(load_game(dense).P > 0)
    for name in ("climbing", "penalty", "robust_vs_nominal"):
        target = tmp_path / f"{name}.npz"
        assert run_cli("classic", name, "-o", str(target)).returncode == 0
        assert load_game(target).name == name


def test_human_readable_output(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "climb.npz"
    assert main(["classic", "climbing", "-o", str(path)]) == 0
    assert main(["solve", str(path), "--set", "contamination", "--rho", "0.1"]) == 0
    text = capsys.readouterr().out
    assert "V*_rob" in text and "greedy at s=0" in text and "(0, 0)" in text


# ----- bad inputs --------------------------------------------------------------------------------------------
def test_bad_inputs_exit_2_in_a_real_process(tmp_path: Path) -> None:
    out = run_cli("solve", str(tmp_path / "missing.npz"), "--set", "tv", "--rho", "0.1", "--json")
    assert out.returncode == 2 and "does not exist" in out.stderr and out.stdout == ""
    path = tmp_path / "g.npz"
    assert run_cli("random", "--states", "2", "--actions", "2", "-o", str(path)).returncode == 0
    out = run_cli("solve", str(path), "--set", "tv", "--rho", "1.5", "--json")
    assert out.returncode == 2 and "allowed rho [0, 1]" in out.stderr


def _fails(capsys: pytest.CaptureFixture[str], argv: list[str]) -> str:
    """Run main in-process; assert exit status 2 and return stderr."""
    try:
        status = main(argv)
    except SystemExit as exc:  # argparse refusals
        status = exc.code
    assert status == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    return captured.err


@pytest.fixture
def small_game(tmp_path: Path) -> Path:
    return save_game(random_game(3, (2, 2), seed=0), tmp_path / "small.npz")


@pytest.mark.parametrize(
    ("set_name", "rho", "message"),
    [
        ("tv", "1.5", r"allowed rho [0, 1]"),
        ("contamination", "-0.1", r"allowed rho [0, 1]"),
        ("kl", "-1", r"allowed rho >= 0"),
        ("chi2", "-0.5", r"allowed rho >= 0"),
        ("kl-penalty", "0", r"beta > 0"),
        ("tv", "nan", "expected a finite number"),
        ("kl", "inf", "expected a finite number"),
        ("tv", "abc", "expected a number"),
    ],
)
def test_rho_out_of_range(
    capsys: pytest.CaptureFixture[str], small_game: Path, set_name: str, rho: str, message: str
) -> None:
    for command in ("solve", "evaluate"):
        extra = ["--policy", "unused.json"] if command == "evaluate" else []
        err = _fails(capsys, [command, str(small_game), "--set", set_name, "--rho", rho, *extra])
        assert message in err


def test_unknown_set(capsys: pytest.CaptureFixture[str], small_game: Path) -> None:
    err = _fails(capsys, ["solve", str(small_game), "--set", "wasserstein", "--rho", "0.1"])
    # not argparse's choices: installed drigm.sets entry points and module:ATTRIBUTE are valid too (issue 35)
    assert "unknown uncertainty set 'wasserstein'; choose one of contamination, tv" in err
    err = _fails(capsys, ["solve", str(small_game), "--set", "reference.sets:SET_NAMES", "--rho", "0.1"])
    assert "reference.sets:SET_NAMES is a tuple, not a reference.sets.SetSpec" in err


def test_bad_game_files(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    assert "does not exist" in _fails(capsys, ["solve", str(tmp_path / "no.npz"), "--set", "tv", "--rho", "0.1"])
    junk = tmp_path / "junk.npz"
    junk.write_bytes(b"not a zip file at all")
    assert "not a readable .npz archive" in _fails(capsys, ["solve", str(junk), "--set", "tv", "--rho", "0.1"])
    partial = tmp_path / "partial.npz"
    np.savez(partial, R=np.zeros((1, 1)), gamma=np.float64(0.5))
    assert "lacks the required key 'P'" in _fails(capsys, ["solve", str(partial), "--set", "tv", "--rho", "0.1"])
    unnormalised = tmp_path / "unnormalised.npz"
    np.savez(unnormalised, P=np.array([[[0.5, 0.6]], [[0.5, 0.5]]]), R=np.zeros((2, 1)), gamma=np.float64(0.5))
    err = _fails(capsys, ["solve", str(unnormalised), "--set", "tv", "--rho", "0.1"])
    assert "P row at index (0, 0) sums to" in err


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("{not json", "is not valid JSON"),
        ('{"pol": [[0, 0]]}', "must hold an object with the key 'policy'"),
        ("[[0, 0], [0, 0], [0, 0]]", "must hold an object with the key 'policy'"),
        ('{"policy": [[0, 0], [0, 0]]}', "must be 3 lists of 2 integers (S x N); got shape (2, 2)"),
        ('{"policy": [[0, 0, 0], [0, 0, 0], [0, 0, 0]]}', "got shape (3, 3)"),
        ('{"policy": [[0, 0], [0], [0, 0]]}', "ragged"),
        ('{"policy": [[0.5, 0], [0, 0], [0, 0]]}', "integers"),
        ('{"policy": [[0, 2], [0, 0], [0, 0]]}', "policy action 2 of agent 1 in state 0 is outside [0, 2)"),
    ],
)
def test_bad_policy_files(
    capsys: pytest.CaptureFixture[str], small_game: Path, tmp_path: Path, content: str, message: str
):
    policy = tmp_path / "policy.json"
    policy.write_text(content)
    err = _fails(capsys, ["evaluate", str(small_game), "--set", "tv", "--rho", "0.1", "--policy", str(policy)])
    assert message in err


def test_missing_policy_file(capsys: pytest.CaptureFixture[str], small_game: Path, tmp_path: Path) -> None:
    err = _fails(capsys, ["evaluate", str(small_game), "--set", "tv", "--rho", "0.1", "--policy", str(tmp_path / "p")])
    assert "policy file" in err and "does not exist" in err
    (tmp_path / "d.json").mkdir()
    err = _fails(
        capsys, ["evaluate", str(small_game), "--set", "tv", "--rho", "0.1", "--policy", str(tmp_path / "d.json")]
    )
    assert "d.json' is a directory" in err


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["random", "--states", "0", "--actions", "2"], "--states must be >= 1"),
        (["random", "--states", "3", "--actions", "2,0"], "--actions must list positive integers"),
        (["random", "--states", "3", "--actions", "2,x"], "comma-separated integers"),
        (["random", "--states", "3", "--actions", "2", "--sparsity", "1"], "--sparsity=1.0 is outside"),
        (["random", "--states", "3", "--actions", "2", "--gamma", "1"], "outside the allowed range [0, 1)"),
        (["classic", "prisoners"], "invalid choice"),
    ],
)
def test_bad_generator_arguments(capsys: pytest.CaptureFixture[str], tmp_path: Path, argv: list[str], message: str):
    assert message in _fails(capsys, [*argv, "-o", str(tmp_path / "x.npz")])
