"""Atomic file writes and checkpoint load/validation, with a SHA-256 checksum of every checkpoint's payload.

Writes go to a temporary file in the destination directory, are flushed and fsynced, then renamed
over the destination with ``os.replace``: a reader (or a resumed run after a crash) sees the old file
or the new one, never a torn one. Checkpoints are loaded with ``torch.load(weights_only=True)`` (no
arbitrary pickles), and their format tag, required sections and model metadata are checked, each
failure naming the file and the problem.

Integrity: a checkpoint (format ``drigm-checkpoint/2``) stores under ``"checksum"`` the SHA-256 digest of
every payload section and of every entry of a section that is a mapping (``learner.mixer``,
``buffer.data``, ...), computed over a canonical encoding of the loaded objects (tensor dtype, shape and raw
bytes; numbers, strings, containers with their types and order). Loading recomputes the digests and refuses
a checkpoint whose content differs, naming the file and the differing entries: torch's zip reader does not
verify its CRCs, so flipped tensor bytes would otherwise load silently. Checkpoints written before
checksums existed (``drigm-checkpoint/1``) still load, with a :class:`CheckpointWarning` saying that they
were not verified; a ``/2`` checkpoint without a checksum is refused.
"""

from __future__ import annotations

import hashlib
import io
import warnings
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from reference.atomic_io import atomic_write_bytes as _atomic_write_bytes
from reference.atomic_io import describe_not_a_file

FORMAT = "drigm-checkpoint/2"
LEGACY_FORMATS = ("drigm-checkpoint/1",)
"""Formats without a checksum: loaded with a CheckpointWarning (nothing in them can be verified)."""
REQUIRED = ("format", "meta", "config", "learner", "counters", "rng")
CHECKSUM_KEY = "checksum"
CHECKSUM_ALGORITHM = "sha256"


class CheckpointError(RuntimeError):
    """A checkpoint is missing, unreadable, corrupt, or does not match the run that loads it."""


class CheckpointWarning(UserWarning):
    """A checkpoint was loaded without an integrity check (it predates checksums)."""


# ===== checksums ====================================================================================
def _feed(h: Any, obj: Any) -> None:
    """Update hash `h` with a canonical, type-tagged encoding of `obj` (equal objects give equal bytes)."""
    if isinstance(obj, torch.Tensor):
        t = obj.detach()
        if t.layout != torch.strided:
            t = t.to_dense()
        t = t.cpu().contiguous()
        h.update(f"T{t.dtype}{tuple(t.shape)}".encode())
        if t.numel():
            h.update(t.reshape(-1).view(torch.uint8).numpy().data)
    elif isinstance(obj, np.ndarray):
        a = np.ascontiguousarray(obj)
        h.update(f"A{a.dtype.str}{a.shape}".encode())
        h.update(a.tobytes())
    elif isinstance(obj, dict):
        h.update(f"D{len(obj)}:".encode())
        for k, v in obj.items():
            _feed(h, k)
            _feed(h, v)
    elif isinstance(obj, (list, tuple)):
        h.update(f"{'L' if isinstance(obj, list) else 'U'}{len(obj)}:".encode())
        for v in obj:
            _feed(h, v)
    elif isinstance(obj, bool) or obj is None:
        h.update(f"B{obj}".encode())
    elif isinstance(obj, (int, np.integer)):
        h.update(f"I{int(obj)}:".encode())
    elif isinstance(obj, (float, np.floating)):
        h.update(f"F{float(obj).hex()}:".encode())
    elif isinstance(obj, str):
        data = obj.encode("utf-8", "surrogatepass")
        h.update(f"S{len(data)}:".encode())
        h.update(data)
    elif isinstance(obj, (bytes, bytearray)):
        h.update(f"Y{len(obj)}:".encode())
        h.update(bytes(obj))
    else:  # torch.dtype, torch.device, ...: their repr is what the unpickler restores
        text = f"R{type(obj).__module__}.{type(obj).__qualname__}:{obj!r}"
        h.update(f"{len(text)}:{text}".encode())


def _digest(obj: Any) -> str:
    h = hashlib.sha256()
    _feed(h, obj)
    return h.hexdigest()


def payload_digests(obj: dict[str, Any]) -> dict[str, str]:
    """SHA-256 hex digests of every section of checkpoint `obj` (all keys but "format" and "checksum") and of
    every entry of a section that is a mapping (keys ``section.entry``); a pure function of the content."""
    out: dict[str, str] = {}
    for name, value in obj.items():
        if name in ("format", CHECKSUM_KEY):
            continue
        out[str(name)] = _digest(value)
        if isinstance(value, dict):
            for k, v in value.items():
                out[f"{name}.{k}"] = _digest(v)
    return out


