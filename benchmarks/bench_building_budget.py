"""What a full-budget building run costs on one CPU core, and how far drigm's update is from its compute floor.

A full-budget run of the building protocols is 600 episodes of 288 steps (172,800 env steps) with one update
every 2 env steps (86,400 updates of 64 transitions; TV runs: every 8 steps 4 dual steps then 4 Q updates).
For each case (MLP and LSTM window agents, presets ``paper-mlp`` and ``paper``; QMIX non-robust and paper TV
0.2) this script trains the protocol's own job config for ``--warmup`` episodes (past the few hundred updates
after which Adam's moments of rarely sampled embedding rows turn subnormal), then

- times ``--episodes`` more (collection + all their updates) and extrapolates to 600 episodes: the full-run
  CPU minutes beside the targets of the speed issue (MLP <= 5, LSTM <= 20);
- times drigm's update phase (``Trainer._train_phase``) interleaved, round by round, with :class:`FloorUpdate`,
  a minimal plain-torch update of the same networks on the same replay data (the floor), and prints the ratio.

For the MLP case it also shows what flushing subnormals to zero (:func:`drigm.learner.subnormals_flushed`) is worth
(the same episodes timed with the flush off) and checks that it changes no weight: two runs from the same seed,
flush off and on, must end bit-identical.

Run: ``python benchmarks/bench_building_budget.py`` (about 3 minutes on a quiet 2-core machine; torch at one
thread). All times are the process's CPU time; on a shared machine wall time is inflated by others' load.
"""

from __future__ import annotations

import argparse
import platform
import shutil
import statistics
import tempfile
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import torch

from drigm.config import RunConfig
from drigm.learner import subnormals_flushed
from drigm.protocol import Job, load_protocol
from drigm.run import Trainer

FULL_EPISODES = 600
TARGET_MINUTES = {"mlp": 5.0, "lstm": 20.0}
FLOOR_TARGET = 2.0  # drigm's update over the floor, MLP window (the speed issue)


def job_config(preset: str, job: Job) -> RunConfig:
    """The full-scale config of `job` in building-paper-seasonal at `preset` (no progress bar, no checkpoints)."""
    proto = load_protocol("building-paper-seasonal", "full", preset=preset)
    cfg = proto.job_config(job)
    return replace(cfg, progress=False, tensorboard=False, checkpoint_interval=10**9)


def time_run(
    cfg: RunConfig, warmup: int, episodes: int, workdir: Path, flush: bool = True
) -> tuple[dict[str, float], Trainer]:
    """Train `warmup` episodes, then time `episodes` more; per-episode wall/CPU seconds and updates per second,
    and the trained Trainer. `flush` False keeps subnormals (the Learner's updates flush them)."""
    run_dir = workdir / f"run-{cfg.agent.arch}-{cfg.target.kind}-{flush}"
    shutil.rmtree(run_dir, ignore_errors=True)
    tr = Trainer(replace(cfg, steps=288 * warmup, out=str(run_dir)), run_dir)
    tr.learner.flush_subnormals = flush
    tr.train()
    tr.save()
    c0 = time.process_time()
    tr.load()  # what train(resume=True) does first: timed alone and subtracted
    load_cpu = time.process_time() - c0
    tr.cfg = replace(tr.cfg, steps=288 * (warmup + episodes))
    u0 = tr.learner.n_updates
    w0, c0 = time.perf_counter(), time.process_time()
    tr.train(resume=True)
    wall, cpu = time.perf_counter() - w0 - load_cpu, time.process_time() - c0 - load_cpu
    updates = tr.learner.n_updates - u0
    return {
        "wall_ep": wall / episodes,
        "cpu_ep": cpu / episodes,
        "updates_ep": updates / episodes,
        "ups": updates / cpu,
    }, tr


def profile_updates(cfg: RunConfig, warmup: int, updates: int, workdir: Path) -> str:
    """torch.profiler's table (top ops by self CPU time) over `updates` updates after `warmup` episodes."""
    from torch.profiler import ProfilerActivity, profile

    run_dir = workdir / "profile"
    shutil.rmtree(run_dir, ignore_errors=True)
    tr = Trainer(replace(cfg, steps=288 * warmup, out=str(run_dir)), run_dir)
    tr.train()
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(updates):
            tr._train_phase()
    return prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=15)


def time_episode_updates(batch: int, updates: int, workdir: Path) -> float:
    """CPU seconds per update of the earlier episode replay (MLP over 8 steps, `batch` whole episodes)."""
    cfg = job_config("drigm", Job("qmix", "none", None, None, 0))
    cfg = replace(
        cfg,
        learner=replace(cfg.learner, replay="episodes", batch_size=batch, buffer_size=batch),
        steps=288 * batch,
        explore=replace(cfg.explore, eps_anneal_steps=1),
    )
    run_dir = workdir / "episodes"
    shutil.rmtree(run_dir, ignore_errors=True)
    tr = Trainer(replace(cfg, out=str(run_dir), learner=replace(cfg.learner, update_every=10**9)), run_dir)
    tr.train()  # fills the buffer, no updates
    tr._train_phase()  # warm-up
    c0 = time.process_time()
    for _ in range(updates):
        tr._train_phase()
    return (time.process_time() - c0) / updates


