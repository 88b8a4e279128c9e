"""Writing prepared datasets: raw uint8 shards plus a manifest, atomically and resumably.

On-disk format (read by `training.data.dataset`), in `<data-dir>/<name>/`:

* `shard-00000.u8`, `shard-00001.u8`, ...: images back to back, each uint8 [C, R, R] (CHW, the
  layout torch uses), a fixed stride of C*R*R bytes, no header. Shards are filled in order, so
  image i of the dataset is image i - (images in earlier shards) of its shard.
* `manifest.json`: resolution, channels, count, per-shard counts and sha256, crop ratio, optional
  integer labels with class names, a content hash, the preprocessing version and a description
  of the source. It is written last, by atomic rename: a folder without it is incomplete and
  the reader refuses it.

While writing, `.progress.json` records how far the shards are valid and how many source items
were consumed; it is rewritten atomically every few seconds. An interrupted run is resumed by
running the same command again: bytes past the recorded point are truncated and the source is
read on from there. A run with different inputs starts over. Output is deterministic.

Also here: `convert` (any `training.data.sources` source -> dataset, with parallel decoding),
`write_scenes` (the built-in dataset) and the `--labels` file reader.
"""
from __future__ import annotations

import collections
import contextlib
import csv
import hashlib
import json
import os
import re
import stat
import time
from pathlib import Path
from typing import Any

import numpy as np

from dnnlib.util import UserError, atomic_write

FORMAT = "ganformer-shards"
FORMAT_VERSION = 1
PREPROCESSING_VERSION = 1     # bump when training.data.preprocess or training.data.scenes change their output
MANIFEST_NAME = "manifest.json"
PROGRESS_NAME = ".progress.json"
LABELS_PART_NAME = ".labels.part"
SHARD_GLOB = "shard-*.u8"


def shard_name(index: int) -> str:
    return f"shard-{index:05d}.u8"


def read_json(path: Path) -> Any:
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def content_hash(shard_digests: list[str], labels: list[int] | None, class_names: list[str] | None,
                 shape: tuple[int, int, int]) -> str:
    """One hash of all pixels (via the shard digests), their shape and the labels."""
    blob = json.dumps({"shards": shard_digests, "labels": labels, "class_names": class_names,
                       "shape": list(shape)}, separators=(",", ":"))
    return "sha256:" + hashlib.sha256(blob.encode()).hexdigest()


