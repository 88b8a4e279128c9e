"""Prepare datasets for GANformer training (written to <data-dir>/<name>/ as memory-mappable shards).

  python prepare_data.py --scenes --resolution 64 --max-images 2000     # built-in, no download
  python prepare_data.py --ffhq --cityscapes --clevr --bedrooms --max-images 100000
  python prepare_data.py --task NAME --images-dir DIR --format png --ratio 0.7 --shards-num 5
  python prepare_data.py --scenes --preview        # also write <data-dir>/scenes/preview.png (a grid)
  python prepare_data.py --task NAME --images-dir ffhq.zip --format stylegan-zip   # a StyleGAN2-ADA dataset
  python prepare_data.py --export stylegan-zip --task NAME --output NAME.zip       # ... and back

An interrupted run leaves no dataset that training would accept; run the same command again to
finish it. Unreadable images are skipped and counted in the summary.
"""
from __future__ import annotations

import argparse
import math
import os
import sys
import tempfile
from pathlib import Path

from dnnlib.cli import FlagParser
from dnnlib.util import UserError, cli_main
from training.data import catalog, sources
from training.data.writer import convert, load_labels_file, write_scenes
from training.data.scenes import SCENES_DEFAULT_IMAGES


def build_parser() -> argparse.ArgumentParser:
    p = FlagParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data-dir", default="datasets", help="root folder of the datasets (default: %(default)s)")
    p.add_argument("--shards-num", type=int, default=None,
                   help="number of shard files per dataset (default: the catalog's count, else one per 4 GB)")
    p.add_argument("--max-images", type=int, default=None,
                   help=f"store at most this many images (default: all; scenes: {SCENES_DEFAULT_IMAGES})")
    g = p.add_argument_group("built-in dataset")
    g.add_argument("--scenes", dest="tasks", action="append_const", const="scenes",
                   help="render the procedural CLEVR-like 'scenes' dataset (no download)")
    g.add_argument("--seed", type=int, default=0, help="scenes: random seed (default: %(default)s)")
    g = p.add_argument_group("catalog (downloaded, checksummed, converted)")
    for e in catalog.CATALOG.values():
        g.add_argument(f"--{e.name}", dest="tasks", action="append_const", const=e.name,
                       help=f"prepare {e.title} ({e.size_gb:g} GB download, {e.images:,} images)")
    g = p.add_argument_group("custom datasets")
    g.add_argument("--task", dest="tasks", action="append", metavar="NAME", help="name of a new dataset")
    g.add_argument("--images-dir", help="source: a folder of images (searched recursively), a .npy/.hdf5 "
                   "file, an LMDB folder, a folder of .tfrecords files, or a tfds dataset name")
    g.add_argument("--format", choices=sources.FORMATS, default=None,
                   help="source format (default: guessed from --images-dir)")
    g.add_argument("--ratio", type=float, default=1.0,
                   help="crop images to this height/width before padding to a square (default: %(default)s)")
    g.add_argument("--labels", metavar="FILE", help="class of each image: JSON {name: class} or CSV name,class")
    g = p.add_argument_group("export")
    g.add_argument("--export", choices=["stylegan-zip"], default=None,
                   help="write the prepared dataset --task NAME (or --scenes) in another format instead of "
                        "preparing it: stylegan-zip = a StyleGAN2-ADA dataset archive with dataset.json labels")
    g.add_argument("--output", metavar="FILE", help="--export: the file to write (.zip)")
    p.add_argument("--resolution", type=int, default=None,
                   help="output resolution, a power of two (default: scenes 64, custom: nearest to the images)")
    p.add_argument("--workers", type=int, default=min(8, os.cpu_count() or 1),
                   help="decoding/rendering processes (default: %(default)s)")
    p.add_argument("--force", action="store_true", help="rebuild datasets that are already complete, or replace "
                   "a different dataset of the same name")
    p.add_argument("--channels", type=int, choices=(1, 3), default=None,
                   help="custom datasets: 1 (grey) or 3 (colour); default: 3 if any image is in colour")
    p.add_argument("--preview", action="store_true", help="write preview.png, a grid of 32 images, into each "
                   "dataset's folder (with --task NAME alone: of the prepared dataset NAME)")
    return p


