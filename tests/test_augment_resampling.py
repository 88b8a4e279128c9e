"""Geometric augmentation resampled as in the ADA paper (App. B.2): reflection padding, 2x upsampling with the
sym6 low-pass filter, bilinear sampling at 2x, low-pass and 2x downsampling. The identity returns the input,
a quarter turn matches torch.rot90, a fractional shift and its inverse give the input back (band-limited
images), whole-pixel shifts agree with pixel copying, and gradients reach the input in every precision."""
import math

import pytest
import torch

from training.data.augment import AugmentPipe, _blit, _filtered, _rotation, _translate, _upsampling_shift, SYM6

R = 32
BORDER = 4          # pixels near the edges, where reflection padding makes a rotated image differ from rot90's


def band_limited(B=8, C=3, size=R, fmax=1 / 8, seed=0, dtype=torch.float64):
    """Random images whose spectrum is zero above `fmax` cycles per pixel along each axis (Nyquist is 1/2);
    scaled to peak 1 so that the tolerances below are fractions of the image's range."""
    g = torch.Generator().manual_seed(seed)
    X = torch.fft.fft2(torch.randn([B, C, size, size], generator=g, dtype=torch.float64))
    f = torch.fft.fftfreq(size, dtype=torch.float64).abs()
    x = torch.fft.ifft2(X * ((f[:, None] <= fmax) & (f[None, :] <= fmax))).real
    return (x / x.abs().amax((1, 2, 3), keepdim=True)).to(dtype)


def maps(B, M):
    return M.expand(B, 3, 3).to(torch.float64)


def shift(B, tx, ty):
    """A translation by (tx, ty) pixels as a map in grid_sample's [-1, 1] coordinates."""
    return _translate(torch.full([B], tx * 2 / R, dtype=torch.float64), torch.full([B], ty * 2 / R, dtype=torch.float64))


def inner(x):
    return x[..., BORDER:-BORDER, BORDER:-BORDER]


@pytest.mark.parametrize("dtype, tol", [(torch.float64, 2e-6), (torch.float32, 1e-5)])
def test_identity_map_returns_the_input(dtype, tol):
    """sym6 is an orthogonal wavelet: its low-pass filter's autocorrelation vanishes at every non-zero even lag,
    so upsampling with it and downsampling with it reversed is the identity, for any image (not just
    band-limited ones). What is left is round-off: the taps are stored in float32 (relative error ~6e-8, times
    the ~2 sum of |taps| per axis and pass) plus float32 arithmetic for float32 images. A filter that did not
    reconstruct (e.g. the same taps not reversed for the downsampling) misses by order 1."""
    x = torch.rand([4, 3, R, R], generator=torch.Generator().manual_seed(1), dtype=dtype) * 2 - 1
    y = _filtered(x, maps(4, torch.eye(3)).to(dtype))
    assert y.dtype == dtype and (y - x).abs().max() < tol


def test_whole_pixel_shift_equals_copying_pixels():
    """A whole-pixel shift commutes with the filters: the filtered path gives the blit path's pixel copies
    (both pad by reflection without repeating the edge pixel), up to the same round-off as the identity."""
    x = torch.rand([4, 3, R, R], generator=torch.Generator().manual_seed(2), dtype=torch.float64) * 2 - 1
    M = shift(4, 3, -2)
    assert (_filtered(x, M) - _blit(x, M)).abs().max() < 2e-6
    assert torch.equal(_blit(x, M)[..., 2:, :-3], x[..., :-2, 3:])        # output pixel p is input pixel p + (3, -2)


@pytest.mark.parametrize("fmax, tol", [(1 / 16, 0.006), (1 / 8, 0.025)])
def test_quarter_turn_matches_rot90(fmax, tol):
    """A rotation by 90 degrees through the filtered path equals torch.rot90 away from the borders.

    Not exact: the sample points land off the 2x pixel grid (the sym6 shift correction moves them), so bilinear
    interpolation at 2x and sym6's slightly non-linear phase leave an error that grows with frequency. Measured
    (max over the interior, images of peak 1): 0.0035 for fmax = 1/16, 0.0158 for fmax = 1/8 cycles/pixel.
    Without correcting sym6's 0.4-pixel shift (at 2x) the rotation turns about the wrong centre and misses by
    about 0.13 and 0.24, far outside these tolerances."""
    x = band_limited(fmax=fmax)
    for angle, k in ((math.pi / 2, 1), (-math.pi / 2, -1)):
        y = _filtered(x, maps(8, _rotation(torch.tensor([angle], dtype=torch.float64))))
        err = inner(y - torch.rot90(x, k, (2, 3))).abs().max()
        assert err < tol, f"rotation by {angle:.2f}: {err:.4f}"
    assert _upsampling_shift(SYM6) == pytest.approx(0.4017, abs=1e-3)


