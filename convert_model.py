#!/usr/bin/env python
"""Convert a model from any supported source into our checkpoint format (safetensors + JSON configs).

Sources: an official TensorFlow or PyTorch snapshot pickle, a released model by name
(gdrive:ffhq-snapshot.pkl, ...), an official PyTorch reference folder, or our own checkpoint.
The import then happens once; the written file reproduces the same outputs, which is checked
after writing by reloading it and comparing G_ema (and D) outputs bit for bit.

Example:
  python convert_model.py --model gdrive:ffhq-snapshot.pkl --output ffhq-256.safetensors
"""
from __future__ import annotations

import argparse
from pathlib import Path

import torch

from dnnlib.cli import FlagParser
from dnnlib.util import UserError, cli_main
from training.checkpoint import load_networks, save_checkpoint

NETS = ("G", "D", "G_ema")


def parse_args(argv=None) -> argparse.Namespace:
    p = FlagParser(description="Convert a GANformer model into our checkpoint format.",
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--model", required=True, help="source: TF/PyTorch snapshot .pkl, gdrive:<name>, "
                   "official PyTorch reference folder, or our .safetensors checkpoint")
    p.add_argument("--output", required=True, metavar="FILE", help="checkpoint to write (.safetensors)")
    p.add_argument("--skip-check", action="store_true", help="do not reload the output to compare outputs")
    return p.parse_args(argv)


def _outputs(nets: dict) -> list[torch.Tensor]:
    """A few deterministic outputs: G_ema (or G) images from fixed z, D logits on those images."""
    G = nets.get("G_ema") or nets.get("G")
    gen = torch.Generator().manual_seed(0)
    out = []
    with torch.no_grad():
        if G is not None:
            z = torch.randn([2, G.k, G.z_dim], generator=gen)
            out.append(G.eval()(z, truncation_psi=0.7, noise_mode="const"))
        if nets.get("D") is not None:
            D = nets["D"].eval()
            img = out[0] if out else torch.randn([2, D.cfg.img_channels, D.cfg.img_resolution, D.cfg.img_resolution],
                                                 generator=gen)
            if D.cfg.c_dim == 0:
                out.append(D(img))
    return out


def run(args: argparse.Namespace) -> None:
    out_path = Path(args.output)
    if out_path.suffix != ".safetensors":
        raise UserError(f"--output must end with .safetensors, got {args.output}")
    nets = load_networks(args.model)
    keep = {name: nets[name] for name in NETS if nets.get(name) is not None}
    if not keep:
        raise UserError(f"{args.model} holds no network")
    extra = dict(nets.get("extra") or {})
    extra["converted_from"] = args.model
    save_checkpoint(out_path, keep, extra=extra)
    note = ""
    if not args.skip_check:
        before, after = _outputs(nets), _outputs(load_networks(out_path))
        if not all(torch.equal(a, b) for a, b in zip(before, after)):
            raise UserError(f"{out_path} was written but does not reproduce the source's outputs "
                            f"(a bug; please report it)")
        note = "; reloaded outputs are identical"
    params = sum(p.numel() for p in keep.get("G_ema", keep.get("G", next(iter(keep.values())))).parameters())
    print(f"wrote {out_path} ({', '.join(keep)}; generator {params:,} parameters){note}")


@cli_main
def main(argv=None) -> None:
    run(parse_args(argv))


if __name__ == "__main__":
    main()
