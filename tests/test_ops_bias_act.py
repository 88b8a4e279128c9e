"""bias_act reference path vs torch's own activations, default gains, gradients and argument errors."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from dnnlib.ops import bias_act as ba

# Independent formulas for each activation (alpha only matters for lrelu).
TORCH_ACTS = {
    "linear": lambda x, a: x,
    "relu": lambda x, a: torch.clamp_min(x, 0),
    "lrelu": lambda x, a: torch.where(x > 0, x, x * a),
    "tanh": lambda x, a: torch.tanh(x),
    "sigmoid": lambda x, a: 1 / (1 + torch.exp(-x)),
    "elu": lambda x, a: F.elu(x),
    "selu": lambda x, a: F.selu(x),
    "softplus": lambda x, a: torch.log1p(torch.exp(x)),
    "swish": lambda x, a: F.silu(x),
}
SQRT2 = math.sqrt(2)
DEFAULT_GAIN = {"relu": SQRT2, "lrelu": SQRT2, "swish": SQRT2}


def test_every_activation_is_covered() -> None:
    assert set(ba.activation_funcs) == set(TORCH_ACTS)
    for name, spec in ba.activation_funcs.items():
        assert spec.def_gain == pytest.approx(DEFAULT_GAIN.get(name, 1.0))
    assert ba.activation_funcs["lrelu"].def_alpha == pytest.approx(0.2)


@pytest.mark.parametrize("act", sorted(TORCH_ACTS))
@pytest.mark.parametrize(
    "kw",
    [
        {},
        {"gain": 1.0},
        {"gain": 0.7, "alpha": 0.05},
        {"gain": 2.0, "clamp": 1.3},
        {"clamp": 0.0},
    ],
    ids=lambda kw: ",".join(f"{k}={v}" for k, v in kw.items()) or "defaults",
)
def test_matches_torch_activation(act: str, kw: dict) -> None:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(3, 5, 4, 2, generator=g, dtype=torch.float64) * 3
    b = torch.randn(5, generator=g, dtype=torch.float64)
    gain = kw.get("gain", DEFAULT_GAIN.get(act, 1.0))
    alpha = kw.get("alpha", 0.2)
    want = TORCH_ACTS[act](x + b.reshape(1, -1, 1, 1), alpha) * gain
    if "clamp" in kw:
        want = want.clamp(-kw["clamp"], kw["clamp"])
    got = ba.bias_act(x, b, act=act, impl="ref", **kw)
    torch.testing.assert_close(got, want)
    # impl='auto' on CPU is the reference path.
    torch.testing.assert_close(ba.bias_act(x, b, act=act, **kw), got, rtol=0, atol=0)


@pytest.mark.parametrize("dim", [0, 1, 2, -1])
def test_bias_dimension(dim: int) -> None:
    x = torch.randn(2, 3, 4)
    b = torch.randn(x.shape[dim])
    shape = [1, 1, 1]
    shape[dim] = -1
    want = F.leaky_relu(x + b.reshape(shape), 0.2) * SQRT2
    torch.testing.assert_close(ba.bias_act(x, b, dim=dim, act="lrelu"), want)


def test_no_bias_and_2d_input() -> None:
    x = torch.randn(4, 7)
    torch.testing.assert_close(ba.bias_act(x), x)  # linear, gain 1: identity
    torch.testing.assert_close(ba.bias_act(x, act="relu", gain=1), F.relu(x))
    b = torch.randn(7)
    torch.testing.assert_close(ba.bias_act(x, b, act="tanh", clamp=0.5), torch.tanh(x + b).clamp(-0.5, 0.5))
    # Without a bias, `dim` is irrelevant (even out of range, as in StyleGAN2-ADA).
    torch.testing.assert_close(ba.bias_act(x, None, dim=5, act="sigmoid"), torch.sigmoid(x))


def test_dtype_and_shape_preserved() -> None:
    for dtype in (torch.float16, torch.float32, torch.float64):
        x = torch.randn(2, 3, 4, 4, dtype=dtype)
        y = ba.bias_act(x, torch.zeros(3, dtype=dtype), act="lrelu", clamp=256)
        assert y.dtype == dtype and y.shape == x.shape


# ---------------------------------------------------------------------------------------------
# Gradients.

def _inputs_away_from_kinks(act: str, clamp: float | None, gain: float, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Small float64 x, b with x + b away from 0 and |y| away from clamp, so finite differences are smooth."""
    for s in range(seed, seed + 200):
        g = torch.Generator().manual_seed(s)
        x = torch.randn(2, 3, 2, 2, generator=g, dtype=torch.float64) * 1.5
        b = torch.randn(3, generator=g, dtype=torch.float64) * 0.5
        z = x + b.reshape(1, -1, 1, 1)
        y = TORCH_ACTS[act](z, 0.2) * gain
        ok = z.abs().min() > 0.05
        if clamp is not None:
            ok = ok and ((y.abs() - clamp).abs().min() > 0.05) and (y.abs() < clamp).any()
        if ok:
            return x, b
    raise AssertionError("no suitable inputs found")


@pytest.mark.parametrize("act", sorted(TORCH_ACTS))
@pytest.mark.parametrize("clamp", [None, 0.6])
def test_gradcheck(act: str, clamp: float | None, one_thread) -> None:
    gain = 1.3
    x, b = _inputs_away_from_kinks(act, clamp, gain, seed=10)
    x.requires_grad_()
    b.requires_grad_()
    fn = lambda x_, b_: ba.bias_act(x_, b_, act=act, gain=gain, clamp=clamp, alpha=0.2, impl="ref")
    assert torch.autograd.gradcheck(fn, (x, b))
    assert torch.autograd.gradgradcheck(fn, (x, b))


def test_r1_style_double_backward(one_thread) -> None:
    # The R1 penalty differentiates a gradient norm; this exercises create_graph through bias_act.
    x = torch.randn(4, 8, dtype=torch.float64, requires_grad=True)
    w = torch.randn(8, 8, dtype=torch.float64, requires_grad=True)
    b = torch.randn(8, dtype=torch.float64, requires_grad=True)
    y = ba.bias_act(x @ w, b, act="swish").sum()
    (gx,) = torch.autograd.grad(y, x, create_graph=True)
    gx.square().sum().backward()
    assert w.grad is not None and b.grad is not None and torch.isfinite(w.grad).all()


# ---------------------------------------------------------------------------------------------
# Errors.


def test_bad_arguments() -> None:
    x = torch.randn(2, 3)
    with pytest.raises(ValueError, match="unknown activation"):
        ba.bias_act(x, act="gelu")
    with pytest.raises(ValueError, match="impl"):
        ba.bias_act(x, impl="triton")
    with pytest.raises(ValueError, match="clamp"):
        ba.bias_act(x, clamp=-1)
    with pytest.raises(ValueError):
        ba.bias_act(x, torch.zeros(4))  # wrong bias length
    with pytest.raises(ValueError):
        ba.bias_act(x, torch.zeros(3, 1))  # bias must be 1-D
    with pytest.raises(ValueError):
        ba.bias_act(x, torch.zeros(3), dim=2)
    with pytest.raises(TypeError):
        ba.bias_act([1.0, 2.0])
    with pytest.raises(RuntimeError, match="CUDA tensor"):
        ba.bias_act(x, impl="cuda")
