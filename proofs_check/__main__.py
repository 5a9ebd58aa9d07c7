"""``python -m proofs_check [--profile ci|thorough] [--json OUT.json]``: run the theory checks, print the table.

Exit status: 0 when every theorem holds and every counterexample is found and confirmed, 1 otherwise,
2 on a usage error.
"""

from __future__ import annotations

import argparse
import sys

from proofs_check.properties import REGISTRY
from proofs_check.report import format_report, write_json
from proofs_check.runner import PROFILES, run_all
from reference.atomic_io import describe_os_error
from reference.console import quiet_broken_pipe

EXIT_FAILED = 1
EXIT_USAGE = 2


def build_parser() -> argparse.ArgumentParser:
    """The argparse parser of the report command."""
    p = argparse.ArgumentParser(
        prog="python -m proofs_check",
        description="Check docs/theory.md (sections 2-5) with Hypothesis and the exact reference solver.",
    )
    p.add_argument(
        "--profile",
        default="ci",
        choices=sorted(PROFILES),
        help="; ".join(f"{k}: {v.description}" for k, v in PROFILES.items()),
    )
    p.add_argument("--json", metavar="OUT.json", help="write the list of results (docs/game-format.md) here")
    p.add_argument("--only", metavar="NAME", action="append", help="run only this property (repeatable)")
    p.add_argument("--list", action="store_true", help="list the properties and exit")
    p.add_argument("--no-progress", action="store_true", help="no progress bar on stderr")
    p.add_argument("--no-database", action="store_true", help="do not read or write .hypothesis/proofs_check")
    return p


@quiet_broken_pipe
def main(argv: list[str] | None = None) -> int:
    """Run the CLI and return its exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.list:
        for prop in REGISTRY:
            print(f"{prop.name:40s} {prop.kind:15s} section {prop.section}: {prop.claim}")
        return 0
    known = {p.name for p in REGISTRY}
    unknown = [n for n in args.only or [] if n not in known]
    if unknown:
        parser.print_usage(sys.stderr)
        print(
            f"error: unknown property {', '.join(map(repr, unknown))}; see --list for the {len(known)} names",
            file=sys.stderr,
        )
        return EXIT_USAGE
    results = run_all(args.profile, args.only, progress=not args.no_progress, database=not args.no_database)
    print(format_report(results, args.profile))
    if args.json:
        try:
            path = write_json(results, args.json)
        except OSError as exc:  # a directory, an unwritable path, a full or read-only disk
            print(f"error: --json: {describe_os_error(exc)}", file=sys.stderr)
            return EXIT_USAGE
        print(f"\nwrote {path}")
    return 0 if all(r.passed for r in results) else EXIT_FAILED


if __name__ == "__main__":
    sys.exit(main())
