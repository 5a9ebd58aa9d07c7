"""SMAX env steps per second: drigm's BatchedSMAX vs raw jitted SMAX stepping, in one process.

Both loops are driven from Python one step at a time and pick uniformly random *available* actions
with the same numpy sampler from the mask the step returned:

* raw: ``jax.jit(jax.vmap(step))`` where step = JaxMARL ``HeuristicEnemySMAX.step_env`` (with its
  world state) plus ``get_avail_actions``; no auto-reset, no perturbations, results read with
  ``np.asarray`` (a zero-copy view on CPU).
* adapter: ``BatchedSMAX.step`` (perturbation machinery, auto-reset, final_* fields, action checks,
  results as torch tensors).

Timings interleave short rounds of the two (a burst of load from other processes then hits both);
steps/s come from each one's best round and the slowdown is the median of the per-round time ratios.
Also reported: compile times, and the cost of one B=16 step call plus handing its outputs to torch,
packed (the adapter's way) vs 12 separate arrays through DLPack, np.asarray or jax.device_get.

Run: ``python benchmarks/bench_smax.py [--map 3s_vs_5z] [--batch-sizes 1 16 64] [--steps 25] [--repeats 40]``.
"""

from __future__ import annotations

import argparse
import time
import warnings

import jax
import jax.numpy as jnp
import numpy as np
import torch

from drigm.envs.smax import _BATCH_FIELDS, BatchedSMAX

warnings.filterwarnings("ignore", message="The given NumPy array is not writable")


