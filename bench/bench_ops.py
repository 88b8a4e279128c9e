"""Time the custom ops: reference (plain PyTorch) vs CUDA kernel, forward and forward+backward.

    python bench/bench_ops.py                 # CUDA if present, else CPU with smaller shapes
    python bench/bench_ops.py --device cpu --out /tmp/ops.json

Prints a table and writes JSON (default bench/results/ops-<device>.json).
"""
from __future__ import annotations

import argparse
import json
import re
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from dnnlib.ops import bias_act, conv2d_resample, upfirdn2d
from dnnlib.util import atomic_write


def _device_tag(device: torch.device) -> str:
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    return re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _time_ms(fn: Callable[[], None], device: torch.device, repeats: int) -> float:
    """Median wall time of `fn` in milliseconds after two warm-up calls (which also trigger builds)."""
    for _ in range(2):
        fn()
    _sync(device)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        _sync(device)
        times.append((time.perf_counter() - t0) * 1e3)
    times.sort()
    return times[len(times) // 2]


def _cases(device: torch.device, batch: int, channels: int, res: int) -> list[tuple[str, str, Callable[[str], Callable]]]:
    """(op name, shape text, factory: impl -> callable returning a tensor), shaped like generator layers."""
    f = upfirdn2d.setup_filter([1, 3, 3, 1], device=device)
    x = torch.randn(batch, channels, res, res, device=device, requires_grad=True)
    b = torch.randn(channels, device=device, requires_grad=True)
    w = torch.randn(channels, channels, 3, 3, device=device, requires_grad=True)
    shape = f"{batch}x{channels}x{res}x{res}"

    return [
        ("bias_act lrelu+clamp", shape, lambda impl: lambda: bias_act.bias_act(x, b, act="lrelu", clamp=256, impl=impl)),
        ("bias_act swish", shape, lambda impl: lambda: bias_act.bias_act(x, b, act="swish", impl=impl)),
        ("upsample2d [1,3,3,1]", shape, lambda impl: lambda: upfirdn2d.upsample2d(x, f, impl=impl)),
        ("downsample2d [1,3,3,1]", shape, lambda impl: lambda: upfirdn2d.downsample2d(x, f, impl=impl)),
        ("filter2d [1,3,3,1]", shape, lambda impl: lambda: upfirdn2d.filter2d(x, f, impl=impl)),
        # No impl switch here: it takes upfirdn2d's default dispatch (kernel on CUDA, reference on CPU).
        ("conv2d_resample up=2 3x3", shape, lambda impl: lambda: conv2d_resample.conv2d_resample(x, w, f, up=2, padding=1)),
    ]


def run(device: torch.device, batch: int, channels: int, res: int, repeats: int) -> list[dict]:
    impls = ["ref", "cuda"] if device.type == "cuda" else ["ref"]
    rows = []
    for op, shape, make in _cases(device, batch, channels, res):
        for impl in (["auto"] if op.startswith("conv2d_resample") else impls):
            fn = make(impl)
            try:
                fwd = _time_ms(fn, device, repeats)
                fwd_bwd = _time_ms(lambda fn=fn: fn().sum().backward(), device, repeats)
            except RuntimeError as e:  # e.g. the kernel does not build on this machine
                rows.append({"op": op, "shape": shape, "impl": impl, "error": str(e).splitlines()[0]})
                continue
            rows.append({"op": op, "shape": shape, "impl": impl, "fwd_ms": round(fwd, 4), "fwd_bwd_ms": round(fwd_bwd, 4)})
    return rows


def _print_table(rows: list[dict]) -> None:
    print(f"{'op':<28}{'shape':<18}{'impl':<6}{'fwd ms':>10}{'fwd+bwd ms':>12}")
    for r in rows:
        if "error" in r:
            print(f"{r['op']:<28}{r['shape']:<18}{r['impl']:<6}  error: {r['error']}")
        else:
            print(f"{r['op']:<28}{r['shape']:<18}{r['impl']:<6}{r['fwd_ms']:>10.3f}{r['fwd_bwd_ms']:>12.3f}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    ap.add_argument("--out", type=Path, default=None, help="JSON path (default bench/results/ops-<device>.json)")
    ap.add_argument("--batch", type=int, default=None, help="default 8 on CUDA, 2 on CPU")
    ap.add_argument("--channels", type=int, default=None, help="default 256 on CUDA, 32 on CPU")
    ap.add_argument("--res", type=int, default=None, help="default 64 on CUDA, 32 on CPU")
    ap.add_argument("--repeats", type=int, default=None, help="timed runs per case (median reported)")
    args = ap.parse_args()

    if args.device == "auto":
        device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    else:
        if args.device == "cuda" and not torch.cuda.is_available():
            sys.exit("error: --device cuda but no CUDA device is available")
        device = torch.device(args.device)
    gpu = device.type == "cuda"
    batch = args.batch or (8 if gpu else 2)
    channels = args.channels or (256 if gpu else 32)
    res = args.res or (64 if gpu else 32)
    repeats = args.repeats or (20 if gpu else 10)

    rows = run(device, batch, channels, res, repeats)
    _print_table(rows)
    tag = _device_tag(device)
    out = args.out or Path(__file__).resolve().parent / "results" / f"ops-{tag}.json"
    report = {
        "device": tag,
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "threads": torch.get_num_threads(),
        "repeats": repeats,
        "results": rows,
    }
    with atomic_write(out, "w") as fh:
        json.dump(report, fh, indent=2)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
