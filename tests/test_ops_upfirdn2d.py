"""upfirdn2d reference path vs SciPy, plus setup_filter, wrappers, gradients and argument errors."""
from __future__ import annotations

import numpy as np
import pytest
import scipy.signal
import torch

from dnnlib.ops import upfirdn2d

# ---------------------------------------------------------------------------------------------
# Independent expectation built from SciPy.


def _axis_expected(x: np.ndarray, taps: np.ndarray, up: int, down: int, p0: int, p1: int, axis: int) -> np.ndarray:
    """1-D upfirdn along `axis` with upfirdn2d's conventions, from scipy.signal.upfirdn.

    scipy computes the full convolution of the zero-inserted signal; upfirdn2d pads (p0, p1) around
    the length L*up upsampled signal and keeps only the 'valid' part, so output n is full-conv sample
    n + len(taps) - 1 - p0 (zero where that index falls outside the full convolution).
    """
    n_in = x.shape[axis]
    k = len(taps)
    full = scipy.signal.upfirdn(taps, x, up=up, down=1, axis=axis)
    n_valid = n_in * up + p0 + p1 - k + 1
    idx = np.arange(n_valid) + k - 1 - p0
    ok = (idx >= 0) & (idx < full.shape[axis])
    out = np.zeros(x.shape[:axis] + (n_valid,) + x.shape[axis + 1 :])
    src = np.take(full, idx[ok], axis=axis)
    sl = [slice(None)] * x.ndim
    sl[axis] = np.nonzero(ok)[0]
    out[tuple(sl)] = src
    sl[axis] = slice(None, None, down)
    return out[tuple(sl)]


def _expected_2d(x: np.ndarray, f2: np.ndarray, up, down, pads) -> np.ndarray:
    """Non-separable expectation: zero insertion + scipy.signal.convolve2d('full') + index shift."""
    upx, upy = up
    downx, downy = down
    px0, px1, py0, py1 = pads
    fh, fw = f2.shape
    n, c, h, w = x.shape
    u = np.zeros((n, c, h * upy, w * upx))
    u[:, :, ::upy, ::upx] = x
    oh = h * upy + py0 + py1 - fh + 1
    ow = w * upx + px0 + px1 - fw + 1
    out = np.zeros((n, c, oh, ow))
    for i in range(n):
        for j in range(c):
            full = scipy.signal.convolve2d(u[i, j], f2, mode="full")
            # Pad generously so every shifted index is in range, then pick the valid window.
            big = np.pad(full, ((max(py0, 0), oh + fh), (max(px0, 0), ow + fw)))
            oy = fh - 1 - py0 + max(py0, 0)
            ox = fw - 1 - px0 + max(px0, 0)
            out[i, j] = big[oy : oy + oh, ox : ox + ow]
    return out[:, :, ::downy, ::downx]


def _expected(x: torch.Tensor, f: np.ndarray, up=1, down=1, padding=0, flip_filter=False, gain=1.0) -> torch.Tensor:
    upx, upy = (up, up) if isinstance(up, int) else up
    downx, downy = (down, down) if isinstance(down, int) else down
    if isinstance(padding, int):
        pads = (padding,) * 4
    elif len(padding) == 2:
        pads = (padding[0], padding[0], padding[1], padding[1])
    else:
        pads = tuple(padding)
    xn = x.double().numpy()
    if flip_filter:  # correlation = convolution with the reversed filter
        f = f[::-1] if f.ndim == 1 else f[::-1, ::-1]
    f = np.ascontiguousarray(f, dtype=np.float64)
    if f.ndim == 1:
        y = _axis_expected(xn, f, upx, downx, pads[0], pads[1], axis=3)
        y = _axis_expected(y, f, upy, downy, pads[2], pads[3], axis=2)
    else:
        y = _expected_2d(xn, f, (upx, upy), (downx, downy), pads)
    return torch.from_numpy(y * gain)


FILTERS = {
    "sep4": np.array([1.0, 3.0, 2.0, 0.5]),  # asymmetric on purpose: exposes flips and offsets
    "sep3": np.array([0.25, -1.0, 2.0]),
    "sep8": np.linspace(0.1, 1.5, 8),
    "full3x2": np.array([[1.0, -2.0], [0.5, 3.0], [2.0, 1.0]]),
    "full1": np.array([[1.7]]),
}

CASES = [
    {},
    {"up": 2},
    {"up": 3},
    {"down": 2},
    {"down": 3},
    {"up": 2, "down": 2},
    {"up": [2, 1], "down": [1, 2]},
    {"up": 2, "padding": [3, 2]},
    {"padding": [2, 1, 0, 3]},
    {"padding": [-1, -2, -2, 1]},  # negative = crop
    {"up": 2, "down": 3, "padding": [1, -1, -2, 2]},
    {"flip_filter": True, "padding": [1, 2, 2, 1]},
    {"up": 2, "flip_filter": True, "gain": 2.5, "padding": 2},
    {"down": 2, "gain": 0.3, "padding": 1},
]


