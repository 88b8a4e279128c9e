"""Fréchet Inception Distance (Heusel et al. 2017) between two Gaussian feature statistics."""
from __future__ import annotations

import numpy as np
import scipy.linalg

from .metric_utils import FeatureStats


def _trace_sqrt_product(sigma1: np.ndarray, sigma2: np.ndarray, method: str) -> float:
    """tr((sigma1 sigma2)^1/2) for symmetric PSD sigma1, sigma2."""
    if method == "sqrtm":
        # As the official TF and PyTorch code: principal square root of the product, real part.
        return float(np.real(np.trace(scipy.linalg.sqrtm(sigma1 @ sigma2))))
    if method == "eigh":
        # sigma1 sigma2 has the eigenvalues of the symmetric PSD s1^1/2 sigma2 s1^1/2, so symmetric
        # eigendecompositions give the same trace, faster and without complex round-off. Only the
        # range of sigma1 contributes, so with few samples (rank r < D) the inner matrix is r x r.
        w, v = np.linalg.eigh(sigma1)
        keep = w > max(w.max(), 0.0) * w.size * np.finfo(np.float64).eps
        half = v[:, keep] * np.sqrt(w[keep])  # [D, r], half @ half.T = sigma1
        inner = half.T @ sigma2 @ half        # [r, r]
        eig = np.linalg.eigvalsh((inner + inner.T) / 2)
        return float(np.sqrt(np.clip(eig, 0, None)).sum())
    raise ValueError(f"unknown Fréchet method '{method}' (sqrtm or eigh)")


def frechet_distance(mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray, sigma2: np.ndarray,
                     method: str = "sqrtm") -> float:
    """|mu1 - mu2|^2 + tr(sigma1 + sigma2 - 2 (sigma1 sigma2)^1/2)  (spec §11).

    `method`: 'sqrtm' (scipy.linalg.sqrtm, like the official code) or 'eigh' (same value, faster).
    """
    mu1, mu2 = np.asarray(mu1, np.float64), np.asarray(mu2, np.float64)
    sigma1, sigma2 = np.asarray(sigma1, np.float64), np.asarray(sigma2, np.float64)
    assert mu1.shape == mu2.shape and mu1.ndim == 1, (mu1.shape, mu2.shape)
    assert sigma1.shape == sigma2.shape == (mu1.size, mu1.size), (sigma1.shape, sigma2.shape)
    mean_term = float(np.square(mu1 - mu2).sum())
    cov_term = float(np.trace(sigma1) + np.trace(sigma2)) - 2 * _trace_sqrt_product(sigma1, sigma2, method)
    return mean_term + cov_term


def compute_fid(real: FeatureStats, fake: FeatureStats, method: str = "sqrtm") -> float:
    """FID between the Inception statistics of real and generated images."""
    mu_r, sigma_r = real.get_mean_cov()
    mu_g, sigma_g = fake.get_mean_cov()
    return frechet_distance(mu_g, sigma_g, mu_r, sigma_r, method=method)
