"""2-D convolution fused with FIR up/downsampling (StyleGAN2-ADA `conv2d_resample` API).

The op is defined as: upsample by zero insertion, pad once, FIR-filter, convolve with `w`, FIR-filter
and decimate. Each branch below reorders those steps into something cheaper (strided or transposed
convolution, filtering at the lower resolution) without changing the result beyond float rounding;
the branch choice and op order follow StyleGAN2-ADA so outputs agree with it.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from . import upfirdn2d as _fir
from .upfirdn2d import Padding, _get_filter_size, _parse_padding


def _conv(
    x: torch.Tensor,
    w: torch.Tensor,
    stride: int = 1,
    padding: int | list[int] = 0,
    groups: int = 1,
    transpose: bool = False,
    flip_weight: bool = True,
) -> torch.Tensor:
    """conv2d / conv_transpose2d; flip_weight=False turns torch's correlation into a true convolution."""
    if not flip_weight:
        w = w.flip([2, 3])
    if transpose:
        return F.conv_transpose2d(x, w, stride=stride, padding=padding, groups=groups)
    return F.conv2d(x, w, stride=stride, padding=padding, groups=groups)


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
    if not isinstance(x, torch.Tensor) or x.ndim != 4:
        raise ValueError("x must be a 4-D tensor [batch, channels, height, width]")
    if not isinstance(w, torch.Tensor) or w.ndim != 4 or w.dtype != x.dtype:
        raise ValueError("w must be a 4-D tensor [out, in/groups, kh, kw] with x's dtype")
    if f is not None and not (isinstance(f, torch.Tensor) and f.ndim in (1, 2) and f.dtype == torch.float32):
        raise ValueError("f must be None or a float32 filter from upfirdn2d.setup_filter()")
    for name, v in (("up", up), ("down", down), ("groups", groups)):
        if not isinstance(v, int) or isinstance(v, bool) or v < 1:
            raise ValueError(f"{name} must be an int >= 1, got {v!r}")
    out_ch, in_ch_per_group, kh, kw = (int(s) for s in w.shape)
    if out_ch % groups != 0 or x.shape[1] != in_ch_per_group * groups:
        raise ValueError(f"channel mismatch: x has {x.shape[1]} channels, w is {tuple(w.shape)}, groups={groups}")
    fw, fh = _get_filter_size(f)
    px0, px1, py0, py1 = _parse_padding(padding)

    # Extra padding so that the FIR filter's support is centred for the resampling step.
    if up > 1:
        px0 += (fw + up - 1) // 2
        px1 += (fw - up) // 2
        py0 += (fh + up - 1) // 2
        py1 += (fh - up) // 2
    if down > 1:
        px0 += (fw - down + 1) // 2
        px1 += (fw - down) // 2
        py0 += (fh - down + 1) // 2
        py1 += (fh - down) // 2

    # 1x1 conv commutes with spatial filtering: decimate first, convolve the smaller image.
    if kw == 1 and kh == 1 and down > 1 and up == 1:
        x = _fir.upfirdn2d(x, f, down=down, padding=[px0, px1, py0, py1], flip_filter=flip_filter)
        return _conv(x, w, groups=groups, flip_weight=flip_weight)

    # 1x1 conv before upsampling: convolve the smaller image, then interpolate.
    if kw == 1 and kh == 1 and up > 1 and down == 1:
        x = _conv(x, w, groups=groups, flip_weight=flip_weight)
        return _fir.upfirdn2d(x, f, up=up, padding=[px0, px1, py0, py1], gain=up**2, flip_filter=flip_filter)

    # Downsampling only: low-pass at full resolution, then let the conv stride do the decimation.
    if down > 1 and up == 1:
        x = _fir.upfirdn2d(x, f, padding=[px0, px1, py0, py1], flip_filter=flip_filter)
        return _conv(x, w, stride=down, groups=groups, flip_weight=flip_weight)

    # Upsampling: a stride-`up` transposed conv performs zero insertion and convolution together;
    # the FIR filter then runs on its output with the padding that is left over.
    if up > 1:
        # conv_transpose2d wants [in, out/groups, kh, kw]; swap the roles group by group.
        if groups == 1:
            w = w.transpose(0, 1)
        else:
            w = w.reshape(groups, out_ch // groups, in_ch_per_group, kh, kw)
            w = w.transpose(1, 2)
            w = w.reshape(groups * in_ch_per_group, out_ch // groups, kh, kw)
        # The transposed conv already "pads" by kernel-1 on each side (and up-1 less at the end).
        px0 -= kw - 1
        px1 -= kw - up
        py0 -= kh - 1
        py1 -= kh - up
        # Any symmetric crop is handed to the transposed conv's own padding, the rest to upfirdn2d.
        crop_x = max(min(-px0, -px1), 0)
        crop_y = max(min(-py0, -py1), 0)
        # A transposed conv applies w flipped relative to conv2d, hence the inverted flag.
        x = _conv(x, w, stride=up, padding=[crop_y, crop_x], groups=groups, transpose=True, flip_weight=not flip_weight)
        x = _fir.upfirdn2d(
            x, f, padding=[px0 + crop_x, px1 + crop_x, py0 + crop_y, py1 + crop_y], gain=up**2, flip_filter=flip_filter
        )
        if down > 1:
            x = _fir.upfirdn2d(x, f, down=down, flip_filter=flip_filter)
        return x

    # No resampling and symmetric non-negative padding: conv2d pads by itself.
    if up == 1 and down == 1 and px0 == px1 and py0 == py1 and px0 >= 0 and py0 >= 0:
        return _conv(x, w, padding=[py0, px0], groups=groups, flip_weight=flip_weight)

    # General case (asymmetric or negative padding): spell out every step.
    x = _fir.upfirdn2d(x, f if up > 1 else None, up=up, padding=[px0, px1, py0, py1], gain=up**2, flip_filter=flip_filter)
    x = _conv(x, w, groups=groups, flip_weight=flip_weight)
    if down > 1:
        x = _fir.upfirdn2d(x, f, down=down, flip_filter=flip_filter)
    return x


__all__ = ["conv2d_resample"]