def _filter_tensor(f: np.ndarray) -> torch.Tensor:
    return torch.tensor(f, dtype=torch.float32)


@pytest.mark.parametrize("fname", sorted(FILTERS))
@pytest.mark.parametrize("case", CASES, ids=lambda c: ",".join(f"{k}={v}" for k, v in c.items()) or "plain")
def test_ref_matches_scipy(fname: str, case: dict) -> None:
    g = torch.Generator().manual_seed(1)
    x = torch.randn(2, 3, 11, 13, generator=g, dtype=torch.float64)
    f = FILTERS[fname]
    got = upfirdn2d.upfirdn2d(x, _filter_tensor(f), impl="ref", **case)
    # The op scales the float32 filter; build the expectation from the same float32 taps.
    want = _expected(x, _filter_tensor(f).double().numpy(), **case)
    assert got.shape == want.shape
    torch.testing.assert_close(got, want, rtol=1e-6, atol=1e-6)


def test_separable_equals_outer_product() -> None:
    x = torch.randn(1, 2, 9, 10, dtype=torch.float64)
    taps = [1.0, 2.0, 4.0, 1.0]
    f1 = upfirdn2d.setup_filter(taps, separable=True)
    f2 = upfirdn2d.setup_filter(taps, separable=False)
    assert f1.ndim == 1 and f2.ndim == 2
    for kw in [{"up": 2, "padding": 2, "gain": 3.0}, {"down": 2, "padding": [1, 2, 0, 1], "flip_filter": True}]:
        torch.testing.assert_close(upfirdn2d.upfirdn2d(x, f1, **kw), upfirdn2d.upfirdn2d(x, f2, **kw))


def test_identity_filter_and_float32() -> None:
    x = torch.randn(2, 3, 5, 6)
    torch.testing.assert_close(upfirdn2d.upfirdn2d(x, None), x)
    y = upfirdn2d.upfirdn2d(x, None, up=2)
    assert y.shape == (2, 3, 10, 12) and torch.equal(y[:, :, ::2, ::2], x) and y[:, :, 1::2].abs().sum() == 0
    f = upfirdn2d.setup_filter([1, 3, 3, 1])
    assert upfirdn2d.upsample2d(x, f).dtype == torch.float32
    assert upfirdn2d.upsample2d(x.double(), f).dtype == torch.float64


# ---------------------------------------------------------------------------------------------
# setup_filter and the wrappers.


def test_setup_filter() -> None:
    f = upfirdn2d.setup_filter([1, 3, 3, 1])
    assert f.shape == (4, 4) and f.dtype == torch.float32
    torch.testing.assert_close(f.sum(), torch.tensor(1.0))
    torch.testing.assert_close(f, torch.outer(torch.tensor([1.0, 3, 3, 1]), torch.tensor([1.0, 3, 3, 1])) / 64)
    assert upfirdn2d.setup_filter(list(range(1, 9))).ndim == 1  # >= 8 taps: separable by default
    assert upfirdn2d.setup_filter([1, 2, 1], separable=True).ndim == 1
    assert upfirdn2d.setup_filter(None).tolist() == [[1.0]]
    assert upfirdn2d.setup_filter(2.0, normalize=False).tolist() == [[4.0]]  # scalar -> outer product
    g = upfirdn2d.setup_filter([1, 2], normalize=False, gain=4.0)
    torch.testing.assert_close(g, torch.tensor([[1.0, 2.0], [2.0, 4.0]]) * 4)  # gain**(2/2)
    s = upfirdn2d.setup_filter([1.0, 2.0], normalize=False, gain=4.0, separable=True)
    torch.testing.assert_close(s, torch.tensor([1.0, 2.0]) * 2)  # gain**(1/2) per axis
    torch.testing.assert_close(upfirdn2d.setup_filter([1, 2, 4], normalize=False, flip_filter=True, separable=True), torch.tensor([4.0, 2, 1]))
    with pytest.raises(ValueError):
        upfirdn2d.setup_filter([[1, 2]], separable=True)
    with pytest.raises(ValueError):
        upfirdn2d.setup_filter([])


