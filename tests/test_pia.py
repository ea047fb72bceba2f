"""Tests of radius.model.pia: the anchor loss L_A in closed form (P3.1)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.sparse as sp
import torch
from hypothesis import given
from hypothesis import strategies as st
from scipy.stats import norm

from radius.model.multvae import MultVAE, SparseBatch
from radius.model.pia import (
    anchor_loss_direct,
    anchor_loss_mc,
    anchor_terms_dense,
    anchor_terms_sparse,
)


def _case(seed: int, b: int = 6, n_items: int = 40, d: int = 5, dtype=torch.float64):
    """Random clean rows (row 0 empty, row 1 a single item), mu, logvar, anchors."""
    g = torch.Generator().manual_seed(seed)
    x = (torch.rand(b, n_items, generator=g) < 0.3).to(dtype)
    x[0] = 0.0
    x[1] = 0.0
    x[1, 3] = 1.0
    mu = torch.randn(b, d, generator=g, dtype=dtype)
    logvar = torch.empty(b, d, dtype=dtype).uniform_(-3.0, 1.0, generator=g)
    anchors = torch.randn(n_items, d, generator=g, dtype=dtype)
    return x, mu, logvar, anchors


def _sparse(x: torch.Tensor) -> SparseBatch:
    batch = SparseBatch.from_csr(sp.csr_matrix(x.numpy()))
    return batch.with_values(batch.values.to(x.dtype))


@st.composite
def anchor_problems(draw):
    """(x, mu, logvar, anchors) in float64 over sizes, scales and supports."""
    b = draw(st.integers(1, 6))
    n_items = draw(st.integers(1, 30))
    d = draw(st.integers(1, 10))
    seed = draw(st.integers(0, 2**31 - 1))
    density = draw(st.floats(0.0, 1.0, allow_nan=False))
    scale = draw(st.floats(1e-2, 1e2, allow_nan=False))
    rng = np.random.default_rng(seed)
    x = (rng.random((b, n_items)) < density).astype(np.float64)
    anchors = scale * rng.standard_normal((n_items, d))
    mu = scale * rng.standard_normal((b, d))
    logvar = rng.uniform(-5.0, 2.0, size=(b, d))
    return tuple(torch.as_tensor(a) for a in (x, mu, logvar, anchors))


@given(anchor_problems())
def test_closed_form_equals_direct_sum(problem):
    """The closed form ||mu - e_bar||^2 + tr Sigma + spread equals the direct sum (float64)."""
    x, mu, logvar, anchors = problem
    closed = anchor_terms_dense(x, mu, logvar, anchors).total()
    direct = anchor_loss_direct(x, mu, logvar, anchors)
    torch.testing.assert_close(closed, direct, rtol=1e-10, atol=1e-10)


@given(anchor_problems())
def test_sparse_path_equals_dense_path(problem):
    """anchor_terms_sparse gives the same three terms as anchor_terms_dense."""
    x, mu, logvar, anchors = problem
    dense = anchor_terms_dense(x, mu, logvar, anchors)
    sparse = anchor_terms_sparse(_sparse(x), mu, logvar, anchors)
    for name in ("align", "trace", "spread"):
        torch.testing.assert_close(
            getattr(sparse, name), getattr(dense, name), rtol=1e-10, atol=1e-10
        )
    assert torch.equal(sparse.has_items, dense.has_items)


@given(anchor_problems())
def test_gradient_is_two_mu_minus_centroid(problem):
    """Autograd of L_A w.r.t. mu equals 2 (mu - e_bar) (and 0 for a user with no items)."""
    x, mu, logvar, anchors = problem
    m = mu.clone().requires_grad_(True)
    (g,) = torch.autograd.grad(anchor_terms_dense(x, m, logvar, anchors).total().sum(), m)
    s = (x > 0).to(x.dtype)
    e_bar = (s @ anchors) / s.sum(-1).clamp_min(1.0)[:, None]
    want = torch.where((s.sum(-1) > 0)[:, None], 2.0 * (mu - e_bar), torch.zeros_like(mu))
    torch.testing.assert_close(g, want, rtol=1e-10, atol=1e-10)


def test_gradient_without_the_factor_two_is_wrong():
    """Negative control: (mu - e_bar) is not the gradient (it is half of it)."""
    x, mu, logvar, anchors = _case(0)
    m = mu.clone().requires_grad_(True)
    (g,) = torch.autograd.grad(anchor_terms_dense(x, m, logvar, anchors).total().sum(), m)
    s = (x > 0).to(x.dtype)
    e_bar = (s @ anchors) / s.sum(-1).clamp_min(1.0)[:, None]
    has = s.sum(-1) > 0
    assert not torch.allclose(g[has], (mu - e_bar)[has], rtol=1e-3)
    torch.testing.assert_close(g[has], 2.0 * (mu - e_bar)[has])


def test_gradient_wrt_logvar_is_variance():
    """d L_A / d logvar = exp(logvar) (the tr Sigma term), for users with items."""
    x, mu, logvar, anchors = _case(1)
    lv = logvar.clone().requires_grad_(True)
    (g,) = torch.autograd.grad(anchor_terms_dense(x, mu, lv, anchors).total().sum(), lv)
    has = (x > 0).any(-1)
    torch.testing.assert_close(g[has], torch.exp(logvar)[has])
    assert torch.all(g[~has] == 0)


def test_monte_carlo_inside_its_interval():
    """The Monte Carlo estimate lies within 4 standard errors of the closed form."""
    x, mu, logvar, anchors = _case(2, b=8)
    gen = torch.Generator().manual_seed(0)
    est, se = anchor_loss_mc(x, mu, logvar, anchors, 20000, generator=gen)
    exact = anchor_terms_dense(x, mu, logvar, anchors).total()
    has = (x > 0).any(-1)
    z = ((est - exact).abs() / se)[has]
    assert torch.all(z < norm.ppf(1 - 1e-4 / 2)), z
    assert torch.all(se[has] > 0)


@pytest.mark.parametrize("wrong", ["spread_dropped", "trace_doubled"])
def test_monte_carlo_detects_a_wrong_closed_form(wrong):
    """Negative control: a closed form without the spread, or with 2 tr Sigma, falls far
    outside the Monte Carlo interval."""
    x, mu, logvar, anchors = _case(3, b=8)
    x[2:] = 1.0  # many items: a sizeable spread
    gen = torch.Generator().manual_seed(0)
    est, se = anchor_loss_mc(x, mu, logvar, anchors, 20000, generator=gen)
    t = anchor_terms_dense(x, mu, logvar, anchors)
    bad = t.align + t.trace if wrong == "spread_dropped" else t.align + 2 * t.trace + t.spread
    z = ((est - bad).abs() / se)[2:]
    assert torch.all(z > 10.0), z


def test_decomposition_terms_by_hand():
    """Two anchors at +-1 and mu = 0, Sigma = I: align 0, trace d, spread 1 (d = 1)."""
    x = torch.tensor([[1.0, 1.0]], dtype=torch.float64)
    anchors = torch.tensor([[1.0], [-1.0]], dtype=torch.float64)
    mu = torch.zeros(1, 1, dtype=torch.float64)
    logvar = torch.zeros(1, 1, dtype=torch.float64)
    t = anchor_terms_dense(x, mu, logvar, anchors)
    assert t.align.item() == 0.0 and t.trace.item() == 1.0 and t.spread.item() == 1.0
    assert t.total().item() == 2.0
    assert t.total("mean").item() == 1.0 and t.total("trace").item() == 2.0
    assert anchor_loss_direct(x, mu, logvar, anchors).item() == 2.0


def test_user_with_no_items_has_zero_loss():
    """A user with an empty support has L_A = 0 in every form, and a zero gradient."""
    x, mu, logvar, anchors = _case(4)
    m = mu.clone().requires_grad_(True)
    t = anchor_terms_dense(x, m, logvar, anchors)
    assert not t.has_items[0]
    for terms in ("both", "mean", "trace"):
        assert t.total(terms)[0].item() == 0.0
    assert anchor_loss_direct(x, mu, logvar, anchors)[0].item() == 0.0
    (g,) = torch.autograd.grad(t.total().sum(), m)
    assert torch.all(g[0] == 0)


def test_fully_masked_user_gives_finite_loss():
    """A user whose input is fully masked (x * b = 0) encodes finitely: finite L_A, gradients."""
    torch.manual_seed(0)
    model = MultVAE(30, (16,), 4, use_anchors=True)
    x = (torch.rand(3, 30) < 0.4).float()
    x[0, :3] = 1.0
    masked = x.clone()
    masked[0] = 0.0  # fully masked, items still in the clean support
    mu, logvar = model.encode(masked)
    t = anchor_terms_sparse(
        SparseBatch.from_csr(sp.csr_matrix(x.numpy())), mu, logvar, model.anchors
    )
    loss = t.total().sum()
    assert torch.isfinite(loss)
    assert t.has_items[0] and t.total()[0] > 0
    loss.backward()
    for p in model.parameters():
        assert p.grad is None or torch.all(torch.isfinite(p.grad))
    assert model.anchors.grad is not None and torch.any(model.anchors.grad != 0)


def test_spread_does_not_depend_on_encoder():
    """The spread term is the same for any mu and logvar (it has no encoder gradient)."""
    x, mu, logvar, anchors = _case(5)
    a = anchor_terms_dense(x, mu, logvar, anchors).spread
    b = anchor_terms_dense(x, 10 * mu + 3, logvar - 2, anchors).spread
    torch.testing.assert_close(a, b)
    m = mu.clone().requires_grad_(True)
    s = anchor_terms_dense(x, m, logvar, anchors).spread.sum()
    assert not s.requires_grad or torch.all(torch.autograd.grad(s, m, allow_unused=True)[0] == 0)


def test_unknown_terms_rejected():
    """total() names the valid choices."""
    t = anchor_terms_dense(*_case(6))
    with pytest.raises(ValueError, match=r"terms must be 'both', 'mean' or 'trace', got 'all'"):
        t.total("all")


def test_float32_matches_float64_on_centred_anchors():
    """In float32 (the training dtype) the closed form agrees with float64 to 1e-4 relative
    for anchors near the origin (the cancellation in the spread is benign there)."""
    x, mu, logvar, anchors = _case(7, b=8, n_items=100, d=16)
    t64 = anchor_terms_dense(x, mu, logvar, 0.1 * anchors).total()
    t32 = anchor_terms_dense(x.float(), mu.float(), logvar.float(), 0.1 * anchors.float()).total()
    assert math.isclose(
        float((t32.double() - t64).abs().max()), 0.0, abs_tol=1e-4 * float(t64.max())
    )
