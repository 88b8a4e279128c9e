"""Visualisations as tensors (saving is a separate step): image grids, component colours, attention overlays."""
from __future__ import annotations

import colorsys

import numpy as np
import torch

from .sampling import to_uint8


def palette(k: int) -> torch.Tensor:
    """K distinguishable RGB colours [K, 3] in [0, 1], the same for every map of a run (golden-ratio hues)."""
    cols = [colorsys.hsv_to_rgb((i * 0.618033988749895) % 1.0, 0.75 if i % 2 else 0.95, 0.95 if i % 3 else 0.8)
            for i in range(k)]
    return torch.tensor(cols, dtype=torch.float32)


def image_grid(images: torch.Tensor, cols: int) -> np.ndarray:
    """uint8 NHWC -> one HWC grid with `cols` columns (missing cells black)."""
    n, h, w, c = images.shape
    rows = (n + cols - 1) // cols
    grid = torch.zeros([rows * h, cols * w, c], dtype=torch.uint8)
    for i in range(n):
        r, q = divmod(i, cols)
        grid[r * h:(r + 1) * h, q * w:(q + 1) * w] = images[i]
    return grid.numpy()


def upsample_maps(maps: torch.Tensor, size: int) -> torch.Tensor:
    """[..., r, r] -> [..., size, size] by pixel replication."""
    f = size // maps.shape[-1]
    return maps.repeat_interleave(f, dim=-2).repeat_interleave(f, dim=-1)


def attention_images(img: torch.Tensor, maps: torch.Tensor, alpha: float = 0.3, head: int = 0
                     ) -> dict[str, torch.Tensor]:
    """Colour-coded attention of one layer: soft (probability-weighted colours), hard (argmax), blends.

    img [B, 3, R, R] in [-1, 1]; maps [B, N, K, r, r]. Returns uint8 NHWC tensors; blend = (1-a) map + a image.
    """
    R = img.shape[-1]
    probs = upsample_maps(maps[:, head].float(), R)                      # [B, K, R, R]
    cols = palette(probs.shape[1]).to(probs.device)                      # [K, 3]
    soft = torch.einsum("bkhw,kc->bchw", probs, cols)
    hard = cols[probs.argmax(dim=1)].permute(0, 3, 1, 2)                 # [B, 3, R, R]
    image01 = (img.float().clamp(-1, 1) + 1) / 2
    out = {}
    for name, m in (("soft", soft), ("hard", hard)):
        out[name] = to_uint8(m * 2 - 1)
        out[f"{name}_blend"] = to_uint8(((1 - alpha) * m + alpha * image01) * 2 - 1)
    return out
