"""`drigm report` and what checks a config or a protocol run without torch; the mixers' two registries agree.

Each torch check runs in a fresh interpreter (this test process has torch loaded by other tests) and reports
``sys.modules`` after the work, and which drigm modules were on the stack when torch was first imported.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from drigm.config import ConfigError, build_config

ROOT = Path(__file__).resolve().parents[1]

# Records the drigm modules on the stack (outermost first) when torch is first imported, then lets it import.
_PROBE = """
import json, sys

class _Probe:
    chain = None

    def find_spec(self, name, path=None, target=None):
        if name == "torch" and _Probe.chain is None:
            f, chain = sys._getframe(1), []
            while f is not None:
                mod = f.f_globals.get("__name__", "")
                if mod.startswith("drigm") and (not chain or chain[0] != mod):
                    chain.insert(0, mod)
                f = f.f_back
            _Probe.chain = chain
        return None

sys.meta_path.insert(0, _Probe())
"""

_REPORT = """
def _emit(extra):
    torch = sorted(m for m in sys.modules if m == "torch" or m.startswith("torch."))
    print(json.dumps({"torch": torch[:5], "chain": _Probe.chain, **extra}))
"""


def run_probe(body: str, tmp_path: Path) -> dict[str, Any]:
    """Run `body` (which must call ``_emit({...})``) in a fresh interpreter at the repository root; its JSON."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "MPLBACKEND": "Agg"}
    proc = subprocess.run(
        [sys.executable, "-c", _PROBE + _REPORT + body],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_config_and_protocol_load_build_and_save_without_torch(tmp_path: Path) -> None:
    out = run_probe(
        f"""
import drigm.config, drigm.protocol, drigm.stats, drigm.rho_curves, drigm.markdown
from drigm.config import build_config, save_config
from drigm.protocol import load_protocol
proto = load_protocol("building-paper-seasonal", "full", preset="paper")
jobs = proto.jobs(proto.algos, proto.targets, proto.sets, [0])
cfg = proto.job_config(jobs[0])
save_config(cfg, {str(tmp_path / "deep" / "config.yaml")!r})
qtran = build_config({{"mixer": {{"name": "qtran", "params": {{"nopt_coef": 1.0}}}},
                      "target": {{"kind": "exact", "set": "tv", "rho": 0.2}}}})
_emit({{"jobs": len(jobs), "mixer": qtran.mixer.params, "saved": drigm.config.load_yaml(
    {str(tmp_path / "deep" / "config.yaml")!r})["mixer"]["name"]}})
""",
        tmp_path,
    )
    assert out["jobs"] >= 1 and out["saved"] in ("qmix", "vdn", "qtran")
    assert out["mixer"] == {"hidden": 64, "opt_coef": 1.0, "nopt_coef": 1.0}  # typed Params, defaults filled in
    assert out["torch"] == [], f"torch imported via {out['chain']}"


def test_drigm_report_runs_without_torch(tmp_path: Path) -> None:
    """The report CLI on committed runs writes its report and imports no torch (issue 33 item 2)."""
    out = run_probe(
        f"""
import drigm.report
from drigm.cli import report_main
rc = report_main(["building-paper-seasonal", "--preset", "paper", "--results-root", {str(tmp_path)!r}])
_emit({{"rc": rc}})
""",
        tmp_path,
    )
    assert out["rc"] in (0, 1)  # 1: some requested runs are missing, which the committed sweep has
    assert (tmp_path / "building-paper-seasonal" / "paper" / "results.md").is_file()
    assert out["torch"] == [], f"torch imported via {out['chain']}"


def test_the_mixer_registries_name_the_same_mixers_with_the_same_params() -> None:
    from drigm.mixer_params import MIXER_PARAMS
    from drigm.mixers import MIXERS

    assert {"vdn", "qmix", "qtran"} <= set(MIXERS)
    assert {name: cls.Params for name, cls in MIXERS.items()} == MIXER_PARAMS


def test_register_mixer_keeps_the_registries_in_step_and_refuses_other_params() -> None:
    from drigm.mixer_params import MIXER_PARAMS, MixerError, NoParams, QMixParams, register_params
    from drigm.mixers import MIXERS, Mixer, register_mixer, unregister_mixer

    @dataclass(frozen=True)
    class WidthParams:
        width: int = 3

        def validate(self) -> None:
            """Nothing to check."""

    try:

        @register_mixer("width-test")
        class Width(Mixer):
            Params = WidthParams

        assert MIXERS["width-test"] is Width and MIXER_PARAMS["width-test"] is WidthParams
        assert build_config({"mixer": {"name": "width-test", "params": {"width": 5}}}).mixer.params == {"width": 5}
        register_params("params-test", QMixParams)
        with pytest.raises(MixerError, match="takes QMixParams"):

            @register_mixer("params-test")
            class Other(Mixer):
                Params = NoParams

        assert "params-test" not in MIXERS  # refused before either registry changed
    finally:
        unregister_mixer("width-test")
        unregister_mixer("params-test")
    assert "width-test" not in MIXERS and "width-test" not in MIXER_PARAMS and "params-test" not in MIXER_PARAMS
    with pytest.raises(ConfigError, match=r"unknown mixer \(algo\) 'width-test'; registered mixers: qmix, qtran, vdn"):
        build_config({"mixer": {"name": "width-test"}})


def test_the_torch_free_homes_are_re_exported_where_the_names_were() -> None:
    import drigm.estimator_config
    import drigm.mixer_params
    import drigm.mixers
    import drigm.reward_model
    import drigm.target_config
    import drigm.targets

    for name in ("MixerError", "NoParams", "QMixParams", "QTranParams"):
        assert getattr(drigm.mixers, name) is getattr(drigm.mixer_params, name)
    for name in ("TargetConfig", "KINDS", "SETS", "PAPER_SETS", "M_HAT_MODES"):
        assert getattr(drigm.targets, name) is getattr(drigm.target_config, name)
    for name in ("EstimatorConfig", "estimator_config"):
        assert getattr(drigm.reward_model, name) is getattr(drigm.estimator_config, name)
