"""The training loop (spec §8): phases, lazy regularisation, EMA, ticks, snapshots, resume."""
from __future__ import annotations

import contextlib
import copy
import hashlib
import time
from pathlib import Path
from typing import Callable, Optional

import torch

from dnnlib.cpu_alloc import keep_freed_memory
from dnnlib.progress import StatusLine, fmt_time
from dnnlib.threads import ThreadGovernor
from dnnlib.util import UserError
from training import snapshots
from training.checkpoint import kimg_tag
from training.data.dataset import InfiniteSampler, iterate_batches, load_dataset, to_device, to_float
from training.distributed import Dist, FlatGrads, average_buffer, check_consistency, sync_params
from training.data.augment import build as build_augment, config_from
from training.loss import GANLoss
from training.networks import Discriminator, Generator
from training.run_config import TrainOptions
from training.sampling import save_png, to_uint8, z_from_seeds
from training.stats import JsonlWriter, StatsCollector, TensorBoardWriter
from training.visualize import attention_images, dataset_grid, labels_for, view_grid


def step_seed(seed: int, rank: int, step: int) -> int:
    """Seeds derive from (seed, rank, step) so that a resumed run continues the same random stream."""
    return int.from_bytes(hashlib.sha256(f"{seed}/{rank}/{step}".encode()).digest()[:8], "little") >> 1


