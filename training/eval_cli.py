"""`run_network.py --eval`: metrics (and visualisations) for the latest snapshot of a run or a given model."""
from __future__ import annotations

import argparse
from pathlib import Path

from dnnlib.util import UserError
from training import snapshots
from training.checkpoint import latest_snapshot, load_generator
from training.sampling import pick_device


def _source(args: argparse.Namespace) -> tuple[str, Path, str]:
    """(model source, output folder, snapshot name) for --pretrained-pkl or the latest run of --expname."""
    runs = snapshots.find_runs(args.result_dir, args.expname)
    if args.pretrained_pkl:
        out = runs[-1] if runs else snapshots.new_run_dir(args.result_dir, args.expname)
        return args.pretrained_pkl, out, Path(str(args.pretrained_pkl)).name
    for run in reversed(runs):
        snap = latest_snapshot(run)
        if snap is not None:
            return str(snap), run, snap.stem     # the name training uses in metric-<name>.txt
    raise UserError(f"nothing to evaluate: no network snapshots in {args.result_dir}/{args.expname}-*; "
                    f"train first, or pass --pretrained-pkl")


def evaluate_cli(args: argparse.Namespace, vis_requested: bool) -> None:
    metrics = (args.metrics or "none").strip()
    if metrics != "none":
        from metrics.metric_main import parse_metric_names
        parse_metric_names(metrics)
        if not args.dataset:
            raise UserError("metrics need the real images: pass --dataset (or --metrics none)")
    if args.eval_images_num < 2:
        raise UserError("--eval-images-num must be >= 2")
    source, out_dir, name = _source(args)
    device = pick_device(args.gpus)
    G = load_generator(source, device)
    print(f"evaluating {source} -> {out_dir}")
    if metrics != "none":
        from training.data.dataset import load_dataset
        from training.evaluate import evaluate
        dataset = load_dataset(args.data_dir, args.dataset, resolution=G.img_resolution)
        evaluate(G, metrics, dataset, args.eval_images_num, device, out_dir, snapshot=name)
    if vis_requested:
        from training.vis_cli import run_visualizations
        run_visualizations(args, G, out_dir / "visuals", device)
