#!/usr/bin/env python
"""CPU threads on a busy machine: training-step time of the Quickstart config, idle and loaded.

  python bench/bench_threads.py --steps 10 --warmup 3 --repeats 2 --load-procs 1 --out bench/results/threads-idle-cpu.json

Each configuration (torch threads 1 or 2, OMP_WAIT_POLICY default or PASSIVE) runs in a fresh process
(OpenMP reads its environment once), first on the machine as it is ("as-found": on a shared machine that is not idle), then with one busy-loop
process per --load-procs competing for the cores ("loaded"). Configurations are interleaved and
repeated, so the ratios compare runs made side by side. The figures behind dnnlib/threads.py's choice.
"""
from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
CHILD = r"""
import sys, time, tempfile, torch
sys.path.insert(0, {repo!r})
torch.set_num_threads({threads})
from training.networks.config import DiscriminatorConfig
from training.networks.presets import build
from training.distributed import Dist
from training.networks import Discriminator, Generator
from training.training_loop import Trainer, TrainOptions
G = Generator(build("GANformer", 32, channel_base=2048, channel_max=64, components_num=8, latent_size=128)[0])
D = Discriminator(DiscriminatorConfig(img_resolution=32, channel_base=2048, channel_max=64, mbstd_group_size=4))
with tempfile.TemporaryDirectory() as tmp:
    tr = Trainer(TrainOptions(run_dir=tmp, resolution=32, batch_size=16, batch_gpu=16), G, D, Dist(),
                 torch.device("cpu"), log=lambda *_: None)
    reals = torch.randint(0, 256, [16, 3, 32, 32], dtype=torch.uint8)
    labels = torch.zeros(16, dtype=torch.int64)
    one_hot = lambda lab: torch.zeros(lab.shape[0], 0)
    for _ in range({warmup}):
        tr.train_step(reals, labels, one_hot)
    t0 = time.perf_counter()
    for _ in range({steps}):
        tr.train_step(reals, labels, one_hot)
    print((time.perf_counter() - t0) / {steps})
"""


def busy() -> None:
    while True:
        pass


def run_one(threads: int, policy: str, steps: int, warmup: int) -> float:
    env = dict(os.environ, OMP_NUM_THREADS=str(threads))
    env.pop("OMP_WAIT_POLICY", None)
    if policy != "default":
        env["OMP_WAIT_POLICY"] = policy
    code = CHILD.format(repo=str(REPO), threads=threads, steps=steps, warmup=warmup)
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    return float(out.stdout.strip().splitlines()[-1])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=3)
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--repeats", type=int, default=1)
    p.add_argument("--load-procs", type=int, default=1, help="busy-loop processes for the loaded case")
    p.add_argument("--out", default=str(REPO / "bench/results/threads-cpu.json"))
    args = p.parse_args()
    configs = [(t, pol) for t in (1, 2) for pol in ("default", "PASSIVE")]
    rows: dict = {}
    loads: dict = {}                  # 1-minute load average when each run started
    for load in ("as-found", "loaded"):
        procs = [multiprocessing.Process(target=busy, daemon=True) for _ in range(args.load_procs if load == "loaded" else 0)]
        for pr in procs:
            pr.start()
        try:
            for rep in range(args.repeats):
                for t, pol in configs:
                    load_avg = os.getloadavg()[0]
                    sec = run_one(t, pol, args.steps, args.warmup)
                    rows.setdefault(f"{load} threads={t} wait={pol}", []).append(sec)
                    loads.setdefault(f"{load} threads={t} wait={pol}", []).append(load_avg)
                    print(f"{load:6s} threads={t} OMP_WAIT_POLICY={pol:8s} {sec:.3f} s/step (load {load_avg:.1f})",
                          flush=True)
        finally:
            for pr in procs:
                pr.terminate()
                pr.join()
    best = {k: min(v) for k, v in rows.items()}
    base = best["as-found threads=1 wait=default"]
    result = {"command": "python " + " ".join(sys.argv), "cpus": os.cpu_count(), "load_procs": args.load_procs,
              "config": "GANformer 32x32, 8 components, latent 128, channel-base 2048, channel-max 64, batch 16",
              "load_average_at_end": os.getloadavg(), "sec_per_step_all": rows, "load_average_at_start": loads, "sec_per_step_best": best,
              "ratio_to_as_found_1_thread": {k: v / base for k, v in best.items()},
              "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=1))
    for k, v in best.items():
        print(f"{k:40s} {v:.3f} s/step  x{v / base:.2f}")
    print(f"saved {args.out}")


if __name__ == "__main__":
    main()
