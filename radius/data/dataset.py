"""The prepared dataset: CSR matrices of a split + manifest.

Two protocols (``manifest["protocol"]``):

- ``strong`` (Liang et al. 2018, radius's default): validation and test users are
  held out whole; ``val_tr`` / ``test_tr`` are their fold-in rows (80% of their items,
  never trained on) and ``val_te`` / ``test_te`` the targets (20%).
- ``weak`` (RecBole's and cornac's default): every user trains on part of their own
  interactions (80%); the validation and test users are training users with held-out
  interactions, ``val_tr`` / ``test_tr`` are their *training* rows (what the model reads
  at evaluation, as in RecBole's and cornac's evaluators) and ``val_te`` / ``test_te``
  their held-out interactions (10% + 10%).

Claims that read held-out users' inputs (``test_tr``: L2.4's pairs, T2.5, P3.1, P3.2,
the t-SNE figure) therefore read fresh users under ``strong`` and training users' own
inputs under ``weak``; ``Dataset.protocol`` says which, and every claim's context
records it.

Layout on disk (a folder, written atomically)::

    manifest.json        source hash, parameters, counts, id maps, content hash
    train.npz            (n_train_users, I) binary CSR, float32
    val_tr.npz val_te.npz test_tr.npz test_te.npz   fold-in / held-out of held-out users
    ground_truth.npz     (synthetic only) item_community, user_mixture, ...
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import scipy.sparse as sp

from radius.errors import DataError
from radius.io import atomic_dir, stable_hash, to_jsonable

__all__ = ["Dataset", "COHORTS", "cohort_of", "content_hash", "PROTOCOLS"]

SPLITS = ("train", "val_tr", "val_te", "test_tr", "test_te")
PROTOCOLS: tuple[str, ...] = ("strong", "weak")

# Interaction-count cohorts of the paper: [5-10], [11-50], [51-100], [100+].
# The paper's bins overlap at 100; here 100 belongs to [51-100] and [100+] means > 100.
COHORTS: tuple[tuple[str, int, float], ...] = (
    ("5-10", 0, 10),
    ("11-50", 11, 50),
    ("51-100", 51, 100),
    ("100+", 101, float("inf")),
)


def cohort_of(counts: np.ndarray) -> np.ndarray:
    """Cohort index 0..3 per user from interaction counts (users below 5 go to 0)."""
    counts = np.asarray(counts)
    out = np.zeros(counts.shape, dtype=np.int64)
    for k, (_, lo, hi) in enumerate(COHORTS):
        out[(counts >= lo) & (counts <= hi)] = k
    return out


def content_hash(mats: dict[str, sp.csr_matrix]) -> str:
    """Hash of the matrices' structure and values (16 hex chars)."""
    import hashlib

    h = hashlib.sha256()
    for name in SPLITS:
        m = mats[name].tocsr()
        m.sort_indices()
        h.update(name.encode())
        h.update(np.asarray(m.shape, dtype=np.int64).tobytes())
        h.update(np.asarray(m.indptr, dtype=np.int64).tobytes())
        h.update(np.asarray(m.indices, dtype=np.int64).tobytes())
        h.update(np.asarray(m.data, dtype=np.float32).tobytes())
    return h.hexdigest()[:16]


