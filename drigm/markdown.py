"""Markdown pieces of the reports: tables and interval text."""

from __future__ import annotations


def md_table(header: list[str], rows: list[list[str]]) -> str:
    """A GitHub markdown table: the header row, its separator, then one line per row (cells as given)."""
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)


def ci_text(ci: tuple[float, float] | list[float] | None) -> str:
    """``[lo, hi]`` to 3 decimals, or ``[n/a]`` without an interval."""
    return f"[{ci[0]:.3f}, {ci[1]:.3f}]" if ci is not None else "[n/a]"


def point_cis(point: float, ci: tuple[float, float] | None, t_ci: tuple[float, float] | None, fmt: str) -> str:
    """``point [bootstrap CI] t [Student-t CI]``, the point formatted with `fmt` (e.g. ``+.3f``)."""
    return f"{point:{fmt}} {ci_text(ci)} t {ci_text(t_ci)}"
