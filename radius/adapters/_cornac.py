r"""cornac's VAECF behind the model protocol, and cornac's train / test sets as a Dataset.

What the adapter reads (cornac 3.0.1, ``cornac/models/vaecf/vaecf.py``):

- item space: the VAE's input and output have ``train_set.num_items`` coordinates,
  item j being the raw id with ``train_set.iid_map[raw] == j``; radius keeps that order.
- input convention: ``learn`` feeds the binarised raw row (no normalisation, no
  dropout): radius's ``"none"`` with keep rate 1 (a clean model).
- encoder :math:`h = \mathrm{act}(\dots)`, ``enc_mu(h)``, ``enc_logvar(h)``; the decoder
  ``vae.decoder`` ends in an ``nn.Linear`` giving logits (``decode`` applies the softmax
  for the multinomial likelihood ``"mult"``, the only one radius's claims are about).
- posterior: ``reparameterize`` samples :math:`z = \mu + \sigma\epsilon` (scale 1); KL
  weight: the constant ``beta`` (default 1).
"""

from __future__ import annotations

import copy
from typing import Any

import numpy as np
import scipy.sparse as sp
from torch import Tensor, nn

from radius.data.dataset import Dataset
from radius.errors import DataError
from radius.model.wrap import ModelError, WrappedVAE, posterior_warnings, wrap

__all__ = ["cornac", "cornac_dataset"]


class _TwoHeads(nn.Module):
    """cornac's encoder trunk and its mu / logvar heads as one module (mu, logvar)."""

    def __init__(self, trunk: nn.Module, mu: nn.Linear, logvar: nn.Linear) -> None:
        super().__init__()
        self.trunk = trunk
        self.mu = mu
        self.logvar = logvar

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        h = self.trunk(x)
        return self.mu(h), self.logvar(h)


def _cornac_version() -> str | None:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("cornac")
    except PackageNotFoundError:
        return None


def _labels(index_map: Any, n: int, what: str) -> list[str]:
    """Raw ids in index order from a cornac ``raw id -> index`` map (indices < n)."""
    labels: list[Any] = [None] * n
    for raw, j in index_map.items():
        if 0 <= int(j) < n:
            labels[int(j)] = raw
    missing = [j for j, x in enumerate(labels) if x is None]
    if missing:
        raise DataError(f"cornac {what} does not cover index {missing[0]} (of {n})")
    return [str(x) for x in labels]


def _aligned(part: Any, n_users: int, n_items: int) -> tuple[sp.csr_matrix, int]:
    """A cornac set's interactions as a (n_users, n_items) matrix in the training set's
    indices; interactions of users or items unknown to the training set are dropped."""
    u, i, _ = part.uir_tuple
    u, i = np.asarray(u, dtype=np.int64), np.asarray(i, dtype=np.int64)
    ok = (u < n_users) & (i < n_items)
    m = sp.csr_matrix(
        (np.ones(int(ok.sum()), dtype=np.float32), (u[ok], i[ok])), shape=(n_users, n_items)
    )
    return m, int((~ok).sum())


