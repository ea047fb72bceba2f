"""Verify your own VAE recommender with radius: a model radius does not know, trained by
its own loop, checked against every claim through the public API.

The model: a ReLU encoder with two hidden layers (I -> 128 -> 64 -> (mu, logvar), d = 32)
and a tanh decoder (32 -> 128 -> I), trained on MovieLens-100k three ways: clean input,
masked input (keep rate 0.5, the reference codes' "normalise, then inverted dropout"),
and masked with a hand-written PIA anchor loss. ``radius.model.wrap`` puts each behind
the model protocol; ``radius.verify.run_all`` checks every claim; ``fit(beta)`` lets
the beta-KL sweep retrain *this* model at other KL weights, and the PIA model's weights
at initialisation and after epochs 1 and 3 let T2.3 examine its sharing radius along
training (``along=``).

Run: ``python examples/own_vae.py`` (ML-100k is read from the recbole wheel that
``radius data fetch-ml100k`` downloads; ``--data PATH`` takes any ratings file or
prepared folder instead). About a minute on 2 CPU cores.
"""

from __future__ import annotations

import argparse
import copy
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

import radius
from radius.model import wrap

LATENT = 32
EPOCHS = 12


class Encoder(nn.Module):
    """x~ (B, I) -> (mu, logvar), each (B, d): two ReLU hidden layers."""

    def __init__(self, n_items: int, d: int = LATENT) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(n_items, 128), nn.ReLU(), nn.Linear(128, 64), nn.ReLU())
        self.mu = nn.Linear(64, d)
        self.logvar = nn.Linear(64, d)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.net(x)
        return self.mu(h), self.logvar(h)


def make_decoder(n_items: int, d: int = LATENT) -> nn.Module:
    return nn.Sequential(nn.Linear(d, 128), nn.Tanh(), nn.Linear(128, n_items))


def fit_vae(
    train: torch.Tensor,
    *,
    keep_rate: float = 1.0,
    lambda_a: float = 0.0,
    beta: float = 0.2,
    epochs: int = EPOCHS,
    seed: int = 0,
    along: dict[str, nn.Module] | None = None,
) -> nn.Module:
    """Our own training loop: multinomial likelihood + beta KL (+ lambda_A anchor loss).
    ``along`` (a dict) receives the model at initialisation and after epochs 1 and 3."""
    torch.manual_seed(seed)
    n_users, n_items = train.shape
    enc, dec = Encoder(n_items), make_decoder(n_items)
    anchors = nn.Parameter(0.01 * torch.randn(n_items, LATENT)) if lambda_a > 0 else None
    params = [*enc.parameters(), *dec.parameters(), *([anchors] if anchors is not None else [])]
    opt = torch.optim.Adam(params, lr=2e-3)
    gen = torch.Generator().manual_seed(seed)

    def wrapped(e: nn.Module, d: nn.Module, a: nn.Parameter | None) -> nn.Module:
        return wrap(
            e, d, keep_rate=keep_rate, lambda_a=lambda_a, anchors=a,
            input_convention="normalize-mask",
        )  # fmt: skip

    def snapshot(label: str) -> None:
        if along is not None:
            along[label] = wrapped(copy.deepcopy(enc), copy.deepcopy(dec), copy.deepcopy(anchors))

    snapshot("init")
    for epoch in range(epochs):
        for idx in torch.randperm(n_users, generator=gen).split(128):
            x = train[idx]
            xn = x / (x.norm(dim=1, keepdim=True) + 1e-8)
            if keep_rate < 1.0:  # normalise, then inverted dropout
                b = (torch.rand(x.shape, generator=gen) < keep_rate).float()
                xn = xn * b / keep_rate
            mu, logvar = enc(xn)
            z = mu + torch.exp(0.5 * logvar) * torch.randn(mu.shape, generator=gen)
            nll = -(torch.log_softmax(dec(z), dim=1) * x).sum(dim=1).mean()
            kl = 0.5 * (mu.pow(2) + logvar.exp() - 1 - logvar).sum(dim=1).mean()
            loss = nll + beta * kl
            if anchors is not None:  # L_A = mean_{i in S_x} E||z - e_i||^2, closed form
                n = x.sum(dim=1).clamp_min(1)
                e_sq = (x @ anchors.pow(2).sum(dim=1)) / n
                cross = ((x @ anchors) / n[:, None] * mu).sum(dim=1)
                la = mu.pow(2).sum(1) + logvar.exp().sum(1) - 2 * cross + e_sq
                loss = loss + lambda_a * la.mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
        if epoch + 1 in (1, 3):
            snapshot(f"epoch {epoch + 1}")
    return wrapped(enc, dec, anchors)


def ml100k_file() -> Path:
    """Extract ML-100k from the recbole wheel (``radius data fetch-ml100k`` gets it)."""
    from radius.data.ml100k import extract_ml100k, find_ml100k_wheel

    wheel = find_ml100k_wheel()
    if wheel is None:
        sys.exit("ML-100k not found: run `radius data fetch-ml100k` or pass --data PATH")
    return extract_ml100k(wheel, Path(tempfile.mkdtemp()) / "ml-100k.inter")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", help="ratings file or prepared folder (default: ML-100k)")
    ap.add_argument("--claims", default="all", help="claims to verify (default all)")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    t0 = time.perf_counter()

    ds = radius.load_dataset(args.data or ml100k_file())
    train = torch.from_numpy(np.asarray(ds.train.todense(), dtype=np.float32))
    along: dict[str, nn.Module] = {}  # the PIA model along its training, for T2.3
    models = {
        "clean": fit_vae(train, keep_rate=1.0),
        "masking": fit_vae(train, keep_rate=0.5),
        "pia": fit_vae(train, keep_rate=0.5, lambda_a=0.1, along=along),
    }
    t_train = time.perf_counter() - t0

    def fit(beta: float, seed: int = 0) -> nn.Module:  # the beta sweep retrains OUR model
        return fit_vae(train, keep_rate=0.5, beta=beta, epochs=6, seed=seed)

    results = radius.verify.run_all(
        args.claims,
        models=models,
        dataset=ds,
        fit=fit,
        quick=True,
        claim_options={"beta-kl": {"betas": (0.0, 0.5, 2.0)}, "2.3": {"along": along}},
    )
    print(radius.verify.format_table(results))
    print(
        f"\n{ds.name}: {ds.train.shape[0]} training users x {ds.n_items} items; "
        f"training {t_train:.1f} s, total {time.perf_counter() - t0:.1f} s"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
