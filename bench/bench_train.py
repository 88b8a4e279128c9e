#!/usr/bin/env python
"""Training benchmark: img/s, s/kimg, peak memory and MFU of whole 16-step periods (lazy R1 included).

Examples:
  python bench/bench_train.py --preset GANformer --resolution 256 --batch 32 --dtype bf16 --device cuda
  python bench/bench_train.py --preset StyleGAN2 --resolution 32 --batch 16 --channel-base 2048 --channel-max 64
  python bench/bench_train.py --flops-only --preset GANformer --resolution 256 --batch 4 \\
      --out bench/results/flops-256.json

Each timed period is 16 consecutive `Trainer.train_step` calls, so it holds exactly one R1 step (d_reg_interval
16) and, with --pl-weight, four path-length steps: the real mix of a training run. A period of warm-up steps
runs first (compilation, cuDNN autotuning).

FLOPs are counted on the meta device (no memory, no time) by running the same train_step under a dispatch
mode that adds up torch's per-op FLOP formulas (matmul, conv, their backward ops) for every aten op that runs.
Unlike torch's FlopCounterMode, whose module hooks abort inside autograd.grad, this sees R1's double backward
op by op; it measures about 6x a D forward for R1 (1 forward + 1 input gradient + about 4 for the double
backward). Elementwise ops, FIR filters and the optimiser are not counted (the MFU convention).
"""
from __future__ import annotations

import argparse
import json
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils.flop_counter import flop_registry

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
from dnnlib.precision import set_tf32  # noqa: E402
from dnnlib.threads import describe_cpu  # noqa: E402
from dnnlib.util import atomic_write  # noqa: E402
from training.distributed import Dist  # noqa: E402
from training.networks import Discriminator, Generator  # noqa: E402
from training.networks.presets import build  # noqa: E402
from training.training_loop import Trainer, TrainOptions, default_batch_gpu  # noqa: E402

PERIOD = 16   # = d_reg_interval: a period holds every phase in its training proportion

# Dense (no sparsity) tensor-core peaks in TFLOP/s, by device-name substring: bf16, and tf32 for fp32 runs.
PEAK_TFLOPS = {"H200": {"bf16": 989.0, "fp32": 494.7}, "H100": {"bf16": 989.0, "fp32": 494.7},
               "A100": {"bf16": 312.0, "fp32": 156.0}}


class FlopCount(TorchDispatchMode):
    """Adds torch's FLOP formula of every dispatched aten op (any autograd order) to `flops`."""

    def __init__(self) -> None:
        super().__init__()
        self.flops = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        formula = flop_registry.get(func._overloadpacket)
        if formula is not None:
            self.flops += int(formula(*args, **kwargs, out_val=out))
        return out


def make_trainer(a: argparse.Namespace, preset: str, device: torch.device, run_dir: str) -> Trainer:
    G_cfg, D_cfg = build(preset, a.resolution, channel_base=a.channel_base, channel_max=a.channel_max)
    G, D = Generator(G_cfg), Discriminator(D_cfg)
    opts = TrainOptions(run_dir=run_dir, resolution=a.resolution, batch_size=a.batch, batch_gpu=a.batch_gpu,
                        mixed_precision=a.dtype == "bf16", bf16_on_cpu=a.dtype == "bf16", compile=a.compile and device.type != "meta")
    opts.loss.pl_weight = a.pl_weight
    return Trainer(opts, G, D, Dist(), device, log=lambda *_: None)


def fake_batch(a: argparse.Namespace, device: torch.device):
    reals = torch.randint(0, 256, [a.batch, 3, a.resolution, a.resolution], dtype=torch.uint8, device=device)
    return reals, torch.zeros(a.batch, dtype=torch.int64), (lambda lab: torch.zeros(lab.shape[0], 0))


_flop_cache: dict[tuple, dict] = {}   # counts depend on the architecture and batch only (not dtype or compile)


def count_flops(a: argparse.Namespace, preset: str) -> dict:
    """FLOPs per image of each phase and of a whole period, counted on the meta device (cached per process,
    and in --flops-cache FILE across processes: a count at 256x256 takes seconds of Python per preset)."""
    key = (preset, a.resolution, a.batch, a.batch_gpu, a.channel_base, a.channel_max, a.pl_weight, a.period)
    cache = Path(a.flops_cache) if getattr(a, "flops_cache", None) else None
    if key not in _flop_cache and cache is not None and cache.is_file():
        _flop_cache.update({tuple(json.loads(k)): v for k, v in json.loads(cache.read_text()).items()})
    if key not in _flop_cache:
        _flop_cache[key] = _count_flops(a, preset)
        if cache is not None:
            with atomic_write(cache, "w") as f:
                f.write(json.dumps({json.dumps(list(k)): v for k, v in _flop_cache.items()}))
    return _flop_cache[key]