@dataclass
class Dataset:
    """A prepared dataset.

    Attributes
    ----------
    train : (n_train, I) CSR, binary float32: training users.
    val_tr, val_te : (n_val, I): fold-in (80%) and held-out (20%) of validation users.
    test_tr, test_te : (n_test, I): the same for test users.
    manifest : JSON-able dict: ``name``, ``source`` (path, sha256), ``params``,
        ``counts``, ``id_maps`` and ``hash`` (content hash of the matrices).
    ground_truth : arrays known only for synthetic data (None otherwise).
    """

    train: sp.csr_matrix
    val_tr: sp.csr_matrix
    val_te: sp.csr_matrix
    test_tr: sp.csr_matrix
    test_te: sp.csr_matrix
    manifest: dict[str, Any] = field(default_factory=dict)
    ground_truth: dict[str, np.ndarray] | None = None

    def __post_init__(self) -> None:
        mats = {s: getattr(self, s) for s in SPLITS}
        n_items = {m.shape[1] for m in mats.values()}
        if len(n_items) != 1:
            raise DataError(f"splits disagree on the number of items: {sorted(n_items)}")
        for s, m in mats.items():
            m = sp.csr_matrix(m, dtype=np.float32)
            m.sort_indices()
            setattr(self, s, m)
        if (
            self.val_tr.shape[0] != self.val_te.shape[0]
            or self.test_tr.shape[0] != self.test_te.shape[0]
        ):
            raise DataError("fold-in and held-out parts must have the same users")
        self.manifest.setdefault("name", "dataset")
        self.manifest["hash"] = content_hash({s: getattr(self, s) for s in SPLITS})

    # ----------------------------------------------------------------- props
    @property
    def name(self) -> str:
        return str(self.manifest.get("name", "dataset"))

    @property
    def hash(self) -> str:
        return str(self.manifest["hash"])

    @property
    def n_items(self) -> int:
        return int(self.train.shape[1])

    @property
    def protocol(self) -> str:
        """``"strong"`` (held-out users), ``"weak"`` (held-out interactions of training
        users) or ``"train-only"`` (no held-out part given): see the module doc."""
        params = self.manifest.get("params") or {}
        return str(self.manifest.get("protocol") or params.get("protocol") or "strong")

    # ---------------------------------------------------------- construction
    @classmethod
    def from_matrices(
        cls,
        train: Any,
        *,
        heldout: Mapping[str, Any] | None = None,
        item_ids: Sequence[Any] | None = None,
        user_ids: Sequence[Any] | None = None,
        name: str = "dataset",
        manifest: Mapping[str, Any] | None = None,
    ) -> Dataset:
        r"""A dataset from matrices that already hold a split: the given item universe,
        item order and users are kept (nothing is filtered, re-split or thresholded).

        Parameters
        ----------
        train : (U, I) training interactions (scipy sparse or a dense array): row u is
            the input user u trained on. Every stored non-zero value counts as one
            interaction (values other than 1 are binarised; the manifest counts them).
        heldout : ``{"val": part, "test": part}`` (either key optional), where a part is

            - ``(fold_in, targets)``, two (V, I) matrices of V users *not* in ``train``
              (strong generalisation), or
            - one (U, I) matrix aligned with ``train``: held-out interactions of the
              training users (weak generalisation); the part's users are the rows with
              at least one held-out item, their fold-in rows are their ``train`` rows.

            A part left out is empty (no users). None (or ``{}``): no held-out part
            (``protocol = "train-only"``): ``val_tr`` / ``test_tr`` are then the training
            rows and the targets are empty, so the claims that read held-out users'
            inputs read the training users' inputs.
        item_ids : the I item ids in column order (default ``0 .. I-1``), kept as strings
            in ``manifest["id_maps"]["items"]``.
        user_ids : the U training users' ids in row order (default ``0 .. U-1``).
        name : the dataset's name.
        manifest : more manifest entries (``source``, ``params``, ...), stored as given.

        Raises
        ------
        DataError
            Matrices of different item counts, a weak part whose shape differs from
            ``train``'s, fold-in and target parts of different users, negative or
            non-finite values, ids that do not match the matrices or repeat, an unknown
            part name.
        """
        tr = _as_csr(train, "train")
        n_users, n_items = tr.matrix.shape
        items = [str(x) for x in (range(n_items) if item_ids is None else item_ids)]
        if len(items) != n_items:
            raise DataError(f"item_ids has {len(items)} ids, but train has {n_items} items")
        if len(set(items)) != len(items):
            dup = next(x for x in items if items.count(x) > 1)
            raise DataError(f"item_ids repeat an id: {dup!r}")
        users = [str(x) for x in (range(n_users) if user_ids is None else user_ids)]
        if len(users) != n_users:
            raise DataError(f"user_ids has {len(users)} ids, but train has {n_users} rows")
        parts = dict(heldout or {})
        unknown = sorted(set(parts) - {"val", "test"})
        if unknown:
            raise DataError(f"heldout parts are 'val' and 'test', got {unknown}")
        binarised = {"train": tr.binarised}
        mats: dict[str, sp.csr_matrix] = {"train": tr.matrix}
        id_maps = {"items": items, "train_users": users}
        kinds = {}
        for split in ("val", "test"):
            part = parts.get(split)
            if part is None and not parts:  # train only: held-out inputs = training rows
                fold_in, targets = tr.matrix, sp.csr_matrix((n_users, n_items), dtype=np.float32)
                ids, kind = users, "none"
            elif part is None:  # the other part was given: this one is empty
                fold_in = targets = sp.csr_matrix((0, n_items), dtype=np.float32)
                ids, kind = [], "none"
            elif isinstance(part, tuple | list):
                if len(part) != 2:
                    raise DataError(
                        f"heldout[{split!r}] must be (fold_in, targets) or one matrix aligned "
                        f"with train, got a sequence of {len(part)}"
                    )
                a, b = _as_csr(part[0], f"{split} fold-in"), _as_csr(part[1], f"{split} targets")
                for what, m in ((f"{split} fold-in", a), (f"{split} targets", b)):
                    if m.matrix.shape[1] != n_items:
                        raise DataError(
                            f"{what} has {m.matrix.shape[1]} items, but train has {n_items}"
                        )
                if a.matrix.shape[0] != b.matrix.shape[0]:
                    raise DataError(
                        f"{split} fold-in has {a.matrix.shape[0]} users but its targets "
                        f"{b.matrix.shape[0]}: they must be the same users, row by row"
                    )
                fold_in, targets = a.matrix, b.matrix
                binarised[f"{split}_tr"], binarised[f"{split}_te"] = a.binarised, b.binarised
                ids = [f"{split}:{k}" for k in range(fold_in.shape[0])]
                kind = "strong"
            else:
                t = _as_csr(part, f"{split} targets")
                if t.matrix.shape != tr.matrix.shape:
                    raise DataError(
                        f"heldout[{split!r}] is one matrix, so it holds held-out interactions "
                        f"of the training users and must have train's shape {tr.matrix.shape}, "
                        f"got {t.matrix.shape}"
                    )
                rows = np.flatnonzero(np.diff(t.matrix.indptr) > 0)
                fold_in, targets = tr.matrix[rows], t.matrix[rows]
                binarised[f"{split}_te"] = t.binarised
                ids = [users[r] for r in rows.tolist()]
                kind = "weak"
            mats[f"{split}_tr"], mats[f"{split}_te"] = fold_in, targets
            id_maps[f"{split}_users"] = ids
            kinds[split] = kind
        given = {k for k in kinds.values() if k != "none"}
        if not given:
            protocol = "train-only"
        elif len(given) == 1:
            protocol = given.pop()
        else:
            protocol = "mixed"
        overlap = {
            s: int(mats[f"{s}_tr"].multiply(mats[f"{s}_te"]).nnz)
            for s in ("val", "test")
            if kinds[s] != "none"
        }
        man: dict[str, Any] = {
            "name": name,
            "protocol": protocol,
            "heldout_parts": kinds,
            "counts": {
                "items": int(n_items),
                "train_users": int(n_users),
                "val_users": int(mats["val_tr"].shape[0]),
                "test_users": int(mats["test_tr"].shape[0]),
                "train_interactions": int(mats["train"].nnz),
                "targets_also_in_fold_in": overlap,
                "binarised_values": {k: v for k, v in binarised.items() if v},
            },
            "id_maps": id_maps,
        }
        man.update(dict(manifest or {}))
        return cls(**mats, manifest=man)

    def heldout(self, split: str = "test") -> tuple[sp.csr_matrix, sp.csr_matrix]:
        """(fold-in, held-out) matrices of ``split`` in {"val", "test"}."""
        if split not in ("val", "test"):
            raise ValueError(f"split must be 'val' or 'test', got {split!r}")
        return getattr(self, f"{split}_tr"), getattr(self, f"{split}_te")

    def counts(self, split: str = "train") -> np.ndarray:
        """Interaction count per user (fold-in + held-out for val/test)."""
        if split == "train":
            return np.diff(self.train.indptr)
        tr, te = self.heldout(split)
        return np.diff(tr.indptr) + np.diff(te.indptr)

    def summary(self) -> dict[str, Any]:
        def dens(m):
            return m.nnz / max(1, m.shape[0] * m.shape[1])

        counts = self.counts("train")
        cohorts = np.bincount(cohort_of(counts), minlength=len(COHORTS))
        return {
            "name": self.name,
            "hash": self.hash,
            "protocol": self.protocol,
            "items": self.n_items,
            "train_users": self.train.shape[0],
            "val_users": self.val_tr.shape[0],
            "test_users": self.test_tr.shape[0],
            "train_interactions": int(self.train.nnz),
            "density": round(dens(self.train), 6),
            "train_cohorts": {c[0]: int(n) for c, n in zip(COHORTS, cohorts)},
        }

    # ------------------------------------------------------------------ io
    def save(self, path: str | Path) -> Path:
        """Write the folder atomically (built under a temporary name, then renamed)."""
        path = Path(path)
        with atomic_dir(path) as tmp:
            for s in SPLITS:
                sp.save_npz(tmp / f"{s}.npz", getattr(self, s), compressed=True)
            if self.ground_truth is not None:
                np.savez_compressed(tmp / "ground_truth.npz", **self.ground_truth)
            (tmp / "manifest.json").write_text(
                json.dumps(to_jsonable(self.manifest), indent=2) + "\n"
            )
        return path

    @classmethod
    def load(cls, path: str | Path) -> Dataset:
        path = Path(path)
        man_path = path / "manifest.json"
        if not man_path.is_file():
            raise DataError(
                f"{path}: not a prepared dataset (no manifest.json); run `radius data prepare`"
            )
        try:
            manifest = json.loads(man_path.read_text())
        except json.JSONDecodeError as e:
            raise DataError(f"{man_path}: invalid JSON at line {e.lineno}: {e.msg}") from e
        mats = {}
        for s in SPLITS:
            f = path / f"{s}.npz"
            if not f.is_file():
                raise DataError(f"{path}: missing {f.name}")
            mats[s] = sp.load_npz(f).tocsr()
        gt = None
        if (path / "ground_truth.npz").is_file():
            with np.load(path / "ground_truth.npz") as z:
                gt = {k: z[k] for k in z.files}
        stored = manifest.get("hash")
        ds = cls(**mats, manifest=manifest, ground_truth=gt)
        if stored is not None and stored != ds.hash:
            raise DataError(
                f"{path}: content hash {ds.hash} does not match the manifest's {stored}"
            )
        return ds

    def key(self) -> str:
        return stable_hash({"hash": self.hash})


