r"""Training benchmark: radius's Multi-VAE step against a plain-PyTorch reference.

Three variants, each trained for the same number of epochs with the same
hyper-parameters (Multi-VAE [I-600-200-600-I], tanh, keep rate 0.5, beta annealed
linearly to 0.2 over 20 epochs' worth of steps, Adam lr 1e-3, batch 500):

- ``radius-sparse``: ``radius.training.trainer.train`` with ``TrainConfig(sparse_input=True)``
  (first layer as an embedding bag over the stored entries);
- ``radius-dense``: the same with ``sparse_input=False`` (densified batch);
- ``reference``: a minimal Multi-VAE loop written here in plain PyTorch, as in
  ``dawenl/vae_cf``: dense batch, ``F.normalize``, dropout on the input,
  ``nn.Linear`` layers, ``log_softmax`` likelihood, closed-form KL, Adam, and a
  batched top-k evaluation in torch.

Each variant runs in its own subprocess so its peak resident memory
(``VmHWM`` of /proc/self/status, which includes torch's CPU allocations) is its own
(``ru_maxrss``, used before issue 18, also counted the parent's resident size at the
fork: the parent holds the dataset, so every variant reported the same peak). Training
time per epoch excludes validation; radius's validation is timed by wrapping
``radius.training.trainer.evaluate`` (the function ``train`` calls), so the real
``train`` runs unchanged. The FLOP limit is the model's floating-point work divided by
the measured float32 matmul peak of this machine.

Run from the repository root::

    python bench/bench_train.py                      # both datasets, 20 epochs
    python bench/bench_train.py --data ml100k --epochs 5
    python bench/bench_train.py --profile            # torch.profiler tables too

The scale row (one epoch at the ML-20M shape, 116,677 training users x 20,108 items,
and the size of a checkpoint there)::

    python bench/bench_train.py --data synth-ml20m --epochs 1 --threads 1 \
        --variants reference,radius-sparse --interleaved 10 --eval-rounds 2 \
        --checkpoint-sizes --out bench/results/scale-train.json
"""

from __future__ import annotations

import argparse
import json
import math
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

ROOT = Path(__file__).resolve().parent.parent
VARIANTS = ("reference", "radius-sparse", "radius-dense")
# optional: the reference with radius's input convention (mask, then normalise)
EXTRA_VARIANTS = ("reference-premask",)
DATASETS = ("ml100k", "synth-ml1m")
# the scale row (not run by default): the ML-20M-shaped synthetic set at full size
SCALE_DATASETS = ("synth-ml20m",)
WHEEL_NAME = "recbole-1.2.1-py3-none-any.whl"
WHEEL_MEMBER = "recbole/dataset_example/ml-100k/ml-100k.inter"

# Shared hyper-parameters (radius's TrainConfig defaults before issue 10, masking setting;
# kept so the speed figures below stay comparable; quality at convergence: bench_quality.py).
HIDDEN, LATENT, BATCH, LR, KEEP, BETA_CAP, ANNEAL_EPOCHS = 600, 200, 500, 1e-3, 0.5, 0.2, 20.0

# ML-1M shape: ~6k users, ~3.5k items, ~3% dense (log-normal activity, mean ~105).
SYNTH_ML1M = dict(
    n_users=6000,
    n_items=3500,
    n_communities=20,
    activity_median=70.0,
    activity_sigma=0.9,
    n_min=20,
    n_max=1500,
    seed=0,
)


# --------------------------------------------------------------------------- data
def find_wheel(explicit: str | None) -> Path:
    """The recbole wheel that carries ML-100k (``--wheel``, ``.cache/`` or ``/tmp/rb``)."""
    cands = [Path(explicit)] if explicit else []
    try:  # radius's own lookup ($RADIUS_ML100K_WHEEL, .cache/, ~/.cache/radius/)
        from radius.data.ml100k import find_ml100k_wheel

        found = find_ml100k_wheel()
        cands += [found] if found is not None else []
    except ImportError:
        pass
    cands += [ROOT / ".cache" / WHEEL_NAME, Path("/tmp/rb") / WHEEL_NAME]
    for c in cands:
        if c.is_file():
            return c
    raise SystemExit(
        f"ML-100k: no {WHEEL_NAME} in {[str(c) for c in cands]}; pass --wheel or "
        "run `radius data fetch-ml100k` (writes .cache/)"
    )


def load_ml100k(wheel: Path):
    """ML-100k from the wheel, ratings > 3.5, users >= 5 items, strong-generalisation split."""
    from radius.data.split import Interactions, SplitParams, strong_generalization_split

    with zipfile.ZipFile(wheel) as z:
        raw = z.read(WHEEL_MEMBER).decode()
    rows = np.array(
        [line.split("\t")[:3] for line in raw.splitlines()[1:] if line.strip()], dtype=np.float64
    )
    inter = Interactions(
        rows[:, 0].astype(np.int64),
        rows[:, 1].astype(np.int64),
        rows[:, 2],
        source={"kind": "ml-100k", "path": f"{wheel.name}:{WHEEL_MEMBER}"},
    )
    return strong_generalization_split(
        inter, SplitParams(threshold=3.5, min_user=5), name="ml-100k"
    )


