"""Kernel Inception Distance (Bińkowski et al. 2018): unbiased MMD^2 with the cubic polynomial
kernel k(x, y) = (x.y / d + 1)^3, averaged over random subsets."""
from __future__ import annotations

import numpy as np
import torch


def polynomial_kernel(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """k(x_i, y_j) = (x_i . y_j / d + 1)^3 for rows of x [n, d] and y [m, d] -> [n, m]."""
    return (x @ y.T / x.shape[1] + 1) ** 3


def mmd2_unbiased(x: torch.Tensor, y: torch.Tensor) -> float:
    """Unbiased MMD^2 between equal-size samples x, y [m, d]:
    sum_{i!=j} [k(x_i,x_j) + k(y_i,y_j)] / (m (m-1)) - 2 sum_{i,j} k(x_i,y_j) / m^2."""
    m = x.shape[0]
    assert y.shape[0] == m and m >= 2, (x.shape, y.shape)
    within = polynomial_kernel(x, x) + polynomial_kernel(y, y)
    within_sum = within.sum() - within.diagonal().sum()
    across = polynomial_kernel(x, y).sum()
    return float(within_sum / (m * (m - 1)) - 2 * across / (m * m))


def compute_kid(real: np.ndarray, fake: np.ndarray, num_subsets: int = 100, max_subset_size: int = 1000,
                seed: int = 0, device: str | torch.device = "cpu") -> float:
    """Mean of the unbiased MMD^2 over `num_subsets` random subsets of size
    min(len(real), len(fake), max_subset_size), drawn without replacement (float64)."""
    assert real.ndim == 2 and fake.ndim == 2 and real.shape[1] == fake.shape[1], (real.shape, fake.shape)
    m = min(real.shape[0], fake.shape[0], max_subset_size)
    if m < 2:
        raise ValueError("KID needs at least two images on each side")
    xr = torch.as_tensor(real, device=device).to(torch.float64)  # the MMD is a small difference of
    xf = torch.as_tensor(fake, device=device).to(torch.float64)  # large sums: keep float64
    rng = np.random.default_rng(seed)
    total = 0.0
    for _ in range(num_subsets):
        g = torch.as_tensor(rng.choice(fake.shape[0], m, replace=False), device=device)
        r = torch.as_tensor(rng.choice(real.shape[0], m, replace=False), device=device)
        total += mmd2_unbiased(xf[g], xr[r])
    return total / num_subsets
