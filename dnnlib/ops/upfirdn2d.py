"""Upsample, pad, FIR-filter and downsample batches of 2-D images (StyleGAN2-ADA `upfirdn2d` API).

`upfirdn2d()` is the general op; `filter2d()`, `upsample2d()` and `downsample2d()` pick the padding
that keeps the output aligned with the input. `impl='ref'` is the plain-PyTorch specification,
`impl='cuda'` a fused kernel, `impl='auto'` the kernel for CUDA tensors when it can be built.
"""
from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Union

import numpy as np
import torch
import torch.nn.functional as F

from . import custom_ops

IntPair = int | Sequence[int]
Padding = Union[int, Sequence[int], "Margins"]

_IMPLS = ("auto", "cuda", "ref")

# ---------------------------------------------------------------------------------------------
# Arguments: resampling factors, zero margins, filter extent.


def _integer(v: Any, what: str) -> int:
    # numpy / torch integer scalars are accepted, floats are not (they would silently truncate).
    if isinstance(v, bool) or not isinstance(v, (int, np.integer)):
        raise TypeError(f"{what} must be an int, got {type(v).__name__}")
    return int(v)


def _factors(s: IntPair, what: str) -> tuple[int, int]:
    """(along x, along y) from an int or an [x, y] pair; each at least 1."""
    pair = s if isinstance(s, (list, tuple)) else (s, s)
    if len(pair) != 2:
        raise ValueError(f"{what} must be an int or [x, y], got {s!r}")
    fx, fy = (_integer(v, what) for v in pair)
    if min(fx, fy) < 1:
        raise ValueError(f"{what} factors must be >= 1, got {s!r}")
    return fx, fy


@dataclass(frozen=True)
class Margins:
    """Zero samples added before/after the image along x and y (negative = samples cropped).

    Iterates as (x0, x1, y0, y1), the order F.pad and the kernel take them; + and - act elementwise.
    """

    x0: int
    x1: int
    y0: int
    y1: int

    def __iter__(self) -> Iterator[int]:
        return iter((self.x0, self.x1, self.y0, self.y1))

    def __add__(self, other: "Margins") -> "Margins":
        return Margins(*(a + b for a, b in zip(self, other)))

    def __sub__(self, other: "Margins") -> "Margins":
        return Margins(*(a - b for a, b in zip(self, other)))

    def is_symmetric(self) -> bool:
        return self.x0 == self.x1 and self.y0 == self.y1


def as_margins(padding: Padding) -> Margins:
    """Margins from an int (all sides), [x, y] (both sides of each axis) or [x0, x1, y0, y1]."""
    if isinstance(padding, Margins):
        return padding
    if not isinstance(padding, (list, tuple)):
        return Margins(*[_integer(padding, "padding")] * 4)
    vals = [_integer(v, "padding") for v in padding]
    if len(vals) == 2:
        return Margins(vals[0], vals[0], vals[1], vals[1])
    if len(vals) == 4:
        return Margins(*vals)
    raise ValueError(f"padding must be an int, [x, y] or [x0, x1, y0, y1], got {padding!r}")


def filter_extent(f: torch.Tensor | None) -> tuple[int, int]:
    """Taps of a prepared filter along (x, y); a 1-D (separable) filter has the same taps along both."""
    if f is None:
        return 1, 1
    if not isinstance(f, torch.Tensor) or f.ndim not in (1, 2):
        raise ValueError("filter must be None or a 1-D/2-D tensor prepared by setup_filter()")
    taps_x, taps_y = int(f.shape[-1]), int(f.shape[0])
    if min(taps_x, taps_y) < 1:
        raise ValueError("filter must not be empty")
    return taps_x, taps_y


def _centred_axis(taps: int, up: int, down: int) -> tuple[int, int]:
    """Margins (before, after) on one axis that make `taps`-tap filtering of an n-sample signal,
    zero-inserted by `up` and decimated by `down`, return n * up / down samples aligned with the input.

    Valid filtering shortens the signal by taps - 1 and the decimation needs down - 1 samples of
    slack, so taps - down margin samples are needed in all. They are split as evenly as possible,
    the odd one before the signal, and zero insertion shifts the split by up / 2 towards the front
    because the inserted zeros all follow their sample.
    """
    total = taps - down
    before = (total + up) // 2
    return before, total - before


def centred_margins(taps_x: int, taps_y: int, up: IntPair = 1, down: IntPair = 1) -> Margins:
    """The margins filter2d / upsample2d / downsample2d add so the output stays aligned with x."""
    (ux, uy), (dx, dy) = _factors(up, "up"), _factors(down, "down")
    return Margins(*_centred_axis(taps_x, ux, dx), *_centred_axis(taps_y, uy, dy))


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
    up, down, margins = _factors(up, "up"), _factors(down, "down"), as_margins(padding)
    filter_extent(f)  # validates the filter's shape
    if f is None:
        f = torch.ones([1, 1], dtype=torch.float32, device=x.device)
    if custom_ops.use_kernel("upfirdn2d", x, impl, _plugin):
        return _fused(x, f, up, down, margins, bool(flip_filter), float(gain))
    with custom_ops.kernel_dtype_scope(x):  # the kernel's dtype rule: float32 math, x's dtype out
        y = _reference(x.to(torch.promote_types(x.dtype, torch.float32)), f, up, down, margins, bool(flip_filter),
                       float(gain))
    return y.to(x.dtype)


