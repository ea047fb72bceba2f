"""Verify a RecBole MultiVAE with radius: trained by RecBole's own Config, dataset and
Trainer on MovieLens-100k, checked against every claim in RecBole's item space, split and
posterior scale through ``radius.adapters``.

Two models, as in the paper's ablation: clean input (``dropout_prob`` 0) and masked input
(``dropout_prob`` 0.5, keep rate 0.5). RecBole has no PIA, so the PIA-only parts of the
claims say what is missing. The radius part is the six lines after "verify with radius".

Needs ``recbole==1.2.1`` (numpy < 2; ``make test-recbole`` builds ``.venv-recbole`` with
it) and reads ML-100k from RecBole's own ``dataset_example`` folder (nothing is
downloaded). RecBole's quick_start imports ray, so the pieces are imported directly.

Run: ``.venv-recbole/bin/python examples/recbole_multivae.py`` (about two minutes on two
CPU cores; ``--epochs`` and ``--claims`` make it shorter). ``--save DIR`` also writes the
dataset and prints the equivalent ``radius verify --adapter recbole`` command.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import tempfile
import time
import warnings
from pathlib import Path

import torch


def train_multivae(dropout_prob: float, *, epochs: int, workdir: Path):
    """RecBole's own pipeline: Config, create_dataset, data_preparation, Trainer.fit; the
    model is then the trainer's best (validation) state, as RecBole's evaluate loads it."""
    import recbole
    from recbole.config import Config
    from recbole.data import create_dataset, data_preparation
    from recbole.model.general_recommender import MultiVAE
    from recbole.trainer import Trainer
    from recbole.utils import init_seed

    config = Config(
        model="MultiVAE",
        dataset="ml-100k",
        config_dict={
            "data_path": str(Path(recbole.__file__).parent / "dataset_example"),
            "checkpoint_dir": str(workdir / "saved"),
            "epochs": epochs,
            "eval_step": 5,
            "dropout_prob": dropout_prob,
            "train_neg_sample_args": None,  # MultiVAE is a non-sampling model
            "use_gpu": False,
            "show_progress": False,
            "state": "ERROR",
            "seed": 0,
        },
    )
    init_seed(config["seed"], config["reproducibility"])
    logging.getLogger().setLevel(logging.ERROR)
    dataset = create_dataset(config)
    train_data, valid_data, test_data = data_preparation(config, dataset)
    model = MultiVAE(config, train_data.dataset)
    trainer = Trainer(config, model)
    trainer.fit(train_data, valid_data, saved=True, show_progress=False)
    best = torch.load(trainer.saved_model_file, map_location="cpu", weights_only=False)
    model.load_state_dict(best["state_dict"])
    return model.eval(), (train_data, valid_data, test_data), Path(trainer.saved_model_file)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--epochs", type=int, default=30, help="RecBole epochs (default 30)")
    ap.add_argument("--claims", default="all", help="claims to verify (default all)")
    ap.add_argument("--save", help="write the dataset here and print the CLI command")
    args = ap.parse_args(argv)
    warnings.filterwarnings("ignore")  # RecBole's pandas / torch.amp deprecation noise
    torch.set_num_threads(1)
    t0 = time.perf_counter()
    workdir = Path(tempfile.mkdtemp(prefix="recbole-"))
    os.chdir(workdir)  # RecBole writes log/ and log_tensorboard/ into the working directory
    clean, splits, clean_file = train_multivae(0.0, epochs=args.epochs, workdir=workdir)
    masked, _, masked_file = train_multivae(0.5, epochs=args.epochs, workdir=workdir)
    t_train = time.perf_counter() - t0

    # ---- verify with radius: RecBole's item space, split and posterior scale
    import radius
    from radius import adapters

    ds = adapters.recbole_dataset(*splits)
    models = {"clean": adapters.recbole(clean, ds), "masking": adapters.recbole(masked, ds)}
    results = radius.verify.run_all(args.claims, models=models, dataset=ds, quick=True)
    print(radius.verify.format_table(results))

    for setting, m in models.items():
        print(f"\n{setting}: keep rate {m.keep_rate:g}, posterior scale {m.posterior_scale:g}, "
              f"KL weight {m.kl_weight:.3g} ({m.source['kl_weight_from']})")  # fmt: skip
        for note in m.radius_warnings:
            print(f"  warning: {note}")
    print(
        f"\n{ds.name} ({ds.protocol} split, RecBole's): {ds.train.shape[0]} users x "
        f"{ds.n_items} items; RecBole training {t_train:.1f} s, total "
        f"{time.perf_counter() - t0:.1f} s"
    )
    if args.save:
        out = ds.save(Path(args.save).resolve())
        print(
            f"\nthe same from the command line:\n  radius verify --theorem {args.claims} "
            f"--data {out} --adapter recbole --checkpoint clean={clean_file} "
            f"--checkpoint masking={masked_file} --quick"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
