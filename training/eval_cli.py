"""`run_network.py --eval/--vis`: metrics (and visualisations) for the latest snapshot of a run or a given model."""
from __future__ import annotations

from pathlib import Path

from dnnlib.util import UserError
from training import snapshots
from training.checkpoint import latest_snapshot, load_generator
from training.run_config import SCENES, RunConfig
from training.sampling import pick_device


def _source(run: RunConfig) -> tuple[str, Path | None, str]:
    """(model source, output folder or None = a new run folder, snapshot name) for --pretrained-pkl or the
    latest run of --expname. Nothing is created here: the model loads first."""
    runs = snapshots.find_runs(run.result_dir, run.expname)
    if run.pretrained_pkl:
        return run.pretrained_pkl, runs[-1] if runs else None, Path(str(run.pretrained_pkl)).name
    for folder in reversed(runs):
        snap = latest_snapshot(folder)
        if snap is not None:
            return str(snap), folder, snap.stem     # the name training uses in metric-<name>.txt
    raise UserError(f"nothing to evaluate: no network snapshots in {run.result_dir}/{run.expname}-*; "
                    f"train first, or pass --pretrained-pkl")


def evaluate_cli(run: RunConfig) -> None:
    metrics = (run.metrics or "none").strip()
    if metrics != "none":
        from metrics.metric_main import parse_metric_names
        parse_metric_names(metrics)
        if not run.dataset:
            raise UserError("metrics need the real images: pass --dataset (or --metrics none)")
    source, out_dir, name = _source(run)
    device = pick_device(run.gpus)
    G = load_generator(source, device)
    if metrics != "none":
        from training.data.dataset import ensure_scenes, load_dataset
        if run.dataset == SCENES:
            ensure_scenes(run.data_dir, G.img_resolution)
        dataset = load_dataset(run.data_dir, run.dataset, resolution=G.img_resolution)
    out_dir = out_dir or snapshots.new_run_dir(run.result_dir, run.expname)
    print(f"evaluating {source} -> {out_dir}")
    if metrics != "none":
        from training.evaluate import evaluate
        evaluate(G, metrics, dataset, run.eval_images_num, device, out_dir, snapshot=name)
    if run.vis.types:
        from training.vis_cli import run_visualizations
        run_visualizations(run, G, out_dir / "visuals", device)
