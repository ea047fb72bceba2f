"""The prepared dataset: CSR matrices of the strong-generalisation split + manifest.

Layout on disk (a folder, written atomically)::

    manifest.json        source hash, parameters, counts, id maps, content hash
    train.npz            (n_train_users, I) binary CSR, float32
    val_tr.npz val_te.npz test_tr.npz test_te.npz   fold-in / held-out of held-out users
    ground_truth.npz     (synthetic only) item_community, user_mixture, ...
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import scipy.sparse as sp

from radius.errors import DataError
from radius.io import atomic_dir, stable_hash, to_jsonable

__all__ = ["Dataset", "COHORTS", "cohort_of", "content_hash"]

SPLITS = ("train", "val_tr", "val_te", "test_tr", "test_te")

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
