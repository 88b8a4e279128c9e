"""Reading prepared datasets for training: memory-mapped shards, an infinite per-rank sampler.

A dataset lives in `<data-dir>/<name>/` (written by `prepare_data.py`, format described in
`training.data.writer`): `manifest.json` plus `shard-*.u8` files of raw uint8 images, layout
CHW. Nothing is decoded on the training path; a batch is one gather from the page cache.

Typical use in a training loop:

    dataset = load_dataset(data_dir, "scenes", resolution=64, mirror=True)
    sampler = InfiniteSampler(len(dataset), rank, world_size, seed=0, start_index=cur_nimg)
    for images, labels in iterate_batches(dataset, sampler, batch_size=32 // world_size):
        reals = to_float(images, device)          # [B, C, R, R] float32 in [-1, 1]

`make_loader(dataset, sampler, batch_size, num_workers)` gives a DataLoader of whole batches;
a plain `torch.utils.data.DataLoader(dataset, batch_size, sampler=sampler)` works too (slower: it
collates item by item).
"""
from __future__ import annotations

import os
import queue
import re
import threading
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch

from dnnlib.util import UserError
from training.data.writer import (
    MANIFEST_NAME,
    PROGRESS_NAME,
    completed_manifest,
    content_hash,
    read_json,
)
from training.data import SCENES
from training.data.scenes import SCENES_DEFAULT_IMAGES

SHARD_NAME_RE = re.compile(r"shard-\d{5,}\.u8")


def dataset_path(data_dir: str | os.PathLike, name: str) -> Path:
    """Where dataset `name` lives: `<data-dir>/<name>`."""
    return Path(data_dir) / name


def is_complete(path: str | os.PathLike) -> bool:
    """True when `path` holds a complete, readable dataset (its manifest was published)."""
    return completed_manifest(path) is not None


def read_manifest(path: str | os.PathLike) -> dict:
    """The manifest of the complete dataset in `path`, checked for what is cheap to check (check_manifest);
    a one-line UserError otherwise."""
    path = Path(path)
    try:
        manifest = completed_manifest(path)
        if manifest is not None:
            check_manifest(path, manifest)
            return manifest
    except (KeyError, TypeError, ValueError, AttributeError) as e:
        raise UserError(f"dataset {path}: malformed manifest.json ({type(e).__name__}: {e}); prepare it again") from None
    if (path / PROGRESS_NAME).exists() or any(path.glob("shard-*.u8")):
        raise UserError(f"dataset {path} is incomplete (interrupted?); run prepare_data.py again to finish it")
    if (path / MANIFEST_NAME).exists():
        try:
            read_json(path / MANIFEST_NAME)
        except (OSError, ValueError):
            raise UserError(f"dataset {path}: unreadable manifest.json") from None
        raise UserError(f"dataset {path}: manifest does not match its shards (or an unsupported format "
                        "version); prepare it again")
    raise UserError(f"no dataset at {path}; prepare it with: python prepare_data.py --task {path.name} "
                    f"--images-dir <images> --data-dir {path.parent}")


def check_manifest(path: Path, m: dict) -> None:
    """Everything about a manifest that needs no reading of pixels: shard names stay inside the folder,
    counts add up, the image size matches the resolution, labels cover every image, and the content hash
    still describes the shard digests, labels and shape (an edited manifest fails here)."""
    bad = lambda why: UserError(f"dataset {path}: {why}; prepare it again")
    res, ch, count = m["resolution"], m["channels"], m["count"]
    if not all(isinstance(v, int) and not isinstance(v, bool) for v in (res, ch, count, m["image_bytes"])):
        raise bad("manifest numbers are not integers")
    if ch not in (1, 3) or res < 1 or m["image_bytes"] != ch * res * res:
        raise bad(f"{m['image_bytes']} bytes per image do not match {ch}x{res}x{res}")
    names = [s["file"] for s in m["shards"]]
    if any(not isinstance(n, str) or not SHARD_NAME_RE.fullmatch(n) for n in names) or len(set(names)) != len(names):
        raise bad("a shard name in manifest.json is not a shard file of this folder")
    if sum(s["count"] for s in m["shards"]) != count or count < 1:
        raise bad(f"the shards hold {sum(s['count'] for s in m['shards'])} images, the manifest says {count}")
    labels = m.get("labels")
    if labels is not None and (len(labels) != count or not all(
            isinstance(l, int) and 0 <= l < len(m.get("class_names") or []) for l in labels)):
        raise bad(f"{len(labels)} labels for {count} images (or a label outside the class list)")
    expected = content_hash([s["sha256"] for s in m["shards"]], labels, m.get("class_names"), (ch, res, res))
    if m.get("content_hash") != expected:
        raise bad("manifest.json was edited (its content hash does not match its shards, labels and shape)")


