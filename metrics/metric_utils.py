"""Shared machinery of the metrics: image sources, quantisation, batched feature extraction with a
progress bar, the FeatureStats accumulator and the cache of real-image statistics."""
from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import io
import json
import math
import os
import time
from pathlib import Path
from typing import Callable, Iterable, Iterator, Mapping, Sequence

import numpy as np
import torch

from dnnlib import util
from dnnlib.precision import full_fp32
from dnnlib.progress import bar as progress_bar

from .feature_networks import FeatureNetwork

# Bump whenever quantisation, cropping or resizing changes, so that cached real statistics made the
# old way are not reused.
PREPROCESS_VERSION = 1

GenFn = Callable[[int], torch.Tensor]  # batch_size -> float images [B, C, H, W] in [-1, 1]


class NotEnoughImages(util.UserError):
    """An image source ran out before the requested number of images."""


class InvalidGeneratorOutput(Exception):
    """The generator produced NaN/Inf values or a malformed tensor; the message is one line."""


# ----------------------------------------------------------------------------------------------
# Images.

def quantize(images: torch.Tensor) -> torch.Tensor:
    """Generator output in [-1, 1] -> uint8 the way real images are stored: x*127.5+128, clamp,
    truncate (as the official code does; never truncation-trick sampling, that is the caller's)."""
    return (images * 127.5 + 128).clamp(0, 255).to(torch.uint8)


def crop_rows(images: torch.Tensor, ratio: float | None) -> torch.Tensor:
    """Centre-crop the rows of [B, C, H, W] images to the dataset's height/width `ratio`.

    Non-square datasets are stored padded to squares; the official code crops both reals and fakes
    the same way before the feature network. It keeps one row too many (spec §13); we keep
    ``end - start`` rows, which is the height the ratio describes.
    """
    if ratio is None or ratio == 1.0:
        return images
    width = images.shape[-1]
    start = int(math.floor((1 - ratio) * width / 2))
    end = int(math.ceil((1 + ratio) * width / 2))
    return images[..., start:end, :]


def to_rgb(images: torch.Tensor) -> torch.Tensor:
    """Repeat a single channel to three; three-channel images pass through."""
    if images.ndim != 4 or images.shape[1] not in (1, 3):
        raise ValueError(f"expected images [B, 1 or 3, H, W], got {tuple(images.shape)}")
    return images.repeat(1, 3, 1, 1) if images.shape[1] == 1 else images


@dataclasses.dataclass
class ImageSource:
    """Batches of uint8 images [B, C, H, W] (C = 1 or 3), e.g. a dataset or a folder.

    `cache_key` identifies the content (e.g. a hash of the files); with it, statistics computed from
    this source are cached. `num_images`, when known, lets a too-small source fail before any work.
    """

    batches: Iterable[torch.Tensor]  # re-iterable if the source is used more than once
    cache_key: str | None = None     # content identity for the statistics cache
    num_images: int | None = None    # total images available, if known
    name: str = "images"             # for messages


def as_image_source(obj: ImageSource | Iterable[torch.Tensor], name: str) -> ImageSource:
    """Accept an ImageSource or any iterable of uint8 batches."""
    return obj if isinstance(obj, ImageSource) else ImageSource(batches=obj, name=name)


def take_images(source: ImageSource, num_images: int, allow_fewer: bool = False) -> Iterator[torch.Tensor]:
    """Yield uint8 RGB batches holding exactly the first `num_images` images of `source`.

    Raises NotEnoughImages when the source holds fewer, unless `allow_fewer`.
    """
    if source.num_images is not None and source.num_images < num_images and not allow_fewer:
        raise NotEnoughImages(_too_few(source.name, source.num_images, num_images))
    seen = 0
    for batch in source.batches:
        if seen >= num_images:
            break
        if not isinstance(batch, torch.Tensor) or batch.dtype != torch.uint8:
            raise TypeError(f"{source.name}: batches must be uint8 tensors, got {type(batch).__name__}"
                            f"{'' if not isinstance(batch, torch.Tensor) else ' ' + str(batch.dtype)}")
        batch = to_rgb(batch[: num_images - seen])
        seen += batch.shape[0]
        yield batch
    if seen < num_images and not allow_fewer:
        raise NotEnoughImages(_too_few(source.name, seen, num_images))


def _too_few(name: str, have: int, want: int) -> str:
    return (f"{name} has only {have} images but {want} were requested; "
            f"lower the image count (e.g. --eval-images-num {have}) or use more data")


