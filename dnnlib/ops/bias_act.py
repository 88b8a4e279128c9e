"""Fused bias + activation + gain + clamp (StyleGAN2-ADA `bias_act` API).

y = clamp(act(x + b) * gain, -clamp, clamp), with `b` broadcast along dimension `dim`.
`impl='ref'` is the plain-PyTorch specification; `impl='cuda'` is a fused elementwise kernel whose
backward is the same kernel in "gradient" modes, so first and second order gradients both work.

Dtypes (both paths): `b` is rounded to x's dtype, the formula is evaluated in float32 (float64 for
float64 inputs) and the result is rounded once to x's dtype; autocast does not change this.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from . import custom_ops


@dataclass(frozen=True)
class ActSpec:
    """One activation: its PyTorch formula, defaults and how the kernel handles it."""

    func: Callable[[torch.Tensor, float], torch.Tensor]
    def_alpha: float
    def_gain: float
    kernel_id: int  # activation selector understood by bias_act.cu
    has_2nd_grad: bool  # False when the second derivative is zero almost everywhere


# Default gains follow StyleGAN2-ADA: sqrt(2) for the ReLU family (and swish) keeps the
# signal variance of He-initialised layers.
activation_funcs: dict[str, ActSpec] = {
    "linear": ActSpec(lambda x, a: x, 0.0, 1.0, 1, False),
    "relu": ActSpec(lambda x, a: F.relu(x), 0.0, float(np.sqrt(2)), 2, False),
    "lrelu": ActSpec(lambda x, a: F.leaky_relu(x, a), 0.2, float(np.sqrt(2)), 3, False),
    "tanh": ActSpec(lambda x, a: torch.tanh(x), 0.0, 1.0, 4, True),
    "sigmoid": ActSpec(lambda x, a: torch.sigmoid(x), 0.0, 1.0, 5, True),
    "elu": ActSpec(lambda x, a: F.elu(x), 0.0, 1.0, 6, True),
    "selu": ActSpec(lambda x, a: F.selu(x), 0.0, 1.0, 7, True),
    "softplus": ActSpec(lambda x, a: F.softplus(x), 0.0, 1.0, 8, True),
    "swish": ActSpec(lambda x, a: torch.sigmoid(x) * x, 0.0, float(np.sqrt(2)), 9, True),
}

_IMPLS = ("auto", "cuda", "ref")


def bias_act(
    x: torch.Tensor,
    b: torch.Tensor | None = None,
    dim: int = 1,
    act: str = "linear",
    alpha: float | None = None,
    gain: float | None = None,
    clamp: float | None = None,
    impl: str = "auto",
) -> torch.Tensor:
    """Add bias `b` along `dim`, apply `act`, multiply by `gain`, clamp to [-clamp, clamp].

    alpha/gain default per activation (see `activation_funcs`); clamp=None disables clamping.
    Returns a tensor of x's shape and dtype.
    """
    if not isinstance(x, torch.Tensor):
        raise TypeError("x must be a torch.Tensor")
    if impl not in _IMPLS:
        raise ValueError(f"impl must be one of {_IMPLS}, got {impl!r}")
    spec, alpha_f, gain_f, clamp_f = _resolve(act, alpha, gain, clamp)
    if b is not None:
        if not isinstance(b, torch.Tensor) or b.ndim != 1:
            raise ValueError("b must be a 1-D tensor or None")
        if not -x.ndim <= dim < x.ndim:
            raise ValueError(f"dim={dim} out of range for a {x.ndim}-D tensor")
        dim = dim % x.ndim
        if b.shape[0] != x.shape[dim]:
            raise ValueError(f"b has {b.shape[0]} elements but x.shape[{dim}] is {x.shape[dim]}")

    if custom_ops.use_kernel("bias_act", x, impl, _plugin):
        return _bias_act_cuda(x, b, dim, act, alpha_f, gain_f, clamp_f)
    return _bias_act_ref(x, b, dim, spec, alpha_f, gain_f, clamp_f)


def _resolve(act: str, alpha: float | None, gain: float | None, clamp: float | None) -> tuple[ActSpec, float, float, float]:
    """Fill in per-activation defaults; clamp < 0 encodes 'no clamping'."""
    if act not in activation_funcs:
        raise ValueError(f"unknown activation {act!r}; expected one of {sorted(activation_funcs)}")
    if clamp is not None and clamp < 0:
        raise ValueError(f"clamp must be >= 0 or None, got {clamp}")
    spec = activation_funcs[act]
    alpha_f = float(alpha if alpha is not None else spec.def_alpha)
    gain_f = float(gain if gain is not None else spec.def_gain)
    clamp_f = float(clamp if clamp is not None else -1)
    return spec, alpha_f, gain_f, clamp_f


# ---------------------------------------------------------------------------------------------
# Reference implementation.


def _bias_act_ref(
    x: torch.Tensor, b: torch.Tensor | None, dim: int, spec: ActSpec, alpha: float, gain: float, clamp: float
) -> torch.Tensor:
    """Plain-PyTorch bias_act; autograd supplies gradients of every order.

    Rounds exactly where the kernel does: the bias to x's dtype, the result once at the end.
    """
    out_dtype = x.dtype
    x = x.to(torch.promote_types(out_dtype, torch.float32))       # the kernel's opmath type
    if b is not None:
        shape = [1] * x.ndim
        shape[dim] = -1
        x = x + b.to(out_dtype).reshape(shape)
    x = spec.func(x, alpha)
    if gain != 1:
        x = x * gain
    if clamp >= 0:
        x = x.clamp(-clamp, clamp)
    return x.to(out_dtype)


# ---------------------------------------------------------------------------------------------
# CUDA implementation.


def _plugin() -> Any:
    return custom_ops.get_plugin("bias_act_plugin", sources=["bias_act.cpp", "bias_act.cu"])


# Kernel modes (see bias_act.cu): forward value, first derivative times dy, second-derivative term.
_MODE_FWD, _MODE_GRAD, _MODE_GRAD2 = 0, 1, 2


def _memory_format(t: torch.Tensor) -> torch.memory_format:
    # Keep channels-last activations channels-last; the kernel finds the bias index through strides.
    if t.ndim == 4 and t.is_contiguous(memory_format=torch.channels_last) and not t.is_contiguous():
        return torch.channels_last
    return torch.contiguous_format


def _launch(
    mode: int,
    a: torch.Tensor,
    b: torch.Tensor | None,
    xref: torch.Tensor,
    aux: torch.Tensor,
    dim: int,
    act: str,
    alpha: float,
    gain: float,
    clamp: float,
) -> torch.Tensor:
    """Run the kernel; all elementwise operands share xref's layout so one flat index addresses them."""
    fmt = _memory_format(xref)
    dense: dict[int, torch.Tensor] = {}          # one copy per distinct tensor (forward passes x three times)
    a, xref, aux = (dense.setdefault(id(t), t.contiguous(memory_format=fmt)) for t in (a, xref, aux))
    bb = b.contiguous() if b is not None else a.new_empty([0])
    kernel_id = activation_funcs[act].kernel_id
    return _plugin().bias_act(a, bb, xref, aux, mode, dim, kernel_id, alpha, gain, clamp)