class DatasetWriter:
    """Appends images to the shards of one dataset folder; `finish()` publishes the manifest.

    Use as a context manager: `start()` returns how many source items an earlier interrupted run
    already consumed (0 for a fresh start); feed images with `add()`/`skip()` and report source
    progress with `advance()`. Leaving the block with an exception saves progress for a resume.
    """

    def __init__(self,
        root: str | os.PathLike,            # the dataset folder, <data-dir>/<name>
        *,
        name: str,                          # dataset name, recorded in the manifest
        resolution: int,                    # image side R (power of two)
        channels: int,                      # C: 1 or 3
        capacity: int,                      # at most this many images will be added
        shards_num: int,                    # split into this many shards (fewer if images run out)
        ratio: float | None,                # the crop ratio the images were prepared with
        fingerprint: dict,                  # describes source + options; a change means start over
        class_names: list[str] | None = None,   # set for labelled datasets; labels index into it
        checkpoint_seconds: float = 2.0,    # how often progress is made durable
        force: bool = False,                # may replace a different complete dataset in `root`
    ):
        if resolution < 1 or channels not in (1, 3) or capacity < 1 or shards_num < 1:
            raise ValueError("bad dataset geometry")
        self.root, self.name = Path(root), name
        self.shape = (channels, resolution, resolution)
        self.stride = channels * resolution * resolution
        self.per_shard = -(-capacity // shards_num)
        self.capacity, self.ratio, self.class_names = capacity, ratio, class_names
        self.fingerprint = json.loads(json.dumps(dict(fingerprint, preprocessing_version=PREPROCESSING_VERSION,
            shape=list(self.shape), capacity=capacity, shards_num=shards_num, ratio=ratio, class_names=class_names)))
        self.checkpoint_seconds, self.force = checkpoint_seconds, force
        self.count, self.source_pos = 0, 0
        self.skipped: collections.Counter = collections.Counter()
        self.digests: list[str] = []            # of completed shards
        self._hash = hashlib.sha256()           # of the current shard
        self._file = None
        self._labels_file = None
        self._last_checkpoint = time.monotonic()
        self._snapshot: dict | None = None       # state at the last advance(), safe to resume from

    # ---- starting and resuming ----

    def start(self) -> int:
        """Prepare the folder; return the source position to continue from (0 = from scratch)."""
        self.root.mkdir(parents=True, exist_ok=True)
        progress = self._read_progress()
        if progress is None:
            self._refuse_replacing()
            self._clear()
        else:
            self._resume(progress)
        return self.source_pos

    def _read_progress(self) -> dict | None:
        try:
            progress = read_json(self.root / PROGRESS_NAME)
        except (OSError, ValueError):
            return None
        return progress if progress.get("fingerprint") == self.fingerprint else None

    def _refuse_replacing(self) -> None:
        """A complete dataset made from other inputs is never replaced silently (runs may train on it)."""
        old = completed_manifest(self.root)
        if old is None or self.force or old.get("fingerprint") == self.fingerprint:
            return
        raise UserError(f"{self.root} already holds a different dataset ({old.get('count')} images, "
                        f"{old.get('resolution')}x{old.get('resolution')}); to replace it, run prepare_data.py "
                        f"again with --force, or choose another name")

    def _clear(self) -> None:
        # The manifest goes first: from here on the folder is never mistaken for a complete dataset.
        for name in (MANIFEST_NAME, PROGRESS_NAME, LABELS_PART_NAME):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.root / name)
        for p in self.root.glob(SHARD_GLOB):
            os.unlink(p)

    def _resume(self, progress: dict) -> None:
        self.count, self.source_pos = int(progress["count"]), int(progress["source_pos"])
        self.skipped.update(progress.get("skipped", {}))
        self.digests = list(progress["digests"])
        shard, in_shard = divmod(self.count, self.per_shard)
        if shard != len(self.digests):
            raise UserError(f"{self.root}: inconsistent progress file; delete the folder and run again")
        for p in self.root.glob(SHARD_GLOB):
            if int(p.stem.split("-")[1]) > shard:
                os.unlink(p)
        path = self.root / shard_name(shard)
        if in_shard and (not path.exists() or path.stat().st_size < in_shard * self.stride):
            raise UserError(f"{path} is shorter than its progress record; delete the folder and run again")
        if in_shard:
            self._file = open(path, "r+b")  # noqa: SIM115 (open until the shard is full)
            self._file.truncate(in_shard * self.stride)
            for block in iter(lambda: self._file.read(1 << 24), b""):     # re-hash the valid prefix
                self._hash.update(block)
        if self.class_names is not None:
            self._labels_file = open(self.root / LABELS_PART_NAME, "a+b")  # noqa: SIM115
            self._labels_file.truncate(self.count * 4)
            self._labels_file.seek(0, os.SEEK_END)

    # ---- writing ----

    def add(self, image: np.ndarray, label: int | None = None) -> None:
        """Append one image, uint8 [C, R, R] (and its class index for labelled datasets)."""
        if image.shape != self.shape or image.dtype != np.uint8:
            raise ValueError(f"image {image.shape} {image.dtype} does not match dataset {self.shape} uint8")
        if self.count >= self.capacity:
            raise ValueError("dataset capacity exceeded")
        if self._file is None:
            self._file = open(self.root / shard_name(len(self.digests)), "wb")  # noqa: SIM115
        data = np.ascontiguousarray(image).data
        self._file.write(data)
        self._hash.update(data)
        if self.class_names is not None:
            if label is None or not 0 <= label < len(self.class_names):
                raise ValueError(f"bad label {label!r}")
            if self._labels_file is None:
                self._labels_file = open(self.root / LABELS_PART_NAME, "wb")  # noqa: SIM115
            self._labels_file.write(np.int32(label).tobytes())
        self.count += 1
        if self.count % self.per_shard == 0:
            self._close_shard()

    def add_batch(self, images: np.ndarray) -> None:
        """Append unlabelled images, uint8 [B, C, R, R]."""
        for img in images:
            self.add(img)

    def skip(self, reason: str) -> None:
        self.skipped[reason] += 1

    def advance(self, source_pos: int) -> None:
        """All source items before `source_pos` are now written or skipped: a consistent point."""
        self.source_pos = source_pos
        self._snapshot = {"count": self.count, "source_pos": source_pos, "skipped": dict(self.skipped),
                          "digests": list(self.digests)}
        if time.monotonic() - self._last_checkpoint >= self.checkpoint_seconds:
            self.checkpoint()

    def _close_shard(self) -> None:
        self._file.flush()
        os.fsync(self._file.fileno())
        self._file.close()
        self._file = None
        self.digests.append(self._hash.hexdigest())
        self._hash = hashlib.sha256()

    def _sync(self) -> None:
        for f in (self._file, self._labels_file):
            if f is not None:
                f.flush()
                os.fsync(f.fileno())

    def checkpoint(self) -> None:
        """Make everything up to the last `advance()` durable and record it."""
        if self._snapshot is None:
            return
        self._sync()
        with atomic_write(self.root / PROGRESS_NAME, "w") as f:
            json.dump(dict(self._snapshot, fingerprint=self.fingerprint), f)
        self._last_checkpoint = time.monotonic()

    # ---- finishing ----

    def finish(self, source: dict | None = None) -> dict:
        """Publish the dataset: write the manifest (atomically, last) and return it."""
        if self.count == 0:
            raise UserError(f"no usable images for {self.name}" + _skip_note(self.skipped))
        if self._file is not None:
            self._close_shard()
        labels = None
        if self.class_names is not None:
            self._sync()
            labels = np.fromfile(self.root / LABELS_PART_NAME, dtype="<i4")[: self.count].tolist()
        shards = []
        for i, digest in enumerate(self.digests):
            n = min(self.per_shard, self.count - i * self.per_shard)
            shards.append({"file": shard_name(i), "count": n, "sha256": digest})
        manifest = {
            "format": FORMAT, "format_version": FORMAT_VERSION, "name": self.name,
            "resolution": self.shape[1], "channels": self.shape[0], "layout": "CHW", "dtype": "uint8",
            "count": self.count, "image_bytes": self.stride, "shards": shards, "ratio": self.ratio,
            "labels": labels, "class_names": self.class_names,
            "content_hash": content_hash(self.digests, labels, self.class_names, self.shape),
            "preprocessing_version": PREPROCESSING_VERSION, "skipped": dict(sorted(self.skipped.items())),
            "source": source or {}, "fingerprint": self.fingerprint,
        }
        with atomic_write(self.root / MANIFEST_NAME, "w") as f:
            json.dump(manifest, f, indent=1)
        if shards:      # the temporary file was private; give the manifest the shards' permissions
            os.chmod(self.root / MANIFEST_NAME, stat.S_IMODE((self.root / shards[0]["file"]).stat().st_mode))
        self.close()
        for name in (PROGRESS_NAME, LABELS_PART_NAME):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.root / name)
        return manifest

    def close(self) -> None:
        for f in (self._file, self._labels_file):
            if f is not None:
                f.close()
        self._file = self._labels_file = None

    def __enter__(self) -> DatasetWriter:  # noqa: PYI034
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is not None:
            with contextlib.suppress(Exception):
                self.checkpoint()           # interrupted: record the last consistent point
        self.close()


