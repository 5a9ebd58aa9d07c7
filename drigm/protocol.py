"""Named experiment protocols: a training run config, test environments, seeds, rho per (set, algo), scales.

A protocol is one YAML file under ``experiments/protocols/`` (``NAME.yaml``; files starting with ``_`` are
shared bases, not protocols). It may inherit another file through the config module's top-level
``base:`` mechanism (:func:`drigm.config.load_yaml`), so shared settings live once. Keys (all validated,
unknown keys refused by name):

- ``name`` (defaults to the file stem), ``description``;
- ``run``: the algorithm-independent base run config (RunConfig data) at full scale;
- ``scales``: ``{full|reduced|smoke: {...}}``, each deep-merged over the protocol's own keys (except
  ``name``/``scales``) when that scale is chosen; ``full`` may be empty;
- ``tests``: a list of ``{name, env}``; ``env`` (EnvConfig data) is deep-merged over ``run.env``;
- ``seeds``, ``algos``, ``targets``, ``sets``: the defaults of a sweep;
- ``rho``: ``{set: {algo: rho}}``, the radius of every (set, algo) pair;
- ``rho_grid``: ``{set: [rho, ...]}``, the radii of a rho axis (``drigm sweep --rho grid``), each checked
  against the set's range;
- ``set_overrides`` / ``algo_overrides``: run-config data merged for robust runs of a set / runs of an algo;
- ``eval_episodes`` (per test environment) and ``eval_seed`` (the seed of the test episodes' seeds, shared by
  every method and training seed, so all methods meet the same test episodes);
- ``test_seeds``: an explicit list of test-episode env seeds (duplicates kept, each counted in the mean), used
  instead of ``eval_episodes`` seeds drawn from ``eval_seed`` (the paper's 50 building test days);
- ``score``: ``{offset, scale, label, agents}``: a normalised score ``(agents * return + offset) / scale`` is
  reported (``agents``, default 1: how often the return counts the team reward; the paper's building score: 6);
- ``paper``: ``{shift, metric, rows: {method: {algo: [mean, standard error]}}}``: reported numbers to compare with;
- ``domain_randomisation``: ``{climate_sets: {NAME: {env, leaks, note}}, behaviour_algo, reward_estimator}``: the
  environments of the domain-randomisation methods (:data:`DR_TARGETS`; ``env`` is EnvConfig data merged over
  ``run.env``, e.g. ``{name: building, kwargs: {climates: [...]}}``), whether a set leaks test climates, the
  algorithm of GroupDR's stage 1 (``vdn``) and the estimator settings (:class:`drigm.estimator_config.EstimatorConfig`);
- ``presets``: ``{NAME: {...}}``, named training setups, each deep-merged (its own ``scales`` included) over the
  protocol's keys before the scale is; ``preset``: the one used when none is asked for. The chosen preset's
  name is recorded in every job's config (``RunConfig.preset``) and in the results path.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from drigm.config import ConfigError, RunConfig, build_config, deep_merge, load_yaml
from drigm.estimator_config import EstimatorConfig, estimator_config
from drigm.mixer_params import MIXER_PARAMS
from reference.sets import UncertaintySetError, check_rho

PROTOCOL_DIR = Path(__file__).resolve().parent.parent / "experiments" / "protocols"
"""Where named protocols live (``experiments/protocols/NAME.yaml`` in the repository)."""

SCALES = ("full", "reduced", "smoke")
TARGETS = ("none", "exact", "paper", "discount", "schedule")
"""Target kinds of a sweep job. ``discount`` is a matched control, not a robust target: non-robust training at
discount gamma (1 - rho), with the set's schedule (its ``set_overrides``); only for ``contamination``, whose paper
target r + gamma (1 - rho) V_hat(s') it equals, so any gain of paper contamination over ``none`` that ``discount``
also shows comes from the shorter horizon, not from robustness. ``schedule`` is the other side-effect control:
non-robust training with the ``learner`` part of the set's ``set_overrides`` (its update schedule; on SMAX also its
``td_lambda``), no rho and no dual network (label ``algo-schedule-SET``); beside the set's rho = 0 member, which
keeps those settings and adds the dual network, it tells their share of a gain from the dual network's. Only for a
set whose overrides change the learner (TV in the building protocols)."""
DEFAULT_TARGETS = ("none", "exact", "paper", "discount")
"""A protocol's ``targets`` when its file names none (``schedule`` is asked for explicitly, per set)."""
DISCOUNT_SETS = ("contamination",)
NOMINAL_VARIANTS: dict[str, dict[str, Any]] = {"doubleq": {"learner": {"double_q": True}}}
"""Set-less controls: non-robust training with one change to the run config (target kind -> the change).
``doubleq`` turns on double Q-learning (the online network picks a', the target network values it), the
standard fix for the max operator's overestimation. Both TV targets regress on min(V_hat(s'), aux), which also
keeps targets pessimistic, so ``doubleq`` tells a TV gain that suppressing overestimation alone would give from
one that needs the radius. A variant that leaves the protocol's config unchanged is refused (it would repeat
``none``). Their labels are ``algo-<kind>`` (``qmix-doubleq``)."""
DR_TARGETS: dict[str, tuple[str, bool]] = {
    "dr": ("leakfree", False),
    "dr-paper": ("paper", False),
    "groupdr": ("leakfree", True),
    "groupdr-paper": ("paper", True),
}
"""Domain-randomisation methods: target kind -> (climate set of the protocol's ``domain_randomisation``, GroupDR?).

``dr``: non-robust training with per-episode domain randomisation over the climate set. ``groupdr`` (the seed
paper's GroupDR baseline): (1) the ``behaviour_algo`` (VDN) ``dr`` run of the same seed and climate set, (2) one
reward estimator per climate fitted on its behaviour episodes, (3) training in the randomised env with the TD
reward min_c r_hat_c(s, a, t). ``-paper``: the paper's climates (which leak test climates); without: the
leak-free set. Their method labels are ``algo-<kind>`` (``qmix-groupdr``, ``vdn-dr-paper``)."""
SETLESS_TARGETS = (*NOMINAL_VARIANTS, *DR_TARGETS)
"""The target kinds besides ``none`` that have no set and no rho: one job per seed, labelled ``algo-<kind>``."""
RHO_TARGETS = ("exact", "paper", "discount")
"""The target kinds whose jobs read a radius (``--rho``); ``none``, ``schedule`` and the set-less kinds train
without one."""
ALL_TARGETS = (*TARGETS, *SETLESS_TARGETS)
"""Every target kind a sweep may ask for."""
PROTOCOL_KEYS = (
    "name",
    "description",
    "run",
    "scales",
    "tests",
    "seeds",
    "algos",
    "targets",
    "sets",
    "rho",
    "set_overrides",
    "algo_overrides",
    "eval_episodes",
    "eval_seed",
    "score",
    "paper",
    "test_seeds",
    "presets",
    "preset",
    "rho_grid",
    "domain_randomisation",
)
_SCALED_KEYS = tuple(k for k in PROTOCOL_KEYS if k not in ("name", "scales", "presets", "preset"))


