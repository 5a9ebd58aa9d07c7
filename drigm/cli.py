"""Command line: ``drigm train``, ``evaluate``, ``sweep``, ``report``, ``demo`` and ``verify``.

``--set`` (train, evaluate) takes a built-in set, an installed ``drigm.sets`` entry point or ``module:ATTRIBUTE``
(a :class:`reference.sets.SetSpec`); ``drigm verify SET`` checks such a set (:mod:`drigm.verify`).

``drigm train [--config FILE.yaml] [flags] [--override key.sub=value ...] --out RUN [--resume]``:
defaults <- the YAML config <- the flags <- the overrides. With ``--resume`` the run's saved
``config.yaml`` is the base instead (``--config`` is refused), the flags and overrides still apply
(``--steps`` extends a run), and a checkpoint that does not match the resulting model is refused.
The robustness settings ``--set``, ``--rho``, ``--beta`` (and overrides of target.set/rho/beta) configure the
robust target only: given while the resulting target kind is 'none' (non-robust training) they are refused, so
that nobody trains a non-robust model believing it robust.

Exit status 2 with a one-line message on any user error: a bad config, flag, game file, checkpoint (corrupt,
checksum mismatch, foreign), an unwritable output, a full or read-only disk.

``drigm evaluate RUN [--episodes K] [--set S --rho X] [--json]``: greedy evaluation of a run's last
checkpoint; JSON keys: mean_return, ci95, returns, and on tabular games policy, robust_value,
optimal_robust_value, nominal_value, robust_optimal, value_set, value_note.

``drigm evaluate RUN --env SPEC [--days A:B] [--episodes N] [--score-from PROTOCOL] [--json]``: the same run on any
environment, no protocol needed (:mod:`drigm.evaluate`): the run's env config with its name replaced by SPEC and
its day pool by A:B (or a comma-separated list of days); N defaults to one episode per day of the pool. JSON adds
env, seeds, score (normalised, with --score-from) and mean_score.

``drigm evaluate --paper-agents DIR [--env SPEC] [--days ...] [--episodes N] [--score-from PROTOCOL] [--json]``: the
seed paper's released agent networks (a run directory of its code or its network_parameter folder) instead of a
run, scored the same way (:func:`drigm.evaluate.evaluate_paper_agents`; SPEC defaults to building:Tucson); JSON
adds paper_agents (the files read and the sizes).

``python -m drigm ...`` is the same as ``drigm ...``.

``drigm demo [--part solver|tabular|answer|building ...]``: the README's main job (:mod:`drigm.demo`): the exact
solver on ``tabular:robust_vs_nominal``, non-robust vs robust QMIX on it certified by the solver (exit status 1 if
the robust policy is not robust-optimal or the nominal one is), the building answer from the committed results, a
short building run. ``--tabular`` is ``--part tabular``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from reference.console import quiet_broken_pipe
from reference.sets import SPECS

ROBUST_KEYS = ("target.set", "target.rho", "target.beta")
"""Config keys of the robust target's uncertainty set: refused on the command line for a non-robust run."""