def _skip_note(skipped: collections.Counter) -> str:
    total = sum(skipped.values())
    if not total:
        return ""
    return f" ({total} skipped: " + ", ".join(f"{v} {k}" for k, v in sorted(skipped.items())) + ")"


def completed_manifest(root: str | os.PathLike, fingerprint: dict | None = None) -> dict | None:
    """The manifest of a complete dataset in `root` (optionally: made from these inputs), else None."""
    root = Path(root)
    try:
        manifest = read_json(root / MANIFEST_NAME)
    except (OSError, ValueError):
        return None
    if manifest.get("format") != FORMAT or manifest.get("format_version") != FORMAT_VERSION:
        return None
    if fingerprint is not None:
        fp = manifest.get("fingerprint", {})
        if any(fp.get(k) != json.loads(json.dumps(v)) for k, v in fingerprint.items()):
            return None
        if fp.get("preprocessing_version") != PREPROCESSING_VERSION:
            return None
    for shard in manifest.get("shards", []):
        p = root / shard["file"]
        if not p.is_file() or p.stat().st_size != shard["count"] * manifest["image_bytes"]:
            return None
    return manifest


# ---------------------------------------------------------------------------------------------
# Class labels from a file (--labels)

_HEADER_WORDS = {"file", "filename", "fname", "image", "img", "path", "name", "key", "id"}


