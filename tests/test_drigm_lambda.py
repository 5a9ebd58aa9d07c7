"""TD(lambda) targets (learner.td_lambda): the recursion against n-step sums, edge cases, refusals."""

from __future__ import annotations

import math

import pytest
import torch
from test_drigm_learner import A, N, O, S, random_batch

from drigm.config import ConfigError, build_config
from drigm.learner import Learner
from drigm.targets import RobustTarget, TargetConfig, TargetInputs, lambda_returns

G = 0.9


def _inputs(B: int = 5, T: int = 7, seed: int = 0) -> TargetInputs:
    """Rows of random lengths; some end terminal, some truncated; padding holds NaN."""
    gen = torch.Generator().manual_seed(seed)
    reward = torch.randn(B, T, generator=gen, dtype=torch.float64)
    value = torch.randn(B, T, generator=gen, dtype=torch.float64) * 3 - 1
    lengths = torch.randint(1, T + 1, (B,), generator=gen)
    mask = (torch.arange(T)[None] < lengths[:, None]).double()
    terminated = torch.zeros(B, T, dtype=torch.float64)
    for b in range(B):
        if b % 2 == 0:
            terminated[b, lengths[b] - 1] = 1.0
    reward = torch.where(mask.bool(), reward, torch.nan)
    value = torch.where(mask.bool(), value, torch.nan)
    state = torch.randn(B, T, S, generator=gen, dtype=torch.float64)
    onehot = torch.zeros(B, T, N * A, dtype=torch.float64)
    return TargetInputs(reward, value, terminated, mask, state, onehot)


def _bruteforce(r: list[float], v: list[float], terminal: bool, lam: float, a: float, b: float) -> list[float]:
    """The lambda-return as (1-lam) sum_n lam^(n-1) G^(n) plus the tail weight on the longest return, where
    G^(n) applies the affine backup y = r + gamma (a V + b) n times along the row."""

    def n_step(t: int, n: int) -> float:
        last = t + n - 1
        g = r[last] if last == len(r) - 1 and terminal else r[last] + G * (a * v[last] + b)
        for k in range(last - 1, t - 1, -1):
            g = r[k] + G * (a * g + b)
        return g

    out = []
    for t in range(len(r)):
        longest = len(r) - t
        total = sum((1 - lam) * lam ** (n - 1) * n_step(t, n) for n in range(1, longest))
        out.append(total + lam ** (longest - 1) * n_step(t, longest))
    return out


@pytest.mark.parametrize("lam", [0.0, 0.3, 0.8, 1.0])
@pytest.mark.parametrize(("a", "b"), [(1.0, 0.0), (0.7, -0.4)])
def test_recursion_matches_the_weighted_sum_of_n_step_returns(lam: float, a: float, b: float) -> None:
    tin = _inputs()
    y = lambda_returns(tin.reward, tin.next_value, tin.terminated, tin.mask, G, lam, a, b)
    assert torch.isfinite(y).all()
    for row in range(y.shape[0]):
        n = int(tin.mask[row].sum())
        want = _bruteforce(
            tin.reward[row, :n].tolist(), tin.next_value[row, :n].tolist(), bool(tin.terminated[row, n - 1]), lam, a, b
        )
        assert torch.allclose(y[row, :n], torch.tensor(want, dtype=torch.float64), atol=1e-12)
        assert (y[row, n:] == 0).all()


def test_lambda_one_gives_monte_carlo_and_truncation_bootstraps_once() -> None:
    r = torch.tensor([[1.0, 2.0, 3.0], [1.0, 1.0, math.nan]])
    v = torch.tensor([[5.0, 6.0, math.nan], [7.0, 10.0, math.nan]])
    done = torch.tensor([[0.0, 0.0, 1.0], [0.0, 0.0, 0.0]])
    mask = torch.tensor([[1.0, 1.0, 1.0], [1.0, 1.0, 0.0]])
    y = lambda_returns(r, v, done, mask, 0.5, 1.0)
    assert torch.allclose(y[0], torch.tensor([2.75, 3.5, 3.0]))  # discounted sums, no V_hat at all
    assert torch.allclose(y[1], torch.tensor([1.0 + 0.5 * 6.0, 6.0, 0.0]))  # 1 + 0.5 * 10 at the truncation


@pytest.mark.parametrize("kind", ["none", "paper", "exact"])
def test_lambda_zero_equals_the_one_step_target(kind: str) -> None:
    target = RobustTarget(TargetConfig(kind=kind, set="contamination", rho=0.2), S, N, A, G)
    tin = _inputs(seed=3)
    assert torch.allclose(target.lambda_target(tin, 0.0), target(tin), atol=1e-12)
    assert not torch.allclose(target.lambda_target(tin, 0.7), target(tin))


def test_exact_contamination_lambda_uses_the_one_step_m_hat() -> None:
    target = RobustTarget(TargetConfig(kind="exact", set="contamination", rho=0.25), S, N, A, G)
    tin = _inputs(seed=4)
    boot = tin.mask.bool() & ~tin.terminated.bool()
    m_hat = float(tin.next_value[boot].min())
    want = lambda_returns(tin.reward, tin.next_value, tin.terminated, tin.mask, G, 0.6, 0.75, 0.25 * m_hat)
    assert torch.allclose(target.lambda_target(tin, 0.6), want, atol=1e-12)


def test_nonlinear_targets_and_bad_lambda_are_refused() -> None:
    tv = RobustTarget(TargetConfig(kind="exact", set="tv", rho=0.2), S, N, A, G)
    with pytest.raises(ValueError, match="affine"):
        tv.lambda_target(_inputs(), 0.5)
    with pytest.raises(ConfigError, match=r"learner\.td_lambda=0\.5 needs a target affine"):
        build_config({"learner": {"td_lambda": 0.5}, "target": {"kind": "paper", "set": "tv", "rho": 0.2}})
    with pytest.raises(ConfigError, match=r"learner\.td_lambda=1\.5 is out of range"):
        build_config({"learner": {"td_lambda": 1.5}})
    tin = _inputs()
    with pytest.raises(ValueError, match=r"lam=-0\.1"):
        lambda_returns(tin.reward, tin.next_value, tin.terminated, tin.mask, G, -0.1)


def test_learner_regresses_on_lambda_returns() -> None:
    def target_mean(lam: float) -> float:
        cfg = build_config({"mixer": {"name": "vdn"}, "agent": {"hidden": 8}, "learner": {"td_lambda": lam}})
        torch.manual_seed(0)
        learner = Learner(cfg, N, A, O, S, gamma=G, device=torch.device("cpu"))
        return learner.update(random_batch())["target_mean"]

    assert target_mean(0.0) != pytest.approx(target_mean(0.9))
