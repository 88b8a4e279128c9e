#!/usr/bin/env python
"""One-shot GPU check (run by bench/gpu_check.sh): each step prints one line and writes <out>/gpu-<step>.json.

Steps: env, build, ops, gpu_tests, kernels_vs_ref, bf16_vs_fp32, trainer, syncs, bench, bench_compiled, official.
  python bench/gpu_check.py --out bench/results                      # on an H100/H200, every step
  python bench/gpu_check.py --dry-run --out /tmp/x env ops trainer   # CPU, tiny sizes (what the tests run)
  python bench/gpu_check.py --unbundle gpu-check.json --out bench/results   # one file per step again

A step that fails or runs past --step-timeout records {"status": "error" | "timeout", ...}, with whatever it had
measured so far under "partial", and the next one runs. --bundle FILE also gathers every step's result in one
file, rewritten (atomically) after each step, so a run cut short still returns the steps it finished.
In a dry run everything is on CPU at 16x16, both "kernel" and reference take the reference path, and figures
are plumbing checks only (CPU bf16 R1 values are not a reference: oneDNN's bf16 conv double backward is wrong).
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import signal
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))
from dnnlib.ops import bias_act, custom_ops, upfirdn2d  # noqa: E402
from dnnlib.precision import full_fp32, set_tf32  # noqa: E402
from dnnlib.threads import describe_cpu  # noqa: E402
from dnnlib.util import atomic_write  # noqa: E402
from training.distributed import Dist  # noqa: E402
from training.loss import GANLoss, LossConfig  # noqa: E402
from training.training_loop import Trainer, TrainOptions  # noqa: E402

STEPS = ("env", "build", "ops", "gpu_tests", "kernels_vs_ref", "bf16_vs_fp32", "trainer", "syncs", "bench",
         "bench_compiled", "official")


class Ctx:
    def __init__(self, a: argparse.Namespace):
        self.dry = a.dry_run
        self.device = torch.device("cpu" if a.dry_run else "cuda")
        self.res = 16 if a.dry_run else 256
        self.channels = {"channel_base": 256, "channel_max": 16} if a.dry_run else {}
        self.official = a.official_dir
        self.official_reference = a.official_reference
        self.partial: dict = {}         # what the running step has measured so far (kept if it times out)
        self.work = Path(a.work or tempfile.gettempdir())    # shared by the steps' processes (FLOP counts)


# -- helpers ----------------------------------------------------------------------------------------------

def nets(ctx: Ctx, preset: str = "GANformer", batch_gpu: int = 4):
    from training.networks import Discriminator, Generator
    from training.networks.presets import build
    G_cfg, D_cfg = build(preset, ctx.res, mbstd_group_size=min(4, batch_gpu), **ctx.channels)
    torch.manual_seed(0)
    G, D = Generator(G_cfg), Discriminator(D_cfg)
    return G.to(ctx.device).train(), D.to(ctx.device).train()


def rel(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.double().flatten(), b.double().flatten()
    return float((a - b).norm() / b.norm().clamp(min=1e-30))


def cosine(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(torch.nn.functional.cosine_similarity(a.double().flatten(), b.double().flatten(), dim=0))


def phase(G, D, autocast, name: str, batch: int, res: int, device, seed: int = 1) -> tuple[float, torch.Tensor]:
    """Loss value and flat gradient of one loss phase (same random draws for every call with the same seed)."""
    loss_fn = GANLoss(G, D, LossConfig(), autocast)
    net = G if name.startswith("g") else D
    G.requires_grad_(net is G)
    D.requires_grad_(net is D)
    for p in net.parameters():
        p.grad = None
    torch.manual_seed(seed)
    g = torch.Generator(device="cpu").manual_seed(seed)
    z = torch.randn([batch, G.k, G.z_dim], generator=g).to(device)
    real = (torch.rand([batch, 3, res, res], generator=g) * 2 - 1).to(device)
    args = {"g_main": (z, None), "d_main": (real, None, z), "d_r1": (real, None)}[name]
    loss, _ = getattr(loss_fn, name)(*args)
    loss.backward()
    grads = torch.cat([p.grad.flatten() for p in net.parameters() if p.grad is not None])
    return float(loss.detach()), grads


def autocast_for(ctx: Ctx, dtype: str):
    if dtype == "fp32":
        return lambda: torch.autocast(ctx.device.type, enabled=False)
    return lambda: torch.autocast(ctx.device.type, dtype=torch.bfloat16)


# -- steps ------------------------------------------------------------------------------------------------

def _cuda_failure() -> str:
    """Why CUDA is unavailable, in a line (torch's own initialisation error where it has one)."""
    if torch.version.cuda is None:
        return f"this PyTorch ({torch.__version__}) is a CPU build"
    try:
        torch.cuda.init()
    except Exception as e:  # noqa: BLE001 -- the message is the point
        return f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"
    return f"torch.cuda.device_count() = {torch.cuda.device_count()}"


def _nvidia_smi() -> str:
    try:
        return subprocess.run(["nvidia-smi", "--query-gpu=name,driver_version,clocks.max.sm,power.limit",
                               "--format=csv,noheader"], capture_output=True, text=True, timeout=20).stdout.strip()
    except (OSError, subprocess.SubprocessError) as e:
        return f"unavailable: {e}"


def step_env(ctx: Ctx) -> dict:
    home, why = custom_ops.find_cuda_home()
    out = {"python": platform.python_version(), "torch": torch.__version__, "cuda": torch.version.cuda,
           "cudnn": torch.backends.cudnn.version(), "cuda_home": home or why,
           "nvcc": custom_ops.nvcc_version(home) if home else None,
           "toolkit_mismatch": custom_ops.toolkit_mismatch(home, torch.version.cuda) if home else None,
           "host_cpu": describe_cpu()}
    if ctx.device.type == "cuda":
        p = torch.cuda.get_device_properties(ctx.device)
        out.update(device=p.name, memory_gb=p.total_memory / 2 ** 30, capability=list(torch.cuda.get_device_capability()),
                   bf16=torch.cuda.is_bf16_supported())
        out["nvidia_smi"] = _nvidia_smi()
    else:
        out["device"] = out["host_cpu"]["model"]
    return out


def _has_official(ctx: Ctx) -> bool:
    return bool(ctx.official) and (Path(ctx.official) / "training" / "networks.py").is_file()


# Each plugin's build in a process of its own, all at once: nvcc compiles one file on one core, so four builds in
# a row (ours and the official port's) took 139 s on 2 cores (torch 2.11+cu130, nvcc 13.0; 31-42 s each), more
# than the step's limit. Side by side they take about as long as the slowest.
_BUILD_OURS = "import sys; sys.path.insert(0, {repo!r}); from dnnlib.ops import {op}; {op}._plugin()"
_BUILD_OFFICIAL = ("import sys; sys.path.insert(0, {bench!r}); import compare_official as c; "
                   "r = c.official_plugins({official!r}, {{}}, build=True, names=({op!r},)); "
                   "sys.exit(0 if r[{op!r}] == 'cuda' else 3)")


def clear_build_locks() -> list[str]:
    """Remove the lock files of extension builds (ours and torch's default folder, where the official port builds).

    torch's builder holds a build folder with a `lock` file and makes every later build of it wait while the file
    exists; a build killed at its step's time limit leaves it, and every later step would then wait out its own
    limit. The check's steps run one at a time, so at a step's start no build is running and any lock is stale."""
    from torch.utils import cpp_extension
    roots = {custom_ops.build_dir_root(), Path(os.environ.get("TORCH_EXTENSIONS_DIR")
                                               or cpp_extension.get_default_build_root())}
    removed = []
    for root in roots:       # torch's: <root>/py312_cu130/<name>/lock, and the official port's <name>/<digest>/lock
        for lock in sorted(root.rglob("lock")):
            if lock.is_file():
                lock.unlink(missing_ok=True)
                removed.append(str(lock))
    return removed


def _build_all(ctx: Ctx) -> dict:
    """Start every build, wait for all; {label: {"exit_code", "sec" (when it ended), "log_tail"}}."""
    ops = ("bias_act", "upfirdn2d")
    jobs = {f"ours_{op}": _BUILD_OURS.format(repo=str(REPO), op=op) for op in ops}
    if _has_official(ctx):
        jobs.update({f"official_{op}": _BUILD_OFFICIAL.format(bench=str(REPO / "bench"), official=ctx.official, op=op)
                     for op in ops})
    t0, out = time.time(), {}
    with tempfile.TemporaryDirectory() as logs:
        procs = {}
        for label, code in jobs.items():
            with open(Path(logs) / label, "w") as log:      # a file, not a pipe: a long compiler log cannot block
                procs[label] = subprocess.Popen([sys.executable, "-c", code], stdout=log, stderr=subprocess.STDOUT)
        while len(out) < len(procs):
            for label, proc in procs.items():
                if label not in out and proc.poll() is not None:
                    out[label] = {"exit_code": proc.returncode, "sec": round(time.time() - t0, 1),
                                  "log_tail": (Path(logs) / label).read_text(errors="replace")[-1500:]}
            time.sleep(0.2)
    return out


def step_build(ctx: Ctx) -> dict:
    """Our two kernels and (when the official port is here) its two, built side by side in separate processes,
    then loaded here (from torch's extension cache), so that later steps and the official step time training
    rather than NVCC."""
    if ctx.dry:
        return {"skipped": "dry run: no CUDA"}
    out = ctx.partial
    out["parallel_builds"] = _build_all(ctx)
    for name, plugin in (("bias_act", bias_act._plugin), ("upfirdn2d", upfirdn2d._plugin)):
        t = time.time()
        plugin()
        out[name] = {"built_or_loaded_sec": time.time() - t}
    if _has_official(ctx):
        import compare_official
        out["official"] = compare_official.official_plugins(ctx.official, {}, build=True)
    return out


def step_ops(ctx: Ctx) -> dict:
    """CUDA kernel vs reference: forward, gradient and double backward, fp32 and bf16 (max relative error)."""
    kernel = "ref" if ctx.dry else "cuda"
    f = upfirdn2d.setup_filter([1, 3, 3, 1], device=ctx.device)
    ops = {"bias_act_lrelu": lambda x, b, impl: bias_act.bias_act(x, b, act="lrelu", clamp=256, impl=impl),
           "bias_act_swish": lambda x, b, impl: bias_act.bias_act(x, b, act="swish", impl=impl),
           "upsample2d": lambda x, b, impl: upfirdn2d.upsample2d(x, f, impl=impl),
           "downsample2d": lambda x, b, impl: upfirdn2d.downsample2d(x, f, impl=impl)}
    out = ctx.partial
    for dtype in (torch.float32, torch.bfloat16):
        for name, op in ops.items():
            res = {}
            for impl in ("ref", kernel):
                g = torch.Generator(device="cpu").manual_seed(0)
                x = torch.randn([4, 32, 16, 16], generator=g).to(ctx.device, dtype).requires_grad_(True)
                b = torch.randn([32], generator=g).to(ctx.device).requires_grad_(True)
                y = op(x, b, impl)
                (gx,) = torch.autograd.grad((y.float() * torch.linspace(-1, 1, y.numel(), device=ctx.device)
                                             .reshape(y.shape)).sum(), x, create_graph=True)
                gx.float().square().sum().backward()            # double backward (R1's pattern)
                g2 = x.grad if x.grad is not None else torch.zeros_like(x)    # linear ops: no 2nd-order term
                res[impl] = (y.detach(), gx.detach(), g2, y.dtype, gx.dtype)
            r, k = res["ref"], res[kernel]
            out[f"{name}_{str(dtype)[6:]}"] = {"fwd": rel(k[0], r[0]), "grad": rel(k[1], r[1]),
                                               "grad2": rel(k[2], r[2]) if r[2].norm() > 0 else 0.0,
                                               "dtypes_equal": (k[3], k[4]) == (r[3], r[4])}
    out["ok"] = all(v["dtypes_equal"] and max(v["fwd"], v["grad"], v["grad2"]) < (1e-5 if "float32" in k else 2e-2)
                    for k, v in out.items())
    return out


def step_gpu_tests(ctx: Ctx) -> dict:
    """tests/test_ops_cuda.py under pytest: the CUDA kernels against the reference (values and gradients of
    both orders in every dtype, channels-last and size-1 layouts, more than 2**31 elements). On a CPU every
    test skips."""
    import xml.etree.ElementTree as ET
    with tempfile.TemporaryDirectory() as tmp:
        report = Path(tmp) / "report.xml"
        proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-o", "addopts=",
                               str(REPO / "tests" / "test_ops_cuda.py"), f"--junitxml={report}"],
                              cwd=REPO, capture_output=True, text=True)
        suite = ET.parse(report).getroot()
    suite = suite if suite.tag == "testsuite" else suite.find("testsuite")
    failed = [f"{case.get('name')}: {(bad.get('message') or '').splitlines()[0][:300] if bad.get('message') else ''}"
              for case in suite.iter("testcase") for bad in list(case) if bad.tag in ("failure", "error")]
    counts = {k: int(suite.get(k, 0)) for k in ("tests", "failures", "errors", "skipped")}
    ctx.partial.update(counts, passed=counts["tests"] - counts["failures"] - counts["errors"] - counts["skipped"],
                       failed=failed, returncode=proc.returncode, output_tail=proc.stdout[-2000:])
    if failed or proc.returncode != 0:          # recorded as status "error", with the above under "partial"
        raise RuntimeError(f"{len(failed)} of {counts['tests']} GPU tests failed (pytest exit {proc.returncode})")
    return ctx.partial


