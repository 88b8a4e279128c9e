"""dnnlib/ops/grid_sample.py: torch's grid_sample values, with gradients of every order in the image.

PyTorch before 2.13 cannot differentiate grid_sample twice ("derivative for aten::grid_sampler_2d_backward
is not implemented"), which R1 through the augmentation needs; these tests pass on such versions too.
"""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from dnnlib.ops.grid_sample import grid_sample

PADDINGS = ["zeros", "border", "reflection"]


def _grid(b=2, h=5, w=6, dtype=torch.float64, seed=0):
    g = torch.Generator().manual_seed(seed)
    theta = torch.eye(2, 3, dtype=dtype).repeat(b, 1, 1) + 0.3 * torch.randn(b, 2, 3, generator=g, dtype=dtype)
    return F.affine_grid(theta, [b, 3, h, w], align_corners=False)


@pytest.mark.parametrize("padding", PADDINGS)
@pytest.mark.parametrize("align", [False, True])
def test_values_and_first_order_are_torchs(padding, align):
    x = torch.randn(2, 3, 7, 8, requires_grad=True)
    grid = _grid(dtype=torch.float32)
    ours = grid_sample(x, grid, padding_mode=padding, align_corners=align)
    theirs = F.grid_sample(x, grid, padding_mode=padding, align_corners=align)
    assert torch.equal(ours, theirs)
    dy = torch.randn_like(ours)
    (gx_ours,) = torch.autograd.grad(ours, x, dy)
    (gx_theirs,) = torch.autograd.grad(theirs, x, dy)
    assert torch.equal(gx_ours, gx_theirs)


@pytest.mark.parametrize("mode", ["bilinear", "nearest", "bicubic"])
@pytest.mark.parametrize("padding", PADDINGS)
def test_gradients_of_first_and_second_order_are_exact(mode, padding):
    x = torch.randn(2, 3, 7, 8, dtype=torch.float64, requires_grad=True)
    grid = _grid()
    fn = lambda t: grid_sample(t, grid, mode=mode, padding_mode=padding)
    assert torch.autograd.gradcheck(fn, (x,))
    assert torch.autograd.gradgradcheck(fn, (x,))


def test_r1_style_penalty_differentiates_to_the_weights():
    """|d D(aug(x)) / dx|^2 differentiated with respect to D's weights: the R1 pattern that raised on torch 2.11."""
    torch.manual_seed(0)
    conv = torch.nn.Conv2d(3, 4, 3, padding=1).double()
    x = torch.randn(2, 3, 7, 8, dtype=torch.float64, requires_grad=True)
    grid = _grid()

    def penalty(sample):
        out = torch.nn.functional.leaky_relu(conv(sample(x, grid)), 0.2).square().sum()
        (gx,) = torch.autograd.grad(out, x, create_graph=True)
        return torch.autograd.grad(gx.square().sum(), conv.weight)[0]

    ours = penalty(lambda t, g: grid_sample(t, g, padding_mode="reflection"))
    assert ours.abs().sum() > 0
    # The same penalty with the image's resampling written as an explicit matrix (A from the unit basis).
    n = x[0].numel()
    basis = torch.eye(n, dtype=torch.float64).reshape(n, *x.shape[1:])
    A = torch.stack([F.grid_sample(basis, grid[i:i + 1].expand(n, -1, -1, -1), padding_mode="reflection",
                                   align_corners=False).reshape(n, -1).T for i in range(x.shape[0])])  # [B, out, in]
    dense = lambda t, g: (A @ t.reshape(t.shape[0], -1, 1)).reshape(t.shape[0], 3, *g.shape[1:3])
    assert torch.allclose(ours, penalty(dense), rtol=1e-10, atol=1e-12)


def test_a_grid_that_needs_gradients_gets_them():
    x = torch.randn(1, 2, 5, 5)
    grid = _grid(b=1, dtype=torch.float32).requires_grad_()
    (gg,) = torch.autograd.grad(grid_sample(x, grid).sum(), grid)
    (ref,) = torch.autograd.grad(F.grid_sample(x, grid, align_corners=False).sum(), grid)
    assert torch.equal(gg, ref)


def test_unknown_modes_are_refused():
    with pytest.raises(ValueError, match="unknown mode"):
        grid_sample(torch.zeros(1, 1, 2, 2), torch.zeros(1, 2, 2, 2), mode="area")