# flag -> dotted config key
FLAG_KEYS: dict[str, str] = {
    "env": "env.name",
    "algo": "mixer.name",
    "target": "target.kind",
    "set": "target.set",
    "rho": "target.rho",
    "beta": "target.beta",
    "steps": "steps",
    "seed": "seed",
    "out": "out",
    "device": "learner.device",
    "episode_limit": "env.episode_limit",
}


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="drigm", description="Distributionally robust cooperative MARL (DrIGM).")
    sub = p.add_subparsers(dest="command", required=True)

    t = sub.add_parser("train", help="train a robust (or non-robust) VDN / QMIX / QTRAN run")
    t.add_argument("--config", type=Path, help="YAML config (may inherit with 'base:')")
    t.add_argument("--env", help="environment spec, e.g. tabular:robust_vs_nominal or tabular:game.npz")
    t.add_argument("--algo", help="mixer: vdn, qmix or qtran")
    t.add_argument("--target", help="robust target kind: none (default, non-robust), exact or paper")
    trainable = {name: spec for name, spec in SPECS.items() if spec.rules}  # sets with a neural sample rule
    by_symbol = {
        sym: "; ".join(f"{n} {s.radius.describe()}" for n, s in trainable.items() if s.radius.symbol == sym)
        for sym in ("rho", "beta")
    }
    t.add_argument("--set", help=f"uncertainty set of the robust target: {', '.join(trainable)} (needs --target)")
    t.add_argument("--rho", type=float, help=f"radius of the set ({by_symbol['rho']}; needs --target)")
    t.add_argument("--beta", type=float, help=f"temperature of the set ({by_symbol['beta']}; needs --target)")
    t.add_argument(
        "--steps",
        type=int,
        help="environment steps to train for (in total, across resumes); training collects whole episodes (single "
        "environments) or whole batched steps, so it stops at the first boundary at or past STEPS",
    )
    t.add_argument("--seed", type=int)
    t.add_argument("--out", help="run directory")
    t.add_argument("--device", help="auto, cpu, cuda or cuda:N")
    t.add_argument("--episode-limit", dest="episode_limit", type=int, help="cap on episode length (truncation)")
    t.add_argument("--override", action="append", default=[], metavar="KEY=VALUE", help="any config key, repeatable")
    t.add_argument("--resume", action="store_true", help="continue the run in --out from its last checkpoint")
    t.add_argument("--no-progress", action="store_true", help="no progress bar")

    e = sub.add_parser("evaluate", help="evaluate a run's last checkpoint greedily")
    e.add_argument("run", type=Path, nargs="?", help="run directory (or give --paper-agents instead)")
    e.add_argument(
        "--paper-agents",
        type=Path,
        metavar="DIR",
        help="score the seed paper's released networks (agent_{i}_q_network.pt in DIR or DIR/network_parameter)",
    )
    e.add_argument(
        "--episodes", type=int, default=None, help="episodes (default 20; with --env/--days every day of the pool)"
    )
    e.add_argument("--env", dest="env_spec", help="score on this environment, e.g. building:Seattle")
    e.add_argument("--days", help="the environment's day pool, e.g. 200:365 or 26,25,159 (SustainGym adapters)")
    e.add_argument("--score-from", help="a protocol whose normalised score to report, e.g. building-climate")
    e.add_argument("--set", dest="set_name", help="uncertainty set for the exact values (tabular games)")
    e.add_argument("--rho", type=float, help="its radius (sets with a radius rho, as in drigm train)")
    e.add_argument("--beta", type=float, help="its temperature (kl-penalty, as in drigm train)")
    e.add_argument("--device", help="auto, cpu, cuda or cuda:N")
    e.add_argument("--json", action="store_true", help="print one JSON object")

    d = sub.add_parser(
        "demo",
        help="the main job: exact solver, robust QMIX certified, the building answer, a short building run",
    )
    d.add_argument(
        "--part",
        action="append",
        choices=("solver", "tabular", "answer", "building"),
        help="run only this part (repeatable; default: all four, in order)",
    )
    d.add_argument("--tabular", action="store_true", help="the same as --part tabular")
    d.add_argument("--out", type=Path, help="output directory (default runs/demo)")
    d.add_argument("--seed", type=int, default=0)
    d.add_argument("--no-progress", action="store_true")

    from drigm.verify import add_verify_parser

    add_verify_parser(sub)

    for name, helptext in (
        ("sweep", "train and evaluate every combination of a protocol (drigm sweep PROTOCOL --help)"),
        ("report", "aggregate a protocol's results into results.md and plots (drigm report PROTOCOL --help)"),
    ):
        x = sub.add_parser(name, help=helptext, add_help=False)
        x.add_argument("rest", nargs=argparse.REMAINDER)
    return p


