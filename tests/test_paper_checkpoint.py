"""The seed paper's released agent networks as a drigm policy (drigm/paper_checkpoint.py, ``drigm evaluate
--paper-agents``), on synthetic checkpoints of the paper's layout (no download, no dependency on its code).

(a) The loaded WindowController, acting step by step as drigm's runner calls it, gives the utilities of an
independent reference (nn.Linear + nn.LSTM + ReLU + nn.Linear loaded from the same state_dict) on the padded
windows that the paper's ``select_actions`` builds; (b) bad folders and files are refused by name; (c) the CLI
scores such networks end to end on the building environment.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import require_extra
from torch import nn

from drigm.paper_checkpoint import PAPER_KEYS, PaperCheckpointError, load_paper_agents

N_AGENTS, OBS, ACTIONS, HIDDEN, HISTORY = 6, 3, 7, 16, 8
ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def one_thread() -> Iterator[None]:
    """Tiny batch-1 forward passes: extra intra-op threads only contend on a busy machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


class Reference(nn.Module):
    """The paper's per-agent network, written here from its description (keys fc1, lstm, fc_out)."""

    def __init__(self, obs_dim: int, n_actions: int, hidden: int) -> None:
        super().__init__()
        self.n_actions = n_actions
        self.fc1 = nn.Linear(obs_dim + n_actions, hidden)
        self.lstm = nn.LSTM(hidden, hidden, batch_first=True)
        self.fc_out = nn.Linear(hidden, n_actions)

    def forward(self, obs_seq: torch.Tensor, act_seq: torch.Tensor) -> torch.Tensor:
        """obs (1, h, O), previous actions (1, h) int -> utilities (1, A), from a zero LSTM state."""
        x = torch.cat([obs_seq, nn.functional.one_hot(act_seq, self.n_actions).float()], dim=-1)
        out, _ = self.lstm(torch.relu(self.fc1(x)))
        return self.fc_out(torch.relu(out[:, -1]))


def write_checkpoint(
    folder: Path, n_agents: int = N_AGENTS, obs_dim: int = OBS, n_actions: int = ACTIONS, hidden: int = HIDDEN
) -> list[Reference]:
    """Random paper-layout networks saved as agent_{i}_q_network.pt in `folder`; returns them."""
    folder.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(1234)
    nets = []
    for i in range(n_agents):
        net = Reference(obs_dim, n_actions, hidden)
        with torch.no_grad():
            for p in net.parameters():  # larger than the default init, so that the LSTM's gates saturate unevenly
                p.mul_(3.0)
        torch.save(net.state_dict(), folder / f"agent_{i}_q_network.pt")
        nets.append(net.eval())
    return nets


def padded_window(history: list, pad: object, h: int = HISTORY) -> list:
    """The last h entries of `history`, left-padded with `pad` (the paper's select_actions)."""
    return [pad] * (h - len(history)) + history[-h:]


def test_utilities_equal_the_reference_on_padded_windows(tmp_path: Path) -> None:
    nets = write_checkpoint(tmp_path / "network_parameter")
    agents = load_paper_agents(tmp_path)  # the run directory: its network_parameter folder is found
    ctrl = agents.controller
    assert (ctrl.n_agents, ctrl.obs_dim, ctrl.n_actions, ctrl.cfg.hidden) == (N_AGENTS, OBS, ACTIONS, HIDDEN)
    rng = np.random.default_rng(0)
    T = 11
    obs = rng.normal(size=(T, N_AGENTS, OBS)).astype(np.float32) * 2.0
    acts = rng.integers(0, ACTIONS, size=(T, N_AGENTS))
    # the paper's histories: obs [o_0], previous actions [0] (action 0 before the first step); after step t,
    # o_{t+1} and a_t are appended together and both trimmed to the window
    obs_hist: list[list[np.ndarray]] = [[obs[0, i]] for i in range(N_AGENTS)]
    act_hist: list[list[int]] = [[0] for _ in range(N_AGENTS)]
    memory = ctrl.init_memory(1)
    last = torch.full((1, N_AGENTS), -1, dtype=torch.int64)  # drigm's runner: -1 before the first step
    worst = 0.0
    with torch.no_grad():
        for t in range(T):
            q, memory = ctrl.act(torch.as_tensor(obs[t]).unsqueeze(0), last, memory)
            for i, net in enumerate(nets):
                o = torch.as_tensor(np.stack(padded_window(obs_hist[i], np.zeros(OBS, np.float32)))).unsqueeze(0)
                a = torch.as_tensor(padded_window(act_hist[i], 0)).unsqueeze(0)
                ref = net(o, a)[0]
                torch.testing.assert_close(q[0, i], ref, rtol=1e-5, atol=1e-5, msg=f"step {t}, agent {i}")
                assert int(q[0, i].argmax()) == int(ref.argmax())
                worst = max(worst, float((q[0, i] - ref).abs().max()))
            last = torch.as_tensor(acts[t]).unsqueeze(0)
            if t + 1 < T:
                for i in range(N_AGENTS):
                    obs_hist[i] = (obs_hist[i] + [obs[t + 1, i]])[-HISTORY:]
                    act_hist[i] = (act_hist[i] + [int(acts[t, i])])[-HISTORY:]
    assert worst < 1e-5


