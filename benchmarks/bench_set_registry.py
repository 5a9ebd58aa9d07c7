"""Did the set registry cost speed? The registry code against the code before it, side by side in one process.

Run: ``python benchmarks/bench_set_registry.py [--baseline REF] [--rounds N]`` from the repository root.

The baseline's ``reference/sets.py`` and ``drigm/targets.py`` are read from git at REF (default: 6cd7296, the last
commit before ``reference/sets/`` became a package) and loaded as separate modules, so both versions run in this
process, interleaved round by round, on the same inputs. Each cell is the median over rounds of the process CPU time
of one timed block; the ratio is registry / baseline (1.00 = no change; the machine is shared, so ~5% is noise).

- value-iteration sweeps: ``support_shared`` on a prepared 20,000 x 50 kernel and one shared V, every set;
- each kept shared-V fast path against the set's general function on the same rows (what keeping it buys);
- neural targets: one learner step of the target (``update_aux`` then ``forward``) on a 32 x 50 batch,
  6 agents x 10 actions, for every (kind, set) that the baseline has.
Both versions' outputs are compared too (they must agree to rounding).
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import statistics
import subprocess
import sys
import time
import types
from collections.abc import Callable
from pathlib import Path

for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[_var] = "1"  # before numpy loads its BLAS: a helper thread's spinning would count as this process's CPU

import numpy as np  # noqa: E402
import torch  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
sys.path.insert(0, str(ROOT))

from bench_targets import CASES, make_batch  # noqa: E402

from drigm import targets as new_targets  # noqa: E402
from reference import sets as new_sets  # noqa: E402


def load_baseline(ref: str, path: str, name: str) -> types.ModuleType:
    """The module at `path` as it was at git `ref`, loaded under `name` (it must import only installed packages)."""
    try:
        src = subprocess.run(
            ["git", "-C", str(ROOT), "show", f"{ref}:{path}"], check=True, capture_output=True, text=True
        ).stdout
    except (subprocess.CalledProcessError, FileNotFoundError) as exc:
        raise SystemExit(f"cannot read {path} at git ref {ref!r}: {exc}") from exc
    spec = importlib.util.spec_from_loader(name, loader=None)
    assert spec is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses look their module up while the class body runs
    exec(compile(src, f"{ref}:{path}", "exec"), module.__dict__)
    return module


def cpu_block(fn: Callable[[], object], iters: int) -> float:
    """Process CPU seconds of `iters` calls, after one untimed call (so no block starts with a cold cache)."""
    fn()
    t0 = time.process_time()
    for _ in range(iters):
        fn()
    return time.process_time() - t0


def compare(
    pairs: dict[str, tuple[Callable[[], object], Callable[[], object]]],
    rounds: int,
    iters: int,
    labels: tuple[str, str] = ("new", "old"),
) -> None:
    """Time each pair (a, b) in interleaved blocks; print the medians (ms per call) and the ratio a / b."""
    times: dict[str, tuple[list[float], list[float]]] = {k: ([], []) for k in pairs}
    for new, old in pairs.values():  # warm-up
        new()
        old()
    for r in range(rounds):
        for k, (new, old) in pairs.items():
            first, second = (new, old) if r % 2 == 0 else (old, new)
            a, b = cpu_block(first, iters), cpu_block(second, iters)
            tn, to = (a, b) if r % 2 == 0 else (b, a)
            times[k][0].append(tn)
            times[k][1].append(to)
    print(f"| case | {labels[0]} ms | {labels[1]} ms | ratio |")
    print("|---|---|---|---|")
    for k, (tn, to) in times.items():
        mn, mo = statistics.median(tn) / iters * 1e3, statistics.median(to) / iters * 1e3
        print(f"| {k} | {mn:.3f} | {mo:.3f} | {mn / mo:.2f} |")
    print()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--baseline", default="6cd7296", help="git ref of the code before the registry")
    ap.add_argument("--rounds", type=int, default=15)
    ap.add_argument("--iters", type=int, default=10)
    args = ap.parse_args()
    torch.set_num_threads(1)
    old_sets = load_baseline(args.baseline, "reference/sets.py", "_baseline_sets")
    old_targets = load_baseline(args.baseline, "drigm/targets.py", "_baseline_targets")

    rng = np.random.default_rng(0)
    K, S = 20_000, 50
    P = rng.dirichlet(np.ones(S), size=K)
    V = rng.normal(size=S) * 5.0
    P.setflags(write=False)  # read-only and C-contiguous: neither version copies it
    kernel_new, kernel_old = new_sets.SharedKernel(P), old_sets.SharedKernel(P)
    kernel_old._cache = kernel_new._cache  # one set of derived layouts (transposed, log, float32) for both versions:
    # the comparison is of code, not of where two 8 MB copies of the kernel happen to sit in the cache
    radii = {"contamination": 0.2, "tv": 0.2, "kl": 0.1, "chi2": 0.2, "kl-penalty": 1.0}
    vi: dict[str, tuple[Callable[[], object], Callable[[], object]]] = {}
    for name in old_sets.SET_NAMES:
        rho = radii[name]
        a = new_sets.support_shared(name, kernel_new, V, rho)
        b = old_sets.support_shared(name, kernel_old, V, rho)
        err = float(np.max(np.abs(a - b)))
        assert err <= 1e-9 * (1 + np.abs(V).max()), f"{name}: the two versions differ by {err:.2e}"
        vi[f"support_shared {name}({rho:g})"] = (
            lambda name=name, rho=rho: new_sets.support_shared(name, kernel_new, V, rho),
            lambda name=name, rho=rho: old_sets.support_shared(name, kernel_old, V, rho),
        )
    print(f"## value-iteration sweeps ({K} x {S} kernel, one shared V; baseline {args.baseline})\n")
    compare(vi, args.rounds, args.iters)

    # each kept fast path against its set's one general function on the same rows: what keeping it buys
    fast: dict[str, tuple[Callable[[], object], Callable[[], object]]] = {}
    for name, spec in new_sets.SPECS.items():
        if spec.support_shared is None:
            continue
        rho = radii[name]
        fast[f"{name}({rho:g})"] = (
            lambda name=name, rho=rho: new_sets.support_shared(name, kernel_new, V, rho),
            lambda spec=spec, rho=rho: spec.support(kernel_new.P, V, rho, validate=False),
        )
    print("## each kept fast path against its set's general function (ratio = fast / general)\n")
    compare(fast, max(3, args.rounds // 3), max(1, args.iters // 5), labels=("fast path", "general"))

    B, T, N, A, D = 32, 50, 6, 10, 48
    batch_new = make_batch(B, T, D, N, A, torch.device("cpu"))
    batch_old = old_targets.TargetInputs(
        *(getattr(batch_new, f) for f in old_targets.TargetInputs.__dataclass_fields__)
    )
    steps: dict[str, tuple[Callable[[], object], Callable[[], object]]] = {}
    for label, kw in CASES:
        torch.manual_seed(0)
        tn = new_targets.build_target(new_targets.TargetConfig(**kw), D, N, A, 0.99)  # type: ignore[arg-type]
        torch.manual_seed(0)
        to = old_targets.build_target(old_targets.TargetConfig(**kw), D, N, A, 0.99)
        for _ in range(3):  # both train their aux nets from the same start: the targets must agree
            tn.update_aux(batch_new)
            to.update_aux(batch_old)
        diff = float((tn(batch_new) - to(batch_old)).abs().max())
        assert diff <= 1e-5, f"{label}: the two versions' targets differ by {diff:.2e}"

        def step(t: object, b: object) -> object:
            t.update_aux(b)  # type: ignore[attr-defined]
            return t(b)  # type: ignore[operator]

        steps[label] = (lambda tn=tn: step(tn, batch_new), lambda to=to: step(to, batch_old))
    print(f"## neural target step (update_aux + forward; {B} x {T} batch, {N} agents x {A} actions, 1 thread)\n")
    compare(steps, args.rounds, args.iters)


if __name__ == "__main__":
    main()
