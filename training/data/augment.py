"""Discriminator augmentation with an adaptive strength (ADA: Karras et al., NeurIPS 2020, "Training
Generative Adversarial Networks with Limited Data").

`AugmentPipe(pipe, p)` transforms a batch of images [B, C, H, W] in [-1, 1]; every image the
discriminator sees goes through it (reals, fakes, and the reals of the R1 penalty, whose gradient is
then taken through it). Each transform is applied to each image independently with probability p
(paper §2.3): since every transform is then skipped with probability 1 - p, the clean distribution
stays identifiable and, for p below about 0.8, the generator does not learn the augmentations.
All operations are differentiable (also twice, for R1).

Pipeline (paper Appendix B), in order (groups and their transforms' names):
  blit    xflip, rotate90 (a multiple of 90 degrees), xint (integer translation up to 1/8 of the size)
  geom    scale (isotropic), rotate, aniso (anisotropic scaling), rotate again, xfrac (fractional translation)
  color   brightness, contrast, lumaflip, hue (rotation about the grey axis), saturation
  filter  gains of 4 frequency bands (optional)
  noise   additive Gaussian noise (optional)
  cutout  a grey square (optional)
The default pipe is "bgc" (blit, geom, color), as in the paper.
`blit` and `geom` are composed into one 3x3 matrix per image and the image is resampled once: by
copying pixels when the map moves whole pixels only (blit), otherwise as in the paper (App. B.2):
reflection padding, 2x upsampling with the sym6 wavelet's low-pass filter, bilinear sampling at 2x,
the same filter reversed and 2x downsampling (see `resample`). Colour transforms are composed into one
affine map of RGB values.

`AdaController` sets p from an overfitting heuristic (paper §3, eq. 1): r_t = E[sign(D(real))] over
the last `interval` steps; p moves by sign(r_t - target) * (images in those steps) / (kimg * 1000), so
that it can go from 0 to 1 in `kimg` thousand images. Its state (p and the running sums) is part of
the training state, so a resumed run continues bitwise.
"""
from __future__ import annotations

import functools
import math
from typing import Optional

import numpy as np
import torch
import torch.nn.functional as Fn

from dnnlib.ops import upfirdn2d
from dnnlib.ops.grid_sample import grid_sample
from dnnlib.precision import full_fp32
from training.data.dataset import to_device
from training.data.augment_config import (GROUPS, MODES, PIPES, TRANSFORMS, AugmentConfig,  # noqa: F401 (API)
                                          config_from, parse_pipe)

# Paper Appendix B: the spread of each random parameter.
SCALE_STD = 0.2          # log2 of isotropic / anisotropic scale
TRANSLATE_INT = 0.125    # max integer translation, fraction of the image size
TRANSLATE_STD = 0.125    # fractional translation, fraction of the image size
BRIGHTNESS_STD = 0.2
CONTRAST_STD = 0.5       # log2
SATURATION_STD = 1.0     # log2
FILTER_STD = 1.0         # log2 of each band's gain
FILTER_BANDS = (0.0, math.pi / 8, math.pi / 4, math.pi / 2, math.pi)     # band edges, radians per pixel
FILTER_ENERGY = (10 / 13, 1 / 13, 1 / 13, 1 / 13)    # expected share of image energy per band (normalises gains)
NOISE_STD = 0.1
CUTOUT_SIZE = 0.5


# ---------------------------------------------------------------------------------------------------
# Random parameters: each drawn per image, and replaced by the identity value where the image's coin
# (probability p) says "skip".

def _gated(value: torch.Tensor, identity: float, p: float) -> torch.Tensor:
    keep = torch.rand(value.shape, device=value.device) < p
    return torch.where(keep, value, torch.full_like(value, identity))


def _rotation(theta: torch.Tensor) -> torch.Tensor:
    c, s, z, o = theta.cos(), theta.sin(), torch.zeros_like(theta), torch.ones_like(theta)
    return torch.stack([c, -s, z, s, c, z, z, z, o], -1).reshape(-1, 3, 3)


