"""Perceptual path length (Karras et al. 2019, StyleGAN §3), in Z (slerp) or W (lerp).

PPL needs two things that a plain `gen_fn(batch_size)` does not give: access to the latent spaces
(a :class:`PathGenerator`) and NVIDIA's VGG16 LPIPS network. Without either the metric is reported
as unavailable by metric_main.
"""
from __future__ import annotations

from typing import Callable, Protocol

import numpy as np
import torch
from tqdm import tqdm


class PathGenerator(Protocol):
    """A generator split at its latent spaces, as PPL needs it.

    `synthesis` must be deterministic given w (constant noise), because the two endpoints of each
    pair are rendered in one call as rows i and i + B and must differ only by their latents.
    """

    z_shape: tuple[int, ...]  # shape of one z sample, e.g. (k, 32) for GANformer with k components

    def mapping(self, z: torch.Tensor) -> torch.Tensor:  # [B, *z_shape] -> w [B, ...]
        ...

    def synthesis(self, w: torch.Tensor) -> torch.Tensor:  # w [B, ...] -> images [B, C, H, W] in [-1, 1]
        ...


def slerp(a: torch.Tensor, b: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """Spherical interpolation along the last axis between directions a and b; t broadcasts."""
    a = a / a.norm(dim=-1, keepdim=True)
    b = b / b.norm(dim=-1, keepdim=True)
    cos = (a * b).sum(dim=-1, keepdim=True).clamp(-1, 1)
    angle = t * torch.acos(cos)
    ortho = b - cos * a
    ortho = ortho / ortho.norm(dim=-1, keepdim=True)
    out = a * torch.cos(angle) + ortho * torch.sin(angle)
    return out / out.norm(dim=-1, keepdim=True)


def _pair_distances(gen: PathGenerator, lpips: Callable[[torch.Tensor], torch.Tensor], batch: int,
                    space: str, sampling: str, epsilon: float, crop: bool, device: torch.device,
                    generator: torch.Generator) -> torch.Tensor:
    """Squared LPIPS distance / epsilon^2 between images at t and t + epsilon for `batch` paths."""
    t = torch.rand([batch], device=device, generator=generator) * (1.0 if sampling == "full" else 0.0)
    z = torch.randn([2 * batch, *gen.z_shape], device=device, generator=generator)
    z0, z1 = z.chunk(2)
    if space == "w":
        w0, w1 = gen.mapping(z).chunk(2)
        tw = t.view(-1, *[1] * (w0.ndim - 1))
        w = torch.cat([w0.lerp(w1, tw), w0.lerp(w1, tw + epsilon)])
    else:
        tz = t.view(-1, *[1] * (z0.ndim - 1))
        w = gen.mapping(torch.cat([slerp(z0, z1, tz), slerp(z0, z1, tz + epsilon)]))
    img = gen.synthesis(w).to(torch.float32)  # [2B, C, H, W]
    if crop:  # the face-centred crop of the StyleGAN paper
        assert img.shape[2] == img.shape[3]
        c = img.shape[2] // 8
        img = img[:, :, c * 3: c * 7, c * 2: c * 6]
    factor = img.shape[2] // 256
    if factor > 1:  # LPIPS is defined at 256x256: box-downsample larger images
        img = img.reshape(img.shape[0], img.shape[1], img.shape[2] // factor, factor,
                          img.shape[3] // factor, factor).mean(dim=(3, 5))
    img = (img + 1) * (255 / 2)
    if img.shape[1] == 1:
        img = img.repeat(1, 3, 1, 1)
    e0, e1 = lpips(img).chunk(2)
    return (e0 - e1).square().sum(dim=1) / epsilon ** 2


@torch.no_grad()
def compute_ppl(gen: PathGenerator, lpips: Callable[[torch.Tensor], torch.Tensor], num_samples: int,
                space: str = "w", sampling: str = "end", epsilon: float = 1e-4, crop: bool = False,
                batch_size: int = 2, device: str | torch.device = "cpu", seed: int = 0,
                progress: bool = True) -> float:
    """Mean of the per-path distances after dropping those below the 1st and above the 99th
    percentile. `lpips(img)` maps float images in [0, 255] to embeddings whose squared Euclidean
    distance is LPIPS."""
    if space not in ("z", "w") or sampling not in ("full", "end"):
        raise ValueError(f"PPL space must be z|w and sampling full|end, got {space}, {sampling}")
    device = torch.device(device)
    generator = torch.Generator(device).manual_seed(seed)
    dists = []
    with tqdm(total=num_samples, desc=f"ppl_{space}{sampling}", unit="path", disable=not progress, leave=False) as bar:
        while sum(d.shape[0] for d in dists) < num_samples:
            d = _pair_distances(gen, lpips, batch_size, space, sampling, epsilon, crop, device, generator)
            dists.append(d.cpu())
            bar.update(d.shape[0])
    dist = torch.cat(dists)[:num_samples].numpy().astype(np.float64)
    if not np.isfinite(dist).all():
        raise FloatingPointError("PPL distances contain NaN/Inf (generator output?)")
    lo = np.percentile(dist, 1, method="lower")
    hi = np.percentile(dist, 99, method="higher")
    return float(dist[(dist >= lo) & (dist <= hi)].mean())