class ProtocolError(ConfigError):
    """A protocol name, file, key or value is invalid; the message names it."""


@dataclass(frozen=True)
class TestEnv:
    """One test environment of a protocol: its label and its full EnvConfig data (name, episode_limit, kwargs)."""

    name: str
    env: dict[str, Any]


@dataclass(frozen=True)
class Job:
    """One training run of a sweep: algorithm, target kind, uncertainty set (None for kind 'none' and the set-less
    kinds), rho (None there too, and for ``schedule``, which has a set but no radius), seed.

    `tag` is empty at the protocol's own rho for (set, algo) and ``rho<value>`` at any other rho of a rho grid
    (:func:`rho_tag`), so the methods of earlier sweeps keep their labels and every label names one rho.
    """

    algo: str
    target: str
    set: str | None
    rho: float | None
    seed: int
    tag: str = ""

    @property
    def family(self) -> str:
        """The label without the rho tag: ``algo-none``, ``algo-target-set`` (a rho curve's name; for ``schedule``
        a control with a set and no rho), or ``algo-kind`` for the set-less kinds of :data:`NOMINAL_VARIANTS` and
        :data:`DR_TARGETS` (no set, no rho)."""
        if self.target == "none":
            return f"{self.algo}-none"
        if self.target in SETLESS_TARGETS:
            return f"{self.algo}-{self.target}"
        return f"{self.algo}-{self.target}-{self.set}"

    @property
    def method(self) -> str:
        """The method label shared by all seeds: the family, plus ``-rho<value>`` off the protocol's rho."""
        return self.family if not self.tag else f"{self.family}-{self.tag}"


def rho_tag(rho: float) -> str:
    """The label suffix of a job at a rho other than its protocol's: ``rho`` + the shortest exact decimal."""
    return f"rho{float(rho)!r}"


def parse_method(method: str) -> tuple[str, str, str | None, float | None]:
    """(algo, target, set, rho or None) of a method label; rho None means the protocol's own rho (no tag), or no
    rho at all for ``none``, ``schedule`` and the set-less kinds."""
    parts = method.split("-")
    if len(parts) >= 2 and parts[1] == "none":
        return parts[0], "none", None, None
    if len(parts) >= 2 and "-".join(parts[1:]) in SETLESS_TARGETS:
        return parts[0], "-".join(parts[1:]), None, None
    if len(parts) < 3:
        raise ProtocolError(f"method label {method!r} is not algo-none or algo-target-set[-rho<value>]")
    rest = "-".join(parts[2:])
    set_name, sep, rho = rest.rpartition("-rho")
    if not sep:
        return parts[0], parts[1], rest, None
    try:
        return parts[0], parts[1], set_name, float(rho)
    except ValueError:
        raise ProtocolError(f"method label {method!r} has a malformed rho tag {rho!r}") from None


