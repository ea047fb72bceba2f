r"""Quality at convergence: radius against a plain dense reference loop, same splits.

For every (dataset, setting, seed) two models are trained to convergence on the very
same users and items and scored on the same test users:

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

Settings: clean (rho = 1), masking (rho = 0.5), masking + PIA. Test nDCG@100 and
Recall@20 are computed for both with ``radius.training.metrics.rank_metrics`` (same metric
code), per user. Per (dataset, setting): the seed spread of each side
(``radius.stats.seed_spread``) and a paired user bootstrap of radius - reference on
seed-averaged per-user scores (``radius.stats.paired_bootstrap``, 95%, 2000 draws).

Each (dataset, implementation, setting, seed) is one run written to
``bench/results/quality-runs/<data>-<impl>-<setting>-s<seed>.json`` (per-user test
scores, stop epoch, seconds), so an interrupted or partial job keeps what it finished
and two processes can share the work; ``--summarise`` aggregates whatever runs exist
into ``bench/results/quality.json`` and prints the table.

Run from the repository root (one torch thread; ML-100k ~10 min, synth-ml1m hours on
the shared 2-core machine)::

    OMP_NUM_THREADS=1 python bench/bench_quality.py --data ml100k --seeds 0,1,2
    OMP_NUM_THREADS=1 python bench/bench_quality.py --data synth-ml1m --seeds 0
    python bench/bench_quality.py --summarise
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
DATASETS = ("ml100k", "synth-ml1m")
RUNS_DIR = ROOT / "bench" / "results" / "quality-runs"
OUT = ROOT / "bench" / "results" / "quality.json"

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
def ref_scores(model: RefVAE, fold_in, batch: int = 1000) -> np.ndarray:
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
def ref_val_ndcg(model: RefVAE, fold_in, heldout) -> float:
    """The reference's own validation nDCG@100 (batched top-k in torch)."""
    scores = torch.from_numpy(ref_scores(model, fold_in))
    y = torch.from_numpy(heldout.toarray().astype(np.float32))
    top = torch.topk(scores, 100, dim=1).indices
    hits = torch.gather(y, 1, top)
    n_true = y.sum(1).long()
    ok = n_true > 0
    nd = (hits * _DISC).sum(1)[ok] / _IDCG[n_true[ok].clamp(max=100)]
    return float(nd.mean())


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
    best, best_epoch, best_state, stale, step = -1.0, -1, None, 0, 0
    curve = []
    for epoch in range(epochs):
        model.train()
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


# --------------------------------------------------------------------------- radius
def radius_config(setting: str, seed: int, *, epochs: int | None, patience: int | None):
    """radius's defaults for ``setting`` (only the budget may be overridden, for tests)."""
    from radius.training.config import TrainConfig, setting_config

    over: dict[str, Any] = {}
    if epochs is not None:
        over["epochs"] = epochs
    if patience is not None:
        over["patience"] = patience
    return setting_config(setting, TrainConfig(seed=seed, device="cpu", **over))


def run_radius(ds, setting: str, seed: int, *, epochs: int | None, patience: int | None):
    import warnings

    from radius.training.metrics import score_users
    from radius.training.trainer import train

    cfg = radius_config(setting, seed, epochs=epochs, patience=patience)
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
def run_one(ds, data: str, impl: str, setting: str, seed: int, args) -> dict[str, Any]:
    from radius.training.metrics import rank_metrics

    t0, c0 = time.perf_counter(), time.process_time()
    if impl == "radius":
        out = run_radius(ds, setting, seed, epochs=args.epochs, patience=args.patience)
    else:
        out = run_reference(
            ds,
            setting,
            seed,
            epochs=args.epochs or REF["epochs"],
            patience=args.patience or REF["patience"],
        )
    scores = out.pop("scores")
    per_user = rank_metrics(scores, ds.test_te, (("ndcg", 100), ("recall", 20)))
    rec = {
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


def run_path(runs_dir: Path, data: str, impl: str, setting: str, seed: int) -> Path:
    return runs_dir / f"{data}-{impl}-{setting}-s{seed}.json"


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


def summarise(runs_dir: Path) -> dict[str, Any]:
    """Seed spreads and paired user-bootstrap intervals of radius - reference."""
    from radius.stats import paired_bootstrap, seed_spread

    runs = [json.loads(p.read_text()) for p in sorted(runs_dir.glob("*.json"))]
    try:
        shown = str(runs_dir.resolve().relative_to(ROOT))
    except ValueError:
        shown = str(runs_dir)
    out: dict[str, Any] = {"runs_dir": shown, "datasets": {}}
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


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", default="ml100k", help=f"one of {', '.join(DATASETS)}")
    ap.add_argument("--seeds", default="0,1,2", help="comma list of seeds")
    ap.add_argument("--settings", default=",".join(SETTINGS))
    ap.add_argument("--impls", default=",".join(IMPLS))
    ap.add_argument("--threads", type=int, default=1, help="torch threads")
    ap.add_argument("--wheel", help="path to the recbole wheel (ML-100k)")
    ap.add_argument("--runs-dir", dest="runs_dir", default=str(RUNS_DIR))
    ap.add_argument("--out", default=str(OUT))
    ap.add_argument("--redo", action="store_true", help="rerun runs that already exist")
    ap.add_argument("--summarise", action="store_true", help="only aggregate existing runs")
    # budget overrides, for the tests' tiny runs only (the bench uses the defaults)
    ap.add_argument("--epochs", type=int, default=None, help=argparse.SUPPRESS)
    ap.add_argument("--patience", type=int, default=None, help=argparse.SUPPRESS)
    ap.add_argument("--synthetic-tiny", dest="tiny", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    runs_dir = Path(args.runs_dir)
    runs_dir.mkdir(parents=True, exist_ok=True)
    from radius.io import atomic_write_json

    if not args.summarise:
        if args.tiny:
            args.data = "tiny"
            from radius.data.synthetic import SyntheticParams, default_dataset

            ds = default_dataset(SyntheticParams(n_users=300, n_items=120, n_max=100, seed=0))
        else:
            if args.data not in DATASETS:
                ap.error(f"unknown dataset {args.data!r}; choose from {DATASETS}")
            from bench_train import build_dataset

            ds = build_dataset(args.data, args.wheel)
        seeds = [int(s) for s in args.seeds.split(",") if s.strip()]
        settings = [s for s in args.settings.split(",") if s.strip()]
        impls = [s for s in args.impls.split(",") if s.strip()]
        for seed in seeds:
            for setting in settings:
                for impl in impls:
                    path = run_path(runs_dir, args.data, impl, setting, seed)
                    if path.is_file() and not args.redo:
                        continue
                    print(f"[{args.data}] {impl} {setting} seed {seed} ...", flush=True)
                    rec = run_one(ds, args.data, impl, setting, seed, args)
                    print(
                        f"    test nDCG@100 {rec['test']['ndcg@100']:.4f}, Recall@20 "
                        f"{rec['test']['recall@20']:.4f}; {rec['epochs_run']} epochs "
                        f"(best {rec['best_epoch']}, stopped {rec['stopped']}), "
                        f"{rec['wall_s']:.0f} s",
                        flush=True,
                    )
                    atomic_write_json(path, rec)
    summary = summarise(runs_dir)
    summary["command"] = "python bench/bench_quality.py " + " ".join(
        argv if argv is not None else sys.argv[1:]
    )
    summary["reference_recipe"] = REF
    atomic_write_json(Path(args.out), summary)
    print(table(summary))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
