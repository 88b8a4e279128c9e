"""Upsample, pad, FIR-filter and downsample batches of 2-D images (StyleGAN2-ADA `upfirdn2d` API).

`upfirdn2d()` is the general op; `filter2d()`, `upsample2d()` and `downsample2d()` pick the padding
that keeps the output aligned with the input. `impl='ref'` is the plain-PyTorch specification,
`impl='cuda'` a fused kernel, `impl='auto'` the kernel for CUDA tensors when it can be built.
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from . import custom_ops

IntPair = int | Sequence[int]
Padding = int | Sequence[int]

_IMPLS = ("auto", "cuda", "ref")

# ---------------------------------------------------------------------------------------------
# Argument parsing.


def _as_int(v: Any, what: str) -> int:
    # numpy / torch integer scalars are accepted, floats are not (they would silently truncate).
    if isinstance(v, bool) or not isinstance(v, (int, np.integer)):
        raise TypeError(f"{what} must be an int, got {type(v).__name__}")
    return int(v)


def _parse_scaling(s: IntPair, what: str = "scaling") -> tuple[int, int]:
    """Return (sx, sy) from an int or an [x, y] pair."""
    if isinstance(s, (list, tuple)):
        if len(s) != 2:
            raise ValueError(f"{what} must be an int or [x, y], got {s!r}")
        sx, sy = (_as_int(v, what) for v in s)
    else:
        sx = sy = _as_int(s, what)
    if sx < 1 or sy < 1:
        raise ValueError(f"{what} factors must be >= 1, got {s!r}")
    return sx, sy


def _parse_padding(padding: Padding) -> tuple[int, int, int, int]:
    """Return (x0, x1, y0, y1) from an int, [x, y] or [x0, x1, y0, y1]."""
    if isinstance(padding, (list, tuple)):
        vals = [_as_int(v, "padding") for v in padding]
        if len(vals) == 2:
            return vals[0], vals[0], vals[1], vals[1]
        if len(vals) == 4:
            return vals[0], vals[1], vals[2], vals[3]
        raise ValueError(f"padding must be an int, [x, y] or [x0, x1, y0, y1], got {padding!r}")
    p = _as_int(padding, "padding")
    return p, p, p, p


def _get_filter_size(f: torch.Tensor | None) -> tuple[int, int]:
    """Return (width, height) of a prepared filter; a 1-D (separable) filter is square."""
    if f is None:
        return 1, 1
    if not isinstance(f, torch.Tensor) or f.ndim not in (1, 2):
        raise ValueError("filter must be None or a 1-D/2-D tensor prepared by setup_filter()")
    fw, fh = int(f.shape[-1]), int(f.shape[0])
    if fw < 1 or fh < 1:
        raise ValueError("filter must not be empty")
    return fw, fh


def _check_impl(impl: str) -> None:
    if impl not in _IMPLS:
        raise ValueError(f"impl must be one of {_IMPLS}, got {impl!r}")


# ---------------------------------------------------------------------------------------------
# Filter construction.


def setup_filter(
    f: Any,
    device: torch.device = torch.device("cpu"),  # noqa: B008 -- signature kept from StyleGAN2-ADA
    normalize: bool = True,
    flip_filter: bool = False,
    gain: float = 1,
    separable: bool | None = None,
) -> torch.Tensor:
    """Turn taps (list, array or tensor; `[]`-shaped scalar or None = impulse) into a float32 filter.

    A 1-D filter stays separable when `separable` is True or, by default, when it has >= 8 taps;
    otherwise it becomes the 2-D outer product. `gain` is spread over the axes (gain**(ndim/2)).
    """
    if f is None:
        f = 1
    f = torch.as_tensor(f, dtype=torch.float32)
    if f.ndim not in (0, 1, 2) or f.numel() == 0:
        raise ValueError(f"filter taps must be a non-empty scalar, 1-D or 2-D array, got shape {tuple(f.shape)}")
    if f.ndim == 0:
        f = f.reshape(1)

    if separable is None:
        separable = f.ndim == 1 and f.numel() >= 8
    if f.ndim == 1 and not separable:
        f = torch.outer(f, f)
    if f.ndim != (1 if separable else 2):
        raise ValueError("a 2-D filter cannot be made separable")

    if normalize:
        f = f / f.sum()
    if flip_filter:
        f = f.flip(list(range(f.ndim)))
    f = f * (gain ** (f.ndim / 2))
    return f.to(device=device)


# ---------------------------------------------------------------------------------------------
# Public ops.


def upfirdn2d(
    x: torch.Tensor,
    f: torch.Tensor | None,
    up: IntPair = 1,
    down: IntPair = 1,
    padding: Padding = 0,
    flip_filter: bool = False,
    gain: float = 1,
    impl: str = "auto",
) -> torch.Tensor:
    """Per channel: upsample by zero insertion, pad (negative = crop), FIR-filter, keep every `down`-th pixel.

    x: [N, C, H, W]; f: filter from setup_filter() ([fh, fw], [taps] for separable, or None).
    `padding` is relative to the upsampled image; flip_filter=False means true convolution.
    The filter itself never receives gradients; gradients of any order flow to `x`.
    """
    _check_impl(impl)
    if not isinstance(x, torch.Tensor) or x.ndim != 4:
        raise ValueError("x must be a 4-D tensor [batch, channels, height, width]")
    if f is not None and f.requires_grad:
        raise ValueError("upfirdn2d does not propagate gradients to the filter; pass a filter without requires_grad")
    upx, upy = _parse_scaling(up, "up")
    downx, downy = _parse_scaling(down, "down")
    pads = _parse_padding(padding)
    _get_filter_size(f)  # validates the filter shape

    if custom_ops.use_kernel("upfirdn2d", x, impl, _plugin):
        return _upfirdn2d_cuda(x, f, (upx, upy), (downx, downy), pads, bool(flip_filter), float(gain))
    return _upfirdn2d_ref(x, f, (upx, upy), (downx, downy), pads, bool(flip_filter), float(gain))


def filter2d(
    x: torch.Tensor,
    f: torch.Tensor | None,
    padding: Padding = 0,
    flip_filter: bool = False,
    gain: float = 1,
    impl: str = "auto",
) -> torch.Tensor:
    """FIR-filter `x`; by default the output has the input's size (`padding` is added on top of that)."""
    px0, px1, py0, py1 = _parse_padding(padding)
    fw, fh = _get_filter_size(f)
    pads = [px0 + fw // 2, px1 + (fw - 1) // 2, py0 + fh // 2, py1 + (fh - 1) // 2]
    return upfirdn2d(x, f, padding=pads, flip_filter=flip_filter, gain=gain, impl=impl)


def upsample2d(
    x: torch.Tensor,
    f: torch.Tensor | None,
    up: IntPair = 2,
    padding: Padding = 0,
    flip_filter: bool = False,
    gain: float = 1,
    impl: str = "auto",
) -> torch.Tensor:
    """Upsample by `up` with FIR interpolation; output is `up` times the input size (plus `padding`).

    The gain is multiplied by up_x*up_y so that zero insertion keeps the signal's mean.
    """
    upx, upy = _parse_scaling(up, "up")
    px0, px1, py0, py1 = _parse_padding(padding)
    fw, fh = _get_filter_size(f)
    pads = [
        px0 + (fw + upx - 1) // 2,
        px1 + (fw - upx) // 2,
        py0 + (fh + upy - 1) // 2,
        py1 + (fh - upy) // 2,
    ]
    return upfirdn2d(x, f, up=up, padding=pads, flip_filter=flip_filter, gain=gain * upx * upy, impl=impl)


def downsample2d(
    x: torch.Tensor,
    f: torch.Tensor | None,
    down: IntPair = 2,
    padding: Padding = 0,
    flip_filter: bool = False,
    gain: float = 1,
    impl: str = "auto",
) -> torch.Tensor:
    """Low-pass filter then decimate by `down`; output is the input size / `down` (`padding` is on the input)."""
    downx, downy = _parse_scaling(down, "down")
    px0, px1, py0, py1 = _parse_padding(padding)
    fw, fh = _get_filter_size(f)
    pads = [
        px0 + (fw - downx + 1) // 2,
        px1 + (fw - downx) // 2,
        py0 + (fh - downy + 1) // 2,
        py1 + (fh - downy) // 2,
    ]
    return upfirdn2d(x, f, down=down, padding=pads, flip_filter=flip_filter, gain=gain, impl=impl)


# ---------------------------------------------------------------------------------------------
# Reference implementation.


def _upfirdn2d_ref(
    x: torch.Tensor,
    f: torch.Tensor | None,
    up: tuple[int, int],
    down: tuple[int, int],
    pads: tuple[int, int, int, int],
    flip_filter: bool,
    gain: float,
) -> torch.Tensor:
    """Plain-PyTorch upfirdn2d built from zero-insertion, F.pad and depthwise conv2d."""
    n, c, h, w = x.shape
    upx, upy = up
    downx, downy = down
    if f is None:
        f = torch.ones([1, 1], dtype=torch.float32, device=x.device)

    # Zero insertion: each input pixel becomes the top-left of an up_y x up_x block.
    if upx > 1 or upy > 1:
        x = x.reshape(n, c, h, 1, w, 1)
        x = F.pad(x, [0, upx - 1, 0, 0, 0, upy - 1])
        x = x.reshape(n, c, h * upy, w * upx)

    # F.pad crops where a padding amount is negative, so one call handles both cases.
    px0, px1, py0, py1 = pads
    x = F.pad(x, [px0, px1, py0, py1])

    # Scale in float32 first (as the filter is stored) and only then cast, so that half/double
    # inputs see the same filter values as the fused kernel.
    f = (f * (gain ** (f.ndim / 2))).to(device=x.device, dtype=x.dtype)
    # conv2d computes correlation; flipping the taps turns it into a true convolution.
    if not flip_filter:
        f = f.flip(list(range(f.ndim)))

    # Depthwise filtering: one copy of the filter per channel, groups=channels.
    if f.ndim == 2:
        weight = f.reshape(1, 1, *f.shape).repeat(c, 1, 1, 1)
        x = F.conv2d(x, weight, groups=c)
    else:
        taps = f.reshape(1, 1, -1).repeat(c, 1, 1)
        x = F.conv2d(x, taps.unsqueeze(2), groups=c)  # along width
        x = F.conv2d(x, taps.unsqueeze(3), groups=c)  # along height

    if downx > 1 or downy > 1:
        x = x[:, :, ::downy, ::downx]
    return x


# ---------------------------------------------------------------------------------------------
# CUDA implementation.


def _plugin() -> Any:
    return custom_ops.get_plugin("upfirdn2d_plugin", sources=["upfirdn2d.cpp", "upfirdn2d.cu"])


def _grad_padding(
    in_hw: Sequence[int],
    out_hw: Sequence[int],
    fsize: tuple[int, int],
    up: tuple[int, int],
    down: tuple[int, int],
    pads: tuple[int, int, int, int],
) -> tuple[int, int, int, int]:
    """Padding that makes upfirdn2d(dy, flipped f, up=down, down=up) the adjoint of the forward op.

    The adjoint maps the output grid back onto the input grid: its leading pad is what the filter
    footprint reaches before the first input pixel, and its trailing pad fills (or crops) what is
    left so that exactly in_hw pixels come out.
    """
    ih, iw = in_hw
    oh, ow = out_hw
    fw, fh = fsize
    upx, upy = up
    downx, downy = down
    px0, _, py0, _ = pads
    return (
        fw - px0 - 1,
        iw * upx - ow * downx + px0 - upx + 1,
        fh - py0 - 1,
        ih * upy - oh * downy + py0 - upy + 1,
    )


class _Upfirdn2dCuda(torch.autograd.Function):
    """Kernel forward; backward is the same op with swapped up/down and flipped filter, so it nests."""

    @staticmethod
    def forward(ctx, x, f, up, down, pads, flip_filter, gain):  # type: ignore[override]
        plugin = _plugin()
        upx, upy = up
        downx, downy = down
        px0, px1, py0, py1 = pads
        if f.ndim == 2:
            y = plugin.upfirdn2d(x, f, upx, upy, downx, downy, px0, px1, py0, py1, flip_filter, gain)
        else:
            # Separable: two 1-D passes (rows, then columns), each carrying sqrt(gain).
            g = math.sqrt(gain)
            y = plugin.upfirdn2d(x, f.unsqueeze(0), upx, 1, downx, 1, px0, px1, 0, 0, flip_filter, g)
            y = plugin.upfirdn2d(y, f.unsqueeze(1), 1, upy, 1, downy, 0, 0, py0, py1, flip_filter, g)
        ctx.save_for_backward(f)
        ctx.params = (tuple(x.shape[2:]), up, down, pads, flip_filter, gain)
        return y

    @staticmethod
    def backward(ctx, dy):  # type: ignore[override]
        (f,) = ctx.saved_tensors
        in_hw, up, down, pads, flip_filter, gain = ctx.params
        dx = None
        if ctx.needs_input_grad[0]:
            gpads = _grad_padding(in_hw, dy.shape[2:], _get_filter_size(f), up, down, pads)
            dx = _Upfirdn2dCuda.apply(dy, f, down, up, gpads, not flip_filter, gain)
        return dx, None, None, None, None, None, None


def _upfirdn2d_cuda(
    x: torch.Tensor,
    f: torch.Tensor | None,
    up: tuple[int, int],
    down: tuple[int, int],
    pads: tuple[int, int, int, int],
    flip_filter: bool,
    gain: float,
) -> torch.Tensor:
    if f is None:
        f = torch.ones([1, 1], dtype=torch.float32, device=x.device)
    # Fold the gain into the float32 filter exactly as the reference does, so both paths multiply by
    # the same rounded taps (float64 results then agree to accumulation-order rounding).
    f = f.to(device=x.device, dtype=torch.float32) * (gain ** (f.ndim / 2))
    return _Upfirdn2dCuda.apply(x, f, up, down, pads, flip_filter, 1.0)


__all__ = ["downsample2d", "filter2d", "setup_filter", "upfirdn2d", "upsample2d"]