def generator_batches(gen_fn: GenFn, num_images: int, batch_size: int) -> Iterator[torch.Tensor]:
    """Yield uint8 RGB batches from `gen_fn` until `num_images` have been produced.

    Raises InvalidGeneratorOutput on NaN/Inf or a malformed tensor, before quantisation hides it.
    """
    made = 0
    while made < num_images:
        want = min(batch_size, num_images - made)
        with torch.no_grad():
            images = gen_fn(want)
        if not isinstance(images, torch.Tensor) or images.ndim != 4 or images.shape[1] not in (1, 3):
            shape = tuple(images.shape) if isinstance(images, torch.Tensor) else type(images).__name__
            raise InvalidGeneratorOutput(f"generator returned {shape}; expected float [B, 1|3, H, W]")
        if not images.is_floating_point():
            raise InvalidGeneratorOutput(f"generator returned {images.dtype}; expected float in [-1, 1]")
        bad = (~torch.isfinite(images)).flatten(1).any(dim=1)
        if bool(bad.any()):
            raise InvalidGeneratorOutput(
                f"generator output has NaN/Inf in {int(bad.sum())} of {images.shape[0]} images "
                f"(after {made} good ones); metrics on these fakes would be meaningless")
        images = to_rgb(quantize(images[:want].detach()))
        made += images.shape[0]
        if images.shape[0] == 0:
            raise InvalidGeneratorOutput("generator returned an empty batch")
        yield images


# ----------------------------------------------------------------------------------------------
# Features.

class FeatureStats:
    """Accumulates features [N, D]: all rows, and/or running sums for the mean and covariance."""

    def __init__(self, capture_all: bool = False, capture_mean_cov: bool = False, max_items: int | None = None):
        self.capture_all = capture_all            # keep every feature row (KID, PR, IS)
        self.capture_mean_cov = capture_mean_cov  # keep float64 sums for mean/cov (FID)
        self.max_items = max_items                # ignore rows beyond this many
        self.num_items = 0
        self.dim: int | None = None
        self._rows: list[np.ndarray] = []
        # float64 sums, kept on the device of the features (the D x D product is the costly part)
        self._sum: torch.Tensor | None = None     # [D]
        self._sum_sq: torch.Tensor | None = None  # [D, D], sum of x x^T

    def is_full(self) -> bool:
        return self.max_items is not None and self.num_items >= self.max_items

    def append(self, x: torch.Tensor | np.ndarray) -> None:
        """Add a batch of feature rows [B, D] (float32; tensors may live on any device)."""
        x = torch.as_tensor(x).detach().to(torch.float32)
        assert x.ndim == 2, x.shape
        if self.max_items is not None:
            x = x[: max(self.max_items - self.num_items, 0)]
        if self.dim is None:
            self.dim = x.shape[1]
            if self.capture_mean_cov:
                self._sum = torch.zeros([self.dim], dtype=torch.float64, device=x.device)
                self._sum_sq = torch.zeros([self.dim, self.dim], dtype=torch.float64, device=x.device)
        assert x.shape[1] == self.dim, (x.shape, self.dim)
        self.num_items += x.shape[0]
        if self.capture_all:
            self._rows.append(x.cpu().numpy())
        if self.capture_mean_cov:
            x64 = x.to(self._sum.device, torch.float64)
            self._sum += x64.sum(dim=0)
            self._sum_sq += x64.T @ x64

    def get_all(self) -> np.ndarray:
        """All feature rows, float32 [N, D]."""
        assert self.capture_all, "features were not captured"
        if not self._rows:
            return np.zeros([0, self.dim or 0], np.float32)
        if len(self._rows) > 1:
            self._rows = [np.concatenate(self._rows, axis=0)]
        return self._rows[0]

    def get_mean_cov(self) -> tuple[np.ndarray, np.ndarray]:
        """Mean [D] and covariance [D, D] of the rows, float64.

        The covariance is the maximum-likelihood one, divided by N (not N - 1 as np.cov): the official
        FID code and the papers' tables use it, and at small N the two differ visibly (0.83 FID at
        N = 200). Only N and the sums are stored, so cached statistics do not depend on this choice.
        """
        n = self.num_items
        assert n >= 1, "need at least one feature row for a mean and covariance"
        if not self.capture_mean_cov:
            x = self.get_all().astype(np.float64)
            centred = x - x.mean(axis=0)
            return x.mean(axis=0), centred.T @ centred / n
        mean = self._sum.cpu().numpy() / n
        return mean, self._sum_sq.cpu().numpy() / n - np.outer(mean, mean)  # E[x x^T] - mu mu^T

    def save(self, path: str | os.PathLike) -> None:
        """Write to `path` (.npz) atomically."""
        arrays: dict[str, np.ndarray] = {
            "meta": np.array(json.dumps(dict(capture_all=self.capture_all, capture_mean_cov=self.capture_mean_cov,
                                             max_items=self.max_items, num_items=self.num_items, dim=self.dim)))}
        if self.capture_all:
            arrays["rows"] = self.get_all()
        if self.capture_mean_cov:
            arrays["sum"], arrays["sum_sq"] = self._sum.cpu().numpy(), self._sum_sq.cpu().numpy()
        buf = io.BytesIO()
        np.savez(buf, **arrays)
        with util.atomic_write(path, "wb") as f:
            f.write(buf.getvalue())

    @classmethod
    def load(cls, path: str | os.PathLike) -> FeatureStats:
        """Read a file written by save() (plain arrays; nothing is unpickled)."""
        with np.load(path, allow_pickle=False) as data:
            meta = json.loads(str(data["meta"]))
            stats = cls(meta["capture_all"], meta["capture_mean_cov"], meta["max_items"])
            stats.num_items, stats.dim = meta["num_items"], meta["dim"]
            if stats.capture_all:
                stats._rows = [data["rows"]]
            if stats.capture_mean_cov:
                stats._sum, stats._sum_sq = torch.from_numpy(data["sum"]), torch.from_numpy(data["sum_sq"])
        return stats


