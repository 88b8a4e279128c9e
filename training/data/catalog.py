"""The dataset catalog of `prepare_data.py --ffhq --cityscapes --clevr --bedrooms`.

Sources and checksums are those of the official GANformer `prepare_data.py`. FFHQ, CLEVR and
Cityscapes are distributed as TFRecords already cropped, padded and resized to 256x256 by the
authors (CLEVR with ratio 0.75, Cityscapes 0.5); LSUN-Bedrooms as the original LMDB database of
encoded images. Downloads are kept in `<data-dir>/<name>/downloads/`, then converted into our
shard format in `<data-dir>/<name>/`.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from dnnlib import download as dl
from dnnlib.util import UserError
from training.data import sources
from training.data.writer import convert

GDRIVE = "https://drive.google.com/uc?id="


@dataclass(frozen=True)
class CatalogEntry:
    name: str           # --<name> flag and dataset folder
    title: str          # for messages
    filename: str       # the downloaded file
    url: str
    md5: str
    ratio: float        # image height/width of the content
    size_gb: float      # download size
    shards: int         # default shard count (when --max-images is not given)
    images: int         # images in the full dataset
    kind: str           # how the download is read: "tfrecords" or "lmdb"
    subdir: str = "."   # where the data is inside the extracted archive


CATALOG: dict[str, CatalogEntry] = {e.name: e for e in (
    CatalogEntry("ffhq", "FFHQ", "ffhq-r08.tfrecords1of1",
                 "http://downloads.cs.stanford.edu/nlp/data/dorarad/ffhq-r08.tfrecords1of1",
                 "74de4f07dc7bfb07c0ad4471fdac5e67", ratio=1.0, size_gb=13, shards=1, images=70000,
                 kind="tfrecords"),
    CatalogEntry("bedrooms", "LSUN-Bedrooms", "bedroom_train_lmdb.zip",
                 "http://dl.yf.io/lsun/scenes/bedroom_train_lmdb.zip",
                 "f2c5d904a82a6295dbdccb322b4b0a99", ratio=188 / 256, size_gb=43, shards=64, images=3033042,
                 kind="lmdb", subdir="bedroom_train_lmdb"),
    CatalogEntry("cityscapes", "Cityscapes", "cityscapes.zip", GDRIVE + "1t9Qhxm0iHFd3k-xTYEbKosSx_DkyoLLJ",
                 "953d231046275120dc1f73a5aebc9087", ratio=0.5, size_gb=2, shards=16, images=24998,
                 kind="tfrecords"),
    CatalogEntry("clevr", "CLEVR", "clevr.zip", GDRIVE + "1lY4JE30yk26v0MWHNpXBOMzltufUcTXj",
                 "3040bb20a29cd2f0e1e9231aebddf2a1", ratio=0.75, size_gb=6, shards=5, images=100015,
                 kind="tfrecords"),
)}


def fetch(entry: CatalogEntry, dataset_dir: Path, progress: bool = True) -> Path:
    """Download (resumably, verified) and extract an entry; return the folder or file to read.

    When the download fails (offline, refused, bad checksum) the error says where to put a file fetched
    by hand, and the folders made for it are removed again if they are empty.
    """
    downloads = dataset_dir / "downloads"
    dest = downloads / entry.filename
    if not dest.exists():
        print(f"{entry.title}: fetching {entry.filename} ({entry.size_gb:g} GB) from {entry.url}")
    try:
        path = dl.download(entry.url, dest, md5=entry.md5, progress=progress)
    except UserError as e:
        for folder in (downloads, dataset_dir):       # rmdir removes only empty folders: a .part file stays
            try:
                folder.rmdir()
            except OSError:
                pass
        reason = " ".join(str(e).split())
        raise UserError(f"{entry.title}: {reason}; to install it by hand, download {entry.url} (md5 {entry.md5}) "
                        f"and save it as {dest.resolve()}, then run the same command again") from None
    if not entry.filename.endswith((".zip", ".tar", ".tar.gz", ".tgz")):
        return path
    folder = dl.extract(path, downloads / "extracted", progress=progress)
    data = folder / entry.subdir
    if not data.exists():
        raise UserError(f"{entry.filename} does not contain {entry.subdir}/ as expected")
    return data


def prepare(entry: CatalogEntry, data_dir: str | os.PathLike, *, max_images: int | None = None,
            shards_num: int | None = None, workers: int = 1, force: bool = False, progress: bool = True) -> dict:
    """Download, verify, extract and convert one catalog dataset into `<data-dir>/<name>/`."""
    dataset_dir = Path(data_dir) / entry.name
    data = fetch(entry, dataset_dir, progress)
    source = sources.LmdbSource(data) if entry.kind == "lmdb" else sources.TFRecordSource(data)
    if shards_num is None and max_images is None:
        shards_num = entry.shards
    # The TFRecords hold padded squares already; cropping at their ratio and padding again is the
    # identity, so the same preprocessing serves both kinds of download.
    summary = convert(source, dataset_dir, name=entry.name, ratio=entry.ratio, max_images=max_images,
                      shards_num=shards_num, workers=workers, force=force, progress=progress)
    summary["downloads"] = str(dataset_dir / "downloads")
    return summary