def matched_controls(method: str, rho_default: float | None = None) -> list[str]:
    """The control methods a robust method is compared with, closest match first (an empty list for controls).

    - contamination at rho > 0: the discount control at the same rho (``algo-discount-contamination[-tag]``: the
      same horizon cut, no robustness), then ``algo-none`` (the family's rho = 0 member: contamination at rho 0
      is the non-robust target with the same schedule);
    - any other set at rho > 0: the same family at rho = 0 (``algo-K-S-rho0.0``: same schedule, same auxiliary
      network), then ``algo-none``;
    - ``discount`` and ``schedule`` runs, and the set-less kinds (:data:`NOMINAL_VARIANTS`, :data:`DR_TARGETS`):
      ``algo-none``;
    - every set also lists its schedule control ``algo-schedule-S`` (non-robust training with the set's learner
      overrides) after its rho = 0 member or discount control, or first at rho = 0 (reports use the controls that
      ran: the building protocols have one for TV only);
    - every exact or paper target (any set, any rho) also lists ``algo-doubleq`` last: non-robust training with
      the standard fix for overestimation, the control of the pessimism that TV's min(V_hat, aux) brings.

    `rho_default` is the protocol's rho for the method's (set, algo): it tells whether an untagged label has rho 0.
    """
    algo, target, set_name, rho = parse_method(method)
    none = f"{algo}-none"
    if target == "none":
        return []
    eff = rho if rho is not None else rho_default
    if target in ("discount", "schedule") or target in SETLESS_TARGETS:
        return [none]
    doubleq, schedule = f"{algo}-doubleq", f"{algo}-schedule-{set_name}"
    if eff == 0.0:
        return [schedule, none, doubleq]
    tag = "" if rho is None else f"-{rho_tag(rho)}"
    if set_name in DISCOUNT_SETS:
        return [f"{algo}-discount-{set_name}{tag}", schedule, none, doubleq]
    return [f"{algo}-{target}-{set_name}-{rho_tag(0.0)}", schedule, none, doubleq]


@dataclass(frozen=True)
class Score:
    """A normalised score (agents * return + offset) / scale, reported under `label`.

    `agents` counts how often the return holds the team reward: the seed paper's building return adds the shared
    team reward once per agent (its ``sum(rewards.values())``), so its score takes the team return 6 times.
    """

    offset: float
    scale: float
    label: str = "normalised score"
    agents: int = 1

    def __call__(self, ret: float) -> float:
        """The normalised score of one (team) return."""
        return (self.agents * ret + self.offset) / self.scale


