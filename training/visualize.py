"""Visualisations as tensors (saving is a separate step, see training/vis_cli.py).

Image grids, component colours, attention maps (soft, hard, per layer and head), latent
interpolations, noise variance and style/component mixing tables. Functions that run the generator
take a batch size, move every result to the CPU as uint8 and keep nothing else, so memory stays
bounded by one batch whatever the number of samples or the resolution.
"""
from __future__ import annotations

import colorsys
from typing import Optional, Sequence

import numpy as np
import torch

from training.sampling import to_uint8

MIX_CUTOFFS = (2, 5, 8, 11)        # style-mix table: rows take their latent below these layer/component indices
MIX_COLS, MIX_ROWS = 4, 2          # style-mix table: column sources x row sources


# ---------------------------------------------------------------------------------------------------
# Colours and grids.

def palette(k: int) -> torch.Tensor:
    """K distinguishable RGB colours [K, 3] in [0, 1], the same for every map of a run (golden-ratio hues)."""
    cols = [colorsys.hsv_to_rgb((i * 0.618033988749895) % 1.0, 0.75 if i % 2 else 0.95, 0.95 if i % 3 else 0.8)
            for i in range(k)]
    return torch.tensor(cols, dtype=torch.float32)


def image_grid(images: torch.Tensor, cols: int, gap: int = 0) -> np.ndarray:
    """uint8 NHWC -> one HWC grid with `cols` columns, `gap` black pixels between cells (missing cells black)."""
    n, h, w, c = images.shape
    rows = (n + cols - 1) // cols
    grid = torch.zeros([rows * (h + gap) - gap, cols * (w + gap) - gap, c], dtype=torch.uint8)
    for i in range(n):
        r, q = divmod(i, cols)
        y, x = r * (h + gap), q * (w + gap)
        grid[y:y + h, x:x + w] = images[i]
    return grid.numpy()


VIEW_SIDE = 128                    # images smaller than this are enlarged (nearest) in grids made for viewing
VIEW_GAP = 2                       # black pixels between the cells of a viewing grid


