#!/usr/bin/env python
"""Which training recipe: the faithful one against candidates at equal kimg, N seeds each, FID/KID vs kimg.

Examples:
  python bench/recipe_experiment.py --candidates faithful,modern --seeds 3 --total-kimg 15 --eval-every 5
  python bench/recipe_experiment.py --datasets scenes,photos --data-dir datasets     # photos: prepare_data.py
  python bench/recipe_experiment.py --smoke                                          # tiny, < 1 min
Every run is `run_network.py --train` (same model flags for all, a candidate's training flags on top) in
<work-dir>/runs/<dataset>-<candidate>-s<seed>-NNN, with FID and KID (N fakes against the dataset's first N
images) at each evaluation point. Finished runs are skipped and interrupted ones resume, so the same
command continues an experiment. Writes <out>.json (curves, mean and spread, ratios to faithful) and
<out>.png (FID against kimg, one panel per dataset).
"""
from __future__ import annotations

import argparse
import json
import math
import platform
import re
import shlex
import sys
import tempfile
from pathlib import Path
from typing import Optional

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from dnnlib.util import UserError, atomic_path, atomic_write  # noqa: E402

# Candidates: training flags only (the model flags are shared). Recipes come from the preset registry.
CANDIDATES: dict[str, list[str]] = {
    "faithful": ["--recipe", "faithful"],
    "modern": ["--recipe", "modern"],                                         # RpGAN + R1 + R2 + EMA ramp-up
    "rpgan": ["--g-loss", "rpgan", "--d-loss", "rpgan"],                     # the loss alone
    "r2-ema": ["--recipe", "modern", "--g-loss", "logistic_ns", "--d-loss", "logistic"],   # modern minus RpGAN
    "modern-lowr1": ["--recipe", "modern", "--gamma", "0.05"],               # modern with a small-image R1 weight
    "ema-rampup": ["--ema-rampup", "0.05"],
    "quickstart": ["--gamma", "0.05", "--style-mixing", "0", "--ema-rampup", "0.05"],   # the README's Quickstart
}
# The Quickstart's model at 32x32 (README), and a tiny one for --smoke.
MODEL = "--ganformer-default --resolution 32 --components-num 8 --latent-size 128 --channel-base 2048 " \
        "--channel-max 64 --batch-size 16 --batch-gpu 16"
SMOKE_MODEL = "--ganformer-default --resolution 16 --components-num 4 --latent-size 32 --channel-base 256 " \
              "--channel-max 16 --batch-size 4 --batch-gpu 4"
METRIC_KEY = re.compile(r"^Metrics/(fid|kid)[0-9k]*$")
COLOURS = [(31, 119, 180), (214, 39, 40), (44, 160, 44), (148, 103, 189), (255, 127, 14), (23, 190, 207)]


def parse_args(argv: Optional[list[str]]) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--candidates", default="faithful,modern", help=f"comma-separated, of: {', '.join(CANDIDATES)}")
    p.add_argument("--seeds", type=int, default=3, help="seeds per candidate (0..N-1)")
    p.add_argument("--datasets", default="scenes", help="comma-separated: scenes (built in) or prepared folders "
                   "under --data-dir (e.g. natural images converted with prepare_data.py)")
    p.add_argument("--data-dir", default="datasets")
    p.add_argument("--work-dir", default="bench/work/recipes", help="run folders (kept for resuming)")
    p.add_argument("--out", default=None, help="JSON/PNG path without extension (default: bench/results/recipes-cpu)")
    p.add_argument("--total-kimg", type=float, default=15)
    p.add_argument("--eval-every", type=float, default=5, help="FID/KID every N kimg")
    p.add_argument("--eval-images", type=int, default=500, help="fakes per metric, and as many reals")
    p.add_argument("--model", default=MODEL, help="model and batch flags shared by every run")
    p.add_argument("--extra", default="", help="more flags for every run (e.g. --num-threads 1)")
    p.add_argument("--smoke", action="store_true", help="tiny dataset and model, 2 evaluations per run: < 1 min")
    p.add_argument("--collect", action="store_true", help="train nothing: summarise the runs in --work-dir as they are")
    a = p.parse_args(argv)
    if a.smoke:
        a.work_dir = a.work_dir if a.work_dir != p.get_default("work_dir") else tempfile.mkdtemp(prefix="recipes-")
        a.data_dir, a.datasets, a.model = str(Path(a.work_dir) / "data"), "scenes", SMOKE_MODEL
        a.seeds, a.total_kimg, a.eval_every, a.eval_images = 1, 0.008, 0.004, 4
        a.out = a.out or str(Path(a.work_dir) / "recipes-smoke")
    a.out = a.out or "bench/results/recipes-cpu"
    a.candidates = [c for c in a.candidates.split(",") if c]
    a.datasets = [d for d in a.datasets.split(",") if d]
    unknown = [c for c in a.candidates if c not in CANDIDATES]
    if unknown:
        raise UserError(f"unknown candidate(s) {', '.join(unknown)}; choose from {', '.join(CANDIDATES)}")
    if a.seeds < 1 or a.total_kimg <= 0 or a.eval_every <= 0 or a.eval_images < 2:
        raise UserError("--seeds >= 1, --total-kimg > 0, --eval-every > 0 and --eval-images >= 2 are needed")
    return a


