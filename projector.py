#!/usr/bin/env python
"""Project a real image into a GANformer's latents: per-component w (and z), with its attention segmentation.

  python projector.py --model results/quickstart-000 --target photo.png --outdir proj [--num-steps 300]
  python generate.py --model results/quickstart-000 --latents-w proj/projected_w.npy        # regenerate it

As StyleGAN2's projector (Karras et al. 2020, "Analyzing and Improving the Image Quality of StyleGAN",
§5), but per component: w [K+1, d] (K local components, then the global one) starts at each
component's mean w, is optimised with Adam (learning rate ramped up then down, Gaussian noise on w that
fades out), together with the per-layer noise maps, which a multi-scale autocorrelation penalty keeps
noise-like. Then z [K+1, d] is fitted so that the mapping network sends it to that w.

Distance: LPIPS on VGG16 features when a VGG16 file is given (NVIDIA's TorchScript `vgg16.pt`, as
the metrics use; `--vgg16 FILE` or the metrics' usual places), otherwise the first blocks of the
TF-Inception network the metrics ship (unit-normalised activations of three layers, on the image
upsampled to `--feature-res`) plus a pixel MSE term. The one used is printed and saved.

Outputs in --outdir: projected_w.npy and projected_z.npy ([1, K+1, d]; reusable by generate.py
--latents-w, and --latents with --truncation-psi 1), projected_noise.npz, reconstruction.png
(target | reconstruction | attention overlay), segmentation.png (each pixel coloured by the latent
component it attends to most, the palette of training/visualize.py), optimisation.gif, projection.json.

Python API (also used by the browser visualiser), a stable signature:

    result = project(G, target, num_steps=300, seed=0, distance=None, progress=True)

G: a Generator (eval mode; not modified: a copy is optimised). target: float tensor [C, R, R] in
[-1, 1] at G's resolution. distance: a `Distance` (default: `default_distance(G)`); further keyword
arguments are the schedule's (see `project`). Returns a `Projection` with `w` [K+1, d], `z` [K+1, d],
`image` [C, R, R] in [-1, 1], `segmentation` [K, r, r] attention probabilities of the last attention
layer (None without attention), `frames` (uint8 [R, R, C] along the optimisation), `noise`
(per-layer maps), `losses`, `distance_name`.
"""
from __future__ import annotations

import argparse
import copy
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional

import numpy as np
import torch
import torch.nn.functional as Fn
from tqdm import tqdm

from dnnlib.cli import FlagParser, add_shared_flags
from dnnlib.util import UserError, atomic_path, atomic_write, cli_main
from training.sampling import pick_device, save_npy, save_png, to_uint8
from training.visualize import colorize_hard, upsample_maps


# ---------------------------------------------------------------------------------------------------
# Perceptual distances: callables (images, target) -> [B], images in [-1, 1].