def default_batch_gpu(resolution: int, per_rank_batch: int, device: torch.device) -> int:
    """The micro-batch when --batch-gpu is not given: the largest divisor of the per-process batch that fits.

    On a GPU the cap is StyleGAN2-ADA's rule, 4096 // resolution images (per-image activation memory grows
    about linearly with resolution once channels are capped), doubled on GPUs with >= 60 GiB (H100/H200,
    A100-80GB): 32 at 256x256, 16 at 512, 8 at 1024. On CPU memory is not the limit and every extra
    micro-batch only adds overhead, so the whole per-process batch runs at once.
    """
    if device.type != "cuda":
        return per_rank_batch
    big = torch.cuda.get_device_properties(device).total_memory >= 60 * 2 ** 30
    cap = max(1, (8192 if big else 4096) // resolution)
    return max(d for d in range(1, per_rank_batch + 1) if per_rank_batch % d == 0 and d <= cap)


def make_optimizer(net: torch.nn.Module, lr: float, interval: int,
                   betas: tuple[float, float] = (0.0, 0.99)) -> torch.optim.Adam:
    """Adam (betas (0, 0.99) by default) with the lazy-regularisation rescaling rho = I / (I + 1) (spec §8).

    The fused (single-kernel) Adam where torch has it for the parameters' device, else the foreach one.
    """
    rho = interval / (interval + 1) if interval else 1.0
    device = next(net.parameters()).device.type
    impl = {"fused": True} if device in ("cuda", "cpu") else {"foreach": True}
    return torch.optim.Adam(net.parameters(), lr=lr * rho, betas=(betas[0] ** rho, betas[1] ** rho), eps=1e-8, **impl)


# torch.compile of G.generate needs torch 2.13 or later. torch 2.11's compiled generate under no_grad in training
# mode (the D phase's fakes) gave images up to 12 away from eager ones for a tiny GANformer; with gradients, or
# in eval mode, it agreed to 1e-5, as 2.13 does in all four cases. 2.12 was not tried. Older torch keeps G
# eager and compiles D only (D's step agreed with eager on 2.11).
COMPILE_G_MIN_TORCH = (2, 13)


def torch_compiles_generator(version: str = torch.__version__) -> bool:
    """Whether `--compile` also compiles G.generate with this torch (see COMPILE_G_MIN_TORCH)."""
    major, minor = (int("".join(c for c in part if c.isdigit()) or 0) for part in version.split("+")[0].split(".")[:2])
    return (major, minor) >= COMPILE_G_MIN_TORCH


class CompiledGenerate:
    """G with a compiled `generate`, the method the loss calls (torch.compile(G) compiles only `forward`;
    its `generate` would stay eager). Every other attribute is G's own."""

    def __init__(self, G: Generator):
        self.module, self.generate = G, torch.compile(G.generate)

    def __getattr__(self, name: str):
        return getattr(self.module, name)


class Trainer:
    def __init__(self, opts: TrainOptions, G: Generator, D: Discriminator, d: Dist, device: torch.device,
                 G_ema: Optional[Generator] = None, log: Callable[[str], None] = print,
                 evaluate: Optional[Callable[[Generator, float], dict]] = None):
        self.opts, self.d, self.device, self.evaluate = opts, d, device, evaluate
        if device.type == "cpu":
            keep_freed_memory()             # freed activations stay in the heap (dnnlib/cpu_alloc.py)
        self.log = log if d.is_main else (lambda *_: None)
        self.G, self.D = G.to(device).train(), D.to(device).train()
        self.G_ema = (G_ema if G_ema is not None else copy.deepcopy(G)).to(device).eval().requires_grad_(False)
        for net in (self.G, self.D, self.G_ema):
            sync_params(net, d.world_size)
        self.grads = {self.G: FlatGrads(self.G.parameters()), self.D: FlatGrads(self.D.parameters())}
        self.ema_pairs = (list(self.G_ema.parameters()), list(self.G.parameters()),
                          list(self.G_ema.buffers()), list(self.G.buffers()))
        betas = (opts.adam_beta1, opts.adam_beta2)
        self.opt_G = make_optimizer(self.G, opts.g_lr, opts.g_reg_interval, betas)
        self.opt_D = make_optimizer(self.D, opts.d_lr, opts.d_reg_interval, betas)
        use_bf16 = opts.mixed_precision and (torch.cuda.is_bf16_supported() if device.type == "cuda"
                                             else device.type == "cpu" and opts.bf16_on_cpu)
        self.amp_dtype = torch.bfloat16 if use_bf16 else None
        self.autocast = (lambda: torch.autocast(device.type, dtype=torch.bfloat16)) if use_bf16 else contextlib.nullcontext
        self.augment_pipe, self.ada = build_augment(config_from(opts))
        self.loss = GANLoss(self.G, self.D, opts.loss, self.autocast, augment=self.augment_pipe, ada=self.ada)
        # Compiled twins for the first-order phases; R1 and path length need double backward, which
        # compiled graphs do not support, so they run the eager modules (same parameters).
        self.compiled = None
        if opts.compile:
            g_compiled = torch_compiles_generator()
            if not g_compiled:
                self.log(f"--compile: G stays eager on torch {torch.__version__} (its compiled generate is wrong there; "
                         f"torch {'.'.join(map(str, COMPILE_G_MIN_TORCH))}+ compiles it); D is compiled")
            self.compiled = (CompiledGenerate(self.G) if g_compiled else self.G, torch.compile(self.D))
        self.batch_gpu = opts.batch_gpu or default_batch_gpu(opts.resolution, opts.batch_size // d.world_size, device)
        self.cur_nimg, self.step, self.tick = 0, 0, 0
        self.stats = StatsCollector()

    # -- state -----------------------------------------------------------------------------------------

    def counters(self) -> dict:
        return {"cur_nimg": self.cur_nimg, "step": self.step, "tick": self.tick, "pl_mean": float(self.loss.pl_mean),
                **(self.ada.state() if self.ada is not None else {})}

    def load_state(self, path: Path) -> None:
        nets, _, opts, counters = snapshots.load_state(path)
        try:
            for name, net in (("G", self.G), ("D", self.D), ("G_ema", self.G_ema)):
                net.load_state_dict(nets[name])
            self.opt_G.load_state_dict(opts["G"])
            self.opt_D.load_state_dict(opts["D"])
        except (KeyError, RuntimeError, ValueError) as e:
            raise UserError(f"{path} does not fit this run's networks: {str(e).splitlines()[0]}") from None
        self.cur_nimg, self.step, self.tick = counters["cur_nimg"], counters["step"], counters["tick"]
        self.loss.pl_mean = torch.tensor(counters.get("pl_mean", 0.0))
        if self.ada is not None:
            self.ada.load(counters)

    def check_finite(self) -> None:
        """Once per tick (one device sync): stop before anything non-finite can be saved."""
        tensors = {f"{n}.{k}": v for n, net in (("G", self.G), ("D", self.D), ("G_ema", self.G_ema))
                   for k, v in net.state_dict().items()}
        tensors.update({f"Adam state of {n}": v for n, opt in (("G", self.opt_G), ("D", self.opt_D))
                        for st in opt.state.values() for v in st.values()})
        bad = snapshots.first_nonfinite(tensors)
        if bad:
            from training.checkpoint import latest_snapshot
            last = latest_snapshot(self.opts.run_dir) if self.opts.run_dir else None
            raise UserError(f"training diverged by step {self.step} ({self.cur_nimg / 1000:.3f} kimg): {bad} holds NaN "
                            f"or Inf; nothing was saved from it; last good snapshot: {last or 'none'}")

    def save(self, timed: bool = False) -> None:
        """A network snapshot and a training state (for resume), named by kimg_tag; `timed` marks a save
        every --state-minutes (a resume point only, pruned once superseded)."""
        self.state_time = time.monotonic()
        if not self.d.is_main:
            return
        tag = kimg_tag(self.cur_nimg)
        run = Path(self.opts.run_dir)
        snapshots.save_snapshot(run, tag, self.G, self.D, self.G_ema, {"G": self.opt_G, "D": self.opt_D},
                                self.counters(), extra={"kimg": self.cur_nimg / 1000, "dataset": self.opts.dataset,
                                                        **({"timed": True} if timed else {})})
        snapshots.prune(run, self.opts.last_snapshots)

    # -- one iteration ---------------------------------------------------------------------------------

    def _phase(self, net: torch.nn.Module, opt: torch.optim.Optimizer, fn: Callable, chunks: list, gain: float) -> None:
        first_order = fn in (self.loss.g_main, self.loss.d_main)
        self.loss.G, self.loss.D = self.compiled if self.compiled and first_order else (self.G, self.D)
        self.G.requires_grad_(net is self.G)
        self.D.requires_grad_(net is self.D)
        self.grads[net].zero()
        for args in chunks:
            loss, stats = fn(*args)
            (loss * gain / len(chunks)).backward()
            for k, v in stats.items():
                self.stats.report(k, v)
        self.grads[net].reduce(self.d.world_size)
        opt.step()

    def train_step(self, reals_u8: torch.Tensor, labels: torch.Tensor, one_hot: Callable) -> None:
        o, G = self.opts, self.G
        torch.manual_seed(step_seed(o.seed, self.d.rank, self.step))
        reals = to_float(reals_u8, self.device)
        c = to_device(one_hot(labels), self.device) if G.c_dim else None
        n_chunks = max(1, reals.shape[0] // self.batch_gpu)
        split = lambda t: list(t.chunk(n_chunks)) if t is not None else [None] * n_chunks
        rz = lambda: split(torch.randn([reals.shape[0], G.k, G.z_dim], device=self.device))
        r_chunks, c_chunks = split(reals), split(c)
        g_args = zip(rz(), c_chunks, r_chunks) if o.loss.g_loss == "rpgan" else zip(rz(), c_chunks)
        self._phase(G, self.opt_G, self.loss.g_main, list(g_args), 1.0)
        if o.loss.pl_weight > 0 and self.step % o.g_reg_interval == 0:
            self._phase(G, self.opt_G, self.loss.g_pl, list(zip(rz(), c_chunks)), o.g_reg_interval)
        self._phase(self.D, self.opt_D, self.loss.d_main, list(zip(r_chunks, c_chunks, rz())), 1.0)
        if (o.loss.r1_gamma > 0 or o.loss.r2_weight() > 0) and self.step % o.d_reg_interval == 0:
            zs = rz() if o.loss.r2_weight() > 0 else [None] * n_chunks    # R2's fakes (no draw when off)
            self._phase(self.D, self.opt_D, self.loss.d_reg, list(zip(r_chunks, c_chunks, zs)), o.d_reg_interval)
        if G.mapping.cfg.w_avg_beta is not None:                   # the mapping tracks w_avg (config says so)
            average_buffer(G.mapping.w_avg, self.d.world_size)   # keep the tracked average identical on all ranks
        self.update_ema()
        if self.ada is not None:
            self.ada.step(o.batch_size, self.d.world_size)
        self.cur_nimg += o.batch_size
        self.step += 1

    @torch.no_grad()
    def update_ema(self) -> None:
        o = self.opts
        ema_nimg = o.ema_kimg * 1000
        if o.ema_rampup is not None:
            ema_nimg = min(ema_nimg, self.cur_nimg * o.ema_rampup)
        beta = 0.5 ** (o.batch_size / max(ema_nimg, 1e-8))
        p_ema, p, b_ema, b = self.ema_pairs
        torch._foreach_lerp_(p_ema, p, 1 - beta)        # p_ema <- p + beta * (p_ema - p), one fused op
        if b_ema:
            torch._foreach_copy_(b_ema, b)

    # -- outputs ---------------------------------------------------------------------------------------

    @torch.no_grad()
    def save_samples(self, tb: Optional[TensorBoardWriter]) -> None:
        o, G = self.opts, self.G_ema
        cols, rows = o.grid_size
        z = z_from_seeds(range(cols * rows), G.k, G.z_dim).to(self.device)
        c = labels_for(G, range(z.shape[0]), self.device)
        img, _, maps = G.generate(z, c, noise_mode="const", truncation_psi=o.truncation_psi)
        tag = kimg_tag(self.cur_nimg) if o.keep_samples else "latest"
        grids = {"fakes": view_grid(to_uint8(img).cpu(), cols)}
        if maps:
            att = attention_images(img, maps[-1], alpha=o.blending_alpha)
            # rows: samples, their hard attention maps blended with the image, soft maps
            grids["attention"] = view_grid(torch.cat([to_uint8(img), att["hard_blend"], att["soft"]]).cpu(), cols)
        for name, grid in grids.items():
            save_png(grid, Path(o.run_dir) / f"{name}-{tag}.png")
            if tb is not None:
                tb.image(f"Samples/{name}", grid, self.cur_nimg)

    # -- the loop --------------------------------------------------------------------------------------

    def run(self) -> None:
        """Train until total_kimg: steps, a status line within ticks, and the tick's report and snapshot at
        its end; writers are closed however the loop ends."""
        o = self.opts
        dataset, batches = self._open_dataset()
        run = Path(o.run_dir)
        jsonl = JsonlWriter(run / "stats.jsonl") if self.d.is_main else None
        tb = TensorBoardWriter(run) if self.d.is_main and o.summarize else None
        self.start_time = time.time()
        self._start_tick()
        total = int(o.total_kimg * 1000)
        if self.cur_nimg == 0 and self.d.is_main:
            save_png(dataset_grid(dataset), run / "reals.png")
            self.save_samples(tb)
        self._announce()
        status = StatusLine(o.status_seconds) if self.d.is_main else None
        governor = ThreadGovernor(torch.get_num_threads()) \
            if o.follow_load and self.device.type == "cpu" and self.d.world_size == 1 else None
        self.state_time = time.monotonic()
        try:
            while self.cur_nimg < total:
                reals, labels = next(batches)
                self.train_step(reals, labels, dataset.one_hot)
                done = self.cur_nimg >= total
                if not done and self.cur_nimg < self.tick_start_nimg + o.kimg_per_tick * 1000:
                    self._within_tick(status, governor, total)
                    continue
                if status is not None:
                    status.clear()
                self._end_tick(dataset, done, total, jsonl, tb)
        finally:
            for w in (jsonl, tb):
                if w is not None:
                    w.close()
        self._farewell(run)

    def _open_dataset(self):
        """The dataset and this rank's endless batch iterator, continuing at cur_nimg."""
        o, d = self.opts, self.d
        dataset = load_dataset(o.data_dir, o.dataset, resolution=o.resolution, mirror=o.mirror,
                               max_images=o.max_images, use_labels=self.G.c_dim > 0)
        if self.G.c_dim and dataset.num_classes != self.G.c_dim:
            raise UserError(f"the model has {self.G.c_dim} classes, the dataset {dataset.num_classes}")
        if d.is_main:
            dataset.verify_in_background()        # shard checksums; a mismatch stops the run at the next tick
        sampler = InfiniteSampler(len(dataset), d.rank, d.world_size, seed=o.seed, start_index=self.cur_nimg)
        batches = iterate_batches(dataset, sampler, o.batch_size // d.world_size, prefetch=2,
                                  pin_memory=self.device.type == "cuda")
        return dataset, batches

    def _start_tick(self) -> None:
        self.tick_start_nimg, self.tick_start_time = self.cur_nimg, time.time()

    def _announce(self) -> None:
        o, d = self.opts, self.d
        n = torch.get_num_threads()
        threads = f", {n} CPU thread{'s' if n > 1 else ''}{' each' if d.world_size > 1 else ''}" \
            if self.device.type == "cpu" else ""
        self.log(f"training for {o.total_kimg} kimg from {self.cur_nimg / 1000:.1f} kimg on {self.device} "
                 f"({d.world_size} process{'es' if d.world_size > 1 else ''}{threads})")

    def _within_tick(self, status: Optional[StatusLine], governor: Optional[ThreadGovernor], total: int) -> None:
        """Between tick ends: the status line (and the CPU thread re-check) and the timed training state."""
        o = self.opts
        if status is not None and status.due():       # host-side counters only: no GPU sync
            note = governor.check() if governor is not None else None
            if note:
                status.clear()
                self.log(note)
            tick_end = self.tick_start_nimg + o.kimg_per_tick * 1000
            status.show(_status_line(self.cur_nimg, total, self.tick + 1, self.tick_start_nimg,
                                     min(tick_end, total), time.time() - self.tick_start_time))
        if o.state_minutes > 0 and time.monotonic() - self.state_time >= o.state_minutes * 60:
            self.check_finite()
            self.save(timed=True)                  # no collective: rank 0 writes alone

    def _tick_record(self, now: float) -> dict:
        """Progress, timing and resources of the tick that ends now, and the statistics reported in it."""
        stats = self.stats.reduce(self.d.world_size)
        tick_kimg = (self.cur_nimg - self.tick_start_nimg) / 1000
        tick_sec = now - self.tick_start_time
        record = {"Progress/tick": self.tick, "Progress/kimg": self.cur_nimg / 1000,
                  "Timing/total_sec": now - self.start_time, "Timing/sec_per_tick": tick_sec,
                  "Timing/sec_per_kimg": tick_sec / max(tick_kimg, 1e-8),
                  "Timing/images_per_sec": tick_kimg * 1000 / max(tick_sec, 1e-8)}
        if self.augment_pipe is not None:
            record["Progress/augment"] = self.augment_pipe.p
        if self.device.type == "cuda":
            record["Resources/peak_gpu_mem_gb"] = torch.cuda.max_memory_allocated(self.device) / 2 ** 30
            torch.cuda.reset_peak_memory_stats(self.device)
        return {**record, **stats}

    def _end_tick(self, dataset, done: bool, total: int, jsonl: Optional[JsonlWriter],
                  tb: Optional[TensorBoardWriter]) -> None:
        """Report the tick (console, stats.jsonl, TensorBoard); snapshot, samples and metrics every
        snapshot_ticks ticks and at the end."""
        o, d = self.opts, self.d
        self.tick += 1
        now = time.time()
        record = self._tick_record(now)
        self.check_finite()
        if getattr(dataset, "corruption", None):
            raise UserError(dataset.corruption)
        self.log(_console_line(record, total, self.cur_nimg))
        if done or self.tick % o.snapshot_ticks == 0:
            for name, net in (("G", self.G), ("D", self.D), ("G_ema", self.G_ema)):
                check_consistency(net, d.world_size, name)
            self.save()
            if d.is_main:
                self.save_samples(tb)
                if self.evaluate is not None:
                    record.update(self.evaluate(self.G_ema, self.cur_nimg / 1000) or {})
        if jsonl is not None:
            jsonl.write({"kimg": self.cur_nimg / 1000, "timestamp": now, **record})
        if tb is not None:
            tb.scalars(record, self.cur_nimg)            # steps are image counts: every tick kept
        self._start_tick()

    def _farewell(self, run: Path) -> None:
        o, d = self.opts, self.d
        self.log(f"done: {self.cur_nimg / 1000:.1f} kimg in {fmt_time(time.time() - self.start_time)}"
                 + (f"; weights identical on all {d.world_size} ranks" if d.world_size > 1 else ""))
        tag = kimg_tag(self.cur_nimg) if o.keep_samples else "latest"
        look = [n for n in ("reals.png", f"fakes-{tag}.png", f"attention-{tag}.png") if (run / n).exists()]
        look += sorted(p.name for p in run.glob("metric-*.txt"))
        self.log(f"to look at: {', '.join(look)} in {run}")


def _console_line(r: dict, total: int, cur: int) -> str:
    eta = r["Timing/sec_per_kimg"] * (total - cur) / 1000
    parts = [f"tick {r['Progress/tick']:<4d}", f"kimg {r['Progress/kimg']:<8.3f}",
             f"sec/kimg {r['Timing/sec_per_kimg']:<7.2f}", f"img/s {r['Timing/images_per_sec']:<7.1f}",
             f"eta {fmt_time(eta)}"]
    for key, short in (("Loss/G/loss", "G"), ("Loss/D/loss", "D"), ("Loss/r1_penalty", "r1"),
                       ("Loss/r2_penalty", "r2"), ("Loss/pl_penalty", "pl")):
        if key in r:
            parts.append(f"{short} {r[key]:.3f}")
    if "Progress/augment" in r:
        parts.append(f"augment {r['Progress/augment']:.3f}")
    if "Resources/peak_gpu_mem_gb" in r:
        parts.append(f"mem {r['Resources/peak_gpu_mem_gb']:.2f}GB")
    return "  ".join(parts)


def _status_line(cur: int, total: int, tick: int, tick_start: int, tick_end: float, tick_sec: float) -> str:
    """The line shown inside a tick: where it is, the speed of this tick, time left in the tick and the run."""
    rate = (cur - tick_start) / max(tick_sec, 1e-8)
    left = lambda n: fmt_time(max(n - cur, 0) / rate) if rate > 0 else "?"
    return (f"  kimg {cur / 1000:<8.3f} tick {tick}: {(cur - tick_start) / 1000:.3f}/{(tick_end - tick_start) / 1000:g} "
            f"kimg  img/s {rate:<6.1f} tick eta {left(tick_end)}  run eta {left(total)}")
