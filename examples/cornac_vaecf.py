"""Verify a cornac VAECF with radius: fitted by cornac on MovieLens-100k split by cornac's
own RatioSplit, checked against every claim in cornac's item space and split through
``radius.adapters``.

VAECF reads the raw binary row without input dropout, so it is a clean-input model: the
claims that compare clean with masked input, or need PIA anchors, say what is missing.
The radius part is the five lines after "verify with radius".

ML-100k is read from the recbole wheel that ``radius data fetch-ml100k`` (or ``make
data-ml100k``) downloads (cornac's own loader would download it at run time); ``--data
PATH`` takes a ``user item rating`` file instead. About a minute on two CPU cores.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import torch


def ml100k_triples(path: str | None) -> list[tuple[str, str, float]]:
    """(user, item, rating) triples of ML-100k (or of a tab-separated file with a header)."""
    if path is None:
        from radius.data.ml100k import extract_ml100k, find_ml100k_wheel

        wheel = find_ml100k_wheel()
        if wheel is None:
            sys.exit("ML-100k not found: run `radius data fetch-ml100k` or pass --data PATH")
        path = str(extract_ml100k(wheel, Path(tempfile.mkdtemp()) / "ml-100k.inter"))
    lines = Path(path).read_text().splitlines()[1:]
    return [(u, i, float(r)) for u, i, r, *_ in (ln.split("\t") for ln in lines if ln)]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", help="tab-separated user item rating file (default: ML-100k)")
    ap.add_argument("--epochs", type=int, default=50, help="cornac epochs (default 50)")
    ap.add_argument("--claims", default="all", help="claims to verify (default all)")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    t0 = time.perf_counter()

    from cornac.eval_methods import RatioSplit
    from cornac.models import VAECF

    split = RatioSplit(
        ml100k_triples(args.data), test_size=0.1, val_size=0.1, seed=0, exclude_unknowns=True
    )
    model = VAECF(k=20, autoencoder_structure=[200], n_epochs=args.epochs, beta=1.0, seed=0)
    model.fit(split.train_set, split.val_set)
    t_train = time.perf_counter() - t0

    # ---- verify with radius: cornac's item space and split
    import radius
    from radius import adapters

    ds = adapters.cornac_dataset(split.train_set, split.test_set, split.val_set, name="ml-100k")
    results = radius.verify.run_all(
        args.claims, models={"clean": adapters.cornac(model, ds)}, dataset=ds, quick=True
    )
    print(radius.verify.format_table(results))

    m = adapters.cornac(model, ds)
    print(f"\nclean: input convention {m.input_convention!r}, keep rate {m.keep_rate:g}, "
          f"KL weight {m.kl_weight:g}; warnings: {m.radius_warnings or 'none'}")  # fmt: skip
    print(
        f"{ds.name} ({ds.protocol} split, cornac's RatioSplit): {ds.train.shape[0]} users x "
        f"{ds.n_items} items; cornac training {t_train:.1f} s, total "
        f"{time.perf_counter() - t0:.1f} s"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
