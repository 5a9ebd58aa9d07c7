"""Hypothesis strategies for cooperative robust Markov games and support-function inputs.

Coverage (docs/theory.md sections 2-4): S in 1..8, N in 1..3, n_i in 1..4; dense, sparse, deterministic and
near-degenerate kernels; negative, positive and mixed rewards; gamma in [0, 0.99] with both ends; rho over
each set's range with its ends; and structured families:

- ``random``: independent kernel and rewards;
- ``additive``: Q*_rob = sum_i q_i(s, a_i) by construction (R = Q* - gamma sigma(max Q*) under the case's set);
- ``agent0``: transitions depend on agent 0's action only and rewards are additive, so the robust operator
  maps additive tables to additive tables;
- ``split``: ``agent0`` where in each state one agent (its owner) alone changes the reward by its action, so
  the agents' values vary across states in different places: where per-agent robustification misleads;
- ``gamble``: ``split`` with a decision state 0 where agent 0's action 0 has one successor (safe) and its
  other actions spread over all outcome states (dense rows), which lead back to 0 and may differ in reward
  by more than the stakes at the decision state (the regime where the choice between risks matters);
- ``hedge``: ``gamble``'s kernel with the outcome states owned by the agents in turn and the owners' action
  spreads there widened (HEDGE_WIDEN), so the agents' greedy values peak in different outcomes (a hedge); built
  backwards like ``additive`` (Q*_rob additive by construction), so only the placement of sigma can mislead;
- ``monotone``: Q*_rob = h(sum_i w_i q_i) with h strictly increasing, by the same construction;
- ``static-monotone``: action-independent transitions and rewards h(sum_i w_i q_i);
- ``tied``: Q*_rob with at least two optimal joint actions per state that differ in two agents.

Small arrays are drawn value by value (so Hypothesis shrinks them to readable games); large ones are drawn
from a numpy generator seeded by Hypothesis (so sizes stay cheap to generate).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
from hypothesis import strategies as st

from reference.game import Game
from reference.sets import SPECS, UncertaintySet, make_set

BALL_SETS: tuple[str, ...] = tuple(name for name, spec in SPECS.items() if spec.is_ball)
ALL_SETS: tuple[str, ...] = (*BALL_SETS, *(name for name, spec in SPECS.items() if not spec.is_ball))
KERNEL_KINDS: tuple[str, ...] = ("dense", "sparse", "deterministic", "near-degenerate")
REWARD_SIGNS: tuple[str, ...] = ("mixed", "negative", "positive")
FAMILIES: tuple[str, ...] = ("random", "additive", "agent0", "split", "gamble", "monotone", "static-monotone", "tied")
SEARCH_FAMILIES: tuple[str, ...] = ("hedge",)
"""Families built for one counterexample search (``hedge``: C3), kept out of FAMILIES so that the general
properties keep their draws."""
FACTORISABLE: tuple[str, ...] = ("additive", "agent0", "split", "gamble")
MONOTONE_MIXABLE: tuple[str, ...] = ("additive", "agent0", "split", "gamble", "monotone", "static-monotone")
REDUCIBLE: tuple[str, ...] = ("random", "agent0", "split")
HEDGE_WIDEN = 6.0
"""How much the hedge family widens each outcome owner's action spread (x3 gave C3 in 15% of draws, x6 in 18%)."""

#: the finite upper end used for sets whose rho range is unbounded (kl, chi2) and for the kl-penalty beta
RHO_TOP: dict[str, float] = {name: spec.test_top for name, spec in SPECS.items()}
#: the lower end: the range's own, or 1e-3 where it is open (kl-penalty's beta > 0)
RHO_BOTTOM: dict[str, float] = {name: 1e-3 if s.radius.open_low else s.radius.lo for name, s in SPECS.items()}
GAMMA_MAX = 0.99
EXPLICIT_LIMIT = 160  # arrays with more entries than this come from a seeded numpy generator
NEAR_DEGENERATE_EPS = (1e-12, 1e-9, 1e-6)
RESOLUTIONS = (2, 20)