class Distance:
    name = "distance"

    def __call__(self, images: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError


class VGG16Distance(Distance):
    """LPIPS through NVIDIA's TorchScript VGG16 (as StyleGAN2's projector); images larger than 256 are
    area-downsampled to 256 first."""
    name = "vgg16-lpips"

    def __init__(self, module: torch.nn.Module):
        self.module = module
        for param in module.parameters():
            param.requires_grad_(False)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        x = (x.clamp(-1, 1) + 1) * 127.5
        if x.shape[1] == 1:
            x = x.repeat(1, 3, 1, 1)
        if x.shape[-1] > 256:
            x = Fn.interpolate(x, size=(256, 256), mode="area")
        return self.module(x, resize_images=False, return_lpips=True)

    def __call__(self, images, target):
        return (self.features(images) - self.features(target)).square().sum(1)


class InceptionStemDistance(Distance):
    """TF-Inception's stem (the metrics' network): mean squared difference of channel-normalised activations
    at three depths, on the image bilinearly resized to `res`, plus `pixel_weight` x pixel MSE."""
    name = "inception-stem+pixel"
    TAPS = ("conv_2", "conv_4", "mixed_2")       # 64, 192, 288 channels

    def __init__(self, layers: torch.nn.Module, res: int = 64, pixel_weight: float = 1.0):
        children = dict(layers.named_children())
        order = list(children)
        if any(t not in children for t in self.TAPS):
            raise UserError("the Inception file does not have the expected layers (conv_2, conv_4, mixed_2)")
        self.blocks = [children[n] for n in order[:order.index(self.TAPS[-1]) + 1]]
        for param in layers.parameters():            # gradients w.r.t. the image only
            param.requires_grad_(False)
        self.names = order[:len(self.blocks)]
        self.res, self.pixel_weight = res, pixel_weight

    def features(self, x: torch.Tensor) -> list[torch.Tensor]:
        x = x.clamp(-1, 1)
        if x.shape[1] == 1:
            x = x.repeat(1, 3, 1, 1)
        x = Fn.interpolate(x, size=(self.res, self.res), mode="bilinear", align_corners=False)
        out = []
        for name, block in zip(self.names, self.blocks):
            x = block(x)
            if name in self.TAPS:
                out.append(x / (x.square().sum(1, keepdim=True) + 1e-10).sqrt())    # unit length per position
        return out

    def __call__(self, images, target):
        d = sum((a - b).square().sum(1).mean((1, 2)) for a, b in zip(self.features(images), self.features(target)))
        return d + self.pixel_weight * (images - target).square().mean((1, 2, 3))


def default_distance(G: torch.nn.Module, vgg16: Optional[str] = None, feature_res: Optional[int] = None,
                     device: torch.device | str = "cpu") -> Distance:
    """VGG16 LPIPS when that network file is found (or `vgg16` names it), else TF-Inception stem + pixels."""
    from metrics.feature_networks import NetworkUnavailable, load_network
    try:
        return VGG16Distance(load_network("vgg16", device, vgg16).module)
    except NetworkUnavailable as e:
        if vgg16:
            raise UserError(str(e)) from None
    try:
        net = load_network("inception", device)
    except NetworkUnavailable as e:
        raise UserError(f"no perceptual network for the projector: {e}") from None
    return InceptionStemDistance(net.module.net.layers, res=feature_res or max(64, G.img_resolution))


# ---------------------------------------------------------------------------------------------------
# Projection.

@dataclass
class Projection:
    w: torch.Tensor                         # [K+1, d]: local components, then the global latent
    z: torch.Tensor                         # [K+1, d]: mapping(z) ~ w
    image: torch.Tensor                     # [C, R, R] in [-1, 1]: the reconstruction (optimised noise)
    image_model_noise: Optional[torch.Tensor] = None    # [C, R, R]: w with the model's own noise (as generate.py)
    segmentation: Optional[torch.Tensor] = None     # [K, r, r]: last attention layer's probabilities (head 0)
    noise: dict[str, torch.Tensor] = field(default_factory=dict)    # optimised per-layer noise maps, by module
    frames: list[np.ndarray] = field(default_factory=list)   # uint8 [R, R, C] along the optimisation
    losses: list[float] = field(default_factory=list)        # distance per step
    distance_name: str = ""
    z_fit_error: float = 0.0                # |mapping(z) - w|^2 / |w - w_avg|^2


def _noise_layers(G: torch.nn.Module) -> dict[str, torch.nn.Module]:
    return {n: m for n, m in G.synthesis.named_modules() if getattr(m, "noise_const", None) is not None}


def _noise_penalty(noise: torch.Tensor) -> torch.Tensor:
    """StyleGAN2 projector: squared autocorrelation at 1-pixel shifts, over a pyramid down to 8x8."""
    x = noise[None, None]
    reg = x.new_zeros([])
    while True:
        reg = reg + (x * x.roll(1, 3)).mean().square() + (x * x.roll(1, 2)).mean().square()
        if x.shape[-1] <= 8:
            return reg
        x = Fn.avg_pool2d(x, 2)


def _synthesize(G, w: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
    ws = w.unsqueeze(2).repeat(1, 1, G.num_ws, 1)                  # [1, K+1, num_ws, d]
    return G.synthesize(ws, noise_mode="const")


def mean_latents(G, samples: int, seed: int) -> tuple[torch.Tensor, float]:
    """Each component's mean w [K+1, d] and the overall spread of w (a scalar), from `samples` random z."""
    device = next(G.parameters()).device
    z = torch.randn([samples, G.k, G.z_dim], generator=torch.Generator().manual_seed(seed)).to(device)
    with torch.no_grad():
        w = torch.cat([G.map(c, None, update_w_avg=False)[:, :, 0] for c in z.split(500)])
    w_avg = w.mean(0)
    return w_avg, float(((w - w_avg).square().sum() / samples).sqrt())


def fit_z(G, w: torch.Tensor, w_avg: torch.Tensor, steps: int = 300, seed: int = 0) -> tuple[torch.Tensor, float]:
    """z [K+1, d] such that mapping(z) ~ w (Adam on the squared error); returns z and the relative error."""
    device = w.device
    z = torch.randn([1, G.k, G.z_dim], generator=torch.Generator().manual_seed(seed)).to(device).requires_grad_(True)
    opt = torch.optim.Adam([z], lr=0.05)
    scale = (w - w_avg).square().sum().clamp(min=1e-12)
    for _ in range(steps):
        err = (G.map(z, None, update_w_avg=False)[0, :, 0] - w).square().sum() / scale
        opt.zero_grad(set_to_none=True)
        err.backward()
        opt.step()
    with torch.no_grad():
        err = (G.map(z, None, update_w_avg=False)[0, :, 0] - w).square().sum() / scale
    return z.detach()[0], float(err)


def _lr_at(t: float, lr: float, rampdown: float, rampup: float) -> float:
    ramp = min(1.0, (1.0 - t) / rampdown) * min(1.0, t / rampup)
    return lr * 0.5 * (1 - math.cos(ramp * math.pi))


def project(G: torch.nn.Module, target: torch.Tensor, num_steps: int = 300, *,
            seed: int = 0,                          # z samples for the mean w; the w noise; z fitting
            distance: Optional[Distance] = None,    # default: default_distance(G)
            w_avg_samples: int = 2000,
            initial_learning_rate: float = 0.1,
            initial_noise_factor: float = 0.05,     # w noise, times the spread of w, fading out ...
            noise_ramp_length: float = 0.75,        # ... over this fraction of the steps
            lr_rampdown_length: float = 0.25,
            lr_rampup_length: float = 0.05,
            regularize_noise_weight: float = 1e5,
            frames: int = 40,                       # snapshots of the reconstruction for the animation
            z_fit_steps: int = 300,
            progress: bool = True,
            callback: Optional[Callable[[int, float], None]] = None,    # (step, distance) after each step
            ) -> Projection:
    """Find w (and z) whose image matches `target` [C, R, R] in [-1, 1]. See the module docstring."""
    G_model, G = G, copy.deepcopy(G).eval().requires_grad_(False)
    device = next(G.parameters()).device
    R = G.img_resolution
    if target.shape != (G.img_channels, R, R):
        raise UserError(f"target must be [{G.img_channels}, {R}, {R}], got {list(target.shape)}")
    if num_steps < 1:
        raise UserError(f"--num-steps must be >= 1, got {num_steps}")
    if G.c_dim:
        raise UserError("projecting into a conditional model is not supported")
    distance = distance or default_distance(G, device=device)
    target = target.to(device).float()[None]
    w_avg, w_std = mean_latents(G, w_avg_samples, seed)
    w = w_avg.clone()[None].requires_grad_(True)                         # [1, K+1, d]
    rng = torch.Generator(device=device).manual_seed(seed)
    noises = {}
    for name, layer in _noise_layers(G).items():                        # optimised in place of the model's
        shape = layer.noise_const.shape
        layer.noise_const = torch.randn(shape, generator=rng, device=device).requires_grad_(True)
        noises[name] = layer.noise_const
    opt = torch.optim.Adam([w, *noises.values()], betas=(0.9, 0.999), lr=initial_learning_rate)
    every = max(1, num_steps // max(frames, 1))
    result = Projection(w=w, z=w, image=target[0], distance_name=distance.name)
    for step in tqdm(range(num_steps), desc="projecting", unit="step", disable=not progress):
        t = step / num_steps
        for g in opt.param_groups:
            g["lr"] = _lr_at(t, initial_learning_rate, lr_rampdown_length, lr_rampup_length)
        w_noise_scale = w_std * initial_noise_factor * max(0.0, 1.0 - t / noise_ramp_length) ** 2
        w_in = w + torch.randn(w.shape, generator=rng, device=device) * w_noise_scale
        img, _ = _synthesize(G, w_in)
        dist = distance(img, target).sum()
        reg = sum(_noise_penalty(n) for n in noises.values()) if noises else img.new_zeros([])
        opt.zero_grad(set_to_none=True)
        (dist + regularize_noise_weight * reg).backward()
        opt.step()
        with torch.no_grad():                                           # keep the noise maps N(0, 1)
            for n in noises.values():
                n -= n.mean()
                n *= n.square().mean().rsqrt()
        result.losses.append(float(dist.detach()))
        if callback is not None:
            callback(step, result.losses[-1])
        if step % every == 0 or step == num_steps - 1:
            result.frames.append(to_uint8(img.detach())[0].cpu().numpy())
    with torch.no_grad():
        img, maps = _synthesize(G, w)
        result.image_model_noise = _synthesize(G_model, w)[0][0]
    result.w = w.detach()[0]
    result.image = img[0]
    result.segmentation = maps[-1][0, 0] if maps else None
    result.noise = {k: v.detach() for k, v in noises.items()}
    result.z, result.z_fit_error = fit_z(G, result.w, w_avg, z_fit_steps, seed) if z_fit_steps else (result.w, float("nan"))
    return result


# ---------------------------------------------------------------------------------------------------
# Command line.

def segmentation_image(seg: torch.Tensor, size: int) -> torch.Tensor:
    """[K, r, r] probabilities -> uint8 [size, size, 3]: each pixel in its strongest component's colour."""
    return to_uint8(upsample_maps(colorize_hard(seg[None]), size) * 2 - 1)[0]


def overlay_image(image: torch.Tensor, seg: torch.Tensor, alpha: float = 0.3) -> torch.Tensor:
    """The segmentation blended with the image, as `generate.py --attention` and training grids show it."""
    from training.visualize import attention_images
    return attention_images(image[None], seg[None, None], alpha=alpha)["hard_blend"][0]


def load_target(path: str, G: torch.nn.Module) -> torch.Tensor:
    """An image file as [C, R, R] in [-1, 1]: centre-cropped to a square and resized like prepare_data.py."""
    from training.data.preprocess import ImageSkipped, Preprocessor
    if not Path(path).is_file():
        raise UserError(f"--target {path} does not exist")
    try:
        arr = Preprocessor(1.0, G.img_resolution, G.img_channels)(path)          # uint8 [C, R, R]
    except ImageSkipped as e:
        raise UserError(f"--target {path}: {e.reason}") from None
    return torch.from_numpy(arr).float() / 127.5 - 1


def psnr(image: torch.Tensor, target: torch.Tensor) -> float:
    """PSNR in dB of images in [-1, 1] (peak = the full range)."""
    mse = float(((image.cpu().float().clamp(-1, 1) - target.cpu().float()) / 2).square().mean())
    return 10 * math.log10(1 / max(mse, 1e-12))


def save_outputs(result: Projection, target: torch.Tensor, outdir: Path, G) -> dict:
    import PIL.Image
    outdir.mkdir(parents=True, exist_ok=True)
    save_npy(result.w[None].cpu().numpy().astype(np.float32), outdir / "projected_w.npy")
    save_npy(result.z[None].cpu().numpy().astype(np.float32), outdir / "projected_z.npy")
    with atomic_write(outdir / "projected_noise.npz") as f:
        np.savez(f, **{k: v.cpu().numpy() for k, v in result.noise.items()})
    R = G.img_resolution
    recon = to_uint8(result.image[None].cpu())[0]
    panels = [to_uint8(target[None].cpu())[0], recon]
    if result.segmentation is not None:
        seg = result.segmentation.cpu()
        panels.append(overlay_image(result.image.cpu(), seg))
        save_png(segmentation_image(seg, R).numpy(), outdir / "segmentation.png")
    panels = [p if p.shape[-1] == 3 else p.repeat(1, 1, 3) for p in panels]
    save_png(torch.cat(panels, dim=1).numpy(), outdir / "reconstruction.png")
    frames = [PIL.Image.fromarray(f[..., 0] if f.shape[-1] == 1 else f) for f in result.frames]
    with atomic_path(outdir / "optimisation.gif") as tmp:
        frames[0].save(tmp, format="GIF", save_all=True, append_images=frames[1:], duration=80, loop=0)
    info = {"distance": result.distance_name, "steps": len(result.losses), "final_distance": result.losses[-1],
            "first_distance": result.losses[0], "psnr_db": psnr(result.image, target),
            "psnr_model_noise_db": psnr(result.image_model_noise, target),
            "z_fit_error": result.z_fit_error, "components": G.K}
    with atomic_write(outdir / "projection.json", "w") as f:
        json.dump(info, f, indent=1)
    return info


def parse_args(argv=None) -> argparse.Namespace:
    p = FlagParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_shared_flags(p, "--model", "--gpus")
    p.add_argument("--target", required=True, help="the image to project (any size; centre-cropped, resized)")
    p.add_argument("--outdir", default="projection", help="where the outputs go (default: %(default)s)")
    p.add_argument("--num-steps", type=int, default=300, help="optimisation steps (default: %(default)s)")
    p.add_argument("--seed", type=int, default=0, help="random seed (default: %(default)s)")
    p.add_argument("--vgg16", default=None, metavar="FILE",
                   help="NVIDIA's vgg16.pt for an LPIPS distance (default: found as the metrics find it, "
                        "else TF-Inception features + pixels)")
    p.add_argument("--feature-res", type=int, default=None,
                   help="Inception distance: resize images to this side first (default: max(64, resolution))")
    return p.parse_args(argv)


@cli_main
def main(argv=None) -> dict:
    from training.checkpoint import load_generator
    args = parse_args(argv)
    if args.num_steps < 1:
        raise UserError(f"--num-steps must be >= 1, got {args.num_steps}")
    device = pick_device(args.gpus)
    G = load_generator(args.model, device)
    target = load_target(args.target, G)
    distance = default_distance(G, args.vgg16, args.feature_res, device)
    print(f"distance: {distance.name}")
    result = project(G, target, num_steps=args.num_steps, seed=args.seed, distance=distance)
    info = save_outputs(result, target, Path(args.outdir), G)
    print(f"distance {info['first_distance']:.4f} -> {info['final_distance']:.4f}, PSNR {info['psnr_db']:.2f} dB, "
          f"z fit error {info['z_fit_error']:.3g}; wrote {args.outdir}/")
    return info


if __name__ == "__main__":
    main()
