"""Atomic file writes and checkpoint load/validation.

Writes go to a temporary file in the destination directory, are flushed and fsynced, then renamed
over the destination with ``os.replace``: a reader (or a resumed run after a crash) sees the old file
or the new one, never a torn one. Checkpoints are loaded with ``torch.load(weights_only=True)`` (no
arbitrary pickles), and their format tag, required sections and model metadata are checked, each
failure naming the file and the problem.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import torch

from reference.atomic_io import atomic_write_bytes as _atomic_write_bytes

FORMAT = "drigm-checkpoint/1"
REQUIRED = ("format", "meta", "config", "learner", "counters", "rng")


class CheckpointError(RuntimeError):
    """A checkpoint is missing, unreadable, corrupt, or does not match the run that loads it."""


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write `data` to `path` atomically (temporary file in the same directory, fsync, os.replace), creating
    missing parent directories; the shared implementation is :func:`reference.atomic_io.atomic_write_bytes`."""
    _atomic_write_bytes(path, data, make_parents=True)


def save_checkpoint(obj: dict[str, Any], path: Path) -> None:
    """Serialise `obj` with torch.save into memory, then write it atomically to `path`."""
    buf = io.BytesIO()
    torch.save({"format": FORMAT, **obj}, buf)
    atomic_write_bytes(path, buf.getvalue())


def load_checkpoint(path: Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Load and structurally check a checkpoint; raises CheckpointError naming the file and the problem."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {str(path)!r} does not exist")
    try:
        obj = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:  # truncated zip, bad magic, foreign pickle: all mean "not a usable checkpoint"
        raise CheckpointError(
            f"checkpoint {str(path)!r} is corrupt or unreadable: {type(exc).__name__}: {exc}"
        ) from exc
    if not isinstance(obj, dict) or obj.get("format") != FORMAT:
        got = obj.get("format") if isinstance(obj, dict) else type(obj).__name__
        raise CheckpointError(f"checkpoint {str(path)!r} has format {got!r}; expected {FORMAT!r}")
    missing = [k for k in REQUIRED if k not in obj]
    if missing:
        raise CheckpointError(f"checkpoint {str(path)!r} lacks the sections {missing}")
    return obj


def check_meta(saved: dict[str, Any], current: dict[str, Any], path: Path) -> None:
    """Raise CheckpointError naming every key where the checkpoint's model metadata differs from this run's."""
    diffs = [
        f"{k}: checkpoint has {saved.get(k)!r}, this run has {current.get(k)!r}"
        for k in sorted(set(saved) | set(current))
        if saved.get(k) != current.get(k)
    ]
    if diffs:
        raise CheckpointError(f"checkpoint {str(path)!r} does not match this run ({'; '.join(diffs)})")
