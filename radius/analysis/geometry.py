r"""Latent geometry: Wasserstein distances between diagonal-Gaussian posteriors.

Used by T2.3 (sharing radius), L2.4 and T2.5 (latent distance against input distance);
the encoder and decoder Lipschitz constants are in ``radius.analysis.lipschitz``.

Glossary
--------
- :math:`q_u = \mathcal N(\mu_u, \operatorname{diag}\sigma_u^2)`, the posterior of user u,
  :math:`\sigma_u = e^{\mathrm{logvar}_u / 2}`; d the latent dimension.
- :math:`W_p` the p-Wasserstein distance with the Euclidean ground cost.
- :math:`\tilde x = x / (\lVert x\rVert_2 + \epsilon)` the normalised input the
  Multi-VAE encoder sees (``EPS_NORM``).

Facts used
----------
For diagonal Gaussians the W2 distance has the closed form

.. math::

    W_2(q_u, q_v)^2 = \lVert\mu_u - \mu_v\rVert_2^2 + \lVert\sigma_u - \sigma_v\rVert_2^2,

i.e. the Euclidean distance between the stacked vectors :math:`(\mu, \sigma)`; W1 has no
closed form and is sandwiched (T2.3):

.. math::

    \lVert\mu_u - \mu_v\rVert_2 \le W_1(q_u, q_v) \le W_2(q_u, q_v).

The lower bound is Jensen (:math:`\lVert E[X - Y]\rVert \le E\lVert X - Y\rVert` under any
coupling); the upper bound is :math:`W_1 \le W_2` (Cauchy-Schwarz).

The sample-based W1 of POT is biased *upward*: :math:`W_1` is jointly convex in its two
arguments and the empirical measures are unbiased for the true ones, so by Jensen
:math:`W_1(q_u, q_v) \le E\,W_1(\hat q_u^{(n)}, \hat q_v^{(n)})`, with a bias that
shrinks like :math:`n^{-1/d}` in d dimensions (``w1_bias_table`` shows it). Report it
beside the sandwich, never alone.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor

__all__ = [
    "W1Estimate",
    "w2_diag",
    "w2_diag_pairwise",
    "w1_sandwich",
    "w1_empirical",
    "w1_sliced",
    "w1_bias_table",
]

ArrayLike = Tensor | np.ndarray


# --------------------------------------------------------------------------- helpers
def _as_tensor(name: str, a: Any) -> Tensor:
    if isinstance(a, Tensor):
        return a
    if isinstance(a, np.ndarray):
        return torch.from_numpy(a)
    raise TypeError(f"{name} must be a torch.Tensor or numpy.ndarray, got {type(a).__name__}")


def _check_gaussians(mu1: Any, logvar1: Any, mu2: Any, logvar2: Any) -> tuple[Tensor, ...]:
    m1, l1 = _as_tensor("mu1", mu1), _as_tensor("logvar1", logvar1)
    m2, l2 = _as_tensor("mu2", mu2), _as_tensor("logvar2", logvar2)
    if m1.shape != l1.shape:
        raise ValueError(
            f"mu1 and logvar1 must have the same shape, got {tuple(m1.shape)} and {tuple(l1.shape)}"
        )
    if m2.shape != l2.shape:
        raise ValueError(
            f"mu2 and logvar2 must have the same shape, got {tuple(m2.shape)} and {tuple(l2.shape)}"
        )
    if m1.ndim == 0 or m2.ndim == 0 or m1.shape[-1] != m2.shape[-1]:
        raise ValueError(
            f"the last (latent) dimension must agree, got {tuple(m1.shape)} and {tuple(m2.shape)}"
        )
    return tuple(t.to(torch.float64) for t in (m1, l1, m2, l2))


def _stacked(mu: Tensor, logvar: Tensor) -> Tensor:
    """(..., d), (..., d) -> (..., 2d): the vector (mu, sigma) whose distance is W2."""
    return torch.cat([mu, torch.exp(0.5 * logvar)], dim=-1)


# --------------------------------------------------------------------------- W2 / W1
def w2_diag(mu1: ArrayLike, logvar1: ArrayLike, mu2: ArrayLike, logvar2: ArrayLike) -> Tensor:
    r"""Closed-form W2 between diagonal Gaussians, pair by pair (float64).

    .. math::

        W_2(q_1, q_2) = \sqrt{\lVert\mu_1 - \mu_2\rVert_2^2
            + \lVert e^{\mathrm{logvar}_1/2} - e^{\mathrm{logvar}_2/2}\rVert_2^2}

    Parameters
    ----------
    mu1, logvar1 : (..., d) tensors or arrays, the first Gaussians.
    mu2, logvar2 : (..., d), broadcastable against the first, the second Gaussians.

    Returns
    -------
    (...,) float64 tensor of distances. Exactly zero for equal inputs.
    """
    m1, l1, m2, l2 = _check_gaussians(mu1, logvar1, mu2, logvar2)
    diff = _stacked(m1, l1) - _stacked(m2, l2)  # (..., 2d)
    return torch.linalg.vector_norm(diff, dim=-1)


def w2_diag_pairwise(
    mu1: ArrayLike,
    logvar1: ArrayLike,
    mu2: ArrayLike,
    logvar2: ArrayLike,
    *,
    chunk_size: int = 1024,
) -> Tensor:
    """All-pairs closed-form W2, ``out[a, b] = w2_diag(q1[a], q2[b])``, in row chunks.

    Parameters
    ----------
    mu1, logvar1 : (n1, d).
    mu2, logvar2 : (n2, d).
    chunk_size : rows of the first set per chunk; memory is O(chunk_size * n2).

    Returns
    -------
    (n1, n2) float64 tensor. Uses the direct (not matrix-product) Euclidean distance,
    so equal Gaussians give exactly zero.
    """
    m1, l1, m2, l2 = _check_gaussians(mu1, logvar1, mu2, logvar2)
    if m1.ndim != 2 or m2.ndim != 2:
        raise ValueError(
            f"w2_diag_pairwise needs (n, d) inputs, got {tuple(m1.shape)} and {tuple(m2.shape)}"
        )
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
    f1, f2 = _stacked(m1, l1), _stacked(m2, l2)  # (n1, 2d), (n2, 2d)
    out = torch.empty(f1.shape[0], f2.shape[0], dtype=torch.float64)
    for s in range(0, f1.shape[0], chunk_size):
        out[s : s + chunk_size] = torch.cdist(
            f1[s : s + chunk_size], f2, compute_mode="donot_use_mm_for_euclid_dist"
        )
    return out


def w1_sandwich(
    mu1: ArrayLike, logvar1: ArrayLike, mu2: ArrayLike, logvar2: ArrayLike
) -> tuple[Tensor, Tensor]:
    r"""Certified bounds on W1 between diagonal Gaussians (T2.3).

    .. math::

        \lVert\mu_1 - \mu_2\rVert_2 \;\le\; W_1(q_1, q_2) \;\le\; W_2(q_1, q_2)

    Returns
    -------
    (lower, upper) : two (...,) float64 tensors.
    """
    m1, l1, m2, l2 = _check_gaussians(mu1, logvar1, mu2, logvar2)
    lower = torch.linalg.vector_norm(m1 - m2, dim=-1)
    return lower, w2_diag(m1, l1, m2, l2)


@dataclass(frozen=True)
class W1Estimate:
    """A sample-based W1 value with the sample sizes it was computed from.

    value : the estimate.
    n_samples : (n1, n2) sample sizes.
    method : ``"emd"`` (exact OT between empirical measures) or ``"sliced"``.
    n_projections : number of random directions (sliced only, else 0).
    """

    value: float
    n_samples: tuple[int, int]
    method: str
    n_projections: int = 0


def _samples(name: str, x: Any) -> np.ndarray:
    if isinstance(x, Tensor):
        x = x.detach().cpu().numpy()
    if not isinstance(x, np.ndarray):
        raise TypeError(f"{name} must be a torch.Tensor or numpy.ndarray, got {type(x).__name__}")
    x = np.asarray(x, dtype=np.float64)
    if x.ndim == 1:
        x = x[:, None]
    if x.ndim != 2 or x.shape[0] < 1:
        raise ValueError(f"{name} must be (n, d) with n >= 1, got shape {x.shape}")
    return x


def _two_samples(samples1: Any, samples2: Any) -> tuple[np.ndarray, np.ndarray]:
    x1, x2 = _samples("samples1", samples1), _samples("samples2", samples2)
    if x1.shape[1] != x2.shape[1]:
        raise ValueError(f"samples must share their dimension, got {x1.shape[1]} and {x2.shape[1]}")
    return x1, x2


def w1_empirical(
    samples1: ArrayLike, samples2: ArrayLike, *, num_iter_max: int = 1_000_000
) -> W1Estimate:
    r"""Exact W1 between the two empirical measures (POT ``ot.emd2``, CPU, float64).

    .. math::

        W_1(\hat q_1, \hat q_2) = \min_{\pi \in \Pi(a, b)} \sum_{jk}\pi_{jk}
            \lVert z^{(1)}_j - z^{(2)}_k\rVert_2,\qquad a = 1/n_1,\; b = 1/n_2

    Biased upward as an estimate of the population W1 (module docstring); report the
    sample size with it.

    Parameters
    ----------
    samples1 : (n1, d) or (n1,) samples.
    samples2 : (n2, d) or (n2,) samples.
    num_iter_max : network-simplex iteration cap; not converging raises ``RuntimeError``.
    """
    import ot

    x1, x2 = _two_samples(samples1, samples2)
    a = np.full(x1.shape[0], 1.0 / x1.shape[0], dtype=np.float64)  # equal total mass 1
    b = np.full(x2.shape[0], 1.0 / x2.shape[0], dtype=np.float64)
    cost = ot.dist(x1, x2, metric="euclidean")  # (n1, n2)
    value, log = ot.emd2(a, b, cost, numItermax=num_iter_max, log=True)
    if log.get("warning"):
        raise RuntimeError(f"ot.emd2 did not solve the transport problem: {log['warning']}")
    return W1Estimate(float(value), (x1.shape[0], x2.shape[0]), "emd")


def w1_sliced(
    samples1: ArrayLike, samples2: ArrayLike, *, n_projections: int = 200, seed: int = 0
) -> W1Estimate:
    r"""Sliced W1 (POT ``ot.sliced_wasserstein_distance`` with p = 1), seeded.

    .. math::

        SW_1(\hat q_1, \hat q_2) = \frac1K\sum_{k=1}^K W_1(\theta_k\#\hat q_1,
            \theta_k\#\hat q_2),\qquad \theta_k \sim \mathrm{Unif}(S^{d-1})

    Each projection is 1-Lipschitz, so :math:`SW_1 \le W_1` between the same measures;
    for equal-covariance Gaussians the population value is
    :math:`\lVert\Delta\mu\rVert\,E|\theta_1| \approx \lVert\Delta\mu\rVert\sqrt{2/(\pi d)}`,
    so it is not an estimate of W1 itself.
    """
    import ot

    if n_projections < 1:
        raise ValueError(f"n_projections must be >= 1, got {n_projections}")
    x1, x2 = _two_samples(samples1, samples2)
    value = ot.sliced_wasserstein_distance(x1, x2, n_projections=n_projections, p=1, seed=seed)
    return W1Estimate(float(value), (x1.shape[0], x2.shape[0]), "sliced", n_projections)


def w1_bias_table(
    *,
    dims: tuple[int, ...] = (1, 2, 8, 32),
    sample_sizes: tuple[int, ...] = (25, 100, 400),
    n_rep: int = 5,
    shift: float = 1.0,
    seed: int = 0,
) -> list[dict[str, float]]:
    r"""The upward finite-sample bias of empirical W1, on cases with known W1.

    For :math:`q_u = \mathcal N(0, I_d)` and :math:`q_v = \mathcal N(s e_1, I_d)` (equal
    covariances) the transport map is the translation, so
    :math:`W_1 = W_2 = \lVert\mu_u - \mu_v\rVert = s`. Each row compares the mean of
    ``n_rep`` empirical (``ot.emd2``) values at sample size n with that truth.

    Returns
    -------
    One dict per (dim, n): ``dim``, ``n``, ``true_w1``, ``emd_mean``, ``emd_std``,
    ``bias`` (emd_mean - true_w1), ``rel_bias``, ``sliced_mean`` (sliced W1, for scale).
    """
    if n_rep < 1 or shift < 0 or not dims or not sample_sizes:
        raise ValueError("need n_rep >= 1, shift >= 0 and non-empty dims and sample_sizes")
    rng = np.random.default_rng(seed)
    rows = []
    for d in dims:
        mu_v = np.zeros(d)
        mu_v[0] = shift
        for n in sample_sizes:
            emd, sliced = [], []
            for _ in range(n_rep):
                x1 = rng.standard_normal((n, d))
                x2 = rng.standard_normal((n, d)) + mu_v
                emd.append(w1_empirical(x1, x2).value)
                sliced.append(w1_sliced(x1, x2, seed=int(rng.integers(2**31))).value)
            m = float(np.mean(emd))
            rows.append(
                {
                    "dim": int(d),
                    "n": int(n),
                    "true_w1": float(shift),
                    "emd_mean": m,
                    "emd_std": float(np.std(emd, ddof=1)) if n_rep > 1 else 0.0,
                    "bias": m - shift,
                    "rel_bias": (m - shift) / shift if shift > 0 else math.inf,
                    "sliced_mean": float(np.mean(sliced)),
                }
            )
    return rows
