r"""Quality at convergence: radius against plain dense reference loops, same splits.

For every (model, dataset, setting, seed) two models are trained to convergence on the
very same users and items and scored on the same test users.

Multi-VAE (``--model multvae``, the default):

- ``radius``: ``radius.training.trainer.train`` with ``setting_config(setting,
  TrainConfig(seed=seed, device="cpu"))``: the toolkit's defaults, unchanged;
- ``reference``: a plain PyTorch Multi-VAE loop written here the way dawenl/vae_cf does
  it: dense batch, ``F.normalize`` then inverted dropout (``F.dropout``, keep 0.5, 1/rho
  rescale), [I-600-200-600-I] tanh, Xavier weights and N(0, 0.001^2) biases, Adam lr
  1e-3, batch 500, beta annealed linearly to 0.2 over 50 epochs' worth of steps, up to
  200 epochs with early stopping (patience 20) on validation nDCG@100, best validation
  weights kept. Its PIA (the issue's reference): anchors ~ N(0, 0.01^2), lambda_A = 1,
  L_A in closed form (theory.md P3.1),

  .. math::

      L_A = \|\mu - \bar e\|^2 + \operatorname{tr}\Sigma
            + \tfrac1n\sum_{i\in S}\|e_i - \bar e\|^2 ,

  with mu and Sigma from the masked input and S the clean support.

RecVAE (``--model recvae``):

- ``radius``: ``train`` with ``setting_config(setting, TrainConfig(model="recvae",
  seed=seed, device="cpu"))``, RecVAE's per-model defaults unchanged;
- ``reference``: a plain PyTorch RecVAE loop written here the way ilya-shenbin/RecVAE's
  ``model.py`` and ``run.py`` do it: encoder input ``x / (||x|| + 1e-10)`` then
  ``F.dropout`` (rate 0.5 in the encoder phase, 0 in the decoder phase), five densely
  connected ``nn.Linear`` layers (PyTorch's default initialisation) with swish and
  ``LayerNorm(eps=0.1)``, a linear decoder; the composite prior

  .. math::

      p(z \mid \phi_{old}, x) = \tfrac{3}{20}\mathcal N(0, I)
          + \tfrac34\mathcal N(\mu_{\phi_{old}}(x), \sigma^2_{\phi_{old}}(x))
          + \tfrac1{10}\mathcal N(0, e^{10} I)

  whose middle component is a separate encoder (its own random initialisation, frozen)
  that receives the encoder's weights after every encoder phase and sees the clean
  input; the loss per user
  :math:`-\sum_i x_i\log\operatorname{softmax}(f(z))_i + \gamma\,|x|\,
  [\log q(z\mid x) - \log p(z)]` (single-sample KL, gamma = 0.005), averaged over the
  batch; each epoch three encoder passes (Adam on the encoder only, a fresh shuffle each)
  then the prior update then one decoder pass (Adam on the decoder only, clean input),
  lr 5e-4, batch 500; evaluation from mu of the clean fold-in. ``run.py`` trains a fixed
  50 epochs and keeps the best validation epoch; here both sides stop early on
  validation nDCG@100 (patience 20) within RecVAE's epoch budget (``REF_RECVAE``, the
  same as radius's default). Clean input is the encoder phase's dropout rate 0; PIA adds
  lambda_A L_A (the closed form above, lambda_A = 0.1, radius's RecVAE default, anchors
  N(0, 0.01^2) trained with the encoder) to the encoder phase only.

Settings: clean (rho = 1), masking (rho = 0.5), masking + PIA. Test nDCG@100 and
Recall@20 are computed for both with ``radius.training.metrics.rank_metrics`` (same metric
code), per user. Per (dataset, setting): the seed spread of each side
(``radius.stats.seed_spread``) and a paired user bootstrap of radius - reference on
seed-averaged per-user scores (``radius.stats.paired_bootstrap``, 95%, 2000 draws).

Each (model, dataset, implementation, setting, seed) is one run written to
``bench/results/quality-runs/<data>-<impl>-<setting>-s<seed>.json`` (Multi-VAE) or
``<data>-recvae-<impl>-<setting>-s<seed>.json`` (RecVAE) (per-user test scores, stop
epoch, seconds), so an interrupted or partial job keeps what it finished and two
processes can share the work; ``--summarise`` aggregates whatever runs of the model
exist into ``bench/results/quality.json`` (Multi-VAE) or ``quality-recvae.json`` and
prints the table.

Run from the repository root (one torch thread; ML-100k ~10 min, synth-ml1m hours on
the shared 2-core machine)::

    OMP_NUM_THREADS=1 python bench/bench_quality.py --data ml100k --seeds 0,1,2
    OMP_NUM_THREADS=1 python bench/bench_quality.py --data synth-ml1m --seeds 0
    python bench/bench_quality.py --summarise
    OMP_NUM_THREADS=1 python bench/bench_quality.py --model recvae --data ml100k \
        --seeds 0,1,2 --settings masking,clean
    python bench/bench_quality.py --model recvae --summarise
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "bench"))

SETTINGS = ("masking", "pia", "clean")
IMPLS = ("radius", "reference")
# radius with one knob changed (for the masking - clean analysis, ``--gap``): name ->
# (model, config overrides)
VARIANTS: dict[str, tuple[str, dict[str, Any]]] = {
    "radius-stdprior": ("recvae", {"recvae_prior": "standard"}),
}
DATASETS = ("ml100k", "synth-ml1m", "default")  # default: the embedded synthetic default
MODELS = ("multvae", "recvae")
RUNS_DIR = ROOT / "bench" / "results" / "quality-runs"
OUT = ROOT / "bench" / "results" / "quality.json"
OUTS = {"multvae": OUT, "recvae": ROOT / "bench" / "results" / "quality-recvae.json"}

# The reference recipe (dawenl/vae_cf; the issue's reference PIA loop).
REF = dict(
    hidden=600,
    latent=200,
    batch=500,
    lr=1e-3,
    beta_cap=0.2,
    anneal_epochs=50,
    epochs=200,
    patience=20,
    anchor_std=0.01,
    lambda_a=1.0,
)
KEEP = {"clean": 1.0, "masking": 0.5, "pia": 0.5}

# The RecVAE reference recipe (ilya-shenbin/RecVAE run.py and model.py; PIA as in
# radius's RecVAE default). The budget (epochs, patience) is radius's RecVAE default, so
# both sides stop on the same rule.
REF_RECVAE = dict(
    hidden=600,
    latent=200,
    batch=500,
    lr=5e-4,
    gamma=0.005,
    enc_epochs=3,
    dec_epochs=1,
    prior_weights=(3 / 20, 3 / 4, 1 / 10),
    wide_logvar=10.0,
    layer_norm_eps=0.1,
    epochs=200,
    patience=20,
    anchor_std=0.01,
    lambda_a=0.1,
)


# --------------------------------------------------------------------------- reference
class RefVAE(nn.Module):
    """Plain Multi-VAE: ``F.normalize``, inverted dropout, Linear/tanh, optional anchors."""

    def __init__(self, n_items: int, *, keep: float, anchors: bool, hidden: int, latent: int):
        super().__init__()
        self.keep, self.latent = keep, latent
        self.enc1 = nn.Linear(n_items, hidden)
        self.enc2 = nn.Linear(hidden, 2 * latent)
        self.dec1 = nn.Linear(latent, hidden)
        self.dec2 = nn.Linear(hidden, n_items)
        for lin in (self.enc1, self.enc2, self.dec1, self.dec2):
            nn.init.xavier_uniform_(lin.weight)
            nn.init.normal_(lin.bias, std=0.001)
        self.anchors = (
            nn.Parameter(torch.randn(n_items, latent) * REF["anchor_std"]) if anchors else None
        )

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = F.normalize(x, dim=1)  # (B, I)
        h = F.dropout(h, p=1.0 - self.keep, training=self.training and self.keep < 1.0)
        h = self.enc2(torch.tanh(self.enc1(h)))  # (B, 2d)
        return h[:, : self.latent], h[:, self.latent :]

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        return self.dec2(torch.tanh(self.dec1(z)))  # (B, I)


def ref_anchor_loss(
    x: torch.Tensor, mu: torch.Tensor, logvar: torch.Tensor, e: torch.Tensor
) -> torch.Tensor:
    """Mean over users with items of the closed-form L_A (P3.1); S = support of clean x."""
    s = (x > 0).float()  # (B, I)
    n = s.sum(1)  # (B,)
    has = n > 0
    nn_ = n.clamp_min(1.0)
    e_bar = (s @ e) / nn_[:, None]  # (B, d)
    spread = (s @ (e * e).sum(1)) / nn_ - (e_bar * e_bar).sum(1)  # (B,)
    la = ((mu - e_bar) ** 2).sum(1) + torch.exp(logvar).sum(1) + spread
    return la[has].mean() if bool(has.any()) else la.sum() * 0.0


@torch.no_grad()
def ref_scores(model: nn.Module, fold_in, batch: int = 1000) -> np.ndarray:
    """Logits at mu(clean fold-in), fold-in items at -inf, (U, I) float32."""
    model.eval()
    out = np.empty(fold_in.shape, dtype=np.float32)
    for s in range(0, fold_in.shape[0], batch):
        x = torch.from_numpy(fold_in[s : s + batch].toarray().astype(np.float32))
        logits = model.decode(model.encode(x)[0])
        logits[x > 0] = -torch.inf
        out[s : s + batch] = logits.numpy()
    model.train()
    return out


_DISC = 1.0 / torch.log2(torch.arange(2, 102, dtype=torch.float32))  # (100,)
_IDCG = torch.cat([torch.zeros(1), torch.cumsum(_DISC, 0)])  # (101,)


@torch.no_grad()
def ref_val_ndcg(model: nn.Module, fold_in, heldout) -> float:
    """The reference's own validation nDCG@100 (batched top-k in torch)."""
    scores = torch.from_numpy(ref_scores(model, fold_in))
    y = torch.from_numpy(heldout.toarray().astype(np.float32))
    top = torch.topk(scores, 100, dim=1).indices
    hits = torch.gather(y, 1, top)
    n_true = y.sum(1).long()
    ok = n_true > 0
    nd = (hits * _DISC).sum(1)[ok] / _IDCG[n_true[ok].clamp(max=100)]
    return float(nd.mean())


