#!/usr/bin/env python
"""Projector reconstruction quality on held-out `scenes` images (a benchmark, not a test).

  python bench/projector_psnr.py --model /tmp/e14-results/quickstart-000 --images 8 --num-steps 200

Renders `--images` scenes with a seed the training set did not use (training: seed 0; here: --seed 1),
projects each into the model with projector.project, and writes bench/results/projector-quickstart-cpu.json
(PSNR per image with the optimised noise and with the model's own noise, as generate.py --latents-w
renders it; the distance used; the command) and a PNG with one row per image:
target | reconstruction | attention overlay | segmentation.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

import projector  # noqa: E402
from training.checkpoint import load_generator  # noqa: E402
from training.data.scenes import render_images  # noqa: E402
from training.sampling import save_png, to_uint8  # noqa: E402


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", required=True)
    p.add_argument("--images", type=int, default=8)
    p.add_argument("--seed", type=int, default=1, help="scenes seed of the held-out images (training used 0)")
    p.add_argument("--num-steps", type=int, default=200)
    p.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "projector-quickstart-cpu.json")
    args = p.parse_args()
    G = load_generator(args.model, "cpu")
    targets = torch.from_numpy(render_images(args.seed, range(args.images), G.img_resolution)).float() / 127.5 - 1
    distance = projector.default_distance(G)
    rows, per_image = [], []
    t0 = time.time()
    for i, target in enumerate(targets):
        res = projector.project(G, target, num_steps=args.num_steps, seed=i, distance=distance, progress=False)
        per_image.append({"index": i, "psnr_db": round(projector.psnr(res.image, target), 2),
                          "psnr_model_noise_db": round(projector.psnr(res.image_model_noise, target), 2),
                          "distance_first": round(res.losses[0], 4), "distance_last": round(res.losses[-1], 4),
                          "z_fit_error": round(res.z_fit_error, 4)})
        print(per_image[-1], flush=True)
        panels = [to_uint8(target[None])[0], to_uint8(res.image[None])[0]]
        if res.segmentation is not None:
            panels += [projector.overlay_image(res.image, res.segmentation),
                       projector.segmentation_image(res.segmentation, G.img_resolution)]
        rows.append(torch.cat(panels, dim=1))
    psnr = [r["psnr_db"] for r in per_image]
    psnr_model = [r["psnr_model_noise_db"] for r in per_image]
    result = {"what": f"projector.py on {args.images} held-out scenes images (seed {args.seed}) at "
                      f"{G.img_resolution}x{G.img_resolution}, {args.num_steps} steps each, CPU",
              "command": " ".join(["python", "bench/projector_psnr.py", *sys.argv[1:]]),
              "distance": distance.name, "components": G.K, "seconds": round(time.time() - t0, 1),
              "psnr_db_mean": round(float(np.mean(psnr)), 2), "psnr_model_noise_db_mean": round(float(np.mean(psnr_model)), 2),
              "images": per_image, "torch": torch.__version__}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    save_png(torch.cat(rows, dim=0).numpy(), args.out.with_suffix(".png"))
    print(f"mean PSNR {result['psnr_db_mean']} dB (model noise: {result['psnr_model_noise_db_mean']} dB); "
          f"wrote {args.out} and {args.out.with_suffix('.png')}")


if __name__ == "__main__":
    main()
