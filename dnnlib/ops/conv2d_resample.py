"""A 2-D convolution combined with FIR up- and down-sampling (the `conv2d_resample` API of StyleGAN2-ADA).

Definition
----------
Per spatial axis, with s = `up`, d = `down`, an L-tap FIR filter f and a K-tap kernel w:

    y = dec_d( fir_f( cor_w( fir_f( pad_{m0,m1}( zins_s(x) ) ) ) ) )

zins_s inserts s - 1 zeros after each sample (length n s); pad adds zero margins (negative = crop);
fir_f is a valid-mode convolution with f (the first one, present only when s > 1, carries a gain s
per axis, s^2 in 2-D, because zero insertion divides the mean by s); cor_w is a valid-mode
correlation with w (a true convolution when flip_weight=False); dec_d keeps every d-th sample.
The margins m0, m1 are the caller's padding plus, for each resampling step, the offsets that centre
the filter on the output grid (`upfirdn2d.centred_margins`). This is what `_reference_steps` in
the tests computes literally.

Why the cheaper forms are equal
-------------------------------
Every stage is linear and shift-invariant, so (1) the two valid-mode filters commute and may be
applied in either order, (2) a valid-mode filter with T taps applied to a signal padded by
(a0, a1) equals the same filter applied with padding (b0, b1), b >= a, followed by cropping
(b0 - a0, b1 - a1) samples; when a > b the extra outputs see only zeros as long as b covers the
filter's full reach (b = T - 1 on the side where the signal ends in a non-zero sample).

* Up-sampling (s > 1, K > 1). conv_transpose2d(x, k, stride=s) is the full convolution of
  zins_s(x) (without its s - 1 trailing zeros) with k. Taking k = w flipped, it is cor_w applied to
  zins_s(x) padded by (K - 1, K - s): K - 1 before the first sample, and after the last non-zero
  sample K - 1 minus the s - 1 trailing zeros already there. By (2), cor_w with the requested
  margins is that result with margins (m0 - (K - 1), m1 - (K - s)) still to add (or crop), and by
  (1) the first FIR may run after it; it receives those leftover margins. A following d > 1 is a
  plain FIR-and-decimate on the result.
* Down-sampling (s = 1, d > 1, K > 1). By (1) the FIR moves before cor_w, where it runs on the
  padded input; dec_d after a valid correlation is the same correlation evaluated at every d-th
  offset, i.e. conv2d with stride d.
* 1x1 kernels. cor_w then mixes channels only and commutes with every spatial step, so it runs at
  the smaller end: before up-sampling, after down-sampling.
* No resampling. cor_w(pad(x)) is conv2d's own zero padding when the margins are symmetric and
  non-negative; otherwise the margins are applied explicitly first.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from . import upfirdn2d as fir
from .upfirdn2d import Margins, Padding


def _correlate(x: torch.Tensor, w: torch.Tensor, groups: int, flip_weight: bool, stride: int = 1,
               padding: tuple[int, int] = (0, 0)) -> torch.Tensor:
    """cor_w: torch's conv2d is a correlation; flip_weight=False asks for a true convolution."""
    return F.conv2d(x, w if flip_weight else w.flip([2, 3]), stride=stride, padding=padding, groups=groups)


def _zero_insert_correlate(x: torch.Tensor, w: torch.Tensor, s: int, groups: int, flip_weight: bool) -> torch.Tensor:
    """cor_w(pad_{K-1, K-s}(zins_s(x))) in one transposed convolution (see the module docstring)."""
    # conv_transpose2d convolves (not correlates) and wants the kernel as [in, out/groups, kh, kw]:
    # within each group, the in/out axes of w trade places.
    kernel = w.flip([2, 3]) if flip_weight else w
    kernel = kernel.unflatten(0, (groups, -1)).transpose(1, 2).flatten(0, 1)
    return F.conv_transpose2d(x, kernel, stride=s, groups=groups)


def _validate(x: torch.Tensor, w: torch.Tensor, f: torch.Tensor | None, up: int, down: int, groups: int) -> None:
    if not isinstance(x, torch.Tensor) or x.ndim != 4:
        raise ValueError("x must be a 4-D tensor [batch, channels, height, width]")
    if not isinstance(w, torch.Tensor) or w.ndim != 4 or w.dtype != x.dtype:
        raise ValueError("w must be a 4-D tensor [out, in/groups, kh, kw] with x's dtype")
    if f is not None and not (isinstance(f, torch.Tensor) and f.ndim in (1, 2) and f.dtype == torch.float32):
        raise ValueError("f must be None or a float32 filter from upfirdn2d.setup_filter()")
    for name, v in (("up", up), ("down", down), ("groups", groups)):
        if not isinstance(v, int) or isinstance(v, bool) or v < 1:
            raise ValueError(f"{name} must be an int >= 1, got {v!r}")
    if w.shape[0] % groups != 0 or x.shape[1] != w.shape[1] * groups:
        raise ValueError(f"channel mismatch: x has {x.shape[1]} channels, w is {tuple(w.shape)}, groups={groups}")


def conv2d_resample(
    x: torch.Tensor,
    w: torch.Tensor,
    f: torch.Tensor | None = None,
    up: int = 1,
    down: int = 1,
    padding: Padding = 0,
    groups: int = 1,
    flip_weight: bool = True,
    flip_filter: bool = False,
) -> torch.Tensor:
    """Convolve x [N, Cin, H, W] with w [Cout, Cin/groups, kh, kw], upsampling/downsampling with FIR f.

    f comes from upfirdn2d.setup_filter() (None = identity). `padding` (int, [x, y] or
    [x0, x1, y0, y1]) is relative to the upsampled image and applied once, at the start.
    flip_weight=True means correlation (like torch.conv2d); flip_filter=True filters by correlation.
    """
    _validate(x, w, f, up, down, groups)
    taps_x, taps_y = fir.filter_extent(f)
    margins = fir.as_margins(padding)
    if up > 1:
        margins = margins + fir.centred_margins(taps_x, taps_y, up=up)
    if down > 1:
        margins = margins + fir.centred_margins(taps_x, taps_y, down=down)

    def lowpass(t: torch.Tensor, **kwargs) -> torch.Tensor:
        return fir.upfirdn2d(t, f, flip_filter=flip_filter, **kwargs)

    pointwise = w.shape[2] == w.shape[3] == 1
    if pointwise and up > 1:
        x = _correlate(x, w, groups, flip_weight)
        x = lowpass(x, up=up, padding=margins, gain=up ** 2)
        return lowpass(x, down=down) if down > 1 else x
    if pointwise and down > 1:
        return _correlate(lowpass(x, down=down, padding=margins), w, groups, flip_weight)
    if up > 1:
        x = _zero_insert_correlate(x, w, up, groups, flip_weight)
        kh, kw = w.shape[2], w.shape[3]
        x = lowpass(x, padding=margins - Margins(kw - 1, kw - up, kh - 1, kh - up), gain=up ** 2)
        return lowpass(x, down=down) if down > 1 else x
    if down > 1:
        return _correlate(lowpass(x, padding=margins), w, groups, flip_weight, stride=down)
    if margins.is_symmetric() and min(margins) >= 0:
        return _correlate(x, w, groups, flip_weight, padding=(margins.y0, margins.x0))
    return _correlate(F.pad(x, list(margins)), w, groups, flip_weight)


__all__ = ["conv2d_resample"]