# Each loss phase run two ways on the same weights and random draws, the checked way against its reference:
# step -> ((name, autocast dtype, reference ops?) checked, (name, dtype, reference ops?) reference).
PHASE_COMPARISONS = {
    "kernels_vs_ref": (("kernel", "fp32", False), ("ref", "fp32", True)),
    "bf16_vs_fp32": (("bf16", "bf16", False), ("fp32", "fp32", False)),
}


def compare_phases(ctx: Ctx, step: str) -> dict:
    """Per loss phase (G main, D main, R1): both losses, their relative difference, gradients' relative
    error and cosine, for the two ways PHASE_COMPARISONS names for `step`."""
    G, D = nets(ctx)
    out = ctx.partial
    for name in ("g_main", "d_main", "d_r1"):
        runs = {}
        for way, dtype, ref_ops in PHASE_COMPARISONS[step]:
            with custom_ops.reference_ops() if ref_ops else contextlib.nullcontext():
                runs[way] = phase(G, D, autocast_for(ctx, dtype), name, 4, ctx.res, ctx.device)
        (loss, grad), (loss_ref, grad_ref) = runs.values()
        out[name] = {**{f"loss_{way}": v[0] for way, v in runs.items()},
                     "loss_rel": abs(loss - loss_ref) / max(abs(loss_ref), 1e-30),
                     "grad_rel": rel(grad, grad_ref), "grad_cosine": cosine(grad, grad_ref)}
    return out