def _reduce_to_bias(g: torch.Tensor, dim: int) -> torch.Tensor:
    return g.sum([i for i in range(g.ndim) if i != dim])


class _BiasActCuda(torch.autograd.Function):
    """y = kernel(x, b). Saves the inputs themselves (not copies) so double backward stays connected."""

    @staticmethod
    def forward(ctx, x, b, dim, act, alpha, gain, clamp):  # type: ignore[override]
        y = _launch(_MODE_FWD, x, b, x, x, dim, act, alpha, gain, clamp)
        ctx.save_for_backward(x, b)
        ctx.params = (dim, act, alpha, gain, clamp)
        return y

    @staticmethod
    def backward(ctx, dy):  # type: ignore[override]
        x, b = ctx.saved_tensors
        dim, act, alpha, gain, clamp = ctx.params
        dx = db = None
        if ctx.needs_input_grad[0] or ctx.needs_input_grad[1]:
            dx = _BiasActGradCuda.apply(dy, x, b, dim, act, alpha, gain, clamp)
        if ctx.needs_input_grad[1]:
            db = _reduce_to_bias(dx, dim)
        return dx, db, None, None, None, None, None


class _BiasActGradCuda(torch.autograd.Function):
    """dx = dy * g'(x + b) with g(z) = clamp(act(z) * gain); differentiable once more."""

    @staticmethod
    def forward(ctx, dy, x, b, dim, act, alpha, gain, clamp):  # type: ignore[override]
        dx = _launch(_MODE_GRAD, dy, b, x, x, dim, act, alpha, gain, clamp)
        ctx.save_for_backward(dy, x, b)
        ctx.params = (dim, act, alpha, gain, clamp)
        return dx

    @staticmethod
    def backward(ctx, ddx):  # type: ignore[override]
        dy, x, b = ctx.saved_tensors
        dim, act, alpha, gain, clamp = ctx.params
        d_dy = d_x = d_b = None
        # dx is linear in dy, so its dy-gradient is the same gradient op applied to ddx.
        if ctx.needs_input_grad[0]:
            d_dy = _BiasActGradCuda.apply(ddx, x, b, dim, act, alpha, gain, clamp)
        # The x- and b-gradients need act''; it vanishes (a.e.) for piecewise-linear activations,
        # and so does the derivative of the clamp mask.
        if activation_funcs[act].has_2nd_grad and (ctx.needs_input_grad[1] or ctx.needs_input_grad[2]):
            d_x = _launch(_MODE_GRAD2, ddx, b, x, dy, dim, act, alpha, gain, clamp)
            if ctx.needs_input_grad[2]:
                d_b = _reduce_to_bias(d_x, dim)
        return d_dy, d_x, d_b, None, None, None, None, None


def _bias_act_cuda(
    x: torch.Tensor, b: torch.Tensor | None, dim: int, act: str, alpha: float, gain: float, clamp: float
) -> torch.Tensor:
    if b is not None:
        b = b.to(device=x.device, dtype=x.dtype)  # differentiable cast: gradients still reach the caller's b
    return _BiasActCuda.apply(x, b, dim, act, alpha, gain, clamp)


__all__ = ["ActSpec", "activation_funcs", "bias_act"]
