"""The seed paper's released agent networks as one drigm greedy policy (no second network class).

The paper (its ``networks/networks.py`` ``QNetwork``) keeps one network per agent, saved as a torch state_dict
``agent_{i}_q_network.pt`` in a run's ``network_parameter`` folder: fc1 = Linear(obs_dim + n_actions, H) over
[observation, one-hot previous action] -> ReLU -> LSTM(H, H) over an 8-step window from a zero state -> ReLU on
its last output -> fc_out = Linear(H, n_actions). That is drigm's window LSTM agent
(:class:`~drigm.window_agents.WindowController` with ``arch=lstm, shared=False, last_action=True,
agent_id=False, pad_action=0``), so :func:`load_paper_agents` only maps the weights:

- ``fc_obs[g]`` = fc1's observation columns (transposed: StackedLinear computes ``x @ W + b``), its bias fc1's;
- ``act_table`` row ``g * A + a`` = fc1's column of one-hot action a (the pad row stays zero, and unused);
- ``rnn_ih[g]`` / ``rnn_hh[g]`` = the LSTM's ``weight_ih_l0`` / ``weight_hh_l0`` transposed (gate order i, f, g,
  o in both), with ``bias_ih_l0`` / ``bias_hh_l0``;
- ``out[g]`` = fc_out transposed, with its bias.

Guarantees: every file is read with ``torch.load(weights_only=True)`` (no code runs); a missing directory or
file, a file that is not a state_dict of tensors, a missing or unexpected key, a shape that disagrees with the
others, or a non-finite weight raises :class:`PaperCheckpointError` (a ValueError) naming the file and the key
or shape; nothing half-loaded is returned. The loaded controller acts exactly as the paper's ``select_actions``
does: the window holds the last 8 observations with the previous actions aligned to them, action 0 as the
previous action before the first step, zero observations with action 0 before the episode, the LSTM over all
8 positions from a zero state, and greedy argmax (tests/test_paper_checkpoint.py checks this against an
independent nn.Linear + nn.LSTM forward pass).

:class:`PaperAgents` carries the controller in the shape that :func:`drigm.evaluation.evaluate_on` reads of a loaded
run (``env`` sizes, ``learner.controller``, ``device``), so the paper's networks are scored by drigm's own
EpisodeRunner on drigm's environments, seeds and scores, like any trained run.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from drigm.config import AgentConfig
from drigm.window_agents import WindowController

NETWORK_FOLDER = "network_parameter"
"""The folder of a paper run directory that holds the agent networks."""

FILE_PATTERN = "agent_{i}_q_network.pt"
"""The file name of agent i's network in that folder."""

PAPER_HISTORY = 8
"""The paper's window length (configs/config.py NETWORK_PARAMS history_len)."""

PAPER_KEYS = (
    "fc1.weight",
    "fc1.bias",
    "lstm.weight_ih_l0",
    "lstm.weight_hh_l0",
    "lstm.bias_ih_l0",
    "lstm.bias_hh_l0",
    "fc_out.weight",
    "fc_out.bias",
)
"""The keys of the paper's QNetwork state_dict, exactly."""


class PaperCheckpointError(ValueError):
    """A paper network file or folder that cannot be loaded as the paper's agents; the message names it."""


@dataclass(frozen=True)
class _Sizes:
    n_agents: int
    n_actions: int
    obs_dim: int
    state_dim: int = 0


@dataclass
class _Learner:
    controller: WindowController


@dataclass
class PaperAgents:
    """The paper's N agent networks loaded into one :class:`WindowController`, ready for greedy evaluation.

    ``env`` (sizes only), ``learner.controller`` and ``device`` are what :func:`drigm.evaluation.evaluate_on` reads of
    a loaded run; ``files`` are the state_dict files read, in agent order.
    """

    controller: WindowController
    device: torch.device
    directory: Path
    files: list[Path] = field(default_factory=list)

    @property
    def env(self) -> _Sizes:
        c = self.controller
        return _Sizes(c.n_agents, c.n_actions, c.obs_dim)

    @property
    def learner(self) -> _Learner:
        return _Learner(self.controller)


def paper_agent_config(hidden: int, history: int = PAPER_HISTORY) -> AgentConfig:
    """The drigm agent config of the paper's networks (the building protocols' ``paper`` preset agent)."""
    return AgentConfig(
        arch="lstm", hidden=hidden, history=history, last_action=True, shared=False, agent_id=False, pad_action=0
    )