@dataclass
class Protocol:
    """A loaded protocol at one scale; build job configs with :meth:`job_config`."""

    name: str
    path: Path
    scale: str
    description: str
    run: dict[str, Any]
    tests: list[TestEnv]
    seeds: list[int]
    algos: list[str]
    targets: list[str]
    sets: list[str]
    rho: dict[str, dict[str, float]]
    set_overrides: dict[str, dict[str, Any]] = field(default_factory=dict)
    algo_overrides: dict[str, dict[str, Any]] = field(default_factory=dict)
    eval_episodes: int = 10
    eval_seed: int = 0
    score: Score | None = None
    paper: dict[str, Any] | None = None
    preset: str | None = None
    explicit_test_seeds: list[int] | None = None
    rho_grid: dict[str, list[float]] = field(default_factory=dict)
    domain_randomisation: DomainRandomisation | None = None

    @property
    def label(self) -> str:
        """``scale`` or ``preset/scale``: how results of this protocol at this preset and scale are filed."""
        return self.scale if self.preset is None else f"{self.preset}/{self.scale}"

    def test_seeds(self) -> list[int]:
        """The env seeds of the test episodes, the same for every method and training seed: the protocol's
        explicit ``test_seeds``, or ``eval_episodes`` seeds drawn from ``eval_seed``."""
        if self.explicit_test_seeds is not None:
            return list(self.explicit_test_seeds)
        return test_episode_seeds(self.eval_seed, self.eval_episodes)

    def rho_of(self, set_name: str, algo: str) -> float:
        """The protocol's rho for (set, algo); ProtocolError naming both when it has none."""
        try:
            return float(self.rho[set_name][algo])
        except KeyError:
            raise ProtocolError(
                f"protocol {self.name!r} defines no rho for set {set_name!r} and algo {algo!r} "
                f"(rho has sets {sorted(self.rho)})"
            ) from None

    def jobs(
        self,
        algos: list[str],
        targets: list[str],
        sets: list[str],
        seeds: list[int],
        rhos: Mapping[str, Sequence[float]] | None = None,
    ) -> list[Job]:
        """Every (algo, target, set, rho, seed) combination; target 'none' gives one job per seed, whatever the sets.

        `rhos` maps a set to the radii to train (a rho axis); a set it leaves out, or None, trains the protocol's
        rho for (set, algo). Jobs at another rho carry a ``rho<value>`` tag. Two points are not separate jobs:
        contamination at rho = 0 is the non-robust target with the same schedule (so ``none`` is that member of
        the curve, and a sweep asking for it trains ``none``), and ``discount`` at rho = 0 is ``none`` too.
        ``schedule`` gives one job per seed for each asked set whose overrides change the learner (other sets are
        skipped; a rho axis does not multiply it), and ProtocolError when no asked set has such overrides.
        """
        for a in algos:
            if a not in MIXER_PARAMS:
                raise ProtocolError(f"algo {a!r} is not one of {', '.join(sorted(MIXER_PARAMS))}")
        for t in targets:
            if t not in ALL_TARGETS:
                raise ProtocolError(f"target {t!r} is not one of {', '.join(ALL_TARGETS)}")
            if t in DR_TARGETS:
                self.climate_set(t)
        if "discount" in targets:
            bad = [s for s in sets if s not in DISCOUNT_SETS]
            if bad and len(bad) == len(sets):
                raise ProtocolError(
                    f"target 'discount' (non-robust at gamma (1 - rho)) is the matched control of "
                    f"{', '.join(DISCOUNT_SETS)} only; sets asked: {', '.join(sets)}"
                )
        if "schedule" in targets and not any(self.schedule_overrides(s) for s in sets):
            raise ProtocolError(
                f"target 'schedule' (non-robust with a set's update schedule) needs a set whose set_overrides change "
                f"the learner; protocol {self.name!r} has none among the sets asked: {', '.join(sets)}"
            )
        rhos = dict(rhos or {})
        for s, values in rhos.items():
            if s not in sets:
                raise ProtocolError(f"rho values given for set {s!r}, which is not among the sets {sets}")
            if not values:
                raise ProtocolError(f"rho values for set {s!r}: give at least one")
            for r in values:
                try:
                    check_rho(s, r)
                except UncertaintySetError as exc:
                    raise ProtocolError(f"rho {r!r} for set {s!r}: {exc}") from None
        out: list[Job] = []
        want_none = False
        for a in algos:
            for t in targets:
                if t == "none" or t in SETLESS_TARGETS:
                    out.extend(Job(a, t, None, None, int(seed)) for seed in seeds)
                    continue
                for s in sets:
                    if t == "discount" and s not in DISCOUNT_SETS:
                        continue
                    if t == "schedule":  # no rho: one job per seed for every set with its own schedule
                        if self.schedule_overrides(s):
                            out.extend(Job(a, t, s, None, int(seed)) for seed in seeds)
                        continue
                    # a set the protocol gives no rho (an outside set, say) trains only at explicit radii, each tagged
                    default = self.rho.get(s, {}).get(a) if s in rhos else self.rho_of(s, a)
                    for r in dict.fromkeys(float(x) for x in rhos.get(s, [default])):  # type: ignore[list-item]
                        if r == 0.0 and (t == "discount" or self._nominal_at_zero(s)):
                            want_none = True
                            continue
                        tag = "" if r == default else rho_tag(r)
                        out.extend(Job(a, t, s, r, int(seed), tag) for seed in seeds)
            if want_none and "none" not in targets:
                out.extend(Job(a, "none", None, None, int(seed)) for seed in seeds)
            want_none = False
        return out

    def schedule_overrides(self, set_name: str) -> dict[str, Any]:
        """The ``learner`` part of the set's ``set_overrides`` (its update schedule, and whatever else it sets for
        the learner): what ``schedule`` trains with."""
        return dict((self.set_overrides.get(set_name) or {}).get("learner") or {})

    def _nominal_at_zero(self, set_name: str) -> bool:
        """Whether the set's targets at rho = 0 are the non-robust target with the non-robust schedule."""
        return set_name in DISCOUNT_SETS and not self.set_overrides.get(set_name)

    def climate_set(self, target: str) -> ClimateSet:
        """The climate set a domain-randomisation target kind trains on; ProtocolError when the protocol has none."""
        set_name = DR_TARGETS[target][0]
        dr = self.domain_randomisation
        if dr is None or set_name not in dr.climate_sets:
            have = sorted(dr.climate_sets) if dr is not None else "no domain_randomisation section"
            raise ProtocolError(
                f"target {target!r} needs the climate set {set_name!r} in protocol {self.name!r}'s "
                f"domain_randomisation.climate_sets (it has {have})"
            )
        return dr.climate_sets[set_name]

    def stage1_job(self, job: Job) -> Job:
        """GroupDR's stage 1 of `job`: the ``behaviour_algo`` domain-randomised run of the same seed and climate set."""
        assert job.target in DR_TARGETS and self.domain_randomisation is not None
        kind = "dr" if job.target == "groupdr" else "dr-paper"
        return Job(self.domain_randomisation.behaviour_algo, kind, None, None, job.seed)

    def estimator_file(self, job: Job) -> str:
        """The file name of GroupDR's reward estimator for `job`'s seed and climate set (in the stage-1 run
        directory): a digest of the estimator settings and the seed, so other settings never reuse a file."""
        assert self.domain_randomisation is not None
        spec = {"estimator": asdict(self.domain_randomisation.estimator), "seed": job.seed}
        digest = hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:12]
        return f"reward_estimator-{digest}.pt"

    def job_config(self, job: Job) -> RunConfig:
        """The validated run config of `job`: base run <- algo overrides <- set overrides (robust and discount
        control; a ``schedule`` job takes their learner part only) <- the job. A ``discount`` job trains the
        non-robust target at learner.gamma * (1 - rho). A
        domain-randomisation job trains the non-robust target in its climate set's env; a GroupDR one also reads
        the estimator ``../<stage-1 run dir>/<estimator file>`` (relative to its own run directory)."""
        data = deep_merge(self.run, self.algo_overrides.get(job.algo, {}))
        if job.target in DR_TARGETS:
            data = deep_merge(data, {"env": self.climate_set(job.target).env})
            if DR_TARGETS[job.target][1]:
                s1 = self.stage1_job(job)
                rel = f"../{run_dir_name(s1, self.job_config(s1))}/{self.estimator_file(job)}"
                data = deep_merge(data, {"learner": {"reward_model": rel}})
            tgt: dict[str, Any] = {"kind": "none"}
        elif job.target == "discount":
            assert job.set is not None and job.rho is not None
            data = deep_merge(data, self.set_overrides.get(job.set, {}))
            gamma = (data.get("learner") or {}).get("gamma")
            if gamma is None:
                raise ProtocolError(
                    f"protocol {self.name!r}: the discount control needs run.learner.gamma set explicitly "
                    "(it trains at learner.gamma * (1 - rho))"
                )
            data = deep_merge(data, {"learner": {"gamma": float(gamma) * (1.0 - job.rho)}})
            tgt = {"kind": "none"}
        elif job.target in NOMINAL_VARIANTS or job.target == "schedule":
            data, tgt = deep_merge(data, self._nominal_change(job)), {"kind": "none"}
        elif job.target != "none":
            assert job.set is not None and job.rho is not None
            data = deep_merge(data, self.set_overrides.get(job.set, {}))
            tgt = {"kind": job.target, "set": job.set, "rho": job.rho}
        else:
            tgt = {"kind": "none"}
        data = deep_merge(data, {"mixer": {"name": job.algo}, "target": tgt, "seed": job.seed})
        if self.preset is not None:
            data["preset"] = self.preset
        try:
            cfg = build_config(data)
        except ConfigError as exc:
            raise ProtocolError(
                f"protocol {self.name!r} ({self.scale} scale), job {job.method} seed {job.seed}: {exc}"
            ) from exc
        if job.target in (*NOMINAL_VARIANTS, "schedule") and config_key(cfg) == config_key(
            self.job_config(Job(job.algo, "none", None, None, job.seed))
        ):
            raise ProtocolError(
                f"protocol {self.name!r}: target {job.target!r} sets {self._nominal_change(job)}, which the "
                f"run config of {job.algo!r} already has: its runs would repeat 'none'"
            )
        return cfg

    def _nominal_change(self, job: Job) -> dict[str, Any]:
        """The one change a non-robust control (:data:`NOMINAL_VARIANTS`, ``schedule``) makes to the run config."""
        if job.target == "schedule":
            assert job.set is not None
            return {"learner": self.schedule_overrides(job.set)}
        return NOMINAL_VARIANTS[job.target]


