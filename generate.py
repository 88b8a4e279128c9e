#!/usr/bin/env python
"""Generate images with a GANformer (our checkpoint, an official reference folder or pickle).

Example:
  python generate.py --model results/exp-000/network-snapshot-000100.safetensors \\
      --output-dir images --images-num 32 --truncation-psi 0.7
"""
from __future__ import annotations

import argparse

import numpy as np
import torch
from tqdm import tqdm

from dnnlib.util import UserError, cli_main
from training.checkpoint import load_generator
from training.sampling import (batches, crop_ratio, load_latents, parse_seeds, pick_device, save_npy, save_png,
                               to_uint8, z_from_seeds)


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description="Generate images with a trained GANformer.",
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--model", required=True,
                   help="model: our .safetensors checkpoint, a run folder (latest snapshot), an official "
                        "PyTorch reference folder, or an official network-snapshot-*.pkl")
    p.add_argument("--gpus", default="0", help="comma-separated GPU indices (the first is used); CPU if none")
    p.add_argument("--output-dir", default="images", metavar="DIR", help="where the PNGs go")
    p.add_argument("--images-num", type=int, default=32, help="number of images (seeds 0..N-1) unless --seeds/--latents")
    p.add_argument("--truncation-psi", type=float, default=0.7, help="truncation: 1 = none, lower = closer to average")
    p.add_argument("--ratio", type=float, default=1.0, help="crop the output to height/width = ratio "
                   "(CLEVR 0.75, Bedrooms 188/256, Cityscapes 0.5, FFHQ 1.0)")
    p.add_argument("--seeds", default=None, help="latent seeds, e.g. '0-7' or '1,5,9' (overrides --images-num)")
    p.add_argument("--latents", default=None, metavar="FILE",
                   help="z vectors (.npy, or .pt with a tensor or a dict key 'z'), one image per row")
    p.add_argument("--noise-mode", default="const", choices=["const", "random", "none"], help="per-layer noise")
    p.add_argument("--save-npy", default=None, metavar="FILE",
                   help="also save the raw float32 generator output (NCHW, before clipping) as .npy")
    p.add_argument("--batch-size", type=int, default=16, help="images per forward pass")
    return p.parse_args(argv)


def run(args: argparse.Namespace) -> None:
    if args.images_num < 1:
        raise UserError("--images-num must be >= 1")
    if args.batch_size < 1:
        raise UserError("--batch-size must be >= 1")
    if not 0 < args.ratio <= 1:
        raise UserError(f"--ratio must be in (0, 1], got {args.ratio}")
    seeds = parse_seeds(args.seeds) if args.seeds else list(range(args.images_num))
    device = pick_device(args.gpus)
    G = load_generator(args.model, device)
    if G.c_dim > 0:
        raise UserError("this model is conditional (needs class labels), which generate.py does not support yet")
    if args.latents:
        z_all = load_latents(args.latents, G.k, G.z_dim)
        names = [f"sample_{i:06d}.png" for i in range(len(z_all))]
    else:
        z_all = z_from_seeds(seeds, G.k, G.z_dim)
        names = [f"seed{s:06d}.png" for s in seeds]

    raw = []
    done = 0
    torch.manual_seed(0)   # noise_mode=random stays reproducible run to run
    with torch.no_grad(), tqdm(total=len(z_all), desc="generating", unit="img") as bar:
        for z in batches(z_all, args.batch_size):
            img = G(z.to(device), truncation_psi=args.truncation_psi, noise_mode=args.noise_mode)
            if args.save_npy:
                raw.append(img.float().cpu().numpy())
            for arr in to_uint8(img).cpu().numpy():
                save_png(crop_ratio(arr, args.ratio), f"{args.output_dir}/{names[done]}")
                done += 1
            bar.update(len(z))
    if args.save_npy:
        save_npy(np.concatenate(raw).astype(np.float32), args.save_npy)
    print(f"wrote {done} images to {args.output_dir}" + (f" and raw output to {args.save_npy}" if args.save_npy else ""))


@cli_main
def main(argv=None) -> None:
    run(parse_args(argv))


if __name__ == "__main__":
    main()