def load_labels_file(path: str | os.PathLike) -> dict[str, str]:
    """Image name -> class name, from JSON or CSV.

    JSON: {"name": class, ...}, or [[name, class], ...], or {"labels": [[name, class], ...]}
    (StyleGAN2-ADA's dataset.json). CSV: rows `name,class`, an optional header row.
    Names are paths relative to --images-dir, file names, or stems (database keys/indices for
    other formats); classes are names or integers.
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8-sig")
    except OSError as e:
        raise UserError(f"cannot read --labels {path}: {e.strerror}") from None
    try:
        if path.suffix.lower() == ".json":
            data = json.loads(text)
            if isinstance(data, dict) and isinstance(data.get("labels"), list):
                data = data["labels"]
            pairs = list(data.items()) if isinstance(data, dict) else [tuple(p) for p in data]
        else:
            rows = [r for r in csv.reader(text.splitlines()) if r and any(c.strip() for c in r)]
            if rows and rows[0][0].strip().lower() in _HEADER_WORDS:
                rows = rows[1:]
            pairs = [(r[0], r[1]) for r in rows]
        labels = {str(k).strip(): str(v).strip() for k, v in pairs}
    except (ValueError, TypeError, IndexError, AttributeError):
        raise UserError(f"--labels {path}: expected name,class rows (CSV) or a name -> class mapping (JSON)") from None
    if not labels:
        raise UserError(f"--labels {path} names no images")
    return labels


def class_index(labels: dict[str, str]) -> tuple[dict[str, int], list[str]]:
    """Class name -> index and the class names: integers keep their value, other names sort."""
    values = set(labels.values())
    if all(re.fullmatch(r"\d+", v) for v in values):
        names = [str(i) for i in range(max(int(v) for v in values) + 1)]
        return {v: int(v) for v in values}, names
    names = sorted(values)
    return {v: i for i, v in enumerate(names)}, names


def label_for(labels: dict[str, str], key: str) -> str | None:
    """The class of an item: by its key, file name, path without extension or stem."""
    base = key.rsplit("/", 1)[-1]
    for k in (key, base, os.path.splitext(key)[0], os.path.splitext(base)[0]):
        if k in labels:
            return labels[k]
    return None


# ---------------------------------------------------------------------------------------------
# Conversion of a source (custom or catalog data) and generation of `scenes`

SHARD_BYTES = 4 << 30         # default shard size when --shards-num is not given


def _decode(job) -> tuple[np.ndarray | None, str | None]:
    """(image, None) or (None, reason) for one (preprocessor, payload) job."""
    from training.data.preprocess import ImageSkipped
    preprocessor, payload = job
    try:
        return preprocessor(payload), None
    except ImageSkipped as e:
        return None, e.reason
    except Exception:  # noqa: BLE001 (any decoder failure on damaged input skips the image)
        return None, "unreadable"


def _probe(source, ratio: float | None, limit: int = 1000) -> tuple[int, int, str]:
    """(side of the padded square of the first decodable item, channel count, how it was chosen).

    Channels: 3 if any of the first `limit` decodable items is in colour, else 1 (never the first image
    alone: a folder of colour photos that starts with a grey one stays in colour).
    """
    from training.data.preprocess import (
        ImageSkipped,
        Preprocessor,
        natural_channels,
        square_size,
    )
    reader = Preprocessor(ratio, 1, 3)
    side, grey, colour, n = None, 0, 0, 0
    for n, item in enumerate(source.items(0)):
        if n >= limit:
            break
        try:
            img = reader.image(item.payload)
        except (ImageSkipped, OSError, ValueError):
            continue
        side = side or square_size(img.size[0], img.size[1], ratio)
        if natural_channels(img) == 3:
            colour += 1
            break                               # one colour image decides
        grey += 1
    if side is None:
        where = source.description.get("path") or source.description.get("format")
        raise UserError(f"no readable images in {where} (checked {min(n + 1, limit)} items)")
    if colour:
        return side, 3, f"colour image found after {grey} grey ones" if grey else "colour"
    return side, 1, f"all {grey} images checked are grey"


def auto_shards(capacity: int, image_bytes: int) -> int:
    return max(1, -(-capacity * image_bytes // SHARD_BYTES))


def _pool(workers: int):
    import multiprocessing
    if workers <= 1:
        return None
    ctx = multiprocessing.get_context("fork" if "fork" in multiprocessing.get_all_start_methods() else "spawn")
    return ctx.Pool(workers)


def _decoded_chunks(source, start: int, preprocessor, pool, chunk: int = 256) -> Any:
    """Yield lists of (item, image | None, reason | None) in source order; decoding overlaps writing."""
    it = source.items(start)
    pending = None
    while True:
        items = []
        for item in it:
            items.append(item)
            if len(items) == chunk:
                break
        job = None
        if items:
            jobs = [(preprocessor, i.payload) for i in items]
            job = (items, pool.map_async(_decode, jobs, chunksize=max(1, chunk // 16)) if pool
                   else [_decode(j) for j in jobs])
        if pending is not None:
            done_items, result = pending
            results = result.get() if pool else result
            yield [(i, img, why) for i, (img, why) in zip(done_items, results)]
        if job is None:
            return
        pending = job


def convert(source, root: str | os.PathLike, *,
    name: str,                          # dataset name
    ratio: float | None = 1.0,          # crop to this height/width; None = keep the aspect
    resolution: int | None = None,      # output side; None = the power of two nearest the first image's
    max_images: int | None = None,      # stop after this many images
    shards_num: int | None = None,      # None = one per 4 GiB
    labels: dict[str, str] | None = None,   # image key -> class name (--labels); else the source's own
    workers: int = 1,                   # decoding processes
    force: bool = False,                # rebuild even if an identical complete dataset exists
    progress: bool = True,
    channels: int | None = None,        # 1 or 3; None = 3 if any sampled image is in colour
) -> dict:
    """Preprocess every item of `source` into a dataset in `root`; return a summary dict."""
    from dnnlib.progress import bar as progress_bar

    from training.data.preprocess import Preprocessor, nearest_power_of_two
    t0 = time.time()
    capacity = min(len(source), max_images or len(source))
    if capacity < 1:
        raise UserError(f"{name}: the source holds no items")
    side, probed, channels_why = _probe(source, ratio)
    if channels is None:
        channels = probed
    else:
        channels_why = "--channels"
    resolution = resolution or nearest_power_of_two(side)
    class_of, class_names = None, source.class_names
    if labels is not None:
        class_of, class_names = class_index(labels)
    fingerprint = {"source": source.description, "max_images": max_images, "resolution": resolution,
                   "channels": channels, "ratio": ratio, "labels_sha1": _labels_digest(labels)}
    if not force and (manifest := completed_manifest(root, fingerprint)) is not None:
        return _summary(manifest, root, t0, already=True, ignored=source.ignored)
    shards_num = shards_num or auto_shards(capacity, channels * resolution * resolution)
    preprocessor = Preprocessor(ratio, resolution, channels)
    writer = DatasetWriter(root, name=name, resolution=resolution, channels=channels, capacity=capacity,
                           shards_num=min(shards_num, capacity), ratio=ratio, fingerprint=fingerprint,
                           class_names=class_names, force=force)
    pool = _pool(workers)
    try:
        with writer, progress_bar(capacity, name, "img", enabled=progress) as bar:
            start = writer.start()
            bar.update(writer.count)
            for chunk in _decoded_chunks(source, start, preprocessor, pool):
                for item, img, why in chunk:
                    label = item.label
                    if class_of is not None:
                        cls = label_for(labels, item.key)
                        label = class_of[cls] if cls is not None else None
                        why = why or (None if cls is not None else "unlabelled")
                    if why is None and class_names is not None and label is None:
                        why = "unlabelled"
                    if why is not None:
                        writer.skip(why)
                    else:
                        writer.add(img, label)
                        bar.update(1)
                    writer.advance(item.index + 1)
                    if writer.count >= capacity:
                        break
                if writer.count >= capacity:
                    break
            manifest = writer.finish(source=source.description)
    finally:
        if pool is not None:
            pool.terminate()
    return dict(_summary(manifest, root, t0, ignored=source.ignored), channels_from=channels_why)


def _labels_digest(labels: dict[str, str] | None) -> str | None:
    if labels is None:
        return None
    return hashlib.sha1(json.dumps(sorted(labels.items())).encode()).hexdigest()


def _summary(manifest: dict, root, t0: float, already: bool = False, ignored: int = 0) -> dict:
    skipped = manifest.get("skipped", {})
    return {"name": manifest["name"], "path": str(root), "count": manifest["count"],
            "resolution": manifest["resolution"], "channels": manifest["channels"],
            "shards": len(manifest["shards"]), "bytes": manifest["count"] * manifest["image_bytes"],
            "skipped": skipped, "ignored": ignored, "seconds": time.time() - t0, "already": already}


def write_scenes(root: str | os.PathLike, *, resolution: int = 64, count: int = 10000, seed: int = 0,
                 shards_num: int | None = None, workers: int | None = None, force: bool = False,
                 progress: bool = True) -> dict:
    """Render the built-in `scenes` dataset into `root` (resumable like `convert`); return a summary."""
    from dnnlib.progress import bar as progress_bar

    from training.data import scenes
    t0 = time.time()
    if resolution < 4 or resolution & (resolution - 1):
        raise UserError(f"--resolution must be a power of two >= 4, got {resolution}")
    if count < 1:
        raise UserError(f"--max-images must be positive, got {count}")
    source = {"format": "scenes", "seed": seed, "renderer": scenes.RENDERER_VERSION}
    fingerprint = {"source": source, "resolution": resolution, "count": count}
    if not force and (manifest := completed_manifest(root, fingerprint)) is not None:
        return _summary(manifest, root, t0, already=True)
    shards_num = shards_num or auto_shards(count, 3 * resolution * resolution)
    writer = DatasetWriter(root, name="scenes", resolution=resolution, channels=3, capacity=count,
                           shards_num=min(shards_num, count), ratio=1.0, fingerprint=fingerprint, force=force)
    bar = progress_bar(count, "scenes", "img", enabled=progress)
    with writer, bar:
        pos = writer.start()
        bar.update(pos)
        for batch in scenes.iter_scenes(seed, pos, count, resolution, workers=workers):
            writer.add_batch(batch)
            pos += len(batch)
            writer.advance(pos)
            bar.update(len(batch))
        manifest = writer.finish(source=source)
    return _summary(manifest, root, t0)