def step_kernels_vs_ref(ctx: Ctx) -> dict:
    """Whole GANformer G + D + R1 in fp32: kernels vs the reference ops (same weights and random draws)."""
    return compare_phases(ctx, "kernels_vs_ref")


def step_bf16_vs_fp32(ctx: Ctx) -> dict:
    """One training step's losses and gradients under bf16 autocast vs fp32, GANformer at the check's resolution."""
    out = compare_phases(ctx, "bf16_vs_fp32")
    if ctx.dry:
        out["note"] = "CPU bf16 R1 values are not a reference (oneDNN bf16 conv double backward)"
    return out


def _trainer(ctx: Ctx, tmp: str, batch: int = 8, **kw) -> Trainer:
    G, D = nets(ctx, batch_gpu=batch)
    opts = TrainOptions(run_dir=tmp, resolution=ctx.res, batch_size=batch, batch_gpu=batch, bf16_on_cpu=False, **kw)
    return Trainer(opts, G, D, Dist(), ctx.device, log=lambda *_: None)


def _batch(ctx: Ctx, batch: int):
    """A uint8 batch on the CPU, pinned on a GPU machine as the training loader pins its batches (a copy from
    pageable memory would add a host sync per step that training does not have)."""
    reals = torch.randint(0, 256, [batch, 3, ctx.res, ctx.res], dtype=torch.uint8)
    reals = reals.pin_memory() if ctx.device.type == "cuda" else reals
    return reals, torch.zeros(batch, dtype=torch.int64), (lambda lab: torch.zeros(lab.shape[0], 0))