def network_folder(directory: str | Path) -> Path:
    """The folder holding ``agent_{i}_q_network.pt``: `directory` itself, or its ``network_parameter``."""
    d = Path(directory)
    if not d.exists():
        raise PaperCheckpointError(f"paper agents: {str(d)!r} does not exist")
    if not d.is_dir():
        raise PaperCheckpointError(f"paper agents: {str(d)!r} is not a directory")
    sub = d / NETWORK_FOLDER
    if not (d / FILE_PATTERN.format(i=0)).exists() and sub.is_dir():
        return sub
    return d


def _read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    if not path.exists():
        raise PaperCheckpointError(f"paper agents: {str(path)!r} is missing")
    if not path.is_file():
        raise PaperCheckpointError(f"paper agents: {str(path)!r} is not a file")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # pickle, zip and weights_only errors alike: not a loadable torch file
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise PaperCheckpointError(
            f"paper agents: {str(path)!r} is not a torch state_dict file ({type(exc).__name__}: {first[:200]})"
        ) from None
    if not isinstance(obj, Mapping):
        raise PaperCheckpointError(
            f"paper agents: {str(path)!r} holds a {type(obj).__name__}, not a state_dict (a mapping of tensors)"
        )
    missing = [k for k in PAPER_KEYS if k not in obj]
    extra = sorted(str(k) for k in obj if k not in PAPER_KEYS)
    if missing or extra:
        raise PaperCheckpointError(
            f"paper agents: {str(path)!r} is not the paper's QNetwork state_dict: "
            + "; ".join(
                part
                for part in (
                    f"missing key(s) {missing}" if missing else "",
                    f"unexpected key(s) {extra}" if extra else "",
                )
                if part
            )
        )
    out: dict[str, torch.Tensor] = {}
    for k in PAPER_KEYS:
        v = obj[k]
        if not isinstance(v, torch.Tensor) or not v.is_floating_point():
            what = f"a {v.dtype} tensor" if isinstance(v, torch.Tensor) else f"a {type(v).__name__}"
            raise PaperCheckpointError(f"paper agents: {str(path)!r} key {k!r} is {what}, not a float tensor")
        if not bool(torch.isfinite(v).all()):
            raise PaperCheckpointError(f"paper agents: {str(path)!r} key {k!r} has non-finite values")
        out[k] = v.detach().to(torch.float32)
    return out


def _sizes_of(sd: Mapping[str, torch.Tensor], path: Path) -> tuple[int, int, int]:
    """(obs_dim, n_actions, hidden) implied by a state_dict (its biases and fc1's width)."""
    if sd["fc1.bias"].dim() != 1 or sd["fc_out.bias"].dim() != 1 or sd["fc1.weight"].dim() != 2:
        raise PaperCheckpointError(
            f"paper agents: {str(path)!r}: fc1.weight {tuple(sd['fc1.weight'].shape)}, fc1.bias "
            f"{tuple(sd['fc1.bias'].shape)}, fc_out.bias {tuple(sd['fc_out.bias'].shape)} are not a Linear's shapes"
        )
    hidden, n_actions = sd["fc1.bias"].shape[0], sd["fc_out.bias"].shape[0]
    return sd["fc1.weight"].shape[1] - n_actions, n_actions, hidden


def _check_shapes(sd: Mapping[str, torch.Tensor], path: Path, obs_dim: int, n_actions: int, hidden: int) -> None:
    H, A, O = hidden, n_actions, obs_dim
    want = {
        "fc1.weight": (H, O + A),
        "fc1.bias": (H,),
        "lstm.weight_ih_l0": (4 * H, H),
        "lstm.weight_hh_l0": (4 * H, H),
        "lstm.bias_ih_l0": (4 * H,),
        "lstm.bias_hh_l0": (4 * H,),
        "fc_out.weight": (A, H),
        "fc_out.bias": (A,),
    }
    for k, shape in want.items():
        if tuple(sd[k].shape) != shape:
            raise PaperCheckpointError(
                f"paper agents: {str(path)!r} key {k!r} has shape {tuple(sd[k].shape)}; expected {shape} "
                f"(obs_dim {O}, n_actions {A}, hidden {H})"
            )