def prepare_data(a: argparse.Namespace) -> None:
    """--smoke renders its own tiny scenes; other datasets must exist (scenes are rendered by the first run)."""
    if a.smoke:
        from training.data.writer import write_scenes
        write_scenes(Path(a.data_dir) / "scenes", resolution=16, count=32, workers=1, progress=False)
        return
    from training.data.dataset import dataset_path, is_complete
    for name in a.datasets:
        if name != "scenes" and not is_complete(dataset_path(a.data_dir, name)):
            raise UserError(f"dataset {name!r} not found in {a.data_dir}: convert a folder of images with "
                            f"`python prepare_data.py` first (see README, Datasets)")


def run_argv(a: argparse.Namespace, dataset: str, cand: str, seed: int) -> list[str]:
    return ["--train", "--dataset", dataset, "--data-dir", a.data_dir, "--result-dir", str(Path(a.work_dir) / "runs"),
            "--expname", f"{dataset}-{cand}-s{seed}", "--seed", str(seed), "--total-kimg", f"{a.total_kimg:g}",
            "--kimg-per-tick", f"{a.eval_every:g}", "--snapshot-ticks", "1", "--metrics", "fid,kid",
            "--eval-images-num", str(a.eval_images), "--summarize", "False", "--keep-samples", "False",
            *shlex.split(a.model), *shlex.split(a.extra), *CANDIDATES[cand]]


def read_curve(result_dir: Path, expname: str) -> list[dict]:
    """[{kimg, fid, kid}] from a run's stats.jsonl (the last record of each kimg, as a resume may repeat one)."""
    from training import snapshots
    runs = snapshots.find_runs(result_dir, expname)
    stats = runs[-1] / "stats.jsonl" if runs else None
    if stats is None or not stats.exists():
        return []
    points: dict[float, dict] = {}
    for line in stats.read_text().splitlines():
        rec = json.loads(line)
        found = {METRIC_KEY.match(k).group(1): v for k, v in rec.items() if METRIC_KEY.match(k)}
        if found:
            points[round(rec["kimg"], 6)] = {"kimg": round(rec["kimg"], 6), **found}
    return [points[k] for k in sorted(points)]


def run_all(a: argparse.Namespace) -> dict:
    import run_network
    curves: dict = {}
    for dataset in a.datasets:
        for cand in a.candidates:
            for seed in range(a.seeds):
                name = f"{dataset}-{cand}-s{seed}"
                curve = read_curve(Path(a.work_dir) / "runs", name)
                if curve and curve[-1]["kimg"] >= a.total_kimg - 1e-6:
                    print(f"{name}: finished, skipped")
                elif a.collect:
                    print(f"{name}: not finished, " + (f"left out" if not curve else f"up to {curve[-1]['kimg']:g} kimg"))
                    if not curve:
                        continue
                else:
                    argv = run_argv(a, dataset, cand, seed)
                    print(f"{name}: run_network.py {shlex.join(argv)}", flush=True)
                    run_network.main(argv)
                    curve = read_curve(Path(a.work_dir) / "runs", name)
                curves.setdefault(dataset, {}).setdefault(cand, {})[str(seed)] = curve
    return curves


def mean_spread(values: list[float]) -> dict:
    n = len(values)
    mean = sum(values) / n
    std = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1)) if n > 1 else 0.0
    return {"mean": mean, "std": std, "min": min(values), "max": max(values), "n": n}


def summarise(curves: dict) -> dict:
    """Per dataset and candidate: mean and spread of FID and KID at each kimg; FID ratio to faithful."""
    out: dict = {}
    for dataset, by_cand in curves.items():
        out[dataset] = {}
        for cand, runs in by_cand.items():
            points: dict[float, dict[str, list]] = {}
            for curve in runs.values():
                for p in curve:
                    for m in ("fid", "kid"):
                        if m in p:
                            points.setdefault(p["kimg"], {}).setdefault(m, []).append(p[m])
            out[dataset][cand] = {str(k): {m: mean_spread(v) for m, v in ms.items()}
                                  for k, ms in sorted(points.items())}
        base = out[dataset].get("faithful", {})
        for cand, points in out[dataset].items():
            for kimg, ms in points.items():
                if "fid" in ms and "fid" in base.get(kimg, {}):
                    ms["fid_ratio_to_faithful"] = ms["fid"]["mean"] / base[kimg]["fid"]["mean"]
    return out


