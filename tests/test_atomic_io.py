"""`reference.atomic_io`: the destination holds the old content or the complete new one, never a torn file.

1. Success: bytes, text and JSON land exactly; the file gets the permissions a plain open() gives.
2. A writer that raises (an exception or KeyboardInterrupt) half-way: no new file appears, an existing file
   keeps its old content, and no temporary file is left behind.
3. A missing (or non-directory) parent is refused with a message naming it, unless make_parents is asked.
4. The four former copies (save_game, drigm checkpoints, the proofs_check report, sweep results) use it.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import IO

import numpy as np
import pytest

from reference import atomic_io
from reference.atomic_io import atomic_write, atomic_write_bytes, atomic_write_json, atomic_write_text


def _leftovers(directory: Path, name: str) -> list[str]:
    return sorted(p.name for p in directory.iterdir() if p.name.startswith(f".{name}.") and p.name.endswith(".tmp"))


class BoomError(RuntimeError):
    """The writer failed half-way."""


def _half_then_raise(exc: BaseException):
    def writer(fh: IO[bytes]) -> None:
        fh.write(b"partial content that must never become visible")
        fh.flush()
        raise exc

    return writer


# ----- 1. success ------------------------------------------------------------------------------------
def test_bytes_text_and_json_land_exactly(tmp_path: Path) -> None:
    assert atomic_write_bytes(tmp_path / "a.bin", b"\x00\x01abc") == tmp_path / "a.bin"
    assert (tmp_path / "a.bin").read_bytes() == b"\x00\x01abc"
    atomic_write_text(tmp_path / "t.txt", "h\u00e9llo\n")
    assert (tmp_path / "t.txt").read_bytes() == "h\u00e9llo\n".encode()
    atomic_write_json(tmp_path / "o.json", {"x": [1, 2.5], "p": Path("q")}, default=str)
    assert (tmp_path / "o.json").read_text() == json.dumps({"x": [1, 2.5], "p": "q"}, indent=1) + "\n"
    atomic_write_bytes(tmp_path / "a.bin", b"new")  # replacing an existing file
    assert (tmp_path / "a.bin").read_bytes() == b"new"
    assert _leftovers(tmp_path, "a.bin") == [] and _leftovers(tmp_path, "o.json") == []


def test_permissions_follow_the_umask_like_open(tmp_path: Path) -> None:
    old = os.umask(0o027)
    try:
        atomic_write_bytes(tmp_path / "f", b"x")
        with open(tmp_path / "g", "wb") as fh:
            fh.write(b"x")
    finally:
        os.umask(old)
    assert (tmp_path / "f").stat().st_mode & 0o777 == (tmp_path / "g").stat().st_mode & 0o777 == 0o640


# ----- 2. a failing writer -----------------------------------------------------------------------------
@pytest.mark.parametrize("exc", [BoomError("disk full"), KeyboardInterrupt()])
def test_a_failed_write_leaves_no_file_and_no_temp(tmp_path: Path, exc: BaseException) -> None:
    target = tmp_path / "new.npz"
    with pytest.raises(type(exc)):
        atomic_write(target, _half_then_raise(exc))
    assert not target.exists()
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("exc", [BoomError("disk full"), KeyboardInterrupt()])
def test_an_existing_file_survives_a_failed_write(tmp_path: Path, exc: BaseException) -> None:
    target = tmp_path / "results.json"
    target.write_text('{"complete": true}\n')
    with pytest.raises(type(exc)):
        atomic_write(target, _half_then_raise(exc))
    assert target.read_text() == '{"complete": true}\n'
    assert _leftovers(tmp_path, "results.json") == [] and [p.name for p in tmp_path.iterdir()] == ["results.json"]


def test_a_failed_rename_cleans_up(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    target = tmp_path / "r.txt"
    target.write_text("old")

    def no_replace(src: str, dst: str) -> None:
        raise OSError("rename refused")

    monkeypatch.setattr(atomic_io.os, "replace", no_replace)
    with pytest.raises(OSError, match="rename refused"):
        atomic_write_text(target, "new")
    assert target.read_text() == "old" and _leftovers(tmp_path, "r.txt") == []


def test_json_that_cannot_be_encoded_creates_nothing(tmp_path: Path) -> None:
    with pytest.raises(TypeError, match="not JSON serializable"):
        atomic_write_json(tmp_path / "x.json", {"a": object()})
    with pytest.raises(ValueError, match="Out of range float"):
        atomic_write_json(tmp_path / "x.json", [float("nan")], allow_nan=False)
    assert list(tmp_path.iterdir()) == []


# ----- 3. the parent directory ---------------------------------------------------------------------------
def test_a_missing_parent_is_a_clear_error(tmp_path: Path) -> None:
    missing = tmp_path / "no" / "such"
    with pytest.raises(FileNotFoundError, match=r"its directory '.*no/such' does not exist"):
        atomic_write_bytes(missing / "f.bin", b"x")
    assert not (tmp_path / "no").exists()
    (tmp_path / "plain").write_text("a file")
    with pytest.raises(FileNotFoundError, match=r"its directory '.*plain' is not a directory"):
        atomic_write_text(tmp_path / "plain" / "f.txt", "x")
    (tmp_path / "d").mkdir()
    with pytest.raises(IsADirectoryError, match=r"'.*/d': it is a directory"):
        atomic_write_text(tmp_path / "d", "x")
    atomic_write_bytes(missing / "f.bin", b"x", make_parents=True)
    assert (missing / "f.bin").read_bytes() == b"x"


# ----- 4. the callers ------------------------------------------------------------------------------------
def test_save_game_is_atomic(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from reference.game import load_game, random_game, save_game

    game = random_game(3, (2,), seed=1)
    path = save_game(game, tmp_path / "sub" / "g.npz")  # creates its directory, as it always did
    np.testing.assert_array_equal(load_game(path).P, game.P)
    before = path.read_bytes()

    def broken_savez(fh: IO[bytes], **arrays: np.ndarray) -> None:
        fh.write(b"PK\x03\x04 torn")
        raise BoomError("interrupted")

    monkeypatch.setattr(np, "savez", broken_savez)
    with pytest.raises(BoomError):
        save_game(random_game(3, (2,), seed=2), path)
    assert path.read_bytes() == before and _leftovers(path.parent, "g.npz") == []


def test_proofs_check_report_and_drigm_writers_use_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from proofs_check.report import write_json

    calls: list[str] = []
    original = atomic_io.atomic_write

    def spy(path: str | os.PathLike[str], writer, make_parents: bool = False) -> Path:
        calls.append(Path(path).name)
        return original(path, writer, make_parents)

    monkeypatch.setattr(atomic_io, "atomic_write", spy)
    write_json([], tmp_path / "deep" / "report.json")
    assert json.loads((tmp_path / "deep" / "report.json").read_text()) == []
    from drigm import results_store
    from drigm.checkpoint import atomic_write_bytes as drigm_write

    drigm_write(tmp_path / "ck" / "checkpoint.pt", b"bytes")
    results_store.write_json(tmp_path / "res" / "seed0.json", {"a": np.float64(1.5)})
    assert (tmp_path / "ck" / "checkpoint.pt").read_bytes() == b"bytes"
    assert (tmp_path / "res" / "seed0.json").read_text() == '{\n "a": 1.5\n}\n'
    assert calls == ["report.json", "checkpoint.pt", "seed0.json"]