def filter2d(x: torch.Tensor, f: torch.Tensor | None, padding: Padding = 0, flip_filter: bool = False,
             gain: float = 1, impl: str = "auto") -> torch.Tensor:
    """FIR-filter `x`; by default the output has the input's size (`padding` is added on top of that)."""
    margins = as_margins(padding) + centred_margins(*filter_extent(f))
    return upfirdn2d(x, f, padding=margins, flip_filter=flip_filter, gain=gain, impl=impl)


def upsample2d(x: torch.Tensor, f: torch.Tensor | None, up: IntPair = 2, padding: Padding = 0,
               flip_filter: bool = False, gain: float = 1, impl: str = "auto") -> torch.Tensor:
    """Upsample by `up` with FIR interpolation; output is `up` times the input size (plus `padding`).

    The gain is multiplied by up_x * up_y so that zero insertion keeps the signal's mean.
    """
    ux, uy = _factors(up, "up")
    margins = as_margins(padding) + centred_margins(*filter_extent(f), up=(ux, uy))
    return upfirdn2d(x, f, up=(ux, uy), padding=margins, flip_filter=flip_filter, gain=gain * ux * uy, impl=impl)


def downsample2d(x: torch.Tensor, f: torch.Tensor | None, down: IntPair = 2, padding: Padding = 0,
                 flip_filter: bool = False, gain: float = 1, impl: str = "auto") -> torch.Tensor:
    """Low-pass filter then decimate by `down`; output is the input size / `down` (`padding` is on the input)."""
    margins = as_margins(padding) + centred_margins(*filter_extent(f), down=down)
    return upfirdn2d(x, f, down=down, padding=margins, flip_filter=flip_filter, gain=gain, impl=impl)


# ---------------------------------------------------------------------------------------------
# Reference implementation: the definition, one step at a time.


def _scaled_taps(f: torch.Tensor, gain: float, flip_filter: bool) -> torch.Tensor:
    """The float32 taps times the gain, as a convolution kernel (conv2d correlates: flip for convolution).

    The gain is applied in float32 (as the filter is stored) before any cast, so that half/double
    inputs meet the same taps as the fused kernel.
    """
    taps = f * (gain ** (f.ndim / 2))
    return taps if flip_filter else taps.flip(list(range(f.ndim)))


def _reference(x: torch.Tensor, f: torch.Tensor, up: tuple[int, int], down: tuple[int, int], margins: Margins,
               flip_filter: bool, gain: float) -> torch.Tensor:
    """Plain PyTorch, the definition: insert up - 1 zeros after each sample, pad by `margins`, correlate with
    the taps (depthwise: every channel on its own; a separable filter along x, then along y), keep every
    down-th sample. The work skips what is known to be zero or thrown away (see `_filter_axes`)."""
    channels = x.shape[1]
    (ux, uy), (dx, dy) = up, down
    px0, px1, py0, py1 = margins
    taps = _scaled_taps(f, gain, flip_filter).to(device=x.device, dtype=x.dtype)
    depthwise = lambda k: k.expand(channels, 1, *k.shape).contiguous()
    if taps.ndim == 2:
        return _filter_axes(x, depthwise(taps), (uy, ux), (dy, dx), (px0, px1, py0, py1))
    x = _filter_axes(x, depthwise(taps.reshape(1, -1)), (1, ux), (1, dx), (px0, px1, 0, 0))
    return _filter_axes(x, depthwise(taps.reshape(-1, 1)), (uy, 1), (dy, 1), (0, 0, py0, py1))


def _filter_axes(x: torch.Tensor, k: torch.Tensor, up: tuple[int, int], down: tuple[int, int],
                 pads: Margins) -> torch.Tensor:
    """Zero insertion by up (y, x), padding by pads (x0, x1, y0, y1), correlation with the depthwise kernel k
    [C, 1, kh, kw] and decimation by down (y, x).

    With upsampling, a transposed convolution with the flipped kernel computes the full convolution of the
    zero-inserted input without multiplying the zeros; the padded correlation is a window of it, starting
    k - 1 - pad0 samples in (F.pad crops where that is positive, adds zeros where negative). Without it,
    the decimation is the convolution's stride, so only kept samples are computed."""
    (uy, ux), (dy, dx) = up, down
    x0, x1, y0, y1 = pads
    kh, kw = k.shape[2:]
    if uy * ux == 1:
        # conv2d zero-pads the symmetric, non-negative part of the margins itself (no padded copy)
        py, px = max(0, min(y0, y1)), max(0, min(x0, x1))
        if (x0, x1, y0, y1) != (px, px, py, py):
            x = F.pad(x, [x0 - px, x1 - px, y0 - py, y1 - py])
        return F.conv2d(x, k, stride=(dy, dx), padding=(py, px), groups=x.shape[1])
    x = F.conv_transpose2d(x, k.flip([2, 3]), stride=(uy, ux), groups=x.shape[1])
    x = F.pad(x, [x0 - (kw - 1), ux + x1 - kw, y0 - (kh - 1), uy + y1 - kh])
    return x[:, :, ::dy, ::dx] if dx * dy > 1 else x


