"""No silent skips in CI.

CI (``CI=true``, set by GitHub Actions and by ``.ci/run``) installs every extra, so a test that cannot import one
(jaxmarl, sustaingym, ray) means a broken install and must fail there. Use :func:`require_extra` instead of
``pytest.importorskip`` for an extra's module. Beyond that, :func:`pytest_runtest_makereport` turns every skip under
CI into a failure unless its reason names hardware a CI machine cannot have (``HARDWARE_WORDS``: CUDA, StarCraft
II), so a new ``importorskip`` or ``skipif`` cannot slip through either. Outside CI, missing extras skip as before.
"""

from __future__ import annotations

import importlib
import os
from types import ModuleType

import pytest

HARDWARE_WORDS: tuple[str, ...] = ("CUDA", "StarCraft II")
"""A skip reason naming one of these may stand under CI: the hardware or binary is not on a CI machine."""


def in_ci() -> bool:
    """True when the environment variable CI is set to a true value (true, 1, yes; any case)."""
    return os.environ.get("CI", "").strip().lower() in ("true", "1", "yes")


def require_extra(module: str, extra: str) -> ModuleType:
    """Import `module` of the install extra `extra`; skip without it, but fail under CI, where it must be there.

    Works at module level (the whole test module is skipped, or errors under CI) and inside a test.
    """
    try:
        return importlib.import_module(module)
    except Exception as exc:  # an extra that is installed but broken raises more than ImportError
        if in_ci():
            pytest.fail(
                f"CI=true but {module!r} of the {extra!r} extra does not import ({type(exc).__name__}: {exc}); "
                "CI installs every extra, so this is a broken install, not a reason to skip",
                pytrace=False,
            )
        pytest.skip(f"needs the {extra!r} extra ({module!r} does not import: {exc})", allow_module_level=True)


def skip_is_allowed_in_ci(reason: str) -> bool:
    """A skip may stand under CI only if its reason names hardware CI cannot have (see HARDWARE_WORDS)."""
    return any(word.lower() in reason.lower() for word in HARDWARE_WORDS)


def _skip_reason(report: pytest.TestReport) -> str:
    longrepr = report.longrepr
    if isinstance(longrepr, tuple) and len(longrepr) == 3:
        return str(longrepr[2])
    return str(longrepr)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]):  # type: ignore[no-untyped-def]
    """Under CI, report a skip whose reason names no CI-impossible hardware as a failure."""
    outcome = yield
    report: pytest.TestReport = outcome.get_result()
    if not (in_ci() and report.skipped) or hasattr(report, "wasxfail"):
        return
    reason = _skip_reason(report)
    if not skip_is_allowed_in_ci(reason):
        report.outcome = "failed"
        report.longrepr = (
            f"skipped under CI=true, which installs every extra; only CUDA / StarCraft II may skip: {reason}"
        )


def pytest_collectreport(report: pytest.CollectReport) -> None:
    """Under CI, a whole module skipped at collection (e.g. importorskip at module level) fails too."""
    if in_ci() and report.skipped and not skip_is_allowed_in_ci(_skip_reason(report)):  # type: ignore[arg-type]
        report.outcome = "failed"