def _shorten(names: Iterable[str]) -> list[str]:
    """Drop a section from a list of differing names when one of its entries is listed too."""
    names = sorted(names)
    return [n for n in names if not any(m.startswith(n + ".") for m in names)]


def verify_checksum(obj: dict[str, Any], path: Path) -> None:
    """Raise CheckpointError naming `path` and every differing section/entry unless `obj`'s content matches
    the digests stored in it when it was written; a legacy checkpoint only warns (CheckpointWarning)."""
    fmt = obj.get("format")
    if fmt in LEGACY_FORMATS:
        warnings.warn(
            f"checkpoint {str(path)!r} has the format {fmt!r}, written before checkpoints carried a checksum: it "
            "is loaded without an integrity check (the next checkpoint this run writes will carry one)",
            CheckpointWarning,
            stacklevel=3,
        )
        return
    stored = obj.get(CHECKSUM_KEY)
    if (
        not isinstance(stored, dict)
        or stored.get("algorithm") != CHECKSUM_ALGORITHM
        or not isinstance(stored.get("digests"), dict)
    ):
        raise CheckpointError(
            f"checkpoint {str(path)!r} ({fmt}) lacks a valid {CHECKSUM_KEY!r} section (expected a "
            f"{CHECKSUM_ALGORITHM} digest per section): the file was altered after it was written"
        )
    want: dict[str, str] = stored["digests"]
    have = payload_digests(obj)
    missing = sorted(set(want) - set(have))
    extra = sorted(set(have) - set(want))
    changed = _shorten(k for k in set(want) & set(have) if want[k] != have[k])
    if missing or extra or changed:
        parts = []
        if changed:
            shown = ", ".join(f"{k} (stored {want[k][:12]}..., now {have[k][:12]}...)" for k in changed[:8])
            more = f" and {len(changed) - 8} more" if len(changed) > 8 else ""
            parts.append(f"content differs in {shown}{more}")
        if missing:
            parts.append(f"missing entries {missing[:8]}")
        if extra:
            parts.append(f"unexpected entries {extra[:8]}")
        raise CheckpointError(
            f"checkpoint {str(path)!r} fails its SHA-256 check: {'; '.join(parts)}. The file "
            "was corrupted or altered after it was written; it is not loaded. Restore it from a copy, or delete it "
            "and train the run again without --resume"
        )


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write `data` to `path` atomically (temporary file in the same directory, fsync, os.replace), creating
    missing parent directories; the shared implementation is :func:`reference.atomic_io.atomic_write_bytes`."""
    _atomic_write_bytes(path, data, make_parents=True)


def save_checkpoint(obj: dict[str, Any], path: Path) -> None:
    """Serialise `obj` with its SHA-256 section digests (format drigm-checkpoint/2) with torch.save into memory,
    then write it atomically to `path`."""
    body = {k: v for k, v in obj.items() if k not in ("format", CHECKSUM_KEY)}
    digests = payload_digests(body)
    buf = io.BytesIO()
    torch.save({"format": FORMAT, **body, CHECKSUM_KEY: {"algorithm": CHECKSUM_ALGORITHM, "digests": digests}}, buf)
    atomic_write_bytes(path, buf.getvalue())


def load_checkpoint(path: Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Load, structurally check and checksum-verify a checkpoint; raises CheckpointError naming the file and
    the problem (a legacy checkpoint without a checksum loads with a CheckpointWarning)."""
    path = Path(path)
    problem = describe_not_a_file(path, "checkpoint")
    if problem is not None:
        raise CheckpointError(problem)
    try:
        obj = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:  # truncated zip, bad magic, foreign pickle: all mean "not a usable checkpoint"
        raise CheckpointError(
            f"checkpoint {str(path)!r} is corrupt or unreadable: {type(exc).__name__}: {exc}"
        ) from exc
    if not isinstance(obj, dict) or (obj.get("format") != FORMAT and obj.get("format") not in LEGACY_FORMATS):
        got = obj.get("format") if isinstance(obj, dict) else type(obj).__name__
        raise CheckpointError(
            f"checkpoint {str(path)!r} has format {got!r}; expected {FORMAT!r} (or the older {LEGACY_FORMATS[0]!r})"
        )
    missing = [k for k in REQUIRED if k not in obj]
    if missing:
        raise CheckpointError(f"checkpoint {str(path)!r} lacks the sections {missing}")
    verify_checksum(obj, path)
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
