"""Improved precision and recall (Kynkäänniemi et al. 2019) with k-nearest-neighbour manifolds.

A sample lies inside a manifold when it is within the k-th-nearest-neighbour radius of at least one
of the manifold's points. Precision = fraction of fakes inside the real manifold; recall = fraction
of reals inside the fake manifold. Distances are computed in float32 blocks (the official PyTorch
code rounds features and radii to fp16).
"""
from __future__ import annotations

import torch


def knn_radii(features: torch.Tensor, k: int = 3, row_batch_size: int = 5000,
              col_batch_size: int = 5000) -> torch.Tensor:
    """Distance of each row of `features` [N, D] to its k-th nearest other row -> [N].

    The row itself is among its neighbours at distance 0, so this is the (k+1)-th smallest distance.
    """
    n = features.shape[0]
    if n < k + 1:
        raise ValueError(f"a k={k} manifold needs at least {k + 1} points, got {n}")
    radii = []
    for rows in features.split(row_batch_size):
        best = None  # [R, <= k+1] smallest distances so far
        for cols in features.split(col_batch_size):
            dist = torch.cdist(rows, cols)  # [R, C]
            best = dist if best is None else torch.cat([best, dist], dim=1)
            best = best.topk(min(k + 1, best.shape[1]), dim=1, largest=False).values
        radii.append(best[:, k])
    return torch.cat(radii)


def inside_manifold(probes: torch.Tensor, manifold: torch.Tensor, radii: torch.Tensor,
                    row_batch_size: int = 5000, col_batch_size: int = 5000) -> torch.Tensor:
    """For each probe [M, D]: is it within radii[j] of some manifold point j? -> bool [M]."""
    inside = []
    for rows in probes.split(row_batch_size):
        hit = torch.zeros(rows.shape[0], dtype=torch.bool, device=rows.device)
        for cols, r in zip(manifold.split(col_batch_size), radii.split(col_batch_size)):
            hit |= (torch.cdist(rows, cols) <= r.unsqueeze(0)).any(dim=1)
        inside.append(hit)
    return torch.cat(inside)


def compute_pr(real, fake, k: int = 3, row_batch_size: int = 5000, col_batch_size: int = 5000,
               device: str | torch.device = "cpu") -> tuple[float, float]:
    """Precision and recall of fakes w.r.t. reals from feature rows [N, D] (arrays or tensors)."""
    real_t = torch.as_tensor(real, device=device).to(torch.float32)
    fake_t = torch.as_tensor(fake, device=device).to(torch.float32)
    assert real_t.ndim == 2 and fake_t.shape[1:] == real_t.shape[1:], (real_t.shape, fake_t.shape)
    batches = dict(row_batch_size=row_batch_size, col_batch_size=col_batch_size)
    real_radii = knn_radii(real_t, k, **batches)
    fake_radii = knn_radii(fake_t, k, **batches)
    precision = inside_manifold(fake_t, real_t, real_radii, **batches).float().mean()
    recall = inside_manifold(real_t, fake_t, fake_radii, **batches).float().mean()
    return float(precision), float(recall)