def fit_early_stopping(model: nn.Module, ds, run_epoch, *, epochs: int, patience: int):
    """The reference loops' stop rule: ``run_epoch(epoch)`` trains one epoch, then the
    validation nDCG@100 decides; the best-validation weights are kept and loaded back.
    Returns the record (test scores from the best weights, stop epoch, curve)."""
    best, best_epoch, best_state, stale = -1.0, -1, None, 0
    curve = []
    for epoch in range(epochs):
        model.train()
        run_epoch(epoch)
        val = ref_val_ndcg(model, ds.val_tr, ds.val_te)
        curve.append(val)
        if val > best:
            best, best_epoch, stale = val, epoch, 0
            best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
        else:
            stale += 1
        if stale >= patience:
            break
    stopped = "early" if stale >= patience else "cap"
    model.load_state_dict(best_state)
    return {
        "scores": ref_scores(model, ds.test_tr),
        "best_epoch": best_epoch,
        "epochs_run": len(curve),
        "stopped": stopped,
        "val_ndcg@100": best,
        "val_curve": curve,
    }


def run_reference(ds, setting: str, seed: int, *, epochs: int, patience: int) -> dict[str, Any]:
    """Train the reference to early stopping; the best-validation model and its record."""
    torch.manual_seed(seed)
    model = RefVAE(
        ds.n_items,
        keep=KEEP[setting],
        anchors=setting == "pia",
        hidden=REF["hidden"],
        latent=REF["latent"],
    )
    opt = torch.optim.Adam(model.parameters(), lr=REF["lr"])
    rng = np.random.default_rng(seed)
    n = ds.train.shape[0]
    anneal_steps = max(1, int(REF["anneal_epochs"] * -(-n // REF["batch"])))
    step = 0

    def run_epoch(epoch: int) -> None:
        nonlocal step
        perm = rng.permutation(n)
        for s in range(0, n, REF["batch"]):
            x = torch.from_numpy(ds.train[perm[s : s + REF["batch"]]].toarray().astype(np.float32))
            beta = REF["beta_cap"] * min(1.0, step / anneal_steps)
            mu, logvar = model.encode(x)
            z = mu + torch.exp(0.5 * logvar) * torch.randn_like(mu)
            nll = -(F.log_softmax(model.decode(z), dim=1) * x).sum(1).mean()
            kl = 0.5 * (torch.exp(logvar) + mu * mu - 1.0 - logvar).sum(1).mean()
            loss = nll + beta * kl
            if model.anchors is not None:
                loss = loss + REF["lambda_a"] * ref_anchor_loss(x, mu, logvar, model.anchors)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            step += 1

    return fit_early_stopping(model, ds, run_epoch, epochs=epochs, patience=patience)


# --------------------------------------------------------------------------- RecVAE reference
def ref_log_norm_pdf(x: torch.Tensor, mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """Elementwise log N(x; mu, e^logvar)."""
    return -0.5 * (logvar + np.log(2 * np.pi) + (x - mu).pow(2) / logvar.exp())


class RefRecVAEEncoder(nn.Module):
    """RecVAE's encoder: h_k = LN(swish(W_k h_{k-1} + sum_{j<k} h_j)), five layers."""

    def __init__(self, n_items: int, hidden: int, latent: int, eps: float):
        super().__init__()
        self.fcs = nn.ModuleList(
            [nn.Linear(n_items, hidden)] + [nn.Linear(hidden, hidden) for _ in range(4)]
        )
        self.lns = nn.ModuleList(nn.LayerNorm(hidden, eps=eps) for _ in range(5))
        self.fc_mu = nn.Linear(hidden, latent)
        self.fc_logvar = nn.Linear(hidden, latent)

    def forward(self, x: torch.Tensor, dropout_rate: float) -> tuple[torch.Tensor, torch.Tensor]:
        x = x / (x.pow(2).sum(-1).sqrt() + 1e-10)[:, None]  # (B, I)
        return self.trunk(F.dropout(x, p=dropout_rate, training=self.training))

    def trunk(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The layers after the input's normalisation and dropout: (B, I) -> mu, logvar."""
        hs: list[torch.Tensor] = []
        h = x
        for fc, ln in zip(self.fcs, self.lns):
            pre = fc(h) + sum(hs) if hs else fc(h)
            h = ln(pre * torch.sigmoid(pre))  # swish
            hs.append(h)
        return self.fc_mu(h), self.fc_logvar(h)  # (B, d) each


class RefRecVAE(nn.Module):
    """Plain RecVAE: encoder, composite prior with a frozen old encoder, linear decoder."""

    def __init__(self, n_items: int, *, anchors: bool):
        super().__init__()
        r = REF_RECVAE
        self.encoder = RefRecVAEEncoder(n_items, r["hidden"], r["latent"], r["layer_norm_eps"])
        self.encoder_old = RefRecVAEEncoder(n_items, r["hidden"], r["latent"], r["layer_norm_eps"])
        self.encoder_old.requires_grad_(False)
        self.decoder = nn.Linear(r["latent"], n_items)
        self.anchors = (
            nn.Parameter(torch.randn(n_items, r["latent"]) * r["anchor_std"]) if anchors else None
        )

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.encoder(x, 0.0)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        return self.decoder(z)

    def log_prior(self, x: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        """log p(z | phi_old, x), elementwise (B, d); the old encoder sees clean x."""
        mu_old, logvar_old = self.encoder_old(x, 0.0)
        zero = torch.zeros_like(z)
        comps = [
            ref_log_norm_pdf(z, zero, zero),
            ref_log_norm_pdf(z, mu_old, logvar_old),
            ref_log_norm_pdf(z, zero, zero + REF_RECVAE["wide_logvar"]),
        ]
        weighted = [c + np.log(w) for c, w in zip(comps, REF_RECVAE["prior_weights"])]
        return torch.logsumexp(torch.stack(weighted, dim=-1), dim=-1)

    def loss(self, x: torch.Tensor, dropout_rate: float, *, lambda_a: float) -> torch.Tensor:
        """Negative ELBO with KL weight gamma |x| per user (+ lambda_A L_A), batch mean."""
        mu, logvar = self.encoder(x, dropout_rate)
        z = mu + torch.exp(0.5 * logvar) * torch.randn_like(mu)
        mll = (F.log_softmax(self.decoder(z), dim=-1) * x).sum(-1).mean()
        kl_weight = REF_RECVAE["gamma"] * x.sum(-1)  # (B,)
        kld = (ref_log_norm_pdf(z, mu, logvar) - self.log_prior(x, z)).sum(-1)
        loss = -(mll - (kld * kl_weight).mean())
        if self.anchors is not None and lambda_a > 0:
            loss = loss + lambda_a * ref_anchor_loss(x, mu, logvar, self.anchors)
        return loss

    def update_prior(self) -> None:
        self.encoder_old.load_state_dict(self.encoder.state_dict())


def run_reference_recvae(
    ds, setting: str, seed: int, *, epochs: int, patience: int
) -> dict[str, Any]:
    """The RecVAE reference loop to early stopping: per epoch ``enc_epochs`` encoder
    passes (dropout 1 - rho, + lambda_A L_A under PIA), the prior update, ``dec_epochs``
    decoder passes (clean input); each pass a fresh shuffle, Adam per part."""
    r = REF_RECVAE
    torch.manual_seed(seed)
    model = RefRecVAE(ds.n_items, anchors=setting == "pia")
    enc_params = list(model.encoder.parameters())
    if model.anchors is not None:
        enc_params.append(model.anchors)
    opt_enc = torch.optim.Adam(enc_params, lr=r["lr"])
    opt_dec = torch.optim.Adam(model.decoder.parameters(), lr=r["lr"])
    rng = np.random.default_rng(seed)
    n = ds.train.shape[0]

    def one_pass(opt, dropout_rate: float, lambda_a: float) -> None:
        perm = rng.permutation(n)
        for s in range(0, n, r["batch"]):
            x = torch.from_numpy(ds.train[perm[s : s + r["batch"]]].toarray().astype(np.float32))
            loss = model.loss(x, dropout_rate, lambda_a=lambda_a)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()

    def run_epoch(epoch: int) -> None:
        for _ in range(r["enc_epochs"]):
            one_pass(opt_enc, 1.0 - KEEP[setting], r["lambda_a"] if setting == "pia" else 0.0)
        model.update_prior()
        for _ in range(r["dec_epochs"]):
            one_pass(opt_dec, 0.0, 0.0)

    return fit_early_stopping(model, ds, run_epoch, epochs=epochs, patience=patience)


# --------------------------------------------------------------------------- radius
def radius_config(
    setting: str,
    seed: int,
    *,
    epochs: int | None,
    patience: int | None,
    model: str = "multvae",
    overrides: dict[str, Any] | None = None,
):
    """radius's defaults of ``model`` for ``setting`` (the budget may be overridden for
    tests, and a ``VARIANTS`` entry's knobs for the gap analysis)."""
    from radius.training.config import TrainConfig, setting_config

    over: dict[str, Any] = dict(overrides or {})
    if epochs is not None:
        over["epochs"] = epochs
    if patience is not None:
        over["patience"] = patience
    return setting_config(setting, TrainConfig(model=model, seed=seed, device="cpu", **over))


def run_radius(
    ds,
    setting: str,
    seed: int,
    *,
    epochs: int | None,
    patience: int | None,
    model: str = "multvae",
    overrides: dict[str, Any] | None = None,
):
    import warnings

    from radius.training.metrics import score_users
    from radius.training.trainer import train

    cfg = radius_config(
        setting, seed, epochs=epochs, patience=patience, model=model, overrides=overrides
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the cap is recorded in ``stopped``
        res = train(ds, cfg, progress=False, evaluate_test=False)
    return {
        "scores": score_users(res.model, ds.test_tr),
        "best_epoch": res.meta["best_epoch"],
        "epochs_run": res.meta["epochs_run"],
        "stopped": res.meta["stopped"],
        "val_ndcg@100": res.val["ndcg@100"],
        "val_curve": [h["val_ndcg@100"] for h in res.history],
        "config": cfg.key_dict(),
    }


# --------------------------------------------------------------------------- runs
def build_dataset(name: str, wheel: str | None):
    """ML-100k and synth-ml1m as bench_train builds them; ``default`` is radius's embedded
    synthetic default (``radius.data.synthetic.default_dataset()``, what ``radius verify``
    and the ablation train on)."""
    if name == "default":
        from radius.data.synthetic import default_dataset

        return default_dataset()
    from bench_train import build_dataset as build

    return build(name, wheel)


def run_one(ds, data: str, impl: str, setting: str, seed: int, args) -> dict[str, Any]:
    from radius.training.metrics import rank_metrics

    model = args.model
    t0, c0 = time.perf_counter(), time.process_time()
    if impl == "radius" or impl in VARIANTS:
        over = VARIANTS[impl][1] if impl in VARIANTS else None
        out = run_radius(
            ds,
            setting,
            seed,
            epochs=args.epochs,
            patience=args.patience,
            model=model,
            overrides=over,
        )
    else:
        recipe, loop = (
            (REF_RECVAE, run_reference_recvae) if model == "recvae" else (REF, run_reference)
        )
        out = loop(
            ds,
            setting,
            seed,
            epochs=args.epochs or recipe["epochs"],
            patience=args.patience or recipe["patience"],
        )
    scores = out.pop("scores")
    per_user = rank_metrics(scores, ds.test_te, (("ndcg", 100), ("recall", 20)))
    rec = {
        "model": model,
        "data": data,
        "impl": impl,
        "setting": setting,
        "seed": seed,
        **out,
        "test": {k: float(np.nanmean(v)) for k, v in per_user.items()},
        "per_user": {k: [round(float(x), 6) for x in v] for k, v in per_user.items()},
        "wall_s": time.perf_counter() - t0,
        "cpu_s": time.process_time() - c0,
        "threads": torch.get_num_threads(),
        "load_avg_1min": os.getloadavg()[0],
    }
    return rec


def run_path(
    runs_dir: Path, data: str, impl: str, setting: str, seed: int, model: str = "multvae"
) -> Path:
    tag = "" if model == "multvae" else f"{model}-"
    return runs_dir / f"{data}-{tag}{impl}-{setting}-s{seed}.json"


def run_model(rec: dict[str, Any]) -> str:
    """The model of a run record (records written before RecVAE runs are Multi-VAE's)."""
    return rec.get("model", "multvae")


def seed_noise(rad: dict[str, Any], ref: dict[str, Any]) -> dict[str, Any]:
    r"""Is radius - reference within the seed noise? Stated before it is computed:

    .. math::

        |\bar m_{radius} - \bar m_{ref}| \le 2\sqrt{s_{radius}^2/n_{radius}
            + s_{ref}^2/n_{ref}}

    (two standard errors of the difference of seed means, s the seed standard
    deviations). The user bootstrap interval beside it holds the trained models fixed
    and resamples test users only, so it does not contain the seed-to-seed variation of
    training; this criterion does. Undefined (None) with fewer than 2 seeds a side.
    """
    diff = rad["mean"] - ref["mean"]
    if rad["n"] < 2 or ref["n"] < 2:
        return {"diff": diff, "two_se": None, "within": None}
    two_se = 2.0 * float(np.sqrt(rad["std"] ** 2 / rad["n"] + ref["std"] ** 2 / ref["n"]))
    return {"diff": diff, "two_se": two_se, "within": bool(abs(diff) <= two_se)}


def summarise(runs_dir: Path, model: str = "multvae") -> dict[str, Any]:
    """Seed spreads and paired user-bootstrap intervals of radius - reference (``model``'s
    runs only)."""
    from radius.stats import paired_bootstrap, seed_spread

    runs = [json.loads(p.read_text()) for p in sorted(runs_dir.glob("*.json"))]
    runs = [r for r in runs if run_model(r) == model]
    try:
        shown = str(runs_dir.resolve().relative_to(ROOT))
    except ValueError:
        shown = str(runs_dir)
    out: dict[str, Any] = {"runs_dir": shown, "datasets": {}}
    if model != "multvae":  # quality.json (Multi-VAE) keeps its earlier layout
        out = {"model": model, **out}
    names = [d for d in DATASETS if any(r["data"] == d for r in runs)]
    names += sorted({r["data"] for r in runs} - set(names))
    for data in names:
        for setting in SETTINGS:
            by = {
                impl: {
                    r["seed"]: r
                    for r in runs
                    if r["data"] == data and r["impl"] == impl and r["setting"] == setting
                }
                for impl in IMPLS
            }
            if not any(by.values()):
                continue
            entry: dict[str, Any] = {}
            for impl in IMPLS:
                rs = by[impl]
                entry[impl] = {
                    "seeds": sorted(rs),
                    "stopped": {s: r["stopped"] for s, r in sorted(rs.items())},
                    "best_epoch": {s: r["best_epoch"] for s, r in sorted(rs.items())},
                    "epochs_run": {s: r["epochs_run"] for s, r in sorted(rs.items())},
                    "wall_s": {s: round(r["wall_s"], 1) for s, r in sorted(rs.items())},
                    **{
                        m: seed_spread([r["test"][m] for _, r in sorted(rs.items())])
                        for m in ("ndcg@100", "recall@20")
                    },
                    "val_ndcg@100": seed_spread([r["val_ndcg@100"] for r in rs.values()]),
                }
            common = sorted(set(by["radius"]) & set(by["reference"]))
            entry["paired_seeds"] = common
            entry["seed_noise"] = {
                m: seed_noise(entry["radius"][m], entry["reference"][m])
                for m in ("ndcg@100", "recall@20")
            }
            if common:
                for m in ("ndcg@100", "recall@20"):
                    rad = np.mean([by["radius"][s]["per_user"][m] for s in common], axis=0)
                    ref = np.mean([by["reference"][s]["per_user"][m] for s in common], axis=0)
                    iv = paired_bootstrap(ref, rad, seed=0)
                    entry[f"diff_{m}"] = iv.to_dict()
            out["datasets"].setdefault(data, {})[setting] = entry
    return out


def table(summary: dict[str, Any]) -> str:
    lines = [
        "| data | setting | radius nDCG@100 | reference nDCG@100 | radius - ref [95% users] | "
        "within seed noise (2 SE) | radius Recall@20 | reference Recall@20 | "
        "radius - ref [95% users] | val nDCG@100 radius / ref | seeds | epochs run (best) "
        "radius / ref |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]

    def ms(s: dict[str, Any]) -> str:
        sd = s["std"]
        return f"{s['mean']:.4f} ± {sd:.4f}" if np.isfinite(sd) else f"{s['mean']:.4f}"

    def iv(d: dict[str, Any] | None) -> str:
        if not d:
            return "n/a"
        return f"{d['estimate']:+.4f} [{d['low']:+.4f}, {d['high']:+.4f}]"

    def noise(n: dict[str, Any]) -> str:
        if n["two_se"] is None:
            return "n/a"
        return f"{'yes' if n['within'] else 'no'} ({n['diff']:+.4f} vs {n['two_se']:.4f})"

    for data, settings in summary["datasets"].items():
        for setting in SETTINGS:
            e = settings.get(setting)
            if e is None:
                continue
            rad, ref = e["radius"], e["reference"]
            stops = "; ".join(
                f"{rad['epochs_run'].get(s, '-')}({rad['best_epoch'].get(s, '-')})"
                f"{'*' if rad['stopped'].get(s) == 'cap' else ''} / "
                f"{ref['epochs_run'].get(s, '-')}({ref['best_epoch'].get(s, '-')})"
                f"{'*' if ref['stopped'].get(s) == 'cap' else ''}"
                for s in sorted(set(rad["seeds"]) | set(ref["seeds"]))
            )
            lines.append(
                f"| {data} | {setting} | {ms(rad['ndcg@100']) if rad['seeds'] else '-'} | "
                f"{ms(ref['ndcg@100']) if ref['seeds'] else '-'} | {iv(e.get('diff_ndcg@100'))} | "
                f"{noise(e['seed_noise']['ndcg@100'])} | "
                f"{ms(rad['recall@20']) if rad['seeds'] else '-'} | "
                f"{ms(ref['recall@20']) if ref['seeds'] else '-'} | "
                f"{iv(e.get('diff_recall@20'))} | "
                f"{rad['val_ndcg@100']['mean']:.4f} / {ref['val_ndcg@100']['mean']:.4f} | "
                f"{','.join(map(str, e['paired_seeds']))} | {stops} |"
            )
    return "\n".join(lines)


def _curve_stats(runs: dict[int, dict[str, Any]]) -> dict[str, Any]:
    """Per seed: best and last epochs, how the run stopped, and the validation nDCG@100
    lost from its best epoch to its last one (over-fitting shows as a drop, a run still
    improving when the budget ends as ``stopped == "cap"``)."""
    out = {}
    for s, r in sorted(runs.items()):
        c = r["val_curve"]
        out[s] = {
            "best_epoch": r["best_epoch"],
            "epochs_run": r["epochs_run"],
            "stopped": r["stopped"],
            "val_best": max(c),
            "val_last": c[-1],
            "val_drop_after_best": max(c) - c[-1],
        }
    return out


def gap_analysis(runs_dir: Path, data: str) -> dict[str, Any]:
    """masking - clean per (model, implementation) on ``data``, and what a variant
    changes (variant - radius per setting): paired user bootstraps of seed-averaged
    per-user test nDCG@100 with the seed spread of the per-seed difference."""
    from radius.stats import paired_bootstrap, seed_spread

    m = "ndcg@100"
    runs = [json.loads(p.read_text()) for p in sorted(runs_dir.glob("*.json"))]
    runs = [r for r in runs if r["data"] == data]
    groups: dict[str, dict[str, dict[int, dict[str, Any]]]] = {}
    for r in runs:
        name = f"{run_model(r)}/{r['impl']}"
        groups.setdefault(name, {}).setdefault(r["setting"], {})[r["seed"]] = r

    def diff(lo: dict[int, Any], hi: dict[int, Any]) -> dict[str, Any] | None:
        common = sorted(set(lo) & set(hi))
        if not common:
            return None
        a = np.mean([lo[s]["per_user"][m] for s in common], axis=0)
        b = np.mean([hi[s]["per_user"][m] for s in common], axis=0)
        per_seed = [hi[s]["test"][m] - lo[s]["test"][m] for s in common]
        return {
            "seeds": common,
            "interval": paired_bootstrap(a, b, seed=0).to_dict(),
            "seed_spread": seed_spread(per_seed),
        }

    out: dict[str, Any] = {"data": data, "metric": m, "groups": {}, "variants": {}}
    for name, by in sorted(groups.items()):
        g: dict[str, Any] = {
            s: {m: seed_spread([r["test"][m] for r in rs.values()]), "runs": _curve_stats(rs)}
            for s, rs in sorted(by.items())
        }
        if "clean" in by and "masking" in by:
            g["masking_minus_clean"] = diff(by["clean"], by["masking"])
        out["groups"][name] = g
    for name, by in sorted(groups.items()):
        model, impl = name.split("/")
        base = groups.get(f"{model}/radius")
        if impl in VARIANTS and base is not None:
            out["variants"][name] = {
                s: diff(base[s], by[s]) for s in sorted(set(by) & set(base)) if diff(base[s], by[s])
            }
    return out


def gap_table(gap: dict[str, Any]) -> str:
    """The gap analysis as markdown: one row per (model/impl, setting)."""

    def iv(d: dict[str, Any] | None) -> str:
        if not d:
            return "-"
        i, sp_ = d["interval"], d["seed_spread"]
        return (
            f"{i['estimate']:+.4f} [{i['low']:+.4f}, {i['high']:+.4f}] "
            f"(seeds {sp_['mean']:+.4f} ± {sp_['std']:.4f})"
        )

    lines = [
        "| model / implementation | setting | test nDCG@100 | best epoch (run) per seed | "
        "val drop best -> last | masking - clean [95% users] |",
        "|---|---|---|---|---|---|",
    ]
    for name, g in gap["groups"].items():
        for setting in ("clean", "masking"):
            if setting not in g:
                continue
            e = g[setting]
            runs = e["runs"].values()
            stops = ", ".join(
                f"{r['best_epoch']} ({r['epochs_run']}{'*' if r['stopped'] == 'cap' else ''})"
                for r in runs
            )
            drops = ", ".join(f"{r['val_drop_after_best']:.4f}" for r in runs)
            gap_cell = iv(g.get("masking_minus_clean")) if setting == "masking" else ""
            lines.append(
                f"| {name} | {setting} | {e['ndcg@100']['mean']:.4f} ± "
                f"{e['ndcg@100']['std']:.4f} | {stops} | {drops} | {gap_cell} |"
            )
    for name, by in gap["variants"].items():
        for setting, d in by.items():
            lines.append(f"| {name} - radius | {setting} | {iv(d)} | | | |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="multvae", help=f"one of {', '.join(MODELS)}")
    ap.add_argument("--data", default="ml100k", help=f"one of {', '.join(DATASETS)}")
    ap.add_argument("--seeds", default="0,1,2", help="comma list of seeds")
    ap.add_argument("--settings", default=",".join(SETTINGS))
    ap.add_argument("--impls", default=",".join(IMPLS))
    ap.add_argument("--threads", type=int, default=1, help="torch threads")
    ap.add_argument("--wheel", help="path to the recbole wheel (ML-100k)")
    ap.add_argument("--runs-dir", dest="runs_dir", default=str(RUNS_DIR))
    ap.add_argument(
        "--out",
        help="summary JSON (default: quality.json / quality-recvae.json; with --gap "
        "quality-gap-<data>.json)",
    )
    ap.add_argument("--redo", action="store_true", help="rerun runs that already exist")
    ap.add_argument("--summarise", action="store_true", help="only aggregate existing runs")
    ap.add_argument(
        "--gap",
        action="store_true",
        help="only the masking - clean analysis of the runs on --data in --runs-dir",
    )
    # budget overrides, for the tests' tiny runs only (the bench uses the defaults)
    ap.add_argument("--epochs", type=int, default=None, help=argparse.SUPPRESS)
    ap.add_argument("--patience", type=int, default=None, help=argparse.SUPPRESS)
    ap.add_argument("--synthetic-tiny", dest="tiny", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.model not in MODELS:
        ap.error(f"unknown model {args.model!r}; choose from {MODELS}")
    for flag, given, valid in (
        ("--settings", args.settings, SETTINGS),
        ("--impls", args.impls, IMPLS + tuple(VARIANTS)),
    ):
        bad = [v for v in given.split(",") if v.strip() and v.strip() not in valid]
        if bad:
            ap.error(f"{flag}: unknown {bad}; choose from {valid}")
    for impl in args.impls.split(","):
        if impl.strip() in VARIANTS and VARIANTS[impl.strip()][0] != args.model:
            ap.error(f"--impls {impl.strip()} is a {VARIANTS[impl.strip()][0]} variant")
    if args.gap:
        out_path = Path(args.out or RUNS_DIR.parent / f"quality-gap-{args.data}.json")
    elif args.out:
        out_path = Path(args.out)
    elif Path(args.runs_dir).resolve() != RUNS_DIR.resolve():
        rd = Path(args.runs_dir)  # beside the runs, never the bench's own summary
        out_path = rd.parent / f"{rd.name}-summary-{args.model}.json"
    else:
        out_path = OUTS[args.model]
    torch.set_num_threads(args.threads)
    runs_dir = Path(args.runs_dir)
    runs_dir.mkdir(parents=True, exist_ok=True)
    from radius.io import atomic_write_json

    if args.gap:
        gap = gap_analysis(runs_dir, "tiny" if args.tiny else args.data)
        gap["command"] = "python bench/bench_quality.py " + " ".join(
            argv if argv is not None else sys.argv[1:]
        )
        atomic_write_json(out_path, gap)
        print(gap_table(gap))
        print(f"wrote {out_path}")
        return 0
    if not args.summarise:
        if args.tiny:
            args.data = "tiny"
            from radius.data.synthetic import SyntheticParams, default_dataset

            ds = default_dataset(SyntheticParams(n_users=300, n_items=120, n_max=100, seed=0))
        else:
            if args.data not in DATASETS:
                ap.error(f"unknown dataset {args.data!r}; choose from {DATASETS}")
            ds = build_dataset(args.data, args.wheel)
        seeds = [int(s) for s in args.seeds.split(",") if s.strip()]
        settings = [s.strip() for s in args.settings.split(",") if s.strip()]
        impls = [s.strip() for s in args.impls.split(",") if s.strip()]
        for seed in seeds:
            for setting in settings:
                for impl in impls:
                    path = run_path(runs_dir, args.data, impl, setting, seed, args.model)
                    if path.is_file() and not args.redo:
                        continue
                    print(
                        f"[{args.model} {args.data}] {impl} {setting} seed {seed} ...", flush=True
                    )
                    rec = run_one(ds, args.data, impl, setting, seed, args)
                    print(
                        f"    test nDCG@100 {rec['test']['ndcg@100']:.4f}, Recall@20 "
                        f"{rec['test']['recall@20']:.4f}; {rec['epochs_run']} epochs "
                        f"(best {rec['best_epoch']}, stopped {rec['stopped']}), "
                        f"{rec['wall_s']:.0f} s",
                        flush=True,
                    )
                    atomic_write_json(path, rec)
    summary = summarise(runs_dir, args.model)
    summary["command"] = "python bench/bench_quality.py " + " ".join(
        argv if argv is not None else sys.argv[1:]
    )
    summary["reference_recipe"] = REF_RECVAE if args.model == "recvae" else REF
    atomic_write_json(out_path, summary)
    print(table(summary))
    print(f"wrote {out_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