def test_the_padding_matters(tmp_path: Path) -> None:
    """A guard against a vacuous (a): skipping the padded positions would give other utilities."""
    nets = write_checkpoint(tmp_path)
    ctrl = load_paper_agents(tmp_path).controller
    o0 = torch.randn(1, N_AGENTS, OBS)
    with torch.no_grad():
        q, _ = ctrl.act(o0, torch.full((1, N_AGENTS), -1), ctrl.init_memory(1))
        unpadded = nets[0](o0[:, 0:1], torch.zeros(1, 1, dtype=torch.int64))[0]
    assert float((q[0, 0] - unpadded).abs().max()) > 1e-3


def _expect(folder: Path, *needles: str, **kwargs: object) -> None:
    with pytest.raises(PaperCheckpointError) as info:
        load_paper_agents(folder, **kwargs)  # type: ignore[arg-type]
    for needle in needles:
        assert needle in str(info.value), (needle, str(info.value))


def test_bad_folders_and_files_are_refused_by_name(tmp_path: Path) -> None:
    _expect(tmp_path / "nowhere", "nowhere", "does not exist")
    (tmp_path / "a_file").write_text("x")
    _expect(tmp_path / "a_file", "a_file", "not a directory")

    missing = tmp_path / "missing"
    write_checkpoint(missing)
    (missing / "agent_3_q_network.pt").unlink()
    _expect(missing, "agent_3_q_network.pt", "lacks")

    key = tmp_path / "key"
    write_checkpoint(key)
    sd = torch.load(key / "agent_2_q_network.pt", weights_only=True)
    sd["fc_in.weight"] = sd.pop("fc1.weight")
    torch.save(sd, key / "agent_2_q_network.pt")
    _expect(key, "agent_2_q_network.pt", "fc1.weight", "fc_in.weight")

    shape = tmp_path / "shape"
    write_checkpoint(shape)
    sd = torch.load(shape / "agent_4_q_network.pt", weights_only=True)
    sd["lstm.weight_hh_l0"] = torch.zeros(4 * HIDDEN, HIDDEN + 1)
    torch.save(sd, shape / "agent_4_q_network.pt")
    _expect(shape, "agent_4_q_network.pt", "lstm.weight_hh_l0", str((4 * HIDDEN, HIDDEN + 1)))

    sizes = tmp_path / "sizes"
    write_checkpoint(sizes)
    _expect(sizes, "agent_0_q_network.pt", "n_actions 7", "expected 200", n_actions=200)

    not_sd = tmp_path / "not_sd"
    write_checkpoint(not_sd)
    torch.save([torch.zeros(3)], not_sd / "agent_1_q_network.pt")
    _expect(not_sd, "agent_1_q_network.pt", "not a state_dict")

    garbage = tmp_path / "garbage"
    write_checkpoint(garbage)
    (garbage / "agent_5_q_network.pt").write_bytes(b"definitely not a torch file")
    _expect(garbage, "agent_5_q_network.pt", "not a torch state_dict file")

    nan = tmp_path / "nan"
    write_checkpoint(nan)
    sd = torch.load(nan / "agent_0_q_network.pt", weights_only=True)
    sd["fc_out.bias"][3] = float("nan")
    torch.save(sd, nan / "agent_0_q_network.pt")
    _expect(nan, "agent_0_q_network.pt", "fc_out.bias", "non-finite")
    assert set(PAPER_KEYS) == set(Reference(OBS, ACTIONS, HIDDEN).state_dict())