def step_trainer(ctx: Ctx) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        batch = 4 if ctx.dry else 8
        tr = _trainer(ctx, tmp, batch=batch)
        data = _batch(ctx, batch)
        times = []
        for _ in range(3):
            t = time.time()
            tr.train_step(*data)
            if ctx.device.type == "cuda":
                torch.cuda.synchronize()
            times.append(time.time() - t)
        stats = tr.stats.reduce()
        finite = all(bool(torch.isfinite(p).all()) for net in (tr.G, tr.D, tr.G_ema) for p in net.parameters())
    return {"sec_per_step": times, "stats": stats, "params_finite": finite, "amp": str(tr.amp_dtype)}


def step_syncs(ctx: Ctx) -> dict:
    """Host syncs per step over a 16-step period (CUDA runtime sync calls and aten scalar reads, from the
    profiler), without augmentation and with every bgc transform at p = 0.5."""
    for name, kw in (("no_augment", {}), ("augment_bgc_p0.5", {"augment": "fixed", "augment_p": 0.5})):
        ctx.partial[name] = _count_syncs(ctx, **kw)
    return {**ctx.partial, "note": "aten::_local_scalar_dense includes CPU random draws of style mixing "
            "(CPU tensors, no device sync); the CUDA runtime sync calls are the device syncs"}