def config_key(cfg: RunConfig) -> str:
    """A 12-hex digest of the resolved config without its output/progress/logging fields (same training, same key)."""
    d = cfg.to_dict()
    for k in ("out", "progress", "tensorboard"):
        d.pop(k, None)
    return hashlib.sha256(json.dumps(d, sort_keys=True, default=str).encode()).hexdigest()[:12]


def run_dir_name(job: Job, cfg: RunConfig) -> str:
    """The name of a job's training run directory: ``<method>-seed<k>-<config key>``."""
    return f"{job.method}-seed{job.seed}-{config_key(cfg)}"


@dataclass(frozen=True)
class ClimateSet:
    """A domain-randomisation climate set: its env (EnvConfig data over ``run.env``), whether it leaks test
    climates, and a note saying why it was chosen."""

    env: dict[str, Any]
    leaks: bool
    note: str = ""


@dataclass(frozen=True)
class DomainRandomisation:
    """A protocol's ``domain_randomisation`` section (see the module docstring)."""

    climate_sets: dict[str, ClimateSet]
    behaviour_algo: str
    estimator: EstimatorConfig


def _domain_randomisation(v: Any, name: str) -> DomainRandomisation | None:
    if v is None:
        return None
    d = _mapping(v, "domain_randomisation")
    bad = sorted(set(d) - {"climate_sets", "behaviour_algo", "reward_estimator"})
    if bad:
        raise ProtocolError(
            f"protocol {name!r}: domain_randomisation has unknown key(s) {bad}; allowed: climate_sets, "
            "behaviour_algo, reward_estimator"
        )
    sets: dict[str, ClimateSet] = {}
    for k, cs in _mapping(d.get("climate_sets"), "domain_randomisation.climate_sets").items():
        c = _mapping(cs, f"domain_randomisation.climate_sets.{k}")
        if set(c) - {"env", "leaks", "note"} or "env" not in c or not isinstance(c.get("leaks"), bool):
            raise ProtocolError(
                f"protocol {name!r}: domain_randomisation.climate_sets.{k}={c!r} needs keys env and leaks (true or "
                "false), and may have a note"
            )
        sets[k] = ClimateSet(
            _mapping(c["env"], f"domain_randomisation.climate_sets.{k}.env"), c["leaks"], str(c.get("note", ""))
        )
    algo = d.get("behaviour_algo", "vdn")
    if algo not in MIXER_PARAMS:
        raise ProtocolError(
            f"protocol {name!r}: domain_randomisation.behaviour_algo={algo!r} is not one of {sorted(MIXER_PARAMS)}"
        )
    try:
        est = estimator_config(_mapping(d.get("reward_estimator"), "domain_randomisation.reward_estimator"))
    except ConfigError as exc:
        raise ProtocolError(f"protocol {name!r}: domain_randomisation.{exc}") from None
    return DomainRandomisation(sets, str(algo), est)


