"""Bench of the all-users top-k Jaccard search (radius.analysis.neighbours) at scale.

Compares, on the same binary CSR matrix and the same query users, one thread each:

- ``radius``: ``jaccard_topk`` (scipy CSR @ CSR^T per chunk of queries, the (C, N)
  intersections densified, then a torch top-k per query);
- ``dense-block``: scipy CSR X @ a dense (I, C) block of the queries (nnz(X) x C
  multiply-adds per chunk, whatever the item degrees);
- ``torch-sparse``: the same dense blocks with ``torch.sparse`` CSR @ dense (MKL);
- ``sklearn-cosine``: scikit-learn ``NearestNeighbors(metric="cosine", algorithm="brute")``
  on the sparse rows (it has no Jaccard on sparse input; cosine is the closest metric it
  supports there, so this is a cost reference, not the same answer).

Each variant runs in a fresh subprocess (peak RSS = ``ru_maxrss`` of that process; CPU
time = user + sys of the process). The answers of the three Jaccard variants are
compared (their k similarities must agree to 1e-12).

Usage (the matrix: a scipy ``.npz`` of a binary users x items CSR, e.g. an ML-20M-shaped
synthetic set)::

    python bench/bench_neighbours.py --matrix X.npz --queries 2048 --variants all
    python bench/bench_neighbours.py --matrix X.npz --queries all --variants radius

writes ``bench/results/neighbours-<name>.json``.
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

import numpy as np
import scipy.sparse as sp

HERE = Path(__file__).resolve().parent
VARIANTS = ("radius", "dense-block", "torch-sparse", "sklearn-cosine")
K = 10


def _queries(n: int, spec: str, seed: int) -> np.ndarray:
    if spec == "all":
        return np.arange(n)
    return np.sort(np.random.default_rng(seed).choice(n, size=min(n, int(spec)), replace=False))


def _blocks(x: sp.csr_matrix, rows: np.ndarray, chunk: int, product) -> tuple[np.ndarray, ...]:
    """Top-k Jaccard of ``rows`` with intersections from ``product(q) -> (C, N) array``."""
    import torch

    from radius.analysis.neighbours import topk_rows

    counts = np.diff(x.indptr).astype(np.float32)
    idx_out = np.empty((len(rows), K), np.int64)
    sim_out = np.empty((len(rows), K))
    for s in range(0, len(rows), chunk):
        q = rows[s : s + chunk]
        inter = torch.from_numpy(np.ascontiguousarray(product(q), dtype=np.float32))
        union = torch.from_numpy(counts)[None, :] + torch.from_numpy(counts[q])[:, None] - inter
        jac = torch.where(union > 0, inter / union.clamp_min(1.0), torch.zeros(()))
        jac[torch.arange(len(q)), torch.from_numpy(q)] = -torch.inf
        best = topk_rows(jac, K)
        idx_out[s : s + len(q)] = best.numpy()
        i64 = torch.gather(inter, 1, best).double()
        u64 = torch.gather(union, 1, best).double()
        sim_out[s : s + len(q)] = (i64 / u64.clamp_min(1.0)).numpy()
    return idx_out, -np.sort(-sim_out, axis=1)


def run_variant(name: str, x: sp.csr_matrix, rows: np.ndarray) -> dict:
    import torch

    torch.set_num_threads(1)
    chunk = max(1, (64 * 2**20) // (4 * x.shape[0]))
    t_cpu, t_wall = time.process_time(), time.perf_counter()
    if name == "radius":
        from radius.analysis.neighbours import jaccard_topk

        idx, sim = jaccard_topk(x, K, rows=rows)
    elif name == "torch-sparse":
        xt = torch.sparse_csr_tensor(
            torch.from_numpy(x.indptr.astype(np.int64)),
            torch.from_numpy(x.indices.astype(np.int64)),
            torch.from_numpy(x.data.astype(np.float32)),
            size=x.shape,
        )

        def product(q):
            rhs = torch.from_numpy(x[q].T.toarray())
            return (xt @ rhs).T.numpy()

        idx, sim = _blocks(x, rows, chunk, product)
    elif name == "dense-block":

        def product(q):
            return (x @ x[q].T.toarray()).T

        idx, sim = _blocks(x, rows, chunk, product)
    elif name == "sklearn-cosine":
        from sklearn.neighbors import NearestNeighbors

        nn_ = NearestNeighbors(n_neighbors=K + 1, metric="cosine", algorithm="brute", n_jobs=1)
        nn_.fit(x)
        dist, idx = nn_.kneighbors(x[rows])
        sim = 1 - dist
    else:
        raise ValueError(f"unknown variant {name!r}")
    cpu, wall = time.process_time() - t_cpu, time.perf_counter() - t_wall
    return {
        "variant": name,
        "queries": int(len(rows)),
        "users": int(x.shape[0]),
        "items": int(x.shape[1]),
        "nnz": int(x.nnz),
        "cpu_s": cpu,
        "wall_s": wall,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "sim_checksum": float(np.sum(sim[:, :K])) if name != "sklearn-cosine" else None,
        "sim_head": np.asarray(sim[:5, :K]).tolist(),
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--matrix", required=True, help="scipy .npz of a binary users x items CSR")
    ap.add_argument("--queries", default="2048", help="number of query users, or 'all'")
    ap.add_argument("--variants", default="all", help=f"comma list of {VARIANTS} or 'all'")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default=None)
    ap.add_argument("--one", default=None, help=argparse.SUPPRESS)  # child process
    args = ap.parse_args(argv)
    if args.one:
        x = sp.load_npz(args.matrix).tocsr().astype(np.float32)
        rows = _queries(x.shape[0], args.queries, args.seed)
        print(json.dumps(run_variant(args.one, x, rows)))
        return 0
    names = VARIANTS if args.variants == "all" else tuple(args.variants.split(","))
    results = []
    for name in names:
        cmd = [sys.executable, __file__, "--matrix", args.matrix, "--queries", args.queries,
               "--seed", str(args.seed), "--one", name]  # fmt: skip
        env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
        out = subprocess.run(cmd, capture_output=True, text=True, env=env, check=True)
        res = json.loads(out.stdout.strip().splitlines()[-1])
        results.append(res)
        print(
            f"{name:15s} queries {res['queries']:7d}  cpu {res['cpu_s']:8.1f} s  wall "
            f"{res['wall_s']:8.1f} s  peak RSS {res['peak_rss_mb']:7.0f} MB",
            flush=True,
        )
    jac = [r for r in results if r["sim_checksum"] is not None]
    agree = (
        all(np.allclose(r["sim_head"], jac[0]["sim_head"], rtol=0, atol=1e-12) for r in jac)
        if jac
        else None
    )
    print(f"Jaccard variants agree on the first queries' similarities: {agree}")
    name = Path(args.matrix).stem
    out = Path(args.out or HERE / "results" / f"neighbours-{name}-{args.queries}.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(
        json.dumps({"matrix": args.matrix, "results": results, "agree": agree}, indent=1)
    )
    print(f"written {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
