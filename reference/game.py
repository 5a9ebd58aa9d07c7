"""The cooperative Markov game model, its `.npz` file contract, and named games.

The file format is specified in docs/game-format.md: keys ``P`` (S, n_1..n_N, S), ``R`` (S, n_1..n_N),
``gamma`` (), optional ``obs`` (N, S) int64 and ``initial`` (S,). Loading validates everything and
never renormalises.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from reference.atomic_io import atomic_write, describe_not_a_file
from reference.memory import MemoryBudgetError, check_fits

STOCHASTIC_TOL = 1e-8


class GameError(ValueError):
    """A game (or a file holding one) violates the docs/game-format.md contract."""


def _first_index(mask: np.ndarray) -> tuple[int, ...]:
    return tuple(int(i) for i in np.argwhere(mask)[0])


def check_finite(name: str, x: np.ndarray) -> None:
    """Raise GameError naming `name` and the first offending index if `x` has a NaN or an inf."""
    bad = ~np.isfinite(x)
    if bad.any():
        idx = _first_index(bad) if x.ndim else ()
        raise GameError(f"{name} has a non-finite value {x[idx]!r} at index {idx}")


def check_stochastic(name: str, P: np.ndarray, tol: float = STOCHASTIC_TOL) -> None:
    """Raise GameError unless every row (last axis) of `P` is a probability vector within `tol`."""
    check_finite(name, P)
    neg = P < 0
    if neg.any():
        idx = _first_index(neg)
        raise GameError(f"{name} has a negative entry {P[idx]!r} at index {idx}")
    sums = P.sum(axis=-1)
    off = np.abs(sums - 1.0) > tol
    if off.any():
        idx = _first_index(off)
        raise GameError(
            f"{name} row at index {idx} sums to {sums[idx]!r}, not 1 (tolerance {tol:g}); rows are never renormalised"
        )


@dataclass(frozen=True, eq=False)
class Game:
    """A validated cooperative Markov game with joint actions in C order.

    Guarantees after construction: P is row-stochastic within 1e-8 with no negative entry,
    R is finite with matching shape, 0 <= gamma < 1, obs (if given) indexes within [0, S).
    """

    P: np.ndarray
    R: np.ndarray
    gamma: float
    obs: np.ndarray | None = None
    initial: np.ndarray | None = None
    name: str = field(default="game", compare=False)

    def __post_init__(self) -> None:
        P = np.asarray(self.P, dtype=np.float64)
        R = np.asarray(self.R, dtype=np.float64)
        object.__setattr__(self, "P", P)
        object.__setattr__(self, "R", R)
        if P.ndim < 3:
            raise GameError(f"P must have shape (S, n_1, ..., n_N, S) with N >= 1; got shape {P.shape}")
        S = P.shape[0]
        if P.shape[-1] != S:
            raise GameError(f"P has shape {P.shape}: its first and last axes must both be S={S}")
        if S < 1 or any(n < 1 for n in P.shape[1:-1]):
            raise GameError(f"P has an empty axis: shape {P.shape}")
        check_stochastic("P", P)
        if R.shape != P.shape[:-1]:
            raise GameError(f"R has shape {R.shape}; expected {P.shape[:-1]} to match P {P.shape}")
        check_finite("R", R)
        g = np.asarray(self.gamma, dtype=np.float64)
        if g.shape != ():
            raise GameError(f"gamma must be a scalar; got shape {g.shape}")
        check_finite("gamma", g)
        if not 0.0 <= float(g) < 1.0:
            raise GameError(f"gamma={float(g)!r} is outside the allowed range [0, 1)")
        object.__setattr__(self, "gamma", float(g))
        if self.obs is not None:
            obs = np.asarray(self.obs)
            if obs.shape != (self.n_agents, S):
                raise GameError(f"obs has shape {obs.shape}; expected (N, S) = {(self.n_agents, S)}")
            if not np.issubdtype(obs.dtype, np.integer):
                raise GameError(f"obs must hold integers; got dtype {obs.dtype}")
            bad = (obs < 0) | (obs >= S)
            if bad.any():
                idx = _first_index(bad)
                raise GameError(f"obs has value {int(obs[idx])} at index {idx}, outside the range [0, {S})")
            object.__setattr__(self, "obs", obs.astype(np.int64))
        if self.initial is not None:
            init = np.asarray(self.initial, dtype=np.float64)
            if init.shape != (S,):
                raise GameError(f"initial has shape {init.shape}; expected (S,) = {(S,)}")
            check_stochastic("initial", init)
            object.__setattr__(self, "initial", init)
        P.setflags(write=False)
        R.setflags(write=False)

    # ----- shapes -------------------------------------------------------------------------------
    @property
    def n_states(self) -> int:
        return int(self.P.shape[0])

    @property
    def n_actions(self) -> tuple[int, ...]:
        """Per-agent action counts (n_1, ..., n_N)."""
        return tuple(int(n) for n in self.P.shape[1:-1])

    @property
    def n_agents(self) -> int:
        return len(self.n_actions)

    @property
    def n_joint(self) -> int:
        return int(np.prod(self.n_actions))

    @property
    def P_flat(self) -> np.ndarray:
        """P reshaped to (S, A, S) with joint actions flattened in C order (a view)."""
        return self.P.reshape(self.n_states, self.n_joint, self.n_states)

    @property
    def R_flat(self) -> np.ndarray:
        """R reshaped to (S, A) (a view)."""
        return self.R.reshape(self.n_states, self.n_joint)

    @property
    def observations(self) -> np.ndarray:
        """The (N, S) observation map; the identity map when the file gives none."""
        if self.obs is not None:
            return self.obs
        return np.tile(np.arange(self.n_states, dtype=np.int64), (self.n_agents, 1))

    @property
    def initial_distribution(self) -> np.ndarray:
        """The initial state distribution; uniform when the file gives none."""
        if self.initial is not None:
            return self.initial
        return np.full(self.n_states, 1.0 / self.n_states)

    def joint_index(self, actions: tuple[int, ...] | list[int] | np.ndarray) -> int:
        """Flat C-order index of a joint action, with a range check per agent."""
        acts = [int(a) for a in actions]
        if len(acts) != self.n_agents:
            raise GameError(f"joint action {acts} has {len(acts)} entries; the game has {self.n_agents} agents")
        for i, (a, n) in enumerate(zip(acts, self.n_actions, strict=True)):
            if not 0 <= a < n:
                raise GameError(f"action {a} of agent {i} is outside the range [0, {n})")
        return int(np.ravel_multi_index(tuple(acts), self.n_actions))

    def joint_action(self, flat: int) -> tuple[int, ...]:
        """Inverse of `joint_index`."""
        return tuple(int(a) for a in np.unravel_index(int(flat), self.n_actions))


# ----- files --------------------------------------------------------------------------------------
def save_game(game: Game, path: str | os.PathLike[str]) -> Path:
    """Write `game` to `path` as a game `.npz` (docs/game-format.md), atomically (temporary file, then rename).

    A path without the ``.npz`` suffix gets it (numpy's convention); a path that is an existing directory is refused
    (GameError) rather than written beside it as ``DIR.npz``."""
    path = Path(path)
    if path.is_dir():
        raise GameError(
            f"output path {str(path)!r} is a directory; give a file path such as {str(path / 'game.npz')!r}"
        )
    if path.suffix != ".npz":
        path = path.with_suffix(path.suffix + ".npz") if path.suffix else path.with_suffix(".npz")
    arrays: dict[str, np.ndarray] = {
        "P": np.asarray(game.P, dtype=np.float64),
        "R": np.asarray(game.R, dtype=np.float64),
        "gamma": np.asarray(game.gamma, dtype=np.float64),
    }
    if game.obs is not None:
        arrays["obs"] = np.asarray(game.obs, dtype=np.int64)
    if game.initial is not None:
        arrays["initial"] = np.asarray(game.initial, dtype=np.float64)
    return atomic_write(path, lambda fh: np.savez(fh, **arrays), make_parents=True)


def load_game(path: str | os.PathLike[str]) -> Game:
    """Load and validate a game `.npz` (docs/game-format.md); raise GameError naming the file and key on a violation.

    Refused with a message: a path that is not a regular file (missing, a directory, a symlink loop, a FIFO), a
    file that is not a zip archive (a ``.npy`` array, text), an archive whose member fails its CRC or cannot be
    read, an array stored as a pickle (object arrays are never unpickled), and every violation of docs/game-format.md.
    """
    path = Path(path)
    problem = describe_not_a_file(path, "game file")
    if problem is not None:
        raise GameError(problem)
    where = f"game file {str(path)!r}"
    try:
        data = np.load(path, allow_pickle=False)
    except ValueError as exc:  # numpy: neither a zip nor a .npy, so it would have to unpickle it
        raise GameError(
            f"{where} is not a readable .npz archive: it is neither a zip archive nor a .npy array, and numpy would "
            "have to unpickle it, which is never done (see docs/game-format.md)"
        ) from exc
    except Exception as exc:  # zipfile/OS errors all mean the same to a user
        raise GameError(f"{where} is not a readable .npz archive: {type(exc).__name__}: {exc}") from exc
    if not isinstance(data, np.lib.npyio.NpzFile):
        raise GameError(
            f"{where} holds a single {type(data).__name__} (a .npy file?), not a .npz archive with the keys "
            "P, R, gamma (and optionally obs, initial); write games with `python -m reference random|classic` or "
            "numpy.savez"
        )
    with data:
        for key in ("P", "R", "gamma"):
            if key not in data.files:
                raise GameError(f"{where} lacks the required key {key!r} (it holds {data.files})")
        arrays = {}
        for k in data.files:
            try:
                arrays[k] = data[k]
            except ValueError as exc:
                if "allow_pickle" in str(exc) or "pickle" in str(exc).lower():
                    raise GameError(
                        f"key {k!r} of {where} is a pickled object array; game files must hold plain numeric arrays "
                        "(pickles are never loaded)"
                    ) from exc
                raise GameError(f"key {k!r} of {where} cannot be read as an array: {exc}") from exc
            except Exception as exc:  # BadZipFile (CRC mismatch), truncated member, OS error
                raise GameError(f"key {k!r} of {where} is corrupt or unreadable: {type(exc).__name__}: {exc}") from exc
    for key, dtype in (("P", np.floating), ("R", np.floating), ("gamma", np.floating)):
        if not (np.issubdtype(arrays[key].dtype, dtype) or np.issubdtype(arrays[key].dtype, np.integer)):
            raise GameError(f"{where}: key {key!r} must be numeric (float or int); got dtype {arrays[key].dtype}")
    try:
        return Game(
            P=arrays["P"],
            R=arrays["R"],
            gamma=arrays["gamma"],
            obs=arrays.get("obs"),
            initial=arrays.get("initial"),
            name=path.stem,
        )
    except GameError as exc:
        raise GameError(f"{where}: {exc}") from exc


# ----- generators and named games -----------------------------------------------------------------
def random_game(
    n_states: int,
    n_actions: tuple[int, ...] | list[int],
    seed: int = 0,
    sparsity: float = 0.0,
    gamma: float = 0.9,
    reward_range: tuple[float, float] = (-1.0, 1.0),
) -> Game:
    """A random game: Dirichlet(1) kernel rows with a `sparsity` fraction of successors zeroed.

    Each row keeps at least one successor, so `sparsity` in [0, 1) and the kernel stays stochastic.
    Rewards are uniform on `reward_range`. The same arguments always give the same game.
    """
    if n_states < 1:
        raise GameError(f"--states must be >= 1; got {n_states}")
    acts = tuple(int(n) for n in n_actions)
    if not acts or any(n < 1 for n in acts):
        raise GameError(f"--actions must be a non-empty list of positive integers; got {list(acts)}")
    if not 0.0 <= sparsity < 1.0:
        raise GameError(f"--sparsity={sparsity!r} is outside the allowed range [0, 1)")
    lo, hi = reward_range
    if not lo <= hi:
        raise GameError(f"reward_range {reward_range} must satisfy low <= high")
    shape = (n_states, *acts)
    joint = math.prod(acts)
    # the kernel (S x A x S float64, plus the sparsity mask) and the rewards, before anything is allocated
    nbytes = n_states * joint * (n_states * (8 + (1 if sparsity > 0 else 0)) + 8)
    try:
        check_fits(f"a random game of {n_states} states and {joint} joint actions (--states, --actions)", nbytes)
    except MemoryBudgetError as exc:
        raise GameError(str(exc)) from None
    rng = np.random.default_rng(seed)
    P = rng.dirichlet(np.ones(n_states), size=shape)
    if sparsity > 0 and n_states > 1:
        keep = rng.random(P.shape) >= sparsity
        rows = P.reshape(-1, n_states)
        keep = keep.reshape(-1, n_states)
        empty = ~keep.any(axis=1)
        keep[empty, rng.integers(0, n_states, size=int(empty.sum()))] = True
        rows = np.where(keep, rows, 0.0)
        rows /= rows.sum(axis=1, keepdims=True)  # generator output, not user input
        P = rows.reshape(P.shape)
    R = rng.uniform(lo, hi, size=shape)
    return Game(P=P, R=R, gamma=gamma, name=f"random_s{n_states}_a{'x'.join(map(str, acts))}_seed{seed}")


def _single_state(payoff: np.ndarray, gamma: float, name: str) -> Game:
    payoff = np.asarray(payoff, dtype=np.float64)
    P = np.ones((1, *payoff.shape, 1))
    return Game(P=P, R=payoff[None], gamma=gamma, name=name)


def climbing_game(gamma: float = 0.0) -> Game:
    """Claus & Boutilier's climbing game (one state, 2 agents x 3 actions); optimum (0, 0) pays 11."""
    payoff = np.array([[11.0, -30.0, 0.0], [-30.0, 7.0, 6.0], [0.0, 0.0, 5.0]])
    return _single_state(payoff, gamma, "climbing")


def penalty_game(k: float = -100.0, gamma: float = 0.0) -> Game:
    """The penalty game (one state, 2 agents x 3 actions): optima (0,0) and (2,2) pay 10; mis-coordination k."""
    if k > 0:
        raise GameError(f"penalty k={k!r} must be <= 0")
    payoff = np.array([[10.0, 0.0, k], [0.0, 2.0, 0.0], [k, 0.0, 10.0]])
    return _single_state(payoff, gamma, "penalty")


def robust_vs_nominal_game(gamma: float = 0.8) -> Game:
    """A two-agent, four-state game whose nominal optimum is not robust-optimal.

    State 0 decides. Joint action (0,0) is safe: it pays 0.5 and stays. (1,1) is risky: it pays 0
    and enters a corridor (state 3), from which the good state 1 (pays 4) follows with probability
    0.8 and the trap 2 (pays -4) with 0.2; both return to 0. Mis-coordinated actions pay -1 and stay.
    With gamma = 0.8 the nominal greedy action is (1,1), but at contamination 0.2, tv 0.2, kl 0.5 or
    chi2 0.5 the robust-optimal action is (0,0) and the nominal greedy policy loses more than 1%
    of the robust value in state 0 (checked in the tests).
    """
    S = 4
    P = np.zeros((S, 2, 2, S))
    R = np.zeros((S, 2, 2))
    P[0, :, :, 0] = 1.0
    R[0] = -1.0
    R[0, 0, 0] = 0.5
    P[0, 1, 1] = [0.0, 0.0, 0.0, 1.0]
    R[0, 1, 1] = 0.0
    P[3, :, :] = [0.0, 0.8, 0.2, 0.0]
    P[1, :, :, 0] = 1.0
    R[1] = 4.0
    P[2, :, :, 0] = 1.0
    R[2] = -4.0
    return Game(P=P, R=R, gamma=gamma, name="robust_vs_nominal")


def three_horizons_game(gamma: float = 0.8) -> Game:
    """A two-agent, four-state game whose robust optimum is a *middle* option, for radius-sensitive gates.

    Both agents have 3 actions. In state 0 agent 0 picks a horizon: option 0 pays -4 now and stays in 0;
    option 1 pays -8 and moves to state 1, which pays 5.6 and returns to 0; option 2 pays -8 and moves to
    state 2 (pays -8), then state 3 (pays 17), then back to 0. In states 1-3 agent 0's action does not matter.
    Agent 1 earns +1 in every state s for action s mod 3 (0 otherwise), whatever agent 0 does. Transitions are
    deterministic and depend on agent 0 only, and the reward is a sum of one term per agent, so Q*_rob is
    additive in the two agents' actions for every uncertainty set: VDN and QMIX can represent it exactly.

    Under contamination or tv (identical on deterministic transitions) the robust values are those of nominal
    play with the discount gamma (1 - rho), shifted by a constant; so more pessimism favours shorter horizons. At
    gamma = 0.8 the robust optimum in state 0 is option 2 for rho <= 0.12 (nominal included), option 1 for
    0.13 <= rho <= 0.47 (so at the gates' rho = 0.3), and option 0 for rho >= 0.48 (so at the doubled 0.6), each
    winning by about 0.9 at rho = 0, 0.3 and 0.6 (checked in the tests). The paper's contamination shortcut keeps
    option 1 but its values are 5.8 above Q*_rob at rho = 0.3.
    """
    S = 4
    P = np.zeros((S, 3, 3, S))
    R = np.zeros((S, 3, 3))
    P[0, 0, :, 0] = 1.0
    P[0, 1, :, 1] = 1.0
    P[0, 2, :, 2] = 1.0
    R[0, 0, :] = -4.0
    R[0, 1:, :] = -8.0
    P[1, :, :, 0] = 1.0
    R[1] = 5.6
    P[2, :, :, 3] = 1.0
    R[2] = -8.0
    P[3, :, :, 0] = 1.0
    R[3] = 17.0
    for s in range(S):
        R[s, :, s % 3] += 1.0
    return Game(P=P, R=R, gamma=gamma, name="three_horizons")


def additive_control_game(gamma: float = 0.8) -> Game:
    """A two-agent (2 actions each), three-state game with stochastic transitions and an additive Q*_rob.

    Agent 0's action alone sets the (stochastic) next-state distribution and the reward is a sum of one term per
    agent, so Q*_rob(s, a_0, a_1) = f(s, a_0) + g(s, a_1) for every uncertainty set and radius: VDN, QMIX and
    QTRAN can all represent it, and the robust terms (contamination's min, tv's quantile, kl's soft-min) all
    matter because next states are random. Used by the exact-expectation harness (drigm.exact_harness).
    """
    S = 3
    P = np.zeros((S, 2, 2, S))
    P[0, 0, :] = [0.1, 0.6, 0.3]
    P[0, 1, :] = [0.0, 0.2, 0.8]
    P[1, 0, :] = [0.5, 0.5, 0.0]
    P[1, 1, :] = [0.2, 0.0, 0.8]
    P[2, 0, :] = [0.7, 0.0, 0.3]
    P[2, 1, :] = [0.3, 0.3, 0.4]
    r0 = np.array([[1.0, 0.4], [2.0, -0.5], [-1.0, 0.3]])
    r1 = np.array([[0.2, -0.3], [0.0, 0.5], [0.6, -0.2]])
    R = r0[:, :, None] + r1[:, None, :]
    return Game(P=P, R=R, gamma=gamma, name="additive_control")


CLASSIC_GAMES = {
    "additive_control": additive_control_game,
    "climbing": climbing_game,
    "penalty": penalty_game,
    "robust_vs_nominal": robust_vs_nominal_game,
    "three_horizons": three_horizons_game,
}
