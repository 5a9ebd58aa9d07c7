"""Typed run configuration: dataclasses, YAML loading with inheritance, command-line overrides, validation.

A run is described by one :class:`RunConfig` tree. It is built from plain data (YAML files, then
overrides) by :func:`build_config`, which refuses unknown keys and wrong types with the dotted key
name, and is then checked by :meth:`RunConfig.validate`, which names the key, the value and the
allowed range. Nothing is read through untyped attribute lookups with defaults.

YAML files may inherit: a top-level ``base: other.yaml`` (a path relative to the file, or a list of
them) is loaded first and the file's own keys are deep-merged over it. ``base: preset:NAME`` starts
from a built-in preset of :data:`PRESETS` (the tuned tabular settings that the demo and the learning
gates use live there, once).

Override syntax (``--override``): ``key.sub=value`` with the value parsed as YAML (``null`` for None),
for example ``learner.lr=1e-3`` or ``mixer.params.embed_dim=16``.

Types are strict: integer keys take integers (an integral float such as ``8.0`` too), number keys take numbers,
and booleans are refused for both. A string is refused for a number (``batch_size: "8"`` names the key and asks
for an unquoted number), with one exception: scientific notation without a decimal point (``5e-4``, ``1e6``),
which PyYAML's YAML 1.1 resolver reads as a string, is accepted as the number it spells (an integer key still
needs an integral value).
"""

from __future__ import annotations

import contextlib
import copy
import math
import re
import types
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields, is_dataclass, replace
from pathlib import Path
from typing import Any, Literal, Union, get_args, get_origin, get_type_hints

import yaml

from drigm.mixer_params import MixerError, mixer_params
from drigm.target_config import TargetConfig
from reference.atomic_io import atomic_write_bytes, describe_not_a_file
from reference.sets import SPECS, UncertaintySetError, check_rho, get_spec, sample_rule, sets_with_rule

CONFIG_FILE = "config.yaml"
"""The name of the resolved config inside a run directory."""


class ConfigError(ValueError):
    """A configuration key, type or value is invalid; the message names the key."""


TD_REWARDS = ("team", "agent_sum")
"""``learner.td_reward``: the team reward once, or added once per agent (the seed paper's training reward)."""

REPLAY_MODES = ("episodes", "transitions")
"""``learner.replay``: whole-episode replay, or the seed paper's transition replay with per-transition windows."""


PRESETS: dict[str, dict[str, Any]] = {
    # Small one-hot tabular games: the defaults of the dataclasses below (tuned for them) plus a 10k-step
    # budget and narrow agents; seconds on a laptop CPU. The demo and the learning gates use this preset.
    # QTRAN runs add mixer.params.nopt_coef=1.0 (see QTranParams).
    "tabular": {
        "env": {"name": "tabular:robust_vs_nominal"},
        "steps": 10_000,
        "agent": {"hidden": 32},
    },
}
"""Built-in starting points for configs, referenced from YAML as ``base: preset:NAME``."""


@dataclass
class EnvConfig:
    """The environment: a registry spec ``name:arg``, an optional episode-length cap, adapter kwargs."""

    name: str = "tabular:robust_vs_nominal"
    episode_limit: int | None = None
    kwargs: dict[str, Any] = field(default_factory=dict)


@dataclass
class AgentConfig:
    """Utility networks: body, width, parameter sharing, agent-id and last-action inputs, window length.

    Bodies: ``mlp`` (over the last ``history`` inputs) and ``gru`` (episode replay); with transition replay
    (``learner.replay: transitions``) ``mlp`` and ``lstm`` run over a window of ``history`` steps
    (:mod:`drigm.window_agents`).
    """

    arch: str = "mlp"
    hidden: int = 64
    shared: bool = True
    agent_id: bool = True
    last_action: bool = False
    history: int = 1
    pad_action: int | None = None
    """None: no previous action before an episode's first step, and window positions before it are skipped. An
    action index p (the seed paper's 0): the previous action there is p (its one-hot), and the padded window
    positions are real inputs (zero observation, previous action p) that the network runs over (window agents)."""