def _count_syncs(ctx: Ctx, **opts) -> dict:
    from torch.profiler import ProfilerActivity, profile
    acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if ctx.device.type == "cuda" else [])
    with tempfile.TemporaryDirectory() as tmp:
        tr = _trainer(ctx, tmp, batch=4 if ctx.dry else 8, **opts)
        data = _batch(ctx, 4 if ctx.dry else 8)
        n = 2 if ctx.dry else 16                            # a whole period on the GPU (R1 included)
        tr.train_step(*data)                                # warm-up outside the profile
        with profile(activities=acts) as prof:
            for _ in range(n):
                tr.train_step(*data)
        if ctx.device.type == "cuda":
            torch.cuda.synchronize()
    names = {"cudaStreamSynchronize", "cudaDeviceSynchronize", "cudaEventSynchronize", "cudaMemcpy"}
    counts: dict[str, int] = {}
    for e in prof.events():
        if e.name in names or e.name == "aten::_local_scalar_dense":
            counts[e.name] = counts.get(e.name, 0) + 1
    return {k: v / n for k, v in counts.items()}


def step_bench(ctx: Ctx, compiled: bool = False) -> dict:
    """bench_train's GANformer and StyleGAN2 rows (256x256, batch 32) in bf16 and fp32, most wanted first
    (GANformer bf16), one row at a time: a step cut short keeps the rows it finished. On the GPU each row
    warms up 4 steps (the first of which runs R1, so its kernels are tuned too) and times one 16-step period."""
    import bench_train
    rows = ctx.partial.setdefault("rows", [])
    base = (["--resolution", "16", "--batch", "4", "--channel-base", "256", "--channel-max", "16", "--periods", "1",
             "--warmup-steps", "1", "--period", "2", "--device", "cpu"] if ctx.dry
            else ["--resolution", "256", "--batch", "32", "--periods", "1", "--warmup-steps", "4"])
    variants = [(d, p) for d in ("bf16", "fp32") for p in ("GANformer", "StyleGAN2")]
    if ctx.dry:
        variants = [("fp32", p) for p in ("GANformer", "StyleGAN2")]
    with tempfile.TemporaryDirectory() as tmp:
        for dtype, preset in variants:
            argv = base + ["--preset", preset, "--dtype", dtype, "--compile" if compiled else "--no-compile",
                           "--flops-cache", str(ctx.work / "flops.json"), "--out", str(Path(tmp) / "b.json")]
            try:
                bench_train.main(argv, rows=rows)
            except Exception as e:                         # one failing variant (a compile error) keeps the rest
                rows.append({"preset": preset, "dtype": dtype, "compile": compiled,
                             "error": f"{type(e).__name__}: {e}"})
    return {"rows": rows}


