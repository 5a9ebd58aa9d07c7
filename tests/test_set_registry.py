"""The uncertainty-set registry (reference/sets/): every registered sample rule against its set's exact operator.

For every set and every target kind it registers, on random (p0, V, rho) with sparse and deterministic rows:
1. with s' ~ p0, m_hat = min V and the auxiliary estimate at the rule's ``exact_aux``, the expected continuation
   equals the rule's operator (the support function for exact rules, the shortcut's operator for the paper's);
2. ``exact_aux`` minimises the expected auxiliary loss (no small move of any output lowers it);
3. the rule gives the same numbers on torch tensors (drigm's TORCH_OPS) as on numpy arrays;
4. unknown set names and missing rules fail loudly, listing what is known, in reference and in drigm.
A new set module gets all of these by its registry line.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from drigm.targets import SETS, TORCH_OPS, TargetConfig
from reference.sets import (
    NOMINAL_RULE,
    NUMPY_OPS,
    SET_NAMES,
    SPECS,
    SampleRule,
    UncertaintySetError,
    get_spec,
    make_set,
    sample_rule,
    sets_with_rule,
)

RULES = [(name, kind) for name, spec in SPECS.items() for kind in spec.rules]
CASES = 40


def _cases(name: str, seed: int = 0) -> list[tuple[np.ndarray, np.ndarray, float]]:
    """(p0, V, rho): dense, sparse and deterministic rows over 1..6 states, rho from the ends and the inside."""
    rng = np.random.default_rng(seed)
    spec = get_spec(name)
    lo, top = spec.radius.lo, spec.test_top
    out = []
    for k in range(CASES):
        S = int(rng.integers(1, 7))
        p = rng.dirichlet(np.full(S, 0.7))
        if k % 3 == 1 and S > 1:
            p = np.where(rng.random(S) < 0.4, 0.0, p)
            p[rng.integers(S)] += 0.1
            p /= p.sum()
        elif k % 3 == 2:
            p = np.eye(S)[rng.integers(S)]
        V = rng.normal(size=S) * 3.0
        if k % 4 == 0:
            V = np.round(V)  # ties
        ends = [lo if not spec.radius.open_low else 0.05, min(top, 1.0), 0.3]
        rho = ends[k % 3] if k < 9 else float(rng.uniform(max(lo, 1e-3), min(top, 5.0)))
        out.append((p, V, rho))
    return out


def _expect(rule: SampleRule, p: np.ndarray, V: np.ndarray, rho: float, aux: object, shift: float) -> float:
    cont = rule.continuation(NUMPY_OPS, V, aux, V.min(), rho, shift)
    return float(np.sum(np.where(p > 0, p * cont, 0.0)))


def _aux(rule: SampleRule, p: np.ndarray, V: np.ndarray, rho: float, shift: float) -> np.ndarray | None:
    if rule.exact_aux is None:
        return None
    return np.asarray(rule.exact_aux(p, V, rho, shift), dtype=float)


@pytest.mark.parametrize(("name", "kind"), RULES)
def test_expected_continuation_at_the_exact_aux_is_the_operator(name: str, kind: str) -> None:
    rule = SPECS[name].rules[kind]
    assert not rule.needs_aux or rule.exact_aux is not None, f"{kind}/{name} needs an aux but has no exact_aux"
    for p, V, rho in _cases(name):
        shift = float(V[p > 0].min())  # the batch minimum of V_hat(s') (kl-penalty's c)
        got = _expect(rule, p, V, rho, _aux(rule, p, V, rho, shift), shift)
        want = float(rule.operator(p, V, rho))
        assert got == pytest.approx(want, rel=1e-9, abs=1e-9), f"{kind}/{name} p={p} V={V} rho={rho}"


def test_exact_operators_are_the_support_functions() -> None:
    for name, kind in RULES:
        if kind != "exact":
            continue
        for p, V, rho in _cases(name, seed=1)[:10]:
            want = float(make_set(name, rho).support(p, V))
            assert float(SPECS[name].rules[kind].operator(p, V, rho)) == pytest.approx(want, rel=1e-12, abs=1e-12)


@pytest.mark.parametrize(("name", "kind"), [(n, k) for n, k in RULES if SPECS[n].rules[k].needs_aux])
def test_exact_aux_minimises_the_expected_aux_loss(name: str, kind: str) -> None:
    rule = SPECS[name].rules[kind]
    assert rule.aux_loss is not None
    checked = 0
    for p, V, rho in _cases(name, seed=2):
        shift = float(V[p > 0].min())
        aux = _aux(rule, p, V, rho, shift)
        assert aux is not None
        if not np.all(np.isfinite(aux)):  # chi2 at rho = 0: the optimum is at infinity
            continue

        def expected_loss(a: np.ndarray, p=p, V=V, rho=rho, shift=shift) -> float:
            return float(np.sum(np.where(p > 0, p * rule.aux_loss(NUMPY_OPS, V, a, rho, shift), 0.0)))

        base = expected_loss(aux)
        flat = aux.reshape(-1)
        for i in range(flat.size):
            for step in (1e-3, -1e-3, 0.1, -0.1):
                moved = flat.copy()
                moved[i] += step * max(1.0, abs(flat[i]))
                if rule.aux_outputs[i % len(rule.aux_outputs)] == "spread" and moved[i] <= 0:
                    continue
                assert expected_loss(moved.reshape(aux.shape)) >= base - 1e-9 * (1 + abs(base)), (
                    f"{kind}/{name}: moving aux {i} by {step} lowers the expected loss (p={p}, V={V}, rho={rho})"
                )
        checked += 1
    assert checked >= CASES // 2


@pytest.mark.parametrize(("name", "kind"), [*RULES, ("any", "none")])
def test_rules_agree_on_numpy_and_torch(name: str, kind: str) -> None:
    rule = NOMINAL_RULE if kind == "none" else SPECS[name].rules[kind]
    rng = np.random.default_rng(3)
    v = rng.normal(size=64) * 2
    aux = rng.normal(size=(64, len(rule.aux_outputs))) if rule.needs_aux else None
    if aux is not None:
        aux[:, [i for i, o in enumerate(rule.aux_outputs) if o == "spread"]] **= 2
    rho, shift, m = 0.3, float(v.min()), float(v.min())

    def t(x: object) -> torch.Tensor:
        return torch.as_tensor(x, dtype=torch.float64)

    view_np = rule.aux_view(NUMPY_OPS, aux, rho, shift) if aux is not None else None
    view_t = rule.aux_view(TORCH_OPS, t(aux), rho, t(shift)) if aux is not None else None
    a = rule.continuation(NUMPY_OPS, v, view_np, m, rho, shift)
    b = rule.continuation(TORCH_OPS, t(v), view_t, t(m), rho, t(shift))
    np.testing.assert_allclose(np.asarray(b), np.broadcast_to(a, v.shape), rtol=1e-12, atol=1e-12)
    if rule.aux_loss is not None:
        la = rule.aux_loss(NUMPY_OPS, v, view_np, rho, shift)
        lb = rule.aux_loss(TORCH_OPS, t(v), view_t, rho, t(shift))
        np.testing.assert_allclose(np.asarray(lb), la, rtol=1e-12, atol=1e-12)


def test_affine_rules_are_affine() -> None:
    rng = np.random.default_rng(4)
    for name, kind in [*RULES, ("contamination", "none")]:
        rule = sample_rule(kind, name)
        if rule.affine is None:
            continue
        v, m, rho = rng.normal(size=8), -2.0, 0.3
        slope, offset = rule.affine(rho, m)
        np.testing.assert_allclose(rule.continuation(NUMPY_OPS, v, None, m, rho, None), slope * v + offset)


def test_registry_is_consistent() -> None:
    assert tuple(SPECS) == SET_NAMES
    for name, spec in SPECS.items():
        assert spec.name == name and spec.radius.set_name == name
        assert set(spec.rules) <= {"exact", "paper"}
        assert math.isfinite(spec.test_top) and spec.test_top > spec.radius.lo
        if spec.is_ball:  # a ball of radius 0 is {p0}
            p, V = np.array([0.2, 0.5, 0.3]), np.array([1.0, -2.0, 4.0])
            assert float(make_set(name, 0.0).support(p, V)) == pytest.approx(float(p @ V))
    assert set(SETS) == set(sets_with_rule("exact"))


def test_unknown_names_and_missing_rules_fail_loudly() -> None:
    with pytest.raises(
        UncertaintySetError, match=r"unknown uncertainty set 'wasserstein'; choose one of contamination"
    ):
        get_spec("wasserstein")
    with pytest.raises(UncertaintySetError, match="unknown uncertainty set"):
        make_set("wasserstein", 0.1)
    with pytest.raises(
        UncertaintySetError, match=r"set 'chi2' has no 'paper' sample rule; sets with one: contamination, tv"
    ):
        sample_rule("paper", "chi2")
    with pytest.raises(UncertaintySetError, match=r"set 'kl' has no 'exact' sample rule"):
        sample_rule("exact", "kl")
    with pytest.raises(ValueError, match=r"TargetConfig.set='wasserstein' is invalid: allowed one of 'contamination'"):
        TargetConfig(kind="exact", set="wasserstein", rho=0.1).validate()
    with pytest.raises(ValueError, match=r"TargetConfig.set='chi2' is invalid with kind='paper'"):
        TargetConfig(kind="paper", set="chi2", rho=0.1).validate()
    with pytest.raises(ValueError, match=r"TargetConfig.rho=-0.5 is invalid: allowed a finite number >= 0"):
        TargetConfig(kind="exact", set="chi2", rho=-0.5).validate()
    TargetConfig(kind="exact", set="chi2", rho=4.0).validate()  # chi2's radius is not capped at 1


@pytest.mark.parametrize("name", [n for n, s in SPECS.items() if s.is_ball])
def test_members_lie_in_the_set_and_reach_its_boundary(name: str) -> None:
    """``member`` draws points of U(p0) from the set's definition: inside the ball, and on its boundary when asked
    (unless the whole simplex-on-support fits in it)."""
    spec = SPECS[name]
    rng = np.random.default_rng(5)
    on_boundary = 0
    for p0, _, rho in _cases(name, seed=6):
        for boundary in (True, False):
            p = spec.member(p0, rho, rng, boundary)
            assert np.all(p >= -1e-15) and abs(p.sum() - 1.0) < 1e-12
            d = spec.divergence(p, p0)  # type: ignore[misc]
            assert d <= rho * (1 + 1e-9) + 1e-12, f"{name}: member at distance {d} > rho {rho}"
            on_boundary += boundary and rho > 0 and d >= rho * (1 - 1e-6)
    assert on_boundary >= 5
