"""Bench of the T2.3 claim (``radius.verify.t2_3.run``): CPU time and peak memory.

Two cases, each in a fresh subprocess on one thread (``torch.set_num_threads(1)``):

- ``default``: the embedded default (4,000 training users x 2,000 items) with radius's
  own cached models (trained first if missing; training is not timed): four training
  points (init, epochs 1 and 3 from the along-training side file, the best epoch) and
  ``--seeds`` training seeds;
- ``matrix``: a users x items binary CSR (``--matrix X.npz``, e.g. an ML-20M-shaped
  synthetic set) as the training users, with four seeded Multi-VAE [I-600-200-600-I]
  models given as user models (``along={"init", "epoch 1", "epoch 3"}`` and the final
  one): the cost does not depend on what the weights learnt, so untrained models time
  the claim at that size without hours of training.

Reported: CPU seconds of the claim alone (``time.process_time`` around ``run``), wall
seconds, the process's peak RSS (``ru_maxrss``: it includes the data, the models and
torch), and the claim's own timings and search sizes.

    python bench/bench_t2_3.py --case default --seeds 3
    python bench/bench_t2_3.py --case matrix --matrix X.npz
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent


def _summary(res) -> dict:
    d = res.details
    return {
        "verdict": res.verdict_text,
        "checks": {c.name: c.label for c in res.checks},
        "timings_s": d["timings_s"],
        "points": [
            {
                "label": p["label"],
                "anchors": p["search"]["anchors"],
                "screened": p["search"]["candidates_screened"],
                "fraction_r_share_positive": p["search"]["fraction_r_share_positive"],
                "n_pairs": p["n_pairs"],
                "n_inside": p["n_inside"],
            }
            for p in d["training_points"]
        ],
    }


def run_default(seeds: int) -> dict:
    import torch

    torch.set_num_threads(1)
    from radius.data.synthetic import default_dataset
    from radius.training.cache import default_cache_dir, get_along
    from radius.training.config import TrainConfig
    from radius.verify import t2_3
    from radius.verify.base import VerifyOptions
    from radius.verify.context import VerifyContext

    ds = default_dataset()
    ctx = VerifyContext(
        dataset=ds,
        options=VerifyOptions(seeds=seeds),
        base_config=TrainConfig(),
        cache_dir=default_cache_dir(),
    )
    for cfg in t2_3.models_needed(ctx):  # training and the along replay are not timed
        ctx.model_for(cfg)
    get_along(ds, ctx.config("pia"), cache_dir=ctx.cache_dir)
    rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    t_cpu, t_wall = time.process_time(), time.perf_counter()
    res = t2_3.run(ctx)
    return {
        "case": "default",
        "users": int(ds.train.shape[0]),
        "items": int(ds.n_items),
        "seeds": seeds,
        "cpu_s": time.process_time() - t_cpu,
        "wall_s": time.perf_counter() - t_wall,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "rss_before_claim_mb": rss0,
        **_summary(res),
    }


def run_matrix(path: str) -> dict:
    import numpy as np
    import scipy.sparse as sp
    import torch

    torch.set_num_threads(1)
    from radius.data.dataset import Dataset
    from radius.training.build import build_model
    from radius.training.config import TrainConfig, setting_config
    from radius.verify import t2_3
    from radius.verify.base import VerifyOptions
    from radius.verify.context import VerifyContext

    x = sp.load_npz(path).tocsr().astype(np.float32)
    held = x[:200]
    ds = Dataset(x, held, held, held, held, manifest={"name": Path(path).stem})
    cfg = setting_config("pia", TrainConfig())
    models = []
    for seed in range(4):
        m = build_model(cfg.replace(seed=seed), ds.n_items).eval()  # its own initialisation
        m.keep_rate, m.lambda_a = cfg.keep_rate, cfg.lambda_a
        models.append(m)
    ctx = VerifyContext(dataset=ds, options=VerifyOptions(seeds=1), models={"pia": models[3]})
    along = {"init": models[0], "epoch 1": models[1], "epoch 3": models[2]}
    rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    t_cpu, t_wall = time.process_time(), time.perf_counter()
    res = t2_3.run(ctx, along=along)
    return {
        "case": "matrix",
        "matrix": path,
        "users": int(x.shape[0]),
        "items": int(x.shape[1]),
        "nnz": int(x.nnz),
        "cpu_s": time.process_time() - t_cpu,
        "wall_s": time.perf_counter() - t_wall,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "rss_before_claim_mb": rss0,
        **_summary(res),
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--case", choices=("default", "matrix"), default="default")
    ap.add_argument("--matrix", help="scipy .npz of a binary users x items CSR (case matrix)")
    ap.add_argument("--seeds", type=int, default=3, help="training seeds (case default)")
    ap.add_argument("--out", default=None)
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        res = run_default(args.seeds) if args.case == "default" else run_matrix(args.matrix)
        print(json.dumps(res, default=float))
        return 0
    if args.case == "matrix" and not args.matrix:
        ap.error("--case matrix needs --matrix")
    cmd = [sys.executable, __file__, "--child", "--case", args.case, "--seeds", str(args.seeds)]
    if args.matrix:
        cmd += ["--matrix", args.matrix]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    out = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if out.returncode:
        print(out.stderr, file=sys.stderr)
        return out.returncode
    res = json.loads(out.stdout.strip().splitlines()[-1])
    print(json.dumps({k: v for k, v in res.items() if k != "checks"}, indent=1))
    name = args.case if args.case == "default" else Path(args.matrix).stem
    path = Path(args.out or HERE / "results" / f"t2_3-{name}.json")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(res, indent=1))
    print(f"written {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