def plot(summary: dict, path: Path, title: str) -> None:
    """FID (mean over seeds, min-max bars) against kimg, one panel per dataset, drawn with PIL."""
    from PIL import Image, ImageDraw
    W, H, L, R, T, B = 520, 360, 60, 130, 30, 40
    img = Image.new("RGB", (W * max(1, len(summary)), H), "white")
    draw = ImageDraw.Draw(img)
    for i, (dataset, by_cand) in enumerate(summary.items()):
        x0 = i * W
        pts = [(float(k), ms["fid"]) for pts in by_cand.values() for k, ms in pts.items() if "fid" in ms]
        if not pts:
            continue
        kmax = max(k for k, _ in pts)
        lo, hi = min(f["min"] for _, f in pts), max(f["max"] for _, f in pts)
        lo, hi = (lo - 1, hi + 1) if hi - lo < 1e-9 else (lo - 0.05 * (hi - lo), hi + 0.05 * (hi - lo))
        sx = lambda k: x0 + L + (W - L - R) * k / kmax
        sy = lambda f: T + (H - T - B) * (hi - f) / (hi - lo)
        draw.rectangle([x0 + L, T, x0 + W - R, H - B], outline="black")
        for j in range(5):
            f, k = lo + (hi - lo) * j / 4, kmax * j / 4
            draw.text((x0 + 5, sy(f) - 6), f"{f:.4g}", fill="black")
            label = f"{k:g}"
            draw.text((sx(k) - 3 * len(label), H - B + 5), label, fill="black")
        draw.text((x0 + L, 8), f"{dataset}: {title}", fill="black")
        draw.text((x0 + (W - R) // 2, H - 18), "kimg", fill="black")
        for c, (cand, points) in enumerate(by_cand.items()):
            colour = COLOURS[c % len(COLOURS)]
            dx = 4 * (c - (len(by_cand) - 1) / 2)        # side by side, so that the min-max bars do not hide each other
            xy = [(sx(float(k)) + dx, sy(ms["fid"]["mean"])) for k, ms in points.items() if "fid" in ms]
            if len(xy) > 1:
                draw.line(xy, fill=colour, width=2)
            for (x, _), ms in zip(xy, [ms for ms in points.values() if "fid" in ms]):
                draw.line([(x, sy(ms["fid"]["min"])), (x, sy(ms["fid"]["max"]))], fill=colour, width=1)
                draw.ellipse([x - 3, sy(ms["fid"]["mean"]) - 3, x + 3, sy(ms["fid"]["mean"]) + 3], fill=colour)
            draw.text((x0 + W - R + 10, T + 16 * c), cand, fill=colour)
    with atomic_path(path) as tmp:
        img.save(tmp, format="PNG")


def main(argv: Optional[list[str]] = None) -> dict:
    a = parse_args(argv)
    prepare_data(a)
    curves = run_all(a)
    summary = summarise(curves)
    import torch
    result = {"command": "python bench/recipe_experiment.py " + shlex.join(sys.argv[1:] if argv is None else argv),
              "torch": torch.__version__, "platform": platform.platform(), "cpu_only": not torch.cuda.is_available(),
              "settings": {"datasets": a.datasets, "seeds": a.seeds, "total_kimg": a.total_kimg,
                           "eval_every_kimg": a.eval_every, "fakes_per_metric": a.eval_images,
                           "reals_per_metric": a.eval_images, "reals": "the dataset's first N images (stored order)",
                           "model_flags": a.model, "extra_flags": a.extra, "collected_only": a.collect,
                           "candidates": {c: CANDIDATES[c] for c in a.candidates}},
              "summary": summary, "curves": curves}
    out = Path(a.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    with atomic_write(out.with_suffix(".json"), "w") as f:
        json.dump(result, f, indent=1)
    plot(summary, out.with_suffix(".png"), f"FID{a.eval_images} vs kimg, {a.seeds} seed(s)")
    for dataset, by_cand in summary.items():
        for cand, points in by_cand.items():
            last = points[max(points, key=float)] if points else {}
            fid = last.get("fid", {})
            print(f"{dataset} {cand}: FID {fid.get('mean', float('nan')):.2f} +- {fid.get('std', 0):.2f} "
                  f"(n={fid.get('n', 0)}) at {max(points, key=float) if points else '-'} kimg"
                  + (f", {last['fid_ratio_to_faithful']:.3f}x faithful" if "fid_ratio_to_faithful" in last else ""))
    print(f"wrote {out.with_suffix('.json')} and {out.with_suffix('.png')}")
    return result


if __name__ == "__main__":
    try:
        main()
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