def _count_flops(a: argparse.Namespace, preset: str) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        tr = make_trainer(a, preset, torch.device("meta"), tmp)
        phases: dict[str, int] = {}
        run_phase = tr._phase

        def counted(net, opt, fn, chunks, gain):
            with FlopCount() as fc:
                run_phase(net, opt, fn, chunks, gain)
            phases[fn.__name__] = phases.get(fn.__name__, 0) + fc.flops
        tr._phase = counted
        reals, labels, one_hot = fake_batch(a, torch.device("meta"))
        period = 0
        for _ in range(a.period):
            before = sum(phases.values())
            tr.train_step(reals, labels, one_hot)
            period += sum(phases.values()) - before
            if tr.step == 1:
                step0 = dict(phases)          # every phase once: G, PL (when on), D, R1
        with FlopCount() as fc, torch.no_grad():
            img = tr.G(torch.randn([a.batch, tr.G.k, tr.G.z_dim], device="meta"))
        g_fwd = fc.flops
        with FlopCount() as fc, torch.no_grad():
            tr.D(img)
        d_fwd = fc.flops
    per_img = lambda n: n / a.batch / 1e9
    return {"G_forward_gflop": per_img(g_fwd), "D_forward_gflop": per_img(d_fwd),
            "phase_gflop": {k: per_img(v) for k, v in step0.items()},
            "r1_over_D_forward": step0["d_reg"] / d_fwd if "d_reg" in step0 else None,
            "flop_per_image_per_step": period / a.period / a.batch}


def peak_tflops(device: torch.device, dtype: str, override: float | None) -> float | None:
    if override:
        return override
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    return next((v[dtype] for k, v in PEAK_TFLOPS.items() if k in name), None)


def measure(a: argparse.Namespace, preset: str, device: torch.device, flops: dict) -> dict:
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    with tempfile.TemporaryDirectory() as tmp:
        tr = make_trainer(a, preset, device, tmp)
        reals, labels, one_hot = fake_batch(a, device)
        for _ in range(a.warmup_steps):
            tr.train_step(reals, labels, one_hot)
        sync()
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        periods = []
        for _ in range(a.periods):
            t0 = time.perf_counter()
            for _ in range(a.period):
                tr.train_step(reals, labels, one_hot)
            sync()
            periods.append(time.perf_counter() - t0)
        breakdown = time_breakdown(tr, (reals, labels, one_hot), a.period, device) if a.profile else None
        tr.stats.reduce()
    step = statistics.median(periods) / a.period
    mem = (torch.cuda.max_memory_allocated(device) / 2 ** 30 if device.type == "cuda"
           else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2 ** 20)
    achieved = flops["flop_per_image_per_step"] * a.batch / step / 1e12
    peak = peak_tflops(device, a.dtype, a.peak_tflops)
    return {"preset": preset, "resolution": a.resolution, "batch": a.batch, "batch_gpu": a.batch_gpu,
            "dtype": a.dtype, "compile": a.compile, "channel_base": a.channel_base, "channel_max": a.channel_max,
            "pl_weight": a.pl_weight, "sec_per_period": periods, "sec_per_step": step,
            "images_per_sec": a.batch / step, "sec_per_kimg": step * 1000 / a.batch, "peak_mem_gb": mem,
            "mem_kind": "cuda max allocated" if device.type == "cuda" else "process max RSS",
            "achieved_tflops": achieved, "peak_tflops": peak, "mfu": achieved / peak if peak else None,
            "flops": flops, "G_params": sum(p.numel() for p in tr.G.parameters()), "time_breakdown": breakdown}


MATMULS = {"mm", "addmm", "bmm", "baddbmm", "matmul", "linear"}


def op_kind(op: str) -> str:
    """--profile's grouping of an aten op: convolution (forward and backward, FIR filters included), matmul, other."""
    return "convolution" if "conv" in op else "matmul" if op in MATMULS else "other"


def time_breakdown(tr: Trainer, batch: tuple, steps: int, device: torch.device) -> dict:
    """Self time of the aten ops of `steps` training steps by kind (convolution, matmul, other), from torch's
    profiler: the share that no host-side change can remove is what convolutions and matmuls take."""
    from torch.profiler import ProfilerActivity, profile
    cuda = device.type == "cuda"
    acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])
    with profile(activities=acts) as prof:
        for _ in range(steps):
            tr.train_step(*batch)
        if cuda:
            torch.cuda.synchronize(device)
    kinds = {"convolution": 0.0, "matmul": 0.0, "other": 0.0}
    for e in prof.key_averages():
        if e.key.startswith("aten::"):
            t = e.self_device_time_total if cuda else e.self_cpu_time_total
            kinds[op_kind(e.key[len("aten::"):])] += t / 1e3 / steps                  # ms per step
    total = sum(kinds.values())
    return {"ms_per_step": kinds, "share": {k: v / total for k, v in kinds.items()} if total else {},
            "clock": "device" if cuda else "cpu", "steps": steps}


