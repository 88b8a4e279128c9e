"""The step that computes the visualisations a run asks for (the seed's --vis-* flags) and saves them.

Layout under `out_dir` (run_network.py passes `<run>/visuals`), sample i being seed i as in
`generate.py --seeds i`:

  images/%06d.png                    samples (truncation psi, constant noise)
  latents-z/%06d.npy, latents-w/%06d.npy   z [K+1, d] and w (slot 0, after truncation) [K+1, d]
  maps/, softmaps/, blends/, softblends/%06d.png   last attention layer, head 0: hard, soft, blends
  layer_maps/%06d/l{layer}_h{head}.png         hard maps of every layer and head (first --vis-rich-num)
  interpolations-{z,w}/%06d.png, .gif          strip and animation (first --vis-rich-num samples)
  noise-variance.png                 gray-value std over 100 noise draws of sample 0 (white = largest)
Images of models under 128 pixels are enlarged (pixel replication) in every file except images/.
  layer-mixing.png, component-mixing.png      mixing tables of samples 0-3 (columns) and 4-5 (rows)
"""
from __future__ import annotations

import shutil
from pathlib import Path
from typing import Optional

import numpy as np
import torch

from dnnlib.util import UserError, atomic_path
from dnnlib.progress import bar as progress_bar
from training.run_config import RunConfig
from training.sampling import crop_ratio, save_npy, save_png, z_from_seeds
from training.visualize import (MIX_COLS, MIX_ROWS, enlarge, has_attention, interpolations, labels_for, noise_std,
                        noise_variance_image, sample_visuals, strip, style_mixing, view_factor)

OUTPUTS = {
    "images": ["images"], "latents": ["latents-z", "latents-w"], "maps": ["maps", "softmaps", "blends", "softblends"],
    "layer_maps": ["layer_maps"], "interpolations": ["interpolations-z", "interpolations-w"],
    "noise_var": ["noise-variance.png"], "style_mix": ["layer-mixing.png", "component-mixing.png"],
}
MAP_DIRS = {"hard": "maps", "soft": "softmaps", "hard_blend": "blends", "soft_blend": "softblends"}
INTERP_SEED_OFFSET = 1_000_000     # far end of interpolation i is seed offset + i (never a sample's own seed)
NOISE_SAMPLES = 100
GIF_FRAME_MS = 100


def _options(run: RunConfig) -> dict:
    """Validated settings of the run's visualisations (one-line errors)."""
    v = run.vis
    v.validate()
    o = dict(num=v.num, rich=min(v.rich_num, v.num), section=v.section_size, batch=v.batch_size or run.train.batch_gpu or 8,
             alpha=run.train.blending_alpha, density=v.interpolation_density, psi=run.train.truncation_psi,
             ratio=run.image_ratio(), keep=run.train.keep_samples)
    if not 0 <= o["alpha"] <= 1:
        raise UserError(f"--blending-alpha must be in [0, 1], got {o['alpha']}")
    if not 0 < o["ratio"] <= 1:
        raise UserError(f"--ratio must be in (0, 1], got {o['ratio']}")
    return o


def save_gif(frames: torch.Tensor, path: str | Path, frame_ms: int = GIF_FRAME_MS) -> None:
    """uint8 [T, H, W, 3] -> looping animated GIF, written atomically."""
    import PIL.Image

    images = [PIL.Image.fromarray(f) for f in frames.numpy()]
    with atomic_path(path) as tmp:
        images[0].save(tmp, format="GIF", save_all=True, append_images=images[1:], duration=frame_ms, loop=0)


def _crop(images: torch.Tensor, ratio: float) -> torch.Tensor:
    """Crop every image of a uint8 NHWC batch to height/width = ratio (the seed's --ratio)."""
    return torch.from_numpy(np.stack([crop_ratio(im, ratio) for im in images.numpy()]))