def train_config(args: argparse.Namespace) -> Any:
    """The RunConfig for `drigm train` arguments (explicit flags and overrides over the YAML or saved config)."""
    from drigm.config import CONFIG_FILE, ConfigError, load_config, load_yaml, parse_override

    overrides: dict[str, Any] = {}
    for flag, key in FLAG_KEYS.items():
        value = vars(args)[flag]
        if value is not None:
            overrides[key] = value
    if args.no_progress:
        overrides["progress"] = False
    robust_given = [f"--{flag} {vars(args)[flag]}" for flag in ("set", "rho", "beta") if vars(args)[flag] is not None]
    for text in args.override:
        k, v = parse_override(text)
        overrides[k] = v
        if k in ROBUST_KEYS:
            robust_given.append(f"--override {text}")
    if args.resume:
        from drigm.run import CHECKPOINT

        if args.out is None:
            raise ConfigError("--resume needs --out RUN_DIR (the run to continue)")
        if args.config is not None:
            raise ConfigError("--resume continues the run's saved config; --config cannot be combined with it")
        saved = Path(args.out) / CONFIG_FILE
        if not saved.is_file():
            raise ConfigError(
                f"--resume: {str(saved)!r} does not exist: {str(args.out)!r} holds no started run; "
                "run without --resume to start it"
            )
        if not (Path(args.out) / CHECKPOINT).exists():
            raise ConfigError(
                f"--resume: the run in {str(args.out)!r} has no checkpoint yet (it stopped before its first one); "
                "run without --resume to start it afresh"
            )
        cfg = load_config(None, overrides, base=load_yaml(saved))
    else:
        cfg = load_config(args.config, overrides)
    _check_robust_flags(robust_given, cfg)
    _check_out(Path(cfg.out))
    return _absolute_game_path(cfg)


def _absolute_game_path(cfg: Any) -> Any:
    """`cfg` with a relative ``tabular:PATH`` game file made absolute (from the working directory, where training
    reads it), so that the run's saved config finds its game from any directory (evaluate, resume)."""
    from dataclasses import replace

    from reference.game import CLASSIC_GAMES

    family, _, arg = cfg.env.name.partition(":")
    if family != "tabular" or not arg or arg in CLASSIC_GAMES or os.path.isabs(arg) or not os.path.lexists(arg):
        return cfg
    return replace(cfg, env=replace(cfg.env, name=f"tabular:{os.path.abspath(arg)}"))


def _check_robust_flags(given: list[str], cfg: Any) -> None:
    """Refuse the robustness settings `given` on the command line when the run is not robust (kind 'none')."""
    from drigm.config import ConfigError

    if given and cfg.target.kind == "none":
        raise ConfigError(
            f"{', '.join(given)} configure the robust target, but target.kind is 'none': this run would train a "
            "NON-robust model. Add --target exact (or paper) to train a robust one, or drop these flags"
        )
    from reference.sets import get_spec

    symbol = get_spec(cfg.target.set).radius.symbol  # the one parameter the set reads: rho, or kl-penalty's beta
    for flag in ("rho", "beta"):
        unused = [g for g in given if g.startswith((f"--{flag} ", f"--override target.{flag}="))]
        if unused and flag != symbol:
            raise ConfigError(
                f"{', '.join(unused)}: target.set={cfg.target.set!r} does not read target.{flag} (it takes "
                f"--{symbol}); the value would be stored and never used"
            )


def _resolve_set_flags(args: argparse.Namespace) -> None:
    """Load a ``--set module:ATTRIBUTE`` of train or evaluate (once) and put the set's registered name in its place;
    an installed ``drigm.sets`` entry point is found by its name when the config is validated."""
    from reference.sets import resolve_set

    for key in ("set", "set_name"):
        value = getattr(args, key, None)
        if args.command != "verify" and isinstance(value, str) and ":" in value:
            setattr(args, key, resolve_set(value))


