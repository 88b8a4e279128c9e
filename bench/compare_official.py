#!/usr/bin/env python
"""Training-step speed of ours vs the official GANformer PyTorch port, side by side in one process.

Both sides train the same architecture from the same weights: the official `Generator`/`Discriminator` built
from a reference folder's kwargs (resolution and channel widths overridable), ours translated from those kwargs
by training/importers/official_pt.py. A measurement is 16 consecutive steps (so it holds one lazy R1 step and
four official G_reg stages, wherever it starts) of each side's own training step: ours `Trainer.train_step`, theirs its
`run_training_stage` over its stages plus its EMA update, with the official default --batch-gpu 4 unless
--official-batch-gpu says otherwise. Periods alternate ours, theirs, ours, theirs...; medians are reported.
On a CPU our Trainer makes glibc keep freed memory (dnnlib/cpu_alloc.py); the setting is the process's, so the
official side's periods run with it too (the JSON says whether it was on).

The official code is not part of this repository: export `pytorch_version/` of dorarad/gansformer to a
git-ignored folder (e.g. official/pytorch_version) and pass it as --official-dir. Modules it imports only for
logging, plotting and downloads (termcolor, seaborn, gdown, psutil) are stubbed when missing.

  python bench/compare_official.py --official-dir official/pytorch_version --resolution 32 \\
      --channel-base 2048 --channel-max 64 --batch 32 --periods 3
"""
from __future__ import annotations

import argparse
import contextlib
import functools
import importlib
import json
import os
import shlex
import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parent.parent
DEFAULT_REF = REPO.parent / "shared" / "reference" / "official-pytorch" / "A_ganformer_default_32"
PERIOD = 16
_STUBS = {"termcolor": "def colored(s, *a, **k):\n    return s\n", "seaborn": "", "gdown": "", "psutil": ""}


@functools.lru_cache(maxsize=None)
def _stub_dir() -> str:
    d = Path(tempfile.mkdtemp(prefix="official-stubs-"))
    for name, body in _STUBS.items():
        try:
            importlib.import_module(name)
        except ImportError:
            (d / f"{name}.py").write_text(body)
    return str(d)


_ROOTS = ("training", "dnnlib", "torch_utils", "loader", "metrics")


@contextlib.contextmanager
def official_modules(official_dir: str, theirs: dict):
    """Their `training`/`dnnlib`/`torch_utils` packages in sys.modules (and on sys.path) for the block; ours after.

    `theirs` keeps their loaded modules between blocks (their persistence checks re-import by name)."""
    ours = {k: sys.modules.pop(k) for k in list(sys.modules) if k.split(".")[0] in _ROOTS}
    sys.modules.update(theirs)
    paths = [_stub_dir(), official_dir]
    sys.path[:0] = paths
    try:
        yield
    finally:
        for p in paths:
            sys.path.remove(p)
        theirs.update({k: sys.modules.pop(k) for k in list(sys.modules) if k.split(".")[0] in _ROOTS})
        sys.modules.update(ours)


def import_official(official_dir: str, theirs: dict) -> dict:
    with official_modules(official_dir, theirs):
        return {n: importlib.import_module(n) for n in ("training.networks", "training.loss", "training.training_loop",
                                                        "dnnlib")}


@contextlib.contextmanager
def importable_extensions():
    """Within the block, an extension that torch's `cpp_extension.load` builds is also registered in sys.modules
    under its name.

    The official port loads its kernels with `load(name=...)` and then `importlib.import_module(name)`, which
    worked while torch 1.x's loader registered the module. torch 2.x's returns it without registering it, so the
    import fails ("No module named 'bias_act_plugin'", seen with torch 2.11) and the port runs its reference
    ops on a GPU. Registering the module the loader returned gives it its CUDA kernels, as on its own torch."""
    from torch.utils import cpp_extension
    load = cpp_extension.load

    def load_and_register(*args, **kwargs):
        module = load(*args, **kwargs)
        name = kwargs.get("name", args[0] if args else None)
        if isinstance(name, str) and hasattr(module, "__name__"):
            sys.modules.setdefault(name, module)
        return module

    cpp_extension.load = load_and_register
    cpath = os.environ.get("CPATH")
    extra = _pip_cuda_headers(cpp_extension.CUDA_HOME)
    if extra:
        os.environ["CPATH"] = os.pathsep.join(extra + ([cpath] if cpath else []))
    try:
        yield
    finally:
        cpp_extension.load = load
        if extra:
            if cpath is None:
                os.environ.pop("CPATH", None)
            else:
                os.environ["CPATH"] = cpath


