"""radius.model.wrap: a plain encoder + decoder behind the model protocol, validated;
the L2.4 certificate for a ReLU encoder checked against autograd Jacobians."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from radius.geometry import encode_double, encoder_lipschitz_bound, w2_diag
from radius.model import ModelError, validate, wrap
from radius.model.protocol import check_model, encode_masked

I, D, H = 30, 3, 16


class Encoder(nn.Module):
    """ReLU trunk with two hidden layers and separate mu / logvar heads."""

    def __init__(self, n_items: int = I, d: int = D, h: int = H) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(n_items, h), nn.ReLU(), nn.Linear(h, h), nn.ReLU())
        self.mu = nn.Linear(h, d)
        self.logvar = nn.Linear(h, d)

    def forward(self, x):
        h = self.net(x)
        return self.mu(h), self.logvar(h)


class Decoder(nn.Module):
    """Not a Sequential: decoder_features must come from a hook."""

    def __init__(self, n_items: int = I, d: int = D, h: int = H) -> None:
        super().__init__()
        self.hidden = nn.Linear(d, h)
        self.out = nn.Linear(h, n_items)

    def forward(self, z):
        return self.out(torch.tanh(self.hidden(z)))


def _rows(rng, n, i=I):
    x = (rng.random((n, i)) < 0.2).astype(np.float64)
    x[np.arange(n), rng.integers(0, i, n)] = 1.0
    return torch.from_numpy(x)


def test_wrap_follows_the_protocol():
    """decode = decoder_features @ W.T + b (hook and slicing), shapes, conventions."""
    torch.manual_seed(0)
    m = wrap(Encoder(), Decoder(), keep_rate=0.5, lambda_a=0.1, anchors=torch.zeros(I, D))
    check_model(m)
    assert (m.n_items, m.latent_dim, m.input_convention) == (I, D, "normalize-mask")
    z = torch.randn(5, D)
    w, b = m.output_layer()
    assert torch.allclose(m.decode(z), m.decoder_features(z) @ w.T + b, atol=1e-6)
    seq = wrap(Encoder(), nn.Sequential(nn.Linear(D, H), nn.Tanh(), nn.Linear(H, I)))
    assert seq._slice and seq.decoder_features(z).shape == (5, H)
    x = _rows(np.random.default_rng(0), 4).float()
    bmask = torch.ones_like(x)
    # with rho = 0.5, an all-ones mask still rescales by 1/rho: not the clean encoding
    assert not torch.allclose(encode_masked(m, x, bmask)[0], m.encode(x)[0])
    # normalize-mask: the masked input is x~ * b / rho
    mu_m, _ = m.encode_masked(x, bmask)
    mu_ref, _ = m.encoder(x / (x.norm(dim=1, keepdim=True) + 1e-8) / 0.5)
    assert torch.allclose(mu_m, mu_ref)
    joint = wrap(nn.Sequential(nn.Linear(I, 8), nn.ReLU(), nn.Linear(8, 2 * D)), Decoder())
    assert joint.split_output and joint.encode(x)[0].shape == (4, D)


def test_output_layer_by_name_and_module():
    """The output layer can be named (with close-match hints) or given as the module."""
    dec = Decoder()
    assert wrap(Encoder(), dec, output_layer="out").output_layer()[0] is dec.out.weight
    assert wrap(Encoder(), dec, output_layer=dec.out)._out_name == "out"
    with pytest.raises(ModelError, match="decoder has no submodule 'outt'; did you mean 'out'"):
        wrap(Encoder(), dec, output_layer="outt")
    with pytest.raises(
        ModelError,
        match=r"encoder failed on a dummy batch of shape \(4, 16\) \(n_items = 16, the "
        r"outputs of output layer 'hidden'\)",
    ):
        wrap(Encoder(), dec, output_layer="hidden")


class _NaNEncoder(Encoder):
    def forward(self, x):
        mu, lv = super().forward(x)
        return mu * float("nan"), lv


class _ThreeOut(Encoder):
    def forward(self, x):
        mu, lv = super().forward(x)
        return mu, lv, mu


class _NotLast(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.out = nn.Linear(D, I)
        self.post = nn.Linear(I, I)

    def forward(self, z):
        return self.out(z) * 2.0


def test_bad_models_are_named():
    """Each protocol breach raises ModelError naming the member and the shape."""
    with pytest.raises(ModelError, match=r"encode\(x\)\[0\] \(mu\) has 12 non-finite values"):
        wrap(_NaNEncoder(), Decoder())
    with pytest.raises(ModelError, match="encoder must return \\(mu, logvar\\).* of length 3"):
        wrap(_ThreeOut(), Decoder())
    with pytest.raises(ModelError, match="has no nn.Linear"):
        wrap(Encoder(), nn.Tanh())
    with pytest.raises(ModelError, match="output layer 'post' has 30 outputs, but the data has 31"):
        wrap(Encoder(), _NotLast(), n_items=31)
    with pytest.raises(
        ModelError,
        match=r"decode\(z\) differs from decoder_features\(z\) @ W.T \+ b by",
    ):
        wrap(Encoder(), _NotLast(), output_layer="out")
    with pytest.raises(ModelError, match=r"decode\(z\) has shape \(4, 16\), expected \(4, 30\)"):
        bad = wrap(Encoder(), Decoder())
        bad.decoder.out = nn.Linear(H, H)
        bad._out = [nn.Linear(H, I)]
        validate(bad)
    m = wrap(Encoder(), Decoder())
    with pytest.raises(ModelError, match="n_items = 30, but the data has 40 items"):
        validate(m, n_items=40, name="the pia model")
    with pytest.raises(ModelError, match="missing \\['n_items', 'latent_dim'"):
        validate(nn.Linear(2, 2))
    with pytest.raises(ValueError, match="input_convention must be one of"):
        wrap(Encoder(), Decoder(), input_convention="raw")
    with pytest.raises(ModelError, match=r"anchors has shape \(30, 2\), expected \(30, 3\)"):
        wrap(Encoder(), Decoder(), anchors=torch.zeros(I, 2))


@pytest.mark.parametrize("convention", ["normalize-mask", "none"])
def test_relu_bound_against_autograd_jacobians(convention):
    """L2.4 for a ReLU encoder: the certified l1 -> l2 constant bounds every Jacobian's
    l1 -> l2 norm (max column 2-norm of d(mu, sigma)/dx~) at random inputs, and
    W2 <= L ||dx~||_1 on random pairs."""
    torch.manual_seed(1)
    m = wrap(Encoder(), Decoder(), input_convention=convention).double()
    rng = np.random.default_rng(2)
    x, y = _rows(rng, 40), _rows(rng, 40)
    mu_x, lv_x = encode_double(m, x)
    mu_y, lv_y = encode_double(m, y)
    obs = torch.cat([lv_x, lv_y])
    l_phi, f = encoder_lipschitz_bound(m, logvar_observed=obs, logvar_margin=0.5)
    assert f["encoder"] == "generic" and f["input_normalization"] == (
        "none" if convention == "none" else "l2"
    )
    assert [layer["type"] for layer in f["layers"]] == ["Linear", "ReLU", "Linear", "ReLU"]
    xin_x, xin_y = m.encoder_input(x), m.encoder_input(y)

    def f_out(v):
        mu, lv = m.encoder(v)
        return torch.cat([mu, torch.exp(0.5 * lv)])

    worst = 0.0
    for v in xin_x[:15]:
        jac = torch.autograd.functional.jacobian(f_out, v)  # (2d, I)
        worst = max(worst, float(torch.linalg.vector_norm(jac, dim=0).max()))
    assert 0 < worst <= l_phi
    w2 = w2_diag(mu_x, lv_x, mu_y, lv_y)
    dxn = (xin_x - xin_y).abs().sum(dim=1)
    assert bool((w2 <= l_phi * dxn * (1 + 1e-9)).all())
    # negative control: a constant below the worst Jacobian norm is violated somewhere
    edits = xin_x.clone()
    edits[:, 0] += 1e-4
    mu_e, lv_e = m.encoder(edits)
    w2e = w2_diag(mu_x, lv_x, mu_e.detach(), lv_e.detach())
    assert float((w2e / 1e-4).max()) <= l_phi * (1 + 1e-6)


def test_logvar_range_needs_observation_for_relu():
    """A ReLU trunk has no certified global logvar range: the bound asks for observations."""
    m = wrap(Encoder(), Decoder())
    with pytest.raises(ValueError, match="no certified global range"):
        encoder_lipschitz_bound(m)
    t = wrap(nn.Sequential(nn.Linear(I, 8), nn.Tanh(), nn.Linear(8, 2 * D)), Decoder())
    assert encoder_lipschitz_bound(t)[1]["logvar_range"] == "global"


class _Branchy(nn.Module):
    """Children in order but a skip connection in forward: not a chain, not certified."""

    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Linear(I, I)
        self.head = nn.Linear(I, 2 * D)

    def forward(self, x):
        return self.head(self.a(x) + x)


def test_branchy_encoder_is_not_certified():
    """A forward that is not the chain of its children is refused, naming it."""
    from radius.geometry import UncertifiedLayerError

    m = wrap(_Branchy(), Decoder())
    with pytest.raises(UncertifiedLayerError, match="do not reproduce model.encode"):
        encoder_lipschitz_bound(m, logvar_observed=torch.zeros(1, D))
