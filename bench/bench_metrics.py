"""Benchmark: Inception feature extraction (images/s) and the FID matrix square root.

    python bench/bench_metrics.py [--device cpu|cuda] [--batch 8,32] [--res 256] [--out FILE]

Images are uint8 at --res, so the timing includes NVIDIA's resize to 299 and the transfer to the
device, as in an evaluation. Results are printed and written as JSON (default
bench/results/metrics-<device>.json).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from dnnlib import util  # noqa: E402
from dnnlib.threads import describe_cpu  # noqa: E402
from metrics import fid  # noqa: E402
from metrics.feature_networks import NetworkUnavailable, load_network  # noqa: E402


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def bench_extraction(device: torch.device, batch: int, res: int, min_seconds: float, min_images: int) -> dict:
    """Images/s of the Inception pool3 network on uint8 batches, after one warm-up batch."""
    net = load_network("inception", device)
    images = torch.randint(0, 256, (batch, 3, res, res), dtype=torch.uint8,
                           generator=torch.Generator().manual_seed(0))
    if device.type == "cuda":
        images = images.pin_memory()
    net(images)
    _sync(device)
    done, start = 0, time.perf_counter()
    while done < min_images or time.perf_counter() - start < min_seconds:
        net(images)
        done += batch
    _sync(device)
    seconds = time.perf_counter() - start
    return dict(batch=batch, images=done, seconds=round(seconds, 3), images_per_s=round(done / seconds, 2))


def bench_frechet(dim: int = 2048) -> dict:
    """Seconds for one FID from 2048-d statistics, with each matrix-root method."""
    rng = np.random.default_rng(0)
    stats = []
    for _ in range(2):
        x = rng.standard_normal((dim + 100, dim))
        stats += [x.mean(0), np.cov(x, rowvar=False)]
    out = {}
    for method in ("sqrtm", "eigh"):
        start = time.perf_counter()
        value = fid.frechet_distance(*stats, method=method)
        out[method] = dict(seconds=round(time.perf_counter() - start, 3), value=round(value, 6))
    return out


@util.cli_main
def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--batch", default=None, help="comma-separated batch sizes (default: 8,32 on CPU, 64,256 on GPU)")
    p.add_argument("--res", type=int, default=256, help="input resolution before the resize to 299")
    p.add_argument("--min-seconds", type=float, default=5.0, help="time each batch size at least this long")
    p.add_argument("--no-fid", action="store_true", help="skip the FID matrix-root timing")
    p.add_argument("--out", default=None, help="JSON output (default bench/results/metrics-<device>.json)")
    args = p.parse_args()
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise util.UserError("--device cuda: no CUDA GPU here")
    batches = [int(b) for b in (args.batch or ("64,256" if device.type == "cuda" else "8,32")).split(",")]
    try:
        load_network("inception", device)
    except NetworkUnavailable as e:
        raise util.UserError(str(e)) from None
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else describe_cpu()["model"]
    report = dict(device=str(device), device_name=name, torch=torch.__version__, threads=torch.get_num_threads(),
                  cpu_count=os.cpu_count(), res=args.res, extraction=[],
                  loadavg_1m_before=round(os.getloadavg()[0], 2))  # other work on a shared machine skews CPU figures
    for batch in batches:
        row = bench_extraction(device, batch, args.res, args.min_seconds, min_images=2 * batch)
        report["extraction"].append(row)
        print(f"inception pool3 {device.type} batch {batch:4d}: {row['images_per_s']:9.2f} images/s "
              f"({row['images']} images in {row['seconds']} s)")
    if not args.no_fid:
        report["frechet_2048"] = bench_frechet()
        for method, row in report["frechet_2048"].items():
            print(f"frechet distance 2048-d, {method}: {row['seconds']} s")
    report["loadavg_1m_after"] = round(os.getloadavg()[0], 2)
    out = Path(args.out or Path(__file__).resolve().parent / "results" / f"metrics-{device.type}.json")
    with util.atomic_write(out, "w") as f:
        json.dump(report, f, indent=2)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