def step_bench_compiled(ctx: Ctx) -> dict:
    if ctx.dry:
        return {"skipped": "dry run: compiling on a CPU takes minutes"}
    return step_bench(ctx, compiled=True)


def step_official(ctx: Ctx) -> dict:
    if not _has_official(ctx):
        return {"skipped": "official pytorch_version/ not found (pass --official-dir, a git-ignored folder)"}
    import compare_official
    # one 16-step period per side (a GPU's periods are steady): the official CLI's micro-batch of 4 makes its
    # 256x256 step several times ours, and the step's time limit must hold both sides and their warm-up
    argv = ["--official-dir", ctx.official, "--device", ctx.device.type, "--periods", "1",
            "--warmup-steps", "1" if ctx.dry else "2"]
    if ctx.official_reference:
        argv += ["--reference", ctx.official_reference]
    argv += (["--resolution", "16", "--channel-base", "256", "--channel-max", "16", "--batch", "4"] if ctx.dry
             else ["--resolution", "256", "--channel-base", "32768", "--channel-max", "512", "--batch", "32"])
    with tempfile.TemporaryDirectory() as tmp:
        return compare_official.main(argv + ["--out", str(Path(tmp) / "c.json")])


# -- driver -----------------------------------------------------------------------------------------------

# Steps that compare two computations: both run without TF32 (cuDNN would otherwise give the reference ops'
# convolutions, and the rest of an fp32 step, ~1e-3 of TF32 rounding that is no difference of the kernels or
# of bf16); training and the benchmarks keep TF32.
COMPARISONS = {"ops", "kernels_vs_ref", "bf16_vs_fp32"}


class StepTimeout(BaseException):
    """Not an Exception: a step's own `except Exception` (one failing variant keeps the rest) must not swallow it."""


def _alarm(signum, frame):
    raise StepTimeout()


def run_step(name: str, ctx: Ctx, out_dir: Path, timeout: int, bundle: Path | None = None) -> dict:
    t0 = time.time()
    ctx.partial = {}
    signal.signal(signal.SIGALRM, _alarm)
    signal.alarm(timeout)
    try:
        with full_fp32() if name in COMPARISONS else contextlib.nullcontext():
            result = {"status": "ok", **globals()[f"step_{name}"](ctx)}
    except StepTimeout:
        result = {"status": "timeout", "timeout_sec": timeout, "partial": ctx.partial}
    except Exception as e:  # a failing step is a result, not the end of the check
        result = {"status": "error", "error": f"{type(e).__name__}: {e}", "traceback": traceback.format_exc()[-3000:],
                  "partial": ctx.partial}
    finally:
        signal.alarm(0)
    result.update(step=name, sec=time.time() - t0, dry_run=ctx.dry)
    path = record(name, result, out_dir, bundle)
    print(f"[{name}] {result['status']} in {result['sec']:.1f}s -> {path}", flush=True)
    return result


