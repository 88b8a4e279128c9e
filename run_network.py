#!/usr/bin/env python
"""Train, evaluate and inspect GANformer models (the seed's run_network.py command line).

Without --train/--eval/--vis it prints the networks the flags describe, e.g.
  python run_network.py --ganformer-default --dataset clevr --resolution 256
"""
from __future__ import annotations

import argparse
import json

import torch

from dnnlib.util import UserError, cli_main
from training.config import to_dict
from training.networks import Discriminator, Generator
from training.options import add_model_flags, dataset_gamma, resolve


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description="Train, evaluate and inspect GANformer models.",
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    m = p.add_argument_group("mode")
    m.add_argument("--train", action="store_true", help="train a model (not available yet)")
    m.add_argument("--eval", action="store_true", help="evaluate a model (not available yet)")
    m.add_argument("--vis", action="store_true", help="visualise a model (not available yet)")
    e = p.add_argument_group("experiment")
    e.add_argument("--expname", default="exp", help="run folder name: <result-dir>/<expname>-NNN")
    e.add_argument("--dataset", default=None, help="dataset name (a folder under --data-dir)")
    e.add_argument("--data-dir", default="datasets", help="datasets root")
    e.add_argument("--result-dir", default="results", help="results root")
    e.add_argument("--gpus", default="0", help="comma-separated GPU indices")
    e.add_argument("--resolution", type=int, default=256, help="image resolution")
    e.add_argument("--ratio", type=float, default=None, help="image height/width ratio (default: per dataset)")
    e.add_argument("--gamma", type=float, default=None, help="R1 weight (default: per dataset, else 10)")
    e.add_argument("--pretrained-pkl", default=None, help="model to start from / evaluate")
    add_model_flags(p)
    return p.parse_args(argv)


def summarize(G: Generator, D: Discriminator) -> str:
    lines = []
    for name, net in (("G", G), ("D", D)):
        total = sum(p.numel() for p in net.parameters())
        lines.append(f"{name}: {total:,} parameters")
        for child, module in net.named_children():
            n = sum(p.numel() for p in module.parameters())
            if n:
                lines.append(f"  {child:<12s} {n:>12,}")
    return "\n".join(lines)


@cli_main
def main(argv=None) -> None:
    args = parse_args(argv)
    if args.train or args.eval or args.vis:
        mode = "--train" if args.train else "--eval" if args.eval else "--vis"
        raise UserError(f"{mode} is not available yet in this version; see README 'Status'")
    G_cfg, D_cfg = resolve(args, args.resolution)
    G, D = Generator(G_cfg), Discriminator(D_cfg)
    print(json.dumps({"G": to_dict(G_cfg), "D": to_dict(D_cfg), "gamma": dataset_gamma(args)}, indent=1))
    print(summarize(G, D))
    print(f"z: [B, {G.k}, {G.z_dim}]  ws: [B, {G.k}, {G.num_ws}, {G.z_dim}]")


if __name__ == "__main__":
    main()