def _downsample(images: torch.Tensor, factor: int) -> torch.Tensor:
    """2x2 box filter applied log2(factor) times, rounding each time (the seed's LOD pyramid)."""
    while factor > 1:
        x = images.float()
        x = (x[:, :, 0::2, 0::2] + x[:, :, 0::2, 1::2] + x[:, :, 1::2, 0::2] + x[:, :, 1::2, 1::2]) * 0.25
        images = x.round_().clamp_(0, 255).to(torch.uint8)
        factor //= 2
    return images


class ImageDataset(torch.utils.data.Dataset):
    """A prepared dataset as a torch Dataset of (uint8 image [C, R, R], int64 label).

    With `mirror`, the length doubles: index i >= n is image i - n flipped left-right. The label
    is the class index, or -1 where the dataset has no labels or `use_labels` is False.
    `get_batch(indices)` is the fast path: one gather per shard, no per-item Python work.
    """

    def __init__(self,
        path: str | os.PathLike,        # the dataset folder, <data-dir>/<name>
        *,
        resolution: int | None = None,  # serve images at this side (box-downsampled); None = as stored
        max_images: int | None = None,  # use a fixed random subset of this many images (seed 0)
        mirror: bool = False,           # add left-right mirrored copies (--mirror-augment)
        use_labels: bool = False,       # return class labels (conditional training)
        verify: bool = False,           # re-hash every shard against the manifest now
    ):
        self.path = Path(path)
        self.manifest = read_manifest(self.path)
        m = self.manifest
        self.stored_resolution, self.num_channels = int(m["resolution"]), int(m["channels"])
        self.resolution = resolution or self.stored_resolution
        factor = self.stored_resolution // self.resolution
        if self.resolution > self.stored_resolution or factor * self.resolution != self.stored_resolution \
                or factor & (factor - 1):
            raise UserError(f"dataset {self.path} is {self.stored_resolution}x{self.stored_resolution}; it cannot "
                            f"serve resolution {self.resolution} (prepare it with --resolution {self.resolution})")
        self._factor = factor
        if verify:
            self.verify()
        self._shards = None           # memmaps, opened lazily (also after pickling into workers)
        counts = np.array([s["count"] for s in m["shards"]], np.int64)
        self._starts = np.concatenate([[0], np.cumsum(counts)])
        self.raw_count = int(m["count"])
        self.indices = np.arange(self.raw_count)
        if max_images is not None and max_images < self.raw_count:
            self.indices = np.sort(np.random.default_rng(0).choice(self.raw_count, max_images, replace=False))
        self.mirror = mirror
        labels = m.get("labels")
        self.class_names = list(m.get("class_names") or [])
        self.use_labels = bool(use_labels and labels is not None)
        self.labels = np.asarray(labels, np.int64) if self.use_labels else np.full(self.raw_count, -1, np.int64)

    # ---- properties ----

    name = property(lambda self: self.manifest["name"])
    ratio = property(lambda self: self.manifest.get("ratio") or 1.0, doc="height/width of the content")
    content_hash = property(lambda self: self.manifest["content_hash"], doc="identifies the pixels and labels")
    image_shape = property(lambda self: (self.num_channels, self.resolution, self.resolution))
    has_labels = property(lambda self: self.use_labels)
    num_classes = property(lambda self: len(self.class_names) if self.use_labels else 0)

    @property
    def cache_key(self) -> str:
        """Identifies exactly what this object serves (pixels, resolution, subset): for cached statistics."""
        subset = "" if len(self.indices) == self.raw_count else f"-n{len(self.indices)}"
        return f"{self.content_hash.split(':')[-1][:16]}-r{self.resolution}{subset}"

    def __len__(self) -> int:
        return len(self.indices) * (2 if self.mirror else 1)

    # ---- access ----

    def _open(self) -> list[np.ndarray]:
        if self._shards is None:
            c, r = self.num_channels, self.stored_resolution
            self._shards = [np.memmap(self.path / s["file"], np.uint8, "r", shape=(s["count"], c, r, r))
                            for s in self.manifest["shards"]]
        return self._shards

    def _raw(self, raw_indices: np.ndarray) -> np.ndarray:
        """Stored images [B, C, R, R] (uint8) for dataset-order indices."""
        shards = self._open()
        c, r = self.num_channels, self.stored_resolution
        out = np.empty((len(raw_indices), c, r, r), np.uint8)
        shard_of = np.searchsorted(self._starts, raw_indices, side="right") - 1
        for s in np.unique(shard_of):
            sel = np.nonzero(shard_of == s)[0]
            out[sel] = shards[s][raw_indices[sel] - self._starts[s]]
        return out

    def get_batch(self, indices) -> tuple[torch.Tensor, torch.Tensor]:
        """Images uint8 [B, C, R, R] and labels int64 [B] for dataset indices (mirrors included)."""
        idx = np.asarray(indices, np.int64).reshape(-1)
        n = len(self.indices)
        if idx.size and (idx.min() < 0 or idx.max() >= len(self)):
            raise IndexError(f"index out of range for a dataset of {len(self)}")
        flip = idx >= n
        raw = self.indices[idx % n]
        images = self._raw(raw)
        if flip.any():
            images[flip] = images[flip][..., ::-1]
        images = torch.from_numpy(images)
        if self._factor > 1:
            images = _downsample(images, self._factor)
        return images, torch.from_numpy(self.labels[raw])

    def __getitem__(self, index):
        """One item (image [C, R, R], label) for an int index; a batch (get_batch) for a list of them."""
        if not np.isscalar(index) and not (isinstance(index, torch.Tensor) and index.dim() == 0):
            return self.get_batch(index)
        images, labels = self.get_batch([int(index)])
        return images[0], int(labels[0])

    def __getitems__(self, indices: list[int]) -> list[tuple[torch.Tensor, int]]:
        """Batched fetch used by DataLoader (torch >= 2.1): one gather instead of B item reads."""
        images, labels = self.get_batch(indices)
        return list(zip(images, labels.tolist()))

    def __getstate__(self) -> dict:
        return dict(self.__dict__, _shards=None)        # memmaps reopen in each worker

    def verify(self) -> None:
        """Check every shard's sha256 against the manifest (reads the whole dataset)."""
        import hashlib
        for s in self.manifest["shards"]:
            h = hashlib.sha256()
            with open(self.path / s["file"], "rb") as f:
                for block in iter(lambda: f.read(1 << 24), b""):
                    h.update(block)
            if h.hexdigest() != s["sha256"]:
                raise UserError(f"dataset {self.path}: {s['file']} is corrupt (checksum mismatch); prepare it again")

    def verify_in_background(self) -> threading.Thread:
        """verify() on a low-priority thread; a mismatch is kept in `self.corruption` (a one-line message)
        for the training loop to act on at its next tick."""
        self.corruption: str | None = None

        def work():
            try:
                self.verify()
            except UserError as e:
                self.corruption = str(e)
            except OSError as e:
                self.corruption = f"dataset {self.path}: cannot read it ({e.strerror or e})"

        thread = threading.Thread(target=work, daemon=True, name="dataset-verify")
        thread.start()
        return thread

    def one_hot(self, labels: torch.Tensor) -> torch.Tensor:
        """Class indices [B] as one-hot float rows [B, num_classes] (zero-width without labels)."""
        if not self.use_labels:
            return torch.zeros(labels.shape[0], 0)
        return torch.nn.functional.one_hot(labels, self.num_classes).float()