def cornac_dataset(
    train_set: Any, test_set: Any = None, val_set: Any = None, *, name: str = "cornac"
) -> Dataset:
    """The radius ``Dataset`` of cornac's sets, in the training set's item indices.

    Parameters
    ----------
    train_set : the ``cornac.data.Dataset`` the model was fitted on (e.g.
        ``RatioSplit(...).train_set``).
    test_set, val_set : cornac's held-out sets (``.test_set``, ``.val_set``) or None.
    name : the dataset's name.

    Returns
    -------
    Dataset with ``protocol = "weak"`` (cornac's splits hold out interactions, not users):
    ``train`` the binarised ``train_set.matrix`` (every stored rating counts, as VAECF's
    ``learn`` binarises), the validation and test users those with a held-out
    interaction, their fold-in rows their training rows (what ``VAECF.score`` reads).
    Every held-out interaction is a target (cornac's ``rating_threshold`` is not
    applied; said in the manifest); those of users or items the training set does not
    know are dropped and counted.
    """
    for what in ("matrix", "num_items", "num_users", "iid_map", "uid_map"):
        if not hasattr(train_set, what):
            raise TypeError(
                f"expected a cornac.data.Dataset as train_set (no {what!r}), got "
                f"{type(train_set).__name__}"
            )
    n_users, n_items = int(train_set.num_users), int(train_set.num_items)
    train = sp.csr_matrix(train_set.matrix)[:n_users, :n_items]
    heldout, dropped = {}, {}
    for split, part in (("val", val_set), ("test", test_set)):
        if part is not None:
            heldout[split], dropped[split] = _aligned(part, n_users, n_items)
    ds = Dataset.from_matrices(
        train,
        heldout=heldout,
        item_ids=_labels(train_set.iid_map, n_items, "train_set.iid_map"),
        user_ids=_labels(train_set.uid_map, n_users, "train_set.uid_map"),
        name=name,
        manifest={
            "source": {"library": "cornac", "version": _cornac_version()},
            "cornac": {
                "n_items": n_items,
                "n_users": n_users,
                "targets": "every held-out interaction (cornac's rating_threshold not applied)",
            },
        },
    )
    ds.manifest["counts"]["heldout_dropped_unknown"] = dropped
    return ds


def cornac(model: Any, train_set: Any) -> WrappedVAE:
    """cornac's ``VAECF`` (fitted) as a radius model in the training set's item space.

    Parameters
    ----------
    model : a fitted ``cornac.models.VAECF`` (its ``vae``), or the ``vae`` module itself.
    train_set : the cornac training set it was fitted on, or the ``Dataset`` from
        ``cornac_dataset(train_set, ...)``.

    Returns
    -------
    WrappedVAE with input convention ``"none"`` (VAECF reads the raw binary row), keep
    rate 1, posterior scale 1, ``kl_weight = model.beta``; warnings in
    ``radius_warnings``. The weights are copied.

    Raises
    ------
    ModelError
        An unfitted model, a likelihood other than ``"mult"``, an item count other than
        the training set's.
    """
    vae = getattr(model, "vae", model)
    for what in ("encoder", "enc_mu", "enc_logvar", "decoder"):
        if not isinstance(getattr(vae, what, None), nn.Module):
            raise ModelError(
                f"cornac model {type(model).__name__} has no fitted VAE (no vae.{what}): call "
                "model.fit(train_set) first"
            )
    likelihood = str(getattr(vae, "likelihood", getattr(model, "likelihood", "mult")))
    if likelihood != "mult":
        raise ModelError(
            f"cornac VAECF with likelihood {likelihood!r}: radius's claims are about the "
            "multinomial likelihood ('mult')"
        )
    ds = train_set if isinstance(train_set, Dataset) else cornac_dataset(train_set)
    n = next(m for m in vae.encoder.modules() if isinstance(m, nn.Linear)).in_features
    if n != ds.n_items:
        raise ModelError(
            f"cornac VAECF: the VAE has {n} items, but the training set has {ds.n_items}: "
            "fitted on another training set?"
        )
    enc = _TwoHeads(
        copy.deepcopy(vae.encoder), copy.deepcopy(vae.enc_mu), copy.deepcopy(vae.enc_logvar)
    ).cpu()
    beta = float(getattr(model, "beta", 1.0))
    wrapped = wrap(
        enc,
        copy.deepcopy(vae.decoder).cpu(),
        input_convention="none",
        keep_rate=1.0,
        n_items=ds.n_items,
        kl_weight=beta,
    )
    wrapped.source = {
        "library": "cornac",
        "model": type(model).__name__,
        "likelihood": likelihood,
        "act_fn": getattr(model, "act_fn", None),
        "kl_weight": beta,
        "kl_weight_from": "VAECF.beta (constant)",
        "items": "the training set's item indices (iid_map)",
    }
    posterior_warnings(wrapped, ds.train)
    return wrapped
