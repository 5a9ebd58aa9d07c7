"""Figures as files: every plot of the reports is a matplotlib figure, written as PNG bytes by its caller."""

from __future__ import annotations

import io
from typing import Any


def png_bytes(fig: Any) -> bytes:
    """The PNG encoding of the matplotlib figure `fig` (120 dpi, tight bounding box)."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=120, bbox_inches="tight")
    return buf.getvalue()
