"""The released GANformer checkpoints by their official `gdrive:` names.

A name is resolved to its official download location (the table of the official code,
`pretrained_networks.py`), downloaded once into the cache folder (`$GANFORMER_CACHE/pretrained`,
default `~/.cache/ganformer/pretrained`) with a progress bar, checked against its checksum where one
is known (the official code publishes none), and handed to the importer. Without network access the
error names the URL and the path where the file can be put by hand.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from dnnlib.util import UserError, atomic_write, cache_dir

PREFIX = "gdrive:"
DRIVE_URL = "https://drive.google.com/uc?id={}"
# Optional base URL of a mirror serving the same files by name (also how the tests serve them).
MIRROR_ENV = "GANFORMER_PRETRAINED_URL"
RETRIES = 3                                     # download attempts after the first


@dataclass(frozen=True)
class Pretrained:
    drive_id: str
    resolution: str                             # as the official README gives it
    md5: Optional[str] = None                   # None: no published checksum


# File name -> Google Drive id (official pretrained_networks.py, last updated on 2022-05-27).
PRETRAINED: dict[str, Pretrained] = {
    "clevr-snapshot.pkl": Pretrained("1sYtuNEi0HGBH1F8GW2JlF4mCRGGrtZa9", "256x256"),
    "cityscapes-snapshot.pkl": Pretrained("1iL8S26IYCNAQmUS-6GYCVheKFtCE4ktQ", "256x256"),
    "ffhq-snapshot.pkl": Pretrained("1-b0vwevUQs6LI_EybdO8XJ5uYSx63vEa", "256x256"),
    "bedrooms-snapshot.pkl": Pretrained("1lrB4t3hOOpn8YiwHEduIZYzndHrsKX8z", "256x256"),
    # The high-resolution models the official code offers for evaluation.
    "ffhq-snapshot-1024.pkl": Pretrained("1OcsibUthk2y8y0slf2lQnrYBAtmdJYCQ", "1024x1024"),
    "cityscapes-snapshot-2048.pkl": Pretrained("1lJlbIuxF89-owG7vQSBYXc8y2RqqP_bP", "1024x2048"),
}


def known_names() -> list[str]:
    return [PREFIX + name for name in PRETRAINED]


def _entry(name: str) -> tuple[str, Pretrained]:
    file = name[len(PREFIX):] if name.startswith(PREFIX) else name
    if file not in PRETRAINED:
        raise UserError(f"unknown pretrained model {name!r}; known: {', '.join(known_names())}")
    return file, PRETRAINED[file]


def url_for(name: str) -> str:
    file, entry = _entry(name)
    mirror = os.environ.get(MIRROR_ENV)
    return f"{mirror.rstrip('/')}/{file}" if mirror else DRIVE_URL.format(entry.drive_id)


def cache_path(name: str) -> Path:
    return cache_dir("pretrained") / _entry(name)[0]


def fetch(name: str, progress: bool = True) -> Path:
    """The local path of a `gdrive:` checkpoint, downloading it on first use.

    The first download records the file's size and SHA-256 beside it (`<file>.sha256.json`); every later
    use checks the cached file against that record and refuses a file that changed.
    """
    from dnnlib.download import download

    _, entry = _entry(name)
    url, dest = url_for(name), cache_path(name)
    if dest.exists() and record_path(dest).exists():
        check_record(dest, progress)
        return dest
    try:
        path = download(url, dest, md5=entry.md5, retries=RETRIES, progress=progress)
    except UserError as e:
        reason = " ".join(str(e).split())
        raise UserError(f"cannot get {name} ({reason}); to install it by hand, download {url} "
                        f"and save it as {dest}") from None
    write_record(path, progress)
    return path


def record_path(path: Path) -> Path:
    return path.with_name(path.name + ".sha256.json")


def write_record(path: Path, progress: bool = False) -> None:
    from dnnlib.download import file_hash
    with atomic_write(record_path(path), "w") as f:
        json.dump({"size": path.stat().st_size, "sha256": file_hash(path, "sha256", progress)}, f)


def check_record(path: Path, progress: bool = False) -> None:
    """UserError unless `path` still has the size and SHA-256 recorded at its first download."""
    from dnnlib.download import file_hash
    try:
        rec = json.loads(record_path(path).read_text())
        size, digest = int(rec["size"]), str(rec["sha256"])
    except (OSError, ValueError, KeyError, TypeError):
        raise UserError(f"{record_path(path)} is unreadable; delete it and {path} to download again") from None
    got = path.stat().st_size
    if got != size or file_hash(path, "sha256", progress) != digest:
        raise UserError(f"cached {path} changed since its first download (size {got}, expected {size}, or a "
                        f"different SHA-256); delete it to download it again")
