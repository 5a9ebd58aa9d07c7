"""Command line: ``python -m reference random | classic | solve | evaluate`` (docs/game-format.md contracts)."""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

import numpy as np

from reference.atomic_io import describe_os_error
from reference.bellman import evaluate_under_kernel, policy_evaluation, value_iteration, worst_case_kernel
from reference.console import quiet_broken_pipe
from reference.game import CLASSIC_GAMES, GameError, load_game, random_game, save_game
from reference.sets import SET_NAMES, UncertaintySetError, make_set, resolve_set

EXIT_BAD_INPUT = 2


def _actions(text: str) -> tuple[int, ...]:
    try:
        acts = tuple(int(x) for x in text.split(","))
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"--actions must be comma-separated integers like 2,3; got {text!r}") from exc
    if not acts or any(a < 1 for a in acts):
        raise argparse.ArgumentTypeError(f"--actions must list positive integers; got {text!r}")
    return acts


def _finite_float(text: str) -> float:
    try:
        x = float(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from exc
    if not math.isfinite(x):
        raise argparse.ArgumentTypeError(f"expected a finite number, got {text!r}")
    return x


def _tolerance(text: str) -> float:
    """--tol: a finite number > 0 (inf would stop value iteration after one sweep and call it converged)."""
    try:
        x = float(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"--tol must be a number; got {text!r}") from exc
    if not (math.isfinite(x) and x > 0):
        raise argparse.ArgumentTypeError(f"--tol must be a finite number > 0 (e.g. 1e-10); got {text!r}")
    return x


def build_parser() -> argparse.ArgumentParser:
    """The argparse tree of the reference CLI."""
    p = argparse.ArgumentParser(
        prog="python -m reference", description="Exact solver for cooperative robust Markov games."
    )
    sub = p.add_subparsers(dest="command", required=True)

    r = sub.add_parser("random", help="write a random game (.npz)")
    r.add_argument("--states", type=int, required=True, help="number of states S >= 1")
    r.add_argument("--actions", type=_actions, required=True, help="per-agent action counts, e.g. 2,3")
    r.add_argument("--seed", type=int, default=0)
    r.add_argument("--sparsity", type=float, default=0.0, help="fraction of zeroed successors per row, in [0, 1)")
    r.add_argument("--gamma", type=float, default=0.9)
    r.add_argument("-o", "--output", required=True, help="output .npz path")

    c = sub.add_parser("classic", help="write a named classic game (.npz)")
    c.add_argument("name", choices=sorted(CLASSIC_GAMES))
    c.add_argument("-o", "--output", required=True)

    for name, helptext in (("solve", "robust value iteration"), ("evaluate", "robust and nominal values of a policy")):
        s = sub.add_parser(name, help=helptext)
        s.add_argument("game", help="game .npz (docs/game-format.md)")
        s.add_argument(
            "--set",
            dest="set_name",
            required=True,
            help=f"one of {', '.join(SET_NAMES)}, an installed drigm.sets entry point, or module:ATTRIBUTE (a SetSpec)",
        )
        s.add_argument("--rho", type=_finite_float, required=True)
        s.add_argument("--tol", type=_tolerance, default=1e-10, help="certified error bound target (finite, > 0)")
        s.add_argument("--json", action="store_true", help="print the JSON contract of docs/game-format.md")
        if name == "evaluate":
            s.add_argument("--policy", required=True, help='POLICY.json: {"policy": [[a_1..a_N] per state]}')
    return p


def _load_policy(path: str, n_states: int, n_agents: int) -> np.ndarray:
    f = Path(path)
    if f.is_dir():
        raise GameError(f"policy file {path!r} is a directory; give a POLICY.json file")
    if not f.is_file():
        raise GameError(f"policy file {path!r} does not exist")
    try:
        data = json.loads(f.read_text())
    except json.JSONDecodeError as exc:
        raise GameError(f"policy file {path!r} is not valid JSON: {exc}") from exc
    except RecursionError:  # a policy is 2 levels deep; tens of thousands of '[' exhaust the parser's stack
        raise GameError(f"policy file {path!r} nests too deeply: a policy is a list of lists (S x N)") from None
    except UnicodeDecodeError as exc:
        raise GameError(f"policy file {path!r} is not UTF-8 text: {exc}") from None
    if not isinstance(data, dict) or "policy" not in data:
        raise GameError(f"policy file {path!r} must hold an object with the key 'policy'")
    pol = data["policy"]
    try:
        arr = np.asarray(pol)
    except ValueError as exc:
        raise GameError(f"'policy' in {path!r} is ragged: every state needs {n_agents} actions") from exc
    if arr.shape != (n_states, n_agents) or not np.issubdtype(arr.dtype, np.integer):
        raise GameError(
            f"'policy' in {path!r} must be {n_states} lists of {n_agents} integers (S x N); got shape {arr.shape}, "
            f"dtype {arr.dtype}"
        )
    return arr.astype(np.int64)


def _solve(args: argparse.Namespace) -> tuple[dict, bool]:
    """The solve JSON of docs/game-format.md (exactly its keys), and whether value iteration met --tol."""
    game = load_game(args.game)
    uset = make_set(resolve_set(args.set_name), args.rho)
    res = value_iteration(game, uset, tol=args.tol)  # a stalled residual warns on stderr; error_bound stays honest
    out = {
        "set": uset.name,
        "rho": uset.rho,
        "gamma": game.gamma,
        "Q": res.Q.tolist(),
        "V": res.V.tolist(),
        "greedy": res.greedy.tolist(),
        "residual": res.residual,
        "error_bound": res.error_bound,
        "iterations": res.iterations,
    }
    return out, res.converged


def _evaluate(args: argparse.Namespace) -> dict:
    game = load_game(args.game)
    uset = make_set(resolve_set(args.set_name), args.rho)
    policy = _load_policy(args.policy, game.n_states, game.n_agents)
    ev = policy_evaluation(game, uset, policy, tol=args.tol)
    Pw = worst_case_kernel(game, uset, ev.V)
    rows_ok = bool(np.all(Pw >= 0) and np.all(np.abs(Pw.sum(axis=-1) - 1.0) <= 1e-8))
    return {
        "robust_value": ev.V.tolist(),
        "nominal_value": evaluate_under_kernel(game, policy).tolist(),
        "worst_case_kernel_rows_sum_to_one": rows_ok,
        "error_bound": ev.error_bound,
    }


def _print_table(title: str, rows: list[tuple[str, str]]) -> None:
    print(title)
    width = max(len(k) for k, _ in rows)
    for k, v in rows:
        print(f"  {k.ljust(width)}  {v}")


@quiet_broken_pipe
def main(argv: list[str] | None = None) -> int:
    """Run the CLI; returns the exit status (2 on bad input, with the reason on stderr)."""
    args = build_parser().parse_args(argv)
    try:
        if args.command == "random":
            game = random_game(args.states, args.actions, seed=args.seed, sparsity=args.sparsity, gamma=args.gamma)
            path = save_game(game, args.output)
            print(f"wrote {path} (S={game.n_states}, actions={list(game.n_actions)}, gamma={game.gamma})")
        elif args.command == "classic":
            path = save_game(CLASSIC_GAMES[args.name](), args.output)
            print(f"wrote {path}")
        elif args.command == "solve":
            out, converged = _solve(args)
            if args.json:
                print(json.dumps(out))
            else:
                _print_table(
                    f"robust value iteration, {out['set']}(rho={out['rho']:g}), gamma={out['gamma']:g}",
                    [("V*_rob", np.array2string(np.asarray(out["V"]), precision=6))]
                    + [(f"greedy at s={s}", str(tuple(a))) for s, a in enumerate(out["greedy"])]
                    + [("iterations", str(out["iterations"])), ("error bound", f"{out['error_bound']:.3g}")]
                    + [("converged", "yes" if converged else "no: the residual stalled at the rounding floor")],
                )
        elif args.command == "evaluate":
            out = _evaluate(args)
            if args.json:
                print(json.dumps(out))
            else:
                _print_table(
                    "policy evaluation",
                    [
                        ("robust value", np.array2string(np.asarray(out["robust_value"]), precision=6)),
                        ("nominal value", np.array2string(np.asarray(out["nominal_value"]), precision=6)),
                    ],
                )
    except (GameError, UncertaintySetError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except OSError as exc:  # -o on a directory or unwritable path, disk full, read-only file system
        print(f"error: {describe_os_error(exc)}", file=sys.stderr)
        return EXIT_BAD_INPUT
    return 0


if __name__ == "__main__":
    sys.exit(main())