def test_cli_scores_paper_agents_on_the_building(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    require_extra("sustaingym", "sustaingym")
    from drigm.cli import main
    from drigm.evaluate import evaluate_paper_agents
    from drigm.protocol import load_protocol

    write_checkpoint(tmp_path / "run" / "network_parameter", obs_dim=5, n_actions=200, hidden=8)
    short = evaluate_paper_agents(
        tmp_path / "run", "building:Tucson", "26,25,26", None, "cpu", "building-paper-seasonal", {"episode_limit": 6}
    )
    assert short["seeds"] == [0, 1, 2] and short["lengths"] == [6, 6, 6]
    assert short["returns"][0] == short["returns"][2]  # day 26 twice: the same greedy episode
    score = load_protocol("building-paper-seasonal").score
    assert score is not None and short["score"] == [score(r) for r in short["returns"]]
    assert short["paper_agents"]["hidden"] == 8 and short["t_env"] is None

    argv = ["evaluate", "--paper-agents", str(tmp_path / "run"), "--env", "building:NewYork", "--days", "26"]
    assert main([*argv, "--score-from", "building-paper-climate", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["episodes"] == 1 and out["lengths"] == [288] and out["env"]["name"] == "building:NewYork"
    assert np.isfinite(out["mean_score"])

    assert main(["evaluate", "--paper-agents", str(tmp_path / "nowhere")]) == 2
    assert "nowhere" in capsys.readouterr().err
    (tmp_path / "small").mkdir()
    write_checkpoint(tmp_path / "small", n_agents=6, obs_dim=5, n_actions=7)
    assert main(["evaluate", "--paper-agents", str(tmp_path / "small"), "--days", "26"]) == 2
    err = capsys.readouterr().err
    assert "n_actions 7" in err and "expected 200" in err and "Traceback" not in err
    assert main(["evaluate", "--paper-agents", str(tmp_path / "run"), str(tmp_path)]) == 2
    assert "exactly one" in capsys.readouterr().err


def test_paper_checkpoints_script_scores_a_synthetic_clone_and_resumes(tmp_path: Path) -> None:
    """The script finds the paper's run directories, writes one result per (net, seed, day set), skips finished
    ones when rerun, records what is missing, and writes the summary that the README's building table reads."""
    require_extra("sustaingym", "sustaingym")
    sys.path.insert(0, str(ROOT / "experiments"))
    try:
        import paper_checkpoints as pc
    finally:
        sys.path.remove(str(ROOT / "experiments"))
    repo, out = tmp_path / "paper", tmp_path / "out"
    run = repo / "results_seeds_0" / "robust_qmix_rho_0.0_20250101_000000"
    write_checkpoint(run / "network_parameter", obs_dim=5, n_actions=200, hidden=8)
    (repo / "results_seeds_0" / "robust_qmix_g_rho_0.2_20250101_000000").mkdir(parents=True)  # no networks
    args = [str(repo), "--nets", "qmix,qmix-tv-0.2", "--seeds", "0", "--day-sets", "building-seasonal"]
    assert pc.main([*args, "--out", str(out)]) == 0
    path = out / "qmix" / "seed-0" / "building-seasonal.json"
    result = json.loads(path.read_text())
    test = result["tests"]["Tucson (days 200-364)"]
    assert len(test["returns"]) == len(result["test_seeds"]) > 0
    missing = json.loads((out / "missing.json").read_text())
    assert any("qmix-tv-0.2 seed 0" in m and "lacks agent_0_q_network.pt" in m for m in missing)
    summary = json.loads((out / "summary.json").read_text())
    held = summary["methods"]["qmix-none"]["held-out-tucson"]
    assert held["values"] == [pytest.approx(test["mean_score"])] and held["seeds"] == [0]
    assert "qmix-paper-tv" not in summary["methods"]
    stamp = path.stat().st_mtime_ns
    assert pc.main([*args, "--out", str(out)]) == 0  # rerun: the finished result is kept, not replayed
    assert path.stat().st_mtime_ns == stamp