def parse(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--preset", default="GANformer,StyleGAN2", help="comma-separated presets")
    p.add_argument("--resolution", type=int, default=256)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--batch-gpu", type=int, default=None, help="default: the training default (default_batch_gpu)")
    p.add_argument("--channel-base", type=int, default=32768)
    p.add_argument("--channel-max", type=int, default=512)
    p.add_argument("--dtype", choices=["bf16", "fp32"], default="bf16", help="bf16 autocast (CPU too) or fp32")
    p.add_argument("--compile", action=argparse.BooleanOptionalAction, default=False, help="torch.compile G and D")
    p.add_argument("--pl-weight", type=float, default=0.0, help="path-length weight (the training default is 0)")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--periods", type=int, default=2, help="timed 16-step periods (the median is reported)")
    p.add_argument("--period", type=int, default=PERIOD, help="steps per period: keep 16 (smaller: smoke tests only)")
    p.add_argument("--warmup-steps", type=int, default=PERIOD, help="untimed steps first (default: a whole period)")
    p.add_argument("--peak-tflops", type=float, default=None, help="device peak for MFU (default: known GPUs)")
    p.add_argument("--flops-only", action="store_true", help="count FLOPs on the meta device, time nothing")
    p.add_argument("--flops-cache", default=None, metavar="FILE",
                   help="keep FLOP counts in this JSON file for later runs with the same architecture and batch")
    p.add_argument("--profile", action="store_true",
                   help="after timing, profile one more period: self time of convolutions, matmuls and the rest")
    p.add_argument("--out", default=None)
    a = p.parse_args(argv)
    device = torch.device(a.device)
    if a.batch_gpu is None:
        a.batch_gpu = default_batch_gpu(a.resolution, a.batch, device if not a.flops_only else torch.device("cpu"))
    return a


def main(argv=None, rows: list | None = None) -> list[dict]:
    """The rows measured (also appended one by one to `rows` when given, so that a caller keeps the finished
    ones if a later preset fails or is cut short)."""
    a = parse(argv)
    device = torch.device(a.device)
    if device.type == "cuda":
        set_tf32(True)
        torch.backends.cudnn.benchmark = True
    rows = [] if rows is None else rows
    first = len(rows)
    for preset in a.preset.split(","):
        flops = count_flops(a, preset)
        if a.flops_only:
            rows.append({"preset": preset, "resolution": a.resolution, "channel_base": a.channel_base,
                         "channel_max": a.channel_max, "pl_weight": a.pl_weight, "count_batch": a.batch,
                         "batch_gpu": a.batch_gpu, **flops})
            print(f"{preset:10s} {a.resolution}px: {flops['flop_per_image_per_step'] / 1e12:.3f} TFLOP per training "
                  f"image (G fwd {flops['G_forward_gflop']:.1f} GF, D fwd {flops['D_forward_gflop']:.1f} GF, "
                  + ", ".join(f"{k} {v:.1f}" for k, v in flops["phase_gflop"].items()) + ")")
            continue
        r = measure(a, preset, device, flops)
        rows.append(r)
        mfu = f"  MFU {100 * r['mfu']:.1f}%" if r["mfu"] is not None else ""
        print(f"{preset:10s} {a.resolution}px batch {a.batch} ({a.batch_gpu}/pass) {a.dtype}"
              f"{' compiled' if a.compile else ''}: {r['images_per_sec']:8.1f} img/s  {r['sec_per_kimg']:8.2f} s/kimg  "
              f"{r['achieved_tflops']:.2f} TFLOP/s{mfu}  peak {r['peak_mem_gb']:.2f} GB ({r['mem_kind']})")
        if r["time_breakdown"]:
            b = r["time_breakdown"]
            print("  profiled self time per step: " + ", ".join(
                f"{k} {v:.0f} ms ({100 * b['share'][k]:.0f}%)" for k, v in b["ms_per_step"].items()))
    out = Path(a.out or REPO / f"bench/results/train-{device.type}.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    cpu = describe_cpu()
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else cpu["model"]
    out.write_text(json.dumps({"device": name, "cpu": cpu, "torch": torch.__version__, "threads": torch.get_num_threads(),
                               "command": "python bench/bench_train.py " + " ".join(argv if argv is not None
                                                                                    else sys.argv[1:]),
                               "rows": rows[first:]}, indent=1))
    print(f"saved {out}")
    return rows[first:]


if __name__ == "__main__":
    main()
