"""docs/theory.md as Hypothesis properties, checked against the exact reference solver, with a report.

``python -m proofs_check [--profile ci|thorough] [--json OUT.json]`` prints one row per theorem and
counterexample. From Python: :func:`run_all` / :func:`run_property` return :class:`PropertyResult` objects,
:func:`format_report` renders them and :func:`write_json` writes the docs/game-format.md contract.
Imports :mod:`reference`; nothing in :mod:`reference` imports this package.
"""

from proofs_check.properties import REGISTRY, ConfirmationError, FalsifiedError, Property, get_property
from proofs_check.report import format_report, format_table, write_json
from proofs_check.runner import PROFILES, Profile, PropertyResult, database_path, run_all, run_property, select

__all__ = [
    "PROFILES",
    "REGISTRY",
    "ConfirmationError",
    "FalsifiedError",
    "Profile",
    "Property",
    "PropertyResult",
    "database_path",
    "format_report",
    "format_table",
    "get_property",
    "run_all",
    "run_property",
    "select",
    "write_json",
]
