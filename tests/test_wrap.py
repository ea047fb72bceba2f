"""radius.model.wrap: a plain encoder + decoder behind the model protocol, validated;
the L2.4 certificate for a ReLU encoder checked against autograd Jacobians."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from torch import nn

from radius.analysis.geometry import w2_diag
from radius.analysis.lipschitz import encode_double, encoder_lipschitz_bound
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

    worst, at = 0.0, (None, 0)
    for v in xin_x[:15]:
        jac = torch.autograd.functional.jacobian(f_out, v)  # (2d, I)
        cols = torch.linalg.vector_norm(jac, dim=0)
        if float(cols.max()) > worst:
            worst, at = float(cols.max()), (v, int(cols.argmax()))
    assert 0 < worst <= l_phi
    w2 = w2_diag(mu_x, lv_x, mu_y, lv_y)
    dxn = (xin_x - xin_y).abs().sum(dim=1)
    assert bool((w2 <= l_phi * dxn * (1 + 1e-9)).all())
    # negative control: along the worst Jacobian column the local ratio W2 / ||dx~||_1
    # reaches ~worst, so a constant of worst / 2 is violated by that small edit
    v, i = at
    eps = 1e-6
    edit = v.clone()
    edit[i] += eps
    with torch.no_grad():
        mu_a, lv_a = m.encoder(v[None])
        mu_b, lv_b = m.encoder(edit[None])
    ratio = float(w2_diag(mu_a, lv_a, mu_b, lv_b)[0]) / eps
    assert 0.9 * worst <= ratio <= l_phi * (1 + 1e-6)
    assert ratio > 0.5 * worst  # the bound with constant worst / 2 FAILs here


def test_every_certified_layer_type_bounds_its_jacobian():
    """A chain with each certified layer type (LeakyReLU 0.2 and 3, SiLU, Sigmoid,
    LayerNorm, Dropout, Identity, nested Sequential): the composed constant bounds the
    Jacobians, and each layer's constant is reported."""
    torch.manual_seed(3)
    enc = nn.Sequential(
        nn.Linear(I, 12),
        nn.LeakyReLU(3.0),
        nn.Sequential(nn.Linear(12, 12), nn.SiLU(), nn.Dropout(0.3)),
        nn.LayerNorm(12),
        nn.Identity(),
        nn.Linear(12, 12),
        nn.LeakyReLU(0.2),
        nn.Sigmoid(),
        nn.Linear(12, 2 * D),
    )
    m = wrap(enc, Decoder()).double().eval()
    x = _rows(np.random.default_rng(4), 20)
    _, lv = encode_double(m, x)
    l_phi, f = encoder_lipschitz_bound(m, logvar_observed=lv)
    consts = {layer["type"]: layer["constant"] for layer in f["layers"]}
    assert consts["SiLU"] == pytest.approx(1.0999) and consts["Sigmoid"] == 0.25
    assert consts["Dropout"] == 1.0 and consts["Identity"] == 1.0
    assert f["layers"][1]["constant"] == 3.0 and f["layers"][6]["constant"] == 1.0
    assert np.isfinite(f["logvar_global_max"])  # the trunk ends in Sigmoid: h in [0, 1]
    l_global, _ = encoder_lipschitz_bound(m)  # so the bound exists without observations
    assert l_global >= l_phi * (1 - 1e-12) or f["logvar_range"] == "global"

    def f_out(v):
        out = m.encoder(v)
        return torch.cat([out[:D], torch.exp(0.5 * out[D:])])

    for v in m.encoder_input(x)[:8]:
        jac = torch.autograd.functional.jacobian(f_out, v)
        assert float(torch.linalg.vector_norm(jac, dim=0).max()) <= l_phi


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
    from radius.analysis.lipschitz import UncertifiedLayerError

    m = wrap(_Branchy(), Decoder())
    with pytest.raises(UncertifiedLayerError, match="do not reproduce model.encode"):
        encoder_lipschitz_bound(m, logvar_observed=torch.zeros(1, D))