def test_wrappers_shapes_and_constant_signal() -> None:
    x = torch.full([1, 2, 8, 10], 3.0)
    # Each filter's polyphase components have equal sums, so upsampling keeps a constant constant.
    for taps in ([1, 3, 3, 1], [1, 2, 1], [1, 2, 3, 4, 4, 3, 2, 1]):
        f = upfirdn2d.setup_filter(taps)
        up = upfirdn2d.upsample2d(x, f)
        down = upfirdn2d.downsample2d(x, f)
        same = upfirdn2d.filter2d(x, f)
        assert up.shape == (1, 2, 16, 20) and down.shape == (1, 2, 4, 5) and same.shape == x.shape
        # A normalised low-pass keeps a constant image constant away from the borders.
        torch.testing.assert_close(up[:, :, 6:-6, 6:-6], torch.full_like(up[:, :, 6:-6, 6:-6], 3.0))
        torch.testing.assert_close(down[:, :, 2:-2, 2:-2], torch.full_like(down[:, :, 2:-2, 2:-2], 3.0))
        torch.testing.assert_close(same[:, :, 4:-4, 4:-4], torch.full_like(same[:, :, 4:-4, 4:-4], 3.0))
    f = upfirdn2d.setup_filter([1, 3, 3, 1])
    assert upfirdn2d.upsample2d(x, f, up=[2, 3], padding=[1, 0, -1, 2]).shape == (1, 2, 8 * 3 + 1, 20 + 1)


def test_box_filters_match_pooling_and_nearest() -> None:
    x = torch.randn(2, 3, 8, 6)
    box = upfirdn2d.setup_filter([1, 1])
    torch.testing.assert_close(upfirdn2d.downsample2d(x, box), torch.nn.functional.avg_pool2d(x, 2))
    torch.testing.assert_close(upfirdn2d.upsample2d(x, box), torch.nn.functional.interpolate(x, scale_factor=2, mode="nearest"))


# ---------------------------------------------------------------------------------------------
# Gradients (float64) and errors.

@pytest.mark.parametrize(
    "taps,kw",
    [
        ([1, 3, 3, 1], {"up": 2, "padding": [2, 1, 2, 1]}),
        ([1, 3, 3, 1], {"down": 2, "padding": 1}),
        ([1, 2, 1], {"up": 2, "down": 2, "padding": [1, -1, 0, 2], "flip_filter": True, "gain": 2.0}),
        (list(range(1, 9)), {"padding": [3, 4, 4, 3]}),
    ],
)
def test_gradcheck(taps: list, kw: dict, one_thread) -> None:
    f = upfirdn2d.setup_filter(taps)
    x = torch.randn(1, 2, 6, 5, dtype=torch.float64, requires_grad=True)
    fn = lambda t: upfirdn2d.upfirdn2d(t, f, impl="ref", **kw)
    assert torch.autograd.gradcheck(fn, (x,))
    assert torch.autograd.gradgradcheck(fn, (x,))


def test_bad_arguments() -> None:
    x = torch.randn(1, 1, 4, 4)
    f = upfirdn2d.setup_filter([1, 1])
    with pytest.raises(ValueError, match="impl"):
        upfirdn2d.upfirdn2d(x, f, impl="fast")
    with pytest.raises(ValueError):
        upfirdn2d.upfirdn2d(x[0], f)
    with pytest.raises(ValueError):
        upfirdn2d.upfirdn2d(x, f, up=0)
    with pytest.raises(TypeError):
        upfirdn2d.upfirdn2d(x, f, down=1.5)
    with pytest.raises(ValueError):
        upfirdn2d.upfirdn2d(x, f, padding=[1, 2, 3])
    with pytest.raises(ValueError, match="gradients"):
        upfirdn2d.upfirdn2d(x, f.clone().requires_grad_())
    with pytest.raises(RuntimeError, match="CUDA tensor"):
        upfirdn2d.upfirdn2d(x, f, impl="cuda")


@pytest.mark.parametrize(
    "taps,kw",
    [
        ([1, 3, 3, 1], {"up": 2, "padding": [2, 1, 2, 1]}),
        ([1, 3, 3, 1], {"down": 2, "padding": [2, 1, 1, 1]}),
        ([1, 2, 4], {"up": [2, 3], "down": [3, 2], "padding": [1, -1, 0, 2], "flip_filter": True, "gain": 2.0}),
        (list(range(1, 9)), {"down": 3, "padding": [3, 4, 4, 3]}),
    ],
)
def test_adjoint_margins_give_the_gradient(taps: list, kw: dict) -> None:
    # The CUDA backward pass runs upfirdn2d with these margins; on CPU, check them against autograd.
    f = upfirdn2d.setup_filter(taps)
    x = torch.randn(1, 2, 9, 7, dtype=torch.float64, requires_grad=True)
    y = upfirdn2d.upfirdn2d(x, f, impl="ref", **kw)
    dy = torch.randn_like(y)
    (want,) = torch.autograd.grad((y * dy).sum(), [x])
    up, down = kw.get("up", 1), kw.get("down", 1)
    up, down = ((v, v) if isinstance(v, int) else tuple(v) for v in (up, down))
    margins = upfirdn2d._adjoint_margins(x.shape[2:], y.shape[2:], upfirdn2d.filter_extent(f), up, down,
                                         upfirdn2d.as_margins(kw["padding"]))
    got = upfirdn2d.upfirdn2d(dy, f, up=down, down=up, padding=margins, flip_filter=not kw.get("flip_filter", False),
                              gain=kw.get("gain", 1.0), impl="ref")
    assert got.shape == want.shape
    torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-10)