_LIBRARY_HEADERS = ("cusparse.h", "cublas_v2.h", "cusolverDn.h")


def _pip_cuda_headers(cuda_home: str | None) -> list[str]:
    """Include folders of pip's CUDA library packages (nvidia/*/include) when the toolkit lacks the library
    headers: the official kernels include ATen/cuda/CUDAContext.h, which wants cusparse.h, cublas_v2.h and
    cusolverDn.h; a toolkit with nvcc and the runtime only (seen on the development machine) has none of them."""
    if cuda_home and all((Path(cuda_home) / "include" / h).is_file() for h in _LIBRARY_HEADERS):
        return []
    try:
        import nvidia  # the namespace package of pip's CUDA libraries (torch's CUDA wheels depend on them)
    except ImportError:
        return []
    return [str(inc) for root in nvidia.__path__ for inc in sorted(Path(root).glob("*/include"))
            if any((inc / h).is_file() for h in _LIBRARY_HEADERS)]


def official_plugins(official_dir: str, theirs: dict, build: bool, names: tuple = ("bias_act", "upfirdn2d")) -> dict:
    """Whether the official port's CUDA kernels are loaded ("cuda") or it runs its reference ops ("ref").
    With `build`, load (building where needed) them first; its own code falls back to the reference ops,
    with a warning, where they do not build. Its ops keep what was loaded here for the rest of the process."""
    out = {}
    with official_modules(official_dir, theirs), importable_extensions():
        for name in names:
            op = importlib.import_module(f"torch_utils.ops.{name}")
            if build:
                t = time.time()
                with warnings.catch_warnings(record=True) as caught:
                    warnings.simplefilter("always")
                    op._init()
                out[f"{name}_build_sec"] = time.time() - t
                if caught:
                    out[f"{name}_warning"] = str(caught[0].message)[-1500:]
            out[name] = "cuda" if op._plugin is not None else "ref"
    return out


def official_kwargs(reference: Path, res: int, base: int, cmax: int) -> tuple[dict, dict]:
    cfg = json.loads((reference / "config.json").read_text())
    gk, dk = json.loads(json.dumps(cfg["G_kwargs"])), json.loads(json.dumps(cfg["D_kwargs"]))
    gk["img_resolution"] = dk["img_resolution"] = res
    gk["synthesis_kwargs"].update(channel_base=base, channel_max=cmax)
    dk.update(channel_base=base, channel_max=cmax)
    return gk, dk


