"""`run_network.py --train`: validate flags, pick the run folder (resume or new), launch the processes."""
from __future__ import annotations

import contextlib
import dataclasses
import json
import os
from pathlib import Path
from typing import Optional

import torch

from dnnlib.precision import set_tf32
from dnnlib.threads import choose_threads
from dnnlib.util import UserError, atomic_write, folder_lock
from training import snapshots
from training.checkpoint import kimg_tag
from training.networks.config import DiscriminatorConfig, GeneratorConfig, from_dict, to_dict
from training.data.dataset import SCENES, dataset_path, ensure_scenes, is_complete, read_manifest
from training.distributed import Dist, cuda_index, from_torchrun, launch, teardown
from training.networks import Discriminator, Generator
from training.run_config import RunConfig, TrainOptions
from training.training_loop import Trainer, default_batch_gpu


def _check(run: RunConfig) -> list[int]:
    args = run.train
    if not run.dataset:
        raise UserError("--train needs --dataset (e.g. --dataset scenes, the built-in dataset)")
    try:
        gpus = [int(g) for g in str(run.gpus).split(",") if g.strip() != ""]
    except ValueError:
        raise UserError(f"--gpus must be a comma-separated list of indices, got {run.gpus!r}") from None
    n = max(1, len(gpus))
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:          # under torchrun its processes split the batch
        n = int(os.environ["WORLD_SIZE"])
    if n & (n - 1):
        raise UserError(f"the number of GPUs must be a power of two, got {n}")
    if args.batch_size % n or (args.batch_size // n) % min(args.batch_gpu or 1, args.batch_size // n):
        raise UserError(f"--batch-size {args.batch_size} must split evenly over {n} processes "
                        f"and into chunks of --batch-gpu {args.batch_gpu}")
    if run.metrics not in ("none", ""):
        from metrics.metric_main import parse_metric_names
        parse_metric_names(run.metrics)           # unknown names fail now, not at the first snapshot
    return gpus


def _prepare_dataset(run: RunConfig, resolution: int) -> dict:
    """The dataset's manifest; the built-in scenes are rendered here (the one step that creates data)."""
    path = dataset_path(run.data_dir, run.dataset)
    if run.dataset == SCENES:
        ensure_scenes(run.data_dir, resolution)
    if not is_complete(path):
        raise UserError(f"dataset {run.dataset!r} not found (or incomplete) in {run.data_dir}; "
                        f"prepare it with prepare_data.py, or use --dataset scenes")
    m = read_manifest(path)
    if m["resolution"] < resolution:
        raise UserError(f"dataset {run.dataset} is {m['resolution']}x{m['resolution']}, "
                        f"smaller than --resolution {resolution}")
    if m["resolution"] > resolution:
        print(f"note: dataset {run.dataset} is {m['resolution']}x{m['resolution']}; training at "
              f"--resolution {resolution} on box-downsampled images")
    return m


def _metrics_callback(run: RunConfig, opts: TrainOptions, d: Dist, device: torch.device):
    """Rank 0 evaluates G_ema at each snapshot; returns None when no metrics are asked for."""
    if not d.is_main or run.metrics in ("none", ""):
        return None
    from training.data.dataset import load_dataset
    from training.evaluate import evaluate
    dataset = load_dataset(opts.data_dir, opts.dataset, resolution=opts.resolution)
    num = min(run.eval_images_num, len(dataset))
    if num < run.eval_images_num:
        print(f"note: the dataset has {len(dataset)} images; metrics use {num} (--eval-images-num {run.eval_images_num})")
    return lambda G, kimg: evaluate(G, run.metrics, dataset, num, device, opts.run_dir,
                                    snapshot=f"network-snapshot-{kimg_tag(round(kimg * 1000))}")


def _worker(d: Dist, opts: TrainOptions, G_cfg: dict, D_cfg: dict, resume: Optional[str],
            pretrained: Optional[dict], gpus: list[int], run: RunConfig) -> None:
    if torch.cuda.is_available():
        device = torch.device("cuda", cuda_index(d.local_rank, gpus))
        torch.cuda.set_device(device)
        set_tf32(True)                        # float32 work in TF32 (metrics and augmentation turn it off)
        torch.backends.cudnn.benchmark = True
    else:
        device = torch.device("cpu")
    if opts.num_threads:
        torch.set_num_threads(opts.num_threads)
    torch.manual_seed(opts.seed)
    G = Generator(from_dict(GeneratorConfig, G_cfg))
    D = Discriminator(from_dict(DiscriminatorConfig, D_cfg))
    G_ema = None
    if pretrained and not resume:
        G.load_state_dict(pretrained["G"])
        D.load_state_dict(pretrained["D"])
        G_ema = Generator(from_dict(GeneratorConfig, G_cfg))
        G_ema.load_state_dict(pretrained["G_ema"])
    trainer = Trainer(opts, G, D, d, device, G_ema=G_ema, evaluate=_metrics_callback(run, opts, d, device))
    if resume:
        trainer.load_state(Path(resume))
        trainer.log(f"resumed from {resume} at {trainer.cur_nimg / 1000:.1f} kimg")
    trainer.run()


def _load_pretrained(path: str) -> tuple[dict, dict, dict]:
    """(G config, D config, state dicts of G, D, G_ema): fine-tuning keeps the architecture of the model it
    starts from (ours, official PyTorch or TF). Loaded once here and handed to every process."""
    from training.checkpoint import load_networks
    nets = load_networks(path)
    G = nets.get("G") or nets.get("G_ema")
    if G is None or "D" not in nets:
        raise UserError(f"{path} has no generator and discriminator to fine-tune "
                        f"(a release snapshot with G_ema only can be sampled, not trained)")
    G_ema = nets.get("G_ema") or G
    states = {"G": G.state_dict(), "D": nets["D"].state_dict(), "G_ema": G_ema.state_dict()}
    return to_dict(G.cfg), to_dict(nets["D"].cfg), states


def _networks(run: RunConfig, resume: Optional[Path], pretrained: Optional[tuple], c_dim: int,
              resolution: int) -> tuple[dict, dict]:
    """G and D configs: a resumed run's own, a pretrained model's, or the flags' (preset + explicit)."""
    if resume:
        _, configs, _, _ = snapshots.load_state(resume)
        return configs["G"], configs["D"]
    if pretrained:
        return pretrained[0], pretrained[1]
    G_cfg, D_cfg = run.network_configs(resolution, c_dim=c_dim)
    return to_dict(G_cfg), to_dict(D_cfg)


def _batch_gpu(run: RunConfig, resolution: int, world: int) -> int:
    per_rank = run.train.batch_size // world
    if run.train.batch_gpu is None:
        device = torch.device("cuda", 0) if torch.cuda.is_available() else torch.device("cpu")
        return default_batch_gpu(resolution, per_rank, device)
    return min(run.train.batch_gpu, per_rank)


def _pick_run(run: RunConfig) -> tuple[Optional[Path], Optional[Path]]:
    """(run folder to continue or None for a new one, training state to resume or None).

    The latest run of --expname is continued from its newest verifying state; one killed before its
    first state is reused by the same command. --restart always starts a new folder.
    """
    runs = snapshots.find_runs(run.result_dir, run.expname)
    if not runs or run.restart:
        return None, None
    resume = snapshots.newest_good_state(runs[-1])
    if resume is not None or snapshots.unstarted_training_run(runs[-1]):
        return runs[-1], resume
    return None, None


def _dataset_note(run_dir: Path, manifest: dict, resume: Optional[Path]) -> None:
    """Say so when the dataset a run trained on was replaced since (its content hash changed)."""
    if not resume:
        return
    try:
        before = json.loads((run_dir / "config.json").read_text()).get("dataset_hash")
    except (OSError, ValueError, AttributeError):
        return
    if before and before != manifest.get("content_hash"):
        print(f"warning: the dataset changed since this run last wrote config.json "
              f"({before[:19]} -> {str(manifest.get('content_hash'))[:19]}); training continues on the new data")


def _plan(run: RunConfig, world: int, stack: contextlib.ExitStack) -> dict:
    """What every process needs (rank 0 decides it): loop options, network configs, resume point. The run
    folder is created (or reused) only after everything else checked out, and locked for the run (`stack`)."""
    run_dir, resume = _pick_run(run)
    if not resume and not run.pretrained_pkl:
        run.network_configs(run.image_resolution())      # model flags fail before any data is rendered
    pretrained = _load_pretrained(run.pretrained_pkl) if run.pretrained_pkl and not resume else None
    resolution = run.image_resolution()
    if pretrained and pretrained[0]["img_resolution"] != resolution:
        resolution = pretrained[0]["img_resolution"]
        print(f"note: training at the pretrained model's resolution {resolution}")
    manifest = _prepare_dataset(run, resolution)
    c_dim = len(manifest.get("class_names") or []) if manifest.get("labels") else 0
    G_cfg, D_cfg = _networks(run, resume, pretrained, c_dim, resolution)
    run_dir = run_dir or snapshots.new_run_dir(run.result_dir, run.expname)
    stack.enter_context(folder_lock(run_dir, "run folder"))
    snapshots.clean_run_dir(run_dir, snapshots.load_state(resume)[3].get("tick", 0) if resume else 0)
    _dataset_note(run_dir, manifest, resume)
    threads, why, auto = choose_threads(run.num_threads, world)
    opts = dataclasses.replace(run.train, run_dir=str(run_dir), data_dir=run.data_dir, dataset=run.dataset,
                               resolution=resolution, batch_gpu=_batch_gpu(run, resolution, world),
                               num_threads=threads, follow_load=auto and world == 1)
    with atomic_write(Path(run_dir) / "config.json", "w") as f:
        json.dump({"run": to_dict(run), "G": G_cfg, "D": D_cfg, "train": to_dict(opts),
                   "dataset_hash": manifest.get("content_hash")}, f, indent=1, default=str)
    print(f"run folder: {run_dir}" + (f" (resuming {Path(resume).name})" if resume else ""))
    print(f"CPU threads per process: {threads} ({why}{'; re-checked during training' if opts.follow_load else ''}"
          f"; --num-threads N fixes it)")
    return dict(opts=opts, G_cfg=G_cfg, D_cfg=D_cfg, resume=str(resume) if resume else None,
                pretrained=pretrained and pretrained[2])


def _shared_plan(run: RunConfig, d: Dist, stack: contextlib.ExitStack) -> dict:
    """Under torchrun every process runs train(): rank 0 plans and hands the plan (or its error) to the
    others, so all ranks build the same networks (labels included) in the same run folder. The others
    start from random weights that the trainer replaces with rank 0's."""
    plan: list = [None]
    if d.is_main:
        try:
            plan[0] = _plan(run, d.world_size, stack)
        except UserError as e:
            plan[0] = {"error": str(e)}
        shared = {k: v for k, v in plan[0].items() if k != "pretrained"}
        torch.distributed.broadcast_object_list([shared], src=0)
    else:
        torch.distributed.broadcast_object_list(plan, src=0)
    if "error" in plan[0]:
        raise UserError(plan[0]["error"])
    return plan[0] if d.is_main else {**plan[0], "pretrained": None}


def train(run: RunConfig) -> None:
    gpus = _check(run)
    tr = from_torchrun(gpus)
    world = tr.world_size if tr else max(1, len(gpus))
    with contextlib.ExitStack() as stack:            # holds the run folder's lock until training ends
        plan = _shared_plan(run, tr, stack) if tr is not None else _plan(run, world, stack)
        args = (plan["opts"], plan["G_cfg"], plan["D_cfg"], plan["resume"], plan["pretrained"], gpus, run)
        if tr is not None:
            _worker(tr, *args)
            teardown()
            return
        if world > 1 and not torch.cuda.is_available():
            print(f"note: no CUDA GPU; running {world} CPU processes (gloo)")
        launch(_worker, world, args, backend="nccl" if torch.cuda.is_available() else "gloo")
