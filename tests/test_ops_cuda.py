"""CUDA kernels vs the reference path: forward values, first and second order gradients (GPU only)."""
from __future__ import annotations

import time
import warnings

import pytest
import torch

from dnnlib.ops import bias_act as ba
from dnnlib.ops import conv2d_resample, custom_ops, upfirdn2d

pytestmark = pytest.mark.gpu

DEV = torch.device("cuda")
TOL = {torch.float64: 1e-9, torch.float32: 1e-4, torch.float16: 1e-2, torch.bfloat16: 2e-2}


def _close(a: torch.Tensor, b: torch.Tensor, dtype: torch.dtype) -> None:
    torch.testing.assert_close(a.float(), b.float(), rtol=TOL[dtype], atol=TOL[dtype])


def test_kernels_build_and_are_cached() -> None:
    a = custom_ops.get_plugin("bias_act_plugin", ["bias_act.cpp", "bias_act.cu"])
    t0 = time.perf_counter()
    b = custom_ops.get_plugin("bias_act_plugin", ["bias_act.cpp", "bias_act.cu"])
    assert a is b and time.perf_counter() - t0 < 1.0
    assert custom_ops.get_plugin("upfirdn2d_plugin", ["upfirdn2d.cpp", "upfirdn2d.cu"]) is not None


@pytest.mark.parametrize("act", sorted(ba.activation_funcs))
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16, torch.float64])
@pytest.mark.parametrize("clamp", [None, 0.8])
def test_bias_act_forward(act: str, dtype: torch.dtype, clamp: float | None) -> None:
    x = torch.randn(4, 16, 8, 8, device=DEV, dtype=dtype)
    b = torch.randn(16, device=DEV, dtype=dtype)
    for xx in (x, x.to(memory_format=torch.channels_last)):
        got = ba.bias_act(xx, b, act=act, clamp=clamp, gain=1.2, impl="cuda")
        want = ba.bias_act(xx.double(), b.double(), act=act, clamp=clamp, gain=1.2, impl="ref")
        assert got.dtype == dtype and got.shape == x.shape
        _close(got, want, dtype)
    y = ba.bias_act(x.reshape(4, 16, 64), b, dim=1, act=act, impl="cuda")
    _close(y, ba.bias_act(x.reshape(4, 16, 64).double(), b.double(), dim=1, act=act, impl="ref"), dtype)


@pytest.mark.parametrize("act", sorted(ba.activation_funcs))
@pytest.mark.parametrize("dim", [0, 1, 2])
def test_bias_act_gradients_match_ref(act: str, dim: int) -> None:
    shape = (3, 5, 7)
    x = torch.randn(shape, device=DEV, dtype=torch.float64)
    b = torch.randn(shape[dim], device=DEV, dtype=torch.float64)
    w = torch.randn(shape, device=DEV, dtype=torch.float64)
    results = []
    for impl in ("ref", "cuda"):
        xi, bi = x.clone().requires_grad_(), b.clone().requires_grad_()
        y = ba.bias_act(xi, bi, dim=dim, act=act, clamp=1.5, impl=impl)
        gx, gb = torch.autograd.grad((y * w).sum(), [xi, bi], create_graph=True)
        # Second order, as in the R1 penalty: differentiate a function of the gradient.
        hx, hb = torch.autograd.grad((gx.square().sum() + gb.square().sum()) + 0 * (xi.sum() + bi.sum()), [xi, bi])
        results.append((y, gx, gb, hx, hb))
    for r, c in zip(*results):
        _close(c, r, torch.float64)


@pytest.mark.parametrize("shape", [(4, 16, 1, 1), (4, 1, 5, 5), (1, 16, 5, 5)])
def test_bias_act_backward_channels_last_with_size_one_dims(shape) -> None:
    """A channels-last x whose size-1 dimensions make its strides differ from a plain dy's there (both count
    as contiguous): the kernel must accept the pair and give the reference's gradients."""
    x0 = torch.randn(shape, device=DEV).to(memory_format=torch.channels_last)
    w = torch.randn(shape, device=DEV)
    grads = []
    for impl in ("ref", "cuda"):
        x, b = x0.clone().requires_grad_(), torch.zeros(shape[1], device=DEV, requires_grad=True)
        y = ba.bias_act(x, b, act="lrelu", impl=impl)
        grads.append(torch.autograd.grad((y * w).sum(), [x, b]))
    for got, want in zip(grads[1], grads[0]):
        _close(got, want, torch.float32)


