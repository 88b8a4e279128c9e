"""TF32 on CUDA: on for training's float32 matmuls and convolutions, off where results are reported or where
float32 positions matter (metrics, the augmentation's sampling grid and colour transform).

PyTorch 2.9 added per-backend `fp32_precision` settings ("tf32" | "ieee") beside the older `allow_tf32` flags,
and reading a legacy flag after the new setting was used raises ("mix of the legacy and new APIs"). Everything
here uses the new setting where it exists and the legacy flags only on older PyTorch, so the two never mix.
The settings only affect CUDA; on a CPU they are stored and ignored.
"""
from __future__ import annotations

import contextlib
from typing import Iterator

import torch


def _backends() -> list:
    """The matmul and convolution backends with an `fp32_precision` setting, or [] on older PyTorch."""
    found = [torch.backends.cuda.matmul, getattr(torch.backends.cudnn, "conv", None)]
    return found if all(b is not None and hasattr(b, "fp32_precision") for b in found) else []


def set_tf32(enabled: bool) -> None:
    """TF32 for float32 matmuls and cuDNN convolutions on or off, process-wide."""
    backends = _backends()
    if backends:
        for b in backends:
            b.fp32_precision = "tf32" if enabled else "ieee"
    else:
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = enabled


@contextlib.contextmanager
def full_fp32() -> Iterator[None]:
    """TF32 off for the block, then the previous settings back."""
    backends = _backends()
    if backends:
        saved = [b.fp32_precision for b in backends]
    else:
        saved = [torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32]
    set_tf32(False)
    try:
        yield
    finally:
        if backends:
            for b, value in zip(backends, saved):
                b.fp32_precision = value
        else:
            torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved


__all__ = ["full_fp32", "set_tf32"]
