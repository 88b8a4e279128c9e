"""A small natural-image dataset without downloads: random crops of the colour photographs that
scikit-image ships (`pip install scikit-image`), for experiments that want real photos beside `scenes`.

  python bench/make_photo_crops.py --out /tmp/photo-crops --count 5000 --size 32
  python prepare_data.py --task photocrops --images-dir /tmp/photo-crops --format png --resolution 32

Each image is a square crop of one photograph (side drawn log-uniformly between 1/8 and 1/2 of the
photograph's shorter side, position uniform, mirrored half of the time), reduced to --size with a box
filter (Pillow's reduce, then Lanczos for the remainder). Deterministic for a given --seed.
"""
from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from dnnlib.util import UserError, atomic_path  # noqa: E402

# Colour photographs in scikit-image's data folder (no network needed).
PHOTOS = ("astronaut", "chelsea", "coffee", "rocket", "hubble_deep_field", "immunohistochemistry", "retina")


def load_photos() -> dict[str, np.ndarray]:
    try:
        import skimage.data
    except ImportError:
        raise UserError("this script needs scikit-image: pip install scikit-image") from None
    return {name: getattr(skimage.data, name)() for name in PHOTOS}


def crop(photo: np.ndarray, rng: np.random.Generator, size: int) -> Image.Image:
    h, w = photo.shape[:2]
    short = min(h, w)
    side = int(round(math.exp(rng.uniform(math.log(short / 8), math.log(short / 2)))))
    side = max(size, min(side, short))
    y, x = int(rng.integers(0, h - side + 1)), int(rng.integers(0, w - side + 1))
    img = Image.fromarray(photo[y:y + side, x:x + side])
    if rng.random() < 0.5:
        img = img.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    factor = side // size
    if factor > 1:
        img = img.reduce(factor)
    return img.resize((size, size), Image.Resampling.LANCZOS)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", required=True, help="folder for the PNG files")
    p.add_argument("--count", type=int, default=5000)
    p.add_argument("--size", type=int, default=32)
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args(argv)
    try:
        if a.count < 1 or a.size < 4:
            raise UserError("--count must be >= 1 and --size >= 4")
        photos = load_photos()
        names = list(photos)
        out = Path(a.out)
        out.mkdir(parents=True, exist_ok=True)
        rng = np.random.default_rng(a.seed)
        for i in range(a.count):
            name = names[i % len(names)]
            path = out / f"{name}-{i:06d}.png"
            with atomic_path(path) as tmp:
                crop(photos[name], rng, a.size).save(tmp, format="PNG")
        print(f"wrote {a.count} crops of {len(names)} photographs ({a.size}x{a.size}) to {out}")
        return 0
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
