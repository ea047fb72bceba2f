"""RecVAE epoch time against Multi-VAE's, in the same run (issue: RecVAE with PIA).

Both models train through radius's own trainers (``radius.training.trainers.make_trainer``) on the
same data, seed and batches. One RecVAE "epoch" is ``enc_epochs`` encoder passes plus
one decoder pass (Shenbin et al.), so it is expected to cost about
``enc_epochs + 1`` Multi-VAE epochs minus the cheaper linear decoder. Times are process
CPU seconds (robust to other load on the machine), minimum over ``--epochs`` epochs
after one warm-up epoch.

    python bench/bench_recvae.py --threads 1 --epochs 3
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch

from radius.data.synthetic import default_dataset
from radius.io import atomic_write_json
from radius.training.build import build_model
from radius.training.config import setting_config
from radius.training.trainers import make_trainer


def time_epochs(config, dataset, epochs: int) -> list[float]:
    model = build_model(config, dataset.n_items)
    trainer = make_trainer(model, config)
    gen = torch.Generator().manual_seed(config.seed)
    rng = np.random.default_rng(config.seed)
    n = dataset.train.shape[0]
    steps = 1000
    times = []
    for e in range(epochs + 1):  # the first epoch is a warm-up
        perm = rng.permutation(n)
        t0 = time.process_time()
        trainer.run_epoch(dataset.train, perm, 0, steps, gen)
        if e > 0:
            times.append(time.process_time() - t0)
    return times


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", default="bench/results/recvae.json")
    args = ap.parse_args()
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    ds = default_dataset()
    rows = {}
    for name, setting in (("multvae", "pia"), ("recvae", "pia")):
        cfg = setting_config(setting, model=name)
        t = time_epochs(cfg, ds, args.epochs)
        rows[f"{name}+{setting}"] = {"epoch_cpu_s_min": min(t), "epoch_cpu_s": t}
    ratio = rows["recvae+pia"]["epoch_cpu_s_min"] / rows["multvae+pia"]["epoch_cpu_s_min"]
    out = {
        "data": ds.summary(),
        "threads": args.threads,
        "epochs_timed": args.epochs,
        "enc_epochs": setting_config("pia", model="recvae").enc_epochs,
        "results": rows,
        "ratio_recvae_over_multvae": ratio,
    }
    print(f"{'model':<14}{'epoch CPU s (min)':>20}")
    for k, v in rows.items():
        print(f"{k:<14}{v['epoch_cpu_s_min']:>20.3f}")
    print(f"RecVAE / Multi-VAE epoch time: {ratio:.2f}x")
    atomic_write_json(Path(args.out), out)
    print(f"JSON: {args.out}")


if __name__ == "__main__":
    main()