def load_paper_agents(
    directory: str | Path,
    n_agents: int = 6,
    *,
    obs_dim: int | None = None,
    n_actions: int | None = None,
    hidden: int | None = None,
    history: int = PAPER_HISTORY,
    device: str | torch.device = "cpu",
) -> PaperAgents:
    """Load ``agent_{i}_q_network.pt`` (i < `n_agents`) from `directory` (a paper run directory or its
    ``network_parameter`` folder) into one :class:`WindowController` acting as the paper's agents.

    `obs_dim`, `n_actions`, `hidden` None take the sizes from agent 0's file (the paper's: 5, 200, 64); every
    file must have the same sizes, and given ones must match.
    Raises :class:`PaperCheckpointError` naming the folder, file, key or shape on anything else.
    """
    if isinstance(n_agents, bool) or not isinstance(n_agents, int) or n_agents < 1:
        raise PaperCheckpointError(f"paper agents: n_agents={n_agents!r} must be an integer >= 1")
    if isinstance(history, bool) or not isinstance(history, int) or history < 1:
        raise PaperCheckpointError(f"paper agents: history={history!r} must be an integer >= 1")
    folder = network_folder(directory)
    files = [folder / FILE_PATTERN.format(i=i) for i in range(n_agents)]
    missing = [f.name for f in files if not f.exists()]
    if missing:
        raise PaperCheckpointError(f"paper agents: {str(folder)!r} lacks {', '.join(missing)}")
    sds = [_read_state_dict(f) for f in files]
    O, A, H = _sizes_of(sds[0], files[0])
    for name, given, found in (("obs_dim", obs_dim, O), ("n_actions", n_actions, A), ("hidden", hidden, H)):
        if given is not None and given != found:
            raise PaperCheckpointError(
                f"paper agents: {str(files[0])!r} has {name} {found} (fc1.weight {tuple(sds[0]['fc1.weight'].shape)},"
                f" fc_out.bias {tuple(sds[0]['fc_out.bias'].shape)}); expected {given}"
            )
    if O < 1 or A < 1 or H < 1:
        raise PaperCheckpointError(
            f"paper agents: {str(files[0])!r}: fc1.weight {tuple(sds[0]['fc1.weight'].shape)} and fc_out.bias "
            f"{tuple(sds[0]['fc_out.bias'].shape)} leave obs_dim {O}, n_actions {A}, hidden {H}"
        )
    for sd, f in zip(sds, files, strict=True):
        _check_shapes(sd, f, O, A, H)
    ctrl = WindowController(n_agents, A, O, paper_agent_config(H, history))
    with torch.no_grad():
        assert ctrl.act_table is not None and ctrl.rnn_ih is not None and ctrl.rnn_hh is not None
        for g, sd in enumerate(sds):
            w1 = sd["fc1.weight"]
            ctrl.fc_obs.weight[g] = w1[:, :O].T
            ctrl.fc_obs.bias[g, 0] = sd["fc1.bias"]
            ctrl.act_table.table.weight[g * A : (g + 1) * A] = w1[:, O:].T
            ctrl.rnn_ih.weight[g] = sd["lstm.weight_ih_l0"].T
            ctrl.rnn_ih.bias[g, 0] = sd["lstm.bias_ih_l0"]
            ctrl.rnn_hh.weight[g] = sd["lstm.weight_hh_l0"].T
            ctrl.rnn_hh.bias[g, 0] = sd["lstm.bias_hh_l0"]
            ctrl.out.weight[g] = sd["fc_out.weight"].T
            ctrl.out.bias[g, 0] = sd["fc_out.bias"]
        ctrl.act_table.table.weight[ctrl.act_table.pad].zero_()
    dev = torch.device(device)
    ctrl = ctrl.to(dev).eval()
    return PaperAgents(ctrl, dev, folder, files)


def paper_agents_summary(agents: PaperAgents) -> dict[str, Any]:
    """A JSON-able description of loaded paper agents (folder, files, sizes)."""
    c = agents.controller
    return {
        "directory": str(agents.directory),
        "files": [f.name for f in agents.files],
        "n_agents": c.n_agents,
        "n_actions": c.n_actions,
        "obs_dim": c.obs_dim,
        "hidden": c.cfg.hidden,
        "history": c.history,
        "parameters": int(sum(p.numel() for p in c.parameters())),
    }