def guess_format(images_dir: str) -> str | None:
    """--format from what --images-dir holds; None = image files."""
    p = Path(images_dir)
    if p.is_file():
        suffix = p.suffix.lower()
        if suffix == ".npy":
            return "npy"
        if suffix in (".h5", ".hdf5", ".hdf"):
            return "hdf5"
        if ".tfrecords" in p.name:
            return "tfrecords"
        if suffix == ".zip":
            return "stylegan-zip"
        raise UserError(f"--images-dir {images_dir} is a file; give --format")
    if (p / "data.mdb").is_file():
        return "lmdb"
    if p.is_dir() and next(p.rglob("*.tfrecords*"), None) is not None:
        return "tfrecords"
    if (p / "dataset.json").is_file():
        return "stylegan-zip"
    return None


def export(args: argparse.Namespace) -> dict:
    """--export: write the one prepared dataset named by --task/--scenes in another format."""
    from training.data.dataset import ImageDataset, dataset_path
    from training.data.stylegan import export_zip
    names = list(dict.fromkeys(args.tasks or []))
    if len(names) != 1:
        raise UserError("--export writes one prepared dataset: name it with --task NAME (or --scenes)")
    if not args.output or not args.output.lower().endswith(".zip"):
        raise UserError("--export stylegan-zip needs --output FILE.zip")
    if args.images_dir:
        raise UserError("--export reads a prepared dataset from --data-dir, not --images-dir")
    dataset = ImageDataset(dataset_path(args.data_dir, names[0]), use_labels=True)
    try:
        summary = export_zip(dataset, args.output)
    except OSError as e:
        raise UserError(f"cannot write {args.output}: {e.strerror or e}") from None
    print(f"{names[0]}: exported {summary['count']:,} images{' with labels' if summary['labelled'] else ''} "
          f"to {summary['path']} ({summary['bytes'] / 2**20:,.1f} MiB)")
    return summary


def check_args(args: argparse.Namespace) -> None:
    if args.output:
        raise UserError("--output is for --export")
    if not args.tasks:
        raise UserError("nothing to do: give --scenes, a catalog dataset (--ffhq, --clevr, ...) "
                        "or --task NAME --images-dir DIR (see --help)")
    custom = [t for t in args.tasks if t != "scenes" and t not in catalog.CATALOG]
    for t in custom:
        if not t or t in (".", "..") or "/" in t or "\\" in t:
            raise UserError(f"--task {t!r}: a dataset name cannot contain path separators")
    if custom and not args.images_dir and not args.preview:
        raise UserError("--task needs --images-dir (or --preview, to look at a prepared dataset)")
    if not (math.isfinite(args.ratio) and 0.01 <= args.ratio <= 100):
        raise UserError(f"--ratio must be a height/width between 0.01 and 100, got {args.ratio}")
    for flag in ("max_images", "shards_num", "workers"):
        v = getattr(args, flag)
        if v is not None and v < 1:
            raise UserError(f"--{flag.replace('_', '-')} must be positive, got {v}")
    if args.resolution is not None and (args.resolution < 4 or args.resolution & (args.resolution - 1)):
        raise UserError(f"--resolution must be a power of two >= 4, got {args.resolution}")
    check_writable(args.data_dir)


def check_writable(data_dir: str) -> None:
    try:
        Path(data_dir).mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=data_dir):
            pass
    except OSError as e:
        raise UserError(f"cannot write to --data-dir {data_dir}: {e.strerror or e}") from None