_MONOTONE_MAPS = {
    "cubic": lambda x: x + x**3 / 12.0,
    "exp": lambda x: 4.0 * np.exp(x / 4.0),
    "tanh": lambda x: 5.0 * np.tanh(x / 3.0),
}


# ===== scalars ====================================================================================
def gammas(low: float = 0.0, high: float = GAMMA_MAX) -> st.SearchStrategy[float]:
    """gamma in [low, high], with both ends and a few usual values drawn often."""
    common = [g for g in (0.0, 0.5, 0.9, GAMMA_MAX) if low <= g <= high] + [low, high]
    return st.one_of(st.sampled_from(sorted(set(common))), st.floats(low, high))


def rhos(set_name: str, positive: bool = False) -> st.SearchStrategy[float]:
    """rho over the set's range, ends included (a finite top for kl/chi2; beta > 0 for kl-penalty)."""
    lo, hi = RHO_BOTTOM[set_name], RHO_TOP[set_name]
    if positive and lo == 0.0:
        lo = 0.05 * hi if hi <= 1.0 else 0.05
    mids = [x for x in (0.1, 0.3, 0.5, 1.0, 2.0) if lo < x < hi]
    return st.one_of(st.sampled_from([lo, hi, *mids]), st.floats(lo, hi))


def values(low: float = -10.0, high: float = 10.0) -> st.SearchStrategy[float]:
    """Finite reals, often small integers (so ties appear)."""
    ints = st.integers(int(np.ceil(low)), int(np.floor(high))).map(float)
    return st.one_of(ints, st.floats(low, high, allow_nan=False, allow_infinity=False, allow_subnormal=False))


# ===== arrays =====================================================================================
@st.composite
def _int_array(draw: Any, shape: tuple[int, ...], lo: int, hi: int) -> np.ndarray:
    """Integers in [lo, hi]: drawn one by one when small, else from a seeded generator."""
    n = int(np.prod(shape))
    if n <= EXPLICIT_LIMIT:
        return np.array(draw(st.lists(st.integers(lo, hi), min_size=n, max_size=n)), dtype=np.float64).reshape(shape)
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    return rng.integers(lo, hi + 1, size=shape).astype(np.float64)


@st.composite
def kernel_rows(draw: Any, n_rows: int, n_states: int, kind: str) -> np.ndarray:
    """A (n_rows, S) row-stochastic array of the given kind (dense, sparse, deterministic, near-degenerate)."""
    S = n_states
    if kind == "dense":
        w = draw(_int_array((n_rows, S), 1, 6))
    elif kind == "sparse":
        w = draw(_int_array((n_rows, S), 0, 3))
        empty = w.sum(axis=1) == 0
        w[np.flatnonzero(empty), np.flatnonzero(empty) % S] = 1.0
    elif kind in ("deterministic", "near-degenerate"):
        succ = draw(_int_array((n_rows,), 0, S - 1)).astype(np.int64)
        w = np.zeros((n_rows, S))
        w[np.arange(n_rows), succ] = 1.0
        if kind == "near-degenerate" and S > 1:
            eps = draw(st.sampled_from(NEAR_DEGENERATE_EPS))
            w = np.where(w > 0, 1.0 - eps * (S - 1), eps)
            return w / w.sum(axis=1, keepdims=True)
    else:
        raise ValueError(f"unknown kernel kind {kind!r}; choose one of {KERNEL_KINDS}")
    return w / w.sum(axis=1, keepdims=True)


def _signed(x: np.ndarray, sign: str) -> np.ndarray:
    if sign == "negative":
        return -np.abs(x)
    if sign == "positive":
        return np.abs(x)
    return x