# ---------------------------------------------------------------------------------------------
# Fused CUDA kernel, with the adjoint as its backward pass.


def _plugin() -> Any:
    return custom_ops.get_plugin("upfirdn2d_plugin", sources=["upfirdn2d.cpp", "upfirdn2d.cu"])


def _adjoint_axis(n_in: int, n_out: int, taps: int, up: int, down: int, before: int) -> tuple[int, int]:
    """Margins on one axis for the adjoint of upfirdn (same filter flipped, `up` and `down` swapped).

    The forward output j sees the padded, zero-inserted input at j * down + t (t = 0 .. taps - 1), so the
    adjoint's zero-inserted gradient must be padded by taps - 1 - before to put input sample i under
    output j at the same tap. Its trailing margin is then whatever makes the adjoint return exactly
    n_in samples: before decimation by `up` that is (n_in - 1) * up + 1 samples.
    """
    lead = taps - 1 - before
    spread = n_out * down                           # gradient length after zero insertion by `down`
    return lead, (n_in - 1) * up + 1 + (taps - 1) - spread - lead


def _adjoint_margins(in_hw: Sequence[int], out_hw: Sequence[int], extent: tuple[int, int],
                     up: tuple[int, int], down: tuple[int, int], margins: Margins) -> Margins:
    (taps_x, taps_y), (h_in, w_in), (h_out, w_out) = extent, in_hw, out_hw
    return Margins(*_adjoint_axis(w_in, w_out, taps_x, up[0], down[0], margins.x0),
                   *_adjoint_axis(h_in, h_out, taps_y, up[1], down[1], margins.y0))


class _FusedUpFirDn(torch.autograd.Function):
    """Kernel forward; backward is the same op with swapped up/down and flipped filter, so it nests."""

    @staticmethod
    def forward(ctx, x, f, up, down, margins, flip_filter, gain):  # type: ignore[override]
        plugin = _plugin()
        (ux, uy), (dx, dy), (x0, x1, y0, y1) = up, down, margins
        if f.ndim == 2:
            y = plugin.upfirdn2d(x, f, ux, uy, dx, dy, x0, x1, y0, y1, flip_filter, gain)
        else:
            # Separable: a pass along x, then one along y, each carrying sqrt(gain). The intermediate stays in
            # float32 (at least), so that half-precision input is rounded once, as on the reference path.
            g = math.sqrt(gain)
            y = plugin.upfirdn2d(x.to(torch.promote_types(x.dtype, torch.float32)), f.unsqueeze(0), ux, 1, dx, 1,
                                 x0, x1, 0, 0, flip_filter, g)
            y = plugin.upfirdn2d(y, f.unsqueeze(1), 1, uy, 1, dy, 0, 0, y0, y1, flip_filter, g).to(x.dtype)
        ctx.save_for_backward(f)
        ctx.params = (tuple(x.shape[2:]), up, down, margins, flip_filter, gain)
        return y

    @staticmethod
    def backward(ctx, dy):  # type: ignore[override]
        (f,) = ctx.saved_tensors
        in_hw, up, down, margins, flip_filter, gain = ctx.params
        dx = None
        if ctx.needs_input_grad[0]:
            adjoint = _adjoint_margins(in_hw, dy.shape[2:], filter_extent(f), up, down, margins)
            dx = _FusedUpFirDn.apply(dy, f, down, up, adjoint, not flip_filter, gain)
        return dx, None, None, None, None, None, None


def _fused(x: torch.Tensor, f: torch.Tensor, up: tuple[int, int], down: tuple[int, int], margins: Margins,
           flip_filter: bool, gain: float) -> torch.Tensor:
    # Fold the gain into the float32 filter exactly as the reference does, so both paths multiply by
    # the same rounded taps (float64 results then agree to accumulation-order rounding).
    f = f.to(device=x.device, dtype=torch.float32) * (gain ** (f.ndim / 2))
    return _FusedUpFirDn.apply(x, f, up, down, margins, flip_filter, 1.0)


__all__ = ["Margins", "as_margins", "centred_margins", "downsample2d", "filter2d", "filter_extent", "setup_filter",
           "upfirdn2d", "upsample2d"]