class InfiniteSampler(torch.utils.data.Sampler):
    """An endless stream of dataset indices, split across distributed ranks, resumable.

    The global stream is a fresh permutation of `range(dataset_len)` per epoch, seeded by
    `(seed, epoch)`; rank r takes stream positions start_index + r, start_index + r + world_size, ...
    So after the ranks together consumed N images, `start_index=N` continues exactly where
    training stopped, and no two ranks ever see the same stream position.
    """

    def __init__(self, dataset_len: int, rank: int = 0, world_size: int = 1, seed: int = 0,
                 start_index: int = 0, shuffle: bool = True):
        super().__init__()
        if dataset_len < 1:
            raise ValueError("empty dataset")
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} out of range for world size {world_size}")
        self.dataset_len, self.rank, self.world_size = dataset_len, rank, world_size
        self.seed, self.start_index, self.shuffle = seed, start_index, shuffle

    def _epoch(self, epoch: int) -> np.ndarray:
        if not self.shuffle:
            return np.arange(self.dataset_len)
        return np.random.default_rng([self.seed, epoch]).permutation(self.dataset_len)

    def __iter__(self) -> Iterator[int]:
        pos = self.start_index + self.rank
        epoch, order = -1, None
        while True:
            e, i = divmod(pos, self.dataset_len)
            if e != epoch:
                epoch, order = e, self._epoch(e)
            yield int(order[i])
            pos += self.world_size