# ===== games ======================================================================================
@dataclass(frozen=True, eq=False)
class GameCase:
    """A game with an uncertainty set, and how it was built; ``Q_design`` is Q*_rob when built backwards."""

    game: Game
    set_name: str
    rho: float
    family: str = "random"
    kernel: str = "dense"
    rewards: str = "mixed"
    Q_design: np.ndarray | None = field(default=None, repr=False)

    @property
    def uset(self) -> UncertaintySet:
        """The validated uncertainty set of the case."""
        return make_set(self.set_name, self.rho)

    def summary(self) -> str:
        """One line: sizes, gamma, set and family."""
        g = self.game
        acts = "x".join(map(str, g.n_actions))
        return (
            f"S={g.n_states} actions={acts} gamma={g.gamma:.4g} {self.set_name}(rho={self.rho:.4g}) "
            f"{self.family}/{self.kernel}/{self.rewards}"
        )

    def reductions(self) -> list[GameCase]:
        """Smaller games of the same family: one state or one action of one agent removed.

        Only for families whose structure survives the cut (``random``, ``agent0``, ``split``: successor mass
        on a removed state is spread over the others in proportion). Used to polish shrunk counterexamples.
        """
        if self.family not in REDUCIBLE:
            return []
        g = self.game
        out: list[GameCase] = []
        S = g.n_states
        for k in range(S):
            if S <= 2:
                break
            keep = np.array([j for j in range(S) if j != k])
            P = g.P[keep][..., keep]
            mass = P.sum(axis=-1, keepdims=True)
            if np.any(mass <= 0):
                continue
            out.append(self._replace(P / mass, g.R[keep]))
        for i, n in enumerate(g.n_actions):
            if n <= 1 or (self.family in ("agent0", "split") and i == 0 and n <= 2):
                continue
            for b in range(n):
                keep = [j for j in range(n) if j != b]
                out.append(self._replace(np.take(g.P, keep, axis=1 + i), np.take(g.R, keep, axis=1 + i)))
        return out

    def _replace(self, P: np.ndarray, R: np.ndarray) -> GameCase:
        game = Game(P=P, R=R, gamma=self.game.gamma, name=self.game.name)
        return GameCase(game, self.set_name, self.rho, self.family, self.kernel, self.rewards, None)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: P (S, n_1..n_N, S), R (S, n_1..n_N), gamma, set, rho and the generator labels."""
        g = self.game
        return {
            "S": g.n_states,
            "n_actions": list(g.n_actions),
            "gamma": g.gamma,
            "set": self.set_name,
            "rho": self.rho,
            "family": self.family,
            "kernel": self.kernel,
            "rewards": self.rewards,
            "P": g.P.tolist(),
            "R": g.R.tolist(),
        }


def _additive(utils: list[np.ndarray]) -> np.ndarray:
    N = len(utils)
    out = np.zeros((utils[0].shape[0],) + (1,) * N)
    for i, u in enumerate(utils):
        shape = [u.shape[0]] + [1] * N
        shape[1 + i] = u.shape[1]
        out = out + u.reshape(shape)
    return out


def _backwards(P: np.ndarray, Q: np.ndarray, gamma: float, uset: UncertaintySet) -> np.ndarray:
    """R with Q as the robust fixed point: R = Q - gamma sigma(max_a Q), so T Q = Q exactly in reals."""
    V = Q.reshape(Q.shape[0], -1).max(axis=1)
    return Q - gamma * uset.support(P, V, validate=False)


@st.composite
def games(
    draw: Any,
    sets: tuple[str, ...] = BALL_SETS,
    families: tuple[str, ...] = ("random",),
    kernels: tuple[str, ...] = KERNEL_KINDS,
    rewards: tuple[str, ...] = REWARD_SIGNS,
    min_states: int = 1,
    max_states: int = 8,
    min_agents: int = 1,
    max_agents: int = 3,
    min_actions: int = 1,
    max_actions: int = 4,
    gamma: st.SearchStrategy[float] | None = None,
    positive_rho: bool = False,
) -> GameCase:
    """A :class:`GameCase` drawn from the given families, sets, kernel kinds and reward signs."""
    family = draw(st.sampled_from(families))
    set_name = draw(st.sampled_from(sets))
    rho = draw(rhos(set_name, positive=positive_rho))
    uset = make_set(set_name, rho)
    S = draw(st.integers(min_states, max_states))
    N = draw(st.integers(min_agents, max_agents))
    acts = tuple(draw(st.integers(min_actions, max_actions)) for _ in range(N))
    kind = draw(st.sampled_from(kernels))
    sign = draw(st.sampled_from(rewards))
    res = draw(st.sampled_from(RESOLUTIONS))  # reward grid: halves (readable) or twentieths (finer search)
    g = draw(gamma if gamma is not None else gammas())
    if family in ("gamble", "hedge"):  # its kernel is built below: one safe row, dense gambles, deterministic returns
        S, acts, kind = max(S, 3), (max(acts[0], 2), *acts[1:]), "safe+dense"
    shape = (S, *acts)

    if family in ("gamble", "hedge"):
        n0 = acts[0]
        rows = np.zeros((S, n0, S))
        rows[1:, :, 0] = 1.0  # outcomes lead back to the decision state
        rows[0, 0, draw(st.integers(0, S - 1))] = 1.0  # the safe action: a single successor
        rows[0, 1:, 1:] = draw(kernel_rows(n0 - 1, S - 1, "dense"))  # the gambles: spread over the outcomes
        P = np.broadcast_to(rows.reshape(S, n0, *([1] * (N - 1)), S), (*shape, S)).copy()
    elif family in ("agent0", "split", "static-monotone"):
        n_ctrl = acts[0] if family != "static-monotone" else 1
        rows = draw(kernel_rows(S * n_ctrl, S, kind)).reshape(S, n_ctrl, *([1] * (N - 1)), S)
        P = np.broadcast_to(rows, (*shape, S)).copy()
    else:
        P = draw(kernel_rows(int(np.prod(shape)), S, kind)).reshape(*shape, S)

    Q_design = None
    if family == "random":
        R = _signed(draw(_int_array(shape, -4 * res, 4 * res)) / res, sign)
    elif family in ("additive", "agent0", "split", "gamble", "hedge"):
        utils = [_signed(draw(_int_array((S, n), -3 * res, 3 * res)) / res, sign) / N for n in acts]
        if family == "gamble":  # small stakes at the decision state, outcomes that differ by a bonus per state
            utils = [np.concatenate([u[:1] / 4.0, u[1:]]) for u in utils]
            bonus = _signed(draw(_int_array((S, 1), -6 * res, 6 * res)) / res, sign) * draw(st.sampled_from([1, 0]))
            bonus[0] = 0.0
            utils[0] = utils[0] + bonus
        if family in ("split", "gamble"):  # in each state only its owner's action changes the reward
            owner = draw(_int_array((S,), 0, N - 1)).astype(np.int64)
        if family == "hedge":
            # small stakes at the decision state; the outcomes owned by the agents in turn (state 0 by agent 0).
            # VDN splits a state's constant evenly among the agents, so an outcome's stakes are its owner's action
            # spread: widened, so that the agents' greedy values peak in different outcomes (a hedge)
            owner = np.array([0] + [(k - 1) % N for k in range(1, S)], dtype=np.int64)
            outcome = (np.arange(S) > 0)[:, None]
            utils = [np.where((owner == i)[:, None] & outcome, HEDGE_WIDEN * u, u) for i, u in enumerate(utils)]
            utils = [np.concatenate([u[:1] / 4.0, u[1:]]) for u in utils]
        if family in ("split", "gamble", "hedge"):
            utils = [np.where((owner == i)[:, None], u, u.mean(axis=1, keepdims=True)) for i, u in enumerate(utils)]
        table = _additive(utils)
        if family in ("agent0", "split", "gamble"):
            R = table
        else:
            Q_design = table
            R = _backwards(P, table, g, uset)
    elif family in ("monotone", "static-monotone"):
        utils = [draw(_int_array((S, n), -3 * res, 3 * res)) / res for n in acts]
        weights = [draw(st.sampled_from([0.5, 1.0, 2.0])) for _ in acts]
        h = _MONOTONE_MAPS[draw(st.sampled_from(sorted(_MONOTONE_MAPS)))]
        table = h(_additive([w * u for w, u in zip(weights, utils, strict=True)]))
        if sign == "negative":  # shift (not -|.|) so the table stays a monotone mix
            table = table - table.max() - 0.5
        elif sign == "positive":
            table = table - table.min() + 0.5
        if family == "static-monotone":
            R = table
        else:
            Q_design = table
            R = _backwards(P, table, g, uset)
    elif family == "tied":
        table = _signed(draw(_int_array(shape, -2, 2)), sign)
        flat = table.reshape(S, -1)
        A = flat.shape[1]
        if N >= 2 and A >= 2:
            for s in range(S):
                a = draw(st.integers(0, A - 1))
                b = draw(st.integers(0, A - 1))
                ja, jb = np.unravel_index(a, acts), np.unravel_index(b, acts)
                if sum(x != y for x, y in zip(ja, jb, strict=True)) < 2:  # differ in two agents where possible
                    movable = [i for i, n in enumerate(acts) if n >= 2][:2]
                    jb = tuple((ja[i] + 1) % acts[i] if i in movable else ja[i] for i in range(N))
                    b = int(np.ravel_multi_index(jb, acts))
                top = flat[s].max() + 1.0
                flat[s, a] = flat[s, b] = top
        Q_design = flat.reshape(shape)
        R = _backwards(P, Q_design, g, uset)
    else:
        raise ValueError(f"unknown family {family!r}; choose from {FAMILIES + SEARCH_FAMILIES}")
    game = Game(P=P, R=R, gamma=g, name=f"{family}_{kind}")
    return GameCase(game, set_name, rho, family, kind, sign, Q_design)


# ===== support-function inputs ====================================================================
@dataclass(frozen=True, eq=False)
class SigmaCase:
    """Rows P0 (K, S), value vectors V (each (S,)), a set and its radius; ``rho2 >= rho`` for monotonicity."""

    P0: np.ndarray
    vectors: tuple[np.ndarray, ...]
    set_name: str
    rho: float
    rho2: float
    kernel: str
    shift: float = 0.0

    @property
    def uset(self) -> UncertaintySet:
        """The set at radius rho."""
        return make_set(self.set_name, self.rho)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready description."""
        return {
            "set": self.set_name,
            "rho": self.rho,
            "rho2": self.rho2,
            "kernel": self.kernel,
            "P0": self.P0.tolist(),
            "vectors": [v.tolist() for v in self.vectors],
            "shift": self.shift,
        }

    def summary(self) -> str:
        """One line: shape, set, radius."""
        return f"P0 {self.P0.shape[0]}x{self.P0.shape[1]} {self.kernel} {self.set_name}(rho={self.rho:.4g})"


@st.composite
def sigma_cases(
    draw: Any, n_vectors: int = 1, sets: tuple[str, ...] = ALL_SETS, max_states: int = 8, max_rows: int = 4
) -> SigmaCase:
    """Rows of nominal distributions of every kernel kind, `n_vectors` value vectors, a set, rho <= rho2."""
    set_name = draw(st.sampled_from(sets))
    S = draw(st.integers(1, max_states))
    K = draw(st.integers(1, max_rows))
    kind = draw(st.sampled_from(KERNEL_KINDS))
    P0 = draw(kernel_rows(K, S, kind))
    vecs = tuple(np.array(draw(st.lists(values(), min_size=S, max_size=S))) for _ in range(n_vectors))
    r1 = draw(rhos(set_name))
    r2 = draw(rhos(set_name))
    shift = draw(values(-50.0, 50.0))
    return SigmaCase(P0, vecs, set_name, min(r1, r2), max(r1, r2), kind, shift)
