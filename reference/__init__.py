"""Exact tabular reference solver for cooperative robust Markov games (numpy, scipy, cvxpy only).

Entry points: :mod:`reference.game` (model and files), :mod:`reference.sets` (uncertainty sets),
:mod:`reference.bellman` (robust VI, policy evaluation, worst-case kernels), :mod:`reference.atomic_io` (atomic
file writes, shared with proofs_check and drigm). It never imports torch.
"""

from reference.bellman import (
    ConvergenceWarning,
    PolicyEvaluation,
    SolveResult,
    bellman_optimality,
    evaluate_under_kernel,
    greedy_joint_actions,
    joint_policy,
    nominal_value_iteration,
    policy_evaluation,
    robust_backup,
    value_iteration,
    worst_case_kernel,
)
from reference.game import (
    CLASSIC_GAMES,
    Game,
    GameError,
    climbing_game,
    load_game,
    penalty_game,
    random_game,
    robust_vs_nominal_game,
    save_game,
)
from reference.sets import RHO_RANGES, SET_NAMES, UncertaintySet, UncertaintySetError, check_rho, make_set

__all__ = [
    "CLASSIC_GAMES",
    "RHO_RANGES",
    "SET_NAMES",
    "ConvergenceWarning",
    "Game",
    "GameError",
    "PolicyEvaluation",
    "SolveResult",
    "UncertaintySet",
    "UncertaintySetError",
    "bellman_optimality",
    "check_rho",
    "climbing_game",
    "evaluate_under_kernel",
    "greedy_joint_actions",
    "joint_policy",
    "load_game",
    "make_set",
    "nominal_value_iteration",
    "penalty_game",
    "policy_evaluation",
    "random_game",
    "robust_backup",
    "robust_vs_nominal_game",
    "save_game",
    "value_iteration",
    "worst_case_kernel",
]
