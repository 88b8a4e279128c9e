"""`run_network.py --train`: validate flags, pick the run folder (resume or new), launch the processes."""
from __future__ import annotations

import argparse
import json
import os
from pathlib import Path
from typing import Optional

import torch

from dnnlib.threads import choose_threads
from dnnlib.util import UserError, atomic_write
from training import snapshots
from training.checkpoint import kimg_tag
from training.networks.config import DiscriminatorConfig, GeneratorConfig, from_dict, to_dict
from training.data.dataset import SCENES, dataset_path, ensure_scenes, is_complete, read_manifest
from training.distributed import Dist, from_torchrun, launch
from training.loss import LossConfig
from training.networks import Discriminator, Generator
from training.options import dataset_gamma, mirror_default, resolve
from training.training_loop import Trainer, TrainOptions


def _check(args: argparse.Namespace) -> list[int]:
    if not args.dataset:
        raise UserError("--train needs --dataset (e.g. --dataset scenes, the built-in dataset)")
    if args.num_threads is not None and args.num_threads < 1:
        raise UserError(f"--num-threads must be >= 1, got {args.num_threads}")
    if args.batch_size < 1 or args.batch_gpu < 1:
        raise UserError("--batch-size and --batch-gpu must be >= 1")
    if args.total_kimg <= 0 or args.kimg_per_tick <= 0 or args.snapshot_ticks < 1 or not args.state_minutes >= 0:
        raise UserError("--total-kimg and --kimg-per-tick must be > 0, --snapshot-ticks >= 1, --state-minutes >= 0")
    try:
        gpus = [int(g) for g in str(args.gpus).split(",") if g.strip() != ""]
    except ValueError:
        raise UserError(f"--gpus must be a comma-separated list of indices, got {args.gpus!r}") from None
    n = max(1, len(gpus))
    if n & (n - 1):
        raise UserError(f"the number of GPUs must be a power of two, got {n}")
    if args.batch_size % n or (args.batch_size // n) % min(args.batch_gpu, args.batch_size // n):
        raise UserError(f"--batch-size {args.batch_size} must split evenly over {n} processes "
                        f"and into chunks of --batch-gpu {args.batch_gpu}")
    if args.metrics not in ("none", ""):
        from metrics.metric_main import parse_metric_names
        parse_metric_names(args.metrics)           # unknown names fail now, not at the first snapshot
    return gpus


def _prepare_dataset(args: argparse.Namespace) -> dict:
    path = dataset_path(args.data_dir, args.dataset)
    if args.dataset == SCENES:
        ensure_scenes(args.data_dir, args.resolution)
    if not is_complete(path):
        raise UserError(f"dataset {args.dataset!r} not found (or incomplete) in {args.data_dir}; "
                        f"prepare it with prepare_data.py, or use --dataset scenes")
    m = read_manifest(path)
    if m["resolution"] < args.resolution:
        raise UserError(f"dataset {args.dataset} is {m['resolution']}x{m['resolution']}, "
                        f"smaller than --resolution {args.resolution}")
    return m


def _options(args: argparse.Namespace, run_dir: Path, world: int) -> TrainOptions:
    loss = LossConfig(g_loss=args.g_loss, d_loss=args.d_loss, r1_gamma=dataset_gamma(args),
                      style_mixing=args.style_mixing, component_mixing=args.component_mixing, pl_weight=args.pl_weight)
    return TrainOptions(run_dir=str(run_dir), data_dir=args.data_dir, dataset=args.dataset, resolution=args.resolution,
                        mirror=bool(mirror_default(args)), max_images=args.train_images_num, batch_size=args.batch_size,
                        batch_gpu=min(args.batch_gpu, args.batch_size // world), total_kimg=args.total_kimg,
                        kimg_per_tick=args.kimg_per_tick, snapshot_ticks=args.snapshot_ticks,
                        state_minutes=args.state_minutes, g_lr=args.g_lr,
                        d_lr=args.d_lr, ema_kimg=args.ema_kimg, ema_rampup=args.ema_rampup, seed=args.seed, mixed_precision=not args.fp32,
                        truncation_psi=args.truncation_psi, keep_samples=args.keep_samples,
                        summarize=args.summarize, last_snapshots=args.last_snapshots, loss=loss,
                        metrics=args.metrics or "none", eval_images_num=args.eval_images_num)


def _metrics_callback(opts: TrainOptions, d: Dist, device: torch.device):
    """Rank 0 evaluates G_ema at each snapshot; returns None when no metrics are asked for."""
    if not d.is_main or opts.metrics in ("none", ""):
        return None
    from training.data.dataset import load_dataset
    from training.evaluate import evaluate
    dataset = load_dataset(opts.data_dir, opts.dataset, resolution=opts.resolution, auto_scenes=False)
    num = min(opts.eval_images_num, len(dataset))
    if num < opts.eval_images_num:
        print(f"note: the dataset has {len(dataset)} images; metrics use {num} (--eval-images-num {opts.eval_images_num})")
    return lambda G, kimg: evaluate(G, opts.metrics, dataset, num, device, opts.run_dir,
                                    snapshot=f"network-snapshot-{kimg_tag(round(kimg * 1000))}", progress=False)


def _worker(d: Dist, opts: TrainOptions, G_cfg: dict, D_cfg: dict, resume: Optional[str],
            pretrained: Optional[dict], gpus: list[int]) -> None:
    if torch.cuda.is_available():
        device = torch.device("cuda", gpus[d.local_rank] if d.local_rank < len(gpus) else d.local_rank)
        torch.cuda.set_device(device)
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True
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
    trainer = Trainer(opts, G, D, d, device, G_ema=G_ema, evaluate=_metrics_callback(opts, d, device))
    if resume:
        trainer.load_state(Path(resume))
        trainer.log(f"resumed from {resume} at {trainer.cur_nimg / 1000:.1f} kimg")
    trainer.run()


def _load_pretrained(args: argparse.Namespace) -> tuple[dict, dict, dict]:
    """(G config, D config, state dicts of G, D, G_ema): fine-tuning keeps the architecture of the model it
    starts from (ours, official PyTorch or TF). Loaded once here and handed to every process."""
    from training.checkpoint import load_networks
    nets = load_networks(args.pretrained_pkl)
    G = nets.get("G") or nets.get("G_ema")
    if G is None or "D" not in nets:
        raise UserError(f"{args.pretrained_pkl} has no generator and discriminator to fine-tune "
                        f"(a release snapshot with G_ema only can be sampled, not trained)")
    if G.img_resolution != args.resolution:
        print(f"note: training at the pretrained model's resolution {G.img_resolution}")
        args.resolution = G.img_resolution
    G_ema = nets.get("G_ema") or G
    states = {"G": G.state_dict(), "D": nets["D"].state_dict(), "G_ema": G_ema.state_dict()}
    return to_dict(G.cfg), to_dict(nets["D"].cfg), states


def train(args: argparse.Namespace) -> None:
    gpus = _check(args)
    tr = from_torchrun()
    runs = snapshots.find_runs(args.result_dir, args.expname)
    resume = snapshots.latest_state(runs[-1]) if runs and not args.restart else None
    pretrained = _load_pretrained(args) if args.pretrained_pkl and not resume else None
    manifest = _prepare_dataset(args) if tr is None or tr.is_main else None
    world = tr.world_size if tr else max(1, len(gpus))
    if resume:
        run_dir = runs[-1]
        _, configs, _, _ = snapshots.load_state(resume)
        G_cfg, D_cfg = configs["G"], configs["D"]
    else:
        run_dir = snapshots.new_run_dir(args.result_dir, args.expname) if (tr is None or tr.is_main) else None
        c_dim = len((manifest or {}).get("class_names") or []) if (manifest or {}).get("labels") else 0
        if pretrained:
            G_cfg, D_cfg = pretrained[:2]
        else:
            G_obj, D_obj = resolve(args, args.resolution, c_dim=c_dim)
            G_cfg, D_cfg = to_dict(G_obj), to_dict(D_obj)
        D_cfg["mbstd_group_size"] = min(D_cfg["mbstd_group_size"] or 4, args.batch_gpu)
    opts = _options(args, run_dir, world)
    opts.num_threads, why = choose_threads(args.num_threads, world)
    if tr is None or tr.is_main:
        with atomic_write(Path(run_dir) / "config.json", "w") as f:
            json.dump({"args": vars(args), "G": G_cfg, "D": D_cfg, "train": to_dict(opts)}, f, indent=1, default=str)
        print(f"run folder: {run_dir}" + (f" (resuming {Path(resume).name})" if resume else ""))
        print(f"CPU threads per process: {opts.num_threads} ({why}; OMP_WAIT_POLICY "
              f"{os.environ.get('OMP_WAIT_POLICY', 'default')}; --num-threads N chooses)")
    if tr is not None:
        _worker(tr, opts, G_cfg, D_cfg, str(resume) if resume else None, pretrained and pretrained[2], gpus)
        return
    if world > 1 and not torch.cuda.is_available():
        print(f"note: no CUDA GPU; running {world} CPU processes (gloo)")
    launch(_worker, world, (opts, G_cfg, D_cfg, str(resume) if resume else None, pretrained and pretrained[2], gpus),
           backend="nccl" if torch.cuda.is_available() else "gloo")
