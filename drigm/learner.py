"""One learner update: utilities -> mixer -> robust target -> losses, with target networks and double-Q.

For a batch of episodes, :meth:`Learner.update`

1. computes every agent's utilities with the online and the target networks over the whole episodes;
2. selects a_bar'_i = argmax of the online utilities at s' among available actions (double-Q; the
   target utilities select when ``double_q`` is off) and evaluates V_hat(s') = Q_tot^-(s', a_bar')
   with the target agents and the target mixer (for QTRAN, Q_jt^-);
3. builds :class:`~drigm.targets.TargetInputs` (rewards times ``learner.reward_scale``, and times N with
   ``learner.td_reward: agent_sum``), lets the robust
   target update its auxiliary estimates (``update_aux``, unless the phase schedule did so already) and
   takes y = target(inputs) (with ``learner.td_lambda`` > 0, the lambda-returns of that target);
4. minimises the masked TD loss (Q_tot(s, a) - y)^2 (weighted by the optional float batch entry ``weight``,
   shape (B, T+1) like ``filled``, where the batch has one) plus the mixer's own terms (QTRAN: L_opt, L_nopt),
   with gradient-norm clipping, then updates the target networks (hard every N updates, or soft).

With ``learner.reward_model`` (GroupDR), step 3's reward is min over climates of r_hat_c(s, a, t) from the
reward estimator handed to the learner (:mod:`drigm.reward_model`), computed from the raw (unnormalised)
state before anything else reads the batch; the batch reward itself is not used.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn
from torch.nn.functional import one_hot

from drigm.agents import AgentController, masked_argmax
from drigm.checkpoint import CheckpointError
from drigm.config import ConfigError, RunConfig
from drigm.mixers import MixerContext, build_mixer
from drigm.normalization import RunningNorm
from drigm.reward_model import RewardEstimator
from drigm.targets import TargetInputs, build_target
from drigm.window_agents import Window, WindowController
from reference.memory import MemoryBudgetError, check_fits


def resolve_device(name: str) -> torch.device:
    """'auto' -> CUDA when available, else CPU; other names are passed to torch.device (CUDA checked)."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(name)
    except (RuntimeError, ValueError, TypeError) as exc:
        raise ConfigError(f"learner.device={name!r} is not a device: allowed 'auto', 'cpu', 'cuda', 'cuda:N'") from exc
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(
            f"learner.device={name!r} but CUDA is not available on this machine: use --device cpu (or auto)"
        )
    if dev.type == "cuda" and dev.index is not None and dev.index >= torch.cuda.device_count():
        raise ConfigError(
            f"learner.device={name!r} but this machine has {torch.cuda.device_count()} CUDA device(s): "
            f"allowed cuda:0..cuda:{torch.cuda.device_count() - 1}"
        )
    return dev


_TINY = np.array([1e-39], dtype=np.float32)  # a float32 subnormal


def flushing_subnormals() -> bool:
    """True when this thread's CPU arithmetic flushes subnormals to zero (x86 FTZ/DAZ, torch.set_flush_denormal)."""
    return bool((_TINY * np.float32(1.0))[0] == 0.0)


@contextmanager
def subnormals_flushed(enabled: bool = True) -> Iterator[None]:
    """Within the block, flush float subnormals (|x| < 1.2e-38 in float32) to zero in this thread's CPU arithmetic;
    the previous state is restored on exit, so nothing outside (numpy, Hypothesis, the exact solver) is affected.

    Adam's moments of rarely sampled weights (rows of the 200-action embedding) decay geometrically into the
    subnormal range within a few hundred updates, and x86 cores compute on subnormals ~100x slower: a building
    episode took 2.3x longer with them (``benchmarks/bench_building_budget.py``). The flushed values are below
    every weight's rounding unit, so training is unchanged (bit-identical in the benchmark's check).
    """
    if not enabled or flushing_subnormals():
        yield
        return
    if not torch.set_flush_denormal(True):  # not supported on this CPU: nothing to restore
        yield
        return
    try:
        yield
    finally:
        torch.set_flush_denormal(False)


