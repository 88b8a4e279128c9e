"""Sampling helpers shared by generate.py, visualisation and metrics callers: latents, images, files."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Iterable, Optional, Sequence

import numpy as np
import torch

from dnnlib.util import UserError, atomic_path, atomic_write


def parse_seeds(text: str) -> list[int]:
    """'0-3,7,10-11' -> [0, 1, 2, 3, 7, 10, 11]."""
    seeds: list[int] = []
    try:
        for part in text.split(","):
            part = part.strip()
            if not part:
                continue
            if "-" in part[1:]:                     # a range; a leading '-' is a (rejected) negative seed
                a, b = (int(v) for v in part.split("-", 1))
                if b < a:
                    raise ValueError
                seeds.extend(range(a, b + 1))
            else:
                seeds.append(int(part))
    except ValueError:
        raise UserError(f"--seeds must look like '0-7' or '1,5,9', got {text!r}") from None
    if not seeds or any(s < 0 for s in seeds):
        raise UserError(f"--seeds must name non-negative integers, got {text!r}")
    return seeds


def z_from_seeds(seeds: Sequence[int], k: int, z_dim: int) -> torch.Tensor:
    """One standard-normal z [k, z_dim] per seed, independent of batch composition: [N, k, z_dim]."""
    return torch.stack([torch.randn([k, z_dim], generator=torch.Generator().manual_seed(int(s))) for s in seeds])


def load_latents(path: str | os.PathLike, k: int, z_dim: int) -> torch.Tensor:
    """z from .npy or .pt (a tensor, or a dict with key 'z'); rows [N, k, z_dim] or flat [N, k*z_dim]."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"latents file not found: {path}")
    try:
        if path.suffix == ".npy":
            z = torch.from_numpy(np.load(path, allow_pickle=False))
        elif path.suffix in (".pt", ".pth"):
            data = torch.load(path, map_location="cpu", weights_only=True)
            z = data.get("z") if isinstance(data, dict) else data
            if not isinstance(z, torch.Tensor):
                raise UserError(f"{path} holds no tensor (expected a tensor or a dict with key 'z')")
        else:
            raise UserError(f"latents file must be .npy or .pt, got {path.name}")
    except UserError:
        raise
    except Exception as e:  # noqa: BLE001
        raise UserError(f"cannot read latents from {path}: {type(e).__name__}: {e}") from None
    z = z.float()
    if z.ndim == 2 and z.shape[1] == k * z_dim:
        z = z.reshape(-1, k, z_dim)
    if z.ndim != 3 or tuple(z.shape[1:]) != (k, z_dim):
        raise UserError(f"latents in {path} have shape {list(z.shape)}; this model needs [N, {k}, {z_dim}] "
                        f"(or [N, {k * z_dim}])")
    if not torch.isfinite(z).all():
        raise UserError(f"latents in {path} contain NaN or Inf")
    return z


def to_uint8(img: torch.Tensor) -> torch.Tensor:
    """[-1, 1] float NCHW -> uint8 NHWC, rounding like the metrics do (x * 127.5 + 128, clamp, truncate)."""
    return (img * 127.5 + 128).clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1)


def crop_ratio(img: np.ndarray, ratio: Optional[float]) -> np.ndarray:
    """Keep the centred rows of an HWC image so that height / width = ratio (the seed's --ratio)."""
    if ratio is None or ratio >= 1:
        return img
    h, w = img.shape[:2]
    keep = max(1, int(round(w * ratio)))
    start = (h - keep) // 2
    return img[start:start + keep]


def save_png(img: np.ndarray, path: str | os.PathLike) -> None:
    """Save an HWC uint8 array (1 or 3 channels) as PNG, atomically."""
    import PIL.Image

    arr = img[..., 0] if img.shape[-1] == 1 else img
    with atomic_path(path) as tmp:
        PIL.Image.fromarray(arr).save(tmp, format="PNG")


def save_npy(array: np.ndarray, path: str | os.PathLike) -> None:
    with atomic_write(path) as f:
        np.save(f, array, allow_pickle=False)


def batches(items: Sequence, size: int) -> Iterable[Sequence]:
    for i in range(0, len(items), size):
        yield items[i:i + size]


def pick_device(gpus: Optional[str]) -> torch.device:
    """The first listed GPU when CUDA is available, else the CPU (with a one-line notice)."""
    if torch.cuda.is_available() and gpus not in (None, "", "-1", "cpu"):
        try:
            first = int(str(gpus).split(",")[0])
        except ValueError:
            raise UserError(f"--gpus must be a comma-separated list of GPU indices, got {gpus!r}") from None
        if first >= torch.cuda.device_count():
            raise UserError(f"--gpus {gpus}: there are only {torch.cuda.device_count()} GPUs")
        return torch.device("cuda", first)
    print("note: no CUDA GPU available, running on the CPU")
    return torch.device("cpu")