def view_factor(side: int, target: int = VIEW_SIDE) -> int:
    """Integer nearest-neighbour enlargement that brings a `side`-pixel image to at least `target` (1 if it is)."""
    return max(1, -(-target // max(side, 1)))


def enlarge(images: torch.Tensor, factor: int) -> torch.Tensor:
    """uint8 NHWC (or HWC) images enlarged `factor` times by pixel replication (sharp pixels, no blur)."""
    if factor <= 1:
        return images
    return images.repeat_interleave(factor, dim=-3).repeat_interleave(factor, dim=-2)


def view_grid(images: torch.Tensor, cols: int) -> np.ndarray:
    """A grid for looking at: small images enlarged to VIEW_SIDE pixels, cells VIEW_GAP pixels apart."""
    return image_grid(enlarge(images, view_factor(images.shape[1])), cols, gap=VIEW_GAP)


def dataset_grid(dataset, cols: int = 8, rows: int = 4) -> np.ndarray:
    """A viewing grid (HWC uint8, RGB) of up to cols*rows images spread evenly over a prepared dataset."""
    n = min(cols * rows, len(dataset))
    if n < 1:
        raise ValueError("the dataset is empty")
    idx = np.linspace(0, len(dataset) - 1, n).round().astype(np.int64)
    images = dataset.get_batch(idx)[0].permute(0, 2, 3, 1)               # NHWC uint8
    if images.shape[-1] == 1:
        images = images.expand(-1, -1, -1, 3)
    return view_grid(images, min(cols, n))


def upsample_maps(maps: torch.Tensor, size: int) -> torch.Tensor:
    """[..., r, r] -> [..., size, size] by pixel replication."""
    f = size // maps.shape[-1]
    return maps.repeat_interleave(f, dim=-2).repeat_interleave(f, dim=-1)


# ---------------------------------------------------------------------------------------------------
# Attention maps (paper §4: each image region coloured by the latent it attends to).

def colorize(probs: torch.Tensor) -> torch.Tensor:
    """Soft map: probability-weighted component colours. [B, K, h, w] -> [B, 3, h, w] in [0, 1]."""
    cols = palette(probs.shape[1]).to(probs.device)
    return torch.einsum("bkhw,kc->bchw", probs.float(), cols)


def colorize_hard(probs: torch.Tensor) -> torch.Tensor:
    """Hard map: the colour of the most attended component. [B, K, h, w] -> [B, 3, h, w] in [0, 1]."""
    cols = palette(probs.shape[1]).to(probs.device)
    return cols[probs.argmax(dim=1)].permute(0, 3, 1, 2)


def attention_images(img: torch.Tensor, maps: torch.Tensor, alpha: float = 0.3, head: int = 0
                     ) -> dict[str, torch.Tensor]:
    """Colour-coded attention of one layer: soft (probability-weighted colours), hard (argmax), blends.

    img [B, 3, R, R] in [-1, 1]; maps [B, N, K, r, r]. Returns uint8 NHWC tensors; blend = (1-a) map + a image.
    """
    R = img.shape[-1]
    probs = maps[:, head]                                                 # [B, K, r, r]
    # Colour at the maps' own resolution, then replicate: identical result, K times less memory at 1024².
    soft = upsample_maps(colorize(probs), R)                              # [B, 3, R, R]
    hard = upsample_maps(colorize_hard(probs), R)
    image01 = (img.float().clamp(-1, 1) + 1) / 2
    out = {}
    for name, m in (("soft", soft), ("hard", hard)):
        out[name] = to_uint8(m * 2 - 1)
        out[f"{name}_blend"] = to_uint8(((1 - alpha) * m + alpha * image01) * 2 - 1)
    return out


def layer_map_images(maps: Sequence[torch.Tensor], size: int) -> dict[str, torch.Tensor]:
    """Hard maps of every attention layer and head: {'l{layer}_h{head}': uint8 [B, size, size, 3]}."""
    out = {}
    for layer, m in enumerate(maps):                                      # m [B, N, K, r, r]
        for head in range(m.shape[1]):
            out[f"l{layer}_h{head}"] = to_uint8(upsample_maps(colorize_hard(m[:, head]), size) * 2 - 1)
    return out


# ---------------------------------------------------------------------------------------------------
# Running the generator.

def labels_for(G: torch.nn.Module, indices: Sequence[int], device: torch.device | str) -> Optional[torch.Tensor]:
    """One-hot labels cycling through the classes (sample i gets class i mod c_dim); None if unconditional."""
    if not G.c_dim:
        return None
    idx = torch.as_tensor(list(indices), dtype=torch.long) % G.c_dim
    return torch.nn.functional.one_hot(idx, G.c_dim).float().to(device)


def has_attention(G: torch.nn.Module) -> bool:
    """Whether the synthesis has image-to-latent attention layers (whose maps can be shown)."""
    return any(getattr(m, "attn", None) is not None for m in G.synthesis.modules())


@torch.no_grad()
def synthesize(G: torch.nn.Module, z: Optional[torch.Tensor] = None, c: Optional[torch.Tensor] = None,
               ws: Optional[torch.Tensor] = None, truncation_psi: float = 1.0, noise_mode: str = "const"
               ) -> tuple[torch.Tensor, list[torch.Tensor], torch.Tensor]:
    """Image [B, 3, R, R], per-layer maps ([B, N, K, r, r] each, own resolution) and ws [B, K+1, num_ws, d].

    The same computation as `G(z, c)` in eval mode, but the maps stay at their own resolution
    (G(return_att=True) up-samples every layer to R², too large at 1024²).
    """
    img, ws, maps = G.generate(z, c, ws, noise_mode=noise_mode, truncation_psi=truncation_psi)
    return img, maps, ws


@torch.no_grad()
def render(G: torch.nn.Module, batch_size: int, z: Optional[torch.Tensor] = None, c: Optional[torch.Tensor] = None,
           ws: Optional[torch.Tensor] = None, truncation_psi: float = 1.0, noise_mode: str = "const") -> torch.Tensor:
    """Images (uint8 NHWC, on the CPU) for z or ws (with labels c, one row or one per sample), in batches."""
    src = z if ws is None else ws
    device = next(G.parameters()).device
    if c is not None and c.shape[0] == 1:
        c = c.expand(src.shape[0], -1)
    out = []
    for i in range(0, src.shape[0], batch_size):
        sl = slice(i, i + batch_size)
        cb = None if c is None else c[sl].to(device)
        if ws is None:
            img = synthesize(G, z=z[sl].to(device), c=cb, truncation_psi=truncation_psi, noise_mode=noise_mode)[0]
        else:
            img = synthesize(G, ws=ws[sl].to(device), noise_mode=noise_mode)[0]
        out.append(to_uint8(img).cpu())
    return torch.cat(out)


@torch.no_grad()
def sample_visuals(G: torch.nn.Module, z: torch.Tensor, c: Optional[torch.Tensor], truncation_psi: float,
                   alpha: float = 0.3, maps: bool = True, rich: int = 0) -> dict:
    """One batch of samples: images, z, w (slot 0), last-layer maps and (first `rich` samples) layer maps.

    All outputs are CPU tensors: 'images' uint8 [B, R, R, 3], 'z' [B, K+1, d], 'w' [B, K+1, d] (after
    truncation), 'maps' {soft, hard, soft_blend, hard_blend}, 'layer_maps' {l{i}_h{j}: uint8 [rich, R, R, 3]}.
    """
    img, att, ws = synthesize(G, z=z, c=c, truncation_psi=truncation_psi, noise_mode="const")
    out: dict = {"images": to_uint8(img).cpu(), "z": z.cpu(), "w": ws[:, :, 0].cpu()}
    if att and maps:
        out["maps"] = {k: v.cpu() for k, v in attention_images(img, att[-1], alpha=alpha).items()}
    if att and rich > 0:
        out["layer_maps"] = {k: v.cpu() for k, v in layer_map_images([m[:rich] for m in att], img.shape[-1]).items()}
    return out


# ---------------------------------------------------------------------------------------------------
# Interpolations.

def slerp(a: torch.Tensor, b: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """Spherical interpolation along the last axis; t [T] -> [T, *a.shape].

    Directions move on the great circle while the norm moves linearly, so t=0 and t=1 give a and b
    themselves (the official version returned unit vectors, which changes the joint z normalisation).
    """
    t = t.reshape(-1, *[1] * a.ndim).to(a)
    na, nb = a.norm(dim=-1, keepdim=True), b.norm(dim=-1, keepdim=True)
    ua, ub = a / na, b / nb
    omega = torch.acos((ua * ub).sum(dim=-1, keepdim=True).clamp(-1, 1))
    so = torch.sin(omega)
    safe = so.abs() > 1e-6                                 # nearly parallel rows: fall back to lerp
    wa = torch.where(safe, torch.sin((1 - t) * omega) / torch.where(safe, so, 1), 1 - t)
    wb = torch.where(safe, torch.sin(t * omega) / torch.where(safe, so, 1), t)
    return (wa * ua + wb * ub) * torch.lerp(na, nb, t)


def lerp(a: torch.Tensor, b: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """Linear interpolation; t [T] -> [T, *a.shape]. torch.lerp returns both end points exactly."""
    return torch.lerp(a.unsqueeze(0), b.unsqueeze(0), t.reshape(-1, *[1] * a.ndim).to(a))


@torch.no_grad()
def interpolations(G: torch.nn.Module, z0: torch.Tensor, z1: torch.Tensor, c: Optional[torch.Tensor],
                   truncation_psi: float, density: int = 8, batch_size: int = 8) -> dict[str, torch.Tensor]:
    """Frames from z0 [K+1, d] to z1: slerp in z, lerp in w. {'z','w': uint8 [density, R, R, 3]}."""
    device = next(G.parameters()).device
    t = torch.linspace(0, 1, density)
    z = torch.stack([z0, z1]).to(device)
    cc = None if c is None else c.reshape(1, -1).expand(2, -1).to(device)
    ws = G.map(z, cc, truncation_psi=truncation_psi)          # [2, K+1, num_ws, d]
    return {"z": render(G, batch_size, z=slerp(z[0], z[1], t), c=cc[:1] if cc is not None else None,
                        truncation_psi=truncation_psi),
            "w": render(G, batch_size, ws=lerp(ws[0], ws[1], t))}


# ---------------------------------------------------------------------------------------------------
# Noise variance.

@torch.no_grad()
def noise_std(G: torch.nn.Module, z: torch.Tensor, c: Optional[torch.Tensor], truncation_psi: float,
              samples: int = 100, batch_size: int = 8, noise_mode: str = "random", seed: int = 0) -> torch.Tensor:
    """Per-pixel standard deviation of the gray value (0..255) over `samples` renders of one z [K+1, d]: [R, R].

    Sums are accumulated in float64 batch by batch, so no more than one batch of images is held.
    """
    device = next(G.parameters()).device
    total = total_sq = None
    # A private RNG stream: the noise is reproducible and the caller's global RNG state is left alone.
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.manual_seed(seed)
        for i in range(0, samples, batch_size):
            n = min(batch_size, samples - i)
            zb = z.reshape(1, *z.shape).expand(n, -1, -1).to(device)
            cb = None if c is None else c.reshape(1, -1).expand(n, -1).to(device)
            img = synthesize(G, z=zb, c=cb, truncation_psi=truncation_psi, noise_mode=noise_mode)[0]
            gray = to_uint8(img).double().mean(dim=-1)                       # [n, R, R]
            s, s2 = gray.sum(0), gray.square().sum(0)
            total, total_sq = (s, s2) if total is None else (total + s, total_sq + s2)
    mean = total / samples
    return (total_sq / samples - mean.square()).clamp(min=0).sqrt().float().cpu()


def noise_variance_image(std: torch.Tensor) -> torch.Tensor:
    """A noise std map [R, R] for viewing: uint8 [R', R', 1], white = the largest std, enlarged if small.

    Normalised to its own maximum (the official rendering, clip(4 std + 0.5), leaves the map of a
    young or small model almost black); the scale is relative, so compare maps by shape, not brightness.
    """
    peak = float(std.max()) if std.numel() else 0.0
    img = (std / peak * 255 + 0.5 if peak > 0 else torch.zeros_like(std)).clamp(0, 255).to(torch.uint8)
    return enlarge(img.unsqueeze(-1), view_factor(std.shape[-1]))


# ---------------------------------------------------------------------------------------------------
# Style mixing (layer mixing) and component mixing tables.

def mixing_ws(col_ws: torch.Tensor, row_ws: torch.Tensor, kind: str,
              cutoffs: Sequence[int] = MIX_CUTOFFS) -> torch.Tensor:
    """Mixed ws [len(cutoffs) * rows * cols, K+1, num_ws, d], table order (cutoff, row, col).

    'layer': slots below the cutoff come from the row source, the rest from the column source;
    'component': the same over the latent components (locals first, global last).
    """
    axis = {"layer": 2, "component": 1}[kind]                                # axis in [.., K+1, num_ws, d]
    length = col_ws.shape[axis]
    idx = torch.arange(length, device=col_ws.device)
    mask = (idx < torch.as_tensor(cutoffs, device=col_ws.device)[:, None]).float()   # [C, length]
    shape = [len(cutoffs), 1, 1, 1, 1, 1]
    shape[axis + 2] = length                                                  # dims: cut, row, col, K+1, L, d
    mask = mask.reshape(shape)
    mixed = mask * row_ws[None, :, None] + (1 - mask) * col_ws[None, None, :]
    return mixed.reshape(-1, *col_ws.shape[1:])


def mixing_table(col_imgs: torch.Tensor, row_imgs: torch.Tensor, mix_imgs: torch.Tensor) -> torch.Tensor:
    """Canvas uint8 [H (1 + C rows), W (1 + cols), 3]: sources on the top row and left column, mixes inside.

    col_imgs [cols, H, W, 3], row_imgs [rows, H, W, 3], mix_imgs [C * rows * cols, H, W, 3].
    """
    cols, rows = col_imgs.shape[0], row_imgs.shape[0]
    n_rows = mix_imgs.shape[0] // cols
    H, W = col_imgs.shape[1:3]
    canvas = torch.zeros([H * (n_rows + 1), W * (cols + 1), col_imgs.shape[-1]], dtype=torch.uint8)
    for j in range(cols):
        canvas[:H, W * (j + 1):W * (j + 2)] = col_imgs[j]
    for r in range(n_rows):
        y = H * (r + 1)
        canvas[y:y + H, :W] = row_imgs[r % rows]
        for j in range(cols):
            canvas[y:y + H, W * (j + 1):W * (j + 2)] = mix_imgs[r * cols + j]
    return canvas


@torch.no_grad()
def style_mixing(G: torch.nn.Module, z: torch.Tensor, c: Optional[torch.Tensor], truncation_psi: float,
                 batch_size: int = 8, cols: int = MIX_COLS) -> dict[str, torch.Tensor]:
    """Layer- and component-mixing tables from z [cols + rows, K+1, d]: {'layer','component': uint8 HWC}."""
    device = next(G.parameters()).device
    ws = G.map(z.to(device), None if c is None else c.to(device), truncation_psi=truncation_psi)
    sources = render(G, batch_size, ws=ws)
    out = {}
    for kind in ("layer", "component"):
        mixed = mixing_ws(ws[:cols], ws[cols:], kind)
        out[kind] = mixing_table(sources[:cols], sources[cols:], render(G, batch_size, ws=mixed))
    return out


def strip(frames: torch.Tensor) -> np.ndarray:
    """Frames uint8 [T, H, W, C] side by side: HWC."""
    return image_grid(frames, cols=frames.shape[0])
