#!/usr/bin/env python
"""Train, evaluate and inspect GANformer models (the seed's run_network.py command line).

Without --train/--eval/--vis it prints the networks the flags describe, e.g.
  python run_network.py --ganformer-default --dataset clevr --resolution 256
The flags become one typed RunConfig (training/options.py) before anything heavy (torch) is imported.
"""
from __future__ import annotations

import json

from dnnlib.util import cli_main
from training.options import parse
from training.run_config import RunConfig


def summarize(G, D) -> str:
    lines = []
    for name, net in (("G", G), ("D", D)):
        total = sum(p.numel() for p in net.parameters())
        lines.append(f"{name}: {total:,} parameters")
        for child, module in net.named_children():
            n = sum(p.numel() for p in module.parameters())
            if n:
                lines.append(f"  {child:<12s} {n:>12,}")
    return "\n".join(lines)


def show_networks(run: RunConfig) -> None:
    from training.networks import Discriminator, Generator
    from training.networks.config import to_dict

    G_cfg, D_cfg = run.network_configs()
    G, D = Generator(G_cfg), Discriminator(D_cfg)
    print(json.dumps({"G": to_dict(G_cfg), "D": to_dict(D_cfg), "gamma": run.train.loss.r1_gamma}, indent=1))
    print(summarize(G, D))
    print(f"z: [B, {G.k}, {G.z_dim}]  ws: [B, {G.k}, {G.num_ws}, {G.z_dim}]")


@cli_main
def main(argv=None) -> None:
    run = parse(argv)
    if run.mode == "train":
        from training.train_cli import train
        return train(run)
    if run.mode in ("eval", "vis"):
        from training.eval_cli import evaluate_cli
        return evaluate_cli(run)
    show_networks(run)


if __name__ == "__main__":
    main()
