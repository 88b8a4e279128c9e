"""The CUDA path's Python side (autograd Functions, operand layouts and dtypes handed to the kernels, the
separable two-pass split, the adjoint used as backward), run on CPU against a stand-in for each compiled
plugin. The stand-ins check their operands as bias_act.cpp / upfirdn2d.cu do and compute what the kernels
compute (float32 math, or float64 for float64; the output rounded once to the input's dtype), so a CPU run
catches glue that would hand a kernel operands it rejects or round where the reference does not. The kernels'
own arithmetic is tested against the reference on a GPU (tests/test_ops_cuda.py, bench/gpu_check.py).
"""
from __future__ import annotations

import pytest
import torch

from dnnlib.ops import bias_act as ba
from dnnlib.ops import upfirdn2d as U

BY_KERNEL_ID = {spec.kernel_id: spec for spec in ba.activation_funcs.values()}


def _opmath(dtype: torch.dtype) -> torch.dtype:
    return torch.float64 if dtype == torch.float64 else torch.float32


def _dense(t: torch.Tensor) -> bool:
    """Non-overlapping and dense: the dimensions longer than 1, by stride, tile memory without gaps."""
    expected = 1
    for stride, size in sorted((s, n) for n, s in zip(t.shape, t.stride()) if n > 1):
        if stride != expected:
            return False
        expected *= size
    return True


def _same_layout(a: torch.Tensor, t: torch.Tensor) -> bool:
    """bias_act.cpp's rule: same shape and the same stride along every dimension longer than 1."""
    return t.shape == a.shape and all(n == 1 or p == q for n, p, q in zip(a.shape, a.stride(), t.stride()))


class BiasActStandIn:
    def bias_act(self, a, b, xref, aux, mode, dim, act, alpha, gain, clamp):
        assert mode in (0, 1, 2)
        assert _dense(a), "bias_act: input must be dense"
        for t in (xref, aux):
            assert t.dtype == a.dtype, "bias_act: all tensors must share a dtype"
            assert _same_layout(a, t), f"bias_act: operands must share shape and memory layout {a.stride()} {t.stride()}"
        if b.numel():
            assert b.dtype == a.dtype and b.dim() == 1 and b.is_contiguous() and b.shape[0] == a.shape[dim]
        T = _opmath(a.dtype)
        shape = [1] * a.ndim
        shape[dim] = -1
        bias = b.to(T).reshape(shape) if b.numel() else 0.0
        func = lambda z: BY_KERNEL_ID[act].func(z, alpha)
        z = (a if mode == 0 else xref).to(T) + bias
        y = func(z) * gain
        if mode == 0:
            out = y.clamp(-clamp, clamp) if clamp >= 0 else y
        else:
            with torch.enable_grad():                         # (called inside autograd Functions' forward)
                zz = z.detach().double().requires_grad_(True)
                (d1,) = torch.autograd.grad(func(zz).sum(), zz, create_graph=True)
                d = d1 if mode == 1 else torch.autograd.grad(d1.sum(), zz, allow_unused=True)[0]
                d = torch.zeros_like(zz) if d is None else d
            out = a.to(T) * d.to(T) * gain * (aux.to(T) if mode == 2 else 1.0)
            if clamp >= 0:
                out = torch.where((y >= -clamp) & (y <= clamp), out, torch.zeros_like(out))
        return torch.empty_like(a).copy_(out.detach())          # the kernel writes a's layout, a's dtype


class UpFirDnStandIn:
    def upfirdn2d(self, x, f, ux, uy, dx, dy, x0, x1, y0, y1, flip, gain):
        assert f.dtype == torch.float32 and f.ndim == 2, "upfirdn2d: the filter is a float32 [fh, fw] tensor"
        y = U._reference(x.to(_opmath(x.dtype)), f, (ux, uy), (dx, dy), U.Margins(x0, x1, y0, y1), flip, gain)
        return y.to(x.dtype).contiguous()                         # plain NCHW, x's dtype


@pytest.fixture
def kernels(monkeypatch):
    monkeypatch.setattr(ba, "_plugin", lambda: BiasActStandIn())
    monkeypatch.setattr(U, "_plugin", lambda: UpFirDnStandIn())