# ------------------------------------------------------------- the declared posterior
def test_posterior_scale_shifts_logvar_by_two_log_c():
    """posterior_scale=c: encode and encode_masked return logvar + 2 ln c, mu unchanged;
    W2 between two users then uses sigma scaled by c."""
    torch.manual_seed(0)
    enc, dec = Encoder(), Decoder()
    plain = wrap(enc, dec, keep_rate=0.5)
    scaled = wrap(enc, dec, keep_rate=0.5, posterior_scale=0.01)
    x = _rows(np.random.default_rng(0), 6).float()
    (mu0, lv0), (mu1, lv1) = plain.encode(x), scaled.encode(x)
    assert torch.equal(mu0, mu1)
    assert torch.allclose(lv1 - lv0, torch.full_like(lv0, 2 * np.log(0.01)), atol=1e-5)
    b = (torch.rand(x.shape, generator=torch.Generator().manual_seed(1)) < 0.5).float()
    assert torch.allclose(
        encode_masked(scaled, x, b)[1] - encode_masked(plain, x, b)[1],
        torch.full_like(lv0, 2 * np.log(0.01)),
        atol=1e-5,
    )
    w2 = w2_diag(mu1[0], lv1[0], mu1[1], lv1[1]).float()
    direct = torch.sqrt(
        ((mu0[0] - mu0[1]) ** 2).sum()
        + ((0.01 * torch.exp(lv0[0] / 2) - 0.01 * torch.exp(lv0[1] / 2)) ** 2).sum()
    )
    assert torch.allclose(w2, direct, rtol=1e-4)


def test_l2_4_certifies_a_scaled_posterior():
    """L2.4's certificate holds for the declared posterior (sigma factor scales by c);
    control: the scale-free certificate of the same encoder is c times larger in its
    sigma factor, and the bound holds on random pairs for both."""
    torch.manual_seed(2)
    enc, dec = Encoder(), Decoder()
    rng = np.random.default_rng(3)
    x, y = _rows(rng, 40), _rows(rng, 40)
    for c in (1.0, 0.01):
        m = wrap(copy.deepcopy(enc), copy.deepcopy(dec), posterior_scale=c).double()
        mu_x, lv_x = encode_double(m, x)
        mu_y, lv_y = encode_double(m, y)
        obs = torch.cat([lv_x, lv_y])
        bound, det = encoder_lipschitz_bound(m, logvar_observed=obs)
        w2 = w2_diag(mu_x, lv_x, mu_y, lv_y)
        xn = x / x.norm(dim=1, keepdim=True)
        yn = y / y.norm(dim=1, keepdim=True)
        assert bool((w2 <= bound * (xn - yn).abs().sum(dim=1) + 1e-12).all())
        assert det.get("logvar_offset", 0.0) == pytest.approx(2 * np.log(c), abs=1e-12)
        if c == 1.0:
            factor_1 = det["sigma_factor_max"]
        else:
            assert det["sigma_factor_max"] == pytest.approx(c * factor_1, rel=1e-9)


def test_declared_warnings():
    """A KL weight under 1e-3 and a posterior scale other than 1 are warned about, once;
    a regularised model with the usual sampler gets none."""
    torch.manual_seed(0)
    ok = wrap(Encoder(), Decoder(), kl_weight=0.2)
    assert ok.radius_warnings == []
    bad = wrap(Encoder(), Decoder(), kl_weight=1.5e-4, posterior_scale=0.01)
    assert len(bad.radius_warnings) == 2
    assert bad.radius_warnings[0].startswith(
        "posterior scale 0.01: the model samples z = mu + 0.01 sigma eps"
    )
    assert bad.radius_warnings[1].startswith("KL weight 0.00015 < 0.001 at the end of training")


def test_posterior_warnings_flag_a_logvar_outside_the_sane_range():
    """A logvar head biased to +12 is flagged (sigma e^6 against the prior's 1); the
    same model biased to 0 is not."""
    from radius.model.wrap import LOGVAR_SANE, posterior_warnings

    torch.manual_seed(0)
    enc = Encoder()
    m = wrap(enc, Decoder())
    x = _rows(np.random.default_rng(0), 50).float().numpy()
    with torch.no_grad():
        enc.logvar.weight.zero_()
        enc.logvar.bias.fill_(0.0)
    assert posterior_warnings(m, x) == [] and m.radius_warnings == []
    with torch.no_grad():
        enc.logvar.bias.fill_(12.0)
    notes = posterior_warnings(m, x)
    assert notes == m.radius_warnings and len(notes) == 1
    assert notes[0].startswith("posterior logvar ranges over [12, 12] on 50 training users")
    assert f"sane range [{LOGVAR_SANE[0]:g}, {LOGVAR_SANE[1]:g}]" in notes[0]
    posterior_warnings(m, x)
    assert len(m.radius_warnings) == 1  # not repeated


def test_bad_posterior_options():
    """posterior_scale must be > 0 and finite, kl_weight >= 0: exact messages."""
    with pytest.raises(ValueError, match="posterior_scale must be a finite number > 0, got 0"):
        wrap(Encoder(), Decoder(), posterior_scale=0)
    with pytest.raises(ValueError, match="kl_weight must be a finite number >= 0 or None, got -1"):
        wrap(Encoder(), Decoder(), kl_weight=-1)