def _check_out(out: Path) -> None:
    """Refuse an output path that exists but is not a directory (a file, a FIFO, a dangling link)."""
    from drigm.config import ConfigError

    try:
        str(out).encode("utf-8")
    except UnicodeEncodeError:
        raise ConfigError(
            f"--out {str(out)!a} is not valid UTF-8 (its bytes came from another encoding); the run's logs and "
            "results files need a UTF-8 path"
        ) from None
    if os.path.lexists(out) and not out.is_dir():
        raise ConfigError(f"--out {str(out)!r} exists and is not a directory; give a run directory (new or existing)")


def _eval_radius(args: argparse.Namespace) -> float | None:
    """The one parameter of ``drigm evaluate --set S``: ``--rho`` for a set with a radius, ``--beta`` for
    kl-penalty, as in ``drigm train``; ConfigError naming the flag that the set does not read or that is missing."""
    from drigm.config import ConfigError
    from reference.sets import get_spec

    given = {flag: vars(args)[flag] for flag in ("rho", "beta") if vars(args)[flag] is not None}
    if args.set_name is None:
        if given:
            flag, value = next(iter(given.items()))
            raise ConfigError(
                f"--{flag} {value:g} needs --set NAME (the set whose exact values to compute); without it the run's "
                "own set and radius are used"
            )
        return None
    symbol = get_spec(args.set_name).radius.symbol
    for flag, value in given.items():
        if flag != symbol:
            raise ConfigError(f"--{flag} {value:g}: --set {args.set_name} does not read --{flag}; it takes --{symbol}")
    if symbol not in given:
        raise ConfigError(f"--set {args.set_name} needs --{symbol}")
    return given[symbol]


def _print_eval(result: dict[str, Any]) -> None:
    lo, hi = result["ci95"]
    ci = f"[{lo:.4g}, {hi:.4g}]" if lo is not None else "(needs >= 2 episodes)"
    where = f" on {result['env']['name']} ({result['episodes']} episodes)" if "env" in result else ""
    who = (
        f"paper agents {result['run']}"
        if "paper_agents" in result
        else f"run {result['run']} at t_env={result['t_env']}"
    )
    print(f"{who}{where}: mean return {result['mean_return']:.4g}, 95% CI {ci}")
    if "mean_score" in result:
        slo, shi = result["score_ci95"]
        sci = f"[{slo:.4g}, {shi:.4g}]" if slo is not None else "(needs >= 2 episodes)"
        print(f"{result['score_label']}: {result['mean_score']:.4g}, 95% CI {sci}")
    if "win_rate" in result:
        wlo, whi = result["win_rate_ci95"]
        wci = f"[{wlo:.3g}, {whi:.3g}]" if wlo is not None else "(needs >= 2 episodes)"
        print(f"greedy win rate {result['win_rate']:.3g}, 95% CI {wci}")
    if "policy" in result:
        print(f"decentralised greedy policy per state: {result['policy']}")
        print(f"{result['value_note']}")
        print(f"  V^pi_rob: {[round(v, 4) for v in result['robust_value']]}")
        print(f"  V*_rob:   {[round(v, 4) for v in result['optimal_robust_value']]}")
        print(f"  V^pi_nom: {[round(v, 4) for v in result['nominal_value']]}")
        print(f"  robust-optimal (tolerance {result['robust_optimality_tolerance']:.3g}): {result['robust_optimal']}")


# ===== drigm sweep =================================================================================
def _rho_arg(text: str) -> tuple[str | None, list[float] | str]:
    """One ``--rho`` value: ``grid``, ``0,0.004,0.008`` (every chosen set) or ``SET=0,0.1`` (one set)."""
    set_name, sep, values = text.partition("=")
    if not sep:
        set_name, values = "", text
    elif not set_name.strip():
        raise argparse.ArgumentTypeError(f"--rho {text!r}: no set name before '=' (e.g. tv=0,0.1)")
    if values.strip() == "grid" and not sep:
        return None, "grid"
    try:
        radii = [float(v) for v in _strict_csv(f"--rho {text!r}: radii", "0,0.004,0.008")(values)]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"--rho {text!r}: give 'grid', radii like 0,0.004,0.008, or SET=radii like tv=0,0.1"
        ) from None
    if not radii:
        raise argparse.ArgumentTypeError(f"--rho {text!r}: no radii given")
    return (set_name.strip() or None), radii