def protocol_names(directory: Path = PROTOCOL_DIR) -> list[str]:
    """The named protocols available in `directory` (YAML files not starting with '_'), sorted."""
    return sorted(p.stem for p in Path(directory).glob("*.yaml") if not p.name.startswith("_"))


def protocol_presets(name_or_path: str | Path, directory: Path = PROTOCOL_DIR) -> list[str]:
    """The names of a protocol's presets (``presets`` keys, inherited ones included), in file order; [] if none."""
    data = load_yaml(resolve_protocol_path(name_or_path, directory))
    return list(_mapping(data.get("presets"), "presets"))


def resolve_protocol_path(name_or_path: str | Path, directory: Path = PROTOCOL_DIR) -> Path:
    """A protocol file: an existing path, or NAME under `directory`; ProtocolError listing the names otherwise."""
    p = Path(name_or_path)
    if p.suffix in (".yaml", ".yml") or p.is_file():
        if not p.is_file():
            raise ProtocolError(f"protocol file {str(p)!r} does not exist")
        return p
    cand = Path(directory) / f"{name_or_path}.yaml"
    if not cand.is_file():
        raise ProtocolError(
            f"unknown protocol {str(name_or_path)!r}; available: {', '.join(protocol_names(directory)) or '(none)'}"
        )
    return cand


def _mapping(v: Any, key: str) -> dict[str, Any]:
    if v is None:
        return {}
    if not isinstance(v, Mapping):
        raise ProtocolError(f"protocol key {key!r} must be a mapping; got {v!r}")
    return dict(v)


def _str_list(v: Any, key: str) -> list[str]:
    if isinstance(v, str):
        v = [s for s in v.split(",") if s]
    if not isinstance(v, list) or not v or not all(isinstance(x, str) and x for x in v):
        raise ProtocolError(f"protocol key {key!r} must be a non-empty list of names; got {v!r}")
    return list(v)


