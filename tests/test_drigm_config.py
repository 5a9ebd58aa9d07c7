"""Typed configs: YAML loading with inheritance, CLI flags and overrides, unknown keys, invalid values."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from drigm.cli import _parser, train_config
from drigm.config import ConfigError, RunConfig, build_config, load_config, load_yaml, parse_override
from drigm.mixers import QTranParams

EXPERIMENTS = Path(__file__).resolve().parents[1] / "experiments"


def write(path: Path, data: dict | str) -> Path:
    path.write_text(data if isinstance(data, str) else yaml.safe_dump(data))
    return path


def test_defaults_validate_and_round_trip(tmp_path: Path) -> None:
    cfg = build_config({})
    assert isinstance(cfg, RunConfig) and cfg.mixer.name == "qmix"
    assert cfg.mixer.params == {"embed_dim": 32, "hypernet_layers": 2, "hypernet_embed": 64, "hypernet_gain": None}
    again = build_config(cfg.to_dict())
    assert again == cfg


@pytest.mark.parametrize("name", sorted(p.name for p in EXPERIMENTS.glob("*.yaml")))
def test_every_example_config_loads(name: str) -> None:
    cfg = load_config(EXPERIMENTS / name)
    assert isinstance(cfg, RunConfig) and cfg.to_dict()["env"]["name"]


def test_inheritance_merges_and_presets() -> None:
    cfg = load_config(EXPERIMENTS / "paper_tv_schedule.yaml")
    # from the preset, through tabular_base.yaml and tabular_qmix_tv.yaml, then the file's own keys
    assert cfg.explore.eps_anneal_steps == 7_000
    assert (cfg.target.kind, cfg.target.set, cfg.target.rho, cfg.target.aux_steps) == ("exact", "tv", 0.2, 4)
    assert (cfg.learner.optimizer, cfg.learner.q_steps, cfg.learner.aux_first) == ("rmsprop", 4, True)
    assert cfg.learner.batch_size == 32  # untouched keys of the sections survive the merge
    qtran = load_config(EXPERIMENTS / "tabular_qtran_klpenalty.yaml")
    assert qtran.mixer.typed_params() == QTranParams(nopt_coef=1.0)


def test_inheritance_cycle_and_unknown_preset(tmp_path: Path) -> None:
    write(tmp_path / "a.yaml", {"base": "b.yaml"})
    write(tmp_path / "b.yaml", {"base": "a.yaml"})
    with pytest.raises(ConfigError, match="inheritance cycle"):
        load_yaml(tmp_path / "a.yaml")
    write(tmp_path / "c.yaml", {"base": "preset:nope"})
    with pytest.raises(ConfigError, match="unknown preset 'nope'; presets: tabular"):
        load_yaml(tmp_path / "c.yaml")


@pytest.mark.parametrize(
    ("data", "match"),
    [
        ({"stepz": 3}, r"unknown config key 'stepz'; allowed keys at the top level: seed, steps"),
        ({"learner": {"lrr": 1.0}}, r"unknown config key learner\.'lrr'.*allowed keys at learner: gamma"),
        ({"target": {"rhoo": 0.1}}, r"unknown config key target\.'rhoo'"),
        ({"mixer": {"name": "qmix", "params": {"foo": 1}}}, r"unknown config key mixer\.params\.'foo'"),
        ({"learner": "fast"}, r"learner must be a mapping"),
    ],
)
def test_unknown_keys_are_named(data: dict, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        build_config(data)


@pytest.mark.parametrize(
    ("data", "match"),
    [
        ({"steps": "many"}, r"steps='many' must be an integer"),
        ({"steps": 0}, r"steps=0 is out of range: allowed >= 1"),
        ({"steps": 2.5}, r"steps=2.5 must be an integer"),
        ({"learner": {"lr": float("nan")}}, r"learner.lr=nan must be a finite number"),
        ({"learner": {"lr": -1.0}}, r"learner.lr=-1.0 is out of range: allowed \(0, inf\)"),
        ({"learner": {"gamma": 1.0}}, r"learner.gamma=1.0 is out of range: allowed \[0, 1\)"),
        ({"learner": {"optimizer": "sgd"}}, r"learner.optimizer='sgd' is not one of rmsprop, adam"),
        ({"learner": {"buffer_size": 4, "batch_size": 8}}, r"learner.buffer_size=4 is out of range: allowed >= 8"),
        ({"learner": {"double_q": "yes"}}, r"learner.double_q='yes' must be true or false"),
        ({"target": {"kind": "exact", "set": "tv", "rho": 1.5}}, r"target: TargetConfig.rho=1.5 is invalid"),
        ({"target": {"rho": float("inf")}}, r"target.rho=inf must be a finite number"),
        ({"mixer": {"name": "qmixx"}}, r"mixer.name: unknown mixer \(algo\) 'qmixx'"),
        ({"mixer": {"name": "qmix", "params": {"hypernet_layers": 5}}}, r"mixer.params.hypernet_layers=5"),
        ({"agent": {"arch": "gru", "history": 3}}, r"agent.history=3 applies to arch 'mlp' only"),
        ({"explore": {"eps_finish": 1.5}}, r"explore.eps_finish=1.5 is out of range: allowed \[0, 1\]"),
        ({"eval": {"set": "tv"}}, r"eval.set='tv' and eval.rho=None must be given together"),
        ({"eval": {"set": "tv", "rho": 3.0}}, r"eval.rho: rho=3.0 is out of range for set 'tv'"),
        ({"eval": {"set": "wasserstein", "rho": 0.1}}, r"eval.set='wasserstein' is not one of"),
        ({"learner": {"device": "tpu"}}, r"learner.device='tpu' must be"),
    ],
)
def test_invalid_values_name_key_value_and_range(data: dict, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        build_config(data)


def test_overrides_parse_as_yaml_and_apply() -> None:
    assert parse_override("learner.lr=1e-3") == ("learner.lr", "1e-3")
    assert parse_override("eval.set=null") == ("eval.set", None)
    assert parse_override("learner.double_q=false") == ("learner.double_q", False)
    with pytest.raises(ConfigError, match=r"must look like key\.sub=value"):
        parse_override("learner.lr")
    cfg = load_config(None, {"learner.lr": "1e-3", "mixer.name": "qtran", "mixer.params.nopt_coef": 1})
    assert cfg.learner.lr == 1e-3 and cfg.mixer.typed_params().nopt_coef == 1.0


def test_cli_flags_override_the_config_file(tmp_path: Path) -> None:
    args = _parser().parse_args(
        [
            "train",
            "--config",
            str(EXPERIMENTS / "tabular_qmix_tv.yaml"),
            "--algo",
            "vdn",
            "--set",
            "contamination",
            "--rho",
            "0.1",
            "--steps",
            "123",
            "--out",
            str(tmp_path / "r"),
            "--override",
            "learner.batch_size=8",
            "--override",
            "agent.hidden=7",
        ]
    )
    cfg = train_config(args)
    assert (cfg.mixer.name, cfg.target.kind, cfg.target.set, cfg.target.rho) == ("vdn", "exact", "contamination", 0.1)
    assert (cfg.steps, cfg.learner.batch_size, cfg.agent.hidden, cfg.out) == (123, 8, 7, str(tmp_path / "r"))
    bad = _parser().parse_args(["train", "--override", "learner.nope=1"])
    with pytest.raises(ConfigError, match=r"unknown config key learner\.'nope'"):
        train_config(bad)


def test_epsilon_schedule_holds_then_anneals_linearly() -> None:
    ex = build_config({"explore": {"eps_start": 1.0, "eps_finish": 0.1, "eps_anneal_steps": 100}}).explore
    assert [ex.epsilon(t) for t in (0, 50, 100, 1000)] == pytest.approx([1.0, 0.55, 0.1, 0.1])
    held = build_config({"explore": {"eps_anneal_steps": 100, "eps_hold_steps": 40, "eps_finish": 0.1}}).explore
    assert [held.epsilon(t) for t in (0, 40, 90, 140, 500)] == pytest.approx([1.0, 1.0, 0.55, 0.1, 0.1])
    instant = build_config({"explore": {"eps_anneal_steps": 0, "eps_hold_steps": 10, "eps_finish": 0.2}}).explore
    assert (instant.epsilon(9), instant.epsilon(10)) == (1.0, 0.2)