@pytest.mark.parametrize("fmax, tol", [(1 / 16, 0.015), (1 / 8, 0.05)])
def test_fractional_shift_and_back_recovers_the_image(fmax, tol):
    """Shift by (0.37, -0.185) pixels, then by the opposite: a band-limited image comes back.

    The error is that of two bilinear interpolations at 2x (the filters themselves reconstruct exactly).
    Measured (max over the interior): 0.0115 for fmax = 1/16, 0.0323 for fmax = 1/8; bilinear resampling at
    1x, as before, gives 0.0413 and 0.1134 on the same images."""
    x = band_limited(fmax=fmax)
    y = _filtered(_filtered(x, shift(8, 0.37, -0.185)), shift(8, -0.37, 0.185))
    assert inner(y - x).abs().max() < tol
    assert inner(_filtered(x, shift(8, 0.37, -0.185)) - x).abs().max() > 0.1 * fmax   # it did move


def test_gradients_reach_the_input(one_thread):
    """Augmentation sits on D's input for fakes: the filtered resampling is differentiable w.r.t. the images
    (gradcheck: the backward pass is the exact adjoint), and a generator-like parameter upstream of the
    geometric transforms receives a gradient."""
    x = band_limited(B=2, C=1, size=8).requires_grad_(True)
    M = maps(2, _rotation(torch.tensor([0.3], dtype=torch.float64)) @ shift(1, 0.4, -0.2) @ torch.diag(
        torch.tensor([1.2, 0.9, 1.0], dtype=torch.float64)))
    assert torch.autograd.gradcheck(lambda t: _filtered(t, M), (x,), eps=1e-6, atol=1e-6, fast_mode=True)

    torch.manual_seed(0)
    scale = torch.ones([], requires_grad=True)
    fake = band_limited(B=16, dtype=torch.float32) * scale
    aug = AugmentPipe("geom", p=1)(fake)
    (aug * torch.randn_like(aug)).sum().backward()
    assert scale.grad is not None and scale.grad.abs() > 0 and torch.isfinite(scale.grad)


def test_bfloat16_images_keep_their_dtype_and_precision():
    """bf16 images (G's output under autocast) are resampled in float32 and returned as bf16: the result is the
    float32 one rounded to bf16 (relative step 2^-8), not one whose sample positions were rounded to bf16."""
    x = band_limited(B=16, dtype=torch.float32)
    torch.manual_seed(3)
    y32 = AugmentPipe("geom", p=1)(x.bfloat16().float())
    torch.manual_seed(3)
    y16 = AugmentPipe("geom", p=1)(x.bfloat16())
    assert y16.dtype == torch.bfloat16 and (y16.float() - y32).abs().max() < 2 ** -8 * y32.abs().max() * 1.01


if __name__ == "__main__":
    # The figures quoted above: PYTHONPATH=. python tests/test_augment_resampling.py
    import torch.nn.functional as Fn

    def bilinear_1x(x, M):          # the resampling used before: bilinear at 1x, reflection at the edges
        grid = Fn.affine_grid(M[:, :2], list(x.shape), align_corners=False)
        return Fn.grid_sample(x, grid, mode="bilinear", padding_mode="reflection", align_corners=False)

    quarter = maps(8, _rotation(torch.tensor([math.pi / 2], dtype=torch.float64)))
    there, back = shift(8, 0.37, -0.185), shift(8, -0.37, 0.185)
    for fmax in (1 / 16, 1 / 8, 1 / 4):
        x = band_limited(fmax=fmax)
        rot = inner(_filtered(x, quarter) - torch.rot90(x, 1, (2, 3))).abs().max()
        trip = inner(_filtered(_filtered(x, there), back) - x).abs().max()
        old = inner(bilinear_1x(bilinear_1x(x, there), back) - x).abs().max()
        print(f"fmax {fmax:.4f}: quarter turn vs rot90 {rot:.4f}; shift and back {trip:.4f} (bilinear at 1x: {old:.4f})")