class _Binary(NamedTuple):
    matrix: sp.csr_matrix  # binary float32, sorted indices, no explicit zeros
    binarised: int  # stored values that were not 1 (set to 1)


def _as_csr(m: Any, what: str) -> _Binary:
    """A 2-D non-negative finite matrix as binary CSR; DataError naming ``what`` else."""
    if sp.issparse(m):
        out = sp.csr_matrix(m, dtype=np.float64, copy=True)
    else:
        arr = np.asarray(m, dtype=np.float64)
        if arr.ndim != 2:
            raise DataError(f"{what} must be a 2-D matrix, got {arr.ndim} dimensions")
        out = sp.csr_matrix(arr)
    if out.ndim != 2:
        raise DataError(f"{what} must be a 2-D matrix")
    data = out.data
    if not np.isfinite(data).all():
        raise DataError(f"{what} has {int((~np.isfinite(data)).sum())} non-finite values")
    if (data < 0).any():
        raise DataError(
            f"{what} has {int((data < 0).sum())} negative values (interactions are counts or "
            f"ratings >= 0; e.g. {float(data[data < 0][0]):g})"
        )
    out.eliminate_zeros()
    out.sum_duplicates()
    binarised = int((out.data != 1.0).sum())
    out.data[:] = 1.0
    out = sp.csr_matrix(out, dtype=np.float32)
    out.sort_indices()
    return _Binary(out, binarised)
