"""Adaptive discriminator augmentation: identity at p=0, every transform acts at p=1 and keeps the statistics
the paper says it keeps, gradients flow (twice, for R1), and the ADA heuristic moves p the right way."""
import math

import pytest
import torch

from dnnlib.util import UserError
from training.data.augment import (FILTER_BANDS, FILTER_ENERGY, TRANSFORMS, AdaController, AugmentConfig, AugmentPipe, build, color_transform,
                                   parse_pipe)


def images(B=64, C=3, R=16, seed=0):
    """Smooth random images in [-1, 1] (so that geometric changes are visible but not dominated by noise)."""
    g = torch.Generator().manual_seed(seed)
    x = torch.rand([B, C, R // 4, R // 4], generator=g) * 2 - 1
    return torch.nn.functional.interpolate(x, size=(R, R), mode="bilinear", align_corners=False)


LUMA = torch.full([3], 1 / math.sqrt(3))


def luma(x):
    return torch.einsum("bchw,c->bhw", x, LUMA)


@pytest.mark.parametrize("pipe", ["bgc", "bgcfnc"])
@pytest.mark.parametrize("C", [1, 3])
def test_p0_is_identity(pipe, C):
    x = images(C=C)
    assert torch.equal(AugmentPipe(pipe, p=0)(x), x)


def test_unchosen_images_stay_exact():
    """At 0 < p < 1, images whose coins all say skip come out bit-exact (gated parameters are exact identities)."""
    torch.manual_seed(0)
    x = images(B=256)
    y = AugmentPipe("xflip,brightness,filter", p=0.3)(x)
    same = (y == x).flatten(1).all(1)
    # untouched: no flip drawn (0.7 + 0.3 / 2), no brightness (0.7), none of the 4 filter bands (0.7^4): 0.143
    assert 0.09 < same.float().mean() < 0.2
    assert torch.equal(AugmentPipe("bgcfnc", p=1e-9)(x), x)


@pytest.mark.parametrize("name", TRANSFORMS)
def test_p1_each_transform_changes_images(name):
    torch.manual_seed(1)
    x = images()
    y = AugmentPipe(name, p=1)(x)
    assert y.shape == x.shape and torch.isfinite(y).all()
    changed = ((y - x).abs().flatten(1).amax(1) > 1e-3).float().mean()
    # xflip, rotate90, lumaflip: some draws are the identity (no flip, 0 turns); xint: shift 0 in both axes.
    least = {"xflip": 0.3, "rotate90": 0.6, "lumaflip": 0.3, "xint": 0.8}.get(name, 0.95)
    assert changed >= least, f"{name}: {changed:.2f} of the images changed"


def test_pixel_blitting_moves_pixels_exactly():
    """xflip and rotate90 permute pixels; xint copies pixels (reflected at the border): values, not blends."""
    torch.manual_seed(2)
    x = torch.randint(0, 256, [32, 3, 8, 8]).float() / 127.5 - 1
    for name in ("xflip", "rotate90"):
        y = AugmentPipe(name, p=1)(x)
        assert torch.allclose(y.flatten(2).sort(-1).values, x.flatten(2).sort(-1).values, atol=1e-5)
    y = AugmentPipe("xint", p=1)(x)
    dist = (y.flatten(2)[..., :, None] - x.flatten(2)[..., None, :]).abs().amin(-1)      # to the nearest input value
    assert dist.max() < 1e-5


def test_colour_statistics_unbiased():
    """Paper App. B: brightness is zero-mean, contrast/saturation log-symmetric, hue rotation and saturation keep
    luma; a uniform hue rotation averages the chroma away; luma flip negates luma and keeps chroma."""
    torch.manual_seed(3)
    B = 4096
    x = images(B=B, R=4)
    y = AugmentPipe("brightness", p=1)(x)
    shift = (y - x).mean((1, 2, 3))
    assert abs(shift.mean()) < 4 * 0.2 / math.sqrt(B) and abs(shift.std() - 0.2) < 0.02
    ratio = AugmentPipe("contrast", p=1)(x).flatten(1).std(1) / x.flatten(1).std(1)
    assert abs(ratio.log2().median()) < 0.05 and abs(ratio.log2().std() - 0.5) < 0.05
    for name in ("hue", "saturation"):
        y = AugmentPipe(name, p=1)(x)
        assert torch.allclose(luma(y), luma(x), atol=1e-5), name
    red = torch.zeros([B, 3, 1, 1])
    red[:, 0] = 0.8
    y = AugmentPipe("hue", p=1)(red)
    chroma = y - luma(y)[:, None] * LUMA[None, :, None, None]
    assert chroma.mean(0).abs().max() < 0.03 and chroma.norm(dim=1).std() < 1e-5      # same saturation, mean grey
    y = AugmentPipe("lumaflip", p=1)(x)
    flipped = (luma(y) - luma(x)).abs().flatten(1).amax(1) > 1e-4
    assert 0.4 < flipped.float().mean() < 0.6
    assert torch.allclose(luma(y)[flipped], -luma(x)[flipped], atol=1e-5)
    assert torch.allclose(y - luma(y)[:, None] * LUMA[None, :, None, None],
                          x - luma(x)[:, None] * LUMA[None, :, None, None], atol=1e-5)
    A, b = color_transform(8, {}, "cpu")
    assert torch.equal(A, torch.eye(3).expand(8, 3, 3)) and torch.equal(b, torch.zeros(8, 3))


def test_geometric_statistics():
    """Geometric transforms keep the image mean and energy on average (not per image)."""
    torch.manual_seed(4)
    x = images(B=2048, R=16)
    for name in ("scale", "rotate", "aniso", "xfrac"):
        y = AugmentPipe(name, p=1)(x)
        assert abs(y.mean() - x.mean()) < 0.02, name
        energy = y.square().mean() / x.square().mean()
        assert 0.75 < energy < 1.25, f"{name}: energy ratio {energy:.3f}"


def test_filter_keeps_energy_of_the_assumed_spectrum():
    """Band gains are normalised (paper App. B) so that an image whose energy splits over the 4 bands as
    FILTER_ENERGY keeps its energy exactly, whatever gains were drawn."""
    torch.manual_seed(7)
    R = 32
    X = torch.fft.fft2(torch.randn([64, 3, R, R], dtype=torch.float64))
    f = torch.fft.fftfreq(R, dtype=torch.float64) * 2 * math.pi
    radius = (f[:, None].square() + f[None, :].square()).sqrt().clamp(max=math.pi)
    band = torch.bucketize(radius, torch.tensor(FILTER_BANDS[1:-1], dtype=torch.float64), right=True)
    for i, share in enumerate(FILTER_ENERGY):
        sel = band == i
        X[..., sel] *= (share / X[..., sel].abs().square().sum((1, 2)))[:, None, None].sqrt()
    x = torch.fft.ifft2(X).real
    y = AugmentPipe("filter", p=1)(x)
    ratio = y.square().sum((1, 2, 3)) / x.square().sum((1, 2, 3))
    assert torch.allclose(ratio, torch.ones_like(ratio), atol=0.02) and (y - x).norm() > 0.1 * x.norm()


def test_grey_images_and_shapes():
    torch.manual_seed(5)
    x = images(C=1)
    y = AugmentPipe("bgcfnc", p=1)(x)
    assert y.shape == x.shape and torch.isfinite(y).all() and not torch.equal(x, y)


@pytest.mark.parametrize("pipe", ["bgc", "bgcfnc"])
def test_no_device_reads(pipe):
    """Images on the meta device have no values (reading one raises), yet they augment: every choice
    (which images move, how much padding) comes from parameters drawn on the CPU, so a GPU never stalls."""
    torch.manual_seed(0)
    x = torch.empty([16, 3, 32, 32], device="meta")
    pipe = AugmentPipe(pipe, p=0.7)
    y = pipe(x)
    assert y.device.type == "meta" and y.shape == x.shape
    torch.manual_seed(0)
    assert not torch.equal(pipe(images(B=16, R=32)), images(B=16, R=32))   # the same draws do move CPU images


def test_gradients_flow_first_and_second_order(one_thread):
    """D(aug(x)) gives gradients w.r.t. x (the R1 path) and that gradient's norm differentiates w.r.t. D."""
    x = images(B=4, R=8).double().requires_grad_(True)
    pipe = AugmentPipe("bgcfnc", p=1)

    def aug(t):
        torch.manual_seed(6)                 # the same random draw on every call
        return pipe(t)

    assert torch.autograd.gradcheck(aug, (x,), eps=1e-6, atol=1e-5, fast_mode=True)
    w = torch.randn([3, 8, 8], dtype=torch.float64, requires_grad=True)
    score = (aug(x) * w).square().sum()
    (g,) = torch.autograd.grad(score, x, create_graph=True)
    g.square().sum().backward()
    assert w.grad is not None and w.grad.abs().sum() > 0 and torch.isfinite(w.grad).all()


def test_ada_moves_p_with_overfitting():
    """A D that calls every real 'real' (+1) overfits: p rises by batch*interval/(kimg*1000) per adjustment;
    a D at chance lowers it; p stays in [0, 1]."""
    cfg = AugmentConfig(mode="ada", p=0.0, target=0.6, kimg=1, interval=4)
    pipe, ada = build(cfg)
    for step in range(8):
        ada.observe(torch.ones(16))
        r = ada.step(images_seen=16)
        assert (r is None) == (step % 4 != 3)
    assert r == 1.0 and pipe.p == pytest.approx(2 * 16 * 4 / 1000)
    for _ in range(4 * 100):
        ada.observe(torch.ones(16))
        ada.step(16)
    assert pipe.p == 1.0
    for _ in range(4 * 3):
        ada.observe(torch.tensor([1.0, -1.0]))     # E[sign] = 0 < target
        ada.step(16)
    assert pipe.p == pytest.approx(1 - 3 * 0.064)
    state = ada.state()
    _, again = build(cfg)
    again.load(state)
    assert again.pipe.p == pipe.p and again.steps == ada.steps


def test_fixed_none_and_bad_config():
    pipe, ada = build(AugmentConfig(mode="fixed", p=0.3))
    assert pipe.p == 0.3 and ada is None
    assert build(AugmentConfig(mode="none")) == (None, None)
    assert parse_pipe("bg") == parse_pipe("xflip,rotate90,xint,geom")
    for cfg, msg in ((AugmentConfig(mode="x"), "--augment"), (AugmentConfig(p=1.5), "--augment-p"),
                     (AugmentConfig(target=1), "--ada-target"), (AugmentConfig(kimg=0), "--ada-kimg"),
                     (AugmentConfig(pipe="bgz"), "--augment-pipe")):
        with pytest.raises(UserError, match=msg):
            cfg.validate()