def _rhos_of(given: list[tuple[str | None, list[float] | str]] | None) -> Any:
    """The `rhos` argument of :func:`drigm.sweep.sweep` from the ``--rho`` options (ProtocolError when they
    conflict)."""
    from drigm.protocol import ProtocolError

    if not given:
        return None
    if len(given) == 1 and given[0][0] is None:
        return given[0][1]
    if any(s is None for s, _ in given):
        raise ProtocolError("--rho: give either one 'grid' or radii list for every set, or SET=radii per set")
    out: dict[str, list[float]] = {}
    for s, radii in given:
        assert s is not None and not isinstance(radii, str)
        if s in out:
            raise ProtocolError(f"--rho: set {s!r} given twice")
        out[s] = radii
    return out


def _strict_csv(flag: str, example: str) -> Callable[[str], list[str]]:
    """An argparse type: a comma-separated list with no empty item (``''`` or ``a,,b`` refused, naming `flag`)."""

    def parse(text: str) -> list[str]:
        items = [s.strip() for s in text.split(",")]
        if not any(items):
            raise argparse.ArgumentTypeError(f"{flag} {text!r}: an empty list; give e.g. {example}")
        if not all(items):
            raise argparse.ArgumentTypeError(f"{flag} {text!r}: an empty item between commas; give e.g. {example}")
        return items

    return parse


def _seeds_arg(text: str) -> int | list[int]:
    parts = [s.strip() for s in text.split(",") if s.strip()]
    try:
        if len(parts) == 1 and "," not in text:
            return int(parts[0])
        return [int(p) for p in parts]
    except ValueError:
        raise argparse.ArgumentTypeError(f"--seeds {text!r}: give a count (5) or a list (0,1,10)") from None