def run_visualizations(run: RunConfig, G: torch.nn.Module, out_dir: str | Path,
                       device: torch.device | str) -> dict[str, Path]:
    """Compute the run's visualisations (run.vis.types) of G in batches and save them under out_dir.

    Returns {type: where its files are}. The generator must be in eval mode on `device`.
    """
    types = list(run.vis.types)
    if not types:
        return {}
    o, out_dir = _options(run), Path(out_dir)
    o["view"] = view_factor(G.img_resolution)         # maps, strips and tables of small models are enlarged
    has_att = has_attention(G)
    for t in ("maps", "layer_maps"):
        if t in types and not has_att:
            print(f"note: the model has no attention layers; skipping --vis-{t.replace('_', '-')}")
            types.remove(t)
    if not o["keep"]:
        for t in types:
            for name in OUTPUTS[t]:
                p = out_dir / name
                if p.is_dir():
                    shutil.rmtree(p)
                else:
                    p.unlink(missing_ok=True)
    G = G.eval()
    if {"images", "latents", "maps", "layer_maps"} & set(types):
        _samples(G, types, o, out_dir, device)
    if "interpolations" in types:
        _interpolations(G, o, out_dir, device)
    if "noise_var" in types:
        z = z_from_seeds([0], G.k, G.z_dim)[0]
        std = noise_std(G, z, labels_for(G, [0], device), o["psi"], NOISE_SAMPLES, o["batch"])
        save_png(crop_ratio(noise_variance_image(std).numpy(), o["ratio"]), out_dir / "noise-variance.png")
    if "style_mix" in types:
        n = MIX_COLS + MIX_ROWS
        tables = style_mixing(G, z_from_seeds(range(n), G.k, G.z_dim), labels_for(G, range(n), device), o["psi"],
                              o["batch"])
        for kind, table in tables.items():
            save_png(enlarge(table, o["view"]).numpy(), out_dir / f"{kind}-mixing.png")
    where = {t: out_dir / OUTPUTS[t][0] for t in types}
    print(f"visualisations ({', '.join(types)}) written to {out_dir}")
    return where


def _samples(G: torch.nn.Module, types: list[str], o: dict, out_dir: Path, device: torch.device | str) -> None:
    """Images, latents, last-layer maps and layer maps, section by section and batch by batch."""
    want_maps = "maps" in types
    with progress_bar(o["num"], "visualising", "img") as bar:
        for s0 in range(0, o["num"], o["section"]):
            seeds = list(range(s0, min(s0 + o["section"], o["num"])))
            z_section = z_from_seeds(seeds, G.k, G.z_dim)
            for b0 in range(0, len(seeds), o["batch"]):
                idx = seeds[b0:b0 + o["batch"]]
                rich = max(0, min(len(idx), o["rich"] - idx[0])) if "layer_maps" in types else 0
                out = sample_visuals(G, z_section[b0:b0 + len(idx)].to(device), labels_for(G, idx, device),
                                     o["psi"], alpha=o["alpha"], maps=want_maps, rich=rich)
                _save_samples(out, idx, types, o["ratio"], out_dir, o["view"])
                bar.update(len(idx))


def _save_samples(out: dict, idx: list[int], types: list[str], ratio: float, out_dir: Path, view: int = 1) -> None:
    """Write one batch of sample_visuals() output (images as rendered; maps enlarged `view` times)."""
    if "images" in types:
        for i, im in zip(idx, _crop(out["images"], ratio).numpy()):
            save_png(im, out_dir / "images" / f"{i:06d}.png")
    if "latents" in types:
        for i, z, w in zip(idx, out["z"].numpy(), out["w"].numpy()):
            save_npy(z.astype(np.float32), out_dir / "latents-z" / f"{i:06d}.npy")
            save_npy(w.astype(np.float32), out_dir / "latents-w" / f"{i:06d}.npy")
    for key, folder in MAP_DIRS.items():
        if "maps" in out:
            for i, im in zip(idx, _crop(enlarge(out["maps"][key], view), ratio).numpy()):
                save_png(im, out_dir / folder / f"{i:06d}.png")
    for name, maps in out.get("layer_maps", {}).items():
        for i, im in zip(idx, _crop(enlarge(maps, view), ratio).numpy()):
            save_png(im, out_dir / "layer_maps" / f"{i:06d}" / f"{name}.png")


def _interpolations(G: torch.nn.Module, o: dict, out_dir: Path, device: torch.device | str) -> None:
    """Sample i to a random far end (seed INTERP_SEED_OFFSET + i) for the first --vis-rich-num samples."""
    with progress_bar(o["rich"], "interpolations", "pair") as bar:
        for i in range(o["rich"]):
            z = z_from_seeds([i, INTERP_SEED_OFFSET + i], G.k, G.z_dim)
            c: Optional[torch.Tensor] = labels_for(G, [i], device)
            frames = interpolations(G, z[0], z[1], c, o["psi"], o["density"], o["batch"])
            for space, f in frames.items():
                f = _crop(enlarge(f, o["view"]), o["ratio"])
                save_png(strip(f), out_dir / f"interpolations-{space}" / f"{i:06d}.png")
                save_gif(f, out_dir / f"interpolations-{space}" / f"{i:06d}.gif")
            bar.update(1)