def _resolve_preset(presets: dict[str, Any], name: str, where: str, seen: tuple[str, ...] = ()) -> dict[str, Any]:
    """The overlay of preset `name`, with ``extends: OTHER`` (another preset it starts from) resolved."""
    if name in seen:
        raise ProtocolError(f"protocol {where!r}: presets extend each other in a cycle: {' -> '.join((*seen, name))}")
    if name not in presets:
        raise ProtocolError(f"protocol {where!r}: preset {name!r} is not one of its presets {sorted(presets)}")
    over = _mapping(presets[name], f"presets.{name}")
    parent = over.pop("extends", None)
    bad = sorted(set(over) - set(_SCALED_KEYS) - {"scales"})
    if bad:
        raise ProtocolError(f"protocol {where!r}: presets.{name} has key(s) {bad}")
    if parent is None:
        return over
    return deep_merge(_resolve_preset(presets, str(parent), where, (*seen, name)), over)


def _test_seeds(v: Any, name: str) -> list[int] | None:
    if v is None:
        return None
    if not isinstance(v, list) or not v or not all(type(x) is int and x >= 0 for x in v):
        raise ProtocolError(f"protocol {name!r}: test_seeds={v!r} must be a non-empty list of integers >= 0")
    return list(v)


def _int(v: Any, key: str, lo: int) -> int:
    if isinstance(v, bool) or not isinstance(v, int) or v < lo:
        raise ProtocolError(f"protocol key {key}={v!r} must be an integer >= {lo}")
    return v


def test_episode_seeds(eval_seed: int, episodes: int) -> list[int]:
    """The env seeds of the test episodes: a pure function of the protocol's eval_seed (same for every method)."""
    return [int(np.random.SeedSequence([eval_seed, 0x7E57, k]).generate_state(1)[0]) for k in range(episodes)]