@dataclass
class MixerConfig:
    """The mixer (the ``--algo``): a registered name and that mixer's own typed parameters (as a mapping)."""

    name: str = "qmix"
    params: dict[str, Any] = field(default_factory=dict)

    def typed_params(self) -> Any:
        """The params mapping as the mixer's Params dataclass (unknown keys and bad types raise ConfigError)."""
        try:
            params_cls = mixer_params(self.name)
        except MixerError as exc:
            raise ConfigError(f"mixer.name: {exc}") from exc
        params = _build(params_cls, self.params, "mixer.params.")
        try:
            params.validate()
        except MixerError as exc:
            raise ConfigError(str(exc)) from exc
        return params


@dataclass
class ExplorationConfig:
    """Epsilon-greedy exploration: eps_start for the first eps_hold_steps env steps, then annealed linearly
    to eps_finish over eps_anneal_steps env steps.

    Anneal over most of a run: VDN and QMIX cannot fit coordination payoffs exactly, and once data is
    dominated by one greedy joint action their fit keeps it greedy; near-uniform data while the values
    converge lets the better joint action win (the learning gates rely on this).
    """

    eps_start: float = 1.0
    eps_finish: float = 0.05
    eps_anneal_steps: int = 7_000
    eps_hold_steps: int = 0
    # true: one draw per step for the whole team (every agent explores, or none does), as the seed paper's
    # algorithms/*.py _select_actions; false: each agent draws on its own
    joint: bool = False

    def epsilon(self, t_env: int) -> float:
        """Epsilon after `t_env` environment steps (a pure function of t_env, so resumed runs continue it)."""
        t = max(0, t_env - self.eps_hold_steps)
        if self.eps_anneal_steps == 0:
            return self.eps_finish if t_env >= self.eps_hold_steps else self.eps_start
        frac = min(1.0, t / self.eps_anneal_steps)
        return self.eps_start + frac * (self.eps_finish - self.eps_start)


@dataclass
class LearnerConfig:
    """Optimisation: discount, optimiser, clipping, batch and buffer sizes, update schedule, target networks.

    The defaults suit small tabular games (Adam 1e-3, a 500-episode buffer, hard target updates every 50
    updates); the seed paper's settings (RMSprop 5e-4, clipping at 10, its TV schedule) are in
    ``experiments/paper_tv_schedule.yaml``.

    ``replay``: ``episodes`` stores and samples whole episodes (``buffer_size`` and ``batch_size`` count
    episodes; recurrent agents, SMAX); ``transitions`` is the seed paper's building replay: a FIFO of
    ``buffer_size`` transitions, batches of ``batch_size`` transitions, each with its own window of the last
    ``agent.history`` steps (window agents ``mlp`` or ``lstm``). ``grad_clip`` null turns clipping off.

    Schedule: every ``update_every`` environment steps one training phase runs ``q_steps`` Q updates,
    each on a fresh batch. The robust target's auxiliary networks are updated before every Q update,
    or, with ``aux_first``, once at the start of the phase (the paper's TV schedule: update_every 8,
    q_steps 4, aux_first, target.aux_steps 4). ``cpu_threads`` sets torch's intra-op threads for the
    process (0 keeps torch's default); one thread is fastest for these small networks and avoids
    OpenMP spin contention on busy machines.

    ``td_lambda`` > 0 regresses on lambda-returns (pymarl2's TD(lambda), off-policy corrections ignored as
    there) instead of one-step targets; only for targets affine in V_hat(s') (kind none, or contamination).

    ``td_reward``: the reward the TD target sees (times ``reward_scale``): ``team`` (the env's team reward, once)
    or ``agent_sum`` (the team reward added once per agent, N x r: the seed paper's ``sum(rewards.values())``).
    ``store_final`` false never stores an episode's last transition (the seed paper's loop breaks on ``done``
    before storing it).

    ``reward_model`` (GroupDR, :mod:`drigm.reward_model`, fitted by :mod:`drigm.groupdr`): a reward-estimator file
    (a relative path is taken from the run directory); the TD target then uses min over its climates of
    r_hat_c(s, a, t) instead of the batch reward. Unset (None) it is left out of the config's ``to_dict``, so
    configs from before it keep their keys.
    """

    gamma: float | None = None
    replay: str = "episodes"
    td_lambda: float = 0.0
    reward_scale: float = 1.0
    td_reward: str = "team"
    store_final: bool = True
    input_norm: bool = False
    optimizer: str = "adam"
    lr: float = 1e-3
    rms_alpha: float = 0.99
    optim_eps: float = 1e-5
    grad_clip: float | None = 10.0
    batch_size: int = 32
    buffer_size: int = 500
    update_every: int = 8
    q_steps: int = 1
    aux_first: bool = False
    double_q: bool = True
    target_update: str = "hard"
    target_update_interval: int = 50
    tau: float = 0.005
    device: str = "auto"
    cpu_threads: int = 1
    reward_model: str | None = None


