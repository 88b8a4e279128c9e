"""Metrics between two image folders (or zip files of images), no model involved.

    python -m metrics.compare DIR_A DIR_B --metrics fid,kid [--num N] [--device cpu]

DIR_A plays the reals (its statistics are cached by content hash), DIR_B the fakes. Prints one line
per metric; exits 0 when at least one metric was computed, 1 when none was, 2 on a usage error.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
import zipfile
from pathlib import Path
from typing import Iterator

import numpy as np
import PIL.Image
import torch

from dnnlib import util
from dnnlib.cli import FlagParser

from .metric_main import MetricOptions, compute_metrics, format_result, list_metrics
from .metric_utils import ImageSource, hash_files

IMAGE_EXTS = {".png", ".jpg", ".jpeg", ".bmp", ".webp", ".ppm", ".tif", ".tiff"}


def _to_tensor(img: PIL.Image.Image) -> torch.Tensor:
    arr = np.asarray(img.convert("RGB"), dtype=np.uint8)  # [H, W, 3]
    return torch.from_numpy(arr.copy()).permute(2, 0, 1)  # [3, H, W]


class ImageFolder:
    """Image files of a folder (recursively, sorted by path) or a zip file, as uint8 batches."""

    def __init__(self, path: str | os.PathLike, batch_size: int = 32):
        self.path = Path(path)
        self.batch_size = batch_size
        if self.path.is_dir():
            self.names = sorted(str(p.relative_to(self.path)) for p in self.path.rglob("*")
                                if p.is_file() and p.suffix.lower() in IMAGE_EXTS)
        elif zipfile.is_zipfile(self.path):
            with zipfile.ZipFile(self.path) as z:
                self.names = sorted(n for n in z.namelist() if Path(n).suffix.lower() in IMAGE_EXTS)
        else:
            raise util.UserError(f"{path}: not a folder or zip of images")
        if not self.names:
            raise util.UserError(f"{path}: no images ({', '.join(sorted(IMAGE_EXTS))})")

    def __len__(self) -> int:
        return len(self.names)

    def content_hash(self, limit: int | None = None) -> str:
        """Hash of the names and bytes of the first `limit` images."""
        names = self.names[:limit]
        if self.path.is_dir():
            return hash_files([self.path / n for n in names], root=self.path)
        digest = hashlib.sha256()
        with zipfile.ZipFile(self.path) as z:
            for n in names:
                digest.update(n.encode("utf-8") + b"\0" + z.read(n) + b"\0")
        return digest.hexdigest()

    def _images(self) -> Iterator[torch.Tensor]:
        def load(opener, name):
            try:
                with opener(name) as f, PIL.Image.open(f) as img:
                    return _to_tensor(img)
            except (OSError, PIL.UnidentifiedImageError) as e:
                raise util.UserError(f"{self.path / name}: cannot read image ({e})") from None
        if self.path.is_dir():
            for n in self.names:
                yield load(lambda m: open(self.path / m, "rb"), n)
        else:
            with zipfile.ZipFile(self.path) as z:
                for n in self.names:
                    yield load(z.open, n)

    def __iter__(self) -> Iterator[torch.Tensor]:
        """Batches [B, 3, H, W]; a new batch starts whenever the image size changes."""
        pending: list[torch.Tensor] = []
        for img in self._images():
            if pending and (img.shape != pending[0].shape or len(pending) == self.batch_size):
                yield torch.stack(pending)
                pending = []
            pending.append(img)
        if pending:
            yield torch.stack(pending)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = FlagParser(prog="python -m metrics.compare", description=__doc__.split("\n\n")[0])
    p.add_argument("dir_a", help="reference images (folder or zip), the 'reals'")
    p.add_argument("dir_b", help="images to evaluate (folder or zip), the 'fakes'")
    p.add_argument("--metrics", default="fid", help=f"comma-separated, from: {', '.join(list_metrics())}")
    p.add_argument("--num", type=int, default=None, help="images used from each side (default: all of each)")
    p.add_argument("--device", default="cpu", help="cpu, cuda, cuda:1, ...")
    p.add_argument("--batch", type=int, default=32, help="images per batch")
    p.add_argument("--ratio", type=float, default=None, help="centre-crop rows to this height/width ratio")
    p.add_argument("--inception", default=None, help="path to the Inception pool3 TorchScript (default: packaged)")
    p.add_argument("--inception-logits", default=None, help="path to NVIDIA's inception-2015-12-05.pt (IS)")
    p.add_argument("--vgg16", default=None, help="path to NVIDIA's vgg16.pt (precision/recall)")
    p.add_argument("--fid-method", default="sqrtm", choices=["sqrtm", "eigh"],
                   help="matrix square root: sqrtm (as the official code) or eigh (same value, faster)")
    p.add_argument("--no-cache", action="store_true", help="do not read or write cached statistics of DIR_A")
    p.add_argument("--json", default=None, help="also write the results to this JSON file")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    return p.parse_args(argv)


@util.cli_main
def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        raise util.UserError(f"--device {args.device}: CUDA is not available here")
    if args.num is not None and args.num < 2:
        raise util.UserError("--num must be at least 2")
    a, b = ImageFolder(args.dir_a, args.batch), ImageFolder(args.dir_b, args.batch)
    num_a = len(a) if args.num is None else args.num
    num_b = len(b) if args.num is None else args.num
    for folder, want in ((a, num_a), (b, num_b)):
        if len(folder) < want:
            raise util.UserError(f"{folder.path} has only {len(folder)} images but --num is {want}")
    paths = {k: v for k, v in (("inception", args.inception), ("inception_logits", args.inception_logits),
                               ("vgg16", args.vgg16)) if v}
    opts = MetricOptions(batch_size=args.batch, ratio=args.ratio, network_paths=paths, fid_method=args.fid_method,
                         cache=not args.no_cache, progress=not args.quiet)
    real = ImageSource(a, cache_key=None if args.no_cache else a.content_hash(num_a), num_images=len(a),
                       name=str(a.path))
    fake = ImageSource(b, num_images=len(b), name=str(b.path))
    results = compute_metrics(args.metrics, fake, real, num_b, args.device, opts, num_real=num_a)
    for res in results.values():
        print(format_result(res, snapshot=b.path.name))
    if args.json:
        with util.atomic_write(args.json, "w") as f:
            json.dump({k: r.to_dict() for k, r in results.items()}, f, indent=2)
    return 0 if any(r.ok for r in results.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
