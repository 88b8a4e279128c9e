#!/usr/bin/env python
"""Train, evaluate and inspect GANformer models (the seed's run_network.py command line).

Without --train/--eval/--vis it prints the networks the flags describe, e.g.
  python run_network.py --ganformer-default --dataset clevr --resolution 256
"""
from __future__ import annotations

import argparse
import json

from dnnlib.threads import prefer_passive_wait

prefer_passive_wait()          # before torch is imported (see dnnlib/threads.py)

from dnnlib.util import cli_main
from training.networks.config import to_dict
from training.networks import Discriminator, Generator
from training.vis_cli import add_vis_flags
from training.options import add_model_flags, dataset_gamma, resolve, str2bool


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description="Train, evaluate and inspect GANformer models.",
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    m = p.add_argument_group("mode")
    m.add_argument("--train", action="store_true", help="train a model (resumes the latest run of --expname)")
    m.add_argument("--eval", action="store_true", help="evaluate the latest snapshot of --expname, or --pretrained-pkl")
    m.add_argument("--vis", action="store_true", help="visualisations only (the --vis-* options; all defaults if none)")
    e = p.add_argument_group("experiment")
    e.add_argument("--expname", default="exp", help="run folder name: <result-dir>/<expname>-NNN")
    e.add_argument("--dataset", default=None, help="dataset name (a folder under --data-dir)")
    e.add_argument("--data-dir", default="datasets", help="datasets root")
    e.add_argument("--result-dir", default="results", help="results root")
    e.add_argument("--gpus", default="0", help="comma-separated GPU indices")
    e.add_argument("--resolution", type=int, default=None, help="image resolution (default: 64 for scenes, else 256)")
    e.add_argument("--ratio", type=float, default=None, help="image height/width ratio (default: per dataset)")
    e.add_argument("--gamma", type=float, default=None, help="R1 weight (default: per dataset, else 10)")
    e.add_argument("--pretrained-pkl", default=None, help="model to start from / evaluate")
    b = dict(type=str2bool, nargs="?", const=True, default=None)
    t = p.add_argument_group("training")
    t.add_argument("--batch-size", type=int, default=32, help="global batch size")
    t.add_argument("--batch-gpu", type=int, default=4, help="images per GPU per forward pass (gradient accumulation)")
    t.add_argument("--total-kimg", type=float, default=25000, help="training length in thousands of real images")
    t.add_argument("--kimg-per-tick", type=float, default=8, help="progress line every N kimg")
    t.add_argument("--snapshot-ticks", type=int, default=3, help="snapshots, samples and metrics every N ticks")
    t.add_argument("--state-minutes", type=float, default=10, help="also a training state (to resume from) "
                   "every N minutes, inside ticks too (0 = off)")
    t.add_argument("--g-lr", type=float, default=0.002, help="generator learning rate")
    t.add_argument("--d-lr", type=float, default=0.002, help="discriminator learning rate")
    t.add_argument("--g-loss", choices=["logistic_ns", "logistic", "hinge", "wgan"], default="logistic_ns")
    t.add_argument("--d-loss", choices=["logistic", "hinge", "wgan"], default="logistic")
    t.add_argument("--pl-weight", type=float, default=0.0, help="path-length regularisation weight")
    t.add_argument("--style-mixing", type=float, default=0.9, help="style mixing probability")
    t.add_argument("--component-mixing", type=float, default=0.0, help="component mixing probability")
    t.add_argument("--ema-kimg", type=float, default=10.0, help="half-life of the generator's moving average")
    t.add_argument("--ema-rampup", type=float, default=None,
                   help="early in training, cap the EMA half-life at cur_kimg * this (e.g. 0.05; default: off)")
    t.add_argument("--mirror-augment", **b, help="random horizontal flips (default: per dataset)")
    t.add_argument("--train-images-num", type=int, default=None, help="train on a subset of this many images")
    t.add_argument("--truncation-psi", type=float, default=0.75, help="truncation for sample grids")
    t.add_argument("--keep-samples", type=str2bool, default=True, help="keep every sample grid (False: latest only)")
    t.add_argument("--summarize", type=str2bool, default=True, help="write TensorBoard event files")
    t.add_argument("--last-snapshots", type=int, default=10, help="keep only the N newest snapshots")
    t.add_argument("--restart", action="store_true", help="start a new run folder instead of resuming")
    t.add_argument("--seed", type=int, default=0, help="random seed")
    t.add_argument("--fp32", action="store_true", help="no bf16 mixed precision on the GPU")
    t.add_argument("--metrics", default="fid", help="comma-separated metrics (fid, kid, pr, is, ppl_wend, ...; "
                   "none = skip), at training snapshots and with --eval")
    t.add_argument("--eval-images-num", type=int, default=50000, help="images for metrics")
    t.add_argument("--num-threads", type=int, default=None,
                   help="torch CPU threads per process (default: the cores free at start, at least 1)")
    add_model_flags(p)
    add_vis_flags(p)
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
    if args.resolution is None:
        args.resolution = 64 if args.dataset == "scenes" else 256
    if args.train:
        from training.train_cli import train
        return train(args)
    if args.eval or args.vis:
        from training.eval_cli import evaluate_cli
        vis = args.vis or any(v for k, v in vars(args).items() if k.startswith("vis_") and v is True)
        if args.vis and not args.eval:
            args.metrics = "none"          # --vis alone: visualisations only
        return evaluate_cli(args, vis_requested=vis)
    G_cfg, D_cfg = resolve(args, args.resolution)
    G, D = Generator(G_cfg), Discriminator(D_cfg)
    print(json.dumps({"G": to_dict(G_cfg), "D": to_dict(D_cfg), "gamma": dataset_gamma(args)}, indent=1))
    print(summarize(G, D))
    print(f"z: [B, {G.k}, {G.z_dim}]  ws: [B, {G.k}, {G.num_ws}, {G.z_dim}]")


if __name__ == "__main__":
    main()