# ===== the floor: a minimal plain-torch update of the same shapes =================================
class FloorUpdate:
    """A plain-torch update of the same networks and batch as drigm's, written in as few ops as possible.

    Per-agent weights stacked on an agent axis (one batched matmul per layer), the last action of each window
    position as a row lookup, a one-layer-hypernetwork QMIX, the TD target (paper TV: the dual network's g,
    trained first by its own steps), MSE, gradient clipping and fused Adam. It reads the trainer's replay data
    (uniform indices with replacement, the cheapest sampling). Its target side is free: the target networks are
    frozen between copies, so V_hat(s') of every replay slot is computed once, before timing, and an update
    only looks it up. So the floor is the online networks' forward and backward, the optimiser and the
    sampling: what an update of these shapes costs at least, without any framework.
    """

    def __init__(self, tr: Trainer) -> None:
        cfg, env = tr.cfg, tr.env
        self.data = tr.buffer.data
        self.size = tr.buffer.size
        self.N, self.A, self.O, self.S = env.n_agents, env.n_actions, env.obs_dim, env.state_dim
        self.h, H, E = cfg.agent.history, cfg.agent.hidden, cfg.mixer.typed_params().embed_dim
        self.lstm = cfg.agent.arch == "lstm"
        self.B, self.gamma, self.clip = cfg.learner.batch_size, tr.gamma, cfg.learner.grad_clip
        self.q_steps, self.aux_steps = cfg.learner.q_steps, cfg.target.aux_steps
        self.tv = cfg.target.kind == "paper" and cfg.target.set == "tv"
        self.rho = cfg.target.rho
        N, A, O, S, h = self.N, self.A, self.O, self.S, self.h

        def p(*shape: int) -> torch.Tensor:
            return (torch.randn(*shape) * 0.05).requires_grad_()

        pos = 1 if self.lstm else h
        self.net = {
            "w_obs": p(N, O * pos, H),
            "b_obs": p(N, 1, H),
            "emb": p(N * pos * A + 1, H),
            "w_out": p(N, H, A),
            "b_out": p(N, 1, A),
            "hw1": p(S, E * N),
            "hb1": p(S, E),
            "hw2": p(S, E),
            "hv1": p(S, E),
            "hv2": p(E, 1),
        }
        if self.lstm:
            self.net.update(w_ih=p(N, H, 4 * H), b_ih=p(N, 1, 4 * H), w_hh=p(N, H, 4 * H), b_hh=p(N, 1, 4 * H))
        else:
            self.net.update(w2=p(N, H, H), b2=p(N, 1, H))
        self.target = {k: v.detach().clone() for k, v in self.net.items()}
        self.opt = torch.optim.Adam(list(self.net.values()), lr=5e-4, fused=True)
        if self.tv:
            self.aux = torch.nn.Sequential(
                torch.nn.Linear(S + N * A, 64),
                torch.nn.ReLU(),
                torch.nn.Linear(64, 64),
                torch.nn.ReLU(),
                torch.nn.Linear(64, 1),
            )
            self.aux_opt = torch.optim.Adam(self.aux.parameters(), lr=1e-3, fused=True)
        self.agent_rows = torch.arange(N).view(N, 1, 1)
        self.pos_rows = torch.arange(pos).view(1, 1, pos)
        with torch.no_grad():  # V_hat(s') of every stored transition under the (frozen) target networks
            d = self.data
            self.v_next = torch.cat(
                [
                    self.mix(
                        self.target,
                        self.q(self.target, d["win_obs"][i : i + 1024, 1:], d["win_actions"][i : i + 1024, 1:])
                        .max(-1)
                        .values,
                        d["state"][i : i + 1024, 1],
                    )
                    for i in range(0, self.size, 1024)
                ]
            )

    def q(self, w: dict[str, torch.Tensor], obs: torch.Tensor, act: torch.Tensor) -> torch.Tensor:
        """Utilities (B, N, A) of windows obs (B, h, N, O), previous actions (B, h, N) (padding: action 0)."""
        B, h, N, O = obs.shape
        pos = 1 if self.lstm else h
        rows = (self.agent_rows * pos + self.pos_rows) * self.A + act.clamp_min(0).permute(2, 0, 1)  # (N, B, h)
        if not self.lstm:
            x = torch.baddbmm(w["b_obs"], obs.permute(2, 0, 1, 3).reshape(N, B, h * O), w["w_obs"])
            x = torch.relu(x + torch.nn.functional.embedding(rows, w["emb"]).sum(2))
            x = torch.relu(torch.baddbmm(w["b2"], x, w["w2"]))
        else:
            x = torch.baddbmm(w["b_obs"], obs.permute(2, 0, 1, 3).reshape(N, B * h, O), w["w_obs"])
            x = torch.relu(x.view(N, B, h, -1) + torch.nn.functional.embedding(rows, w["emb"]))
            xs = torch.baddbmm(w["b_ih"], x.reshape(N, B * h, -1), w["w_ih"]).view(N, B, h, -1).unbind(2)
            hid = cell = obs.new_zeros(N, B, w["w_hh"].shape[1])
            for k in range(h):
                i, f, g, o = torch.baddbmm(w["b_hh"], hid, w["w_hh"]).add_(xs[k]).chunk(4, dim=-1)
                cell = torch.sigmoid(f) * cell + torch.sigmoid(i) * torch.tanh(g)
                hid = torch.sigmoid(o) * torch.tanh(cell)
            x = torch.relu(hid)
        return torch.baddbmm(w["b_out"], x, w["w_out"]).permute(1, 0, 2)

    def mix(self, w: dict[str, torch.Tensor], q: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
        """QMIX with one-layer hypernetworks: Q_tot (B,) of chosen utilities q (B, N) in states s (B, S)."""
        w1 = (s @ w["hw1"]).abs().view(-1, self.N, w["hb1"].shape[1])
        hidden = torch.nn.functional.elu(torch.bmm(q.unsqueeze(1), w1).squeeze(1) + s @ w["hb1"])
        return (hidden * (s @ w["hw2"]).abs()).sum(-1) + (torch.relu(s @ w["hv1"]) @ w["hv2"]).squeeze(-1)

    def batch(self) -> dict[str, torch.Tensor]:
        idx = torch.randint(self.size, (self.B,))
        fields = ("win_obs", "win_actions", "state", "actions", "reward", "terminated")
        return {"v_next": self.v_next[idx], **{k: self.data[k][idx] for k in fields}}

    def aux_input(self, b: dict[str, torch.Tensor]) -> torch.Tensor:
        onehot = torch.nn.functional.one_hot(b["actions"], self.A).flatten(1).float()
        return torch.cat([b["state"][:, 0], onehot], dim=1)

    def update(self, b: dict[str, torch.Tensor]) -> None:
        v_next = b["v_next"]
        cont = v_next
        if self.tv:
            with torch.no_grad():
                g = self.aux(self.aux_input(b)).squeeze(-1)
                cont = (1 - self.rho) * g - torch.relu(g - v_next)
        y = b["reward"] * self.N + self.gamma * (~b["terminated"]) * cont
        h = self.h
        q = self.q(self.net, b["win_obs"][:, :h], b["win_actions"][:, :h])
        chosen = q.gather(-1, b["actions"].unsqueeze(-1)).squeeze(-1)
        loss = (self.mix(self.net, chosen, b["state"][:, 0]) - y).pow(2).mean()
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.net.values(), self.clip, foreach=True)
        self.opt.step()

    def phase(self) -> None:
        """What drigm's ``Trainer._train_phase`` does: (TV: aux steps on one batch, then) q_steps Q updates, with
        subnormals flushed as drigm's CPU updates are."""
        with subnormals_flushed():
            self._phase()

    def _phase(self) -> None:
        if self.tv:
            b = self.batch()
            v_next = b["v_next"]
            x = self.aux_input(b)
            for _ in range(self.aux_steps):
                g = self.aux(x).squeeze(-1)
                loss = (torch.relu(g - v_next) - (1 - self.rho) * g).pow(2).mean()
                self.aux_opt.zero_grad(set_to_none=True)
                loss.backward()
                self.aux_opt.step()
        for _ in range(self.q_steps):
            self.update(self.batch())