def build_dataset(name: str, wheel: str | None):
    if name == "ml100k":
        return load_ml100k(find_wheel(wheel))
    from radius.data.synthetic import SyntheticParams, default_dataset, synthetic_dataset

    if name == "synth-ml20m":  # `radius data prepare --synthetic ml-20m`
        ds = synthetic_dataset("ml-20m")
        ds.manifest["name"] = name
        return ds

    ds = default_dataset(SyntheticParams(**SYNTH_ML1M))
    ds.manifest["name"] = "synth-ml1m"
    return ds


# --------------------------------------------------------------------------- FLOPs
def matmul_peak_gflops(n: int = 2048, repeats: int = 7) -> dict[str, float]:
    """Float32 GFLOP/s of an (n, n) @ (n, n) matmul (2 n^3 FLOPs), best of ``repeats``.

    ``wall``: per wall-clock second with torch's current threads; ``cpu``: per second of
    process CPU time (all threads summed), i.e. what one core delivers. On a shared,
    loaded machine the wall figure understates the hardware; the CPU figure does not
    (time-slicing does not count), so FLOP limits are stated in CPU seconds too.
    """
    g = torch.Generator().manual_seed(0)
    a = torch.randn(n, n, generator=g)
    b = torch.randn(n, n, generator=g)
    a @ b  # warm-up
    best_wall = best_cpu = math.inf
    for _ in range(repeats):
        t0, c0 = time.perf_counter(), time.process_time()
        a @ b
        best_wall = min(best_wall, time.perf_counter() - t0)
        best_cpu = min(best_cpu, time.process_time() - c0)
    return {"wall": 2 * n**3 / best_wall / 1e9, "cpu": 2 * n**3 / best_cpu / 1e9}


def model_gflops(ds) -> dict[str, float]:
    r"""Floating-point work of one epoch and of one validation pass (GFLOP).

    Per user and layer ``(a -> b)`` the forward pass is :math:`2ab`; backward is
    :math:`4ab` (input and weight gradients) except for the first layer, which
    needs only its weight gradient (:math:`2ab`). ``dense`` counts the first layer
    as a dense ``(B, I) @ (I, H)`` product; ``min`` counts only the stored,
    unmasked entries (``keep_rate * nnz``), the work any exact implementation
    must do. Adam and the softmax are elementwise and not counted.
    """
    n_users, n_items = ds.train.shape
    mid = 2 * HIDDEN * 2 * LATENT + 2 * LATENT * HIDDEN + 2 * HIDDEN * n_items  # (per user)
    first_dense = 2 * n_items * HIDDEN
    train_dense = n_users * (2 * first_dense + 3 * mid)
    train_min = 2 * (2 * KEEP * ds.train.nnz * HIDDEN) + n_users * 3 * mid
    n_val = ds.val_tr.shape[0]
    eval_dense = n_val * (first_dense + mid)
    eval_min = 2 * ds.val_tr.nnz * HIDDEN + n_val * mid
    return {
        "train_dense": train_dense / 1e9,
        "train_min": train_min / 1e9,
        "eval_dense": eval_dense / 1e9,
        "eval_min": eval_min / 1e9,
    }


# --------------------------------------------------------------------------- helpers
def rss_mb() -> float:
    """Current resident set size (MB) from /proc/self/statm."""
    with open("/proc/self/statm") as f:
        pages = int(f.read().split()[1])
    return pages * os.sysconf("SC_PAGE_SIZE") / 2**20


def peak_rss_mb() -> float:
    """Peak resident set size (MB) of this process: ``VmHWM`` of /proc/self/status.

    Not ``ru_maxrss``: Linux carries a process's ``ru_maxrss`` across fork and exec, so a
    worker started by a parent that holds a large dataset reports at least the parent's
    resident size at the fork (measured: a parent at 789 MB gave its fresh child
    ``ru_maxrss`` 789 MB and ``VmHWM`` 11 MB). ``ru_maxrss`` is the fallback where
    /proc is absent.
    """
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024  # kB
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KB on Linux


