"""tests/conftest.py: under CI=true a missing extra or an unexplained skip fails; CUDA / StarCraft II skips stand."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

CASES = """
import pytest
from conftest import require_extra


def test_missing_extra():
    require_extra("drigm_no_such_module_xyz", "imaginary")


def test_present_extra():
    assert require_extra("json", "stdlib").dumps([]) == "[]"


def test_plain_skip():
    pytest.skip("flaky network")


@pytest.mark.skipif(True, reason="needs CUDA")
def test_cuda_skip():
    pass


def test_starcraft_skip():
    pytest.skip("needs the StarCraft II binary: not found")
"""
MODULE_SKIP = """
from conftest import require_extra

require_extra("drigm_no_such_module_xyz", "imaginary")


def test_never_runs():
    pass
"""


def outcomes(tmp_path: Path, ci: str | None) -> dict[str, str]:
    """Run the cases above in a fresh pytest with this conftest; map test name -> outcome (or 'collect:...')."""
    shutil.copy(Path(__file__).with_name("conftest.py"), tmp_path / "conftest.py")
    (tmp_path / "test_cases.py").write_text(CASES)
    (tmp_path / "test_module_skip.py").write_text(MODULE_SKIP)
    env = {k: v for k, v in os.environ.items() if k != "CI"}
    if ci is not None:
        env["CI"] = ci
    plugin = tmp_path / "collect_outcomes.py"
    plugin.write_text(
        "import json\nOUT = {}\n"
        "def pytest_runtest_logreport(report):\n"
        "    if report.when == 'call' or report.outcome != 'passed':\n"
        "        OUT[report.nodeid.split('::')[-1]] = report.outcome\n"
        "def pytest_collectreport(report):\n"
        "    if report.outcome != 'passed':\n"
        "        OUT['collect:' + report.nodeid] = report.outcome\n"
        "def pytest_sessionfinish(session):\n"
        f"    open({str(tmp_path / 'out.json')!r}, 'w').write(json.dumps(OUT))\n"
    )
    plugins = ["-p", "collect_outcomes", "-p", "no:cacheprovider"]
    subprocess.run(
        [sys.executable, "-m", "pytest", "-q", *plugins, "--continue-on-collection-errors", str(tmp_path)],
        cwd=tmp_path,
        env={**env, "PYTHONPATH": str(tmp_path)},
        capture_output=True,
        text=True,
        timeout=120,
    )
    return json.loads((tmp_path / "out.json").read_text())


def test_outside_ci_missing_extras_skip(tmp_path: Path) -> None:
    out = outcomes(tmp_path, None)
    assert out["test_missing_extra"] == "skipped"
    assert out["test_present_extra"] == "passed"
    assert out["test_plain_skip"] == "skipped"
    assert out["collect:test_module_skip.py"] == "skipped"


@pytest.mark.parametrize("ci", ["true", "1"])
def test_under_ci_only_hardware_skips_stand(tmp_path: Path, ci: str) -> None:
    out = outcomes(tmp_path, ci)
    assert out["test_missing_extra"] == "failed"
    assert out["test_present_extra"] == "passed"
    assert out["test_plain_skip"] == "failed"
    assert out["test_cuda_skip"] == "skipped"
    assert out["test_starcraft_skip"] == "skipped"
    assert out["collect:test_module_skip.py"] == "failed"
