"""A sweep resolves each job once (issue 33 item 2): the JobSpec a worker receives carries the resolved config, its
key and the protocols, so running it reads no protocol file and builds no config; it survives pickling (process
pools, Ray); and a finished check given the key builds no config either."""

from __future__ import annotations

import pickle
import shutil
from pathlib import Path

import pytest

from drigm import protocol as protocol_mod
from drigm.jobs import run_job
from drigm.protocol import PROTOCOL_DIR
from drigm.results_store import is_finished
from drigm.sweep import job_spec, resolve


def _refuse(*args: object, **kwargs: object) -> None:
    raise AssertionError("a worker re-resolved its job")


def test_a_worker_runs_its_spec_without_reading_a_protocol_or_building_a_config(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    proto_file = tmp_path / "smoke.yaml"
    shutil.copy(PROTOCOL_DIR / "tabular-smoke.yaml", proto_file)
    r = resolve(proto_file, algos=["qmix"], targets=["none"], seeds=[3], scale="smoke")
    spec = pickle.loads(pickle.dumps(job_spec(r, 0, tmp_path, progress=False)))
    assert spec.config_key == r.keys[0] and Path(spec.config.out).parent.parent == tmp_path / "train"
    proto_file.unlink()  # a worker that reads its protocol again fails here
    monkeypatch.setattr(protocol_mod.Protocol, "job_config", _refuse)
    out = run_job(spec)
    path = Path(out["path"])
    assert path.is_file() and out["seed"] == 3
    proto = spec.protocols[0]
    assert is_finished(path, proto, spec.job, key=spec.config_key)
    assert not is_finished(path, proto, spec.job, key="another-config")