def _scale(sx: torch.Tensor, sy: torch.Tensor) -> torch.Tensor:
    z, o = torch.zeros_like(sx), torch.ones_like(sx)
    return torch.stack([sx, z, z, z, sy, z, z, z, o], -1).reshape(-1, 3, 3)


def _translate(tx: torch.Tensor, ty: torch.Tensor) -> torch.Tensor:
    z, o = torch.zeros_like(tx), torch.ones_like(tx)
    return torch.stack([o, z, tx, z, o, ty, z, z, o], -1).reshape(-1, 3, 3)


def geometric_matrix(B: int, size: int, probs: dict[str, float], device) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-image 3x3 maps [B, 3, 3] from output to input coordinates (grid_sample's [-1, 1] square), and a
    mask [B] of the images that drew a `geom` transform (the others are moved by whole pixels, if at all).

    `probs`: transform name -> probability (absent = off). Every distribution here is symmetric, so
    drawing the inverse map directly is the same as drawing the transform and inverting it.
    """
    M = torch.eye(3, device=device).repeat(B, 1, 1)
    rnd = lambda: torch.rand(B, device=device)
    p = lambda name: probs.get(name, 0.0)
    flip = _gated(torch.floor(rnd() * 2), 0, p("xflip"))                                   # 0 or 1
    M = M @ _scale(1 - 2 * flip, torch.ones_like(flip))
    M = M @ _rotation(_gated(torch.floor(rnd() * 4), 0, p("rotate90")) * (math.pi / 2))    # quarter turns
    shift = [_gated(torch.round((rnd() * 2 - 1) * TRANSLATE_INT * size), 0, p("xint")) * (2 / size) for _ in "xy"]
    M = M @ _translate(*shift)                                                              # whole pixels
    # The geom group: gated draws are exact identities, so G == I exactly for the images that drew none.
    G = torch.eye(3, device=device).repeat(B, 1, 1)
    s = _gated(torch.exp2(torch.randn(B, device=device) * SCALE_STD), 1, p("scale"))
    G = G @ _scale(s, s)
    p_rot = 1 - math.sqrt(1 - p("rotate"))      # two rotations: some rotation happens with probability p
    G = G @ _rotation(_gated((rnd() * 2 - 1) * math.pi, 0, p_rot))
    s = _gated(torch.exp2(torch.randn(B, device=device) * SCALE_STD), 1, p("aniso"))
    G = G @ _scale(s, 1 / s)
    G = G @ _rotation(_gated((rnd() * 2 - 1) * math.pi, 0, p_rot))
    shift = [_gated(torch.randn(B, device=device) * TRANSLATE_STD * 2, 0, p("xfrac")) for _ in "xy"]
    G = G @ _translate(*shift)
    return M @ G, (G != torch.eye(3, device=device)).flatten(1).any(1)


def color_transform(B: int, probs: dict[str, float], device) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-image affine colour maps y = A x + b on RGB in [-1, 1]: A [B, 3, 3], b [B, 3]."""
    p = lambda name: probs.get(name, 0.0)
    A = torch.eye(3, device=device).repeat(B, 1, 1)
    b = torch.zeros([B, 3], device=device)
    v = torch.full([3], 1 / math.sqrt(3), device=device)                        # the luma (grey) axis
    vv = torch.outer(v, v)
    eye = torch.eye(3, device=device)

    def then(M: torch.Tensor, t: Optional[torch.Tensor] = None) -> None:
        nonlocal A, b
        A, b = M @ A, (M @ b.unsqueeze(-1)).squeeze(-1) + (0 if t is None else t)

    bright = _gated(torch.randn(B, device=device) * BRIGHTNESS_STD, 0, p("brightness"))
    then(eye.expand(B, 3, 3), bright[:, None].expand(B, 3))
    contrast = _gated(torch.exp2(torch.randn(B, device=device) * CONTRAST_STD), 1, p("contrast"))
    then(eye * contrast[:, None, None])
    flip = _gated(torch.floor(torch.rand(B, device=device) * 2), 0, p("lumaflip"))
    then(eye - 2 * vv * flip[:, None, None])                                    # mirror along the luma axis
    theta = _gated((torch.rand(B, device=device) * 2 - 1) * math.pi, 0, p("hue"))
    cross = torch.tensor([[0.0, -1, 1], [1, 0, -1], [-1, 1, 0]], device=device) / math.sqrt(3)    # v x .
    c, s = theta.cos()[:, None, None], theta.sin()[:, None, None]
    then(c * eye + s * cross + (1 - c) * vv)                                    # Rodrigues: hue rotation about v
    sat = _gated(torch.exp2(torch.randn(B, device=device) * SATURATION_STD), 1, p("saturation"))
    then(eye + (eye - vv) * (sat - 1)[:, None, None])                           # scale the chroma only
    return A, b


# ---------------------------------------------------------------------------------------------------
# Geometric resampling (paper Appendix B.2). Whole-pixel maps (blit) copy pixels. Any other map is
# applied with little aliasing: pad by reflection, upsample 2x with the symlet-6 low-pass filter,
# sample bilinearly at 2x, low-pass with the same filter reversed and keep every second pixel. sym6
# is an orthogonal wavelet, so this down-up pair reconstructs its input exactly (up to float32
# round-off) when the map is the identity or a whole-pixel shift.

SYM6 = (0.015404109327027373, 0.0034907120842174702, -0.11799011114819057, -0.048311742585633,
        0.4910559419267466, 0.787641141030194, 0.3379294217276218, -0.07263752278646252,
        -0.021060292512300564, 0.04472490177066578, 0.0017677118642428036, -0.007800708325034148)


def _reflect(i: torch.Tensor, n: int) -> torch.Tensor:
    """Indices mirrored into [0, n) about the edge pixels (F.pad's 'reflect')."""
    if n == 1:
        return torch.zeros_like(i)
    i = torch.remainder(i, 2 * n - 2)
    return torch.where(i >= n, 2 * n - 2 - i, i)


def _pixel_map(M: torch.Tensor, size: int) -> torch.Tensor:
    """grid_sample's [-1, 1] coordinates -> pixel coordinates centred on the image: M scaled by size / 2."""
    P = torch.diag(torch.tensor([size / 2, size / 2, 1.0], device=M.device, dtype=M.dtype))
    return P @ M @ torch.linalg.inv(P)


def _blit(x: torch.Tensor, M: torch.Tensor) -> torch.Tensor:
    """Whole-pixel maps (flips, quarter turns, integer shifts): each output pixel copies one input pixel."""
    B, C, H, W = x.shape
    Mp = to_device(_pixel_map(M.double(), H), x.device, x.dtype)              # built on the CPU (M lives there)
    ar = lambda n: torch.arange(n, device=x.device, dtype=x.dtype) - (n - 1) / 2
    ys, xs = torch.meshgrid(ar(H), ar(W), indexing="ij")
    out = torch.stack([xs, ys, torch.ones_like(xs)]).reshape(3, -1)                         # [3, H*W]
    src = Mp @ out                                                                            # [B, 3, H*W]
    sx = _reflect(torch.round(src[:, 0] + (W - 1) / 2).long(), W)
    sy = _reflect(torch.round(src[:, 1] + (H - 1) / 2).long(), H)
    index = (sy * W + sx)[:, None].expand(B, C, H * W)
    return x.flatten(2).gather(2, index).reshape(B, C, H, W)


@functools.lru_cache(maxsize=None)
def _upsampling_shift(taps: tuple[float, ...]) -> float:
    """How far (in 2x pixels) upsample2d with the filter `taps` moves the image's content towards the origin.

    sym6 is not symmetric: its centre of mass sits 0.4 taps off the middle of its support, so the
    upsampled image is shifted by that much (the reversed filter of the downsampling undoes it). Shifts
    commute with translations but not with rotations and scalings, so the sampling map is conjugated by it.
    """
    n = 8
    delta = torch.zeros([1, 1, 1, n])
    delta[..., n // 2] = 1
    row = upfirdn2d.upsample2d(delta, upfirdn2d.setup_filter(list(taps)), up=2, impl="ref").sum((0, 1, 2))  # [2n]
    centroid = float((row * torch.arange(2 * n)).sum() / row.sum())      # CPU data: no device read
    return (2 * (n // 2) + 0.5) - centroid


def _reflect_margins(Mp: torch.Tensor, size: int, reach: int) -> tuple[list[int], list[int]]:
    """Reflection padding (x, y) before and after the image that holds every input point the maps Mp
    (centred pixels) take the output to, plus `reach` pixels; at most size - 1 (F.pad's limit)."""
    half = size / 2 + reach
    corners = torch.tensor([[-half, -half], [half, -half], [half, half], [-half, half]]).to(Mp)     # [4, 2]
    points = Mp[:, :2, :2] @ corners.T + Mp[:, :2, 2:]                                              # [B, 2, 4]
    margin = lambda extent: (extent - size / 2 + reach).ceil().clamp(0, size - 1).long()
    before = margin(-points.amin((0, 2))).tolist()                        # CPU data: no device read
    return before, margin(points.amax((0, 2))).tolist()                   # CPU data: no device read


def _filtered(x: torch.Tensor, M: torch.Tensor) -> torch.Tensor:
    """Apply the maps M [B, 3, 3] (output -> input, [-1, 1] coordinates; on the CPU, so that the padding
    they need is known without a device read) by 2x-oversampled resampling."""
    B, C, H, W = x.shape
    f = to_device(upfirdn2d.setup_filter(list(SYM6)), x.device)
    crop = f.shape[0] // 4                    # 1x pixels at each border that the 2x filtering spoils: cropped
    before, after = _reflect_margins(_pixel_map(M, H), H, reach=crop + 1)
    x = Fn.pad(x, [before[0], after[0], before[1], after[1]], mode="reflect")
    in_hw, out_hw = (2 * x.shape[2], 2 * x.shape[3]), (2 * (H + 2 * crop), 2 * (W + 2 * crop))
    # Filtering is per channel: one image of B * C channels is the same, and CPU convolutions run faster so.
    x = upfirdn2d.upsample2d(x.reshape(1, B * C, *x.shape[2:]), f, up=2).reshape(B, C, *in_hw)

    # The map in the 2x images' centred pixel coordinates, conjugated by the filter's shift and moved to
    # the padded image's centre, then from and to grid_sample's [-1, 1] coordinates.
    T = lambda tx, ty: torch.tensor([[1.0, 0, tx], [0, 1, ty], [0, 0, 1]]).to(M)
    s = _upsampling_shift(SYM6)
    A = T(before[0] - after[0], before[1] - after[1]) @ T(-s, -s) @ _pixel_map(M, 2 * H) @ T(s, s)
    to_unit = lambda hw: torch.diag(torch.tensor([2 / hw[1], 2 / hw[0], 1.0])).to(M)
    theta = to_unit(in_hw) @ A @ torch.linalg.inv(to_unit(out_hw))
    grid = Fn.affine_grid(to_device(theta[:, :2], x.device, x.dtype), [B, C, *out_hw], align_corners=False)
    x = grid_sample(x, grid, mode="bilinear", padding_mode="reflection", align_corners=False)  # 2nd order: R1
    x = upfirdn2d.downsample2d(x.reshape(1, B * C, *out_hw), f, down=2, padding=-2 * crop, flip_filter=True)
    return x.reshape(B, C, H, W)


def resample(x: torch.Tensor, M: torch.Tensor, general: torch.Tensor) -> torch.Tensor:
    """Move the images [B, C, H, W] by the maps M [B, 3, 3] of geometric_matrix(); `general` [B] marks the
    maps that are not whole-pixel moves. M and `general` live on the CPU (AugmentPipe draws them there):
    which images move, and how much padding they need, is then known without reading the device.
    Images whose map is the identity stay bit-exact. Sampling positions need more than bf16's 8 bits,
    so half-precision images are resampled in float32."""
    M, general = M.cpu(), general.cpu()
    moved = (M != torch.eye(3)).flatten(1).any(1)
    out = x
    for path, chosen in ((_blit, moved & ~general), (_filtered, general)):
        idx = chosen.nonzero()[:, 0]                                  # CPU: no device read
        if len(idx):
            at = to_device(idx, x.device)
            part = x[at].to(torch.promote_types(x.dtype, torch.float32))
            out = out.index_copy(0, at, path(part, M[idx]).to(x.dtype))
    return out


class AugmentPipe(torch.nn.Module):
    """Applies the chosen transforms, each with probability `p` (an attribute the caller may change)."""

    def __init__(self, pipe: str = "bgc", p: float = 0.0):
        super().__init__()
        self.transforms = parse_pipe(pipe)
        self.p = float(p)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        B, C, H, W = images.shape
        assert H == W, f"augmentation expects square images, got {H}x{W}"
        if self.p <= 0:
            return images
        with full_fp32():       # TF32 would jitter the sampling grid (affine_grid's bmm) and the colour matrix
            return self._apply(images)

    def _apply(self, images: torch.Tensor) -> torch.Tensor:
        B, C, H, W = images.shape
        probs = {name: self.p for name in self.transforms}
        on = lambda group: bool(self.transforms & set(GROUPS[group]))
        x = images
        # Every random parameter is drawn on the CPU (a few numbers per image) and sent to the images'
        # device: choosing images and sizing buffers from them never waits for the GPU.
        if on("blit") or on("geom"):
            x = resample(x, *geometric_matrix(B, H, probs, "cpu"))
        if on("color"):
            x = self._color(x, *color_transform(B, probs, "cpu"))
        if on("filter"):
            x = self._filter(x, self.p)
        if on("noise"):
            sigma = to_device(_gated(torch.randn(B).abs() * NOISE_STD, 0, self.p), x.device)
            x = x + torch.randn_like(x) * sigma[:, None, None, None]
        if on("cutout"):
            x = self._cutout(x, self.p)
        return x

    @staticmethod
    def _color(x: torch.Tensor, A: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        C = x.shape[1]
        rgb = x if C == 3 else x.mean(1, keepdim=True).expand(-1, 3, -1, -1)    # grey: transform (g, g, g)
        A, b = to_device(A, x.device, x.dtype), to_device(b, x.device, x.dtype)
        out = torch.einsum("bij,bjhw->bihw", A, rgb) + b[:, :, None, None]
        return out if C == 3 else out.mean(1, keepdim=True)

    @staticmethod
    def _filter(x: torch.Tensor, p: float) -> torch.Tensor:
        """Random gains of 4 frequency bands, normalised so that the expected energy is kept (paper App. B)."""
        B, _, H, W = x.shape
        gains = _gated(torch.exp2(torch.randn([B, 4]) * FILTER_STD), 1, p)            # CPU draws
        moved = (gains != 1).any(1)
        if not moved.any():                                             # CPU data: no device read
            return x
        gains = gains / (gains.square() * torch.tensor(FILTER_ENERGY)).sum(1, keepdim=True).sqrt()
        gains, moved = to_device(gains, x.device), to_device(moved, x.device)
        fy = torch.fft.fftfreq(H, device=x.device)[:, None] * 2 * math.pi
        fx = torch.fft.rfftfreq(W, device=x.device)[None, :] * 2 * math.pi
        radius = (fx.square() + fy.square()).sqrt().clamp(max=math.pi)                    # [H, W//2+1]
        band = torch.bucketize(radius, to_device(torch.tensor(FILTER_BANDS[1:-1]), x.device), right=True)
        response = gains[:, band].to(x.dtype)                                             # [B, H, W//2+1]
        out = torch.fft.irfft2(torch.fft.rfft2(x) * response[:, None], s=(H, W))
        return torch.where(moved[:, None, None, None], out, x)

    @staticmethod
    def _cutout(x: torch.Tensor, p: float) -> torch.Tensor:
        B, _, H, W = x.shape
        on = to_device(torch.rand(B) < p, x.device)[:, None, None]                 # CPU draws, sent to the device
        centre = to_device(torch.rand([B, 2]), x.device)
        ys = (torch.arange(H, device=x.device) + 0.5) / H
        xs = (torch.arange(W, device=x.device) + 0.5) / W
        inside = ((ys[None, :, None] - centre[:, 0, None, None]).abs() < CUTOUT_SIZE / 2) & \
                 ((xs[None, None, :] - centre[:, 1, None, None]).abs() < CUTOUT_SIZE / 2)
        return x * (~(inside & on))[:, None].to(x.dtype)


class AdaController:
    """Adapts `pipe.p` from the signs of D's outputs on reals (paper §3: the r_t heuristic)."""

    def __init__(self, pipe: AugmentPipe, cfg: AugmentConfig):
        self.pipe, self.cfg = pipe, cfg
        self.sign_sum, self.count, self.steps = 0.0, 0, 0

    def observe(self, real_logits: torch.Tensor) -> None:
        """Accumulate sign(D(real)) of one batch chunk, on its device (read once per `interval` steps)."""
        self.sign_sum = real_logits.detach().sign().sum(dtype=torch.float32) + self.sign_sum   # exact to 2^24
        self.count += int(real_logits.numel())

    def step(self, images_seen: int, world_size: int = 1) -> Optional[float]:
        """Call after each training step with the images per step (all ranks); adjusts p every `interval`
        calls. Returns r_t when it adjusted, else None."""
        self.steps += 1
        if self.steps % self.cfg.interval:
            return None
        sign_sum = torch.as_tensor(self.sign_sum, dtype=torch.float32)        # where D ran (NCCL reduces there)
        totals = torch.stack([sign_sum, torch.full_like(sign_sum, self.count)])    # integers: exact in float32
        if world_size > 1:
            torch.distributed.all_reduce(totals)
        total_sign, total_count = totals.tolist()                           # the one host read per ADA interval
        self.sign_sum, self.count = 0.0, 0
        if total_count == 0:
            return None
        r_t = total_sign / total_count
        adjust = np.sign(r_t - self.cfg.target) * images_seen * self.cfg.interval / (self.cfg.kimg * 1000)
        self.pipe.p = float(min(max(self.pipe.p + adjust, 0.0), 1.0))
        return r_t

    def state(self) -> dict:
        return {"augment_p": self.pipe.p, "ada_sign_sum": float(self.sign_sum), "ada_count": self.count,
                "ada_steps": self.steps}

    def load(self, state: dict) -> None:
        self.pipe.p = float(state.get("augment_p", self.pipe.p))
        self.sign_sum = float(state.get("ada_sign_sum", 0.0))
        self.count = int(state.get("ada_count", 0))
        self.steps = int(state.get("ada_steps", 0))


def build(cfg: AugmentConfig) -> tuple[Optional[AugmentPipe], Optional[AdaController]]:
    """The pipe (None for mode 'none') and, for 'ada', its controller."""
    cfg.validate()
    if cfg.mode == "none":
        return None, None
    pipe = AugmentPipe(cfg.pipe, cfg.p)
    return pipe, (AdaController(pipe, cfg) if cfg.mode == "ada" else None)