def test_bias_act_beyond_int32_indexing() -> None:
    """More than 2**31 elements (bf16, bias along dim 1): the last elements are right too."""
    need = 2 * (2 ** 31 + 2 ** 20) * 2                    # input and output: 2**31 + 2**20 elements of 2 bytes
    if torch.cuda.get_device_properties(DEV).total_memory < 2 * need:
        pytest.skip("needs about 17 GB of GPU memory")
    x = torch.zeros([2, 2 ** 30 + 2 ** 19], device=DEV, dtype=torch.bfloat16)
    x[:, -4:] = torch.tensor([-2.0, -1.0, 1.0, 2.0], device=DEV, dtype=torch.bfloat16)
    b = torch.tensor([0.5, 1.0], device=DEV, dtype=torch.bfloat16)
    y = ba.bias_act(x, b, dim=0, act="lrelu", gain=1.0, impl="cuda")
    want = ba.bias_act(x[:, -4:].float(), b.float(), dim=0, act="lrelu", gain=1.0, impl="ref")
    _close(y[:, -4:], want, torch.bfloat16)
    del y


@pytest.mark.parametrize("act", ["lrelu", "tanh", "swish", "softplus"])
def test_bias_act_gradcheck(act: str) -> None:
    x = torch.randn(2, 3, 4, device=DEV, dtype=torch.float64)
    x = (x + 0.1 * x.sign()).requires_grad_()  # keep x away from the lrelu kink
    b = torch.zeros(3, device=DEV, dtype=torch.float64, requires_grad=True)
    fn = lambda x_, b_: ba.bias_act(x_, b_, act=act, impl="cuda")
    assert torch.autograd.gradcheck(fn, (x, b))
    assert torch.autograd.gradgradcheck(fn, (x, b))


UPFIRDN_CASES = [
    {"up": 2, "padding": [2, 1, 2, 1]},
    {"down": 2, "padding": 1},
    {"up": 2, "down": 2, "padding": [1, 2, 0, 1], "flip_filter": True, "gain": 2.0},
    {"up": [2, 1], "down": [1, 2], "padding": [0, -1, 3, 1]},
    {"padding": [-2, 3, 1, -1]},
]


@pytest.mark.parametrize("taps", [[1, 3, 3, 1], [1, 2, 1], list(range(1, 9)), [[1, 2], [3, -1]]])
@pytest.mark.parametrize("kw", UPFIRDN_CASES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.float64])
def test_upfirdn2d_forward_and_grad(taps, kw, dtype) -> None:
    f = upfirdn2d.setup_filter(taps, device=DEV)
    x = torch.randn(2, 4, 16, 13, device=DEV, dtype=dtype)
    got = upfirdn2d.upfirdn2d(x, f, impl="cuda", **kw)
    want = upfirdn2d.upfirdn2d(x.double(), f, impl="ref", **kw)
    assert got.dtype == dtype and got.shape == want.shape
    _close(got, want, dtype)
    if dtype == torch.float64:
        xc, xr = x.clone().requires_grad_(), x.clone().requires_grad_()
        w = torch.randn_like(want)
        (gc,) = torch.autograd.grad((upfirdn2d.upfirdn2d(xc, f, impl="cuda", **kw) * w).sum(), xc)
        (gr,) = torch.autograd.grad((upfirdn2d.upfirdn2d(xr, f, impl="ref", **kw) * w).sum(), xr)
        _close(gc, gr, dtype)


def test_upfirdn2d_gradcheck() -> None:
    f = upfirdn2d.setup_filter([1, 3, 3, 1], device=DEV)
    x = torch.randn(1, 2, 5, 6, device=DEV, dtype=torch.float64, requires_grad=True)
    for kw in ({"up": 2, "padding": [2, 1, 2, 1]}, {"down": 2, "padding": 1, "flip_filter": True}):
        fn = lambda t, kw=kw: upfirdn2d.upfirdn2d(t, f, impl="cuda", **kw)
        assert torch.autograd.gradcheck(fn, (x,))
        assert torch.autograd.gradgradcheck(fn, (x,))


@pytest.mark.parametrize("k,up,down,groups", [(3, 2, 1, 1), (3, 1, 2, 1), (1, 2, 1, 1), (1, 1, 2, 1), (3, 2, 1, 2)])
def test_conv2d_resample_on_cuda_matches_cpu(k, up, down, groups) -> None:
    f = upfirdn2d.setup_filter([1, 3, 3, 1])
    x = torch.randn(2, 4, 8, 8, dtype=torch.float64)
    w = torch.randn(6, 4 // groups, k, k, dtype=torch.float64)
    want = conv2d_resample.conv2d_resample(x, w, f, up=up, down=down, padding=k // 2, groups=groups)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # impl='auto' must find the kernel, not fall back
        got = conv2d_resample.conv2d_resample(x.to(DEV), w.to(DEV), f.to(DEV), up=up, down=down, padding=k // 2, groups=groups)
    _close(got.cpu(), want, torch.float64)
