#!/usr/bin/env python
"""Generate images with a GANformer (our checkpoint, an official reference folder or pickle).

Example:
  python generate.py --model results/exp-000/network-snapshot-000100.safetensors \\
      --output-dir images --images-num 32 --truncation-psi 0.7 [--attention] [--class 3]

--latents / --latents-w also take the per-sample .npy folders that run_network.py --vis-latents writes.

Latent editing: replace chosen latent components (rows 0..K-1 local, K the global one) by those of
another latent, to move an object between images, or by those of a fresh seed:
  python generate.py --model M --latents a.npy --swap-from b.npy --components 2,5
  python generate.py --model M --seeds 0-3 --components 1 --resample-seed 7
Edits apply to z (--latents, --seeds) or, more precisely, to w (--latents-w, e.g. from projector.py).
Each edited image also gets <output-dir>/compare/<name>: original | donor | edited.
"""
from __future__ import annotations

import argparse

from dnnlib.cli import FlagParser, add_shared_flags
from dnnlib.util import cli_main


def build_parser() -> FlagParser:
    p = FlagParser(description="Generate images with a trained GANformer.",
                   formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    add_shared_flags(p, "--model", "--gpus", "--ratio")
    p.add_argument("--output-dir", default="images", metavar="DIR", help="where the PNGs go")
    p.add_argument("--images-num", type=int, default=32, help="number of images (seeds 0..N-1) unless --seeds/--latents")
    p.add_argument("--truncation-psi", type=float, default=0.7, help="truncation: 1 = none, lower = closer to average")
    p.add_argument("--seeds", default=None, help="latent seeds, e.g. '0-7' or '1,5,9' (overrides --images-num)")
    p.add_argument("--latents", default=None, metavar="PATH",
                   help="z vectors (.npy, or .pt with a tensor or a dict key 'z'), one image per row; "
                        "or a folder of per-sample .npy files (run_network.py --vis-latents: latents-z/)")
    p.add_argument("--latents-w", default=None, metavar="PATH",
                   help="w vectors [N, K+1, d] (file or folder, e.g. latents-w/), used as they are: "
                        "no mapping, no truncation, no --class")
    p.add_argument("--class", dest="class_idx", type=int, default=None, metavar="C",
                   help="class index for a conditional model")
    p.add_argument("--attention", nargs="?", const="hard", default=None, choices=["hard", "soft"],
                   help="also save each image's last-layer attention map blended with it (hard = argmax "
                        "colours, soft = probability-weighted) to <output-dir>/attention/")
    p.add_argument("--blending-alpha", type=float, default=0.3, help="image weight in the --attention blend")
    p.add_argument("--noise-mode", default="const", choices=["const", "random", "none"], help="per-layer noise")
    p.add_argument("--save-npy", default=None, metavar="FILE",
                   help="also save the raw float32 generator output (NCHW, before clipping) as .npy")
    p.add_argument("--batch-size", type=int, default=16, help="images per forward pass")
    g = p.add_argument_group("latent editing")
    g.add_argument("--components", default=None, metavar="LIST",
                   help="components to edit, e.g. '2,5' (0..K-1 local latents, K or 'global' the global one)")
    g.add_argument("--swap-from", default=None, metavar="PATH",
                   help="take --components from these latents (same kind as --latents/--latents-w/--seeds: "
                        "z, or w with --latents-w); one row for all images or one per image")
    g.add_argument("--resample-seed", type=int, default=None, metavar="S",
                   help="take --components from the latent of seed S instead (w: mapped with --truncation-psi)")
    return p


def parse_args(argv=None) -> argparse.Namespace:
    return build_parser().parse_args(argv)


@cli_main
def main(argv=None) -> None:
    args = parse_args(argv)
    from training.generate_cli import run           # torch loads only now: --help stays instant
    run(args)


if __name__ == "__main__":
    main()