@dataclass
class EvalConfig:
    """Greedy evaluation: episodes per evaluation, interval in env steps (0: only at the end), value set.

    ``set``/``rho`` choose the uncertainty set for the exact robust values reported on tabular games;
    when unset, the run's target set is used (and nominal values when the target kind is "none").
    For set "kl-penalty", rho holds the temperature beta (the reference solver's convention).
    """

    episodes: int = 20
    interval: int = 0
    set: str | None = None
    rho: float | None = None


@dataclass
class RunConfig:
    """One training run: seed, env-step budget, output directory, and the component configs."""

    seed: int = 0
    steps: int = 20_000
    out: str = "runs/drigm"
    env: EnvConfig = field(default_factory=EnvConfig)
    agent: AgentConfig = field(default_factory=AgentConfig)
    mixer: MixerConfig = field(default_factory=MixerConfig)
    learner: LearnerConfig = field(default_factory=LearnerConfig)
    target: TargetConfig = field(default_factory=TargetConfig)
    explore: ExplorationConfig = field(default_factory=ExplorationConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    log_interval: int = 1000
    checkpoint_interval: int = 5000
    checkpoint_buffer: bool = True
    tensorboard: bool = True
    progress: bool = True
    n_envs: int | None = None
    """Episodes collected at once, on batched environments only (smax); None: 16 on smax, 1 elsewhere."""
    train_seed_draw: list[int] | None = None
    """``[S, HIGH]``: training episode k plays env seed ``numpy.random.default_rng(S).integers(0, HIGH)`` draw k, the
    same sequence for every run seed (the seed paper's loop: S = 42, HIGH = 200); None: drawn per run seed."""
    preset: str | None = None
    """The named preset a protocol built this run from (e.g. 'paper'); None for runs configured by hand."""

    def validate(self) -> None:
        """Raise ConfigError naming the key, its value and the allowed range for the first invalid entry."""
        _check_int("seed", self.seed, 0, 2**32 - 1)
        _check_int("steps", self.steps, 1)
        if not self.out:
            raise ConfigError("out must be a non-empty directory path")
        if not self.env.name:
            raise ConfigError("env.name must be a non-empty spec like 'tabular:robust_vs_nominal'")
        if self.env.episode_limit is not None:
            _check_int("env.episode_limit", self.env.episode_limit, 1)
        if self.n_envs is not None:
            _check_int("n_envs", self.n_envs, 1, 4096)
        a = self.agent
        lr = self.learner
        _check_choice("learner.replay", lr.replay, REPLAY_MODES)
        _check_choice("agent.arch", a.arch, ("mlp", "gru", "lstm"))
        _check_int("agent.hidden", a.hidden, 1)
        _check_int("agent.history", a.history, 1)
        if a.pad_action is not None:
            _check_int("agent.pad_action", a.pad_action, 0)
            if lr.replay != "transitions" or not a.last_action:
                raise ConfigError(
                    f"agent.pad_action={a.pad_action} applies to window agents with a last-action input "
                    "(learner.replay='transitions', agent.last_action=true); set it to null otherwise"
                )
        draw = self.train_seed_draw
        if draw is not None:
            if not isinstance(draw, list) or len(draw) != 2:
                raise ConfigError(f"train_seed_draw={draw!r} must be a list [S, HIGH] of two integers, or null")
            _check_int("train_seed_draw[0]", draw[0], 0, 2**63 - 1)
            _check_int("train_seed_draw[1]", draw[1], 1, 2**63 - 1)
        if a.arch == "gru" and a.history != 1:
            raise ConfigError(f"agent.history={a.history} applies to arch 'mlp' only; a GRU carries its own history")
        if lr.replay == "transitions" and a.arch == "gru":
            raise ConfigError(
                "agent.arch='gru' needs whole episodes (learner.replay='episodes'); with learner.replay="
                "'transitions' choose arch 'mlp' or 'lstm' (window agents over agent.history steps)"
            )
        if lr.replay == "episodes" and a.arch == "lstm":
            raise ConfigError(
                "agent.arch='lstm' is the window agent of learner.replay='transitions'; with episode replay use 'gru'"
            )
        self.mixer.typed_params()
        if lr.gamma is not None:
            _check_float("learner.gamma", lr.gamma, 0.0, 1.0, hi_open=True)
        _check_float("learner.td_lambda", lr.td_lambda, 0.0, 1.0)
        if lr.td_lambda > 0 and lr.replay == "transitions":
            raise ConfigError(
                f"learner.td_lambda={lr.td_lambda} needs whole episodes (learner.replay='episodes'); "
                "transition replay regresses on one-step targets"
            )
        try:
            self.target.validate()
        except ValueError as exc:
            raise ConfigError(f"target: {exc}") from exc
        rule = sample_rule(self.target.kind, self.target.set)
        if lr.td_lambda > 0 and rule.affine is None:
            affine = [s for s in sets_with_rule(self.target.kind) if sample_rule(self.target.kind, s).affine]
            raise ConfigError(
                f"learner.td_lambda={lr.td_lambda} needs a target affine in V_hat(s') (target.kind 'none', or "
                f"set {' / '.join(repr(s) for s in affine)}); target {self.target.kind}/{self.target.set} is nonlinear "
                "in V_hat(s'), so a lambda-return inside it would be biased (Jensen). Use td_lambda: 0 with it"
            )
        _check_float("learner.reward_scale", lr.reward_scale, 0.0, math.inf, lo_open=True)
        _check_choice("learner.td_reward", lr.td_reward, TD_REWARDS)
        if (lr.reward_scale != 1.0 or lr.td_reward != "team") and not rule.homogeneous:
            raise ConfigError(
                f"learner.reward_scale={lr.reward_scale} and learner.td_reward={lr.td_reward!r} must be 1 and "
                f"'team' with target.set={self.target.set!r}: its "
                f"{get_spec(self.target.set).radius.symbol} would act on the scaled values (its target is not "
                "positively homogeneous in the values, unlike the ball sets')"
            )
        _check_choice("learner.optimizer", lr.optimizer, ("rmsprop", "adam"))
        _check_float("learner.lr", lr.lr, 0.0, math.inf, lo_open=True)
        _check_float("learner.rms_alpha", lr.rms_alpha, 0.0, 1.0, hi_open=True)
        _check_float("learner.optim_eps", lr.optim_eps, 0.0, math.inf, lo_open=True)
        if lr.grad_clip is not None:
            _check_float("learner.grad_clip", lr.grad_clip, 0.0, math.inf, lo_open=True)
        _check_int("learner.batch_size", lr.batch_size, 1)
        _check_int("learner.buffer_size", lr.buffer_size, lr.batch_size)
        _check_int("learner.update_every", lr.update_every, 1)
        _check_int("learner.q_steps", lr.q_steps, 1)
        _check_choice("learner.target_update", lr.target_update, ("hard", "soft"))
        _check_int("learner.target_update_interval", lr.target_update_interval, 1)
        _check_float("learner.tau", lr.tau, 0.0, 1.0, lo_open=True)
        if not (lr.device in ("auto", "cpu", "cuda") or lr.device.startswith("cuda:")):
            raise ConfigError(f"learner.device={lr.device!r} must be 'auto', 'cpu', 'cuda' or 'cuda:N'")
        _check_int("learner.cpu_threads", lr.cpu_threads, 0)
        if lr.reward_model is not None and not lr.reward_model.strip():
            raise ConfigError(
                "learner.reward_model='' must be a reward-estimator file path, or null for the env reward"
            )
        ex = self.explore
        _check_float("explore.eps_start", ex.eps_start, 0.0, 1.0)
        _check_float("explore.eps_finish", ex.eps_finish, 0.0, 1.0)
        _check_int("explore.eps_anneal_steps", ex.eps_anneal_steps, 0)
        _check_int("explore.eps_hold_steps", ex.eps_hold_steps, 0)
        if not isinstance(ex.joint, bool):
            raise ConfigError(f"explore.joint={ex.joint!r} must be true or false")
        ev = self.eval
        _check_int("eval.episodes", ev.episodes, 1)
        _check_int("eval.interval", ev.interval, 0)
        if (ev.set is None) != (ev.rho is None):
            raise ConfigError(f"eval.set={ev.set!r} and eval.rho={ev.rho!r} must be given together or not at all")
        if ev.set is not None:
            _check_choice("eval.set", ev.set, _known_sets(ev.set))
            try:
                check_rho(ev.set, ev.rho)
            except UncertaintySetError as exc:
                raise ConfigError(f"eval.rho: {exc}") from exc
        _check_int("log_interval", self.log_interval, 1)
        _check_int("checkpoint_interval", self.checkpoint_interval, 1)

    def to_dict(self) -> dict[str, Any]:
        """Plain nested data (YAML-safe), with the mixer params fully resolved."""
        d = asdict(self)
        d["mixer"]["params"] = asdict(self.mixer.typed_params())
        # unset: omitted, so configs (and sweep keys) from before them stay valid
        for key in ("n_envs", "preset", "train_seed_draw"):
            if d[key] is None:
                del d[key]
        # likewise: settings at their defaults are left out, so earlier configs keep their keys
        for section, key, default in (
            ("learner", "reward_model", None),
            ("learner", "td_reward", "team"),
            ("learner", "store_final", True),
            ("agent", "pad_action", None),
            ("explore", "joint", False),
        ):
            if d[section][key] == default:
                del d[section][key]
        return d


# ===== checks =====================================================================================
def _check_int(key: str, v: int, lo: int, hi: int | None = None) -> None:
    if isinstance(v, bool) or not isinstance(v, int):
        raise ConfigError(f"{key}={v!r} must be an integer")
    if v < lo or (hi is not None and v > hi):
        rng = f"[{lo}, {hi}]" if hi is not None else f">= {lo}"
        raise ConfigError(f"{key}={v!r} is out of range: allowed {rng}")


def _check_float(key: str, v: float, lo: float, hi: float, lo_open: bool = False, hi_open: bool = False) -> None:
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
        raise ConfigError(f"{key}={v!r} must be a finite number")
    bad = (v <= lo if lo_open else v < lo) or (v >= hi if hi_open else v > hi)
    if bad:
        left, right = ("(" if lo_open else "["), (")" if hi_open or math.isinf(hi) else "]")
        raise ConfigError(f"{key}={v!r} is out of range: allowed {left}{lo:g}, {hi:g}{right}")


def _known_sets(name: object) -> tuple[str, ...]:
    """The registered set names, after loading `name` from an installed drigm.sets entry point if there is one."""
    if isinstance(name, str) and name not in SPECS:
        with contextlib.suppress(UncertaintySetError):
            get_spec(name)
    return tuple(SPECS)


def _check_choice(key: str, v: str, choices: tuple[str, ...]) -> None:
    if v not in choices:
        raise ConfigError(f"{key}={v!r} is not one of {', '.join(choices)}")


# ===== typed construction from plain data =========================================================
def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


_YAML11_SCIENTIFIC = re.compile(r"[-+]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)[eE][-+]?[0-9]+")
"""Scientific notation that PyYAML (YAML 1.1) leaves as a string when it has no decimal point, e.g. 5e-4."""


def _string_number(value: str, key: str, what: str) -> float:
    """The number a YAML-1.1 scientific-notation string spells; any other string raises ConfigError naming `key`."""
    if _YAML11_SCIENTIFIC.fullmatch(value.strip()):
        return float(value)
    try:
        float(value)
    except ValueError:
        raise ConfigError(f"{key}={brief(value)} must be {what}") from None
    raise ConfigError(f"{key}={brief(value)} is a string, not {what}: write the number without quotes")


def _coerce(value: Any, tp: Any, key: str) -> Any:
    """Convert plain data `value` to type `tp` or raise ConfigError naming `key`; floats must be finite."""
    origin = get_origin(tp)
    if tp is Any:
        return value
    if origin in (Union, types.UnionType):
        args = get_args(tp)
        if value is None:
            if type(None) in args:
                return None
            raise ConfigError(f"{key} must not be null")
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(value, arg, key)
            except ConfigError as exc:
                errors.append(str(exc))
        raise ConfigError(errors[0] if len(errors) == 1 else f"{key}={brief(value)} matches none of {_type_name(tp)}")
    if origin is Literal:
        if value not in get_args(tp):
            raise ConfigError(f"{key}={brief(value)} is not one of {', '.join(map(repr, get_args(tp)))}")
        return value
    if is_dataclass(tp) and isinstance(tp, type):
        return _build(tp, value, f"{key}.")
    if origin is list:
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{key} must be a list; got {brief(value)}")
        (item,) = get_args(tp)
        return [_coerce(v, item, f"{key}[{i}]") for i, v in enumerate(value)]
    if origin is dict or tp is dict:
        if not isinstance(value, Mapping):
            raise ConfigError(f"{key} must be a mapping; got {brief(value)}")
        return dict(value)
    if value is None:
        raise ConfigError(f"{key} must not be null (expected {_type_name(tp)})")
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"{key}={brief(value)} must be true or false")
    if tp is int:
        if isinstance(value, bool):
            raise ConfigError(f"{key}={brief(value)} must be an integer, not a boolean")
        if isinstance(value, int):
            return value
        if isinstance(value, (float, str)):
            f = _string_number(value, key, "an integer") if isinstance(value, str) else value
            if math.isfinite(f) and f.is_integer():
                return int(f)
        raise ConfigError(f"{key}={brief(value)} must be an integer")
    if tp is float:
        if isinstance(value, bool):
            raise ConfigError(f"{key}={brief(value)} must be a number, not a boolean")
        if isinstance(value, (int, float, str)):
            try:
                f = _string_number(value, key, "a number") if isinstance(value, str) else float(value)
            except OverflowError:  # an integer of hundreds of digits
                raise ConfigError(f"{key}={brief(value)} is too large for a float (at most about 1.8e308)") from None
            if not math.isfinite(f):
                raise ConfigError(f"{key}={brief(value)} must be a finite number (NaN and inf are refused)")
            return f
        raise ConfigError(f"{key}={brief(value)} must be a number")
    if tp is str:
        if isinstance(value, str):
            return value
        raise ConfigError(f"{key}={brief(value)} must be a string")
    raise ConfigError(f"{key}: unsupported config type {_type_name(tp)}")