def _r1_like(y: torch.Tensor, x: torch.Tensor, b: torch.Tensor, w: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """y's value; the x and b gradients of sum(y * w); and the gradients of their squared norm (R1's pattern)."""
    gx, gb = torch.autograd.grad((y.float() * w).sum(), [x, b], create_graph=True)
    hx, hb = torch.autograd.grad(gx.float().square().sum() + gb.float().square().sum(), [x, b], allow_unused=True)
    return y, gx, gb, hx if hx is not None else torch.zeros_like(x), hb if hb is not None else torch.zeros_like(b)


LAYOUTS = {
    "plain": lambda t: t,
    "channels_last": lambda t: t.to(memory_format=torch.channels_last),
}


@pytest.mark.parametrize("shape", [(4, 16, 5, 5), (4, 16, 1, 1), (4, 1, 5, 5), (1, 16, 5, 5)])
@pytest.mark.parametrize("layout", sorted(LAYOUTS))
@pytest.mark.parametrize("act,dtype", [("lrelu", torch.float32), ("lrelu", torch.bfloat16), ("swish", torch.float32)])
def test_bias_act_glue_matches_reference(kernels, shape, layout, act, dtype) -> None:
    """Values, gradients and second-order gradients of the kernel path equal the reference's, for layouts
    whose size-1 dimensions make PyTorch's 'contiguous' ambiguous (a channels-last x with a plain dy)."""
    g = torch.Generator().manual_seed(0)
    x0 = LAYOUTS[layout](torch.randn(shape, generator=g).to(dtype))
    b0 = torch.randn(shape[1], generator=g)
    w = torch.randn(shape, generator=g)                      # plain layout: dy arrives plain
    results = []
    for path in ("ref", "kernel"):
        x, b = x0.clone().requires_grad_(True), b0.clone().requires_grad_(True)
        spec, alpha, gain, clamp = ba._resolve(act, None, None, 0.9)
        if path == "ref":
            y = ba.bias_act(x, b, act=act, clamp=0.9, impl="ref")
        else:
            y = ba._bias_act_cuda(x, b, 1, act, alpha, gain, clamp)
        results.append(_r1_like(y, x, b, w))
    tol = 1e-5 if dtype == torch.float32 else 1e-2
    for got, want in zip(results[1], results[0]):
        assert got.dtype == want.dtype and got.shape == want.shape
        torch.testing.assert_close(got.float(), want.float(), rtol=tol, atol=tol)


@pytest.mark.parametrize("up,down,padding", [(2, 1, [4, 3, 4, 3]), (1, 2, [3, 3, 3, 3]), (1, 1, [3, 4, 2, 5])])
def test_separable_filter_rounds_once_in_half_precision(kernels, up, down, padding) -> None:
    """An 8-tap (separable) filter in bf16: the kernel path's two passes keep their intermediate in float32,
    so its result is the reference's, rounded once (rounding in between moved about a third of the outputs
    by one bf16 step)."""
    f = U.setup_filter(list(range(1, 9)))
    assert f.ndim == 1                                        # setup_filter makes long filters separable
    x0 = torch.randn(2, 3, 12, 12, generator=torch.Generator().manual_seed(0)).to(torch.bfloat16)
    outs = []
    for impl in ("ref", "kernel"):
        x = x0.clone().requires_grad_(True)
        if impl == "ref":
            y = U.upfirdn2d(x, f, up=up, down=down, padding=padding, impl="ref")
        else:
            y = U._fused(x, f, U._factors(up, "up"), U._factors(down, "down"), U.as_margins(padding), False, 1.0)
        (gx,) = torch.autograd.grad((y.float() * torch.linspace(-1, 1, y.numel()).reshape(y.shape)).sum(), x)
        outs.append((y, gx))
    for got, want in zip(outs[1], outs[0]):
        assert got.dtype == want.dtype == torch.bfloat16 and got.shape == want.shape
        differ = (got.float() != want.float()).float().mean().item()
        step = (want.float().abs() * 2 ** -7).clamp(min=2 ** -126)
        assert differ < 0.02 and ((got.float() - want.float()).abs() <= step).all(), differ
