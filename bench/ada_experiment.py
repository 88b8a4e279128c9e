#!/usr/bin/env python
"""ADA on a small dataset: the same short training with and without adaptive augmentation (a benchmark, not a test).

  python bench/ada_experiment.py --kimg 6 --ada-kimg 10 --work /tmp/ada-bench

Prepares a 1,000-image subset of `scenes` at 32x32 in its own data folder, trains the Quickstart-sized
GANformer twice for the same kimg (--augment none, then --augment ada), computes FID and KID at the
end (the project's metrics, on --eval-images-num fakes against the 1,000 reals), and writes
bench/results/ada-scenes1k-cpu.json (commands, figures, the p curve per tick) and
bench/results/ada-scenes1k-cpu.png (p per kimg). --ada-kimg is scaled down from the paper's 500 so
that p can move within a CPU-sized run.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
QUICKSTART = ["--ganformer-default", "--resolution", "32", "--components-num", "8", "--latent-size", "128",
              "--channel-base", "2048", "--channel-max", "64", "--batch-size", "16", "--batch-gpu", "16",
              "--ema-rampup", "0.05", "--gamma", "0.05", "--style-mixing", "0"]


def run(cmd: list[str]) -> float:
    print("$", " ".join(cmd), flush=True)
    t0 = time.time()
    subprocess.run(cmd, cwd=REPO, check=True)
    return time.time() - t0


def train(args, name: str, extra: list[str]) -> dict:
    cmd = [sys.executable, "run_network.py", "--train", "--dataset", "scenes", "--data-dir", str(args.work / "data"),
           "--result-dir", str(args.work / "results"), "--expname", name, *QUICKSTART, "--total-kimg", str(args.kimg),
           "--kimg-per-tick", str(args.kimg_per_tick), "--snapshot-ticks", "1000", "--metrics", "fid,kid",
           "--eval-images-num", str(args.eval_images), "--summarize", "False", "--restart", *extra]
    seconds = None if args.collect else run(cmd)
    return collect(args, name, " ".join(["python", *cmd[1:]]), seconds)


def collect(args, name: str, command: str, seconds) -> dict:
    """Figures of the latest run `name` in --work: metrics at the end and the per-tick curves."""
    run_dir = sorted((args.work / "results").glob(f"{name}-*"))[-1]
    ticks = [json.loads(line) for line in (run_dir / "stats.jsonl").read_text().splitlines()]
    metrics = {}
    for t in ticks:
        metrics.update({k.split("/", 1)[1]: v for k, v in t.items() if k.startswith("Metrics/")})
    return {"command": command, "seconds": None if seconds is None else round(seconds, 1), "run_dir": str(run_dir),
            "metrics": metrics, "kimg": [t["Progress/kimg"] for t in ticks],
            "augment_p": [t.get("Progress/augment") for t in ticks],
            "sign_real": [t.get("Loss/signs/real") for t in ticks]}


def plot(curves: dict[str, tuple[list[float], list[float]]], path: Path, kimg: float) -> None:
    """A small line chart of p against kimg (PIL only)."""
    import PIL.Image
    import PIL.ImageDraw
    W, H, m = 480, 300, 40
    img = PIL.Image.new("RGB", (W, H), "white")
    d = PIL.ImageDraw.Draw(img)
    d.rectangle([m, m // 2, W - m // 2, H - m], outline="black")
    top = 1.0
    for i in range(5):
        y = H - m - i * (H - 1.5 * m) / 4
        d.line([m - 4, y, m, y], fill="black")
        d.text((2, y - 6), f"{top * i / 4:.2f}", fill="black")
    d.text((W // 2 - 30, H - m + 8), f"kimg (0-{kimg:g})", fill="black")
    d.text((m + 4, m // 2 + 4), "red: augment p   blue: E[sign D(real)]   grey: target", fill="black")
    colours = {"ada": (200, 40, 40), "target": (120, 120, 120), "sign": (40, 40, 200)}
    for name, (xs, ys) in curves.items():
        pts = [(m + x / kimg * (W - 1.5 * m), H - m - max(y, 0) / top * (H - 1.5 * m))
               for x, y in zip(xs, ys) if y is not None]
        if len(pts) > 1:
            d.line(pts, fill=colours.get(name, "black"), width=2)
    img.save(path)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--work", type=Path, default=Path("/tmp/ada-bench"), help="data and run folders (outside the repo)")
    p.add_argument("--kimg", type=float, default=6, help="training length of each run")
    p.add_argument("--kimg-per-tick", type=float, default=0.5)
    p.add_argument("--ada-kimg", type=float, default=10, help="ADA speed for this short run (paper: 500)")
    p.add_argument("--ada-target", type=float, default=0.6)
    p.add_argument("--eval-images", type=int, default=500)
    p.add_argument("--images", type=int, default=1000, help="dataset subset size")
    p.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "ada-scenes1k-cpu.json")
    p.add_argument("--collect", action="store_true", help="do not train: collect the latest runs in --work")
    p.add_argument("--note", default="", help="a remark stored with the results")
    args = p.parse_args()
    prep = [sys.executable, "prepare_data.py", "--scenes", "--resolution", "32", "--max-images", str(args.images),
            "--data-dir", str(args.work / "data")]
    if not args.collect:
        run(prep)
    runs = {"none": train(args, "noaug", ["--augment", "none"]),
            "ada": train(args, "ada", ["--augment", "ada", "--ada-kimg", str(args.ada_kimg),
                                       "--ada-target", str(args.ada_target)])}
    import torch
    result = {"what": f"Quickstart-sized GANformer on a {args.images}-image scenes subset at 32x32, {args.kimg} kimg each, "
                      "with and without ADA; FID/KID at the end on --eval-images-num fakes vs the subset's reals",
              "command": " ".join(["python", "bench/ada_experiment.py", *sys.argv[1:]]),
              "prepare": " ".join(["python", *prep[1:]]), "device": "cpu", "torch": torch.__version__,
              "note": args.note, "runs": runs}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    ada = runs["ada"]
    plot({"ada": (ada["kimg"], ada["augment_p"]), "target": ([0, args.kimg], [args.ada_target] * 2),
          "sign": (ada["kimg"], ada["sign_real"])}, args.out.with_suffix(".png"), args.kimg)
    for name, r in runs.items():
        print(f"{name}: {r['metrics']}  ({r['seconds']}s)")
    print(f"wrote {args.out} and {args.out.with_suffix('.png')}")


if __name__ == "__main__":
    main()
