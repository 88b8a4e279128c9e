"""StyleGAN2-ADA datasets: read them (`prepare_data.py --format stylegan-zip`) and write them (`--export`).

The format (StyleGAN2-ADA's `dataset_tool.py`, also read by StyleGAN3): a zip archive, or a folder,
of image files at any depth, plus an optional `dataset.json` at the top:

    {"labels": [["00000/img00000000.png", 6], ["00000/img00000001.png", 2], ...]}    (or "labels": null)

Each label is a class index or a label vector. We read class indices and one-hot vectors; other
vectors are noted and dropped. Images are read in sorted name order, as StyleGAN2-ADA does. We write
`00000/img00000000.png`, ... (1,000 images per folder), uncompressed entries (PNG is already
compressed), and `dataset.json` with the class names under an extra key that StyleGAN2-ADA ignores.
"""
from __future__ import annotations

import io
import json
import os
import zipfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from dnnlib.util import UserError, atomic_path
from training.data.sources import IMAGE_EXTENSIONS, ImageFolder, Item, Source, _int_labels

LABELS_NAME = "dataset.json"


def _check_entry(name: str, where: str) -> None:
    """Refuse archive entries that would land outside the archive's folder if extracted."""
    parts = name.replace("\\", "/").split("/")
    if name.startswith(("/", "\\")) or ".." in parts or (parts and len(parts[0]) == 2 and parts[0][1] == ":"):
        raise UserError(f"{where}: entry {name!r} points outside the archive; refusing to read it")


def _labels(data: bytes | None, names: list[str], where: str) -> tuple[np.ndarray, list[str]] | None:
    """Class index per image (and class names) from dataset.json's text; None when it has none."""
    if data is None:
        return None
    try:
        meta = json.loads(data.decode("utf-8-sig"))
        pairs = meta.get("labels") if isinstance(meta, dict) else None
        table = None if pairs is None else {str(k).replace("\\", "/"): v for k, v in pairs}
    except (ValueError, TypeError, AttributeError):
        raise UserError(f"{where}: {LABELS_NAME} is not {{\"labels\": [[name, label], ...]}}") from None
    if table is None:
        return None
    missing = [n for n in names if n not in table]
    if missing:
        raise UserError(f"{where}: {LABELS_NAME} has no label for {missing[0]} ({len(missing)} images unlabelled)")
    try:
        values = np.asarray([table[n] for n in names], np.float64)
    except (ValueError, TypeError):
        raise UserError(f"{where}: {LABELS_NAME} labels must be numbers or vectors of one length") from None
    found = _int_labels(values, len(names), f"{where}/{LABELS_NAME}")
    if found is None:
        return None
    class_names = meta.get("class_names")
    if isinstance(class_names, list) and len(class_names) >= len(found[1]):
        return found[0], [str(c) for c in class_names]
    return found


class StyleGANZip(Source):
    """A StyleGAN2-ADA dataset archive (.zip): image entries in sorted name order, labels from dataset.json."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        try:
            self.zip = zipfile.ZipFile(self.path)
            infos = self.zip.infolist()
        except (zipfile.BadZipFile, OSError, ValueError) as e:
            raise UserError(f"{path} is not a readable zip archive: {e}") from None
        exts = IMAGE_EXTENSIONS[None]
        for info in infos:
            _check_entry(info.filename, str(path))
        self.names = sorted(i.filename for i in infos if not i.is_dir() and i.filename.lower().endswith(exts))
        self.ignored = sum(1 for i in infos if not i.is_dir() and i.filename not in self.names
                           and i.filename != LABELS_NAME)
        if not self.names:
            raise UserError(f"no image files in {path}")
        meta = self.zip.read(LABELS_NAME) if LABELS_NAME in self.zip.namelist() else None
        found = _labels(meta, self.names, str(path))
        if found is not None:
            self.labels, self.class_names = found
        st = self.path.stat()
        self.description = {"format": "stylegan-zip", "path": str(self.path.resolve()), "files": len(self.names),
                            "size": st.st_size, "mtime_ns": st.st_mtime_ns}

    def __len__(self) -> int:
        return len(self.names)

    def items(self, start: int = 0) -> Iterator[Item]:
        for i in range(start, len(self.names)):
            try:
                payload = self.zip.read(self.names[i])
            except (zipfile.BadZipFile, OSError, ValueError):    # damaged entry: skipped as unreadable
                payload = b""
            label = int(self.labels[i]) if self.class_names is not None else None
            yield Item(i, self.names[i], payload, label)


class StyleGANFolder(ImageFolder):
    """A StyleGAN2-ADA dataset folder: the image files under it, labels from its dataset.json."""

    def __init__(self, path: str | os.PathLike):
        super().__init__(path, None)
        meta_path = self.root / LABELS_NAME
        self.ignored -= meta_path.is_file()
        found = _labels(meta_path.read_bytes() if meta_path.is_file() else None, self.files, str(path))
        if found is not None:
            self.labels, self.class_names = found
        self.description["format"] = "stylegan-zip"
        if meta_path.is_file():
            self.description["labels_mtime_ns"] = meta_path.stat().st_mtime_ns

    def items(self, start: int = 0) -> Iterator[Item]:
        for item in super().items(start):
            if self.class_names is not None:
                item.label = int(self.labels[item.index])
            yield item


def open_stylegan(path: str | os.PathLike) -> Source:
    """A StyleGAN2-ADA dataset, zip or folder."""
    return StyleGANFolder(path) if Path(path).is_dir() else StyleGANZip(path)


def entry_name(index: int) -> str:
    """Where image `index` goes in an archive, as StyleGAN2-ADA's dataset tool names it."""
    return f"{index // 1000:05d}/img{index:08d}.png"


def export_zip(dataset, out: str | os.PathLike, progress: bool = True) -> dict:
    """Write `dataset` (a `training.data.dataset.ImageDataset`) as a StyleGAN2-ADA zip; return a summary."""
    import PIL.Image
    from tqdm import tqdm
    out = Path(out)
    labels = []
    with atomic_path(out) as tmp, zipfile.ZipFile(tmp, "w", zipfile.ZIP_STORED) as z, \
            tqdm(total=len(dataset), desc="export", unit="img", disable=None if progress else True) as bar:
        for start in range(0, len(dataset), 256):
            images, classes = dataset.get_batch(range(start, min(start + 256, len(dataset))))
            for j, (img, cls) in enumerate(zip(images.numpy(), classes.tolist())):
                name = entry_name(start + j)
                buf = io.BytesIO()
                PIL.Image.fromarray(img[0] if img.shape[0] == 1 else img.transpose(1, 2, 0)).save(buf, "png")
                z.writestr(name, buf.getvalue())
                labels.append([name, cls])
            bar.update(len(images))
        meta = {"labels": labels if dataset.has_labels else None}
        if dataset.has_labels:
            meta["class_names"] = dataset.class_names
        z.writestr(LABELS_NAME, json.dumps(meta))
    return {"path": str(out), "count": len(labels), "labelled": dataset.has_labels, "bytes": out.stat().st_size}