def sample(avail: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Uniformly random available actions, (B, N) int32, from a (B, N, A) bool mask."""
    return np.argmax(rng.random(avail.shape) * avail, axis=-1).astype(np.int32)


def make_raw(adapter: BatchedSMAX):
    """The raw jitted, vmapped SMAX step of the adapter's own JaxMARL env, and its initial (keys, states, avail)."""
    env = adapter._core.env

    def step(key, state, actions):
        key, k = jax.random.split(key)
        obs, state, rew, dones, _ = env.step_env(k, state, {a: actions[i] for i, a in enumerate(env.agents)})
        av = env.get_avail_actions(state)
        out = (
            jnp.stack([obs[a] for a in env.agents]),
            obs["world_state"],
            rew[env.agents[0]],
            dones["__all__"],
            jnp.stack([av[a] for a in env.agents]).astype(jnp.bool_),
        )
        return key, state, out

    def reset(key):
        key, k = jax.random.split(key)
        _, state = env.reset(k)
        av = env.get_avail_actions(state)
        return (
            key,
            jax.tree.map(lambda x: jax.lax.convert_element_type(x, x.dtype), state),
            jnp.stack([av[a] for a in env.agents]).astype(jnp.bool_),
        )

    return jax.jit(jax.vmap(step)), jax.jit(jax.vmap(reset))


def run_adapter(b: BatchedSMAX, holder: list, steps: int, rng: np.random.Generator) -> float:
    """Seconds for `steps` adapter steps continuing from holder[0] (the last BatchedStep)."""
    bt = holder[0]
    t = time.perf_counter()
    for _ in range(steps):
        bt = b.step(sample(bt.avail_actions.numpy(), rng))
    dt = time.perf_counter() - t
    holder[0] = bt
    return dt


def run_raw(raw_step, carry: list, steps: int, rng: np.random.Generator) -> float:
    """Seconds for `steps` raw steps continuing from carry = [keys, states, avail]."""
    keys, states, avail = carry
    t = time.perf_counter()
    for _ in range(steps):
        keys, states, out = raw_step(keys, states, sample(avail, rng))
        avail = np.asarray(out[4])
    jax.block_until_ready(states)
    dt = time.perf_counter() - t
    carry[:] = [keys, states, avail]
    return dt


def handoff_us(b: BatchedSMAX, n: int = 100, rounds: int = 10) -> dict[str, float]:
    """Microseconds for one jitted B-battle step call plus handing its outputs to torch, four ways (best round)."""
    core, chunk = b._core, b.reset_chunk
    b.reset(seed=0)
    acts = np.full((b.batch_size, b.n_agents), 4, np.int32)
    carry = core.layouts()[0].unpack(b._carry)
    carry.pop("avail")
    unpacked = jax.jit(core.step_batch, static_argnums=(3,))
    jax.block_until_ready(unpacked(carry, acts, b._params, chunk))
    jax.block_until_ready(core._j_step_packed(b._carry, acts, b._params, chunk))

    def separate(convert):
        def run():
            _, out = unpacked(carry, acts, b._params, chunk)
            return convert([out[k] for k in _BATCH_FIELDS])

        return run

    def packed():
        _, out = core._j_step_packed(b._carry, acts, b._params, chunk)
        return b._to_torch(b._unpack(out))

    ways = {
        "packed: 3 buffers, np.asarray views + from_numpy (adapter)": packed,
        "12 arrays, torch.from_dlpack": separate(lambda xs: [torch.from_dlpack(x) for x in xs]),
        "12 arrays, np.asarray + from_numpy": separate(lambda xs: [torch.from_numpy(np.asarray(x)) for x in xs]),
        "12 arrays, device_get + from_numpy": separate(lambda xs: [torch.from_numpy(x) for x in jax.device_get(xs)]),
    }
    res = dict.fromkeys(ways, float("inf"))
    for _ in range(rounds):  # interleaved rounds, best of each
        for name, fn in ways.items():
            t = time.perf_counter()
            for _ in range(n):
                fn()
            res[name] = min(res[name], (time.perf_counter() - t) / n * 1e6)
    return res


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--map", default="3s_vs_5z")
    ap.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 16, 64])
    ap.add_argument("--steps", type=int, default=25, help="steps per timed round")
    ap.add_argument("--repeats", type=int, default=40, help="interleaved rounds per method")
    args = ap.parse_args()
    rng = np.random.default_rng(0)
    rows = []
    for B in args.batch_sizes:
        b = BatchedSMAX(args.map, B)
        t = time.perf_counter()
        bt = b.reset(seed=0)
        t_reset = time.perf_counter() - t
        t = time.perf_counter()
        b.step(sample(bt.avail_actions.numpy(), rng))
        t_step = time.perf_counter() - t
        raw_step, raw_reset = make_raw(b)
        keys, states, avail = raw_reset(jax.random.split(jax.random.PRNGKey(0), B))
        carry = [keys, states, np.asarray(avail)]
        t = time.perf_counter()
        run_raw(raw_step, carry, 1, rng)
        t_raw = time.perf_counter() - t
        holder, ratios, best_a, best_r = [bt], [], float("inf"), float("inf")
        for _ in range(args.repeats):  # short interleaved rounds: a burst of load hits both or neither
            ta = run_adapter(b, holder, args.steps, rng)
            tr = run_raw(raw_step, carry, args.steps, rng)
            best_a, best_r = min(best_a, ta), min(best_r, tr)
            ratios.append(ta / tr)
        sps_a, sps_r = B * args.steps / best_a, B * args.steps / best_r
        rows.append((B, sps_r, sps_a, float(np.median(ratios)), t_reset, t_step, t_raw))
    print(f"SMAX map {args.map}; {args.repeats} interleaved rounds of {args.steps} steps; jax {jax.__version__}, CPU\n")
    print("steps/s from each method's best round; slowdown = median over rounds of adapter time / raw time\n")
    print(
        "| B | raw steps/s | adapter steps/s | adapter slowdown | adapter compile reset + step (s) | raw compile (s) |"
    )
    print("|---:|---:|---:|---:|---:|---:|")
    for B, r, a, ratio, tr, ts, traw in rows:
        print(f"| {B} | {r:,.0f} | {a:,.0f} | {ratio:.2f}x | {tr:.1f} + {ts:.1f} | {traw:.1f} |")
    hb = BatchedSMAX(args.map, 16)
    print("\nOne B=16 step call (stop actions) plus handing its 12 outputs to torch (best of 10 rounds):\n")
    print("| method | us / step |")
    print("|---|---:|")
    for name, us in handoff_us(hb).items():
        print(f"| {name} | {us:.0f} |")


if __name__ == "__main__":
    main()