class OfficialStep:
    """The official training iteration: its stages (main + lazy reg for G and D) and its EMA update."""

    def __init__(self, mods: dict, gk: dict, dk: dict, a: argparse.Namespace, device: torch.device):
        EasyDict = mods["dnnlib"].EasyDict
        net_kw = lambda k: {n: v for n, v in k.items() if n not in ("reg_interval", "opt_args")}
        torch.manual_seed(0)
        self.G = mods["training.networks"].Generator(**net_kw(gk)).to(device).train()
        self.D = mods["training.networks"].Discriminator(**net_kw(dk)).to(device).train()
        self.Gs = mods["training.networks"].Generator(**net_kw(gk)).to(device).eval().requires_grad_(False)
        self.Gs.load_state_dict(self.G.state_dict())
        loss_args = EasyDict(class_name="training.loss.StyleGAN2Loss", g_loss="logistic_ns", d_loss="logistic",
                             r1_gamma=10.0, pl_weight=a.pl_weight, style_mixing=0.9, component_mixing=0.0)
        cG = EasyDict(reg_interval=gk["reg_interval"], opt_args=EasyDict(gk["opt_args"]))
        cD = EasyDict(reg_interval=dk["reg_interval"], opt_args=EasyDict(dk["opt_args"]))
        tl = mods["training.training_loop"]
        self.tl, self.a, self.device = tl, a, device
        self.loss, self.stages = tl.setup_training_stages(loss_args, self.G, cG, self.D, cD,
                                                          {"G": self.G, "D": self.D}, device, log=None)
        self.batch_idx = self.cur_nimg = 0

    def step(self, reals_u8: torch.Tensor) -> None:
        a, bg = self.a, self.a.official_batch_gpu
        real = (reals_u8.to(self.device).float() / 127.5 - 1).split(bg)
        real_c = torch.zeros([a.batch, 0], device=self.device).split(bg)
        zs = torch.randn([len(self.stages) * a.batch, *self.G.input_shape[1:]], device=self.device).split(a.batch)
        for stage, z in zip(self.stages, zs):
            if self.batch_idx % stage.interval == 0:
                self.tl.run_training_stage(self.loss, stage, self.device, real, real_c, z.split(bg), real_c,
                                           a.batch, bg, 1)
        self.tl.update_ema_network(self.G, self.Gs, a.batch, self.cur_nimg, 10.0, None)
        self.cur_nimg += a.batch
        self.batch_idx += 1


