"""Sizes checked before allocation: an estimate in bytes against the memory this machine has available.

A size too large for the machine (a game of 10^9 states, a replay of 10^12 transitions, a hidden width of 10^12)
is refused up front with the figure, instead of a MemoryError traceback, an allocator abort or the OOM killer.
"""

from __future__ import annotations

import os

HEADROOM = 0.9
"""The share of the available memory one allocation may take."""


class MemoryBudgetError(ValueError):
    """An allocation that cannot fit in this machine's available memory; the message names what and how much."""


def available_bytes() -> int:
    """Memory available to a new allocation: MemAvailable of /proc/meminfo, else free physical pages."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return int(os.sysconf("SC_AVPHYS_PAGES")) * int(os.sysconf("SC_PAGE_SIZE"))
    except (ValueError, OSError, AttributeError):
        return 2**63 - 1  # unknown: nothing is refused by this check


def human(nbytes: float) -> str:
    """A byte count in B, KiB, MiB, GiB, TiB or PiB (beyond: powers of ten of bytes)."""
    units = ("B", "KiB", "MiB", "GiB", "TiB", "PiB")
    x = float(nbytes)
    for unit in units:
        if x < 1024 or unit == units[-1]:
            return f"{x:.3g} {unit}" if x < 1024 else f"{nbytes:.3g} bytes"
        x /= 1024
    return f"{nbytes:.3g} bytes"


def check_fits(what: str, nbytes: float, available: int | None = None) -> None:
    """Raise MemoryBudgetError naming `what` when `nbytes` exceeds HEADROOM of the available memory."""
    avail = available_bytes() if available is None else available
    if nbytes > HEADROOM * avail:
        raise MemoryBudgetError(f"{what} needs about {human(nbytes)}; this machine has {human(avail)} available")