def extract_features(batches: Iterable[torch.Tensor], networks: Mapping[str, FeatureNetwork],
                     stats: Mapping[str, FeatureStats], num_images: int, ratio: float | None = None,
                     desc: str = "features", progress: bool = True) -> int:
    """Run every network on every uint8 batch (cropped by `ratio`) and append to its stats.

    Shows a progress bar with images/s (a line every 10 s when stderr is not a terminal).
    Returns the number of images seen.
    """
    seen = 0
    with contextlib.ExitStack() as stack:
        stack.enter_context(full_fp32())               # features are reported in full float32
        bar = stack.enter_context(progress_bar(num_images, desc, "img", enabled=progress, leave=False))
        for batch in batches:
            batch = crop_rows(batch, ratio)  # [B, 3, H', W]
            for key, net in networks.items():
                stats[key].append(net(batch))
            seen += batch.shape[0]
            bar.update(batch.shape[0])
    return seen


# ----------------------------------------------------------------------------------------------
# Cache of real-image statistics.

def hash_files(paths: Sequence[str | os.PathLike], root: str | os.PathLike | None = None) -> str:
    """SHA-256 over the (relative) names and bytes of `paths`, in the given order."""
    digest = hashlib.sha256()
    for path in paths:
        name = os.path.relpath(path, root) if root is not None else os.path.basename(path)
        digest.update(name.encode("utf-8") + b"\0")
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                digest.update(block)
        digest.update(b"\0")
    return digest.hexdigest()


def stats_cache_path(cache_key: str, num_images: int, ratio: float | None, net_id: str,
                     capture_all: bool, root: str | os.PathLike | None = None) -> Path:
    """Cache file for real statistics: keyed by content, count, preprocessing and network."""
    key = dict(content=cache_key, num_images=num_images, ratio=ratio if ratio is not None else 1.0,
               preprocess=PREPROCESS_VERSION, network=net_id, capture_all=capture_all)
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode("utf-8")).hexdigest()[:20]
    folder = Path(root) if root is not None else util.cache_dir("metrics")
    kind = "all" if capture_all else "meancov"
    return folder / f"real-{net_id}-{num_images}-{kind}-{digest}.npz"


def load_cached_stats(cache_key: str | None, num_images: int, ratio: float | None, net_id: str,
                      need_all: bool, root: str | os.PathLike | None = None) -> FeatureStats | None:
    """Cached real statistics that satisfy the request, or None. A file with all rows also serves
    a mean/cov request."""
    if cache_key is None:
        return None
    for capture_all in ([True] if need_all else [False, True]):
        path = stats_cache_path(cache_key, num_images, ratio, net_id, capture_all, root)
        if path.is_file():
            try:
                stats = FeatureStats.load(path)
            except (OSError, ValueError, KeyError):
                continue  # damaged: recompute and overwrite
            if stats.num_items == num_images:
                return stats
    return None


class Timer:
    """Wall-clock seconds since construction."""

    def __init__(self) -> None:
        self.start = time.perf_counter()

    def __call__(self) -> float:
        return time.perf_counter() - self.start


def count_tag(n: int) -> str:
    """Result-name suffix for n images: 50000 -> '50k', 500 -> '500'."""
    return f"{n // 1000}k" if n >= 1000 and n % 1000 == 0 else str(n)