def load_protocol(
    name_or_path: str | Path, scale: str = "full", directory: Path = PROTOCOL_DIR, preset: str | None = None
) -> Protocol:
    """Load, merge the `preset` and `scale` sections and validate a protocol; ProtocolError names the bad key.

    `preset` None picks the protocol's default preset (its ``preset`` key); a protocol without presets refuses
    any preset name.
    """
    path = resolve_protocol_path(name_or_path, directory)
    if scale not in SCALES:
        raise ProtocolError(f"scale={scale!r} is not one of {', '.join(SCALES)}")
    data = load_yaml(path)
    unknown = sorted(set(data) - set(PROTOCOL_KEYS))
    if unknown:
        raise ProtocolError(
            f"protocol {str(path)!r}: unknown key(s) {unknown}; allowed keys: {', '.join(PROTOCOL_KEYS)}"
        )
    presets = _mapping(data.pop("presets", None), "presets")
    default_preset = data.pop("preset", None)
    chosen = preset if preset is not None else default_preset
    if presets or chosen is not None:
        if chosen not in presets:
            raise ProtocolError(
                f"protocol {str(path)!r}: preset={chosen!r} is not one of its presets {sorted(presets) or '(none)'}"
            )
        data = deep_merge(data, _resolve_preset(presets, chosen, str(path)))
    scales = _mapping(data.pop("scales", None), "scales")
    bad_scales = sorted(set(scales) - set(SCALES))
    if bad_scales:
        raise ProtocolError(f"protocol {str(path)!r}: scales {bad_scales} are not among {', '.join(SCALES)}")
    if scale != "full" and scale not in scales:
        raise ProtocolError(f"protocol {str(path)!r} defines no {scale!r} scale; it has {sorted(scales) or 'none'}")
    over = _mapping(scales.get(scale), f"scales.{scale}")
    bad = sorted(set(over) - set(_SCALED_KEYS))
    if bad:
        raise ProtocolError(
            f"protocol {str(path)!r}: scales.{scale} has key(s) {bad}; allowed: {', '.join(_SCALED_KEYS)}"
        )
    data = deep_merge(data, over)
    name = data.get("name", path.stem)
    if not isinstance(name, str) or not name:
        raise ProtocolError(f"protocol {str(path)!r}: name={name!r} must be a non-empty string")

    run = _mapping(data.get("run"), "run")
    if "env" not in run or not isinstance(run["env"], Mapping) or "name" not in run["env"]:
        raise ProtocolError(f"protocol {name!r}: run.env.name (the training environment) is required")
    raw_tests = data.get("tests")
    if not isinstance(raw_tests, list) or not raw_tests:
        raise ProtocolError(f"protocol {name!r}: 'tests' must be a non-empty list of {{name, env}} entries")
    tests: list[TestEnv] = []
    for i, t in enumerate(raw_tests):
        if not isinstance(t, Mapping) or set(t) - {"name", "env"} or "name" not in t:
            raise ProtocolError(f"protocol {name!r}: tests[{i}]={t!r} must be a mapping with keys name and env")
        env = deep_merge(run["env"], _mapping(t.get("env"), f"tests[{i}].env"))
        extra = sorted(set(env) - {"name", "episode_limit", "kwargs"})
        if extra:
            raise ProtocolError(f"protocol {name!r}: tests[{i}].env has unknown key(s) {extra}")
        tests.append(TestEnv(str(t["name"]), {"episode_limit": None, "kwargs": {}, **env}))
    names = [t.name for t in tests]
    if len(set(names)) != len(names):
        raise ProtocolError(f"protocol {name!r}: test names must be unique; got {names}")

    seeds = data.get("seeds", [0])
    if not isinstance(seeds, list) or not seeds:
        raise ProtocolError(f"protocol {name!r}: seeds={seeds!r} must be a non-empty list of integers")
    seeds = [_int(s, "seeds[]", 0) for s in seeds]
    rho_raw = _mapping(data.get("rho"), "rho")
    rho = {s: {a: float(v) for a, v in _mapping(per, f"rho.{s}").items()} for s, per in rho_raw.items()}
    rho_grid: dict[str, list[float]] = {}
    for s, values in _mapping(data.get("rho_grid"), "rho_grid").items():
        if (
            not isinstance(values, list)
            or not values
            or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values)
        ):
            raise ProtocolError(f"protocol {name!r}: rho_grid.{s}={values!r} must be a non-empty list of numbers")
        try:
            rho_grid[s] = [check_rho(s, float(v)) for v in values]
        except (UncertaintySetError, KeyError, ValueError) as exc:
            raise ProtocolError(f"protocol {name!r}: rho_grid.{s}: {exc}") from None
    score = None
    if data.get("score") is not None:
        sc = _mapping(data["score"], "score")
        if set(sc) - {"offset", "scale", "label", "agents"} or "offset" not in sc or "scale" not in sc:
            raise ProtocolError(
                f"protocol {name!r}: score={sc!r} must have keys offset, scale (and optional label, agents)"
            )
        if not float(sc["scale"]) > 0:
            raise ProtocolError(f"protocol {name!r}: score.scale={sc['scale']!r} must be > 0")
        agents = _int(sc.get("agents", 1), "score.agents", 1)
        score = Score(float(sc["offset"]), float(sc["scale"]), str(sc.get("label", "normalised score")), agents)
    paper = data.get("paper")
    if paper is not None:
        paper = _mapping(paper, "paper")
        allowed = {"shift", "metric", "rows", "note", "se_ddof", "test"}
        if set(paper) - allowed or not isinstance(paper.get("rows"), Mapping):
            raise ProtocolError(
                f"protocol {name!r}: paper must have keys shift, metric, rows (and optional note, se_ddof, test)"
            )
        if paper.get("se_ddof", 1) not in (0, 1):
            raise ProtocolError(f"protocol {name!r}: paper.se_ddof={paper['se_ddof']!r} must be 0 or 1")
        if paper.get("test") is not None and paper["test"] not in [t.name for t in tests]:
            raise ProtocolError(
                f"protocol {name!r}: paper.test={paper['test']!r} is not one of its tests {[t.name for t in tests]}"
            )
    proto = Protocol(
        name=name,
        path=path,
        scale=scale,
        description=str(data.get("description", "")),
        run=run,
        tests=tests,
        seeds=seeds,
        algos=_str_list(data.get("algos", ["vdn", "qmix", "qtran"]), "algos"),
        targets=_str_list(data.get("targets", list(DEFAULT_TARGETS)), "targets"),
        sets=_str_list(data.get("sets", ["contamination", "tv"]), "sets"),
        rho=rho,
        set_overrides={
            k: _mapping(v, f"set_overrides.{k}") for k, v in _mapping(data.get("set_overrides"), "").items()
        },
        algo_overrides={
            k: _mapping(v, f"algo_overrides.{k}") for k, v in _mapping(data.get("algo_overrides"), "").items()
        },
        eval_episodes=_int(data.get("eval_episodes", 10), "eval_episodes", 1),
        eval_seed=_int(data.get("eval_seed", 0), "eval_seed", 0),
        score=score,
        paper=paper,
        preset=chosen,
        explicit_test_seeds=_test_seeds(data.get("test_seeds"), name),
        rho_grid=rho_grid,
        domain_randomisation=_domain_randomisation(data.get("domain_randomisation"), name),
    )
    if proto.explicit_test_seeds is not None:
        proto.eval_episodes = len(proto.explicit_test_seeds)
    # every default job must build: typos in the run config surface at load time, not in a worker
    if proto.domain_randomisation is not None:  # the randomised runs of every climate set must build too
        dr_targets = [t for t in DR_TARGETS if DR_TARGETS[t][0] in proto.domain_randomisation.climate_sets]
        for job in proto.jobs(proto.algos[:1], dr_targets, [], proto.seeds[:1]):
            proto.job_config(job)
    for job in proto.jobs(proto.algos, proto.targets, [s for s in proto.sets if s in proto.rho], proto.seeds[:1]):
        proto.job_config(job)
    return proto
