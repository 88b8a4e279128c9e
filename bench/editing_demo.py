#!/usr/bin/env python
"""How much each latent component controls: swap one component at a time (and the global latent, and all
local ones together) from a donor seed into a few images, with `generate.py --components`, and measure it.

  python bench/editing_demo.py --model results/quickstart-000 --seeds 0-5 --donor-seed 11

Writes bench/results/editing-swap-cpu.png (rows: the originals, the donor, then one row per swap; columns:
the seeds) and bench/results/editing-swap-cpu.json: the commands and, per swap, the mean absolute pixel
change from the original (0-255 scale) averaged over the seeds. A component that owns an object moves
that object (a large change in a few images); one the model ignores changes almost nothing.
"""
from __future__ import annotations

import argparse
import json
import shlex
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
from dnnlib.util import atomic_path, atomic_write  # noqa: E402


def swap(a, work: Path, rows: str) -> tuple[str, list[np.ndarray], list[np.ndarray], list[np.ndarray]]:
    """Run generate.py for one --components value; returns the command and the originals, donors, edits."""
    out = work / rows.replace(",", "-")
    cmd = ["generate.py", "--model", a.model, "--seeds", a.seeds, "--components", rows,
           "--resample-seed", str(a.donor_seed), "--output-dir", str(out)]
    subprocess.run([sys.executable, *cmd], cwd=REPO, check=True, capture_output=True, text=True)
    strips = [np.asarray(Image.open(p).convert("RGB")) for p in sorted((out / "compare").glob("*.png"))]
    w = strips[0].shape[1] // 3
    originals, donors, edits = ([s[:, i * w:(i + 1) * w] for s in strips] for i in range(3))
    return "python " + " ".join(cmd), originals, donors, edits


def montage(rows: list[tuple[str, list[np.ndarray]]], path: Path, scale: int = 3) -> None:
    h, w = rows[0][1][0].shape[:2]
    S, pad, label = (h * scale, w * scale), 2, 90
    img = Image.new("RGB", (label + len(rows[0][1]) * (S[1] + pad), len(rows) * (S[0] + pad)), "white")
    draw = ImageDraw.Draw(img)
    for r, (name, images) in enumerate(rows):
        draw.text((4, r * (S[0] + pad) + S[0] // 2 - 6), name, fill="black")
        for c, arr in enumerate(images):
            tile = Image.fromarray(arr).resize((S[1], S[0]), Image.NEAREST)
            img.paste(tile, (label + c * (S[1] + pad), r * (S[0] + pad)))
    with atomic_path(path) as tmp:
        img.save(tmp, format="PNG")


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", required=True, help="a run folder or snapshot generate.py accepts")
    p.add_argument("--seeds", default="0-5")
    p.add_argument("--donor-seed", type=int, default=11)
    p.add_argument("--components", type=int, default=None, help="K, the number of local components (default: the model's)")
    p.add_argument("--note", default="", help="where the model came from (stored with the results)")
    p.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "editing-swap-cpu.png")
    a = p.parse_args(argv)
    if a.components is None:
        from training.checkpoint import load_generator
        a.components = load_generator(a.model).K
    swaps = [str(k) for k in range(a.components)] + ["global", ",".join(str(k) for k in range(a.components))]
    rows, figures, commands = [], {}, []
    with tempfile.TemporaryDirectory() as tmp:
        for i, s in enumerate(swaps):
            cmd, originals, donors, edits = swap(a, Path(tmp), s)
            if i == 0:
                rows += [("original", originals), (f"donor {a.donor_seed}", donors)]
            name = "all local" if "," in s else s
            change = float(np.mean([np.abs(e.astype(float) - o).mean() for e, o in zip(edits, originals)]))
            figures[name] = change
            rows.append((f"swap {name}", edits))
            commands.append(cmd)
            print(f"swap {name:10s}: mean |edited - original| = {change:6.2f} of 255")
    montage(rows, a.out)
    result = {"command": "python bench/editing_demo.py " + shlex.join(sys.argv[1:] if argv is None else argv),
              "model": a.model, "note": a.note, "seeds": a.seeds, "donor_seed": a.donor_seed,
              "mean_abs_pixel_change_per_swap": figures, "generate_commands": commands}
    with atomic_write(a.out.with_suffix(".json"), "w") as f:
        json.dump(result, f, indent=1)
    print(f"wrote {a.out} and {a.out.with_suffix('.json')}")
    return result


if __name__ == "__main__":
    main()
