"""Training time and stop epochs of the default recipe on the embedded synthetic default.

Trains the ``clean``, ``masking`` and ``pia`` settings with ``TrainConfig()``'s defaults
(200 epochs, patience 20, beta annealed over 50 epochs, input normalised then
keep-masked; PIA lambda_A 1, anchors N(0, 0.01^2)) on
``radius.data.synthetic.default_dataset()``, one torch thread, and records wall and
process CPU seconds, the best and last epochs and how each run stopped. These are the
models ``make run`` (``radius verify --theorem all``) trains first.

Run from the repository root::

    OMP_NUM_THREADS=1 python bench/bench_recipe_default.py
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import warnings
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--settings", default="clean,masking,pia")
    ap.add_argument("--out", default=str(ROOT / "bench" / "results" / "recipe-default.json"))
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    from radius.data.synthetic import default_dataset
    from radius.io import atomic_write_json
    from radius.training.config import TrainConfig, setting_config
    from radius.training.trainer import train

    ds = default_dataset()
    out: dict = {"dataset": ds.summary(), "runs": {}, "load_avg_start": os.getloadavg()}
    for s in args.settings.split(","):
        cfg = setting_config(s, TrainConfig(device="cpu"))
        t0, c0 = time.perf_counter(), time.process_time()
        with warnings.catch_warnings(record=True):
            warnings.simplefilter("always")
            r = train(ds, cfg, progress=False)
        rec = {
            "wall_s": time.perf_counter() - t0,
            "cpu_s": time.process_time() - c0,
            **{k: r.meta[k] for k in ("best_epoch", "epochs_run", "stopped", "warnings")},
            "val_ndcg@100": r.val["ndcg@100"],
            "test_ndcg@100": r.test["means"]["ndcg@100"],
            "config": cfg.key_dict(),
        }
        out["runs"][s] = rec
        print(s, json.dumps({k: v for k, v in rec.items() if k != "config"}), flush=True)
    out["load_avg_end"] = os.getloadavg()
    atomic_write_json(args.out, out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
