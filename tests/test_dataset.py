"""Dataset.from_matrices: a split given as matrices keeps its item universe, order and users."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp

from radius.data.dataset import Dataset
from radius.errors import DataError


def _m(rows, n_items=5):
    r, c = zip(*rows) if rows else ((), ())
    n = max(r) + 1 if r else 0
    return sp.csr_matrix((np.ones(len(r)), (r, c)), shape=(n, n_items))


def test_weak_parts_use_the_training_rows_as_fold_in():
    """A held-out matrix aligned with train: its users are the rows with a target, their
    fold-in rows their training rows; ids and item order are kept; protocol weak."""
    train = _m([(0, 0), (0, 1), (1, 2), (2, 3), (2, 4)])
    test = sp.csr_matrix(([1.0, 1.0], ([0, 2], [2, 0])), shape=(3, 5))
    ds = Dataset.from_matrices(
        train, heldout={"test": test}, item_ids=list("edcba"), user_ids=["u0", "u1", "u2"]
    )
    assert ds.protocol == "weak" and ds.manifest["heldout_parts"] == {"val": "none", "test": "weak"}
    assert ds.manifest["id_maps"]["items"] == list("edcba")
    assert ds.manifest["id_maps"]["test_users"] == ["u0", "u2"]
    assert (ds.test_tr != train.tocsr()[[0, 2]]).nnz == 0
    assert ds.test_te.toarray().tolist() == [[0, 0, 1, 0, 0], [1, 0, 0, 0, 0]]
    assert ds.val_tr.shape == (0, 5)  # a part left out is empty


def test_strong_parts_and_train_only():
    """(fold_in, targets) pairs are other users (protocol strong); no held-out part at all
    makes the training rows the held-out inputs with empty targets (train-only)."""
    train = _m([(0, 0), (1, 1)])
    ds = Dataset.from_matrices(train, heldout={"test": (_m([(0, 2)]), _m([(0, 3)]))})
    assert ds.protocol == "strong" and ds.test_tr.shape == (1, 5)
    only = Dataset.from_matrices(train)
    assert only.protocol == "train-only" and only.test_te.nnz == 0
    assert (only.test_tr != only.train).nnz == 0


def test_values_are_binarised_and_counted():
    """Ratings become interactions (1), explicit zeros vanish; the manifest counts them."""
    train = sp.csr_matrix(np.array([[4.0, 0.0, 1.0], [0.0, 2.5, 0.0]]))
    ds = Dataset.from_matrices(train)
    assert ds.train.toarray().tolist() == [[1, 0, 1], [0, 1, 0]]
    assert ds.manifest["counts"]["binarised_values"] == {"train": 2}


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"item_ids": ["a", "b"]}, "item_ids has 2 ids, but train has 5 items"),
        ({"item_ids": list("aabcd")}, "item_ids repeat an id: 'a'"),
        ({"user_ids": ["x"]}, "user_ids has 1 ids, but train has 2 rows"),
        (
            {"heldout": {"tset": _m([(0, 1)])}},
            r"heldout parts are 'val' and 'test', got \['tset'\]",
        ),
        (
            {"heldout": {"test": _m([(0, 1)], n_items=4)}},
            r"must have train's shape \(2, 5\), got \(1, 4\)",
        ),
        (
            {"heldout": {"val": (_m([(0, 1)]), _m([(1, 1)]))}},
            "val fold-in has 1 users but its targets 2",
        ),
        (
            {"heldout": {"test": (_m([(0, 1)], n_items=4), _m([(0, 1)], n_items=4))}},
            "test fold-in has 4 items, but train has 5",
        ),
    ],
)
def test_bad_matrices_are_refused(kwargs, message):
    """Each inconsistency is a DataError naming the part and the numbers."""
    with pytest.raises(DataError, match=message):
        Dataset.from_matrices(_m([(0, 0), (1, 1)]), **kwargs)


def test_negative_and_non_finite_values_are_refused():
    """Interactions are >= 0 and finite."""
    with pytest.raises(DataError, match="train has 1 negative values"):
        Dataset.from_matrices(np.array([[1.0, -2.0]]))
    with pytest.raises(DataError, match="train has 1 non-finite values"):
        Dataset.from_matrices(np.array([[1.0, np.nan]]))
    with pytest.raises(DataError, match="train must be a 2-D matrix, got 1 dimensions"):
        Dataset.from_matrices(np.array([1.0, 2.0]))


def test_saved_and_loaded_dataset_keeps_its_protocol(tmp_path):
    """A weak dataset saved and loaded has the same hash and protocol."""
    ds = Dataset.from_matrices(_m([(0, 0), (1, 1)]), heldout={"test": _m([(0, 2), (1, 3)])})
    back = Dataset.load(ds.save(tmp_path / "d"))
    assert back.hash == ds.hash and back.protocol == "weak"