def _build(cls: type, data: Any, prefix: str) -> Any:
    """Instantiate dataclass `cls` from mapping `data`, refusing unknown keys by their dotted name."""
    where = prefix.rstrip(".") or "the top level"
    if data is None:
        data = {}
    if not isinstance(data, Mapping):
        raise ConfigError(f"{where} must be a mapping of keys; got {data!r}")
    hints = get_type_hints(cls)
    names = [f.name for f in fields(cls) if f.init]
    for k in data:
        if k not in names:
            raise ConfigError(f"unknown config key {prefix}{k!r}; allowed keys at {where}: {', '.join(names)}")
    return cls(**{k: _coerce(v, hints[k], f"{prefix}{k}") for k, v in data.items()})


def build_config(data: Mapping[str, Any]) -> RunConfig:
    """A validated RunConfig from nested plain data (unknown keys, bad types and bad values raise ConfigError)."""
    cfg = _build(RunConfig, data, "")
    cfg.validate()
    # store the mixer parameters resolved (defaults filled in) so the saved config is complete
    return replace(cfg, mixer=MixerConfig(cfg.mixer.name, asdict(cfg.mixer.typed_params())))


# ===== YAML and overrides =========================================================================
def deep_merge(base: Mapping[str, Any], over: Mapping[str, Any]) -> dict[str, Any]:
    """`over` merged into `base`: mappings merge key by key, anything else is replaced."""
    out = dict(base)
    for k, v in over.items():
        if isinstance(v, Mapping) and isinstance(out.get(k), Mapping):
            out[k] = deep_merge(out[k], v)
        else:
            out[k] = v
    return out