# --------------------------------------------------------------------------- reference
class RefMultVAE(nn.Module):
    """Plain Multi-VAE as in dawenl/vae_cf: normalise, dropout, Linear/tanh layers.

    ``premask=True`` applies radius's convention instead: keep-mask the raw input,
    then normalise (no 1/keep rescale), to separate the input convention from the
    implementation when comparing quality.
    """

    def __init__(self, n_items: int, *, premask: bool = False) -> None:
        super().__init__()
        self.premask = premask
        self.enc1 = nn.Linear(n_items, HIDDEN)
        self.enc2 = nn.Linear(HIDDEN, 2 * LATENT)
        self.dec1 = nn.Linear(LATENT, HIDDEN)
        self.dec2 = nn.Linear(HIDDEN, n_items)
        self.drop = nn.Dropout(1.0 - KEEP)
        for lin in (self.enc1, self.enc2, self.dec1, self.dec2):
            nn.init.xavier_uniform_(lin.weight)
            nn.init.normal_(lin.bias, std=0.001)

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if self.premask:
            if self.training:
                x = x * (torch.rand_like(x) < KEEP)
            h = F.normalize(x, dim=1)  # (B, I)
        else:
            h = self.drop(F.normalize(x, dim=1))  # (B, I)
        h = self.enc2(torch.tanh(self.enc1(h)))  # (B, 2d)
        return h[:, :LATENT], h[:, LATENT:]

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        return self.dec2(torch.tanh(self.dec1(z)))  # (B, I)


def ref_step(model: RefMultVAE, opt: torch.optim.Optimizer, csr, beta: float) -> float:
    """One reference training step on a CSR batch (densified, as the reference does)."""
    x = torch.from_numpy(csr.toarray())  # (B, I)
    mu, logvar = model.encode(x)
    z = mu + torch.exp(0.5 * logvar) * torch.randn_like(mu)
    nll = -(F.log_softmax(model.decode(z), dim=1) * x).sum(1).mean()
    kl = 0.5 * (torch.exp(logvar) + mu * mu - 1.0 - logvar).sum(1).mean()
    loss = nll + beta * kl
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()
    return loss.item()


_DISC = 1.0 / torch.log2(torch.arange(2, 102, dtype=torch.float32))  # (100,)
_IDCG = torch.cat([torch.zeros(1), torch.cumsum(_DISC, 0)])  # (101,)


@torch.no_grad()
def ref_evaluate(model: RefMultVAE, fold_in, heldout, batch: int = 1000) -> dict[str, float]:
    """Batched top-k nDCG@100 and Recall@20 in torch (fold-in items excluded)."""
    model.eval()
    ndcg, recall = [], []
    for s in range(0, fold_in.shape[0], batch):
        x = torch.from_numpy(fold_in[s : s + batch].toarray())  # (B, I)
        y = torch.from_numpy(heldout[s : s + batch].toarray())  # (B, I)
        mu, _ = model.encode(x)
        logits = model.decode(mu)
        logits[x > 0] = -torch.inf
        top = torch.topk(logits, 100, dim=1).indices  # (B, 100)
        hits = torch.gather(y, 1, top)  # (B, 100)
        n_true = y.sum(1).long()
        ndcg.append((hits * _DISC).sum(1) / _IDCG[n_true.clamp(max=100)])
        recall.append(hits[:, :20].sum(1) / n_true.clamp(max=20))
    model.train()
    return {
        "ndcg@100": float(torch.cat(ndcg).mean()),
        "recall@20": float(torch.cat(recall).mean()),
    }