def interleaved_ms(fns: dict[str, Callable[[], None]], rounds: int, reps: int) -> dict[str, float]:
    """Median CPU ms per call of each function, timed in alternating rounds of `reps` calls."""
    times: dict[str, list[float]] = {k: [] for k in fns}
    for fn in fns.values():
        fn()  # warm-up
    for _ in range(rounds):
        for k, fn in fns.items():
            c0 = time.process_time()
            for _ in range(reps):
                fn()
            times[k].append(1e3 * (time.process_time() - c0) / reps)
    return {k: statistics.median(v) for k, v in times.items()}


def flush_changes_nothing(cfg: RunConfig, episodes: int, workdir: Path) -> float:
    """Max |difference| of every weight between two runs of `episodes` from one seed, subnormals kept vs flushed."""
    weights = []
    for flush in (False, True):
        run_dir = workdir / f"flush-{flush}"
        shutil.rmtree(run_dir, ignore_errors=True)
        tr = Trainer(replace(cfg, steps=288 * episodes, out=str(run_dir)), run_dir)
        tr.learner.flush_subnormals = flush
        tr.train()
        weights.append([p.detach().clone() for p in tr.learner.params])
    return max(float((a - b).abs().max()) for a, b in zip(*weights, strict=True))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--warmup", type=int, default=8, help="episodes trained before timing (default 8: aged moments)")
    p.add_argument("--episodes", type=int, default=3, help="timed episodes per configuration")
    p.add_argument("--rounds", type=int, default=9, help="interleaved rounds of drigm vs floor update phases")
    p.add_argument("--reps", type=int, default=10, help="update phases per round")
    p.add_argument("--episode-batch-updates", type=int, default=3, help="timed updates of the 64-episode replay")
    p.add_argument("--profile", action="store_true", help="only print where an update's time goes (50 updates each)")
    args = p.parse_args()
    torch.set_num_threads(1)
    if args.profile:
        with tempfile.TemporaryDirectory() as tmp:
            for preset in ("paper-mlp", "paper"):
                cfg = job_config(preset, Job("qmix", "none", None, None, 0))
                print(f"\n## {preset} ({cfg.agent.arch} agent), QMIX, 50 updates\n")
                print(profile_updates(cfg, args.warmup, 50, Path(tmp)))
        return
    print(f"torch {torch.__version__}, 1 thread, {platform.processor() or platform.machine()}", flush=True)
    cases = [
        ("mlp", "paper-mlp", Job("qmix", "none", None, None, 0)),
        ("mlp", "paper-mlp", Job("qmix", "paper", "tv", 0.2, 0)),
        ("lstm", "paper", Job("qmix", "none", None, None, 0)),
        ("lstm", "paper", Job("qmix", "paper", "tv", 0.2, 0)),
    ]
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        flush_diff = flush_changes_nothing(job_config("paper-mlp", cases[0][2]), args.warmup, Path(tmp))
        kept, _ = time_run(job_config("paper-mlp", cases[0][2]), args.warmup, args.episodes, Path(tmp), flush=False)
        for arch, preset, job in cases:
            r, tr = time_run(job_config(preset, job), args.warmup, args.episodes, Path(tmp))
            floor = FloorUpdate(tr)
            ms = interleaved_ms({"drigm": tr._train_phase, "floor": floor.phase}, args.rounds, args.reps)
            full_min = r["cpu_ep"] * FULL_EPISODES / 60
            rows.append((arch, preset, job.method, r, full_min, ms, tr.cfg.learner.q_steps))
            print(
                f"  {arch} {job.method}: {r['cpu_ep']:.2f} CPU s/episode, {ms['drigm'] / ms['floor']:.2f}x the floor",
                flush=True,
            )
        t_transition = min(r["cpu_ep"] / r["updates_ep"] for a, _, m, r, *_ in rows if a == "mlp" and m == "qmix-none")
        t_episode = time_episode_updates(64, args.episode_batch_updates, Path(tmp))
    print(
        "\n| agent | preset | method | CPU s / episode | updates / episode | full run (600 episodes), CPU min "
        "| target | ratio to target | drigm ms / Q update | floor ms / Q update | drigm / floor |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for arch, preset, method, r, full_min, ms, q_steps in rows:
        tgt = TARGET_MINUTES[arch]
        print(
            f"| {arch} | {preset} | {method} | {r['cpu_ep']:.2f} | {r['updates_ep']:.0f} | {full_min:.1f} | "
            f"{tgt:.0f} | "
            f"{full_min / tgt:.2f} | {ms['drigm'] / q_steps:.2f} | {ms['floor'] / q_steps:.2f} | "
            f"{ms['drigm'] / ms['floor']:.2f} |"
        )
    print(
        f"\nUpdate over floor, target <= {FLOOR_TARGET:.0f}x for the MLP window. (TV: ms per Q update = one phase of "
        "4 dual steps and 4 Q updates, over 4.)"
    )
    flushed = rows[0][3]
    print(
        f"Subnormals flushed to zero: an MLP non-robust episode (after {args.warmup}) costs {kept['cpu_ep']:.2f} CPU "
        f"s with them kept and {flushed['cpu_ep']:.2f} s flushed ({kept['cpu_ep'] / flushed['cpu_ep']:.2f}x); two "
        f"{args.warmup}-episode runs from one seed, kept vs flushed, differ by at most {flush_diff:.3g} in any weight."
    )
    print(
        f"One update of 64 transitions (MLP window, incl. its share of collection): {1e3 * t_transition:.1f} ms CPU; "
        f"one update of 64 whole episodes (the earlier replay): {1e3 * t_episode:.0f} ms CPU; "
        f"ratio {t_episode / t_transition:.0f}x."
    )


if __name__ == "__main__":
    main()