def sweep_parser(prog: str = "drigm sweep") -> argparse.ArgumentParser:
    """The argument parser of ``drigm sweep``."""
    from drigm.protocol import SCALES
    from drigm.results_store import DEFAULT_OUT
    from drigm.sweep import BACKENDS
    from drigm.workers import DEFAULT_RETRIES

    p = argparse.ArgumentParser(prog=prog, description="Train and evaluate every combination of a named protocol.")
    p.add_argument(
        "protocol",
        help="a protocol name (experiments/protocols/NAME.yaml) or a path to a protocol YAML; several joined by "
        "commas share each job's training run (their training configs must agree)",
    )
    p.add_argument(
        "--algos",
        type=_strict_csv("--algos", "vdn,qmix"),
        default=None,
        help="comma-separated, e.g. vdn,qmix,qtran (default: protocol)",
    )
    p.add_argument(
        "--targets",
        type=_strict_csv("--targets", "none,exact"),
        default=None,
        help="comma-separated among none,exact,paper,discount,schedule,doubleq,dr,dr-paper,groupdr,groupdr-paper "
        "(discount: the matched control of contamination, non-robust at gamma (1 - rho); schedule: non-robust with "
        "a set's update schedule (its set_overrides' learner part), the control of TV's schedule; doubleq: "
        "non-robust with double Q-learning, the control of the pessimism of TV's min(V_hat, aux); dr: per-episode "
        "domain randomisation over the protocol's leak-free climate set, dr-paper over the paper's; "
        "groupdr(-paper): the paper's GroupDR, its stage-1 VDN dr run and reward estimators built inside the job)",
    )
    p.add_argument(
        "--sets",
        type=_strict_csv("--sets", "contamination,tv"),
        default=None,
        help="comma-separated among contamination,tv",
    )
    p.add_argument(
        "--rho",
        type=_rho_arg,
        action="append",
        default=None,
        help="a rho axis: 'grid' (the protocol's rho_grid), radii for every chosen set (0,0.004,0.008), or "
        "SET=radii, repeatable (--rho contamination=0,0.008 --rho tv=0,0.2); default: the protocol's rho",
    )
    p.add_argument("--seeds", type=_seeds_arg, default=None, help="N (the protocol's first N seeds) or a list 0,1,10")
    p.add_argument("--backend", choices=BACKENDS, default="local")
    p.add_argument("--workers", type=int, default=None, help="parallel runs (default: CPU count)")
    p.add_argument(
        "--retries",
        type=int,
        default=DEFAULT_RETRIES,
        help=f"reruns of a job whose worker process died, from its last checkpoint (default {DEFAULT_RETRIES})",
    )
    p.add_argument("--ray-address", default=None, help="an existing Ray cluster (default: start a local instance)")
    p.add_argument("--scale", choices=SCALES, default="full")
    p.add_argument("--preset", default=None, help="a named training preset of the protocol (default: its own)")
    p.add_argument("--out-root", type=Path, default=DEFAULT_OUT, help="run and results root (default experiments/runs)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    return p


def sweep_main(argv: list[str]) -> int:
    """``drigm sweep PROTOCOL ...``: 0 when every job finished, 1 when some failed, 2 on a configuration error."""
    args = sweep_parser().parse_args(argv)
    from drigm.config import ConfigError
    from drigm.protocol import RHO_TARGETS, ProtocolError
    from drigm.sweep import sweep
    from drigm.workers import exit_on_sigterm
    from reference.atomic_io import describe_os_error

    exit_on_sigterm()
    try:
        if args.rho and args.targets is not None and not set(args.targets) & set(RHO_TARGETS):
            raise ProtocolError(
                f"--rho with --targets {','.join(args.targets)}: none of them reads rho (only "
                f"{', '.join(sorted(RHO_TARGETS))} do); the radii would be ignored"
            )
        s = sweep(
            args.protocol,
            algos=args.algos,
            targets=args.targets,
            sets=args.sets,
            seeds=args.seeds,
            backend=args.backend,
            workers=args.workers,
            out_root=args.out_root,
            scale=args.scale,
            ray_address=args.ray_address,
            progress=not args.no_progress,
            preset=args.preset,
            retries=args.retries,
            rhos=_rhos_of(args.rho),
        )
    except (ConfigError, RuntimeError) as exc:
        print(f"drigm sweep: error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        print(f"drigm sweep: error: {describe_os_error(exc)}", file=sys.stderr)
        return 2
    print(
        f"done in {s.seconds:.0f} s: {s.total} jobs, {s.skipped} already finished, {s.ran} run, "
        f"{len(s.failed)} failed, {len(s.retried)} finished after a worker died; results in {s.results_dir}"
    )
    for method, seed, msg in s.retried:
        print(f"  RETRIED {method} seed {seed} (finished): {msg}")
    for method, seed, msg in s.failed:
        print(f"  FAILED {method} seed {seed}: {msg}", file=sys.stderr)
    return 1 if s.failed else 0


# ===== drigm report ================================================================================
def report_parser(prog: str = "drigm report") -> argparse.ArgumentParser:
    """The argument parser of ``drigm report``."""
    from drigm.collect import DEFAULT_OUT
    from drigm.protocol import SCALES
    from drigm.report import DEFAULT_RESULTS
    from drigm.rho_selection import MIN_SELECT_SEEDS

    p = argparse.ArgumentParser(prog=prog, description="Aggregate a protocol's sweep results over seeds.")
    p.add_argument(
        "protocol",
        help="a protocol name (experiments/protocols/NAME.yaml) or a path; several joined by commas are reported "
        "one by one (and together with --overview)",
    )
    p.add_argument("--scale", choices=SCALES, default=None, help="default: the only scale with results")
    p.add_argument("--preset", default=None, help="a named training preset of the protocol (default: its own)")
    p.add_argument("--out-root", type=Path, default=DEFAULT_OUT, help="the sweep's root (default experiments/runs)")
    p.add_argument("--results-root", type=Path, default=DEFAULT_RESULTS, help="default experiments/results")
    p.add_argument(
        "--overview",
        default=None,
        metavar="NAME",
        help="also write RESULTS_ROOT/NAME.md: the protocols side by side (they must share their runs)",
    )
    p.add_argument(
        "--select-on",
        default=None,
        metavar="PROTOCOL",
        help="with --overview: choose each rho curve's rho on this validation protocol (sharing the runs) and "
        "report the chosen runs' test scores",
    )
    p.add_argument(
        "--min-select-seeds",
        type=int,
        default=MIN_SELECT_SEEDS,
        metavar="N",
        help=f"with --select-on: a radius competes once it has N+ validation seeds (default {MIN_SELECT_SEEDS})",
    )
    p.add_argument(
        "--exclude-seeds",
        default=None,
        metavar="METHOD:SEED,...",
        help="leave these runs out of every figure (listed as excluded), e.g. qmix-groupdr:0 for a diverged seed; "
        "write to another --results-root so that the full report stays",
    )
    p.add_argument(
        "--overview-only",
        action="store_true",
        help="with --overview: write only the overview, not each protocol's report",
    )
    return p


def _check_excluded(names: list[str], args: argparse.Namespace, exclude: frozenset[tuple[str, int]]) -> None:
    """ConfigError naming every (method, seed) of `exclude` that no reported protocol requested (a typo would
    otherwise exclude nothing, silently)."""
    from drigm.collect import detect_scale, requested_jobs
    from drigm.config import ConfigError

    out_root = Path(args.out_root).resolve()
    found: set[tuple[str, int]] = set()
    for name in names + ([args.select_on] if args.select_on else []):
        scale = args.scale or detect_scale(name, out_root, args.preset)
        found |= {(j.method, j.seed) for j in requested_jobs(name, out_root, scale, args.preset)[1]}
    unmatched = sorted(exclude - found)
    if unmatched:
        items = ", ".join(f"{m}:{s}" for m, s in unmatched)
        raise ConfigError(f"--exclude-seeds {items}: no such run was requested by {', '.join(names)}")


def report_main(argv: list[str]) -> int:
    """``drigm report PROTOCOL``: 0 when the report is complete, 1 when runs are missing/failed, 2 on errors."""
    args = report_parser().parse_args(argv)
    from drigm.collect import detect_scale
    from drigm.config import ConfigError
    from drigm.report import overview, parse_exclude_seeds, report

    names = [n.strip() for n in args.protocol.split(",") if n.strip()]
    complete = True
    try:
        if args.overview_only and not args.overview:
            raise ConfigError("--overview-only needs --overview NAME")
        if args.select_on is not None and not args.overview:
            raise ConfigError(
                f"--select-on {args.select_on!r} chooses rho inside an overview: it needs --overview NAME"
            )
        if args.overview is not None and (
            not args.overview or args.overview in (".", "..") or any(c in args.overview for c in "/\\\0")
        ):
            raise ConfigError(
                f"--overview {args.overview!r} must be a plain file name (no '/', '..'): the overview is written "
                "inside --results-root"
            )
        if args.exclude_seeds is not None and not args.exclude_seeds.strip(" ,"):
            raise ConfigError(f"--exclude-seeds {args.exclude_seeds!r}: no runs given (METHOD:SEED, ...)")
        exclude = parse_exclude_seeds(args.exclude_seeds)
        if exclude:
            _check_excluded(names, args, exclude)
        for name in [] if args.overview_only else names:
            s = report(name, args.out_root, args.results_root, args.scale, args.preset, exclude)
            print((Path(s["results_dir"]) / "results.md").read_text())
            if not s["complete"]:
                complete = False
                print(
                    f"drigm report: {name}: {len(s['missing'])} run(s) missing, {len(s['failed'])} failed",
                    file=sys.stderr,
                )
        if args.overview:
            scale = args.scale or detect_scale(names[0], Path(args.out_root).resolve(), args.preset)
            path = overview(
                names, args.out_root, args.results_root, args.overview, scale, args.preset,
                select_on=args.select_on, min_select_seeds=args.min_select_seeds, exclude=exclude,
            )  # fmt: skip
            print(path.read_text())
    except ConfigError as exc:
        print(f"drigm report: error: {exc}", file=sys.stderr)
        return 2
    return 0 if complete else 1


@quiet_broken_pipe
def main(argv: list[str] | None = None) -> int:
    """Entry point of the `drigm` console script; returns the exit status (2 on a user error)."""
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] in (["sweep"], ["report"]) and len(argv) > 1 and argv[1].startswith("-"):
        # argparse's REMAINDER does not take a leading option (`drigm sweep --help`): hand it over as is
        args = argparse.Namespace(command=argv[0], rest=argv[1:])
    else:
        args = _parser().parse_args(argv)
    from drigm.checkpoint import CheckpointError
    from drigm.config import ConfigError
    from drigm.envs.base import EnvError
    from drigm.paper_checkpoint import PaperCheckpointError
    from reference.atomic_io import describe_os_error
    from reference.game import GameError
    from reference.memory import MemoryBudgetError
    from reference.sets import UncertaintySetError

    user_errors = (
        ConfigError,
        CheckpointError,
        EnvError,
        UncertaintySetError,
        GameError,
        PaperCheckpointError,
        MemoryBudgetError,
    )
    try:
        _resolve_set_flags(args)
        if args.command == "train":
            from drigm.run import Trainer

            cfg = train_config(args)
            summary = Trainer(cfg).train(resume=args.resume)
            print(json.dumps(summary))
        elif args.command == "evaluate":
            if (args.run is None) == (args.paper_agents is None):
                raise ConfigError("give a run directory or --paper-agents DIR (exactly one of them)")
            if args.paper_agents is not None:
                from drigm.evaluate import evaluate_paper_agents

                if args.set_name is not None or args.rho is not None or args.beta is not None:
                    raise ConfigError(
                        "--set/--rho/--beta (exact tabular values) cannot be combined with --paper-agents"
                    )
                result = evaluate_paper_agents(
                    args.paper_agents, args.env_spec, args.days, args.episodes, args.device, args.score_from
                )
            elif args.env_spec is not None or args.days is not None or args.score_from is not None:
                from drigm.evaluate import evaluate_anywhere

                if args.set_name is not None or args.rho is not None or args.beta is not None:
                    raise ConfigError("--set/--rho/--beta (exact tabular values) cannot be combined with --env/--days")
                result = evaluate_anywhere(
                    args.run, args.env_spec, args.days, args.episodes, args.device, args.score_from
                )
            else:
                from drigm.run import evaluate_run

                result = evaluate_run(
                    args.run,
                    20 if args.episodes is None else args.episodes,
                    args.set_name,
                    _eval_radius(args),
                    args.device,
                )
            if args.json:
                print(json.dumps(result))
            else:
                _print_eval(result)
        elif args.command == "sweep":
            return sweep_main(args.rest)
        elif args.command == "verify":
            from drigm.verify import verify_main

            return verify_main(args)
        elif args.command == "report":
            return report_main(args.rest)
        else:
            from drigm.demo import PARTS, run_demo

            parts = tuple(args.part or ()) + (("tabular",) if args.tabular else ())
            return run_demo(
                parts or PARTS, args.out or Path("runs/demo"), seed=args.seed, progress=not args.no_progress
            )
    except user_errors as exc:
        print(f"drigm {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:  # disk full, read-only file system, permission denied, a file in the way
        print(f"drigm {args.command}: error: {describe_os_error(exc)}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
