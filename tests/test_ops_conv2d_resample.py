"""conv2d_resample: every branch vs a step-by-step reference, gradients and argument errors."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from dnnlib.ops import upfirdn2d
from dnnlib.ops.conv2d_resample import conv2d_resample


def _reference_steps(x, w, f, up, down, padding, groups, flip_weight, flip_filter):
    """The op as defined, one step at a time: (zero-insert, pad once, FIR) -> plain conv -> (FIR, decimate).

    Padding is on the upsampled image, extended by the FIR centring offsets for up and for down.
    """
    fw = fh = 1 if f is None else f.shape[-1]
    p = [padding] * 4 if isinstance(padding, int) else list(padding)
    if len(p) == 2:
        p = [p[0], p[0], p[1], p[1]]
    px0, px1, py0, py1 = p
    if up > 1:
        px0, px1, py0, py1 = px0 + (fw + up - 1) // 2, px1 + (fw - up) // 2, py0 + (fh + up - 1) // 2, py1 + (fh - up) // 2
    if down > 1:
        px0, px1, py0, py1 = px0 + (fw - down + 1) // 2, px1 + (fw - down) // 2, py0 + (fh - down + 1) // 2, py1 + (fh - down) // 2
    x = upfirdn2d.upfirdn2d(x, f if up > 1 else None, up=up, padding=[px0, px1, py0, py1], gain=up**2, flip_filter=flip_filter, impl="ref")
    x = F.conv2d(x, w if flip_weight else w.flip([2, 3]), groups=groups)
    if down > 1:
        x = upfirdn2d.upfirdn2d(x, f, down=down, flip_filter=flip_filter, impl="ref")
    return x


CASES = [
    # (kernel size, up, down, padding, groups)
    (3, 2, 1, 1, 1),  # transposed-conv branch
    (1, 2, 1, 0, 1),  # 1x1: conv then upsample
    (3, 1, 2, 1, 1),  # filter then strided conv
    (1, 1, 2, 0, 1),  # 1x1: downsample then conv
    (3, 2, 2, 1, 1),  # up and down
    (3, 1, 1, 1, 1),  # plain conv2d with padding
    (3, 1, 1, [1, 0, 2, 1], 1),  # asymmetric padding: general fallback
    (3, 2, 1, 1, 2),  # grouped, up
    (3, 1, 2, 1, 3),  # grouped, down
    (1, 2, 1, 0, 3),  # grouped 1x1 up
    (3, 2, 1, [0, 2, 1, -1], 1),  # up with uneven padding and a crop
]


@pytest.mark.parametrize("k,up,down,padding,groups", CASES)
@pytest.mark.parametrize("flip_weight", [True, False])
@pytest.mark.parametrize("flip_filter", [False, True])
def test_matches_reference_steps(k, up, down, padding, groups, flip_weight, flip_filter) -> None:
    g = torch.Generator().manual_seed(3)
    x = torch.randn(2, 6, 8, 7, generator=g, dtype=torch.float64)
    w = torch.randn(6, 6 // groups, k, k, generator=g, dtype=torch.float64)
    f = upfirdn2d.setup_filter([1, 2, 3, 1])  # asymmetric: exposes any flip mix-up
    got = conv2d_resample(x, w, f, up=up, down=down, padding=padding, groups=groups, flip_weight=flip_weight, flip_filter=flip_filter)
    want = _reference_steps(x, w, f, up, down, padding, groups, flip_weight, flip_filter)
    assert got.shape == want.shape
    torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-10)


def test_generator_style_shapes() -> None:
    # How the networks call it: padding=k//2 keeps "same" size; up doubles it, down halves it.
    x = torch.randn(2, 4, 8, 8)
    w = torch.randn(5, 4, 3, 3)
    f = upfirdn2d.setup_filter([1, 3, 3, 1])
    assert conv2d_resample(x, w, f, padding=1).shape == (2, 5, 8, 8)
    assert conv2d_resample(x, w, f, up=2, padding=1, flip_weight=False).shape == (2, 5, 16, 16)
    assert conv2d_resample(x, w, f, down=2, padding=1).shape == (2, 5, 4, 4)
    # Without resampling the op is exactly torch's conv2d.
    torch.testing.assert_close(conv2d_resample(x, w, padding=1), F.conv2d(x, w, padding=1))


def test_upsample_matches_upsample2d_then_conv() -> None:
    # A second, simpler formulation of the up branch: upsample2d with the conv padding, then a valid conv.
    x = torch.randn(1, 3, 6, 5, dtype=torch.float64)
    w = torch.randn(4, 3, 3, 3, dtype=torch.float64)
    f = upfirdn2d.setup_filter([1, 3, 3, 1])
    got = conv2d_resample(x, w, f, up=2, padding=1)
    want = F.conv2d(upfirdn2d.upsample2d(x, f, padding=1), w)
    torch.testing.assert_close(got, want)


@pytest.mark.parametrize("k,up,down,groups", [(3, 2, 1, 1), (3, 1, 2, 2), (1, 2, 1, 1), (1, 1, 2, 1), (3, 2, 2, 1)])
def test_gradcheck(k, up, down, groups, one_thread) -> None:
    f = upfirdn2d.setup_filter([1, 3, 3, 1])
    x = torch.randn(1, 2, 4, 4, dtype=torch.float64, requires_grad=True)
    w = torch.randn(2, 2 // groups, k, k, dtype=torch.float64, requires_grad=True)
    fn = lambda x_, w_: conv2d_resample(x_, w_, f, up=up, down=down, padding=k // 2, groups=groups)
    assert torch.autograd.gradcheck(fn, (x, w))
    assert torch.autograd.gradgradcheck(fn, (x, w))


def test_bad_arguments() -> None:
    x = torch.randn(1, 2, 4, 4)
    w = torch.randn(3, 2, 3, 3)
    with pytest.raises(ValueError):
        conv2d_resample(x[0], w)
    with pytest.raises(ValueError):
        conv2d_resample(x, w.double())
    with pytest.raises(ValueError):
        conv2d_resample(x, w, up=0)
    with pytest.raises(ValueError, match="channel"):
        conv2d_resample(x, w, groups=2)
    with pytest.raises(ValueError):
        conv2d_resample(x, w, f=torch.ones(2, 2, dtype=torch.float64))
