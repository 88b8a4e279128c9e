"""`grid_sample` with gradients of every order with respect to the image, on any PyTorch 2.x.

The augmentation's R1 penalty differentiates through resampling twice (the gradient of D's output with
respect to the real images, then that gradient's norm with respect to D's weights). PyTorch before 2.13
has no derivative for `grid_sampler_2d_backward`, so that second pass raises "derivative for
aten::grid_sampler_2d_backward is not implemented" (seen with torch 2.11, the GPU machines' build).

For a fixed grid, sampling (in every mode) is linear in the image: y = A x with A given by the grid. Its backward is
dx = A^T dy, again linear, and the derivative of that with respect to dy is A itself, i.e. grid_sample.
So two autograd Functions that call each other's forward give every order, with the values of torch's own
kernels (the same aten ops run). A grid that requires gradients takes torch's own op (the grid's
derivatives are not linear; nothing here needs them).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

_MODES = {"bilinear": 0, "nearest": 1, "bicubic": 2}
_PADDINGS = {"zeros": 0, "border": 1, "reflection": 2}


class _Sample(torch.autograd.Function):
    """y = A x (A from the grid)."""

    @staticmethod
    def forward(ctx, x, grid, mode, padding, align_corners):  # type: ignore[override]
        ctx.save_for_backward(x, grid)
        ctx.params = (mode, padding, align_corners)
        return torch.grid_sampler(x, grid, _MODES[mode], _PADDINGS[padding], align_corners)

    @staticmethod
    def backward(ctx, dy):  # type: ignore[override]
        x, grid = ctx.saved_tensors
        return _Transpose.apply(dy, x, grid, *ctx.params), None, None, None, None


class _Transpose(torch.autograd.Function):
    """dx = A^T dy; its own derivative (with respect to dy) is A again."""

    @staticmethod
    def forward(ctx, dy, x, grid, mode, padding, align_corners):  # type: ignore[override]
        ctx.save_for_backward(grid)
        ctx.params = (mode, padding, align_corners)
        dx, _ = torch.ops.aten.grid_sampler_2d_backward(dy, x, grid, _MODES[mode], _PADDINGS[padding],
                                                         align_corners, [True, False])
        return dx

    @staticmethod
    def backward(ctx, ddx):  # type: ignore[override]
        (grid,) = ctx.saved_tensors
        return _Sample.apply(ddx, grid, *ctx.params), None, None, None, None, None


def grid_sample(x: torch.Tensor, grid: torch.Tensor, mode: str = "bilinear", padding_mode: str = "zeros",
                align_corners: bool = False) -> torch.Tensor:
    """`torch.nn.functional.grid_sample` for 4-D images, differentiable to any order in `x`."""
    if mode not in _MODES or padding_mode not in _PADDINGS:
        raise ValueError(f"grid_sample: unknown mode {mode!r} or padding_mode {padding_mode!r}")
    if x.ndim != 4 or grid.requires_grad:
        return F.grid_sample(x, grid, mode=mode, padding_mode=padding_mode, align_corners=align_corners)
    return _Sample.apply(x, grid, mode, padding_mode, align_corners)


__all__ = ["grid_sample"]
