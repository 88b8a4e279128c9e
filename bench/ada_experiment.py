#!/usr/bin/env python
"""ADA on a small dataset: the same short training with and without adaptive augmentation (a benchmark, not a test).

  python bench/ada_experiment.py --kimg 16 --eval-every 4 --ada-kimg 10 --work /tmp/ada-bench

Prepares a 1,000-image subset of `scenes` at 32x32 in its own data folder, trains the Quickstart-sized
GANformer twice for the same kimg (--augment none, then --augment ada), computes FID and KID every
--eval-every kimg and at the end (the project's metrics, on --eval-images fakes against the 1,000
reals), and writes bench/results/ada-scenes1k-cpu.json (commands, figures, the p curve per tick) and
bench/results/ada-scenes1k-cpu.png (p and E[sign D(real)] per kimg; FID per kimg of both runs).
--ada-kimg is scaled down from the paper's 500 so that p can move within a CPU-sized run.

The two runs can go side by side on two cores: start `--runs none` and `--runs ada` (with
`--extra=--num-threads=1`) in two shells, then `--collect` writes the results of both.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from dnnlib.util import atomic_path, atomic_write  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
QUICKSTART = ["--ganformer-default", "--resolution", "32", "--components-num", "8", "--latent-size", "128",
              "--channel-base", "2048", "--channel-max", "64", "--batch-size", "16", "--batch-gpu", "16",
              "--ema-rampup", "0.05", "--gamma", "0.05", "--style-mixing", "0"]


def run(cmd: list[str]) -> float:
    print("$", " ".join(cmd), flush=True)
    t0 = time.time()
    subprocess.run(cmd, cwd=REPO, check=True)
    return time.time() - t0


def train_command(args, name: str, extra: list[str]) -> list[str]:
    return [sys.executable, "run_network.py", "--train", "--dataset", "scenes", "--data-dir", str(args.work / "data"),
           "--result-dir", str(args.work / "results"), "--expname", name, *QUICKSTART, "--total-kimg", str(args.kimg),
           "--kimg-per-tick", str(args.kimg_per_tick), "--snapshot-ticks", str(snapshot_ticks(args)),
           "--metrics", "fid,kid", "--eval-images-num", str(args.eval_images), "--summarize", "False", "--restart",
           "--seed", str(args.seed), *extra, *args.extra.split()]


def collect(args, name: str, command: str, seconds) -> dict:
    """Figures of the latest run `name` in --work: metrics at the end and the per-tick curves."""
    found = sorted((args.work / "results").glob(f"{name}-*"))
    if not found:
        return {"command": command, "missing": True}
    run_dir = found[-1]
    ticks = [json.loads(line) for line in (run_dir / "stats.jsonl").read_text().splitlines()]
    metrics, curve = {}, []
    for t in ticks:
        got = {k.split("/", 1)[1]: v for k, v in t.items() if k.startswith("Metrics/")}
        metrics.update(got)
        if got:
            curve.append({"kimg": t["Progress/kimg"], **got})
    return {"command": command, "seconds": None if seconds is None else round(seconds, 1), "run_dir": str(run_dir),
            "metrics": metrics, "metrics_per_kimg": curve, "kimg": [t["Progress/kimg"] for t in ticks],
            "augment_p": [t.get("Progress/augment") for t in ticks],
            "sign_real": [t.get("Loss/signs/real") for t in ticks]}


def panel(draw, x0: int, series: dict, kimg: float, ylim: tuple[float, float], title: str) -> None:
    """One 480x300 line chart at x offset x0: series = name -> (colour, xs, ys)."""
    W, H, m = 480, 300, 44
    lo, hi = ylim
    sx = lambda x: x0 + m + x / kimg * (W - 1.5 * m)
    sy = lambda y: H - m - (min(max(y, lo), hi) - lo) / (hi - lo) * (H - 1.5 * m)
    draw.rectangle([x0 + m, m // 2, x0 + W - m // 2, H - m], outline="black")
    for i in range(5):
        draw.line([x0 + m - 4, sy(lo + (hi - lo) * i / 4), x0 + m, sy(lo + (hi - lo) * i / 4)], fill="black")
        draw.text((x0 + 2, sy(lo + (hi - lo) * i / 4) - 6), f"{lo + (hi - lo) * i / 4:.3g}", fill="black")
    draw.text((x0 + W // 2 - 30, H - m + 8), f"kimg (0-{kimg:g})", fill="black")
    draw.text((x0 + m + 4, m // 2 + 4), title, fill="black")
    for colour, xs, ys in series.values():
        pts = [(sx(x), sy(y)) for x, y in zip(xs, ys) if y is not None]
        if len(pts) > 1:
            draw.line(pts, fill=colour, width=2)
        for x, y in pts:
            draw.ellipse([x - 2, y - 2, x + 2, y + 2], fill=colour)


def plot(runs: dict, path: Path, kimg: float, target: float, fid_key: str) -> None:
    """Left: ADA's p and E[sign D(real)] per tick (the no-ADA run's sign too); right: FID of both runs."""
    import PIL.Image
    import PIL.ImageDraw
    img = PIL.Image.new("RGB", (960, 300), "white")
    d = PIL.ImageDraw.Draw(img)
    red, blue, grey, black = (200, 40, 40), (40, 40, 200), (120, 120, 120), (0, 0, 0)
    ada, none = runs.get("ada", {}), runs.get("none", {})
    panel(d, 0, {"target": (grey, [0, kimg], [target] * 2),
                 "sign none": ((150, 150, 230), none.get("kimg", []), none.get("sign_real", [])),
                 "sign ada": (blue, ada.get("kimg", []), ada.get("sign_real", [])),
                 "p": (red, ada.get("kimg", []), ada.get("augment_p", []))}, kimg, (0, 1),
          "red: p (ADA)  blue: E[sign D(real)] (light: no ADA)  grey: target")
    fids = {name: ([c["kimg"] for c in r.get("metrics_per_kimg", []) if fid_key in c],
                   [c[fid_key] for c in r.get("metrics_per_kimg", []) if fid_key in c]) for name, r in runs.items()}
    values = [v for _, ys in fids.values() for v in ys]
    if values:
        lo, hi = min(values), max(values)
        pad = max(1.0, 0.08 * (hi - lo))
        panel(d, 480, {name: (red if name == "ada" else black, *xy) for name, xy in fids.items()}, kimg,
              (lo - pad, hi + pad), f"{fid_key}: red ADA, black no augmentation")
    with atomic_path(path) as tmp:
        img.save(tmp, format="PNG")


def snapshot_ticks(args) -> int:
    """Ticks between evaluations: --eval-every kimg (0: only at the end)."""
    return max(1, round(args.eval_every / args.kimg_per_tick)) if args.eval_every > 0 else 10 ** 6


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
    p.add_argument("--eval-every", type=float, default=4, help="kimg between FID/KID evaluations (0: at the end only)")
    p.add_argument("--runs", default="none,ada", help="which runs to train: none, ada or both (side by side: one each)")
    p.add_argument("--seed", type=int, default=1000)
    p.add_argument("--extra", default="", help="more run_network.py flags for both runs, e.g. --extra=--num-threads=1")
    p.add_argument("--note", default="", help="a remark stored with the results")
    args = p.parse_args()
    prep = [sys.executable, "prepare_data.py", "--scenes", "--resolution", "32", "--max-images", str(args.images),
            "--data-dir", str(args.work / "data")]
    if not args.collect and not (args.work / "data" / "scenes").exists():
        run(prep)
    chosen = set(args.runs.split(","))
    flags = {"none": ["--augment", "none"],
             "ada": ["--augment", "ada", "--ada-kimg", str(args.ada_kimg), "--ada-target", str(args.ada_target)]}
    runs = {}
    for name, extra in flags.items():            # train the chosen runs; collect both (the other may run elsewhere)
        cmd = train_command(args, name, extra)
        seconds = run(cmd) if name in chosen and not args.collect else None
        runs[name] = collect(args, name, " ".join(["python", *cmd[1:]]), seconds)
    import torch
    result = {"what": f"Quickstart-sized GANformer on a {args.images}-image scenes subset at 32x32, {args.kimg} kimg each, "
                      f"with and without ADA; FID/KID every {args.eval_every} kimg and at the end, on "
                      f"{min(args.eval_images, args.images)} fakes vs the subset's first "
                      f"{min(args.eval_images, args.images)} reals (the metrics cap both at the dataset's size)",
              "command": " ".join(["python", "bench/ada_experiment.py", *sys.argv[1:]]),
              "prepare": " ".join(["python", *prep[1:]]), "device": "cpu", "torch": torch.__version__,
              "note": args.note, "runs": runs}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    with atomic_write(args.out, "w") as f:
        f.write(json.dumps(result, indent=1) + "\n")
    fids = [k for r in runs.values() for k in r.get("metrics", {}) if k.startswith("fid")]     # fid<N>: N is capped
    plot(runs, args.out.with_suffix(".png"), args.kimg, args.ada_target, fids[0] if fids else "fid")   # by the reals
    for name, r in runs.items():
        print(f"{name}: {r.get('metrics', 'missing')}  ({r.get('seconds')}s)")
    print(f"wrote {args.out} and {args.out.with_suffix('.png')}")


if __name__ == "__main__":
    main()
