"""Glue between a generator, a prepared dataset and `metrics/` (which never imports training code)."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import torch

from dnnlib.util import UserError
from metrics import metric_main
from metrics.metric_utils import ImageSource
from training.data.dataset import ImageDataset
from training.networks import Generator


def dataset_source(dataset: ImageDataset, batch_size: int = 64) -> ImageSource:
    """The dataset's images in stored order as uint8 batches, with a cache key for the real statistics."""
    class _Batches:
        def __iter__(self):
            for start in range(0, len(dataset), batch_size):
                yield dataset.get_batch(range(start, min(start + batch_size, len(dataset))))[0]
    return ImageSource(batches=_Batches(), cache_key=dataset.cache_key, num_images=len(dataset), name=dataset.name)


def generator_fn(G: Generator, device: torch.device, seed: int = 0):
    """gen_fn(batch) -> images in [-1, 1]: random z (and labels), no truncation, random noise (spec §11)."""
    gen = torch.Generator().manual_seed(seed)

    @torch.no_grad()
    def fn(batch: int) -> torch.Tensor:
        z = torch.randn([batch, G.k, G.z_dim], generator=gen).to(device)
        c = None
        if G.c_dim:
            c = torch.nn.functional.one_hot(torch.randint(G.c_dim, [batch], generator=gen), G.c_dim).float().to(device)
        return G(z, c, noise_mode="random")
    return fn


class PathGenerator:
    """The generator split at w for perceptual path length (constant noise, no labels)."""

    def __init__(self, G: Generator):
        self.G = G
        self.z_shape = (G.k, G.z_dim)

    @torch.no_grad()
    def mapping(self, z: torch.Tensor) -> torch.Tensor:
        return self.G.map(z)

    @torch.no_grad()
    def synthesis(self, w: torch.Tensor) -> torch.Tensor:
        return self.G.synthesize(w, noise_mode="const")[0]


def evaluate(G: Generator, names: str, dataset: ImageDataset, num_images: int, device: torch.device,
             out_dir: str | Path, snapshot: Optional[str] = None, batch_size: int = 32,
             progress: bool = True) -> dict[str, float]:
    """Compute metrics for G_ema against the dataset, append them to the run folder, return scalars."""
    if len(dataset) < num_images:
        raise UserError(f"dataset {dataset.name} has {len(dataset)} images, fewer than --eval-images-num {num_images}; "
                        f"lower --eval-images-num (e.g. {len(dataset)}) or use more data")
    G = G.eval()
    opts = metric_main.MetricOptions(batch_size=batch_size, ratio=dataset.ratio if dataset.ratio < 1 else None,
                                     progress=progress)
    results = metric_main.compute_metrics(names, generator_fn(G, device), dataset_source(dataset, batch_size),
                                          num_images, device, opts, ppl_generator=PathGenerator(G))
    metric_main.append_results(results, out_dir, snapshot)
    for res in results.values():
        print(metric_main.format_result(res, snapshot))
    return metric_main.scalars(results)