def record(name: str, result: dict, out_dir: Path, bundle: Path | None) -> Path:
    """<out_dir>/gpu-<name>.json, and the step's entry in the bundle file when there is one."""
    path = out_dir / f"gpu-{name}{'-dryrun' if result.get('dry_run') else ''}.json"
    write_json(path, result)
    if bundle is not None:
        steps = json.loads(bundle.read_text())["steps"] if bundle.is_file() else {}
        steps[name] = result
        write_json(bundle, {"steps": steps})
    return path


def write_json(path: Path, obj) -> None:
    """Whole or not at all (dnnlib.util.atomic_write)."""
    with atomic_write(path, "w") as f:
        f.write(json.dumps(obj, indent=1, default=str))


def unbundle(bundle: Path, out_dir: Path) -> list[Path]:
    """A --bundle file back into one gpu-<step>.json per step (what bench/results holds)."""
    steps = json.loads(bundle.read_text())["steps"]
    unknown = [name for name in steps if name not in STEPS]
    if unknown:
        raise ValueError(f"{bundle}: unknown step {unknown[0]!r}")
    return [record(name, result, out_dir, None) for name, result in steps.items()]


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("steps", nargs="*", default=[], help=f"steps to run (default: all): {', '.join(STEPS)}")
    p.add_argument("--dry-run", action="store_true", help="CPU, tiny sizes (tests)")
    p.add_argument("--out", default=str(REPO / "bench" / "results"))
    p.add_argument("--step-timeout", type=int, default=240)
    p.add_argument("--official-dir", default=None, help="the official port's pytorch_version/ (git-ignored)")
    p.add_argument("--official-reference", default=None,
                   help="folder with the official reference config.json (default: compare_official's)")
    p.add_argument("--bundle", default=None, help="also gather all steps' results in this one JSON file")
    p.add_argument("--work", default=None, help="scratch folder the steps share (default: the system's temp)")
    p.add_argument("--unbundle", default=None, metavar="FILE", help="split a --bundle file into --out and exit")
    p.add_argument("--killed", type=int, default=None, metavar="CODE",
                   help="record that the given step's process was killed from outside with this exit code")
    a = p.parse_args(argv)
    bundle = Path(a.bundle) if a.bundle else None
    if a.unbundle:
        out = Path(a.out)
        out.mkdir(parents=True, exist_ok=True)
        try:
            paths = unbundle(Path(a.unbundle), out)
        except (OSError, ValueError, KeyError) as e:      # json.JSONDecodeError is a ValueError
            print(f"gpu_check: cannot split {a.unbundle}: {type(e).__name__}: {e}", file=sys.stderr)
            return 2
        for path in paths:
            print(path)
        return 0
    unknown = [s for s in a.steps if s not in STEPS]
    if unknown:
        print(f"gpu_check: unknown step(s) {', '.join(unknown)}; choose from {', '.join(STEPS)}", file=sys.stderr)
        return 2
    if a.killed is not None:
        for name in a.steps:
            record(name, {"status": "killed", "exit_code": a.killed, "step": name, "dry_run": a.dry_run}, Path(a.out),
                   bundle)
        return 0
    if not a.dry_run and not torch.cuda.is_available():
        why = _cuda_failure()
        print(f"gpu_check: no CUDA device ({why}); use --dry-run on CPU", file=sys.stderr)
        if "env" in (a.steps or STEPS):       # what there is, for the diagnosis
            record("env", {"status": "error", "error": f"no CUDA device: {why}", "step": "env", "dry_run": False,
                           "python": platform.python_version(), "torch": torch.__version__, "cuda": torch.version.cuda,
                           "nvidia_smi": _nvidia_smi()}, Path(a.out), bundle)
        return 2
    if not a.dry_run:
        set_tf32(True)
        for lock in clear_build_locks():
            print(f"gpu_check: removed {lock}, left by a build that was stopped", file=sys.stderr)
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    ctx = Ctx(a)
    results = [run_step(s, ctx, out, a.step_timeout, bundle) for s in (a.steps or STEPS)]
    return 0 if all(r["status"] == "ok" for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