MAX_YAML_NODES = 100_000
"""The most values a YAML document may hold with its aliases expanded (configs hold a few hundred): bounds the
memory and time of everything that walks or prints it (an alias bomb of 10^9 values is refused up front)."""

MAX_YAML_DEPTH = 50
"""The deepest nesting a YAML document may have (configs nest 4 levels)."""

MAX_BASE_CHAIN = 32
"""The longest chain of ``base:`` files (the building protocols use 2)."""

BRIEF = 200
"""Characters of a value that an error message shows at most."""


def brief(value: Any, limit: int = BRIEF) -> str:
    """``repr(value)`` cut to `limit` characters (with the full length named), for error messages.

    Bounded in time and memory whatever `value` is: containers are shown through reprlib's size limits first."""
    import reprlib

    r = reprlib.Repr()
    r.maxlevel, r.maxlist, r.maxtuple, r.maxdict, r.maxset = 4, 12, 12, 12, 12
    r.maxstring, r.maxlong, r.maxother = limit, limit, limit
    text = r.repr(value)
    return text if len(text) <= limit else f"{text[: limit - 3]}... ({len(text)} characters)"


class _BoundedLoader(yaml.SafeLoader):
    """PyYAML's safe loader that refuses a key given twice in one mapping (YAML says keys are unique; PyYAML
    keeps the last one silently)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        counts: dict[str, int] = {}
        for key_node, _ in node.value:
            if isinstance(key_node, yaml.ScalarNode) and key_node.tag != "tag:yaml.org,2002:merge":
                counts[key_node.value] = counts.get(key_node.value, 0) + 1
                if counts[key_node.value] == 2:
                    line = key_node.start_mark.line + 1
                    raise yaml.constructor.ConstructorError(
                        None, None, f"key {brief(key_node.value)} is given twice in one mapping (line {line})"
                    )
        return super().construct_mapping(node, deep=deep)


def _check_yaml_size(root: yaml.Node) -> None:
    """Refuse a document whose alias-expanded size or depth exceed the bounds (iterative: no recursion)."""
    size: dict[int, int] = {}
    depth: dict[int, int] = {}
    stack: list[tuple[yaml.Node, bool]] = [(root, False)]
    active: set[int] = set()
    while stack:
        node, done = stack.pop()
        key = id(node)
        children: list[yaml.Node] = []
        if isinstance(node, yaml.SequenceNode):
            children = list(node.value)
        elif isinstance(node, yaml.MappingNode):
            children = [n for pair in node.value for n in pair]
        if done:
            active.discard(key)
            size[key] = 1 + sum(size[id(c)] for c in children)
            depth[key] = 1 + max((depth[id(c)] for c in children), default=0)
            if size[key] > MAX_YAML_NODES:
                raise ConfigError(
                    f"holds more than {MAX_YAML_NODES} values once its aliases are expanded (an alias bomb?)"
                )
            if depth[key] > MAX_YAML_DEPTH:
                raise ConfigError(f"nests deeper than {MAX_YAML_DEPTH} levels")
            continue
        if key in size:
            continue
        if key in active:
            raise ConfigError("holds a recursive alias (a value that contains itself)")
        active.add(key)
        stack.append((node, True))
        stack.extend((c, False) for c in children if id(c) not in size)


def parse_yaml(text: str, where: str) -> Any:
    """Plain data from YAML `text` (safe tags only), or ConfigError naming `where`: invalid YAML, a key given
    twice, more than MAX_YAML_NODES values with aliases expanded, or nesting deeper than MAX_YAML_DEPTH."""
    loader = _BoundedLoader(text)
    try:
        try:
            node = loader.get_single_node()
        except RecursionError:
            raise ConfigError(f"{where} nests deeper than {MAX_YAML_DEPTH} levels") from None
        if node is None:
            return None
        try:
            _check_yaml_size(node)
        except ConfigError as exc:
            raise ConfigError(f"{where} {exc}") from None
        return loader.construct_document(node)
    except yaml.YAMLError as exc:
        text = " ".join(str(exc).split())
        raise ConfigError(f"{where} is not valid YAML: {text if len(text) <= 600 else text[:597] + '...'}") from None
    finally:
        loader.dispose()


def load_yaml(path: str | Path, _seen: tuple[Path, ...] = ()) -> dict[str, Any]:
    """Plain data from a YAML config, with ``base:`` inheritance resolved (cycles and chains longer than
    MAX_BASE_CHAIN refused; each file bounded as :func:`parse_yaml` says)."""
    path = Path(path).resolve()
    if path in _seen:
        raise ConfigError(f"config inheritance cycle: {' -> '.join(str(p) for p in (*_seen, path))}")
    if len(_seen) >= MAX_BASE_CHAIN:
        raise ConfigError(
            f"config file {str(path)!r}: its chain of 'base:' files is longer than {MAX_BASE_CHAIN} "
            f"(from {str(_seen[0])!r})"
        )
    problem = describe_not_a_file(path, "config file")
    if problem is not None:
        raise ConfigError(problem)
    try:
        data = parse_yaml(path.read_text(), f"config file {str(path)!r}") or {}
    except UnicodeDecodeError as exc:
        raise ConfigError(f"config file {str(path)!r} is not UTF-8 text: {exc}") from exc
    if not isinstance(data, dict):
        raise ConfigError(f"config file {str(path)!r} must hold a mapping at the top level")
    bases = data.pop("base", None)
    if bases is None:
        return data
    if not isinstance(bases, (str, list)):
        raise ConfigError(
            f"'base' in {str(path)!r} must be a path, 'preset:NAME' or a list of them; got {brief(bases)}"
            f" ({type(bases).__name__})"
        )
    merged: dict[str, Any] = {}
    for b in [bases] if isinstance(bases, str) else list(bases):
        if not isinstance(b, str):
            raise ConfigError(f"'base' in {str(path)!r} must be a path or a list of paths; got {brief(b)}")
        merged = deep_merge(
            merged, preset(b[7:]) if b.startswith("preset:") else load_yaml(path.parent / b, (*_seen, path))
        )
    return deep_merge(merged, data)


def preset(name: str) -> dict[str, Any]:
    """A deep copy of the built-in preset `name`; raises ConfigError listing the presets."""
    if name not in PRESETS:
        raise ConfigError(f"unknown preset {name!r}; presets: {', '.join(sorted(PRESETS))}")
    return copy.deepcopy(PRESETS[name])


def set_key(data: dict[str, Any], dotted: str, value: Any) -> None:
    """Set ``data[a][b][c] = value`` for ``dotted = "a.b.c"``, creating intermediate mappings."""
    parts = dotted.split(".")
    if not dotted or any(not p for p in parts):
        raise ConfigError(f"override key {dotted!r} must be dotted names like 'learner.lr'")
    node = data
    for i, p in enumerate(parts[:-1]):
        nxt = node.get(p)
        if nxt is None:
            nxt = node[p] = {}
        if not isinstance(nxt, dict):
            raise ConfigError(f"override key {dotted!r}: {'.'.join(parts[: i + 1])!r} is not a section")
        node = nxt
    node[parts[-1]] = value


def parse_override(text: str) -> tuple[str, Any]:
    """Split ``key.sub=value`` and parse the value as YAML; raises ConfigError on a missing '='."""
    key, sep, raw = text.partition("=")
    if not sep or not key.strip():
        raise ConfigError(f"override {text!r} must look like key.sub=value")
    value = parse_yaml(raw, f"override {brief(text)}: the value") if raw.strip() else ""
    return key.strip(), value


def load_config(
    path: str | Path | None = None,
    overrides: Mapping[str, Any] | None = None,
    base: Mapping[str, Any] | None = None,
) -> RunConfig:
    """Defaults <- `base` data <- YAML at `path` <- dotted `overrides`, then typed and validated."""
    data: dict[str, Any] = dict(base or {})
    if path is not None:
        data = deep_merge(data, load_yaml(path))
    for k, v in (overrides or {}).items():
        set_key(data, k, v)
    return build_config(data)


def save_config(cfg: RunConfig, path: str | Path) -> None:
    """Write the resolved config as YAML (written to a temporary file, then renamed)."""
    text = yaml.safe_dump(cfg.to_dict(), sort_keys=False, default_flow_style=False)
    atomic_write_bytes(Path(path), text.encode(), make_parents=True)
