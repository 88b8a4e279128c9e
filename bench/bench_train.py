#!/usr/bin/env python
"""Training-step benchmark: images/s, s/kimg and peak memory for a preset, resolution and batch size.

Examples:
  python bench/bench_train.py --preset GANformer --resolution 256 --batch 32 --device cuda
  python bench/bench_train.py --preset StyleGAN2 --resolution 32 --batch 16 --channel-base 2048 --channel-max 64
Prints one line per configuration and writes JSON (default bench/results/train-<device>.json). Steps run the
full schedule (G, D, lazy R1 every 16 steps) on random reals, after warm-up.
"""
from __future__ import annotations

import argparse
import json
import platform
import resource
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from training.networks.presets import build  # noqa: E402
from training.distributed import Dist  # noqa: E402
from training.networks import Discriminator, Generator  # noqa: E402
from training.training_loop import Trainer, TrainOptions  # noqa: E402


def measure(preset: str, res: int, batch: int, batch_gpu: int, device: torch.device, steps: int, warmup: int,
            base: int, cmax: int, bf16: bool, run_dir: str) -> dict:
    G_cfg, D_cfg = build(preset, res, channel_base=base, channel_max=cmax)
    G, D = Generator(G_cfg), Discriminator(D_cfg)
    opts = TrainOptions(run_dir=run_dir, resolution=res, batch_size=batch, batch_gpu=batch_gpu, mixed_precision=bf16)
    tr = Trainer(opts, G, D, Dist(), device, log=lambda *_: None)
    reals = torch.randint(0, 256, [batch, 3, res, res], dtype=torch.uint8)
    labels = torch.zeros(batch, dtype=torch.int64)
    one_hot = lambda lab: torch.zeros(lab.shape[0], 0)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    for _ in range(warmup):
        tr.train_step(reals, labels, one_hot)
    sync()
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    t0 = time.perf_counter()
    for _ in range(steps):
        tr.train_step(reals, labels, one_hot)
    sync()
    dt = (time.perf_counter() - t0) / steps
    mem = (torch.cuda.max_memory_allocated(device) / 2 ** 30 if device.type == "cuda"
           else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2 ** 20)
    return {"preset": preset, "resolution": res, "batch": batch, "batch_gpu": batch_gpu, "channel_base": base,
            "channel_max": cmax, "bf16": bf16 and device.type == "cuda", "sec_per_step": dt,
            "images_per_sec": batch / dt, "sec_per_kimg": dt * 1000 / batch,
            "peak_mem_gb": mem, "mem_kind": "cuda max allocated" if device.type == "cuda" else "process max RSS",
            "G_params": sum(p.numel() for p in G.parameters())}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--preset", default="GANformer,StyleGAN2", help="comma-separated presets")
    p.add_argument("--resolution", type=int, default=256)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--batch-gpu", type=int, default=None, help="default: --batch (no accumulation)")
    p.add_argument("--channel-base", type=int, default=32768)
    p.add_argument("--channel-max", type=int, default=512)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--fp32", action="store_true", help="no bf16 autocast")
    p.add_argument("--out", default=None)
    args = p.parse_args()
    device = torch.device(args.device)
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True
        torch.backends.cudnn.benchmark = True
    rows = []
    import tempfile
    with tempfile.TemporaryDirectory() as tmp:
        for preset in args.preset.split(","):
            r = measure(preset, args.resolution, args.batch, args.batch_gpu or args.batch, device, args.steps,
                        args.warmup, args.channel_base, args.channel_max, not args.fp32, tmp)
            rows.append(r)
            print(f"{preset:10s} {args.resolution}px batch {args.batch}: {r['images_per_sec']:8.1f} img/s  "
                  f"{r['sec_per_kimg']:8.2f} s/kimg  peak {r['peak_mem_gb']:.2f} GB ({r['mem_kind']})")
    out = Path(args.out or Path(__file__).resolve().parent / f"results/train-{device.type}.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    device_name = torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "cpu"
    out.write_text(json.dumps({"device": device_name, "torch": torch.__version__, "threads": torch.get_num_threads(),
                               "command": " ".join(sys.argv), "rows": rows}, indent=1))
    print(f"saved {out}")


if __name__ == "__main__":
    main()