def our_trainer(gk: dict, dk: dict, official_G: torch.nn.Module, official_D: torch.nn.Module,
                a: argparse.Namespace, device: torch.device, run_dir: str):
    from training.distributed import Dist
    from training.importers.official_pt import discriminator_config, generator_config, load_into
    from training.networks import Discriminator, Generator
    from training.training_loop import Trainer, TrainOptions, default_batch_gpu
    G, D = Generator(generator_config(gk)), Discriminator(discriminator_config(dk))
    load_into(G, official_G.state_dict(), "G")
    load_into(D, official_D.state_dict(), "D")
    batch_gpu = a.batch_gpu or default_batch_gpu(a.resolution, a.batch, device)
    opts = TrainOptions(run_dir=run_dir, resolution=a.resolution, batch_size=a.batch, batch_gpu=batch_gpu,
                        mixed_precision=a.mixed_precision, compile=a.compile)
    opts.loss.pl_weight = a.pl_weight
    return Trainer(opts, G, D, Dist(), device, log=lambda *_: None), batch_gpu


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--official-dir", required=True, help="the official port's pytorch_version/ folder")
    p.add_argument("--reference", default=str(DEFAULT_REF), help="official-pytorch reference folder (kwargs)")
    p.add_argument("--resolution", type=int, default=32)
    p.add_argument("--channel-base", type=int, default=2048)
    p.add_argument("--channel-max", type=int, default=64)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--batch-gpu", type=int, default=None, help="ours (default: the training default)")
    p.add_argument("--official-batch-gpu", type=int, default=4, help="theirs (default: their CLI default, 4)")
    p.add_argument("--pl-weight", type=float, default=0.0)
    p.add_argument("--compile", action=argparse.BooleanOptionalAction, default=False)
    p.add_argument("--mixed-precision", action=argparse.BooleanOptionalAction, default=True,
                   help="ours: bf16 autocast where training uses it by default (CUDA with bf16; not on CPU); "
                        "the official port trains in float32 (its fp16 option is commented out)")
    p.add_argument("--periods", type=int, default=3, help="timed 16-step periods per side")
    p.add_argument("--warmup-steps", type=int, default=4, help="untimed steps per side first")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--note", default="", help="the conditions of the run (load, what ran beside it), stored")
    p.add_argument("--out", default=None)
    a = p.parse_args(argv)
    sys.path.insert(0, str(REPO))
    from dnnlib.cpu_alloc import keep_freed_memory
    from dnnlib.threads import describe_cpu
    device = torch.device(a.device)
    gk, dk = official_kwargs(Path(a.reference), a.resolution, a.channel_base, a.channel_max)
    theirs: dict = {}
    mods = import_official(a.official_dir, theirs)
    with official_modules(a.official_dir, theirs):
        official = OfficialStep(mods, gk, dk, a, device)
    # On a GPU, the official kernels are loaded before anything runs (their ops would otherwise load them lazily,
    # outside importable_extensions(), and fall back to their reference ops on torch 2.x).
    official_ops = official_plugins(a.official_dir, theirs, build=True) if device.type == "cuda" else "ref"
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    with tempfile.TemporaryDirectory() as tmp:
        ours, batch_gpu = our_trainer(gk, dk, official.G, official.D, a, device, tmp)
        reals = torch.randint(0, 256, [a.batch, 3, a.resolution, a.resolution], dtype=torch.uint8)
        labels, one_hot = torch.zeros(a.batch, dtype=torch.int64), (lambda lab: torch.zeros(lab.shape[0], 0))
        steps = {"ours": lambda: ours.train_step(reals, labels, one_hot), "official": lambda: official.step(reals)}
        times: dict[str, list[float]] = {"ours": [], "official": []}
        for step in steps.values():
            for _ in range(a.warmup_steps):
                step()
        # Any 16 consecutive steps hold one R1 step and four G_reg steps on both sides.
        for _ in range(a.periods):
            for name, step in steps.items():
                sync()
                t = time.perf_counter()
                for _ in range(PERIOD):
                    step()
                sync()
                times[name].append(time.perf_counter() - t)
        ours.stats.reduce()
    per_step = {k: statistics.median(v) / PERIOD for k, v in times.items()}
    ratio = per_step["official"] / per_step["ours"]
    # each official period over the ours period just before it: the spread says how steady the machine was
    pairs = [theirs / mine for mine, theirs in zip(times["ours"], times["official"])]
    n_ours = sum(p.numel() for p in ours.G.parameters()) + sum(p.numel() for p in ours.D.parameters())
    n_off = sum(p.numel() for p in official.G.parameters()) + sum(p.numel() for p in official.D.parameters())
    result = {"resolution": a.resolution, "channel_base": a.channel_base, "channel_max": a.channel_max,
              "batch": a.batch, "batch_gpu_ours": batch_gpu, "batch_gpu_official": a.official_batch_gpu,
              "pl_weight": a.pl_weight, "compile": a.compile, "ours_autocast": str(ours.amp_dtype),
              "device": str(device), "cpu": describe_cpu(), "torch": torch.__version__,
              "threads": torch.get_num_threads(), "params_ours": n_ours, "params_official": n_off,
              "sec_per_period": times, "sec_per_step": per_step, "images_per_sec": {k: a.batch / v for k, v in per_step.items()},
              "official_over_ours": ratio, "official_over_ours_per_period_pair": pairs, "conditions": a.note,
              # process-wide, set when our Trainer is built on a CPU: the official side's periods run with it too
              "allocator_keeps_freed_memory": device.type == "cpu" and keep_freed_memory(),
              "official_ops": official_ops,
              "command": "python bench/compare_official.py " + shlex.join(argv if argv is not None else sys.argv[1:])}
    print(f"{a.resolution}px batch {a.batch} on {device}: ours {per_step['ours'] * 1000:.0f} ms/step (batch-gpu {batch_gpu}), "
          f"official {per_step['official'] * 1000:.0f} ms/step (batch-gpu {a.official_batch_gpu}); "
          f"official/ours = {ratio:.2f} (per period pair {min(pairs):.2f}-{max(pairs):.2f})")
    out = Path(a.out or REPO / f"bench/results/compare-official-train-{device.type}.json")
    out.write_text(json.dumps(result, indent=1))
    print(f"saved {out}")
    return result


if __name__ == "__main__":
    main()
