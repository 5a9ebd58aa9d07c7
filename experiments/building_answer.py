"""The building answer in README.md and docs/results/building.md, generated from the committed results.

The rendering lives in :mod:`drigm.building_answer` (``drigm demo`` prints the README's table too); this is its
command line. ``--write`` replaces every generated block (between ``<!-- building-answer:NAME:start -->`` and
``<!-- building-answer:NAME:end -->``) of both documents; ``--check`` exits 1 when a block of either differs from
what the committed results under ``experiments/results/`` give (a test runs it). Without a flag it prints the
blocks.

    python experiments/building_answer.py [--write | --check]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # run as a script from a checkout without an install
    sys.path.insert(0, str(ROOT))

from drigm.building_answer import RESULTS, Results, blocks, documents, replace_blocks, stale  # noqa: E402
from reference.atomic_io import atomic_write_text  # noqa: E402


def main(argv: list[str] | None = None, results: Path = RESULTS, docs: dict[str, Path] | None = None) -> int:
    """Print, write (``--write``) or check (``--check``) the generated blocks; the exit status."""
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    mode = ap.add_mutually_exclusive_group()
    mode.add_argument("--write", action="store_true", help="replace the generated blocks of both documents")
    mode.add_argument("--check", action="store_true", help="exit 1 when a generated block is out of date")
    a = ap.parse_args(argv)
    res = Results.load(results)
    paths = docs or documents()
    status = 0
    for key, path in paths.items():
        new = blocks(res, key)
        if not (a.write or a.check):
            for name, block in new.items():
                print(f"<!-- {path.name}: {name} -->\n{block}\n")
            continue
        try:
            text = path.read_text()
            if a.check:
                bad = stale(text, new, str(path))
                if bad:
                    print(
                        f"{path}: the generated blocks {', '.join(bad)} differ from the committed results: run "
                        "python experiments/building_answer.py --write",
                        file=sys.stderr,
                    )
                    status = 1
            else:
                atomic_write_text(path, replace_blocks(text, new, str(path)))
        except (OSError, ValueError) as exc:
            print(f"building_answer: error: {exc}", file=sys.stderr)
            return 2
    return status


if __name__ == "__main__":
    raise SystemExit(main())