def check_network_memory(
    cfg: RunConfig, ctrl_cls: type, n_agents: int, n_actions: int, obs_dim: int, state_dim: int
) -> None:
    """Refuse (MemoryBudgetError naming agent.hidden and the mixer) networks that cannot fit in memory: they are
    built on torch's meta device (no storage) and counted five times (online, target, gradient, two Adam moments).
    """
    what = f"agent.hidden={cfg.agent.hidden} and mixer {cfg.mixer.name} {cfg.mixer.typed_params()}"
    try:
        with torch.device("meta"):
            ctrl = ctrl_cls(n_agents, n_actions, obs_dim, cfg.agent, obs_norm=cfg.learner.input_norm)
            mixer = build_mixer(cfg.mixer.name, cfg.mixer.typed_params(), state_dim, n_agents, n_actions)
    except (RuntimeError, OverflowError) as exc:  # a tensor size beyond what torch can even describe
        raise MemoryBudgetError(f"networks of {what} are too large to build: {str(exc)[:120]}") from None
    params = sum(p.numel() for p in ctrl.parameters()) + sum(p.numel() for p in mixer.parameters())
    check_fits(
        f"networks of {params:.3g} parameters ({what}) with their target copies, gradients and optimiser state",
        params * 4 * 5,
    )


class Learner:
    """Online and target networks (agents, mixer), the optimiser, and the robust target with its own optimiser."""

    def __init__(
        self,
        cfg: RunConfig,
        n_agents: int,
        n_actions: int,
        obs_dim: int,
        state_dim: int,
        gamma: float,
        device: torch.device,
        reward_model: RewardEstimator | None = None,
    ) -> None:
        self.cfg = cfg
        if reward_model is not None:
            dims = (reward_model.state_dim, reward_model.n_agents, reward_model.n_actions)
            if dims != (state_dim, n_agents, n_actions):
                raise ConfigError(
                    f"learner.reward_model: the estimator was fitted for (state_dim, n_agents, n_actions) = {dims}, "
                    f"this run has {(state_dim, n_agents, n_actions)}"
                )
            reward_model = reward_model.to(device).requires_grad_(False)
        self.reward_model = reward_model
        self.n_agents, self.n_actions = n_agents, n_actions
        self.gamma = gamma
        self.device = device
        # updates on the CPU flush subnormals (see subnormals_flushed); False computes with them, as IEEE says
        self.flush_subnormals = device.type == "cpu"
        lc = cfg.learner
        self.transitions = lc.replay == "transitions"
        # the TD target's reward: the team reward times reward_scale, added once per agent with td_reward agent_sum
        self.td_reward_factor = lc.reward_scale * (n_agents if lc.td_reward == "agent_sum" else 1)
        ctrl_cls = WindowController if self.transitions else AgentController
        check_network_memory(cfg, ctrl_cls, n_agents, n_actions, obs_dim, state_dim)
        self.controller: AgentController | WindowController = ctrl_cls(
            n_agents, n_actions, obs_dim, cfg.agent, obs_norm=lc.input_norm
        ).to(device)
        self.mixer = build_mixer(cfg.mixer.name, cfg.mixer.typed_params(), state_dim, n_agents, n_actions).to(device)
        self.target_controller = copy.deepcopy(self.controller).requires_grad_(False)
        self.target_mixer = copy.deepcopy(self.mixer).requires_grad_(False)
        # the mixers' state normaliser; online and target networks see the same (current) statistics
        self.state_norm: RunningNorm | None = RunningNorm(state_dim).to(device) if lc.input_norm else None
        self.robust = build_target(cfg.target, state_dim, n_agents, n_actions, gamma).to(device)
        self.params = [*self.controller.parameters(), *self.mixer.parameters()]
        if lc.optimizer == "rmsprop":
            self.optimizer: torch.optim.Optimizer = torch.optim.RMSprop(
                self.params, lr=lc.lr, alpha=lc.rms_alpha, eps=lc.optim_eps
            )
        else:
            # fused: one kernel for all parameters (9x faster than the per-tensor loop on CPU; same update rule)
            self.optimizer = torch.optim.Adam(self.params, lr=lc.lr, eps=lc.optim_eps, fused=True)
        self.n_updates = 0
        self._tcache: Tensor | None = None
        self._tcache_version: Tensor | None = None

    # ----- the update -----------------------------------------------------------------------------
    def agent_inputs(self, batch: dict[str, Tensor]) -> Tensor | tuple[Window, Window]:
        """What the agent networks read: per-step inputs (B, T+1, N, d) of whole episodes, or, with transition
        replay, the windows of s and of s'."""
        if not self.transitions:
            assert isinstance(self.controller, AgentController)
            return self.controller.sequence_inputs(batch["obs"], batch["actions"])
        h = self.cfg.agent.history
        obs, act, valid = batch["win_obs"], batch["win_actions"], batch["win_valid"]
        return Window(obs[:, :h], act[:, :h], valid[:, :h]), Window(obs[:, 1:], act[:, 1:], valid[:, 1:])

    def utilities(self, controller: nn.Module, inputs: Tensor | tuple[Window, Window], at_next: bool = True) -> Tensor:
        """Utilities (B, T+1, N, A) of `controller` (online or target) at every step of the batch (T = 1: s, s').

        With transition replay and ``at_next`` off, the s' slot is zeros (not computed: nothing reads it).
        """
        if isinstance(inputs, tuple):
            q_s = controller.q(inputs[0])  # type: ignore[operator]
            if at_next:
                with torch.no_grad():  # s' utilities only select a' (double-Q): no gradient flows through them
                    q_next = controller.q(inputs[1])  # type: ignore[operator]
            else:
                q_next = torch.zeros_like(q_s.detach())
            return torch.stack([q_s, q_next], dim=1)
        return controller(inputs)

    def attach_target_cache(self, capacity: int) -> None:
        """Cache the target side of each replay slot between target copies (transition replay only).

        Without double-Q the cache holds V_hat(s') itself (the target agents' greedy utilities at s' through the
        target mixer: nothing in it changes until the next copy); with double-Q, where the online network
        selects a', it holds the target utilities at s' (N, A). Sound only while the target function is frozen
        between hard copies: it is used when ``input_norm`` is off (the normaliser would change every update)
        and target updates are hard; the cache is cleared at every copy and on loading a checkpoint. Each
        transition is sampled ~30 times per copy at the paper's settings, so this removes almost all of the
        target side's work.
        """
        lc = self.cfg.learner
        if not self.transitions or lc.input_norm or lc.target_update != "hard":
            self._tcache = self._tcache_version = None
            return
        shape = (capacity, 1) if not lc.double_q else (capacity, self.n_agents, self.n_actions)
        self._tcache = torch.zeros(shape, device=self.device)
        self._tcache_version = torch.full((capacity,), -1, dtype=torch.int64, device=self.device)

    def _clear_target_cache(self) -> None:
        if self._tcache_version is not None:
            self._tcache_version.fill_(-1)

    def _cached(self, batch: dict[str, Tensor], fresh: Callable[[Tensor], Tensor]) -> Tensor | None:
        """The cache's rows for the batch's slots, filling missing rows with ``fresh(miss)`` (a boolean row mask);
        None when there is no cache or the batch has no slots."""
        cache, cache_v = self._tcache, self._tcache_version
        if cache is None or cache_v is None or "slot" not in batch:
            return None
        slot, version = batch["slot"], batch["version"]
        miss = cache_v[slot] != version
        if bool(miss.any()):
            cache[slot[miss]] = fresh(miss).reshape(-1, *cache.shape[1:])
            cache_v[slot[miss]] = version[miss]
        return cache[slot]

    def _fresh_next_value(self, q_target: Tensor, selector: Tensor, avail_next: Tensor, state_next: Tensor) -> Tensor:
        """V_hat(s') = Q_tot^-(s', a') with a' = argmax of `selector` among available actions: (B, T)."""
        a_next = masked_argmax(selector, avail_next)
        next_utils = q_target.gather(-1, a_next.unsqueeze(-1)).squeeze(-1)
        next_onehot = one_hot(a_next, self.n_actions).to(state_next.dtype).flatten(-2)
        return self.target_mixer(next_utils, state_next, next_onehot)

    @torch.no_grad()
    def _next_value(
        self, batch: dict[str, Tensor], inputs: Tensor | tuple[Window, Window], online_next: Tensor | None
    ) -> Tensor:
        """V_hat(s') (B, T) of the target networks; a' chosen by `online_next` (B, T, N, A) with double-Q."""
        avail, state = batch["avail_actions"][:, 1:], batch["state"][:, 1:]
        double_q = self.cfg.learner.double_q
        if double_q and online_next is None:
            raise ValueError("double_q needs the online utilities at s' to select a'")
        if not isinstance(inputs, tuple):
            q_target = self.target_controller(inputs)[:, 1:]
            return self._fresh_next_value(q_target, online_next if double_q else q_target, avail, state)
        nxt = inputs[1]

        def target_q(rows: Tensor | None = None) -> Tensor:  # (b, 1, N, A) target utilities at s' (of `rows`)
            w = nxt if rows is None else Window(nxt.obs[rows], nxt.last_actions[rows], nxt.valid[rows])
            return self.target_controller.q(w).unsqueeze(1)  # type: ignore[operator]

        if not double_q:

            def fresh_value(rows: Tensor) -> Tensor:
                q = target_q(rows)
                return self._fresh_next_value(q, q, avail[rows], state[rows])

            value = self._cached(batch, fresh_value)
            if value is not None:
                return value
            q_target = target_q()
            return self._fresh_next_value(q_target, q_target, avail, state)
        assert online_next is not None
        cached_q = self._cached(batch, target_q)
        q_target = target_q() if cached_q is None else cached_q.unsqueeze(1)
        return self._fresh_next_value(q_target, online_next, avail, state)

    def target_inputs(
        self, batch: dict[str, Tensor], inputs: Tensor | tuple[Window, Window], utilities: Tensor
    ) -> TargetInputs:
        """TargetInputs for a batch, given agent inputs and online utilities (B, T+1, N, A) for double-Q."""
        return self._target_inputs(batch, inputs, utilities.detach()[:, 1:] if self.cfg.learner.double_q else None)

    def _target_inputs(
        self, batch: dict[str, Tensor], inputs: Tensor | tuple[Window, Window], online_next: Tensor | None
    ) -> TargetInputs:
        A = self.n_actions
        actions = batch["actions"][:, :-1]
        state = batch["state"]
        return TargetInputs(
            reward=batch["reward"][:, :-1] * self.td_reward_factor,
            next_value=self._next_value(batch, inputs, online_next),
            terminated=batch["terminated"][:, :-1].to(state.dtype),
            mask=batch["filled"][:, :-1].to(state.dtype),
            state=state[:, :-1],
            actions_onehot=one_hot(actions, A).to(state.dtype).flatten(-2),
        )

    def normalize_batch(self, batch: dict[str, Tensor]) -> dict[str, Tensor]:
        """With ``input_norm``: merge the batch's real steps into the normalisers (the target agents' copy
        follows) and return the batch with its state normalised; the identity otherwise."""
        if self.state_norm is None:
            return batch
        obs_norm, target_obs_norm = self.controller.obs_norm, self.target_controller.obs_norm
        assert obs_norm is not None and target_obs_norm is not None
        filled = batch["filled"].bool()
        valid = filled | torch.cat([torch.zeros_like(filled[:, :1]), filled[:, :-1]], dim=1)  # + each final step
        # with transition replay: the observations at s and s' (the last two window positions), like the states
        obs = batch["win_obs"][:, -2:] if self.transitions else batch["obs"]
        obs_norm.update(obs, valid.unsqueeze(-1).expand(obs.shape[:-1]))
        target_obs_norm.load_state_dict(obs_norm.state_dict())
        self.state_norm.update(batch["state"], valid)
        return {**batch, "state": self.state_norm(batch["state"])}

    def estimated_rewards(self, batch: dict[str, Tensor]) -> dict[str, Tensor]:
        """The batch with its reward replaced by GroupDR's min_c r_hat_c(s_t, a_t, t) on real transitions (0 on
        padding); t is the batch's ``t`` (transition replay with a time index) or the step position (episodes)."""
        if self.reward_model is None:
            raise ConfigError(
                f"learner.reward_model={self.cfg.learner.reward_model!r} is set but this learner was given no "
                "estimator (the Trainer loads it for training runs)"
            )
        state, actions, filled = batch["state"][:, :-1], batch["actions"][:, :-1], batch["filled"][:, :-1]
        if "t" in batch:
            t = batch["t"][:, :-1]
        elif self.transitions:
            raise ConfigError("learner.reward_model with transition replay needs a buffer with time_index=True")
        else:
            t = torch.arange(state.shape[1], device=state.device).expand(state.shape[0], -1)
        with torch.no_grad():
            r = self.reward_model.min_reward(state, actions, t) * filled.to(state.dtype)
        return {**batch, "reward": torch.cat([r, torch.zeros_like(r[:, :1])], dim=1)}

    def update(self, batch: dict[str, Tensor], run_aux: bool = True) -> dict[str, float]:
        """One gradient step on a batch of episodes (tensors on this learner's device); returns scalar stats."""
        with subnormals_flushed(self.flush_subnormals):
            return self._update(batch, run_aux)

    def _update(self, batch: dict[str, Tensor], run_aux: bool) -> dict[str, float]:
        self.controller.train()
        if self.cfg.learner.reward_model is not None:
            batch = self.estimated_rewards(batch)
        batch = self.normalize_batch(batch)
        actions = batch["actions"][:, :-1]
        inputs = self.agent_inputs(batch)
        double_q = self.cfg.learner.double_q
        online_next: Tensor | None = None
        if isinstance(inputs, tuple):  # transitions: utilities at s (with gradient); at s' only to select a'
            q_s = self.controller.q(inputs[0]).unsqueeze(1)  # type: ignore[operator]
            if double_q:
                with torch.no_grad():
                    online_next = self.controller.q(inputs[1]).unsqueeze(1)  # type: ignore[operator]
        else:
            utilities = self.controller(inputs)  # (B, T+1, N, A)
            q_s, online_next = utilities[:, :-1], utilities.detach()[:, 1:] if double_q else None
        tin = self._target_inputs(batch, inputs, online_next)
        # an optional float per-transition weight (exact-expectation batches), 0 on padding
        weight = batch["weight"][:, :-1].to(tin.mask.dtype) * tin.mask if "weight" in batch else None
        stats: dict[str, float] = {}
        if run_aux:
            aux_stats = self.robust.update_aux(tin) if weight is None else self.robust.update_aux(tin, weight)
            stats.update({f"aux/{k}": v for k, v in aux_stats.items()})
        lam = self.cfg.learner.td_lambda
        y = self.robust.lambda_target(tin, lam) if lam > 0 else self.robust(tin)
        chosen = q_s.gather(-1, actions.unsqueeze(-1)).squeeze(-1)
        q_tot = self.mixer(chosen, tin.state, tin.actions_onehot)
        mask = tin.mask
        n_valid = mask.sum().clamp_min(1.0)
        td_error = (q_tot - y) * mask
        td_loss = td_error.pow(2).sum() / n_valid
        if weight is not None:  # the weighted mean instead
            td_loss = (weight * td_error.pow(2)).sum() / weight.sum().clamp_min(1e-30)
        extra = self.mixer.extra_losses(
            MixerContext(
                utilities=q_s,
                avail=batch["avail_actions"][:, :-1],
                chosen=chosen,
                actions_onehot=tin.actions_onehot,
                state=tin.state,
                q_tot=q_tot,
                mask=mask,
            )
        )
        loss = td_loss + sum(extra.values(), torch.zeros((), device=td_loss.device))
        if not torch.isfinite(loss):
            raise FloatingPointError(f"non-finite loss {float(loss)} at update {self.n_updates}: {extra}")
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        clip = self.cfg.learner.grad_clip
        grad_norm = nn.utils.clip_grad_norm_(self.params, math.inf if clip is None else clip)
        self.optimizer.step()
        self.n_updates += 1
        self._update_targets()
        with torch.no_grad():
            summary = torch.stack(
                [
                    loss.detach(),
                    td_loss.detach(),
                    grad_norm.detach().to(loss.dtype),
                    (q_tot.detach() * mask).sum() / n_valid,
                    (y * mask).sum() / n_valid,
                    *[v.detach() for v in extra.values()],
                ]
            ).tolist()
        names = ["loss", "td_loss", "grad_norm", "q_tot_mean", "target_mean", *extra]
        stats.update(dict(zip(names, summary, strict=True)))
        return stats

    def _update_targets(self) -> None:
        lc = self.cfg.learner
        if lc.target_update == "hard":
            if self.n_updates % lc.target_update_interval == 0:
                self.target_controller.load_state_dict(self.controller.state_dict())
                self.target_mixer.load_state_dict(self.mixer.state_dict())
                self._clear_target_cache()
            return
        with torch.no_grad():
            for online, target in ((self.controller, self.target_controller), (self.mixer, self.target_mixer)):
                for p, tp in zip(online.parameters(), target.parameters(), strict=True):
                    tp.lerp_(p, lc.tau)
                for b, tb in zip(online.buffers(), target.buffers(), strict=True):
                    tb.copy_(b)  # normaliser statistics follow the online ones

    # ----- state ----------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """Networks, target networks, both optimisers, the robust target's state, and the update counter."""
        return {
            "controller": self.controller.state_dict(),
            "mixer": self.mixer.state_dict(),
            "target_controller": self.target_controller.state_dict(),
            "target_mixer": self.target_mixer.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "robust": self.robust.state_dict(),
            "robust_optimizer": self.robust.optimizer.state_dict() if self.robust.optimizer is not None else None,
            "n_updates": self.n_updates,
            "state_norm": None if self.state_norm is None else self.state_norm.state_dict(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore from `state_dict`; raises CheckpointError naming the part whose keys or shapes differ."""
        parts: list[tuple[str, Any]] = [
            ("controller", self.controller),
            ("mixer", self.mixer),
            ("target_controller", self.target_controller),
            ("target_mixer", self.target_mixer),
            ("optimizer", self.optimizer),
            ("robust", self.robust),
        ]
        if self.robust.optimizer is not None:
            parts.append(("robust_optimizer", self.robust.optimizer))
        elif state.get("robust_optimizer") is not None:
            raise CheckpointError("the checkpoint holds a robust-target optimizer but this run's target has none")
        if self.state_norm is not None:
            parts.append(("state_norm", self.state_norm))
        elif state.get("state_norm") is not None:
            raise CheckpointError("the checkpoint holds input normalisers but this run has learner.input_norm off")
        for name, module in parts:
            if state.get(name) is None:
                raise CheckpointError(f"the checkpoint lacks the learner part {name!r}")
            try:
                module.load_state_dict(state[name])
            except (RuntimeError, ValueError, KeyError) as exc:
                raise CheckpointError(f"the checkpoint's {name!r} does not fit this run's model: {exc}") from exc
        self.n_updates = int(state["n_updates"])
        self._clear_target_cache()
