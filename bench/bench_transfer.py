"""Benchmark: all-pairs gradient transfer <g_u, g_v> (output layer, T2.3), factorised vs naive.

Factorised: ``radius.analysis.transfer.transfer_gram`` (g_u = R_u^T H_u / M never formed; memory
users x M x (items + hidden)). Naive: one ``torch.autograd.grad`` per user in a Python
loop (``radius.analysis.transfer.naive_user_gradients``), the (users, parameters) matrix G
materialised, then G G^T. Both in the SAME run, on the first N training users of the
default synthetic dataset and an untrained, seeded MultVAE [I-600-200-600-I] in float32
(timings do not depend on training).

The naive loop is timed on a subset of ``--naive-users`` users and extrapolated
LINEARLY in the number of users (both its gradient loop and its Gram), which
understates its true cost (the Gram is quadratic); the quadratic extrapolation of the
Gram is printed beside it. The factorised Gram of the subset is checked against the
naive one in the same run.

Each measurement runs in a fresh subprocess; its peak memory is the largest resident
size seen during the measured call (polled every 2 ms) minus the size before it.

    python bench/bench_transfer.py                       # 1000 and 4000 users, M = 4
    python bench/bench_transfer.py --users 1000 --n-samples 4 8
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent


def _rss_mib() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


class _PeakRss:
    """Largest resident size (MiB) seen by a thread polling /proc/self/status every 2 ms,
    minus the resident size at entry (torch ops release the GIL, so the poller runs)."""

    def __enter__(self) -> _PeakRss:
        self.base = _rss_mib()
        self.peak = self.base
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._poll, daemon=True)
        self._thread.start()
        return self

    def _poll(self) -> None:
        while not self._stop.wait(0.002):
            self.peak = max(self.peak, _rss_mib())

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, _rss_mib())

    @property
    def extra(self) -> float:
        return self.peak - self.base


def _setup(n_users: int, seed: int):
    import torch

    from radius.data.synthetic import default_dataset
    from radius.model.multvae import MultVAE

    ds = default_dataset()
    torch.manual_seed(seed)
    model = MultVAE(ds.n_items, (600,), 200).eval()
    x = torch.as_tensor(ds.train[:n_users].toarray())  # (N, I) float32
    return model, x


def worker(args: argparse.Namespace) -> dict:
    """One measurement in this (fresh) process; returns a JSON-able dict."""
    import torch

    from radius.analysis.transfer import common_eps, naive_user_gradients, transfer_gram

    if args.threads:
        torch.set_num_threads(args.threads)
    model, x = _setup(args.n_users, args.seed)
    eps = common_eps(args.n_samples, model.latent_dim, seed=args.seed, dtype=torch.float32)
    out: dict = {"method": args.worker, "n_users": args.n_users, "n_samples": args.n_samples}
    # warm-up (first-call overheads excluded from both timings)
    transfer_gram(model, x[:8], eps=eps)
    naive_user_gradients(model, x[:2], eps=eps)
    if args.worker == "factorised":
        with _PeakRss() as mem:
            t = time.perf_counter()
            gram = transfer_gram(model, x, eps=eps, chunk_size=args.chunk_size)
            out["seconds"] = time.perf_counter() - t
        out["checksum"] = float(gram.double().trace())
    else:
        n0 = min(args.naive_users, args.n_users)
        xs = x[:n0]
        with _PeakRss() as mem:
            t = time.perf_counter()
            g = naive_user_gradients(model, xs, eps=eps)  # (n0, P)
            t_loop = time.perf_counter() - t
            t = time.perf_counter()
            gram = g @ g.T
            t_gram = time.perf_counter() - t
        ref = transfer_gram(model, xs, eps=eps, chunk_size=args.chunk_size)
        scale = float(gram.abs().max())
        out.update(
            n_timed=n0,
            n_parameters=int(g.shape[1]),
            loop_seconds=t_loop,
            gram_seconds=t_gram,
            seconds_linear=(t_loop + t_gram) * args.n_users / n0,
            seconds_quadratic_gram=t_loop * args.n_users / n0 + t_gram * (args.n_users / n0) ** 2,
            max_rel_diff_vs_factorised=float((gram - ref).abs().max()) / scale,
        )
    out["peak_extra_mib"] = mem.extra
    out["threads"] = torch.get_num_threads()
    return out


def run_worker(args: argparse.Namespace, method: str, n_users: int, n_samples: int) -> dict:
    cmd = [
        sys.executable,
        str(Path(__file__).resolve()),
        "--worker",
        method,
        "--n-users",
        str(n_users),
        "--n-samples-one",
        str(n_samples),
        "--naive-users",
        str(args.naive_users),
        "--chunk-size",
        str(args.chunk_size),
        "--seed",
        str(args.seed),
        "--threads",
        str(args.threads),
    ]
    res = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if res.returncode != 0:
        raise RuntimeError(f"worker failed ({' '.join(cmd)}):\n{res.stderr}")
    return json.loads(res.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--users", type=int, nargs="+", default=[1000, 4000])
    p.add_argument("--n-samples", type=int, nargs="+", default=[4], help="Monte Carlo M")
    p.add_argument("--naive-users", type=int, default=100, help="users the naive loop times")
    p.add_argument("--chunk-size", type=int, default=256)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: default)")
    p.add_argument("--out", type=Path, default=HERE / "results" / "transfer.json")
    p.add_argument("--worker", choices=["factorised", "naive"], help=argparse.SUPPRESS)
    p.add_argument("--n-users", type=int, help=argparse.SUPPRESS)
    p.add_argument("--n-samples-one", type=int, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.worker:
        args.n_samples = args.n_samples_one
        print(json.dumps(worker(args)))
        return 0

    from radius.data.synthetic import default_dataset

    ds = default_dataset()
    n_items, hidden = ds.n_items, 600
    rows = []
    for m in args.n_samples:
        for n in args.users:
            if n > ds.train.shape[0]:
                raise SystemExit(f"--users {n} exceeds the {ds.train.shape[0]} training users")
            fac = run_worker(args, "factorised", n, m)
            nai = run_worker(args, "naive", n, m)
            rows.append(
                {
                    "n_users": n,
                    "n_samples": m,
                    "factorised_s": fac["seconds"],
                    "factorised_peak_extra_mib": fac["peak_extra_mib"],
                    "factor_mib_model": n * m * (n_items + hidden + 1) * 4 / 2**20,
                    "naive_timed_users": nai["n_timed"],
                    "naive_loop_s": nai["loop_seconds"],
                    "naive_gram_s": nai["gram_seconds"],
                    "naive_s_linear": nai["seconds_linear"],
                    "naive_s_quadratic_gram": nai["seconds_quadratic_gram"],
                    "naive_peak_extra_mib_subset": nai["peak_extra_mib"],
                    "naive_g_mib_full": n * nai["n_parameters"] * 4 / 2**20,
                    "speedup_linear": nai["seconds_linear"] / fac["seconds"],
                    "speedup_quadratic_gram": nai["seconds_quadratic_gram"] / fac["seconds"],
                    "max_rel_diff": nai["max_rel_diff_vs_factorised"],
                    "threads": fac["threads"],
                }
            )
            r = rows[-1]
            print(
                f"N={n:5d} M={m:2d}  factorised {r['factorised_s']:7.2f}s "
                f"(peak +{r['factorised_peak_extra_mib']:.0f} MiB)  "
                f"naive~{r['naive_s_linear']:8.1f}s linear / "
                f"{r['naive_s_quadratic_gram']:8.1f}s quad  speedup {r['speedup_linear']:6.1f}x",
                flush=True,
            )
    header = (
        f"{'users':>6} {'M':>3} {'factorised s':>12} {'peak MiB':>9} {'N*M*(I+H+1) MiB':>16} "
        f"{'naive s (lin)':>13} {'naive s (quad)':>14} {'speedup lin':>11} {'speedup quad':>12} "
        f"{'rel diff':>9}"
    )
    print("\n" + header)
    for r in rows:
        print(
            f"{r['n_users']:>6} {r['n_samples']:>3} {r['factorised_s']:>12.2f} "
            f"{r['factorised_peak_extra_mib']:>9.0f} {r['factor_mib_model']:>16.1f} "
            f"{r['naive_s_linear']:>13.1f} {r['naive_s_quadratic_gram']:>14.1f} "
            f"{r['speedup_linear']:>11.1f} {r['speedup_quadratic_gram']:>12.1f} "
            f"{r['max_rel_diff']:>9.1e}"
        )
    from radius.io import atomic_write_json
    from radius.version import code_version

    payload = {
        "benchmark": "all-pairs transfer <g_u, g_v>, output layer (T2.3)",
        "command": " ".join(
            [Path(sys.argv[0]).name, *(argv if argv is not None else sys.argv[1:])]
        ),
        "model": f"MultVAE [{n_items}-600-200-600-{n_items}] untrained, float32",
        "dataset": "radius.data.synthetic.default_dataset(), first N training users",
        "naive_extrapolation": (
            "naive loop timed on naive_timed_users users; naive_s_linear scales loop and Gram "
            "linearly in users (conservative), naive_s_quadratic_gram scales the Gram "
            "quadratically"
        ),
        "memory": (
            "peak_extra_mib: largest resident size during the call (polled every 2 ms) minus "
            "the resident size before it, in a fresh process"
        ),
        "cpu_count": os.cpu_count(),
        "code_version": code_version(),
        "rows": rows,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_json(args.out, payload)
    print(f"\nwrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
