"""Loader throughput: images/s of batches of 32 uint8 images, from shards in the page cache.

    python bench/bench_loader.py [--out bench/results/loader-cpu.json] [--seconds 3]

Writes a synthetic dataset (random pixels; the loader never decodes, so content does not matter)
at 64x64 and 256x256 to a temporary folder, reads it once to warm the page cache, then times
random batches (mirror augmentation on) through three paths:
  direct      ImageDataset.get_batch(indices) on the training thread
  prefetch    training.data.dataset.iterate_batches (a background thread gathers ahead)
  loader_wN   training.data.dataset.make_loader: a DataLoader of whole batches, N worker processes
  dataloader  a plain DataLoader(dataset, batch_size=32, sampler=InfiniteSampler), item collation
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from training.data.dataset import ImageDataset, InfiniteSampler, iterate_batches, make_loader
from training.data.writer import DatasetWriter

BATCH = 32


def make_dataset(root: Path, resolution: int, count: int) -> Path:
    path = root / f"synthetic-{resolution}"
    w = DatasetWriter(path, name=path.name, resolution=resolution, channels=3, capacity=count, shards_num=2,
                      ratio=1.0, fingerprint={"bench": resolution})
    rng = np.random.default_rng(0)
    with w:
        w.start()
        for i in range(0, count, 256):
            w.add_batch(rng.integers(0, 256, size=(min(256, count - i), 3, resolution, resolution), dtype=np.uint8))
            w.advance(min(count, i + 256))
        w.finish()
    for shard in path.glob("shard-*.u8"):           # page cache warm-up
        with open(shard, "rb") as f:
            while f.read(1 << 24):
                pass
    return path


def timed(batches, seconds: float) -> float:
    """images/s over `seconds` after 20 warm-up batches."""
    for _ in range(20):
        next(batches)
    n, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        images, _ = next(batches)
        n += images.shape[0]
    return n / (time.perf_counter() - t0)


def direct(ds: ImageDataset):
    it = iter(InfiniteSampler(len(ds), seed=0))
    while True:
        yield ds.get_batch(np.fromiter(it, np.int64, BATCH))


def plain_dataloader(ds: ImageDataset):
    return iter(torch.utils.data.DataLoader(ds, batch_size=BATCH, sampler=InfiniteSampler(len(ds), seed=0)))


def bench(path: Path, seconds: float) -> dict:
    ds = ImageDataset(path, mirror=True)
    out = {"direct": timed(direct(ds), seconds)}
    gen = iterate_batches(ds, InfiniteSampler(len(ds), seed=0), BATCH)
    out["prefetch"] = timed(gen, seconds)
    gen.close()
    for workers in (0, 2):
        loader = make_loader(ds, InfiniteSampler(len(ds), seed=0), BATCH, workers)
        out[f"loader_w{workers}"] = timed(iter(loader), seconds)
    out["dataloader"] = timed(plain_dataloader(ds), seconds)
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default="bench/results/loader-cpu.json", help="JSON results (default: %(default)s)")
    p.add_argument("--seconds", type=float, default=3.0, help="timing window per measurement")
    p.add_argument("--images", type=int, default=4096, help="images per synthetic dataset")
    args = p.parse_args()
    torch.set_num_threads(min(2, os.cpu_count() or 1))
    results = {"batch_size": BATCH, "cpu_count": os.cpu_count(), "torch": torch.__version__,
               "platform": platform.platform(), "load_average_at_start": os.getloadavg()[0],
               "images_per_s": {}}
    with tempfile.TemporaryDirectory() as tmp:
        for res in (64, 256):
            path = make_dataset(Path(tmp), res, args.images)
            r = bench(path, args.seconds)
            results["images_per_s"][f"{res}x{res}"] = {k: round(v) for k, v in r.items()}
            print(f"{res}x{res}: " + ", ".join(f"{k} {v:,.0f} img/s" for k, v in r.items()), flush=True)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(results, indent=1) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