def make_loader(dataset: ImageDataset, sampler: InfiniteSampler, batch_size: int, num_workers: int = 0,
                pin_memory: bool = False) -> torch.utils.data.DataLoader:
    """A DataLoader that fetches whole batches (one gather each, no per-item collation)."""
    batches = torch.utils.data.BatchSampler(sampler, batch_size, drop_last=True)
    return torch.utils.data.DataLoader(dataset, batch_size=None, sampler=batches, num_workers=num_workers,
                                       pin_memory=pin_memory, persistent_workers=num_workers > 0)


def iterate_batches(dataset: ImageDataset, sampler: InfiniteSampler | Iterator[int], batch_size: int,
                    prefetch: int = 2, pin_memory: bool = False) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Endless (images uint8 [B, C, R, R], labels int64 [B]) batches, gathered by a background thread.

    The thread stays ahead by `prefetch` batches (the gather releases the GIL), so the training
    step rarely waits; `pin_memory` makes the host->GPU copy in `to_float` asynchronous.
    """
    q: queue.Queue = queue.Queue(maxsize=max(1, prefetch))
    stop = threading.Event()

    def work():
        try:
            it = iter(sampler)
            while not stop.is_set():
                idx = np.fromiter(it, np.int64, batch_size)
                images, labels = dataset.get_batch(idx)
                if pin_memory:
                    images = images.pin_memory()
                while not stop.is_set():
                    try:
                        q.put((images, labels), timeout=0.1)
                        break
                    except queue.Full:
                        pass
        except BaseException as e:  # noqa: BLE001 (re-raised in the consumer)
            q.put(e)

    thread = threading.Thread(target=work, daemon=True, name="batch-prefetch")
    thread.start()
    try:
        while True:
            item = q.get()
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()


def to_device(t: torch.Tensor, device: torch.device | str, dtype: torch.dtype | None = None) -> torch.Tensor:
    """A small CPU tensor (drawn parameters, indices, labels) on `device` without the host waiting: a copy to a
    CUDA device from pageable memory synchronises with the GPU; one from pinned memory does not."""
    t = t if dtype is None else t.to(dtype)
    if torch.device(device).type == "cuda" and t.device.type == "cpu":
        return t.pin_memory().to(device, non_blocking=True)
    return t.to(device)


def to_float(images: torch.Tensor, device: torch.device | str | None = None,
             dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """uint8 images -> `dtype` in [-1, 1] on `device` (the copy moves uint8, 4x less than floats)."""
    images = images.to(device, non_blocking=True) if device is not None else images
    return images.to(dtype).mul_(2.0 / 255.0).sub_(1.0)


def ensure_scenes(data_dir: str | os.PathLike, resolution: int = 64, num_images: int = SCENES_DEFAULT_IMAGES,
                  seed: int = 0, workers: int | None = None, progress: bool = True, log=print) -> Path:
    """Make sure `<data-dir>/scenes` exists with at least `resolution` (generating it if not).

    A complete `scenes` dataset of higher resolution is kept (the loader downsamples); a missing,
    incomplete or smaller one is (re)generated: it is deterministic and needs no download.
    """
    from training.data.writer import write_scenes
    path = dataset_path(data_dir, SCENES)
    manifest = completed_manifest(path)
    if manifest is not None and manifest["resolution"] >= resolution:
        return path
    log(f"generating the built-in '{SCENES}' dataset: {num_images} images at {resolution}x{resolution} in {path}")
    write_scenes(path, resolution=resolution, count=num_images, seed=seed, workers=workers, progress=progress)
    return path


def load_dataset(data_dir: str | os.PathLike, name: str, *, resolution: int | None = None, **kwargs) -> ImageDataset:
    """Open dataset `name` under `data_dir` (ImageDataset kwargs pass through). Reading never writes:
    `scenes` is rendered by an explicit ensure_scenes() step (run_network.py does it for --dataset scenes)."""
    return ImageDataset(dataset_path(data_dir, name), resolution=resolution, **kwargs)
