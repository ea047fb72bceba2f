"""Tests of multi-process training (radius.training.distributed): sharding, seeds, and a real
two-process DistributedDataParallel run on the CPU (gloo) launched by torchrun."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch

from radius.errors import RadiusError
from radius.training.distributed import DistInfo, dist_info, epoch_seed, shard


@pytest.mark.parametrize(("n", "world"), [(10, 1), (10, 2), (11, 2), (101, 4), (7, 7)])
def test_shard_equal_disjoint_parts(n, world):
    """Ranks get equal, disjoint shares covering all but n mod world users."""
    perm = np.random.default_rng(0).permutation(n)
    parts = [shard(perm, DistInfo(r, world, r)) for r in range(world)]
    assert len({len(p) for p in parts}) == 1 and len(parts[0]) == n // world
    joined = np.concatenate(parts)
    assert len(np.unique(joined)) == joined.size == (n // world) * world
    assert set(joined) <= set(perm)
    if world == 1:
        assert parts[0] is perm


def test_shard_too_few_users():
    with pytest.raises(RadiusError, match="3 training users cannot be shared by 4 processes"):
        shard(np.arange(3), DistInfo(0, 4, 0))


def test_epoch_seeds_differ_by_rank_and_epoch():
    seeds = {epoch_seed(0, DistInfo(r, 4, r), e) for r in range(4) for e in range(5)}
    assert len(seeds) == 20
    assert epoch_seed(0, DistInfo(1, 4, 1), 3) == epoch_seed(0, DistInfo(1, 4, 1), 3)


def test_dist_info_from_env(monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "4")
    monkeypatch.setenv("RANK", "2")
    monkeypatch.setenv("LOCAL_RANK", "0")
    info = dist_info()
    assert (info.rank, info.world_size, info.local_rank, info.enabled) == (2, 4, 0, True)
    assert not info.is_main
    monkeypatch.setenv("RANK", "4")
    with pytest.raises(RadiusError, match="bad torchrun environment: RANK=4, WORLD_SIZE=4"):
        dist_info()
    monkeypatch.setenv("RANK", "x")
    with pytest.raises(RadiusError, match="RANK='x' is not an integer"):
        dist_info()
    for name in ("WORLD_SIZE", "RANK", "LOCAL_RANK"):
        monkeypatch.delenv(name)
    assert dist_info() == DistInfo(0, 1, 0)


WORKER = textwrap.dedent(
    """
    import json, sys
    import torch
    import torch.nn.functional as F
    from radius.training.config import TrainConfig
    from radius.data.synthetic import SyntheticParams, default_dataset
    from radius.training.distributed import LossStep, dist_info, shard, wrap
    from radius.model.multvae import SparseBatch
    from radius.training.build import build_model
    from radius.training.trainer import train

    out = sys.argv[1]
    ds = default_dataset(SyntheticParams(n_users=600, n_items=300, n_communities=6,
                                         n_max=150, activity_median=15.0, seed=1))
    for model, extra in (("multvae", {}), ("recvae", {"enc_epochs": 1})):
        cfg = TrainConfig(model=model, hidden_dims=(32,), latent_dim=8, epochs=2, patience=2,
                          batch_size=100, anneal_epochs=1, lambda_a=0.1, **extra)
        res = train(ds, cfg, checkpoint=f"{out}/{model}.pt", progress=False)
        info = dist_info()
        torch.save({"state": res.model.state_dict(), "history": res.history},
                   f"{out}/{model}-rank{info.rank}.pt")

    # an interrupted and resumed run ends where the uninterrupted one does
    cfg = TrainConfig(hidden_dims=(32,), latent_dim=8, epochs=2, patience=2, batch_size=100,
                      anneal_epochs=1, lambda_a=0.1)
    train(ds, cfg, checkpoint=f"{out}/resumed.pt", progress=False, stop_after=1)
    res = train(ds, cfg, checkpoint=f"{out}/resumed.pt", progress=False, resume=True)
    torch.save({"state": res.model.state_dict(), "history": res.history},
               f"{out}/resumed-rank{info.rank}.pt")

    # DDP's averaged gradient over the ranks' shards = the full batch's gradient
    def nll_at_mu(model, batch):
        mu, _ = model.encode_sparse(batch)
        logsm = torch.log_softmax(model.decode(mu), dim=-1)
        return -(logsm[batch.rows, batch.indices] * batch.values).sum() / batch.n_rows

    cfg = TrainConfig(hidden_dims=(32,), latent_dim=8)
    full_model = build_model(cfg, ds.n_items)
    ddp_model = build_model(cfg, ds.n_items)
    perm = torch.arange(100).numpy()
    nll_at_mu(full_model, SparseBatch.from_csr(ds.train[perm])).backward()
    ddp = wrap(LossStep(ddp_model, nll_at_mu), info, torch.device("cpu"), unused=False)
    ddp(SparseBatch.from_csr(ds.train[shard(perm, info)])).backward()
    def rel_diff(m):
        return max(float((a.grad - b.grad).abs().max() / b.grad.abs().max())
                   for a, b in zip(m.parameters(), full_model.parameters())
                   if b.grad is not None)

    local_model = build_model(cfg, ds.n_items)  # no DDP: this rank's shard alone
    nll_at_mu(local_model, SparseBatch.from_csr(ds.train[shard(perm, info)])).backward()
    with open(f"{out}/grad-rank{info.rank}.json", "w") as f:
        json.dump({"max_relative_diff": rel_diff(ddp_model),
                   "local_shard_relative_diff": rel_diff(local_model),
                   "world_size": info.world_size}, f)
    torch.distributed.destroy_process_group()
    """
)


@pytest.mark.slow
def test_two_process_ddp_training(tmp_path, tiny_dataset):
    """torchrun --nproc_per_node=2 on the CPU: ranks end with identical weights, rank 0
    writes one loadable checkpoint, and DDP's gradient equals the full-batch gradient
    (while a rank's own shard gradient does not: the comparison can fail)."""
    from radius.training.checkpoints import load_checkpoint

    script = tmp_path / "worker.py"
    script.write_text(WORKER)
    # loopback only: the job never needs a network interface (CI machines may have none)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    if sys.platform.startswith("linux"):
        env.setdefault("GLOO_SOCKET_IFNAME", "lo")
    torchrun = [sys.executable, "-m", "torch.distributed.run"]  # the torchrun entry point
    proc = subprocess.run(
        [*torchrun, "--standalone", "--nproc_per_node=2", str(script), str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    for model in ("multvae", "recvae"):
        r0 = torch.load(tmp_path / f"{model}-rank0.pt", weights_only=False)
        r1 = torch.load(tmp_path / f"{model}-rank1.pt", weights_only=False)
        assert r0["state"].keys() == r1["state"].keys()
        for k in r0["state"]:
            assert torch.equal(r0["state"][k], r1["state"][k]), (model, k)
        assert len(r0["history"]) == len(r1["history"]) == 2
        ckpt = load_checkpoint(tmp_path / f"{model}.pt", tiny_dataset)
        for k, v in ckpt.model.state_dict().items():
            assert torch.equal(v, r0["state"][k])
    resumed = torch.load(tmp_path / "resumed-rank1.pt", weights_only=False)
    plain = torch.load(tmp_path / "multvae-rank1.pt", weights_only=False)
    for k in plain["state"]:
        assert torch.equal(resumed["state"][k], plain["state"][k]), k
    assert not [p.name for p in tmp_path.iterdir() if ".tmp" in p.name]
    for r in (0, 1):
        g = json.loads((tmp_path / f"grad-rank{r}.json").read_text())
        assert g["world_size"] == 2 and g["max_relative_diff"] < 1e-5
        assert g["local_shard_relative_diff"] > 1e-3