def run_reference(ds, epochs: int, seed: int, *, premask: bool = False) -> dict[str, Any]:
    """The reference Multi-VAE trained for ``epochs`` epochs, validated after each."""
    torch.manual_seed(seed)
    model = RefMultVAE(ds.n_items, premask=premask)
    opt = torch.optim.Adam(model.parameters(), lr=LR)
    rng = np.random.default_rng(seed)
    n = ds.train.shape[0]
    anneal_steps = max(1, int(ANNEAL_EPOCHS * -(-n // BATCH)))
    history = []
    step = 0
    for epoch in range(epochs):
        t0, c0 = time.perf_counter(), time.process_time()
        model.train()
        perm = rng.permutation(n)
        for s in range(0, n, BATCH):
            ref_step(
                model, opt, ds.train[perm[s : s + BATCH]], BETA_CAP * min(1.0, step / anneal_steps)
            )
            step += 1
        t1, c1 = time.perf_counter(), time.process_time()
        val = ref_evaluate(model, ds.val_tr, ds.val_te)
        t2, c2 = time.perf_counter(), time.process_time()
        history.append(
            {
                "epoch": epoch,
                "train_s": t1 - t0,
                "train_cpu_s": c1 - c0,
                "eval_s": t2 - t1,
                "eval_cpu_s": c2 - c1,
                **val,
            }
        )
    return {"history": history}


# --------------------------------------------------------------------------- radius
def run_radius(ds, epochs: int, seed: int, *, sparse: bool) -> dict[str, Any]:
    """``radius.training.trainer.train`` unchanged; its ``evaluate`` calls are timed."""
    import radius.training.trainer as rt

    marks: list[tuple[float, float, float, float]] = []  # (wall, cpu) at eval start, end
    real_evaluate = rt.evaluate

    def timed_evaluate(*a, **k):
        t0, c0 = time.perf_counter(), time.process_time()
        out = real_evaluate(*a, **k)
        marks.append((t0, c0, time.perf_counter(), time.process_time()))
        return out

    rt.evaluate = timed_evaluate
    cfg = radius_config(epochs, seed, sparse=sparse)
    try:
        t_start, c_start = time.perf_counter(), time.process_time()
        res = rt.train(ds, cfg, progress=False, evaluate_test=False)
        total = time.perf_counter() - t_start
    finally:
        rt.evaluate = real_evaluate
    # training segment of epoch k: from the end of the previous evaluation (or the
    # start of ``train``, which includes building the model) to this evaluation.
    history = []
    prev_t, prev_c = t_start, c_start
    for rec, (t0, c0, t1, c1) in zip(res.history, marks):
        history.append(
            {
                "epoch": rec["epoch"],
                "train_s": t0 - prev_t,
                "train_cpu_s": c0 - prev_c,
                "eval_s": t1 - t0,
                "eval_cpu_s": c1 - c0,
                "ndcg@100": rec["val_ndcg@100"],
                "recall@20": rec["val_recall@20"],
            }
        )
        prev_t, prev_c = t1, c1
    return {"history": history, "train_call_s": total}


# --------------------------------------------------------------------------- steppers
def radius_config(epochs: int, seed: int, *, sparse: bool):
    """The TrainConfig all radius variants use (the masking setting, CPU)."""
    from radius.training.config import TrainConfig

    return TrainConfig(
        hidden_dims=(HIDDEN,),
        latent_dim=LATENT,
        keep_rate=KEEP,
        beta_cap=BETA_CAP,
        anneal_epochs=ANNEAL_EPOCHS,
        lambda_a=0.0,
        lr=LR,
        batch_size=BATCH,
        epochs=epochs,
        patience=epochs + 1,
        seed=seed,
        device="cpu",
        sparse_input=sparse,
    )


def make_stepper(ds, variant: str, seed: int):
    """(step(idx, beta) -> loss, evaluate() -> means) of one variant, freshly initialised.

    The radius step is the body of ``radius.training.trainer.train``'s batch loop: CSR rows ->
    ``SparseBatch.from_csr`` -> ``multvae_loss`` -> backward -> Adam step -> ``.item()``.
    """
    if variant.startswith("reference"):
        torch.manual_seed(seed)
        ref = RefMultVAE(ds.n_items, premask=variant == "reference-premask")
        ref_opt = torch.optim.Adam(ref.parameters(), lr=LR)

        def step(idx: np.ndarray, beta: float) -> float:
            return ref_step(ref, ref_opt, ds.train[idx], beta)

        def evaluate() -> dict[str, float]:
            return ref_evaluate(ref, ds.val_tr, ds.val_te)

        return step, evaluate
    from radius.model.multvae import SparseBatch
    from radius.training.build import build_model
    from radius.training.losses import multvae_loss
    from radius.training.metrics import evaluate as radius_evaluate

    cfg = radius_config(1, seed, sparse=variant == "radius-sparse")
    model = build_model(cfg, ds.n_items)
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    gen = torch.Generator().manual_seed(seed)

    def step(idx: np.ndarray, beta: float) -> float:
        batch = SparseBatch.from_csr(ds.train[np.sort(idx)])
        loss, parts = multvae_loss(model, batch, cfg, beta, gen)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        return loss.item()

    def evaluate() -> dict[str, float]:
        model.train()
        return radius_evaluate(
            model, ds.val_tr, ds.val_te, metrics=(("ndcg", 100), ("recall", 20))
        ).means

    return step, evaluate


def interleaved_timing(
    ds, variants: list[str], n_rounds: int, n_eval_rounds: int, seed: int
) -> dict[str, Any]:
    """Per-step and per-evaluation times with the variants alternating step by step.

    Round r runs one training step of every variant on the same batch, in an order
    rotated each round, so a change in machine load hits all variants alike (the
    other helpers share these cores). Two warm-up rounds are not timed.
    """
    steppers = {v: make_stepper(ds, v, seed) for v in variants}
    rng = np.random.default_rng(seed)
    n = ds.train.shape[0]
    out: dict[str, dict[str, list[float]]] = {
        v: {"step_s": [], "step_cpu_s": [], "eval_s": [], "eval_cpu_s": []} for v in variants
    }
    for r in range(n_rounds + 2):
        idx = rng.choice(n, size=min(BATCH, n), replace=False)
        order = variants[r % len(variants) :] + variants[: r % len(variants)]
        for v in order:
            t0, c0 = time.perf_counter(), time.process_time()
            steppers[v][0](idx, 0.1)
            if r >= 2:
                out[v]["step_s"].append(time.perf_counter() - t0)
                out[v]["step_cpu_s"].append(time.process_time() - c0)
    for r in range(n_eval_rounds + 1):
        order = variants[r % len(variants) :] + variants[: r % len(variants)]
        for v in order:
            t0, c0 = time.perf_counter(), time.process_time()
            steppers[v][1]()
            if r >= 1:
                out[v]["eval_s"].append(time.perf_counter() - t0)
                out[v]["eval_cpu_s"].append(time.process_time() - c0)
    n_batches = -(-n // BATCH)
    summary: dict[str, Any] = {}
    for v, t in out.items():
        summary[v] = {
            "step_s_median": statistics.median(t["step_s"]),
            "step_s_min": min(t["step_s"]),
            "step_cpu_s_median": statistics.median(t["step_cpu_s"]),
            "epoch_s_estimate": n_batches * statistics.median(t["step_s"]),
            "eval_s_median": statistics.median(t["eval_s"]),
            "eval_cpu_s_median": statistics.median(t["eval_cpu_s"]),
            "raw": t,
        }
    if "reference" in summary:
        ref = summary["reference"]
        for sv in summary.values():
            sv["step_ratio"] = sv["step_s_median"] / ref["step_s_median"]
            sv["step_cpu_ratio"] = sv["step_cpu_s_median"] / ref["step_cpu_s_median"]
            sv["eval_ratio"] = sv["eval_s_median"] / ref["eval_s_median"]
    return {"rounds": n_rounds, "eval_rounds": n_eval_rounds, "variants": summary}


# --------------------------------------------------------------------------- profile
def profile_steps(ds, variant: str, n_steps: int, seed: int) -> str:
    """torch.profiler table (self CPU time) of ``n_steps`` training steps of one variant."""
    from torch.profiler import ProfilerActivity, profile

    step, evaluate = make_stepper(ds, variant, seed)
    rng = np.random.default_rng(seed)
    n = ds.train.shape[0]
    batches = [rng.choice(n, size=min(BATCH, n), replace=False) for _ in range(n_steps + 2)]
    for idx in batches[:2]:  # warm-up
        step(idx, 0.1)
    with profile(activities=[ProfilerActivity.CPU], record_shapes=True) as prof:
        for idx in batches[2:]:
            with torch.profiler.record_function("bench::train_step"):
                step(idx, 0.1)
        with torch.profiler.record_function("bench::evaluate"):
            evaluate()
    return prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=25)


# --------------------------------------------------------------------------- checkpoints
def checkpoint_sizes(ds, seed: int, folder: Path) -> dict[str, Any]:
    """Bytes on disk of radius checkpoints for this item count, as ``train`` writes them.

    A checkpoint's size is set by the tensors' shapes (items x hidden, anchors), not by
    the number of users or the values, so the runs train on the first 1,000 training
    users (200 validation and test users) with all the items: ``in_training`` is the file
    after epoch 1 of 2 (best weights + current weights + Adam's two moments + generator
    states: what a resumable run keeps), ``finished`` after the run ends (best weights
    only). ``weights_mb`` is one copy of the parameters (float32).
    """
    from radius.data.dataset import Dataset
    from radius.training.build import build_model
    from radius.training.trainer import train

    k = 200
    sub = Dataset(
        train=ds.train[:1000],
        val_tr=ds.val_tr[:k],
        val_te=ds.val_te[:k],
        test_tr=ds.test_tr[:k],
        test_te=ds.test_te[:k],
        manifest={"name": "checkpoint-size"},
    )
    out: dict[str, Any] = {"n_items": ds.n_items}
    for setting, lambda_a in (("masking", 0.0), ("pia", 1.0)):
        cfg = radius_config(2, seed, sparse=True).replace(lambda_a=lambda_a)
        path = folder / f"{setting}.pt"
        train(sub, cfg, checkpoint=path, progress=False, stop_after=1, evaluate_test=False)
        during = path.stat().st_size
        train(sub, cfg, checkpoint=path, progress=False, resume=True, evaluate_test=False)
        model = build_model(cfg, ds.n_items)
        weights = sum(t.numel() * t.element_size() for t in model.state_dict().values())
        out[setting] = {
            "in_training_mb": during / 2**20,
            "finished_mb": path.stat().st_size / 2**20,
            "weights_mb": weights / 2**20,
        }
    return out


# --------------------------------------------------------------------------- worker
def worker(args: argparse.Namespace) -> None:
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    from radius.data.dataset import Dataset

    ds = Dataset.load(args.data_dir)
    rss_before = rss_mb()
    if args.worker == "interleaved":
        variants = [v.strip() for v in args.variants.split(",") if v.strip()]
        out = interleaved_timing(ds, variants, args.interleaved, args.eval_rounds, args.seed)
        print(json.dumps(out))
        return
    if args.worker == "checkpoint-size":
        with tempfile.TemporaryDirectory(prefix="bench-ckpt-") as tmp:
            print(json.dumps(checkpoint_sizes(ds, args.seed, Path(tmp))))
        return
    if args.worker == "profile":
        variants = [v.strip() for v in args.variants.split(",") if v.strip()]
        out = {v: profile_steps(ds, v, args.profile_steps, args.seed) for v in variants}
        print(json.dumps(out))
        return
    if args.worker.startswith("reference"):
        out = run_reference(ds, args.epochs, args.seed, premask=args.worker == "reference-premask")
    else:
        out = run_radius(ds, args.epochs, args.seed, sparse=args.worker == "radius-sparse")
    out.update(
        rss_before_mb=rss_before,
        peak_rss_mb=peak_rss_mb(),
        threads=torch.get_num_threads(),
        torch=torch.__version__,
        load_avg_1min=os.getloadavg()[0],
    )
    print(json.dumps(out))


def run_worker(script_args: list[str]) -> dict[str, Any]:
    cmd = [sys.executable, str(Path(__file__).resolve()), *script_args]
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
    if proc.returncode != 0:
        raise SystemExit(f"worker {script_args} failed:\n{proc.stderr[-4000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


# --------------------------------------------------------------------------- main
def summarise(run: dict[str, Any], n_train: int) -> dict[str, Any]:
    """Medians over epochs (the first epoch carries warm-up) and the memory figures."""
    h = run["history"]
    train_s = [r["train_s"] for r in h]
    med = statistics.median(train_s)
    return {
        "epoch_s_median": med,
        "epoch_s_min": min(train_s),
        "epoch_cpu_s_min": min(r["train_cpu_s"] for r in h),
        "eval_s_min": min(r["eval_s"] for r in h),
        "eval_cpu_s_min": min(r["eval_cpu_s"] for r in h),
        "epoch_cpu_s_median": statistics.median(r["train_cpu_s"] for r in h),
        "users_per_s": n_train / min(train_s),
        "users_per_s_median": n_train / med,
        "users_per_s_overall": n_train * len(h) / sum(train_s),
        "eval_s_median": statistics.median(r["eval_s"] for r in h),
        "eval_cpu_s_median": statistics.median(r["eval_cpu_s"] for r in h),
        "ndcg@100_last": h[-1]["ndcg@100"],
        "ndcg@100_best": max(r["ndcg@100"] for r in h),
        "recall@20_last": h[-1]["recall@20"],
        "peak_rss_mb": run["peak_rss_mb"],
        "train_rss_mb": run["peak_rss_mb"] - run["rss_before_mb"],
        "load_avg_1min": run["load_avg_1min"],
        "threads": run["threads"],
        "history": h,
    }


def fmt_table(rows: list[list[Any]], header: list[str]) -> str:
    def f(v: Any) -> str:
        return f"{v:.3f}" if isinstance(v, float) else str(v)

    cells = [[f(v) for v in r] for r in rows]
    w = [max(len(h), *(len(r[i]) for r in cells)) for i, h in enumerate(header)]
    lines = ["  ".join(h.rjust(x) for h, x in zip(header, w)), "  ".join("-" * x for x in w)]
    lines += ["  ".join(c.rjust(x) for c, x in zip(r, w)) for r in cells]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument(
        "--data",
        default=",".join(DATASETS),
        help="comma list of ml100k, synth-ml1m, synth-ml20m (the scale row: ML-20M shape, "
        "136,677 users x 20,108 items; not in the default list)",
    )
    ap.add_argument(
        "--checkpoint-sizes",
        dest="checkpoint_sizes",
        action="store_true",
        help="also measure the bytes of a radius checkpoint for each dataset's item count",
    )
    ap.add_argument(
        "--variants",
        default=",".join(VARIANTS),
        help=f"comma list of {', '.join(VARIANTS + EXTRA_VARIANTS)}",
    )
    ap.add_argument("--epochs", type=int, default=20)
    ap.add_argument("--repeats", type=int, default=1, help="interleaved runs per variant")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: torch default)")
    ap.add_argument("--wheel", help=f"path to {WHEEL_NAME} (ML-100k)")
    ap.add_argument("--out", default=str(ROOT / "bench" / "results" / "train.json"))
    ap.add_argument(
        "--interleaved",
        type=int,
        default=30,
        help="timed rounds of step-by-step interleaved timing per dataset (0: skip)",
    )
    ap.add_argument("--eval-rounds", dest="eval_rounds", type=int, default=5)
    ap.add_argument("--profile", action="store_true", help="torch.profiler tables per variant")
    ap.add_argument("--profile-steps", dest="profile_steps", type=int, default=10)
    # internal: one variant in a fresh process
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    ap.add_argument("--data-dir", dest="data_dir", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.worker:
        worker(args)
        return 0

    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    names = [d.strip() for d in args.data.split(",") if d.strip()]
    variants = [v.strip() for v in args.variants.split(",") if v.strip()]
    known = {*DATASETS, *SCALE_DATASETS}
    for bad in [*(set(names) - known), *(set(variants) - {*VARIANTS, *EXTRA_VARIANTS})]:
        ap.error(f"unknown dataset or variant {bad!r}")
    peak = matmul_peak_gflops()
    result: dict[str, Any] = {
        "command": "python bench/bench_train.py " + " ".join(argv or sys.argv[1:]),
        "machine": {
            "cpus": os.cpu_count(),
            "torch_threads": torch.get_num_threads(),
            "torch": torch.__version__,
            "matmul_peak_gflops": peak,
            "load_avg_start": os.getloadavg(),
            "memory_method": "VmHWM of a fresh subprocess per variant (includes torch CPU "
            "allocations; ru_maxrss would include the parent's RSS at fork); train_rss_mb = "
            "peak minus RSS after data load",
        },
        "hyper": dict(
            hidden=HIDDEN,
            latent=LATENT,
            batch=BATCH,
            lr=LR,
            keep_rate=KEEP,
            beta_cap=BETA_CAP,
            anneal_epochs=ANNEAL_EPOCHS,
            epochs=args.epochs,
            seed=args.seed,
        ),
        "datasets": {},
    }
    rows: list[list[Any]] = []
    irows: list[list[Any]] = []
    with tempfile.TemporaryDirectory(prefix="bench-train-") as tmp:
        for name in names:
            ds = build_dataset(name, args.wheel)
            d_dir = Path(tmp) / name
            ds.save(d_dir)
            flops = model_gflops(ds)
            base = ["--data-dir", str(d_dir), "--epochs", str(args.epochs)]
            base += ["--seed", str(args.seed), "--threads", str(args.threads)]
            runs: dict[str, list[dict[str, Any]]] = {v: [] for v in variants}
            for r in range(args.repeats):
                for v in variants:
                    print(f"[{name}] {v} (repeat {r + 1}/{args.repeats}) ...", flush=True)
                    runs[v].append(summarise(run_worker(["--worker", v, *base]), ds.train.shape[0]))
            entry: dict[str, Any] = {
                "summary": ds.summary(),
                "gflops": flops,
                "flop_limit_s": {
                    "epoch_dense": flops["train_dense"] / peak["wall"],
                    "epoch_min": flops["train_min"] / peak["wall"],
                    "eval_dense": flops["eval_dense"] / peak["wall"],
                    "eval_min": flops["eval_min"] / peak["wall"],
                },
                "flop_limit_cpu_s": {
                    "epoch_dense": flops["train_dense"] / peak["cpu"],
                    "epoch_min": flops["train_min"] / peak["cpu"],
                    "eval_dense": flops["eval_dense"] / peak["cpu"],
                    "eval_min": flops["eval_min"] / peak["cpu"],
                },
                "variants": {},
            }
            for v in variants:
                rs = runs[v]
                agg = {
                    k: (min if k.endswith("_min") else statistics.median)(r[k] for r in rs)
                    for k in rs[0]
                    if isinstance(rs[0][k], float)
                }
                agg["users_per_s"] = ds.train.shape[0] / agg["epoch_s_min"]
                entry["variants"][v] = {**agg, "runs": rs}
            ref = entry["variants"].get("reference")
            for v, s in entry["variants"].items():
                if ref is not None:
                    s["time_ratio"] = s["epoch_s_min"] / ref["epoch_s_min"]
                    s["time_ratio_median"] = s["epoch_s_median"] / ref["epoch_s_median"]
                    s["cpu_time_ratio"] = s["epoch_cpu_s_min"] / ref["epoch_cpu_s_min"]
                    s["eval_ratio"] = s["eval_s_min"] / ref["eval_s_min"]
                    s["eval_cpu_ratio"] = s["eval_cpu_s_min"] / ref["eval_cpu_s_min"]
                    s["mem_ratio"] = s["peak_rss_mb"] / ref["peak_rss_mb"]
                    s["train_mem_ratio"] = s["train_rss_mb"] / max(ref["train_rss_mb"], 1e-9)
                rows.append(
                    [
                        name,
                        v,
                        s["epoch_s_min"],
                        s["epoch_s_median"],
                        s["epoch_cpu_s_min"],
                        entry["flop_limit_cpu_s"]["epoch_min"],
                        round(s["users_per_s"]),
                        s["eval_s_min"],
                        s["eval_cpu_s_min"],
                        s["ndcg@100_last"],
                        round(s["peak_rss_mb"]),
                        round(s["train_rss_mb"]),
                        f"{s.get('time_ratio', math.nan):.2f}",
                        f"{s.get('cpu_time_ratio', math.nan):.2f}",
                        f"{s.get('eval_ratio', math.nan):.2f}",
                        f"{s.get('eval_cpu_ratio', math.nan):.2f}",
                        f"{s.get('mem_ratio', math.nan):.2f}",
                        f"{s.get('train_mem_ratio', math.nan):.2f}",
                        f"{s['load_avg_1min']:.1f}",
                    ]
                )
            if args.interleaved > 0:
                print(
                    f"[{name}] interleaved step timing ({args.interleaved} rounds) ...", flush=True
                )
                entry["interleaved"] = run_worker(
                    ["--worker", "interleaved", "--data-dir", str(d_dir), "--seed", str(args.seed)]
                    + ["--threads", str(args.threads), "--variants", ",".join(variants)]
                    + ["--interleaved", str(args.interleaved)]
                    + ["--eval-rounds", str(args.eval_rounds)]
                )
                for v, iv in entry["interleaved"]["variants"].items():
                    irows.append(
                        [
                            name,
                            v,
                            iv["step_s_median"],
                            iv["step_cpu_s_median"],
                            iv["epoch_s_estimate"],
                            entry["flop_limit_cpu_s"]["epoch_min"]
                            / (-(-ds.train.shape[0] // BATCH)),
                            iv["eval_s_median"],
                            f"{iv.get('step_ratio', math.nan):.2f}",
                            f"{iv.get('step_cpu_ratio', math.nan):.2f}",
                            f"{iv.get('eval_ratio', math.nan):.2f}",
                        ]
                    )
            if args.checkpoint_sizes:
                print(f"[{name}] checkpoint sizes ...", flush=True)
                entry["checkpoint_sizes"] = run_worker(
                    ["--worker", "checkpoint-size", "--data-dir", str(d_dir)]
                    + ["--seed", str(args.seed), "--threads", str(args.threads)]
                )
            result["datasets"][name] = entry
        if args.profile:
            name = names[-1]
            print(f"[{name}] profiling {args.profile_steps} steps per variant ...", flush=True)
            tables = run_worker(
                ["--worker", "profile", "--data-dir", str(Path(tmp) / name)]
                + ["--variants", ",".join(variants)]
                + ["--profile-steps", str(args.profile_steps), "--threads", str(args.threads)]
            )
            result["profile"] = {"dataset": name, "steps": args.profile_steps, "tables": tables}
    peak_end = matmul_peak_gflops()
    result["machine"]["matmul_peak_gflops_end"] = peak_end
    result["machine"]["load_avg_end"] = os.getloadavg()
    print()
    print(
        f"float32 matmul (2048^3), {torch.get_num_threads()} thread(s): "
        f"{peak['wall']:.1f} GFLOP/s wall, {peak['cpu']:.1f} GFLOP per CPU-second at start; "
        f"{peak_end['wall']:.1f} / {peak_end['cpu']:.1f} at end; load average "
        f"{os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs"
    )
    for name, e in result["datasets"].items():
        s, g = e["summary"], e["gflops"]
        print(
            f"{name}: {s['train_users']} train / {s['val_users']} val users x {s['items']} items, "
            f"density {s['density']:.4f}; GFLOP/epoch {g['train_min']:.1f} (min) "
            f"{g['train_dense']:.1f} (dense first layer); FLOP-limit epoch "
            f"{e['flop_limit_cpu_s']['epoch_min']:.3f} CPU-s (min) / "
            f"{e['flop_limit_cpu_s']['epoch_dense']:.3f} CPU-s (dense); at the wall peak "
            f"{e['flop_limit_s']['epoch_min']:.3f} s / {e['flop_limit_s']['epoch_dense']:.3f} s"
        )
        sizes = e.get("checkpoint_sizes")
        if sizes:
            print(
                f"{name}: checkpoint of {sizes['n_items']} items, MB in training / finished / "
                "one copy of the weights: "
                + "; ".join(
                    f"{k} {v['in_training_mb']:.1f} / {v['finished_mb']:.1f} / "
                    f"{v['weights_mb']:.1f}"
                    for k, v in sizes.items()
                    if k != "n_items"
                )
            )
    header = ["data", "variant", "epoch_s", "epoch_med_s", "epoch_cpu_s", "flop_cpu_s"]
    header += ["users/s", "eval_s", "eval_cpu_s", f"ndcg@100@{args.epochs}", "peakMB", "trainMB"]
    header += ["t/ref", "cpu/ref", "eval/ref", "evcpu/ref", "mem/ref", "trainMB/ref", "load"]
    print(fmt_table(rows, header))
    if irows:
        print("\ninterleaved steps (same batches, variants alternating step by step; medians):")
        iheader = ["data", "variant", "step_s", "step_cpu_s", "epoch_est_s", "flop_cpu_step_s"]
        iheader += ["eval_s", "step/ref", "cpu/ref", "eval/ref"]
        print(fmt_table(irows, iheader))
    if "profile" in result:
        for v, t in result["profile"]["tables"].items():
            print(f"\n--- torch.profiler, {v}, {args.profile_steps} steps ---\n{t}")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    sys.path.insert(0, str(ROOT))
    from radius.io import atomic_write_json

    atomic_write_json(out, result)
    print(f"\nwrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