def write_preview(root: Path) -> Path:
    """A grid of images spread over a prepared dataset, as <root>/preview.png."""
    from training.data.dataset import ImageDataset, is_complete
    from training.sampling import save_png
    from training.visualize import dataset_grid
    if not is_complete(root):
        raise UserError(f"no prepared dataset in {root} to preview (prepare it first, see --help)")
    out = root / "preview.png"
    save_png(dataset_grid(ImageDataset(root)), out)
    return out


def run_task(task: str, args: argparse.Namespace) -> dict | None:
    root = Path(args.data_dir) / task
    if not args.images_dir and task != "scenes" and task not in catalog.CATALOG:
        return None                                 # --task NAME --preview: look only
    if task == "scenes":
        return write_scenes(root, resolution=args.resolution or 64, count=args.max_images or SCENES_DEFAULT_IMAGES,
                            seed=args.seed, shards_num=args.shards_num, workers=args.workers, force=args.force)
    if task in catalog.CATALOG:
        return catalog.prepare(catalog.CATALOG[task], args.data_dir, max_images=args.max_images,
                               shards_num=args.shards_num, workers=args.workers, force=args.force)
    fmt = args.format if args.format else guess_format(args.images_dir)
    source = sources.open_source(fmt, args.images_dir, tfds_dir=Path(args.data_dir) / ".tfds")
    labels = load_labels_file(args.labels) if args.labels else None
    return convert(source, root, name=task, ratio=args.ratio, resolution=args.resolution, max_images=args.max_images,
                   shards_num=args.shards_num, labels=labels, workers=args.workers, force=args.force,
                   channels=args.channels)


def describe(s: dict) -> str:
    """One summary line for a prepared dataset."""
    where = f"{s['count']:,} images ({s['resolution']}x{s['resolution']}, {s['channels']} channel"
    where += f"{'s' if s['channels'] > 1 else ''}, {s['shards']} shard{'s' if s['shards'] > 1 else ''}, "
    where += f"{s['bytes'] / 2**20:,.1f} MiB) in {s['path']}"
    if s.get("channels_from"):
        where += f" [channels: {s['channels_from']}]"
    if s["already"]:
        return f"{s['name']}: already prepared: {where} (--force rebuilds it)"
    skipped = sum(s["skipped"].values())
    line = f"{s['name']}: wrote {where} in {s['seconds']:.1f}s; skipped {skipped}"
    if skipped:
        line += " (" + ", ".join(f"{n} {why}" for why, n in sorted(s["skipped"].items())) + ")"
    if s.get("ignored"):
        line += f"; ignored {s['ignored']} other file{'s' if s['ignored'] > 1 else ''}"
    return line


@cli_main
def main(argv: list[str] | None = None) -> list[dict]:
    args = build_parser().parse_args(argv)
    if args.export:
        return [export(args)]
    check_args(args)
    if args.max_images is not None and args.max_images < 50000 and set(args.tasks) - {"scenes"}:
        print(f"note: --max-images {args.max_images} is below 50,000, the sample size of FID-50k")
    summaries = []
    for task in dict.fromkeys(args.tasks):          # each once, in order
        try:
            summary = run_task(task, args)
        except OSError as e:                        # disk full, I/O errors: progress so far is kept
            where = f" ({e.filename})" if e.filename else ""
            raise UserError(f"{task}: {e.strerror or e}{where}; run the same command again to continue") from None
        if summary is not None:
            print(describe(summary), flush=True)
            summaries.append(summary)
        if args.preview:
            print(f"{task}: preview of the dataset in {write_preview(Path(args.data_dir) / task)}", flush=True)
    written = sum(s["count"] for s in summaries if not s["already"])
    skipped = sum(sum(s["skipped"].values()) for s in summaries if not s["already"])
    print(f"done: {len(summaries)} dataset{'s' if len(summaries) > 1 else ''}, {written:,} images written, "
          f"{skipped:,} skipped")
    return summaries


if __name__ == "__main__":
    main(sys.argv[1:])
